//! Log in or sign up. A visitor who is already signed in goes straight to the catalog, which
//! is also how a successful form (with or without JavaScript) lands there.

use super::session::Session;
use super::{FieldMessage, action_error};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;

/// The log-in and sign-up page.
#[component]
pub fn LoginPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let login_error = action_error(session.log_in.value());
    let signup_error = action_error(session.sign_up.value());
    view! {
        <Title text="Log in · kubefn"/>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                matches!(session.user.await, Ok(Some(_))).then(|| view! { <Redirect path="/"/> })
            })}
        </Transition>
        <div class="auth-grid">
            <section class="card" aria-labelledby="login-title">
                <h1 id="login-title">"Log in"</h1>
                <ActionForm action=session.log_in attr:id="login-form">
                    <label for="login-name">"User name"</label>
                    <input id="login-name" name="name" autocomplete="username" required/>
                    <label for="login-password">"Password"</label>
                    <input id="login-password" name="password" type="password" autocomplete="current-password" required/>
                    {move || login_error.get().filter(|e| e.field.is_none()).map(|e| view! { <p class="field-error" role="alert">{e.error}</p> })}
                    <button type="submit" class="primary" disabled=move || session.log_in.pending().get()>"Log in"</button>
                </ActionForm>
            </section>
            <section class="card" aria-labelledby="signup-title">
                <h2 id="signup-title">"New here? Sign up"</h2>
                <ActionForm action=session.sign_up attr:id="signup-form">
                    <label for="signup-name">"User name"</label>
                    <input id="signup-name" name="name" autocomplete="username" required aria-describedby="signup-name-hint"/>
                    <p class="hint" id="signup-name-hint">"Lowercase letters, digits and '-', up to 20 characters. It appears in your functions' URLs."</p>
                    <FieldMessage error=signup_error field="name"/>
                    <label for="signup-password">"Password"</label>
                    <input id="signup-password" name="password" type="password" autocomplete="new-password" required minlength="8"/>
                    <FieldMessage error=signup_error field="password"/>
                    {move || signup_error.get().filter(|e| e.field.is_none()).map(|e| view! { <p class="field-error" role="alert">{e.error}</p> })}
                    <button type="submit" class="primary" disabled=move || session.sign_up.pending().get()>"Create account"</button>
                </ActionForm>
            </section>
        </div>
    }
}

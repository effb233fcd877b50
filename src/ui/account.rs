//! The account page: API tokens for the REST API.

use super::{action_error, short_time, ErrorNotice, FieldMessage};
use crate::api::functions::{list_tokens, CreateToken, RevokeToken};
use leptos::prelude::*;
use leptos_meta::Title;

/// `/account`: create, list and revoke API tokens.
#[component]
pub fn AccountPage() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = Resource::new(move || (create.version().get(), revoke.version().get()), |_| list_tokens());
    let create_error = action_error(create.value());
    view! {
        <Title text="Account · kubefn"/>
        <h1>"Account"</h1>
        <section class="card" aria-labelledby="tokens-title">
            <h2 id="tokens-title">"API tokens"</h2>
            <p>"Use a token with the REST API: " <code>"curl -H 'Authorization: Bearer kfn_…' http://127.0.0.1:3000/api/v1/functions"</code></p>
            <ActionForm action=create attr:class="inline-form">
                <label for="token-name">"Token name"</label>
                <input id="token-name" name="name" placeholder="laptop" required/>
                <button type="submit" class="primary">"Create token"</button>
            </ActionForm>
            <FieldMessage error=create_error field="name"/>
            {move || create.value().get().and_then(Result::ok).map(|token| view! {
                <div class="alert success" role="status">
                    "New token " <strong>{token.info.name}</strong> " — copy it now, it is shown only once: "
                    <code data-testid="new-token">{token.token}</code>
                </div>
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Err(error) => view! { <ErrorNotice error/> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No tokens yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table>
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Created"</th><th scope="col">"Last used"</th><th scope="col"><span class="sr-only">"Action"</span></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|t| view! {
                                        <tr>
                                            <td>{t.name.clone()}</td>
                                            <td>{short_time(&t.created_at)}</td>
                                            <td>{t.last_used_at.as_ref().map_or_else(|| "never".to_string(), short_time)}</td>
                                            <td>
                                                <ActionForm action=revoke attr:class="inline">
                                                    <input type="hidden" name="id" value=t.id/>
                                                    <button type="submit" class="danger">"Revoke"</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

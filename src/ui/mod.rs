//! Pages (one module each) and the small components they share.

pub mod account;
pub mod addresses;
pub mod admin;
pub mod catalog;
pub mod chart;
pub mod function_page;
pub mod functions_form;
pub mod instance_actions;
pub mod instance_panel;
pub mod login;
pub mod sortable_table;
pub mod triggers;
pub mod usage_charts;

use crate::api::ApiError;
use leptos::prelude::*;
use leptos_router::components::Redirect;

/// Shows an API error; a 401 sends the visitor to the log-in page instead.
#[component]
pub fn ErrorNotice(error: ApiError) -> impl IntoView {
    if error.status == 401 {
        return view! { <Redirect path="/login"/> }.into_any();
    }
    view! {
        <div class="alert error" role="alert">
            <strong>{error_title(error.status)}</strong>
            " "
            {error.error}
        </div>
    }
    .into_any()
}

fn error_title(status: u16) -> &'static str {
    match status {
        403 => "Not allowed.",
        404 => "Not found.",
        409 => "Conflict.",
        422 | 400 => "Please fix this:",
        429 => "Slow down.",
        _ => "Something went wrong.",
    }
}

/// The latest result of an action as an error, if it failed.
pub fn action_error<T, S>(value: S) -> Signal<Option<ApiError>>
where
    S: Get<Value = Option<Result<T, ApiError>>> + Send + Sync + 'static,
{
    Signal::derive(move || value.get().and_then(Result::err))
}

/// The message for one form field from the last failed submission.
#[component]
pub fn FieldMessage(error: Signal<Option<ApiError>>, #[prop(into)] field: String) -> impl IntoView {
    let id = format!("error-{}", field.replace('.', "-"));
    view! {
        {move || error.get().and_then(|e| e.message_for(&field)).map(|message| view! {
            <p class="field-error" id=id.clone() role="alert">{message}</p>
        })}
    }
}

/// A `danger` button labelled `ask` that, once clicked, shows `children` (the form that
/// really does it) and Cancel instead: destructive actions take two clicks.
#[component]
pub fn Confirm(#[prop(into)] ask: String, children: ChildrenFn) -> impl IntoView {
    let confirming = RwSignal::new(false);
    view! {
        <Show
            when=move || confirming.get()
            fallback=move || view! { <button type="button" class="danger" on:click=move |_| confirming.set(true)>{ask.clone()}</button> }
        >
            {children()}
            <button type="button" on:click=move |_| confirming.set(false)>"Cancel"</button>
        </Show>
    }
}

/// Formats a time for tables: `2026-11-22 05:17 UTC`.
pub fn short_time(time: &chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `text` percent-encoded for a URL query value or a `data:` URL.
pub fn encode_uri_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

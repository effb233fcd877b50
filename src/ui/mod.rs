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
pub mod session;
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

/// Keeps `resource` current while the page is open: every `period` (in the browser only:
/// effects do not run on the server) it calls `fetch` and writes the answer into the resource
/// only when it differs from what is shown. Views then re-render on a real change only, so a
/// poll cannot close an open confirmation, clear a half-typed input or take the focus away.
pub fn refresh_when_changed<T, Fut>(
    resource: Resource<T>,
    period: std::time::Duration,
    fetch: impl Fn() -> Fut + Clone + 'static,
) where
    T: Clone + PartialEq + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    every(period, move || {
        let answer = fetch();
        leptos::task::spawn_local(async move {
            let fresh = answer.await;
            if resource.with_untracked(|shown| shown.as_ref() != Some(&fresh)) {
                resource.set(Some(fresh));
            }
        });
    });
}

/// A counter that goes up every `period` while the page is open (in the browser only), for
/// resources that should fetch again on a clock (charts, the admin dashboard).
pub fn ticks(period: std::time::Duration) -> ReadSignal<u64> {
    let (count, set_count) = signal(0u64);
    every(period, move || set_count.update(|t| *t += 1));
    count
}

/// `false` on the server and while the page hydrates, `true` from then on: views behind it
/// render in the browser only, so they can never make the hydrated page differ from the server's.
pub fn in_browser() -> ReadSignal<bool> {
    let (live, set_live) = signal(false);
    // Effects run in the browser only, after the view they belong to has hydrated.
    Effect::new(move |_| set_live.set(true));
    live
}

/// Runs `action` every `period` until the component goes away; effects run in the browser only.
fn every(period: std::time::Duration, action: impl Fn() + Clone + 'static) {
    Effect::new(move |_| {
        if let Ok(handle) = set_interval_with_handle(action.clone(), period) {
            on_cleanup(move || handle.clear());
        }
    });
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

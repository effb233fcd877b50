//! An instance's addresses (gateway, node port, port-forward), each with a copy button.

use crate::platform::model::InstanceUrls;
use leptos::prelude::*;

/// The gateway path as a full URL, once the page knows its own origin (in the browser).
fn absolute(path: &str) -> String {
    #[cfg(feature = "hydrate")]
    if let Ok(origin) = window().location().origin() {
        return format!("{origin}{path}");
    }
    path.to_string()
}

/// A button that copies `text` to the clipboard and says so.
#[component]
pub fn CopyButton(
    /// What to copy.
    text: Signal<String>,
    /// What the button copies, for screen readers ("Copy gateway URL").
    label: String,
) -> impl IntoView {
    let copied = RwSignal::new(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            // The promise is left alone: the clipboard write either happens or the browser
            // refused it (no permission), and the button says "Copied" only once it was asked.
            let _ = window().navigator().clipboard().write_text(&text.get_untracked());
            copied.set(true);
            set_timeout(move || copied.set(false), std::time::Duration::from_secs(2));
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (text, copied);
    };
    view! {
        <button type="button" class="copy" aria-label=label on:click=copy>
            {move || if copied.get() { "Copied" } else { "Copy" }}
        </button>
    }
}

/// The addresses an instance answers on, one per line with a copy button each.
#[component]
pub fn InstanceAddresses(urls: InstanceUrls) -> impl IntoView {
    // The origin is known only after hydration; the server renders the path.
    let gateway_path = urls.gateway.clone();
    let gateway = RwSignal::new(gateway_path.clone());
    Effect::new(move |_| gateway.set(absolute(&gateway_path)));
    let copy = |kind: &'static str, text: Signal<String>| {
        view! { <CopyButton text label=format!("Copy the {} address", kind.to_lowercase())/> }
    };
    // The node port and port-forward addresses never change on the page: plain text, not the
    // two reactive closures per row the gateway's needs (a catalog page renders up to 50 of
    // these on the server).
    let fixed = |kind: &'static str, testid: &'static str, url: String| {
        view! {
            <li data-testid=testid>
                <span class="kind">{kind}</span>
                <a href=url.clone()><code>{url.clone()}</code></a>
                {copy(kind, Signal::stored(url))}
            </li>
        }
    };
    view! {
        <ul class="urls">
            <li data-testid="url-gateway">
                <span class="kind">"Gateway"</span>
                <a href=move || gateway.get()><code>{move || gateway.get()}</code></a>
                {copy("Gateway", gateway.into())}
            </li>
            {urls.node_port.map(|url| fixed("Node port", "url-node-port", url))}
            {urls.port_forward.map(|url| fixed("Port-forward", "url-port-forward", url))}
        </ul>
    }
}

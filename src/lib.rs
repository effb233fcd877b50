//! kubefn: Functions-as-a-Service on Kubernetes with a server-rendered Leptos UI.
//!
//! The crate builds twice: with `ssr` as the server (platform, REST API, rendering) and with
//! `hydrate` as the browser bundle (pages only). See docs/ARCHITECTURE.md for the layout.

#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod platform;
pub mod ui;

#[cfg(feature = "ssr")]
pub mod cli;
#[cfg(feature = "ssr")]
pub mod server;

/// The browser entry point: takes over the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Asynchronous hydration, as `leptos::mount::hydrate_lazy` does it: a page split into its own
    // wasm chunk (app.rs) hydrates once the chunk has loaded. Only then is the page interactive,
    // which `data-hydrated` on the body tells end-to-end tests (and people).
    wasm_bindgen_futures::spawn_local(async {
        let body = leptos::prelude::document().body();
        if let Some(body) = body {
            leptos::mount::hydrate_from_async(body.clone(), app::App).await.forget();
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
}

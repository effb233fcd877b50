//! The thin layer between clients and the platform: authenticate, validate the shape of the
//! input, call [`crate::platform`], map its errors to [`ApiError`]. The JSON REST API lives in
//! [`rest`]; the server functions the pages call live in [`functions`].

pub mod error;
pub mod functions;

#[cfg(feature = "ssr")]
pub mod caller;
#[cfg(feature = "ssr")]
pub mod gateway;
#[cfg(feature = "ssr")]
pub mod rest;

pub use error::ApiError;

#[cfg(feature = "ssr")]
pub use state::AppState;

#[cfg(feature = "ssr")]
mod state {
    use crate::platform::Platform;
    use axum::extract::FromRef;
    use leptos::config::LeptosOptions;

    /// The axum router's state; server functions receive it as context too.
    #[derive(Clone, Debug, FromRef)]
    pub struct AppState {
        /// Site options from cargo-leptos (addresses, bundle names).
        pub leptos_options: LeptosOptions,
        /// The FaaS core.
        pub platform: Platform,
    }
}

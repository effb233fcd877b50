//! The thin layer between clients and the platform: authenticate, validate the shape of the
//! input, call [`crate::platform`], map its errors to [`ApiError`]. The JSON REST API lives in
//! [`rest`], described by the OpenAPI document of [`openapi`]; the server functions the pages
//! call live in [`functions`].

pub mod error;
pub mod forms;
pub mod functions;

#[cfg(feature = "ssr")]
pub mod caller;
#[cfg(feature = "ssr")]
pub mod gateway;
#[cfg(feature = "ssr")]
pub mod openapi;
#[cfg(feature = "ssr")]
pub mod origin;
#[cfg(feature = "ssr")]
pub mod rest;
#[cfg(feature = "ssr")]
pub mod session;

pub use error::ApiError;

#[cfg(feature = "ssr")]
pub use state::AppState;

#[cfg(feature = "ssr")]
mod state {
    use crate::platform::Platform;
    use axum::extract::FromRef;
    use leptos::config::LeptosOptions;

    /// The axum router's state; server functions receive it as context too. Cloned for every
    /// request, so it is one reference count.
    #[derive(Clone, Debug)]
    pub struct AppState(std::sync::Arc<AppParts>);

    /// What [`AppState`] holds.
    #[derive(Debug)]
    pub struct AppParts {
        /// Site options from cargo-leptos (addresses, bundle names).
        pub leptos_options: LeptosOptions,
        /// The FaaS core.
        pub platform: Platform,
    }

    impl AppState {
        /// The state over these options and platform.
        pub fn new(leptos_options: LeptosOptions, platform: Platform) -> AppState {
            AppState(std::sync::Arc::new(AppParts { leptos_options, platform }))
        }
    }

    impl std::ops::Deref for AppState {
        type Target = AppParts;

        fn deref(&self) -> &AppParts {
            &self.0
        }
    }

    impl FromRef<AppState> for LeptosOptions {
        fn from_ref(state: &AppState) -> LeptosOptions {
            state.leptos_options.clone()
        }
    }

    impl FromRef<AppState> for Platform {
        fn from_ref(state: &AppState) -> Platform {
            state.platform.clone()
        }
    }
}

//! The FaaS core, with no Leptos inside: the model, validation, the store, accounts, the
//! registry and the autoscaling algorithm. Only [`model`] compiles for the browser; everything else is server-only.

pub mod model;

#[cfg(feature = "ssr")]
pub mod auth;
#[cfg(feature = "ssr")]
pub mod autoscale;
#[cfg(feature = "ssr")]
pub mod registry;
#[cfg(feature = "ssr")]
pub mod runtime;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod validation;

#[cfg(feature = "ssr")]
pub use ssr::Platform;

#[cfg(feature = "ssr")]
mod ssr {
    use super::auth::{Accounts, SignupPolicy};
    use super::registry::Registry;
    use super::store::{Store, StoreError};

    /// Everything the API layer calls, wired over one store; cheap to clone.
    #[derive(Clone, Debug)]
    pub struct Platform {
        /// The database.
        pub store: Store,
        /// Users, sessions' backend and API tokens.
        pub accounts: Accounts,
        /// Functions and versions.
        pub registry: Registry,
    }

    impl Platform {
        /// Opens the store at `database_url` (migrating it) and wires the services.
        pub async fn open(database_url: &str, signup: SignupPolicy) -> Result<Platform, StoreError> {
            let store = Store::open(database_url).await?;
            Ok(Platform {
                accounts: Accounts::new(store.clone(), signup),
                registry: Registry::new(store.clone()),
                store,
            })
        }
    }
}

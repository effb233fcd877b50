//! The FaaS core, with no Leptos inside: the model, validation, the store, accounts, the
//! registry, instances and their runtimes, which process leads, the gateway and its metrics, cron triggers, async invocations
//! and the addresses their callbacks may reach, and the autoscaling algorithm. Only [`model`] compiles for the browser; everything else is server-only.

pub mod model;

#[cfg(feature = "ssr")]
pub mod async_invocations;
#[cfg(feature = "ssr")]
pub mod async_spool;
#[cfg(feature = "ssr")]
pub mod auth;
#[cfg(feature = "ssr")]
pub mod autoscale;
#[cfg(feature = "ssr")]
pub mod gateway;
#[cfg(feature = "ssr")]
pub mod instances;
#[cfg(feature = "ssr")]
pub mod latency;
#[cfg(feature = "ssr")]
pub mod leadership;
#[cfg(feature = "ssr")]
pub mod metrics;
#[cfg(feature = "ssr")]
pub mod outbound;
#[cfg(feature = "ssr")]
pub mod quotas;
#[cfg(feature = "ssr")]
pub mod rate_limits;
#[cfg(feature = "ssr")]
pub mod registry;
#[cfg(feature = "ssr")]
pub mod runtime;
#[cfg(feature = "ssr")]
pub mod secrets;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod triggers;
#[cfg(feature = "ssr")]
pub mod usage_report;
#[cfg(feature = "ssr")]
pub mod validation;

#[cfg(feature = "ssr")]
pub use ssr::{Platform, error_chain};

#[cfg(feature = "ssr")]
mod ssr {
    use super::async_invocations::AsyncInvocations;
    use super::async_spool::AsyncSpool;
    use super::auth::{Accounts, SignupPolicy};
    use super::gateway::{Gateway, SpanExport};
    use super::instances::Instances;
    use super::metrics::GatewayMetrics;
    use super::outbound::OutboundPolicy;
    use super::quotas::Quotas;
    use super::registry::Registry;
    use super::runtime::Runtime;
    use super::secrets::{SecretKey, Secrets};
    use super::store::{Store, StoreError};
    use super::triggers::Triggers;
    use std::sync::Arc;

    /// An error and its causes on one line (`what: why: deeper why`), for logs and reasons.
    pub fn error_chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// Everything the API layer calls, wired over one store; cheap to clone (one reference
    /// count: every request clones it, through the router's state), and its [`Services`] are
    /// reached through it as fields.
    #[derive(Clone, Debug)]
    pub struct Platform(Arc<Services>);

    impl std::ops::Deref for Platform {
        type Target = Services;

        fn deref(&self) -> &Services {
            &self.0
        }
    }

    /// The services of a [`Platform`].
    #[derive(Debug)]
    pub struct Services {
        /// The database.
        pub store: Store,
        /// Users, sessions' backend and API tokens.
        pub accounts: Accounts,
        /// Functions and versions.
        pub registry: Registry,
        /// Deployed instances and the runtime they run on.
        pub instances: Instances,
        /// The invocation path to instances.
        pub gateway: Gateway,
        /// Cron triggers.
        pub triggers: Triggers,
        /// The async invocation queue.
        pub asyncs: AsyncInvocations,
        /// Per-user quotas.
        pub quotas: Quotas,
        /// Per-user secrets, sealed at rest.
        pub secrets: Secrets,
    }

    impl Platform {
        /// Opens the store at `database_url` (migrating it) and wires the services, the async
        /// queue's bodies in `spool` (in the database itself when several processes share it). Callbacks go only where `outbound` allows; the gateway's
        /// spans go to `spans` when kubefn exports them.
        pub async fn open(
            database_url: &str,
            spool: AsyncSpool,
            signup: SignupPolicy,
            runtime: Arc<dyn Runtime>,
            outbound: OutboundPolicy,
            spans: Option<SpanExport>,
            secrets_key: SecretKey,
        ) -> Result<Platform, StoreError> {
            let store = Store::open(database_url).await?;
            // Any process on a shared database may work an invocation: its body goes with it.
            let spool = if store.is_shared() { AsyncSpool::in_database() } else { spool };
            let registry = Registry::new(store.clone());
            let metrics = Arc::new(GatewayMetrics::new());
            let gateway = Gateway::new(store.clone(), runtime.clone(), metrics.clone(), spans);
            let secrets = Secrets::new(store.clone(), secrets_key);
            Ok(Platform(Arc::new(Services {
                accounts: Accounts::new(store.clone(), signup),
                instances: Instances::new(store.clone(), registry.clone(), runtime, metrics, secrets.clone()),
                triggers: Triggers::new(store.clone(), registry.clone(), gateway.clone()),
                asyncs: AsyncInvocations::new(store.clone(), spool, gateway.clone(), outbound),
                quotas: Quotas::new(store.clone()),
                secrets,
                gateway,
                registry,
                store,
            })))
        }
    }
}

//! The local runtime's building blocks: each replica is a supervised child process running the
//! same bootstrap as a pod, on a loopback port ([`supervisor`]); their output is kept in a
//! bounded buffer that can be followed ([`logs`]); and each instance gets a stable "node port"
//! that balances connections over its ready replicas ([`crate::platform::runtime::forwarding`]). Declared dependencies are
//! installed once per content ([`dependencies`]) and usage is read from /proc ([`usage`]).
//! A [`warm_pool`] keeps bootstraps started ahead of need for short cold starts.
//! [`LocalRuntime`] puts them together behind the `Runtime` trait.

pub mod dependencies;
pub mod limits;
pub mod logs;

pub mod supervisor;
pub mod usage;
pub mod warm_pool;
mod instances;

pub use instances::{LocalConfig, LocalRuntime};

//! The local runtime's building blocks: each replica is a supervised child process running the
//! same bootstrap as a pod ([`supervisor`]), in a sandbox ([`sandbox`]) and a cgroup with its
//! limits ([`cgroups`]), serving on a socket file ([`launch`]); their output is kept in a
//! bounded buffer that can be followed ([`logs`]); and each instance gets a stable "node port"
//! that balances connections over its ready replicas ([`crate::platform::runtime::forwarding`]). Declared dependencies are
//! installed once per content, in the sandbox too ([`dependencies`]), and usage is read from the
//! cgroups' counters (or /proc without them, [`usage`]).
//! A [`warm_pool`] keeps bootstraps started ahead of need for short cold starts.
//! [`LocalRuntime`] puts them together behind the `Runtime` trait.

pub mod cgroups;
pub mod dependencies;
pub mod launch;
pub mod limits;
pub mod logs;
pub mod sandbox;

mod instances;
pub mod supervisor;
pub mod usage;
pub mod warm_pool;

pub use instances::{LocalConfig, LocalRuntime};

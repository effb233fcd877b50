//! Where instances run: the [`Runtime`] trait (docs/ARCHITECTURE.md), which both runtimes implement, and
//! the types it speaks. The store holds what should run; a runtime holds what does run; the
//! reconcile loop in [`crate::platform::instances`] makes the second follow the first.

pub mod bootstrap;
pub mod forwarding;
pub mod kubernetes;
pub mod local;
pub mod scale_to_zero;
pub mod unix_upstream;

pub use crate::platform::autoscale::AutoscalerStatus;
use crate::platform::model::{EventInfo, FunctionSpec, HealthCheck, InstanceState, LogEntry, ReplicaInfo};
use futures::stream::BoxStream;
use std::net::SocketAddr;

/// What one instance should be: handed to [`Runtime::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The instance's id.
    pub id: String,
    /// The function's name.
    pub function: String,
    /// The user it belongs to.
    pub user: String,
    /// The version to run.
    pub version: u32,
    /// That version's spec.
    pub spec: FunctionSpec,
    /// Replicas to run when not paused (the autoscaler may change it within the policy).
    pub replicas: u32,
    /// Paused: no replicas, everything else kept.
    pub paused: bool,
    /// The node port it had before (kept when still free), so its address survives restarts.
    pub node_port: Option<u16>,
    /// Its user's quota, for runtimes that give each user a namespace to bound (a
    /// ResourceQuota there); `None`: no namespace quota.
    pub user_quota: Option<crate::platform::model::Quota>,
    /// The values of the secrets the function names, resolved from the instance's user (never
    /// the function's owner), in the spec's order.
    pub secrets: Vec<SecretValue>,
    /// The registry credentials (a Docker `config.json`) an image function's image is pulled
    /// with, from the instance's user's secret the spec names in `registry_secret`.
    pub registry_credentials: Option<SecretValue>,
}

/// One secret as an instance's replicas receive it: a file [`SECRETS_DIR`]`/NAME`, and
/// optionally an environment variable.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    /// The secret's name (the file's name).
    pub name: String,
    /// The environment variable that also carries it, if the function asked for one.
    pub env: Option<String>,
    /// The value.
    pub value: Vec<u8>,
}

/// Never prints a value: specs are logged.
impl std::fmt::Debug for SecretValue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SecretValue").field("name", &self.name).field("env", &self.env).finish_non_exhaustive()
    }
}

/// Where replicas find their secrets, one file per secret: the path OpenFaaS uses, so
/// functions written for it read theirs unchanged.
pub const SECRETS_DIR: &str = "/var/openfaas/secrets";

/// A digest of `secrets` (names, variables and values), so a replaced value rolls the replicas
/// that hold the old one, without the value itself appearing anywhere.
pub fn secrets_digest(secrets: &[SecretValue]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for secret in secrets {
        for part in [secret.name.as_bytes(), secret.env.as_deref().unwrap_or("").as_bytes(), &secret.value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl InstanceSpec {
    /// `user`'s instance `id` of `spec` at `version`: one replica, not paused, with no node
    /// port from before and no namespace quota. Change fields with struct update syntax.
    pub fn new(id: impl Into<String>, user: impl Into<String>, version: u32, spec: FunctionSpec) -> InstanceSpec {
        InstanceSpec {
            id: id.into(),
            function: spec.name.clone(),
            user: user.into(),
            version,
            spec,
            replicas: 1,
            paused: false,
            node_port: None,
            user_quota: None,
            secrets: Vec::new(),
            registry_credentials: None,
        }
    }
}

/// Where one ready replica listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address: a pod's own address inside the cluster, or kubefn's port-forward to the
    /// instance from outside it.
    Tcp(SocketAddr),
    /// A Unix socket file: a local replica, which has no network of its own.
    Unix(std::path::PathBuf),
}

/// How the gateway reaches an instance, from [`Runtime::connect`].
#[derive(Debug)]
pub struct Route {
    /// Its ready replicas (at least one), for the gateway to balance over; or the one
    /// port-forward that balances itself.
    pub replicas: Vec<Endpoint>,
    /// Counts the request as open on the instance's traffic until dropped (idle detection,
    /// requests in flight); `None` where the endpoint counts connections itself.
    pub in_flight: Option<forwarding::OpenTraffic>,
}

/// What one instance is, as a runtime sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeStatus {
    /// Its state.
    pub state: InstanceState,
    /// Why, when there is something to say (a failure's reason, what it waits for).
    pub message: String,
    /// The version the ready replicas run, if any run.
    pub serving_version: Option<u32>,
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas ready.
    pub ready: u32,
    /// Its stable node port, when it has one.
    pub node_port: Option<SocketAddr>,
    /// kubefn's port-forward to it, when it has one (kubernetes runtime, outside the cluster).
    pub port_forward: Option<SocketAddr>,
    /// Which resource limits apply and how, in words.
    pub limits: String,
    /// Every replica.
    pub replicas: Vec<ReplicaInfo>,
    /// Recent events, newest first.
    pub events: Vec<EventInfo>,
    /// What its autoscaler last measured and asked for, when autoscaling is on and it has run.
    pub autoscaler: Option<AutoscalerStatus>,
}

/// CPU and memory of one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaUsage {
    /// The replica.
    pub replica: String,
    /// CPU use in millicores since the previous reading (`None` on the first).
    pub cpu_millicores: Option<f64>,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
}

/// Why a runtime refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime does not run this kind of function.
    #[error("the {runtime} runtime cannot run {language} functions; {hint}")]
    Unsupported {
        /// The runtime's name.
        runtime: &'static str,
        /// The function's language.
        language: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// No such instance runs here.
    #[error("instance {id} is not running on this runtime")]
    NotFound {
        /// The instance's id.
        id: String,
    },
    /// The instance's Service is an ExternalName: the gateway never proxies to one, since it
    /// would reach whatever name the function's owner chose, cloud metadata endpoints included.
    #[error(
        "instance {id}'s Service is an ExternalName, which kubefn's gateway never proxies to; call that name directly"
    )]
    NotProxied {
        /// The instance's id.
        id: String,
    },
    /// The instance's files could not be written.
    #[error("cannot prepare the files of instance {id} under {path}; check that the data directory is writable")]
    Files {
        /// The instance's id.
        id: String,
        /// Where.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No node port could be opened.
    #[error("cannot open a port (node port or port-forward) for instance {id}")]
    Port {
        /// The instance's id.
        id: String,
        /// Why.
        #[source]
        source: forwarding::ForwardingError,
    },
    /// The backend failed in its own terms: the cluster refused or failed an operation, or
    /// function code cannot be sandboxed on this host. The core needs no more than that, so it
    /// names neither backend's error type.
    #[error("{what}")]
    Backend {
        /// What failed and what to do, in words for the user (never a host path or a
        /// credential: the instance's owner reads it).
        what: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RuntimeError {
    /// The failure in words the instance's owner may read (its stored state shows them): the
    /// message itself, except that a host failure names no host path, which is kubefn's own
    /// business and goes to kubefn's log instead.
    pub fn owner_message(&self) -> String {
        match self {
            RuntimeError::Files { id, .. } => format!(
                "cannot prepare the files of instance {id} on kubefn's host; kubefn keeps trying, and an admin can see why in kubefn's log"
            ),
            other => other.to_string(),
        }
    }
}

/// A running instance's log lines: the recent ones first, then (when following) each new one.
pub type LogStream = BoxStream<'static, LogEntry>;

/// How [`Runtime::apply`] treats what already runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Make it match (the reconcile loop, pause and resume): a version whose rollout failed
    /// stays failed, and an autoscaled instance keeps its autoscaler's count.
    Reconcile,
    /// As [`ApplyMode::Reconcile`], and a version whose rollout failed is tried again (a user
    /// clicking Deploy again).
    Retry,
    /// The replica count was set by hand: it replaces the autoscaler's.
    SetReplicas,
    /// Change nothing; only serve the instance from this kubefn process as it runs: another
    /// process leads and applies (see [`crate::platform::leadership`]). On Kubernetes this binds
    /// the process's route to the instance (its port-forward); the local runtime runs on one
    /// machine, so it has nothing to serve from another process.
    Serve,
}

/// Where instances run. Every method is keyed by the instance's id; `apply` is idempotent and
/// returns once the change is under way (its progress shows in [`Runtime::status`]). Pausing,
/// resuming and scaling are an `apply` of the changed spec.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `local` or `kubernetes`.
    fn name(&self) -> &'static str;

    /// Refuses functions this runtime cannot run, before anything is recorded.
    fn check(&self, spec: &FunctionSpec) -> Result<(), RuntimeError>;

    /// Creates or updates the instance to match `spec`: starts it, rolls it to a new version
    /// without failed requests, pauses, resumes or only scales it, whatever differs.
    async fn apply(&self, spec: InstanceSpec, mode: ApplyMode) -> Result<(), RuntimeError>;

    /// Stops every replica and frees the instance's ports; returns when nothing of it is left.
    /// Deleting an unknown instance succeeds.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;

    /// Stops serving every instance not in `keep` (another kubefn process deleted them),
    /// leaving the runtime as it is: the counterpart of [`ApplyMode::Serve`].
    async fn release_all_but(&self, keep: &std::collections::HashSet<String>) {
        let _ = keep;
    }

    /// The instance as it runs, or `None` when it does not run here.
    fn status(&self, id: &str) -> Option<RuntimeStatus>;

    /// How many of the instance's replicas are ready now; `None` for an instance it does not
    /// run. Cheap: the gateway asks on every request (to admit it and to see a cold start).
    fn ready_replicas(&self, id: &str) -> Option<u32>;

    /// The ids of every instance this runtime runs (the reconcile loop removes strays).
    fn instance_ids(&self) -> Vec<String>;

    /// The instance's log lines (those from `since` on, when given), tagged with replica; with
    /// `follow`, new lines as they come (including those of replicas started later) until the
    /// instance is deleted.
    fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<LogStream, RuntimeError>;

    /// CPU and memory per replica.
    fn usage(&self, id: &str) -> Result<Vec<ReplicaUsage>, RuntimeError>;

    /// What the runtime knows about its own health, for the admin dashboard.
    fn health(&self) -> Vec<HealthCheck>;

    /// How to reach the instance's ready replicas now, waiting up to the runtime's hold time
    /// for one (and starting a replica when the instance was scaled to zero). Errs with
    /// `NotFound` when none became ready in that time.
    async fn connect(&self, id: &str) -> Result<Route, RuntimeError>;

    /// Stops the runtime's own work when kubefn stops: local replica processes (they come back
    /// at the next start), or the cluster's watchers and port-forwards (instances keep running).
    async fn shutdown(&self);
}

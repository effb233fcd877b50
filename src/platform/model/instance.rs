//! Instances: their state, replicas, addresses, events, logs and a test invocation's answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an instance is in its life.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray,
)]
pub enum InstanceState {
    /// Recorded, not yet handed to the runtime.
    #[default]
    Pending,
    /// Replicas of the desired version are starting (or dependencies installing).
    Deploying,
    /// The desired version serves with all desired replicas ready (or scaled to zero on purpose).
    Ready,
    /// Paused by its user: no replicas, configuration kept.
    Paused,
    /// The desired version cannot run; the message says why.
    Failed,
    /// Being removed.
    Deleting,
}

/// Desired and ready replica counts.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCounts {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas answering their readiness check.
    pub ready: u32,
}

/// The ways to reach an instance.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUrls {
    /// The gateway path, relative to kubefn's own address.
    pub gateway: String,
    /// The instance's node port, once it has one.
    pub node_port: Option<String>,
    /// A local port forwarded to the instance (Kubernetes runtime only).
    pub port_forward: Option<String>,
}

/// One replica as the instance page shows it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// `r0`, `r1`, … (local) or the pod name.
    pub name: String,
    /// `Starting`, `Ready`, `BackingOff` or `Failed`.
    pub state: String,
    /// The version it runs.
    pub version: u32,
    /// How often it was restarted.
    pub restarts: u32,
}

/// Something that happened to an instance (deployed, scaled, failed, …).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// When.
    pub at: DateTime<Utc>,
    /// `Normal` or `Warning`, as Kubernetes events.
    pub kind: String,
    /// A short CamelCase reason (`ScalingReplicaSet`, `RolloutFailed`, …).
    pub reason: String,
    /// What happened, in words.
    pub message: String,
}

/// One user's running copy of one function, as the API returns it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Stable id.
    pub id: String,
    /// The function's name.
    pub function: String,
    /// The user it belongs to.
    pub user: String,
    /// The version it should run (the function's current version).
    pub version: u32,
    /// The function's current version (what its owner runs now).
    #[serde(default)]
    pub latest_version: u32,
    /// Whether the instance stays on `version` whatever the owner changes (instances of someone
    /// else's function, unless their user follows the owner's updates).
    #[serde(default)]
    pub pinned: bool,
    /// The version its ready replicas run, when they run one.
    pub serving_version: Option<u32>,
    /// Its state.
    pub state: InstanceState,
    /// Why it is in that state, when there is something to say.
    pub message: String,
    /// Whether its user paused it.
    pub paused: bool,
    /// Replica counts.
    pub replicas: ReplicaCounts,
    /// How to reach it.
    pub urls: InstanceUrls,
    /// Which resource limits apply and how (the local runtime cannot enforce every one).
    #[serde(default)]
    pub limits: String,
    /// Its replicas.
    #[serde(default)]
    pub replica_details: Vec<ReplicaInfo>,
    /// Its recent events, newest first.
    #[serde(default)]
    pub events: Vec<EventInfo>,
    /// When it was first deployed.
    pub created_at: DateTime<Utc>,
}

/// One line of an instance's logs.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When kubefn read it.
    pub at: DateTime<Utc>,
    /// The replica (`r0`, …), or `install` for dependency installs.
    pub replica: String,
    /// `stdout`, `stderr` or `system` (kubefn's own lines about the replica).
    pub stream: String,
    /// The text.
    pub text: String,
}

/// The answer to a test invocation from the UI.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeResult {
    /// The HTTP status the function (or the gateway) answered.
    pub status: u16,
    /// The response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced), cut at 64 KiB.
    pub body: String,
    /// Time to the whole answer, in milliseconds.
    pub elapsed_ms: u64,
}

//! The FaaS domain as plain serde types: what a function is, how it scales, how it is reached.
//!
//! These types are shared with the browser (the register form and the pages render them), so
//! nothing here may depend on the server-only crates (`sqlx`, `kube`, `axum`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a function's code is: Python or Node source (run by that language's bootstrap), or a
/// container image. On the wire and in forms the field is still called `runtime`; not to be
/// confused with the runtime backends of [`crate::platform::runtime`] (where instances run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python source run by the Python bootstrap.
    #[default]
    Python,
    /// Node source run by the Node bootstrap.
    Node,
    /// A container image that serves HTTP itself.
    Image,
}

impl Language {
    /// Every language, in the order the UI offers them.
    pub const ALL: [Language; 3] = [Language::Python, Language::Node, Language::Image];

    /// The name used in JSON, forms and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::Image => "image",
        }
    }

    /// Parses the name used in JSON, forms and the database.
    pub fn parse(text: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Who may see and deploy a function besides its owner (admins always may).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Listed for and deployable by every user.
    Public,
    /// Only the owner and admins see it.
    #[default]
    Private,
}

impl Visibility {
    /// The name used in JSON, forms and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    /// Parses the name used in JSON, forms and the database.
    pub fn parse(text: &str) -> Option<Visibility> {
        [Visibility::Public, Visibility::Private].into_iter().find(|v| v.as_str() == text)
    }
}

/// How an instance is exposed, named as the Kubernetes Service types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceKind {
    /// A port on every node (the default: reachable without an ingress).
    #[default]
    NodePort,
    /// Reachable inside the cluster only.
    ClusterIP,
    /// A cloud load balancer.
    LoadBalancer,
    /// A DNS alias to `external_name`.
    ExternalName,
}

impl ServiceKind {
    /// Every kind, in the order the UI offers them.
    pub const ALL: [ServiceKind; 4] =
        [ServiceKind::NodePort, ServiceKind::ClusterIP, ServiceKind::LoadBalancer, ServiceKind::ExternalName];

    /// The Kubernetes name of the Service type.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::NodePort => "NodePort",
            ServiceKind::ClusterIP => "ClusterIP",
            ServiceKind::LoadBalancer => "LoadBalancer",
            ServiceKind::ExternalName => "ExternalName",
        }
    }

    /// Parses the Kubernetes name of the Service type.
    pub fn parse(text: &str) -> Option<ServiceKind> {
        ServiceKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// How an instance is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The Service type.
    #[serde(rename = "type", default)]
    pub kind: ServiceKind,
    /// The DNS name an `ExternalName` service points to; only with that type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// The port the container listens on; only for image functions (source functions use the bootstrap's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Resource requests and limits, as Kubernetes quantities (`100m`, `128Mi`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// CPU requested per replica.
    pub cpu: String,
    /// Memory requested per replica.
    pub memory: String,
    /// CPU a replica may use at most.
    pub cpu_limit: String,
    /// Memory a replica may use at most before it is killed.
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpu: "100m".into(), memory: "128Mi".into(), cpu_limit: "500m".into(), memory_limit: "256Mi".into() }
    }
}

/// How many replicas an instance runs and when the autoscaler changes that.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingPolicy {
    /// Fewest replicas while the instance is running.
    pub min: u32,
    /// Most replicas the autoscaler may start.
    pub max: u32,
    /// Average CPU use (percent of the request) the autoscaler aims for; `null` turns CPU scaling off.
    pub target_cpu_percent: Option<u32>,
    /// Average memory use (percent of the request) the autoscaler aims for; `null` turns memory scaling off.
    pub target_memory_percent: Option<u32>,
    /// Average requests in flight per replica the autoscaler aims for; `null` turns it off.
    pub target_requests_in_flight: Option<u32>,
    /// Seconds without requests after which the instance goes to zero replicas; `null` never.
    pub scale_to_zero_after_s: Option<u64>,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        ScalingPolicy {
            min: 1,
            max: 5,
            target_cpu_percent: Some(70),
            target_memory_percent: None,
            target_requests_in_flight: None,
            scale_to_zero_after_s: None,
        }
    }
}

/// A function as registered: the body of `POST /api/v1/functions` and `PUT /api/v1/functions/{name}`.
///
/// Every field but `name` and `runtime` has a default. Each registration or edit stores the
/// whole spec as a new immutable version; `visibility` applies to the function as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// DNS-1123 label, at most 40 characters, unique across kubefn.
    pub name: String,
    /// What the code runs on.
    pub runtime: Language,
    /// The entry point; `null` lets the bootstrap detect one.
    #[serde(default)]
    pub handler: Option<String>,
    /// The source code (Python or Node); empty for image functions.
    #[serde(default)]
    pub source: String,
    /// Declared dependencies: requirements.txt for Python, package.json for Node.
    #[serde(default)]
    pub requirements: String,
    /// The container image, for image functions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment variables given to every replica.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Who may see and deploy the function.
    #[serde(default)]
    pub visibility: Visibility,
    /// Requests and limits per replica.
    #[serde(default)]
    pub resources: Resources,
    /// Replica bounds and autoscaling targets.
    #[serde(default)]
    pub scaling: ScalingPolicy,
    /// How instances are exposed.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Seconds one invocation may take before it is answered with 504.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u32,
    /// Who may invoke its instances through the gateway, and how much they may send.
    #[serde(default)]
    pub invoke: InvokePolicy,
}

/// Who may invoke an instance through the gateway (`/fn/{user}/{function}/…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvokeAccess {
    /// The instance's user and admins (a session or their API token).
    #[default]
    Owner,
    /// Anyone with a kubefn account: a session or an API token of any user.
    Token,
    /// Anyone, without credentials.
    Public,
}

impl InvokeAccess {
    /// Every choice, in the order forms show them.
    pub const ALL: [InvokeAccess; 3] = [InvokeAccess::Owner, InvokeAccess::Token, InvokeAccess::Public];

    /// The name used in JSON and forms.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokeAccess::Owner => "owner",
            InvokeAccess::Token => "token",
            InvokeAccess::Public => "public",
        }
    }

    /// Parses the name used in JSON and forms.
    pub fn parse(text: &str) -> Option<InvokeAccess> {
        InvokeAccess::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// How the gateway admits invocations of a function's instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokePolicy {
    /// Who may invoke.
    #[serde(default)]
    pub access: InvokeAccess,
    /// The largest request body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Requests one ready replica serves at once; more get 429 with Retry-After. 0 = no limit
    /// (as OpenFaaS' `max_inflight`).
    #[serde(default)]
    pub max_in_flight_per_replica: u32,
}

/// The request body limit when none is given.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for InvokePolicy {
    fn default() -> Self {
        InvokePolicy {
            access: InvokeAccess::Owner,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight_per_replica: 0,
        }
    }
}

/// The invocation timeout when none is given, as OpenFaaS' default.
pub const DEFAULT_TIMEOUT_S: u32 = 60;

fn default_timeout_s() -> u32 {
    DEFAULT_TIMEOUT_S
}

/// A user's role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees own and public functions and own instances.
    #[default]
    User,
    /// Sees and manages everything.
    Admin,
}

impl Role {
    /// The name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// Parses the name used in JSON and the database.
    pub fn parse(text: &str) -> Option<Role> {
        [Role::User, Role::Admin].into_iter().find(|r| r.as_str() == text)
    }
}

/// The signed-in user as the pages and the API show them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name (a DNS-1123 label: it appears in gateway paths and object names).
    pub name: String,
    /// The user's role.
    pub role: Role,
}

/// One line of the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSummary {
    /// The function's unique name.
    pub name: String,
    /// Who registered it.
    pub owner: String,
    /// Language of the current version.
    pub runtime: Language,
    /// Who may see it.
    pub visibility: Visibility,
    /// The version deployments use (moved by edits and rollbacks).
    pub version: u32,
    /// The newest version registered.
    pub latest_version: u32,
    /// When the function last changed.
    pub updated_at: DateTime<Utc>,
}

/// One page of the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionListPage {
    /// The functions on this page, by name.
    pub items: Vec<FunctionSummary>,
    /// How many functions match in all.
    pub total: u32,
    /// This page's number, from 1.
    pub page: u32,
    /// Functions per page.
    pub per_page: u32,
    /// The text names were filtered by (empty: none).
    pub filter: String,
}

impl FunctionListPage {
    /// The number of the last page (1 when nothing matches).
    pub fn last_page(&self) -> u32 {
        self.total.div_ceil(self.per_page.max(1)).max(1)
    }
}

/// One immutable version of a function, without its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// 1, 2, 3, … in registration order.
    pub number: u32,
    /// Who registered this version.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Language of this version.
    pub runtime: Language,
    /// Size of the source in bytes.
    pub source_bytes: usize,
}

/// A function with its current spec and its versions: `GET /api/v1/functions/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDetail {
    /// The function's unique name.
    pub name: String,
    /// Who registered it.
    pub owner: String,
    /// Who may see it.
    pub visibility: Visibility,
    /// The version deployments use.
    pub version: u32,
    /// The newest version registered.
    pub latest_version: u32,
    /// When it was first registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The spec of `version`.
    pub spec: FunctionSpec,
    /// Every version, newest first.
    pub versions: Vec<VersionInfo>,
}

/// One version with its whole spec: `GET /api/v1/functions/{name}/versions/{n}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDetail {
    /// The function's name.
    pub function: String,
    /// Metadata of the version.
    pub info: VersionInfo,
    /// Its spec as registered.
    pub spec: FunctionSpec,
}

/// An API token as listed (the secret is shown only once, at creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Identifier used to revoke it.
    pub id: i64,
    /// The user's label for it.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used, if ever.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A freshly created API token, secret included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// The token's metadata.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret to send as `Authorization: Bearer …`; kubefn keeps only its hash.
    pub token: String,
}

/// One invalid field of a request: the field's path (`resources.cpu`, `env.MY VAR`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field in the JSON body (the form field for the UI).
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl FieldError {
    /// A field error with the given path and message.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl InstanceState {
    /// Every state.
    pub const ALL: [InstanceState; 6] = [
        InstanceState::Pending,
        InstanceState::Deploying,
        InstanceState::Ready,
        InstanceState::Paused,
        InstanceState::Failed,
        InstanceState::Deleting,
    ];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "Pending",
            InstanceState::Deploying => "Deploying",
            InstanceState::Ready => "Ready",
            InstanceState::Paused => "Paused",
            InstanceState::Failed => "Failed",
            InstanceState::Deleting => "Deleting",
        }
    }

    /// The state named `text`, if any.
    pub fn parse(text: &str) -> Option<InstanceState> {
        InstanceState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Desired and ready replica counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCounts {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas answering their readiness check.
    pub ready: u32,
}

/// The ways to reach an instance.
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

/// One point of an instance's usage time series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    /// When it was taken (for downsampled points: the start of their minute).
    pub at: DateTime<Utc>,
    /// Replicas asked for.
    pub replicas_desired: u32,
    /// Replicas ready.
    pub replicas_ready: u32,
    /// CPU of all replicas together, in millicores.
    pub cpu_millicores: Option<f64>,
    /// Resident memory of all replicas together, in bytes.
    pub memory_bytes: Option<u64>,
    /// Invocations through the gateway per second (the figures of `/metrics`).
    pub requests_per_s: Option<f64>,
    /// Median gateway invocation latency (to the response headers) in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile gateway invocation latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// Invocations through the gateway since the previous sample.
    #[serde(default)]
    pub invocations: u32,
    /// Invocations that failed (5xx from the function or the gateway).
    pub errors: u32,
    /// The autoscaler's load in percent of its target (its most loaded metric: 100 = on
    /// target, above scales up), when autoscaling is on and measured.
    #[serde(default)]
    pub autoscaler_load_percent: Option<f64>,
}

/// Reasons of the events that change an instance's replica count, which the charts mark.
pub const SCALING_REASONS: [&str; 4] = ["ScalingReplicaSet", "ScaledFromZero", "ScaledToZero", "SuccessfulRescale"];

/// One instance's usage over a window, as its charts draw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// The window's end (when the report was made).
    pub until: DateTime<Utc>,
    /// The samples in the window, oldest first.
    pub samples: Vec<UsageSample>,
    /// The scaling events in the window, newest first.
    pub scaling_events: Vec<EventInfo>,
}

/// Usage added up over some instances: now (replicas, CPU, memory) and over a window
/// (invocations, errors).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Instances counted.
    pub instances: u32,
    /// Replicas ready now.
    pub replicas_ready: u32,
    /// Replicas asked for now.
    pub replicas_desired: u32,
    /// CPU now, in millicores (the latest sample of each instance).
    pub cpu_millicores: f64,
    /// Resident memory now, in bytes (the latest sample of each instance).
    pub memory_bytes: u64,
    /// Invocations through the gateway in the window.
    pub invocations: u64,
    /// Invocations that failed in the window.
    pub errors: u64,
}

/// One row of the admin dashboard's usage tables: a user or a function and its totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedUsage {
    /// The user's or the function's name.
    pub name: String,
    /// Its usage.
    pub totals: UsageTotals,
}

/// A scaling event and whose instance it happened to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// The instance's user.
    pub user: String,
    /// The instance's function.
    pub function: String,
    /// The event.
    pub event: EventInfo,
}

/// How the runtime and the database are doing, for the admin dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformHealth {
    /// `local` or `kubernetes`.
    pub runtime: String,
    /// Whether the database answered.
    pub database_ok: bool,
    /// Instances per state (`Ready`, `Failed`, …), by state name.
    pub instances_by_state: BTreeMap<String, u32>,
    /// Recorded instances the runtime does not report on (not applied yet, or lost).
    pub instances_unreported: u32,
    /// The runtime's own checks (the cluster's metrics API, cgroups, the warm pool, …).
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

/// One thing a runtime checks about itself, for the admin dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What is checked ("metrics.k8s.io", "warm pool").
    pub name: String,
    /// Whether it is as it should be.
    pub ok: bool,
    /// What was found, and what to do when it is not ok.
    pub detail: String,
}

impl HealthCheck {
    /// A check named `name` that found `detail`.
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> HealthCheck {
        HealthCheck { name: name.to_string(), ok, detail: detail.into() }
    }
}

/// Everything the admin dashboard shows, for one window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminOverview {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// The window's end.
    pub until: DateTime<Utc>,
    /// Runtime and database health.
    pub health: PlatformHealth,
    /// Every instance of every user.
    pub instances: Vec<InstanceInfo>,
    /// Every user with their usage (users without instances too), by name.
    pub users: Vec<NamedUsage>,
    /// Functions by invocations in the window, most first.
    pub top_functions: Vec<NamedUsage>,
    /// All instances together.
    pub totals: UsageTotals,
    /// All instances' samples added up per time bucket, oldest first.
    pub series: Vec<UsageSample>,
    /// Recent scaling events of every instance, newest first.
    pub scaling_events: Vec<InstanceEvent>,
}

/// The answer to a test invocation from the UI.
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

/// A cron trigger as created: `POST /api/v1/functions/{name}/triggers`. It invokes the
/// caller's instance of the function through the gateway, as the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// A standard 5-field cron schedule in UTC (`*/5 * * * *`), or `@hourly` and the like.
    pub schedule: String,
    /// The HTTP method of each invocation.
    #[serde(default = "default_trigger_method")]
    pub method: String,
    /// The path (and query) under the function, e.g. `/report?full=1`.
    #[serde(default = "default_trigger_path")]
    pub path: String,
    /// The request body.
    #[serde(default)]
    pub body: String,
}

fn default_trigger_method() -> String {
    "POST".into()
}

fn default_trigger_path() -> String {
    "/".into()
}

/// A trigger with its recent runs: `GET /api/v1/triggers/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// Its id.
    pub id: i64,
    /// The function it invokes.
    pub function: String,
    /// Whose instance it invokes (and as whom).
    pub user: String,
    /// What it sends, and when.
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// The next time it fires.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last time it fired (or was due and skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its latest runs, newest first.
    pub runs: Vec<TriggerRun>,
}

/// How one run of a trigger went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Invoking now.
    Running,
    /// The function answered with a status below 400.
    Ok,
    /// The function answered 4xx/5xx, or could not be reached.
    Failed,
    /// Due while kubefn was not running: not fired (recorded so nobody wonders).
    Skipped,
}

impl RunOutcome {
    /// The name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Skipped => "skipped",
        }
    }

    /// Parses the name used in JSON and the database.
    pub fn parse(text: &str) -> Option<RunOutcome> {
        [RunOutcome::Running, RunOutcome::Ok, RunOutcome::Failed, RunOutcome::Skipped]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// One run of a trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRun {
    /// The minute it was due (for skipped runs: the first missed one).
    pub scheduled_for: DateTime<Utc>,
    /// How it went.
    pub outcome: RunOutcome,
    /// The function's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Time to the answer, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The start of the answer, or why it failed or was skipped.
    pub message: String,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /async/fn/{user}/{function}/…` (202 Accepted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncAccepted {
    /// The invocation's id.
    pub id: String,
    /// Where its state and result are: `GET` this.
    pub status_url: String,
}

/// Where an async invocation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsyncState {
    /// Waiting for its (next) attempt.
    Queued,
    /// Being invoked now.
    Running,
    /// The function answered with a status below 400.
    Succeeded,
    /// It answered 4xx (not retried), or every attempt failed.
    Failed,
}

impl AsyncState {
    /// The name used in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AsyncState::Queued => "queued",
            AsyncState::Running => "running",
            AsyncState::Succeeded => "succeeded",
            AsyncState::Failed => "failed",
        }
    }

    /// Parses the name used in JSON and the database.
    pub fn parse(text: &str) -> Option<AsyncState> {
        [AsyncState::Queued, AsyncState::Running, AsyncState::Succeeded, AsyncState::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// An async invocation as `GET /api/v1/async/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncStatus {
    /// Its id.
    pub id: String,
    /// The function.
    pub function: String,
    /// Whose instance.
    pub user: String,
    /// Where it is.
    pub state: AsyncState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (while queued).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The function's HTTP status, once it answered.
    pub status: Option<u16>,
    /// The function's answer (as text, invalid UTF-8 replaced; at most 256 KiB kept).
    pub response: Option<String>,
    /// Why the last attempt failed, if it did.
    pub error: String,
    /// Where the result is sent, if anywhere.
    pub callback_url: Option<String>,
    /// How sending it there went.
    pub callback_result: String,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Per-user limits an admin may set (`PUT /api/v1/admin/users/{name}/quota`); `None` means
/// kubefn's default ([`Quota::DEFAULT`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Functions the user may own.
    #[serde(default)]
    pub functions: Option<u32>,
    /// Versions of all their functions together.
    #[serde(default)]
    pub versions: Option<u32>,
    /// Instances the user may run.
    #[serde(default)]
    pub instances: Option<u32>,
    /// Replicas of all their instances together, each counted at its most (its autoscaler's
    /// maximum, or the count it was scaled to).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// CPU of those replicas at their limits, in millicores.
    #[serde(default)]
    pub cpu_millicores: Option<u64>,
    /// Memory of those replicas at their limits, in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// Limits in force, or what a user uses of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Functions owned.
    pub functions: u32,
    /// Versions of all owned functions.
    pub versions: u32,
    /// Instances.
    pub instances: u32,
    /// Replicas of all instances, each at its most.
    pub replicas: u32,
    /// CPU of those replicas at their limits, in millicores.
    pub cpu_millicores: u64,
    /// Memory of those replicas at their limits, in bytes.
    pub memory_bytes: u64,
}

impl Quota {
    /// What every user may have until an admin says otherwise: room for real work on one
    /// account, not for one account to take a shared machine.
    pub const DEFAULT: Quota = Quota {
        functions: 100,
        versions: 2000,
        instances: 50,
        replicas: 100,
        cpu_millicores: 32_000,
        memory_bytes: 64 << 30,
    };

    /// The settings with kubefn's defaults where they are silent.
    pub fn from_settings(settings: &QuotaSettings) -> Quota {
        let d = Quota::DEFAULT;
        Quota {
            functions: settings.functions.unwrap_or(d.functions),
            versions: settings.versions.unwrap_or(d.versions),
            instances: settings.instances.unwrap_or(d.instances),
            replicas: settings.replicas.unwrap_or(d.replicas),
            cpu_millicores: settings.cpu_millicores.unwrap_or(d.cpu_millicores),
            memory_bytes: settings.memory_bytes.unwrap_or(d.memory_bytes),
        }
    }
}

/// A user's quota: what an admin set, what applies, and what they use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    /// The user.
    pub user: String,
    /// What an admin set (`null`: the default).
    pub settings: QuotaSettings,
    /// The limits in force.
    pub quota: Quota,
    /// What the user uses now.
    pub used: Quota,
}

//! Functions: what one is (language, code, resources, scaling, how it is reached and invoked),
//! its immutable versions, and the catalog.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a function's code is: Python or Node source (run by that language's bootstrap), or a
/// container image. On the wire and in forms the field is still called `runtime`; not to be
/// confused with the runtime backends of [`crate::platform::runtime`] (where instances run).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Language {
    /// Python source run by the Python bootstrap.
    #[default]
    Python,
    /// Node source run by the Node bootstrap.
    Node,
    /// A container image that serves HTTP itself.
    Image,
}

/// Who may see and deploy a function besides its owner (admins always may).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Visibility {
    /// Listed for and deployable by every user.
    Public,
    /// Only the owner and admins see it.
    #[default]
    Private,
}

/// How an instance is exposed, named as the Kubernetes Service types.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray,
)]
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

/// How an instance is reached.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
    /// Secrets its replicas read, by name. Each instance gets its own user's secrets of these
    /// names (never the owner's), as files `/var/openfaas/secrets/NAME` and optionally as env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretUse>,
    /// Image functions: the name of the secret holding the credentials (a Docker
    /// `config.json`, `{"auths": {…}}`) to pull the image with from a private registry; the
    /// instance's user's secret of that name, as with `secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_secret: Option<String>,
}

/// A secret a function reads.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretUse {
    /// The secret's name; replicas read it from `/var/openfaas/secrets/NAME`.
    pub name: String,
    /// An environment variable to give the value in as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl FunctionSpec {
    /// A spec of `name` on `runtime` running `source`, with every other field at the default a
    /// registration gets when it leaves that field out (the serde defaults above; a unit test
    /// holds the two together). Change fields with struct update syntax:
    /// `FunctionSpec { timeout_s: 5, ..FunctionSpec::new("hello", Language::Python, source) }`.
    pub fn new(name: impl Into<String>, runtime: Language, source: impl Into<String>) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            runtime,
            handler: None,
            source: source.into(),
            requirements: String::new(),
            image: None,
            env: BTreeMap::new(),
            visibility: Visibility::default(),
            resources: Resources::default(),
            scaling: ScalingPolicy::default(),
            service: ServiceSpec::default(),
            timeout_s: default_timeout_s(),
            invoke: InvokePolicy::default(),
            secrets: Vec::new(),
            registry_secret: None,
        }
    }
}

/// Who may invoke an instance through the gateway (`/fn/{user}/{function}/…`).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum InvokeAccess {
    /// The instance's user and admins (a session or their API token).
    #[default]
    Owner,
    /// Anyone with a kubefn account: a session or an API token of any user.
    Token,
    /// Anyone, without credentials.
    Public,
}

/// How the gateway admits invocations of a function's instances.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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

/// One line of the catalog.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDetail {
    /// The function's name.
    pub function: String,
    /// Metadata of the version.
    pub info: VersionInfo,
    /// Its spec as registered.
    pub spec: FunctionSpec,
}

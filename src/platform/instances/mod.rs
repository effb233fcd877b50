//! Instances: deploying a function gives the caller their own running copy of it. The store
//! records what each user asked for; the [`Runtime`] runs it; the reconcile loop makes the
//! runtime follow the store at start-up and periodically (so a restart of kubefn loses nothing
//! and a function's new current version rolls out to every instance of it).

use crate::platform::auth::Principal;
use crate::platform::metrics::{GatewayMetrics, InstanceLabels};
use crate::platform::model::UsageSample;
use crate::platform::model::{
    AdminOverview, EventInfo, FieldError, FunctionSpec, InstanceEvent, InstanceInfo, InstanceState, InstanceUrls,
    NamedUsage, PlatformHealth, Quota, QuotaReport, ReplicaCounts, SCALING_REASONS, UsageReport,
};
use crate::platform::quotas::{Footprint, QuotaError, Quotas};
use crate::platform::registry::{Registry, RegistryError};
use crate::platform::runtime::{ApplyMode, InstanceSpec, LogStream, Runtime, RuntimeError, RuntimeStatus};
use crate::platform::secrets::{Secrets, SecretsError};
use crate::platform::store::{InstanceRecord, Store, StoreError};
use crate::platform::usage_report;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use follows::FollowSlot;
pub use follows::MAX_FOLLOWS_PER_USER;
use reconcile::Meters;

mod follows;
mod quota;
mod reconcile;
mod removal;
mod reports;
mod serving;

/// The most replicas one instance may be scaled to by hand.
pub const MAX_REPLICAS: u32 = 20;

/// Why an instance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The function is unknown or not visible to the caller.
    #[error(transparent)]
    Function(#[from] RegistryError),
    /// No instance with that id belongs to the caller.
    #[error("no instance {id} of yours exists")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The caller has no instance of that function.
    #[error("you have no instance of function {function:?}; deploy it first")]
    NotDeployed {
        /// The function's name.
        function: String,
    },
    /// A request field is out of range.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The runtime cannot run this function.
    #[error("{0}")]
    Unsupported(#[source] RuntimeError),
    /// Only admins may do this.
    #[error("only admins may see {what}; ask an admin")]
    AdminOnly {
        /// What was asked for.
        what: &'static str,
    },
    /// The runtime failed or refused; the instance stays recorded and is retried.
    #[error("the runtime could not apply it: {0}; the instance is saved, kubefn keeps trying, and its state shows why")]
    Runtime(#[source] RuntimeError),
    /// The user's quota allows no more.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The caller already follows as many live logs as one user may.
    #[error("you already follow {limit} live logs at once; close one (a browser tab showing logs, say) and try again")]
    TooManyFollows {
        /// The limit per user.
        limit: usize,
    },
    /// The instance is being deleted; it can be deployed or changed again once it is gone.
    #[error("instance {id} is being deleted; deploy the function again once the deletion has finished")]
    BeingDeleted {
        /// The instance's id.
        id: String,
    },
    /// The instance's user lacks a secret the function reads, or it cannot be given as asked.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The store failed.
    #[error("the instance store failed")]
    Store(#[from] StoreError),
}

/// Which version a user's instance of someone else's function runs (see [`Instances::deploy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionChoice {
    /// Follow the owner's current version, updates and rollbacks included.
    FollowUpdates,
    /// Stay on one version: the one given, else the one the instance runs now (the current
    /// one for a new instance).
    Pin(Option<u32>),
}

/// How a delete request ended.
#[derive(Debug)]
pub enum Removal {
    /// The instance is gone: replicas stopped, ports freed, record removed.
    Done,
    /// The runtime is still stopping the replicas (the instance shows state `Deleting` until
    /// then); the deletion finishes in the background and survives a restart of kubefn.
    Underway(Box<InstanceInfo>),
}

/// How long a delete request waits for the runtime before answering that the deletion goes on
/// in the background: pods that take their grace period must not keep the user's request open.
const DELETE_WAIT: Duration = Duration::from_secs(5);

type InstanceResult<T> = Result<T, InstanceError>;

/// Deploys, lists and changes instances over the store and a runtime; cheap to clone.
#[derive(Clone)]
pub struct Instances {
    store: Store,
    registry: Registry,
    runtime: Arc<dyn Runtime>,
    /// The gateway's figures, which the usage samples' requests, latency and errors come from.
    invocations: Arc<GatewayMetrics>,
    wake: Arc<Notify>,
    meters: Arc<Mutex<Meters>>,
    /// Held by every change and by a whole reconcile pass, so a pass working from a list read
    /// before a delete cannot start the deleted instance again.
    changes: Arc<tokio::sync::Mutex<()>>,
    /// Instances whose runtime deletion is under way, so a delete request and the reconcile
    /// loop never remove the same one twice at once.
    removing: Arc<Mutex<HashSet<String>>>,
    /// Live log follows open per user id, bounded by [`MAX_FOLLOWS_PER_USER`].
    follows: Arc<Mutex<HashMap<i64, usize>>>,
    quotas: Quotas,
    /// Where an instance's secrets come from: its own user's, by the names its spec lists.
    secrets: Secrets,
}

/// Scaling events a chart or the dashboard shows at most.
const SCALING_EVENTS_SHOWN: u32 = 50;
/// Functions the dashboard's "top functions" table lists.
const TOP_FUNCTIONS_SHOWN: usize = 10;
/// Points of the dashboard's all-instances series.
const SERIES_POINTS: u32 = 120;

/// How often old usage samples are thinned.
const DOWNSAMPLE_EVERY: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").field("runtime", &self.runtime.name()).finish_non_exhaustive()
    }
}

impl Instances {
    /// Instances over `store`, run by `runtime`, their invocations counted in `invocations`.
    pub fn new(
        store: Store,
        registry: Registry,
        runtime: Arc<dyn Runtime>,
        invocations: Arc<GatewayMetrics>,
        secrets: Secrets,
    ) -> Instances {
        let wake = registry.current_version_changed();
        Instances {
            quotas: Quotas::new(store.clone()),
            store,
            registry,
            runtime,
            invocations,
            wake,
            meters: Arc::default(),
            changes: Arc::default(),
            removing: Arc::default(),
            follows: Arc::default(),
            secrets,
        }
    }

    /// The runtime's name (`local` or `kubernetes`).
    pub fn runtime_name(&self) -> &'static str {
        self.runtime.name()
    }

    /// Deploys the caller's instance of a function they may see; deploying again keeps the
    /// instance, un-pauses it and retries a version that failed. Returns it and whether it is new.
    ///
    /// The owner's own instance always runs the function's current version. An instance of
    /// someone else's function stays on the version it was deployed with, unless `choice` says
    /// to follow the owner's updates: an owner must not be able to roll new code into the
    /// instances of users who never asked for it. `None` keeps an existing instance's choice.
    pub async fn deploy(
        &self,
        caller: &Principal,
        function: &str,
        choice: Option<VersionChoice>,
    ) -> InstanceResult<(InstanceInfo, bool)> {
        let _changing = self.changes.lock().await;
        let record = self.registry.find_visible(caller, function).await?;
        let existing = self.store.instance_of(record.id, caller.id).await?;
        if let Some(existing) = &existing
            && existing.state == InstanceState::Deleting
        {
            return Err(InstanceError::BeingDeleted { id: existing.id.clone() });
        }
        let own = record.owner_id == caller.id;
        // Some(pin) to record (None inside: follow), or None to keep the existing instance's.
        let pin: Option<Option<u32>> = match (own, choice, &existing) {
            (true, None | Some(VersionChoice::FollowUpdates), _) => Some(None),
            (true, Some(VersionChoice::Pin(_)), _) => {
                return Err(InstanceError::Invalid(FieldError::new(
                    "version",
                    "your own instance runs your function's current version; roll the function back to run an older one",
                )));
            }
            (false, Some(VersionChoice::FollowUpdates), _) => Some(None),
            (false, Some(VersionChoice::Pin(Some(version))), _) => Some(Some(version)),
            (false, Some(VersionChoice::Pin(None)), Some(existing)) => Some(Some(existing.function_version)),
            (false, Some(VersionChoice::Pin(None)) | None, None) => Some(Some(record.current_version)),
            (false, None, Some(_)) => None,
        };
        let version = match (pin, &existing) {
            (Some(Some(version)), _) => version,
            (Some(None), _) => record.current_version,
            (None, Some(existing)) => existing.function_version,
            (None, None) => record.current_version,
        };
        let spec = self.version_spec(record.id, version, &record.name).await.map_err(|error| match error {
            InstanceError::Function(RegistryError::NoSuchVersion { .. }) => InstanceError::Invalid(FieldError::new(
                "version",
                format!("{} has no version {version}; see its versions", record.name),
            )),
            other => other,
        })?;
        self.runtime.check(&spec).map_err(InstanceError::Unsupported)?;
        // The caller's own secrets of the names the function lists: refused now, naming the
        // missing one, rather than recorded and failing.
        self.secrets.for_instance(caller.id, &spec).await?;
        let replicas = spec.scaling.min.max(1);
        let planned = Footprint::of(&spec, existing.as_ref().map_or(replicas, |e| e.replicas));
        self.check_quota(caller.id, existing.as_ref().map(|e| e.id.as_str()), planned).await?;
        let (instance, created) =
            self.store.upsert_instance(record.id, caller.id, version, replicas, pin.flatten()).await?;
        let mut instance = match (created, pin) {
            (false, Some(pin)) => {
                self.store.set_instance_pin(&instance.id, pin).await?;
                self.store
                    .instance(&instance.id)
                    .await?
                    .ok_or_else(|| InstanceError::NotFound { id: instance.id.clone() })?
            }
            _ => instance,
        };
        instance.paused = false;
        let quota = self.quotas.quota_of(caller.id).await?;
        if let Err(error) = self.apply(&instance, spec, quota, ApplyMode::Retry).await {
            // The instance is recorded and the reconcile loop retries it; until then its state
            // says why it does not run, as the reconcile loop's own failures do.
            if let InstanceError::Runtime(refusal) = &error {
                tracing::warn!(instance = %instance.id, error = %refusal, "cannot apply the instance");
                self.store.set_instance_state(&instance.id, InstanceState::Failed, &refusal.owner_message()).await?;
            }
            return Err(error);
        }
        Ok((self.info(instance), created))
    }

    /// Deletes the caller's instance of a function (see [`Instances::delete`]).
    pub async fn undeploy(&self, caller: &Principal, function: &str) -> InstanceResult<Removal> {
        let instance = {
            let _changing = self.changes.lock().await;
            let record = self.registry.find_visible(caller, function).await?;
            let instance = self
                .store
                .instance_of(record.id, caller.id)
                .await?
                .ok_or_else(|| InstanceError::NotDeployed { function: function.to_string() })?;
            self.mark_deleting(instance).await?
        };
        self.remove_waiting(instance).await
    }

    /// Deletes one instance: its replicas stop, its ports are freed, its record goes. Waits a
    /// few seconds for the runtime; replicas that take longer to stop are left to finish in the
    /// background ([`Removal::Underway`]).
    pub async fn delete(&self, caller: &Principal, id: &str) -> InstanceResult<Removal> {
        let instance = {
            let _changing = self.changes.lock().await;
            let instance = self.owned(caller, id).await?;
            self.mark_deleting(instance).await?
        };
        self.remove_waiting(instance).await
    }

    /// The caller's instances (an admin's: everyone's).
    pub async fn list(&self, caller: &Principal) -> InstanceResult<Vec<InstanceInfo>> {
        let records = self.store.instances(if caller.is_admin() { None } else { Some(caller.id) }).await?;
        Ok(records.into_iter().map(|record| self.info(record)).collect())
    }

    /// The caller's own instances (admin or not) of the functions named `functions`.
    pub async fn list_own(&self, caller: &Principal, functions: &[String]) -> InstanceResult<Vec<InstanceInfo>> {
        let records = self.store.instances_of_functions(caller.id, functions).await?;
        Ok(records.into_iter().map(|record| self.info(record)).collect())
    }

    /// One instance of the caller's (an admin: anyone's).
    pub async fn get(&self, caller: &Principal, id: &str) -> InstanceResult<InstanceInfo> {
        let record = self.owned(caller, id).await?;
        self.info_with_events(record).await
    }

    /// The caller's instance of a function, if they have one.
    pub async fn mine(&self, caller: &Principal, function: &str) -> InstanceResult<Option<InstanceInfo>> {
        let record = self.registry.find_visible(caller, function).await?;
        match self.store.instance_of(record.id, caller.id).await? {
            Some(instance) => Ok(Some(self.info_with_events(instance).await?)),
            None => Ok(None),
        }
    }

    /// Stops every replica of an instance but keeps it.
    pub async fn pause(&self, caller: &Principal, id: &str) -> InstanceResult<InstanceInfo> {
        self.change(caller, id, |instance| instance.paused = true).await
    }

    /// Starts a paused instance's replicas again.
    pub async fn resume(&self, caller: &Principal, id: &str) -> InstanceResult<InstanceInfo> {
        self.change(caller, id, |instance| instance.paused = false).await
    }

    /// Sets an instance's replicas (0 to [`MAX_REPLICAS`]).
    pub async fn scale(&self, caller: &Principal, id: &str, replicas: u32) -> InstanceResult<InstanceInfo> {
        let _changing = self.changes.lock().await;
        if replicas > MAX_REPLICAS {
            return Err(InstanceError::Invalid(FieldError::new(
                "replicas",
                format!("replicas must be between 0 and {MAX_REPLICAS}"),
            )));
        }
        let mut instance = self.owned(caller, id).await?;
        let spec = self.version_spec(instance.function_id, instance.function_version, &instance.function).await?;
        self.check_quota(instance.user_id, Some(&instance.id), Footprint::of(&spec, replicas)).await?;
        instance.replicas = replicas;
        self.store.set_instance_desired(&instance.id, instance.desired_version, replicas, instance.paused).await?;
        let quota = self.quotas.quota_of(instance.user_id).await?;
        self.apply(&instance, spec, quota, ApplyMode::SetReplicas).await?;
        Ok(self.info(instance))
    }

    /// Hands the instance to the runtime with `spec` and its user's `quota` (read once per
    /// user by a reconcile pass, not once per instance).
    async fn apply(
        &self,
        instance: &InstanceRecord,
        spec: FunctionSpec,
        quota: Quota,
        mode: ApplyMode,
    ) -> InstanceResult<()> {
        let version = instance.function_version;
        let (secrets, registry_credentials) = self.secrets.for_instance(instance.user_id, &spec).await?;
        let desired = InstanceSpec {
            id: instance.id.clone(),
            function: instance.function.clone(),
            user: instance.user.clone(),
            version,
            spec,
            replicas: instance.replicas,
            paused: instance.paused,
            node_port: instance.node_port,
            user_quota: Some(quota),
            secrets,
            registry_credentials,
        };
        if instance.desired_version != version && mode != ApplyMode::Serve {
            self.store.set_instance_desired(&instance.id, version, instance.replicas, instance.paused).await?;
        }
        self.runtime.apply(desired, mode).await.map_err(|error| match error {
            RuntimeError::Unsupported { .. } => InstanceError::Unsupported(error),
            other => InstanceError::Runtime(other),
        })
    }

    async fn change(
        &self,
        caller: &Principal,
        id: &str,
        edit: impl FnOnce(&mut InstanceRecord),
    ) -> InstanceResult<InstanceInfo> {
        let _changing = self.changes.lock().await;
        let mut instance = self.owned(caller, id).await?;
        if instance.state == InstanceState::Deleting {
            return Err(InstanceError::BeingDeleted { id: instance.id });
        }
        edit(&mut instance);
        self.store
            .set_instance_desired(&instance.id, instance.desired_version, instance.replicas, instance.paused)
            .await?;
        let spec = self.version_spec(instance.function_id, instance.function_version, &instance.function).await?;
        let quota = self.quotas.quota_of(instance.user_id).await?;
        self.apply(&instance, spec, quota, ApplyMode::Reconcile).await?;
        Ok(self.info(instance))
    }

    async fn owned(&self, caller: &Principal, id: &str) -> InstanceResult<InstanceRecord> {
        match self.store.instance(id).await? {
            Some(instance) if instance.user_id == caller.id || caller.is_admin() => Ok(instance),
            _ => Err(InstanceError::NotFound { id: id.to_string() }),
        }
    }

    /// The spec `instance` runs, taken from `specs` (read for many instances at once by
    /// [`Store::instance_specs`]), or read now for one created after that read.
    async fn spec_of(
        &self,
        specs: &mut HashMap<String, FunctionSpec>,
        instance: &InstanceRecord,
    ) -> InstanceResult<FunctionSpec> {
        match specs.remove(&instance.id) {
            Some(spec) => Ok(spec),
            None => self.version_spec(instance.function_id, instance.function_version, &instance.function).await,
        }
    }

    async fn version_spec(&self, function_id: i64, version: u32, name: &str) -> InstanceResult<FunctionSpec> {
        match self.store.version_spec(function_id, version).await? {
            Some((_, spec)) => Ok(spec),
            None => Err(InstanceError::Function(RegistryError::NoSuchVersion { name: name.to_string(), version })),
        }
    }

    /// The instance as the API shows it, with its stored events (the runtime's newest ones
    /// first, for those not stored yet).
    async fn info_with_events(&self, record: InstanceRecord) -> InstanceResult<InstanceInfo> {
        let stored = self.store.events(&record.id).await?;
        let mut info = self.info(record);
        let newest = stored.first().map(|e| e.at);
        info.events.retain(|e| newest.is_none_or(|newest| e.at > newest));
        info.events.extend(stored);
        Ok(info)
    }

    fn info(&self, record: InstanceRecord) -> InstanceInfo {
        let status = self.runtime.status(&record.id);
        let gateway = format!("/fn/{}/{}", record.user, record.function);
        let (state, message) = match &status {
            _ if record.state == InstanceState::Deleting => (InstanceState::Deleting, record.message.clone()),
            // The last apply failed (a secret went missing, say) while the runtime keeps running
            // what it had: its state, and the reason the change did not take.
            Some(status) if record.state == InstanceState::Failed && status.state != InstanceState::Failed => {
                (status.state, record.message.clone())
            }
            Some(status) => (status.state, status.message.clone()),
            // Applying failed before the runtime took it: the reason is in the store.
            None if record.state == InstanceState::Failed => (record.state, record.message.clone()),
            // Not (yet) handed to the runtime, e.g. just after kubefn started: what the store
            // last saw is stale.
            None => (InstanceState::Pending, "waiting for the runtime to start it".to_string()),
        };
        InstanceInfo {
            id: record.id,
            function: record.function,
            user: record.user,
            version: record.function_version,
            latest_version: record.current_version,
            pinned: record.pinned,
            serving_version: status.as_ref().and_then(|s| s.serving_version),
            state,
            message,
            paused: record.paused,
            replicas: ReplicaCounts {
                desired: status.as_ref().map_or(if record.paused { 0 } else { record.replicas }, |s| s.desired),
                ready: status.as_ref().map_or(0, |s| s.ready),
            },
            urls: InstanceUrls {
                gateway,
                node_port: status.as_ref().and_then(|s| s.node_port).map(|address| format!("http://{address}")),
                port_forward: status.as_ref().and_then(|s| s.port_forward).map(|address| format!("http://{address}")),
            },
            limits: status.as_ref().map(|s| s.limits.clone()).unwrap_or_default(),
            replica_details: status.as_ref().map(|s| s.replicas.clone()).unwrap_or_default(),
            events: status.map(|s| s.events).unwrap_or_default(),
            created_at: record.created_at,
        }
    }
}

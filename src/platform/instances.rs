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
use crate::platform::store::{InstanceRecord, Store, StoreError};
use crate::platform::usage_report;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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
    /// The runtime failed.
    #[error("the runtime failed: {0}")]
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
}

/// Live log follows one user may have open at once: each holds a connection and a watch on the
/// runtime (on Kubernetes, a log stream per pod), so a flood of them must stop somewhere.
pub const MAX_FOLLOWS_PER_USER: usize = 8;

/// One open follow, counted against its user until the stream is dropped.
struct FollowSlot {
    follows: Arc<Mutex<HashMap<i64, usize>>>,
    user: i64,
}

impl FollowSlot {
    /// A slot for `user`, or `None` when they have [`MAX_FOLLOWS_PER_USER`] already.
    fn take(follows: &Arc<Mutex<HashMap<i64, usize>>>, user: i64) -> Option<FollowSlot> {
        let mut open = follows.lock();
        let count = open.entry(user).or_default();
        if *count >= MAX_FOLLOWS_PER_USER {
            return None;
        }
        *count += 1;
        Some(FollowSlot { follows: follows.clone(), user })
    }
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        let mut open = self.follows.lock();
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// What the previous usage sample saw, to turn counters into rates.
#[derive(Default)]
struct Meters {
    /// Per instance: when the last sample was taken and the gateway's call count then.
    calls: HashMap<String, (Instant, u64)>,
    last_downsample: Option<Instant>,
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
        self.apply(&instance, spec, quota, ApplyMode::Retry).await?;
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

    /// The caller's own instances, admin or not.
    pub async fn list_own(&self, caller: &Principal) -> InstanceResult<Vec<InstanceInfo>> {
        let records = self.store.instances(Some(caller.id)).await?;
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

    /// What each of the user's instances but `except` claims at its most ([`Footprint`]).
    async fn footprints(&self, user_id: i64, except: Option<&str>) -> InstanceResult<Vec<Footprint>> {
        let mut footprints = Vec::new();
        for instance in self.store.instances(Some(user_id)).await? {
            if instance.state == InstanceState::Deleting || Some(instance.id.as_str()) == except {
                continue;
            }
            let spec = self.version_spec(instance.function_id, instance.function_version, &instance.function).await?;
            footprints.push(Footprint::of(&spec, instance.replicas));
        }
        Ok(footprints)
    }

    /// The quota and use of user `name`: the caller's own, or anyone's for an admin.
    pub async fn quota_report(&self, caller: &Principal, name: &str) -> InstanceResult<QuotaReport> {
        let user = self.quotas.user(caller, name).await?;
        let footprints = self.footprints(user.id, None).await?;
        Ok(self.quotas.report(&user, &footprints).await?)
    }

    /// Refuses a change that would take the user past their quota: instance `changed` (or a new
    /// one, when `None`) claiming `planned`, the others as they are.
    async fn check_quota(&self, user_id: i64, changed: Option<&str>, planned: Footprint) -> InstanceResult<()> {
        let mut after = self.footprints(user_id, changed).await?;
        after.push(planned);
        Ok(self.quotas.check_instances(user_id, &after).await?)
    }

    /// The instance's usage time series since `since`.
    pub async fn usage(&self, caller: &Principal, id: &str, since: DateTime<Utc>) -> InstanceResult<Vec<UsageSample>> {
        let instance = self.owned(caller, id).await?;
        Ok(self.store.usage(&instance.id, since).await?)
    }

    /// The instance's usage since `since` with the scaling events in that window, for its charts.
    pub async fn usage_report(
        &self,
        caller: &Principal,
        id: &str,
        since: DateTime<Utc>,
    ) -> InstanceResult<UsageReport> {
        let instance = self.owned(caller, id).await?;
        let samples = self.store.usage(&instance.id, since).await?;
        let events =
            self.store.events_with_reasons(Some(&instance.id), &SCALING_REASONS, since, SCALING_EVENTS_SHOWN).await?;
        Ok(UsageReport {
            since,
            until: Utc::now(),
            samples,
            scaling_events: events.into_iter().map(|(_, event)| event).collect(),
        })
    }

    /// Everyone's instances and usage since `since`, for the admin dashboard; admins only.
    pub async fn overview(&self, caller: &Principal, since: DateTime<Utc>) -> InstanceResult<AdminOverview> {
        if !caller.is_admin() {
            return Err(InstanceError::AdminOnly { what: "everyone's instances and usage" });
        }
        let until = Utc::now();
        let database_ok = self.store.ping().await.is_ok();
        let instances = self.list(caller).await?;
        let samples = self.store.usage_of_all(since).await?;
        let users = self.store.users().await?;
        let samples_of = |instance: &InstanceInfo| samples.get(&instance.id).map_or(&[][..], Vec::as_slice);
        let usage_where = |keep: &dyn Fn(&InstanceInfo) -> bool| {
            usage_report::totals(instances.iter().filter(|i| keep(i)).map(|i| (i, samples_of(i))))
        };

        let users = users
            .iter()
            .map(|user| NamedUsage { name: user.name.clone(), totals: usage_where(&|i| i.user == user.name) })
            .collect();
        let mut function_names: Vec<&str> = instances.iter().map(|i| i.function.as_str()).collect();
        function_names.sort_unstable();
        function_names.dedup();
        let mut top_functions: Vec<NamedUsage> = function_names
            .iter()
            .map(|name| NamedUsage { name: name.to_string(), totals: usage_where(&|i| i.function == *name) })
            .collect();
        top_functions.sort_by(|a, b| b.totals.invocations.cmp(&a.totals.invocations).then_with(|| a.name.cmp(&b.name)));
        top_functions.truncate(TOP_FUNCTIONS_SHOWN);

        let by_id: HashMap<&str, &InstanceInfo> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
        let scaling_events = self
            .store
            .events_with_reasons(None, &SCALING_REASONS, since, SCALING_EVENTS_SHOWN)
            .await?
            .into_iter()
            .filter_map(|(id, event)| {
                by_id.get(id.as_str()).map(|i| InstanceEvent {
                    user: i.user.clone(),
                    function: i.function.clone(),
                    event,
                })
            })
            .collect();
        let mut instances_by_state = std::collections::BTreeMap::new();
        for instance in &instances {
            *instances_by_state.entry(instance.state.as_str().to_string()).or_insert(0) += 1;
        }
        let running: HashSet<String> = self.runtime.instance_ids().into_iter().collect();
        let instances_unreported =
            u32::try_from(instances.iter().filter(|i| !running.contains(&i.id)).count()).unwrap_or(u32::MAX);
        let all: Vec<&[UsageSample]> = instances.iter().map(samples_of).collect();
        Ok(AdminOverview {
            since,
            until,
            health: PlatformHealth {
                runtime: self.runtime.name().to_string(),
                database_ok,
                instances_by_state,
                instances_unreported,
                checks: self.runtime.health(),
            },
            totals: usage_where(&|_| true),
            series: usage_report::summed_series(&all, since, until, SERIES_POINTS),
            users,
            top_functions,
            scaling_events,
            instances,
        })
    }

    /// The instance's log lines (from `since` on, when given); with `follow`, new ones as they come.
    pub async fn logs(
        &self,
        caller: &Principal,
        id: &str,
        follow: bool,
        since: Option<DateTime<Utc>>,
    ) -> InstanceResult<LogStream> {
        let instance = self.owned(caller, id).await?;
        let slot = match follow {
            true => Some(
                FollowSlot::take(&self.follows, caller.id)
                    .ok_or(InstanceError::TooManyFollows { limit: MAX_FOLLOWS_PER_USER })?,
            ),
            false => None,
        };
        match self.runtime.logs(&instance.id, follow, since) {
            // The slot is freed when the stream is dropped (the client went away).
            Ok(stream) => Ok(Box::pin(futures::StreamExt::map(stream, move |line| {
                let _held = &slot;
                line
            }))),
            // Recorded but not (yet) running: nothing was logged.
            Err(RuntimeError::NotFound { .. }) => Ok(Box::pin(futures::stream::empty())),
            Err(error) => Err(InstanceError::Runtime(error)),
        }
    }

    /// Runs the reconcile loop: once now, then every `period` and whenever a function's current version changes.
    pub fn spawn_reconciler(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let instances = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = instances.reconcile().await {
                    tracing::warn!(error = %crate::platform::error_chain(&error), "reconciling instances failed; trying again");
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = instances.wake.notified() => {}
                }
            }
        })
    }

    /// One pass: every recorded instance is applied (new versions roll out, lost ones start
    /// again), finished deletions are completed, instances the store does not know are
    /// stopped, and the state each runtime reports is recorded.
    pub async fn reconcile(&self) -> InstanceResult<()> {
        let _changing = self.changes.lock().await;
        let records = self.store.instances(None).await?;
        let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        let mut specs: HashMap<(i64, u32), FunctionSpec> = HashMap::new();
        let mut user_quotas: HashMap<i64, Quota> = HashMap::new();
        for record in records {
            if record.state == InstanceState::Deleting {
                // In the background: a slow deletion must not hold up everyone's changes.
                self.spawn_removal(record.id.clone());
                continue;
            }
            let key = (record.function_id, record.function_version);
            let spec = match specs.get(&key) {
                Some(spec) => spec.clone(),
                None => {
                    let spec = self.version_spec(record.function_id, record.function_version, &record.function).await?;
                    specs.insert(key, spec.clone());
                    spec
                }
            };
            let quota = match user_quotas.get(&record.user_id) {
                Some(quota) => *quota,
                None => {
                    let quota = self.quotas.quota_of(record.user_id).await?;
                    user_quotas.insert(record.user_id, quota);
                    quota
                }
            };
            let (record, spec) = self.follow_within_quota(record, spec).await?;
            if let Err(error) = self.apply(&record, spec, quota, ApplyMode::Reconcile).await {
                let message = error.to_string();
                tracing::warn!(instance = %record.id, %message, "cannot apply the instance");
                self.store.set_instance_state(&record.id, InstanceState::Failed, &message).await?;
                continue;
            }
            if let Some(status) = self.runtime.status(&record.id) {
                self.store.set_instance_state(&record.id, status.state, &status.message).await?;
                let port = status.node_port.map(|address| address.port());
                if let Some(port) = port.filter(|port| record.node_port != Some(*port)) {
                    self.store.set_instance_node_port(&record.id, port).await?;
                }
                // The autoscaler's count, so a restart resumes from it (zero while idle is
                // the runtime's business: the next request wakes it).
                if !record.paused && status.desired > 0 && status.desired != record.replicas {
                    self.store.set_instance_desired(&record.id, record.function_version, status.desired, false).await?;
                }
                self.record_usage(&record, &status).await?;
                self.store.record_events(&record.id, &status.events).await?;
            }
        }
        for stray in self.runtime.instance_ids().into_iter().filter(|id| !known.contains(id)) {
            if self.spawn_removal(stray.clone()).is_some() {
                tracing::info!(instance = %stray, "stopping an instance the store no longer has");
            }
        }
        let downsample = {
            let mut meters = self.meters.lock();
            meters.calls.retain(|id, _| known.contains(id));
            let due = meters.last_downsample.is_none_or(|last| last.elapsed() >= DOWNSAMPLE_EVERY);
            if due {
                meters.last_downsample = Some(Instant::now());
            }
            due
        };
        if downsample {
            self.store.downsample_usage(Utc::now()).await?;
        }
        Ok(())
    }

    async fn record_usage(&self, record: &InstanceRecord, status: &RuntimeStatus) -> InstanceResult<()> {
        let id = record.id.as_str();
        let usage = self.runtime.usage(id).unwrap_or_default();
        let labels = InstanceLabels::new(&record.function, &record.user);
        let calls = self.invocations.calls_total(&labels);
        let now = Instant::now();
        let requests_per_s = {
            let mut meters = self.meters.lock();
            let previous = meters.calls.insert(id.to_string(), (now, calls));
            previous.and_then(|(at, total)| {
                let seconds = now.saturating_duration_since(at).as_secs_f64();
                (seconds > 0.0 && calls >= total).then(|| (calls - total) as f64 / seconds)
            })
        };
        let mut finished = self.invocations.take_finished(&labels);
        finished.durations_ms.sort_by(f64::total_cmp);
        let cpu: Vec<f64> = usage.iter().filter_map(|u| u.cpu_millicores).collect();
        let sample = UsageSample {
            at: Utc::now(),
            replicas_desired: status.desired,
            replicas_ready: status.ready,
            cpu_millicores: (!cpu.is_empty()).then(|| cpu.iter().sum()),
            memory_bytes: (!usage.is_empty()).then(|| usage.iter().map(|u| u.memory_bytes).sum()),
            requests_per_s,
            p50_ms: percentile(&finished.durations_ms, 0.50),
            p95_ms: percentile(&finished.durations_ms, 0.95),
            invocations: finished.ended,
            errors: finished.failed,
            autoscaler_load_percent: status.autoscaler.as_ref().and_then(|a| a.load_percent()),
        };
        Ok(self.store.insert_usage(id, &sample).await?)
    }

    /// An instance that follows someone else's function moves to the owner's new version only
    /// within its own user's quota: an owner raising `scaling.max` or the limits must not run up
    /// their followers' use. Past the quota, the instance stops following and stays on the
    /// version it runs, with a Warning event that says why; its user may follow again (a deploy
    /// with `follow_updates`, checked against the quota) once there is room.
    async fn follow_within_quota(
        &self,
        record: InstanceRecord,
        spec: FunctionSpec,
    ) -> InstanceResult<(InstanceRecord, FunctionSpec)> {
        let moving = !record.pinned && record.desired_version != 0 && record.desired_version != record.function_version;
        if !moving {
            return Ok((record, spec));
        }
        let refusal =
            match self.check_quota(record.user_id, Some(&record.id), Footprint::of(&spec, record.replicas)).await {
                Ok(()) => return Ok((record, spec)),
                Err(InstanceError::Quota(refusal @ QuotaError::Exceeded { .. })) => refusal,
                Err(other) => return Err(other),
            };
        let owner = self.store.function_by_id(record.function_id).await?.map(|f| f.owner_id);
        if owner == Some(record.user_id) {
            // The owner's own change was checked when they made it.
            return Ok((record, spec));
        }
        let (stay, new) = (record.desired_version, record.function_version);
        let why = match &refusal {
            QuotaError::Exceeded { limit, quota, would_be, .. } => {
                format!("v{new} would make {would_be} {limit}, over your quota of {quota}")
            }
            other => other.to_string(),
        };
        let event = EventInfo {
            at: Utc::now(),
            kind: "Warning".into(),
            reason: "OverQuota".into(),
            message: format!(
                "stopped following {}'s updates and stays on v{stay}: {why}; follow again once there is room",
                record.function
            ),
        };
        // The event first: whoever sees the instance pinned also sees why.
        self.store.record_events(&record.id, &[event]).await?;
        self.store.set_instance_pin(&record.id, Some(stay)).await?;
        tracing::warn!(instance = %record.id, stay, new, "an instance stops following its function's updates: over its user's quota");
        let spec = self.version_spec(record.function_id, stay, &record.function).await?;
        Ok((InstanceRecord { function_version: stay, pinned: true, ..record }, spec))
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
        };
        if instance.desired_version != version {
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

    /// Records that the instance is being deleted (under the change lock, so no reconcile pass
    /// starts it again), so a crash before the end finishes the deletion at the next start.
    async fn mark_deleting(&self, mut instance: InstanceRecord) -> InstanceResult<InstanceRecord> {
        if instance.state != InstanceState::Deleting {
            instance.state = InstanceState::Deleting;
            instance.message = "stopping its replicas".into();
            self.store.set_instance_state(&instance.id, instance.state, &instance.message).await?;
        }
        Ok(instance)
    }

    /// Removes a marked instance in the background and waits up to [`DELETE_WAIT`] for it.
    async fn remove_waiting(&self, instance: InstanceRecord) -> InstanceResult<Removal> {
        let Some(removal) = self.spawn_removal(instance.id.clone()) else {
            return Ok(Removal::Underway(Box::new(self.info(instance))));
        };
        match tokio::time::timeout(DELETE_WAIT, removal).await {
            Ok(Ok(result)) => result.map(|()| Removal::Done),
            // The task panicked: the record stays `Deleting`, and the reconcile loop retries.
            Ok(Err(join)) => {
                tracing::error!(instance = %instance.id, error = %join, "deleting the instance stopped; the reconcile loop retries");
                Ok(Removal::Underway(Box::new(self.info(instance))))
            }
            Err(_slow) => Ok(Removal::Underway(Box::new(self.info(instance)))),
        }
    }

    /// Starts removing an instance (or, with no record, a stray the runtime still runs): the
    /// runtime stops it, then its record goes. `None` if a removal of it is already under way.
    /// A failure leaves the record `Deleting` with the reason, and the reconcile loop retries.
    fn spawn_removal(&self, id: String) -> Option<tokio::task::JoinHandle<InstanceResult<()>>> {
        if !self.removing.lock().insert(id.clone()) {
            return None;
        }
        let instances = self.clone();
        Some(tokio::spawn(async move {
            let result = match instances.runtime.delete(&id).await {
                Ok(()) => instances.store.delete_instance(&id).await.map_err(InstanceError::from),
                Err(error) => {
                    let message = format!("deleting failed and is retried: {error}");
                    tracing::warn!(instance = %id, error = %crate::platform::error_chain(&error), "deleting the instance failed; the reconcile loop retries");
                    let _ = instances.store.set_instance_state(&id, InstanceState::Deleting, &message).await;
                    Err(InstanceError::Runtime(error))
                }
            };
            instances.removing.lock().remove(&id);
            result
        }))
    }

    async fn owned(&self, caller: &Principal, id: &str) -> InstanceResult<InstanceRecord> {
        match self.store.instance(id).await? {
            Some(instance) if instance.user_id == caller.id || caller.is_admin() => Ok(instance),
            _ => Err(InstanceError::NotFound { id: id.to_string() }),
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

/// The `q` quantile of sorted values (nearest rank), `None` when there are none.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1).min(last);
    sorted.get(rank).copied()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), Some(50.0));
        assert_eq!(percentile(&values, 0.95), Some(95.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}

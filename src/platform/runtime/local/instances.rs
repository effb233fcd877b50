//! [`LocalRuntime`]: the [`Runtime`] trait over supervised processes on this machine.
//!
//! Each instance is a slot holding its node port, its logs and the replica set that serves
//! (the *active* set). A change of code starts a whole new set next to the active one (the
//! *rollout*); only when every new replica answers is the node port switched over, and the old
//! set keeps serving requests already in flight for the drain time before it is stopped. So an
//! update never refuses a request, and a version that cannot start leaves the old one serving.

use super::cgroups::Cgroups;
use super::dependencies::{DependencyCache, InstallerSettings};
use super::launch::{self, Launcher};
use super::limits::{Enforcement, cgroup_limits};
use super::logs::{LogBuffer, LogLine, Stream};
use super::sandbox::{Bind, Isolation, Sandbox, SandboxSettings, inside};
use super::supervisor::{LaunchSpec, ReplicaSet, ReplicaState, RestartPolicy, signal_group};
use super::usage::{CpuMeter, read_group};
use super::warm_pool::WarmStart;
use super::warm_pool::{PoolConfig, Specialization, WarmPool};
use crate::platform::autoscale::{Autoscaler, AutoscalerConfig, AutoscalerStatus, MetricKind, MetricSample};
use crate::platform::model::ScalingPolicy;
use crate::platform::model::{EventInfo, FunctionSpec, HealthCheck, InstanceState, Language, LogEntry, ReplicaInfo};
use crate::platform::runtime::bootstrap;
use crate::platform::runtime::forwarding::{ForwardingPort, Traffic, UnixDial};
use crate::platform::runtime::{
    ApplyMode, InstanceSpec, LogStream, ReplicaUsage, Runtime, RuntimeError, RuntimeStatus,
};
use crate::platform::validation::{parse_cpu_millis, parse_memory_bytes};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

const EVENTS_KEPT: usize = 50;

/// How the local runtime runs instances.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Directory for bootstraps, sources, dependencies, logs and pid files.
    pub root: PathBuf,
    /// Address node ports listen on.
    pub node_host: IpAddr,
    /// Ports node ports are taken from.
    pub node_ports: RangeInclusive<u16>,
    /// Restart back-off, readiness timeout and stop grace of replicas.
    pub restart: RestartPolicy,
    /// How long a node port holds a connection while no replica is ready.
    pub hold: Duration,
    /// How long replicas replaced by an update keep serving requests in flight.
    pub drain: Duration,
    /// Log lines kept in memory per instance.
    pub log_lines: usize,
    /// Size at which an instance's log file is rotated.
    pub log_file_bytes: u64,
    /// The Python interpreter.
    pub python: PathBuf,
    /// The Node.js interpreter.
    pub node: PathBuf,
    /// The HPA algorithm's periods and tolerance.
    pub autoscaler: AutoscalerConfig,
    /// How often replica CPU and memory are read (and memory limits checked).
    pub usage_period: Duration,
    /// Warm bootstrap processes kept per language for fast starts (0: none).
    pub warm_pool_size: usize,
    /// The sandbox function code runs in; `None` runs it unsandboxed as kubefn (the explicit
    /// single-user mode).
    pub sandbox: Option<SandboxSettings>,
    /// Processes and threads one replica may have.
    pub pids_limit: u64,
    /// How long one dependency install may take.
    pub install_timeout: Duration,
}

impl LocalConfig {
    /// Defaults under `root`: loopback node ports in Kubernetes' range, Kubernetes-like timings.
    pub fn new(root: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig {
            root: root.into(),
            node_host: IpAddr::from([127, 0, 0, 1]),
            node_ports: crate::platform::runtime::forwarding::DEFAULT_NODE_PORT_RANGE,
            restart: RestartPolicy::default(),
            hold: Duration::from_secs(60),
            drain: Duration::from_secs(5),
            log_lines: 2000,
            log_file_bytes: 4 * 1024 * 1024,
            python: PathBuf::from("python3"),
            node: PathBuf::from("node"),
            autoscaler: AutoscalerConfig::default(),
            usage_period: Duration::from_secs(3),
            warm_pool_size: 1,
            sandbox: Some(SandboxSettings::default()),
            pids_limit: 1024,
            install_timeout: Duration::from_secs(300),
        }
    }
}

/// The local runtime; cheap to clone.
#[derive(Clone)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: LocalConfig,
    /// Starts replicas, warm processes and installs confined.
    launcher: Arc<Launcher>,
    /// How limits are enforced here (said in each status).
    enforcement: Enforcement,
    dependencies: DependencyCache,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    sampler: Mutex<Option<JoinHandle<()>>>,
    pool: Option<WarmPool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.sampler.lock().take() {
            task.abort();
        }
    }
}

/// One instance.
struct Slot {
    id: String,
    logs: LogBuffer,
    /// The ready replicas of the active set, as the node port sees them.
    endpoints: watch::Sender<Vec<PathBuf>>,
    node_address: SocketAddr,
    /// Taken (and closed) when the instance is deleted.
    node_port: Mutex<Option<ForwardingPort>>,
    traffic: Arc<Traffic>,
    /// Wakes the instance from zero replicas when a connection arrives.
    waker: Mutex<Option<JoinHandle<()>>>,
    state: Mutex<SlotState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(task) = self.waker.lock().take() {
            task.abort();
        }
    }
}

struct SlotState {
    spec: InstanceSpec,
    /// What the current code is, to tell a code change from a scale or a pause.
    fingerprint: String,
    active: Option<Active>,
    rollout: Option<Rollout>,
    /// Replaced sets finishing the requests they have.
    draining: Vec<Arc<ReplicaSet>>,
    /// The reason the rollout of `fingerprint` failed; not retried until asked to.
    failure: Option<String>,
    events: VecDeque<EventInfo>,
    cpu: CpuMeter,
    /// The latest CPU and memory reading per replica.
    usage: Vec<ReplicaUsage>,
    autoscaler: Autoscaler,
    last_autoscale: Option<Instant>,
    /// What the last autoscaler sync measured and decided (`None` without autoscaling).
    autoscaler_status: Option<AutoscalerStatus>,
    /// Scaled to zero after being idle; the next connection wakes it.
    idle_at_zero: bool,
    /// OOM kills already turned into events, per replica.
    oom_kills_reported: HashMap<String, u64>,
}

struct Active {
    version: u32,
    set: Arc<ReplicaSet>,
    feed: JoinHandle<()>,
}

struct Rollout {
    fingerprint: String,
    /// The set being started, once dependencies are installed.
    set: Arc<Mutex<Option<Arc<ReplicaSet>>>>,
    task: JoinHandle<()>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

impl SlotState {
    fn replicas_wanted(&self) -> u32 {
        if self.spec.paused || self.idle_at_zero { 0 } else { self.spec.replicas }
    }

    /// Sets the replicas of the serving set (and of one being started).
    fn scale_sets(&self) {
        let wanted = self.replicas_wanted();
        if let Some(active) = &self.active {
            active.set.scale(wanted);
        }
        if let Some(rollout) = &self.rollout
            && let Some(set) = rollout.set.lock().as_ref()
        {
            set.scale(wanted);
        }
    }

    /// Starts a replica for an instance idling at zero.
    fn wake(&mut self, why: &str) {
        if self.idle_at_zero && !self.spec.paused {
            self.idle_at_zero = false;
            self.spec.replicas = self.spec.replicas.max(1);
            let replicas = self.spec.replicas;
            self.event("Normal", "ScaledFromZero", format!("{why}: starting {replicas} replica(s)"));
            self.scale_sets();
        }
    }

    fn event(&mut self, kind: &str, reason: &str, message: String) {
        tracing::info!(instance = %self.spec.id, kind, reason, "{message}");
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_back();
        }
        self.events.push_front(EventInfo { at: Utc::now(), kind: kind.into(), reason: reason.into(), message });
    }
}

impl LocalRuntime {
    /// Prepares `config.root` (bootstraps, directories), checks that function code can be
    /// sandboxed here (refusing to start otherwise, unless the config says single-user) and
    /// stops replica processes a previous kubefn left running there, found by their pid files.
    pub fn new(config: LocalConfig) -> Result<LocalRuntime, RuntimeError> {
        let files = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Files { id: String::new(), path, source }
        };
        for dir in ["bootstrap", "instances", "pids", "logs"] {
            let path = config.root.join(dir);
            std::fs::create_dir_all(&path).map_err(files(&path))?;
        }
        for (name, text) in
            [(bootstrap::PYTHON.file, bootstrap::PYTHON.source), (bootstrap::NODE.file, bootstrap::NODE.source)]
        {
            let path = config.root.join("bootstrap").join(name);
            write_if_changed(&path, text).map_err(files(&path))?;
        }
        stop_leftover_processes(&config.root.join("pids"), &config.root.join("bootstrap"));
        let mut config = config;
        config.python = launch::python_executable(&config.python);
        config.node = launch::node_executable(&config.node);
        let isolation = match &config.sandbox {
            Some(settings) => {
                let sandbox = Sandbox::detect(settings.clone(), &[config.python.clone(), config.node.clone()])
                    .map_err(RuntimeError::Sandbox)?;
                Isolation::Sandboxed(sandbox)
            }
            None => Isolation::SingleUser { open_files: SandboxSettings::default().open_files },
        };
        let cgroups = match Cgroups::detect() {
            Ok(cgroups) => Some(cgroups),
            // The sandbox promises kernel-enforced limits; without cgroups it cannot keep that.
            Err(error) if isolation.sandboxed() => {
                return Err(RuntimeError::Sandbox(super::sandbox::SandboxError::Cgroups(error)));
            }
            Err(error) => {
                tracing::warn!(error = %crate::platform::error_chain(&error), "limits are not enforced by the kernel (single-user mode)");
                None
            }
        };
        let settings = config.sandbox.clone().unwrap_or_default();
        let enforcement = Enforcement {
            cgroups: cgroups.as_ref().map(Cgroups::version),
            sandboxed: isolation.sandboxed(),
            tmp_mib: settings.tmp_bytes >> 20,
            open_files: settings.open_files,
            pids: config.pids_limit,
        };
        tracing::info!(isolation = %isolation.describe(), "local runtime");
        let run_root = config.root.join("run");
        let launcher = Arc::new(Launcher::new(isolation, cgroups, run_root.clone()).map_err(files(&run_root))?);
        let bootstrap_bind = Bind::read_only(config.root.join("bootstrap"), inside::BOOTSTRAP);
        let bootstrap_seen = launcher.path(&bootstrap_bind);
        let pool = (config.warm_pool_size > 0).then(|| {
            WarmPool::start(PoolConfig {
                size: config.warm_pool_size,
                commands: vec![
                    (
                        Language::Python,
                        config.python.clone(),
                        bootstrap_seen.join(bootstrap::PYTHON.file).display().to_string(),
                    ),
                    (
                        Language::Node,
                        config.node.clone(),
                        bootstrap_seen.join(bootstrap::NODE.file).display().to_string(),
                    ),
                ],
                launcher: launcher.clone(),
                bootstrap: bootstrap_bind,
                staging: config.root.join("warm"),
                limits: super::cgroups::Limits { pids: Some(config.pids_limit), ..Default::default() },
                pid_dir: config.root.join("pids"),
            })
        });
        let mut installer = InstallerSettings::from_environment(config.python.clone());
        installer.timeout = config.install_timeout;
        let inner = Arc::new(Inner {
            pool,
            enforcement,
            dependencies: DependencyCache::new(config.root.join("dependencies"), launcher.clone(), installer),
            launcher,
            config,
            slots: Mutex::default(),
            sampler: Mutex::default(),
        });
        let task = tokio::spawn(sample_periodically(Arc::downgrade(&inner)));
        *inner.sampler.lock() = Some(task);
        Ok(LocalRuntime { inner })
    }

    /// How function code is isolated here, in words.
    pub fn isolation(&self) -> String {
        self.inner.launcher.isolation().describe()
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, RuntimeError> {
        self.inner.slots.lock().get(id).cloned().ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
    }

    async fn open_slot(&self, spec: &InstanceSpec) -> Result<Arc<Slot>, RuntimeError> {
        if let Ok(slot) = self.slot(&spec.id) {
            return Ok(slot);
        }
        let config = &self.inner.config;
        let (endpoints, receiver) = watch::channel(Vec::new());
        // The port it had before, if still free, else the first free one.
        let preferred = spec.node_port.filter(|port| config.node_ports.contains(port)).map(|port| port..=port);
        let node_port = match preferred {
            Some(range) => {
                ForwardingPort::bind_in_range_with(config.node_host, range, receiver.clone(), UnixDial, config.hold)
                    .await
                    .ok()
            }
            None => None,
        };
        let node_port = match node_port {
            Some(node_port) => node_port,
            None => ForwardingPort::bind_in_range_with(
                config.node_host,
                config.node_ports.clone(),
                receiver,
                UnixDial,
                config.hold,
            )
            .await
            .map_err(|source| RuntimeError::Port { id: spec.id.clone(), source })?,
        };
        let logs = LogBuffer::with_file(
            config.log_lines,
            config.root.join("logs").join(format!("{}.log", spec.id)),
            config.log_file_bytes,
        );
        let traffic = node_port.traffic();
        let slot = Arc::new(Slot {
            id: spec.id.clone(),
            logs,
            endpoints,
            node_address: node_port.address(),
            node_port: Mutex::new(Some(node_port)),
            traffic: traffic.clone(),
            waker: Mutex::default(),
            state: Mutex::new(SlotState {
                spec: spec.clone(),
                fingerprint: String::new(),
                active: None,
                rollout: None,
                draining: Vec::new(),
                failure: None,
                events: VecDeque::new(),
                cpu: CpuMeter::default(),
                usage: Vec::new(),
                autoscaler: Autoscaler::new(config.autoscaler.clone()),
                last_autoscale: None,
                autoscaler_status: None,
                idle_at_zero: false,
                oom_kills_reported: HashMap::new(),
            }),
        });
        let waker = tokio::spawn(wake_on_demand(traffic, Arc::downgrade(&slot)));
        *slot.waker.lock() = Some(waker);
        let mut slots = self.inner.slots.lock();
        // Two applies may race to open the same slot; the first one inserted wins.
        Ok(slots.entry(spec.id.clone()).or_insert(slot).clone())
    }

    /// Applies `spec`. With `retry_failed`, a version whose rollout failed is tried again. An
    /// autoscaled instance keeps the autoscaler's replica count (within the policy) unless
    /// `manual_replicas` says the replicas were set by hand.
    async fn apply_spec(
        &self,
        mut spec: InstanceSpec,
        retry_failed: bool,
        manual_replicas: bool,
    ) -> Result<(), RuntimeError> {
        self.check(&spec.spec)?;
        let slot = self.open_slot(&spec).await?;
        let fingerprint = fingerprint(&spec);
        let mut state = slot.state.lock();
        let was_paused = state.spec.paused;
        let old_replicas = state.spec.replicas;
        let started = !state.fingerprint.is_empty();
        if started && autoscaled(&spec.spec.scaling) && !manual_replicas {
            spec.replicas = old_replicas.clamp(spec.spec.scaling.min.max(1), spec.spec.scaling.max.max(1));
        }
        if spec.spec.scaling.scale_to_zero_after_s.is_none() && state.idle_at_zero {
            state.idle_at_zero = false;
        }
        state.spec = spec.clone();
        let code_changed = state.fingerprint != fingerprint;
        let rolling_this = state.rollout.as_ref().is_some_and(|r| r.fingerprint == fingerprint);
        if code_changed || (retry_failed && state.failure.is_some() && !rolling_this) {
            self.start_rollout(&slot, &mut state, fingerprint);
            return Ok(());
        }
        if was_paused != spec.paused {
            let (reason, message) = if spec.paused {
                ("Paused", "paused: every replica stopped".to_string())
            } else {
                ("Resumed", format!("resumed with {} replica(s)", spec.replicas))
            };
            state.event("Normal", reason, message);
        } else if old_replicas != spec.replicas {
            state.event(
                "Normal",
                "ScalingReplicaSet",
                format!("scaled from {old_replicas} to {} replica(s) by hand", spec.replicas),
            );
        }
        state.scale_sets();
        Ok(())
    }

    fn start_rollout(&self, slot: &Arc<Slot>, state: &mut SlotState, fingerprint: String) {
        if let Some(previous) = state.rollout.take() {
            // Superseded: its set (if it got one) stops in the background.
            previous.task.abort();
            if let Some(set) = previous.set.lock().take() {
                tokio::spawn(async move { set.shutdown().await });
            }
        }
        state.fingerprint = fingerprint.clone();
        state.failure = None;
        let version = state.spec.version;
        let wanted = state.replicas_wanted();
        state.event("Normal", "Deploying", format!("deploying version {version} with {wanted} replica(s)"));
        let set = Arc::new(Mutex::new(None));
        let task = tokio::spawn(rollout(
            self.inner.clone(),
            slot.clone(),
            state.spec.clone(),
            fingerprint.clone(),
            set.clone(),
        ));
        state.rollout = Some(Rollout { fingerprint, set, task });
    }

    /// Stops every instance and waits for their processes (kubefn shutting down).
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.inner.pool {
            pool.clear();
        }
        for id in self.instance_ids() {
            let _ = self.delete_slot(&id, false).await;
        }
    }

    async fn delete_slot(&self, id: &str, remove_files: bool) -> Result<(), RuntimeError> {
        let Some(slot) = self.inner.slots.lock().remove(id) else { return Ok(()) };
        let (active, rollout, mut sets) = {
            let mut state = slot.state.lock();
            (state.active.take(), state.rollout.take(), std::mem::take(&mut state.draining))
        };
        if let Some(Rollout { task, set, .. }) = rollout {
            task.abort();
            let _ = task.await;
            sets.extend(set.lock().take());
        }
        sets.extend(active.map(|a| a.set.clone()));
        for set in sets {
            set.shutdown().await;
        }
        let _ = slot.endpoints.send_replace(Vec::new());
        let node_port = slot.node_port.lock().take();
        if let Some(node_port) = node_port {
            node_port.close().await;
        }
        if remove_files {
            let root = &self.inner.config.root;
            let dir = root.join("instances").join(id);
            if let Err(error) = tokio::fs::remove_dir_all(&dir).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(instance = id, %error, "cannot remove the instance's files");
            }
            for log in [format!("{id}.log"), format!("{id}.log.1")] {
                let _ = tokio::fs::remove_file(root.join("logs").join(log)).await;
            }
        }
        Ok(())
    }
}

/// Starts the replicas of a new version next to the serving ones and switches over once all
/// are ready; records the failure and leaves the serving ones alone when they cannot start.
async fn rollout(
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    spec: InstanceSpec,
    fingerprint: String,
    pending: Arc<Mutex<Option<Arc<ReplicaSet>>>>,
) {
    let version = spec.version;
    let fail = |reason: String| {
        let mut state = slot.state.lock();
        if state.fingerprint != fingerprint {
            return;
        }
        slot.logs.push("kubefn", Stream::System, format!("version {version} cannot start: {reason}"));
        let still = state.active.as_ref().map(|a| format!("; version {} keeps serving", a.version)).unwrap_or_default();
        state.failure = Some(format!("version {version} cannot start: {reason}{still}"));
        state.rollout = None;
        state.event("Warning", "RolloutFailed", format!("version {version} cannot start: {reason}"));
    };
    let launch = match prepare_launch(&inner, &slot, &spec).await {
        Ok(launch) => launch,
        Err(reason) => return fail(reason),
    };
    let set = {
        let state = slot.state.lock();
        let set = Arc::new(ReplicaSet::start(
            launch,
            inner.config.restart.clone(),
            slot.logs.clone(),
            state.replicas_wanted(),
        ));
        *pending.lock() = Some(set.clone());
        set
    };
    let mut ready_changes = set.endpoints();
    loop {
        let status = set.status();
        if let Some(reason) = status.failure() {
            let reason = reason.to_string();
            pending.lock().take();
            set.shutdown().await;
            return fail(reason);
        }
        if status.ready >= status.desired {
            break;
        }
        // Woken by a replica becoming ready; the timeout catches failures and scaling.
        let _ = tokio::time::timeout(Duration::from_millis(50), ready_changes.changed()).await;
    }
    let old = {
        let mut state = slot.state.lock();
        if state.fingerprint != fingerprint {
            // Superseded while starting; the newer rollout stops this set.
            return;
        }
        pending.lock().take();
        let feed = tokio::spawn(feed_endpoints(set.endpoints(), slot.endpoints.clone()));
        let old = state.active.replace(Active { version, set: set.clone(), feed }).map(|old| old.set.clone());
        state.draining.extend(old.clone());
        state.rollout = None;
        // Replicas asked for while it started.
        set.scale(state.replicas_wanted());
        let ready = set.status().ready;
        state.event("Normal", "Deployed", format!("version {version} serving with {ready} ready replica(s)"));
        old
    };
    if let Some(old) = old {
        tokio::time::sleep(inner.config.drain).await;
        old.shutdown().await;
        slot.state.lock().draining.retain(|set| !Arc::ptr_eq(set, &old));
    }
}

/// Installs dependencies and writes the version's source; returns how to start a replica.
/// Messages never name kubefn's own directories: they reach the function's owner.
async fn prepare_launch(inner: &Inner, slot: &Slot, spec: &InstanceSpec) -> Result<LaunchSpec, String> {
    let function = &spec.spec;
    let deps = inner
        .dependencies
        .ensure(function.runtime, &function.requirements, &slot.logs)
        .await
        .map_err(|e| crate::platform::error_chain(&e))?;
    let config = &inner.config;
    let (program, bootstrap, file) = match function.runtime {
        Language::Python => (&config.python, bootstrap::PYTHON.file, bootstrap::PYTHON.function_file),
        Language::Node => (&config.node, bootstrap::NODE.file, bootstrap::NODE.function_file),
        Language::Image => return Err("image functions need the kubernetes runtime".into()),
    };
    let dir = config.root.join("instances").join(&slot.id).join(format!("v{}", spec.version));
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        let temporary = dir.join(format!(".{file}.tmp"));
        tokio::fs::write(&temporary, &function.source).await?;
        tokio::fs::rename(&temporary, dir.join(file)).await
    };
    if let Err(error) = write.await {
        tracing::error!(instance = %slot.id, dir = %dir.display(), %error, "cannot write a function's source");
        return Err("kubefn cannot write the function's files (its data directory is full or not writable); an admin finds the details in kubefn's log".into());
    }
    let launcher = &inner.launcher;
    let function_bind = Bind::read_only(&dir, inside::FUNCTION);
    let bootstrap_bind = Bind::read_only(config.root.join("bootstrap"), inside::BOOTSTRAP);
    let function_dir = launcher.path(&function_bind);
    let mut binds = vec![bootstrap_bind.clone(), function_bind];
    let deps_seen = deps.map(|deps| {
        let bind = Bind::read_only(deps, inside::DEPS);
        let seen = launcher.path(&bind);
        binds.push(bind);
        seen
    });
    let source = function_dir.join(file);
    let mut env: Vec<(String, String)> = function.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("KUBEFN_SOURCE".to_string(), source.display().to_string()),
        ("KUBEFN_HANDLER".to_string(), function.handler.clone().unwrap_or_default()),
        ("KUBEFN_FUNCTION_NAME".to_string(), function.name.clone()),
        ("KUBEFN_MEMORY_LIMIT".to_string(), function.resources.memory_limit.clone()),
        ("KUBEFN_TIMEOUT".to_string(), function.timeout_s.to_string()),
    ]);
    // A warm process sees only the bootstraps and its own staging directory, so functions with
    // dependencies start cold (their dependency directory is bound at start).
    let warm = inner.pool.clone().filter(|_| deps_seen.is_none()).map(|pool| WarmStart {
        pool,
        language: function.runtime,
        // `source` and `dir` are the warm process's own staging directory, filled in when one
        // is taken.
        job: Specialization {
            source: file.to_string(),
            handler: function.handler.clone().unwrap_or_default(),
            deps: None,
            env: env.iter().cloned().collect(),
            dir: String::new(),
            timeout_s: function.timeout_s,
        },
        source_dir: dir.clone(),
    });
    if let Some(deps) = &deps_seen {
        env.push(("KUBEFN_DEPS".to_string(), deps.display().to_string()));
    }
    let mut args = Vec::new();
    if function.runtime == Language::Node
        && let Some(limit) = parse_memory_bytes(&function.resources.memory_limit)
    {
        args.push(bootstrap::node_heap_limit_flag(limit));
    }
    args.push(launcher.path(&bootstrap_bind).join(bootstrap).display().to_string());
    Ok(LaunchSpec {
        launcher: launcher.clone(),
        program: program.clone(),
        args,
        env,
        binds,
        dir: function_dir,
        limits: cgroup_limits(&function.resources, config.pids_limit),
        name_prefix: format!("v{}-", spec.version),
        pid_dir: Some(config.root.join("pids")),
        warm,
    })
}

/// Copies the ready replicas of one set to the node port until the set is replaced.
async fn feed_endpoints(mut from: watch::Receiver<Vec<PathBuf>>, to: watch::Sender<Vec<PathBuf>>) {
    loop {
        let ready = from.borrow_and_update().clone();
        to.send_replace(ready);
        if from.changed().await.is_err() {
            return;
        }
    }
}

/// What decides whether replicas must be replaced: everything but replicas and pausing.
fn fingerprint(spec: &InstanceSpec) -> String {
    let mut code = spec.spec.clone();
    code.scaling = Default::default();
    code.visibility = Default::default();
    let text = serde_json::to_string(&(spec.version, &code)).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(());
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(temporary, path)
}

/// Kills the process groups named by pid files whose process still runs one of our bootstraps
/// (a pid may have been reused by something else since), then removes the files.
fn stop_leftover_processes(pid_dir: &Path, bootstrap_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pid_dir) else { return };
    let marker = bootstrap_dir.display().to_string();
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some(pid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i32>().ok()) {
            let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&command).contains(&marker) {
                tracing::warn!(pid, "stopping a replica process left behind by a previous kubefn");
                signal_group(pid, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Whether the autoscaler owns the replica count: a range to move in and a metric to follow.
fn autoscaled(policy: &ScalingPolicy) -> bool {
    policy.max > policy.min.max(1)
        && (policy.target_cpu_percent.is_some()
            || policy.target_memory_percent.is_some()
            || policy.target_requests_in_flight.is_some())
}

/// Reads usage, enforces memory limits, runs the autoscaler and the idle check, every
/// `usage_period`, until the runtime is gone.
async fn sample_periodically(inner: Weak<Inner>) {
    loop {
        let Some(runtime) = inner.upgrade() else { return };
        let period = runtime.config.usage_period;
        let slots: Vec<Arc<Slot>> = runtime.slots.lock().values().cloned().collect();
        let now = Instant::now();
        for slot in slots {
            sample(&runtime.config, &slot, now);
        }
        drop(runtime);
        tokio::time::sleep(period).await;
    }
}

fn sample(config: &LocalConfig, slot: &Slot, now: Instant) {
    let mut state = slot.state.lock();
    let Some(active) = &state.active else { return };
    let set = active.set.clone();
    let replicas = set.status().replicas;
    let memory_limit = parse_memory_bytes(&state.spec.spec.resources.memory_limit);
    let mut usage = Vec::new();
    let mut seen = Vec::new();
    for replica in &replicas {
        // One reading of the cgroup's counters serves the OOM count, CPU and memory.
        let live = replica.cgroup.as_ref().map(|cgroup| cgroup.usage());
        let killed = replica.oom_kills + live.map_or(0, |usage| usage.oom_kills);
        let reported = state.oom_kills_reported.entry(replica.name.clone()).or_default();
        if killed > *reported {
            *reported = killed;
            let message = format!(
                "{}: the kernel's OOM killer stopped a process at its memory limit of {} (OOMKilled)",
                replica.name, state.spec.spec.resources.memory_limit
            );
            slot.logs.push(&replica.name, Stream::System, message.clone());
            state.event("Warning", "OOMKilled", message);
        }
        let Some(pid) = replica.pid else { continue };
        // The cgroup's own counters where there is one; a scan of the process group otherwise.
        let (cpu_seconds, memory_bytes) = match live {
            Some(usage) => (usage.cpu_seconds, usage.memory_bytes),
            None => match read_group(pid) {
                Ok(group) => (group.cpu_seconds, group.rss_bytes),
                Err(_) => continue,
            },
        };
        let key = format!("{}:{pid}", replica.name);
        let percent = state.cpu.percent(&key, now, cpu_seconds);
        seen.push(key);
        if replica.cgroup.is_none()
            && let Some(limit) = memory_limit.filter(|limit| memory_bytes > *limit)
        {
            // What the kernel's OOM killer does to a replica over its cgroup limit, done here
            // because this host gives kubefn no cgroups (single-user mode only).
            let message = format!(
                "{} used {} MiB, over its memory limit of {} MiB: killed (OOMKilled)",
                replica.name,
                memory_bytes / (1024 * 1024),
                limit / (1024 * 1024)
            );
            slot.logs.push(&replica.name, Stream::System, message.clone());
            state.event("Warning", "OOMKilled", message);
            if let Ok(group_id) = i32::try_from(pid) {
                signal_group(group_id, libc::SIGKILL);
            }
            continue;
        }
        usage.push(ReplicaUsage {
            replica: replica.name.clone(),
            cpu_millicores: percent.map(|p| p * 10.0),
            memory_bytes,
        });
    }
    state.cpu.retain(&seen);
    state.usage = usage;
    idle_check(slot, &mut state, now);
    let due =
        state.last_autoscale.is_none_or(|last| now.saturating_duration_since(last) >= config.autoscaler.sync_period);
    if due {
        state.last_autoscale = Some(now);
        autoscale(slot, &mut state, now);
    }
}

/// Scales an idle instance to zero after its policy's idle time.
fn idle_check(slot: &Slot, state: &mut SlotState, now: Instant) {
    let Some(after) = state.spec.spec.scaling.scale_to_zero_after_s else { return };
    if state.idle_at_zero || state.spec.paused || state.rollout.is_some() || state.active.is_none() {
        return;
    }
    let idle = slot.traffic.idle_for(now);
    if idle >= Duration::from_secs(after) {
        state.idle_at_zero = true;
        state.event("Normal", "ScaledToZero", format!("no request for {} s: scaled to zero", idle.as_secs()));
        state.scale_sets();
    }
}

/// One HPA sync: the policy's metrics averaged per replica against their targets.
fn autoscale(slot: &Slot, state: &mut SlotState, now: Instant) {
    let policy = state.spec.spec.scaling.clone();
    if !autoscaled(&policy) {
        state.autoscaler_status = None;
        return;
    }
    if state.spec.paused || state.idle_at_zero || state.rollout.is_some() || state.active.is_none() {
        return;
    }
    let resources = &state.spec.spec.resources;
    let mut metrics = Vec::new();
    if let (Some(target), Some(request)) =
        (policy.target_cpu_percent, parse_cpu_millis(&resources.cpu).filter(|r| *r > 0))
    {
        let values: Vec<f64> =
            state.usage.iter().filter_map(|u| u.cpu_millicores).map(|m| m / request as f64 * 100.0).collect();
        metrics.push(MetricSample { kind: MetricKind::CpuUtilization, target: f64::from(target), per_replica: values });
    }
    if let (Some(target), Some(request)) =
        (policy.target_memory_percent, parse_memory_bytes(&resources.memory).filter(|r| *r > 0))
    {
        let values: Vec<f64> = state.usage.iter().map(|u| u.memory_bytes as f64 / request as f64 * 100.0).collect();
        metrics.push(MetricSample {
            kind: MetricKind::MemoryUtilization,
            target: f64::from(target),
            per_replica: values,
        });
    }
    let current = state.spec.replicas;
    if let Some(target) = policy.target_requests_in_flight {
        // The node port sees connections, not requests: with one request per connection (as
        // the gateway sends them) the two are the same.
        let ready = state.active.as_ref().map_or(0, |a| a.set.status().ready).max(1);
        let per_replica = slot.traffic.open() as f64 / f64::from(ready);
        metrics.push(MetricSample {
            kind: MetricKind::RequestsInFlight,
            target: f64::from(target),
            per_replica: vec![per_replica; ready as usize],
        });
    }
    let decision = state.autoscaler.decide(now, current, policy.min, policy.max, &metrics);
    state.autoscaler_status = Some(AutoscalerStatus {
        current,
        desired: decision.desired,
        metrics: metrics.iter().map(MetricSample::reading).collect(),
    });
    if decision.desired != current {
        state.spec.replicas = decision.desired;
        state.event(
            "Normal",
            "ScalingReplicaSet",
            format!("autoscaled from {current} to {} replica(s): {}", decision.desired, decision.reason),
        );
        state.scale_sets();
    }
}

/// Waits for connections that find no ready replica and wakes the instance for them.
async fn wake_on_demand(traffic: Arc<Traffic>, slot: Weak<Slot>) {
    loop {
        traffic.demanded().await;
        let Some(slot) = slot.upgrade() else { return };
        slot.state.lock().wake("a connection arrived");
    }
}

fn entry(line: LogLine) -> LogEntry {
    LogEntry { at: line.at, replica: line.replica, stream: line.stream.as_str().to_string(), text: line.text }
}

#[async_trait::async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check(&self, spec: &FunctionSpec) -> Result<(), RuntimeError> {
        match spec.runtime {
            Language::Python | Language::Node => Ok(()),
            Language::Image => Err(RuntimeError::Unsupported {
                runtime: "local",
                language: "image",
                hint: "start kubefn with --runtime kubernetes to run container images",
            }),
        }
    }

    async fn apply(&self, spec: InstanceSpec, mode: ApplyMode) -> Result<(), RuntimeError> {
        self.apply_spec(spec, mode == ApplyMode::Retry, mode == ApplyMode::SetReplicas).await
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_slot(id, true).await
    }

    fn status(&self, id: &str) -> Option<RuntimeStatus> {
        let slot = self.slot(id).ok()?;
        let state = slot.state.lock();
        let wanted = state.replicas_wanted();
        let mut replicas = Vec::new();
        let mut failed_replica = None;
        let mut ready = 0;
        let mut sets: Vec<(u32, Arc<ReplicaSet>)> = state.active.iter().map(|a| (a.version, a.set.clone())).collect();
        if let Some(rollout) = &state.rollout {
            sets.extend(rollout.set.lock().clone().map(|set| (state.spec.version, set)));
        }
        for (version, set) in &sets {
            let status = set.status();
            if state.active.as_ref().is_some_and(|a| Arc::ptr_eq(&a.set, set)) {
                ready = status.ready;
                failed_replica = failed_replica.or(status.failure().map(str::to_string));
            }
            replicas.extend(status.replicas.into_iter().map(|r| {
                ReplicaInfo {
                    name: r.name,
                    state: match r.state {
                        ReplicaState::Starting => "Starting",
                        ReplicaState::Ready => "Ready",
                        ReplicaState::BackingOff => "BackingOff",
                        ReplicaState::Failed(_) => "Failed",
                    }
                    .to_string(),
                    version: *version,
                    restarts: r.restarts,
                }
            }));
        }
        let serving_version = state.active.as_ref().filter(|_| ready > 0).map(|a| a.version);
        let (instance_state, message) = if state.spec.paused {
            (InstanceState::Paused, "paused; resume to start its replicas again".to_string())
        } else if state.idle_at_zero && state.failure.is_none() && state.rollout.is_none() {
            (InstanceState::Ready, "scaled to zero while idle; the next request starts a replica".to_string())
        } else if let Some(failure) = &state.failure {
            (InstanceState::Failed, failure.clone())
        } else if let Some(failure) = failed_replica {
            (InstanceState::Failed, format!("a replica keeps crashing: {failure}"))
        } else if state.rollout.is_some() {
            let starting = if sets.len() > usize::from(state.active.is_some()) {
                "starting replicas"
            } else if state.spec.spec.requirements.trim().is_empty() {
                "preparing its files"
            } else {
                "installing dependencies"
            };
            (InstanceState::Deploying, format!("version {}: {starting}", state.spec.version))
        } else if ready < wanted {
            (InstanceState::Deploying, format!("{ready} of {wanted} replica(s) ready"))
        } else {
            (InstanceState::Ready, String::new())
        };
        Some(RuntimeStatus {
            state: instance_state,
            message,
            serving_version,
            desired: wanted,
            ready,
            node_port: Some(slot.node_address),
            port_forward: None,
            limits: super::limits::describe(
                &state.spec.spec.resources,
                state.spec.spec.timeout_s,
                &self.inner.enforcement,
            ),
            replicas,
            events: state.events.iter().cloned().collect(),
            autoscaler: state.autoscaler_status.clone(),
        })
    }

    fn instance_ids(&self) -> Vec<String> {
        self.inner.slots.lock().keys().cloned().collect()
    }

    fn logs(&self, id: &str, follow: bool, since: Option<DateTime<Utc>>) -> Result<LogStream, RuntimeError> {
        let slot = self.slot(id)?;
        let (backlog, live) = slot.logs.follow();
        drop(slot);
        let backlog = futures::stream::iter(
            backlog.into_iter().filter(move |line| since.is_none_or(|since| line.at >= since)).map(entry),
        );
        if !follow {
            return Ok(Box::pin(backlog));
        }
        let live = futures::stream::unfold(live, |mut live| async move {
            let next = match live.recv().await {
                Ok(line) => entry(line),
                Err(broadcast::error::RecvError::Lagged(skipped)) => LogEntry {
                    at: Utc::now(),
                    replica: "kubefn".into(),
                    stream: Stream::System.as_str().into(),
                    text: format!("{skipped} line(s) skipped: the reader was too slow"),
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((next, live))
        });
        Ok(Box::pin(futures::StreamExt::chain(backlog, live)))
    }

    fn usage(&self, id: &str) -> Result<Vec<ReplicaUsage>, RuntimeError> {
        Ok(self.slot(id)?.state.lock().usage.clone())
    }

    fn health(&self) -> Vec<HealthCheck> {
        let enforcement = &self.inner.enforcement;
        let sandbox = if enforcement.sandboxed {
            HealthCheck::new("sandbox", true, self.isolation())
        } else {
            HealthCheck::new("sandbox", false, self.isolation())
        };
        let limits = match enforcement.cgroups {
            Some(version) => HealthCheck::new(
                "resource limits",
                true,
                format!(
                    "{}: CPU, memory and process limits are enforced by the kernel; usage comes from the cgroups' counters",
                    version.label()
                ),
            ),
            None => HealthCheck::new(
                "resource limits",
                false,
                "no writable cgroups: memory limits are enforced by kubefn, CPU and process limits are not (run kubefn as root on a host with cgroups, or on Kubernetes)",
            ),
        };
        let pool = match &self.inner.pool {
            Some(pool) => {
                let idle = [Language::Python, Language::Node].map(|language| pool.idle(language));
                let size = self.inner.config.warm_pool_size;
                HealthCheck::new(
                    "warm pool",
                    idle.iter().all(|n| *n > 0),
                    format!(
                        "{} Python and {} Node processes waiting (of {size} each); an empty pool refills within seconds, cold starts meanwhile take longer",
                        idle[0], idle[1]
                    ),
                )
            }
            None => HealthCheck::new(
                "warm pool",
                true,
                "off (--warm-pool-size 0): every cold start loads its function from scratch",
            ),
        };
        vec![sandbox, limits, pool]
    }

    async fn connect(&self, id: &str) -> Result<SocketAddr, RuntimeError> {
        let slot = self.slot(id)?;
        slot.state.lock().wake("a request arrived");
        Ok(slot.node_address)
    }

    async fn shutdown(&self) {
        LocalRuntime::shutdown(self).await;
    }
}

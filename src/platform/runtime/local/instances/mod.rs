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
use super::sandbox::{Bind, DataFile, Isolation, Sandbox, SandboxSettings, inside};
use super::supervisor::{LaunchSpec, ReplicaSet, ReplicaState, RestartPolicy, signal_group};
use super::usage::{CpuMeter, read_group};
use super::warm_pool::WarmStart;
use super::warm_pool::{PoolConfig, Specialization, WarmPool};
use crate::platform::autoscale::{Autoscaler, AutoscalerConfig, AutoscalerStatus, MetricKind, MetricSample};
use crate::platform::model::ScalingPolicy;
use crate::platform::model::{EventInfo, FunctionSpec, HealthCheck, InstanceState, Language, LogEntry, ReplicaInfo};
use crate::platform::runtime::bootstrap;
use crate::platform::runtime::forwarding::{ForwardingPort, Traffic, UnixDial};
use crate::platform::runtime::scale_to_zero::replicas_on_wake;
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

mod config;
mod control;
mod rollout;
mod runtime;

pub use config::LocalConfig;
use control::{autoscaled, sample_periodically, wake_on_demand};
use rollout::{fingerprint, rollout, write_if_changed};

const EVENTS_KEPT: usize = 50;

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
            self.spec.replicas = replicas_on_wake(&self.spec);
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
                    .map_err(unsandboxable)?;
                Isolation::Sandboxed(sandbox)
            }
            None => Isolation::SingleUser { open_files: SandboxSettings::default().open_files },
        };
        let cgroups = match Cgroups::detect() {
            Ok(cgroups) => Some(cgroups),
            // The sandbox promises kernel-enforced limits; without cgroups it cannot keep that.
            Err(error) if isolation.sandboxed() => {
                return Err(unsandboxable(super::sandbox::SandboxError::Cgroups(error)));
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

/// The runtime's error when function code cannot be sandboxed on this host.
fn unsandboxable(source: super::sandbox::SandboxError) -> RuntimeError {
    RuntimeError::Backend {
        what: "function code cannot be sandboxed on this host; install what is missing, or start kubefn with --single-user if you are this machine's only user".into(),
        source: Box::new(source),
    }
}

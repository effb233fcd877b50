//! [`LocalRuntime`]: the [`Runtime`] trait over supervised processes on this machine.
//!
//! Each instance is a slot holding its node port, its logs and the replica set that serves
//! (the *active* set). A change of code starts a whole new set next to the active one (the
//! *rollout*); only when every new replica answers is the node port switched over, and the old
//! set keeps serving requests already in flight for the drain time before it is stopped. So an
//! update never refuses a request, and a version that cannot start leaves the old one serving.

use super::dependencies::DependencyCache;
use super::logs::{LogBuffer, LogLine, Stream};
use super::node_port::NodePort;
use super::supervisor::{signal_group, LaunchSpec, ReplicaSet, ReplicaState, RestartPolicy};
use super::usage::{read_group, CpuMeter};
use crate::platform::model::{EventInfo, FunctionSpec, InstanceState, LogEntry, ReplicaInfo, Runtime as Language};
use crate::platform::runtime::{InstanceSpec, LogStream, ReplicaUsage, Runtime, RuntimeError, RuntimeStatus};
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/node/bootstrap.js");
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
}

impl LocalConfig {
    /// Defaults under `root`: loopback node ports in Kubernetes' range, Kubernetes-like timings.
    pub fn new(root: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig {
            root: root.into(),
            node_host: IpAddr::from([127, 0, 0, 1]),
            node_ports: super::node_port::DEFAULT_NODE_PORT_RANGE,
            restart: RestartPolicy::default(),
            hold: Duration::from_secs(60),
            drain: Duration::from_secs(5),
            log_lines: 2000,
            log_file_bytes: 4 * 1024 * 1024,
            python: PathBuf::from("python3"),
            node: PathBuf::from("node"),
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
    dependencies: DependencyCache,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One instance.
struct Slot {
    id: String,
    logs: LogBuffer,
    /// The ready replicas of the active set, as the node port sees them.
    endpoints: watch::Sender<Vec<SocketAddr>>,
    node_address: SocketAddr,
    /// Taken (and closed) when the instance is deleted.
    node_port: Mutex<Option<NodePort>>,
    state: Mutex<SlotState>,
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
        if self.spec.paused { 0 } else { self.spec.replicas }
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
    /// Prepares `config.root` (bootstraps, directories) and stops replica processes a previous
    /// kubefn left running there, found by their pid files.
    pub fn new(config: LocalConfig) -> Result<LocalRuntime, RuntimeError> {
        let files = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Files { id: String::new(), path, source }
        };
        for dir in ["bootstrap", "instances", "pids", "logs"] {
            let path = config.root.join(dir);
            std::fs::create_dir_all(&path).map_err(files(&path))?;
        }
        for (name, text) in [("bootstrap.py", PYTHON_BOOTSTRAP), ("bootstrap.js", NODE_BOOTSTRAP)] {
            let path = config.root.join("bootstrap").join(name);
            write_if_changed(&path, text).map_err(files(&path))?;
        }
        stop_leftover_processes(&config.root.join("pids"), &config.root.join("bootstrap"));
        Ok(LocalRuntime {
            inner: Arc::new(Inner {
                dependencies: DependencyCache::new(config.root.join("dependencies")),
                config,
                slots: Mutex::default(),
            }),
        })
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, RuntimeError> {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned().ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })
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
            Some(range) => NodePort::bind_in_range(config.node_host, range, receiver.clone(), config.hold).await.ok(),
            None => None,
        };
        let node_port = match node_port {
            Some(node_port) => node_port,
            None => NodePort::bind_in_range(config.node_host, config.node_ports.clone(), receiver, config.hold)
                .await
                .map_err(|source| RuntimeError::NodePort { id: spec.id.clone(), source })?,
        };
        let logs = LogBuffer::with_file(config.log_lines, config.root.join("logs").join(format!("{}.log", spec.id)), config.log_file_bytes);
        let slot = Arc::new(Slot {
            id: spec.id.clone(),
            logs,
            endpoints,
            node_address: node_port.address(),
            node_port: Mutex::new(Some(node_port)),
            state: Mutex::new(SlotState {
                spec: spec.clone(),
                fingerprint: String::new(),
                active: None,
                rollout: None,
                draining: Vec::new(),
                failure: None,
                events: VecDeque::new(),
                cpu: CpuMeter::default(),
            }),
        });
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Two applies may race to open the same slot; the first one inserted wins.
        Ok(slots.entry(spec.id.clone()).or_insert(slot).clone())
    }

    /// Applies `spec`; with `retry_failed`, a version whose rollout failed is tried again.
    async fn apply_spec(&self, spec: InstanceSpec, retry_failed: bool) -> Result<(), RuntimeError> {
        self.check(&spec.spec)?;
        let slot = self.open_slot(&spec).await?;
        let fingerprint = fingerprint(&spec);
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let was_paused = state.spec.paused;
        let old_replicas = state.spec.replicas;
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
            state.event("Normal", "ScalingReplicaSet", format!("scaled from {old_replicas} to {} replica(s)", spec.replicas));
        }
        let wanted = state.replicas_wanted();
        if let Some(active) = &state.active {
            active.set.scale(wanted);
        }
        if let Some(rollout) = &state.rollout
            && let Some(set) = rollout.set.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            set.scale(wanted);
        }
        Ok(())
    }

    fn start_rollout(&self, slot: &Arc<Slot>, state: &mut SlotState, fingerprint: String) {
        if let Some(previous) = state.rollout.take() {
            // Superseded: its set (if it got one) stops in the background.
            previous.task.abort();
            if let Some(set) = previous.set.lock().unwrap_or_else(|p| p.into_inner()).take() {
                tokio::spawn(async move { set.shutdown().await });
            }
        }
        state.fingerprint = fingerprint.clone();
        state.failure = None;
        let version = state.spec.version;
        let wanted = state.replicas_wanted();
        state.event("Normal", "Deploying", format!("deploying version {version} with {wanted} replica(s)"));
        let set = Arc::new(Mutex::new(None));
        let task = tokio::spawn(rollout(self.inner.clone(), slot.clone(), state.spec.clone(), fingerprint.clone(), set.clone()));
        state.rollout = Some(Rollout { fingerprint, set, task });
    }

    /// Stops every instance and waits for their processes (kubefn shutting down).
    pub async fn shutdown(&self) {
        for id in self.instance_ids() {
            let _ = self.delete_slot(&id, false).await;
        }
    }

    async fn delete_slot(&self, id: &str, remove_files: bool) -> Result<(), RuntimeError> {
        let Some(slot) = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(id) else { return Ok(()) };
        let (active, rollout, mut sets) = {
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            (state.active.take(), state.rollout.take(), std::mem::take(&mut state.draining))
        };
        if let Some(Rollout { task, set, .. }) = rollout {
            task.abort();
            let _ = task.await;
            sets.extend(set.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
        sets.extend(active.map(|a| a.set.clone()));
        for set in sets {
            set.shutdown().await;
        }
        let _ = slot.endpoints.send_replace(Vec::new());
        let node_port = slot.node_port.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node_port) = node_port {
            node_port.close().await;
        }
        if remove_files {
            let dir = self.inner.config.root.join("instances").join(id);
            if let Err(error) = tokio::fs::remove_dir_all(&dir).await
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(instance = id, %error, "cannot remove the instance's files");
            }
        }
        Ok(())
    }
}

/// Starts the replicas of a new version next to the serving ones and switches over once all
/// are ready; records the failure and leaves the serving ones alone when they cannot start.
async fn rollout(inner: Arc<Inner>, slot: Arc<Slot>, spec: InstanceSpec, fingerprint: String, pending: Arc<Mutex<Option<Arc<ReplicaSet>>>>) {
    let version = spec.version;
    let fail = |reason: String| {
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
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
        let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let set = Arc::new(ReplicaSet::start(launch, inner.config.restart.clone(), slot.logs.clone(), state.replicas_wanted()));
        *pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(set.clone());
        set
    };
    loop {
        let status = set.status();
        if let Some(reason) = status.failure() {
            let reason = reason.to_string();
            pending.lock().unwrap_or_else(|p| p.into_inner()).take();
            set.shutdown().await;
            return fail(reason);
        }
        if status.ready >= status.desired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = {
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.fingerprint != fingerprint {
            // Superseded while starting; the newer rollout stops this set.
            return;
        }
        pending.lock().unwrap_or_else(|p| p.into_inner()).take();
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
        slot.state.lock().unwrap_or_else(|p| p.into_inner()).draining.retain(|set| !Arc::ptr_eq(set, &old));
    }
}

/// Installs dependencies and writes the version's source; returns how to start a replica.
async fn prepare_launch(inner: &Inner, slot: &Slot, spec: &InstanceSpec) -> Result<LaunchSpec, String> {
    let function = &spec.spec;
    let deps = inner.dependencies.ensure(function.runtime, &function.requirements, &slot.logs).await.map_err(|e| crate::platform::error_chain(&e))?;
    let config = &inner.config;
    let (program, bootstrap, file) = match function.runtime {
        Language::Python => (&config.python, "bootstrap.py", "function.py"),
        Language::Node => (&config.node, "bootstrap.js", "function.js"),
        Language::Image => return Err("image functions need the kubernetes runtime".into()),
    };
    let dir = config.root.join("instances").join(&slot.id).join(format!("v{}", spec.version));
    let source = dir.join(file);
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        let temporary = dir.join(format!(".{file}.tmp"));
        tokio::fs::write(&temporary, &function.source).await?;
        tokio::fs::rename(&temporary, &source).await
    };
    write.await.map_err(|error| format!("cannot write the source to {}: {error}", dir.display()))?;
    let mut env: Vec<(String, String)> = function.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("KUBEFN_SOURCE".to_string(), source.display().to_string()),
        ("KUBEFN_HANDLER".to_string(), function.handler.clone().unwrap_or_default()),
        ("KUBEFN_FUNCTION_NAME".to_string(), function.name.clone()),
        ("KUBEFN_MEMORY_LIMIT".to_string(), function.resources.memory_limit.clone()),
        ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
    ]);
    if let Some(deps) = deps {
        env.push(("KUBEFN_DEPS".to_string(), deps.display().to_string()));
    }
    Ok(LaunchSpec {
        program: program.clone(),
        args: vec![config.root.join("bootstrap").join(bootstrap).display().to_string()],
        env,
        dir,
        name_prefix: format!("v{}-", spec.version),
        pid_dir: Some(config.root.join("pids")),
    })
}

/// Copies the ready replicas of one set to the node port until the set is replaced.
async fn feed_endpoints(mut from: watch::Receiver<Vec<SocketAddr>>, to: watch::Sender<Vec<SocketAddr>>) {
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

    async fn apply(&self, spec: InstanceSpec) -> Result<(), RuntimeError> {
        self.apply_spec(spec, false).await
    }

    async fn redeploy(&self, spec: InstanceSpec) -> Result<(), RuntimeError> {
        self.apply_spec(spec, true).await
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_slot(id, true).await
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let mut spec = self.slot(id)?.state.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        spec.paused = true;
        self.apply_spec(spec, false).await
    }

    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let mut spec = self.slot(id)?.state.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        spec.paused = false;
        self.apply_spec(spec, false).await
    }

    async fn scale(&self, id: &str, replicas: u32) -> Result<(), RuntimeError> {
        let mut spec = self.slot(id)?.state.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        spec.replicas = replicas;
        self.apply_spec(spec, false).await
    }

    fn status(&self, id: &str) -> Option<RuntimeStatus> {
        let slot = self.slot(id).ok()?;
        let state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = state.replicas_wanted();
        let mut replicas = Vec::new();
        let mut failed_replica = None;
        let mut ready = 0;
        let mut sets: Vec<(u32, Arc<ReplicaSet>)> = state.active.iter().map(|a| (a.version, a.set.clone())).collect();
        if let Some(rollout) = &state.rollout {
            sets.extend(rollout.set.lock().unwrap_or_else(|p| p.into_inner()).clone().map(|set| (state.spec.version, set)));
        }
        for (version, set) in &sets {
            let status = set.status();
            if state.active.as_ref().is_some_and(|a| Arc::ptr_eq(&a.set, set)) {
                ready = status.ready;
                failed_replica = failed_replica.or(status.failure().map(str::to_string));
            }
            replicas.extend(status.replicas.into_iter().map(|r| ReplicaInfo {
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
            }));
        }
        let serving_version = state.active.as_ref().filter(|_| ready > 0).map(|a| a.version);
        let (instance_state, message) = if state.spec.paused {
            (InstanceState::Paused, "paused; resume to start its replicas again".to_string())
        } else if let Some(failure) = &state.failure {
            (InstanceState::Failed, failure.clone())
        } else if let Some(failure) = failed_replica {
            (InstanceState::Failed, format!("a replica keeps crashing: {failure}"))
        } else if state.rollout.is_some() {
            let starting = if sets.len() > usize::from(state.active.is_some()) { "starting replicas" } else { "preparing (installing dependencies)" };
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
            replicas,
            events: state.events.iter().cloned().collect(),
        })
    }

    fn instance_ids(&self) -> Vec<String> {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    fn logs(&self, id: &str, follow: bool) -> Result<LogStream, RuntimeError> {
        let slot = self.slot(id)?;
        let (backlog, live) = slot.logs.follow();
        drop(slot);
        let backlog = futures::stream::iter(backlog.into_iter().map(entry));
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
        let slot = self.slot(id)?;
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(active) = &state.active else { return Ok(Vec::new()) };
        let replicas = active.set.status().replicas;
        let now = Instant::now();
        let mut usage = Vec::new();
        for replica in replicas {
            let Some(pid) = replica.pid else { continue };
            let Ok(group) = read_group(pid) else { continue };
            let key = format!("{}:{pid}", replica.name);
            let percent = state.cpu.percent(&key, now, group.cpu_seconds);
            usage.push(ReplicaUsage { replica: replica.name, cpu_millicores: percent.map(|p| p * 10.0), memory_bytes: group.rss_bytes });
        }
        Ok(usage)
    }

    async fn connect(&self, id: &str) -> Result<SocketAddr, RuntimeError> {
        Ok(self.slot(id)?.node_address)
    }
}

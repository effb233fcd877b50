//! Supervised replica processes: start N copies of a command, each in the sandbox on a socket
//! of its own ([`super::launch`]), wait until each answers its readiness endpoint, restart
//! crashed ones with exponential back-off, give up after repeated crashes (with the last stderr
//! lines as the reason), and stop each one by its process group so nothing it started survives
//! it. A replica the kernel's OOM killer hit says so (`OOMKilled`).

use super::cgroups::{Limits, ReplicaCgroup};
use super::launch::{self, Launcher, Process};
use super::logs::{LogBuffer, Stream};
use super::sandbox::{Bind, DataFile, Program};
use super::warm_pool::WarmStart;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::platform::runtime::bootstrap::READY_PATH;

/// How to start one replica; each gets `KUBEFN_SOCKET` on top of `env` (and of the few
/// variables the [`Launcher`] keeps from kubefn's own environment).
#[derive(Clone)]
pub struct LaunchSpec {
    /// Starts the processes (sandbox, cgroups, run directories).
    pub launcher: Arc<Launcher>,
    /// The program (e.g. `python3`).
    pub program: PathBuf,
    /// Its arguments (e.g. the bootstrap's path as the process sees it).
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The directories the process sees (the function's version, its dependencies, the
    /// bootstraps).
    pub binds: Vec<Bind>,
    /// Files made for each replica alone: its secrets.
    pub files: Vec<DataFile>,
    /// Working directory, as the process sees it.
    pub dir: PathBuf,
    /// What each replica may use.
    pub limits: Limits,
    /// Put before each replica's name (`v2-` gives `v2-r0`), so the replicas of two versions
    /// running side by side during an update tell apart in the logs.
    pub name_prefix: String,
    /// Where to keep one file per running replica process, named by its pid, so that a kubefn
    /// killed without cleaning up finds (and stops) the processes it left behind.
    pub pid_dir: Option<PathBuf>,
    /// A warm pool to take a pre-started process from, and how to load the function into it;
    /// without one (or when the pool is empty) replicas start cold.
    pub warm: Option<WarmStart>,
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// When and how often crashed replicas are restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart; doubled after each further crash.
    pub initial_backoff: Duration,
    /// Longest wait between restarts.
    pub max_backoff: Duration,
    /// Consecutive crashes after which the replica is `Failed` and no longer restarted.
    pub crashes_before_failed: u32,
    /// A replica that ran this long before exiting starts counting crashes afresh.
    pub stable_after: Duration,
    /// How long a starting replica may take to answer its readiness endpoint.
    pub ready_timeout: Duration,
    /// How long a stopping replica gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            crashes_before_failed: 5,
            stable_after: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Where a replica is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaState {
    /// Started, not answering yet.
    Starting,
    /// Answering its readiness endpoint; receives traffic.
    Ready,
    /// Exited; restarts after the back-off.
    BackingOff,
    /// Crashed too often; not restarted. The reason holds the last stderr lines.
    Failed(String),
}

/// One replica as the status shows it.
#[derive(Clone, Debug)]
pub struct ReplicaStatus {
    /// `r0`, `r1`, …
    pub name: String,
    /// The socket it serves on (none before the first start).
    pub socket: Option<PathBuf>,
    /// Its process id while running (the sandbox's outer process).
    pub pid: Option<u32>,
    /// Its state.
    pub state: ReplicaState,
    /// How often it was restarted.
    pub restarts: u32,
    /// Its cgroup while running, where the host has them (usage is read from it).
    pub cgroup: Option<Arc<ReplicaCgroup>>,
    /// Processes the OOM killer killed in its earlier runs (the current run's count is its
    /// cgroup's).
    pub oom_kills: u64,
}

/// The replicas of one instance as the status shows them.
#[derive(Clone, Debug)]
pub struct ReplicaSetStatus {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas answering.
    pub ready: u32,
    /// Every replica, by name.
    pub replicas: Vec<ReplicaStatus>,
}

impl ReplicaSetStatus {
    /// The reason of the first failed replica, if any.
    pub fn failure(&self) -> Option<&str> {
        self.replicas.iter().find_map(|r| match &r.state {
            ReplicaState::Failed(reason) => Some(reason.as_str()),
            _ => None,
        })
    }
}

struct Replica {
    status: Arc<Mutex<ReplicaStatus>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    spec: LaunchSpec,
    policy: RestartPolicy,
    logs: LogBuffer,
    endpoints: watch::Sender<Vec<PathBuf>>,
    replicas: Mutex<BTreeMap<u32, Replica>>,
    next_index: Mutex<u32>,
}

impl Shared {
    fn publish_endpoints(&self) {
        let replicas = self.replicas.lock();
        let ready: Vec<PathBuf> = replicas
            .values()
            .filter_map(|r| {
                let status = r.status.lock();
                if status.state == ReplicaState::Ready { status.socket.clone() } else { None }
            })
            .collect();
        self.endpoints.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        });
    }
}

/// The supervised replicas of one instance.
pub struct ReplicaSet {
    shared: Arc<Shared>,
}

impl ReplicaSet {
    /// Starts `replicas` copies of `spec`; output goes to `logs`.
    pub fn start(spec: LaunchSpec, policy: RestartPolicy, logs: LogBuffer, replicas: u32) -> ReplicaSet {
        let (endpoints, _) = watch::channel(Vec::new());
        let set = ReplicaSet {
            shared: Arc::new(Shared {
                spec,
                policy,
                logs,
                endpoints,
                replicas: Mutex::new(BTreeMap::new()),
                next_index: Mutex::new(0),
            }),
        };
        set.scale(replicas);
        set
    }

    /// The sockets of the ready replicas, updated as they come and go.
    pub fn endpoints(&self) -> watch::Receiver<Vec<PathBuf>> {
        self.shared.endpoints.subscribe()
    }

    /// Starts or stops replicas (newest first) until `replicas` run. Stopping happens in the
    /// background; [`ReplicaSet::shutdown`] waits for it.
    pub fn scale(&self, replicas: u32) {
        let mut running = self.shared.replicas.lock();
        while running.len() > replicas as usize {
            if let Some((_, replica)) = running.pop_last() {
                let _ = replica.stop.send(true);
            }
        }
        while running.len() < replicas as usize {
            let index = {
                let mut next = self.shared.next_index.lock();
                *next += 1;
                *next - 1
            };
            let name = format!("{}r{index}", self.shared.spec.name_prefix);
            let status = Arc::new(Mutex::new(ReplicaStatus {
                name: name.clone(),
                socket: None,
                pid: None,
                state: ReplicaState::Starting,
                restarts: 0,
                cgroup: None,
                oom_kills: 0,
            }));
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(supervise(self.shared.clone(), status.clone(), stop_rx));
            running.insert(index, Replica { status, stop, task });
        }
        drop(running);
        self.shared.publish_endpoints();
    }

    /// A snapshot of the replicas.
    pub fn status(&self) -> ReplicaSetStatus {
        let running = self.shared.replicas.lock();
        let replicas: Vec<ReplicaStatus> = running.values().map(|r| r.status.lock().clone()).collect();
        ReplicaSetStatus {
            desired: u32::try_from(running.len()).unwrap_or(u32::MAX),
            ready: u32::try_from(replicas.iter().filter(|r| r.state == ReplicaState::Ready).count())
                .unwrap_or(u32::MAX),
            replicas,
        }
    }

    /// Stops every replica and waits until their processes are gone. Scaling a stopped set
    /// starts replicas again.
    pub async fn shutdown(&self) {
        let replicas: Vec<Replica> = {
            let mut running = self.shared.replicas.lock();
            std::mem::take(&mut *running).into_values().collect()
        };
        for replica in &replicas {
            let _ = replica.stop.send(true);
        }
        for replica in replicas {
            let _ = replica.task.await;
        }
        self.shared.publish_endpoints();
    }
}

impl Drop for ReplicaSet {
    /// A set dropped without [`ReplicaSet::shutdown`] still stops its replicas (in the background).
    fn drop(&mut self) {
        let running = self.shared.replicas.lock();
        for replica in running.values() {
            let _ = replica.stop.send(true);
        }
    }
}

/// Runs one replica until told to stop: start, probe, wait, restart with back-off.
async fn supervise(shared: Arc<Shared>, status: Arc<Mutex<ReplicaStatus>>, mut stop: watch::Receiver<bool>) {
    let name = status.lock().name.clone();
    let policy = shared.policy.clone();
    let mut consecutive_crashes = 0u32;
    let set = |update: &dyn Fn(&mut ReplicaStatus)| {
        update(&mut status.lock());
        shared.publish_endpoints();
    };
    loop {
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let outcome = match start_process(&shared.spec, &name, &shared.logs).await {
            Err(error) => Outcome::Ended(format!("cannot start {}: {error}", program_name(&shared.spec))),
            Ok(mut process) => {
                // The process keeps its run directory (and socket) until this run ends.
                let (child, socket, cgroup) = (&mut process.child, process.socket.clone(), process.cgroup.clone());
                let group = child.id().and_then(|pid| i32::try_from(pid).ok());
                let pid_file = shared.spec.pid_dir.as_ref().zip(child.id()).map(|(dir, pid)| dir.join(pid.to_string()));
                if let Some(path) = &pid_file
                    && let Err(error) = std::fs::write(path, format!("{name}\n"))
                {
                    shared.logs.push(
                        &name,
                        Stream::System,
                        format!("cannot write a pid file ({error}); a crash of kubefn may leave this process behind"),
                    );
                }
                set(&|s| {
                    s.socket = Some(socket.clone());
                    s.pid = child.id();
                    s.cgroup = cgroup.clone();
                    s.state = ReplicaState::Starting;
                });
                shared.logs.push(
                    &name,
                    Stream::System,
                    format!("running as process {}", child.id().unwrap_or_default()),
                );
                let outcome = run(child, &socket, &policy, &mut stop, || set(&|s| s.state = ReplicaState::Ready)).await;
                if let Some(group) = group {
                    terminate_group(child, group, policy.stop_grace).await;
                }
                // The reason below quotes the last lines it wrote: let them arrive first.
                process.drain_output().await;
                if let Some(path) = &pid_file {
                    let _ = std::fs::remove_file(path);
                }
                let killed = cgroup.as_ref().map_or(0, |c| c.usage().oom_kills);
                set(&|s| {
                    s.pid = None;
                    s.oom_kills += killed;
                    s.cgroup = None;
                });
                match outcome {
                    Outcome::Ended(_) if killed > 0 => Outcome::Ended(format!(
                        "OOMKilled: it reached its memory limit of {} MiB and the kernel killed it",
                        shared.spec.limits.memory_bytes.unwrap_or_default() >> 20
                    )),
                    outcome => outcome,
                }
            }
        };
        let Outcome::Ended(reason) = outcome else {
            shared.logs.push(&name, Stream::System, "stopped");
            return;
        };
        shared.logs.push(&name, Stream::System, reason.clone());
        if started.elapsed() >= policy.stable_after {
            consecutive_crashes = 0;
        }
        consecutive_crashes += 1;
        if consecutive_crashes >= policy.crashes_before_failed {
            let last = shared.logs.tail(&name, Stream::Stderr, 10, started_at).join("\n");
            let message = if last.is_empty() { reason } else { format!("{reason}; last output:\n{last}") };
            shared.logs.push(
                &name,
                Stream::System,
                format!("crashed {consecutive_crashes} times in a row; not restarting"),
            );
            set(&|s| s.state = ReplicaState::Failed(message.clone()));
            return;
        }
        let backoff =
            policy.initial_backoff.saturating_mul(2u32.saturating_pow(consecutive_crashes - 1)).min(policy.max_backoff);
        shared.logs.push(&name, Stream::System, format!("restarting in {} ms", backoff.as_millis()));
        set(&|s| s.state = ReplicaState::BackingOff);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        set(&|s| s.restarts += 1);
    }
}

enum Outcome {
    /// Told to stop.
    Stop,
    /// The process exited, never became ready, or could not start; the reason says which.
    Ended(String),
}

/// Waits for the replica to answer its readiness endpoint (calling `on_ready` once), then for
/// it to exit, whichever of these a stop request does not cut short.
async fn run(
    child: &mut Child,
    socket: &std::path::Path,
    policy: &RestartPolicy,
    stop: &mut watch::Receiver<bool>,
    on_ready: impl Fn(),
) -> Outcome {
    let exited = |status: std::io::Result<std::process::ExitStatus>| {
        Outcome::Ended(match status {
            Ok(status) => format!("exited with {status}"),
            Err(error) => format!("lost track of the process: {error}"),
        })
    };
    let deadline = tokio::time::Instant::now() + policy.ready_timeout;
    // Probe at once (a warm process is ready as soon as it took the function), then back off
    // from 2 ms to 50 ms: start-up takes tens to hundreds of milliseconds.
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            status = child.wait() => return exited(status),
            () = stopped(stop) => return Outcome::Stop,
            () = tokio::time::sleep(pause) => {
                if launch::probe(socket, READY_PATH).await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Outcome::Ended(format!("not ready after {} s", policy.ready_timeout.as_secs()));
                }
                pause = (pause * 2).clamp(Duration::from_millis(2), Duration::from_millis(50));
            }
        }
    }
    on_ready();
    tokio::select! {
        status = child.wait() => exited(status),
        () = stopped(stop) => Outcome::Stop,
    }
}

/// Resolves once the replica is told to stop (or its set is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// A warm process specialized for the function when the pool has one, else a fresh process.
async fn start_process(spec: &LaunchSpec, name: &str, logs: &LogBuffer) -> std::io::Result<Process> {
    if let Some(warm) = &spec.warm
        && let Some(process) = warm.pool.take(warm.language)
    {
        logs.push(
            name,
            Stream::System,
            format!("loading the function into warm process {} from the pool", process.pid().unwrap_or_default()),
        );
        match process.specialize(warm, &spec.limits, logs, name).await {
            Ok(process) => return Ok(process),
            Err(reason) => logs.push(
                name,
                Stream::System,
                format!("a warm process could not load the function ({reason}); starting a fresh one"),
            ),
        }
    }
    let LaunchSpec { program, args, env, binds, files, dir, .. } = spec;
    let program = Program { path: program, args, env, binds, files, workdir: dir };
    let mut process = spec.launcher.start(&program, &spec.limits)?;
    collect_output(&mut process, logs, name);
    Ok(process)
}

/// Sends a process's stdout and stderr to `logs` as replica `name`.
pub fn collect_output(process: &mut Process, logs: &LogBuffer, name: &str) {
    if let Some(stdout) = process.child.stdout.take() {
        process.output.push(tokio::spawn(logs.clone().collect(stdout, name.to_string(), Stream::Stdout)));
    }
    if let Some(stderr) = process.child.stderr.take() {
        process.output.push(tokio::spawn(logs.clone().collect(stderr, name.to_string(), Stream::Stderr)));
    }
}

/// The interpreter's name for messages (never its host path).
fn program_name(spec: &LaunchSpec) -> String {
    spec.program.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_else(|| "the interpreter".into())
}

/// SIGTERM to the whole process group, SIGKILL after the grace period; also when the leader
/// has already exited, since what it started lives on in its group.
async fn terminate_group(child: &mut Child, group: i32, grace: Duration) {
    if child.try_wait().ok().flatten().is_none() {
        signal_group(group, libc::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            signal_group(group, libc::SIGKILL);
            let _ = child.wait().await;
        }
    }
    signal_group(group, libc::SIGKILL);
}

/// Sends `signal` to process group `pgid`.
pub fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created for the
    // replica (process_group(0) makes its pid the group id); it touches no memory.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

#[cfg(test)]
mod tests;

//! A warm pool (Fission's idea): bootstrap processes started ahead of need, with no function
//! loaded. Starting a replica takes one, tells it which function to load (`POST /_/specialize`)
//! and adopts the process, which skips the interpreter's start-up on the cold path. The pool
//! refills itself in the background.
//!
//! Warm processes run in the sandbox like any replica, with a cgroup of their own: each sees the
//! bootstraps and an empty staging directory as its function directory. Taking one copies the
//! function's source there and sets the function's limits on its cgroup; a function with
//! dependencies starts cold instead, since its dependency directory is bound at start.

use super::cgroups::Limits;
use super::launch::{self, Launcher, Process};
use super::logs::{LogBuffer, Stream};
use super::sandbox::{Bind, Program, inside};
use crate::platform::model::Language;
use crate::platform::model::Named;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// What a warm process needs to become a replica of one function (paths as it sees them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Specialization {
    /// The function's source file.
    pub source: String,
    /// Its entry point, empty to detect one.
    pub handler: String,
    /// The dependencies directory, if any.
    pub deps: Option<String>,
    /// The function's environment.
    pub env: HashMap<String, String>,
    /// The working directory.
    pub dir: String,
    /// The invocation timeout.
    pub timeout_s: u32,
}

/// How the pool starts its processes.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Warm processes kept per language (0 turns the pool off).
    pub size: usize,
    /// The interpreter and bootstrap script (as the process sees it) per language.
    pub commands: Vec<(Language, PathBuf, String)>,
    /// Starts the processes.
    pub launcher: Arc<Launcher>,
    /// The bootstraps' directory, bound read-only.
    pub bootstrap: Bind,
    /// Where each warm process gets a directory that receives its function's source when it
    /// is taken (it sees it as its function directory).
    pub staging: PathBuf,
    /// Limits while waiting (the function's own apply once it is taken).
    pub limits: Limits,
    /// Where pid files go (the same place replicas keep theirs).
    pub pid_dir: PathBuf,
}

/// Where a warm process's output goes: nowhere useful until a replica adopts it.
type OutputTarget = Arc<Mutex<Option<(LogBuffer, String)>>>;

/// An idle bootstrap process.
pub struct WarmProcess {
    process: Process,
    /// Its staging directory on the host.
    staging: PathBuf,
    /// The same directory as the process sees it.
    staging_seen: PathBuf,
    output: OutputTarget,
}

/// The pool; cheap to clone. Dropping its last clone stops the idle processes.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: PoolConfig,
    idle: Mutex<HashMap<Language, VecDeque<WarmProcess>>>,
    taken: Arc<Notify>,
    next: AtomicU64,
}

impl WarmPool {
    /// Starts filling the pool in the background.
    pub fn start(config: PoolConfig) -> WarmPool {
        let _ = std::fs::remove_dir_all(&config.staging);
        let pool = WarmPool {
            inner: Arc::new(PoolInner {
                config,
                idle: Mutex::default(),
                taken: Arc::new(Notify::new()),
                next: AtomicU64::new(0),
            }),
        };
        tokio::spawn(refill(Arc::downgrade(&pool.inner)));
        pool
    }

    /// A live warm process for `language`, if one is waiting.
    pub fn take(&self, language: Language) -> Option<WarmProcess> {
        let mut idle = self.inner.idle.lock();
        let queue = idle.get_mut(&language)?;
        while let Some(mut process) = queue.pop_front() {
            if process.process.child.try_wait().ok().flatten().is_none() {
                self.inner.taken.notify_one();
                return Some(process);
            }
        }
        None
    }

    /// Stops every idle process (kubefn shutting down).
    pub fn clear(&self) {
        self.inner.idle.lock().clear();
    }

    /// How many warm processes wait for `language`.
    pub fn idle(&self, language: Language) -> usize {
        self.inner.idle.lock().get(&language).map_or(0, VecDeque::len)
    }
}

impl WarmProcess {
    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.child.id()
    }

    /// Gives the process its function: a copy of the source in its staging directory, the
    /// function's limits on its cgroup, then `POST /_/specialize`; it then serves as replica
    /// `name`, its output going to `logs`. On failure the process is gone and the reason
    /// returned.
    pub async fn specialize(
        self,
        warm: &WarmStart,
        limits: &Limits,
        logs: &LogBuffer,
        name: &str,
    ) -> Result<Process, String> {
        let WarmProcess { mut process, staging, staging_seen, output } = self;
        *output.lock() = Some((logs.clone(), name.to_string()));
        let outcome = async {
            copy_files(&warm.source_dir, &staging).await.map_err(|e| format!("cannot stage the source: {e}"))?;
            if let Some(cgroup) = &process.cgroup
                && let Err(error) = cgroup.set_limits(limits)
            {
                tracing::warn!(error = %crate::platform::error_chain(&error), "cannot set a warm process's limits");
                return Err("its limits could not be set".to_string());
            }
            // `warm.job.source` holds the file name; the process finds it in its staging directory.
            let job = Specialization {
                source: staging_seen.join(&warm.job.source).display().to_string(),
                dir: staging_seen.display().to_string(),
                ..warm.job.clone()
            };
            let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(30), launch::post(&process.socket, "/_/specialize", &body))
                .await
            {
                Ok(Ok(200)) => Ok(()),
                Ok(Ok(status)) => Err(format!("it answered {status}")),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("it did not answer within 30 s".to_string()),
            }
        }
        .await;
        match outcome {
            Ok(()) => Ok(process),
            Err(reason) => {
                let _ = process.child.start_kill();
                let _ = process.child.wait().await;
                Err(reason)
            }
        }
    }
}

/// Copies the regular files of `from` into `to` (a version directory holds a handful).
async fn copy_files(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut entries = tokio::fs::read_dir(from).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_file() {
            tokio::fs::copy(entry.path(), to.join(entry.file_name())).await?;
        }
    }
    Ok(())
}

/// Keeps `size` healthy processes per language until the pool is dropped.
async fn refill(pool: Weak<PoolInner>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        let config = inner.config.clone();
        for (language, program, bootstrap) in &config.commands {
            while inner.idle.lock().get(language).map_or(0, VecDeque::len) < config.size {
                let index = inner.next.fetch_add(1, Ordering::Relaxed);
                match start_warm(&config, index, program, bootstrap).await {
                    Ok(process) => inner.idle.lock().entry(*language).or_default().push_back(process),
                    Err(error) => {
                        tracing::warn!(language = language.as_str(), %error, "cannot start a warm process; cold starts stay cold");
                        break;
                    }
                }
            }
        }
        let taken = inner.taken.clone();
        // Not kept while waiting, so dropping the pool stops its processes at once.
        drop(inner);
        // Also look again now and then: an idle process may have died.
        let _ = tokio::time::timeout(Duration::from_secs(10), taken.notified()).await;
    }
}

async fn start_warm(config: &PoolConfig, index: u64, program: &Path, bootstrap: &str) -> std::io::Result<WarmProcess> {
    let staging = config.staging.join(format!("w{index}"));
    std::fs::create_dir_all(&staging)?;
    let function = Bind::read_only(&staging, inside::FUNCTION);
    let workdir = config.launcher.path(&function);
    let env = [("KUBEFN_POOL".to_string(), "1".to_string())];
    let args = [bootstrap.to_string()];
    let binds = [config.bootstrap.clone(), function];
    let started = config.launcher.start(
        &Program { path: program, args: &args, env: &env, binds: &binds, files: &[], workdir: &workdir },
        &config.limits,
    );
    let mut process = match started {
        Ok(process) => process,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    // The staging directory lives as long as the process, whether it stays warm or serves.
    process.adopt_dir(staging.clone());
    if let Some(pid) = process.child.id() {
        let _ = std::fs::write(config.pid_dir.join(pid.to_string()), "warm\n");
    }
    let output: OutputTarget = Arc::default();
    if let Some(stdout) = process.child.stdout.take() {
        process.output.push(tokio::spawn(route(stdout, output.clone(), Stream::Stdout)));
    }
    if let Some(stderr) = process.child.stderr.take() {
        process.output.push(tokio::spawn(route(stderr, output.clone(), Stream::Stderr)));
    }
    for _ in 0..200 {
        if let Some(status) = process.child.try_wait()? {
            return Err(std::io::Error::other(format!("the warm process exited with {status}")));
        }
        if launch::probe(&process.socket, "/_/health").await {
            return Ok(WarmProcess { process, staging, staging_seen: workdir, output });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(std::io::Error::other("the warm process did not answer within 5 s"))
}

/// Copies a warm process's output to whichever replica adopted it; lines before that are
/// dropped (they only say the process is warm).
async fn route(pipe: impl tokio::io::AsyncRead + Unpin, target: OutputTarget, stream: Stream) {
    let mut lines = super::logs::BoundedLines::new(pipe);
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((logs, name)) = target.lock().as_ref() {
            logs.push(name, stream, line);
        }
    }
}
/// Starting replicas from a warm pool.
#[derive(Clone)]
pub struct WarmStart {
    /// The pool.
    pub pool: WarmPool,
    /// The function's language.
    pub language: Language,
    /// What to load.
    pub job: Specialization,
    /// The version directory whose source the warm process gets a copy of.
    pub source_dir: PathBuf,
}

impl std::fmt::Debug for WarmStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmStart").field("language", &self.language).field("job", &self.job).finish_non_exhaustive()
    }
}

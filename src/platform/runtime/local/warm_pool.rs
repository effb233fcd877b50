//! A warm pool (Fission's idea): bootstrap processes started ahead of need, with no function
//! loaded. Starting a replica takes one, tells it which function to load (`POST /_/specialize`)
//! and adopts the process, which skips the interpreter's start-up on the cold path. The pool
//! refills itself in the background.

use super::logs::{LogBuffer, Stream};
use super::supervisor::{bootstrap_command, probe_path};
use crate::platform::model::Runtime as Language;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::Notify;

/// What a warm process needs to become a replica of one function.
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
    /// The interpreter and bootstrap script per language.
    pub commands: Vec<(Language, PathBuf, PathBuf)>,
    /// Working directory of idle processes.
    pub dir: PathBuf,
    /// Where pid files go (the same place replicas keep theirs).
    pub pid_dir: PathBuf,
}

/// Where a warm process's output goes: nowhere useful until a replica adopts it.
type OutputTarget = Arc<Mutex<Option<(LogBuffer, String)>>>;

/// An idle bootstrap process.
pub struct WarmProcess {
    child: Child,
    port: u16,
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
}

impl WarmPool {
    /// Starts filling the pool in the background.
    pub fn start(config: PoolConfig) -> WarmPool {
        let pool = WarmPool { inner: Arc::new(PoolInner { config, idle: Mutex::default(), taken: Arc::new(Notify::new()) }) };
        tokio::spawn(refill(Arc::downgrade(&pool.inner)));
        pool
    }

    /// A live warm process for `language`, if one is waiting.
    pub fn take(&self, language: Language) -> Option<WarmProcess> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let queue = idle.get_mut(&language)?;
        while let Some(mut process) = queue.pop_front() {
            if process.child.try_wait().ok().flatten().is_none() {
                self.inner.taken.notify_one();
                return Some(process);
            }
        }
        None
    }

    /// Stops every idle process (kubefn shutting down).
    pub fn clear(&self) {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// How many warm processes wait for `language`.
    pub fn idle(&self, language: Language) -> usize {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).get(&language).map_or(0, VecDeque::len)
    }
}

impl WarmProcess {
    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Loads the function into the process and hands it over as replica `name`, its output
    /// going to `logs` from now on. On failure the process is gone and the reason returned.
    pub async fn specialize(mut self, job: &Specialization, logs: &LogBuffer, name: &str) -> Result<(Child, u16), String> {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = Some((logs.clone(), name.to_string()));
        let body = serde_json::to_vec(job).map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(30), post_specialize(self.port, &body)).await {
            Ok(Ok(200)) => Ok((self.child, self.port)),
            outcome => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(match outcome {
                    Ok(Ok(status)) => format!("it answered {status}"),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "it did not answer within 30 s".to_string(),
                })
            }
        }
    }
}

async fn post_specialize(port: u16, body: &[u8]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "POST /_/specialize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    answer
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the answer"))
}

/// Keeps `size` healthy processes per language until the pool is dropped.
async fn refill(pool: Weak<PoolInner>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        let config = inner.config.clone();
        for (language, program, bootstrap) in &config.commands {
            while inner.idle.lock().unwrap_or_else(|p| p.into_inner()).get(language).map_or(0, VecDeque::len) < config.size {
                match start_warm(&config, program, bootstrap).await {
                    Ok(process) => inner.idle.lock().unwrap_or_else(|p| p.into_inner()).entry(*language).or_default().push_back(process),
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

async fn start_warm(config: &PoolConfig, program: &Path, bootstrap: &Path) -> std::io::Result<WarmProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = bootstrap_command(program, &[bootstrap.display().to_string()], &config.dir, port);
    command.env("KUBEFN_POOL", "1");
    let mut child = command.spawn()?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(config.pid_dir.join(pid.to_string()), "warm\n");
    }
    let output: OutputTarget = Arc::default();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(route(stdout, output.clone(), Stream::Stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(route(stderr, output.clone(), Stream::Stderr));
    }
    for _ in 0..200 {
        if let Some(status) = child.try_wait()? {
            return Err(std::io::Error::other(format!("the warm process exited with {status}")));
        }
        if probe_path(port, "/_/health").await {
            return Ok(WarmProcess { child, port, output });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.start_kill();
    Err(std::io::Error::other("the warm process did not answer within 5 s"))
}

/// Copies a warm process's output to whichever replica adopted it; lines before that are
/// dropped (they only say the process is warm).
async fn route(pipe: impl tokio::io::AsyncRead + Unpin, target: OutputTarget, stream: Stream) {
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(pipe));
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((logs, name)) = target.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            logs.push(name, stream, line);
        }
    }
}

//! Starting one bootstrap process the way every replica, warm process and install starts: in
//! the [sandbox](super::sandbox) (or, single-user, without it), in a cgroup of its own with the
//! function's limits, with a private run directory holding the Unix socket it serves on, and
//! with an environment made from scratch (nothing of kubefn's own but what interpreters need).

use super::cgroups::{Cgroups, Limits, ReplicaCgroup};
use super::sandbox::{Bind, Confined, Isolation, Network, Program, inside};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Child;

/// The socket file's name in a replica's run directory.
const SOCKET_FILE: &str = "http.sock";
/// The longest path a Unix socket address holds (sun_path, with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Variables of kubefn's own environment a process keeps: what interpreters need to run (and to
/// find proxies and certificates), never kubefn's secrets such as `KUBEFN_ADMIN`.
const INHERITED_VARIABLES: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Starts confined processes; shared by a runtime's replica sets, warm pool and installer.
#[derive(Debug)]
pub struct Launcher {
    isolation: Isolation,
    cgroups: Option<Cgroups>,
    run_root: PathBuf,
    next: AtomicU64,
}

/// A started process with what belongs to it; its run directory is removed when dropped.
pub struct Process {
    /// The process (bwrap, or the interpreter itself in single-user mode); its pid is its
    /// process group's id.
    pub child: Child,
    /// The socket it serves on, as kubefn reaches it.
    pub socket: PathBuf,
    /// Its cgroup, where the host has them.
    pub cgroup: Option<Arc<ReplicaCgroup>>,
    /// The tasks copying its stdout and stderr into the logs; they end once the pipes close,
    /// which may be a moment after the process itself ended.
    pub output: Vec<tokio::task::JoinHandle<()>>,
    dirs: Vec<RunDir>,
}

/// How long the output of an ended process may take to reach the logs: its pipes close when
/// the last process holding them (a grandchild, too) has gone.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

impl Process {
    /// Waits (at most [`OUTPUT_DRAIN`]) until everything the ended process wrote is in the
    /// logs, so a failure's reason can quote its last lines.
    pub async fn drain_output(&mut self) {
        let tasks = std::mem::take(&mut self.output);
        let _ = tokio::time::timeout(OUTPUT_DRAIN, futures::future::join_all(tasks)).await;
    }

    /// Removes `dir` (and what is in it) together with the process's run directory.
    pub fn adopt_dir(&mut self, dir: PathBuf) {
        self.dirs.push(RunDir(dir));
    }
}

/// A replica's private directory; removed with its socket when dropped.
#[derive(Debug)]
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Launcher {
    /// A launcher keeping run directories under `run_root` (emptied now: what is there belongs
    /// to processes of an earlier kubefn).
    pub fn new(isolation: Isolation, cgroups: Option<Cgroups>, run_root: PathBuf) -> std::io::Result<Launcher> {
        if run_root.exists() {
            std::fs::remove_dir_all(&run_root)?;
        }
        std::fs::create_dir_all(&run_root)?;
        let longest = run_root.join(format!("p{}", u64::MAX)).join(SOCKET_FILE);
        if longest.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(std::io::Error::other(format!(
                "the data directory's path is too long for replica sockets ({} bytes of at most {SOCKET_PATH_MAX}); choose a shorter --data-dir",
                longest.as_os_str().len()
            )));
        }
        Ok(Launcher { isolation, cgroups, run_root, next: AtomicU64::new(0) })
    }

    /// How function code is isolated.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// The cgroups in use, if any.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    /// The path a process uses for `bind`.
    pub fn path(&self, bind: &Bind) -> PathBuf {
        self.isolation.path(bind)
    }

    /// A fresh environment: the interpreter essentials from kubefn's own, `HOME` and `TMPDIR`
    /// in the private `/tmp`, then `extra`.
    pub fn environment(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = INHERITED_VARIABLES
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_string(), value)))
            .collect();
        if self.isolation.sandboxed() {
            env.extend([("HOME".to_string(), "/tmp".to_string()), ("TMPDIR".to_string(), "/tmp".to_string())]);
        } else if let Ok(home) = std::env::var("HOME") {
            env.push(("HOME".to_string(), home));
        }
        env.push(("PYTHONUNBUFFERED".to_string(), "1".to_string()));
        env.extend(extra.iter().cloned());
        env
    }

    /// Starts `program` (a bootstrap) serving on a socket in a new run directory, in a new
    /// cgroup with `limits`; its `env` comes on top of the base environment.
    pub fn start(&self, program: &Program<'_>, limits: &Limits) -> std::io::Result<Process> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let run_host = self.run_root.join(format!("p{index}"));
        std::fs::create_dir(&run_host)?;
        let run_dir = RunDir(run_host.clone());
        self.isolation.hand_over(&run_host)?;
        let run = Bind::writable(&run_host, inside::RUN);
        let socket_seen = self.path(&run).join(SOCKET_FILE);
        let cgroup = match &self.cgroups {
            Some(cgroups) => Some(Arc::new(create_cgroup(cgroups, limits)?)),
            None => None,
        };
        let mut binds = program.binds.to_vec();
        binds.push(run);
        let mut env = program.env.to_vec();
        env.push(("KUBEFN_SOCKET".to_string(), socket_seen.display().to_string()));
        if !program.files.is_empty() {
            // Without a sandbox there is no mount namespace to put them at their path: they go in
            // the replica's private directory, and the variable says where.
            let seen = match &self.isolation {
                Isolation::Sandboxed(_) => PathBuf::from(crate::platform::runtime::SECRETS_DIR),
                Isolation::SingleUser { .. } => {
                    let dir = run_host.join("secrets");
                    super::sandbox::data_files::write_into(&dir, program.files)?;
                    dir
                }
            };
            env.push(("KUBEFN_SECRETS_DIR".to_string(), seen.display().to_string()));
        }
        let env = self.environment(&env);
        let confined = Confined {
            program: Program { env: &env, binds: &binds, ..*program },
            network: Network::None,
            cgroup: cgroup.as_deref(),
        };
        let child = self.isolation.spawn(&confined)?;
        Ok(Process { child, socket: run_host.join(SOCKET_FILE), cgroup, output: Vec::new(), dirs: vec![run_dir] })
    }
}

/// Python's real executable (`sys.executable`), behind shims such as pyenv's: a shim costs a
/// shell on every start, and the sandbox binds the real installation read-only.
pub fn python_executable(program: &Path) -> PathBuf {
    interpreter_path(program, "-c", "import sys; print(sys.executable)")
}

/// Node's real executable (`process.execPath`), as [`python_executable`].
pub fn node_executable(program: &Path) -> PathBuf {
    interpreter_path(program, "-e", "console.log(process.execPath)")
}

/// The interpreter's real executable as it reports it, or `program` when it cannot say.
fn interpreter_path(program: &Path, flag: &str, script: &str) -> PathBuf {
    std::process::Command::new(program)
        .args([flag, script])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|path| path.is_absolute() && path.exists())
        .unwrap_or_else(|| program.to_path_buf())
}

/// A cgroup with `limits`; the reason it cannot be made goes to kubefn's log (it names host
/// paths), the error says what failed.
pub fn create_cgroup(cgroups: &Cgroups, limits: &Limits) -> std::io::Result<ReplicaCgroup> {
    cgroups.create(limits).map_err(|error| {
        tracing::error!(error = %crate::platform::error_chain(&error), "cannot create a replica's cgroup");
        std::io::Error::other("kubefn cannot create its cgroup (an admin finds why in kubefn's log)")
    })
}

/// Whether a bootstrap on `socket` answers 200 to `GET path` within two seconds.
pub async fn probe(socket: &Path, path: &str) -> bool {
    let attempt = async {
        let mut stream = UnixStream::connect(socket).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // Read the whole (tiny) answer: closing early would make the replica log a reset.
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.") && answer.get(8..12) == Some(b" 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten().unwrap_or(false)
}

/// POSTs `body` to `path` of the bootstrap on `socket`; returns the status code.
pub async fn post(socket: &Path, path: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut stream = UnixStream::connect(socket).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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

/// A launcher for tests: the real sandbox where this host has it (CI requires it: root, bwrap,
/// writable cgroups), else single-user.
#[cfg(test)]
pub fn for_tests(root: &Path) -> Arc<Launcher> {
    let python = python_executable(Path::new("python3"));
    let isolation = match super::sandbox::Sandbox::detect(super::sandbox::SandboxSettings::default(), &[python]) {
        Ok(sandbox) => Isolation::Sandboxed(sandbox),
        Err(error) if std::env::var("CI").is_ok() => panic!("CI=true needs the sandbox: {error}"),
        Err(_) => Isolation::SingleUser { open_files: 1024 },
    };
    let cgroups = Cgroups::detect().ok();
    Arc::new(Launcher::new(isolation, cgroups, root.join("run")).expect("launcher"))
}

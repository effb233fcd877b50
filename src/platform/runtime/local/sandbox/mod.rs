//! The sandbox every piece of function code runs in on the local runtime: replicas, warm
//! processes and dependency installs. See the README's "Security model" for what it promises.
//!
//! It is [bubblewrap](https://github.com/containers/bubblewrap) (`bwrap`, Debian's
//! `bubblewrap`), the sandbox Flatpak is built on: a small, audited, setuid-free tool that
//! sets up namespaces and mounts, so kubefn writes no namespace code of its own. kubefn starts
//! it as root; bwrap makes new pid, mount, IPC, UTS and (for replicas) network namespaces, a
//! root filesystem of read-only system directories plus only the binds asked for, a fresh
//! `/proc` and `/dev` and a size-capped private `/tmp`. It then runs util-linux's `setpriv`,
//! which switches to the unprivileged sandbox identity, clears every capability (also from the
//! bounding set) and sets no-new-privileges before executing the interpreter. Before bwrap
//! starts, kubefn's forked child joins the replica's cgroup (limits), starts a session of its
//! own (no controlling terminal to inject input into), and lowers its open-files limit.
//!
//! Without a sandbox (the explicit `--single-user` mode) the same processes run directly as
//! kubefn, still in their cgroups where the host has them.

use super::cgroups::{self, ReplicaCgroup};
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

pub mod data_files;
pub use data_files::DataFile;

/// Where a replica's directories appear inside the sandbox.
pub mod inside {
    /// The bootstraps (read-only).
    pub const BOOTSTRAP: &str = "/kubefn/bootstrap";
    /// The function's version directory: source and declared requirements (read-only).
    pub const FUNCTION: &str = "/kubefn/function";
    /// Installed dependencies (read-only).
    pub const DEPS: &str = "/kubefn/deps";
    /// The replica's own writable directory holding its socket.
    pub const RUN: &str = "/kubefn/run";
    /// Where an install writes (its scratch directory, writable only during the install).
    pub const INSTALL: &str = "/kubefn/install";
}

/// What the sandbox gives each process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSettings {
    /// The host user id function code runs as (never kubefn's).
    pub uid: u32,
    /// The host group id function code runs as.
    pub gid: u32,
    /// Size of the private `/tmp` in bytes.
    pub tmp_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings { uid: 65534, gid: 65534, tmp_bytes: 64 << 20, open_files: 1024 }
    }
}

/// Why the sandbox cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A required program is missing.
    #[error("{program} is not installed (Debian: apt-get install {package}); it is needed to sandbox functions")]
    Missing {
        /// The program.
        program: &'static str,
        /// The package that brings it.
        package: &'static str,
    },
    /// kubefn does not run as root.
    #[error("kubefn runs as uid {uid}, not root: it cannot switch function code to an identity of its own")]
    NotRoot {
        /// kubefn's uid.
        uid: u32,
    },
    /// The trial run failed.
    #[error("a trial sandbox failed ({detail}): the kernel does not allow the namespaces the sandbox needs")]
    Trial {
        /// What bwrap said.
        detail: String,
    },
    /// Writable cgroups are missing (limits could not be enforced).
    #[error("resource limits cannot be enforced")]
    Cgroups(#[source] cgroups::CgroupError),
}

/// A directory made visible to a sandboxed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where it appears inside.
    pub inside: PathBuf,
    /// Whether the process may write to it.
    pub writable: bool,
}

impl Bind {
    /// A read-only bind.
    pub fn read_only(host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Bind {
        Bind { host: host.into(), inside: inside.into(), writable: false }
    }

    /// A writable bind.
    pub fn writable(host: impl Into<PathBuf>, inside: impl Into<PathBuf>) -> Bind {
        Bind { host: host.into(), inside: inside.into(), writable: true }
    }
}

/// What a confined process may reach on the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own with only loopback: replicas, reached through their
    /// socket files.
    None,
    /// The host's network: dependency installs, which need the package registries.
    Host,
}

/// A program to run and what it sees: paths as the process sees them.
#[derive(Clone, Copy)]
pub struct Program<'a> {
    /// The executable (an interpreter, an installer).
    pub path: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// Its whole environment.
    pub env: &'a [(String, String)],
    /// The directories it sees besides the system's.
    pub binds: &'a [Bind],
    /// Files made for it alone (its secrets), read-only.
    pub files: &'a [DataFile],
    /// Its working directory.
    pub workdir: &'a Path,
}

/// One process to start confined.
pub struct Confined<'a> {
    /// What runs.
    pub program: Program<'a>,
    /// Its network.
    pub network: Network,
    /// The cgroup it joins before anything runs.
    pub cgroup: Option<&'a ReplicaCgroup>,
}

/// How function code is isolated: in the sandbox, or (single-user mode) not at all.
#[derive(Clone, Debug)]
pub enum Isolation {
    /// bubblewrap and setpriv, as described in the module documentation.
    Sandboxed(Sandbox),
    /// Processes run as kubefn itself: only for a machine with one user (`--single-user`).
    SingleUser {
        /// Open files per process.
        open_files: u64,
    },
}

/// The sandbox's programs and settings.
#[derive(Clone, Debug)]
pub struct Sandbox {
    bwrap: PathBuf,
    setpriv: PathBuf,
    settings: SandboxSettings,
    /// Read-only system directories besides /usr and /etc (interpreters installed elsewhere).
    system: Vec<PathBuf>,
}

impl Sandbox {
    /// Checks that this host can run the sandbox (root, bwrap, setpriv, the namespaces, by a
    /// trial run) and prepares it; `interpreters` are bound read-only when they live outside
    /// `/usr`.
    pub fn detect(settings: SandboxSettings, interpreters: &[PathBuf]) -> Result<Sandbox, SandboxError> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(SandboxError::NotRoot { uid });
        }
        let bwrap = find_program("bwrap").ok_or(SandboxError::Missing { program: "bwrap", package: "bubblewrap" })?;
        let setpriv =
            find_program("setpriv").ok_or(SandboxError::Missing { program: "setpriv", package: "util-linux" })?;
        let mut system: Vec<PathBuf> = interpreters.iter().filter_map(|program| install_prefix(program)).collect();
        system.sort();
        system.dedup();
        let sandbox = Sandbox { bwrap, setpriv, settings, system };
        let trial = sandbox.arguments(
            &Confined {
                program: Program {
                    path: Path::new("/bin/true"),
                    args: &[],
                    env: &[],
                    binds: &[],
                    files: &[],
                    workdir: Path::new("/"),
                },
                network: Network::None,
                cgroup: None,
            },
            &[],
        );
        let output = std::process::Command::new(&sandbox.bwrap)
            .args(&trial)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|error| SandboxError::Trial { detail: error.to_string() })?;
        if !output.status.success() {
            return Err(SandboxError::Trial { detail: String::from_utf8_lossy(&output.stderr).trim().to_string() });
        }
        Ok(sandbox)
    }

    /// bwrap's arguments for `process`, whose data files are in the descriptors `fds` (in
    /// order). `--die-with-parent` ends the sandbox with kubefn (a
    /// killed kubefn leaves no replica behind); the kernel ties it to the *thread* that started
    /// bwrap, which is always a tokio worker here (they live as long as the runtime), never a
    /// blocking-pool thread.
    fn arguments(&self, process: &Confined<'_>, fds: &[RawFd]) -> Vec<String> {
        let mut args: Vec<String> =
            ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
                .map(String::from)
                .to_vec();
        if process.network == Network::None {
            args.push("--unshare-net".into());
        }
        args.extend(["--hostname".into(), "kubefn-function".into()]);
        let mut made = Vec::new();
        let mut bind = |args: &mut Vec<String>, flag: &str, host: &Path, inside: &Path| {
            // Directories bwrap makes on its own for a mount point are closed to the sandbox's
            // user: make each one first, open to all (it holds nothing but the mount).
            let ancestors: Vec<&Path> = inside.ancestors().skip(1).filter(|a| a.parent().is_some()).collect();
            for ancestor in ancestors.into_iter().rev() {
                if !made.contains(&ancestor.to_path_buf())
                    && !["/tmp", "/usr", "/etc"].iter().any(|top| Path::new(top) == ancestor)
                {
                    made.push(ancestor.to_path_buf());
                    args.extend(["--perms".into(), "0755".into(), "--dir".into(), ancestor.display().to_string()]);
                }
            }
            if flag == "--ro-bind-data" {
                // Readable by the sandbox's identity (root made it); only this sandbox sees it.
                args.extend(["--perms".into(), "0444".into()]);
            }
            args.extend([flag.to_string(), host.display().to_string(), inside.display().to_string()]);
        };
        bind(&mut args, "--ro-bind", Path::new("/usr"), Path::new("/usr"));
        bind(&mut args, "--ro-bind", Path::new("/etc"), Path::new("/etc"));
        for dir in &self.system {
            bind(&mut args, "--ro-bind", dir, dir);
        }
        // Merged-/usr systems have /bin, /lib… as links into /usr; others have directories.
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(top);
            match std::fs::read_link(&host) {
                Ok(target) => {
                    args.extend(["--symlink".into(), target.display().to_string(), host.display().to_string()])
                }
                Err(_) if host.is_dir() => {
                    args.extend(["--ro-bind".into(), host.display().to_string(), host.display().to_string()])
                }
                Err(_) => {}
            }
        }
        args.extend(["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size"].map(String::from));
        args.push(self.settings.tmp_bytes.to_string());
        args.extend(["--tmpfs".into(), "/tmp".into()]);
        // After /tmp, so a bind below /tmp is not hidden by it.
        for bound in process.program.binds {
            bind(&mut args, if bound.writable { "--bind" } else { "--ro-bind" }, &bound.host, &bound.inside);
        }
        for (file, fd) in process.program.files.iter().zip(fds) {
            bind(&mut args, "--ro-bind-data", Path::new(&fd.to_string()), &file.inside);
        }
        args.extend(["--chdir".into(), process.program.workdir.display().to_string(), "--".into()]);
        args.push(self.setpriv.display().to_string());
        args.extend([
            format!("--reuid={}", self.settings.uid),
            format!("--regid={}", self.settings.gid),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
            "--bounding-set=-all".into(),
            "--no-new-privs".into(),
            "--".into(),
        ]);
        args.push(process.program.path.display().to_string());
        args.extend(process.program.args.iter().cloned());
        args
    }
}

impl Isolation {
    /// Whether function code runs in the sandbox.
    pub fn sandboxed(&self) -> bool {
        matches!(self, Isolation::Sandboxed(_))
    }

    /// The path a process uses for `bind`: where it appears inside the sandbox, or the host
    /// path without one.
    pub fn path(&self, bind: &Bind) -> PathBuf {
        match self {
            Isolation::Sandboxed(_) => bind.inside.clone(),
            Isolation::SingleUser { .. } => bind.host.clone(),
        }
    }

    /// Makes `dir` (a replica's run directory or an install's scratch directory) the sandbox
    /// identity's own, so code inside can write to it and nothing else can.
    pub fn hand_over(&self, dir: &Path) -> std::io::Result<()> {
        if let Isolation::Sandboxed(sandbox) = self {
            std::os::unix::fs::chown(dir, Some(sandbox.settings.uid), Some(sandbox.settings.gid))?;
        }
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
    }

    /// Takes `dir` back from the sandbox identity (root-owned, read-only for others), e.g. a
    /// finished install, which function code must not change afterwards.
    pub fn take_back(&self, dir: &Path) -> std::io::Result<()> {
        if !self.sandboxed() {
            return Ok(());
        }
        for entry in walk(dir)? {
            let metadata = std::fs::symlink_metadata(&entry)?;
            std::os::unix::fs::lchown(&entry, Some(0), Some(0))?;
            if !metadata.file_type().is_symlink() {
                // Keep execute bits where there were any; drop write for everyone but root.
                let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions());
                let readable = if metadata.is_dir() || mode & 0o111 != 0 { 0o755 } else { 0o644 };
                std::fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(readable))?;
            }
        }
        Ok(())
    }

    /// Starts `process`: piped output, null input, killed when dropped. Its data files exist
    /// only in the sandbox; single-user, they are ignored here (see
    /// [`data_files::write_into`]).
    pub fn spawn(&self, process: &Confined<'_>) -> std::io::Result<Child> {
        let files = match self {
            Isolation::Sandboxed(_) => data_files::memory_files(process.program.files)?,
            Isolation::SingleUser { .. } => Vec::new(),
        };
        let fds = data_files::numbers(&files);
        let (mut command, sandboxed, open_files) = match self {
            Isolation::Sandboxed(sandbox) => {
                let mut command = Command::new(&sandbox.bwrap);
                command.args(sandbox.arguments(process, &fds));
                (command, true, sandbox.settings.open_files)
            }
            Isolation::SingleUser { open_files } => {
                let mut command = Command::new(process.program.path);
                command.args(process.program.args).current_dir(process.program.workdir);
                (command, false, *open_files)
            }
        };
        command.env_clear().envs(process.program.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let procs: Vec<CString> = process.cgroup.map(ReplicaCgroup::procs_files).unwrap_or_default();
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (cgroups::join writes prepared paths; no allocation, no locks).
        unsafe {
            command.pre_exec(move || {
                data_files::inherit(&fds)?;
                prepare_child(&procs, sandboxed, open_files)
            });
        }
        // The memory files close here, once bwrap holds its own copies.
        command.spawn()
    }

    /// What the status and the admin dashboard say about isolation.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Sandboxed(sandbox) => format!(
                "sandboxed (bubblewrap): uid {}, own pid/mount/IPC/network namespaces, read-only code, private /tmp of {} MiB, no capabilities, no new privileges",
                sandbox.settings.uid,
                sandbox.settings.tmp_bytes >> 20
            ),
            Isolation::SingleUser { .. } => {
                "not sandboxed (--single-user): function code runs as kubefn and can read its database and environment; only for a machine with one user".to_string()
            }
        }
    }
}

/// In the forked child: join the cgroup, leave kubefn's session and terminal, cap open files,
/// no core dumps; in the sandbox, bwrap itself ignores SIGTERM (the function inside gets it and
/// finishes its requests, then bwrap exits with it).
fn prepare_child(procs: &[CString], sandboxed: bool, open_files: u64) -> std::io::Result<()> {
    cgroups::join(procs)?;
    // SAFETY: setsid, getrlimit/setrlimit and signal only change this (child) process.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            let wanted = open_files.min(limit.rlim_max);
            let lowered = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lowered);
        }
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        if sandboxed {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    Ok(())
}

/// `program` on PATH or in the usual system directories.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The installation prefix of an interpreter outside /usr (`/opt/python/bin/python3` →
/// `/opt/python`), which the sandbox must see read-only.
fn install_prefix(program: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(program).ok()?;
    if real.starts_with("/usr") || real.starts_with("/bin") || real.starts_with("/lib") {
        return None;
    }
    let bin = real.parent()?;
    Some(if bin.file_name().is_some_and(|n| n == "bin") { bin.parent()?.to_path_buf() } else { bin.to_path_buf() })
}

/// `dir` and everything below it (symlinks not followed).
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = vec![dir.to_path_buf()];
    let mut index = 0;
    while index < found.len() {
        let path = found[index].clone();
        index += 1;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                found.push(entry?.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;

//! Kernel-enforced limits for replicas: every replica process (and all it starts) runs in a
//! cgroup of its own, with a CPU quota, a memory limit (the kernel's OOM killer acts on it, as
//! in a pod) and a cap on processes; its CPU time, memory and OOM kills are read from the
//! cgroup's own counters.
//!
//! cgroup v2 is used where kubefn may write a hierarchy with the cpu, memory and pids
//! controllers; cgroup v1 (one hierarchy per controller, as on many container hosts)
//! otherwise. Both are found from `/proc/self/mountinfo` and `/proc/self/cgroup`: kubefn
//! creates `kubefn-<its pid>` below its own cgroup in each hierarchy and one directory per
//! replica process below that. Directories of a kubefn that died are removed at the next start.
//!
//! The file names and values each version takes are pure functions ([`limit_writes`],
//! [`usage_from_files`]), unit-tested for both versions; the code that writes them runs for
//! real wherever kubefn runs.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The controllers a replica's limits need.
const CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];
/// CFS period for CPU quotas, as Kubernetes uses (100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup interface limits go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (`cpu.cfs_quota_us`, `memory.limit_in_bytes`, …).
    V1,
    /// The unified hierarchy (`cpu.max`, `memory.max`, …).
    V2,
}

impl CgroupVersion {
    /// `cgroup v1` / `cgroup v2`, for status lines.
    pub fn label(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "cgroup v1",
            CgroupVersion::V2 => "cgroup v2",
        }
    }
}

/// Why kubefn cannot place replicas in cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a writable cgroup v2 hierarchy with cpu, memory and pids nor v1 hierarchies of
    /// those controllers were found.
    #[error(
        "no writable cgroup hierarchy with the cpu, memory and pids controllers ({detail}); run kubefn as root on a host with cgroups, or on Kubernetes"
    )]
    Unavailable {
        /// What was looked at and found missing.
        detail: String,
    },
    /// A cgroup directory or file could not be written.
    #[error("cannot write the cgroup file {path}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What one replica may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// CPU in millicores (a CFS quota); `None`: no limit.
    pub cpu_millis: Option<u64>,
    /// Memory in bytes (swap included, where the kernel accounts it); `None`: no limit.
    pub memory_bytes: Option<u64>,
    /// Processes and threads at most.
    pub pids: Option<u64>,
}

/// One replica's counters.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Usage {
    /// CPU seconds used so far.
    pub cpu_seconds: f64,
    /// Working set in bytes (usage less inactive file cache, as the kubelet counts it).
    pub memory_bytes: u64,
    /// Processes the kernel's OOM killer killed in it.
    pub oom_kills: u64,
}

/// One hierarchy kubefn writes to: its `kubefn-<pid>` directory and the controllers there.
#[derive(Clone, Debug)]
struct Base {
    dir: PathBuf,
    controllers: Vec<String>,
}

/// Names replica cgroups uniquely within this process (several runtimes may share its
/// `kubefn-<pid>` directories, as tests do).
static NEXT_REPLICA: AtomicU64 = AtomicU64::new(0);

/// kubefn's cgroups: where replica cgroups are made.
#[derive(Debug)]
pub struct Cgroups {
    version: CgroupVersion,
    bases: Vec<Base>,
}

impl Cgroups {
    /// Finds a writable hierarchy (v2 first, then v1), removes what a dead kubefn left there,
    /// and prepares `kubefn-<pid>` directories.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = parse_mountinfo(&mountinfo);
        let own = parse_membership(&membership);
        let pid = std::process::id();
        let v2 = prepare_v2(&mounts, &own, pid);
        let v1 = match &v2 {
            Ok(_) => None,
            Err(_) => Some(prepare_v1(&mounts, &own, pid)),
        };
        let (version, bases) = match (v2, v1) {
            (Ok(bases), _) => (CgroupVersion::V2, bases),
            (Err(_), Some(Ok(bases))) => (CgroupVersion::V1, bases),
            (Err(v2), Some(Err(v1))) => return Err(CgroupError::Unavailable { detail: format!("v2: {v2}; v1: {v1}") }),
            (Err(v2), None) => return Err(CgroupError::Unavailable { detail: v2 }),
        };
        Ok(Cgroups { version, bases })
    }

    /// Which interface is in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// A new cgroup for one replica process, with `limits` set.
    pub fn create(&self, limits: &Limits) -> Result<ReplicaCgroup, CgroupError> {
        let name = format!("r{}", NEXT_REPLICA.fetch_add(1, Ordering::Relaxed));
        let mut dirs = Vec::new();
        for base in &self.bases {
            let dir = base.dir.join(&name);
            std::fs::create_dir(&dir).map_err(|source| CgroupError::Write { path: dir.clone(), source })?;
            dirs.push((dir, base.controllers.clone()));
        }
        let cgroup = ReplicaCgroup { version: self.version, dirs };
        cgroup.set_limits(limits)?;
        Ok(cgroup)
    }
}

/// One replica's cgroup (a directory per hierarchy); removed when dropped, once empty.
#[derive(Debug)]
pub struct ReplicaCgroup {
    version: CgroupVersion,
    dirs: Vec<(PathBuf, Vec<String>)>,
}

impl ReplicaCgroup {
    /// Writes `limits` (a warm process gets its function's limits when it takes the function).
    pub fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        for (dir, controllers) in &self.dirs {
            for (file, value) in limit_writes(self.version, limits) {
                let owner = file.split('.').next().unwrap_or_default();
                let applies = controllers.iter().any(|c| c == owner);
                let path = dir.join(file);
                // memory.memsw.* exists only where the kernel accounts swap.
                if !applies || (file.contains("memsw") || file.contains("swap")) && !path.exists() {
                    continue;
                }
                std::fs::write(&path, value).map_err(|source| CgroupError::Write { path, source })?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid to, to join (see [`join`]).
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|(dir, _)| CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()).ok())
            .collect()
    }

    /// The counters now.
    pub fn usage(&self) -> Usage {
        let read = |name: &str| {
            self.dirs.iter().find_map(|(dir, _)| std::fs::read_to_string(dir.join(name)).ok()).unwrap_or_default()
        };
        usage_from_files(self.version, &read)
    }

    /// SIGKILLs every process in it.
    pub fn kill_all(&self) {
        for (dir, _) in &self.dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) signals a process of this replica's cgroup; no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for ReplicaCgroup {
    fn drop(&mut self) {
        for (dir, _) in &self.dirs {
            // A cgroup with processes cannot be removed; they are killed first, and exiting
            // takes the kernel a moment.
            for attempt in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 49 => {
                        if attempt == 0 {
                            self.kill_all();
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(error) => tracing::warn!(cgroup = %dir.display(), %error, "cannot remove a replica's cgroup"),
                }
            }
        }
    }
}

/// Joins the cgroups whose `cgroup.procs` files are given: called in a forked child before
/// exec, so it only makes system calls (no allocation).
pub fn join(procs_files: &[CString]) -> std::io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut digits = [0u8; 12];
    let text = decimal(u64::try_from(pid).unwrap_or_default(), &mut digits);
    for file in procs_files {
        // SAFETY: open/write/close on a NUL-terminated path we own and a stack buffer.
        unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, text.as_ptr().cast(), text.len());
            libc::close(fd);
            if written < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// `value` in decimal, written into `buffer` without allocating.
fn decimal(mut value: u64, buffer: &mut [u8; 12]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    &buffer[start..]
}

/// The files to write for `limits`, in order.
pub fn limit_writes(version: CgroupVersion, limits: &Limits) -> Vec<(&'static str, String)> {
    let mut writes = Vec::new();
    match version {
        CgroupVersion::V1 => {
            if let Some(millis) = limits.cpu_millis {
                writes.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                writes.push(("cpu.cfs_quota_us", cpu_quota_us(millis).to_string()));
            }
            if let Some(bytes) = limits.memory_bytes {
                // The plain limit first: memsw may never be below it.
                writes.push(("memory.limit_in_bytes", bytes.to_string()));
                writes.push(("memory.memsw.limit_in_bytes", bytes.to_string()));
            }
            if let Some(pids) = limits.pids {
                writes.push(("pids.max", pids.to_string()));
            }
        }
        CgroupVersion::V2 => {
            if let Some(millis) = limits.cpu_millis {
                writes.push(("cpu.max", format!("{} {CPU_PERIOD_US}", cpu_quota_us(millis))));
            }
            if let Some(bytes) = limits.memory_bytes {
                writes.push(("memory.max", bytes.to_string()));
                writes.push(("memory.swap.max", "0".to_string()));
            }
            if let Some(pids) = limits.pids {
                writes.push(("pids.max", pids.to_string()));
            }
        }
    }
    writes
}

/// A CFS quota for `millis` millicores over [`CPU_PERIOD_US`] (the kernel's minimum is 1 ms).
fn cpu_quota_us(millis: u64) -> u64 {
    (millis * CPU_PERIOD_US / 1000).max(1000)
}

/// The counters from the files `read` returns (empty text for a file that is missing).
pub fn usage_from_files(version: CgroupVersion, read: &dyn Fn(&str) -> String) -> Usage {
    let number = |text: String| text.trim().parse::<u64>().unwrap_or(0);
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse::<u64>().ok()))
            .unwrap_or(0)
    };
    match version {
        CgroupVersion::V1 => {
            let stat = read("memory.stat");
            let usage = number(read("memory.usage_in_bytes"));
            Usage {
                cpu_seconds: number(read("cpuacct.usage")) as f64 / 1e9,
                memory_bytes: usage.saturating_sub(field(&stat, "total_inactive_file ")),
                oom_kills: field(&read("memory.oom_control"), "oom_kill "),
            }
        }
        CgroupVersion::V2 => {
            let stat = read("memory.stat");
            let usage = number(read("memory.current"));
            Usage {
                cpu_seconds: field(&read("cpu.stat"), "usage_usec ") as f64 / 1e6,
                memory_bytes: usage.saturating_sub(field(&stat, "inactive_file ")),
                oom_kills: field(&read("memory.events"), "oom_kill "),
            }
        }
    }
}

/// A cgroup mount: where, which version, which controllers (v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mount point.
    pub point: PathBuf,
    /// v1 or v2.
    pub version: CgroupVersion,
    /// The v1 controllers it carries (empty for v2).
    pub controllers: Vec<String>,
}

/// The cgroup mounts in a `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split_whitespace().nth(4)?;
            let mut after = after.split_whitespace();
            let kind = after.next()?;
            let options = after.nth(1).unwrap_or_default();
            let point = PathBuf::from(point.replace("\\040", " "));
            match kind {
                "cgroup2" => Some(Mount { point, version: CgroupVersion::V2, controllers: Vec::new() }),
                "cgroup" => Some(Mount {
                    point,
                    version: CgroupVersion::V1,
                    controllers: options.split(',').filter(|o| CONTROLLERS.contains(o)).map(str::to_string).collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// kubefn's own cgroup per hierarchy in a `/proc/self/cgroup` text: `(controllers, path)`,
/// with empty controllers for v2.
pub fn parse_membership(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
            Some((controllers, path.to_string()))
        })
        .collect()
}

fn prepare_v2(mounts: &[Mount], own: &[(Vec<String>, String)], pid: u32) -> Result<Vec<Base>, String> {
    let mount = mounts.iter().find(|m| m.version == CgroupVersion::V2).ok_or("no cgroup2 mount")?;
    let own_path =
        own.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| p.clone()).ok_or("kubefn is in no cgroup v2 group")?;
    let own_dir = mount.point.join(own_path.trim_start_matches('/'));
    let available = std::fs::read_to_string(own_dir.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", own_dir.display()))?;
    let needed = ["cpu", "memory", "pids"];
    if let Some(missing) = needed.iter().find(|c| !available.split_whitespace().any(|a| a == **c)) {
        return Err(format!("the {missing} controller is not available to kubefn's cgroup"));
    }
    // The v2 rule "no processes in a cgroup that hands controllers down" means kubefn itself
    // moves into a leaf next to its replicas when its own cgroup is not the root.
    let enable = "+cpu +memory +pids";
    if std::fs::write(own_dir.join("cgroup.subtree_control"), enable).is_err() {
        let leaf = own_dir.join(format!("kubefn-server-{pid}"));
        std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
        std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move kubefn into {}: {e}", leaf.display()))?;
        std::fs::write(own_dir.join("cgroup.subtree_control"), enable)
            .map_err(|e| format!("cannot enable controllers in {}: {e}", own_dir.display()))?;
    }
    remove_stale(&own_dir);
    let dir = own_dir.join(format!("kubefn-{pid}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("cgroup.subtree_control"), enable)
        .map_err(|e| format!("cannot enable controllers in {}: {e}", dir.display()))?;
    Ok(vec![Base { dir, controllers: needed.iter().map(|c| c.to_string()).collect() }])
}

fn prepare_v1(mounts: &[Mount], own: &[(Vec<String>, String)], pid: u32) -> Result<Vec<Base>, String> {
    let mut bases: Vec<Base> = Vec::new();
    for controller in CONTROLLERS {
        if bases.iter().any(|b| b.controllers.iter().any(|c| c == controller)) {
            continue;
        }
        let mount = mounts
            .iter()
            .find(|m| m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| c == controller))
            .ok_or_else(|| format!("no cgroup v1 mount carries the {controller} controller"))?;
        let own_path = own
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == controller))
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| "/".into());
        let own_dir = mount.point.join(own_path.trim_start_matches('/'));
        remove_stale(&own_dir);
        let dir = own_dir.join(format!("kubefn-{pid}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        bases.push(Base { dir, controllers: mount.controllers.clone() });
    }
    Ok(bases)
}

/// Removes the `kubefn-<pid>` directories of kubefn processes that no longer run, killing
/// what still runs in them (replicas a crashed kubefn left behind).
fn remove_stale(own_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(own_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("kubefn-")).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let base = entry.path();
        if let Ok(children) = std::fs::read_dir(&base) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                drop(ReplicaCgroup { version: CgroupVersion::V1, dirs: vec![(child.path(), Vec::new())] });
            }
        }
        let _ = std::fs::remove_dir(&base);
    }
}

#[cfg(test)]
mod tests;

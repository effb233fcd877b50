//! Which limits apply to a local replica and how, in words for the instance's status and the
//! admin dashboard, and the function's resources as numbers for its cgroup.

use super::cgroups::{CgroupVersion, Limits};
use crate::platform::model::Resources;
use crate::platform::validation::{parse_cpu_millis, parse_memory_bytes};

/// How limits are enforced on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforcement {
    /// The cgroup interface in use, if any (without one kubefn kills replicas over their
    /// memory limit itself and cannot limit CPU or processes).
    pub cgroups: Option<CgroupVersion>,
    /// Whether a sandbox caps `/tmp` and open files.
    pub sandboxed: bool,
    /// Size of the private `/tmp` in MiB.
    pub tmp_mib: u64,
    /// Open files per process.
    pub open_files: u64,
    /// Processes and threads per replica.
    pub pids: u64,
}

/// A replica's cgroup limits from its function's resources.
pub fn cgroup_limits(resources: &Resources, pids: u64) -> Limits {
    Limits {
        cpu_millis: parse_cpu_millis(&resources.cpu_limit),
        memory_bytes: parse_memory_bytes(&resources.memory_limit),
        pids: Some(pids),
    }
}

/// The limits of one replica as the status shows them.
pub fn describe(resources: &Resources, timeout_s: u32, how: &Enforcement) -> String {
    let mut parts = Vec::new();
    match how.cgroups {
        Some(version) => {
            let by = version.label();
            parts.push(format!("CPU limit {}: enforced by the kernel ({by} CFS quota)", resources.cpu_limit));
            parts.push(format!(
                "memory limit {}: enforced by the kernel ({by}; over it the OOM killer acts, OOMKilled)",
                resources.memory_limit
            ));
            parts.push(format!("{} processes and threads: enforced by the kernel ({by} pids)", how.pids));
        }
        None => {
            parts.push(format!(
                "memory limit {}: enforced by kubefn (a replica over it is killed, OOMKilled)",
                resources.memory_limit
            ));
            parts.push(format!("CPU limit {} not enforced: no writable cgroups on this host", resources.cpu_limit));
        }
    }
    if how.sandboxed {
        parts.push(format!("{} open files and a {} MiB /tmp: enforced by the sandbox", how.open_files, how.tmp_mib));
    } else {
        parts.push(format!("{} open files; no sandbox (single-user mode)", how.open_files));
    }
    parts.push(format!("invocation timeout {timeout_s} s: enforced by the bootstrap (504)"));
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_each_limit_and_how_it_applies() {
        let how =
            Enforcement { cgroups: Some(CgroupVersion::V1), sandboxed: true, tmp_mib: 64, open_files: 1024, pids: 256 };
        let text = describe(&Resources::default(), 30, &how);
        assert!(text.contains("CPU limit 500m: enforced by the kernel (cgroup v1 CFS quota)"), "{text}");
        assert!(text.contains("memory limit 256Mi: enforced by the kernel (cgroup v1;"), "{text}");
        assert!(text.contains("256 processes and threads"), "{text}");
        assert!(text.contains("1024 open files and a 64 MiB /tmp: enforced by the sandbox"), "{text}");
        assert!(text.contains("invocation timeout 30 s"), "{text}");
        let bare = describe(&Resources::default(), 30, &Enforcement { cgroups: None, sandboxed: false, ..how });
        assert!(bare.contains("CPU limit 500m not enforced"), "{bare}");
        assert!(bare.contains("enforced by kubefn"), "{bare}");
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let limits = cgroup_limits(&Resources::default(), 256);
        assert_eq!(limits, Limits { cpu_millis: Some(500), memory_bytes: Some(256 << 20), pids: Some(256) });
    }
}

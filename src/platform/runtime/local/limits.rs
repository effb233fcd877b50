//! Which resource limits the local runtime can enforce on this machine, said in words for the
//! instance's status. Memory limits are enforced by kubefn itself (a replica whose resident
//! memory exceeds its limit is killed, as the kernel's OOM killer would in a pod); CPU limits
//! need a cgroup v2 hierarchy kubefn may write to, which it looks for but does not use yet.

use crate::platform::model::Resources;
use std::path::Path;

/// Whether this process sits in a cgroup v2 hierarchy with the cpu and memory controllers
/// whose directory it may write to (what enforcing CPU limits would need).
pub fn cgroup_v2_writable() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) else { return false };
    if !controllers.split_whitespace().any(|c| c == "cpu") || !controllers.split_whitespace().any(|c| c == "memory") {
        return false;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| text.lines().find_map(|line| line.strip_prefix("0::").map(str::to_string)))
        .unwrap_or_default();
    let dir = root.join(own.trim_start_matches('/'));
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: access(2) reads the NUL-terminated path we own and touches nothing else.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// The limits of one replica as the status shows them.
pub fn describe(resources: &Resources, timeout_s: u32, cgroup_v2: bool) -> String {
    let cpu = if cgroup_v2 {
        format!("CPU limit {} not enforced: the local runtime does not place replicas in cgroups yet", resources.cpu_limit)
    } else {
        format!("CPU limit {} not enforced: no writable cgroup v2 on this machine", resources.cpu_limit)
    };
    format!(
        "memory limit {}: enforced by kubefn (a replica over it is killed, OOMKilled); {cpu}; invocation timeout {timeout_s} s: enforced by the bootstrap (504)",
        resources.memory_limit
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_each_limit_and_how_it_applies() {
        let text = describe(&Resources::default(), 30, false);
        assert!(text.contains("memory limit 256Mi: enforced by kubefn"), "{text}");
        assert!(text.contains("CPU limit 500m not enforced: no writable cgroup v2"), "{text}");
        assert!(text.contains("invocation timeout 30 s"), "{text}");
    }
}

//! Replica usage from /proc: CPU time and resident memory summed over the replica's whole
//! process group (what the function started counts too), and CPU percent between two readings.

use std::collections::HashMap;
use std::time::Instant;

/// Cumulative usage of one process group at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupUsage {
    /// CPU seconds (user + system) used so far by the group's live processes.
    pub cpu_seconds: f64,
    /// Resident memory of the group, in bytes.
    pub rss_bytes: u64,
    /// How many processes the group has.
    pub processes: u32,
}

/// Reads the usage of process group `pgid` by scanning /proc.
pub fn read_group(pgid: u32) -> std::io::Result<GroupUsage> {
    let ticks = clock_ticks_per_second();
    let page = page_size();
    let mut usage = GroupUsage { cpu_seconds: 0.0, rss_bytes: 0, processes: 0 };
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // Processes come and go while we scan; a vanished one simply does not count.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(parsed) = parse_stat(&stat) else { continue };
        if parsed.pgrp != pgid {
            continue;
        }
        usage.processes += 1;
        usage.cpu_seconds += (parsed.utime + parsed.stime) as f64 / ticks;
        usage.rss_bytes += parsed.rss_pages.saturating_mul(page);
    }
    Ok(usage)
}

/// The fields of /proc/PID/stat that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Process group id (field 5).
    pub pgrp: u32,
    /// User-mode CPU ticks (field 14).
    pub utime: u64,
    /// Kernel-mode CPU ticks (field 15).
    pub stime: u64,
    /// Resident pages (field 24).
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat; the command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat { pgrp: u32::try_from(field(5)?).ok()?, utime: field(14)?, stime: field(15)?, rss_pages: field(24)? })
}

/// Turns cumulative CPU seconds into percent of one core between readings, per key.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: HashMap<String, (Instant, f64)>,
}

impl CpuMeter {
    /// Records a reading and returns the CPU percent since the previous one of the same key
    /// (`None` for the first reading, or when the counter went backwards because a process
    /// of the group exited).
    pub fn percent(&mut self, key: &str, at: Instant, cpu_seconds: f64) -> Option<f64> {
        let previous = self.last.insert(key.to_string(), (at, cpu_seconds))?;
        let elapsed = at.checked_duration_since(previous.0)?.as_secs_f64();
        let used = cpu_seconds - previous.1;
        (elapsed > 0.0 && used >= 0.0).then(|| used / elapsed * 100.0)
    }

    /// Forgets every key but `keys` (replicas that stopped).
    pub fn retain(&mut self, keys: &[String]) {
        self.last.retain(|key, _| keys.contains(key));
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "4242 (my (odd) fn) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 123456789 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some(Stat { pgrp: 4242, utime: 250, stime: 50, rss_pages: 3000 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn cpu_percent_between_readings() {
        let mut meter = CpuMeter::default();
        let start = Instant::now();
        assert_eq!(meter.percent("r0", start, 10.0), None);
        assert_eq!(meter.percent("r0", start + Duration::from_secs(2), 11.0), Some(50.0));
        assert_eq!(meter.percent("r0", start + Duration::from_secs(3), 13.0), Some(200.0), "two cores busy");
        assert_eq!(meter.percent("r0", start + Duration::from_secs(4), 1.0), None, "a process of the group exited");
        meter.percent("r1", start + Duration::from_secs(4), 1.0);
        meter.retain(&["r1".to_string()]);
        assert_eq!(meter.percent("r0", start + Duration::from_secs(5), 1.0), None, "r0 was forgotten");
        assert_eq!(meter.percent("r1", start + Duration::from_secs(5), 2.0), Some(100.0), "r1 was kept");
    }

    #[test]
    fn reads_a_real_process_group_with_its_children() {
        use std::os::unix::process::CommandExt;
        // A group of two: a shell holding 40 MiB and burning CPU briefly, and a sleeping child.
        let mut leader = std::process::Command::new("python3")
            .args(["-c", "import subprocess, time\nchild = subprocess.Popen(['sleep', '30'])\nhold = bytearray(40 * 1024 * 1024)\nfor i in range(len(hold) // 4096): hold[i * 4096] = 1\nend = time.time() + 0.3\nwhile time.time() < end: pass\nprint('ready', flush=True)\ntime.sleep(30)\n"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("python");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(leader.stdout.take().expect("stdout")), &mut line)
            .expect("ready line");
        let usage = read_group(leader.id()).expect("usage");
        // SAFETY: signals the test's own process group.
        unsafe {
            libc::kill(-i32::try_from(leader.id()).expect("pid"), libc::SIGKILL);
        }
        let _ = leader.wait();
        assert_eq!(usage.processes, 2, "{usage:?}");
        assert!(usage.rss_bytes >= 40 * 1024 * 1024, "{usage:?}");
        assert!(usage.cpu_seconds > 0.0, "{usage:?}");
    }
}

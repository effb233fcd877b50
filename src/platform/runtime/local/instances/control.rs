//! The control loop of every instance: usage samples, memory enforcement, the autoscaler, the
//! idle check that scales to zero, and waking on demand.

use super::*;
use crate::platform::runtime::scale_to_zero::{self, idle_past_limit};

/// Whether the autoscaler owns the replica count: a range to move in and a metric to follow.
pub(super) fn autoscaled(policy: &ScalingPolicy) -> bool {
    policy.max > policy.min.max(1)
        && (policy.target_cpu_percent.is_some()
            || policy.target_memory_percent.is_some()
            || policy.target_requests_in_flight.is_some())
}

/// Reads usage, enforces memory limits, runs the autoscaler and the idle check, every
/// `usage_period`, until the runtime is gone.
pub(super) async fn sample_periodically(inner: Weak<Inner>) {
    loop {
        let Some(runtime) = inner.upgrade() else { return };
        let period = runtime.config.usage_period;
        let slots: Vec<Arc<Slot>> = runtime.slots.lock().values().cloned().collect();
        let now = Instant::now();
        for slot in slots {
            sample(&runtime.config, &slot, now);
        }
        drop(runtime);
        tokio::time::sleep(period).await;
    }
}

pub(super) fn sample(config: &LocalConfig, slot: &Slot, now: Instant) {
    let mut state = slot.state.lock();
    let Some(active) = &state.active else { return };
    let set = active.set.clone();
    let replicas = set.status().replicas;
    let memory_limit = parse_memory_bytes(&state.spec.spec.resources.memory_limit);
    let mut usage = Vec::new();
    let mut seen = Vec::new();
    for replica in &replicas {
        // One reading of the cgroup's counters serves the OOM count, CPU and memory.
        let live = replica.cgroup.as_ref().map(|cgroup| cgroup.usage());
        let killed = replica.oom_kills + live.map_or(0, |usage| usage.oom_kills);
        let reported = state.oom_kills_reported.entry(replica.name.clone()).or_default();
        if killed > *reported {
            *reported = killed;
            let message = format!(
                "{}: the kernel's OOM killer stopped a process at its memory limit of {} (OOMKilled)",
                replica.name, state.spec.spec.resources.memory_limit
            );
            slot.logs.push(&replica.name, Stream::System, message.clone());
            state.event("Warning", "OOMKilled", message);
        }
        let Some(pid) = replica.pid else { continue };
        // The cgroup's own counters where there is one; a scan of the process group otherwise.
        let (cpu_seconds, memory_bytes) = match live {
            Some(usage) => (usage.cpu_seconds, usage.memory_bytes),
            None => match read_group(pid) {
                Ok(group) => (group.cpu_seconds, group.rss_bytes),
                Err(_) => continue,
            },
        };
        let key = format!("{}:{pid}", replica.name);
        let percent = state.cpu.percent(&key, now, cpu_seconds);
        seen.push(key);
        if replica.cgroup.is_none()
            && let Some(limit) = memory_limit.filter(|limit| memory_bytes > *limit)
        {
            // What the kernel's OOM killer does to a replica over its cgroup limit, done here
            // because this host gives kubefn no cgroups (single-user mode only).
            let message = format!(
                "{} used {} MiB, over its memory limit of {} MiB: killed (OOMKilled)",
                replica.name,
                memory_bytes / (1024 * 1024),
                limit / (1024 * 1024)
            );
            slot.logs.push(&replica.name, Stream::System, message.clone());
            state.event("Warning", "OOMKilled", message);
            if let Ok(group_id) = i32::try_from(pid) {
                signal_group(group_id, libc::SIGKILL);
            }
            continue;
        }
        usage.push(ReplicaUsage {
            replica: replica.name.clone(),
            cpu_millicores: percent.map(|p| p * 10.0),
            memory_bytes,
        });
    }
    state.cpu.retain(&seen);
    state.usage = usage;
    idle_check(slot, &mut state, now);
    let due =
        state.last_autoscale.is_none_or(|last| now.saturating_duration_since(last) >= config.autoscaler.sync_period);
    if due {
        state.last_autoscale = Some(now);
        autoscale(slot, &mut state, now);
    }
}

/// Scales an idle instance to zero after its policy's idle time (not while it rolls out or has
/// yet to start).
pub(super) fn idle_check(slot: &Slot, state: &mut SlotState, now: Instant) {
    if state.idle_at_zero || state.rollout.is_some() || state.active.is_none() {
        return;
    }
    if let Some(idle) = idle_past_limit(&state.spec, slot.traffic.idle_for(now)) {
        state.idle_at_zero = true;
        state.event("Normal", "ScaledToZero", format!("no request for {} s: scaled to zero", idle.as_secs()));
        state.scale_sets();
    }
}

/// One HPA sync: the policy's metrics averaged per replica against their targets.
pub(super) fn autoscale(slot: &Slot, state: &mut SlotState, now: Instant) {
    let policy = state.spec.spec.scaling.clone();
    if !autoscaled(&policy) {
        state.autoscaler_status = None;
        return;
    }
    if state.spec.paused || state.idle_at_zero || state.rollout.is_some() || state.active.is_none() {
        return;
    }
    let resources = &state.spec.spec.resources;
    let mut metrics = Vec::new();
    if let (Some(target), Some(request)) =
        (policy.target_cpu_percent, parse_cpu_millis(&resources.cpu).filter(|r| *r > 0))
    {
        let values: Vec<f64> =
            state.usage.iter().filter_map(|u| u.cpu_millicores).map(|m| m / request as f64 * 100.0).collect();
        metrics.push(MetricSample { kind: MetricKind::CpuUtilization, target: f64::from(target), per_replica: values });
    }
    if let (Some(target), Some(request)) =
        (policy.target_memory_percent, parse_memory_bytes(&resources.memory).filter(|r| *r > 0))
    {
        let values: Vec<f64> = state.usage.iter().map(|u| u.memory_bytes as f64 / request as f64 * 100.0).collect();
        metrics.push(MetricSample {
            kind: MetricKind::MemoryUtilization,
            target: f64::from(target),
            per_replica: values,
        });
    }
    let current = state.spec.replicas;
    if let Some(target) = policy.target_requests_in_flight {
        // The node port sees connections, not requests: with one request per connection (as
        // the gateway sends them) the two are the same.
        let ready = state.active.as_ref().map_or(0, |a| a.set.status().ready).max(1);
        let per_replica = slot.traffic.open() as f64 / f64::from(ready);
        metrics.push(MetricSample {
            kind: MetricKind::RequestsInFlight,
            target: f64::from(target),
            per_replica: vec![per_replica; ready as usize],
        });
    }
    let decision = state.autoscaler.decide(now, current, policy.min, policy.max, &metrics);
    state.autoscaler_status = Some(AutoscalerStatus {
        current,
        desired: decision.desired,
        metrics: metrics.iter().map(MetricSample::reading).collect(),
    });
    if decision.desired != current {
        state.spec.replicas = decision.desired;
        state.event(
            "Normal",
            "ScalingReplicaSet",
            format!("autoscaled from {current} to {} replica(s): {}", decision.desired, decision.reason),
        );
        state.scale_sets();
    }
}

/// Wakes the slot's instance whenever a connection finds no ready replica, until the slot is
/// gone.
pub(super) async fn wake_on_demand(traffic: Arc<Traffic>, slot: Weak<Slot>) {
    scale_to_zero::wake_on_demand(traffic, move || {
        let slot = slot.upgrade()?;
        slot.state.lock().wake("a connection arrived");
        Some(std::future::ready(()))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autoscaler_owns_the_count_only_with_a_range_and_a_metric() {
        let policy = |min, max, cpu: Option<u32>| ScalingPolicy {
            min,
            max,
            target_cpu_percent: cpu,
            ..ScalingPolicy::default()
        };
        assert!(autoscaled(&policy(1, 5, Some(70))));
        assert!(!autoscaled(&policy(1, 5, None)), "no metric to follow");
        assert!(!autoscaled(&policy(3, 3, Some(70))), "no range to move in");
        assert!(!autoscaled(&policy(0, 1, Some(70))), "min 0 counts as 1");
        let requests = ScalingPolicy { target_requests_in_flight: Some(10), ..policy(1, 4, None) };
        assert!(autoscaled(&requests));
    }
}

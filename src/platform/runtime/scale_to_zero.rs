//! Scale to zero when idle, and back on demand: the one policy both runtimes follow. A runtime
//! counts an instance's requests in its [`Traffic`]; it asks [`idle_past_limit`] whether the
//! instance has been idle long enough to stop its replicas, and runs [`wake_on_demand`] so the
//! next request starts [`replicas_on_wake`] of them. What "stopping" and "starting" mean (a
//! replica set scaled locally, a Deployment's scale subresource) stays the runtime's own.

use super::InstanceSpec;
use super::forwarding::Traffic;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `idle` (how long `instance` saw no request), once that is at least its policy's
/// `scale_to_zero_after_s`; `None` while it is busy, paused, or never scales to zero.
pub fn idle_past_limit(instance: &InstanceSpec, idle: Duration) -> Option<Duration> {
    if instance.paused {
        return None;
    }
    let after = Duration::from_secs(instance.spec.scaling.scale_to_zero_after_s?);
    (idle >= after).then_some(idle)
}

/// The replicas a request starts for an instance at zero: its own count, at least one, within
/// its policy's range (an autoscaler will move it from there).
pub fn replicas_on_wake(instance: &InstanceSpec) -> u32 {
    let scaling = &instance.spec.scaling;
    let floor = scaling.min.max(1);
    instance.replicas.max(floor).min(scaling.max.max(floor))
}

/// Calls `wake` each time a request finds no ready replica of the instance that `traffic`
/// counts, until `wake` returns `None` (the instance or its runtime is gone).
pub async fn wake_on_demand<Wake, Woken>(traffic: Arc<Traffic>, mut wake: Wake)
where
    Wake: FnMut() -> Option<Woken>,
    Woken: Future<Output = ()>,
{
    loop {
        traffic.demanded().await;
        let Some(woken) = wake() else { return };
        woken.await;
    }
}

/// Waits until `ready()` lists a replica and returns them; checks again at each change that
/// `changes` signals, for at most `hold`, raising demand on `traffic` meanwhile (which wakes an
/// instance at zero). `None` when none became ready in time. A request that finds an instance
/// at zero is held here, not failed.
pub async fn hold_until_ready<T, Changes>(
    mut changes: watch::Receiver<Changes>,
    traffic: Option<&Traffic>,
    hold: Duration,
    mut ready: impl FnMut() -> Vec<T>,
) -> Option<Vec<T>> {
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        changes.borrow_and_update();
        let replicas = ready();
        if !replicas.is_empty() {
            return Some(replicas);
        }
        if let Some(traffic) = traffic {
            traffic.demand();
        }
        if tokio::time::timeout_at(deadline, changes.changed()).await.map_or(true, |changed| changed.is_err()) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::{FunctionSpec, Language, ScalingPolicy};
    use std::time::Instant;

    fn instance(replicas: u32, scaling: ScalingPolicy) -> InstanceSpec {
        let spec = FunctionSpec { scaling, ..FunctionSpec::new("f", Language::Python, "") };
        InstanceSpec { replicas, ..InstanceSpec::new("i", "u", 1, spec) }
    }

    fn idle_after(seconds: u64) -> ScalingPolicy {
        ScalingPolicy { min: 0, max: 4, scale_to_zero_after_s: Some(seconds), ..ScalingPolicy::default() }
    }

    #[test]
    fn only_an_unpaused_instance_with_the_policy_idles_to_zero_and_only_after_its_time() {
        let traffic = Traffic::default();
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(
            idle_past_limit(&instance(1, idle_after(60)), traffic.idle_for(later)).map(|d| d.as_secs()),
            Some(61)
        );
        assert_eq!(
            idle_past_limit(&instance(1, idle_after(120)), traffic.idle_for(later)),
            None,
            "not idle long enough"
        );
        assert_eq!(idle_past_limit(&instance(1, ScalingPolicy::default()), traffic.idle_for(later)), None, "no policy");
        let paused = InstanceSpec { paused: true, ..instance(1, idle_after(60)) };
        assert_eq!(idle_past_limit(&paused, traffic.idle_for(later)), None, "paused is already at zero");
        traffic.touch();
        assert_eq!(
            idle_past_limit(&instance(1, idle_after(60)), traffic.idle_for(Instant::now())),
            None,
            "a request just came"
        );
    }

    #[test]
    fn a_wake_starts_the_instances_count_at_least_one_and_within_the_policy() {
        assert_eq!(replicas_on_wake(&instance(0, idle_after(60))), 1, "at least one");
        assert_eq!(replicas_on_wake(&instance(3, idle_after(60))), 3);
        assert_eq!(replicas_on_wake(&instance(9, idle_after(60))), 4, "within max");
        let floor = ScalingPolicy { min: 2, max: 5, ..ScalingPolicy::default() };
        assert_eq!(replicas_on_wake(&instance(1, floor)), 2, "within min");
    }

    #[tokio::test]
    async fn every_demand_wakes_until_the_instance_is_gone() {
        let traffic = Arc::new(Traffic::default());
        let (woken, mut wakes) = tokio::sync::mpsc::unbounded_channel();
        let mut left = 2;
        let task = tokio::spawn(wake_on_demand(traffic.clone(), move || {
            left -= 1;
            let woken = woken.clone();
            (left >= 0).then_some(async move {
                let _ = woken.send(());
            })
        }));
        for _ in 0..2 {
            traffic.demand();
            wakes.recv().await.expect("a wake per demand");
        }
        traffic.demand();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the loop ends").expect("no panic");
    }

    #[tokio::test]
    async fn a_request_is_held_until_a_replica_is_ready_and_demands_one_meanwhile() {
        let traffic = Arc::new(Traffic::default());
        let (ready, changes) = watch::channel(Vec::<u8>::new());
        let demanded = tokio::spawn({
            let traffic = traffic.clone();
            async move { traffic.demanded().await }
        });
        let held = tokio::spawn({
            let traffic = traffic.clone();
            let ready = ready.subscribe();
            async move {
                hold_until_ready(changes, Some(&traffic), Duration::from_secs(30), || ready.borrow().clone()).await
            }
        });
        tokio::time::timeout(Duration::from_secs(5), demanded).await.expect("demand raised").expect("no panic");
        ready.send_replace(vec![7]);
        assert_eq!(held.await.expect("no panic"), Some(vec![7]));
        let (_kept, changes) = watch::channel(());
        let none = hold_until_ready(changes, None, Duration::from_millis(20), Vec::<u8>::new).await;
        assert_eq!(none, None, "nothing ready within the hold time");
    }
}

//! Adds usage samples up for the admin dashboard: totals per user and per function, and one
//! time series for all instances. Pure: it is fed instances and their samples, so its
//! arithmetic is tested without a store or a runtime.

use super::model::{InstanceInfo, UsageSample, UsageTotals};
use chrono::{DateTime, Duration, Utc};

/// Invocations in a run of samples: each sample counts those since the one before it.
pub fn invocations(samples: &[UsageSample]) -> u64 {
    samples.iter().map(|s| u64::from(s.invocations)).sum()
}

/// The totals of some instances, each with its samples in the window (oldest first).
pub fn totals<'a>(instances: impl IntoIterator<Item = (&'a InstanceInfo, &'a [UsageSample])>) -> UsageTotals {
    let mut totals = UsageTotals::default();
    for (instance, samples) in instances {
        totals.instances += 1;
        totals.replicas_ready += instance.replicas.ready;
        totals.replicas_desired += instance.replicas.desired;
        // What it uses now: nothing while nothing runs, else its latest sample.
        if instance.replicas.ready > 0
            && let Some(latest) = samples.last()
        {
            totals.cpu_millicores += latest.cpu_millicores.unwrap_or(0.0);
            totals.memory_bytes += latest.memory_bytes.unwrap_or(0);
        }
        totals.invocations += invocations(samples);
        totals.errors += samples.iter().map(|s| u64::from(s.errors)).sum::<u64>();
    }
    totals
}

/// All instances' samples added up over `buckets` equal slices of `since..until`: per slice,
/// each instance's samples are [`average`]d, then the instances are added (latencies and the
/// autoscaler's load are not additive, so the sum keeps the highest). A slice
/// where no instance has a sample is left out, so the chart shows a gap rather than a zero.
pub fn summed_series(
    per_instance: &[&[UsageSample]],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    buckets: u32,
) -> Vec<UsageSample> {
    let buckets = buckets.max(1);
    let width = ((until - since) / i32::try_from(buckets).unwrap_or(i32::MAX)).max(Duration::milliseconds(1));
    let slot_of = |at: DateTime<Utc>| -> Option<usize> {
        if at < since || at > until {
            return None;
        }
        let slot = ((at - since).num_milliseconds() / width.num_milliseconds().max(1)) as usize;
        Some(slot.min(buckets as usize - 1))
    };
    let mut slots: Vec<Option<UsageSample>> = vec![None; buckets as usize];
    for samples in per_instance {
        let mut own: Vec<Vec<&UsageSample>> = vec![Vec::new(); buckets as usize];
        for sample in samples.iter() {
            if let Some(slot) = slot_of(sample.at) {
                own[slot].push(sample);
            }
        }
        for (slot, samples) in own.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let point = average(since + width * i32::try_from(slot).unwrap_or(0), samples);
            match &mut slots[slot] {
                Some(sum) => add_into(sum, &point),
                empty => *empty = Some(point),
            }
        }
    }
    slots.into_iter().flatten().collect()
}

/// Samples as one point at `at`: means of the measurements, the highest replica counts, the sums
/// of invocations and errors. Used for a dashboard slice and for a downsampled minute alike.
pub fn average(at: DateTime<Utc>, samples: &[&UsageSample]) -> UsageSample {
    fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
        let known: Vec<f64> = values.flatten().collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }
    UsageSample {
        at,
        replicas_desired: samples.iter().map(|s| s.replicas_desired).max().unwrap_or(0),
        replicas_ready: samples.iter().map(|s| s.replicas_ready).max().unwrap_or(0),
        cpu_millicores: mean(samples.iter().map(|s| s.cpu_millicores)),
        memory_bytes: mean(samples.iter().map(|s| s.memory_bytes.map(|m| m as f64))).map(|m| m.round() as u64),
        requests_per_s: mean(samples.iter().map(|s| s.requests_per_s)),
        p50_ms: mean(samples.iter().map(|s| s.p50_ms)),
        p95_ms: mean(samples.iter().map(|s| s.p95_ms)),
        invocations: samples.iter().map(|s| s.invocations).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
        autoscaler_load_percent: mean(samples.iter().map(|s| s.autoscaler_load_percent)),
    }
}

fn add_into(sum: &mut UsageSample, point: &UsageSample) {
    fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        }
    }
    fn highest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
    sum.replicas_desired += point.replicas_desired;
    sum.replicas_ready += point.replicas_ready;
    sum.cpu_millicores = add(sum.cpu_millicores, point.cpu_millicores);
    sum.memory_bytes = match (sum.memory_bytes, point.memory_bytes) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    sum.requests_per_s = add(sum.requests_per_s, point.requests_per_s);
    sum.p50_ms = highest(sum.p50_ms, point.p50_ms);
    sum.p95_ms = highest(sum.p95_ms, point.p95_ms);
    sum.invocations += point.invocations;
    sum.errors += point.errors;
    sum.autoscaler_load_percent = highest(sum.autoscaler_load_percent, point.autoscaler_load_percent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::{InstanceState, InstanceUrls, ReplicaCounts};

    fn empty_sample() -> UsageSample {
        UsageSample {
            at: DateTime::<Utc>::MIN_UTC,
            replicas_desired: 0,
            replicas_ready: 0,
            cpu_millicores: None,
            memory_bytes: None,
            requests_per_s: None,
            p50_ms: None,
            p95_ms: None,
            invocations: 0,
            errors: 0,
            autoscaler_load_percent: None,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    fn sample(seconds: i64, rate: Option<f64>, cpu: f64, errors: u32) -> UsageSample {
        let invocations = rate.map_or(0, |r| (r * 5.0) as u32);
        UsageSample {
            at: at(seconds),
            replicas_desired: 2,
            replicas_ready: 1,
            cpu_millicores: Some(cpu),
            memory_bytes: Some(1000),
            requests_per_s: rate,
            invocations,
            errors,
            ..empty_sample()
        }
    }

    fn instance(ready: u32) -> InstanceInfo {
        InstanceInfo {
            id: "i".into(),
            function: "f".into(),
            user: "ann".into(),
            version: 1,
            latest_version: 1,
            pinned: false,
            serving_version: Some(1),
            state: InstanceState::Ready,
            message: String::new(),
            paused: false,
            replicas: ReplicaCounts { desired: ready, ready },
            urls: InstanceUrls { gateway: "/fn/ann/f".into(), node_port: None, port_forward: None },
            limits: String::new(),
            replica_details: Vec::new(),
            events: Vec::new(),
            created_at: at(0),
        }
    }

    #[test]
    fn totals_take_the_latest_cpu_of_running_instances_and_add_errors() {
        let running = instance(1);
        let stopped = instance(0);
        let a = [sample(0, None, 100.0, 1), sample(5, Some(2.0), 300.0, 2)];
        let b = [sample(0, None, 900.0, 4)];
        let totals = totals([(&running, &a[..]), (&stopped, &b[..])]);
        assert_eq!(totals.instances, 2);
        assert_eq!(totals.cpu_millicores, 300.0, "a stopped instance uses no CPU, whatever its last sample said");
        assert_eq!(totals.memory_bytes, 1000);
        assert_eq!((totals.invocations, totals.errors), (10, 7));
        assert_eq!((totals.replicas_ready, totals.replicas_desired), (1, 1));
    }

    #[test]
    fn the_series_averages_within_an_instance_and_adds_across_instances() {
        let a = [sample(1, Some(2.0), 100.0, 1), sample(4, Some(4.0), 300.0, 1), sample(12, Some(1.0), 50.0, 0)];
        let b = [sample(2, Some(5.0), 1000.0, 3)];
        let series = summed_series(&[&a, &b], at(0), at(30), 3);
        assert_eq!(series.len(), 2, "the third slice has no sample and is left out: {series:#?}");
        assert_eq!(series[0].at, at(0));
        assert_eq!(series[0].cpu_millicores, Some(200.0 + 1000.0));
        assert_eq!(series[0].requests_per_s, Some(3.0 + 5.0));
        assert_eq!(series[0].errors, 5);
        assert_eq!(series[0].invocations, 10 + 20 + 25, "counts add up within and across instances");
        assert_eq!(series[0].replicas_desired, 4);
        assert_eq!(series[1].at, at(10));
        assert_eq!(series[1].cpu_millicores, Some(50.0));
        assert!(summed_series(&[&a], at(100), at(200), 10).is_empty(), "samples outside the window are ignored");
    }
}

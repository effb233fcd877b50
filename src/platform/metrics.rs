//! The gateway's Prometheus metrics, served on `/metrics` in the OpenMetrics text format:
//! Kubeless' `function_calls_total`, `function_failures_total` and
//! `function_duration_seconds`, plus cold starts, rejections, requests in flight and replica
//! gauges, all labelled by function and user; and how long the reconcile loop's passes take.
//!
//! The in-flight gauge of an instance is also what the gateway admits requests against, so
//! the figure Prometheus sees is the figure the limit uses.

use crate::platform::latency::LatencyHistogram;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;

/// Upper bounds of the duration histogram's buckets, in seconds: Prometheus' defaults with
/// finer steps below 5 ms, where a warm function answers.
const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Which instance a figure is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// The function's name.
    pub function: String,
    /// The instance's user.
    pub user: String,
}

impl InstanceLabels {
    /// The labels of `user`'s instance of `function`.
    pub fn new(function: &str, user: &str) -> InstanceLabels {
        InstanceLabels { function: function.to_string(), user: user.to_string() }
    }
}

/// Why the gateway turned a request away before the function saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The body was over the function's limit (413).
    TooLarge,
    /// The instance had its most requests in flight (429).
    TooBusy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    function: String,
    user: String,
    reason: &'static str,
}

type DurationFamily = Family<InstanceLabels, Histogram, fn() -> Histogram>;

/// Upper bounds of the reconcile pass histogram's buckets, in seconds: a pass over a few
/// instances takes milliseconds, one over thousands on a busy apiserver seconds.
const RECONCILE_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The invocations of an instance that ended since the last [`GatewayMetrics::take_finished`]
/// (the usage samples behind the charts take their latency and errors from here).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinishedCalls {
    /// How long they took, in milliseconds, as a histogram (a fixed size whatever the traffic).
    pub latency: LatencyHistogram,
    /// How many ended.
    pub ended: u32,
    /// How many failed (5xx from the function or the gateway).
    pub failed: u32,
}

/// Every gateway metric; cheap to share (the families are reference-counted inside).
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    calls: Family<InstanceLabels, Counter>,
    failures: Family<InstanceLabels, Counter>,
    duration: DurationFamily,
    cold_starts: Family<InstanceLabels, Counter>,
    rejections: Family<RejectionLabels, Counter>,
    in_flight: Family<InstanceLabels, Gauge>,
    replicas_desired: Family<InstanceLabels, Gauge>,
    replicas_ready: Family<InstanceLabels, Gauge>,
    reconcile_passes: Histogram,
    finished: Mutex<HashMap<InstanceLabels, FinishedCalls>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}

impl GatewayMetrics {
    /// Empty metrics, registered under their exported names.
    pub fn new() -> GatewayMetrics {
        let mut registry = Registry::default();
        let calls = Family::<InstanceLabels, Counter>::default();
        let failures = Family::<InstanceLabels, Counter>::default();
        let duration: DurationFamily = Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let cold_starts = Family::<InstanceLabels, Counter>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let in_flight = Family::<InstanceLabels, Gauge>::default();
        let replicas_desired = Family::<InstanceLabels, Gauge>::default();
        let replicas_ready = Family::<InstanceLabels, Gauge>::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "function_calls",
            "Invocations that reached an instance (answered by the function or failed on the way)",
            calls.clone(),
        );
        registry.register(
            "function_failures",
            "Invocations answered with a 5xx status, by the function or by the gateway",
            failures.clone(),
        );
        registry.register(
            "function_duration_seconds",
            "Time from the request to the function's response headers",
            duration.clone(),
        );
        registry.register(
            "function_cold_starts",
            "Invocations that waited for a replica to start (scale from zero)",
            cold_starts.clone(),
        );
        registry.register(
            "function_rejections",
            "Requests turned away before the function: too_large (413), too_busy (429)",
            rejections.clone(),
        );
        registry.register("function_requests_in_flight", "Invocations being served now", in_flight.clone());
        registry.register("function_replicas_desired", "Replicas the instance asks for", replicas_desired.clone());
        registry.register("function_replicas_ready", "Replicas ready to serve", replicas_ready.clone());
        let reconcile_passes = Histogram::new(RECONCILE_BUCKETS);
        registry.register(
            "reconcile_pass_seconds",
            "How long a pass of the reconcile loop over every instance took",
            reconcile_passes.clone(),
        );
        GatewayMetrics {
            registry,
            calls,
            failures,
            duration,
            cold_starts,
            rejections,
            in_flight,
            replicas_desired,
            replicas_ready,
            reconcile_passes,
            finished: Mutex::default(),
        }
    }

    /// Admits one request to the instance when fewer than `limit` are in flight (0: no
    /// limit); the returned guard counts it until dropped.
    pub fn admit(&self, labels: &InstanceLabels, limit: u64) -> Option<InFlight> {
        let gauge = self.in_flight.get_or_create(labels).clone();
        let before = gauge.inc();
        if limit > 0 && u64::try_from(before).unwrap_or(0) >= limit {
            gauge.dec();
            return None;
        }
        Some(InFlight { gauge })
    }

    /// Records an invocation that got an answer (or failed) after `seconds`.
    pub fn called(&self, labels: &InstanceLabels, seconds: f64, failed: bool) {
        self.calls.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(seconds);
        if failed {
            self.failures.get_or_create(labels).inc();
        }
        let mut finished = self.finished.lock();
        let calls = match finished.get_mut(labels) {
            Some(calls) => calls,
            None => finished.entry(labels.clone()).or_default(),
        };
        calls.latency.record(seconds * 1000.0);
        calls.ended = calls.ended.saturating_add(1);
        calls.failed += u32::from(failed);
    }

    /// The instance's invocations that ended since the previous call.
    pub fn take_finished(&self, labels: &InstanceLabels) -> FinishedCalls {
        self.finished.lock().remove(labels).unwrap_or_default()
    }

    /// Invocations of the instance so far (since kubefn started).
    pub fn calls_total(&self, labels: &InstanceLabels) -> u64 {
        self.calls.get_or_create(labels).get()
    }

    /// Records a pass of the reconcile loop that took `seconds`.
    pub fn reconciled(&self, seconds: f64) {
        self.reconcile_passes.observe(seconds);
    }

    /// Records an invocation that had to wait for a replica to start.
    pub fn cold_start(&self, labels: &InstanceLabels) {
        self.cold_starts.get_or_create(labels).inc();
    }

    /// Records a request turned away.
    pub fn rejected(&self, labels: &InstanceLabels, why: Rejection) {
        let reason = match why {
            Rejection::TooLarge => "too_large",
            Rejection::TooBusy => "too_busy",
        };
        self.rejections
            .get_or_create(&RejectionLabels { function: labels.function.clone(), user: labels.user.clone(), reason })
            .inc();
    }

    /// Sets the replica gauges to the instances that exist now (others disappear).
    pub fn set_replicas(&self, instances: impl IntoIterator<Item = (InstanceLabels, u32, u32)>) {
        self.replicas_desired.clear();
        self.replicas_ready.clear();
        for (labels, desired, ready) in instances {
            self.replicas_desired.get_or_create(&labels).set(i64::from(desired));
            self.replicas_ready.get_or_create(&labels).set(i64::from(ready));
        }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// One admitted request; leaves the in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The `Content-Type` of [`GatewayMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_flight_limit_admits_up_to_the_limit_and_frees_on_drop() {
        let metrics = GatewayMetrics::new();
        let alice = InstanceLabels::new("echo", "alice");
        let first = metrics.admit(&alice, 2).expect("first");
        let second = metrics.admit(&alice, 2).expect("second");
        assert!(metrics.admit(&alice, 2).is_none(), "a third is over the limit");
        assert!(metrics.admit(&InstanceLabels::new("echo", "bob"), 2).is_some(), "another instance has its own count");
        drop(first);
        let third = metrics.admit(&alice, 2).expect("room again");
        assert!(
            metrics
                .encode()
                .expect("encode")
                .contains("function_requests_in_flight{function=\"echo\",user=\"alice\"} 2")
        );
        drop((second, third));
        let unlimited: Vec<InFlight> = (0..100).filter_map(|_| metrics.admit(&alice, 0)).collect();
        assert_eq!(unlimited.len(), 100);
    }

    #[test]
    fn the_text_has_kubeless_names_and_the_values_recorded() {
        let metrics = GatewayMetrics::new();
        let alice = InstanceLabels::new("echo", "alice");
        metrics.called(&alice, 0.002, false);
        metrics.called(&alice, 0.3, true);
        metrics.cold_start(&alice);
        metrics.rejected(&alice, Rejection::TooBusy);
        metrics.set_replicas([(alice.clone(), 3, 2)]);
        let text = metrics.encode().expect("encode");
        for line in [
            "function_calls_total{function=\"echo\",user=\"alice\"} 2",
            "function_failures_total{function=\"echo\",user=\"alice\"} 1",
            "function_duration_seconds_count{function=\"echo\",user=\"alice\"} 2",
            "function_duration_seconds_bucket{le=\"0.0025\",function=\"echo\",user=\"alice\"} 1",
            "function_cold_starts_total{function=\"echo\",user=\"alice\"} 1",
            "function_rejections_total{function=\"echo\",user=\"alice\",reason=\"too_busy\"} 1",
            "function_replicas_desired{function=\"echo\",user=\"alice\"} 3",
            "function_replicas_ready{function=\"echo\",user=\"alice\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        metrics.set_replicas([]);
        assert!(
            !metrics.encode().expect("encode").contains("function_replicas_ready{"),
            "a deleted instance's gauges go"
        );

        // The same calls feed the usage samples, each once.
        assert_eq!(metrics.calls_total(&alice), 2);
        let finished = metrics.take_finished(&alice);
        assert_eq!((finished.latency.count(), finished.ended, finished.failed), (2, 2, 1));
        assert_eq!(finished.latency.quantile(1.0), Some(300.0));
        assert_eq!(metrics.take_finished(&alice), FinishedCalls::default(), "taken once");
    }
}

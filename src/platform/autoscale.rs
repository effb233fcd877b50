//! The Kubernetes HPA algorithm (autoscaling/v2 defaults), used by the local runtime so both
//! runtimes scale alike. Pure: it is fed samples and the time, and answers how many replicas.
//!
//! Per metric: `ratio = current / target`; within the tolerance (default 0.1) nothing changes,
//! otherwise `desired = ceil(ratio × replicas measured)`. Across metrics the largest proposal
//! wins. The result is clamped to [min, max], scale-ups are limited to max(2×, +4) replicas per
//! period (15 s), and scale-downs take the highest recommendation seen in the stabilization
//! window (300 s), so a brief dip does not remove replicas.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables; the defaults are Kubernetes'.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerConfig {
    /// How often the runtime asks for a decision.
    pub sync_period: Duration,
    /// Relative change of the metric below which nothing happens.
    pub tolerance: f64,
    /// How long scale-down recommendations are remembered; the highest one is applied.
    pub scale_down_stabilization: Duration,
    /// The period of the scale-up limit.
    pub scale_up_period: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            sync_period: Duration::from_secs(15),
            tolerance: 0.1,
            scale_down_stabilization: Duration::from_secs(300),
            scale_up_period: Duration::from_secs(15),
        }
    }
}

/// What a metric measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// CPU use as a percentage of the request.
    CpuUtilization,
    /// Memory use as a percentage of the request.
    MemoryUtilization,
    /// Requests being served at once, per replica.
    RequestsInFlight,
}

impl MetricKind {
    /// Its name in words.
    pub fn label(self) -> &'static str {
        match self {
            MetricKind::CpuUtilization => "CPU utilization",
            MetricKind::MemoryUtilization => "memory utilization",
            MetricKind::RequestsInFlight => "requests in flight",
        }
    }
}

/// One metric's target and its current value on each ready replica that reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSample {
    /// What is measured.
    pub kind: MetricKind,
    /// The average per replica to aim for (percent for utilizations).
    pub target: f64,
    /// The value per reporting replica.
    pub per_replica: Vec<f64>,
}

impl MetricSample {
    /// The average over the reporting replicas, `None` when none reported.
    pub fn average(&self) -> Option<f64> {
        (!self.per_replica.is_empty()).then(|| self.per_replica.iter().sum::<f64>() / self.per_replica.len() as f64)
    }

    /// What this sample shows of the metric, for status and charts.
    pub fn reading(&self) -> MetricReading {
        MetricReading { kind: self.kind, current: self.average(), target: self.target }
    }
}

/// One metric of an autoscaler as last measured: its average per replica against its target.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricReading {
    /// What is measured.
    pub kind: MetricKind,
    /// The average per replica, `None` until measured (no metrics source, or no ready replica).
    pub current: Option<f64>,
    /// The average per replica to aim for (percent for utilizations).
    pub target: f64,
}

/// What an instance's autoscaler last saw and asked for; the same on every runtime (the local
/// autoscaler's own state, or a Kubernetes HPA's status).
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerStatus {
    /// Replicas it saw running.
    pub current: u32,
    /// Replicas it asks for.
    pub desired: u32,
    /// Its metrics, as last measured.
    pub metrics: Vec<MetricReading>,
}

impl AutoscalerStatus {
    /// The load that drives scaling, in percent of target: the highest current/target ratio
    /// among the measured metrics (100 = on target; above scales up, below scales down).
    pub fn load_percent(&self) -> Option<f64> {
        self.metrics
            .iter()
            .filter(|m| m.target > 0.0)
            .filter_map(|m| m.current.map(|current| current / m.target * 100.0))
            .max_by(f64::total_cmp)
    }

    /// In words, e.g. "wants 3 replicas (runs 1): CPU utilization 200 against target 50".
    pub fn describe(&self) -> String {
        let metrics: Vec<String> = self
            .metrics
            .iter()
            .map(|m| match m.current {
                Some(current) => format!("{} {current:.0} against target {:.0}", m.kind.label(), m.target),
                None => format!("{} not measured yet (target {:.0})", m.kind.label(), m.target),
            })
            .collect();
        format!("wants {} replica(s) (runs {}): {}", self.desired, self.current, metrics.join(", "))
    }
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Replicas to run now.
    pub desired: u32,
    /// Why, in plain words (recorded as a scaling event when `desired` changes).
    pub reason: String,
}

/// The autoscaler of one instance: remembers recent recommendations and scale-ups.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    config: AutoscalerConfig,
    recommendations: VecDeque<(Instant, u32)>,
    scale_ups: VecDeque<(Instant, u32)>,
}

impl Autoscaler {
    /// An autoscaler with no history.
    pub fn new(config: AutoscalerConfig) -> Autoscaler {
        Autoscaler { config, recommendations: VecDeque::new(), scale_ups: VecDeque::new() }
    }

    /// The configuration in use.
    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// Decides the replica count for an instance running `current` replicas.
    /// With no usable metric the count only moves into [min, max].
    pub fn decide(&mut self, now: Instant, current: u32, min: u32, max: u32, metrics: &[MetricSample]) -> Decision {
        let (min, max) = (min.min(max), max.max(min));
        if current == 0 {
            // Like the HPA: a scaled-to-zero or paused instance is woken by traffic, not by metrics.
            return Decision { desired: 0, reason: "at zero replicas; traffic wakes the instance".into() };
        }
        let (proposal, mut reason) = self.propose(current, metrics);
        let mut desired = proposal.clamp(min.max(1), max.max(1));
        if desired != proposal {
            reason = format!("{reason}; kept within {min}..{max} replicas");
        }

        if self.recommendations.is_empty() {
            // A fresh autoscaler (new instance, or kubefn restarted) counts the running replicas
            // as a recommendation, so it never scales down before a full window of evidence.
            self.recommendations.push_back((now, current));
        }
        self.recommendations.push_back((now, desired));
        let window_start = now.checked_sub(self.config.scale_down_stabilization);
        while self.recommendations.front().is_some_and(|(at, _)| window_start.is_some_and(|start| *at < start)) {
            self.recommendations.pop_front();
        }
        if desired < current {
            let stabilized = self.recommendations.iter().map(|(_, r)| *r).max().unwrap_or(desired).min(current);
            if stabilized > desired {
                reason = format!(
                    "{reason}; holding {stabilized} (highest recommendation of the last {} s)",
                    self.config.scale_down_stabilization.as_secs()
                );
                desired = stabilized;
            }
        }

        if desired > current {
            let period_start = now.checked_sub(self.config.scale_up_period);
            while self.scale_ups.front().is_some_and(|(at, _)| period_start.is_some_and(|start| *at < start)) {
                self.scale_ups.pop_front();
            }
            let added: u32 = self.scale_ups.iter().map(|(_, n)| *n).sum();
            let start = current.saturating_sub(added).max(1);
            let limit = (start * 2).max(start + 4);
            if desired > limit {
                reason = format!(
                    "{reason}; limited to {limit} this period (at most double or +4 per {} s)",
                    self.config.scale_up_period.as_secs()
                );
                desired = limit.max(current);
            }
            if desired > current {
                self.scale_ups.push_back((now, desired - current));
            }
        }
        Decision { desired, reason }
    }

    fn propose(&self, current: u32, metrics: &[MetricSample]) -> (u32, String) {
        let mut best: Option<(u32, String)> = None;
        for metric in metrics {
            let Some(average) = metric.average().filter(|_| metric.target > 0.0) else { continue };
            let measured = metric.per_replica.len() as f64;
            let ratio = average / metric.target;
            let proposal = if (ratio - 1.0).abs() <= self.config.tolerance {
                current
            } else {
                // Rounding guards against 2.0000000001 becoming 3.
                let exact = (ratio * measured * 1e9).round() / 1e9;
                exact.ceil().max(0.0) as u32
            };
            let why = format!("{} {:.0} against target {:.0}", metric.kind.label(), average, metric.target);
            if best.as_ref().is_none_or(|(replicas, _)| proposal > *replicas) {
                best = Some((proposal, why));
            }
        }
        best.unwrap_or((current, "no metrics yet".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(target: f64, values: &[f64]) -> MetricSample {
        MetricSample { kind: MetricKind::CpuUtilization, target, per_replica: values.to_vec() }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_load_is_the_most_loaded_measured_metric_against_its_target() {
        let status = AutoscalerStatus {
            current: 1,
            desired: 3,
            metrics: vec![
                cpu(50.0, &[200.0]).reading(),
                MetricSample { kind: MetricKind::MemoryUtilization, target: 80.0, per_replica: vec![40.0] }.reading(),
                MetricSample { kind: MetricKind::RequestsInFlight, target: 10.0, per_replica: vec![] }.reading(),
            ],
        };
        assert_eq!(status.load_percent(), Some(400.0));
        assert_eq!(
            status.describe(),
            "wants 3 replica(s) (runs 1): CPU utilization 200 against target 50, memory utilization 40 against target 80, \
             requests in flight not measured yet (target 10)"
        );
        assert_eq!(
            AutoscalerStatus { current: 1, desired: 1, metrics: vec![cpu(50.0, &[]).reading()] }.load_percent(),
            None
        );
    }

    #[test]
    fn within_tolerance_nothing_changes() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        let now = Instant::now();
        assert_eq!(hpa.decide(now, 3, 1, 10, &[cpu(70.0, &[75.0, 76.0, 77.0])]).desired, 3);
        assert_eq!(hpa.decide(now, 3, 1, 10, &[cpu(70.0, &[64.0, 63.0, 64.0])]).desired, 3);
    }

    #[test]
    fn scales_up_by_the_ratio() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        // 2 replicas at 140% of a 70% target: ratio 2 → 4 replicas.
        let decision = hpa.decide(Instant::now(), 2, 1, 10, &[cpu(70.0, &[140.0, 140.0])]);
        assert_eq!(decision.desired, 4);
        assert!(decision.reason.contains("CPU utilization 140 against target 70"), "{}", decision.reason);
    }

    #[test]
    fn the_largest_metric_proposal_wins() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        let in_flight =
            MetricSample { kind: MetricKind::RequestsInFlight, target: 10.0, per_replica: vec![30.0, 30.0] };
        let decision = hpa.decide(Instant::now(), 2, 1, 20, &[cpu(70.0, &[140.0, 140.0]), in_flight]);
        assert_eq!(decision.desired, 6);
        assert!(decision.reason.contains("requests in flight"));
    }

    #[test]
    fn clamped_to_min_and_max() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        let now = Instant::now();
        let decision = hpa.decide(now, 4, 1, 5, &[cpu(50.0, &[200.0; 4])]);
        assert_eq!(decision.desired, 5);
        assert!(decision.reason.contains("within 1..5"));
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        assert_eq!(hpa.decide(now, 1, 2, 5, &[]).desired, 2, "below min is raised even without metrics");
    }

    #[test]
    fn scale_up_is_limited_to_double_or_plus_four_per_period() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        let start = Instant::now();
        // 1 replica at 10× the target wants 10, may go to max(2, 5) = 5.
        let first = hpa.decide(start, 1, 1, 100, &[cpu(10.0, &[100.0])]);
        assert_eq!(first.desired, 5);
        assert!(first.reason.contains("limited to 5"));
        // Within the same period no further growth beyond the limit from the period's start.
        assert_eq!(hpa.decide(start + secs(5), 5, 1, 100, &[cpu(10.0, &[100.0; 5])]).desired, 5);
        // A new period measures from 5: max(10, 9) = 10.
        assert_eq!(hpa.decide(start + secs(21), 5, 1, 100, &[cpu(10.0, &[100.0; 5])]).desired, 10);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let config = AutoscalerConfig { scale_down_stabilization: secs(60), ..AutoscalerConfig::default() };
        let mut hpa = Autoscaler::new(config);
        let start = Instant::now();
        assert_eq!(hpa.decide(start, 4, 1, 10, &[cpu(70.0, &[70.0; 4])]).desired, 4);
        // Load drops: the recommendation is 1, but 4 was recommended within the window.
        let held = hpa.decide(start + secs(15), 4, 1, 10, &[cpu(70.0, &[10.0; 4])]);
        assert_eq!(held.desired, 4);
        assert!(held.reason.contains("holding 4"), "{}", held.reason);
        assert_eq!(hpa.decide(start + secs(45), 4, 1, 10, &[cpu(70.0, &[10.0; 4])]).desired, 4);
        // Once the high recommendation leaves the window, the scale-down happens.
        assert_eq!(hpa.decide(start + secs(75), 4, 1, 10, &[cpu(70.0, &[10.0; 4])]).desired, 1);
    }

    #[test]
    fn scale_up_is_immediate_even_after_low_recommendations() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        let start = Instant::now();
        hpa.decide(start, 2, 1, 10, &[cpu(70.0, &[10.0, 10.0])]);
        assert_eq!(hpa.decide(start + secs(15), 2, 1, 10, &[cpu(70.0, &[105.0, 105.0])]).desired, 3);
    }

    #[test]
    fn a_fresh_autoscaler_does_not_scale_down_at_once() {
        let config = AutoscalerConfig { scale_down_stabilization: secs(30), ..AutoscalerConfig::default() };
        let mut hpa = Autoscaler::new(config);
        let start = Instant::now();
        assert_eq!(hpa.decide(start, 3, 1, 10, &[cpu(70.0, &[1.0; 3])]).desired, 3);
        assert_eq!(hpa.decide(start + secs(31), 3, 1, 10, &[cpu(70.0, &[1.0; 3])]).desired, 1);
    }

    #[test]
    fn zero_replicas_stay_zero() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        assert_eq!(hpa.decide(Instant::now(), 0, 0, 5, &[cpu(70.0, &[])]).desired, 0);
    }

    #[test]
    fn exact_ratios_do_not_round_up_an_extra_replica() {
        let mut hpa = Autoscaler::new(AutoscalerConfig::default());
        // 3 × (77 / 70) = 3.3000000000000003 → 4, but 3 × (140/70) must be exactly 6.
        assert_eq!(hpa.decide(Instant::now(), 3, 1, 10, &[cpu(70.0, &[140.0; 3])]).desired, 6);
    }
}

//! Latency percentiles from a histogram: each instance's calls between two usage samples are
//! counted in log-spaced buckets (a fixed 64 counters, whatever the traffic), and p50/p95 are
//! read from the counts, as Prometheus' `histogram_quantile` reads its buckets. Nothing is
//! kept per call and nothing is sorted.
//!
//! Bucket `i` holds durations in (`LOWEST_MS`·`FACTOR`^(i−1), `LOWEST_MS`·`FACTOR`^i]; bucket 0
//! everything up to `LOWEST_MS`, the last one everything above the one before it. Within a
//! bucket the estimate is interpolated linearly, so it is off by at most a quarter of the value
//! (the width of one bucket), and never above the slowest call seen.

/// Upper bound of the first bucket, in milliseconds.
const LOWEST_MS: f64 = 0.05;
/// Each bucket's upper bound over the previous one's.
const FACTOR: f64 = 1.25;
/// How many buckets: the last regular upper bound is 0.05 ms · 1.25^62 ≈ 51 s.
const BUCKETS: usize = 64;

/// Durations counted in log-spaced buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    counts: [u32; BUCKETS],
    total: u64,
    slowest_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: [0; BUCKETS], total: 0, slowest_ms: 0.0 }
    }
}

fn bucket_of(ms: f64) -> usize {
    if ms.is_nan() || ms <= LOWEST_MS {
        return 0;
    }
    let index = ((ms / LOWEST_MS).ln() / FACTOR.ln()).ceil();
    // `index` is positive and finite here; the cast saturates, and min keeps it in range.
    (index as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> f64 {
    LOWEST_MS * FACTOR.powi(i32::try_from(bucket).unwrap_or(i32::MAX))
}

impl LatencyHistogram {
    /// Counts one call that took `ms` milliseconds.
    pub fn record(&mut self, ms: f64) {
        let bucket = bucket_of(ms);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.total += 1;
        if ms > self.slowest_ms {
            self.slowest_ms = ms;
        }
    }

    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0 < `q` ≤ 1) in milliseconds: the bucket holding the call of rank
    /// ⌈q·n⌉, interpolated within it; `None` without calls.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut below = 0u64;
        for (bucket, count) in self.counts.iter().enumerate() {
            let count = u64::from(*count);
            if count == 0 || below + count < rank {
                below += count;
                continue;
            }
            let lower = if bucket == 0 { 0.0 } else { upper_bound(bucket - 1) };
            let upper = if bucket == BUCKETS - 1 { self.slowest_ms } else { upper_bound(bucket) };
            let within = (rank - below) as f64 / count as f64;
            return Some((lower + (upper - lower) * within).min(self.slowest_ms));
        }
        Some(self.slowest_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact nearest-rank percentile, to compare against.
    fn exact(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn histogram(values: &[f64]) -> LatencyHistogram {
        let mut histogram = LatencyHistogram::default();
        for value in values {
            histogram.record(*value);
        }
        histogram
    }

    #[test]
    fn estimates_are_within_a_bucket_of_the_exact_percentile() {
        // Warm calls around 2 ms with a slow tail, and a spread over four decades.
        let warm: Vec<f64> =
            (0..1000).map(|i| 1.5 + f64::from(i % 100) / 100.0 + if i % 50 == 0 { 40.0 } else { 0.0 }).collect();
        let spread: Vec<f64> = (0..1000).map(|i| 0.1 * 10f64.powf(f64::from(i) / 250.0)).collect();
        for values in [&warm, &spread] {
            let histogram = histogram(values);
            for q in [0.5, 0.95, 0.99] {
                let (estimate, truth) = (histogram.quantile(q).expect("calls"), exact(values, q));
                assert!((estimate - truth).abs() <= truth * (FACTOR - 1.0), "q {q}: {estimate} against {truth}");
            }
        }
    }

    #[test]
    fn edges_one_call_none_and_the_extremes() {
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        assert_eq!(histogram(&[7.0]).quantile(0.95), Some(7.0), "never above the slowest call");
        let tiny = histogram(&[0.001, 0.002]);
        assert!(tiny.quantile(0.5).expect("calls") <= 0.002);
        let huge = histogram(&[120_000.0, 300_000.0]);
        assert_eq!(huge.quantile(1.0), Some(300_000.0), "the last bucket reaches the slowest call");
        assert!(huge.quantile(0.5).expect("calls") >= upper_bound(BUCKETS - 2));
        assert_eq!(huge.count(), 2);
        assert_eq!(bucket_of(f64::NAN), 0, "not a duration: counted in the first bucket");
    }
}

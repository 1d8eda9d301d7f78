//! Latency percentiles and the small counters a run keeps.

use serde::Serialize;

/// The p-th percentile (0..=100) of sorted values, by the nearest-rank method: the smallest
/// value with at least p % of the values at or below it. 0 for no values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    // The epsilon keeps 99.9 % of 1,000 at rank 999 despite 0.999 * 1000 = 999.0000000000001.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// End-to-end latency of the messages received in the measured window, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Latency {
    /// How many messages carried a send time.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises latencies in microseconds (sorted here).
    pub fn of_micros(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            samples: micros.len() as u64,
            p50_ms: ms(percentile(&micros, 50.0)),
            p99_ms: ms(percentile(&micros, 99.0)),
            p999_ms: ms(percentile(&micros, 99.9)),
            max_ms: ms(micros.last().copied().unwrap_or(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // Ten values: p99 is the largest, the median the fifth.
        let ten: Vec<u64> = (10..=100).step_by(10).collect();
        assert_eq!(percentile(&ten, 99.0), 100);
        assert_eq!(percentile(&ten, 50.0), 50);
    }

    #[test]
    fn latency_summary_sorts_and_converts_to_milliseconds() {
        let l = Latency::of_micros(vec![3000, 1000, 2000, 250_000]);
        assert_eq!(l.samples, 4);
        assert_eq!(l.p50_ms, 2.0);
        assert_eq!(l.p99_ms, 250.0);
        assert_eq!(l.max_ms, 250.0);
        assert_eq!(Latency::of_micros(Vec::new()), Latency::default());
    }
}

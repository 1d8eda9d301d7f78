//! A latency histogram of plain atomics: recording is a few relaxed adds, no lock, no
//! allocation, so it can sit on the store's writer thread; `/metrics` reads it at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds in seconds. A commit with fsync takes from a few hundred microseconds (fast
/// SSD) to tens of milliseconds (shared or spinning disks); the tail up to seconds shows stalls.
pub const BOUNDS_SECS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Counts of observations per bucket (not cumulative), the sum and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One per bound, plus one for everything above the last bound.
    buckets: [AtomicU64; BOUNDS_SECS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A copy of a histogram's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Sum of the observations, in seconds.
    pub sum_secs: f64,
    /// Number of observations.
    pub count: u64,
    /// (upper bound in seconds, observations in this bucket alone); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS_SECS.iter().position(|b| secs <= *b).unwrap_or(BOUNDS_SECS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// The current values. Read without a lock, so a scrape racing an observation may see the
    /// count and the buckets one apart; the next scrape is consistent again.
    pub fn snapshot(&self) -> Snapshot {
        let buckets = BOUNDS_SECS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        Snapshot {
            sum_secs: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            count: self.count.load(Relaxed),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.len(), BOUNDS_SECS.len() + 1);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[5], (0.005, 1));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((s.sum_secs - 10.00305).abs() < 1e-9);
    }
}

//! Messages per minute over a sliding window of 60 one-second buckets.

/// A per-minute rate counter. Cheap to update; read by the status API.
#[derive(Debug, Clone)]
pub struct RateWindow {
    buckets: [u32; 60],
    /// The epoch second each bucket was last written in.
    seconds: [u64; 60],
}

impl Default for RateWindow {
    fn default() -> Self {
        Self { buckets: [0; 60], seconds: [0; 60] }
    }
}

impl RateWindow {
    /// Counts `n` events at epoch second `now`.
    pub fn add(&mut self, now: u64, n: u32) {
        let i = (now % 60) as usize;
        if self.seconds[i] != now {
            self.seconds[i] = now;
            self.buckets[i] = 0;
        }
        self.buckets[i] = self.buckets[i].saturating_add(n);
    }

    /// Events in the 60 seconds up to and including `now`.
    pub fn per_minute(&self, now: u64) -> u64 {
        self.seconds
            .iter()
            .zip(self.buckets.iter())
            .filter(|(s, _)| now.saturating_sub(**s) < 60)
            .map(|(_, b)| u64::from(*b))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_minute_only() {
        let mut r = RateWindow::default();
        r.add(1000, 5);
        r.add(1000, 1);
        r.add(1030, 4);
        assert_eq!(r.per_minute(1030), 10);
        assert_eq!(r.per_minute(1059), 10);
        assert_eq!(r.per_minute(1060), 4);
        r.add(1090, 1); // reuses bucket 1030 % 60? no: 1090 % 60 = 10, 1030 % 60 = 10
        assert_eq!(r.per_minute(1090), 1);
    }
}

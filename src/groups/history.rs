//! The last hour of a group's status, sampled every ten seconds: what the console's charts of
//! accumulated messages and consumption rate draw. Kept in memory only; a restart starts an empty
//! hour.

use std::collections::VecDeque;
use std::time::Duration;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const CAPACITY: usize = 360;

/// One point of a group's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Epoch ms.
    pub time: u64,
    /// Stored and not yet settled.
    pub accumulated_count: u64,
    /// Accepted in the minute up to `time`.
    pub consumption_rate: u64,
}

/// A ring of at most [`CAPACITY`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds a sample, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_hour_oldest_first() {
        let mut h = History::default();
        for i in 0..(CAPACITY as u64 + 5) {
            h.push(Sample { time: i, accumulated_count: i, consumption_rate: 0 });
        }
        let s = h.samples();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!((s[0].time, s[CAPACITY - 1].time), (5, CAPACITY as u64 + 4));
    }
}

//! Redelivery after a consumer's `released` or `modified`: a backoff per message, so that no
//! answer of a consumer can make a message circle at full speed, and the client a message should
//! avoid after `modified` with `undeliverable-here`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The first wait after a release: long enough that a consumer releasing everything costs a
/// few deliveries per message and second, not thousands.
const FIRST: Duration = Duration::from_secs(1);
/// The longest wait: about how often the modelled platform re-pushes a backlog.
const LONGEST: Duration = Duration::from_secs(60);

/// How long a message waits after its `released`-th release or modification (1 s, 2 s, 4 s, ...
/// up to 60 s).
pub fn backoff(released: u32) -> Duration {
    let doublings = released.saturating_sub(1).min(6);
    (FIRST * 2u32.pow(doublings)).min(LONGEST)
}

/// What a group remembers of a message that was delivered at least once.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tries {
    /// Times it was sent to a client.
    pub delivered: u32,
    /// Times a client released or modified it.
    pub released: u32,
    /// The client a `modified` with `undeliverable-here` came from.
    pub avoid: Option<u64>,
}

/// Messages waiting out their backoff, by due time; plus what each delivered message went
/// through. At most one entry per stored message, so bounded by the backlog.
#[derive(Debug, Default)]
pub(super) struct Retries {
    delayed: BTreeSet<(Instant, u64)>,
    due_of: HashMap<u64, Instant>,
    tries: HashMap<u64, Tries>,
}

impl Retries {
    /// The message's history (default for a message never delivered).
    pub fn tries(&self, seq: u64) -> Tries {
        self.tries.get(&seq).copied().unwrap_or_default()
    }

    /// Counts a send to a client.
    pub fn delivered(&mut self, seq: u64) {
        self.tries.entry(seq).or_default().delivered += 1;
    }

    /// Takes back a send that never left (the client had no credit).
    pub fn unsent(&mut self, seq: u64) {
        if let Some(t) = self.tries.get_mut(&seq) {
            t.delivered = t.delivered.saturating_sub(1);
        }
    }

    /// Records a release or modification by `client` and schedules the message `now` plus
    /// its backoff.
    pub fn released(&mut self, seq: u64, client: Option<u64>, now: Instant) {
        let t = self.tries.entry(seq).or_default();
        t.released += 1;
        if client.is_some() {
            t.avoid = client;
        }
        let due = now + backoff(t.released);
        self.delay(seq, due);
    }

    fn delay(&mut self, seq: u64, due: Instant) {
        if let Some(old) = self.due_of.insert(seq, due) {
            self.delayed.remove(&(old, seq));
        }
        self.delayed.insert((due, seq));
    }

    /// Whether the message is waiting out a backoff.
    pub fn is_delayed(&self, seq: u64) -> bool {
        self.due_of.contains_key(&seq)
    }

    /// Messages whose backoff is over at `now`, taken out of the waiting set.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&(due, seq)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            self.due_of.remove(&seq);
            out.push(seq);
        }
        out
    }

    /// When the next backoff ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.first().map(|(due, _)| *due)
    }

    /// Forgets a message (accepted, dead-lettered, expired).
    pub fn forget(&mut self, seq: u64) -> bool {
        self.tries.remove(&seq);
        match self.due_of.remove(&seq) {
            Some(due) => self.delayed.remove(&(due, seq)),
            None => false,
        }
    }

    /// Forgets every message (clear).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn released_messages_come_due_in_order_and_once() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        r.delivered(7);
        r.released(7, Some(1), t0);
        r.released(8, None, t0);
        r.released(8, None, t0); // second release: 2 s
        assert!(r.is_delayed(7) && r.is_delayed(8));
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(1)));
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + Duration::from_secs(1)), vec![7]);
        assert_eq!(r.due(t0 + Duration::from_secs(5)), vec![8]);
        assert_eq!(r.next_due(), None);
        assert_eq!(r.tries(7).avoid, Some(1));
        assert_eq!(r.tries(7).delivered, 1);
        assert!(!r.forget(7));
        assert_eq!(r.tries(7).released, 0);
    }
}

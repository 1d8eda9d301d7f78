//! The delivery states of recent downlink messages, for `GET .../messages/{messageId}`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::ingress::mailbox::Tracker;

/// Messages whose state is remembered: the oldest is forgotten beyond this. Each costs its
/// topic and a small tracker (no payload), so 10,000 are a few MiB at most, and a script polling
/// the state of what it just sent finds it even at hundreds of messages a second.
pub const MAX_STATES: usize = 10_000;

/// One remembered message.
#[derive(Debug, Clone)]
pub struct Remembered {
    /// productKey.
    pub product_key: String,
    /// deviceName.
    pub device_name: String,
    /// Topic.
    pub topic: String,
    /// QoS asked for.
    pub qos: u8,
    /// Its state.
    pub tracker: Arc<Tracker>,
}

/// The table, oldest first.
#[derive(Debug, Default)]
pub struct States {
    inner: Mutex<(HashMap<u64, Remembered>, VecDeque<u64>)>,
}

impl States {
    /// Remembers message `id`, forgetting the oldest beyond [`MAX_STATES`].
    pub fn insert(&self, id: u64, entry: Remembered) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (map, order) = &mut *inner;
        while order.len() >= MAX_STATES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        map.insert(id, entry);
        order.push_back(id);
    }

    /// Message `id`, if remembered.
    pub fn get(&self, id: u64) -> Option<Remembered> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.0.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::mailbox::DownlinkCounters;

    #[test]
    fn the_oldest_are_forgotten() {
        let states = States::default();
        let counters = Arc::new(DownlinkCounters::default());
        for id in 0..(MAX_STATES as u64 + 5) {
            let entry = Remembered {
                product_key: "p".into(),
                device_name: "d".into(),
                topic: "/p/d/user/get".into(),
                qos: 0,
                tracker: Tracker::new(0, counters.clone()),
            };
            states.insert(id, entry);
        }
        assert!(states.get(4).is_none());
        assert!(states.get(5).is_some());
        assert!(states.get(MAX_STATES as u64 + 4).is_some());
    }
}

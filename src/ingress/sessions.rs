//! Who is online: one session per device, takeover, and disconnecting a device from outside.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::mailbox::{Delivery, DeliveryState, Undeliverable, MAILBOX};
use super::status::OfflineReason;

type Key = (String, String);

struct Entry {
    id: u64,
    kick: watch::Sender<Option<OfflineReason>>,
    done: CancellationToken,
    /// Boxed: tokio allocates a channel's first block of slots when it is made, and 32 slots
    /// of a 72-byte `Delivery` in every idle session cost 2.3 KiB; of a box, 256 bytes.
    mailbox: mpsc::Sender<Box<Delivery>>,
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Key, Entry>>,
    next_id: AtomicU64,
}

/// What a connection holds while it is the device's session.
pub struct Registration {
    /// This session's id.
    pub id: u64,
    /// Fires with the reason when the session must end (takeover, disable).
    pub kicked: watch::Receiver<Option<OfflineReason>>,
    /// Cancelled when the connection has finished (after its offline status is stored).
    pub done: CancellationToken,
    /// The session this one replaced: wait for it before announcing online.
    pub replaced: Option<CancellationToken>,
    /// Cloud-to-device messages for this session.
    pub mailbox: mpsc::Receiver<Box<Delivery>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes a new session the device's current one, kicking the previous one.
    pub fn register(&self, product_key: &str, device_name: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (kick, kicked) = watch::channel(None);
        let done = CancellationToken::new();
        let (mail, mailbox) = mpsc::channel(MAILBOX);
        let entry = Entry { id, kick, done: done.clone(), mailbox: mail };
        let previous = self.lock().insert((product_key.to_string(), device_name.to_string()), entry);
        let replaced = previous.map(|p| {
            let _ = p.kick.send(Some(OfflineReason::TakenOver));
            p.done
        });
        Registration { id, kicked, done, replaced, mailbox }
    }

    /// Puts `delivery` in the device's mailbox; its tracker says what becomes of it.
    ///
    /// # Errors
    /// `Offline` without a session (or one on its way out), `Full` when its mailbox is full;
    /// the tracker then says `deviceOffline` and counts the message as failed.
    pub fn deliver(
        &self,
        product_key: &str,
        device_name: &str,
        delivery: Delivery,
    ) -> Result<(), Undeliverable> {
        let map = self.lock();
        let refused = match map.get(&(product_key.to_string(), device_name.to_string())) {
            None => Undeliverable::Offline,
            Some(entry) => match entry.mailbox.try_send(Box::new(delivery)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(d)) => {
                    d.tracker.set(DeliveryState::DeviceOffline);
                    return Err(Undeliverable::Full);
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    d.tracker.set(DeliveryState::DeviceOffline);
                    return Err(Undeliverable::Offline);
                }
            },
        };
        drop(map);
        delivery.tracker.set(DeliveryState::DeviceOffline);
        Err(refused)
    }

    /// Removes session `id` of the device, unless a newer one has replaced it.
    pub fn remove(&self, product_key: &str, device_name: &str, id: u64) {
        let mut map = self.lock();
        let key = (product_key.to_string(), device_name.to_string());
        if map.get(&key).is_some_and(|e| e.id == id) {
            map.remove(&key);
        }
    }

    /// Ends the device's session, if any, with `reason`; returns a token that is cancelled when
    /// the connection has finished.
    pub fn kick(
        &self,
        product_key: &str,
        device_name: &str,
        reason: OfflineReason,
    ) -> Option<CancellationToken> {
        let map = self.lock();
        let entry = map.get(&(product_key.to_string(), device_name.to_string()))?;
        let _ = entry.kick.send(Some(reason));
        Some(entry.done.clone())
    }

    /// Whether the device is online.
    pub fn is_online(&self, product_key: &str, device_name: &str) -> bool {
        self.lock().contains_key(&(product_key.to_string(), device_name.to_string()))
    }

    /// Number of online devices.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no device is online.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_kicks_the_old_session_and_keeps_the_new_one() {
        let s = Sessions::default();
        let old = s.register("p", "d");
        assert!(old.replaced.is_none());
        let new = s.register("p", "d");
        assert_eq!(*old.kicked.borrow(), Some(OfflineReason::TakenOver));
        assert!(new.replaced.is_some());
        s.remove("p", "d", old.id);
        assert!(s.is_online("p", "d"), "the old session must not remove the new one");
        s.kick("p", "d", OfflineReason::DeviceDisabled).unwrap();
        assert_eq!(*new.kicked.borrow(), Some(OfflineReason::DeviceDisabled));
        s.remove("p", "d", new.id);
        assert!(s.is_empty());
    }

    #[test]
    fn the_mailbox_is_bounded_and_refuses_offline_devices() {
        use super::super::mailbox::{DownlinkCounters, Tracker};
        use std::sync::Arc;
        let s = Sessions::default();
        let counters = Arc::new(DownlinkCounters::default());
        let mail = |c: &Arc<DownlinkCounters>| Delivery {
            topic: "/p/d/user/get".into(),
            payload: bytes::Bytes::new(),
            qos: 1,
            tracker: Tracker::new(1, c.clone()),
        };
        assert_eq!(s.deliver("p", "d", mail(&counters)), Err(Undeliverable::Offline));
        let reg = s.register("p", "d");
        for _ in 0..MAILBOX {
            s.deliver("p", "d", mail(&counters)).unwrap();
        }
        assert_eq!(s.deliver("p", "d", mail(&counters)), Err(Undeliverable::Full));
        drop(reg);
        assert_eq!(
            s.deliver("p", "d", mail(&counters)),
            Err(Undeliverable::Offline),
            "a session on its way out"
        );
        assert_eq!(counters.failed.load(Ordering::Relaxed), 3);
    }
}

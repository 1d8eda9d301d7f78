//! Who is online: one session per device, takeover, and disconnecting a device from outside.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::mailbox::{Delivery, DeliveryState, Undeliverable, MAILBOX};
use super::status::OfflineReason;

type Key = (String, String);

struct Entry {
    id: u64,
    inbox: Arc<Signals>,
    done: CancellationToken,
}

/// What the session table shares with one session: why it must end, and its cloud-to-device
/// messages. One small allocation: a watch channel and a bounded mpsc channel (which allocates
/// its first block of slots when made) cost every idle session about 1 KiB more.
#[derive(Default)]
struct Signals {
    state: Mutex<Signalled>,
    /// Woken when `kick` is set.
    kicked: Notify,
    /// Woken when a message is put in the mailbox.
    mail: Notify,
}

#[derive(Default)]
struct Signalled {
    /// Set when the session must end (takeover, disable); the last reason wins.
    kick: Option<OfflineReason>,
    /// At most [`MAILBOX`] messages, oldest first; no memory while empty.
    mailbox: VecDeque<Delivery>,
    /// The session is on its way out: no more messages.
    closed: bool,
}

impl Signals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Signalled> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn kick(&self, reason: OfflineReason) {
        self.lock().kick = Some(reason);
        self.kicked.notify_one();
    }
}

/// A session's side of its signals. Dropping it closes the mailbox (messages still in it are
/// dropped with it; the session reports them first, see [`Inbox::close`]).
pub struct Inbox(Arc<Signals>);

impl Inbox {
    /// Why the session must end, once it must; pending until then.
    pub async fn kicked(&self) -> OfflineReason {
        loop {
            let notified = self.0.kicked.notified();
            if let Some(reason) = self.0.lock().kick {
                return reason;
            }
            notified.await;
        }
    }

    /// The next cloud-to-device message; pending while there is none. Cancel-safe: a message
    /// is taken only when it is returned.
    pub async fn recv(&self) -> Delivery {
        loop {
            let notified = self.0.mail.notified();
            {
                let mut state = self.0.lock();
                if let Some(delivery) = state.mailbox.pop_front() {
                    if state.mailbox.is_empty() {
                        state.mailbox = VecDeque::new();
                    }
                    return delivery;
                }
            }
            notified.await;
        }
    }

    /// The reason the session was told to end, if it was.
    pub fn kick_reason(&self) -> Option<OfflineReason> {
        self.0.lock().kick
    }

    /// Refuses further messages; returns those still waiting.
    pub fn close(&self) -> VecDeque<Delivery> {
        let mut state = self.0.lock();
        state.closed = true;
        std::mem::take(&mut state.mailbox)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        drop(self.close());
    }
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Key, Entry>>,
    next_id: AtomicU64,
    /// Cluster mode: where a device's session is claimed across nodes. Set once at start-up;
    /// without it (one node) connecting and leaving do exactly what they did before.
    directory: OnceLock<Arc<dyn Directory>>,
}

/// The sessions of every node of a cluster (cluster mode, `crate::cluster::sessions`): a device
/// connecting here takes over its session on another node, and statuses stay in order.
pub trait Directory: Send + Sync {
    /// Claims the device for session `session` of this node. Resolves once a session of the
    /// device on another node has ended and stored its offline status, or after a bound.
    ///
    /// # Errors
    /// The claim could not be recorded (the connection is then refused, as when its online
    /// status cannot be stored).
    fn claim(
        &self,
        product_key: &str,
        device_name: &str,
        session: u64,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// Whether session `session`, which is ending, announces its offline status: not when a
    /// session on another node took over and announced online without waiting for it.
    fn announce_offline(&self, product_key: &str, device_name: &str, session: u64) -> bool;

    /// Session `session` has ended (its offline status stored or suppressed).
    fn ended(&self, product_key: &str, device_name: &str, session: u64);

    /// At start-up, for a device this node had online when it stopped: whether the device has
    /// connected elsewhere since, so that its late offline status is not announced.
    fn superseded(&self, product_key: &str, device_name: &str) -> BoxFuture<'static, bool>;

    /// Disconnects the device with `reason` on whichever other node holds it; resolves once its
    /// offline status is stored there (or after a bound), at once when no other node holds it.
    fn disconnect_elsewhere(
        &self,
        product_key: &str,
        device_name: &str,
        reason: OfflineReason,
    ) -> BoxFuture<'static, ()>;
}

/// What a connection holds while it is the device's session.
pub struct Registration {
    /// This session's id.
    pub id: u64,
    /// Why the session must end (takeover, disable), and its cloud-to-device messages.
    pub inbox: Inbox,
    /// Cancelled when the connection has finished (after its offline status is stored).
    pub done: CancellationToken,
    /// The session this one replaced: wait for it before announcing online.
    pub replaced: Option<CancellationToken>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the cluster's session directory; once, before devices connect.
    pub fn set_directory(&self, directory: Arc<dyn Directory>) {
        if self.directory.set(directory).is_err() {
            tracing::warn!("The session directory was set twice; the first stays");
        }
    }

    /// The cluster's session directory, in cluster mode.
    pub fn directory(&self) -> Option<&Arc<dyn Directory>> {
        self.directory.get()
    }

    /// Makes a new session the device's current one, kicking the previous one.
    pub fn register(&self, product_key: &str, device_name: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signals = Arc::new(Signals::default());
        let done = CancellationToken::new();
        let entry = Entry { id, inbox: signals.clone(), done: done.clone() };
        let previous = self.lock().insert((product_key.to_string(), device_name.to_string()), entry);
        let replaced = previous.map(|p| {
            p.inbox.kick(OfflineReason::TakenOver);
            p.done
        });
        Registration { id, inbox: Inbox(signals), done, replaced }
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
            Some(entry) => {
                let mut state = entry.inbox.lock();
                if state.closed {
                    Undeliverable::Offline
                } else if state.mailbox.len() >= MAILBOX {
                    Undeliverable::Full
                } else {
                    state.mailbox.push_back(delivery);
                    drop(state);
                    entry.inbox.mail.notify_one();
                    return Ok(());
                }
            }
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
        entry.inbox.kick(reason);
        Some(entry.done.clone())
    }

    /// Ends session `id` of the device with `reason` if it is still the device's session here;
    /// returns a token that is cancelled when its connection has finished.
    pub fn kick_session(
        &self,
        product_key: &str,
        device_name: &str,
        id: u64,
        reason: OfflineReason,
    ) -> Option<CancellationToken> {
        let map = self.lock();
        let entry = map.get(&(product_key.to_string(), device_name.to_string())).filter(|e| e.id == id)?;
        entry.inbox.kick(reason);
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
        assert_eq!(old.inbox.kick_reason(), Some(OfflineReason::TakenOver));
        assert!(new.replaced.is_some());
        s.remove("p", "d", old.id);
        assert!(s.is_online("p", "d"), "the old session must not remove the new one");
        s.kick("p", "d", OfflineReason::DeviceDisabled).unwrap();
        assert_eq!(new.inbox.kick_reason(), Some(OfflineReason::DeviceDisabled));
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

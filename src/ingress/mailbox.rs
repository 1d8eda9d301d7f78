//! Cloud-to-device messages for one device: the bounded mailbox of its session, the state each
//! message reaches, and the calls (RRPC, thing-model services) waiting for the device's answer.
//!
//! Messages from a business server go straight to the device's session, not through the router:
//! the session writes them with the QoS asked for (QoS 1 with its own packet id, retried until
//! the PUBACK) and reports what became of each (docs/downlink.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

/// Messages one device's mailbox holds before the session takes them. The session takes a
/// message as soon as it has fewer than [`MAX_UNACKED`] QoS 1 messages waiting for PUBACKs, so
/// the mailbox fills only for a device that does not acknowledge; 32 covers a burst of commands
/// to a healthy device while a stalled one costs at most 32 payloads.
pub const MAILBOX: usize = 32;

/// QoS 1 downlink messages one session has written and not yet seen acknowledged. MQTT 5
/// clients announce a receive maximum of 65,535 by default and Link SDKs of far more than this;
/// 16 keeps a slow device from holding many payloads while leaving room for bursts.
pub const MAX_UNACKED: usize = 16;

/// Calls (RRPC and synchronous thing-model calls) that may wait for a device's answer at once,
/// across all devices: each holds an HTTP request open, so this bounds those too.
pub const MAX_WAITING_CALLS: usize = 1_024;

/// One message to a device.
#[derive(Debug)]
pub struct Delivery {
    /// The topic the device receives it on.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
    /// Where the session reports what became of it.
    pub tracker: Arc<Tracker>,
}

/// What became of one downlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DeliveryState {
    /// In the device's mailbox, not yet written.
    Queued = 0,
    /// Written to the device; final for QoS 0, waiting for the PUBACK for QoS 1.
    Sent = 1,
    /// The device acknowledged it (QoS 1 PUBACK).
    Acknowledged = 2,
    /// The device had no subscription matching the topic: dropped, as a broker drops it.
    NotSubscribed = 3,
    /// The device went offline before the message was written or acknowledged.
    DeviceOffline = 4,
}

impl DeliveryState {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sent => "sent",
            DeliveryState::Acknowledged => "acknowledged",
            DeliveryState::NotSubscribed => "notSubscribed",
            DeliveryState::DeviceOffline => "deviceOffline",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => DeliveryState::Sent,
            2 => DeliveryState::Acknowledged,
            3 => DeliveryState::NotSubscribed,
            4 => DeliveryState::DeviceOffline,
            _ => DeliveryState::Queued,
        }
    }
}

/// Downlink counters of one product (`/metrics`).
#[derive(Debug, Default)]
pub struct DownlinkCounters {
    /// Messages written to a device (first transmission).
    pub sent: AtomicU64,
    /// QoS 1 messages a device acknowledged.
    pub acked: AtomicU64,
    /// Messages refused (device offline, mailbox full, no matching subscription) or lost
    /// (the device went offline before its PUBACK).
    pub failed: AtomicU64,
}

/// Downlink counters per product; products come from the registry, so the map is bounded by it.
#[derive(Debug, Default)]
pub struct DownlinkStats {
    products: Mutex<HashMap<String, Arc<DownlinkCounters>>>,
}

impl DownlinkStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<DownlinkCounters>>> {
        self.products.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counters of product `product_key` (an existing product: the caller checks).
    pub fn product(&self, product_key: &str) -> Arc<DownlinkCounters> {
        let mut map = self.lock();
        if let Some(c) = map.get(product_key) {
            return c.clone();
        }
        let c = Arc::new(DownlinkCounters::default());
        map.insert(product_key.to_string(), c.clone());
        c
    }

    /// Every product's counters, sorted by product key.
    pub fn snapshot(&self) -> Vec<(String, Arc<DownlinkCounters>)> {
        let mut all: Vec<_> = self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// The state of one message, shared by the session that delivers it and whoever asks.
#[derive(Debug)]
pub struct Tracker {
    qos: u8,
    state: AtomicU8,
    changed: Notify,
    counters: Arc<DownlinkCounters>,
}

impl Tracker {
    /// A queued message of QoS `qos`, counted in `counters`.
    pub fn new(qos: u8, counters: Arc<DownlinkCounters>) -> Arc<Self> {
        Arc::new(Self {
            qos,
            state: AtomicU8::new(DeliveryState::Queued as u8),
            changed: Notify::new(),
            counters,
        })
    }

    /// The current state.
    pub fn state(&self) -> DeliveryState {
        DeliveryState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether the state will not change any more.
    pub fn is_final(&self) -> bool {
        match self.state() {
            DeliveryState::Queued => false,
            DeliveryState::Sent => self.qos == 0,
            _ => true,
        }
    }

    /// Moves to `state` and counts the move; a final state never changes again.
    pub(super) fn set(&self, state: DeliveryState) {
        if self.is_final() {
            return;
        }
        let before = DeliveryState::from_u8(self.state.swap(state as u8, Ordering::AcqRel));
        if before == state {
            return;
        }
        let counter = match state {
            DeliveryState::Sent => &self.counters.sent,
            DeliveryState::Acknowledged => &self.counters.acked,
            DeliveryState::NotSubscribed | DeliveryState::DeviceOffline => &self.counters.failed,
            DeliveryState::Queued => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Waits until the state is final or differs from `seen`, whichever comes first.
    pub async fn changed_from(&self, seen: DeliveryState) -> DeliveryState {
        loop {
            let notified = self.changed.notified();
            let now = self.state();
            if now != seen || self.is_final() {
                return now;
            }
            notified.await;
        }
    }
}

/// Why a message could not be put in a device's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    /// The device has no session.
    #[error("the device is offline")]
    Offline,
    /// The device's mailbox holds [`MAILBOX`] messages already.
    #[error("the device has {MAILBOX} downlink messages waiting already")]
    Full,
}

/// Why a call cannot wait for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallsFull {
    /// [`MAX_WAITING_CALLS`] calls are waiting already.
    #[error("{MAX_WAITING_CALLS} calls are waiting for device answers already")]
    Full,
}

/// Which kind of answer a call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A publish to `/sys/${pk}/${dn}/rrpc/response/${messageId}`.
    Rrpc,
    /// An Alink reply on `/sys/${pk}/${dn}/thing/service/..._reply` with the request's `id`.
    Service,
}

type CallKey = (CallKind, String, String, String);

/// The calls waiting for a device's answer, matched by the session that receives it.
#[derive(Debug, Default)]
pub struct Calls {
    map: Mutex<HashMap<CallKey, oneshot::Sender<Bytes>>>,
    /// Service calls waiting, so that sessions look at replies only while someone waits.
    services: AtomicU64,
}

/// A call waiting for its answer; leaving the wait (answer, timeout or a dropped request)
/// drops the guard, which removes the call.
pub struct Waiting {
    calls: Arc<Calls>,
    key: Option<CallKey>,
    /// Fires with the device's answer.
    pub answer: oneshot::Receiver<Bytes>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if key.0 == CallKind::Service {
                self.calls.services.fetch_sub(1, Ordering::Relaxed);
            }
            self.calls.lock().remove(&key);
        }
    }
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallKey, oneshot::Sender<Bytes>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a call of `kind` to device `pk`/`dn` that waits for the answer with `id`.
    ///
    /// # Errors
    /// `Full` when [`MAX_WAITING_CALLS`] are waiting.
    pub fn expect(
        self: &Arc<Self>,
        kind: CallKind,
        pk: &str,
        dn: &str,
        id: &str,
    ) -> Result<Waiting, CallsFull> {
        let (tx, rx) = oneshot::channel();
        let key = (kind, pk.to_string(), dn.to_string(), id.to_string());
        {
            let mut map = self.lock();
            if map.len() >= MAX_WAITING_CALLS {
                return Err(CallsFull::Full);
            }
            map.insert(key.clone(), tx);
        }
        if kind == CallKind::Service {
            self.services.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Waiting { calls: self.clone(), key: Some(key), answer: rx })
    }

    /// Hands `answer` to the call waiting for it; `false` when none waits (late or unknown).
    pub fn complete(&self, kind: CallKind, pk: &str, dn: &str, id: &str, answer: Bytes) -> bool {
        let key = (kind, pk.to_string(), dn.to_string(), id.to_string());
        match self.lock().remove(&key) {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Whether any service call waits (a relaxed hint: sessions skip reply parsing without).
    pub fn services_waiting(&self) -> bool {
        self.services.load(Ordering::Relaxed) > 0
    }

    /// Calls waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Does the MQTT topic filter `filter` match `topic`?
pub(super) fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(matches("/a/b/user/get", "/a/b/user/get"));
        assert!(matches("/a/b/user/#", "/a/b/user/get/x"));
        assert!(matches("/a/b/user/+", "/a/b/user/get"));
        assert!(!matches("/a/b/user/+", "/a/b/user/get/x"));
        assert!(!matches("/a/b/user/get", "/a/b/user/got"));
        assert!(!matches("/a/b/user/get/x", "/a/b/user/get"));
    }

    #[test]
    fn states_move_forward_and_count_once() {
        let counters = Arc::new(DownlinkCounters::default());
        let t = Tracker::new(1, counters.clone());
        assert!(!t.is_final());
        t.set(DeliveryState::Sent);
        t.set(DeliveryState::Sent);
        assert!(!t.is_final(), "QoS 1 waits for its PUBACK");
        t.set(DeliveryState::Acknowledged);
        t.set(DeliveryState::DeviceOffline);
        assert_eq!(t.state(), DeliveryState::Acknowledged);
        assert_eq!(counters.sent.load(Ordering::Relaxed), 1);
        assert_eq!(counters.acked.load(Ordering::Relaxed), 1);
        assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
        let q0 = Tracker::new(0, counters.clone());
        q0.set(DeliveryState::Sent);
        assert!(q0.is_final());
    }

    #[test]
    fn calls_are_bounded_and_removed_when_left() {
        let calls = Arc::new(Calls::default());
        let w = calls.expect(CallKind::Service, "p", "d", "1").unwrap();
        assert!(calls.services_waiting());
        assert!(calls.complete(CallKind::Service, "p", "d", "1", Bytes::from_static(b"x")));
        assert!(!calls.complete(CallKind::Service, "p", "d", "1", Bytes::new()), "answered once");
        drop(w);
        assert!(!calls.services_waiting());
        let held: Vec<_> = (0..MAX_WAITING_CALLS)
            .map(|i| calls.expect(CallKind::Rrpc, "p", "d", &i.to_string()).unwrap())
            .collect();
        assert_eq!(calls.expect(CallKind::Rrpc, "p", "d", "x").err(), Some(CallsFull::Full));
        drop(held);
        assert!(calls.is_empty());
    }
}

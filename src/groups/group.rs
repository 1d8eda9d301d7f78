//! One consumer group: its backlog, its online clients, leases and settlement.
//!
//! The backlog lives in the store; in memory a group keeps a cursor (the lowest seq never
//! delivered), the seqs to deliver again, and the leases of delivered, unsettled messages.
//! A dispatcher task per group moves messages to clients: each message to one online client
//! with room, chosen at random.
//!
//! Fresh messages are delivered from memory: while clients are online, a group keeps the
//! records it just stored (the same bytes the store wrote, shared, not copied) in a bounded
//! tail ([`RECENT_RECORDS`], [`RECENT_BYTES`]). What falls out of that tail, older backlogs and
//! redeliveries are read from the store.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

mod dead;

use super::history::{History, Sample};
use super::rate::RateWindow;
use super::retry::Retries;
use super::Settings;
use crate::message::now_ms;
use crate::store::{Extent, QueueStore, StoredMessage};

/// Records one dispatcher read takes from the store.
const FETCH: usize = 256;
/// Records a group keeps in memory for delivery at most: a few commits' worth (the pipeline
/// commits up to 4,096 messages at once), enough that consumers who keep up never wait for a
/// store read.
pub const RECENT_RECORDS: usize = 8192;
/// Bytes of records a group keeps in memory at most, so that large payloads cannot make the
/// tail big: 4 MiB per group with online clients (groups without clients keep none).
pub const RECENT_BYTES: usize = 4 << 20;

/// How a client settled a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done: removed.
    Accepted,
    /// `released`, or `modified` without `undeliverable-here`: delivered again after the
    /// message's backoff.
    Released,
    /// `modified` with `undeliverable-here`: delivered again after the backoff, to another
    /// client when one is online.
    Undeliverable,
    /// Refused by the consumer: moved to the group's dead letters.
    Rejected,
    /// The link or connection went away before an outcome: delivered again at once.
    Lost,
    /// Never sent (the client granted no credit in time): delivered again at once, not counted
    /// as a delivery.
    Unsent,
}

/// A message handed to a client.
#[derive(Debug)]
pub struct Delivery {
    /// Position in the group's queue.
    pub seq: u64,
    /// Lease generation; a settlement for an older generation is stale.
    pub generation: u64,
    /// The message.
    pub message: StoredMessage,
}

/// Counters of a group.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages stored for the group.
    pub appended: AtomicU64,
    /// Deliveries handed to clients (redeliveries included).
    pub delivered: AtomicU64,
    /// Accepted.
    pub acked: AtomicU64,
    /// Put back after release, disconnect or ack timeout.
    pub redelivered: AtomicU64,
    /// Dropped after the retention period.
    pub expired: AtomicU64,
    /// Rejected by a consumer (moved to the dead letters).
    pub rejected: AtomicU64,
    /// Moved to the dead letters after the group's last delivery attempt.
    pub exhausted: AtomicU64,
    /// Dead letters moved back to the queue.
    pub requeued: AtomicU64,
    /// Dead letters purged or expired.
    pub purged: AtomicU64,
    /// Dropped by a clear.
    pub cleared: AtomicU64,
    /// Staged but never stored: their commit failed, and their devices were not acknowledged.
    pub retracted: AtomicU64,
}

/// An online client as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The AMQP clientId.
    pub client_id: String,
    /// Where it connects from.
    pub peer: SocketAddr,
    /// Epoch ms of the connection.
    pub online_since_ms: u64,
    /// Accepted in the last minute.
    pub rate_per_minute: u64,
    /// The cluster node that holds its connection (`None` on a single node).
    pub node: Option<String>,
}

struct Lease {
    client: u64,
    generation: u64,
    deadline: Instant,
}

struct Client {
    id: u64,
    info: ClientInfo,
    tx: mpsc::Sender<Delivery>,
    unsettled: Arc<AtomicUsize>,
    /// False while the client's link has no credit (as far as its connection knows).
    ready: Arc<AtomicBool>,
    /// Deliveries the client may still be handed: its link credit less what it holds, as its
    /// connection last said ([`Membership::set_window`]); `usize::MAX` when not told.
    window: Arc<AtomicUsize>,
    rate: RateWindow,
}

impl Client {
    /// Whether the client can take another delivery now.
    fn has_room(&self, max_unsettled: usize) -> bool {
        self.room(max_unsettled) > 0
    }

    /// How many more deliveries the client can take now.
    fn room(&self, max_unsettled: usize) -> usize {
        if !self.ready.load(Ordering::Relaxed) {
            return 0;
        }
        let unsettled = self.unsettled.load(Ordering::Relaxed);
        max_unsettled.saturating_sub(unsettled).min(self.window.load(Ordering::Relaxed))
    }

    /// One delivery handed over: one less in the window (unless the window is not told).
    fn use_window(&self) {
        let _ = self.window.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            (w != usize::MAX).then(|| w.saturating_sub(1))
        });
    }
}

#[derive(Default)]
struct State {
    /// Stored and not yet removed (in flight included).
    count: u64,
    /// Dead letters.
    dead: u64,
    /// Lowest seq never handed out.
    cursor: u64,
    /// Seq the next append gets (everything below is committed).
    tail: u64,
    redeliver: BTreeSet<u64>,
    /// Records just stored and not yet handed out, in seq order without gaps: the store's
    /// bytes, shared. Fresh messages come from here while the cursor is inside it.
    recent: VecDeque<(u64, Bytes)>,
    /// Bytes held in `recent`.
    recent_bytes: usize,
    /// Released messages waiting out their backoff, and every delivered message's history.
    retries: Retries,
    leased: HashMap<u64, Lease>,
    clients: Vec<Client>,
    next_generation: u64,
    last_consumption_ms: Option<u64>,
    /// The `last_consumption_ms` last written to the store.
    persisted_last_consumption_ms: Option<u64>,
    rate: RateWindow,
}

impl State {
    /// Adds a stored record to the in-memory tail. A seq that does not follow the tail's last
    /// (appends that finished out of order) starts the tail anew: what it held is in the store.
    fn keep_recent(&mut self, seq: u64, record: Bytes) {
        if seq < self.cursor {
            return;
        }
        if self.recent.back().is_some_and(|(last, _)| last + 1 != seq) {
            self.forget_recent();
        }
        self.recent_bytes += record.len();
        self.recent.push_back((seq, record));
        // Beyond the bounds the oldest go: the store serves them.
        while self.recent.len() > RECENT_RECORDS || self.recent_bytes > RECENT_BYTES {
            self.pop_recent();
        }
    }

    fn pop_recent(&mut self) -> Option<(u64, Bytes)> {
        let (seq, record) = self.recent.pop_front()?;
        self.recent_bytes -= record.len();
        Some((seq, record))
    }

    fn forget_recent(&mut self) {
        self.recent.clear();
        self.recent_bytes = 0;
    }

    /// Up to `max` fresh records from the in-memory tail, when the cursor is at its start;
    /// otherwise `Err` with the seq below which the store holds what comes next (`u64::MAX`
    /// when the tail is empty).
    fn take_recent(&mut self, max: usize) -> Result<Vec<(u64, Bytes)>, u64> {
        while self.recent.front().is_some_and(|(seq, _)| *seq < self.cursor) {
            self.pop_recent();
        }
        match self.recent.front() {
            Some((seq, _)) if *seq == self.cursor => {}
            Some((seq, _)) => return Err(*seq),
            None => return Err(u64::MAX),
        }
        let mut out = Vec::with_capacity(max.min(self.recent.len()));
        while out.len() < max {
            match self.pop_recent() {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }
}

/// One consumer group.
pub struct Group {
    /// Group id.
    pub id: Arc<str>,
    /// Display name.
    pub name: String,
    /// Counters.
    pub counters: Counters,
    state: Mutex<State>,
    wake: Notify,
    store: Arc<dyn QueueStore>,
    settings: Settings,
    next_client: AtomicU64,
    /// Deliveries of a message at most (0: no limit).
    max_delivery_attempts: AtomicU32,
    /// The last hour of status samples (the console's charts).
    history: Mutex<History>,
    stop: CancellationToken,
}

/// A group's status for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Accepted in the last minute.
    pub consumption_rate_per_minute: u64,
    /// Stored and not yet accepted, rejected or expired (in-flight messages included).
    pub accumulated: u64,
    /// Delivered and not yet settled.
    pub in_flight: u64,
    /// Epoch ms of the last accepted message.
    pub last_consumption_ms: Option<u64>,
    /// Messages in the group's dead letters.
    pub dead_letters: u64,
    /// Online clients.
    pub online_clients: Vec<ClientInfo>,
}

/// Why a client could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The group has its maximum of online clients.
    #[error("consumer group {group} already has {limit} online clients, the maximum")]
    Full {
        /// Group id.
        group: String,
        /// The limit.
        limit: usize,
    },
}

/// A client's membership: deliveries arrive on `rx`. Dropping it puts every unsettled message
/// of the client back.
pub struct Membership {
    group: Arc<Group>,
    client: u64,
    /// Deliveries for this client.
    pub rx: mpsc::Receiver<Delivery>,
    unsettled: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
    window: Arc<AtomicUsize>,
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

impl Group {
    pub(super) fn new(
        id: &str,
        name: &str,
        store: Arc<dyn QueueStore>,
        settings: Settings,
        extent: Extent,
        dead: u64,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            name: name.to_string(),
            counters: Counters::default(),
            state: Mutex::new(State {
                count: extent.count,
                dead,
                cursor: extent.first.max(1),
                tail: extent.next.max(1),
                ..State::default()
            }),
            wake: Notify::new(),
            store,
            settings,
            next_client: AtomicU64::new(1),
            max_delivery_attempts: AtomicU32::new(0),
            history: Mutex::new(History::default()),
            stop,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records appended messages (their seqs are committed) without their records: they are
    /// read from the store when delivered.
    pub(super) fn appended_seqs(&self, seqs: &[u64]) {
        let Some(max) = seqs.iter().max() else { return };
        {
            let mut s = self.lock();
            s.count += seqs.len() as u64;
            s.tail = s.tail.max(max + 1);
        }
        self.counters.appended.fetch_add(seqs.len() as u64, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Records staged messages (seqs in ascending order, queued for a commit that may not be
    /// done yet) and, while clients are online, keeps their records for delivery from memory:
    /// a client may get a message before its commit. Once the commit is known the caller
    /// calls [`Group::committed`] or [`Group::retract`].
    pub(super) fn staged(&self, records: Vec<(u64, Bytes)>) {
        let Some(max) = records.iter().map(|(seq, _)| *seq).max() else { return };
        let n = records.len() as u64;
        {
            let mut s = self.lock();
            s.count += n;
            s.tail = s.tail.max(max + 1);
            if !s.clients.is_empty() {
                for (seq, record) in records {
                    s.keep_recent(seq, record);
                }
            }
        }
        self.counters.appended.fetch_add(n, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The commit of staged messages is done: what waited for it (redeliveries and store reads
    /// of them) may go on.
    pub(super) fn committed(&self) {
        self.wake.notify_one();
    }

    /// The commit of the staged messages `first..=last` failed: nothing of them is stored and
    /// the device was not acknowledged (it sends them again). They leave the group: never
    /// delivered again, late settlements of them ignored.
    pub(super) fn retract(&self, first: u64, last: u64) {
        let range = first..=last;
        {
            let mut s = self.lock();
            let mut gone = 0;
            for seq in range.clone() {
                // Still counted unless consumed or dead-lettered already. (A message rejected
                // before the failure stays counted as a dead letter until the next restart.)
                let delayed = s.retries.is_delayed(seq);
                let leased = s.leased.remove(&seq).is_some();
                let queued = s.redeliver.remove(&seq);
                if leased || queued || delayed || seq >= s.cursor {
                    gone += 1;
                }
                s.retries.forget(seq);
            }
            s.count = s.count.saturating_sub(gone);
            if s.recent.iter().any(|(seq, _)| range.contains(seq)) {
                s.recent.retain(|(seq, _)| !range.contains(seq));
                s.recent_bytes = s.recent.iter().map(|(_, r)| r.len()).sum();
            }
            self.counters.retracted.fetch_add(last - first + 1, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    /// Adds an online client, unless the group is full.
    ///
    /// # Errors
    /// `Full` at the configured limit.
    pub fn join(self: &Arc<Self>, client_id: &str, peer: SocketAddr) -> Result<Membership, JoinError> {
        let capacity = self.settings.max_unsettled_per_client;
        let (tx, rx) = mpsc::channel(capacity);
        let unsettled = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(true));
        let window = Arc::new(AtomicUsize::new(usize::MAX));
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = self.lock();
            if s.clients.len() >= self.settings.max_clients_per_group {
                return Err(JoinError::Full {
                    group: self.id.to_string(),
                    limit: self.settings.max_clients_per_group,
                });
            }
            s.clients.push(Client {
                id,
                info: ClientInfo {
                    client_id: client_id.to_string(),
                    peer,
                    online_since_ms: now_ms(),
                    rate_per_minute: 0,
                    node: None,
                },
                tx,
                unsettled: unsettled.clone(),
                ready: ready.clone(),
                window: window.clone(),
                rate: RateWindow::default(),
            });
        }
        self.wake.notify_one();
        Ok(Membership { group: self.clone(), client: id, rx, unsettled, ready, window })
    }

    fn leave(&self, client: u64) {
        {
            let mut s = self.lock();
            s.clients.retain(|c| c.id != client);
            if s.clients.is_empty() {
                // Nobody to deliver to: the backlog waits in the store alone.
                s.forget_recent();
            }
            let back: Vec<u64> =
                s.leased.iter().filter(|(_, l)| l.client == client).map(|(seq, _)| *seq).collect();
            for seq in &back {
                s.leased.remove(seq);
                s.redeliver.insert(*seq);
            }
            self.counters.redelivered.fetch_add(back.len() as u64, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    /// Applies a client's settlements, each of delivery `seq`/`generation`: under one lock,
    /// with one removal and one dead-letter move for the store.
    fn settle(&self, client: u64, outcomes: &[(u64, u64, Settlement)]) {
        let mut removed = Vec::new();
        let mut dead = Vec::new();
        let mut s = self.lock();
        let now = now_ms();
        for &(seq, generation, how) in outcomes {
            let current =
                s.leased.get(&seq).is_some_and(|l| l.client == client && l.generation == generation);
            if !current {
                // The lease ended (ack timeout, clear): the message was put back or dropped. An
                // accept of a message waiting for redelivery still consumes it.
                // (Only an accept may take the message out of the redelivery set.)
                if how == Settlement::Accepted && (s.redeliver.remove(&seq) || s.retries.is_delayed(seq)) {
                    self.consumed_locked(&mut s, seq, client, now);
                    removed.push(seq);
                }
                continue;
            }
            s.leased.remove(&seq);
            match how {
                Settlement::Accepted => {
                    self.consumed_locked(&mut s, seq, client, now);
                    removed.push(seq);
                }
                Settlement::Rejected => {
                    s.count = s.count.saturating_sub(1);
                    s.dead += 1;
                    s.retries.forget(seq);
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    dead.push(seq);
                }
                // The dispatcher sleeps until the earliest backoff ends, which may be this one;
                // the caller wakes it.
                Settlement::Released | Settlement::Undeliverable => {
                    let avoid = (how == Settlement::Undeliverable).then_some(client);
                    s.retries.released(seq, avoid, Instant::now());
                    self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                Settlement::Lost => {
                    s.redeliver.insert(seq);
                    self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                Settlement::Unsent => {
                    s.retries.unsent(seq);
                    s.redeliver.insert(seq);
                }
            }
        }
        drop(s);
        self.store.remove(&self.id, removed);
        self.store.dead_letter(&self.id, dead);
    }

    /// Counts an accepted message as consumed; the caller removes it from the store.
    fn consumed_locked(&self, s: &mut State, seq: u64, client: u64, now: u64) {
        s.count = s.count.saturating_sub(1);
        s.retries.forget(seq);
        s.last_consumption_ms = Some(now);
        s.rate.add(now / 1000, 1);
        if let Some(c) = s.clients.iter_mut().find(|c| c.id == client) {
            c.rate.add(now / 1000, 1);
        }
        self.counters.acked.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a delivery is still leased to `client` (a client skips stale ones it still holds).
    fn is_current(&self, client: u64, seq: u64, generation: u64) -> bool {
        self.lock().leased.get(&seq).is_some_and(|l| l.client == client && l.generation == generation)
    }

    /// The status for the API.
    pub fn status(&self) -> Status {
        let now = now_secs();
        let s = self.lock();
        Status {
            consumption_rate_per_minute: s.rate.per_minute(now),
            accumulated: s.count,
            in_flight: s.leased.len() as u64,
            last_consumption_ms: s.last_consumption_ms,
            dead_letters: s.dead,
            online_clients: s
                .clients
                .iter()
                .map(|c| ClientInfo { rate_per_minute: c.rate.per_minute(now), ..c.info.clone() })
                .collect(),
        }
    }

    /// The status now, as a history sample.
    fn sample(&self) -> Sample {
        let now = now_ms();
        let s = self.lock();
        Sample { time: now, accumulated_count: s.count, consumption_rate: s.rate.per_minute(now / 1000) }
    }

    /// Adds the status now to the history.
    pub(super) fn sample_history(&self) {
        let sample = self.sample();
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sample);
    }

    /// The last hour's samples, oldest first, ending with one taken now.
    pub fn history(&self) -> Vec<Sample> {
        let mut samples = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).samples();
        samples.push(self.sample());
        samples
    }

    /// Drops every stored message of the group; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn clear(&self) -> Result<u64, crate::store::StoreError> {
        let removed = self.store.clear(&self.id).await?;
        let mut s = self.lock();
        // Unsettled deliveries are dropped too; their late outcomes are ignored.
        s.leased.clear();
        s.redeliver.clear();
        s.retries.clear();
        s.forget_recent();
        s.cursor = s.tail;
        s.count = 0;
        self.counters.cleared.fetch_add(removed, Ordering::Relaxed);
        Ok(removed)
    }

    /// Deliveries of a message at most, if limited.
    pub fn max_delivery_attempts(&self) -> Option<u32> {
        Some(self.max_delivery_attempts.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    pub(super) fn set_max_delivery_attempts(&self, max: Option<u32>) {
        self.max_delivery_attempts.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// Sets the last consumption time stored before a restart.
    pub(super) fn restore_last_consumption(&self, ms: Option<u64>) {
        let mut s = self.lock();
        s.last_consumption_ms = ms;
        s.persisted_last_consumption_ms = ms;
    }

    /// The last consumption time when it changed since the last call (to persist it).
    pub(super) fn last_consumption_to_persist(&self) -> Option<u64> {
        let mut s = self.lock();
        let last =
            s.last_consumption_ms.filter(|_| s.last_consumption_ms != s.persisted_last_consumption_ms)?;
        s.persisted_last_consumption_ms = Some(last);
        Some(last)
    }

    /// Puts back leases past their deadline and drops messages past retention.
    pub(super) fn sweep(&self) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            let late: Vec<u64> =
                s.leased.iter().filter(|(_, l)| l.deadline <= now).map(|(seq, _)| *seq).collect();
            if !late.is_empty() {
                for seq in &late {
                    s.leased.remove(seq);
                    s.redeliver.insert(*seq);
                }
                self.counters.redelivered.fetch_add(late.len() as u64, Ordering::Relaxed);
                tracing::debug!(group = %self.id, count = late.len(), "Redelivering after the ack timeout");
            }
        }
        self.expire();
        self.wake.notify_one();
    }

    fn expire(&self) {
        let cutoff = now_ms().saturating_sub(self.settings.retention.as_millis() as u64);
        let records = match self.store.read_from(&self.id, 0, FETCH) {
            Ok(r) => r,
            // The store's writer logs why (a full disk) and when it is usable again.
            Err(crate::store::StoreError::Unavailable { .. }) => return,
            Err(e) => {
                tracing::error!(group = %self.id, error = %e, "Reading the queue head failed");
                return;
            }
        };
        let mut s = self.lock();
        let mut expired = Vec::new();
        for (seq, record) in &records {
            match StoredMessage::generate_time_of(record) {
                Some(t) if t < cutoff => {
                    if !s.leased.contains_key(seq) {
                        expired.push(*seq);
                    }
                }
                _ => break,
            }
        }
        if expired.is_empty() {
            return;
        }
        for seq in &expired {
            s.redeliver.remove(seq);
            s.retries.forget(*seq);
        }
        // Expired messages may not have been handed out yet: none of them may come from memory,
        // nor from the store before their removal is committed. They are the head of the queue
        // (leased ones aside, which were handed out already), so the cursor moves past them.
        s.forget_recent();
        if let Some(last) = expired.last() {
            s.cursor = s.cursor.max(last + 1);
        }
        s.count = s.count.saturating_sub(expired.len() as u64);
        self.counters.expired.fetch_add(expired.len() as u64, Ordering::Relaxed);
        tracing::info!(group = %self.id, count = expired.len(), "Messages expired after the retention period");
        self.store.remove(&self.id, expired);
    }

    /// Stops the group's dispatcher and ends every membership (the group is being deleted):
    /// each client's delivery channel closes, and its connection detaches it with an error.
    pub(super) fn stop(&self) {
        self.stop.cancel();
        let mut s = self.lock();
        s.clients.clear();
        s.forget_recent();
    }

    /// Moves messages to clients until `stop`.
    pub(super) async fn dispatch(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let moved = match self.dispatch_once() {
                Ok(n) => n,
                // The store's writer logs why (a full disk); the next wake after it is usable
                // again moves the messages.
                Err(crate::store::StoreError::Unavailable { .. }) => 0,
                Err(e) => {
                    tracing::error!(group = %self.id, error = %e, "Reading the queue failed");
                    0
                }
            };
            if moved == 0 {
                // Besides a wake (an append, a settlement, a client), the end of the earliest
                // backoff makes work.
                let next_due = self.lock().retries.next_due();
                let backoff_over = async {
                    match next_due {
                        Some(due) => tokio::time::sleep_until(due.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.wake.notified() => {}
                    () = backoff_over => {}
                }
            }
        }
    }

    /// One round: returns how many messages were handed out, or 1 when the cursor moved
    /// without any (0: nothing to do right now).
    fn dispatch_once(&self) -> Result<usize, crate::store::StoreError> {
        // What to read, decided under the lock; the store read happens outside it.
        let (room, redeliver, cursor, tail, recent) = {
            let mut s = self.lock();
            for seq in s.retries.due(Instant::now()) {
                s.redeliver.insert(seq);
            }
            let max = self.settings.max_unsettled_per_client;
            let room: usize = s.clients.iter().map(|c| c.room(max)).fold(0, usize::saturating_add);
            let redeliver: Vec<u64> = s.redeliver.iter().take(room.min(FETCH)).copied().collect();
            let fresh_wanted = room.min(FETCH).saturating_sub(redeliver.len());
            let recent =
                if fresh_wanted > 0 && s.cursor < s.tail { Some(s.take_recent(fresh_wanted)) } else { None };
            (room, redeliver, s.cursor, s.tail, recent)
        };
        if room == 0 || (redeliver.is_empty() && cursor >= tail) {
            return Ok(0);
        }
        // Staged messages are delivered from memory before their commit; the store is read
        // only below this (a staged message not yet committed is not there yet).
        let committed_below = if redeliver.is_empty() && matches!(recent, Some(Ok(_))) {
            u64::MAX
        } else {
            self.store.committed_below(&self.id)
        };
        let mut again = Vec::with_capacity(redeliver.len());
        for seq in &redeliver {
            if *seq >= committed_below {
                // Delivered again once it is committed (or dropped if its commit fails).
                continue;
            }
            match self.store.read(&self.id, *seq)? {
                Some(record) => again.push((*seq, Bytes::from(record))),
                None => {
                    self.lock().redeliver.remove(seq);
                }
            }
        }
        // Fresh messages: from memory, or from the store up to where memory starts.
        let fresh_wanted = room.min(FETCH).saturating_sub(again.len());
        let fresh = match recent {
            Some(Ok(records)) => Some((records, tail)),
            Some(Err(memory_from)) if fresh_wanted > 0 && cursor < memory_from.min(committed_below) => {
                let end = memory_from.min(tail).min(committed_below);
                let records = self.store.read_from(&self.id, cursor, fresh_wanted)?;
                let records: Vec<(u64, Bytes)> = records
                    .into_iter()
                    .take_while(|(seq, _)| *seq < end)
                    .map(|(seq, record)| (seq, Bytes::from(record)))
                    .collect();
                // Nothing stored below the tail in memory (or below what is still being
                // committed): the cursor moves there.
                Some((records, end))
            }
            _ => None,
        };

        let mut s = self.lock();
        // A redelivery candidate may have been settled, expired or cleared meanwhile.
        let mut batch: Vec<(u64, Bytes)> =
            again.into_iter().filter(|(seq, _)| s.redeliver.remove(seq)).collect();
        // A message delivered as often as the group allows goes to the dead letters instead.
        if let Some(max) = self.max_delivery_attempts() {
            let (spent, rest): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|(seq, _)| s.retries.tries(*seq).delivered >= max);
            batch = rest;
            if !spent.is_empty() {
                let seqs: Vec<u64> = spent.into_iter().map(|(seq, _)| seq).collect();
                for seq in &seqs {
                    s.retries.forget(*seq);
                }
                s.count = s.count.saturating_sub(seqs.len() as u64);
                s.dead += seqs.len() as u64;
                self.counters.exhausted.fetch_add(seqs.len() as u64, Ordering::Relaxed);
                tracing::info!(group = %self.id, count = seqs.len(), max, "Messages moved to the dead letters after the last delivery attempt");
                self.store.dead_letter(&self.id, seqs);
            }
        }
        let mut jumped = false;
        if let Some((fresh, end)) = fresh {
            // Only this task moves the cursor forward; a clear meanwhile moved it past these.
            if s.cursor == cursor {
                let next = fresh.last().map_or(end, |(seq, _)| seq + 1);
                jumped = fresh.is_empty() && next > cursor;
                s.cursor = next;
                batch.extend(fresh);
            }
        }
        let mut moved = 0;
        let mut rng = rand::rng();
        let deadline = Instant::now() + self.settings.ack_timeout;
        for (seq, record) in batch {
            let Some(message) = StoredMessage::decode_shared(&record) else {
                tracing::error!(group = %self.id, seq, "Dropping a corrupt queue record");
                s.count = s.count.saturating_sub(1);
                self.store.remove(&self.id, vec![seq]);
                continue;
            };
            let max = self.settings.max_unsettled_per_client;
            let mut candidates: Vec<usize> =
                s.clients.iter().enumerate().filter(|(_, c)| c.has_room(max)).map(|(i, _)| i).collect();
            // After `modified` with `undeliverable-here`, another client if there is one.
            if let Some(avoid) = s.retries.tries(seq).avoid {
                if candidates.iter().any(|&i| s.clients[i].id != avoid) {
                    candidates.retain(|&i| s.clients[i].id != avoid);
                }
            }
            if candidates.is_empty() {
                s.redeliver.insert(seq);
                continue;
            }
            let pick = candidates[rng.random_range(0..candidates.len())];
            s.next_generation += 1;
            let generation = s.next_generation;
            let client = &s.clients[pick];
            let client_id = client.id;
            // Counted before the send: the client may settle before this thread runs on.
            client.unsettled.fetch_add(1, Ordering::Relaxed);
            match client.tx.try_send(Delivery { seq, generation, message }) {
                Ok(()) => {
                    client.use_window();
                    s.leased.insert(seq, Lease { client: client_id, generation, deadline });
                    s.retries.delivered(seq);
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    moved += 1;
                }
                Err(_) => {
                    client.unsettled.fetch_sub(1, Ordering::Relaxed);
                    s.redeliver.insert(seq);
                }
            }
        }
        Ok(moved + usize::from(jumped))
    }
}

impl Membership {
    /// Whether a delivery this client holds is still its to send.
    pub fn is_current(&self, delivery: &Delivery) -> bool {
        self.group.is_current(self.client, delivery.seq, delivery.generation)
    }

    /// Settles a delivery.
    pub fn settle(&self, seq: u64, generation: u64, how: Settlement) {
        self.settle_many(&[(seq, generation, how)]);
    }

    /// Settles several deliveries, each `(seq, generation, how)`, at once: one lock of the
    /// group, one removal for the store and one wake of the dispatcher for all of them.
    pub fn settle_many(&self, outcomes: &[(u64, u64, Settlement)]) {
        if outcomes.is_empty() {
            return;
        }
        self.unsettled.fetch_sub(outcomes.len(), Ordering::Relaxed);
        self.group.settle(self.client, outcomes);
        self.group.wake.notify_one();
    }

    /// The client's link has no credit: it gets nothing until [`Self::resume`]. The caller
    /// gives back what it holds with [`Settlement::Unsent`].
    pub fn stall(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// The client may have credit again: deliveries resume.
    pub fn resume(&self) {
        self.ready.store(true, Ordering::Relaxed);
        self.group.wake.notify_one();
    }

    /// How many more deliveries the client may be handed: its link's credit less what it holds
    /// already. A client that never says takes as many as `max_unsettled_per_client` allows.
    pub fn set_window(&self, window: usize) {
        let before = self.window.swap(window, Ordering::Relaxed);
        if window > before {
            self.group.wake.notify_one();
        }
    }

    /// Whether the client is stalled.
    pub fn is_stalled(&self) -> bool {
        !self.ready.load(Ordering::Relaxed)
    }

    /// Drops a delivery without an outcome (stale); frees its room.
    pub fn skip(&self) {
        self.unsettled.fetch_sub(1, Ordering::Relaxed);
        self.group.wake.notify_one();
    }

    /// The group.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.group.leave(self.client);
    }
}

/// How often leases and retention are checked: often enough for short test timeouts.
pub(super) fn sweep_interval(settings: &Settings) -> Duration {
    (settings.ack_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Append, Db, RedbQueue};

    /// A message generated now: one from 1970 would expire at the group's next tick.
    fn record(seq: u64) -> Bytes {
        StoredMessage::encode_parts(seq, now_ms(), "t", None, format!("m{seq}").as_bytes()).into()
    }

    fn state_at(cursor: u64) -> State {
        State { cursor, tail: cursor, ..State::default() }
    }

    #[test]
    fn the_tail_serves_from_the_cursor_and_points_to_the_store_below_it() {
        let mut s = state_at(1);
        for seq in 3..=5 {
            s.keep_recent(seq, record(seq));
        }
        // 1 and 2 are not in memory: the store holds what comes before 3.
        assert_eq!(s.take_recent(10).map(|r| r.len()), Err(3));
        s.cursor = 3;
        let got: Vec<u64> = s.take_recent(2).unwrap().into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(got, vec![3, 4]);
        s.cursor = 5;
        assert_eq!(s.take_recent(10).unwrap().len(), 1);
        assert_eq!(s.take_recent(10).map(|r| r.len()), Err(u64::MAX));
        assert_eq!(s.recent_bytes, 0);
    }

    #[test]
    fn a_gap_starts_the_tail_anew_and_the_bounds_drop_the_oldest() {
        let mut s = state_at(1);
        s.keep_recent(1, record(1));
        s.keep_recent(2, record(2));
        // Appends finishing out of order: 4 before 3.
        s.keep_recent(4, record(4));
        assert_eq!(s.recent.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), vec![4]);
        let mut s = state_at(1);
        for seq in 1..=(RECENT_RECORDS as u64 + 10) {
            s.keep_recent(seq, record(seq));
        }
        assert_eq!(s.recent.len(), RECENT_RECORDS);
        assert_eq!(s.recent.front().map(|(seq, _)| *seq), Some(11));
        let big = Bytes::from(vec![0u8; RECENT_BYTES / 2 + 1]);
        s.keep_recent(RECENT_RECORDS as u64 + 11, big.clone());
        s.keep_recent(RECENT_RECORDS as u64 + 12, big);
        assert!(s.recent_bytes <= RECENT_BYTES);
        assert_eq!(s.recent.len(), 1);
    }

    /// Messages beyond the in-memory tail come from the store: every message arrives once,
    /// in order, whichever way it came.
    #[tokio::test]
    async fn fresh_messages_come_once_and_in_order_from_memory_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn QueueStore> = RedbQueue::open(Db::open(dir.path()).unwrap()).unwrap();
        let settings = Settings {
            ack_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            max_clients_per_group: 4,
            max_unsettled_per_client: 100_000,
            max_groups: 10,
        };
        let stop = CancellationToken::new();
        let group = Group::new("g1", "group", store.clone(), settings, Extent::default(), 0, stop.clone());
        let mut member = group.join("c1", "127.0.0.1:1".parse().unwrap()).unwrap();
        // More than the tail holds, in two appends: the first part falls out of memory.
        let total = RECENT_RECORDS as u64 + 500;
        let mut next = 1;
        for n in [300, total - 300] {
            let batch: Vec<Append> =
                (next..next + n).map(|id| Append { group: "g1".into(), record: record(id) }).collect();
            let records: Vec<Bytes> = batch.iter().map(|a| a.record.clone()).collect();
            let seqs = store.append(batch).await.unwrap();
            group.staged(seqs.into_iter().zip(records).collect());
            next += n;
        }
        tokio::spawn(group.clone().dispatch(stop.clone()));
        for expected in 1..=total {
            let d = tokio::time::timeout(Duration::from_secs(10), member.rx.recv()).await.unwrap().unwrap();
            assert_eq!((d.seq, d.message.id), (expected, expected));
            assert_eq!(d.message.payload, format!("m{expected}").as_bytes());
            member.settle(d.seq, d.generation, Settlement::Accepted);
        }
        assert!(member.rx.try_recv().is_err());
        assert_eq!(group.status().accumulated, 0);
        stop.cancel();
    }

    fn settings() -> Settings {
        Settings {
            ack_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            max_clients_per_group: 4,
            max_unsettled_per_client: 100,
            max_groups: 10,
        }
    }

    /// Groups on a store whose commits with appends start at most every `interval`, after one
    /// commit, so that the next one waits the whole interval.
    async fn slow_commits(
        dir: &std::path::Path,
        interval: Duration,
    ) -> (Arc<crate::groups::Groups>, Arc<dyn QueueStore>) {
        let db = Db::open(dir).unwrap();
        let store: Arc<dyn QueueStore> = RedbQueue::open_with(db.clone(), interval).unwrap();
        let groups = crate::groups::Groups::start(&[], store.clone(), settings(), db).unwrap();
        groups.set_early_delivery(true);
        groups.append(vec![Append { group: "DEFAULT_GROUP".into(), record: record(1) }]).await.unwrap();
        (groups, store)
    }

    /// A client of DEFAULT_GROUP (its first message taken and accepted) and a second message,
    /// staged and received before its commit: the group, the client, the delivery, the commit.
    async fn second_before_commit(
        groups: &crate::groups::Groups,
    ) -> (Arc<Group>, Membership, Delivery, crate::groups::Commit) {
        let group = groups.get("DEFAULT_GROUP").unwrap();
        let mut member = group.join("c1", "127.0.0.1:1".parse().unwrap()).unwrap();
        let first = member.rx.recv().await.unwrap();
        member.settle(first.seq, first.generation, Settlement::Accepted);
        let mut commit =
            groups.stage(vec![Append { group: "DEFAULT_GROUP".into(), record: record(2) }]).await.unwrap();
        let delivery = tokio::select! {
            d = member.rx.recv() => d.unwrap(),
            r = &mut commit => panic!("the commit ({r:?}) came before the delivery"),
        };
        (group, member, delivery, commit)
    }

    /// A client gets a message as soon as it is staged, before its commit, and may accept it
    /// then: the accept is stored after the message, so nothing is left behind.
    #[tokio::test]
    async fn a_staged_message_is_delivered_before_its_commit_and_an_early_accept_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, store) = slow_commits(dir.path(), Duration::from_millis(500)).await;
        let (group, member, delivery, commit) = second_before_commit(&groups).await;
        assert_eq!((delivery.seq, delivery.message.id), (2, 2));
        assert_eq!(store.committed_below("DEFAULT_GROUP"), 2, "seq 2 is not committed yet");
        member.settle(delivery.seq, delivery.generation, Settlement::Accepted);
        commit.await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.read("DEFAULT_GROUP", 2).unwrap(), None, "the early accept removed it");
        assert_eq!(group.status().accumulated, 0);
        assert_eq!(store.committed_below("DEFAULT_GROUP"), 3);
    }

    /// Without early delivery (the default) a client gets a message only once it is stored.
    #[tokio::test]
    async fn without_early_delivery_a_message_waits_for_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, store) = slow_commits(dir.path(), Duration::from_millis(300)).await;
        groups.set_early_delivery(false);
        let group = groups.get("DEFAULT_GROUP").unwrap();
        let mut member = group.join("c1", "127.0.0.1:1".parse().unwrap()).unwrap();
        let first = member.rx.recv().await.unwrap();
        member.settle(first.seq, first.generation, Settlement::Accepted);
        let commit =
            groups.stage(vec![Append { group: "DEFAULT_GROUP".into(), record: record(2) }]).await.unwrap();
        let mut commit = tokio::spawn(commit);
        let delivery = tokio::select! {
            biased;
            r = &mut commit => {
                r.unwrap().unwrap();
                member.rx.recv().await.unwrap()
            }
            d = member.rx.recv() => panic!("delivered (seq {}) before the commit", d.unwrap().seq),
        };
        assert_eq!(delivery.seq, 2);
        assert_eq!(store.committed_below("DEFAULT_GROUP"), 3);
    }

    /// A message given back before its commit (the client went away) is not read from the
    /// store, where it is not yet: it is delivered again once committed.
    #[tokio::test]
    async fn a_message_given_back_before_its_commit_comes_again_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, store) = slow_commits(dir.path(), Duration::from_millis(300)).await;
        let (group, mut member, delivery, commit) = second_before_commit(&groups).await;
        member.settle(delivery.seq, delivery.generation, Settlement::Lost);
        // The pipeline waits for each commit as it comes, which wakes the group.
        let commit = tokio::spawn(commit);
        let again = tokio::select! {
            d = member.rx.recv() => d.unwrap(),
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("not delivered again"),
        };
        assert_eq!(again.seq, 2);
        assert_eq!(store.committed_below("DEFAULT_GROUP"), 3, "delivered again only after the commit");
        assert!(commit.await.unwrap().is_ok());
        member.settle(again.seq, again.generation, Settlement::Accepted);
        assert_eq!(group.status().accumulated, 0);
    }

    /// Staged messages whose commit failed leave the group: counted out, leases dropped, not
    /// delivered again, late settlements ignored.
    #[tokio::test]
    async fn a_failed_commit_retracts_what_was_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn QueueStore> = RedbQueue::open(Db::open(dir.path()).unwrap()).unwrap();
        let stop = CancellationToken::new();
        let group = Group::new("g1", "group", store.clone(), settings(), Extent::default(), 0, stop.clone());
        let mut member = group.join("c1", "127.0.0.1:1".parse().unwrap()).unwrap();
        tokio::spawn(group.clone().dispatch(stop.clone()));
        group.staged((1..=3).map(|seq| (seq, record(seq))).collect());
        let d1 = member.rx.recv().await.unwrap();
        let d2 = member.rx.recv().await.unwrap();
        let d3 = member.rx.recv().await.unwrap();
        assert_eq!((d1.seq, d2.seq, d3.seq), (1, 2, 3));
        member.settle(d1.seq, d1.generation, Settlement::Accepted);
        member.settle(d2.seq, d2.generation, Settlement::Lost);
        assert_eq!(group.status().accumulated, 2);
        group.retract(1, 3);
        assert_eq!(group.status().accumulated, 0);
        assert_eq!(group.status().in_flight, 0);
        assert!(!member.is_current(&d3));
        member.settle(d3.seq, d3.generation, Settlement::Released);
        group.staged(vec![(4, record(4))]);
        let next = member.rx.recv().await.unwrap();
        assert_eq!(next.seq, 4, "nothing of the failed commit comes again");
        assert_eq!(group.counters.retracted.load(Ordering::Relaxed), 3);
        stop.cancel();
    }
}

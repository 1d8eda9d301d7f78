//! Consumer-group queues: the trait every backend implements and the embedded redb one.
//!
//! A queue holds encoded [`StoredMessage`](super::StoredMessage)s under `(group, seq)`, with
//! `seq` counting up from 1 per group. Leases (which client holds which message) live in memory
//! in the groups module: after a restart everything stored is simply ready again.
//!
//! The embedded backend funnels every write through one thread that commits many operations
//! per transaction (group commit): appends and clears with an fsync before they are reported
//! done, removals (acknowledgements) without one. A removal becomes durable with the next
//! fsynced commit, and at the latest [`IDLE_SYNC`] after the writer goes idle: a writer that
//! has nothing else to do commits with an fsync then. A crash before that delivers the message
//! again, which at-least-once allows. A commit of removals alone first waits up to
//! `REMOVAL_GATHER` for more of them or for an append to share it.
//!
//! Memory is bounded on the way in: commands that are answered (appends, clears, flushes) pass
//! a bounded channel and their senders wait while it is full; removals are not commands but
//! sequence numbers gathered per group until the next commit, 8 bytes each, and at most one per
//! stored message (a message is removed once), whatever the rate of acknowledgements. The
//! writer also reserves message-id blocks ([`Ids`]) ahead of need, in the same commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use redb::{Durability, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::ids::{self, Ids};
use super::{Db, StoreError};
use crate::histogram::Histogram;

const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// Dead letters under their queue key: 8 bytes (epoch ms, little endian) of when the message
/// was dead-lettered, then the record.
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// Commands one commit takes at most; bounds the time a commit holds replies back.
const MAX_COMMANDS_PER_COMMIT: usize = 4096;
/// Answered commands waiting for the writer. Their senders wait beyond it: the pipeline has one
/// append in flight, the forwarding retries at most their own bound, the API a few clears.
const CHANNEL: usize = 1024;
/// How long removals may stay without an fsync once the writer has nothing else to do: the
/// bound on how long an accept can be lost to a crash when nothing else is written. Under load
/// the next append's fsync makes them durable sooner.
pub const IDLE_SYNC: std::time::Duration = std::time::Duration::from_millis(100);
/// How often a commit with appends may start at most with `[storage] early_delivery`, unless
/// `commit_interval_ms` says otherwise: appends that arrive meanwhile share the next commit and
/// its fsync. Consumers then get staged messages at once; only PUBACKs wait for the commit.
pub const EARLY_DELIVERY_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(4);
/// How long a commit of removals alone waits for more removals or for an append to share
/// it: at most about 100 such commits per second, whatever the rate of acknowledgements
/// (each commit costs the writer the same B-tree and page work however few it carries).
/// Well below [`IDLE_SYNC`], so that bound on durability stays as it is.
const REMOVAL_GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// One record to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// Consumer group id.
    pub group: Arc<str>,
    /// Encoded message. Shared: the group keeps the same bytes in memory for delivery.
    pub record: Bytes,
}

/// Records queued for a commit (see [`QueueStore::stage`]).
pub struct Staged {
    /// Each record's seq, in the order of the batch.
    pub seqs: Vec<u64>,
    /// Resolves once every record is on disk; with the error when the commit failed (then
    /// nothing of it is stored).
    pub done: BoxFuture<'static, Result<(), StoreError>>,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged").field("seqs", &self.seqs).finish_non_exhaustive()
    }
}

/// What a group holds, as found at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    /// Stored messages.
    pub count: u64,
    /// Lowest stored seq (or `next` when empty).
    pub first: u64,
    /// The seq the next append gets.
    pub next: u64,
}

/// A message moved to its group's dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its seq in the group's queue when it was dead-lettered.
    pub seq: u64,
    /// Epoch ms when it was dead-lettered.
    pub dead_since_ms: u64,
    /// The encoded message.
    pub record: Vec<u8>,
}

/// A durable queue store. The embedded redb implementation is [`RedbQueue`]; a distributed
/// backend implements the same operations.
pub trait QueueStore: Send + Sync + 'static {
    /// Queues every record for the next commit: resolves as soon as the writer has them, with
    /// each record's seq (assigned at once, in the order of the calls) and a future that
    /// resolves once all of them are on disk. A removal of a staged seq that arrives before its
    /// commit is applied after it; a seq whose commit failed is never given out again.
    fn stage(&self, batch: Vec<Append>) -> BoxFuture<'static, Result<Staged, StoreError>>;
    /// Appends every record durably; resolves, once all are on disk, with each record's seq.
    fn append(&self, batch: Vec<Append>) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let staged = self.stage(batch);
        Box::pin(async move {
            let staged = staged.await?;
            staged.done.await?;
            Ok(staged.seqs)
        })
    }
    /// The lowest seq of `group` that may still be staged and not yet committed: every seq
    /// below it is committed (or its commit failed). Reads of the store below it are final.
    fn committed_below(&self, group: &str) -> u64;
    /// Removes settled messages. Durable with the next fsynced commit.
    fn remove(&self, group: &str, seqs: Vec<u64>);
    /// Moves messages to the group's dead letters. Durable like a removal.
    fn dead_letter(&self, group: &str, seqs: Vec<u64>);
    /// Up to `max` dead letters of `group` with seq >= `from`, in seq order.
    ///
    /// # Errors
    /// Storage failures.
    fn read_dead(&self, group: &str, from: u64, max: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Moves every dead letter of `group` back to the end of its queue; resolves with their
    /// new seqs.
    fn requeue_dead(&self, group: &str) -> BoxFuture<'static, Result<Vec<u64>, StoreError>>;
    /// Drops the dead letters of `group` (only those dead-lettered before `before_ms` when
    /// given); resolves with how many.
    fn purge_dead(&self, group: &str, before_ms: Option<u64>) -> BoxFuture<'static, Result<u64, StoreError>>;
    /// How many dead letters each group has.
    ///
    /// # Errors
    /// Storage failures.
    fn dead_counts(&self) -> Result<HashMap<String, u64>, StoreError>;
    /// Removes every message of `group`; resolves with how many were removed.
    fn clear(&self, group: &str) -> BoxFuture<'static, Result<u64, StoreError>>;
    /// Up to `max` records of `group` with seq >= `from`, in seq order.
    ///
    /// # Errors
    /// Storage failures.
    fn read_from(&self, group: &str, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// One record.
    ///
    /// # Errors
    /// Storage failures.
    fn read(&self, group: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every group that holds messages, with its extent.
    ///
    /// # Errors
    /// Storage failures.
    fn extents(&self) -> Result<HashMap<String, Extent>, StoreError>;
    /// Makes every earlier operation durable.
    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Makes everything durable and stops: later operations fail with `Closed`. Resolves when
    /// the store has released its files.
    fn close(&self) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// What the writer thread measures, for `/metrics`. Recorded once per commit or append batch,
/// never per message.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Duration of each commit with fsync (appends, clears, flushes).
    pub commit_fsync: Histogram,
    /// Duration of each commit without fsync (only removals).
    pub commit_nosync: Histogram,
    /// From an append batch being queued to its commit being done: the storage part of what a
    /// PUBACK waits for.
    pub append: Histogram,
    /// Commits that failed (nothing of them is stored).
    pub commit_failures: AtomicU64,
    /// Messages settled before their commit (early delivery): neither written nor removed.
    pub settled_before_commit: AtomicU64,
}

/// A staged append on its way to the writer.
struct Staging {
    batch: Vec<Append>,
    /// The seq of each record, assigned when it was staged.
    seqs: Vec<u64>,
    /// Its entry in [`Seqs::inflight`].
    ticket: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
    /// When it was queued.
    queued: Instant,
}

enum Command {
    Append(Staging),
    /// Removals or an id block are waiting: commit soon.
    Wake,
    Clear(String, oneshot::Sender<Result<u64, StoreError>>),
    Requeue(String, oneshot::Sender<Result<Vec<u64>, StoreError>>),
    PurgeDead(String, Option<u64>, oneshot::Sender<Result<u64, StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Sequence numbers settled since the last commit, by group; the writer takes them all at once.
type Removals = Mutex<HashMap<Arc<str>, Vec<u64>>>;

/// Seq assignment, shared by the stagers and the writer.
#[derive(Default)]
struct Seqs {
    /// The next seq of each group.
    next: HashMap<Arc<str>, u64>,
    /// Staged appends not yet committed or failed: `(ticket, group, first, last)`, one per group
    /// of each staged batch (a batch's seqs of one group are consecutive).
    inflight: Vec<(u64, Arc<str>, u64, u64)>,
    /// The next ticket.
    ticket: u64,
}

impl Seqs {
    fn assign(&mut self, group: &Arc<str>) -> u64 {
        match self.next.get_mut(&**group) {
            Some(next) => {
                *next += 1;
                *next - 1
            }
            None => {
                self.next.insert(group.clone(), 2);
                1
            }
        }
    }

    /// The ticket of the staged append that holds `seq` of `group`, while it is in flight.
    fn staged_in(&self, group: &str, seq: u64) -> Option<u64> {
        self.inflight
            .iter()
            .find(|(_, g, first, last)| (*first..=*last).contains(&seq) && &**g == group)
            .map(|(t, ..)| *t)
    }
}

fn lock_seqs(seqs: &Mutex<Seqs>) -> std::sync::MutexGuard<'_, Seqs> {
    seqs.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The embedded queue store on redb.
pub struct RedbQueue {
    db: Arc<Db>,
    tx: mpsc::Sender<Command>,
    removals: Arc<Removals>,
    /// Sequence numbers to move to the dead letters, gathered like removals.
    dead: Arc<Removals>,
    seqs: Arc<Mutex<Seqs>>,
    ids: Arc<Ids>,
    stats: Arc<StoreStats>,
}

impl std::fmt::Debug for RedbQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbQueue").field("db", &self.db).finish()
    }
}

impl RedbQueue {
    /// Opens the queues in `db` and starts the writer thread, committing as soon as the last
    /// commit is done. The thread ends, after a final fsynced commit, when the last handle is
    /// dropped.
    ///
    /// # Errors
    /// When the existing queues cannot be read.
    pub fn open(db: Arc<Db>) -> Result<Arc<Self>, StoreError> {
        Self::open_with(db, std::time::Duration::ZERO)
    }

    /// As [`RedbQueue::open`]: a commit with appends starts at most once per `commit_interval`
    /// (zero: as soon as the last one is done).
    ///
    /// # Errors
    /// When the existing queues cannot be read.
    pub fn open_with(db: Arc<Db>, commit_interval: std::time::Duration) -> Result<Arc<Self>, StoreError> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stats = Arc::new(StoreStats::default());
        let removals = Arc::new(Removals::default());
        let dead = Arc::new(Removals::default());
        let wake = tx.clone();
        // A full channel means the writer commits soon anyway.
        let ids =
            Arc::new(Ids::new(ids::reserve_now(&db)?, Box::new(move || drop(wake.try_send(Command::Wake)))));
        let queue = Self {
            db: db.clone(),
            tx,
            removals: removals.clone(),
            dead: dead.clone(),
            seqs: Arc::default(),
            ids: ids.clone(),
            stats: stats.clone(),
        };
        lock_seqs(&queue.seqs).next =
            queue.extents()?.into_iter().map(|(group, extent)| (Arc::from(group), extent.next)).collect();
        let writer = Writer {
            db,
            seqs: queue.seqs.clone(),
            commit_interval,
            stats,
            removals,
            dead,
            ids: Arc::downgrade(&ids),
            broken: None,
            last_log: None,
        };
        std::thread::Builder::new()
            .name("iotpipe-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| StoreError::Dir { path: "writer thread".into(), source })?;
        Ok(Arc::new(queue))
    }

    /// The message-id allocator, whose blocks this store's writer reserves.
    pub fn ids(&self) -> &Arc<Ids> {
        &self.ids
    }

    /// The writer thread's measurements.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }
}

fn closed() -> StoreError {
    StoreError::Closed
}

impl QueueStore for RedbQueue {
    fn stage(&self, batch: Vec<Append>) -> BoxFuture<'static, Result<Staged, StoreError>> {
        let (tx, seqs) = (self.tx.clone(), self.seqs.clone());
        Box::pin(async move {
            // A place in the writer's queue first; then the seqs and the send under one lock,
            // so that the writer gets appends in the order of their seqs.
            let permit = tx.reserve().await.map_err(|_| closed())?;
            let (reply, rx) = oneshot::channel();
            let assigned = {
                let mut s = lock_seqs(&seqs);
                s.ticket += 1;
                let ticket = s.ticket;
                let mut assigned = Vec::with_capacity(batch.len());
                for append in &batch {
                    let seq = s.assign(&append.group);
                    assigned.push(seq);
                    match s.inflight.last_mut() {
                        Some((t, g, _, last)) if *t == ticket && *g == append.group && *last + 1 == seq => {
                            *last = seq;
                        }
                        _ => s.inflight.push((ticket, append.group.clone(), seq, seq)),
                    }
                }
                permit.send(Command::Append(Staging {
                    batch,
                    seqs: assigned.clone(),
                    ticket,
                    reply,
                    queued: Instant::now(),
                }));
                assigned
            };
            Ok(Staged {
                seqs: assigned,
                done: Box::pin(async move { rx.await.unwrap_or_else(|_| Err(closed())) }),
            })
        })
    }

    fn committed_below(&self, group: &str) -> u64 {
        let s = lock_seqs(&self.seqs);
        let staged =
            s.inflight.iter().filter(|(_, g, ..)| &**g == group).map(|(_, _, first, _)| *first).min();
        staged.unwrap_or_else(|| s.next.get(group).copied().unwrap_or(1))
    }

    fn remove(&self, group: &str, seqs: Vec<u64>) {
        self.gather(&self.removals, group, seqs);
    }

    fn dead_letter(&self, group: &str, seqs: Vec<u64>) {
        self.gather(&self.dead, group, seqs);
    }

    fn read_dead(&self, group: &str, from: u64, max: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let db = &self.db;
        let Some(table) = db.read_table(DEAD)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.range((group, from)..=(group, u64::MAX)).map_err(|e| db.err(e))?.take(max) {
            let (k, v) = entry.map_err(|e| db.err(e))?;
            let v = v.value();
            let Some((since, record)) = v.split_first_chunk::<8>() else { continue };
            out.push(DeadLetter {
                seq: k.value().1,
                dead_since_ms: u64::from_le_bytes(*since),
                record: record.to_vec(),
            });
        }
        Ok(out)
    }

    fn requeue_dead(&self, group: &str) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let (tx, group) = (self.tx.clone(), group.to_string());
        Box::pin(async move {
            tx.send(Command::Requeue(group, reply)).await.map_err(|_| closed())?;
            rx.await.unwrap_or_else(|_| Err(closed()))
        })
    }

    fn purge_dead(&self, group: &str, before_ms: Option<u64>) -> BoxFuture<'static, Result<u64, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let (tx, group) = (self.tx.clone(), group.to_string());
        Box::pin(async move {
            tx.send(Command::PurgeDead(group, before_ms, reply)).await.map_err(|_| closed())?;
            rx.await.unwrap_or_else(|_| Err(closed()))
        })
    }

    fn dead_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
        let db = &self.db;
        let Some(table) = db.read_table(DEAD)? else {
            return Ok(HashMap::new());
        };
        let mut out: HashMap<String, u64> = HashMap::new();
        for entry in table.iter().map_err(|e| db.err(e))? {
            let (k, _) = entry.map_err(|e| db.err(e))?;
            *out.entry(k.value().0.to_string()).or_default() += 1;
        }
        Ok(out)
    }

    fn clear(&self, group: &str) -> BoxFuture<'static, Result<u64, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let (tx, group) = (self.tx.clone(), group.to_string());
        Box::pin(async move {
            tx.send(Command::Clear(group, reply)).await.map_err(|_| closed())?;
            rx.await.unwrap_or_else(|_| Err(closed()))
        })
    }

    fn read_from(&self, group: &str, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let db = &self.db;
        let Some(table) = db.read_table(QUEUE)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in table.range((group, from)..=(group, u64::MAX)).map_err(|e| db.err(e))?.take(max) {
            let (k, v) = entry.map_err(|e| db.err(e))?;
            out.push((k.value().1, v.value().to_vec()));
        }
        Ok(out)
    }

    fn read(&self, group: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let db = &self.db;
        let Some(table) = db.read_table(QUEUE)? else {
            return Ok(None);
        };
        let value = table.get((group, seq)).map_err(|e| db.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn extents(&self) -> Result<HashMap<String, Extent>, StoreError> {
        let db = &self.db;
        let Some(table) = db.read_table(QUEUE)? else {
            return Ok(HashMap::new());
        };
        let mut out: HashMap<String, Extent> = HashMap::new();
        // One pass over all keys: start-up only.
        for entry in table.iter().map_err(|e| db.err(e))? {
            let (k, _) = entry.map_err(|e| db.err(e))?;
            let (group, seq) = k.value();
            let e = out.entry(group.to_string()).or_insert(Extent { count: 0, first: seq, next: seq + 1 });
            e.count += 1;
            e.first = e.first.min(seq);
            e.next = e.next.max(seq + 1);
        }
        Ok(out)
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(Command::Flush)
    }

    fn close(&self) -> BoxFuture<'static, Result<(), StoreError>> {
        self.request(Command::Close)
    }
}

impl RedbQueue {
    /// Adds `seqs` to what the writer takes in its next commit.
    fn gather(&self, pending: &Removals, group: &str, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        let first = pending.is_empty();
        match pending.get_mut(group) {
            Some(p) => p.extend(seqs),
            None => drop(pending.insert(Arc::from(group), seqs)),
        }
        drop(pending);
        if first {
            // One wake per commit is enough: the writer takes everything pending at once.
            let _ = self.tx.try_send(Command::Wake);
        }
    }

    fn request(
        &self,
        command: fn(oneshot::Sender<Result<(), StoreError>>) -> Command,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.clone();
        Box::pin(async move {
            tx.send(command(reply)).await.map_err(|_| closed())?;
            rx.await.unwrap_or_else(|_| Err(closed()))
        })
    }
}

struct Writer {
    db: Arc<Db>,
    /// Seq assignment, shared with the stagers.
    seqs: Arc<Mutex<Seqs>>,
    /// A commit with appends starts at most this often.
    commit_interval: std::time::Duration,
    stats: Arc<StoreStats>,
    removals: Arc<Removals>,
    dead: Arc<Removals>,
    ids: Weak<Ids>,
    /// Since when commits fail, and when to try reopening the database next.
    broken: Option<Broken>,
    /// When the last commit failure was logged.
    last_log: Option<Instant>,
}

/// The writer's state while commits fail (a full disk, an I/O error).
struct Broken {
    since: Instant,
    next_reopen: Instant,
    /// Commits that failed or were refused since `since`.
    failures: u64,
    /// Failures not yet reported in a log line.
    unlogged: u64,
    /// Reopened since the last failure: the next commit may try.
    reopened: bool,
}

/// How often a writer whose commits fail tries to reopen the database: each try may run redb's
/// recovery over the whole file, and a full disk is not freed in milliseconds.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// At most one log line per this period while commits keep failing, with the count of those
/// left out: a full disk must not also flood the log (which is often on the same disk).
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes what else is queued, up to [`MAX_COMMANDS_PER_COMMIT`].
fn drain(rx: &mut mpsc::Receiver<Command>, commands: &mut Vec<Command>) {
    while commands.len() < MAX_COMMANDS_PER_COMMIT {
        match rx.try_recv() {
            Ok(c) => commands.push(c),
            Err(_) => break,
        }
    }
}

/// Sequence numbers taken from [`Removals`] for one commit.
type Taken = HashMap<Arc<str>, Vec<u64>>;

/// Settlements taken for one commit (see `Writer::take_settled`).
#[derive(Default)]
struct Settled {
    stored: Taken,
    staged_now: Taken,
    staged_later: Taken,
}

impl Settled {
    /// What this commit took (to give back if it fails), and what waits for a later one.
    fn into_parts(self) -> (Taken, Taken) {
        let mut taken = self.stored;
        for (group, seqs) in self.staged_now {
            taken.entry(group).or_default().extend(seqs);
        }
        (taken, self.staged_later)
    }
}

/// Puts sequence numbers of a failed commit back, for the next one.
fn give_back(pending: &Removals, taken: Taken) {
    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    for (group, seqs) in taken {
        pending.entry(group).or_default().extend(seqs);
    }
}

/// How to answer one command once its commit is known.
enum Reply {
    /// When the append was queued.
    Append(oneshot::Sender<Result<(), StoreError>>, Instant),
    Clear(oneshot::Sender<Result<u64, StoreError>>, u64),
    Requeue(oneshot::Sender<Result<Vec<u64>, StoreError>>, Vec<u64>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// The start of a newly reserved id block.
    Ids(Arc<Ids>, u64),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut commands = Vec::new();
        let mut close = None;
        // Only for the idle timer of `next`; the writer thread runs nothing else on it.
        let timer = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::error!(error = %e, "No timer for the queue writer: removals become durable with the next append only");
                None
            }
        };
        // Whether the last commit left removals without an fsync.
        let mut unsynced = false;
        // When the last commit with appends started.
        let mut last_append_commit: Option<Instant> = None;
        loop {
            let broken = self.broken.is_some();
            let first = match (&timer, unsynced || broken) {
                (Some(timer), true) => {
                    // A broken store is reopened even while nothing is written, so that the
                    // groups can read again; only a commit tells whether it is writable.
                    let wait = if broken { REOPEN_EVERY } else { IDLE_SYNC };
                    // The timeout is made inside the runtime, whose timer it needs.
                    match timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                        Ok(command) => command,
                        Err(_) if broken => {
                            // Failures are logged by the commits; a reopen that fails is tried
                            // again a second later.
                            let _ = self.recover();
                            continue;
                        }
                        Err(_) => {
                            // Idle with removals not yet durable: an empty commit with fsync.
                            let (reply, _rx) = oneshot::channel();
                            Some(Command::Flush(reply))
                        }
                    }
                }
                _ => rx.blocking_recv(),
            };
            let Some(first) = first else { break };
            commands.push(first);
            drain(&mut rx, &mut commands);
            if commands.iter().any(|c| matches!(c, Command::Append(_))) {
                // Appends commit at most once per interval: what arrives meanwhile shares the
                // commit (and its fsync). Consumers do not wait for it (they get staged
                // messages at once), only the PUBACKs do.
                let now = Instant::now();
                if let Some(wait) =
                    last_append_commit.and_then(|at| (at + self.commit_interval).checked_duration_since(now))
                {
                    std::thread::sleep(wait);
                    drain(&mut rx, &mut commands);
                }
                last_append_commit = Some(Instant::now());
            }
            if let Some(timer) = &timer {
                if self.only_removals(&commands) {
                    // Removals alone need no fsync and nobody waits for them: gather more of
                    // them, or ride along with the next append, instead of one commit each.
                    let next =
                        timer.block_on(async { tokio::time::timeout(REMOVAL_GATHER, rx.recv()).await });
                    if let Ok(Some(command)) = next {
                        commands.push(command);
                        drain(&mut rx, &mut commands);
                    }
                }
            }
            // A close ends the loop after this commit; what follows it is refused.
            if let Some(i) = commands.iter().position(|c| matches!(c, Command::Close(_))) {
                let rest = commands.split_off(i + 1);
                if let Some(Command::Close(reply)) = commands.pop() {
                    close = Some(reply);
                }
                let (reply, _rx) = oneshot::channel();
                commands.push(Command::Flush(reply));
                self.commit(&mut commands);
                drop(rest);
                break;
            }
            if let Some(durable) = self.commit(&mut commands) {
                unsynced = !durable;
            }
        }
        if close.is_none() {
            // Last handle gone: make the removals since the last fsync durable.
            let (reply, _rx) = oneshot::channel();
            commands.push(Command::Flush(reply));
            self.commit(&mut commands);
        }
        rx.close();
        if let Some(ids) = self.ids.upgrade().filter(|ids| ids.wants_block()) {
            ids.reserved(Err(StoreError::Closed.to_string()));
        }
        let db = self.db;
        drop(db);
        if let Some(reply) = close {
            let _ = reply.send(Ok(()));
        }
        tracing::debug!("Queue writer stopped");
    }

    /// Whether `commands` only say that removals are waiting (no answer is due and no id
    /// block is wanted).
    fn only_removals(&self, commands: &[Command]) -> bool {
        commands.iter().all(|c| matches!(c, Command::Wake))
            && self.broken.is_none()
            && !self.ids.upgrade().is_some_and(|ids| ids.wants_block())
    }

    /// Commits `commands`; returns whether the commit was fsynced, or `None` when it failed.
    ///
    /// A failed commit stores nothing: its appends and clears are answered with the error (so
    /// no PUBACK is sent), its removals are kept for the next commit. redb refuses everything
    /// after a failed write until the database is reopened, so the writer reopens it, at most
    /// once per [`REOPEN_EVERY`], refusing commits meanwhile; once the disk has room again the
    /// reopen and the commits succeed.
    fn commit(&mut self, commands: &mut Vec<Command>) -> Option<bool> {
        if let Err(e) = self.recover() {
            self.fail(commands, &e);
            return None;
        }
        let tickets: Vec<u64> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Append(staging) => Some(staging.ticket),
                _ => None,
            })
            .collect();
        let mut replies = Vec::with_capacity(commands.len());
        let started = Instant::now();
        let removals = self.take_settled(&self.removals, &tickets);
        let dead = self.take_settled(&self.dead, &tickets);
        let result = self.apply(commands.drain(..), &removals, &dead, &mut replies);
        // Settlements of messages whose appends are in a later commit wait for it.
        let (removals, later) = removals.into_parts();
        give_back(&self.removals, later);
        let (dead, later) = dead.into_parts();
        give_back(&self.dead, later);
        match result {
            Ok(durable) => {
                if let Some(broken) = self.broken.take() {
                    self.last_log = None;
                    tracing::warn!(
                        failures = broken.failures,
                        seconds = broken.since.elapsed().as_secs_f64(),
                        "The queue store is writable again; publishes are acknowledged again"
                    );
                }
                let done = Instant::now();
                let commit = if durable { &self.stats.commit_fsync } else { &self.stats.commit_nosync };
                commit.observe(done - started);
                self.settled(&tickets);
                for reply in replies {
                    match reply {
                        Reply::Append(tx, queued) => {
                            self.stats.append.observe(done - queued);
                            drop(tx.send(Ok(())));
                        }
                        Reply::Clear(tx, n) => drop(tx.send(Ok(n))),
                        Reply::Requeue(tx, seqs) => drop(tx.send(Ok(seqs))),
                        Reply::Flush(tx) => drop(tx.send(Ok(()))),
                        Reply::Ids(ids, start) => ids.reserved(Ok(start)),
                    }
                }
                Some(durable)
            }
            Err(e) => {
                // Nothing of this transaction is stored: its seqs are not given out again
                // (consumers may hold them), removals and dead-letter moves wait for the next
                // commit.
                self.settled(&tickets);
                give_back(&self.removals, removals);
                give_back(&self.dead, dead);
                let now = Instant::now();
                let broken = self.broken.get_or_insert(Broken {
                    since: now,
                    next_reopen: now,
                    failures: 0,
                    unlogged: 0,
                    reopened: false,
                });
                broken.reopened = false;
                self.fail_replies(replies, &e);
                None
            }
        }
    }

    /// Takes the settlements gathered in `pending` for a commit of the appends with `tickets`,
    /// in three parts: those of stored messages (applied before the commit's commands, as
    /// they came before them), those of messages staged in this commit (a removal means the
    /// record is not written at all; a dead letter is moved after its append) and those of
    /// messages staged for a later commit (their record is not in the table yet: they wait for
    /// it).
    fn take_settled(&self, pending: &Removals, tickets: &[u64]) -> Settled {
        let taken = std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
        let seqs = lock_seqs(&self.seqs);
        if taken.is_empty() || seqs.inflight.is_empty() {
            return Settled { stored: taken, ..Settled::default() };
        }
        let mut settled = Settled::default();
        for (group, list) in taken {
            for seq in list {
                let part = match seqs.staged_in(&group, seq) {
                    None => &mut settled.stored,
                    Some(t) if tickets.contains(&t) => &mut settled.staged_now,
                    Some(_) => &mut settled.staged_later,
                };
                part.entry(group.clone()).or_default().push(seq);
            }
        }
        // Looked up by binary search while the commit's appends are written.
        for seqs in settled.staged_now.values_mut() {
            seqs.sort_unstable();
        }
        settled
    }

    /// The appends with `tickets` are committed or failed: they are no longer in flight.
    fn settled(&self, tickets: &[u64]) {
        if !tickets.is_empty() {
            lock_seqs(&self.seqs).inflight.retain(|(t, ..)| !tickets.contains(t));
        }
    }

    /// Reopens the database when commits failed and it is time to try; `Err` while it cannot
    /// be used (not yet time, or the reopen failed).
    fn recover(&mut self) -> Result<(), StoreError> {
        let Some(broken) = &mut self.broken else { return Ok(()) };
        if broken.reopened {
            return Ok(());
        }
        let now = Instant::now();
        if now < broken.next_reopen {
            return Err(StoreError::Unavailable { path: self.db.path().to_path_buf() });
        }
        broken.next_reopen = now + REOPEN_EVERY;
        // Reopened is not yet writable: the commit that follows tells (see `commit`).
        self.db.reopen()?;
        broken.reopened = true;
        Ok(())
    }

    /// Answers every command with `e` without a commit.
    fn fail(&mut self, commands: &mut Vec<Command>, e: &StoreError) {
        let mut replies = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Append(staging) => {
                    self.settled(&[staging.ticket]);
                    replies.push(Reply::Append(staging.reply, staging.queued));
                }
                Command::Clear(_, reply) | Command::PurgeDead(_, _, reply) => {
                    replies.push(Reply::Clear(reply, 0))
                }
                Command::Requeue(_, reply) => replies.push(Reply::Requeue(reply, Vec::new())),
                Command::Flush(reply) | Command::Close(reply) => replies.push(Reply::Flush(reply)),
                Command::Wake => {}
            }
        }
        if let Some(ids) = self.ids.upgrade().filter(|ids| ids.wants_block()) {
            ids.reserved(Err(e.to_string()));
        }
        self.fail_replies(replies, e);
    }

    /// Answers `replies` with the failure `e`, counts it and logs it (rate-limited).
    fn fail_replies(&mut self, replies: Vec<Reply>, e: &StoreError) {
        self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
        let refused = replies.iter().filter(|r| matches!(r, Reply::Append(..))).count();
        if let Some(broken) = &mut self.broken {
            broken.failures += 1;
            broken.unlogged += 1;
            let now = Instant::now();
            if self.last_log.is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_EVERY) {
                let suppressed = broken.unlogged - 1;
                broken.unlogged = 0;
                self.last_log = Some(now);
                tracing::error!(
                    error = %e,
                    refused_appends = refused,
                    suppressed,
                    failing_for_secs = broken.since.elapsed().as_secs(),
                    "Queue commit failed: nothing of it is stored, publishes are not acknowledged until the store can be written again (is the disk full?)"
                );
            }
        }
        for reply in replies {
            let err = StoreError::Commit(e.to_string());
            match reply {
                Reply::Append(tx, ..) => drop(tx.send(Err(err))),
                Reply::Clear(tx, _) => drop(tx.send(Err(err))),
                Reply::Requeue(tx, _) => drop(tx.send(Err(err))),
                Reply::Flush(tx) => drop(tx.send(Err(err))),
                Reply::Ids(ids, _) => ids.reserved(Err(e.to_string())),
            }
        }
    }

    fn apply(
        &mut self,
        commands: impl Iterator<Item = Command>,
        removals: &Settled,
        moves: &Settled,
        replies: &mut Vec<Reply>,
    ) -> Result<bool, StoreError> {
        let db = self.db.clone();
        let mut tx = db.redb()?.begin_write().map_err(|e| db.err(e))?;
        let mut durable = false;
        let mut elided = 0u64;
        if let Some(ids) = self.ids.upgrade().filter(|ids| ids.wants_block()) {
            durable = true;
            match ids::reserve(&db, &tx) {
                Ok(start) => replies.push(Reply::Ids(ids, start)),
                Err(e) => {
                    ids.reserved(Err(e.to_string()));
                    return Err(e);
                }
            }
        }
        {
            let mut table = tx.open_table(QUEUE).map_err(|e| db.err(e))?;
            let mut dead = tx.open_table(DEAD).map_err(|e| db.err(e))?;
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                .to_le_bytes();
            // Settlements of stored messages first: they came before this commit's commands (a
            // clear among them must not leave a dead letter undone).
            settle(&db, &mut table, &mut dead, &removals.stored, &moves.stored, &since)?;
            for command in commands {
                match command {
                    Command::Append(staging) => {
                        durable = true;
                        for (append, &seq) in staging.batch.iter().zip(&staging.seqs) {
                            // Settled before its commit (early delivery): its insert and its
                            // removal would cancel out in this transaction, so neither is made.
                            if removals
                                .staged_now
                                .get(&append.group)
                                .is_some_and(|s| s.binary_search(&seq).is_ok())
                            {
                                elided += 1;
                                continue;
                            }
                            table.insert((&*append.group, seq), &*append.record).map_err(|e| db.err(e))?;
                        }
                        replies.push(Reply::Append(staging.reply, staging.queued));
                    }
                    Command::Wake => {}
                    Command::Clear(group, reply) => {
                        durable = true;
                        let mut removed = 0u64;
                        table
                            .retain_in((group.as_str(), 0)..=(group.as_str(), u64::MAX), |_, _| {
                                removed += 1;
                                false
                            })
                            .map_err(|e| db.err(e))?;
                        replies.push(Reply::Clear(reply, removed));
                    }
                    Command::Requeue(group, reply) => {
                        durable = true;
                        let mut records = Vec::new();
                        dead.retain_in((group.as_str(), 0)..=(group.as_str(), u64::MAX), |_, v| {
                            records.push(v.get(8..).unwrap_or_default().to_vec());
                            false
                        })
                        .map_err(|e| db.err(e))?;
                        let mut seqs = Vec::with_capacity(records.len());
                        let group_key: Arc<str> = Arc::from(group.as_str());
                        for record in records {
                            let seq = lock_seqs(&self.seqs).assign(&group_key);
                            table.insert((group.as_str(), seq), record.as_slice()).map_err(|e| db.err(e))?;
                            seqs.push(seq);
                        }
                        replies.push(Reply::Requeue(reply, seqs));
                    }
                    Command::PurgeDead(group, before, reply) => {
                        durable = true;
                        let mut removed = 0u64;
                        dead.retain_in((group.as_str(), 0)..=(group.as_str(), u64::MAX), |_, v| {
                            let since = v.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
                            let keep = before.is_some_and(|before| since >= before);
                            removed += u64::from(!keep);
                            keep
                        })
                        .map_err(|e| db.err(e))?;
                        replies.push(Reply::Clear(reply, removed));
                    }
                    Command::Flush(reply) | Command::Close(reply) => {
                        durable = true;
                        replies.push(Reply::Flush(reply));
                    }
                }
            }
            // Settlements of messages staged in this very commit: the removals were never
            // inserted (above); dead letters are moved after their appends.
            move_to_dead(&db, &mut table, &mut dead, &moves.staged_now, &since)?;
        }
        let durability = if durable { Durability::Immediate } else { Durability::None };
        tx.set_durability(durability).map_err(|e| db.err(e))?;
        tx.commit().map_err(|e| db.err(e))?;
        self.stats.settled_before_commit.fetch_add(elided, Ordering::Relaxed);
        Ok(durable)
    }
}

type QueueTable<'t> = redb::Table<'t, (&'static str, u64), &'static [u8]>;

/// Applies removals and dead-letter moves (stamped `since`) in a write transaction.
fn settle(
    db: &Db,
    table: &mut QueueTable<'_>,
    dead: &mut QueueTable<'_>,
    removals: &Taken,
    moves: &Taken,
    since: &[u8; 8],
) -> Result<(), StoreError> {
    for (group, seqs) in removals {
        for &seq in seqs {
            table.remove((&**group, seq)).map_err(|e| db.err(e))?;
        }
    }
    move_to_dead(db, table, dead, moves, since)
}

/// Moves the records of `moves` from the queue to the dead letters, dated `since`.
fn move_to_dead(
    db: &Db,
    table: &mut QueueTable<'_>,
    dead: &mut QueueTable<'_>,
    moves: &Taken,
    since: &[u8; 8],
) -> Result<(), StoreError> {
    for (group, seqs) in moves {
        for &seq in seqs {
            let Some(record) = table.remove((&**group, seq)).map_err(|e| db.err(e))? else {
                continue;
            };
            let value = [&since[..], record.value()].concat();
            drop(record);
            dead.insert((&**group, seq), value.as_slice()).map_err(|e| db.err(e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(group: &str, body: &str) -> Append {
        Append { group: group.into(), record: Bytes::copy_from_slice(body.as_bytes()) }
    }

    fn reopen(dir: &std::path::Path) -> Arc<Db> {
        // The writer thread finishes its last commit when the handles drop; wait for the file lock.
        loop {
            match Db::open(dir) {
                Ok(db) => break db,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    #[tokio::test]
    async fn ids_are_reserved_ahead_and_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let q = RedbQueue::open(Db::open(dir.path()).unwrap()).unwrap();
            let ids = q.ids().clone();
            let first = ids.try_next().unwrap();
            assert_ne!(first, 0);
            for _ in 1..super::ids::BLOCK / 2 + 1 {
                ids.try_next().unwrap();
            }
            // The writer reserves the next block in its next commit.
            q.flush().await.unwrap();
            let mut last = 0;
            for _ in 0..super::ids::BLOCK {
                let id = ids.try_next().expect("the next block was reserved ahead");
                assert!(id > last);
                last = id;
            }
            last
        };
        let q = RedbQueue::open(reopen(dir.path())).unwrap();
        assert!(q.ids().next().await.unwrap() > last);
    }

    #[tokio::test]
    async fn append_read_remove_clear_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = RedbQueue::open(Db::open(dir.path()).unwrap()).unwrap();
            let seqs = q.append(vec![append("g1", "a"), append("g2", "x"), append("g1", "b")]).await.unwrap();
            assert_eq!(seqs, vec![1, 1, 2]);
            let seqs = q.append(vec![append("g1", "c")]).await.unwrap();
            assert_eq!(seqs, vec![3]);
            let read = q.read_from("g1", 2, 10).unwrap();
            assert_eq!(read, vec![(2, b"b".to_vec()), (3, b"c".to_vec())]);
            q.remove("g1", vec![1]);
            assert_eq!(q.clear("g2").await.unwrap(), 1);
            q.flush().await.unwrap();
            assert_eq!(q.read("g1", 1).unwrap(), None);
            assert_eq!(q.read("g1", 2).unwrap(), Some(b"b".to_vec()));
        }
        let q = RedbQueue::open(reopen(dir.path())).unwrap();
        let extents = q.extents().unwrap();
        assert_eq!(extents.get("g1"), Some(&Extent { count: 2, first: 2, next: 4 }));
        assert!(!extents.contains_key("g2"));
        assert_eq!(q.append(vec![append("g1", "d")]).await.unwrap(), vec![4]);
    }

    #[tokio::test]
    async fn removals_are_fsynced_once_the_writer_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let q = RedbQueue::open(Db::open(dir.path()).unwrap()).unwrap();
        q.append(vec![append("g1", "a")]).await.unwrap();
        let fsyncs = q.stats().commit_fsync.snapshot().count;
        q.remove("g1", vec![1]);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while q.stats().commit_fsync.snapshot().count == fsyncs {
            assert!(Instant::now() < deadline, "no fsync after the removal");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(q.stats().commit_nosync.snapshot().count, 1);
    }

    /// A writer (not running) on a database in `dir` with seqs `staged` of group "g" staged
    /// under ticket 7 and not yet committed.
    fn writer_with_staged(dir: &std::path::Path, staged: std::ops::RangeInclusive<u64>) -> Writer {
        let seqs = Arc::new(Mutex::new(Seqs::default()));
        lock_seqs(&seqs).inflight.push((7, Arc::from("g"), *staged.start(), *staged.end()));
        Writer {
            db: Db::open(dir).unwrap(),
            seqs,
            commit_interval: EARLY_DELIVERY_COMMIT_INTERVAL,
            stats: Arc::default(),
            removals: Arc::default(),
            dead: Arc::default(),
            ids: Weak::new(),
            broken: None,
            last_log: None,
        }
    }

    /// A settlement of a message whose append waits for a later commit waits with it (the
    /// record is not in the table yet); one of this commit's appends or of a committed one does
    /// not.
    #[test]
    fn settlements_of_messages_staged_for_a_later_commit_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_with_staged(dir.path(), 5..=6);
        let pending = Removals::default();
        let fill = |list: Vec<u64>| {
            pending.lock().unwrap().insert(Arc::from("g"), list);
        };
        fill(vec![4, 5, 6, 7]);
        let taken = writer.take_settled(&pending, &[]);
        assert_eq!(taken.stored.get("g"), Some(&vec![4, 7]));
        assert!(taken.staged_now.is_empty());
        assert_eq!(taken.staged_later.get("g"), Some(&vec![5, 6]));
        fill(vec![4, 5]);
        let taken = writer.take_settled(&pending, &[7]);
        assert_eq!(taken.stored.get("g"), Some(&vec![4]));
        assert_eq!(taken.staged_now.get("g"), Some(&vec![5]));
        assert!(taken.staged_later.is_empty());
        writer.settled(&[7]);
        assert!(lock_seqs(&writer.seqs).inflight.is_empty());
    }

    /// A message settled before its commit (early delivery) is neither written nor removed: the
    /// commit holds only the rest of its batch, and a dead letter of the same batch still moves.
    #[test]
    fn messages_settled_before_their_commit_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_with_staged(dir.path(), 1..=4);
        writer.removals.lock().unwrap().insert(Arc::from("g"), vec![3, 1]);
        writer.dead.lock().unwrap().insert(Arc::from("g"), vec![4]);
        let (reply, done) = oneshot::channel();
        let staging = Staging {
            batch: ["a", "b", "c", "d"].iter().map(|body| append("g", body)).collect(),
            seqs: vec![1, 2, 3, 4],
            ticket: 7,
            reply,
            queued: Instant::now(),
        };
        assert_eq!(writer.commit(&mut vec![Command::Append(staging)]), Some(true));
        assert!(done.blocking_recv().unwrap().is_ok());
        let q = RedbQueue::open_with(writer.db.clone(), std::time::Duration::ZERO).unwrap();
        assert_eq!(q.read_from("g", 0, 10).unwrap(), vec![(2, b"b".to_vec())]);
        let dead = q.read_dead("g", 0, 10).unwrap();
        assert_eq!(dead.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![4]);
        assert!(writer.removals.lock().unwrap().is_empty(), "nothing waits for a later commit");
        assert_eq!(writer.stats.settled_before_commit.load(Ordering::Relaxed), 2);
    }

    /// Seqs are given out when staged, in order, and a failed commit's seqs are not given out
    /// again (a consumer may hold them).
    #[tokio::test]
    async fn staging_assigns_seqs_at_once_and_committed_below_follows_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let q = RedbQueue::open_with(Db::open(dir.path()).unwrap(), std::time::Duration::ZERO).unwrap();
        let a = q.stage(vec![append("g1", "a"), append("g1", "b")]).await.unwrap();
        assert_eq!(a.seqs, vec![1, 2]);
        a.done.await.unwrap();
        assert_eq!(q.committed_below("g1"), 3);
        assert_eq!(q.committed_below("other"), 1);
        let b = q.stage(vec![append("g1", "c")]).await.unwrap();
        assert_eq!(b.seqs, vec![3]);
        b.done.await.unwrap();
        assert_eq!(q.read_from("g1", 1, 10).unwrap().len(), 3);
    }
}

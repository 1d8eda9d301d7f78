//! The durable hand-off between ingress and everything after it.
//!
//! `enqueue` puts a message into a bounded queue (waiting while it is full: that is how a slow
//! pipeline slows publishers) and returns a [`Receipt`] that resolves once the message is
//! durably stored for every target consumer group. The ingress sends a QoS 1 PUBACK only then.
//!
//! One task takes messages off the queue in batches (after one round of the runtime, so that the
//! sessions found ready join the batch) and stages each batch for a storage commit
//! ([`Groups::stage`]); a second task answers each batch's receipts, in order, once its commit
//! is known. By default staging waits for the commit (while it runs the next batch gathers and
//! shares the next one); with `[storage] early_delivery` the groups hand the copies to their
//! clients at once and the task goes on with the next batch while the commit runs. Targets come from the server-side subscriptions
//! ([`Subscriptions`], read once per batch) and from the matching SQL rules, whose results the
//! [`forwarding`](crate::forwarding) stages: each consumer group gets its own copy, appended in
//! the same commit, so a PUBACK covers both paths. What the forwarding leaves for later
//! (republishes, failures) runs once the batch is stored.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::downlink::Downlink;
use crate::forwarding::{self, AfterCommit, Forwarder};
use crate::groups::{Commit, Groups};
use crate::message::thing::Body;
use crate::message::{Kind, Message};
use crate::registry::Registry;
use crate::rules::watch::SharedRules;
use crate::rules::EvalContext;
use crate::store::{Append, Ids, StoreError};
use crate::subscriptions::Subscriptions;

/// Messages waiting in the hand-off queue. Together with the per-connection window it bounds
/// what the ingress holds: 8,192 × 256 KiB worst case, a few MiB with typical payloads.
pub const QUEUE_CAPACITY: usize = 8192;
/// Messages one storage commit takes at most.
const BATCH: usize = 4096;

/// Why a message could not be handed off.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandoffError {
    /// The pipeline has shut down.
    #[error("the pipeline is shut down")]
    Closed,
    /// Storage failed; the message is not stored.
    #[error("storing the message failed: {0}")]
    Store(String),
    /// Cluster mode: JetStream did not store the copies after retrying them for 20 s; the
    /// device's connection is dropped without a PUBACK, so that it sends the message again.
    #[error("storing the message failed: {0}")]
    NotReplicated(String),
}

struct Job {
    message: Message,
    /// The parsed platform body of a live thing-model post, shared with the rules.
    body: Option<Arc<Body>>,
    done: oneshot::Sender<Result<(), HandoffError>>,
}

/// Counters of the hand-off.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages stored (whatever their target count).
    pub messages: AtomicU64,
    /// Upstream messages stored.
    pub upstream: AtomicU64,
    /// Status messages stored.
    pub status: AtomicU64,
    /// Lifecycle messages stored.
    pub lifecycle: AtomicU64,
    /// Thing-model history messages stored.
    pub thing_history: AtomicU64,
    /// Tag-change messages stored.
    pub tag_change: AtomicU64,
    /// Copies stored for consumer groups (a message for three groups counts three).
    pub group_copies: AtomicU64,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Job>,
    ids: Arc<Ids>,
    stats: Arc<Stats>,
    tap: broadcast::Sender<Message>,
}

/// Messages a tap buffers before a slow reader starts missing some (it is told how many).
const TAP_CAPACITY: usize = 4096;

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// Resolves when the message is durably stored for every target.
pub struct Receipt(oneshot::Receiver<Result<(), HandoffError>>);

impl Future for Receipt {
    type Output = Result<(), HandoffError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(HandoffError::Closed)))
    }
}

impl Receipt {
    /// A receipt already resolved with `result`: for a publish that stores nothing but must
    /// be answered in its turn.
    pub fn ready(result: Result<(), HandoffError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Self(rx)
    }

    /// The outcome if it is already known.
    pub fn try_result(&mut self) -> Option<Result<(), HandoffError>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(HandoffError::Closed)),
        }
    }
}

impl Pipeline {
    /// Creates the pipeline; run the returned task until it ends (it ends when every
    /// `Pipeline` clone is dropped and the queue is drained).
    pub fn new(
        ids: Arc<Ids>,
        subscriptions: Arc<Subscriptions>,
        groups: Arc<Groups>,
        rules: Arc<SharedRules>,
        registry: Arc<Registry>,
        downlink: Arc<Downlink>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        let (tap, _) = broadcast::channel(TAP_CAPACITY);
        let forwarder = Forwarder::new(groups.clone(), downlink, ids.clone());
        let task =
            run(rx, subscriptions, groups, Rules { rules, registry, forwarder }, stats.clone(), tap.clone());
        (Self { tx, ids, stats, tap }, task)
    }

    /// A new message id; waits only when the ids reserved ahead are used up.
    ///
    /// # Errors
    /// When a new id block cannot be stored.
    pub async fn next_id(&self) -> Result<u64, HandoffError> {
        match self.ids.try_next() {
            Some(id) => Ok(id),
            None => self.ids.next().await.map_err(|e| HandoffError::Store(e.to_string())),
        }
    }

    /// Queues `message`, waiting while the queue is full.
    ///
    /// # Errors
    /// `Closed` after shutdown.
    pub async fn enqueue(&self, message: Message) -> Result<Receipt, HandoffError> {
        self.enqueue_parsed(message, None).await
    }

    /// As [`Pipeline::enqueue`], with the parsed body of a converted live post (from
    /// [`thing::convert`](crate::message::thing::convert)), which the rules then read instead of
    /// parsing the platform payload again.
    ///
    /// # Errors
    /// `Closed` after shutdown.
    pub async fn enqueue_parsed(
        &self,
        message: Message,
        body: Option<Arc<Body>>,
    ) -> Result<Receipt, HandoffError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Job { message, body, done }).await.map_err(|_| HandoffError::Closed)?;
        Ok(Receipt(rx))
    }

    /// Queues `message` and waits until it is stored.
    ///
    /// # Errors
    /// `Closed` after shutdown; `Store` when storing failed.
    pub async fn submit(&self, message: Message) -> Result<(), HandoffError> {
        self.enqueue(message).await?.await
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A copy of every message once it is stored, for tracing and tests. Costs nothing
    /// while no tap is open.
    pub fn tap(&self) -> broadcast::Receiver<Message> {
        self.tap.subscribe()
    }
}

/// What each message of a batch goes through besides the subscriptions.
struct Rules {
    rules: Arc<SharedRules>,
    registry: Arc<Registry>,
    forwarder: Forwarder,
}

impl Rules {
    /// Runs the rules on `message` (whose parsed platform body is `body`, when known) and
    /// stages their results.
    fn apply(
        &self,
        message: &Message,
        body: Option<&Body>,
        appends: &mut Vec<Append>,
        after: &mut AfterCommit,
    ) {
        let rules = self.rules.get();
        if rules.is_empty() {
            return;
        }
        let device = self.registry.device(&message.origin.product_key, &message.origin.device_name);
        let ctx = EvalContext { tags: device.as_ref().map(|d| &d.tags) };
        self.forwarder.stage(rules.evaluate_parsed(message, body, &ctx), message, appends, after);
    }
}

/// Batches staged and waiting for their commit, at most: how far staging may run ahead of the
/// commits (each batch up to [`BATCH`] messages).
const IN_FLIGHT: usize = 64;

/// A staged batch on its way to its PUBACKs.
struct Committing {
    commit: Result<Commit, HandoffError>,
    jobs: Vec<Job>,
    after: AfterCommit,
    copies: u64,
}

fn handoff_error(e: StoreError) -> HandoffError {
    match e {
        StoreError::NotReplicated(why) => HandoffError::NotReplicated(why),
        e => HandoffError::Store(e.to_string()),
    }
}

async fn run(
    rx: mpsc::Receiver<Job>,
    subscriptions: Arc<Subscriptions>,
    groups: Arc<Groups>,
    rules: Rules,
    stats: Arc<Stats>,
    tap: broadcast::Sender<Message>,
) {
    // With early delivery staging runs ahead of the commits: a batch is handed to its groups
    // (and their clients) at once, and the next batch is staged while it commits; its PUBACKs
    // wait for the commit.
    let (committing, acks) = mpsc::channel(IN_FLIGHT);
    tokio::join!(
        stage(rx, &subscriptions, &groups, &rules, committing),
        acknowledge(acks, &rules.forwarder, &stats, &tap)
    );
    rules.forwarder.finish().await;
    tracing::debug!("Pipeline drained");
}

/// Takes messages off the queue in batches, runs the rules and subscriptions on them and stages
/// every copy.
async fn stage(
    mut rx: mpsc::Receiver<Job>,
    subscriptions: &Subscriptions,
    groups: &Groups,
    rules: &Rules,
    committing: mpsc::Sender<Committing>,
) {
    let mut appends = Vec::new();
    loop {
        let mut jobs = Vec::new();
        if rx.recv_many(&mut jobs, BATCH).await == 0 {
            break;
        }
        // Once round the runtime first: the sessions it finds ready hand over theirs, and the
        // batch shares one staging, one wake of each group and one write to each consumer.
        // Under load that makes batches without a timer; idle, it costs one poll.
        tokio::task::yield_now().await;
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut after = AfterCommit::default();
        // Read once per batch: a subscription edit applies from the next batch on.
        let routes = subscriptions.routes();
        for job in &jobs {
            rules.apply(&job.message, job.body.as_deref(), &mut appends, &mut after);
            let payload = job.message.forwarded().1;
            for group in routes.targets(&job.message) {
                appends.push(forwarding::amqp::copy(
                    group.clone(),
                    job.message.id,
                    &job.message,
                    None,
                    payload,
                ));
            }
        }
        let copies = appends.len() as u64;
        let commit = groups.stage(std::mem::take(&mut appends)).await.map_err(handoff_error);
        if committing.send(Committing { commit, jobs, after, copies }).await.is_err() {
            break;
        }
    }
}

/// Answers each staged batch's messages, in order, once its commit is known.
async fn acknowledge(
    mut acks: mpsc::Receiver<Committing>,
    forwarder: &Forwarder,
    stats: &Stats,
    tap: &broadcast::Sender<Message>,
) {
    while let Some(Committing { commit, jobs, mut after, copies }) = acks.recv().await {
        let result = match commit {
            Ok(commit) => commit.await.map_err(handoff_error),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            stats.group_copies.fetch_add(copies, Ordering::Relaxed);
            forwarder.after_commit(&mut after);
        } else {
            // Nothing was acknowledged: the devices send again, and the rules run again.
            after.clear();
        }
        for job in jobs {
            if result.is_ok() {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                let by_kind = match job.message.kind {
                    Kind::Upstream => &stats.upstream,
                    Kind::Status => &stats.status,
                    Kind::Lifecycle => &stats.lifecycle,
                    Kind::ThingHistory => &stats.thing_history,
                    Kind::TagChange => &stats.tag_change,
                };
                by_kind.fetch_add(1, Ordering::Relaxed);
                if tap.receiver_count() > 0 {
                    let _ = tap.send(job.message.clone());
                }
            }
            // The publisher may be gone (connection closed): nothing to tell then.
            let _ = job.done.send(result.clone());
        }
    }
}

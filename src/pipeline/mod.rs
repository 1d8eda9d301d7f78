//! The durable hand-off between ingress and everything after it.
//!
//! `enqueue` puts a message into a bounded queue (waiting while it is full: that is how a slow
//! pipeline slows publishers) and returns a [`Receipt`] that resolves once the message is
//! durably stored for every target consumer group. The ingress sends a QoS 1 PUBACK only then.
//!
//! One task takes messages off the queue in batches, so a batch can share one storage commit.
//! Targets come from the server-side subscriptions ([`Subscriptions`], read once per batch) and from the `amqp` actions of
//! matching SQL rules; each target gets its own copy, appended in the same commit, so a PUBACK
//! covers both paths. `republish` actions run once the batch is stored. Failed actions are
//! retried with backoff and then reach the rule's error action ([`retry`]).

mod retry;
mod routes;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{broadcast, mpsc, oneshot};

pub use routes::Routes;

use crate::groups::Groups;
use crate::ingress::Broker;
use crate::message::{Kind, Message};
use crate::registry::Registry;
use crate::rules::action::Action;
use crate::rules::context::EvalContext;
use crate::rules::row::Row;
use crate::rules::rule::Rule;
use crate::rules::watch::SharedRules;
use crate::store::{Append, Ids, StoredMessage};
use crate::subscriptions::Subscriptions;
use retry::{Destinations, Failure, Retries, Target};

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
}

struct Job {
    message: Message,
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
        broker: Arc<Broker>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        let (tap, _) = broadcast::channel(TAP_CAPACITY);
        let retries =
            Retries::new(Destinations { groups: groups.clone(), broker: broker.clone(), ids: ids.clone() });
        let forwarding = Forwarding { rules, registry, broker, ids: ids.clone(), retries };
        let task = run(rx, subscriptions, groups, forwarding, stats.clone(), tap.clone());
        (Self { tx, ids, stats, tap }, task)
    }

    /// A new message id.
    ///
    /// # Errors
    /// When a new id block cannot be stored.
    pub fn next_id(&self) -> Result<u64, HandoffError> {
        self.ids.next().map_err(|e| HandoffError::Store(e.to_string()))
    }

    /// Queues `message`, waiting while the queue is full.
    ///
    /// # Errors
    /// `Closed` after shutdown.
    pub async fn enqueue(&self, message: Message) -> Result<Receipt, HandoffError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Job { message, done }).await.map_err(|_| HandoffError::Closed)?;
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

/// What the rules need besides the message.
struct Forwarding {
    rules: Arc<SharedRules>,
    registry: Arc<Registry>,
    broker: Arc<Broker>,
    ids: Arc<Ids>,
    retries: Retries,
}

/// A republish to do once the batch is stored.
struct Republish {
    rule: Arc<Rule>,
    /// Index of the action in the rule.
    action: usize,
    topic: String,
    payload: bytes::Bytes,
    /// Index of the message in the batch.
    job: usize,
    row: Row,
}

/// What the rules of one batch leave to do after its commit.
#[derive(Default)]
struct After {
    republish: Vec<Republish>,
    failures: Vec<Failure>,
}

impl After {
    fn clear(&mut self) {
        self.republish.clear();
        self.failures.clear();
    }
}

impl Forwarding {
    /// Runs the rules on `message` (number `job` of the batch): amqp actions become appends in
    /// this batch's commit, republish actions and failures wait for it in `after`.
    fn apply(
        &self,
        groups: &Groups,
        job: usize,
        message: &Message,
        appends: &mut Vec<Append>,
        after: &mut After,
    ) {
        let rules = self.rules.get();
        if rules.is_empty() {
            return;
        }
        let device = self.registry.device(&message.origin.product_key, &message.origin.device_name);
        let ctx = EvalContext { tags: device.as_ref().map(|d| &d.tags) };
        for output in rules.evaluate(message, &ctx) {
            let payload = output.raw.clone().unwrap_or_else(|| bytes::Bytes::from(output.row.to_json()));
            for (i, action) in output.rule.actions.iter().enumerate() {
                let failed = |target, error: String, retriable| Failure {
                    rule: output.rule.clone(),
                    action: action.to_string(),
                    target,
                    payload: payload.clone(),
                    message: message.clone(),
                    row: output.row.clone(),
                    error,
                    retriable,
                };
                match action {
                    Action::Amqp { group, tag } => {
                        let tag = tag.as_ref().and_then(|t| t.render(&output.row, message));
                        if !groups.exists(group) {
                            let error = format!("consumer group {group} does not exist");
                            after.failures.push(failed(
                                Target::Amqp { group: group.clone(), tag },
                                error,
                                true,
                            ));
                            continue;
                        }
                        let id = match self.ids.next() {
                            Ok(id) => id,
                            Err(e) => {
                                let error = format!("no message id: {e}");
                                let target = Target::Amqp { group: group.clone(), tag };
                                after.failures.push(failed(target, error, true));
                                continue;
                            }
                        };
                        let record = StoredMessage {
                            id,
                            generate_time_ms: message.received_at_ms,
                            topic: message.forwarded().0.to_string(),
                            tag,
                            payload: payload.clone(),
                        };
                        appends.push(Append { group: Arc::from(group.as_str()), record: record.encode() });
                        output.rule.metrics.action(true);
                    }
                    Action::Republish { topic } => {
                        let rendered = topic
                            .render(&output.row, message)
                            .ok_or_else(|| "the republish topic template has a missing field".to_string())
                            .and_then(|t| retry::check_topic(&t).map(|()| t));
                        match rendered {
                            Ok(topic) => after.republish.push(Republish {
                                rule: output.rule.clone(),
                                action: i,
                                topic,
                                payload: payload.clone(),
                                job,
                                row: output.row.clone(),
                            }),
                            Err(error) => {
                                let target = Target::Republish { topic: topic.to_string() };
                                after.failures.push(failed(target, error, false));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Once the batch is stored: republishes, and failures go to the retry queue.
    fn after_commit(&self, batch: &[Job], after: &mut After) {
        for r in after.republish.drain(..) {
            match self.broker.publish(&r.topic, r.payload.clone()) {
                Ok(()) => r.rule.metrics.action(true),
                Err(e) => self.retries.failed(Failure {
                    action: r.rule.actions[r.action].to_string(),
                    rule: r.rule,
                    target: Target::Republish { topic: r.topic },
                    payload: r.payload,
                    message: batch[r.job].message.clone(),
                    row: r.row,
                    error: e.to_string(),
                    retriable: true,
                }),
            }
        }
        for f in after.failures.drain(..) {
            self.retries.failed(f);
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    subscriptions: Arc<Subscriptions>,
    groups: Arc<Groups>,
    forwarding: Forwarding,
    stats: Arc<Stats>,
    tap: broadcast::Sender<Message>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut appends = Vec::new();
    let mut after = After::default();
    // While one batch commits, the next one gathers in the queue: group commit without a timer.
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Read once per batch: a subscription edit applies from the next batch on.
        let routes = subscriptions.routes();
        for (i, job) in batch.iter().enumerate() {
            forwarding.apply(&groups, i, &job.message, &mut appends, &mut after);
            let targets = routes.targets(&job.message);
            if targets.is_empty() {
                continue;
            }
            let (topic, payload) = job.message.forwarded();
            let record = StoredMessage {
                id: job.message.id,
                generate_time_ms: job.message.received_at_ms,
                topic: topic.to_string(),
                tag: None,
                payload: payload.clone(),
            }
            .encode();
            for group in targets {
                appends.push(Append { group: group.clone(), record: record.clone() });
            }
        }
        let copies = appends.len() as u64;
        let result =
            groups.append(std::mem::take(&mut appends)).await.map_err(|e| HandoffError::Store(e.to_string()));
        if result.is_ok() {
            stats.group_copies.fetch_add(copies, Ordering::Relaxed);
            forwarding.after_commit(&batch, &mut after);
        } else {
            // Nothing was acknowledged: the devices send again, and the rules run again.
            after.clear();
        }
        for job in batch.drain(..) {
            if result.is_ok() {
                stats.messages.fetch_add(1, Ordering::Relaxed);
                let by_kind = match job.message.kind {
                    Kind::Upstream => &stats.upstream,
                    Kind::Status => &stats.status,
                    Kind::Lifecycle => &stats.lifecycle,
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
    forwarding.retries.finish().await;
    tracing::debug!("Pipeline drained");
}

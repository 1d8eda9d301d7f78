//! The queue boundary at the level of consumer-group semantics: what a group does, whatever
//! keeps its messages.
//!
//! [`GroupQueues`] appends copies durably for many groups at once (resolving when every copy is
//! stored: what a device's PUBACK waits for), lets local clients join a group and take
//! deliveries ([`GroupClient`]), settles each delivery with an [`Outcome`], clears a group,
//! keeps its dead letters and reports its status numbers.
//!
//! Two backends implement it:
//! - [`embedded::EmbeddedQueues`]: one process; delegates to [`crate::groups`] (in-memory
//!   leases, redelivery backoff, group commit on the redb store).
//! - `cluster::jetstream::JetStreamQueues`: several nodes on NATS JetStream; the server owns
//!   the leases (a durable pull consumer per group, shared by every node).
//!
//! `tests/queue_contract.rs` runs one set of cases against both.

pub mod embedded;

use std::net::SocketAddr;

use futures::future::BoxFuture;

pub use crate::groups::{ClientInfo, GroupOptions};
pub use crate::store::{Append, DeadLetter, StoredMessage};

/// How a client settled a delivery (the AMQP outcomes, plus what the connection knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `accepted`: done, removed.
    Accepted,
    /// `released`: delivered again after the message's backoff.
    Released,
    /// `modified`: delivered again after the message's backoff; with `undeliverable_here`, to
    /// another client when the backend can choose one.
    Modified {
        /// The client asked not to get it again.
        undeliverable_here: bool,
    },
    /// `rejected`: moved to the group's dead letters, not delivered again.
    Rejected,
    /// The link or connection went away before an outcome: delivered again at once.
    Lost,
    /// Never sent to the client (no credit in time): delivered again at once.
    Unsent,
}

/// Identifies a delivery within the client it was handed to; settle with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// The backend's first number (the embedded backend: the queue seq).
    pub(crate) a: u64,
    /// The backend's second number (the embedded backend: the lease generation).
    pub(crate) b: u64,
}

/// A message handed to a client.
#[derive(Debug)]
pub struct Handed {
    /// The message.
    pub message: StoredMessage,
    /// Settle with this.
    pub ticket: Ticket,
}

/// A group's status numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStatus {
    /// Stored and not yet accepted, rejected or expired (in-flight messages included):
    /// `accumulatedCount`.
    pub accumulated: u64,
    /// Handed to a client and not yet settled.
    pub in_flight: u64,
    /// Messages in the dead letters: `deadLetterCount`.
    pub dead_letters: u64,
    /// Epoch ms of the last accept: `lastConsumptionTime`.
    pub last_consumption_ms: Option<u64>,
    /// Accepts settled through this process since it started.
    pub accepted: u64,
    /// Accepts in the last 60 s: `consumptionRate` (messages/min).
    pub consumption_rate_per_minute: u64,
    /// The group's online clients (this node's, in a cluster so far).
    pub online_clients: Vec<ClientInfo>,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No such group.
    #[error("consumer group {0} does not exist")]
    NotFound(String),
    /// The group has its maximum of online clients.
    #[error("consumer group {group} already has {limit} online clients, the maximum")]
    Full {
        /// Group id.
        group: String,
        /// The limit.
        limit: usize,
    },
    /// The embedded store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The distributed backend failed (the message says what and where).
    #[error("{0}")]
    Backend(String),
}

/// Consumer-group queues: the operations a group needs from whatever keeps its messages.
pub trait GroupQueues: Send + Sync + 'static {
    /// A short name for logs and test reports (`embedded`, `jetstream`).
    fn backend(&self) -> &'static str;

    /// Whether appending copies that were already stored (same message id, same group, within
    /// the backend's window) stores them once. The embedded backend's appends are all or
    /// nothing and never retried, so it does not need to.
    fn dedupes_appends(&self) -> bool;

    /// Makes the group's queue exist (idempotent) and applies its delivery options (the
    /// embedded backend's groups hold their own). Groups themselves are managed elsewhere.
    fn ensure_group(&self, group: &str, options: GroupOptions) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Stores every copy durably; resolves when all are stored (nothing of a failed append
    /// counts as acknowledged).
    fn append(&self, batch: Vec<Append>) -> BoxFuture<'_, Result<(), QueueError>>;

    /// A local client joins `group`; deliveries come through the returned handle, and dropping
    /// it puts the client's unsettled messages back.
    fn join(
        &self,
        group: &str,
        client_id: &str,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Box<dyn GroupClient>, QueueError>>;

    /// Drops every stored message of the group (in-flight ones included); resolves with how
    /// many. Dead letters stay.
    fn clear(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// The group's status numbers.
    fn status(&self, group: &str) -> BoxFuture<'_, Result<QueueStatus, QueueError>>;

    /// Up to `max` dead letters of the group from position `from` on, oldest first.
    fn dead_letters(
        &self,
        group: &str,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>>;

    /// Moves every dead letter back to the end of the queue (same message ids); resolves with
    /// how many.
    fn requeue_dead_letters(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Drops the group's dead letters; resolves with how many.
    fn purge_dead_letters(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Drops the group's queue and dead letters (the group is being deleted): its clients'
    /// deliveries end (`next` gives `None`). Idempotent.
    fn remove_group(&self, group: &str) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Whether the backend can serve now: `Err` says why not (for `/healthz`).
    fn health(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Makes everything durable and stops.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// One local client of a group.
pub trait GroupClient: Send {
    /// The next delivery; `None` when the group is gone or the backend stopped. Cancel-safe:
    /// dropping the future loses nothing.
    fn next(&mut self) -> BoxFuture<'_, Option<Handed>>;

    /// Settles a delivery. A settlement of a delivery whose lease ended (ack timeout, clear) is
    /// ignored, except that a late accept may still consume the message.
    fn settle(&mut self, ticket: Ticket, outcome: Outcome) -> BoxFuture<'_, ()>;
}

//! The embedded backend: one process, the redb store with group commit, leases in memory.
//! Everything is delegated to [`Groups`], [`Group`](crate::groups::Group) and [`Membership`];
//! this file only translates.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{Append, DeadLetter, GroupClient, GroupQueues, Handed, Outcome, QueueError, QueueStatus, Ticket};
use crate::groups::{GroupOptions, Groups, JoinError, Membership, Settings, Settlement};
use crate::store::{Db, QueueStore, RedbQueue};

/// Consumer-group queues in this process.
#[derive(Debug)]
pub struct EmbeddedQueues {
    groups: Arc<Groups>,
}

impl EmbeddedQueues {
    /// Over groups already started (the server's).
    pub fn new(groups: Arc<Groups>) -> Arc<Self> {
        Arc::new(Self { groups })
    }

    /// Opens the store in `dir` and starts the groups found there (`DEFAULT_GROUP` included):
    /// a stand-alone backend for tests and tools.
    ///
    /// # Errors
    /// When the store cannot be opened or read.
    pub fn open(dir: &Path, settings: Settings) -> Result<Arc<Self>, QueueError> {
        let db = Db::open(dir)?;
        let store: Arc<dyn QueueStore> = RedbQueue::open(db.clone())?;
        let groups = Groups::start(&[], store, settings, db)?;
        Ok(Self::new(groups))
    }

    /// The groups behind this backend.
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    fn group(&self, id: &str) -> Result<Arc<crate::groups::Group>, QueueError> {
        self.groups.get(id).ok_or_else(|| QueueError::NotFound(id.to_string()))
    }
}

impl GroupQueues for EmbeddedQueues {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn dedupes_appends(&self) -> bool {
        false
    }

    fn ensure_group(&self, group: &str, options: GroupOptions) -> BoxFuture<'_, Result<(), QueueError>> {
        let result = if self.groups.exists(group) {
            Ok(())
        } else {
            // Named by its id: the embedded backend's groups normally come from `Groups::create`
            // with their own names; this serves stand-alone use.
            self.groups
                .create(group, Some(group), options)
                .map(|_| ())
                .map_err(|e| QueueError::Backend(format!("creating consumer group {group}: {e}")))
        };
        futures::future::ready(result).boxed()
    }

    fn append(&self, batch: Vec<Append>) -> BoxFuture<'_, Result<(), QueueError>> {
        async move { Ok(self.groups.append(batch).await?) }.boxed()
    }

    fn join(
        &self,
        group: &str,
        client_id: &str,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Box<dyn GroupClient>, QueueError>> {
        let result = self.group(group).and_then(|g| {
            g.join(client_id, peer)
                .map(|membership| Box::new(EmbeddedClient { membership }) as Box<dyn GroupClient>)
                .map_err(|JoinError::Full { group, limit }| QueueError::Full { group, limit })
        });
        futures::future::ready(result).boxed()
    }

    fn clear(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let group = self.group(group);
        async move { Ok(group?.clear().await?) }.boxed()
    }

    fn status(&self, group: &str) -> BoxFuture<'_, Result<QueueStatus, QueueError>> {
        let result = self.group(group).map(|g| {
            let s = g.status();
            QueueStatus {
                accumulated: s.accumulated,
                in_flight: s.in_flight,
                dead_letters: s.dead_letters,
                last_consumption_ms: s.last_consumption_ms,
                accepted: g.counters.acked.load(Ordering::Relaxed),
                consumption_rate_per_minute: s.consumption_rate_per_minute,
                online_clients: s.online_clients,
            }
        });
        futures::future::ready(result).boxed()
    }

    fn dead_letters(
        &self,
        group: &str,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>> {
        let result = self
            .group(group)
            .and_then(|g| Ok(g.dead_letters(from, max)?.into_iter().map(|(letter, _)| letter).collect()));
        futures::future::ready(result).boxed()
    }

    fn requeue_dead_letters(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let group = self.group(group);
        async move { Ok(group?.requeue_dead_letters().await?) }.boxed()
    }

    fn purge_dead_letters(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let group = self.group(group);
        async move { Ok(group?.purge_dead_letters(None).await?) }.boxed()
    }

    fn remove_group(&self, group: &str) -> BoxFuture<'_, Result<(), QueueError>> {
        let group = group.to_string();
        async move {
            // `Groups::delete` drops the group's messages and ends its clients; through the API
            // it has already run.
            if !self.groups.exists(&group) {
                return Ok(());
            }
            self.groups
                .delete(&group)
                .await
                .map_err(|e| QueueError::Backend(format!("deleting consumer group {group}: {e}")))
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        // The store reports its own failures (a full disk) through the appends it refuses.
        futures::future::ready(Ok(())).boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.groups.shutdown().boxed()
    }
}

/// A client of an embedded group: its [`Membership`].
struct EmbeddedClient {
    membership: Membership,
}

impl GroupClient for EmbeddedClient {
    fn next(&mut self) -> BoxFuture<'_, Option<Handed>> {
        async move {
            loop {
                let delivery = self.membership.rx.recv().await?;
                // A delivery whose lease ended while it waited here (ack timeout, clear) is
                // not this client's any more.
                if !self.membership.is_current(&delivery) {
                    self.membership.skip();
                    continue;
                }
                return Some(Handed {
                    ticket: Ticket { a: delivery.seq, b: delivery.generation },
                    message: delivery.message,
                });
            }
        }
        .boxed()
    }

    fn settle(&mut self, ticket: Ticket, outcome: Outcome) -> BoxFuture<'_, ()> {
        let how = match outcome {
            Outcome::Accepted => Settlement::Accepted,
            Outcome::Released | Outcome::Modified { undeliverable_here: false } => Settlement::Released,
            Outcome::Modified { undeliverable_here: true } => Settlement::Undeliverable,
            Outcome::Rejected => Settlement::Rejected,
            Outcome::Lost => Settlement::Lost,
            Outcome::Unsent => Settlement::Unsent,
        };
        self.membership.settle(ticket.a, ticket.b, how);
        futures::future::ready(()).boxed()
    }
}

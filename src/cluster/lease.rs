//! A lease in KV: one node at a time does a job (the alert evaluations), and another takes
//! over when it stops (docs/cluster.md, "One alert evaluator").
//!
//! Bucket `{name}_leases`, one key per job holding the holder's node name. Taking the lease is
//! a compare-and-swap: `create` when the key is absent or deleted, or `update` with the
//! revision of an entry older than [`TTL`] (its holder stopped renewing). The holder renews
//! every [`RENEW`] with `update` and the revision it last wrote; a renewal that finds another
//! revision means the lease was lost. The holder counts itself holder only until
//! [`HOLD_FOR`] after the start of its last successful write, shorter than [`TTL`], so that it
//! has stopped before anyone else can take over (assuming the nodes' clocks agree within the
//! difference, 5 s). A node that shuts down deletes the key, and another takes over at its
//! next attempt.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::Client;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::config::ClusterConfig;
use super::ClusterError;
use crate::message::now_ms;

/// How often the holder renews, and the others try to take over.
pub const RENEW: Duration = Duration::from_secs(5);
/// How old an entry must be for another node to take the lease.
pub const TTL: Duration = Duration::from_secs(15);
/// How long after its last successful renewal the holder still acts as holder.
pub const HOLD_FOR: Duration = Duration::from_secs(10);

/// One job's lease, as this node sees it.
pub struct Lease {
    kv: kv::Store,
    key: String,
    node: String,
    /// The revision this node last wrote (0: not holding).
    revision: AtomicU64,
    /// When this node stops acting as holder unless it renews.
    until: Mutex<Option<Instant>>,
    /// Whether this node said it holds the lease (for the log on changes).
    said: AtomicBool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).field("node", &self.node).finish()
    }
}

impl Lease {
    /// Opens the lease `job` (a KV key) for this node and keeps trying to take or renew it
    /// every [`RENEW`] until `shutdown`, then gives it up.
    ///
    /// # Errors
    /// When JetStream refuses the bucket.
    pub async fn start(
        client: Client,
        config: &ClusterConfig,
        node: &str,
        job: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let js = async_nats::jetstream::new(client);
        let kv = super::bucket(
            &js,
            config,
            "leases",
            "iotpipe: who does a job that one node does at a time",
            TTL * 2,
        )
        .await?;
        let this = Arc::new(Self {
            kv,
            key: job.to_string(),
            node: node.to_string(),
            revision: AtomicU64::new(0),
            until: Mutex::new(None),
            said: AtomicBool::new(false),
        });
        let lease = this.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => lease.attempt().await,
                    () = shutdown.cancelled() => break,
                }
            }
            lease.give_up().await;
        });
        Ok(this)
    }

    /// Whether this node holds the lease now.
    pub fn held(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    fn set_until(&self, until: Option<Instant>) {
        *self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = until;
        let holds = until.is_some();
        if self.said.swap(holds, Ordering::AcqRel) != holds {
            if holds {
                tracing::info!(job = %self.key, node = %self.node, "This node holds the lease");
            } else {
                tracing::info!(job = %self.key, node = %self.node, "This node no longer holds the lease");
            }
        }
    }

    /// Renews the lease, or takes it if it is free or stale.
    async fn attempt(&self) {
        let started = Instant::now();
        let value = Bytes::from(self.node.clone());
        let held = self.revision.load(Ordering::Acquire);
        let written = if held > 0 {
            match self.kv.update(&self.key, value, held).await {
                Ok(revision) => Some(revision),
                Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision) => {
                    tracing::warn!(job = %self.key, "The lease was taken by another node");
                    None
                }
                Err(e) => {
                    // Still the holder until HOLD_FOR runs out; the next renewal may work.
                    tracing::warn!(job = %self.key, error = %e, "Renewing the lease failed");
                    return;
                }
            }
        } else {
            self.take(value).await
        };
        match written {
            Some(revision) => {
                self.revision.store(revision, Ordering::Release);
                self.set_until(Some(started + HOLD_FOR));
            }
            None => {
                self.revision.store(0, Ordering::Release);
                self.set_until(None);
            }
        }
    }

    /// Takes the lease if nobody holds it (absent, deleted, or not renewed for [`TTL`]).
    async fn take(&self, value: Bytes) -> Option<u64> {
        let entry = match self.kv.entry(self.key.as_str()).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(job = %self.key, error = %e, "Reading the lease failed");
                return None;
            }
        };
        let stale_before = now_ms().saturating_sub(u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX));
        match entry {
            Some(e) if e.operation == Operation::Put => {
                let written = u64::try_from(e.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                // This node's own entry from before a restart (node names are unique) is taken
                // back at once.
                if written >= stale_before && e.value != self.node.as_bytes() {
                    return None;
                }
                match self.kv.update(&self.key, value, e.revision).await {
                    Ok(revision) => Some(revision),
                    Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision) => None,
                    Err(e) => {
                        tracing::debug!(job = %self.key, error = %e, "Taking over the lease failed");
                        None
                    }
                }
            }
            _ => match self.kv.create(&self.key, value).await {
                Ok(revision) => Some(revision),
                Err(e) if crate::cluster::lost_create_race(&e) => None,
                Err(e) => {
                    tracing::debug!(job = %self.key, error = %e, "Taking the lease failed");
                    None
                }
            },
        }
    }

    /// Gives the lease up (shutdown): another node takes it at its next attempt.
    async fn give_up(&self) {
        let held = self.revision.swap(0, Ordering::AcqRel);
        self.set_until(None);
        if held > 0 {
            if let Err(e) = self.kv.delete_expect_revision(&self.key, Some(held)).await {
                tracing::debug!(job = %self.key, error = %e, "Giving up the lease failed; it expires");
            }
        }
    }
}

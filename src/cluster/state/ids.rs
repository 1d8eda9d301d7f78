//! Message-id blocks reserved from the cluster's `{name}_ids` bucket by compare-and-swap.
//!
//! JetStream deduplicates a group's copies by `Nats-Msg-Id: <messageId>-<groupId>`: two nodes
//! handing out the same message id would lose the second node's message as a "duplicate". So
//! in cluster mode every block of ids comes from one key, `next_block`, whose value is the
//! first id not yet reserved by any node: a node reads it with its revision and writes
//! `start + BLOCK` with that revision expected; a concurrent reservation makes the write fail
//! (wrong last sequence) and the node reads again. A block is used only after its write
//! succeeded, so no two nodes ever hold the same block. A node that stops skips the rest of its
//! block, which costs nothing but gaps.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{Ids, ID_BLOCK};

/// Ids in a block, as on one node.
pub const BLOCK: u64 = ID_BLOCK;

/// The key holding the first id no node has reserved yet.
const KEY: &str = "next_block";
/// How long a reservation keeps trying (conflicts, a stream-leader change of 5-7 s) before it
/// fails; meanwhile the pipeline waits for ids, as it waits for a slow disk.
const RESERVE_FOR: Duration = Duration::from_secs(20);
/// The pause after a failed request (not after a conflict, which retries at once).
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Reserves blocks of [`ID_BLOCK`] ids from the bucket.
#[derive(Debug)]
pub struct IdBlocks {
    kv: Store,
    /// No block starts below this: ids this node handed out from its own store before it
    /// joined a cluster stay unique.
    floor: u64,
}

impl IdBlocks {
    /// Reservations from `kv`, none starting below `floor`.
    pub fn new(kv: Store, floor: u64) -> Self {
        Self { kv, floor: floor.max(1) }
    }

    /// Reserves the next block and returns its first id.
    ///
    /// # Errors
    /// When no reservation succeeded within [`RESERVE_FOR`] (NATS or JetStream unavailable), or
    /// the key holds something that is not a number.
    pub async fn reserve(&self) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + RESERVE_FOR;
        loop {
            match self.try_reserve().await {
                Ok(Some(start)) => return Ok(start),
                // Another node reserved meanwhile: read again at once.
                Ok(None) => {}
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "reserving message ids from the cluster failed for {} s: {e}",
                            RESERVE_FOR.as_secs()
                        ));
                    }
                    tracing::warn!(error = %e, "Reserving message ids from the cluster failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// One read and one conditional write: `Ok(None)` when another node came first.
    async fn try_reserve(&self) -> Result<Option<u64>, Attempt> {
        let entry = self.kv.entry(KEY).await.map_err(|e| Attempt::Retry(e.to_string()))?;
        match entry.filter(|e| e.operation == Operation::Put) {
            Some(entry) => {
                let text = std::str::from_utf8(&entry.value).unwrap_or_default();
                let next: u64 = text.trim().parse().map_err(|_| {
                    Attempt::Fatal(format!("the cluster's message-id key {KEY} holds {text:?}, not a number"))
                })?;
                let start = next.max(self.floor);
                let end = start
                    .checked_add(ID_BLOCK)
                    .ok_or_else(|| Attempt::Fatal("the cluster's message ids are used up".to_string()))?;
                match self.kv.update(KEY, end.to_string().into(), entry.revision).await {
                    Ok(_) => Ok(Some(start)),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                    Err(e) => Err(Attempt::Retry(e.to_string())),
                }
            }
            None => {
                let start = self.floor;
                match self.kv.create(KEY, (start + ID_BLOCK).to_string().into()).await {
                    Ok(_) => Ok(Some(start)),
                    Err(e) if crate::cluster::lost_create_race(&e) => Ok(None),
                    Err(e) => Err(Attempt::Retry(e.to_string())),
                }
            }
        }
    }
}

/// Why one reservation attempt failed.
enum Attempt {
    /// Worth trying again (timeouts, no responders, a leader change).
    Retry(String),
    /// Trying again will not help.
    Fatal(String),
}

/// The id allocator of a cluster node: its first block reserved now, the next ones by a task
/// when half of the current block is used (as the store's writer does on one node).
///
/// # Errors
/// When the first block cannot be reserved.
pub(crate) async fn allocator(
    blocks: IdBlocks,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> Result<Arc<Ids>, String> {
    let first = blocks.reserve().await?;
    let wake = Arc::new(Notify::new());
    let waker = wake.clone();
    // `notify_one` keeps a permit when the task is busy: no request is lost.
    let ids = Arc::new(Ids::new(first, Box::new(move || waker.notify_one())));
    let refill = ids.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
            }
            while refill.wants_block() {
                let reserved = tokio::select! {
                    () = stop.cancelled() => return,
                    r = blocks.reserve() => r,
                };
                if let Err(e) = &reserved {
                    tracing::error!(error = %e, "No message ids: publishes wait or fail until NATS answers");
                }
                refill.reserved(reserved);
            }
        }
    });
    Ok(ids)
}

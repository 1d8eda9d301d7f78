//! One bucket followed: its current values applied at start-up, then every change, in the
//! bucket's order, by one task.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation, Store};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::ClusterError;

/// How long the start-up load of a bucket may take.
const LOAD_WITHIN: Duration = Duration::from_secs(10);
/// The pause before a watch that ended (NATS gone, a server restart) is opened again.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

/// What a bucket's changes do on this node: its owner's in-memory apply function.
pub trait Apply: Send + Sync + 'static {
    /// `key` now holds `value`, or was deleted (`None`).
    fn apply<'a>(&'a self, key: &'a str, value: Option<&'a [u8]>) -> BoxFuture<'a, ()>;

    /// The start-up load is done; `present` are the keys the bucket holds. Whatever this node
    /// has that the bucket does not was deleted while it was away.
    fn loaded<'a>(&'a self, present: &'a HashSet<String>) -> BoxFuture<'a, ()>;
}

/// Applies every value the bucket holds now (so that the node starts with the cluster's state),
/// then follows its changes in a task (of `tasks`) until `stop`.
///
/// # Errors
/// When the bucket cannot be read within [`LOAD_WITHIN`].
pub async fn load_and_follow(
    kv: Store,
    apply: Arc<dyn Apply>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), ClusterError> {
    let failed = |e: String| ClusterError::JetStream(format!("reading bucket {}: {e}", kv.name));
    let mut stream = kv.stream.clone();
    let held = stream.info().await.map_err(|e| failed(e.to_string()))?.state.messages;
    // The last value of every key (delete markers included), then every change.
    let mut watch = kv.watch_with_history(">").await.map_err(|e| failed(e.to_string()))?;
    let mut present = HashSet::new();
    let mut last = 0;
    if held > 0 {
        let loading = async {
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                last = entry.revision;
                let caught_up = entry.delta == 0;
                on_entry(&*apply, &entry, Some(&mut present)).await;
                if caught_up {
                    return Ok(());
                }
            }
            Err("the watch ended".to_string())
        };
        tokio::time::timeout(LOAD_WITHIN, loading)
            .await
            .map_err(|_| failed(format!("not loaded within {} s", LOAD_WITHIN.as_secs())))?
            .map_err(failed)?;
    }
    apply.loaded(&present).await;
    tasks.spawn(follow(kv, watch, apply, last, stop));
    Ok(())
}

async fn on_entry(apply: &dyn Apply, entry: &Entry, present: Option<&mut HashSet<String>>) {
    let put = entry.operation == Operation::Put;
    if let Some(present) = present {
        if put {
            present.insert(entry.key.clone());
        } else {
            present.remove(&entry.key);
        }
    }
    apply.apply(&entry.key, put.then_some(&entry.value[..])).await;
}

/// Applies each change after revision `last`; a watch that ends is opened again from there.
async fn follow(
    kv: Store,
    mut watch: async_nats::jetstream::kv::Watch,
    apply: Arc<dyn Apply>,
    mut last: u64,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = watch.next() => next,
        };
        match next {
            Some(Ok(entry)) => {
                // A watch opened again may repeat what was applied.
                if entry.revision > last {
                    last = entry.revision;
                    on_entry(&*apply, &entry, None).await;
                }
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(bucket = %kv.name, error = %e, "The watch of a cluster bucket failed; opening it again")
            }
            None => {
                tracing::warn!(bucket = %kv.name, "The watch of a cluster bucket ended; opening it again")
            }
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REWATCH_AFTER) => {}
            }
            match kv.watch_all_from_revision(last + 1).await {
                Ok(w) => {
                    watch = w;
                    break;
                }
                Err(e) => {
                    tracing::warn!(bucket = %kv.name, error = %e, "Opening the watch of a cluster bucket failed")
                }
            }
        }
    }
}

//! The consumer clients of every node: the cluster-wide limit of clients per group and the
//! online-client list (docs/cluster.md, "Consumers on any node").
//!
//! One KV bucket `{name}_clients` holds a key `<group>.<slot>` per online client, `slot` in
//! `0..max_clients_per_group`. A client takes a slot by compare-and-swap: `create` (only when
//! the key is absent or deleted) or, for a slot whose owner stopped refreshing it, `update`
//! with the stale entry's revision. Two nodes can never hold the same slot, so a group never
//! has more clients than slots, whatever the nodes do at the same moment: the 65th client of
//! a group anywhere in the cluster finds no free slot and is refused.
//!
//! The owning node refreshes its clients' keys every [`REFRESH`] (an `update` with the
//! revision it last wrote, carrying the client's current consumption rate) and deletes a key
//! when its client leaves. A node that dies stops refreshing: its keys count as gone once
//! they are older than their `ttl_ms` (readers judge by the entry's server timestamp), and
//! the bucket's `max_age` removes them from the server soon after.
//!
//! Every node watches the bucket (every key's current value, then each change), so the
//! online list of a group (and the rates of the other nodes' clients, for the group's
//! `consumptionRate`) is a local read. A node restarted within its keys' time-to-live deletes
//! its previous run's keys at start-up (node names are unique in a cluster).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::config::ClusterConfig;
use super::ClusterError;
use crate::groups::ClientInfo;
use crate::message::now_ms;
use crate::queues::QueueError;

/// How often a node rewrites its clients' keys.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long a key counts without a refresh: three refreshes, so that one or two slow ones
/// (a NATS reconnect, a stream-leader change of 5-7 s) do not free a live client's slot.
pub const TTL: Duration = Duration::from_secs(15);
/// The bucket's `max_age`: the server removes keys nobody refreshed; longer than [`TTL`] so
/// that the readers' judgement, not the server, decides when a slot is free.
const BUCKET_MAX_AGE: Duration = Duration::from_secs(30);
/// The pause before watching again after the watch failed.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// What a client's key holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    node: String,
    client_id: String,
    peer: String,
    online_since_ms: u64,
    rate_per_minute: u64,
    /// How long this entry counts without a newer one.
    ttl_ms: u64,
}

/// A key as this node last saw it.
#[derive(Debug, Clone)]
struct Seen {
    record: Record,
    revision: u64,
    /// Server time of the write, epoch ms.
    written_ms: u64,
}

impl Seen {
    fn live(&self, now_ms: u64) -> bool {
        self.written_ms.saturating_add(self.record.ttl_ms) > now_ms
    }
}

/// A slot this node holds for one of its clients.
struct Slot {
    key: String,
    record: Mutex<Record>,
    /// The revision this node last wrote (0: being given up).
    revision: AtomicU64,
}

/// The cluster's consumer clients, as this node sees and keeps them.
pub struct ClusterClients {
    kv: kv::Store,
    node: String,
    limit: usize,
    ttl: Duration,
    /// Every key of the bucket as the watch delivered it (and this node's own writes).
    view: Mutex<HashMap<String, Seen>>,
    /// This node's slots, by key.
    mine: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for ClusterClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClients").field("node", &self.node).field("limit", &self.limit).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms_of(t: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The key of a group's slot. Group ids are ASCII letters, digits, `_` and `-` (valid in KV
/// keys); anything else is hex-encoded so that a key never breaks.
fn key_of(group: &str, slot: usize) -> String {
    format!("{}.{slot}", key_token(group))
}

fn key_token(group: &str) -> String {
    if !group.is_empty() && group.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        group.to_string()
    } else {
        let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
        format!("={hex}")
    }
}

/// The group token of a key (`None` for a key that is not a slot).
fn group_token(key: &str) -> Option<&str> {
    let (group, slot) = key.rsplit_once('.')?;
    slot.parse::<usize>().ok().map(|_| group)
}

fn backend(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(format!("JetStream KV: {what}: {e}"))
}

impl ClusterClients {
    /// Opens (or creates) the bucket, starts watching it and refreshing this node's keys.
    /// `limit` is the clients per group at most (`[amqp] max_clients_per_group`).
    ///
    /// # Errors
    /// When JetStream refuses the bucket.
    pub async fn open(
        client: Client,
        config: &ClusterConfig,
        node: &str,
        limit: usize,
    ) -> Result<Arc<Self>, ClusterError> {
        Self::open_with_ttl(client, config, node, limit, TTL).await
    }

    /// [`Self::open`] with another time-to-live of this node's keys (tests: a node that dies
    /// quickly). The refreshes come every third of it.
    ///
    /// # Errors
    /// When JetStream refuses the bucket.
    pub async fn open_with_ttl(
        client: Client,
        config: &ClusterConfig,
        node: &str,
        limit: usize,
        ttl: Duration,
    ) -> Result<Arc<Self>, ClusterError> {
        let js = async_nats::jetstream::new(client);
        let kv = super::bucket(
            &js,
            config,
            "clients",
            "iotpipe: consumer clients of every node",
            BUCKET_MAX_AGE.max(ttl * 2),
        )
        .await?;
        let this = Arc::new(Self {
            kv,
            node: node.to_string(),
            limit,
            ttl,
            view: Mutex::new(HashMap::new()),
            mine: Mutex::new(HashMap::new()),
        });
        // The view is complete before the first client joins: the watch's current values.
        let watch = this
            .kv
            // `watch_all` gives only changes from now on (DeliverPolicy::New); this gives every
            // key's current value first, then the changes.
            .watch_with_history(">")
            .await
            .map_err(|e| ClusterError::JetStream(format!("watching bucket {}: {e}", this.kv.name)))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(watching(Arc::downgrade(&this), watch, Some(ready_tx)));
        tokio::spawn(refreshing(Arc::downgrade(&this), ttl / 3));
        // The current values arrive first (the last one with delta 0); an empty bucket has none.
        let empty = this.kv.status().await.map(|s| s.values() == 0).unwrap_or(false);
        if !empty {
            let _ = tokio::time::timeout(Duration::from_secs(2), ready_rx).await;
        }
        this.forget_previous_life().await;
        Ok(this)
    }

    /// Deletes the keys a previous run of this node left (it was restarted within their
    /// time-to-live): none of those clients is connected now. Node names are unique in a
    /// cluster, so the keys are this node's to delete.
    async fn forget_previous_life(&self) {
        let stale: Vec<(String, u64)> = lock(&self.view)
            .iter()
            .filter(|(_, s)| s.record.node == self.node)
            .map(|(k, s)| (k.clone(), s.revision))
            .collect();
        for (key, revision) in stale {
            lock(&self.view).remove(&key);
            if let Err(e) = self.kv.delete_expect_revision(&key, Some(revision)).await {
                tracing::debug!(key = %key, error = %e, "Deleting a consumer's slot of this node's previous run failed");
            }
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes a free slot of `group` for a client of this node; dropping the returned guard
    /// gives it back.
    ///
    /// # Errors
    /// [`QueueError::Full`] when every slot is held by a live client anywhere in the cluster;
    /// [`QueueError::Backend`] when the bucket cannot be written.
    pub async fn acquire(
        self: &Arc<Self>,
        group: &str,
        client_id: &str,
        peer: SocketAddr,
    ) -> Result<SlotGuard, QueueError> {
        let record = Record {
            node: self.node.clone(),
            client_id: client_id.to_string(),
            peer: peer.to_string(),
            online_since_ms: now_ms(),
            rate_per_minute: 0,
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        };
        let value = Bytes::from(serde_json::to_vec(&record).map_err(|e| backend("encoding", e))?);
        for slot in 0..self.limit {
            let key = key_of(group, slot);
            let now = now_ms();
            let seen = lock(&self.view).get(&key).cloned();
            let written = match seen {
                Some(s) if s.live(now) => continue,
                // Its owner stopped refreshing it: taken over only if nobody wrote it since.
                Some(s) => match self.kv.update(&key, value.clone(), s.revision).await {
                    Ok(revision) => Some(revision),
                    Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision) => None,
                    Err(e) => return Err(backend(&format!("taking slot {key}"), e)),
                },
                None => match self.kv.create(&key, value.clone()).await {
                    Ok(revision) => Some(revision),
                    Err(e) if crate::cluster::lost_create_race(&e) => None,
                    Err(e) => return Err(backend(&format!("taking slot {key}"), e)),
                },
            };
            let Some(revision) = written else { continue };
            // KV does not promise read-your-writes: this node's view has its own write at once.
            lock(&self.view).insert(key.clone(), Seen { record: record.clone(), revision, written_ms: now });
            let slot =
                Arc::new(Slot { key: key.clone(), record: Mutex::new(record), revision: revision.into() });
            lock(&self.mine).insert(key, slot.clone());
            return Ok(SlotGuard { owner: Arc::downgrade(self), slot });
        }
        Err(QueueError::Full { group: group.to_string(), limit: self.limit })
    }

    /// The group's live clients on every node (`node` set), the earliest first.
    pub fn online(&self, group: &str) -> Vec<ClientInfo> {
        let token = key_token(group);
        let now = now_ms();
        let mut out: Vec<ClientInfo> = lock(&self.view)
            .iter()
            .filter(|(key, seen)| group_token(key) == Some(token.as_str()) && seen.live(now))
            .map(|(key, seen)| {
                let mut record = seen.record.clone();
                // This node's own clients: their latest rate, not the last one written.
                if let Some(slot) = lock(&self.mine).get(key) {
                    record.rate_per_minute = lock(&slot.record).rate_per_minute;
                }
                ClientInfo {
                    client_id: record.client_id,
                    peer: record.peer.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                    online_since_ms: record.online_since_ms,
                    rate_per_minute: record.rate_per_minute,
                    node: Some(record.node),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.online_since_ms, &a.client_id).cmp(&(b.online_since_ms, &b.client_id)));
        out
    }

    /// Accepts in the last minute of the group's clients on the other nodes.
    pub fn others_rate(&self, group: &str) -> u64 {
        let token = key_token(group);
        let now = now_ms();
        lock(&self.view)
            .iter()
            .filter(|(key, s)| {
                group_token(key) == Some(token.as_str()) && s.live(now) && s.record.node != self.node
            })
            .map(|(_, s)| s.record.rate_per_minute)
            .sum()
    }

    fn apply(&self, entry: kv::Entry) {
        let mut view = lock(&self.view);
        match entry.operation {
            Operation::Delete | Operation::Purge => {
                // A delete older than this node's own newer write (the slot taken again) is
                // not the latest word.
                if view.get(&entry.key).is_none_or(|s| s.revision <= entry.revision) {
                    view.remove(&entry.key);
                }
            }
            Operation::Put => match serde_json::from_slice::<Record>(&entry.value) {
                Ok(record) => {
                    if view.get(&entry.key).is_none_or(|s| s.revision <= entry.revision) {
                        let written_ms = ms_of(entry.created);
                        view.insert(entry.key, Seen { record, revision: entry.revision, written_ms });
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "Ignoring an unreadable consumer-client key")
                }
            },
        }
    }

    /// Rewrites every key of this node (the client's current rate), with the revision it
    /// last wrote. A key someone else wrote meanwhile (this node was away longer than the
    /// time-to-live and the slot was taken) is lost: the client stays connected, and the
    /// group may briefly count one more client than its limit.
    async fn refresh(self: &Arc<Self>) {
        let slots: Vec<Arc<Slot>> = lock(&self.mine).values().cloned().collect();
        for slot in slots {
            let expected = slot.revision.load(Ordering::Acquire);
            if expected == 0 {
                continue;
            }
            let record = lock(&slot.record).clone();
            let Ok(value) = serde_json::to_vec(&record) else { continue };
            match self.kv.update(&slot.key, Bytes::from(value), expected).await {
                Ok(revision) => {
                    if slot
                        .revision
                        .compare_exchange(expected, revision, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        // The client left during the refresh, and its delete named the old
                        // revision: this write is deleted here instead.
                        let _ = self.kv.delete_expect_revision(&slot.key, Some(revision)).await;
                        continue;
                    }
                    let mut view = lock(&self.view);
                    if view.get(&slot.key).is_none_or(|s| s.revision <= revision) {
                        view.insert(slot.key.clone(), Seen { record, revision, written_ms: now_ms() });
                    }
                }
                Err(e) if matches!(e.kind(), UpdateErrorKind::WrongLastRevision) => {
                    tracing::warn!(key = %slot.key, client_id = %record.client_id, "A consumer's slot was taken by another node while this node could not refresh it");
                    lock(&self.mine).remove(&slot.key);
                }
                Err(e) => tracing::warn!(key = %slot.key, error = %e, "Refreshing a consumer's slot failed"),
            }
        }
    }
}

async fn watching(
    owner: Weak<ClusterClients>,
    mut watch: kv::Watch,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    loop {
        while let Some(entry) = watch.next().await {
            let Some(this) = owner.upgrade() else { return };
            match entry {
                Ok(entry) => {
                    let current = entry.delta == 0;
                    this.apply(entry);
                    if current {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Watching the consumer clients failed");
                    break;
                }
            }
        }
        ready.take();
        tokio::time::sleep(WATCH_RETRY).await;
        let Some(this) = owner.upgrade() else { return };
        match this.kv.watch_with_history(">").await {
            Ok(w) => watch = w,
            Err(e) => tracing::warn!(error = %e, "Watching the consumer clients again failed"),
        }
    }
}

async fn refreshing(owner: Weak<ClusterClients>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(this) = owner.upgrade() else { return };
        this.refresh().await;
    }
}

/// A slot held for one client of this node; dropping it deletes the key.
pub struct SlotGuard {
    owner: Weak<ClusterClients>,
    slot: Arc<Slot>,
}

impl SlotGuard {
    /// Records the client's accepts in the last minute (written with the next refresh).
    pub fn set_rate(&self, per_minute: u64) {
        lock(&self.slot.record).rate_per_minute = per_minute;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some(owner) = self.owner.upgrade() else { return };
        lock(&owner.mine).remove(&self.slot.key);
        let revision = self.slot.revision.swap(0, Ordering::AcqRel);
        {
            let mut view = lock(&owner.view);
            if view.get(&self.slot.key).is_some_and(|s| s.revision == revision) {
                view.remove(&self.slot.key);
            }
        }
        let key = self.slot.key.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Only this node's own write is deleted: a slot taken over meanwhile stays.
                if let Err(e) = owner.kv.delete_expect_revision(&key, Some(revision)).await {
                    tracing::debug!(key = %key, error = %e, "Giving back a consumer's slot failed; it expires");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_name_their_group() {
        assert_eq!(key_of("DEFAULT_GROUP", 0), "DEFAULT_GROUP.0");
        assert_eq!(group_token(&key_of("g-1_x", 63)), Some("g-1_x"));
        let odd = key_of("a.b c", 5);
        assert!(odd.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)), "{odd}");
        assert_eq!(group_token(&odd), Some(key_token("a.b c").as_str()));
        assert_eq!(group_token("DEFAULT_GROUP"), None);
    }

    #[test]
    fn an_entry_counts_until_its_ttl() {
        let record = Record {
            node: "n1".into(),
            client_id: "c".into(),
            peer: "127.0.0.1:1".into(),
            online_since_ms: 0,
            rate_per_minute: 0,
            ttl_ms: 15_000,
        };
        let seen = Seen { record, revision: 1, written_ms: 1_000 };
        assert!(seen.live(15_999));
        assert!(!seen.live(16_000));
    }
}

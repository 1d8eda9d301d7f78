//! Consumer-group queues on NATS JetStream: server-owned leases, shared by every node.
//!
//! | iotpipe | JetStream |
//! |---|---|
//! | every group's queue | stream `{name}_queues`, subjects `{name}.q.<group>`, WorkQueue retention, file storage, `replicas`, `max_age` = retention, duplicate window 2 min |
//! | one group | durable pull consumer `group-<group>` filtered on its subject, explicit acks, `ack_wait` = ack timeout, unlimited deliveries; every node's clients pull from it |
//! | a copy for a group | one publish with `Nats-Msg-Id: <messageId>-<group>`; the append resolves when every PubAck arrived, retrying the same ids (the server drops duplicates) |
//! | accepted / released, modified / lost, unsent / rejected | ack / nak with the release backoff / nak at once / a copy in the dead letters, then term |
//! | clear | purge of the stream filtered on the group's subject up to its last sequence; deliveries pulled before it are skipped |
//! | dead letters | stream `{name}_dead`, subjects `{name}.dead.<group>`, limits retention, `max_age` = retention |
//! | status | consumer info: `num_pending + num_ack_pending`, `num_ack_pending`, the ack floor's last activity |
//!
//! Each local client pulls for itself, at most [`PULL_BATCH`] messages ahead: the `ack_wait`
//! clock runs from the pull, so a client never holds more than it can soon send, and the
//! server spreads a group's messages over every puller on every node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{Context, ContextBuilder};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RawMessageErrorKind, RetentionPolicy, StorageType};
use async_nats::Client;
use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use futures::{FutureExt, TryStreamExt};

mod client;

use client::JetStreamClient;

use super::clients::ClusterClients;
use super::config::ClusterConfig;
use super::stats::NatsStats;
use super::ClusterError;
use crate::groups::{ClientInfo, RateWindow, Settings};
use crate::message::now_ms;
use crate::queues::{Append, DeadLetter, GroupClient, GroupOptions, GroupQueues, QueueError, QueueStatus};

/// How long the server remembers a `Nats-Msg-Id`: a retried publish within it is dropped as a
/// duplicate. Covers [`APPEND_RETRY_FOR`] with room to spare.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long an append keeps retrying copies without a PubAck (the same ids) before it fails:
/// a stream-leader change took 5-7 s on loopback, up to 9 s by the Raft election timeout.
pub const APPEND_RETRY_FOR: Duration = Duration::from_secs(20);
/// How long one JetStream request or PubAck may take before it counts as failed (and, for a
/// publish, is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// PubAcks in flight on the connection at most; a publisher waits beyond (backpressure). The
/// measured throughput levelled off between 256 and 1,024 in flight.
const MAX_ACKS_IN_FLIGHT: usize = 4096;
/// Messages a client pulls ahead at most: pulled messages are leased (their `ack_wait` runs),
/// so this stays small against the 1,024 unsettled a client may hold.
pub const PULL_BATCH: usize = 64;
/// How long one pull request waits on the server before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// The server's idle heartbeat on a pull; two missed ones make the client pull anew (after a
/// reconnect, a server restart).
const PULL_HEARTBEAT: Duration = Duration::from_secs(4);
/// How long `/healthz` waits for JetStream to answer.
const HEALTH_WAIT: std::time::Duration = Duration::from_secs(2);
/// Dead letters read per request page when re-queueing.
const DEAD_PAGE: usize = 256;
/// The pause after a failed pull before the next, so that an outage does not spin.
const PULL_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The names of one deployment's streams and subjects.
#[derive(Debug, Clone)]
struct Names {
    prefix: String,
}

impl Names {
    fn queue_stream(&self) -> String {
        format!("{}_queues", self.prefix)
    }
    fn dead_stream(&self) -> String {
        format!("{}_dead", self.prefix)
    }
    fn queue_subject(&self, group: &str) -> String {
        format!("{}.q.{group}", self.prefix)
    }
    fn dead_subject(&self, group: &str) -> String {
        format!("{}.dead.{group}", self.prefix)
    }
    fn durable(group: &str) -> String {
        format!("group-{group}")
    }
}

/// One group as this node knows it.
struct GroupHandle {
    id: Arc<str>,
    consumer: PullConsumer,
    /// Clients of this node.
    clients: AtomicUsize,
    /// Accepts settled on this node.
    accepted: AtomicU64,
    /// Epoch ms of this node's last accept (0: none).
    last_accept_ms: AtomicU64,
    /// Accepts per second on this node, for `consumptionRate`.
    rate: Mutex<RateWindow>,
    /// This node's online clients, by client number.
    online: Mutex<HashMap<u64, ClientInfo>>,
    /// Numbers the clients of this node.
    next_client: AtomicU64,
    /// Deliveries of a message at most before it goes to the dead letters (0: no limit).
    max_delivery_attempts: AtomicU32,
    /// The stream sequence of the last message the latest clear dropped: a delivery at or
    /// below it that a client pulled before the clear is stale and skipped.
    cleared_through: AtomicU64,
}

/// Consumer-group queues on JetStream.
pub struct JetStreamQueues {
    client: Client,
    js: Context,
    queue: stream::Stream,
    dead: stream::Stream,
    names: Names,
    settings: Settings,
    groups: Mutex<HashMap<String, Arc<GroupHandle>>>,
    /// Every node's clients (the cluster-wide limit and online list); unset: this node's only.
    clients: OnceLock<Arc<ClusterClients>>,
    /// PubAck latency and retries for `/metrics`; unset: not counted.
    stats: OnceLock<Arc<NatsStats>>,
}

impl std::fmt::Debug for JetStreamQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueues").field("prefix", &self.names.prefix).finish_non_exhaustive()
    }
}

fn backend(what: impl std::fmt::Display, e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(format!("JetStream: {what}: {e}"))
}

impl JetStreamQueues {
    /// Sets up (or updates) the deployment's streams on the connected servers, waiting up to
    /// 30 s for a JetStream cluster that is still electing its leader.
    ///
    /// # Errors
    /// When JetStream is not enabled or refuses the streams (e.g. more replicas than servers),
    /// or is not ready within 30 s.
    pub async fn open(
        client: Client,
        config: &ClusterConfig,
        settings: Settings,
    ) -> Result<Arc<Self>, ClusterError> {
        let js = ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let names = Names { prefix: config.name.clone() };
        let replicas = usize::try_from(config.replicas).unwrap_or(1);
        let queue_config = stream::Config {
            name: names.queue_stream(),
            subjects: vec![format!("{}.q.>", names.prefix)],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: replicas,
            max_age: settings.retention,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let dead_config = stream::Config {
            name: names.dead_stream(),
            subjects: vec![format!("{}.dead.>", names.prefix)],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: replicas,
            max_age: settings.retention,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let mut streams = Vec::new();
        for config in [queue_config, dead_config] {
            let name = config.name.clone();
            // Servers started together elect their JetStream meta leader within seconds; until
            // then stream requests time out or say JetStream is unavailable. A node started with
            // them waits for the election rather than fail.
            let settle_by = tokio::time::Instant::now() + SETTLE_WITHIN;
            loop {
                match js.create_or_update_stream(config.clone()).await {
                    Ok(_) => break,
                    Err(e) if settling(&e) && tokio::time::Instant::now() < settle_by => {
                        tracing::info!(stream = %name, error = %e, "JetStream not ready yet; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        return Err(ClusterError::JetStream(format!("setting up stream {name}: {e}")));
                    }
                }
            }
            let stream = js
                .get_stream(&name)
                .await
                .map_err(|e| ClusterError::JetStream(format!("opening stream {name}: {e}")))?;
            streams.push(stream);
        }
        let dead = streams.pop().ok_or_else(|| ClusterError::JetStream("no dead-letter stream".into()))?;
        let queue = streams.pop().ok_or_else(|| ClusterError::JetStream("no queue stream".into()))?;
        Ok(Arc::new(Self {
            client,
            js,
            queue,
            dead,
            names,
            settings,
            groups: Mutex::new(HashMap::new()),
            clients: OnceLock::new(),
            stats: OnceLock::new(),
        }))
    }

    /// Counts clients and lists them over every node through `clients` from now on (set
    /// once, at start-up, before any client joins).
    pub fn share_clients(&self, clients: Arc<ClusterClients>) {
        let _ = self.clients.set(clients);
    }

    /// Counts PubAck latency and retries into `stats` from now on (set once, at start-up).
    pub fn share_stats(&self, stats: Arc<NatsStats>) {
        let _ = self.stats.set(stats);
    }

    /// The NATS connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn handle(&self, group: &str) -> Result<Arc<GroupHandle>, QueueError> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(group)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(group.to_string()))
    }

    /// The group's handle, its consumer created first when this node has none yet (a group
    /// created through the API after start-up). Groups themselves are checked by the caller.
    async fn ensured(&self, group: &str) -> Result<Arc<GroupHandle>, QueueError> {
        self.ensure(group).await?;
        self.handle(group)
    }

    async fn ensure(&self, group: &str) -> Result<(), QueueError> {
        if self.handle(group).is_ok() {
            return Ok(());
        }
        let durable = Names::durable(group);
        let max_ack_pending =
            self.settings.max_clients_per_group.saturating_mul(self.settings.max_unsettled_per_client);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: self.names.queue_subject(group),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_timeout,
            max_deliver: -1,
            max_ack_pending: i64::try_from(max_ack_pending).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer: PullConsumer = self
            .queue
            .create_consumer(config)
            .await
            .map_err(|e| backend(format_args!("creating consumer {durable} of group {group}"), e))?;
        let handle = Arc::new(GroupHandle {
            id: group.into(),
            consumer,
            clients: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            last_accept_ms: AtomicU64::new(0),
            cleared_through: AtomicU64::new(0),
            rate: Mutex::new(RateWindow::default()),
            online: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            max_delivery_attempts: AtomicU32::new(0),
        });
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(group.to_string())
            .or_insert(handle);
        Ok(())
    }

    /// Publishes every message and waits for all PubAcks, publishing again the ones that
    /// failed (same ids) until [`APPEND_RETRY_FOR`] has passed.
    async fn publish_all(&self, copies: Vec<(String, String, Bytes)>) -> Result<(), QueueError> {
        let total = copies.len();
        let deadline = Instant::now() + APPEND_RETRY_FOR;
        let mut pending: Vec<usize> = (0..total).collect();
        let mut pause = Duration::from_millis(50);
        let stats = self.stats.get();
        loop {
            if let Some(stats) = stats {
                stats.publishes.fetch_add(pending.len() as u64, Ordering::Relaxed);
            }
            let mut acks = Vec::with_capacity(pending.len());
            let mut failed = Vec::new();
            let mut last_error = String::new();
            for &i in &pending {
                let (subject, id, payload) = &copies[i];
                let message = PublishMessage::build().payload(payload.clone()).message_id(id);
                match self.js.send_publish(subject.clone(), message).await {
                    Ok(ack) => {
                        let sent = Instant::now();
                        acks.push(async move {
                            let result = ack.await;
                            if let (Ok(_), Some(stats)) = (&result, stats) {
                                stats.puback.observe(sent.elapsed());
                            }
                            (i, result)
                        });
                    }
                    Err(e) => {
                        last_error = e.to_string();
                        failed.push(i);
                    }
                }
            }
            for (i, result) in join_all(acks).await {
                if let Err(e) = result {
                    last_error = e.to_string();
                    failed.push(i);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            if Instant::now() + pause >= deadline {
                if let Some(stats) = stats {
                    stats.failed_appends.fetch_add(1, Ordering::Relaxed);
                }
                return Err(QueueError::Backend(format!(
                    "JetStream: {} of {total} copies not stored after {} s: {last_error}",
                    failed.len(),
                    APPEND_RETRY_FOR.as_secs()
                )));
            }
            tracing::warn!(failed = failed.len(), total, error = %last_error, "Retrying JetStream publishes with the same ids");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            if let Some(stats) = stats {
                stats.retries.fetch_add(failed.len() as u64, Ordering::Relaxed);
            }
            pending = failed;
        }
    }

    async fn dead_page(&self, group: &str, from: u64, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let subject = self.names.dead_subject(group);
        let mut out = Vec::new();
        let mut seq = from.max(1);
        while out.len() < max {
            let found =
                self.dead.raw_message_builder().sequence(seq).next_by_subject(subject.clone()).send().await;
            match found {
                Ok(m) => {
                    seq = m.sequence + 1;
                    out.push(DeadLetter {
                        seq: m.sequence,
                        dead_since_ms: epoch_ms_of(m.time),
                        record: m.payload.to_vec(),
                    });
                }
                Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => break,
                Err(e) => return Err(backend(format_args!("reading the dead letters of {group}"), e)),
            }
        }
        Ok(out)
    }
}

fn epoch_ms_of(t: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The message id of an encoded record (its first 8 bytes, big-endian).
fn message_id(record: &[u8]) -> Option<u64> {
    record.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

impl GroupQueues for JetStreamQueues {
    fn backend(&self) -> &'static str {
        "jetstream"
    }

    fn dedupes_appends(&self) -> bool {
        true
    }

    fn ensure_group(&self, group: &str, options: GroupOptions) -> BoxFuture<'_, Result<(), QueueError>> {
        let group = group.to_string();
        async move {
            let handle = self.ensured(&group).await?;
            handle.max_delivery_attempts.store(options.max_delivery_attempts.unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }
        .boxed()
    }

    fn append(&self, batch: Vec<Append>) -> BoxFuture<'_, Result<(), QueueError>> {
        async move {
            let mut copies = Vec::with_capacity(batch.len());
            for append in batch {
                let id = message_id(&append.record)
                    .ok_or_else(|| QueueError::Backend("JetStream: a record without a message id".into()))?;
                copies.push((
                    self.names.queue_subject(&append.group),
                    format!("{id}-{}", append.group),
                    append.record,
                ));
            }
            self.publish_all(copies).await
        }
        .boxed()
    }

    fn join(
        &self,
        group: &str,
        client_id: &str,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Box<dyn GroupClient>, QueueError>> {
        let group = group.to_string();
        let client_id = client_id.to_string();
        async move {
            let handle = self.handle(&group)?;
            let limit = self.settings.max_clients_per_group;
            // Taken before the pull starts, given back on any failure below.
            if handle.clients.fetch_add(1, Ordering::AcqRel) >= limit {
                handle.clients.fetch_sub(1, Ordering::AcqRel);
                return Err(QueueError::Full { group, limit });
            }
            // The cluster-wide limit: a slot in the clients bucket, taken before
            // the pull starts (pulled messages are leased).
            let slot = match self.clients.get() {
                Some(clients) => match clients.acquire(&group, &client_id, peer).await {
                    Ok(slot) => Some(slot),
                    Err(e) => {
                        handle.clients.fetch_sub(1, Ordering::AcqRel);
                        return Err(e);
                    }
                },
                None => None,
            };
            let batch = PULL_BATCH.min(self.settings.max_unsettled_per_client).max(1);
            let messages = handle
                .consumer
                .stream()
                .max_messages_per_batch(batch)
                .expires(PULL_EXPIRES)
                .heartbeat(PULL_HEARTBEAT)
                .messages()
                .await;
            let messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    handle.clients.fetch_sub(1, Ordering::AcqRel);
                    return Err(backend(format_args!("pulling from group {group}"), e));
                }
            };
            let number = handle.next_client.fetch_add(1, Ordering::Relaxed);
            let info =
                ClientInfo { client_id, peer, online_since_ms: now_ms(), rate_per_minute: 0, node: None };
            lock(&handle.online).insert(number, info);
            let mut client = JetStreamClient::new(
                number,
                handle,
                self.js.clone(),
                self.names.dead_subject(&group),
                messages,
                self.settings.max_unsettled_per_client,
            );
            client.slot = slot;
            Ok(Box::new(client) as Box<dyn GroupClient>)
        }
        .boxed()
    }

    fn clear(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let group = group.to_string();
        async move {
            let handle = self.ensured(&group).await?;
            // Purged up to a known sequence, so that deliveries pulled before the clear can be
            // told from messages appended after it.
            let last = self
                .queue
                .get_info()
                .await
                .map_err(|e| backend(format_args!("clearing group {group}"), e))?
                .state
                .last_sequence;
            let purged = self
                .queue
                .purge()
                .filter(self.names.queue_subject(&group))
                .sequence(last + 1)
                .await
                .map_err(|e| backend(format_args!("clearing group {group}"), e))?;
            handle.cleared_through.fetch_max(last, Ordering::AcqRel);
            Ok(purged.purged)
        }
        .boxed()
    }

    fn status(&self, group: &str) -> BoxFuture<'_, Result<QueueStatus, QueueError>> {
        let group = group.to_string();
        async move {
            let handle = self.ensured(&group).await?;
            let info = self
                .queue
                .consumer_info(Names::durable(&group))
                .await
                .map_err(|e| backend(format_args!("status of group {group}"), e))?;
            let dead_subject = self.names.dead_subject(&group);
            let mut subjects = self
                .dead
                .info_with_subjects(&dead_subject)
                .await
                .map_err(|e| backend(format_args!("dead letters of group {group}"), e))?;
            let mut dead_letters = 0;
            while let Some((subject, count)) = subjects
                .try_next()
                .await
                .map_err(|e| backend(format_args!("dead letters of group {group}"), e))?
            {
                if subject == dead_subject {
                    dead_letters = count as u64;
                }
            }
            let server_last = info.ack_floor.last_active.map(epoch_ms_of);
            let local_last = Some(handle.last_accept_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0);
            let ack_pending = info.num_ack_pending as u64;
            let now = now_ms() / 1000;
            let mut consumption_rate_per_minute = lock(&handle.rate).per_minute(now);
            let online_clients = match self.clients.get() {
                // Every node's clients, and the others' accepts added to this node's.
                Some(clients) => {
                    consumption_rate_per_minute += clients.others_rate(&group);
                    clients.online(&group)
                }
                None => {
                    let mut online: Vec<ClientInfo> = lock(&handle.online).values().cloned().collect();
                    online.sort_by_key(|c| c.online_since_ms);
                    online
                }
            };
            Ok(QueueStatus {
                accumulated: info.num_pending + ack_pending,
                in_flight: ack_pending,
                dead_letters,
                last_consumption_ms: server_last.max(local_last),
                accepted: handle.accepted.load(Ordering::Relaxed),
                consumption_rate_per_minute,
                online_clients,
            })
        }
        .boxed()
    }

    fn dead_letters(
        &self,
        group: &str,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, QueueError>> {
        let group = group.to_string();
        async move {
            self.ensured(&group).await?;
            self.dead_page(&group, from, max).await
        }
        .boxed()
    }

    fn requeue_dead_letters(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let group = group.to_string();
        async move {
            self.ensured(&group).await?;
            let subject = self.names.queue_subject(&group);
            let mut moved = 0u64;
            let mut from = 1;
            loop {
                let page = self.dead_page(&group, from, DEAD_PAGE).await?;
                let Some(last) = page.last().map(|d| d.seq) else { break };
                // A fresh id per re-queue: the original `<id>-<group>` may still be within the
                // duplicate window, and the server would drop the copy.
                let copies = page
                    .into_iter()
                    .map(|d| {
                        let id = message_id(&d.record).unwrap_or(0);
                        (subject.clone(), format!("{id}-{group}-requeued-{}", d.seq), Bytes::from(d.record))
                    })
                    .collect::<Vec<_>>();
                moved += copies.len() as u64;
                self.publish_all(copies).await?;
                self.dead
                    .purge()
                    .filter(self.names.dead_subject(&group))
                    .sequence(last + 1)
                    .await
                    .map_err(|e| backend(format_args!("dropping re-queued dead letters of {group}"), e))?;
                from = last + 1;
            }
            Ok(moved)
        }
        .boxed()
    }

    fn purge_dead_letters(&self, group: &str) -> BoxFuture<'_, Result<u64, QueueError>> {
        let group = group.to_string();
        async move {
            self.ensured(&group).await?;
            let purged = self
                .dead
                .purge()
                .filter(self.names.dead_subject(&group))
                .await
                .map_err(|e| backend(format_args!("purging the dead letters of {group}"), e))?;
            Ok(purged.purged)
        }
        .boxed()
    }

    fn remove_group(&self, group: &str) -> BoxFuture<'_, Result<(), QueueError>> {
        let group = group.to_string();
        async move {
            lock(&self.groups).remove(&group);
            let durable = Names::durable(&group);
            // Deleting the consumer ends every node's pulls on it (their clients see the group
            // gone); a consumer that is not there is fine.
            if let Err(e) = self.queue.delete_consumer(&durable).await {
                let absent = self.queue.consumer_info(&durable).await.is_err();
                if !absent {
                    return Err(backend(format_args!("deleting consumer {durable}"), e));
                }
            }
            for (stream, subject) in [
                (&self.queue, self.names.queue_subject(&group)),
                (&self.dead, self.names.dead_subject(&group)),
            ] {
                stream
                    .purge()
                    .filter(subject)
                    .await
                    .map_err(|e| backend(format_args!("dropping the messages of group {group}"), e))?;
            }
            Ok(())
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let state = self.client.connection_state();
            if state != async_nats::connection::State::Connected {
                return Err(format!("NATS connection {state}"));
            }
            // A JetStream API round trip: the account's JetStream answers.
            match tokio::time::timeout(HEALTH_WAIT, self.js.query_account()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("JetStream: {e}")),
                Err(_) => Err(format!("JetStream did not answer within {} s", HEALTH_WAIT.as_secs())),
            }
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.client.flush().await {
                tracing::warn!(error = %e, "Flushing the NATS connection failed");
            }
        }
        .boxed()
    }
}

/// How long start-up waits for a JetStream cluster that is electing its meta leader.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Whether a failed stream request may succeed once the JetStream cluster has settled.
fn settling(e: &async_nats::jetstream::context::CreateStreamError) -> bool {
    use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
    match e.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(js) => js.to_string().contains("temporarily unavailable"),
        _ => false,
    }
}

//! Devices on any node: one session per device across the cluster (docs/cluster.md, "Devices
//! on any node").
//!
//! A KV bucket `{name}_sessions` maps a device (`<productKey>.<deviceName>`, escaped into a KV
//! key) to the session that holds it: `{node, instance, session, connectedAtMs}`. A node that
//! accepts a device's CONNECT writes the key by compare-and-swap on the revision it read, so
//! every claim knows the exact session it replaces. When that session is on another node, the
//! new node asks that node (core NATS request to `{name}.node.<node>.release`) to end it; the
//! old node answers once the old session's offline status is stored, and only then does the
//! new node announce online. So statuses come in the order of the key's revisions:
//! `online(old) < offline(old) < online(new)`. The wait is bounded ([`TAKEOVER_WAIT`]); an old
//! session whose offline status could not be stored within the bound does not announce it at
//! all (it would follow the new online). Every node also watches the bucket, and ends a local
//! session that a newer revision names someone else for, should the request have been lost.
//!
//! - `commands.rs`: cloud-to-device calls reach the device on whichever node holds it.
//! - `republish.rs`: rules' republish actions reach devices on every node.
//! - `key.rs`: a device's key in the bucket; `watch.rs`: the bucket watch (the backup).

pub mod commands;
mod key;
pub mod republish;
mod watch;

pub use key::key;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::ClusterConfig;
use super::ClusterError;
use crate::ingress::{Directory, OfflineReason, SessionsHandle};
use crate::message::now_ms;

/// How long a new session waits for the session it takes over on another node to end and
/// store its offline status: as long as a takeover on one node waits.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// An old session announces its offline status only if it is stored within this much of the
/// request to end it; later, the new session (whose wait of [`TAKEOVER_WAIT`] started before
/// the request arrived) may have announced online already. The second between the two is the
/// room for the request's transit.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(4);
const _: () =
    assert!(ANNOUNCE_WITHIN.as_millis() < TAKEOVER_WAIT.as_millis(), "stop announcing before the wait ends");

/// How long a claim may take (reads and compare-and-swaps of the key, retried) before the
/// connection is refused: a stream-leader change took 5-7 s on loopback.
const CLAIM_WITHIN: Duration = Duration::from_secs(10);

/// A pause between retries of a claim whose read or write failed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long shutdown waits for the keys of the sessions that ended to be deleted.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The value of a device's key: the session that holds the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The node (`[cluster] node`).
    pub node: String,
    /// The node's process: a random number drawn at start-up, since session numbers start
    /// again at every start.
    pub instance: String,
    /// The session's number on that process.
    pub session: u64,
    /// When the device connected (ms since the epoch).
    pub connected_at_ms: u64,
}

/// A request to end a session: sent to the node that holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Release {
    product_key: String,
    device_name: String,
    instance: String,
    session: u64,
    /// Why the session ends (`offlineReasonCode`): `taken_over` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<u16>,
}

/// The reason of code `code`; `None` for a code no reason has.
fn reason_of(code: u16) -> Option<OfflineReason> {
    [
        OfflineReason::ClientDisconnect,
        OfflineReason::KeepAliveTimeout,
        OfflineReason::NetworkError,
        OfflineReason::TakenOver,
        OfflineReason::DeviceDisabled,
        OfflineReason::ProtocolViolation,
        OfflineReason::ServerShutdown,
        OfflineReason::ServerError,
        OfflineReason::ServerRestart,
    ]
    .into_iter()
    .find(|r| r.code() == code)
}

/// A local session's claim: the revision of the key that named it.
#[derive(Debug, Clone)]
struct Claim {
    product_key: String,
    device_name: String,
    session: u64,
    revision: u64,
}

#[derive(Default)]
struct State {
    /// This node's sessions by key, once claimed.
    claims: HashMap<String, Claim>,
    /// Sessions told to end by a successor elsewhere: until when their offline status may be
    /// announced (`None`: not at all).
    released: HashMap<(String, u64), Option<Instant>>,
}

/// The cluster's session directory on this node.
pub struct ClusterSessions {
    /// Itself, for the futures of [`Directory::claim`].
    me: Weak<Self>,
    node: String,
    instance: String,
    client: Client,
    kv: kv::Store,
    /// `{name}.node.`: followed by a node name, the subjects of that node.
    node_subjects: String,
    state: Mutex<State>,
    /// Key deletions of ended sessions, awaited (briefly) at shutdown.
    tasks: TaskTracker,
}

/// The subject on which node `node` ends its sessions for successors.
fn release_subject(node_subjects: &str, node: &str) -> String {
    format!("{node_subjects}{node}.release")
}

impl ClusterSessions {
    /// Creates or updates the sessions bucket. `client` is this node's connection for sessions.
    ///
    /// # Errors
    /// JetStream refused the bucket.
    pub async fn open(client: Client, config: &ClusterConfig, node: &str) -> Result<Arc<Self>, ClusterError> {
        let js = async_nats::jetstream::new(client.clone());
        let kv = super::bucket(
            &js,
            config,
            "sessions",
            "iotpipe: which node holds each device's session",
            Duration::ZERO,
        )
        .await?;
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            node: node.to_string(),
            instance: format!("{:016x}", rand::random::<u64>()),
            client,
            kv,
            node_subjects: format!("{}.node.", config.name),
            state: Mutex::new(State::default()),
            tasks: TaskTracker::new(),
        }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The NATS connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `{name}.node.`: followed by a node name, the subjects of that node.
    pub fn node_subjects(&self) -> &str {
        &self.node_subjects
    }

    /// The session that holds the device now, if any (read from the bucket).
    ///
    /// # Errors
    /// The bucket could not be read.
    pub async fn owner(&self, product_key: &str, device_name: &str) -> Result<Option<Owner>, String> {
        let entry = self.kv.entry(key(product_key, device_name)).await.map_err(|e| e.to_string())?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| serde_json::from_slice(&e.value).ok()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_mine(&self, owner: &Owner) -> bool {
        owner.node == self.node && owner.instance == self.instance
    }

    /// Starts answering other nodes' release requests and watching the bucket, on this node's
    /// sessions; both end with `shutdown`. Only these tasks hold `local` (the ingress holds this
    /// directory: a field would make a cycle).
    ///
    /// # Errors
    /// The subscription or the watch could not be made.
    pub async fn serve(
        self: &Arc<Self>,
        local: SessionsHandle,
        shutdown: CancellationToken,
    ) -> Result<(), ClusterError> {
        let subject = release_subject(&self.node_subjects, &self.node);
        let mut requests = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| ClusterError::JetStream(format!("subscribing to {subject}: {e}")))?;
        let watch = self
            .kv
            .watch_all()
            .await
            .map_err(|e| ClusterError::JetStream(format!("watching sessions: {e}")))?;
        let me = self.clone();
        let stop = shutdown.clone();
        let sessions = local.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    request = requests.next() => match request {
                        Some(request) => {
                            let (me, sessions) = (me.clone(), sessions.clone());
                            tokio::spawn(async move { me.on_release(&sessions, request).await });
                        }
                        None => break,
                    },
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move { me.watch(&local, watch, shutdown).await });
        Ok(())
    }

    /// Waits (at most [`CLOSE_WAIT`]) for the keys of ended sessions to be deleted.
    pub async fn close(&self) {
        self.tasks.close();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.tasks.wait()).await;
    }

    /// Claims the device's key for `session`; returns the session it replaced.
    async fn claim_key(
        &self,
        product_key: &str,
        device_name: &str,
        session: u64,
    ) -> Result<Option<Owner>, String> {
        let key = key(product_key, device_name);
        let owner = Owner {
            node: self.node.clone(),
            instance: self.instance.clone(),
            session,
            connected_at_ms: now_ms(),
        };
        let value = Bytes::from(serde_json::to_vec(&owner).map_err(|e| e.to_string())?);
        let deadline = Instant::now() + CLAIM_WITHIN;
        let mut last_error;
        // The session replaced as read before a write whose outcome is unknown (no answer): that
        // write may have stored, and the next read then finds this session itself.
        let mut unsure: Option<Option<Owner>> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, async {
                let entry = self.kv.entry(key.clone()).await.map_err(|e| (false, e.to_string(), None))?;
                let (expected, previous) = match entry {
                    None => (0, None),
                    Some(e) => {
                        let previous = (e.operation == Operation::Put)
                            .then(|| serde_json::from_slice::<Owner>(&e.value).ok())
                            .flatten();
                        (e.revision, previous)
                    }
                };
                match self.kv.update(&key, value.clone(), expected).await {
                    Ok(revision) => Ok((revision, previous)),
                    Err(e) => {
                        Err((e.kind() == UpdateErrorKind::WrongLastRevision, e.to_string(), Some(previous)))
                    }
                }
            })
            .await;
            match attempt {
                Ok(Ok((revision, previous))) => {
                    let itself = previous.as_ref().is_some_and(|p| self.is_mine(p) && p.session == session);
                    let previous = if itself { unsure.flatten() } else { previous };
                    let mut state = self.lock();
                    let newer = state.claims.get(&key).is_none_or(|c| c.session <= session);
                    if newer {
                        let claim = Claim {
                            product_key: product_key.to_string(),
                            device_name: device_name.to_string(),
                            session,
                            revision,
                        };
                        state.claims.insert(key, claim);
                    }
                    return Ok(previous);
                }
                // Another node claimed the key between the read and the write: read again.
                Ok(Err((true, ..))) => continue,
                Ok(Err((false, e, written))) => {
                    if let Some(previous) = written {
                        unsure.get_or_insert(previous);
                    }
                    last_error = e;
                }
                Err(_) => last_error = format!("no answer within {} s", CLAIM_WITHIN.as_secs()),
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(format!("claiming the device's session in the sessions bucket: {last_error}"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Asks the node of `previous` to end it; resolves when it has (its offline status stored),
    /// when that node is gone, or after [`TAKEOVER_WAIT`].
    async fn release(&self, product_key: &str, device_name: &str, previous: Owner) {
        self.end_remote(product_key, device_name, previous, None).await;
    }

    /// Asks the node of `session` to end it with `reason` (`None`: taken over); resolves as
    /// [`Self::release`].
    async fn end_remote(
        &self,
        product_key: &str,
        device_name: &str,
        previous: Owner,
        reason: Option<OfflineReason>,
    ) {
        let request = Release {
            product_key: product_key.to_string(),
            device_name: device_name.to_string(),
            instance: previous.instance,
            session: previous.session,
            reason: reason.map(OfflineReason::code),
        };
        let Ok(payload) = serde_json::to_vec(&request) else { return };
        let subject = release_subject(&self.node_subjects, &previous.node);
        let sent = self
            .client
            .send_request(
                subject,
                async_nats::Request::new().payload(payload.into()).timeout(Some(TAKEOVER_WAIT)),
            )
            .await;
        match sent {
            Ok(_) => {
                tracing::info!(device = %device_name, product = %product_key, node = %previous.node, "Ended the device's session on another node");
            }
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                tracing::info!(device = %device_name, product = %product_key, node = %previous.node, "The node that held the device's session is gone");
            }
            Err(e) => {
                tracing::warn!(device = %device_name, product = %product_key, node = %previous.node, error = %e, "The node that held the device's session did not confirm its end; announcing online anyway");
            }
        }
    }

    /// Another node took over one of this node's sessions: ends it, then answers once its
    /// offline status is stored (or after [`TAKEOVER_WAIT`]).
    async fn on_release(&self, local: &SessionsHandle, request: async_nats::Message) {
        let Some(reply) = request.reply.clone() else { return };
        let answer: &'static [u8] = match serde_json::from_slice::<Release>(&request.payload) {
            Err(e) => {
                tracing::warn!(error = %e, "Ignoring a malformed session release request");
                b"malformed"
            }
            Ok(release) if release.instance != self.instance => b"gone",
            Ok(release) => {
                let (pk, dn, session) = (&release.product_key, &release.device_name, release.session);
                let reason = release.reason.and_then(reason_of).unwrap_or(OfflineReason::TakenOver);
                let marker = (key(pk, dn), session);
                if reason == OfflineReason::TakenOver {
                    // A successor waits: the offline status is announced only within the bound.
                    self.lock().released.insert(marker.clone(), Some(Instant::now() + ANNOUNCE_WITHIN));
                }
                let done = local.kick_session(pk, dn, session, reason);
                match done {
                    Some(done) => {
                        tracing::info!(device = %dn, product = %pk, %reason, "Ending the device's session at another node's request");
                        let _ = tokio::time::timeout(TAKEOVER_WAIT, done.cancelled()).await;
                        b"released"
                    }
                    None => {
                        self.lock().released.remove(&marker);
                        b"gone"
                    }
                }
            }
        };
        if let Err(e) = self.client.publish(reply, Bytes::from_static(answer)).await {
            tracing::warn!(error = %e, "Could not answer a session release request");
        }
    }
}

impl Directory for ClusterSessions {
    fn claim(
        &self,
        product_key: &str,
        device_name: &str,
        session: u64,
    ) -> BoxFuture<'static, Result<(), String>> {
        let Some(me) = self.me.upgrade() else {
            return Box::pin(async { Err("the cluster's sessions have stopped".to_string()) });
        };
        let (pk, dn) = (product_key.to_string(), device_name.to_string());
        Box::pin(async move {
            if let Some(previous) = me.claim_key(&pk, &dn, session).await? {
                if !me.is_mine(&previous) {
                    me.release(&pk, &dn, previous).await;
                }
            }
            Ok(())
        })
    }

    fn announce_offline(&self, product_key: &str, device_name: &str, session: u64) -> bool {
        let released = self.lock().released.remove(&(key(product_key, device_name), session));
        announce(released, Instant::now())
    }

    fn ended(&self, product_key: &str, device_name: &str, session: u64) {
        let key = key(product_key, device_name);
        let claim = {
            let mut state = self.lock();
            state.released.remove(&(key.clone(), session));
            match state.claims.get(&key) {
                Some(c) if c.session == session => state.claims.remove(&key),
                _ => None,
            }
        };
        // Deleted only if the key still names this session: a successor's claim stays.
        if let Some(claim) = claim {
            let kv = self.kv.clone();
            self.tasks.spawn(async move {
                let _ = kv.delete_expect_revision(&key, Some(claim.revision)).await;
            });
        }
    }

    fn disconnect_elsewhere(
        &self,
        product_key: &str,
        device_name: &str,
        reason: OfflineReason,
    ) -> BoxFuture<'static, ()> {
        let Some(me) = self.me.upgrade() else { return Box::pin(async {}) };
        let (pk, dn) = (product_key.to_string(), device_name.to_string());
        Box::pin(async move {
            match me.owner(&pk, &dn).await {
                Ok(Some(owner)) if !me.is_mine(&owner) => me.end_remote(&pk, &dn, owner, Some(reason)).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(device = %dn, product = %pk, error = %e, "Reading the sessions bucket failed; the device is disconnected on this node only");
                }
            }
        })
    }

    fn superseded(&self, product_key: &str, device_name: &str) -> BoxFuture<'static, bool> {
        let (kv, node) = (self.kv.clone(), self.node.clone());
        let key = key(product_key, device_name);
        Box::pin(async move {
            match kv.entry(key.clone()).await {
                Ok(Some(entry)) if entry.operation == Operation::Put => {
                    match serde_json::from_slice::<Owner>(&entry.value) {
                        Ok(owner) if owner.node != node => true,
                        _ => {
                            // This node's own entry from before the restart.
                            let _ = kv.delete_expect_revision(&key, Some(entry.revision)).await;
                            false
                        }
                    }
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the sessions bucket at start-up failed; announcing the offline status");
                    false
                }
            }
        })
    }
}

/// Whether an ending session announces its offline status, given how it was released: not
/// released (it ended on its own, or was taken over on this node): yes; by the watch backup
/// (`Some(None)`): no; by a successor's request: only before the request's deadline.
fn announce(released: Option<Option<Instant>>, now: Instant) -> bool {
    match released {
        None => true,
        Some(None) => false,
        Some(Some(until)) => now < until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superseded_offline_is_announced_only_within_the_bound() {
        let asked = Instant::now();
        let until = asked + ANNOUNCE_WITHIN;
        assert!(announce(None, asked));
        assert!(announce(Some(Some(until)), asked + Duration::from_millis(3_900)));
        assert!(!announce(Some(Some(until)), asked + ANNOUNCE_WITHIN));
        assert!(!announce(Some(None), asked));
        assert!(
            ANNOUNCE_WITHIN < TAKEOVER_WAIT,
            "the old node stops announcing before the new one stops waiting"
        );
    }

    #[test]
    fn reasons_travel_by_code() {
        for code in 1..=9 {
            assert_eq!(reason_of(code).map(OfflineReason::code), Some(code));
        }
        assert_eq!(reason_of(0), None);
        assert_eq!(reason_of(10), None);
    }

    #[test]
    fn the_owner_is_plain_json() {
        let owner = Owner { node: "n2".into(), instance: "00ff".into(), session: 3, connected_at_ms: 5 };
        let json = serde_json::to_value(&owner).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "n2", "instance": "00ff", "session": 3, "connectedAtMs": 5})
        );
    }
}

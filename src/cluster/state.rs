//! Cluster state in JetStream KV buckets (docs/cluster.md, "Cluster state").
//!
//! Each kind of state has a bucket named with the `[cluster] name` prefix, replicated
//! `replicas` times. The API's writes go to the bucket first (create, or update with the
//! revision read, so that a read-check-write cannot overwrite a change it did not see), and
//! one task per bucket applies each change, on every node, to the local owner through its
//! in-memory apply function. This node's redb copy of that state is a cache in cluster mode,
//! not the source of truth: at start-up the bucket's content replaces it.
//!
//! - `state/ids.rs`: message-id blocks by compare-and-swap (`{name}_ids`).
//! - `state/groups.rs`: consumer groups (`{name}_groups`).
//! - `state/subscriptions.rs`: subscriptions (`{name}_subscriptions`).
//! - `state/devices.rs`: devices, secrets included (`{name}_devices`).
//! - `state/alerts.rs`: alert rules created through the API (`{name}_alerts`).
//! - `state/rules.rs`: rules written through the API (`{name}_rules`).
//! - `state/watch.rs`: loading a bucket and following its changes.

pub mod alerts;
pub mod devices;
pub mod groups;
pub mod ids;
pub mod rules;
pub mod subscriptions;
mod watch;

use std::sync::Arc;

use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::stream::StorageType;
use async_nats::jetstream::Context;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::ClusterConfig;
use super::ClusterError;
use crate::alerts::Alerts;
use crate::catalog::{RuleWriteError, SharedState};
use crate::groups::{ConsumerGroupConfig, GroupOptions, Groups, GroupsError};
use crate::queues::GroupQueues;
use crate::registry::{ProductConfig, Registry};
use crate::rules::watch::LiveRules;
use crate::store::Ids;
use crate::subscriptions::{Edit, Subscription, SubscriptionConfig, SubscriptionError, Subscriptions};

pub use alerts::SharedAlertsKv;
pub use devices::SharedDevicesKv;
pub use groups::{GroupRecord, SharedGroups};
pub use ids::IdBlocks;
pub use rules::SharedRulesKv;
pub use subscriptions::SharedSubscriptions;

/// `text` in the characters a key allows: ASCII letters, digits, `-` and `_` as they are, every
/// other byte as `=XX` (hexadecimal), so that `.` (a subject's separator), `@`, `:` and other
/// characters of device and rule names never reach the subject.
pub fn escape(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "={b:02X}");
        }
    }
    out
}

/// The text [`escape`] made `key` of; `None` for a key it cannot have made.
pub fn unescape(key: &str) -> Option<String> {
    let mut out = Vec::with_capacity(key.len());
    let mut bytes = key.bytes();
    while let Some(b) = bytes.next() {
        if b == b'=' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Values kept per key besides the current one: enough to see the last changes when
/// something looks wrong, small enough to cost nothing.
const HISTORY: i64 = 5;

/// This node's handle on the cluster's state; its tasks stop when it is dropped.
pub struct ClusterState {
    js: Context,
    prefix: String,
    replicas: usize,
    stop: CancellationToken,
    /// The watches and the id reservations.
    tasks: TaskTracker,
    /// The shared devices, whose disconnect hook goes at shutdown.
    devices: std::sync::OnceLock<Arc<SharedDevicesKv>>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl ClusterState {
    /// Connects to the cluster's NATS servers (a connection of its own, named after `node`).
    ///
    /// # Errors
    /// As [`super::connect`].
    pub async fn open(config: &ClusterConfig, node: &str) -> Result<Self, ClusterError> {
        let client = super::connect(config, &format!("{node}/state")).await?;
        Ok(Self::with_client(client, config))
    }

    /// The state over an existing connection.
    pub fn with_client(client: async_nats::Client, config: &ClusterConfig) -> Self {
        Self {
            js: async_nats::jetstream::new(client),
            prefix: config.name.clone(),
            replicas: usize::try_from(config.replicas).unwrap_or(1),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            devices: std::sync::OnceLock::new(),
        }
    }

    /// The bucket `{prefix}_{kind}`, created if missing (or its replicas and history updated).
    ///
    /// # Errors
    /// When JetStream refuses it (too few servers for the replicas, say).
    pub async fn bucket(&self, kind: &str, history: i64) -> Result<Store, ClusterError> {
        let bucket = format!("{}_{kind}", self.prefix);
        let config = kv::Config {
            bucket: bucket.clone(),
            history,
            num_replicas: self.replicas,
            storage: StorageType::File,
            ..Default::default()
        };
        self.js
            .create_or_update_key_value(config)
            .await
            .map_err(|e| ClusterError::JetStream(format!("setting up bucket {bucket}: {e}")))
    }

    /// The message-id allocator of this node: blocks reserved from `{prefix}_ids` by
    /// compare-and-swap, none starting below `floor` (the next id of this node's own store).
    ///
    /// # Errors
    /// When the bucket or the first block cannot be had.
    pub(crate) async fn message_ids(&self, floor: u64) -> Result<Arc<Ids>, ClusterError> {
        let kv = self.bucket("ids", 1).await?;
        ids::allocator(IdBlocks::new(kv, floor), self.stop.clone(), &self.tasks)
            .await
            .map_err(ClusterError::JetStream)
    }

    /// Shares this node's state with the cluster, kind by kind: the configured groups and
    /// subscriptions are added to their buckets when absent (see each kind), the buckets'
    /// content replaces this node's, and every later change applies here. Returns what the
    /// catalog and the device administration write the API's changes to.
    ///
    /// # Errors
    /// When a bucket cannot be set up or read.
    pub(crate) async fn share(&self, owners: Owners<'_>) -> Result<Sharing, ClusterError> {
        // Devices first: subscriptions are checked against the products.
        let kv = self.bucket("devices", HISTORY).await?;
        let devices = Arc::new(SharedDevicesKv::new(kv.clone(), &owners.registry));
        devices.seed(owners.products).await.map_err(ClusterError::JetStream)?;
        watch::load_and_follow(kv, devices.clone(), self.stop.clone(), &self.tasks).await?;
        owners.registry.share(devices.clone());
        let _ = self.devices.set(devices.clone());

        let kv = self.bucket("groups", HISTORY).await?;
        let groups = Arc::new(SharedGroups::new(kv.clone(), owners.groups, owners.queues));
        groups.seed(owners.declared_groups).await.map_err(ClusterError::JetStream)?;
        watch::load_and_follow(kv, groups.clone(), self.stop.clone(), &self.tasks).await?;

        let kv = self.bucket("subscriptions", HISTORY).await?;
        let subscriptions = Arc::new(SharedSubscriptions::new(kv.clone(), owners.subscriptions));
        subscriptions.seed(owners.declared_subscriptions).await.map_err(ClusterError::JetStream)?;
        watch::load_and_follow(kv, subscriptions.clone(), self.stop.clone(), &self.tasks).await?;

        // Alert rules name groups: after them.
        let kv = self.bucket("alerts", HISTORY).await?;
        let alerts = Arc::new(SharedAlertsKv::new(kv.clone(), &owners.alerts));
        watch::load_and_follow(kv, alerts.clone(), self.stop.clone(), &self.tasks).await?;
        owners.alerts.share(alerts);

        // Rules name groups too.
        let kv = self.bucket("rules", HISTORY).await?;
        let rules = Arc::new(SharedRulesKv::new(kv.clone(), owners.rules));
        watch::load_and_follow(kv, rules.clone(), self.stop.clone(), &self.tasks).await?;

        Ok(Sharing { catalog: Arc::new(Shared { groups, subscriptions, rules }), devices })
    }

    /// Stops following the buckets and reserving ids, and waits until the tasks ended (they
    /// hold the owners, and through them the store).
    pub async fn close(&self) {
        self.stop.cancel();
        if let Some(devices) = self.devices.get() {
            devices.forget_kick();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What the API's writes go through in cluster mode.
pub(crate) struct Sharing {
    /// Groups and subscriptions (the catalog's writes).
    pub catalog: Arc<dyn SharedState>,
    /// Devices (the device administration's writes); its `on_removed` is set once the ingress
    /// runs.
    pub devices: Arc<SharedDevicesKv>,
}

/// The owners of the state a node shares, and what its configuration file declares.
pub(crate) struct Owners<'a> {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The configuration file's products and their devices.
    pub products: &'a [ProductConfig],
    /// The consumer groups.
    pub groups: Arc<Groups>,
    /// The configuration file's groups.
    pub declared_groups: &'a [ConsumerGroupConfig],
    /// The cluster's queues (a group's options reach its local clients through them).
    pub queues: Option<Arc<dyn GroupQueues>>,
    /// The subscriptions.
    pub subscriptions: Arc<Subscriptions>,
    /// The configuration file's subscriptions.
    pub declared_subscriptions: &'a [SubscriptionConfig],
    /// The alert rules (those of the configuration file stay this node's).
    pub alerts: Arc<Alerts>,
    /// The rules in force (files written by hand stay this node's).
    pub rules: Arc<LiveRules>,
}

/// Every shared kind, as the catalog writes them.
struct Shared {
    groups: Arc<SharedGroups>,
    subscriptions: Arc<SharedSubscriptions>,
    rules: Arc<SharedRulesKv>,
}

impl SharedState for Shared {
    fn create_group<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<(), GroupsError>> {
        self.groups.create(id, name, options).boxed()
    }

    fn delete_group<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), GroupsError>> {
        self.groups.delete(id).boxed()
    }

    fn set_group_options<'a>(
        &'a self,
        id: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<(), GroupsError>> {
        self.groups.set_options(id, options).boxed()
    }

    fn edit_subscription(&self, edit: Edit) -> BoxFuture<'_, Result<Subscription, SubscriptionError>> {
        self.subscriptions.edit(edit).boxed()
    }

    fn rule_revision<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>, RuleWriteError>> {
        self.rules.revision(name).boxed()
    }

    fn write_rule<'a>(
        &'a self,
        name: &'a str,
        text: &'a str,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<(), RuleWriteError>> {
        self.rules.write(name, text, revision).boxed()
    }

    fn delete_rule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuleWriteError>> {
        self.rules.delete(name).boxed()
    }
}

impl Drop for ClusterState {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

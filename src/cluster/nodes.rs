//! Node heartbeats: every node writes what it is and what it holds into the KV bucket
//! `{name}_nodes` every [`HEARTBEAT`], under its node name; `GET /api/v1/cluster/status` and
//! `iotpipe cluster status` list the bucket's live entries (docs/cluster.md, "Nodes").
//!
//! The bucket's `max_age` is three heartbeats: the server removes a node that stopped writing
//! (it died, or lost NATS) after [`BUCKET_MAX_AGE`], and readers skip an entry older than
//! that meanwhile. A node that shuts down deletes its entry at once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::Client;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::ClusterConfig;
use super::lease::Lease;
use super::ClusterError;
use crate::message::now_ms;

/// How often a node writes its entry.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an entry lives without a newer one: three heartbeats, so that one slow write (a
/// reconnect, a leader change) does not make a live node vanish.
pub const BUCKET_MAX_AGE: Duration = Duration::from_secs(15);
/// How long listing the nodes may take.
const LIST_WAIT: Duration = Duration::from_secs(5);

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The node's name (`[cluster] node`).
    pub node: String,
    /// iotpipe's version on it.
    pub version: String,
    /// Epoch ms of its start.
    pub started_at: u64,
    /// Its management API address.
    pub http: String,
    /// Its MQTT address.
    pub mqtt: String,
    /// Its AMQP address.
    pub amqp: String,
    /// Devices connected to it now.
    pub device_connections: u64,
    /// AMQP consumers attached to it now.
    pub consumer_connections: u64,
    /// Epoch ms of this entry (the writer's clock).
    pub heartbeat_at: u64,
}

/// This node's connection counts, read at every heartbeat.
pub type Load = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

/// The nodes bucket of a deployment.
pub struct ClusterNodes {
    kv: kv::Store,
    cluster: String,
    node: String,
    client: Client,
    config: ClusterConfig,
}

impl std::fmt::Debug for ClusterNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNodes").field("cluster", &self.cluster).field("node", &self.node).finish()
    }
}

impl ClusterNodes {
    /// Opens (or creates) the deployment's nodes bucket.
    ///
    /// # Errors
    /// When JetStream refuses the bucket.
    pub async fn open(client: Client, config: &ClusterConfig, node: &str) -> Result<Arc<Self>, ClusterError> {
        let js = async_nats::jetstream::new(client.clone());
        let kv =
            super::bucket(&js, config, "nodes", "iotpipe: live nodes (heartbeats)", BUCKET_MAX_AGE).await?;
        Ok(Arc::new(Self {
            kv,
            cluster: config.name.clone(),
            node: node.to_string(),
            client,
            config: config.clone(),
        }))
    }

    /// The deployment's name (`[cluster] name`).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's side of the lease of `job` (one node at a time does it), renewed until
    /// `shutdown`.
    ///
    /// # Errors
    /// When JetStream refuses the leases bucket.
    pub async fn lease(&self, job: &str, shutdown: CancellationToken) -> Result<Arc<Lease>, ClusterError> {
        Lease::start(self.client.clone(), &self.config, &self.node, job, shutdown).await
    }

    /// Writes `info` with the current `load` now and every [`HEARTBEAT`] until `shutdown`,
    /// then deletes the entry.
    pub fn beat(self: &Arc<Self>, info: NodeInfo, load: Load, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut info = info;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                (info.device_connections, info.consumer_connections) = load();
                info.heartbeat_at = now_ms();
                let value = match serde_json::to_vec(&info) {
                    Ok(v) => Bytes::from(v),
                    Err(e) => {
                        tracing::error!(error = %e, "Encoding the node heartbeat failed");
                        break;
                    }
                };
                if let Err(e) = this.kv.put(&this.node, value).await {
                    tracing::warn!(node = %this.node, error = %e, "Writing the node heartbeat failed");
                }
            }
            if let Err(e) = this.kv.delete(&this.node).await {
                tracing::debug!(node = %this.node, error = %e, "Deleting the node heartbeat failed; it expires");
            }
        });
    }

    /// The live nodes, by name.
    ///
    /// # Errors
    /// When the bucket cannot be read (the message says why).
    pub async fn live(&self) -> Result<Vec<NodeInfo>, String> {
        tokio::time::timeout(LIST_WAIT, self.read()).await.unwrap_or_else(|_| {
            Err(format!("the nodes bucket did not answer within {} s", LIST_WAIT.as_secs()))
        })
    }

    async fn read(&self) -> Result<Vec<NodeInfo>, String> {
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(|e| format!("listing the nodes: {e}"))?,
            Err(e) => return Err(format!("listing the nodes: {e}")),
        };
        let oldest = now_ms().saturating_sub(u64::try_from(BUCKET_MAX_AGE.as_millis()).unwrap_or(u64::MAX));
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = self.kv.entry(key.as_str()).await.map_err(|e| format!("reading node {key}: {e}"))?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else { continue };
            let written = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            if written < oldest {
                continue;
            }
            match serde_json::from_slice::<NodeInfo>(&entry.value) {
                Ok(info) => out.push(info),
                Err(e) => tracing::warn!(key = %key, error = %e, "Ignoring an unreadable node heartbeat"),
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}

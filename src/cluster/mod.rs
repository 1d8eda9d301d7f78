//! Cluster mode: several iotpipe nodes on NATS JetStream (docs/cluster.md).
//!
//! - `config.rs`: the `[cluster]` section and its check.
//! - `connect.rs`: the NATS connection (credentials, token, user and password, TLS).
//! - `jetstream.rs`: the consumer-group queues on JetStream, behind [`crate::queues::GroupQueues`];
//!   `jetstream/client.rs`: one local client of a group (its pull, its deliveries, settlement).
//! - `state.rs`: the cluster's shared state in KV buckets (message-id blocks, consumer groups).
//! - `sessions.rs`: devices on any node: session takeover across nodes, ordered status.
//! - `clients.rs`: every node's consumer clients in a KV bucket (the cluster-wide limit per
//!   group, the online list).
//! - `lease.rs`: a lease in KV, so that one node at a time evaluates the alert rules.
//! - `nodes.rs`: node heartbeats in a KV bucket (`iotpipe cluster status`).
//! - `stats.rs`: PubAck latency, retries and the connection's events for `/metrics`.
//! - `sync_check.rs`: the start-up check of the servers' `sync_interval` (`[cluster] monitor`).

pub mod clients;
pub mod config;
mod connect;
pub mod jetstream;
pub mod lease;
pub mod nodes;
pub mod sessions;
pub mod state;
pub mod stats;
pub mod sync_check;

pub use connect::{connect, connect_counted};
pub use jetstream::JetStreamQueues;
pub use sessions::ClusterSessions;

/// Creates (or updates) the deployment's KV bucket `{name}_{suffix}`: file storage, the
/// configured replicas, one value per key, entries older than `max_age` dropped (zero: kept).
pub(crate) async fn bucket(
    js: &async_nats::jetstream::Context,
    config: &config::ClusterConfig,
    suffix: &str,
    description: &str,
    max_age: std::time::Duration,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    let bucket = format!("{}_{suffix}", config.name);
    js.create_or_update_key_value(async_nats::jetstream::kv::Config {
        bucket: bucket.clone(),
        description: description.into(),
        history: 1,
        max_age,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: usize::try_from(config.replicas).unwrap_or(1),
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::JetStream(format!("setting up bucket {bucket}: {e}")))
}

/// Whether a KV `create` failed because another writer got there first. `create` tries an
/// update expecting no value, then reads the key to see whether it was deleted; when another
/// node's create lands in between (and the read is answered by a replica that has not seen it
/// yet), the error is the server's "wrong last sequence" rather than `AlreadyExists`. Both mean
/// the same: the key is taken.
pub(crate) fn lost_create_race(e: &async_nats::jetstream::kv::CreateError) -> bool {
    e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists
        || e.to_string().contains("wrong last sequence")
}

/// Why the cluster backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The NATS servers could not be reached or refused the login.
    #[error("cannot connect to NATS ({servers}): {reason}")]
    Connect {
        /// The configured servers.
        servers: String,
        /// Why.
        reason: String,
    },
    /// A file of the configuration could not be used.
    #[error("cluster.{key}: {reason}")]
    File {
        /// The key naming the file.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// JetStream refused to set up a stream or consumer.
    #[error("JetStream: {0}")]
    JetStream(String),
}

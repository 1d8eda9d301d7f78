//! Consumer groups in the `{name}_groups` bucket: key = group id, value = [`GroupRecord`].
//!
//! The API writes the bucket (through the catalog's `SharedState`) and applies its write
//! here at once; every node's watch applies every change to its `Groups`, so a group created
//! on one node is usable by a consumer on any node once the watch has delivered it (a few
//! milliseconds on a healthy cluster).

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::watch::Apply;
use crate::groups::{ConsumerGroupConfig, GroupOptions, Groups, GroupsError, DEFAULT_GROUP};
use crate::queues::GroupQueues;

/// A consumer group as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    /// Display name.
    pub name: String,
    /// Deliveries of a message at most before it goes to the dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delivery_attempts: Option<u32>,
    /// Put there from a node's configuration file (informative: a node refuses to delete only
    /// the groups its own file declares).
    #[serde(default)]
    pub declared: bool,
}

/// Conflicting writes an options change survives before it gives up.
const ATTEMPTS: usize = 10;

/// The groups' bucket, seen from this node.
pub struct SharedGroups {
    kv: Store,
    groups: Arc<Groups>,
    /// The cluster's queues, told a group's new options (its local clients' delivery limit).
    queues: Option<Arc<dyn GroupQueues>>,
}

impl SharedGroups {
    /// The bucket `kv` applied to `groups` (and the options to `queues`).
    pub fn new(kv: Store, groups: Arc<Groups>, queues: Option<Arc<dyn GroupQueues>>) -> Self {
        Self { kv, groups, queues }
    }

    /// Puts this node's configured groups in the bucket unless a node put them there before:
    /// the first node to start with a group in its configuration file decides its record.
    ///
    /// # Errors
    /// When the bucket cannot be written.
    pub async fn seed(&self, declared: &[ConsumerGroupConfig]) -> Result<(), String> {
        for g in declared {
            let record = GroupRecord {
                name: g.name.clone(),
                max_delivery_attempts: g.max_delivery_attempts,
                declared: true,
            };
            match self.kv.create(&g.id, encode(&record)).await {
                Ok(_) => {
                    tracing::info!(group = %g.id, "Configured consumer group added to the cluster's state")
                }
                Err(e) if crate::cluster::lost_create_race(&e) => {}
                Err(e) => return Err(format!("adding configured group {}: {e}", g.id)),
            }
        }
        Ok(())
    }
}

fn encode(record: &GroupRecord) -> bytes::Bytes {
    serde_json::to_vec(record).unwrap_or_default().into()
}

impl Apply for SharedGroups {
    fn apply<'a>(&'a self, id: &'a str, value: Option<&'a [u8]>) -> BoxFuture<'a, ()> {
        async move {
            let Some(value) = value else {
                if self.groups.exists(id) && !self.groups.is_declared(id) {
                    match self.groups.delete(id).await {
                        Ok(()) => tracing::info!(group = %id, "Consumer group deleted on another node"),
                        Err(e) => tracing::error!(group = %id, error = %e, "Deleting a group deleted on another node failed"),
                    }
                }
                return;
            };
            let record: GroupRecord = match serde_json::from_slice(value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(group = %id, error = %e, "A consumer group in the cluster's state is unreadable; ignored");
                    return;
                }
            };
            let options = GroupOptions { max_delivery_attempts: record.max_delivery_attempts };
            match self.groups.get(id) {
                Some(g) if self.groups.is_declared(id) => {
                    if g.name != record.name || g.max_delivery_attempts() != record.max_delivery_attempts {
                        tracing::warn!(group = %id, "This node's configuration file declares the group differently from the cluster's state; the file wins here");
                    }
                }
                Some(g) => {
                    if g.name != record.name {
                        tracing::warn!(group = %id, name = %record.name, "A group cannot be renamed; the name stays");
                    }
                    if g.max_delivery_attempts() == record.max_delivery_attempts {
                        return;
                    }
                    if let Err(e) = self.groups.set_options(id, options) {
                        tracing::error!(group = %id, error = %e, "Applying a group's options failed");
                    }
                    if let Some(queues) = &self.queues {
                        if let Err(e) = queues.ensure_group(id, options).await {
                            tracing::error!(group = %id, error = %e, "Applying a group's options to its queue failed");
                        }
                    }
                }
                None => match self.groups.create(&record.name, Some(id), options) {
                    Ok(_) => {}
                    Err(e) => tracing::error!(group = %id, error = %e, "A consumer group of the cluster's state cannot be created on this node"),
                },
            }
        }
        .boxed()
    }

    fn loaded<'a>(&'a self, present: &'a HashSet<String>) -> BoxFuture<'a, ()> {
        async move {
            for g in self.groups.list() {
                if !present.contains(&*g.id) && !self.groups.is_declared(&g.id) {
                    tracing::warn!(group = %g.id, "Consumer group not in the cluster's state (deleted while this node was away): removed here");
                    if let Err(e) = self.groups.delete(&g.id).await {
                        tracing::error!(group = %g.id, error = %e, "Removing a group the cluster no longer has failed");
                    }
                }
            }
        }
        .boxed()
    }
}

impl SharedGroups {
    /// Stores a new group for every node; the id must be new to the bucket.
    ///
    /// # Errors
    /// [`GroupsError::IdTaken`], [`GroupsError::Cluster`].
    pub async fn create(&self, id: &str, name: &str, options: GroupOptions) -> Result<(), GroupsError> {
        {
            let record = GroupRecord {
                name: name.to_string(),
                max_delivery_attempts: options.max_delivery_attempts,
                declared: false,
            };
            match self.kv.create(id, encode(&record)).await {
                Ok(_) => Ok(()),
                Err(e) if crate::cluster::lost_create_race(&e) => Err(GroupsError::IdTaken(id.to_string())),
                Err(e) => Err(GroupsError::Cluster(e.to_string())),
            }
        }
    }

    /// Sets a group's options for every node (compare-and-swap on its record).
    ///
    /// # Errors
    /// [`GroupsError::NotFound`], [`GroupsError::Cluster`].
    pub async fn set_options(&self, id: &str, options: GroupOptions) -> Result<(), GroupsError> {
        for _ in 0..ATTEMPTS {
            let entry = self.kv.entry(id).await.map_err(|e| GroupsError::Cluster(e.to_string()))?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                return Err(GroupsError::NotFound(id.to_string()));
            };
            let mut record: GroupRecord =
                serde_json::from_slice(&entry.value).map_err(|e| GroupsError::Cluster(e.to_string()))?;
            record.max_delivery_attempts = options.max_delivery_attempts;
            match self.kv.update(id, encode(&record), entry.revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(GroupsError::Cluster(e.to_string())),
            }
        }
        Err(GroupsError::Cluster(format!("consumer group {id} kept changing on other nodes; try again")))
    }

    /// Removes a group for every node.
    ///
    /// # Errors
    /// [`GroupsError::Protected`] for `DEFAULT_GROUP`, [`GroupsError::Cluster`].
    pub async fn delete(&self, id: &str) -> Result<(), GroupsError> {
        {
            if id == DEFAULT_GROUP {
                return Err(GroupsError::Protected("DEFAULT_GROUP cannot be deleted".into()));
            }
            let entry = self.kv.entry(id).await.map_err(|e| GroupsError::Cluster(e.to_string()))?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                return Ok(());
            };
            // Only the revision read: a group re-created meanwhile is not deleted unseen.
            self.kv
                .delete_expect_revision(id, Some(entry.revision))
                .await
                .map_err(|e| GroupsError::Cluster(e.to_string()))
        }
    }
}

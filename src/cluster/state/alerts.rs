//! Alert rules created through the API, in the `{name}_alerts` bucket: key = rule id, value =
//! the rule's body (the API's JSON). Rules of a node's configuration file stay that node's.
//!
//! Evaluation is not shared here: until one node at a time evaluates (a lease, issue 14 item 6),
//! every node evaluates every rule and notifies on its own.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::watch::Apply;
use crate::alerts::model::AlertRuleBody;
use crate::alerts::shared::SharedAlerts;
use crate::alerts::{Alerts, AlertsError};

/// Conflicting writes an edit survives before it gives up.
const ATTEMPTS: usize = 10;

/// The alert rules' bucket, seen from this node.
pub struct SharedAlertsKv {
    kv: Store,
    /// Weak: the alert rules hold this (their edits go through it).
    alerts: Weak<Alerts>,
}

impl SharedAlertsKv {
    /// The bucket `kv` applied to `alerts`.
    pub fn new(kv: Store, alerts: &Arc<Alerts>) -> Self {
        Self { kv, alerts: Arc::downgrade(alerts) }
    }
}

fn cluster(e: impl std::fmt::Display) -> AlertsError {
    AlertsError::Cluster(e.to_string())
}

fn encode(body: &AlertRuleBody) -> bytes::Bytes {
    serde_json::to_vec(body).unwrap_or_default().into()
}

impl SharedAlerts for SharedAlertsKv {
    fn create<'a>(&'a self, id: &'a str, body: &'a AlertRuleBody) -> BoxFuture<'a, Result<(), AlertsError>> {
        async move {
            match self.kv.create(id, encode(body)).await {
                Ok(_) => Ok(()),
                Err(e) if crate::cluster::lost_create_race(&e) => {
                    Err(cluster(format!("alert rule id {id} is taken in the cluster; try again")))
                }
                Err(e) => Err(cluster(e)),
            }
        }
        .boxed()
    }

    fn update<'a>(&'a self, id: &'a str, body: &'a AlertRuleBody) -> BoxFuture<'a, Result<(), AlertsError>> {
        async move {
            for _ in 0..ATTEMPTS {
                let entry = self.kv.entry(id).await.map_err(cluster)?;
                let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                    return Err(AlertsError::NotFound(id.to_string()));
                };
                match self.kv.update(id, encode(body), entry.revision).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(cluster(e)),
                }
            }
            Err(cluster(format!("alert rule {id} kept changing on other nodes; try again")))
        }
        .boxed()
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), AlertsError>> {
        async move { self.kv.delete(id).await.map_err(cluster) }.boxed()
    }
}

impl Apply for SharedAlertsKv {
    fn apply<'a>(&'a self, id: &'a str, value: Option<&'a [u8]>) -> BoxFuture<'a, ()> {
        async move {
            let body = match value.map(serde_json::from_slice::<AlertRuleBody>) {
                Some(Ok(body)) => Some(body),
                Some(Err(e)) => {
                    tracing::error!(rule_id = %id, error = %e, "An alert rule in the cluster's state is unreadable; ignored");
                    return;
                }
                None => None,
            };
            let Some(alerts) = self.alerts.upgrade() else { return };
            if let Err(e) = alerts.apply(id, body) {
                tracing::error!(rule_id = %id, error = %e, "Applying an alert rule from the cluster's state failed");
            }
        }
        .boxed()
    }

    fn loaded<'a>(&'a self, present: &'a HashSet<String>) -> BoxFuture<'a, ()> {
        async move {
            let Some(alerts) = self.alerts.upgrade() else { return };
            for id in alerts.api_rule_ids() {
                if !present.contains(&id) {
                    tracing::info!(rule_id = %id, "Alert rule not in the cluster's state: removed here");
                    if let Err(e) = alerts.apply(&id, None) {
                        tracing::error!(rule_id = %id, error = %e, "Removing an alert rule failed");
                    }
                }
            }
        }
        .boxed()
    }
}

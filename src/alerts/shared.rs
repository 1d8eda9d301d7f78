//! Cluster mode: the alert rules created through the API are shared by every node (docs/cluster.md,
//! "Cluster state"). The cluster implements [`SharedAlerts`]; the API's edits go there first
//! and then apply here, and every node applies every change with [`Alerts::apply`]. Rules of
//! the configuration file stay each node's own.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::model::AlertRuleBody;
use super::{generate_id, Alerts, AlertsError, RuleRuntime, Source, CREATED};
use crate::logsafe::Untrusted;

/// The alert rules of the cluster.
pub trait SharedAlerts: Send + Sync {
    /// Stores a new rule for every node.
    ///
    /// # Errors
    /// [`AlertsError::Cluster`] (an id already there included).
    fn create<'a>(&'a self, id: &'a str, body: &'a AlertRuleBody) -> BoxFuture<'a, Result<(), AlertsError>>;

    /// Replaces an existing rule for every node.
    ///
    /// # Errors
    /// [`AlertsError::NotFound`] when the cluster does not have it; [`AlertsError::Cluster`].
    fn update<'a>(&'a self, id: &'a str, body: &'a AlertRuleBody) -> BoxFuture<'a, Result<(), AlertsError>>;

    /// Deletes a rule for every node.
    ///
    /// # Errors
    /// [`AlertsError::Cluster`].
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), AlertsError>>;
}

impl Alerts {
    /// Cluster mode: the API's edits go to `shared` first. Set once, at start-up.
    pub fn share(&self, shared: Arc<dyn SharedAlerts>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("The alert rules' shared state was set twice; the first stays");
        }
    }

    /// [`Self::create`], in cluster mode for every node.
    ///
    /// # Errors
    /// As [`Self::create`]; [`AlertsError::Cluster`].
    pub async fn create_any(self: &Arc<Self>, body: &AlertRuleBody) -> Result<Arc<RuleRuntime>, AlertsError> {
        let Some(shared) = self.shared.get() else { return self.create(body) };
        let rule = self.check(body, None)?;
        let id = generate_id();
        let body = rule.to_body();
        shared.create(&id, &body).await?;
        self.apply(&id, Some(body))?;
        self.get(&id).ok_or(AlertsError::NotFound(id))
    }

    /// [`Self::update`], in cluster mode for every node.
    ///
    /// # Errors
    /// As [`Self::update`]; [`AlertsError::Cluster`].
    pub async fn update_any(
        self: &Arc<Self>,
        id: &str,
        body: &AlertRuleBody,
    ) -> Result<Arc<RuleRuntime>, AlertsError> {
        let Some(shared) = self.shared.get() else { return self.update(id, body) };
        self.editable(id)?;
        let body = self.check(body, Some(id))?.to_body();
        shared.update(id, &body).await?;
        self.apply(id, Some(body))?;
        self.get(id).ok_or_else(|| AlertsError::NotFound(id.to_string()))
    }

    /// [`Self::delete`], in cluster mode for every node.
    ///
    /// # Errors
    /// As [`Self::delete`]; [`AlertsError::Cluster`].
    pub async fn delete_any(self: &Arc<Self>, id: &str) -> Result<(), AlertsError> {
        let Some(shared) = self.shared.get() else { return self.delete(id) };
        self.editable(id)?;
        shared.delete(id).await?;
        self.apply(id, None)
    }

    /// The rule exists and comes from the API.
    fn editable(&self, id: &str) -> Result<(), AlertsError> {
        let rule = self.get(id).ok_or_else(|| AlertsError::NotFound(id.to_string()))?;
        if rule.source == Source::Config {
            return Err(AlertsError::Protected(id.to_string()));
        }
        Ok(())
    }

    /// Sets rule `id` as the cluster's state has it (`None`: deleted), without the checks
    /// against other rules (the node that made the change made them). A rule of this node's
    /// configuration file with the same id stays; the same body again changes nothing (its
    /// evaluation goes on).
    ///
    /// # Errors
    /// A body that does not validate here; storage.
    pub fn apply(self: &Arc<Self>, id: &str, body: Option<AlertRuleBody>) -> Result<(), AlertsError> {
        let _edit = self.lock_edits();
        let old = self.get(id);
        if old.as_ref().is_some_and(|r| r.source == Source::Config) {
            tracing::warn!(rule_id = %id, "An alert rule of the cluster has the id of one in this node's configuration; the configuration wins here");
            return Ok(());
        }
        match body {
            Some(body) => {
                if old.as_ref().is_some_and(|r| r.rule.to_body() == body) {
                    return Ok(());
                }
                let rule = body.validate().map_err(AlertsError::Invalid)?;
                CREATED.put(&self.db, id, &body)?;
                tracing::info!(rule_id = %id, name = %Untrusted(&rule.name), "Alert rule set from the cluster's state");
                let record = old.map(|r| r.record.clone()).unwrap_or_default();
                self.install(id.to_string(), rule, Source::Api, record);
            }
            None => {
                let Some(old) = old else { return Ok(()) };
                CREATED.remove(&self.db, id)?;
                self.write().remove(id);
                old.stop.cancel();
                tracing::info!(rule_id = %id, name = %Untrusted(&old.rule.name), "Alert rule deleted");
            }
        }
        Ok(())
    }

    /// The ids of the rules created through the API.
    pub fn api_rule_ids(&self) -> Vec<String> {
        self.read().values().filter(|r| r.source == Source::Api).map(|r| r.id.clone()).collect()
    }
}

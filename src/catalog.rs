//! Who uses which consumer group, and the one lock under which references to groups change.
//!
//! Subscriptions and rules name consumer groups, and a group may only be deleted while nothing
//! names it. Checking and changing are two steps: run at the same time, a group deletion and the
//! creation of a rule or subscription naming that group could each pass its check against the
//! state before the other, leaving a rule that fails every message or a subscription storing
//! messages under a deleted group. So every group deletion, every rule write that sets a rule's
//! actions (create, replace) and every subscription change go through [`Catalog`], which holds
//! one lock from the check to the change: they happen one after the other, and the second sees
//! the first.
//!
//! In cluster mode (docs/cluster.md, "Cluster state") group creations and deletions also go to
//! the cluster's shared state ([`SharedState`]), and the checks read this node's view, which
//! the shared state's watch keeps current: two nodes changing references at the same moment are
//! not serialised by this lock.
//!
//! Deleting a rule, or enabling or disabling it, does not take the lock (outside cluster mode):
//! it never makes a rule name a group it did not name before. Rule files written by hand are not held to any of this;
//! their actions to missing groups fail per message, as documented for the rules directory.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::groups::{Group, GroupOptions, Groups, GroupsError};
use crate::rules::edit::{self, EditError, RuleSpec};
use crate::rules::watch::LiveRules;
use crate::rules::{Action, Rule};
use crate::subscriptions::{Edit as SubEdit, Subscription, SubscriptionError, Subscriptions};

/// What names a consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// Products whose subscriptions send to it.
    pub products: Vec<String>,
    /// Rules in force with an amqp action (the error action included) to it.
    pub rules: Vec<String>,
}

/// Why a consumer group was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteGroupError {
    /// Subscriptions send to the group.
    #[error("consumer group {group} is used by the subscriptions of products {}", .products.join(", "))]
    UsedBySubscriptions {
        /// Group id.
        group: String,
        /// Their products.
        products: Vec<String>,
    },
    /// Rules forward to the group.
    #[error("consumer group {group} is the destination of the rules {}", .rules.join(", "))]
    UsedByRules {
        /// Group id.
        group: String,
        /// Rule names.
        rules: Vec<String>,
    },
    /// Unknown or protected group, or storage.
    #[error(transparent)]
    Groups(#[from] GroupsError),
}

/// Why a rule was not written.
#[derive(Debug, thiserror::Error)]
pub enum RuleWriteError {
    /// Actions name consumer groups that do not exist; one entry per action, naming its field
    /// (`actions[0]: consumer group G does not exist`).
    #[error("{}", .0.join("; "))]
    UnknownGroups(Vec<String>),
    /// The rule itself was refused (name, compile errors, exists, not found, I/O).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The blocking task writing the file did not finish.
    #[error("the rule file task failed: {0}")]
    Task(String),
    /// Cluster mode: the shared state could not be read or written; nothing changed.
    #[error("the cluster's shared state is unavailable: {0}")]
    Cluster(String),
    /// Cluster mode: another node changed the rule at the same moment; nothing changed here.
    #[error("rule {0} was changed on another node at the same moment; try again")]
    Changed(String),
}

/// Cluster mode: the state shared by every node, which the catalog writes before it changes
/// this node (every node, this one included, then applies the change from the shared state's
/// watch; this node applies its own write at once as well).
pub trait SharedState: Send + Sync {
    /// Stores a new group for every node.
    ///
    /// # Errors
    /// [`GroupsError::IdTaken`] when the id exists in the cluster; [`GroupsError::Cluster`]
    /// when the shared state cannot be written.
    fn create_group<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<(), GroupsError>>;

    /// Removes a group for every node.
    ///
    /// # Errors
    /// [`GroupsError::Cluster`].
    fn delete_group<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), GroupsError>>;

    /// Sets a group's options for every node.
    ///
    /// # Errors
    /// [`GroupsError::NotFound`] when the cluster does not have it; [`GroupsError::Cluster`].
    fn set_group_options<'a>(
        &'a self,
        id: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<(), GroupsError>>;

    /// Makes a subscription edit for every node, checked against the shared value.
    ///
    /// # Errors
    /// The edit's refusals; [`SubscriptionError::Cluster`].
    fn edit_subscription(&self, edit: SubEdit) -> BoxFuture<'_, Result<Subscription, SubscriptionError>>;

    /// The revision of rule `name` in the shared state, `None` when it has none.
    ///
    /// # Errors
    /// [`RuleWriteError::Cluster`].
    fn rule_revision<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>, RuleWriteError>>;

    /// Writes rule `name`'s file text for every node: a new rule when `revision` is `None`,
    /// else over that revision.
    ///
    /// # Errors
    /// [`EditError::Exists`] (a new rule another node has), [`RuleWriteError::Changed`],
    /// [`RuleWriteError::Cluster`].
    fn write_rule<'a>(
        &'a self,
        name: &'a str,
        text: &'a str,
        revision: Option<u64>,
    ) -> BoxFuture<'a, Result<(), RuleWriteError>>;

    /// Deletes rule `name` for every node.
    ///
    /// # Errors
    /// [`RuleWriteError::Cluster`].
    fn delete_rule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), RuleWriteError>>;
}

/// How often a generated group id is drawn again when the cluster has it already.
const ID_DRAWS: usize = 3;

/// The one owner of references to consumer groups.
pub struct Catalog {
    groups: Arc<Groups>,
    subscriptions: Arc<Subscriptions>,
    rules: Arc<LiveRules>,
    /// Cluster mode: where group changes go first (set once at start-up).
    shared: OnceLock<Arc<dyn SharedState>>,
    /// Held from the check of references to the change; an owned guard, so that a rule write
    /// on the blocking pool keeps it even when the request that started it is dropped.
    serial: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// The catalog over the groups, the subscriptions and the rules directory's reloader.
    pub fn new(groups: Arc<Groups>, subscriptions: Arc<Subscriptions>, rules: Arc<LiveRules>) -> Self {
        Self { groups, subscriptions, rules, shared: OnceLock::new(), serial: Arc::new(Mutex::new(())) }
    }

    /// Cluster mode: group changes go to `shared` first. Set once, at start-up.
    pub fn share(&self, shared: Arc<dyn SharedState>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("The catalog's shared state was set twice; the first stays");
        }
    }

    /// Creates a consumer group (in cluster mode: in the shared state, then here).
    ///
    /// # Errors
    /// As [`Groups::create`]; in cluster mode [`GroupsError::Cluster`] too.
    pub async fn create_group(
        &self,
        name: &str,
        id: Option<&str>,
        options: GroupOptions,
    ) -> Result<Arc<Group>, GroupsError> {
        let Some(shared) = self.shared.get() else {
            return self.groups.create(name, id, options);
        };
        let _serial = self.serial.lock().await;
        self.groups.check_create(name, id, options)?;
        let mut draws = 0;
        let id = loop {
            let candidate = id.map_or_else(crate::groups::generate_id, str::to_string);
            match shared.create_group(&candidate, name, options).await {
                Ok(()) => break candidate,
                Err(GroupsError::IdTaken(_)) if id.is_none() && draws < ID_DRAWS => draws += 1,
                Err(e) => return Err(e),
            }
        };
        // The watch may have applied the write first (then the name and the id are taken by
        // this very group).
        let applied = |groups: &Groups| groups.get(&id).filter(|g| g.name == name);
        if let Some(group) = applied(&self.groups) {
            return Ok(group);
        }
        match self.groups.create(name, Some(&id), options) {
            Ok(group) => Ok(group),
            Err(e) => {
                if let Some(group) = applied(&self.groups) {
                    return Ok(group);
                }
                // Refused here after all (a name taken meanwhile): the cluster drops it again.
                if let Err(undo) = shared.delete_group(&id).await {
                    tracing::error!(group = %id, error = %undo, "Removing a group this node refused from the cluster's state failed");
                }
                Err(e)
            }
        }
    }

    /// What names `group` now.
    pub fn users(&self, group: &str) -> Users {
        let set = self.rules.shared().get();
        let rules = set
            .rules()
            .iter()
            .filter(|r| amqp_targets(r).any(|(_, g)| g == group))
            .map(|r| r.name.clone())
            .collect();
        Users { products: self.subscriptions.using_group(group), rules }
    }

    /// Sets a group's options (`maxDeliveryAttempts`); in cluster mode on every node. A group
    /// of the configuration file keeps the file's options.
    ///
    /// # Errors
    /// Unknown or configured group, a bad option, storage; in cluster mode
    /// [`GroupsError::Cluster`].
    pub async fn set_group_options(
        &self,
        id: &str,
        options: GroupOptions,
    ) -> Result<Arc<Group>, GroupsError> {
        if options.max_delivery_attempts == Some(0) {
            return Err(GroupsError::InvalidOption(
                "maxDeliveryAttempts: must be at least 1; leave it out for no limit".into(),
            ));
        }
        let _serial = self.serial.lock().await;
        let group = self.groups.get(id).ok_or_else(|| GroupsError::NotFound(id.to_string()))?;
        if self.groups.is_declared(id) {
            return Err(GroupsError::Protected(format!(
                "consumer group {id} is declared in the configuration file; change it there"
            )));
        }
        if let Some(shared) = self.shared.get() {
            shared.set_group_options(id, options).await?;
        }
        self.groups.set_options(id, options)?;
        Ok(group)
    }

    /// Deletes a consumer group, with its stored messages, unless a subscription or a rule names
    /// it.
    ///
    /// # Errors
    /// The group is in use (subscriptions are named first), unknown or protected; storage.
    pub async fn delete_group(&self, id: &str) -> Result<(), DeleteGroupError> {
        let _serial = self.serial.lock().await;
        if !self.groups.exists(id) {
            return Err(GroupsError::NotFound(id.to_string()).into());
        }
        let shared = self.shared.get();
        if shared.is_some() {
            self.groups.check_delete(id)?;
        }
        let Users { products, rules } = self.users(id);
        if !products.is_empty() {
            return Err(DeleteGroupError::UsedBySubscriptions { group: id.to_string(), products });
        }
        if !rules.is_empty() {
            return Err(DeleteGroupError::UsedByRules { group: id.to_string(), rules });
        }
        if let Some(shared) = shared {
            shared.delete_group(id).await?;
        }
        // The group leaves the set in the first poll, before any await: a request dropped while
        // its messages are cleared cannot leave it half-visible to the next change.
        match self.groups.delete(id).await {
            // In a cluster the watch may have applied the deletion first.
            Err(GroupsError::NotFound(_)) if shared.is_some() => Ok(()),
            done => Ok(done?),
        }
    }

    /// Writes a new rule file and puts it in force, refusing amqp actions to groups that do not
    /// exist.
    ///
    /// # Errors
    /// [`RuleWriteError::UnknownGroups`]; the rules' own refusals.
    pub async fn create_rule(&self, spec: RuleSpec) -> Result<Arc<Rule>, RuleWriteError> {
        if let Some(shared) = self.shared.get() {
            let _serial = self.serial.lock().await;
            let name = spec.name.clone();
            let text = self
                .on_blocking(move |live, groups| {
                    known_groups(groups, &edit::check(live, &spec)?)?;
                    Ok(edit::render(live, &spec, true)?)
                })
                .await?;
            shared.write_rule(&name, &text, None).await?;
            let put = self.put_text(name.clone(), text).await;
            if put.is_err() {
                // Refused here after all (a file of that name written by hand meanwhile): the
                // cluster drops it again.
                if let Err(undo) = shared.delete_rule(&name).await {
                    tracing::error!(rule = %name, error = %undo, "Removing a rule this node refused from the cluster's state failed");
                }
            }
            return put;
        }
        self.write_rule(move |live, groups| {
            known_groups(groups, &edit::check(live, &spec)?)?;
            Ok(edit::create(live, &spec)?)
        })
        .await
    }

    /// Replaces rule `name`'s file and puts it in force; an unknown rule is refused before its
    /// body is judged.
    ///
    /// # Errors
    /// As [`Self::create_rule`]; [`EditError::NotFound`].
    pub async fn replace_rule(&self, name: String, spec: RuleSpec) -> Result<Arc<Rule>, RuleWriteError> {
        if let Some(shared) = self.shared.get() {
            let _serial = self.serial.lock().await;
            let named = name.clone();
            let text = self
                .on_blocking(move |live, groups| {
                    if !edit::exists(live, &named) {
                        return Err(EditError::NotFound(named).into());
                    }
                    known_groups(groups, &edit::check(live, &spec)?)?;
                    Ok(edit::render(live, &spec, false)?)
                })
                .await?;
            // A rule only this node had (a file written by hand) becomes shared.
            let revision = shared.rule_revision(&name).await?;
            shared.write_rule(&name, &text, revision).await?;
            return self.put_text(name, text).await;
        }
        self.write_rule(move |live, groups| {
            if !edit::exists(live, &name) {
                return Err(EditError::NotFound(name).into());
            }
            known_groups(groups, &edit::check(live, &spec)?)?;
            Ok(edit::replace(live, &name, &spec)?)
        })
        .await
    }

    /// Enables or disables rule `name` (its `enabled` header line); in cluster mode for every
    /// node.
    ///
    /// # Errors
    /// [`EditError::NotFound`]; a file that does not compile; I/O; in cluster mode
    /// [`RuleWriteError::Cluster`], [`RuleWriteError::Changed`].
    pub async fn set_rule_enabled(&self, name: String, enabled: bool) -> Result<Arc<Rule>, RuleWriteError> {
        let Some(shared) = self.shared.get() else {
            return self.on_blocking(move |live, _| Ok(edit::set_enabled(live, &name, enabled)?)).await;
        };
        let _serial = self.serial.lock().await;
        let named = name.clone();
        let text = self
            .on_blocking(move |live, _| Ok(edit::with_enabled(&edit::text(live, &named)?, enabled)))
            .await?;
        let revision = shared.rule_revision(&name).await?;
        shared.write_rule(&name, &text, revision).await?;
        self.put_text(name, text).await
    }

    /// Deletes rule `name`'s file and the rule; in cluster mode on every node.
    ///
    /// # Errors
    /// [`EditError::NotFound`]; I/O; in cluster mode [`RuleWriteError::Cluster`].
    pub async fn delete_rule(&self, name: String) -> Result<(), RuleWriteError> {
        let Some(shared) = self.shared.get() else {
            return self.on_blocking(move |live, _| Ok(edit::delete(live, &name)?)).await;
        };
        let _serial = self.serial.lock().await;
        let named = name.clone();
        if !self.on_blocking(move |live, _| Ok(edit::exists(live, &named))).await? {
            return Err(EditError::NotFound(name).into());
        }
        shared.delete_rule(&name).await?;
        match self.on_blocking(move |live, _| Ok(edit::delete(live, &name)?)).await {
            // The watch applied the deletion first.
            Err(RuleWriteError::Edit(EditError::NotFound(_))) => Ok(()),
            done => done,
        }
    }

    /// Puts a rule's text from the shared state in force here.
    async fn put_text(&self, name: String, text: String) -> Result<Arc<Rule>, RuleWriteError> {
        self.on_blocking(move |live, _| Ok(edit::put_text(live, &name, &text)?)).await
    }

    /// Runs `f` on the blocking pool (it compiles, reads or writes files), without the lock.
    async fn on_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LiveRules, &Groups) -> Result<T, RuleWriteError> + Send + 'static,
    ) -> Result<T, RuleWriteError> {
        let (live, groups) = (self.rules.clone(), self.groups.clone());
        tokio::task::spawn_blocking(move || f(&live, &groups))
            .await
            .map_err(|e| RuleWriteError::Task(e.to_string()))?
    }

    /// Runs `write` on the blocking pool (it compiles, writes and syncs files) under the lock.
    async fn write_rule(
        &self,
        write: impl FnOnce(&LiveRules, &Groups) -> Result<Arc<Rule>, RuleWriteError> + Send + 'static,
    ) -> Result<Arc<Rule>, RuleWriteError> {
        let serial = self.serial.clone().lock_owned().await;
        let (live, groups) = (self.rules.clone(), self.groups.clone());
        tokio::task::spawn_blocking(move || {
            let _serial = serial;
            write(&live, &groups)
        })
        .await
        .map_err(|e| RuleWriteError::Task(e.to_string()))?
    }

    /// Creates a product's subscription.
    ///
    /// # Errors
    /// As [`Subscriptions::create`].
    pub async fn create_subscription(&self, sub: Subscription) -> Result<Subscription, SubscriptionError> {
        self.edit_subscription(SubEdit::Create(sub)).await
    }

    /// Replaces a product's message types and groups.
    ///
    /// # Errors
    /// As [`Subscriptions::replace`].
    pub async fn replace_subscription(&self, sub: Subscription) -> Result<Subscription, SubscriptionError> {
        self.edit_subscription(SubEdit::Replace(sub)).await
    }

    /// Deletes a product's subscription.
    ///
    /// # Errors
    /// As [`Subscriptions::delete`].
    pub async fn delete_subscription(&self, product: &str) -> Result<(), SubscriptionError> {
        self.edit_subscription(SubEdit::Delete(product.to_string())).await.map(drop)
    }

    /// Removes one group from a product's subscription.
    ///
    /// # Errors
    /// As [`Subscriptions::unsubscribe`].
    pub async fn unsubscribe(&self, product: &str, group: &str) -> Result<Subscription, SubscriptionError> {
        self.edit_subscription(SubEdit::Unsubscribe {
            product: product.to_string(),
            group: group.to_string(),
        })
        .await
    }

    /// One subscription edit under the lock: here, or in cluster mode in the shared state.
    async fn edit_subscription(&self, edit: SubEdit) -> Result<Subscription, SubscriptionError> {
        let _serial = self.serial.lock().await;
        if let Some(shared) = self.shared.get() {
            return shared.edit_subscription(edit).await;
        }
        self.subscriptions.edit(edit)
    }
}

/// The consumer groups `rule` forwards to, each with the field of its action (`actions[i]`,
/// `errorAction`).
fn amqp_targets(rule: &Rule) -> impl Iterator<Item = (String, &str)> {
    let actions = rule.actions.iter().enumerate().map(|(i, a)| (format!("actions[{i}]"), a));
    let error_action = rule.error_action.iter().map(|a| ("errorAction".to_string(), a));
    actions.chain(error_action).filter_map(|(field, a)| match a {
        Action::Amqp { group, .. } => Some((field, group.as_str())),
        _ => None,
    })
}

/// Refuses a rule whose amqp actions name groups that do not exist, naming each.
fn known_groups(groups: &Groups, rule: &Rule) -> Result<(), RuleWriteError> {
    let unknown: Vec<String> = amqp_targets(rule)
        .filter(|(_, g)| !groups.exists(g))
        .map(|(field, g)| format!("{field}: consumer group {g} does not exist"))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(RuleWriteError::UnknownGroups(unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_targets_name_each_action_field() {
        let text = "-- action: republish /a/${deviceName()}/user/copy\n-- action: amqp G1 tag=x\n\
                    -- error_action: amqp G2\nSELECT * FROM \"/a/+/user/update\"\n";
        let rule = Rule::from_file("/rules/r.sql", "r", text, None).unwrap();
        let targets: Vec<(String, &str)> = amqp_targets(&rule).collect();
        assert_eq!(targets, [("actions[1]".to_string(), "G1"), ("errorAction".to_string(), "G2")]);
    }
}

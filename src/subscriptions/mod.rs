//! Product-wide server-side subscriptions: which message types of a product's devices go to
//! which consumer groups, with no SQL.
//!
//! The set lives in memory as [`Routes`] behind one lock that the pipeline reads once per batch;
//! an edit builds new routes and swaps them in, so it takes effect for the next message without
//! a restart. Subscriptions come from the configuration file and from the API; what the API
//! creates, changes or deletes is stored in the database and wins over the file at the next
//! start (deletions included), the same rule as for devices.

pub mod config;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::groups::Groups;
use crate::registry::Registry;
use crate::rules::action::Action;
use crate::rules::Rule;
use crate::store::{Collection, Db, Encoding, StoreError};

mod routes;

pub use config::{MessageType, SubscriptionConfig};
pub use routes::Routes;

/// Consumer groups per subscription: the platform's limit.
pub const MAX_GROUPS_PER_SUBSCRIPTION: usize = 10;

/// productKey -> JSON of the subscription, or `null` for one deleted through the API.
const STORED: Collection<Option<Subscription>> = Collection::new("subscriptions", Encoding::JsonText);

/// One product's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The product whose devices' messages are forwarded.
    pub product_key: String,
    /// Which messages.
    pub message_types: Vec<MessageType>,
    /// Consumer groups, each receiving its own copy.
    pub consumer_group_ids: Vec<String>,
}

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// No such product.
    #[error("product {0} does not exist")]
    UnknownProduct(String),
    /// No subscription for the product.
    #[error("product {0} has no subscription")]
    NotFound(String),
    /// The product already has one.
    #[error("product {0} already has a subscription; change it with PUT")]
    Exists(String),
    /// A named group does not exist.
    #[error("consumer group {0} does not exist")]
    UnknownGroup(String),
    /// The group is not part of the subscription.
    #[error("consumer group {group} is not subscribed to product {product}")]
    NotSubscribed {
        /// productKey.
        product: String,
        /// Group id.
        group: String,
    },
    /// Unsubscribing the only group.
    #[error(
        "consumer group {group} is the only group of the subscription of product {product}; \
         edit the subscription (PUT) or delete it instead"
    )]
    LastGroup {
        /// productKey.
        product: String,
        /// Group id.
        group: String,
    },
    /// Bad message types or group list (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// Storing the change failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: the shared state could not be read or written.
    #[error("the cluster's shared state is unavailable: {0}")]
    Cluster(String),
}

/// A change to one product's subscription, as the API asks for it.
#[derive(Debug, Clone)]
pub enum Edit {
    /// A new subscription.
    Create(Subscription),
    /// New message types and groups.
    Replace(Subscription),
    /// No subscription any more.
    Delete(String),
    /// One group less.
    Unsubscribe {
        /// productKey.
        product: String,
        /// Group id.
        group: String,
    },
}

impl Edit {
    /// The product whose subscription changes.
    pub fn product(&self) -> &str {
        match self {
            Edit::Create(s) | Edit::Replace(s) => &s.product_key,
            Edit::Delete(p) | Edit::Unsubscribe { product: p, .. } => p,
        }
    }
}

/// Every subscription, with the routes the pipeline reads.
pub struct Subscriptions {
    by_product: RwLock<BTreeMap<String, Subscription>>,
    routes: RwLock<Arc<Routes>>,
    /// Serializes edits, so that check, store and swap happen as one step.
    write: Mutex<()>,
    db: Arc<Db>,
    groups: Arc<Groups>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions").field("by_product", &self.by_product).finish_non_exhaustive()
    }
}

impl Subscriptions {
    /// The configuration file's subscriptions, overridden by those stored through the API.
    ///
    /// # Errors
    /// When the stored ones cannot be read.
    pub fn load(
        configured: &[SubscriptionConfig],
        db: Arc<Db>,
        groups: Arc<Groups>,
        registry: Arc<Registry>,
    ) -> Result<Self, StoreError> {
        let mut by_product: BTreeMap<String, Subscription> = configured
            .iter()
            .map(|s| {
                let sub = Subscription {
                    product_key: s.product_key.clone(),
                    message_types: s.message_types.clone(),
                    consumer_group_ids: s.consumer_groups.clone(),
                };
                (s.product_key.clone(), sub)
            })
            .collect();
        for (product, stored) in STORED.load(&db)? {
            match stored {
                Some(s) => drop(by_product.insert(product, s)),
                None => drop(by_product.remove(&product)),
            }
        }
        for s in by_product.values() {
            if registry.product(&s.product_key).is_none() {
                tracing::warn!(product = %s.product_key, "Subscription for a product that does not exist");
            }
            for g in s.consumer_group_ids.iter().filter(|g| !groups.exists(g)) {
                tracing::warn!(product = %s.product_key, group = %g, "Subscription names a consumer group that does not exist");
            }
        }
        let routes = Arc::new(routes_of(&by_product));
        Ok(Self {
            by_product: RwLock::new(by_product),
            routes: RwLock::new(routes),
            write: Mutex::new(()),
            db,
            groups,
            registry,
        })
    }

    /// The current routes (one lock read and an `Arc` clone: the pipeline calls it per batch).
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every subscription, by productKey.
    pub fn list(&self) -> Vec<Subscription> {
        self.by_product.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// One product's subscription.
    pub fn get(&self, product: &str) -> Option<Subscription> {
        self.by_product.read().unwrap_or_else(PoisonError::into_inner).get(product).cloned()
    }

    /// The products whose subscriptions send to `group`.
    pub fn using_group(&self, group: &str) -> Vec<String> {
        let all = self.by_product.read().unwrap_or_else(PoisonError::into_inner);
        all.values()
            .filter(|s| s.consumer_group_ids.iter().any(|g| g == group))
            .map(|s| s.product_key.clone())
            .collect()
    }

    /// Creates a product's subscription.
    ///
    /// # Errors
    /// Unknown product or group, bad lists, an existing subscription, storage failures.
    pub fn create(&self, sub: Subscription) -> Result<Subscription, SubscriptionError> {
        self.edit(Edit::Create(sub))
    }

    /// Replaces a product's message types and groups.
    ///
    /// # Errors
    /// As [`Self::create`]; `NotFound` when the product has no subscription.
    pub fn replace(&self, sub: Subscription) -> Result<Subscription, SubscriptionError> {
        self.edit(Edit::Replace(sub))
    }

    /// Deletes a product's subscription.
    ///
    /// # Errors
    /// `NotFound`, storage failures.
    pub fn delete(&self, product: &str) -> Result<(), SubscriptionError> {
        self.edit(Edit::Delete(product.to_string())).map(|_| ())
    }

    /// Removes one group from a product's subscription; refused for its only group.
    ///
    /// # Errors
    /// `NotFound`, `NotSubscribed`, `LastGroup`, storage failures.
    pub fn unsubscribe(&self, product: &str, group: &str) -> Result<Subscription, SubscriptionError> {
        self.edit(Edit::Unsubscribe { product: product.to_string(), group: group.to_string() })
    }

    /// Checks `edit` against this node's subscriptions and applies it; returns the new
    /// subscription (for a deletion, the one deleted).
    ///
    /// # Errors
    /// As the edit's method ([`Self::create`], ...).
    pub fn edit(&self, edit: Edit) -> Result<Subscription, SubscriptionError> {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let product = edit.product().to_string();
        let new = self.plan(self.get(&product).as_ref(), edit)?;
        self.commit(&product, new)
    }

    /// What the product's subscription becomes when `edit` is made to `current` (cluster mode:
    /// the shared state's value), after every check; `None` for a deletion.
    ///
    /// # Errors
    /// As the edit's method ([`Self::create`], ...), storage aside.
    pub fn plan(
        &self,
        current: Option<&Subscription>,
        edit: Edit,
    ) -> Result<Option<Subscription>, SubscriptionError> {
        match edit {
            Edit::Create(sub) => {
                self.check(&sub)?;
                if current.is_some() {
                    return Err(SubscriptionError::Exists(sub.product_key));
                }
                Ok(Some(sub))
            }
            Edit::Replace(sub) => {
                if current.is_none() {
                    return Err(SubscriptionError::NotFound(sub.product_key));
                }
                self.check(&sub)?;
                Ok(Some(sub))
            }
            Edit::Delete(product) => match current {
                Some(_) => Ok(None),
                None => Err(SubscriptionError::NotFound(product)),
            },
            Edit::Unsubscribe { product, group } => {
                let mut sub = current.cloned().ok_or_else(|| SubscriptionError::NotFound(product.clone()))?;
                if !sub.consumer_group_ids.contains(&group) {
                    return Err(SubscriptionError::NotSubscribed { product, group });
                }
                if sub.consumer_group_ids.len() == 1 {
                    return Err(SubscriptionError::LastGroup { product, group });
                }
                sub.consumer_group_ids.retain(|g| *g != group);
                Ok(Some(sub))
            }
        }
    }

    /// Sets the product's subscription (`None`: none) without checks: cluster mode, a change
    /// from the shared state, checked by the node that made it.
    ///
    /// # Errors
    /// Storage failures.
    pub fn apply(&self, product: &str, sub: Option<Subscription>) -> Result<(), SubscriptionError> {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if self.get(product) == sub {
            return Ok(());
        }
        self.commit(product, sub).map(drop)
    }

    fn check(&self, sub: &Subscription) -> Result<(), SubscriptionError> {
        if self.registry.product(&sub.product_key).is_none() {
            return Err(SubscriptionError::UnknownProduct(sub.product_key.clone()));
        }
        check_lists(sub)?;
        match sub.consumer_group_ids.iter().find(|g| !self.groups.exists(g)) {
            Some(g) => Err(SubscriptionError::UnknownGroup(g.clone())),
            None => Ok(()),
        }
    }

    /// Stores the change, then swaps it in: what the pipeline routes by is always on disk.
    fn commit(&self, product: &str, sub: Option<Subscription>) -> Result<Subscription, SubscriptionError> {
        STORED.put(&self.db, product, &sub)?;
        let mut all = self.by_product.write().unwrap_or_else(PoisonError::into_inner);
        let old = match &sub {
            Some(s) => all.insert(product.to_string(), s.clone()),
            None => all.remove(product),
        };
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes_of(&all));
        tracing::info!(product, old = ?old, new = ?sub, "Subscription changed");
        Ok(sub.or(old).unwrap_or_else(|| Subscription {
            product_key: product.into(),
            message_types: Vec::new(),
            consumer_group_ids: Vec::new(),
        }))
    }
}

fn routes_of(all: &BTreeMap<String, Subscription>) -> Routes {
    Routes::new(
        all.values().map(|s| (s.product_key.as_str(), &s.message_types[..], &s.consumer_group_ids[..])),
    )
}

/// The list rules ([`config::check_lists`]), every problem in the API's words.
fn check_lists(sub: &Subscription) -> Result<(), SubscriptionError> {
    let problems = config::check_lists(&sub.message_types, &sub.consumer_group_ids);
    if problems.is_empty() {
        return Ok(());
    }
    Err(SubscriptionError::Invalid(problems.iter().map(config::api_field).collect::<Vec<_>>().join("; ")))
}

/// Topic filters (in the rules' normal form, without `/sys`) of each message type of a product.
fn type_filters(product: &str, t: MessageType) -> Vec<Vec<&str>> {
    match t {
        MessageType::Upstream => {
            vec![vec!["", product, "+", "user", "#"], vec!["", product, "+", "thing", "#"]]
        }
        MessageType::Status => vec![vec!["", "as", "mqtt", "status", product, "+"]],
        MessageType::Lifecycle => vec![vec!["", product, "+", "thing", "lifecycle"]],
        MessageType::ThingHistory => vec![
            vec!["", product, "+", "thing", "event", "property", "history", "post"],
            vec!["", product, "+", "thing", "event", "+", "history", "post"],
        ],
        MessageType::TagChange => vec![vec!["", product, "+", "thing", "deviceinfo", "update"]],
    }
}

/// Warnings for a rule and a subscription that forward the same data to consumer groups: the
/// modelled platform advises against using both for the same messages, which then reach
/// consumers twice. Only enabled rules with an `amqp` action count.
pub fn overlap(rule: &Rule, sub: &Subscription) -> Option<String> {
    if !rule.enabled || !rule.actions.iter().any(|a| matches!(a, Action::Amqp { .. })) {
        return None;
    }
    let types: Vec<&str> = sub
        .message_types
        .iter()
        .filter(|t| type_filters(&sub.product_key, **t).iter().any(|f| rule.from_intersects(f)))
        .map(|t| t.as_str())
        .collect();
    if types.is_empty() {
        return None;
    }
    Some(format!(
        "rule {} (FROM \"{}\") and the subscription of product {} ({}) both forward the same messages to \
         consumer groups; consumers then receive them twice. Use one of the two for the same data.",
        rule.name,
        rule.topic_filter(),
        sub.product_key,
        types.join(", ")
    ))
}

/// Every overlap between `rules` and `subs`.
pub fn overlaps<'a>(
    rules: impl IntoIterator<Item = &'a Arc<Rule>> + Clone,
    subs: &[Subscription],
) -> Vec<String> {
    let mut out = Vec::new();
    for s in subs {
        for r in rules.clone() {
            out.extend(overlap(r, s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when a rule reading from the filter `from` may see messages of `filter`.
    fn intersect(from: &[String], filter: &[&str]) -> bool {
        let sql = format!("SELECT * FROM \"{}\"", from.join("/"));
        Rule::from_sql(&sql, crate::rules::DataType::Json, None).unwrap().from_intersects(filter)
    }

    #[test]
    fn filters_intersect() {
        let f = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        let up = type_filters("a1demo", MessageType::Upstream);
        assert!(intersect(&f("/a1demo/+/user/update"), &up[0]));
        assert!(intersect(&f("/+/dev1/user/#"), &up[0]));
        assert!(intersect(&f("/a1demo/+/thing/event/property/post"), &up[1]));
        assert!(intersect(&f("#"), &up[0]));
        assert!(!intersect(&f("/a1other/+/user/update"), &up[0]));
        assert!(!intersect(&f("/a1demo/+/user"), &up[0][..3]));
        let status = type_filters("a1demo", MessageType::Status);
        assert!(intersect(&f("/as/mqtt/status/a1demo/+"), &status[0]));
        assert!(!intersect(&f("/as/mqtt/status/a1other/+"), &status[0]));
        assert!(!intersect(&f("/a1demo/+/user/update"), &status[0]));
    }

    #[test]
    fn list_rules() {
        let sub = |types: Vec<MessageType>, groups: Vec<&str>| Subscription {
            product_key: "a1demo".into(),
            message_types: types,
            consumer_group_ids: groups.into_iter().map(String::from).collect(),
        };
        assert!(check_lists(&sub(vec![MessageType::Upstream], vec!["G"])).is_ok());
        assert!(check_lists(&sub(vec![], vec!["G"])).is_err());
        assert!(check_lists(&sub(vec![MessageType::Status, MessageType::Status], vec!["G"])).is_err());
        assert!(check_lists(&sub(vec![MessageType::Status], vec![])).is_err());
        assert!(check_lists(&sub(vec![MessageType::Status], vec!["G", "G"])).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("g{i}")).collect();
        let many = sub(vec![MessageType::Status], eleven.iter().map(String::as_str).collect());
        let e = check_lists(&many).unwrap_err().to_string();
        assert!(e.contains("1 to 10"), "{e}");
    }
}

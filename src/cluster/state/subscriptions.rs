//! Subscriptions in the `{name}_subscriptions` bucket: key = productKey, value = the
//! subscription's JSON (the API's form).
//!
//! An edit reads the product's entry with its revision, checks the edit against that value
//! (not this node's view, which may lag), and writes with the revision expected: an edit made
//! meanwhile on another node makes the write fail, and the edit is checked again on the new
//! value. The node then applies its own write at once; every node's watch applies it too.

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::watch::Apply;
use crate::subscriptions::{Edit, Subscription, SubscriptionConfig, SubscriptionError, Subscriptions};

/// Conflicting writes an edit survives before it gives up: each one means another node
/// changed the same product's subscription in the same moment.
const ATTEMPTS: usize = 10;

/// The subscriptions' bucket, seen from this node.
pub struct SharedSubscriptions {
    kv: Store,
    subscriptions: Arc<Subscriptions>,
}

/// Whether `product` can be a key at all (product keys are ASCII letters and digits).
fn valid_key(product: &str) -> bool {
    !product.is_empty() && product.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl SharedSubscriptions {
    /// The bucket `kv` applied to `subscriptions`.
    pub fn new(kv: Store, subscriptions: Arc<Subscriptions>) -> Self {
        Self { kv, subscriptions }
    }

    /// Puts this node's configured subscriptions in the bucket for the products the bucket has
    /// never had: once the API has deleted or changed one, the bucket's word stands (as the
    /// stored API changes win over the file on one node).
    ///
    /// # Errors
    /// When the bucket cannot be written.
    pub async fn seed(&self, configured: &[SubscriptionConfig]) -> Result<(), String> {
        for s in configured.iter().filter(|s| valid_key(&s.product_key)) {
            let sub = Subscription {
                product_key: s.product_key.clone(),
                message_types: s.message_types.clone(),
                consumer_group_ids: s.consumer_groups.clone(),
            };
            // Revision 0: only when the key has no value and no deletion either.
            match self.kv.update(&s.product_key, encode(&sub), 0).await {
                Ok(_) => {
                    tracing::info!(product = %s.product_key, "Configured subscription added to the cluster's state")
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => {
                    return Err(format!("adding the configured subscription of {}: {e}", s.product_key))
                }
            }
        }
        Ok(())
    }

    /// Makes `edit` in the bucket, checked against the bucket's value, then here.
    ///
    /// # Errors
    /// The edit's own refusals; [`SubscriptionError::Cluster`] when the bucket cannot be
    /// read or written, or kept changing.
    pub async fn edit(&self, edit: Edit) -> Result<Subscription, SubscriptionError> {
        let product = edit.product().to_string();
        if !valid_key(&product) {
            // Not a product key: refused as on one node, without the bucket.
            return self.subscriptions.plan(None, edit).map(|_| empty(&product));
        }
        let cluster = |e: String| SubscriptionError::Cluster(e);
        for _ in 0..ATTEMPTS {
            let entry = self.kv.entry(&product).await.map_err(|e| cluster(e.to_string()))?;
            let (revision, current) = match entry {
                Some(e) if e.operation == Operation::Put => (Some(e.revision), decode(&product, &e.value)),
                Some(e) => (Some(e.revision), None),
                None => (None, None),
            };
            let new = self.subscriptions.plan(current.as_ref(), edit.clone())?;
            let written = match (&new, revision) {
                (Some(sub), Some(rev)) => self
                    .kv
                    .update(&product, encode(sub), rev)
                    .await
                    .map(drop)
                    .map_err(|e| (e.kind() == UpdateErrorKind::WrongLastRevision, e.to_string())),
                (Some(sub), None) => self
                    .kv
                    .create(&product, encode(sub))
                    .await
                    .map(drop)
                    .map_err(|e| (crate::cluster::lost_create_race(&e), e.to_string())),
                (None, rev) => self
                    .kv
                    .delete_expect_revision(&product, rev)
                    .await
                    .map_err(|e| (e.kind() == UpdateErrorKind::WrongLastRevision, e.to_string())),
            };
            match written {
                Ok(()) => {
                    self.subscriptions.apply(&product, new.clone())?;
                    return Ok(new.or(current).unwrap_or_else(|| empty(&product)));
                }
                Err((true, _)) => continue,
                Err((false, e)) => return Err(cluster(e)),
            }
        }
        Err(cluster(format!("the subscription of {product} kept changing on other nodes; try again")))
    }
}

/// What a deletion reports when nothing was there to report (the API answers 204 anyway).
fn empty(product: &str) -> Subscription {
    Subscription {
        product_key: product.to_string(),
        message_types: Vec::new(),
        consumer_group_ids: Vec::new(),
    }
}

fn encode(sub: &Subscription) -> bytes::Bytes {
    serde_json::to_vec(sub).unwrap_or_default().into()
}

fn decode(product: &str, value: &[u8]) -> Option<Subscription> {
    match serde_json::from_slice::<Subscription>(value) {
        Ok(s) if s.product_key == product => Some(s),
        Ok(_) | Err(_) => {
            tracing::error!(product = %product, "A subscription in the cluster's state is unreadable; ignored");
            None
        }
    }
}

impl Apply for SharedSubscriptions {
    fn apply<'a>(&'a self, product: &'a str, value: Option<&'a [u8]>) -> BoxFuture<'a, ()> {
        async move {
            let sub = match value {
                Some(v) => match decode(product, v) {
                    Some(s) => Some(s),
                    None => return,
                },
                None => None,
            };
            if let Err(e) = self.subscriptions.apply(product, sub) {
                tracing::error!(product = %product, error = %e, "Applying a subscription from the cluster's state failed");
            }
        }
        .boxed()
    }

    fn loaded<'a>(&'a self, present: &'a HashSet<String>) -> BoxFuture<'a, ()> {
        async move {
            for s in self.subscriptions.list() {
                if !present.contains(&s.product_key) {
                    tracing::info!(product = %s.product_key, "Subscription not in the cluster's state: removed here");
                    if let Err(e) = self.subscriptions.apply(&s.product_key, None) {
                        tracing::error!(product = %s.product_key, error = %e, "Removing a subscription failed");
                    }
                }
            }
        }
        .boxed()
    }
}

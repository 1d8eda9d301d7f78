//! Rules written through the API, in the `{name}_rules` bucket: key = the rule's name escaped
//! ([`super::escape`]: names may hold any letter), value = the rule file's text.
//!
//! The rules API checks and compiles the rule, writes its text here (a new rule with `create`,
//! a change over the revision it read) and then puts it in force on its node; every node's
//! watch writes the text to its rules directory (`{name}.sql`, or the file the rule already
//! has) and compiles it, so every node runs the same version from its next message. A deletion
//! removes the file on every node, at start-up too (the bucket keeps the deletion). Rule files
//! written by hand stay the node's own until the API changes them.

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::watch::Apply;
use crate::catalog::RuleWriteError;
use crate::rules::edit::{self, EditError};
use crate::rules::watch::LiveRules;

/// The rules' bucket, seen from this node.
pub struct SharedRulesKv {
    kv: Store,
    live: Arc<LiveRules>,
}

fn cluster(e: impl std::fmt::Display) -> RuleWriteError {
    RuleWriteError::Cluster(e.to_string())
}

impl SharedRulesKv {
    /// The bucket `kv` applied to the rules in force.
    pub fn new(kv: Store, live: Arc<LiveRules>) -> Self {
        Self { kv, live }
    }

    /// The revision of rule `name`, `None` when the bucket has no value for it.
    ///
    /// # Errors
    /// [`RuleWriteError::Cluster`].
    pub async fn revision(&self, name: &str) -> Result<Option<u64>, RuleWriteError> {
        let entry = self.kv.entry(super::escape(name)).await.map_err(cluster)?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| e.revision))
    }

    /// Writes the text of rule `name`: new when `revision` is `None` (a deleted key counts as
    /// absent), else over `revision`.
    ///
    /// # Errors
    /// [`EditError::Exists`], [`RuleWriteError::Changed`], [`RuleWriteError::Cluster`].
    pub async fn write(&self, name: &str, text: &str, revision: Option<u64>) -> Result<(), RuleWriteError> {
        let key = super::escape(name);
        let value = bytes::Bytes::copy_from_slice(text.as_bytes());
        match revision {
            None => match self.kv.create(&key, value).await {
                Ok(_) => Ok(()),
                Err(e) if crate::cluster::lost_create_race(&e) => {
                    Err(EditError::Exists(format!("rule {name} exists on another node")).into())
                }
                Err(e) => Err(cluster(e)),
            },
            Some(revision) => match self.kv.update(&key, value, revision).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    Err(RuleWriteError::Changed(name.to_string()))
                }
                Err(e) => Err(cluster(e)),
            },
        }
    }

    /// Deletes rule `name` for every node.
    ///
    /// # Errors
    /// [`RuleWriteError::Cluster`].
    pub async fn delete(&self, name: &str) -> Result<(), RuleWriteError> {
        self.kv.delete(super::escape(name)).await.map_err(cluster)
    }
}

impl Apply for SharedRulesKv {
    fn apply<'a>(&'a self, key: &'a str, value: Option<&'a [u8]>) -> BoxFuture<'a, ()> {
        async move {
            let Some(name) = super::unescape(key) else {
                tracing::error!(key = %key, "A rule key in the cluster's state is unreadable; ignored");
                return;
            };
            let text = match value.map(|v| String::from_utf8(v.to_vec())) {
                Some(Ok(text)) => Some(text),
                Some(Err(_)) => {
                    tracing::error!(rule = %name, "A rule in the cluster's state is not UTF-8; ignored");
                    return;
                }
                None => None,
            };
            let live = self.live.clone();
            let rule = name.clone();
            let done = tokio::task::spawn_blocking(move || match text {
                Some(text) => edit::put_text(&live, &rule, &text).map(drop),
                None => match edit::delete(&live, &rule) {
                    Err(EditError::NotFound(_)) => Ok(()),
                    done => done,
                },
            })
            .await;
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(rule = %name, error = %e, "Applying a rule from the cluster's state failed");
                }
                Err(e) => tracing::error!(rule = %name, error = %e, "The rule file task failed"),
            }
        }
        .boxed()
    }

    fn loaded<'a>(&'a self, _present: &'a HashSet<String>) -> BoxFuture<'a, ()> {
        // Rule files written by hand are not the bucket's: nothing is removed for being absent
        // (a rule deleted through the API while this node was away came as a deletion).
        async {}.boxed()
    }
}

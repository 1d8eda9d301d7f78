//! `[storage]`: where everything that must survive a restart lives.

use std::path::PathBuf;

use serde::Deserialize;

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory, created when missing.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// `rules_dir` written after the `[storage]` header lands here (TOML scoping); the
    /// configuration resolves it.
    #[serde(default)]
    pub rules_dir: Option<PathBuf>,
    /// Consumers receive a message as soon as it is staged for its commit, before the fsync
    /// (its device's PUBACK still waits for it). Off: only stored messages are delivered.
    #[serde(default)]
    pub early_delivery: bool,
    /// A commit of the queues with new messages starts at most once per this many
    /// milliseconds (0: as soon as the last one is done); what arrives meanwhile shares it and
    /// its fsync. At most 1,000. Default: 4 with `early_delivery`, else 0 (without early
    /// delivery consumers would wait for it too).
    #[serde(default)]
    pub commit_interval_ms: Option<u64>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { dir: default_dir(), rules_dir: None, early_delivery: false, commit_interval_ms: None }
    }
}

impl StorageConfig {
    /// The commit interval.
    pub fn commit_interval(&self) -> std::time::Duration {
        match (self.commit_interval_ms, self.early_delivery) {
            (Some(ms), _) => std::time::Duration::from_millis(ms),
            (None, true) => super::queue::EARLY_DELIVERY_COMMIT_INTERVAL,
            (None, false) => std::time::Duration::ZERO,
        }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("data")
}

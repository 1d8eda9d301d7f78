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
    /// A commit of the queues with new messages starts at most once per this many
    /// milliseconds (0: as soon as the last one is done); what arrives meanwhile shares it and
    /// its fsync. Consumers receive messages before their commit; a device's PUBACK waits for
    /// it. At most 1,000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { dir: default_dir(), rules_dir: None, commit_interval_ms: default_commit_interval_ms() }
    }
}

impl StorageConfig {
    /// The commit interval.
    pub fn commit_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.commit_interval_ms)
    }
}

fn default_commit_interval_ms() -> u64 {
    super::queue::DEFAULT_COMMIT_INTERVAL.as_millis() as u64
}

fn default_dir() -> PathBuf {
    PathBuf::from("data")
}

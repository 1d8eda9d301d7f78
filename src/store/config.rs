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
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { dir: default_dir(), rules_dir: None }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("data")
}

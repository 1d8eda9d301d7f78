//! Configuration: the TOML file of `iotpipe serve --config FILE`, or the embedded default.
//!
//! Each component owns its section: the struct, its defaults and a check that returns every
//! problem it finds (`ingress::config`, `amqp::config`, `api::config`, `store::config`,
//! `registry::config`, `groups::config`, `subscriptions::config`, `alerts::config`, `cluster::config`). This
//! module only aggregates them: the top-level [`Config`], loading (`load.rs`), the TOML schema
//! pass (`schema.rs`), the references between sections (`validate.rs`), and turning every
//! problem into a `file:line: key: message` (`report.rs`). Loading reports *every* problem at
//! once (see [`load_str`]).

mod load;
mod report;
mod schema;
mod validate;

use std::path::PathBuf;

use serde::Deserialize;

use crate::alerts::config::AlertRuleConfig;
use crate::amqp::config::AmqpConfig;
use crate::api::config::HttpConfig;
use crate::cluster::config::ClusterConfig;
use crate::groups::config::ConsumerGroupConfig;
use crate::ingress::config::MqttConfig;
use crate::registry::config::{AccessKeyConfig, ProductConfig};
use crate::store::config::StorageConfig;
use crate::subscriptions::config::SubscriptionConfig;
pub use load::{line_of, load_file, load_str};
pub use report::{ConfigError, Problem};

/// The embedded configuration used when `serve` runs without `--config`.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// The whole configuration file: one field per component's section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// MQTT listeners for devices.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// AMQP 1.0 listeners for business servers (consumer groups).
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// Management API, metrics, console.
    #[serde(default)]
    pub http: HttpConfig,
    /// Where everything that must survive a restart lives.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Directory of `*.sql` rule files, watched for changes. May also be written inside
    /// `[storage]`, as the contract's example file does; see [`Config::rules_dir`].
    #[serde(default)]
    pub rules_dir: Option<PathBuf>,
    /// Access keys AMQP consumers sign with.
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
    /// Products and their devices.
    #[serde(default)]
    pub products: Vec<ProductConfig>,
    /// Consumer groups besides `DEFAULT_GROUP`, which always exists.
    #[serde(default)]
    pub consumer_groups: Vec<ConsumerGroupConfig>,
    /// Product-wide server-side subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Consumer-group alert rules (docs/alerts.md); created at every start, not deletable
    /// through the API.
    #[serde(default)]
    pub alert_rules: Vec<AlertRuleConfig>,
    /// Several nodes on NATS JetStream (docs/cluster.md); absent: the embedded store.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// The rules directory, wherever the file put the key; `rules` by default.
    pub fn rules_dir(&self) -> PathBuf {
        self.rules_dir.clone().or_else(|| self.storage.rules_dir.clone()).unwrap_or_else(default_rules_dir)
    }
}

fn default_rules_dir() -> PathBuf {
    PathBuf::from("rules")
}

//! Configuration: the TOML file of `iotpipe serve --config FILE`, or the embedded default.
//!
//! Loading reports *every* problem at once, each with the file, line and key (see [`load`]).
//! Defaults live in one place: the `default_*` functions below.

mod load;
mod report;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::listener::Listener;

pub use load::{load_file, load_str};
pub use report::{ConfigError, Problem};

/// The embedded configuration used when `serve` runs without `--config`.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
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
}

/// `[mqtt]`: the device side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Plain MQTT 3.1.1 and 5 listener; port 0 lets the OS pick.
    #[serde(default = "default_mqtt_listen")]
    pub listen: SocketAddr,
    /// Optional MQTT over TLS listener; needs `cert` and `key`.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Largest accepted PUBLISH payload in bytes; larger packets are refused.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Smallest keep-alive (seconds) a CONNECT may ask for; the platform allows 30.
    #[serde(default = "default_keep_alive_min")]
    pub keep_alive_min_secs: u16,
    /// Largest keep-alive (seconds) a CONNECT may ask for; the platform allows 1,200.
    #[serde(default = "default_keep_alive_max")]
    pub keep_alive_max_secs: u16,
    /// Connections served at once; further connections wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// QoS 1 publishes one connection may have waiting for durable storage before
    /// iotpipe stops reading from its socket.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Seconds a new connection has to send its CONNECT.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

/// `[amqp]`: the business-server side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Plain AMQP 1.0 listener.
    #[serde(default = "default_amqp_listen")]
    pub listen: SocketAddr,
    /// Optional AMQP over TLS (TLS from the first byte, as `amqps://` clients expect).
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Seconds a delivered message may stay unsettled before it is delivered again.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u64,
    /// Seconds an undelivered message is kept before it expires (counted).
    #[serde(default = "default_retention")]
    pub retention_secs: u64,
    /// Online clients a consumer group accepts; the next one is refused.
    #[serde(default = "default_max_clients_per_group")]
    pub max_clients_per_group: usize,
    /// Deliveries one client may have unsettled at once (also bounded by the credit it grants).
    #[serde(default = "default_max_unsettled")]
    pub max_unsettled_per_client: usize,
    /// Seconds a connection has to authenticate and attach its receiver link.
    #[serde(default = "default_auth_timeout")]
    pub auth_timeout_secs: u64,
    /// Consumer groups the server holds, DEFAULT_GROUP and configured ones included.
    #[serde(default = "default_max_consumer_groups")]
    pub max_consumer_groups: usize,
    /// Connections served at once, logging in or consuming; further connections wait in the
    /// accept queue.
    #[serde(default = "default_amqp_max_connections")]
    pub max_connections: usize,
}

/// `[http]`: management API and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listener of the API, `/metrics` and `/healthz`.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `/api/v1`.
    #[serde(default = "default_admin_token")]
    pub admin_token: String,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory, created when missing.
    #[serde(default = "default_storage_dir")]
    pub dir: PathBuf,
    /// `rules_dir` written after the `[storage]` header lands here (TOML scoping).
    #[serde(default)]
    pub rules_dir: Option<PathBuf>,
}

/// `[[access_keys]]`: what AMQP consumers sign with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// AccessKey ID.
    pub id: String,
    /// AccessKey secret.
    pub secret: String,
}

/// `[[products]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// productKey.
    pub key: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Devices of this product.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `[[products.devices]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// deviceName, unique within the product.
    pub name: String,
    /// deviceSecret the device signs its CONNECT with.
    pub secret: String,
    /// A disabled device is refused at CONNECT.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Device tags, readable by rules through `attribute()`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `[[consumer_groups]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroupConfig {
    /// Consumer group id, used in AMQP usernames.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// `[[subscriptions]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The product whose devices' messages are forwarded.
    pub product_key: String,
    /// Which messages.
    pub message_types: Vec<MessageType>,
    /// Consumer groups, each receiving its own copy.
    pub consumer_groups: Vec<String>,
}

/// `[[alert_rules]]`: the API's alert rule body in snake_case (docs/alerts.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    /// 1 to 64 characters, unique; also the rule's id.
    pub name: String,
    /// Groups watched (`DEFAULT_GROUP` or ids of `[[consumer_groups]]`); empty or absent: every group.
    #[serde(default)]
    pub consumer_group_ids: Vec<String>,
    /// `accumulatedCount` or `consumptionRate` (messages/min).
    pub metric: String,
    /// `>`, `>=`, `<` or `<=`.
    pub comparison: String,
    /// What the value is compared with; 0 or more.
    pub threshold: f64,
    /// The scan period in seconds: 60, 300, 900, 1800, 3600, or any from 1 to 86,400.
    pub period_seconds: u64,
    /// Fire after this many periods in a row meet the condition, 1 to 100.
    #[serde(default = "default_consecutive_periods")]
    pub consecutive_periods: u32,
    /// No repeated firing notification for this long while a group keeps firing.
    #[serde(default = "default_mute_seconds")]
    pub mute_seconds: u64,
    /// When notifications may be sent; always when absent.
    #[serde(default)]
    pub effective: Option<EffectiveConfig>,
    /// Where notifications are POSTed (http or https).
    pub callback_url: String,
}

/// `[alert_rules.effective]`: days of the week and a local time-of-day window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveConfig {
    /// `mon` … `sun`; every day when absent.
    #[serde(default = "default_days")]
    pub days: Vec<String>,
    /// `HH:MM`, server local time.
    #[serde(default = "default_window_start")]
    pub start: String,
    /// `HH:MM`, included; before `start` the window runs across midnight.
    #[serde(default = "default_window_end")]
    pub end: String,
}

/// Message types of a server-side subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Everything a device publishes.
    Upstream,
    /// Online/offline changes.
    Status,
    /// Device create/delete/enable/disable.
    Lifecycle,
}

impl MqttConfig {
    /// The listener keys of `[mqtt]`.
    pub fn listener(&self) -> Listener {
        Listener {
            listen: self.listen,
            tls_listen: self.tls_listen,
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl AmqpConfig {
    /// The listener keys of `[amqp]`.
    pub fn listener(&self) -> Listener {
        Listener {
            listen: self.listen,
            tls_listen: self.tls_listen,
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl HttpConfig {
    /// The listener of `[http]` (plain only).
    pub fn listener(&self) -> Listener {
        Listener::plain(self.listen)
    }
}

impl Config {
    /// The rules directory, wherever the file put the key; `rules` by default.
    pub fn rules_dir(&self) -> PathBuf {
        self.rules_dir.clone().or_else(|| self.storage.rules_dir.clone()).unwrap_or_else(default_rules_dir)
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: default_mqtt_listen(),
            tls_listen: None,
            cert: None,
            key: None,
            max_payload_bytes: default_max_payload_bytes(),
            keep_alive_min_secs: default_keep_alive_min(),
            keep_alive_max_secs: default_keep_alive_max(),
            max_connections: default_max_connections(),
            max_inflight: default_max_inflight(),
            connect_timeout_secs: default_connect_timeout(),
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            listen: default_amqp_listen(),
            tls_listen: None,
            cert: None,
            key: None,
            ack_timeout_secs: default_ack_timeout(),
            retention_secs: default_retention(),
            max_clients_per_group: default_max_clients_per_group(),
            max_unsettled_per_client: default_max_unsettled(),
            auth_timeout_secs: default_auth_timeout(),
            max_consumer_groups: default_max_consumer_groups(),
            max_connections: default_amqp_max_connections(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: default_http_listen(), admin_token: default_admin_token() }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { dir: default_storage_dir(), rules_dir: None }
    }
}

fn default_true() -> bool {
    true
}
fn default_consecutive_periods() -> u32 {
    crate::alerts::model::DEFAULT_CONSECUTIVE_PERIODS
}
fn default_mute_seconds() -> u64 {
    crate::alerts::model::DEFAULT_MUTE_SECONDS
}
fn default_days() -> Vec<String> {
    crate::alerts::model::DAYS.iter().map(|d| d.to_string()).collect()
}
fn default_window_start() -> String {
    "00:00".to_string()
}
fn default_window_end() -> String {
    "23:59".to_string()
}
fn default_rules_dir() -> PathBuf {
    PathBuf::from("rules")
}
fn default_storage_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}
fn default_amqp_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5672))
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_token() -> String {
    "change-me".to_string()
}
/// 256 KiB: the modelled platform's message size limit.
fn default_max_payload_bytes() -> usize {
    256 * 1024
}
fn default_keep_alive_min() -> u16 {
    30
}
fn default_keep_alive_max() -> u16 {
    1200
}
/// Far above what one machine serves; a guard against descriptor exhaustion, not a quota.
fn default_max_connections() -> usize {
    100_000
}
/// 64 unacknowledged QoS 1 publishes keep a device's pipe full at loopback latency while
/// bounding what one connection can hold in memory to 64 × max payload.
fn default_max_inflight() -> usize {
    64
}
/// The modelled platform's ack timeout.
fn default_ack_timeout() -> u64 {
    30
}
/// The modelled platform keeps undelivered messages for one day.
fn default_retention() -> u64 {
    86_400
}
/// The modelled platform's limit of consumer groups per instance.
fn default_max_consumer_groups() -> usize {
    crate::groups::MAX_GROUPS
}
/// Every client the default limits admit (1,000 groups of 64 clients) plus room for
/// connections still logging in; a guard against descriptor exhaustion, not a quota.
fn default_amqp_max_connections() -> usize {
    65_536
}
/// The modelled platform's limit of clients per consumer group.
fn default_max_clients_per_group() -> usize {
    64
}
/// Enough to keep a consumer busy across a LAN round trip; bounds what a slow client holds.
fn default_max_unsettled() -> usize {
    1024
}
/// The modelled platform allows 15 s for authentication plus link attach.
fn default_auth_timeout() -> u64 {
    15
}
fn default_connect_timeout() -> u64 {
    10
}

//! `[amqp]`: the business-server side's configuration, its defaults and its check. Most of its
//! keys are the consumer groups' delivery settings ([`groups::Settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::check::{key, Problem};
use crate::groups;
use crate::listener::Listener;

/// `[amqp]`: the business-server side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Plain AMQP 1.0 listener.
    #[serde(default = "default_listen")]
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
    /// Seconds the signed `timestamp` of a login may lie before or after the server's clock; a
    /// login outside the window is refused, so a captured username and password cannot be
    /// replayed later. 0 turns the check off.
    #[serde(default = "default_timestamp_window")]
    pub timestamp_window_secs: u64,
    /// Consumer groups the server holds, DEFAULT_GROUP and configured ones included.
    #[serde(default = "default_max_consumer_groups")]
    pub max_consumer_groups: usize,
    /// Connections served at once, logging in or consuming; further connections wait in the
    /// accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls_listen: None,
            cert: None,
            key: None,
            ack_timeout_secs: default_ack_timeout(),
            retention_secs: default_retention(),
            max_clients_per_group: default_max_clients_per_group(),
            max_unsettled_per_client: default_max_unsettled(),
            auth_timeout_secs: default_auth_timeout(),
            timestamp_window_secs: default_timestamp_window(),
            max_consumer_groups: default_max_consumer_groups(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5672))
}
/// The modelled platform's ack timeout.
fn default_ack_timeout() -> u64 {
    30
}
/// The modelled platform keeps undelivered messages for one day.
fn default_retention() -> u64 {
    86_400
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
/// The modelled platform documents no window (alibaba-iot.md, open question 10); 15 minutes is
/// the window of its signed cloud API requests, wide enough for clock skew and a reconnecting
/// client that signed a moment ago, narrow enough that a captured login goes stale.
fn default_timestamp_window() -> u64 {
    900
}
fn default_max_consumer_groups() -> usize {
    groups::DEFAULT_MAX_GROUPS
}
/// Every client the default limits admit (1,000 groups of 64 clients) plus room for
/// connections still logging in; a guard against descriptor exhaustion, not a quota.
fn default_max_connections() -> usize {
    65_536
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

    /// The consumer groups' delivery settings written in `[amqp]`.
    pub fn group_settings(&self) -> groups::Settings {
        groups::Settings {
            ack_timeout: Duration::from_secs(self.ack_timeout_secs),
            retention: Duration::from_secs(self.retention_secs),
            max_clients_per_group: self.max_clients_per_group,
            max_unsettled_per_client: self.max_unsettled_per_client,
            max_groups: self.max_consumer_groups,
        }
    }

    /// Every problem of `[amqp]`, at keys relative to the section.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = self.listener().check();
        let at_least_one = [
            ("ack_timeout_secs", self.ack_timeout_secs == 0),
            ("retention_secs", self.retention_secs == 0),
            ("max_clients_per_group", self.max_clients_per_group == 0),
            ("max_unsettled_per_client", self.max_unsettled_per_client == 0),
            ("auth_timeout_secs", self.auth_timeout_secs == 0),
            ("max_consumer_groups", self.max_consumer_groups == 0),
            ("max_connections", self.max_connections == 0),
        ];
        for (name, zero) in at_least_one {
            if zero {
                problems.push(Problem::new(key(name), "0 is not allowed; expected at least 1"));
            }
        }
        problems
    }
}

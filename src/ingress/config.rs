//! `[mqtt]`: the device side's configuration, its defaults and its check.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::check::{key, Problem};
use crate::listener::Listener;

/// MQTT's largest packet (the remaining-length limit), so also the largest payload.
pub(crate) const MAX_PACKET: usize = 268_435_455;
/// MQTT packet identifiers are 16 bits: no more QoS 1 publishes can be in flight at once.
const MAX_INFLIGHT: usize = 65_535;

/// `[mqtt]`: the device side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Plain MQTT 3.1.1 and 5 listener; port 0 lets the OS pick.
    #[serde(default = "default_listen")]
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
    /// Seconds an MQTT 3.1.1 session waits for the PUBACK of a QoS 1 cloud-to-device message
    /// before sending it again with the DUP flag (MQTT 5 forbids resending on a live connection).
    #[serde(default = "default_downlink_retry")]
    pub downlink_retry_secs: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls_listen: None,
            cert: None,
            key: None,
            max_payload_bytes: default_max_payload_bytes(),
            keep_alive_min_secs: default_keep_alive_min(),
            keep_alive_max_secs: default_keep_alive_max(),
            max_connections: default_max_connections(),
            max_inflight: default_max_inflight(),
            connect_timeout_secs: default_connect_timeout(),
            downlink_retry_secs: default_downlink_retry(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}
/// 256 KiB: the modelled platform's message size limit.
fn default_max_payload_bytes() -> usize {
    256 * 1024
}
/// The modelled platform's keep-alive range, 30 s to 1,200 s.
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
fn default_downlink_retry() -> u64 {
    10
}
fn default_connect_timeout() -> u64 {
    10
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

    /// Every problem of `[mqtt]`, at keys relative to the section.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = self.listener().check();
        if self.keep_alive_min_secs == 0 {
            problems.push(Problem::new(
                key("keep_alive_min_secs"),
                "0 is not supported (MQTT keep-alive 0 means no keep-alive); expected at least 1",
            ));
        } else if self.keep_alive_min_secs > self.keep_alive_max_secs {
            let message = format!(
                "{} is larger than keep_alive_max_secs ({}); expected \
                 keep_alive_min_secs <= keep_alive_max_secs",
                self.keep_alive_min_secs, self.keep_alive_max_secs
            );
            problems
                .push(Problem::new(key("keep_alive_min_secs"), message).or_at(key("keep_alive_max_secs")));
        }
        if !(1..=MAX_PACKET).contains(&self.max_payload_bytes) {
            problems.push(Problem::new(
                key("max_payload_bytes"),
                format!(
                    "{} is out of range; expected 1 to {MAX_PACKET} (MQTT's largest packet)",
                    self.max_payload_bytes
                ),
            ));
        }
        if !(1..=MAX_INFLIGHT).contains(&self.max_inflight) {
            problems.push(Problem::new(
                key("max_inflight"),
                format!("{} is out of range; expected 1 to {MAX_INFLIGHT}", self.max_inflight),
            ));
        }
        if !(1..=3_600).contains(&self.downlink_retry_secs) {
            problems.push(Problem::new(
                key("downlink_retry_secs"),
                format!("{} is out of range; expected 1 to 3600", self.downlink_retry_secs),
            ));
        }
        if self.max_connections == 0 {
            problems.push(Problem::new(
                key("max_connections"),
                "0 would refuse every connection; expected at least 1",
            ));
        }
        problems
    }
}

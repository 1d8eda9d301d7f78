//! SASL PLAIN for consumers: checks the signature against the access keys and the group
//! against the known groups, and keeps who logged in for the connection.
//! The check uses in-memory state only: it runs on the connection's task, between two frames.

use std::net::SocketAddr;
use std::sync::Arc;

use fe2o3_amqp::types::sasl::SaslInit;

use super::auth::{parse_username, ConsumerCredentials};
use crate::groups::Groups;
use crate::logsafe::Untrusted;
use crate::registry::Registry;

/// The SASL acceptor of one connection.
#[derive(Clone)]
pub struct ConsumerSasl {
    pub(super) registry: Arc<Registry>,
    pub(super) groups: Arc<Groups>,
    pub(super) peer: SocketAddr,
    pub(super) stats: Arc<super::AmqpStats>,
    pub(super) logs: Arc<super::RefusalLogs>,
    /// How far the signed timestamp may be from now; zero: not checked.
    pub(super) timestamp_window: std::time::Duration,
}

impl ConsumerSasl {
    fn verify(&self, init: SaslInit) -> Result<ConsumerCredentials, String> {
        if init.mechanism.as_str() != "PLAIN" {
            return Err(format!(
                "mechanism {} is not supported: use PLAIN",
                Untrusted(init.mechanism.as_str())
            ));
        }
        let response = init.initial_response.ok_or("PLAIN without an initial response")?.into_vec();
        let mut parts = response.split(|b| *b == 0);
        let (_authzid, username, password) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(u), Some(p)) => (a, u, p),
            _ => return Err("malformed PLAIN response".into()),
        };
        let username = std::str::from_utf8(username).map_err(|_| "username is not UTF-8".to_string())?;
        let credentials = parse_username(username).map_err(|e| e.to_string())?;
        let secret = self
            .registry
            .access_key_secret(&credentials.access_key_id)
            .ok_or_else(|| format!("unknown access key {}", Untrusted(&credentials.access_key_id)))?;
        if !credentials.verify(&secret, password) {
            return Err(format!("bad signature for access key {}", Untrusted(&credentials.access_key_id)));
        }
        let window_ms = self.timestamp_window.as_millis().try_into().unwrap_or(u64::MAX);
        if window_ms > 0 && !credentials.is_fresh(epoch_ms(), window_ms) {
            // Checked after the signature: only the key's holder learns the window.
            return Err(format!(
                "timestamp {} is more than {} s away from the server's clock",
                credentials.timestamp,
                self.timestamp_window.as_secs()
            ));
        }
        if !self.groups.exists(&credentials.group_id) {
            return Err(format!("unknown consumer group {}", Untrusted(&credentials.group_id)));
        }
        Ok(credentials)
    }
}

/// The server's clock in epoch milliseconds.
fn epoch_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_millis().try_into().unwrap_or(u64::MAX)
}

impl ConsumerSasl {
    /// Checks a SASL init: the credentials, or `None` after counting and logging the refusal.
    pub(super) fn check(&self, init: SaslInit) -> Option<ConsumerCredentials> {
        match self.verify(init) {
            Ok(credentials) => Some(credentials),
            Err(reason) => {
                self.stats.logins_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(suppressed) = self.logs.refused.admit() {
                    tracing::warn!(peer = %self.peer, %reason, suppressed, "Refused an AMQP login");
                }
                None
            }
        }
    }
}

//! `[http]`: the management API's configuration, its defaults and its check.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::check::{key, Problem};
use crate::listener::Listener;

/// `[http]`: management API and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listener of the API, `/metrics` and `/healthz`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `/api/v1`.
    #[serde(default = "default_admin_token")]
    pub admin_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: default_listen(), admin_token: default_admin_token() }
    }
}

/// Loopback only: the API administers everything, so it is not exposed unless asked for.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_token() -> String {
    "change-me".to_string()
}

impl HttpConfig {
    /// The listener of `[http]` (plain only).
    pub fn listener(&self) -> Listener {
        Listener::plain(self.listen)
    }

    /// Every problem of `[http]`, at keys relative to the section.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = self.listener().check();
        if self.admin_token.trim().is_empty() {
            problems
                .push(Problem::new(key("admin_token"), "must not be empty; set the Bearer token of /api/v1"));
        }
        problems
    }
}

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
    /// Bearer token for `/api/v1`. Left out: a random token generated at first start and kept
    /// in `[storage] dir`/admin_token (mode 0600); there is no well-known default.
    #[serde(default)]
    pub admin_token: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: default_listen(), admin_token: None }
    }
}

/// Loopback only: the API administers everything, so it is not exposed unless asked for.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl HttpConfig {
    /// The listener of `[http]` (plain only).
    pub fn listener(&self) -> Listener {
        Listener::plain(self.listen)
    }

    /// Every problem of `[http]`, at keys relative to the section.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = self.listener().check();
        if self.admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            problems
                .push(Problem::new(key("admin_token"), "must not be empty; set the Bearer token of /api/v1"));
        }
        problems
    }
}

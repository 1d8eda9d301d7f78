//! `[cluster]`: several iotpipe nodes on NATS JetStream. Absent, iotpipe runs on its embedded
//! store, unchanged.
//!
//! The NATS connection may authenticate with a credentials file, a token, or a user and
//! password (at most one of them), and may use TLS (`tls://` URLs, or `tls_required`, with an
//! optional CA file and client certificate). Secrets are never logged: [`ClusterConfig`]'s
//! `Debug` leaves them out.

use std::path::PathBuf;

use serde::Deserialize;

use crate::check::{key, Problem};

/// JetStream replicas at most: NATS clusters replicate a stream on at most 5 servers.
pub const MAX_REPLICAS: u64 = 5;
/// Characters of `name` at most: stream, bucket and consumer names are built from it and the
/// server limits names to 255 characters; 32 leaves room for the suffixes.
pub const MAX_NAME: usize = 32;
/// Characters of `node` at most (it appears in KV keys and log lines).
pub const MAX_NODE: usize = 64;

/// `[cluster]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`, or `tls://host:port` for TLS); the client picks
    /// one and fails over to the others.
    pub nats: Vec<String>,
    /// Prefix of every stream, bucket and subject, so that several deployments can share one
    /// NATS: ASCII letters, digits, `_` and `-`.
    #[serde(default = "default_name")]
    pub name: String,
    /// JetStream replicas of the streams and buckets (1 to 5; 3 for a cluster that survives
    /// the loss of one server).
    #[serde(default = "default_replicas")]
    pub replicas: u64,
    /// This node's name; default: the host name and the MQTT port.
    #[serde(default)]
    pub node: Option<String>,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// A token the NATS servers accept.
    #[serde(default)]
    pub token: Option<String>,
    /// A NATS user (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// The password of `user`.
    #[serde(default)]
    pub password: Option<String>,
    /// Require TLS even for `nats://` URLs.
    #[serde(default)]
    pub tls_required: bool,
    /// PEM file of the certificate authorities that sign the NATS servers' certificates
    /// (default: the system's roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain for NATS servers that verify clients (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The NATS servers' monitoring URLs (`http://host:8222`), read at start-up to check
    /// that each syncs every write to disk (`sync_interval: always`); empty: not checked.
    #[serde(default)]
    pub monitor: Vec<String>,
}

/// Secrets (`token`, `password`) are shown as set or not, never their value.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("ClusterConfig")
            .field("nats", &self.nats)
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("node", &self.node)
            .field("credentials", &self.credentials)
            .field("token", &hidden(&self.token))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("tls_required", &self.tls_required)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("monitor", &self.monitor)
            .finish()
    }
}

fn default_name() -> String {
    "iotpipe".to_string()
}

fn default_replicas() -> u64 {
    3
}

impl ClusterConfig {
    /// A configuration for the given servers with every default (tests, tools).
    pub fn new(nats: Vec<String>) -> Self {
        Self {
            nats,
            name: default_name(),
            replicas: default_replicas(),
            node: None,
            credentials: None,
            token: None,
            user: None,
            password: None,
            tls_required: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            monitor: Vec::new(),
        }
    }

    /// Every problem of the section, at paths relative to it.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.nats.is_empty() {
            problems.push(Problem::new(
                key("nats"),
                "is empty; expected at least one NATS server URL like \"nats://127.0.0.1:4222\"",
            ));
        }
        for (i, url) in self.nats.iter().enumerate() {
            if let Err(message) = check_url(url) {
                problems.push(Problem::new(key("nats").index(i), message));
            }
        }
        if let Err(message) = check_token("name", &self.name, MAX_NAME) {
            problems.push(Problem::new(key("name"), message));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            problems.push(Problem::new(
                key("replicas"),
                format!("{} is out of range; expected 1 to {MAX_REPLICAS}", self.replicas),
            ));
        }
        if let Some(node) = &self.node {
            if let Err(message) = check_token("node", node, MAX_NODE) {
                problems.push(Problem::new(key("node"), message));
            }
        }
        self.check_auth(&mut problems);
        self.check_tls(&mut problems);
        for (i, url) in self.monitor.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(char::is_whitespace)
            {
                problems.push(Problem::new(
                    key("monitor").index(i),
                    format!("\"{url}\" is not a monitoring URL; expected one like \"http://127.0.0.1:8222\""),
                ));
            }
        }
        problems
    }

    fn check_auth(&self, problems: &mut Vec<Problem>) {
        let ways: Vec<&str> = [
            self.credentials.as_ref().map(|_| "credentials"),
            self.token.as_ref().map(|_| "token"),
            self.user.as_ref().map(|_| "user"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if ways.len() > 1 {
            problems.push(Problem::new(
                key(ways[1]),
                format!(
                    "{} are set; use one way to authenticate to NATS: credentials, token, or user and \
                     password",
                    ways.join(" and ")
                ),
            ));
        }
        match (&self.user, &self.password) {
            (Some(_), None) => problems.push(
                Problem::new(key("password"), "missing; `user` needs `password`").on_line_of(key("user")),
            ),
            (None, Some(_)) => problems.push(Problem::new(key("password"), "is set without `user`")),
            _ => {}
        }
        if self.token.as_deref() == Some("") {
            problems.push(Problem::new(key("token"), "is empty"));
        }
        if let Some(file) = &self.credentials {
            problems.extend(check_file("credentials", file, "NATS credentials file"));
        }
    }

    fn check_tls(&self, problems: &mut Vec<Problem>) {
        if let Some(file) = &self.tls_ca {
            problems.extend(check_file("tls_ca", file, "PEM file of certificate authorities"));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key_file)) => {
                problems.extend(check_file("tls_cert", cert, "PEM client certificate chain"));
                problems.extend(check_file("tls_key", key_file, "PEM private key"));
            }
            (Some(_), None) => problems.push(
                Problem::new(key("tls_key"), "missing; `tls_cert` needs `tls_key`, the PEM private key file")
                    .on_line_of(key("tls_cert")),
            ),
            (None, Some(_)) => problems.push(
                Problem::new(
                    key("tls_cert"),
                    "missing; `tls_key` needs `tls_cert`, the PEM client certificate chain file",
                )
                .on_line_of(key("tls_key")),
            ),
            (None, None) => {}
        }
    }
}

/// A NATS server URL: `nats://`, `tls://` (or no scheme), a host and a port.
fn check_url(url: &str) -> Result<(), String> {
    let rest = match url.split_once("://") {
        Some(("nats" | "tls", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!("\"{url}\" has the scheme \"{scheme}\"; expected nats:// or tls://"));
        }
        None => url,
    };
    // Credentials belong in their own keys, not in the URL (they would end up in logs).
    if rest.contains('@') {
        return Err(format!(
            "\"{}\" carries credentials; put them in `user` and `password` or `token` instead",
            url.split_once('@').map_or(url, |(_, host)| host)
        ));
    }
    let host_port = rest.trim_end_matches('/');
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return Err(format!("\"{url}\" has no port; expected a URL like \"nats://127.0.0.1:4222\""));
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("\"{url}\" has no host; expected a URL like \"nats://127.0.0.1:4222\""));
    }
    if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
        return Err(format!("\"{url}\" has the port \"{port}\"; expected 1 to 65535"));
    }
    Ok(())
}

/// A name that becomes part of stream names and subjects: ASCII letters, digits, `_`, `-`.
fn check_token(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("a {what} has 1 to {max} characters, got {}", value.len()));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!(
            "{value:?} contains {c:?}; a {what} may only contain ASCII letters, digits, _ and -"
        ));
    }
    Ok(())
}

fn check_file(name: &str, file: &std::path::Path, what: &str) -> Option<Problem> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => None,
        Ok(_) => Some(Problem::new(
            key(name),
            format!("\"{}\" is not a file; expected the {what}", file.display()),
        )),
        Err(err) => Some(Problem::new(
            key(name),
            format!("cannot read \"{}\": {err}; expected the {what}", file.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &ClusterConfig) -> Vec<(String, String)> {
        config.check().into_iter().map(|p| (p.path.to_string(), p.message)).collect()
    }

    #[test]
    fn defaults_are_sound() {
        let c = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into(), "tls://nats.example:4223".into()]);
        assert_eq!(c.name, "iotpipe");
        assert_eq!(c.replicas, 3);
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = ClusterConfig::new(vec![
            "http://127.0.0.1:4222".into(),
            "nats://127.0.0.1".into(),
            "nats://u:secret@127.0.0.1:4222".into(),
            "nats://127.0.0.1:99999".into(),
        ]);
        c.name = "iot.pipe".into();
        c.replicas = 0;
        c.node = Some(String::new());
        c.token = Some("t".into());
        c.user = Some("u".into());
        c.tls_cert = Some("/nonexistent/cert.pem".into());
        let found = problems(&c);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "nats[0]", "nats[1]", "nats[2]", "nats[3]", "name", "replicas", "node", "user", "password",
                "tls_key"
            ],
            "{found:#?}"
        );
        assert!(found[0].1.contains("expected nats:// or tls://"));
        assert!(!found[2].1.contains("secret"), "a password in a URL is not repeated: {}", found[2].1);
        assert!(found[4].1.contains("'.'"));
        assert!(found[7].1.contains("token and user are set"));
    }

    #[test]
    fn monitoring_urls_are_http() {
        let mut c = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()]);
        c.monitor = vec!["http://127.0.0.1:8222".into(), "nats://127.0.0.1:8222".into()];
        let found = problems(&c);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].0.contains("monitor[1]") && found[0].1.contains("http://127.0.0.1:8222"),
            "{found:?}"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut c = ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()]);
        c.token = Some("s3cr3t-token".into());
        c.user = Some("u".into());
        c.password = Some("s3cr3t-pass".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<hidden>"));
    }
}

//! The NATS connection of a node, from `[cluster]`.

use std::time::Duration;

use std::sync::Arc;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};

use super::config::ClusterConfig;
use super::stats::NatsStats;
use super::ClusterError;

/// How long the first connection may take before the start fails: long enough for a server
/// that is starting too, short enough that a wrong address is reported soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause before trying again after a server refused the connection.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Connects to the configured NATS servers; `node` names the connection on the servers.
/// After this the client reconnects by itself (to any of the servers) whenever it loses one.
///
/// # Errors
/// A bad URL, an unreadable credentials file, or no server reachable within
/// [`CONNECT_TIMEOUT`].
pub async fn connect(config: &ClusterConfig, node: &str) -> Result<Client, ClusterError> {
    connect_counted(config, node, Arc::default()).await
}

/// [`connect`], counting the connection's events (connects, disconnects) into `stats`.
///
/// # Errors
/// As [`connect`].
pub async fn connect_counted(
    config: &ClusterConfig,
    node: &str,
    stats: Arc<NatsStats>,
) -> Result<Client, ClusterError> {
    let stats_of_client = stats.clone();
    let servers: Vec<ServerAddr> = config
        .nats
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| ClusterError::Connect {
                servers: config.nats.join(", "),
                reason: format!("\"{url}\": {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    // A server that is starting too refuses connections for a moment: try again until the
    // time is up rather than fail on the first refusal.
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        let options = options(config, node, stats.clone()).await?;
        match tokio::time::timeout_at(deadline, options.connect(servers.clone())).await {
            Ok(Ok(client)) => {
                stats_of_client.watch(&client);
                return Ok(client);
            }
            Ok(Err(e))
                if e.kind() == async_nats::ConnectErrorKind::Io
                    && tokio::time::Instant::now() + RETRY_AFTER < deadline =>
            {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            Ok(Err(e)) => {
                return Err(ClusterError::Connect { servers: config.nats.join(", "), reason: e.to_string() })
            }
            Err(_) => {
                return Err(ClusterError::Connect {
                    servers: config.nats.join(", "),
                    reason: format!("no server answered within {} s", CONNECT_TIMEOUT.as_secs()),
                })
            }
        }
    }
}

/// The connection's options from `[cluster]`, its events counted into `stats`.
async fn options(
    config: &ClusterConfig,
    node: &str,
    stats: Arc<NatsStats>,
) -> Result<ConnectOptions, ClusterError> {
    let mut options = ConnectOptions::new()
        .name(format!("iotpipe {}/{node}", config.name))
        .connection_timeout(CONNECT_TIMEOUT)
        // Unbounded reconnects: a node keeps trying while the servers are away, and the
        // health check reports it meanwhile.
        .max_reconnects(None)
        .event_callback(move |event| {
            let stats = stats.clone();
            async move {
                stats.event(&event);
                match event {
                    Event::Connected => tracing::info!("Connected to NATS"),
                    Event::Disconnected => tracing::warn!("The NATS connection was lost; reconnecting"),
                    _ => {}
                }
            }
        });
    if let Some(file) = &config.credentials {
        options = options.credentials_file(file).await.map_err(|e| ClusterError::File {
            key: "credentials",
            reason: format!("cannot read \"{}\": {e}", file.display()),
        })?;
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if config.tls_required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

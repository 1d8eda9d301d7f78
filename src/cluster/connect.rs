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
    let connecting = options.connect(servers);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(client)) => {
            stats_of_client.watch(&client);
            Ok(client)
        }
        Ok(Err(e)) => Err(ClusterError::Connect { servers: config.nats.join(", "), reason: e.to_string() }),
        Err(_) => Err(ClusterError::Connect {
            servers: config.nats.join(", "),
            reason: format!("no server answered within {} s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

//! The start-up check of the NATS servers' `sync_interval` (docs/cluster.md, "Durability").
//!
//! A JetStream PubAck follows an fsync only with `jetstream { sync_interval: always }`; with
//! the default (every 2 minutes) a crash of a majority of servers can lose acknowledged
//! messages. Neither the client protocol nor the JetStream API shows a server's setting (only
//! the system account's `$SYS` requests would, and a node should not need those rights), so
//! the node reads the servers' monitoring endpoint, `GET /varz`, whose `jetstream.config`
//! has `sync_always: true` when it is set: `[cluster] monitor` lists those URLs. Without it the
//! node says once that it cannot check.

use std::time::Duration;

/// How long one server's `/varz` may take.
const VARZ_WAIT: Duration = Duration::from_secs(3);

/// What one monitoring URL said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncSetting {
    /// `sync_interval: always`: every PubAck follows an fsync.
    Always,
    /// Flushed to disk only every so often (the default is 2 minutes).
    Every(Duration),
    /// The server could not be asked, or has no JetStream; the reason.
    Unknown(String),
}

/// Asks the server behind the monitoring URL `base` (`http://host:8222`).
pub async fn setting(base: &str) -> SyncSetting {
    let url = format!("{}/varz", base.trim_end_matches('/'));
    let answer = async {
        let client = reqwest::Client::builder().timeout(VARZ_WAIT).build().map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.json::<serde_json::Value>().await.map_err(|e| format!("not JSON: {e}"))
    };
    let varz = match answer.await {
        Ok(v) => v,
        Err(e) => return SyncSetting::Unknown(format!("{url}: {e}")),
    };
    let config = &varz["jetstream"]["config"];
    if config.is_null() {
        return SyncSetting::Unknown(format!("{url}: no JetStream configuration in the answer"));
    }
    if config["sync_always"].as_bool() == Some(true) {
        return SyncSetting::Always;
    }
    // Nanoseconds; absent means the server's default of 2 minutes.
    let every = config["sync_interval"].as_u64().map_or(Duration::from_secs(120), Duration::from_nanos);
    SyncSetting::Every(every)
}

/// Checks every monitoring URL and logs a warning for each server that does not sync always
/// (or cannot be asked); with no URLs, says once that nothing was checked.
pub async fn warn_unless_always(monitor: &[String]) {
    if monitor.is_empty() {
        tracing::info!("Not checking the NATS servers' sync_interval: [cluster] monitor lists no monitoring URLs (docs/cluster.md)");
        return;
    }
    for base in monitor {
        match setting(base).await {
            SyncSetting::Always => {
                tracing::info!(server = %base, "The NATS server syncs every write to disk (sync_interval: always)")
            }
            SyncSetting::Every(every) => tracing::warn!(
                server = %base,
                sync_interval_secs = every.as_secs_f64(),
                "The NATS server does not sync every write to disk: a PubAck, and so a device's PUBACK, does not mean the message is on disk; set jetstream {{ sync_interval: always }} (docs/cluster.md)"
            ),
            SyncSetting::Unknown(why) => {
                tracing::warn!(server = %base, reason = %why, "Could not check the NATS server's sync_interval")
            }
        }
    }
}

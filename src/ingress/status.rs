//! Online/offline status messages in the platform's format.
//!
//! `time`/`lastTime` are written in the server's local time zone as `yyyy-MM-dd HH:mm:ss.SSS`,
//! `utcTime`/`utcLastTime` as ISO-8601 UTC with milliseconds.

use chrono::{DateTime, Local, Utc};
use serde::Serialize;

/// Why a device went offline: the `offlineReasonCode` of the status message.
///
/// The modelled platform does not publish its code table, so iotpipe defines its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// The device sent DISCONNECT.
    ClientDisconnect,
    /// Nothing received for 1.5 × keep-alive.
    KeepAliveTimeout,
    /// The connection broke without DISCONNECT (reset, EOF, I/O error).
    NetworkError,
    /// A new connection of the same device took over.
    TakenOver,
    /// The device was disabled or deleted.
    DeviceDisabled,
    /// The device broke the protocol or its topic ACL (MQTT 3.1.1) or sent a malformed packet.
    ProtocolViolation,
    /// The server shut down.
    ServerShutdown,
    /// The pipeline could not store a message of the device.
    ServerError,
    /// The device was online when the server stopped without a shutdown (a crash, `kill -9`):
    /// announced at the next start.
    ServerRestart,
}

impl OfflineReason {
    /// The numeric `offlineReasonCode`.
    pub fn code(self) -> u16 {
        match self {
            OfflineReason::ClientDisconnect => 1,
            OfflineReason::KeepAliveTimeout => 2,
            OfflineReason::NetworkError => 3,
            OfflineReason::TakenOver => 4,
            OfflineReason::DeviceDisabled => 5,
            OfflineReason::ProtocolViolation => 6,
            OfflineReason::ServerShutdown => 7,
            OfflineReason::ServerError => 8,
            OfflineReason::ServerRestart => 9,
        }
    }

    /// A short name, also sent as `offlineReason`.
    pub fn name(self) -> &'static str {
        match self {
            OfflineReason::ClientDisconnect => "client_disconnect",
            OfflineReason::KeepAliveTimeout => "keep_alive_timeout",
            OfflineReason::NetworkError => "network_error",
            OfflineReason::TakenOver => "taken_over",
            OfflineReason::DeviceDisabled => "device_disabled",
            OfflineReason::ProtocolViolation => "protocol_violation",
            OfflineReason::ServerShutdown => "server_shutdown",
            OfflineReason::ServerError => "server_error",
            OfflineReason::ServerRestart => "server_restart",
        }
    }
}

impl std::fmt::Display for OfflineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    status: &'static str,
    iot_id: &'a str,
    product_key: &'a str,
    device_name: &'a str,
    client_id: &'a str,
    time: String,
    utc_time: String,
    last_time: String,
    utc_last_time: String,
    client_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    offline_reason_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offline_reason: Option<&'static str>,
}

/// The status topic of a device.
pub fn topic(product_key: &str, device_name: &str) -> String {
    format!("/as/mqtt/status/{product_key}/{device_name}")
}

/// The status JSON. `offline` is `None` for online; `last_ms` is the last communication
/// before the change.
pub fn payload(
    origin: &crate::message::Origin,
    offline: Option<OfflineReason>,
    now_ms: u64,
    last_ms: u64,
) -> Vec<u8> {
    let status = Status {
        status: if offline.is_some() { "offline" } else { "online" },
        iot_id: &origin.iot_id,
        product_key: &origin.product_key,
        device_name: &origin.device_name,
        client_id: &origin.client_id,
        time: local(now_ms),
        utc_time: utc(now_ms),
        last_time: local(last_ms),
        utc_last_time: utc(last_ms),
        client_ip: origin.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        offline_reason_code: offline.map(OfflineReason::code),
        offline_reason: offline.map(OfflineReason::name),
    };
    serde_json::to_vec(&status).unwrap_or_default()
}

fn datetime(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in the server's time zone.
pub fn local(ms: u64) -> String {
    datetime(ms).with_timezone(&Local).format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ`.
pub fn utc(ms: u64) -> String {
    datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;

    #[test]
    fn offline_status_has_the_platform_fields() {
        let origin = Origin {
            product_key: "a1demo".into(),
            device_name: "dev1".into(),
            iot_id: "id1".into(),
            device_type: String::new(),
            client_id: "c1".into(),
            peer: Some("192.0.2.1:5000".parse().unwrap()),
        };
        let body = payload(&origin, Some(OfflineReason::TakenOver), 1_535_700_748_205, 1_535_700_748_195);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "offline");
        assert_eq!(v["productKey"], "a1demo");
        assert_eq!(v["iotId"], "id1");
        assert_eq!(v["deviceName"], "dev1");
        assert_eq!(v["utcTime"], "2018-08-31T07:32:28.205Z");
        assert_eq!(v["utcLastTime"], "2018-08-31T07:32:28.195Z");
        assert_eq!(v["clientIp"], "192.0.2.1");
        assert_eq!(v["offlineReasonCode"], 4);
        assert_eq!(v["time"].as_str().unwrap().len(), "2018-08-31 15:32:28.205".len());
        let online: serde_json::Value = serde_json::from_slice(&payload(&origin, None, 0, 0)).unwrap();
        assert_eq!(online["status"], "online");
        assert!(online.get("offlineReasonCode").is_none());
    }
}

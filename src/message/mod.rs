//! The message envelope every stage passes on, and [`thing`]: thing-model posts converted to the
//! platform's format (ingress converts what devices send; rules' dry runs convert samples);
//! [`alink`]: the replies the platform sends to a device's posts.

pub mod alink;
pub mod thing;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

/// Who sent a message: verified at CONNECT, shared by every message of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// productKey.
    pub product_key: String,
    /// deviceName.
    pub device_name: String,
    /// The device's `iotId` (empty where no device is known, such as a rule's dry run).
    pub iot_id: String,
    /// The product's category, sent as `deviceType` in thing-model messages.
    pub device_type: String,
    /// The device's own client id (the part of the MQTT client id before `|`); empty for
    /// messages the platform makes itself, such as lifecycle events from the API.
    pub client_id: String,
    /// The device's address, when the message comes from a connection.
    pub peer: Option<SocketAddr>,
}

/// What kind of message this is; server-side subscriptions select on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Published by a device.
    Upstream,
    /// Online/offline change (`/as/mqtt/status/${pk}/${dn}`).
    Status,
    /// Device created, deleted, enabled, disabled (`/${pk}/${dn}/thing/lifecycle`).
    Lifecycle,
    /// Thing-model history posts (`/${pk}/${dn}/thing/event/property/history/post`,
    /// `/${pk}/${dn}/thing/event/${identifier}/history/post`).
    ThingHistory,
    /// A device's tags changed (`/${pk}/${dn}/thing/deviceinfo/update`).
    TagChange,
}

/// One message inside iotpipe.
#[derive(Debug, Clone)]
pub struct Message {
    /// Unique across restarts; the AMQP `messageId`.
    pub id: u64,
    /// What kind of message.
    pub kind: Kind,
    /// The topic as published by the device, or the platform topic of generated messages.
    pub topic: String,
    /// Payload bytes, unchanged.
    pub payload: Bytes,
    /// QoS the device used (0 or 1).
    pub qos: u8,
    /// Verified sender.
    pub origin: Arc<Origin>,
    /// When iotpipe received it, epoch milliseconds.
    pub received_at_ms: u64,
    /// Thing-model messages as the platform forwards them, for rules and subscriptions.
    pub platform: Option<Platform>,
}

/// A thing-model message as the platform forwards it: the topic without `/sys` and the
/// converted JSON body (the device's bytes when the message could not be converted).
#[derive(Debug, Clone, PartialEq)]
pub struct Platform {
    /// Forwarding topic, e.g. `/a1demo/dev1/thing/event/property/post`.
    pub topic: String,
    /// Converted JSON, or the device's bytes when they could not be converted.
    pub payload: Bytes,
}

impl Message {
    /// The topic and payload rules and subscriptions see: the platform form when there is one.
    pub fn forwarded(&self) -> (&str, &Bytes) {
        match &self.platform {
            Some(p) => (&p.topic, &p.payload),
            None => (&self.topic, &self.payload),
        }
    }
}

/// Epoch milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

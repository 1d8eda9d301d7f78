//! The embedded rumqttd router: device subscriptions and downlink fan-out.
//!
//! iotpipe runs no rumqttd listener. Its own session layer (`connection.rs`) opens a local
//! router link for a device when the device first subscribes, and platform components publish
//! downlink messages through one shared link. Upstream messages do not pass the router: they go
//! to the durable pipeline directly (see docs/ingress.md).

use std::sync::{Arc, Mutex};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};

/// Router failures.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The router refused or did not answer.
    #[error("router link failed: {0}")]
    Link(String),
    /// The router's input queue is full; try again later.
    #[error("router is busy")]
    Busy,
}

/// The router handle.
pub struct Broker {
    broker: Arc<rumqttd::Broker>,
    downlink: Mutex<LinkTx>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// Starts the router thread and the shared downlink link.
    ///
    /// # Errors
    /// When the router does not accept the downlink link.
    pub fn start() -> Result<Self, BrokerError> {
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                // Only sizes the router's slabs; iotpipe enforces its own connection limit.
                max_connections: 1024,
                // Notifications buffered per link before the router pauses it.
                max_outgoing_packet_count: 200,
                // Downlink traffic only: a small in-memory log per filter bounds memory
                // (rumqttd's sample uses 100 MiB × 10 per filter).
                max_segment_size: 1 << 20,
                max_segment_count: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let broker = Arc::new(rumqttd::Broker::new(config));
        let (downlink, _rx) =
            broker.link("iotpipe-downlink").map_err(|e| BrokerError::Link(e.to_string()))?;
        Ok(Self { broker, downlink: Mutex::new(downlink) })
    }

    /// Opens a router link named `id` (unique per connection). Runs on a blocking thread
    /// because rumqttd waits synchronously for the router's answer.
    ///
    /// # Errors
    /// When the router refuses the link.
    pub async fn link(&self, id: String) -> Result<DeviceLink, BrokerError> {
        let broker = self.broker.clone();
        let (tx, rx) = tokio::task::spawn_blocking(move || broker.link(&id).map_err(|e| e.to_string()))
            .await
            .map_err(|e| BrokerError::Link(e.to_string()))?
            .map_err(BrokerError::Link)?;
        Ok(DeviceLink { tx: Some(tx), rx })
    }

    /// Publishes a QoS 0 message to every device subscribed to `topic`.
    ///
    /// # Errors
    /// `Busy` when the router's queue is full.
    pub fn publish(&self, topic: &str, payload: bytes::Bytes) -> Result<(), BrokerError> {
        let mut link = self.downlink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        link.try_publish(topic.to_string(), payload).map(drop).map_err(|_| BrokerError::Busy)
    }
}

/// One device's router link.
pub struct DeviceLink {
    tx: Option<LinkTx>,
    /// Notifications from the router.
    pub rx: LinkRx,
}

impl DeviceLink {
    /// Adds a subscription.
    ///
    /// # Errors
    /// `Busy` when the router's queue is full.
    pub fn subscribe(&mut self, filter: &str) -> Result<(), BrokerError> {
        let tx = self.tx.as_mut().ok_or(BrokerError::Busy)?;
        tx.try_subscribe(filter).map(drop).map_err(|_| BrokerError::Busy)
    }

    /// Removes a subscription.
    ///
    /// # Errors
    /// `Busy` when the router's queue is full.
    pub fn unsubscribe(&mut self, filter: &str) -> Result<(), BrokerError> {
        let tx = self.tx.as_mut().ok_or(BrokerError::Busy)?;
        tx.try_unsubscribe(filter).map(drop).map_err(|_| BrokerError::Busy)
    }
}

impl Drop for DeviceLink {
    /// rumqttd links have no Drop of their own: without a DISCONNECT the router would keep the
    /// link and its subscriptions forever. The send may block on a full router queue, so it
    /// runs on a blocking thread.
    fn drop(&mut self) {
        if let Some(mut tx) = self.tx.take() {
            let disconnect = Packet::Disconnect(
                Disconnect { reason_code: DisconnectReasonCode::NormalDisconnection },
                None,
            );
            let send = move || {
                let _ = futures::executor::block_on(tx.send(disconnect));
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(send)),
                Err(_) => send(),
            }
        }
    }
}

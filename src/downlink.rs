//! The downlink router: the embedded rumqttd router that carries device subscriptions and
//! fans downlink messages out to them.
//!
//! iotpipe runs no rumqttd listener. The ingress session layer opens a local router link for a
//! device when the device first subscribes ([`Downlink::link`]), and platform components (rule
//! republish actions) publish through one shared link ([`Downlink::publish`]). Upstream messages
//! do not pass the router: they go to the durable pipeline directly (see docs/ingress.md). A
//! leaf: it knows rumqttd and nothing of iotpipe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};

/// Router failures.
#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    /// The router refused or did not answer.
    #[error("router link failed: {0}")]
    Link(String),
    /// The router's input queue is full; try again later.
    #[error("router is busy")]
    Busy,
}

/// The router handle, shared by the ingress and the forwarding.
pub struct Downlink {
    broker: Arc<rumqttd::Broker>,
    downlink: Mutex<LinkTx>,
    /// Device links open now.
    links: Arc<AtomicUsize>,
    /// Cluster mode: hands a republished message to the other nodes too. Set once at start-up.
    elsewhere: OnceLock<Elsewhere>,
}

/// Where republished messages go besides this node's router (cluster mode).
pub type Elsewhere = Box<dyn Fn(&str, &bytes::Bytes) + Send + Sync>;

impl std::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downlink").finish_non_exhaustive()
    }
}

/// Router links for `devices` devices that may each hold one: every device session opens at most
/// one link, plus headroom for links of sessions that were just taken over or closed (their
/// DISCONNECT is still on its way to the router), plus the platform's own downlink link.
///
/// rumqttd refuses a link beyond its `max_connections` (its slabs are sized by it, virtual
/// memory until used), so this must follow `[mqtt] max_connections`, never a constant.
pub fn router_links(devices: usize) -> usize {
    devices.saturating_add(devices / 8).saturating_add(64)
}

impl Downlink {
    /// Starts the router thread, sized for `devices` device links (`[mqtt] max_connections`),
    /// and the shared downlink link.
    ///
    /// # Errors
    /// When the router does not accept the downlink link.
    pub fn start(devices: usize) -> Result<Self, DownlinkError> {
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: router_links(devices),
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
            broker.link("iotpipe-downlink").map_err(|e| DownlinkError::Link(e.to_string()))?;
        Ok(Self { broker, downlink: Mutex::new(downlink), links: Arc::default(), elsewhere: OnceLock::new() })
    }

    /// Opens a router link named `id` (unique per connection). Runs on a blocking thread
    /// because rumqttd waits synchronously for the router's answer.
    ///
    /// # Errors
    /// When the router refuses the link.
    pub async fn link(&self, id: String) -> Result<DeviceLink, DownlinkError> {
        let broker = self.broker.clone();
        let (tx, rx) = tokio::task::spawn_blocking(move || broker.link(&id).map_err(|e| e.to_string()))
            .await
            .map_err(|e| DownlinkError::Link(e.to_string()))?
            .map_err(DownlinkError::Link)?;
        self.links.fetch_add(1, Ordering::Relaxed);
        Ok(DeviceLink { tx: Some(tx), rx, links: self.links.clone() })
    }

    /// Device links open now: one per connected device that has subscribed.
    pub fn device_links(&self) -> usize {
        self.links.load(Ordering::Relaxed)
    }

    /// Sends republished messages to the other nodes too (cluster mode); once, at start-up.
    pub fn set_elsewhere(&self, elsewhere: Elsewhere) {
        let _ = self.elsewhere.set(elsewhere);
    }

    /// A rule's republish: [`Self::publish`] here and, in cluster mode, once that succeeded, on
    /// every other node (so a retry after `Busy` sends no duplicate there).
    ///
    /// # Errors
    /// `Busy` when this node's router queue is full.
    pub fn republish(&self, topic: &str, payload: bytes::Bytes) -> Result<(), DownlinkError> {
        match self.elsewhere.get() {
            None => self.publish(topic, payload),
            Some(elsewhere) => {
                self.publish(topic, payload.clone())?;
                elsewhere(topic, &payload);
                Ok(())
            }
        }
    }

    /// Publishes a QoS 0 message to every device subscribed to `topic`.
    ///
    /// # Errors
    /// `Busy` when the router's queue is full.
    pub fn publish(&self, topic: &str, payload: bytes::Bytes) -> Result<(), DownlinkError> {
        let mut link = self.downlink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        link.try_publish(topic.to_string(), payload).map(drop).map_err(|_| DownlinkError::Busy)
    }
}

/// One device's router link.
pub struct DeviceLink {
    tx: Option<LinkTx>,
    /// Notifications from the router.
    pub rx: LinkRx,
    links: Arc<AtomicUsize>,
}

impl DeviceLink {
    /// Adds a subscription.
    ///
    /// # Errors
    /// `Busy` when the router's queue is full.
    pub fn subscribe(&mut self, filter: &str) -> Result<(), DownlinkError> {
        let tx = self.tx.as_mut().ok_or(DownlinkError::Busy)?;
        tx.try_subscribe(filter).map(drop).map_err(|_| DownlinkError::Busy)
    }

    /// Removes a subscription.
    ///
    /// # Errors
    /// `Busy` when the router's queue is full.
    pub fn unsubscribe(&mut self, filter: &str) -> Result<(), DownlinkError> {
        let tx = self.tx.as_mut().ok_or(DownlinkError::Busy)?;
        tx.try_unsubscribe(filter).map(drop).map_err(|_| DownlinkError::Busy)
    }
}

impl Drop for DeviceLink {
    /// rumqttd links have no Drop of their own: without a DISCONNECT the router would keep the
    /// link and its subscriptions forever. The send may block on a full router queue, so it
    /// runs on a blocking thread.
    fn drop(&mut self) {
        self.links.fetch_sub(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_has_a_link_for_every_device_and_headroom() {
        assert_eq!(router_links(1), 65);
        assert_eq!(router_links(1_024), 1_024 + 128 + 64);
        assert_eq!(router_links(100_000), 112_564);
        assert_eq!(router_links(usize::MAX), usize::MAX);
        for devices in [1, 10, 1_000, 10_000, 100_000] {
            assert!(router_links(devices) > devices + 1, "every device plus the platform's link");
        }
    }
}

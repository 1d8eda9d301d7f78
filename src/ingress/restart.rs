//! Status across crashes: devices recorded online when the process stopped get their offline
//! status (`server_restart`) at start-up, before the listeners accept anyone, so consumers
//! never see online twice in a row.

use std::sync::Arc;

use bytes::Bytes;

use super::sessions::Directory;
use super::status::{self, OfflineReason};
use crate::message::{now_ms, Kind, Message, Origin};
use crate::pipeline::Pipeline;
use crate::registry::{Presence, Registry};

/// Stores an offline status for every device recorded online, then forgets the record. A
/// record whose status cannot be stored is kept and tried again at the next start. In cluster
/// mode a device that has connected to another node since is not announced offline: that
/// offline would follow its new online (docs/cluster.md, "Devices on any node").
pub(super) async fn announce_offline(
    registry: &Registry,
    pipeline: &Pipeline,
    directory: Option<&dyn Directory>,
) {
    let online = match registry.recorded_online() {
        Ok(online) => online,
        Err(e) => {
            tracing::error!(error = %e, "Reading the devices online before the restart failed");
            return;
        }
    };
    for mut presence in online {
        if presence.iot_id.is_empty() {
            // Recorded before iotIds existed: the registry knows it, unless the device is gone.
            if let Some(d) = registry.device(&presence.product_key, &presence.device_name) {
                presence.iot_id.clone_from(&d.iot_id);
            }
        }
        let device = presence.device_name.clone();
        if let Some(directory) = directory {
            if directory.superseded(&presence.product_key, &presence.device_name).await {
                if let Err(e) = registry.record_offline(&presence.product_key, &presence.device_name) {
                    tracing::error!(%device, error = %e, "Forgetting a device's online record failed");
                }
                tracing::info!(%device, product = %presence.product_key, "No offline status after the restart: the device is online on another node");
                continue;
            }
        }
        let Some(message) = offline_message(&presence, pipeline).await else { return };
        match pipeline.submit(message).await {
            Ok(()) => {
                if let Err(e) = registry.record_offline(&presence.product_key, &presence.device_name) {
                    tracing::error!(%device, error = %e, "Forgetting a device's online record failed");
                }
                tracing::info!(%device, product = %presence.product_key, "Device offline: it was online when the server stopped");
            }
            Err(e) => {
                tracing::error!(%device, error = %e, "Failed to store an offline status after the restart")
            }
        }
    }
}

async fn offline_message(presence: &Presence, pipeline: &Pipeline) -> Option<Message> {
    let origin = Arc::new(Origin {
        product_key: presence.product_key.clone(),
        device_name: presence.device_name.clone(),
        iot_id: presence.iot_id.clone(),
        device_type: String::new(),
        client_id: presence.client_id.clone(),
        peer: presence.peer.as_deref().and_then(|p| p.parse().ok()),
    });
    let id = match pipeline.next_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "No message id for an offline status after the restart");
            return None;
        }
    };
    let now = now_ms();
    Some(Message {
        id,
        kind: Kind::Status,
        topic: status::topic(&origin.product_key, &origin.device_name),
        // The last communication before the crash is unknown; the connection time is the
        // latest moment known.
        payload: Bytes::from(status::payload(
            &origin,
            Some(OfflineReason::ServerRestart),
            now,
            presence.online_since_ms,
        )),
        qos: 1,
        origin,
        received_at_ms: now,
        platform: None,
    })
}

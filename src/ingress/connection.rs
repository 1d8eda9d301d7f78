//! One device connection, from accept to offline: the [`handshake`](super::handshake) (CONNECT
//! and authentication), the online status, the [`session`](super::session) loop, and the offline
//! status on the way out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::codec::{ConnAckCode, Outbound, Version};
use super::handshake::{authenticate, read_connect};
use super::io::Io;
use super::session::Session;
use super::sessions::Registration;
use super::status::{self, OfflineReason};
use super::{IngressContext, RefusalReason};
use crate::logsafe::Untrusted;
use crate::message::{now_ms, Kind, Message, Origin};
use crate::pipeline::HandoffError;

/// How long a new session waits for the session it took over to store its offline status.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Serves one accepted connection until it ends. Never panics on input; every way out is logged.
///
/// The connection's task lives as long as the device stays connected, and a task's memory is
/// that of its largest state: so the handshake and the way out run as boxed futures of their
/// own, whose state exists only while they run, and the task keeps little more than the
/// session (docs/ingress.md, "Memory per connection").
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<IngressContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(admitted) = Box::pin(admit(Io::new(stream), peer, &shared)).await else {
        return;
    };
    let Admitted { io, version, origin, registration, keep_alive, receive_maximum } = admitted;
    let Registration { id, inbox, done, .. } = registration;
    let mut session = Session::new(io, version, shared.clone(), origin.clone(), id, keep_alive, inbox);
    session.limit_unacked(receive_maximum);
    let reason = session.run().await;
    let last_seen_ms = session.last_seen_ms;
    drop(session);
    Box::pin(offline(&shared, &origin, peer, id, reason, last_seen_ms)).await;
    done.cancel();
}

/// A device whose CONNECT was accepted and answered.
struct Admitted<S> {
    io: Io<S>,
    version: Version,
    origin: Arc<Origin>,
    registration: Registration,
    keep_alive: u16,
    receive_maximum: Option<u16>,
}

/// Reads and checks the CONNECT, takes over a previous session of the device, stores the online
/// status and queues the CONNACK; `None` when the connection was refused or closed.
async fn admit<S>(mut io: Io<S>, peer: SocketAddr, shared: &Arc<IngressContext>) -> Option<Admitted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let timeout = Duration::from_secs(shared.limits.connect_timeout_secs);
    let (version, connect) = match tokio::time::timeout(timeout, read_connect(&mut io, shared)).await {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => {
            shared.stats.refuse(RefusalReason::Malformed);
            if let Some(suppressed) = shared.logs.malformed.admit() {
                tracing::warn!(%peer, reason = %Untrusted(&reason), suppressed, "Closed a connection before CONNECT");
            }
            return None;
        }
        Err(_) => {
            shared.stats.refuse(RefusalReason::ConnectTimeout);
            if let Some(suppressed) = shared.logs.timeout.admit() {
                tracing::warn!(%peer, timeout_secs = timeout.as_secs(), suppressed, "Closed a connection that sent no CONNECT in time");
            }
            return None;
        }
    };

    let (credentials, device, keep_alive) = match authenticate(&connect, shared) {
        Ok(ok) => ok,
        Err((code, why, reason)) => {
            shared.stats.refuse(why);
            if let Some(suppressed) = shared.logs.refused.admit() {
                tracing::warn!(%peer, client_id = %Untrusted(&connect.client_id), ?code, reason = %Untrusted(&reason), suppressed, "Refused a device connection");
            }
            version.write(Outbound::ConnAck { code, max_packet_size: 0 }, &mut io.wbuf);
            let _ = io.flush().await;
            let _ = io.stream.shutdown().await;
            return None;
        }
    };
    if connect.has_will {
        tracing::debug!(%peer, client_id = %Untrusted(&connect.client_id), "Ignoring the Last Will: the platform sends none");
    }

    let origin = Arc::new(Origin {
        device_type: shared.registry.category(&credentials.product_key).unwrap_or_default(),
        product_key: credentials.product_key,
        device_name: credentials.device_name,
        iot_id: device.iot_id.clone(),
        client_id: credentials.client_id,
        peer: Some(peer),
    });
    drop(device);
    let registration = shared.sessions.register(&origin.product_key, &origin.device_name);
    if let Some(previous) = &registration.replaced {
        tracing::info!(device = %origin.device_name, product = %origin.product_key, "Taking over the device's previous connection");
        let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.cancelled()).await;
    }
    // Cluster mode: the device's session on another node ends (its offline status stored)
    // before this one announces online.
    if let Some(directory) = shared.sessions.directory() {
        let claimed = directory.claim(&origin.product_key, &origin.device_name, registration.id).await;
        if let Err(e) = claimed {
            shared.stats.refuse(RefusalReason::Unavailable);
            if let Some(suppressed) = shared.logs.not_stored.admit() {
                tracing::error!(device = %origin.device_name, error = %e, suppressed, "Refused a device: its session could not be claimed in the cluster");
            }
            version.write(
                Outbound::ConnAck { code: ConnAckCode::Unavailable, max_packet_size: 0 },
                &mut io.wbuf,
            );
            let _ = io.flush().await;
            shared.sessions.remove(&origin.product_key, &origin.device_name, registration.id);
            directory.ended(&origin.product_key, &origin.device_name, registration.id);
            registration.done.cancel();
            return None;
        }
    }

    let connected_ms = now_ms();
    let online = status_message(shared, &origin, None, connected_ms, connected_ms).await;
    let stored = match online {
        Ok(m) => shared.pipeline.submit(m).await,
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        shared.stats.refuse(RefusalReason::Unavailable);
        if let Some(suppressed) = shared.logs.not_stored.admit() {
            tracing::error!(device = %origin.device_name, error = %e, suppressed, "Refused a device: its online status could not be stored");
        }
        version.write(Outbound::ConnAck { code: ConnAckCode::Unavailable, max_packet_size: 0 }, &mut io.wbuf);
        let _ = io.flush().await;
        shared.sessions.remove(&origin.product_key, &origin.device_name, registration.id);
        if let Some(directory) = shared.sessions.directory() {
            directory.ended(&origin.product_key, &origin.device_name, registration.id);
        }
        registration.done.cancel();
        return None;
    }

    let presence = crate::registry::Presence {
        product_key: origin.product_key.clone(),
        device_name: origin.device_name.clone(),
        iot_id: origin.iot_id.clone(),
        client_id: origin.client_id.clone(),
        peer: Some(peer.to_string()),
        online_since_ms: connected_ms,
    };
    if let Err(e) = shared.registry.record_online(&presence) {
        // The device is served anyway; only a crash would then miss its offline status.
        tracing::error!(device = %origin.device_name, error = %e, "Recording the device online failed");
    }

    version.write(
        Outbound::ConnAck { code: ConnAckCode::Accepted, max_packet_size: shared.limits.max_packet_u32() },
        &mut io.wbuf,
    );
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.stats.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(device = %origin.device_name, product = %origin.product_key, client_id = %Untrusted(&origin.client_id), %peer, ?version, "Device online");
    Some(Admitted { io, version, origin, registration, keep_alive, receive_maximum: connect.receive_maximum })
}

/// The way out of a session: the device leaves the session table, then its offline status is
/// stored and its presence record removed.
async fn offline(
    shared: &IngressContext,
    origin: &Arc<Origin>,
    peer: SocketAddr,
    registration: u64,
    reason: OfflineReason,
    last_seen_ms: u64,
) {
    shared.sessions.remove(&origin.product_key, &origin.device_name, registration);
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(device = %origin.device_name, product = %origin.product_key, client_id = %Untrusted(&origin.client_id), %peer, %reason, "Device offline");
    if let Some(directory) = shared.sessions.directory() {
        let (pk, dn) = (&origin.product_key, &origin.device_name);
        if !directory.announce_offline(pk, dn, registration) {
            // Superseded: the session on another node announced online already.
            tracing::info!(device = %dn, product = %pk, "No offline status: the device's new session on another node announced online first");
            if let Err(e) = shared.registry.record_offline(pk, dn) {
                tracing::error!(device = %dn, error = %e, "Recording the device offline failed");
            }
        } else {
            store_offline(shared, origin, reason, last_seen_ms).await;
        }
        directory.ended(pk, dn, registration);
        return;
    }
    store_offline(shared, origin, reason, last_seen_ms).await;
}

/// Stores the offline status, then removes the device's presence record.
async fn store_offline(
    shared: &IngressContext,
    origin: &Arc<Origin>,
    reason: OfflineReason,
    last_seen_ms: u64,
) {
    match status_message(shared, origin, Some(reason), now_ms(), last_seen_ms).await {
        Ok(m) => match shared.pipeline.submit(m).await {
            Ok(()) => {
                if let Err(e) = shared.registry.record_offline(&origin.product_key, &origin.device_name) {
                    tracing::error!(device = %origin.device_name, error = %e, "Recording the device offline failed");
                }
            }
            Err(e) => {
                if let Some(suppressed) = shared.logs.not_stored.admit() {
                    tracing::error!(device = %origin.device_name, error = %e, suppressed, "Failed to store an offline status")
                }
            }
        },
        Err(e) => {
            if let Some(suppressed) = shared.logs.not_stored.admit() {
                tracing::error!(device = %origin.device_name, error = %e, suppressed, "Failed to store an offline status")
            }
        }
    }
}

async fn status_message(
    shared: &IngressContext,
    origin: &Arc<Origin>,
    offline: Option<OfflineReason>,
    now: u64,
    last: u64,
) -> Result<Message, HandoffError> {
    Ok(Message {
        id: shared.pipeline.next_id().await?,
        kind: Kind::Status,
        topic: status::topic(&origin.product_key, &origin.device_name),
        payload: Bytes::from(status::payload(origin, offline, now, last)),
        qos: 1,
        origin: origin.clone(),
        received_at_ms: now,
        platform: None,
    })
}

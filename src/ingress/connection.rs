//! One device connection: CONNECT and authentication, the session loop, and the way out.
//!
//! The loop reads packets only while the connection has fewer than `max_inflight` messages
//! waiting for the pipeline, so a slow pipeline slows the device through TCP instead of
//! growing memory. PUBACKs go out in order, each once its message is durably stored.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

use super::acl::Acl;
use super::auth;
use super::broker::DeviceLink;
use super::codec::{
    self, ConnAckCode, ConnectPacket, DisconnectCode, Inbound, Outbound, PubAckCode, PublishPacket, Version,
};
use super::status::{self, OfflineReason};
use super::{RefusalReason, Shared};
use crate::message::{now_ms, thing, Kind, Message, Origin};
use crate::pipeline::{HandoffError, Receipt};

/// Read-buffer growth step: one read usually takes a batch of small publishes.
const READ_CHUNK: usize = 4096;
/// How long a new session waits for the session it took over to store its offline status.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a closing session waits for its in-flight messages before giving up on their PUBACKs
/// (the messages themselves are already queued and will be stored).
const DRAIN_WAIT: Duration = Duration::from_secs(3);

/// Serves one accepted connection until it ends. Never panics on input; every way out is logged.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut io = Io { stream, rbuf: BytesMut::with_capacity(512), wbuf: BytesMut::new() };
    let timeout = Duration::from_secs(shared.limits.connect_timeout_secs);
    let (version, connect) = match tokio::time::timeout(timeout, read_connect(&mut io, &shared)).await {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => {
            shared.stats.refuse(RefusalReason::Malformed);
            tracing::warn!(%peer, %reason, "Closed a connection before CONNECT");
            return;
        }
        Err(_) => {
            shared.stats.refuse(RefusalReason::ConnectTimeout);
            tracing::debug!(%peer, "Closed a connection that sent no CONNECT in time");
            return;
        }
    };

    let (credentials, keep_alive) = match authenticate(&connect, &shared) {
        Ok(ok) => ok,
        Err((code, why, reason)) => {
            shared.stats.refuse(why);
            tracing::warn!(%peer, client_id = %connect.client_id, ?code, %reason, "Refused a device connection");
            version.write(Outbound::ConnAck { code, max_packet_size: 0 }, &mut io.wbuf);
            let _ = io.flush().await;
            let _ = io.stream.shutdown().await;
            return;
        }
    };
    if connect.has_will {
        tracing::debug!(%peer, client_id = %connect.client_id, "Ignoring the Last Will: the platform sends none");
    }

    let origin = Arc::new(Origin {
        product_key: credentials.product_key,
        device_name: credentials.device_name,
        client_id: credentials.client_id,
        peer: Some(peer),
    });
    let registration = shared.sessions.register(&origin.product_key, &origin.device_name);
    if let Some(previous) = &registration.replaced {
        tracing::info!(device = %origin.device_name, product = %origin.product_key, "Taking over the device's previous connection");
        let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.cancelled()).await;
    }

    let connected_ms = now_ms();
    let online = status_message(&shared, &origin, None, connected_ms, connected_ms);
    let stored = match online {
        Ok(m) => shared.pipeline.submit(m).await,
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        shared.stats.refuse(RefusalReason::Unavailable);
        tracing::error!(device = %origin.device_name, error = %e, "Refused a device: its online status could not be stored");
        version.write(Outbound::ConnAck { code: ConnAckCode::Unavailable, max_packet_size: 0 }, &mut io.wbuf);
        let _ = io.flush().await;
        shared.sessions.remove(&origin.product_key, &origin.device_name, registration.id);
        registration.done.cancel();
        return;
    }

    version.write(
        Outbound::ConnAck { code: ConnAckCode::Accepted, max_packet_size: shared.limits.max_packet_u32() },
        &mut io.wbuf,
    );
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.stats.connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(device = %origin.device_name, product = %origin.product_key, client_id = %origin.client_id, %peer, ?version, "Device online");

    let mut session = Session {
        io,
        version,
        shared: shared.clone(),
        acl: Acl::new(&origin.product_key, &origin.device_name),
        origin: origin.clone(),
        inflight: VecDeque::new(),
        link: None,
        link_id: format!("{}.{}.{}", origin.product_key, origin.device_name, registration.id),
        keep_alive: Duration::from_millis(u64::from(keep_alive) * 1500),
        last_seen_ms: connected_ms,
        kicked: registration.kicked,
    };
    let reason = session.run().await;
    let last_seen_ms = session.last_seen_ms;
    drop(session);

    shared.sessions.remove(&origin.product_key, &origin.device_name, registration.id);
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(device = %origin.device_name, product = %origin.product_key, client_id = %origin.client_id, %peer, %reason, "Device offline");
    match status_message(&shared, &origin, Some(reason), now_ms(), last_seen_ms) {
        Ok(m) => {
            if let Err(e) = shared.pipeline.submit(m).await {
                tracing::error!(device = %origin.device_name, error = %e, "Failed to store an offline status");
            }
        }
        Err(e) => {
            tracing::error!(device = %origin.device_name, error = %e, "Failed to store an offline status")
        }
    }
    registration.done.cancel();
}

fn status_message(
    shared: &Shared,
    origin: &Arc<Origin>,
    offline: Option<OfflineReason>,
    now: u64,
    last: u64,
) -> Result<Message, HandoffError> {
    Ok(Message {
        id: shared.pipeline.next_id()?,
        kind: Kind::Status,
        topic: status::topic(&origin.product_key, &origin.device_name),
        payload: Bytes::from(status::payload(origin, offline, now, last)),
        qos: 1,
        origin: origin.clone(),
        received_at_ms: now,
        platform: None,
    })
}

struct Io<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }
}

async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    shared: &Shared,
) -> Result<(Version, ConnectPacket), String> {
    loop {
        match codec::detect(&io.rbuf) {
            Ok(Some(version)) => loop {
                match version.read(&mut io.rbuf, shared.limits.max_packet) {
                    Ok(Some(Inbound::Connect(c))) => return Ok((version, c)),
                    Ok(Some(_)) => return Err("first packet is not CONNECT".into()),
                    Ok(None) => {
                        if io.read_more().await.map_err(|e| e.to_string())? == 0 {
                            return Err("connection closed inside CONNECT".into());
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            },
            Ok(None) => {
                if io.read_more().await.map_err(|e| e.to_string())? == 0 {
                    return Err("connection closed before CONNECT".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Why a CONNECT is refused: the CONNACK code, the counted reason and the logged text.
type Refusal = (ConnAckCode, RefusalReason, String);

fn authenticate(connect: &ConnectPacket, shared: &Shared) -> Result<(auth::Credentials, u16), Refusal> {
    use RefusalReason as R;
    let limits = &shared.limits;
    if !(limits.keep_alive_min..=limits.keep_alive_max).contains(&connect.keep_alive) {
        return Err((
            ConnAckCode::BadKeepAlive,
            R::KeepAlive,
            format!(
                "keep-alive {} s is outside {}..={} s",
                connect.keep_alive, limits.keep_alive_min, limits.keep_alive_max
            ),
        ));
    }
    let bad = |why: RefusalReason, message: String| (ConnAckCode::BadCredentials, why, message);
    let credentials = auth::parse(&connect.client_id, connect.username.as_deref())
        .map_err(|e| bad(R::BadCredentials, e.to_string()))?;
    let password = connect.password.as_deref().ok_or_else(|| bad(R::BadCredentials, "no password".into()))?;
    let device = shared
        .registry
        .device(&credentials.product_key, &credentials.device_name)
        .ok_or_else(|| bad(R::UnknownDevice, format!("unknown device {}", credentials.username())))?;
    if !credentials.verify(&device.secret, password.as_bytes()) {
        let message = format!("bad signature for {}", credentials.username());
        return Err((ConnAckCode::BadCredentials, R::BadSignature, message));
    }
    if !device.enabled {
        let message = format!("device {} is disabled", credentials.username());
        return Err((ConnAckCode::NotAuthorized, R::Disabled, message));
    }
    Ok((credentials, connect.keep_alive))
}

struct Session<S> {
    io: Io<S>,
    version: Version,
    shared: Arc<Shared>,
    origin: Arc<Origin>,
    acl: Acl,
    /// Messages queued in the pipeline, oldest first, with the packet id to acknowledge
    /// (`None` for QoS 0).
    inflight: VecDeque<(Option<u16>, Receipt)>,
    link: Option<DeviceLink>,
    link_id: String,
    keep_alive: Duration,
    last_seen_ms: u64,
    kicked: tokio::sync::watch::Receiver<Option<OfflineReason>>,
}

/// How a packet handler ends the session.
struct End(OfflineReason, Option<DisconnectCode>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    async fn run(&mut self) -> OfflineReason {
        let max_inflight = self.shared.limits.max_inflight;
        let deadline = sleep_until(Instant::now() + self.keep_alive);
        tokio::pin!(deadline);
        let shutdown = self.shared.shutdown.clone();
        loop {
            while self.inflight.len() < max_inflight {
                match self.version.read(&mut self.io.rbuf, self.shared.limits.max_packet) {
                    Ok(Some(packet)) => {
                        if let Err(End(reason, code)) = self.handle(packet).await {
                            return self.close(reason, code).await;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let stats = &self.shared.stats;
                        let (code, counter) = match e {
                            codec::CodecError::TooLarge { .. } => {
                                (DisconnectCode::PacketTooLarge, &stats.oversized)
                            }
                            _ => (DisconnectCode::MalformedPacket, &stats.protocol_errors),
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(device = %self.origin.device_name, client_id = %self.origin.client_id, error = %e, "Closing a connection after a bad packet");
                        return self.close(OfflineReason::ProtocolViolation, Some(code)).await;
                    }
                }
            }
            if let Err(End(reason, code)) = self.take_ready_acks() {
                return self.close(reason, code).await;
            }
            if self.io.flush().await.is_err() {
                return OfflineReason::NetworkError;
            }

            let reading = self.inflight.len() < max_inflight;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    return self.close(OfflineReason::ServerShutdown, Some(DisconnectCode::ServerShuttingDown)).await;
                }
                Ok(()) = self.kicked.changed() => {
                    let reason = (*self.kicked.borrow()).unwrap_or(OfflineReason::TakenOver);
                    let code = match reason {
                        OfflineReason::TakenOver => DisconnectCode::SessionTakenOver,
                        _ => DisconnectCode::AdministrativeAction,
                    };
                    return self.close(reason, Some(code)).await;
                }
                result = front(&mut self.inflight) => {
                    if let Some((pkid, _)) = self.inflight.pop_front() {
                        if let Err(end) = self.acknowledge(pkid, result) {
                            return self.close(end.0, end.1).await;
                        }
                    }
                }
                read = self.io.read_more(), if reading => match read {
                    Ok(0) | Err(_) => return OfflineReason::NetworkError,
                    Ok(_) => {
                        self.last_seen_ms = now_ms();
                        deadline.as_mut().reset(Instant::now() + self.keep_alive);
                    }
                },
                notification = next_downlink(&mut self.link) => self.downlink(notification).await,
                () = &mut deadline => {
                    return self.close(OfflineReason::KeepAliveTimeout, Some(DisconnectCode::KeepAliveTimeout)).await;
                }
            }
        }
    }

    /// Ends the session: waits (briefly) for in-flight messages to answer their PUBACKs,
    /// tells an MQTT 5 client why, and flushes.
    async fn close(&mut self, reason: OfflineReason, code: Option<DisconnectCode>) -> OfflineReason {
        let drain = async {
            while let Some((pkid, receipt)) = self.inflight.pop_front() {
                let result = receipt.await;
                if self.acknowledge(pkid, result).is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_WAIT, drain).await;
        if let (Some(code), Version::V5) = (code, self.version) {
            self.version.write(Outbound::Disconnect(code), &mut self.io.wbuf);
        }
        let _ = tokio::time::timeout(DRAIN_WAIT, async {
            let _ = self.io.flush().await;
            let _ = self.io.stream.shutdown().await;
        })
        .await;
        reason
    }

    /// Writes the PUBACKs of every message already stored, in order.
    fn take_ready_acks(&mut self) -> Result<(), End> {
        while let Some((_, receipt)) = self.inflight.front_mut() {
            let Some(result) = receipt.try_result() else {
                break;
            };
            let Some((pkid, _)) = self.inflight.pop_front() else {
                break;
            };
            self.acknowledge(pkid, result)?;
        }
        Ok(())
    }

    fn acknowledge(&mut self, pkid: Option<u16>, result: Result<(), HandoffError>) -> Result<(), End> {
        match (result, pkid) {
            (Ok(()), Some(pkid)) => {
                self.version.write(Outbound::PubAck { pkid, code: PubAckCode::Success }, &mut self.io.wbuf);
                Ok(())
            }
            (Ok(()), None) => Ok(()),
            (Err(e), pkid) => {
                tracing::error!(device = %self.origin.device_name, error = %e, "A message could not be stored");
                match (self.version, pkid) {
                    (Version::V5, Some(pkid)) => {
                        self.version.write(
                            Outbound::PubAck { pkid, code: PubAckCode::Unspecified },
                            &mut self.io.wbuf,
                        );
                        Ok(())
                    }
                    _ => Err(End(OfflineReason::ServerError, Some(DisconnectCode::UnspecifiedError))),
                }
            }
        }
    }

    async fn handle(&mut self, packet: Inbound) -> Result<(), End> {
        match packet {
            Inbound::Publish(p) => self.publish(p).await,
            Inbound::Subscribe { pkid, filters } => {
                self.subscribe(pkid, filters).await;
                Ok(())
            }
            Inbound::Unsubscribe { pkid, filters } => {
                if let Some(link) = &mut self.link {
                    for f in &filters {
                        if let Err(e) = link.unsubscribe(f) {
                            tracing::warn!(device = %self.origin.device_name, filter = %f, error = %e, "Unsubscribe failed");
                        }
                    }
                }
                self.version.write(Outbound::UnsubAck { pkid, count: filters.len() }, &mut self.io.wbuf);
                Ok(())
            }
            Inbound::PingReq => {
                self.version.write(Outbound::PingResp, &mut self.io.wbuf);
                Ok(())
            }
            Inbound::PubAck => Ok(()),
            Inbound::Disconnect => Err(End(OfflineReason::ClientDisconnect, None)),
            Inbound::QoS2Flow => {
                self.violation("QoS 2 is not supported");
                Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::QoSNotSupported)))
            }
            Inbound::Connect(_) => {
                self.violation("a second CONNECT");
                Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::ProtocolError)))
            }
            Inbound::Unexpected(what) => {
                self.violation(what);
                Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::ProtocolError)))
            }
        }
    }

    fn violation(&self, what: &str) {
        self.shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(device = %self.origin.device_name, client_id = %self.origin.client_id, packet = what, "Closing a connection after a protocol violation");
    }

    async fn publish(&mut self, p: PublishPacket) -> Result<(), End> {
        let stats = &self.shared.stats;
        if p.qos > 1 {
            self.violation("PUBLISH with QoS 2, which iotpipe does not support");
            return Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::QoSNotSupported)));
        }
        if p.topic_alias {
            self.violation("PUBLISH with a topic alias (the server allows none)");
            return Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::TopicAliasInvalid)));
        }
        if p.payload.len() > self.shared.limits.max_payload {
            stats.oversized.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %self.origin.device_name, topic = %p.topic, size = p.payload.len(), limit = self.shared.limits.max_payload, "Refused an oversized payload");
            return Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::PacketTooLarge)));
        }
        if let Err(denied) = self.acl.check_publish(&p.topic) {
            stats.acl_denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %self.origin.device_name, product = %self.origin.product_key, client_id = %self.origin.client_id, topic = %p.topic, reason = %denied, "Refused a publish outside the device's topics");
            return match (self.version, p.qos) {
                (Version::V5, 1) => {
                    self.version.write(
                        Outbound::PubAck { pkid: p.pkid, code: PubAckCode::NotAuthorized },
                        &mut self.io.wbuf,
                    );
                    Ok(())
                }
                (Version::V5, _) => {
                    Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::NotAuthorized)))
                }
                (Version::V311, _) => Err(End(OfflineReason::ProtocolViolation, None)),
            };
        }
        let received_at_ms = now_ms();
        let id = match self.shared.pipeline.next_id() {
            Ok(id) => id,
            Err(e) => return self.acknowledge(Some(p.pkid).filter(|_| p.qos == 1), Err(e)),
        };
        let platform = match thing::convert(&self.origin, &p.topic, &p.payload, received_at_ms) {
            None => None,
            Some(Ok(platform)) => Some(platform),
            Some(Err(e)) => {
                stats.bad_thing_payloads.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %self.origin.device_name, topic = %p.topic, error = %e, "Forwarding a thing-model post unconverted");
                None
            }
        };
        stats.publishes.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        let message = Message {
            id,
            kind: Kind::Upstream,
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            origin: self.origin.clone(),
            received_at_ms,
            platform,
        };
        let pkid = (p.qos == 1).then_some(p.pkid);
        match self.shared.pipeline.enqueue(message).await {
            Ok(receipt) => {
                self.inflight.push_back((pkid, receipt));
                Ok(())
            }
            Err(e) => self.acknowledge(pkid, Err(e)),
        }
    }

    async fn subscribe(&mut self, pkid: u16, filters: Vec<(String, u8)>) {
        let mut granted = Vec::with_capacity(filters.len());
        for (filter, _qos) in &filters {
            if let Err(denied) = self.acl.check_subscribe(filter) {
                self.shared.stats.acl_denied.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %self.origin.device_name, product = %self.origin.product_key, client_id = %self.origin.client_id, %filter, reason = %denied, "Refused a subscription outside the device's topics");
                granted.push(None);
                continue;
            }
            if self.link.is_none() {
                match self.shared.broker.link(self.link_id.clone()).await {
                    Ok(link) => self.link = Some(link),
                    Err(e) => {
                        tracing::error!(device = %self.origin.device_name, error = %e, "Could not open a router link");
                        granted.push(None);
                        continue;
                    }
                }
            }
            let result = self.link.as_mut().map(|l| l.subscribe(filter));
            match result {
                // Downlink messages are delivered with QoS 0, so that is what is granted.
                Some(Ok(())) => granted.push(Some(0)),
                Some(Err(e)) => {
                    tracing::warn!(device = %self.origin.device_name, %filter, error = %e, "Subscribe failed");
                    granted.push(None);
                }
                None => granted.push(None),
            }
        }
        self.version.write(Outbound::SubAck { pkid, granted: &granted }, &mut self.io.wbuf);
    }

    async fn downlink(&mut self, notification: Option<Notification>) {
        match notification {
            Some(Notification::Forward(f)) => {
                self.version.write(
                    Outbound::Publish { topic: &f.publish.topic, payload: f.publish.payload },
                    &mut self.io.wbuf,
                );
            }
            Some(Notification::Unschedule) => {
                // The router paused this link after buffering a batch; we have drained it.
                if let Some(link) = &self.link {
                    let _ = link.rx.wake().await;
                }
            }
            Some(_) => {}
            None => {
                tracing::warn!(device = %self.origin.device_name, "The router closed the device's link");
                self.link = None;
            }
        }
    }
}

/// The oldest in-flight receipt's outcome; pending forever when none is in flight.
async fn front(inflight: &mut VecDeque<(Option<u16>, Receipt)>) -> Result<(), HandoffError> {
    match inflight.front_mut() {
        Some((_, receipt)) => receipt.await,
        None => std::future::pending().await,
    }
}

/// The next router notification; pending forever without a link.
async fn next_downlink(link: &mut Option<DeviceLink>) -> Option<Notification> {
    match link {
        Some(link) => link.rx.next().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

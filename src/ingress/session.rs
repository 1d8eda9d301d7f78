//! An accepted device's session: the packet loop (publish, subscribe, ping, disconnect), PUBACKs
//! in order once each message is stored, downlink notifications, cloud-to-device messages from
//! the mailbox (QoS 1 retried until acknowledged), keep-alive and the way out.
//!
//! The loop reads packets only while the connection has fewer than `max_inflight` messages
//! waiting for the pipeline, so a slow pipeline slows the device through TCP instead of
//! growing memory.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttd::Notification;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, Instant};

use super::acl::Acl;
use super::codec::{self, DisconnectCode, Inbound, Outbound, PubAckCode, PublishPacket, Version};
use super::io::Io;
use super::mailbox::{self, CallKind, Delivery, DeliveryState, MAX_UNACKED};
use super::sessions::Inbox;
use super::status::OfflineReason;
use super::IngressContext;
use crate::downlink::DeviceLink;
use crate::logsafe::Untrusted;
use crate::message::alink::{self, Reply};
use crate::message::{now_ms, thing, Kind, Message, Origin, Platform};
use crate::pipeline::{HandoffError, Receipt};

/// How long a closing session waits for its in-flight messages before giving up on their PUBACKs
/// (the messages themselves are already queued and will be stored).
const DRAIN_WAIT: Duration = Duration::from_secs(3);

/// Subscriptions one session keeps: the platform allows a device 100 topic subscriptions, and
/// each is matched against every cloud-to-device message to the device.
const MAX_SUBSCRIPTIONS: usize = 100;

/// A QoS 1 cloud-to-device message written and not yet acknowledged.
struct Unacked {
    pkid: u16,
    delivery: Delivery,
    sent_at: Instant,
}

/// A device's session after its CONNACK.
pub(super) struct Session<S> {
    io: Io<S>,
    version: Version,
    shared: Arc<IngressContext>,
    origin: Arc<Origin>,
    acl: Acl,
    /// Messages queued in the pipeline, oldest first, with the packet id to acknowledge
    /// (`None` for QoS 0) and the Alink reply to send once the message is stored.
    inflight: VecDeque<(Option<u16>, Receipt, Option<Reply>)>,
    /// Boxed: most devices never subscribe, and an empty box costs an idle session nothing.
    link: Option<Box<DeviceLink>>,
    /// This session's number in the session table, part of its router link's name.
    registration: u64,
    keep_alive: Duration,
    pub(super) last_seen_ms: u64,
    /// Why the session must end (takeover, disable), and the device's cloud-to-device messages.
    inbox: Inbox,
    /// The granted filters and their QoS, for the mailbox's messages (the router keeps its own).
    subscriptions: Vec<(String, u8)>,
    /// QoS 1 mailbox messages written, oldest (first sent or last resent) first.
    unacked: std::collections::VecDeque<Unacked>,
    /// The packet id of the last QoS 1 message written.
    last_pkid: u16,
    /// At most this many QoS 1 mailbox messages unacknowledged: [`MAX_UNACKED`], or less when
    /// an MQTT 5 client announces a smaller Receive Maximum.
    max_unacked: usize,
}

/// How a packet handler ends the session.
struct End(OfflineReason, Option<DisconnectCode>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The session of `origin` on `io`, registered as number `registration`; `inbox` says when
    /// the device is disconnected by the platform or taken over, and brings its cloud-to-device
    /// messages.
    pub(super) fn new(
        io: Io<S>,
        version: Version,
        shared: Arc<IngressContext>,
        origin: Arc<Origin>,
        registration: u64,
        keep_alive_secs: u16,
        inbox: Inbox,
    ) -> Self {
        Self {
            io,
            version,
            shared,
            acl: Acl::new(&origin.product_key, &origin.device_name),
            origin,
            registration,
            inflight: VecDeque::new(),
            link: None,
            // MQTT: the server may close after one and a half keep-alive periods of silence.
            keep_alive: Duration::from_millis(u64::from(keep_alive_secs) * 1500),
            last_seen_ms: now_ms(),
            inbox,
            subscriptions: Vec::new(),
            unacked: std::collections::VecDeque::new(),
            last_pkid: 0,
            max_unacked: MAX_UNACKED,
        }
    }

    /// Honours an MQTT 5 client's Receive Maximum (0 is a protocol error the codec refuses).
    pub(super) fn limit_unacked(&mut self, receive_maximum: Option<u16>) {
        if let Some(max) = receive_maximum.filter(|m| *m > 0) {
            self.max_unacked = MAX_UNACKED.min(usize::from(max));
        }
    }

    pub(super) async fn run(&mut self) -> OfflineReason {
        let max_inflight = self.shared.limits.max_inflight;
        let deadline = sleep_until(Instant::now() + self.keep_alive);
        tokio::pin!(deadline);
        let shutdown = self.shared.shutdown.clone();
        loop {
            while self.inflight.len() < max_inflight {
                match self.version.read(&mut self.io.rbuf, self.shared.limits.max_packet) {
                    Ok(Some(packet)) => {
                        // Boxed, like `close`: the state of handling a packet exists only while
                        // it is handled, not in every idle connection's task.
                        if let Err(End(reason, code)) = Box::pin(self.handle(packet)).await {
                            return self.close_boxed(reason, code).await;
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
                        tracing::warn!(device = %self.origin.device_name, client_id = %Untrusted(&self.origin.client_id), error = %e, "Closing a connection after a bad packet");
                        return self.close_boxed(OfflineReason::ProtocolViolation, Some(code)).await;
                    }
                }
            }
            if let Err(End(reason, code)) = self.take_ready_acks() {
                return self.close_boxed(reason, code).await;
            }
            if self.io.flush().await.is_err() {
                return OfflineReason::NetworkError;
            }

            let reading = self.inflight.len() < max_inflight;
            let taking_mail = self.unacked.len() < self.max_unacked;
            // MQTT 5 forbids resending on a live connection [MQTT-4.4.0-1]; 3.1.1 allows it.
            let retry_at = match (self.version, self.unacked.front()) {
                (Version::V311, Some(u)) => Some(u.sent_at + self.shared.limits.downlink_retry),
                _ => None,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    return self.close_boxed(OfflineReason::ServerShutdown, Some(DisconnectCode::ServerShuttingDown)).await;
                }
                reason = self.inbox.kicked() => {
                    let code = match reason {
                        OfflineReason::TakenOver => DisconnectCode::SessionTakenOver,
                        _ => DisconnectCode::AdministrativeAction,
                    };
                    return self.close_boxed(reason, Some(code)).await;
                }
                result = front(&mut self.inflight) => {
                    if let Some((pkid, _, reply)) = self.inflight.pop_front() {
                        if let Err(end) = self.acknowledge(pkid, result, reply) {
                            return self.close_boxed(end.0, end.1).await;
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
                notification = next_downlink(&mut self.link) => Box::pin(self.downlink(notification)).await,
                delivery = self.inbox.recv(), if taking_mail => self.deliver(delivery),
                () = retry(retry_at), if retry_at.is_some() => self.resend_due(),
                () = &mut deadline => {
                    return self.close_boxed(OfflineReason::KeepAliveTimeout, Some(DisconnectCode::KeepAliveTimeout)).await;
                }
            }
        }
    }

    /// [`Self::close`] as a boxed future, so that its state is not part of the session's.
    fn close_boxed(
        &mut self,
        reason: OfflineReason,
        code: Option<DisconnectCode>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = OfflineReason> + Send + '_>> {
        Box::pin(self.close(reason, code))
    }

    /// Ends the session: waits (briefly) for in-flight messages to answer their PUBACKs,
    /// tells an MQTT 5 client why, and flushes.
    async fn close(&mut self, reason: OfflineReason, code: Option<DisconnectCode>) -> OfflineReason {
        let drain = async {
            while let Some((pkid, receipt, reply)) = self.inflight.pop_front() {
                let result = receipt.await;
                if self.acknowledge(pkid, result, reply).is_err() {
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
        while let Some((_, receipt, _)) = self.inflight.front_mut() {
            let Some(result) = receipt.try_result() else {
                break;
            };
            let Some((pkid, _, reply)) = self.inflight.pop_front() else {
                break;
            };
            self.acknowledge(pkid, result, reply)?;
        }
        Ok(())
    }

    /// Answers a message's outcome: its PUBACK and, once stored, its Alink reply.
    fn acknowledge(
        &mut self,
        pkid: Option<u16>,
        result: Result<(), HandoffError>,
        reply: Option<Reply>,
    ) -> Result<(), End> {
        // Through the router, so the reply reaches the device only when it subscribed to its
        // reply topic, as on the platform. A device that never subscribed has no router link and
        // could not receive it: its posts cost the router nothing.
        if let (Ok(()), Some(reply), true) = (&result, reply, self.link.is_some()) {
            if let Err(e) = self.shared.downlink.publish(&reply.topic, reply.payload) {
                tracing::warn!(device = %self.origin.device_name, topic = %Untrusted(&reply.topic), error = %e, "Could not send an Alink reply");
            }
        }
        match (result, pkid) {
            (Ok(()), Some(pkid)) => {
                self.version.write(Outbound::PubAck { pkid, code: PubAckCode::Success }, &mut self.io.wbuf);
                Ok(())
            }
            (Ok(()), None) => Ok(()),
            (Err(e), pkid) => {
                if let Some(suppressed) = self.shared.logs.not_stored.admit() {
                    tracing::error!(device = %self.origin.device_name, error = %e, suppressed, "A message could not be stored: not acknowledged");
                }
                match (self.version, pkid) {
                    // Cluster mode after 20 s of failed PubAcks: no PUBACK at all (a failure
                    // PUBACK would end the message for an MQTT 5 device); the device sends
                    // it again on its next connection.
                    _ if matches!(e, HandoffError::NotReplicated(_)) => {
                        Err(End(OfflineReason::ServerError, Some(DisconnectCode::UnspecifiedError)))
                    }
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
                self.subscriptions.retain(|(s, _)| !filters.contains(s));
                if let Some(link) = &mut self.link {
                    for f in &filters {
                        if let Err(e) = link.unsubscribe(f) {
                            tracing::warn!(device = %self.origin.device_name, filter = %Untrusted(f), error = %e, "Unsubscribe failed");
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
            Inbound::PubAck(pkid) => {
                if let Some(at) = self.unacked.iter().position(|u| u.pkid == pkid) {
                    if let Some(u) = self.unacked.remove(at) {
                        u.delivery.tracker.set(DeliveryState::Acknowledged);
                    }
                }
                Ok(())
            }
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
            Inbound::Malformed(what) => {
                self.violation(what);
                Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::MalformedPacket)))
            }
        }
    }

    fn violation(&self, what: &str) {
        self.shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(device = %self.origin.device_name, client_id = %Untrusted(&self.origin.client_id), packet = what, "Closing a connection after a protocol violation");
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
            tracing::warn!(device = %self.origin.device_name, topic = %Untrusted(&p.topic), size = p.payload.len(), limit = self.shared.limits.max_payload, "Refused an oversized payload");
            return Err(End(OfflineReason::ProtocolViolation, Some(DisconnectCode::PacketTooLarge)));
        }
        if let Err(denied) = self.acl.check_publish(&p.topic) {
            stats.acl_denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %self.origin.device_name, product = %self.origin.product_key, client_id = %Untrusted(&self.origin.client_id), topic = %Untrusted(&p.topic), reason = %denied, "Refused a publish outside the device's topics");
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
        if let Some(id) = self.acl.rrpc_response(&p.topic) {
            // An answer to a waiting RRPC call, never an upstream message (docs/downlink.md).
            let (pk, dn) = (&self.origin.product_key, &self.origin.device_name);
            if !self.shared.calls.complete(CallKind::Rrpc, pk, dn, id, p.payload) {
                if let Some(suppressed) = self.shared.logs.unanswered.admit() {
                    tracing::info!(device = %dn, product = %pk, topic = %Untrusted(&p.topic), suppressed, "Dropped an RRPC response no call waits for (late or unknown)");
                }
            }
            if p.qos == 1 {
                self.version
                    .write(Outbound::PubAck { pkid: p.pkid, code: PubAckCode::Success }, &mut self.io.wbuf);
            }
            return Ok(());
        }
        if self.shared.calls.services_waiting() && self.acl.is_service_reply(&p.topic) {
            self.service_reply(&p.payload);
        }
        let received_at_ms = now_ms();
        let id = match self.shared.pipeline.next_id().await {
            Ok(id) => id,
            Err(e) => return self.acknowledge(Some(p.pkid).filter(|_| p.qos == 1), Err(e), None),
        };
        let pkid = (p.qos == 1).then_some(p.pkid);
        stats.publishes.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        // The parsed body of a live post goes with its message, so the rules do not parse it again.
        let mut body = None;
        let (kind, mut platforms, reply) = match thing::tags::report_op(&self.origin, &p.topic) {
            Some(op) => {
                match super::tags::apply(&self.shared, &self.origin, op, &p.topic, &p.payload, received_at_ms)
                    .await
                {
                    Ok(changes) => (Kind::TagChange, changes, alink::post_reply(&p.topic, &p.payload, true)),
                    Err(reply) => (Kind::Upstream, Vec::new(), reply),
                }
            }
            None => match thing::convert_and_reply(&self.origin, &p.topic, &p.payload, received_at_ms) {
                None => (Kind::Upstream, Vec::new(), None),
                Some((Ok(c), reply)) => {
                    body = c.body;
                    (c.kind, c.messages, reply)
                }
                Some((Err(e), reply)) => {
                    stats.bad_thing_payloads.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %self.origin.device_name, topic = %Untrusted(&p.topic), error = %e, "Forwarding a thing-model message unconverted");
                    (Kind::Upstream, Vec::new(), reply)
                }
            },
        };
        if kind == Kind::TagChange && platforms.is_empty() {
            // A tag report that changed nothing: nothing to store, answered in its turn.
            self.inflight.push_back((pkid, Receipt::ready(Ok(())), reply));
            return Ok(());
        }
        if platforms.is_empty() {
            // Unconverted thing-model messages keep their bytes but take the forwarding topic,
            // so that every thing-model message is seen under one spelling (without `/sys`).
            if let Some(topic) = thing::forwarding_topic(&self.origin, &p.topic) {
                platforms.push(Platform { topic: topic.to_string(), payload: p.payload.clone() });
            }
        }
        // A message converted into several platform messages (a batch or history post) is
        // stored as that many messages; the PUBACK and the Alink reply go with the last, so
        // they are sent once all are stored (receipts are answered in order).
        let count = platforms.len().max(1);
        let mut platforms = platforms.into_iter();
        let (mut topic, payload) = (Some(p.topic), p.payload);
        for part in 0..count {
            let id = match part {
                0 => id,
                _ => match self.shared.pipeline.next_id().await {
                    Ok(id) => id,
                    Err(e) => return self.acknowledge(pkid, Err(e), None),
                },
            };
            let topic = if part + 1 == count { topic.take() } else { topic.clone() };
            let message = Message {
                id,
                kind,
                topic: topic.unwrap_or_default(),
                payload: payload.clone(),
                qos: p.qos,
                origin: self.origin.clone(),
                received_at_ms,
                platform: platforms.next(),
            };
            match self.shared.pipeline.enqueue_parsed(message, body.take()).await {
                Ok(receipt) => self.inflight.push_back((None, receipt, None)),
                Err(e) => return self.acknowledge(pkid, Err(e), None),
            }
        }
        if let Some(back) = self.inflight.back_mut() {
            (back.0, back.2) = (pkid, reply);
        }
        Ok(())
    }

    async fn subscribe(&mut self, pkid: u16, filters: Vec<(String, u8)>) {
        let mut granted = Vec::with_capacity(filters.len());
        for (filter, requested) in &filters {
            if let Err(denied) = self.acl.check_subscribe(filter) {
                self.shared.stats.acl_denied.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %self.origin.device_name, product = %self.origin.product_key, client_id = %Untrusted(&self.origin.client_id), filter = %Untrusted(filter), reason = %denied, "Refused a subscription outside the device's topics");
                granted.push(None);
                continue;
            }
            if self.link.is_none() {
                let link_id =
                    format!("{}.{}.{}", self.origin.product_key, self.origin.device_name, self.registration);
                match self.shared.downlink.link(link_id).await {
                    Ok(link) => self.link = Some(Box::new(link)),
                    Err(e) => {
                        tracing::error!(device = %self.origin.device_name, error = %e, "Could not open a router link");
                        granted.push(None);
                        continue;
                    }
                }
            }
            let known = self.subscriptions.iter().position(|(s, _)| s == filter);
            if known.is_none() && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                tracing::warn!(device = %self.origin.device_name, filter = %Untrusted(filter), limit = MAX_SUBSCRIPTIONS, "Refused a subscription beyond the limit");
                granted.push(None);
                continue;
            }
            let result = self.link.as_mut().map(|l| l.subscribe(filter));
            match result {
                // Router messages (rule republish, Alink replies, broadcasts) go out with QoS 0;
                // cloud-to-device messages with up to the QoS granted here, at most 1.
                Some(Ok(())) => {
                    let qos = (*requested).min(1);
                    match known {
                        Some(at) => self.subscriptions[at].1 = qos,
                        None => self.subscriptions.push((filter.clone(), qos)),
                    }
                    granted.push(Some(qos));
                }
                Some(Err(e)) => {
                    tracing::warn!(device = %self.origin.device_name, filter = %Untrusted(filter), error = %e, "Subscribe failed");
                    granted.push(None);
                }
                None => granted.push(None),
            }
        }
        self.version.write(Outbound::SubAck { pkid, granted: &granted }, &mut self.io.wbuf);
    }

    async fn downlink(&mut self, notification: Option<Box<Notification>>) {
        match notification.map(|n| *n) {
            Some(Notification::Forward(f)) => {
                self.version.write(
                    Outbound::Publish {
                        topic: &f.publish.topic,
                        payload: f.publish.payload,
                        qos: 0,
                        pkid: 0,
                        dup: false,
                    },
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

impl<S> Session<S> {
    /// Writes a mailbox message with the QoS of the device's best matching subscription, or
    /// drops it when none matches.
    fn deliver(&mut self, delivery: Delivery) {
        let granted = self
            .subscriptions
            .iter()
            .filter(|(f, _)| mailbox::matches(f, &delivery.topic))
            .map(|(_, q)| *q)
            .max();
        let Some(granted) = granted else {
            delivery.tracker.set(DeliveryState::NotSubscribed);
            return;
        };
        let qos = delivery.qos.min(granted);
        if qos == 0 {
            self.version.write(
                Outbound::Publish {
                    topic: delivery.topic.as_bytes(),
                    payload: delivery.payload.clone(),
                    qos: 0,
                    pkid: 0,
                    dup: false,
                },
                &mut self.io.wbuf,
            );
            delivery.tracker.set(DeliveryState::Sent);
            return;
        }
        let pkid = self.next_pkid();
        self.version.write(
            Outbound::Publish {
                topic: delivery.topic.as_bytes(),
                payload: delivery.payload.clone(),
                qos: 1,
                pkid,
                dup: false,
            },
            &mut self.io.wbuf,
        );
        delivery.tracker.set(DeliveryState::Sent);
        self.unacked.push_back(Unacked { pkid, delivery, sent_at: Instant::now() });
    }

    /// Sends again, with DUP, every QoS 1 message whose PUBACK is overdue (MQTT 3.1.1).
    fn resend_due(&mut self) {
        let now = Instant::now();
        let retry = self.shared.limits.downlink_retry;
        while self.unacked.front().is_some_and(|u| u.sent_at + retry <= now) {
            let Some(mut u) = self.unacked.pop_front() else { break };
            self.version.write(
                Outbound::Publish {
                    topic: u.delivery.topic.as_bytes(),
                    payload: u.delivery.payload.clone(),
                    qos: 1,
                    pkid: u.pkid,
                    dup: true,
                },
                &mut self.io.wbuf,
            );
            u.sent_at = now;
            self.unacked.push_back(u);
        }
    }

    /// A packet id no unacknowledged message uses (at most [`MAX_UNACKED`] are).
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.unacked.iter().any(|u| u.pkid == self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// Hands a thing-model reply to the call waiting for it, matched by its Alink `id`.
    fn service_reply(&self, payload: &Bytes) {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let id = match &body["id"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return,
        };
        let (pk, dn) = (&self.origin.product_key, &self.origin.device_name);
        self.shared.calls.complete(CallKind::Service, pk, dn, &id, payload.clone());
    }
}

impl<S> Drop for Session<S> {
    /// Whatever the device did not get or acknowledge is reported lost: iotpipe keeps no state
    /// for an offline device (clean sessions only, docs/downlink.md).
    fn drop(&mut self) {
        for u in self.unacked.drain(..) {
            u.delivery.tracker.set(DeliveryState::DeviceOffline);
        }
        for d in self.inbox.close() {
            d.tracker.set(DeliveryState::DeviceOffline);
        }
    }
}

/// The oldest in-flight receipt's outcome; pending forever when none is in flight.
async fn front(inflight: &mut VecDeque<(Option<u16>, Receipt, Option<Reply>)>) -> Result<(), HandoffError> {
    match inflight.front_mut() {
        Some((_, receipt, _)) => receipt.await,
        None => std::future::pending().await,
    }
}

/// Fires at `at`; never without it. The timer is boxed and made only when a retry is due, so
/// that a session without unacknowledged messages does not carry one.
async fn retry(at: Option<Instant>) {
    match at {
        Some(at) => Box::pin(sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

/// The next router notification (`None` when the router closed the link); pending forever
/// without a link. Boxed: a notification is large (about 250 bytes) and would otherwise take
/// that room in every session's state.
///
/// rumqttd's `LinkRx::next` answers `Ok(None)` for a wake-up whose notifications an earlier
/// call already collected (several SUBACKs or forwards signalled at once): that is not a closed
/// link, so it waits for the next wake-up.
async fn next_downlink(link: &mut Option<Box<DeviceLink>>) -> Option<Box<Notification>> {
    match link {
        // rumqttd's future is boxed too, and made only for a session with a link.
        Some(link) => loop {
            match Box::pin(link.rx.next()).await {
                Ok(Some(notification)) => return Some(Box::new(notification)),
                Ok(None) => {}
                Err(_) => return None,
            }
        },
        None => std::future::pending().await,
    }
}

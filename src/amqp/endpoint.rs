//! The server's side of one consumer connection, in one task: protocol headers, SASL, open,
//! one session, one sending link, flow control, transfers and the receiver's dispositions.
//!
//! iotpipe serves consumers only, so the endpoint speaks the part of AMQP 1.0 a consumer uses and
//! refuses the rest with an error the client can read (a sending link, a second link, a second
//! session). The rare frames are fe2o3's types, decoded by its decoders and written by
//! serde_amqp; a transfer is written by hand from the stored record ([`super::wire`]). Nothing
//! passes between tasks: a message costs one encode into the write buffer, and whatever piled up
//! meanwhile leaves in one write.
//!
//! Flow control is exact: the link's credit and the session's window are known, so a message is
//! taken from the group only when it can be sent, and a receiver without credit holds nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp::types::definitions::{self, AmqpError, ConnectionError, Handle, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{self, DeliveryState, Source};
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open,
};
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::auth::ConsumerCredentials;
use super::sasl::ConsumerSasl;
use super::wire::{self, FRAME_AMQP, FRAME_SASL, HEADER_AMQP, HEADER_SASL};
use crate::logsafe::Untrusted;
use crate::queues::Outcome;
use crate::store::StoredMessage;

/// The largest frame a client may send. A consumer sends small frames (SASL, attach, flow,
/// disposition); this bounds what one connection can make the server buffer.
const MAX_FRAME_IN: u32 = 64 * 1024;
/// The largest frame the server sends, whatever the client allows.
const MAX_FRAME_OUT: u32 = 1 << 20;
/// Bytes waiting for the socket beyond which no further message is taken: a consumer that
/// reads slowly holds at most this (plus one message).
const WRITE_CAP: usize = 256 * 1024;
/// The session's incoming window: transfers a client could send (it gets no credit to).
const INCOMING_WINDOW: u32 = 2048;
/// How long closing handshakes may take before the socket is simply dropped.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a connection ended, for the log.
pub type Reason = &'static str;

const LOGIN_REFUSED: Reason = "login refused";

/// An error for the peer: condition and description.
pub fn error(condition: impl Into<definitions::ErrorCondition>, description: String) -> definitions::Error {
    definitions::Error::new(condition, Some(description), None)
}

/// What happened on the connection that the delivery loop acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Outcomes arrived: [`Endpoint::settled`] has them.
    Settled,
    /// The link may send (again): credit came, or the write buffer has room again.
    Credit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SaslHeader,
    SaslInit,
    AmqpHeader,
    Open,
    Opened,
}

/// The one session.
#[derive(Debug)]
struct Session {
    /// The client's channel number, to which frames of this session belong.
    remote_channel: u16,
    /// The server's channel number for it.
    channel: u16,
    next_outgoing_id: u32,
    /// From the client's begin and flows: what it may receive.
    remote_next_incoming_id: u32,
    remote_incoming_window: u32,
    /// The client's transfer numbering, echoed in flows.
    remote_next_outgoing_id: u32,
    /// Session-scoped delivery ids, widened so ranges compare across the wrap.
    next_delivery: u64,
}

impl Session {
    /// Transfer frames the client's window allows now.
    fn room(&self) -> u32 {
        self.remote_next_incoming_id
            .wrapping_add(self.remote_incoming_window)
            .wrapping_sub(self.next_outgoing_id)
    }

    /// A delivery id of the wire, widened next to the ids given out.
    fn widen(&self, id: u32) -> u64 {
        let behind = (self.next_delivery as u32).wrapping_sub(id);
        self.next_delivery.wrapping_sub(u64::from(behind))
    }
}

/// The sending link.
#[derive(Debug)]
struct Link<T> {
    handle: u32,
    remote_handle: u32,
    delivery_count: u32,
    credit: u32,
    drain: bool,
    /// The receiver asked for pre-settled deliveries (at most once).
    presettled: bool,
    /// Sent and not yet settled, by widened delivery id.
    unsettled: BTreeMap<u64, T>,
    /// Detached: by the client, or by the server.
    detached: bool,
    /// The client's detach arrived.
    remote_detached: bool,
}

/// A way the connection ends.
#[derive(Debug)]
enum Fatal {
    /// Tell the client (a close with this error), then end.
    Close(definitions::Error, Reason),
    /// End at once (the peer is gone, or the protocol allows no answer).
    Gone(Reason),
}

/// The consumer's side of a connection, once it is logged in and attached.
pub struct Endpoint<S, T> {
    read: ReadHalf<S>,
    write: WriteHalf<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    phase: Phase,
    /// The client's max-frame-size (capped).
    max_frame_out: usize,
    /// Something is written at least this often: half the client's idle timeout.
    heartbeat: Option<Duration>,
    last_write: Instant,
    session: Option<Session>,
    link: Option<Link<T>>,
    /// Handles and channels of links and sessions refused so far.
    next_handle: u32,
    next_channel: u16,
    /// The link's credit went up since the last [`Event::Credit`].
    credit_event: bool,
    settled: Vec<(T, Outcome)>,
    /// The client sent close: no more frames from it.
    remote_closed: bool,
    /// The server sent close.
    close_sent: bool,
    /// What the connection needs from outside: the SASL check, counters, logs.
    sasl: ConsumerSasl,
    credentials: Option<ConsumerCredentials>,
}

/// What a finished handshake gives: a logged-in client with an attached receiving link.
pub struct Accepted<S, T> {
    pub endpoint: Endpoint<S, T>,
    pub credentials: ConsumerCredentials,
}

impl<S, T> Endpoint<S, T>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    /// Runs the handshake until the client is logged in and has attached a receiving link, or
    /// `deadline` passes (then the socket is dropped). `None` when the connection ends before;
    /// every way out is logged.
    pub async fn accept(stream: S, sasl: ConsumerSasl, deadline: Instant) -> Option<Accepted<S, T>> {
        let (read, write) = tokio::io::split(stream);
        let mut endpoint = Endpoint {
            read,
            write,
            rbuf: BytesMut::with_capacity(1024),
            wbuf: BytesMut::with_capacity(1024),
            phase: Phase::SaslHeader,
            max_frame_out: wire::MIN_MAX_FRAME as usize,
            heartbeat: None,
            last_write: Instant::now(),
            session: None,
            link: None,
            next_handle: 0,
            next_channel: 0,
            credit_event: false,
            settled: Vec::new(),
            remote_closed: false,
            close_sent: false,
            sasl,
            credentials: None,
        };
        let peer = endpoint.sasl.peer;
        let handshake = async {
            while endpoint.link.is_none() {
                endpoint.io().await?;
            }
            Ok::<(), Fatal>(())
        };
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(())) => {}
            Ok(Err(fatal)) => {
                let reason = endpoint.fail(fatal).await;
                // A refused login has its own line already (with why), under its own limit.
                if reason == LOGIN_REFUSED {
                    return None;
                }
                if let Some(suppressed) = endpoint.sasl.logs.protocol.admit() {
                    tracing::warn!(%peer, reason, suppressed, "AMQP connection not opened");
                }
                return None;
            }
            Err(_) => {
                if let Some(suppressed) = endpoint.sasl.logs.protocol.admit() {
                    let stage = match (endpoint.phase, &endpoint.session) {
                        (Phase::Opened, Some(_)) => "attached no receiver link",
                        (Phase::Opened, None) => "began no session",
                        _ => "did not authenticate",
                    };
                    tracing::warn!(%peer, suppressed, "AMQP client {stage} in time");
                }
                return None;
            }
        }
        let credentials = endpoint.credentials.take()?;
        Some(Accepted { endpoint, credentials })
    }

    /// Sends what is written, ends with an error for the client where there is one; the reason.
    async fn fail(&mut self, fatal: Fatal) -> Reason {
        match fatal {
            Fatal::Gone(reason) => {
                // Whatever is written (a refused login's outcome, say) still goes out.
                let _ = tokio::time::timeout(CLOSE_WAIT, self.flush()).await;
                reason
            }
            Fatal::Close(error, reason) => {
                self.close_with(None, Some(error)).await;
                reason
            }
        }
    }

    /// Writes everything buffered.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.write.write_all_buf(&mut self.wbuf).await?;
        self.write.flush().await
    }

    /// Waits for the next event: reads, writes what is buffered, keeps the connection alive.
    /// Cancel-safe: what was read is kept, and events wait in the endpoint.
    ///
    /// # Errors
    /// The connection ended; the reason is for the log.
    pub async fn next_event(&mut self) -> Result<Event, Reason> {
        loop {
            if !self.settled.is_empty() {
                return Ok(Event::Settled);
            }
            if std::mem::take(&mut self.credit_event) {
                return Ok(Event::Credit);
            }
            if let Err(fatal) = self.io().await {
                return Err(self.fail(fatal).await);
            }
        }
    }

    /// One step of input or output.
    async fn io(&mut self) -> Result<(), Fatal> {
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(4096);
        }
        let beat = self.heartbeat.map(|period| self.last_write + period);
        tokio::select! {
            read = self.read.read_buf(&mut self.rbuf), if !self.remote_closed => match read {
                Ok(0) | Err(_) => Err(Fatal::Gone("connection closed")),
                Ok(_) => self.process(),
            },
            written = self.write.write(&self.wbuf), if !self.wbuf.is_empty() => match written {
                Ok(0) | Err(_) => Err(Fatal::Gone("connection lost")),
                Ok(n) => {
                    let full = self.wbuf.len() >= WRITE_CAP;
                    self.wbuf.advance(n);
                    // Room again: the link may send what it holds.
                    self.credit_event |= full && self.wbuf.len() < WRITE_CAP;
                    self.last_write = Instant::now();
                    Ok(())
                }
            },
            () = sleep_until(beat), if self.wbuf.is_empty() => {
                wire::put_empty_frame(&mut self.wbuf);
                Ok(())
            }
        }
    }

    /// Takes every whole header or frame read so far.
    fn process(&mut self) -> Result<(), Fatal> {
        loop {
            match self.phase {
                Phase::SaslHeader | Phase::AmqpHeader => {
                    if self.rbuf.len() < 8 {
                        return Ok(());
                    }
                    let header = self.rbuf.split_to(8);
                    self.on_header(&header)?;
                }
                _ => {
                    let frame = wire::next_frame(&mut self.rbuf, MAX_FRAME_IN).map_err(|e| {
                        Fatal::Close(error(ConnectionError::FramingError, e.to_string()), "framing error")
                    })?;
                    let Some(frame) = frame else { return Ok(()) };
                    self.on_frame(frame)?;
                    if self.remote_closed {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn on_header(&mut self, header: &[u8]) -> Result<(), Fatal> {
        if self.phase == Phase::SaslHeader {
            // Anything but SASL is answered with the header iotpipe speaks, then the socket
            // closes (the protocol's way to say "not this").
            self.wbuf.extend_from_slice(&HEADER_SASL);
            if header != HEADER_SASL {
                return Err(Fatal::Gone("the client did not ask for SASL"));
            }
            let mechanisms = sasl::Frame::Mechanisms(SaslMechanisms {
                sasl_server_mechanisms: Array::from(vec![Symbol::from("PLAIN")]),
            });
            self.put(FRAME_SASL, 0, &mechanisms);
            self.phase = Phase::SaslInit;
        } else {
            self.wbuf.extend_from_slice(&HEADER_AMQP);
            if header != HEADER_AMQP {
                return Err(Fatal::Gone("the client did not continue with AMQP after SASL"));
            }
            self.phase = Phase::Open;
        }
        Ok(())
    }

    /// Appends a frame. The performatives written here are fe2o3's own types, which serialize.
    fn put(&mut self, frame_type: u8, channel: u16, body: &impl serde::Serialize) {
        if let Err(e) = wire::put_frame(&mut self.wbuf, frame_type, channel, body) {
            tracing::error!(error = %e, "Could not encode an AMQP frame");
        }
    }

    fn on_frame(&mut self, mut frame: BytesMut) -> Result<(), Fatal> {
        let decode_error = |e: fe2o3_amqp::frames::Error| {
            Fatal::Close(error(AmqpError::DecodeError, format!("{e}")), "undecodable frame")
        };
        if self.phase == Phase::SaslInit {
            let init = match (sasl::FrameCodec {}).decode(&mut frame) {
                Ok(Some(sasl::Frame::Init(init))) => init,
                Ok(_) => return Err(Fatal::Gone("the client sent no SASL init")),
                Err(_) => return Err(Fatal::Gone("undecodable SASL frame")),
            };
            let credentials = self.sasl.check(init);
            let ok = credentials.is_some();
            self.credentials = credentials;
            let code = if ok { SaslCode::Ok } else { SaslCode::Auth };
            self.put(FRAME_SASL, 0, &sasl::Frame::Outcome(SaslOutcome { code, additional_data: None }));
            if !ok {
                return Err(Fatal::Gone(LOGIN_REFUSED));
            }
            self.phase = Phase::AmqpHeader;
            return Ok(());
        }
        if frame.get(1) != Some(&FRAME_AMQP) {
            return Err(Fatal::Close(
                error(ConnectionError::FramingError, "a SASL frame after SASL".into()),
                "framing error",
            ));
        }
        if self.phase == Phase::Opened {
            // Nearly every frame from a consumer accepts a message: read without the decoder.
            if let Some(accept) = wire::read_accept(&frame) {
                if self.session.as_ref().is_some_and(|s| s.remote_channel == accept.channel)
                    && accept.receiver
                {
                    let state = || Some(DeliveryState::Accepted(messaging::Accepted {}));
                    self.settle_range(accept.first, accept.last, accept.settled, Outcome::Accepted, state);
                }
                return Ok(());
            }
        }
        let frame = (FrameDecoder {}).decode(&mut frame).map_err(decode_error)?;
        let Some(frame) = frame else { return Ok(()) };
        let channel = frame.channel;
        if self.phase == Phase::Open {
            let FrameBody::Open(open) = frame.body else {
                return Err(Fatal::Gone("the client's first frame was not open"));
            };
            self.on_open(&open);
            return Ok(());
        }
        match frame.body {
            FrameBody::Empty => Ok(()),
            FrameBody::Open(_) => Err(Fatal::Close(
                error(AmqpError::IllegalState, "the connection is open already".into()),
                "a second open",
            )),
            FrameBody::Close(close) => {
                self.remote_closed = true;
                if let Some(e) = close.error {
                    tracing::debug!(error = %Untrusted(&format!("{e:?}")), "The client closed with an error");
                }
                if !self.close_sent {
                    self.close_sent = true;
                    self.put(FRAME_AMQP, 0, &Close { error: None });
                }
                Err(Fatal::Gone("connection closed"))
            }
            FrameBody::Begin(begin) => {
                self.on_begin(channel, &begin);
                Ok(())
            }
            body => {
                let Some(session) = &self.session else { return Ok(()) };
                if session.remote_channel != channel {
                    // A refused session's frames (its end, say): nothing to do.
                    return Ok(());
                }
                self.on_session_frame(body)
            }
        }
    }

    fn on_open(&mut self, open: &Open) {
        self.max_frame_out = open.max_frame_size.0.clamp(wire::MIN_MAX_FRAME, MAX_FRAME_OUT) as usize;
        // Frames at least twice per the client's idle timeout, as the spec asks.
        self.heartbeat = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms) / 2).max(Duration::from_millis(100)));
        // No idle timeout is asked of the client: TCP keepalive finds dead peers instead.
        let reply = Open {
            container_id: "iotpipe".into(),
            hostname: None,
            max_frame_size: MaxFrameSize(MAX_FRAME_IN),
            channel_max: ChannelMax(255),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.put(FRAME_AMQP, 0, &reply);
        self.phase = Phase::Opened;
    }

    fn on_begin(&mut self, channel: u16, begin: &Begin) {
        let ours = self.next_channel;
        self.next_channel = self.next_channel.saturating_add(1);
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 0,
            incoming_window: INCOMING_WINDOW,
            outgoing_window: u32::MAX,
            handle_max: Handle(255),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.put(FRAME_AMQP, ours, &reply);
        if self.session.is_some() {
            self.sasl.stats.links_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let end = End {
                error: Some(error(
                    AmqpError::NotAllowed,
                    "iotpipe accepts one session per connection".into(),
                )),
            };
            self.put(FRAME_AMQP, ours, &end);
            return;
        }
        self.session = Some(Session {
            remote_channel: channel,
            channel: ours,
            next_outgoing_id: 0,
            remote_next_incoming_id: 0,
            remote_incoming_window: begin.incoming_window,
            remote_next_outgoing_id: begin.next_outgoing_id,
            next_delivery: 0,
        });
    }

    fn on_session_frame(&mut self, body: FrameBody) -> Result<(), Fatal> {
        match body {
            FrameBody::Attach(attach) => {
                self.on_attach(attach);
                Ok(())
            }
            FrameBody::Flow(flow) => {
                self.on_flow(&flow);
                Ok(())
            }
            FrameBody::Disposition(disposition) => {
                self.on_disposition(&disposition);
                Ok(())
            }
            FrameBody::Detach(detach) => {
                let Some(link) = &mut self.link else { return Ok(()) };
                if detach.handle.0 != link.remote_handle || link.remote_detached {
                    // A refused link's answer.
                    return Ok(());
                }
                link.remote_detached = true;
                if link.detached {
                    // The answer to the server's detach.
                    return Ok(());
                }
                link.detached = true;
                let reply = Detach { handle: Handle(link.handle), closed: true, error: None };
                let channel = self.session.as_ref().map_or(0, |s| s.channel);
                self.put(FRAME_AMQP, channel, &reply);
                Err(Fatal::Gone("link detached"))
            }
            FrameBody::End(_) => {
                let channel = self.session.as_ref().map_or(0, |s| s.channel);
                self.put(FRAME_AMQP, channel, &End { error: None });
                Err(Fatal::Gone("session ended"))
            }
            FrameBody::Transfer { .. } => Err(Fatal::Close(
                error(AmqpError::NotAllowed, "iotpipe accepts no messages from consumers".into()),
                "a transfer from a consumer",
            )),
            _ => Ok(()),
        }
    }

    fn on_attach(&mut self, mut attach: Attach) {
        let Some(session) = &self.session else { return };
        let channel = session.channel;
        let handle = self.next_handle;
        self.next_handle = self.next_handle.saturating_add(1);
        let remote_handle = attach.handle.0;
        // A receiver without a source gets one: a null source would read as a refused link.
        if attach.role == Role::Receiver && attach.source.is_none() {
            attach.source = Some(Box::new(Source::builder().address("default").build()));
        }
        let refusal = match (&attach.role, &self.link) {
            (Role::Sender, _) => Some("iotpipe accepts only a receiver link"),
            (Role::Receiver, Some(_)) => Some("iotpipe accepts one receiver link per connection"),
            (Role::Receiver, None) => None,
        };
        let presettled = attach.snd_settle_mode == SenderSettleMode::Settled;
        let reply = Attach {
            name: attach.name,
            handle: Handle(handle),
            role: match attach.role {
                Role::Sender => Role::Receiver,
                Role::Receiver => Role::Sender,
            },
            snd_settle_mode: if presettled { SenderSettleMode::Settled } else { SenderSettleMode::Unsettled },
            rcv_settle_mode: attach.rcv_settle_mode,
            source: attach.source,
            target: attach.target,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (attach.role == Role::Receiver).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.put(FRAME_AMQP, channel, &reply);
        if let Some(description) = refusal {
            self.sasl.stats.links_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(peer = %self.sasl.peer, "Refused a link: {description}");
            let detach = Detach {
                handle: Handle(handle),
                closed: true,
                error: Some(error(AmqpError::NotAllowed, description.into())),
            };
            self.put(FRAME_AMQP, channel, &detach);
            return;
        }
        self.link = Some(Link {
            handle,
            remote_handle,
            delivery_count: 0,
            credit: 0,
            drain: false,
            presettled,
            unsettled: BTreeMap::new(),
            detached: false,
            remote_detached: false,
        });
    }

    fn on_flow(&mut self, flow: &Flow) {
        let Some(session) = &mut self.session else { return };
        session.remote_next_incoming_id = flow.next_incoming_id.unwrap_or(0);
        session.remote_incoming_window = flow.incoming_window;
        session.remote_next_outgoing_id = flow.next_outgoing_id;
        let mut echo = flow.echo;
        if let (Some(link), Some(handle)) = (&mut self.link, &flow.handle) {
            if handle.0 == link.remote_handle {
                // The receiver's view of the count may lag behind what was sent since.
                let limit = flow.delivery_count.unwrap_or(0).wrapping_add(flow.link_credit.unwrap_or(0));
                let credit = limit.wrapping_sub(link.delivery_count);
                link.credit = if credit > u32::MAX / 2 { 0 } else { credit };
                link.drain = flow.drain;
                echo |= flow.drain && link.credit == 0;
            }
        }
        if self.credit() > 0 {
            self.credit_event = true;
        }
        if echo {
            self.put_flow();
        }
    }

    /// The server's flow state of the session and the link.
    fn put_flow(&mut self) {
        let Some(session) = &self.session else { return };
        let link = self.link.as_ref();
        let flow = Flow {
            next_incoming_id: Some(session.remote_next_outgoing_id),
            incoming_window: INCOMING_WINDOW,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: u32::MAX,
            handle: link.map(|l| Handle(l.handle)),
            delivery_count: link.map(|l| l.delivery_count),
            link_credit: link.map(|l| l.credit),
            available: link.map(|_| 0),
            drain: link.is_some_and(|l| l.drain),
            echo: false,
            properties: None,
        };
        let channel = session.channel;
        self.put(FRAME_AMQP, channel, &flow);
    }

    fn on_disposition(&mut self, d: &Disposition) {
        if d.role != Role::Receiver {
            return;
        }
        let outcome = match &d.state {
            Some(DeliveryState::Accepted(_)) => Outcome::Accepted,
            Some(DeliveryState::Rejected(_)) => Outcome::Rejected,
            Some(DeliveryState::Released(_)) => Outcome::Released,
            Some(DeliveryState::Modified(m)) => {
                Outcome::Modified { undeliverable_here: m.undeliverable_here == Some(true) }
            }
            // Settled without an outcome: the source's default outcome, released.
            None if d.settled => Outcome::Released,
            // `received`, or a transactional state (not offered): not an outcome yet.
            _ => return,
        };
        self.settle_range(d.first, d.last, d.settled, outcome, || d.state.clone());
    }

    /// Settles the deliveries `first..=last` (the receiver's ids) with `outcome`; a receiver
    /// that settles second gets the server's settlement, with `state`.
    fn settle_range(
        &mut self,
        first_id: u32,
        last_id: Option<u32>,
        settled: bool,
        outcome: Outcome,
        state: impl FnOnce() -> Option<DeliveryState>,
    ) {
        let (Some(session), Some(link)) = (&self.session, &mut self.link) else { return };
        let first = session.widen(first_id);
        let last = session.widen(last_id.unwrap_or(first_id));
        if last < first {
            return;
        }
        while let Some(key) = link.unsettled.range(first..=last).next().map(|(k, _)| *k) {
            if let Some(tag) = link.unsettled.remove(&key) {
                self.settled.push((tag, outcome));
            }
        }
        if !settled {
            // The receiver settles second: the server settles first, with the outcome it took.
            let reply = Disposition {
                role: Role::Sender,
                first: first_id,
                last: last_id,
                settled: true,
                state: state(),
                batchable: false,
            };
            let channel = session.channel;
            self.put(FRAME_AMQP, channel, &reply);
        }
    }

    /// Deliveries the link may send now (credit and session window).
    pub fn credit(&self) -> u32 {
        match (&self.link, &self.session) {
            (Some(link), Some(session)) if !link.detached => link.credit.min(session.room()),
            _ => 0,
        }
    }

    /// Whether `message` may be sent now: credit, the session's window for all its frames,
    /// and room in the write buffer.
    pub fn can_send(&self, message: &StoredMessage) -> bool {
        let Some(session) = &self.session else { return false };
        self.writable()
            && self.credit() > 0
            && session.room() as usize >= wire::frames_needed(message, self.max_frame_out)
    }

    /// Whether the write buffer has room for more.
    pub fn writable(&self) -> bool {
        self.wbuf.len() < WRITE_CAP
    }

    /// Sends `message`; its outcome comes back with `tag`. Call only when [`Self::can_send`].
    pub fn send(&mut self, tag: T, message: &StoredMessage) {
        let (Some(link), Some(session)) = (&mut self.link, &mut self.session) else { return };
        let id = session.next_delivery;
        let t = wire::Transfer {
            channel: session.channel,
            handle: link.handle,
            delivery_id: id as u32,
            settled: link.presettled,
        };
        let frames = wire::put_transfer(&mut self.wbuf, t, message, self.max_frame_out);
        session.next_delivery = id.wrapping_add(1);
        session.next_outgoing_id = session.next_outgoing_id.wrapping_add(frames as u32);
        link.delivery_count = link.delivery_count.wrapping_add(1);
        link.credit = link.credit.saturating_sub(1);
        if link.presettled {
            // At most once, as the receiver asked: done once written.
            self.settled.push((tag, Outcome::Accepted));
        } else {
            link.unsettled.insert(id, tag);
        }
    }

    /// After sending what was at hand: a drain request uses up the credit left, and the
    /// receiver hears so.
    pub fn drained(&mut self) {
        let Some(link) = &mut self.link else { return };
        if !link.drain || link.credit == 0 {
            return;
        }
        link.delivery_count = link.delivery_count.wrapping_add(link.credit);
        link.credit = 0;
        self.put_flow();
        if let Some(link) = &mut self.link {
            link.drain = false;
        }
    }

    /// Whether the receiver asked to drain the credit it has.
    pub fn draining(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.drain && l.credit > 0)
    }

    /// Outcomes that arrived, to be handed on; the buffer is kept for the next ones.
    pub fn settled(&mut self) -> std::vec::Drain<'_, (T, Outcome)> {
        self.settled.drain(..)
    }

    /// Ends the connection: detaches the link and closes, both with `error` for the client, and
    /// waits a little for the client's answers before dropping the socket. The close carries the
    /// error too: a client library may answer the detach by itself and see the close first.
    pub async fn close(&mut self, error: Option<definitions::Error>) {
        self.close_with(error.clone(), error).await;
    }

    async fn close_with(
        &mut self,
        link_error: Option<definitions::Error>,
        error: Option<definitions::Error>,
    ) {
        let channel = self.session.as_ref().map(|s| s.channel);
        if let (Some(channel), Some(link)) = (channel, &mut self.link) {
            if !link.detached {
                link.detached = true;
                let detach = Detach { handle: Handle(link.handle), closed: true, error: link_error };
                self.put(FRAME_AMQP, channel, &detach);
            }
        }
        // A detach with an error is read before the connection closes: the client answers it.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while self.link.as_ref().is_some_and(|l| !l.remote_detached) && !self.remote_closed {
                if self.io().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if !self.close_sent && self.phase == Phase::Opened {
            self.close_sent = true;
            self.put(FRAME_AMQP, 0, &Close { error });
        }
        // The client answers with its close; then (or at the deadline) the socket drops.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while !self.remote_closed && self.close_sent {
                if self.io().await.is_err() {
                    break;
                }
            }
            let _ = self.flush().await;
        })
        .await;
    }
}

/// Sleeps until `at`; forever when there is no `at`.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

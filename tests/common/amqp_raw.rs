//! AMQP 1.0 frame by frame, for tests that need what a client library hides (drain answers,
//! settle modes, refused sessions, bad frames) and for the AMQP fuzz target: performatives are
//! fe2o3's types, encoded by serde_amqp and decoded by fe2o3's frame decoders.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
use fe2o3_amqp::frames::sasl::Frame as Sasl;
use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::Source;
use fe2o3_amqp::types::performatives::{Attach, Begin, ChannelMax, Flow, MaxFrameSize, Open};
use fe2o3_amqp::types::primitives::{Binary, Symbol};
use fe2o3_amqp::types::sasl::SaslInit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::WAIT;

pub const HEADER_SASL: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
pub const HEADER_AMQP: &[u8; 8] = b"AMQP\x00\x01\x00\x00";

/// Appends one frame on `channel`: size, doff 2, `frame_type`, then `body` serialized.
pub fn frame_on(out: &mut Vec<u8>, frame_type: u8, channel: u16, body: &impl serde::Serialize) {
    let body = serde_amqp::to_vec(body).unwrap();
    out.extend_from_slice(&u32::try_from(body.len() + 8).unwrap().to_be_bytes());
    out.push(2);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&body);
}

/// An AMQP frame on channel 0.
pub fn frame(out: &mut Vec<u8>, body: &impl serde::Serialize) {
    frame_on(out, 0, 0, body);
}

/// The SASL PLAIN login of `client_id` to `group`, the AMQP header and an open.
pub fn login_and_open(client_id: &str, group: &str) -> Vec<u8> {
    let (username, password) = super::amqp::login(client_id, group, iotpipe::sign::SignMethod::HmacSha1);
    let mut out = HEADER_SASL.to_vec();
    let response = [b"\0", username.as_bytes(), b"\0", password.as_bytes()].concat();
    let init = SaslInit {
        mechanism: Symbol::from("PLAIN"),
        initial_response: Some(Binary::from(response)),
        hostname: None,
    };
    frame_on(&mut out, 1, 0, &Sasl::Init(init));
    out.extend_from_slice(HEADER_AMQP);
    let open = Open {
        container_id: client_id.into(),
        hostname: None,
        max_frame_size: MaxFrameSize(4096),
        channel_max: ChannelMax(7),
        idle_time_out: Some(60_000),
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    frame(&mut out, &open);
    out
}

pub fn begin() -> Begin {
    Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 100,
        outgoing_window: 100,
        handle_max: Handle(7),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// A receiver link's attach, handle 0.
pub fn attach_receiver(rcv_settle_mode: ReceiverSettleMode) -> Attach {
    Attach {
        name: "rx".into(),
        handle: Handle(0),
        role: Role::Receiver,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode,
        source: Some(Box::new(Source::builder().address("default").build())),
        target: None,
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// Credit for the link of handle 0, which has received `delivered` messages.
pub fn credit(delivered: u32, credit: u32, drain: bool) -> Flow {
    Flow {
        next_incoming_id: Some(delivered),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(Handle(0)),
        delivery_count: Some(delivered),
        link_credit: Some(credit),
        available: None,
        drain,
        echo: false,
        properties: None,
    }
}

/// A client that writes bytes and reads the server's frames one by one.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self { stream: TcpStream::connect(addr).await.unwrap(), buf: BytesMut::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The server's next AMQP frame (headers and SASL frames skipped), with its channel; `None`
    /// once the server closed the socket. Panics after WAIT.
    pub async fn next(&mut self) -> Option<(u16, FrameBody)> {
        tokio::time::timeout(WAIT, async {
            loop {
                if self.buf.starts_with(b"AMQP") && self.buf.len() >= 8 {
                    self.buf.advance(8);
                    continue;
                }
                if self.buf.len() >= 8 {
                    let size = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                    if self.buf.len() >= size {
                        let mut frame = self.buf.split_to(size);
                        frame.advance(4);
                        if frame[1] == 1 {
                            continue;
                        }
                        let f = (FrameDecoder {}).decode(&mut frame).unwrap().unwrap();
                        return Some((f.channel, f.body));
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server said nothing in time")
    }

    /// Frames until one `pick` returns something for; panics if the socket closes first.
    pub async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(u16, &FrameBody) -> Option<T>) -> T {
        loop {
            let Some((channel, body)) = self.next().await else { panic!("closed before {what}") };
            if let Some(t) = pick(channel, &body) {
                return t;
            }
        }
    }

    /// Reads until the server closes the socket; the frames it sent meanwhile.
    pub async fn until_closed(&mut self) -> Vec<FrameBody> {
        let mut frames = Vec::new();
        while let Some((_, body)) = self.next().await {
            frames.push(body);
        }
        frames
    }
}

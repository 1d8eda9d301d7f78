//! MQTT 3.1.1 and 5 on one port: rumqttc's codecs behind one small packet vocabulary.
//!
//! The session layer speaks [`Inbound`] and [`Outbound`]; this file maps them to the v4 or v5
//! packet types of `rumqttc::mqttbytes`, chosen by the protocol level of the CONNECT.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, v4, QoS};
use rumqttc::v5::mqttbytes::{self as mqttbytes5, v5, QoS as QoS5};

/// MQTT protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// A packet from a device, reduced to what the session layer needs.
#[derive(Debug)]
pub enum Inbound {
    /// CONNECT.
    Connect(ConnectPacket),
    /// PUBLISH.
    Publish(PublishPacket),
    /// PUBACK of a QoS 1 downlink, with its packet id.
    PubAck(u16),
    /// PUBREC, PUBREL or PUBCOMP: QoS 2 flow, which iotpipe refuses.
    QoS2Flow,
    /// SUBSCRIBE: packet id and (filter, requested QoS) pairs.
    Subscribe { pkid: u16, filters: Vec<(String, u8)> },
    /// UNSUBSCRIBE.
    Unsubscribe { pkid: u16, filters: Vec<String> },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect,
    /// A packet only a server sends (CONNACK, SUBACK, ...), or AUTH.
    Unexpected(&'static str),
    /// A packet the codec could read but that breaks a MUST of the spec on its encoding (a topic
    /// that is not UTF-8): MQTT 5 calls that malformed (0x81), not a protocol error.
    Malformed(&'static str),
}

/// The fields of CONNECT the session layer uses.
#[derive(Debug)]
pub struct ConnectPacket {
    /// MQTT client identifier.
    pub client_id: String,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Whether a Last Will was given (ignored: the platform has no Will).
    pub has_will: bool,
    /// MQTT 5 Receive Maximum: QoS 1 messages the client accepts unacknowledged at once.
    pub receive_maximum: Option<u16>,
}

/// The fields of PUBLISH the session layer uses.
#[derive(Debug)]
pub struct PublishPacket {
    /// Topic name, UTF-8 checked by the codec.
    pub topic: String,
    /// Payload bytes (shares the read buffer; no copy).
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// MQTT 5 topic alias present (iotpipe advertises none, so any alias is an error).
    pub topic_alias: bool,
}

/// CONNACK outcomes, mapped to each version's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAckCode {
    /// Accepted.
    Accepted,
    /// v3.1.1 1 / v5 0x84.
    UnsupportedVersion,
    /// v3.1.1 2 / v5 0x85.
    BadClientId,
    /// v3.1.1 4 / v5 0x86.
    BadCredentials,
    /// v3.1.1 5 / v5 0x87.
    NotAuthorized,
    /// v3.1.1 3 / v5 0x88 (or 0x89 busy).
    Unavailable,
    /// Keep-alive outside the allowed range: v3.1.1 2 (the closest code) / v5 0x82.
    BadKeepAlive,
}

/// PUBACK outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubAckCode {
    /// 0x00.
    Success,
    /// 0x87: the topic is not the device's own (MQTT 5 only).
    NotAuthorized,
    /// 0x80: storing failed (MQTT 5 only; 3.1.1 is disconnected instead).
    Unspecified,
}

/// DISCONNECT reasons the server sends (MQTT 5 only; 3.1.1 just closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCode {
    /// 0x81.
    MalformedPacket,
    /// 0x82.
    ProtocolError,
    /// 0x87.
    NotAuthorized,
    /// 0x8B.
    ServerShuttingDown,
    /// 0x8D.
    KeepAliveTimeout,
    /// 0x8E.
    SessionTakenOver,
    /// 0x90.
    TopicNameInvalid,
    /// 0x94.
    TopicAliasInvalid,
    /// 0x95.
    PacketTooLarge,
    /// 0x98: e.g. the device was disabled.
    AdministrativeAction,
    /// 0x9B.
    QoSNotSupported,
    /// 0x80: the pipeline failed.
    UnspecifiedError,
}

impl DisconnectCode {
    /// The reason string sent with the DISCONNECT.
    pub fn reason(self) -> &'static str {
        match self {
            DisconnectCode::MalformedPacket => "malformed packet",
            DisconnectCode::ProtocolError => "protocol error",
            DisconnectCode::NotAuthorized => "topic not allowed for this device",
            DisconnectCode::ServerShuttingDown => "server shutting down",
            DisconnectCode::KeepAliveTimeout => "keep-alive timeout",
            DisconnectCode::SessionTakenOver => "another connection of this device took over",
            DisconnectCode::TopicNameInvalid => "invalid topic name",
            DisconnectCode::TopicAliasInvalid => "topic aliases are not supported",
            DisconnectCode::PacketTooLarge => "payload exceeds the size limit",
            DisconnectCode::AdministrativeAction => "device disabled",
            DisconnectCode::QoSNotSupported => "QoS 2 is not supported",
            DisconnectCode::UnspecifiedError => "the message could not be stored",
        }
    }
}

/// A packet to a device.
#[derive(Debug)]
pub enum Outbound<'a> {
    /// CONNACK; for MQTT 5 it also announces the server's limits.
    ConnAck { code: ConnAckCode, max_packet_size: u32 },
    /// PUBACK.
    PubAck { pkid: u16, code: PubAckCode },
    /// SUBACK: per filter the granted QoS, or `None` for refused.
    SubAck { pkid: u16, granted: &'a [Option<u8>] },
    /// UNSUBACK for `count` filters.
    UnsubAck { pkid: u16, count: usize },
    /// PINGRESP.
    PingResp,
    /// A PUBLISH to the device: QoS 0 (`pkid` 0), or QoS 1 with its packet id and, on a
    /// retransmission, the DUP flag.
    Publish { topic: &'a [u8], payload: Bytes, qos: u8, pkid: u16, dup: bool },
    /// DISCONNECT (MQTT 5).
    Disconnect(DisconnectCode),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The first packet was not a CONNECT, or named an unknown protocol.
    #[error("not an MQTT 3.1.1 or 5 CONNECT: {0}")]
    NotConnect(&'static str),
    /// The packet is larger than the configured limit.
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Malformed bytes.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Reads the protocol level of a CONNECT at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed.
///
/// # Errors
/// When the bytes are not a CONNECT of MQTT 3.1.1 or 5.
pub fn detect(buf: &[u8]) -> Result<Option<Version>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != 0x10 {
        return Err(CodecError::NotConnect("first packet is not CONNECT"));
    }
    // Remaining length: 1 to 4 bytes of 7-bit groups.
    let mut pos = 1;
    loop {
        let Some(&b) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        if pos > 4 {
            return Err(CodecError::NotConnect("malformed remaining length"));
        }
    }
    let (Some(&hi), Some(&lo)) = (buf.get(pos), buf.get(pos + 1)) else {
        return Ok(None);
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    let Some(name) = buf.get(pos + 2..pos + 2 + name_len) else {
        return Ok(None);
    };
    if name != b"MQTT" {
        return Err(CodecError::NotConnect("protocol name is not MQTT (MQTT 3.1 is not supported)"));
    }
    match buf.get(pos + 2 + name_len) {
        None => Ok(None),
        Some(4) => Ok(Some(Version::V311)),
        Some(5) => Ok(Some(Version::V5)),
        Some(_) => Err(CodecError::NotConnect("protocol level is neither 4 (3.1.1) nor 5")),
    }
}

fn qos_u8(q: QoS) -> u8 {
    q as u8
}

fn qos5_u8(q: QoS5) -> u8 {
    q as u8
}

fn map_error(e: mqttbytes::Error, limit: usize) -> Option<CodecError> {
    match e {
        mqttbytes::Error::InsufficientBytes(_) => None,
        mqttbytes::Error::PayloadSizeLimitExceeded(size) => Some(CodecError::TooLarge { size, limit }),
        other => Some(CodecError::Malformed(other.to_string())),
    }
}

fn map_error_v5(e: mqttbytes5::Error, limit: usize) -> Option<CodecError> {
    match e {
        mqttbytes5::Error::InsufficientBytes(_) => None,
        mqttbytes5::Error::PayloadSizeLimitExceeded { pkt_size, .. } => {
            Some(CodecError::TooLarge { size: pkt_size, limit })
        }
        other => Some(CodecError::Malformed(other.to_string())),
    }
}

impl Version {
    /// Reads one packet from `buf`, or `Ok(None)` when it holds no whole packet yet.
    ///
    /// # Errors
    /// Malformed or oversized packets.
    pub fn read(self, buf: &mut BytesMut, max_packet: usize) -> Result<Option<Inbound>, CodecError> {
        match self {
            Version::V311 => match v4::Packet::read(buf, max_packet) {
                Ok(p) => Ok(Some(from_v4(p))),
                Err(e) => map_error(e, max_packet).map_or(Ok(None), Err),
            },
            Version::V5 => {
                // A v5 DISCONNECT may have no body (reason 0x00); rumqttc's reader refuses that.
                if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
                    let _ = buf.split_to(2);
                    return Ok(Some(Inbound::Disconnect));
                }
                let limit = u32::try_from(max_packet).unwrap_or(u32::MAX);
                match v5::Packet::read(buf, Some(limit)) {
                    Ok(p) => Ok(Some(from_v5(p))),
                    Err(e) => map_error_v5(e, max_packet).map_or(Ok(None), Err),
                }
            }
        }
    }

    /// Appends `packet` to `out`.
    pub fn write(self, packet: Outbound<'_>, out: &mut BytesMut) {
        let result = match self {
            Version::V311 => {
                to_v4(packet).map(|p| p.write(out, usize::MAX).map(drop).map_err(|e| e.to_string()))
            }
            Version::V5 => to_v5(packet).map(|p| p.write(out, None).map(drop).map_err(|e| e.to_string())),
        };
        if let Some(Err(e)) = result {
            // Only reachable with a topic longer than 65,535 bytes, which the ACL never lets through.
            tracing::error!(error = %e, "Failed to encode an MQTT packet");
        }
    }
}

fn from_v4(p: v4::Packet) -> Inbound {
    match p {
        v4::Packet::Connect(c) => Inbound::Connect(ConnectPacket {
            has_will: c.last_will.is_some(),
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.map(|l| l.password),
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            receive_maximum: None,
        }),
        v4::Packet::Publish(p) => Inbound::Publish(PublishPacket {
            topic: p.topic,
            payload: p.payload,
            qos: qos_u8(p.qos),
            pkid: p.pkid,
            topic_alias: false,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(_) | v4::Packet::PubRel(_) | v4::Packet::PubComp(_) => Inbound::QoS2Flow,
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| (f.path, qos_u8(f.qos))).collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe { pkid: u.pkid, filters: u.topics },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect,
        v4::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v4::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(p: v5::Packet) -> Inbound {
    match p {
        v5::Packet::Connect(c, will, login) => Inbound::Connect(ConnectPacket {
            has_will: will.is_some(),
            username: login.as_ref().map(|l| l.username.clone()),
            password: login.map(|l| l.password),
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            receive_maximum: c.properties.and_then(|p| p.receive_maximum),
        }),
        v5::Packet::Publish(p) => {
            let topic_alias = p.properties.as_ref().is_some_and(|pr| pr.topic_alias.is_some());
            match String::from_utf8(p.topic.to_vec()) {
                Ok(topic) => Inbound::Publish(PublishPacket {
                    topic,
                    payload: p.payload,
                    qos: qos5_u8(p.qos),
                    pkid: p.pkid,
                    topic_alias,
                }),
                Err(_) => Inbound::Malformed("PUBLISH with a topic that is not UTF-8"),
            }
        }
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(_) | v5::Packet::PubRel(_) | v5::Packet::PubComp(_) => Inbound::QoS2Flow,
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| (f.path, qos5_u8(f.qos))).collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe { pkid: u.pkid, filters: u.filters },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(_) => Inbound::Disconnect,
        v5::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Inbound::Unexpected("PINGRESP"),
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH (enhanced authentication is not supported)"),
    }
}

fn to_v4(p: Outbound<'_>) -> Option<v4::Packet> {
    use v4::ConnectReturnCode as C;
    Some(match p {
        Outbound::ConnAck { code, .. } => v4::Packet::ConnAck(v4::ConnAck {
            session_present: false,
            code: match code {
                ConnAckCode::Accepted => C::Success,
                ConnAckCode::UnsupportedVersion => C::RefusedProtocolVersion,
                ConnAckCode::BadClientId | ConnAckCode::BadKeepAlive => C::BadClientId,
                ConnAckCode::BadCredentials => C::BadUserNamePassword,
                ConnAckCode::NotAuthorized => C::NotAuthorized,
                ConnAckCode::Unavailable => C::ServiceUnavailable,
            },
        }),
        Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck { pkid }),
        Outbound::SubAck { pkid, granted } => v4::Packet::SubAck(v4::SubAck {
            pkid,
            return_codes: granted
                .iter()
                .map(|g| match g {
                    Some(q) => v4::SubscribeReasonCode::Success(qos_from(*q)),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck { pkid }),
        Outbound::PingResp => v4::Packet::PingResp,
        Outbound::Publish { topic, payload, qos, pkid, dup } => {
            let mut p = v4::Publish::from_bytes(String::from_utf8_lossy(topic), qos_from(qos), payload);
            p.pkid = pkid;
            p.dup = dup;
            v4::Packet::Publish(p)
        }
        Outbound::Disconnect(_) => return None,
    })
}

fn to_v5(p: Outbound<'_>) -> Option<v5::Packet> {
    use v5::ConnectReturnCode as C;
    Some(match p {
        Outbound::ConnAck { code, max_packet_size } => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: match code {
                ConnAckCode::Accepted => C::Success,
                ConnAckCode::UnsupportedVersion => C::UnsupportedProtocolVersion,
                ConnAckCode::BadClientId => C::ClientIdentifierNotValid,
                ConnAckCode::BadCredentials => C::BadUserNamePassword,
                ConnAckCode::NotAuthorized => C::NotAuthorized,
                ConnAckCode::Unavailable => C::ServerUnavailable,
                ConnAckCode::BadKeepAlive => C::ProtocolError,
            },
            properties: (code == ConnAckCode::Accepted).then(|| v5::ConnAckProperties {
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(max_packet_size),
                topic_alias_max: Some(0),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                session_expiry_interval: None,
                receive_max: None,
                assigned_client_identifier: None,
                reason_string: None,
                user_properties: Vec::new(),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }),
        Outbound::PubAck { pkid, code } => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: match code {
                PubAckCode::Success => v5::PubAckReason::Success,
                PubAckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
                PubAckCode::Unspecified => v5::PubAckReason::UnspecifiedError,
            },
            properties: None,
        }),
        Outbound::SubAck { pkid, granted } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: granted
                .iter()
                .map(|g| match g {
                    Some(q) => v5::SubscribeReasonCode::Success(qos5_from(*q)),
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
            properties: None,
        }),
        Outbound::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outbound::Publish { topic, payload, qos, pkid, dup } => v5::Packet::Publish(v5::Publish {
            dup,
            qos: qos5_from(qos),
            retain: false,
            topic: Bytes::copy_from_slice(topic),
            pkid,
            payload,
            properties: None,
        }),
        Outbound::Disconnect(code) => {
            use v5::DisconnectReasonCode as D;
            v5::Packet::Disconnect(v5::Disconnect {
                reason_code: match code {
                    DisconnectCode::MalformedPacket => D::MalformedPacket,
                    DisconnectCode::ProtocolError => D::ProtocolError,
                    DisconnectCode::NotAuthorized => D::NotAuthorized,
                    DisconnectCode::ServerShuttingDown => D::ServerShuttingDown,
                    DisconnectCode::KeepAliveTimeout => D::KeepAliveTimeout,
                    DisconnectCode::SessionTakenOver => D::SessionTakenOver,
                    DisconnectCode::TopicNameInvalid => D::TopicNameInvalid,
                    DisconnectCode::TopicAliasInvalid => D::TopicAliasInvalid,
                    DisconnectCode::PacketTooLarge => D::PacketTooLarge,
                    DisconnectCode::AdministrativeAction => D::AdministrativeAction,
                    DisconnectCode::QoSNotSupported => D::QoSNotSupported,
                    DisconnectCode::UnspecifiedError => D::UnspecifiedError,
                },
                // Always with a reason string: it tells the device's log why, and some clients
                // (rumqttc among them) cannot read a DISCONNECT without properties.
                properties: Some(v5::DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(code.reason().to_string()),
                    user_properties: Vec::new(),
                    server_reference: None,
                }),
            })
        }
    })
}

fn qos5_from(q: u8) -> QoS5 {
    match q {
        0 => QoS5::AtMostOnce,
        _ => QoS5::AtLeastOnce,
    }
}

fn qos_from(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(level: u8) -> BytesMut {
        let mut out = BytesMut::new();
        if level == 5 {
            let c =
                v5::Connect { keep_alive: 60, client_id: "c".into(), clean_start: true, properties: None };
            v5::Packet::Connect(c, None, None).write(&mut out, None).unwrap();
        } else {
            v4::Packet::Connect(v4::Connect::new("c")).write(&mut out, 1024).unwrap();
        }
        out
    }

    #[test]
    fn detects_versions_and_partial_frames() {
        for (level, want) in [(4, Version::V311), (5, Version::V5)] {
            let bytes = connect_bytes(level);
            assert_eq!(detect(&bytes).unwrap(), Some(want));
            for cut in 0..9 {
                assert_eq!(detect(&bytes[..cut]).unwrap(), None, "cut {cut}");
            }
        }
        assert!(detect(b"GET / HTTP/1.1\r\n").is_err());
        assert!(detect(&[0x10, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]).is_err());
    }

    #[test]
    fn reads_connect_and_publish_of_both_versions() {
        for version in [Version::V311, Version::V5] {
            let mut buf = connect_bytes(if version == Version::V5 { 5 } else { 4 });
            let Some(Inbound::Connect(c)) = version.read(&mut buf, 1024).unwrap() else { panic!() };
            assert_eq!(c.client_id, "c");
            assert!(buf.is_empty());
        }
        let mut buf = BytesMut::new();
        let mut p = v4::Publish::new("/a/b/user/x", QoS::AtLeastOnce, b"{}".to_vec());
        p.pkid = 7;
        v4::Packet::Publish(p).write(&mut buf, 1024).unwrap();
        let half = buf.split_to(5);
        let mut partial = half.clone();
        assert!(Version::V311.read(&mut partial, 1024).unwrap().is_none());
        let mut whole = half;
        whole.unsplit(buf);
        let Some(Inbound::Publish(p)) = Version::V311.read(&mut whole, 1024).unwrap() else { panic!() };
        assert_eq!((p.topic.as_str(), p.qos, p.pkid, &p.payload[..]), ("/a/b/user/x", 1, 7, &b"{}"[..]));
    }

    #[test]
    fn v5_disconnect_without_body() {
        let mut buf = BytesMut::from(&[0xE0u8, 0x00, 0xC0, 0x00][..]);
        assert!(matches!(Version::V5.read(&mut buf, 100), Ok(Some(Inbound::Disconnect))));
        assert!(matches!(Version::V5.read(&mut buf, 100), Ok(Some(Inbound::PingReq))));
    }

    #[test]
    fn clients_can_read_our_disconnect() {
        let mut out = BytesMut::new();
        Version::V5.write(Outbound::Disconnect(DisconnectCode::SessionTakenOver), &mut out);
        let Ok(v5::Packet::Disconnect(d)) = v5::Packet::read(&mut out, None) else { panic!() };
        assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver);
    }

    #[test]
    fn oversized_packets_are_refused_before_reading_them() {
        let mut buf = BytesMut::new();
        v4::Packet::Publish(v4::Publish::new("t", QoS::AtMostOnce, vec![0u8; 2000]))
            .write(&mut buf, usize::MAX)
            .unwrap();
        buf.truncate(10);
        assert!(matches!(Version::V311.read(&mut buf, 1000), Err(CodecError::TooLarge { .. })));
    }

    #[test]
    fn writes_refusal_codes() {
        let mut out = BytesMut::new();
        Version::V311
            .write(Outbound::ConnAck { code: ConnAckCode::BadCredentials, max_packet_size: 0 }, &mut out);
        assert_eq!(&out[..], &[0x20, 2, 0, 4]);
        out.clear();
        Version::V5.write(Outbound::PubAck { pkid: 1, code: PubAckCode::NotAuthorized }, &mut out);
        let Ok(v5::Packet::PubAck(ack)) = v5::Packet::read(&mut out, None) else { panic!() };
        assert_eq!(ack.reason, v5::PubAckReason::NotAuthorized);
    }
}

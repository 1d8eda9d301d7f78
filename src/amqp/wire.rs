//! AMQP 1.0 bytes on the wire for the consumer endpoint: frames, the rare performatives through
//! fe2o3's types and serde_amqp, and the one hot frame, a transfer of a stored message, written
//! by hand straight from the record (no message tree, no intermediate buffer, one copy of the
//! payload).

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::store::StoredMessage;

/// The header of AMQP with SASL security, the only way in.
pub const HEADER_SASL: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The header of plain AMQP, after SASL.
pub const HEADER_AMQP: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// Frame types.
pub const FRAME_AMQP: u8 = 0;
pub const FRAME_SASL: u8 = 1;
/// The smallest max-frame-size a peer may announce.
pub const MIN_MAX_FRAME: u32 = 512;

/// A frame the peer sent that cannot be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The size field is below the frame header's eight bytes.
    #[error("frame size {0} is below the 8-byte header")]
    TooSmall(u32),
    /// The size field is above what this side announced.
    #[error("frame size {size} is above the limit of {limit} bytes")]
    TooLarge { size: u32, limit: u32 },
}

/// Splits the next whole frame off `buf`, without its 4-byte size field (so it starts with doff,
/// type and channel, as fe2o3's decoders expect); `None` until the frame is complete.
///
/// # Errors
/// The size field is below 8 or above `limit`.
pub fn next_frame(buf: &mut BytesMut, limit: u32) -> Result<Option<BytesMut>, FrameError> {
    let Some(size) = buf.get(..4) else { return Ok(None) };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
    if size < 8 {
        return Err(FrameError::TooSmall(size));
    }
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    let size = size as usize;
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(size);
    let _ = frame.split_to(4);
    Ok(Some(frame))
}

/// Appends a frame whose body is `body`, serialized (a performative, or a SASL frame).
///
/// # Errors
/// serde_amqp could not serialize `body` (not expected for fe2o3's types).
pub fn put_frame(
    out: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    body: &impl Serialize,
) -> Result<(), serde_amqp::Error> {
    let start = out.len();
    put_frame_header(out, frame_type, channel);
    let mut serializer = serde_amqp::ser::Serializer::from(out.writer());
    let written = body.serialize(&mut serializer);
    if written.is_err() {
        out.truncate(start);
    } else {
        patch_size(out, start);
    }
    written.map(|_| ())
}

/// Appends an empty frame: it only tells the peer the connection is alive.
pub fn put_empty_frame(out: &mut BytesMut) {
    let start = out.len();
    put_frame_header(out, FRAME_AMQP, 0);
    patch_size(out, start);
}

fn put_frame_header(out: &mut BytesMut, frame_type: u8, channel: u16) {
    out.put_u32(0);
    out.put_u8(2);
    out.put_u8(frame_type);
    out.put_u16(channel);
}

fn patch_size(out: &mut BytesMut, start: usize) {
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// How one delivery goes out.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub channel: u16,
    pub handle: u32,
    pub delivery_id: u32,
    /// Pre-settled: the receiver asked for at-most-once.
    pub settled: bool,
}

/// Bytes of the transfer performative [`put_transfer`] writes.
const TRANSFER_LEN: usize = 3 + 3 + 5 + 5 + 6 + 1 + 1 + 1;

/// How many frames a message takes with frames of at most `max_frame` bytes (at least 512).
pub fn frames_needed(m: &StoredMessage, max_frame: usize) -> usize {
    let room = max_frame - 8 - TRANSFER_LEN;
    message_len(m).div_ceil(room).max(1)
}

/// Appends the transfer frames of `m`: one frame when it fits in `max_frame` bytes, otherwise
/// several with `more` set on all but the last. Returns how many frames were written.
///
/// The message is the contract's: a properties section with the message id, application
/// properties `topic`, `messageId`, `generateTime` and (when set) `tag`, and one data section.
pub fn put_transfer(out: &mut BytesMut, t: Transfer, m: &StoredMessage, max_frame: usize) -> usize {
    let body = message_len(m);
    if 8 + TRANSFER_LEN + body <= max_frame {
        let start = out.len();
        out.reserve(8 + TRANSFER_LEN + body);
        put_frame_header(out, FRAME_AMQP, t.channel);
        put_transfer_performative(out, t, false);
        put_message(out, m);
        patch_size(out, start);
        return 1;
    }
    // Rare: a message above the peer's frame size goes in pieces.
    let mut whole = BytesMut::with_capacity(body);
    put_message(&mut whole, m);
    let room = max_frame - 8 - TRANSFER_LEN;
    let mut frames = 0;
    let mut rest = &whole[..];
    while !rest.is_empty() {
        let (piece, after) = rest.split_at(rest.len().min(room));
        let start = out.len();
        put_frame_header(out, FRAME_AMQP, t.channel);
        put_transfer_performative(out, t, !after.is_empty());
        out.put_slice(piece);
        patch_size(out, start);
        rest = after;
        frames += 1;
    }
    frames
}

fn put_transfer_performative(out: &mut BytesMut, t: Transfer, more: bool) {
    // described list 0x14: handle, delivery-id, delivery-tag, message-format, settled, more
    out.put_slice(&[0x00, 0x53, 0x14, 0xc0, (TRANSFER_LEN - 5) as u8, 6]);
    out.put_u8(0x70);
    out.put_u32(t.handle);
    out.put_u8(0x70);
    out.put_u32(t.delivery_id);
    // The tag is the delivery id: unique among the link's unsettled deliveries.
    out.put_slice(&[0xa0, 4]);
    out.put_u32(t.delivery_id);
    out.put_u8(0x43); // message-format 0
    out.put_u8(if t.settled { 0x41 } else { 0x42 });
    out.put_u8(if more { 0x41 } else { 0x42 });
}

fn str_len(s: &str) -> usize {
    s.len() + if s.len() <= 0xff { 2 } else { 5 }
}

fn put_str(out: &mut BytesMut, s: &str) {
    if let Ok(n) = u8::try_from(s.len()) {
        out.put_u8(0xa1);
        out.put_u8(n);
    } else {
        out.put_u8(0xb1);
        out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    }
    out.put_slice(s.as_bytes());
}

/// A compound's size and count header: the 8-bit form when it fits.
fn compound_header_len(content: usize) -> usize {
    if content < 0xff {
        3
    } else {
        9
    }
}

fn put_compound_header(out: &mut BytesMut, short: u8, long: u8, content: usize, count: usize) {
    if let (Ok(size), Ok(count)) = (u8::try_from(content + 1), u8::try_from(count)) {
        if content < 0xff {
            out.put_slice(&[short, size, count]);
            return;
        }
    }
    out.put_u8(long);
    out.put_u32(u32::try_from(content + 4).unwrap_or(u32::MAX));
    out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
}

const ID_DIGITS: usize = 20;

/// The message id's decimal digits (into a stack buffer: no allocation).
fn id_text(id: u64, buf: &mut [u8; ID_DIGITS]) -> &str {
    let mut i = ID_DIGITS;
    let mut n = id;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

fn properties_content(id: &str) -> usize {
    str_len(id)
}

fn application_properties_content(m: &StoredMessage, id: &str) -> usize {
    let mut n = str_len("topic") + str_len(&m.topic) + str_len("messageId") + str_len(id);
    n += str_len("generateTime") + 9;
    if let Some(tag) = &m.tag {
        n += str_len("tag") + str_len(tag);
    }
    n
}

/// Bytes of the encoded message.
fn message_len(m: &StoredMessage) -> usize {
    let mut buf = [0; ID_DIGITS];
    let id = id_text(m.id, &mut buf);
    let props = properties_content(id);
    let app = application_properties_content(m, id);
    let data = m.payload.len() + if m.payload.len() <= 0xff { 2 } else { 5 };
    3 + compound_header_len(props) + props + 3 + compound_header_len(app) + app + 3 + data
}

fn put_message(out: &mut BytesMut, m: &StoredMessage) {
    let mut buf = [0; ID_DIGITS];
    let id = id_text(m.id, &mut buf);
    // properties: message-id only
    out.put_slice(&[0x00, 0x53, 0x73]);
    put_compound_header(out, 0xc0, 0xd0, properties_content(id), 1);
    put_str(out, id);
    // application-properties
    out.put_slice(&[0x00, 0x53, 0x74]);
    let pairs = if m.tag.is_some() { 4 } else { 3 };
    put_compound_header(out, 0xc1, 0xd1, application_properties_content(m, id), pairs * 2);
    put_str(out, "topic");
    put_str(out, &m.topic);
    put_str(out, "messageId");
    put_str(out, id);
    put_str(out, "generateTime");
    out.put_u8(0x81);
    out.put_i64(i64::try_from(m.generate_time_ms).unwrap_or(i64::MAX));
    if let Some(tag) = &m.tag {
        put_str(out, "tag");
        put_str(out, tag);
    }
    // one data section
    out.put_slice(&[0x00, 0x53, 0x75]);
    if let Ok(n) = u8::try_from(m.payload.len()) {
        out.put_u8(0xa0);
        out.put_u8(n);
    } else {
        out.put_u8(0xb0);
        out.put_u32(u32::try_from(m.payload.len()).unwrap_or(u32::MAX));
    }
    out.put_slice(&m.payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
    use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
    use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Data, Message, MessageId, Properties};
    use fe2o3_amqp::types::primitives::{Binary, Value};
    use serde_amqp::from_slice;
    use tokio_util::codec::Decoder;

    fn stored(topic: &str, tag: Option<&str>, payload: Vec<u8>) -> StoredMessage {
        StoredMessage {
            id: 1_730_000_000_123_456_789,
            generate_time_ms: 1_730_000_000_123,
            topic: topic.into(),
            tag: tag.map(Into::into),
            payload: payload.into(),
        }
    }

    /// The message as fe2o3 builds it: the reference the hand-written bytes must match.
    fn reference(m: &StoredMessage) -> Message<Data> {
        let id = m.id.to_string();
        let mut props = ApplicationProperties::builder()
            .insert("topic", m.topic.clone())
            .insert("messageId", id.clone())
            .insert("generateTime", i64::try_from(m.generate_time_ms).unwrap());
        if let Some(tag) = &m.tag {
            props = props.insert("tag", tag.clone());
        }
        Message::builder()
            .properties(Properties::builder().message_id(MessageId::String(id)).build())
            .application_properties(props.build())
            .data(Binary::from(m.payload.to_vec()))
            .build()
    }

    /// Decodes the frames `out` holds back into transfers and the message they carry.
    fn decode(mut out: BytesMut) -> (Vec<fe2o3_amqp::types::performatives::Transfer>, Vec<u8>) {
        let mut transfers = Vec::new();
        let mut message = Vec::new();
        while let Some(mut frame) = next_frame(&mut out, u32::MAX).unwrap() {
            match (FrameDecoder {}).decode(&mut frame).unwrap().unwrap().body {
                FrameBody::Transfer { performative, payload } => {
                    transfers.push(performative);
                    message.extend_from_slice(&payload);
                }
                other => panic!("not a transfer: {other:?}"),
            }
        }
        assert!(out.is_empty());
        (transfers, message)
    }

    /// Whatever the sizes, the hand-written bytes are the message fe2o3 itself would build.
    #[test]
    fn the_transfer_carries_the_contracts_message() {
        let long_topic = format!("/a1demo/dev/user/{}", "x".repeat(300));
        for (topic, tag, payload) in [
            ("/a1demo/dev1/user/update", None, b"{\"t\":1}".to_vec()),
            ("/a1demo/dev1/user/update", Some("rule-a"), vec![7; 255]),
            (long_topic.as_str(), Some("t"), vec![1; 256]),
            ("/t", None, vec![]),
            ("/t", None, vec![9; 70_000]),
        ] {
            let m = stored(topic, tag, payload);
            let mut out = BytesMut::new();
            let t = Transfer { channel: 3, handle: 5, delivery_id: 77, settled: false };
            assert_eq!(put_transfer(&mut out, t, &m, 1 << 20), 1);
            assert_eq!(out.len(), 8 + TRANSFER_LEN + message_len(&m));
            let (transfers, bytes) = decode(out);
            let tr = &transfers[0];
            assert_eq!(tr.handle.0, 5);
            assert_eq!(tr.delivery_id, Some(77));
            assert_eq!(tr.settled, Some(false));
            assert!(!tr.more);
            let decoded: Deserializable<Message<Body<Value>>> = from_slice(&bytes).unwrap();
            let reference = serde_amqp::to_vec(&Serializable(reference(&m))).unwrap();
            let expected: Deserializable<Message<Body<Value>>> = from_slice(&reference).unwrap();
            assert_eq!(format!("{:?}", decoded.0), format!("{:?}", expected.0));
        }
    }

    #[test]
    fn a_message_above_the_frame_size_goes_in_pieces() {
        let m = stored("/a1demo/dev1/user/update", None, vec![3; 2000]);
        let mut out = BytesMut::new();
        let t = Transfer { channel: 0, handle: 0, delivery_id: 1, settled: true };
        let n = put_transfer(&mut out, t, &m, 512);
        assert_eq!(n, frames_needed(&m, 512));
        assert!(n > 4);
        let mut check = out.clone();
        while let Some(frame) = next_frame(&mut check, 512).unwrap() {
            assert!(frame.len() + 4 <= 512);
        }
        let (transfers, bytes) = decode(out);
        assert_eq!(transfers.len(), n);
        assert!(transfers[..n - 1].iter().all(|t| t.more) && !transfers[n - 1].more);
        let decoded: Deserializable<Message<Body<Value>>> = from_slice(&bytes).unwrap();
        assert!(format!("{:?}", decoded.0).contains("/a1demo/dev1/user/update"));
    }

    #[test]
    fn frames_are_cut_at_the_limit_and_wait_until_whole() {
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 2, 0, 0, 0, 1, 2][..]);
        assert_eq!(next_frame(&mut buf, 512), Ok(None));
        buf.extend_from_slice(&[3, 4]);
        assert_eq!(&next_frame(&mut buf, 512).unwrap().unwrap()[..], &[2, 0, 0, 0, 1, 2, 3, 4]);
        let mut big = BytesMut::from(&[0, 1, 0, 0][..]);
        assert_eq!(next_frame(&mut big, 512), Err(FrameError::TooLarge { size: 65536, limit: 512 }));
        let mut small = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(next_frame(&mut small, 512), Err(FrameError::TooSmall(4)));
    }
}

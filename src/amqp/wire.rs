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

/// A disposition that accepts a range of deliveries: the frame a consumer sends for nearly
/// every message, read here without the general decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    pub channel: u16,
    /// The role of the sender of the frame: true for a receiver.
    pub receiver: bool,
    pub first: u32,
    pub last: Option<u32>,
    pub settled: bool,
}

/// Reads `frame` (as [`next_frame`] returns it) as a disposition whose state is `accepted`, in
/// the encodings clients use (a small-ulong descriptor, a list8 or list32, each field in its
/// fixed or compact form). `None` for anything else, which then goes through fe2o3's decoder:
/// another performative or outcome, a field this reader does not take, a malformed list.
pub fn read_accept(frame: &[u8]) -> Option<Accept> {
    let doff = usize::from(*frame.first()?);
    if doff < 2 || frame.get(1) != Some(&FRAME_AMQP) {
        return None;
    }
    let channel = u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    // The body starts at doff × 4 from the size field, which `next_frame` took off.
    let mut r = Reader(frame.get(doff * 4 - 4..)?);
    if r.take(3)? != [0x00, 0x53, 0x15] {
        return None;
    }
    let count = match r.byte()? {
        0xc0 => {
            let size = usize::from(r.byte()?);
            if size != r.0.len() {
                return None;
            }
            u32::from(r.byte()?)
        }
        0xd0 => {
            let size = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
            if usize::try_from(size).ok()? != r.0.len() {
                return None;
            }
            u32::from_be_bytes(r.take(4)?.try_into().ok()?)
        }
        _ => return None,
    };
    // role, first, last, settled, state, batchable: role, first and state are needed here.
    if !(5..=6).contains(&count) {
        return None;
    }
    let receiver = r.boolean()?;
    let first = r.uint()?;
    let last = if r.null() { None } else { Some(r.uint()?) };
    let settled = if r.null() { false } else { r.boolean()? };
    // accepted: descriptor 0x24 and an empty list.
    if r.take(3)? != [0x00, 0x53, 0x24] {
        return None;
    }
    match r.byte()? {
        0x45 => {}
        0xc0 if r.take(2)? == [0x01, 0x00] => {}
        0xd0 if r.take(8)? == [0, 0, 0, 4, 0, 0, 0, 0] => {}
        _ => return None,
    }
    if count == 6 && !r.null() {
        r.boolean()?;
    }
    r.0.is_empty().then_some(Accept { channel, receiver, first, last, settled })
}

/// A cursor over encoded AMQP values.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// Takes a null if one is next.
    fn null(&mut self) -> bool {
        let null = self.0.first() == Some(&0x40);
        if null {
            self.0 = &self.0[1..];
        }
        null
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.byte()? {
            0x41 => Some(true),
            0x42 => Some(false),
            0x56 => match self.byte()? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
            _ => None,
        }
    }

    fn uint(&mut self) -> Option<u32> {
        match self.byte()? {
            0x43 => Some(0),
            0x52 => self.byte().map(u32::from),
            0x70 => Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            _ => None,
        }
    }
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

    /// The frame `body` makes, as [`next_frame`] hands it on (without the size field).
    fn frame_of(body: &impl Serialize) -> BytesMut {
        let mut out = BytesMut::new();
        put_frame(&mut out, FRAME_AMQP, 3, body).unwrap();
        out.split_off(4)
    }

    fn fe2o3(frame: &[u8]) -> FrameBody {
        let mut frame = BytesMut::from(frame);
        FrameDecoder {}.decode(&mut frame).unwrap().unwrap().body
    }

    /// Every accepted disposition fe2o3 writes is read, with the values fe2o3 decodes; any
    /// other outcome, or none, is left to fe2o3's decoder.
    #[test]
    fn an_accepting_disposition_is_read_as_fe2o3_decodes_it() {
        use fe2o3_amqp::types::definitions::Role;
        use fe2o3_amqp::types::messaging::{Accepted, DeliveryState, Modified, Rejected, Released};
        use fe2o3_amqp::types::performatives::Disposition;
        let mut read = 0;
        for role in [Role::Receiver, Role::Sender] {
            for first in [0, 7, 255, 256, 70_000, u32::MAX] {
                for last in [None, Some(first), Some(first.wrapping_add(300))] {
                    for settled in [false, true] {
                        for batchable in [false, true] {
                            let d = Disposition {
                                role: role.clone(),
                                first,
                                last,
                                settled,
                                state: Some(DeliveryState::Accepted(Accepted {})),
                                batchable,
                            };
                            let frame = frame_of(&d);
                            let FrameBody::Disposition(decoded) = fe2o3(&frame) else {
                                panic!("not a disposition")
                            };
                            let want = Accept {
                                channel: 3,
                                receiver: decoded.role == Role::Receiver,
                                first: decoded.first,
                                last: decoded.last,
                                settled: decoded.settled,
                            };
                            assert_eq!(read_accept(&frame), Some(want), "{d:?}");
                            read += 1;
                            for other in [
                                None,
                                Some(DeliveryState::Rejected(Rejected { error: None })),
                                Some(DeliveryState::Released(Released {})),
                                Some(DeliveryState::Modified(Modified {
                                    delivery_failed: Some(true),
                                    undeliverable_here: None,
                                    message_annotations: None,
                                })),
                            ] {
                                let d = Disposition { state: other, ..d.clone() };
                                assert_eq!(read_accept(&frame_of(&d)), None, "{d:?}");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(read, 2 * 6 * 3 * 2 * 2);
    }

    /// Other encodings of the same fields (list32, the long forms of booleans and uints, no
    /// batchable field) are read as fe2o3 decodes them; cut or padded frames and other
    /// performatives are not read at all.
    #[test]
    fn other_encodings_of_an_accept_and_broken_frames() {
        let accepted = [0x00, 0x53, 0x24, 0x45];
        let frame = |list: &[u8]| [&[2u8, 0, 0, 3, 0x00, 0x53, 0x15][..], list].concat();
        let list32 = |count: u32, items: &[u8]| {
            let mut l = vec![0xd0];
            l.extend_from_slice(&(4 + items.len() as u32).to_be_bytes());
            l.extend_from_slice(&count.to_be_bytes());
            l.extend_from_slice(items);
            l
        };
        let list8 = |count: u8, items: &[u8]| [&[0xc0, 1 + items.len() as u8, count][..], items].concat();
        let fields = [&[0x56, 0x01, 0x70, 0, 0, 0, 9, 0x52, 12, 0x56, 0x00][..], &accepted].concat();
        let want = Accept { channel: 3, receiver: true, first: 9, last: Some(12), settled: false };
        for f in [frame(&list32(5, &fields)), frame(&list8(5, &fields))] {
            let FrameBody::Disposition(d) = fe2o3(&f) else { panic!("not a disposition") };
            assert_eq!((d.first, d.last, d.settled), (9, Some(12), false));
            assert_eq!(read_accept(&f), Some(want));
        }
        // An accepted state written as list8 and list32 with no items.
        for state in
            [&[0x00, 0x53, 0x24, 0xc0, 0x01, 0x00][..], &[0x00, 0x53, 0x24, 0xd0, 0, 0, 0, 4, 0, 0, 0, 0]]
        {
            let items = [&[0x41, 0x43, 0x40, 0x41][..], state].concat();
            assert_eq!(
                read_accept(&frame(&list8(5, &items))),
                Some(Accept { channel: 3, receiver: true, first: 0, last: None, settled: true })
            );
        }
        let good = frame(&list8(5, &fields));
        for cut in 0..good.len() {
            assert_eq!(read_accept(&good[..cut]), None, "cut at {cut}");
        }
        let padded = [&good[..], &[0x40]].concat();
        assert_eq!(read_accept(&padded), None);
        let wrong_size = frame(&[&[0xc0, 0x7f, 5][..], &fields].concat());
        assert_eq!(read_accept(&wrong_size), None);
        assert_eq!(read_accept(&frame(&list8(4, &fields[..fields.len() - 4]))), None, "no state");
        let flow = [2u8, 0, 0, 3, 0x00, 0x53, 0x13, 0x45];
        assert_eq!(read_accept(&flow), None);
        assert_eq!(read_accept(&[1, 0, 0, 3]), None, "doff below 2");
    }
}

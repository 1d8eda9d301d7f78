//! A queued message as stored: what a consumer receives, in a compact binary form.
//!
//! Layout (big-endian): id u64 · generate time u64 · topic length u16 · topic · tag length u16
//! (0xFFFF = no tag) · tag · payload (the rest).

use bytes::{Buf, BufMut, Bytes};

/// One message in a consumer group's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message id (AMQP `messageId`), the same on every delivery.
    pub id: u64,
    /// Epoch milliseconds when iotpipe received it (AMQP `generateTime`).
    pub generate_time_ms: u64,
    /// The forwarding topic (AMQP `topic`).
    pub topic: String,
    /// Set by a forwarding action (AMQP `tag`).
    pub tag: Option<String>,
    /// The body.
    pub payload: Bytes,
}

const NO_TAG: u16 = u16::MAX;

/// A decoded record without its payload.
struct Head {
    id: u64,
    generate_time_ms: u64,
    topic: String,
    tag: Option<String>,
}

impl Head {
    fn with_payload(self, payload: Bytes) -> StoredMessage {
        let Head { id, generate_time_ms, topic, tag } = self;
        StoredMessage { id, generate_time_ms, topic, tag, payload }
    }
}

impl StoredMessage {
    /// Encodes for storage. Topics and tags longer than 65,534 bytes are cut (MQTT topics are
    /// at most 65,535 bytes and tags are short).
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(self.id, self.generate_time_ms, &self.topic, self.tag.as_deref(), &self.payload)
    }

    /// Encodes a record from borrowed parts, without building a [`StoredMessage`] first.
    pub fn encode_parts(
        id: u64,
        generate_time_ms: u64,
        topic: &str,
        tag: Option<&str>,
        payload: &[u8],
    ) -> Vec<u8> {
        let topic = &topic.as_bytes()[..topic.len().min(usize::from(NO_TAG - 1))];
        let tag = tag.map(|t| &t.as_bytes()[..t.len().min(usize::from(NO_TAG - 1))]);
        // Vec<u8> is a BufMut: the record is written once, where it is kept.
        let mut out = Vec::with_capacity(22 + topic.len() + tag.map_or(0, <[u8]>::len) + payload.len());
        out.put_u64(id);
        out.put_u64(generate_time_ms);
        out.put_u16(topic.len() as u16);
        out.put_slice(topic);
        match tag {
            Some(t) => {
                out.put_u16(t.len() as u16);
                out.put_slice(t);
            }
            None => out.put_u16(NO_TAG),
        }
        out.put_slice(payload);
        out
    }

    /// Decodes a stored record; `None` when it is corrupt. The payload is copied out of
    /// `bytes`; [`Self::decode_shared`] shares it instead.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (head, at) = Self::decode_head(bytes)?;
        Some(head.with_payload(Bytes::copy_from_slice(&bytes[at..])))
    }

    /// Decodes a stored record whose payload stays in `record`'s memory (no copy); `None`
    /// when it is corrupt.
    pub fn decode_shared(record: &Bytes) -> Option<Self> {
        let (head, at) = Self::decode_head(record)?;
        Some(head.with_payload(record.slice(at..)))
    }

    /// Everything but the payload, and where the payload starts.
    fn decode_head(bytes: &[u8]) -> Option<(Head, usize)> {
        let mut b = bytes;
        if b.remaining() < 18 {
            return None;
        }
        let id = b.get_u64();
        let generate_time_ms = b.get_u64();
        let topic_len = usize::from(b.get_u16());
        if b.remaining() < topic_len + 2 {
            return None;
        }
        let topic = std::str::from_utf8(&b[..topic_len]).ok()?.to_string();
        b.advance(topic_len);
        let tag_len = b.get_u16();
        let tag = if tag_len == NO_TAG {
            None
        } else {
            let n = usize::from(tag_len);
            if b.remaining() < n {
                return None;
            }
            let t = std::str::from_utf8(&b[..n]).ok()?.to_string();
            b.advance(n);
            Some(t)
        };
        let at = bytes.len() - b.remaining();
        Some((Head { id, generate_time_ms, topic, tag }, at))
    }

    /// The time a record was generated, read without decoding the rest.
    pub fn generate_time_of(bytes: &[u8]) -> Option<u64> {
        bytes.get(8..16).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_tag() {
        for tag in [None, Some("alarm".to_string()), Some(String::new())] {
            let m = StoredMessage {
                id: 42,
                generate_time_ms: 1_700_000_000_000,
                topic: "/a1demo/dev1/user/update".into(),
                tag,
                payload: Bytes::from_static(b"{\"t\":1}"),
            };
            let bytes = m.encode();
            assert_eq!(StoredMessage::decode(&bytes), Some(m.clone()));
            assert_eq!(StoredMessage::decode_shared(&Bytes::from(bytes.clone())), Some(m));
            assert_eq!(StoredMessage::generate_time_of(&bytes), Some(1_700_000_000_000));
        }
    }

    #[test]
    fn corrupt_records_are_refused() {
        assert_eq!(StoredMessage::decode(b"short"), None);
        let mut bytes = StoredMessage {
            id: 1,
            generate_time_ms: 2,
            topic: "t".into(),
            tag: Some("x".into()),
            payload: Bytes::new(),
        }
        .encode();
        bytes.truncate(bytes.len() - 1);
        assert_eq!(StoredMessage::decode(&bytes), None);
        assert_eq!(StoredMessage::decode_shared(&Bytes::from(bytes)), None);
    }
}

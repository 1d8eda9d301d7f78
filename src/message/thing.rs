//! Thing-model (Alink JSON) messages turned into the platform's forwarding format.
//!
//! A device publishes on `/sys/${pk}/${dn}/thing/...`; rules and subscriptions see the topic
//! without `/sys` and, for the kinds below, a converted body (docs/consumer-groups.md lists the
//! shapes):
//!
//! | device topic (`/sys/${pk}/${dn}/...`) | forwarding topic (`/${pk}/${dn}/...`) | module |
//! |---|---|---|
//! | `thing/event/property/post` | the same | [`post`] |
//! | `thing/event/${identifier}/post` | the same | [`post`] |
//! | `thing/event/property/batch/post` | `thing/property/batch/post` and `thing/event/batch/post` | [`batch`] |
//! | `thing/event/property/history/post` | `thing/event/property/history/post`, `thing/event/${identifier}/history/post` | [`batch`] |
//! | `thing/service/property/set_reply`, `thing/service/${identifier}_reply` | `thing/downlink/reply/message` | [`reply`] |
//! | `thing/deviceinfo/update`, `thing/deviceinfo/delete` (tag reports, applied by the ingress) | `thing/deviceinfo/update` (tag change) | [`tags`] |
//!
//! Each payload is parsed once; the converted bodies are written straight from the parsed
//! value. A live post also keeps that value ([`Body`]), so that rules read the platform body
//! without parsing the bytes just written (built only when a rule reads it). One device message may become several platform messages (a batch with properties and
//! events, a history post with many entries), at most [`MAX_CONVERTED`].

pub mod batch;
pub mod post;
pub mod reply;
pub mod tags;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserializer as _, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::message::{alink, Kind, Origin, Platform};

/// Platform messages one device message may become: bounds the work and the memory one
/// publish can cause (a history post of many small entries).
pub const MAX_CONVERTED: usize = 200;

/// Why a thing-model message could not be converted (the raw message is still forwarded).
#[derive(Debug, thiserror::Error)]
pub enum ThingError {
    /// Not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// No `params` object.
    #[error("no \"params\" object")]
    NoParams,
    /// `params` of the wrong shape for the method.
    #[error("\"params\" is not as {0} expects: {1}")]
    BadParams(&'static str, &'static str),
    /// A history entry names another device.
    #[error("a history entry names device {0:?}; a device may only report its own history")]
    ForeignIdentity(String),
    /// More platform messages than [`MAX_CONVERTED`].
    #[error("the message would become {0} platform messages; at most {MAX_CONVERTED} are allowed")]
    TooMany(usize),
    /// A reply without a numeric `code`.
    #[error("a reply needs a numeric \"code\"")]
    NoCode,
}

/// What a device message becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The subscription type of every message here.
    pub kind: Kind,
    /// The platform messages, in order; never empty.
    pub messages: Vec<Platform>,
    /// A device's reply to a cloud call, parsed, for whoever waits for it.
    pub reply: Option<reply::DeviceReply>,
    /// The parsed body of a live property or event post (its one platform message), for the
    /// rules; `None` for the other kinds, whose bodies rules parse from the bytes.
    pub body: Option<Arc<Body>>,
}

/// The platform body of a live post as rules read it, made from the device's parsed body
/// instead of parsing the bytes written from it again: the value those bytes parse to (each
/// member is written by the same `Serialize` code as the bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    id: Value,
    params: Map<String, Value>,
    /// `None` for a property post, else the event's identifier.
    event: Option<String>,
    received_ms: u64,
}

impl Body {
    /// The body as a JSON object with the top-level members `keys` names (every member for
    /// `None`), as a parser that keeps only those would make of the bytes. `origin` must be the
    /// sender the post was converted for (the message's origin). `None` only if a member
    /// cannot be a JSON value, which the platform's bodies always can; the caller then parses
    /// the bytes.
    pub fn value(&self, origin: &Origin, keys: Option<&[&str]>) -> Option<Value> {
        let members = match &self.event {
            None => post::property_body(origin, &self.id, &self.params, self.received_ms).members(keys),
            Some(identifier) => {
                post::event_body(origin, identifier, &self.id, &self.params, self.received_ms).members(keys)
            }
        };
        members.ok().map(Value::Object)
    }
}

/// The forwarding topic of a device's thing-model topic (`/sys/${pk}/${dn}/thing/...` without
/// `/sys`); `None` for other topics. Every thing-model message carries this topic, converted or
/// not, so consumers and rules see one spelling.
pub fn forwarding_topic<'t>(origin: &Origin, topic: &'t str) -> Option<&'t str> {
    thing_tail(origin, topic)?;
    Some(&topic["/sys".len()..])
}

/// What follows `/sys/${pk}/${dn}/thing/` in `topic`, when `topic` is the sender's own.
fn thing_tail<'t>(origin: &Origin, topic: &'t str) -> Option<&'t str> {
    topic
        .strip_prefix("/sys/")?
        .strip_prefix(origin.product_key.as_str())?
        .strip_prefix('/')?
        .strip_prefix(origin.device_name.as_str())?
        .strip_prefix("/thing/")
}

/// Converts a thing-model message of `origin` on `topic`. `None` for topics that need no
/// conversion; `Some(Err)` when the payload is not valid Alink JSON for its topic.
pub fn convert(
    origin: &Origin,
    topic: &str,
    payload: &[u8],
    received_ms: u64,
) -> Option<Result<Converted, ThingError>> {
    convert_and_reply(origin, topic, payload, received_ms).map(|(c, _)| c)
}

/// As [`convert`], with the Alink reply of a post ([`alink::post_reply`]: `None` for other
/// topics and for a request that asked for none), read from the same parse of the payload.
pub fn convert_and_reply(
    origin: &Origin,
    topic: &str,
    payload: &[u8],
    received_ms: u64,
) -> Option<(Result<Converted, ThingError>, Option<alink::Reply>)> {
    let tail = thing_tail(origin, topic)?;
    let forwarding = &topic["/sys".len()..];
    if let Some(rest) = tail.strip_prefix("event/") {
        let identifier = match rest {
            "property/batch/post" | "property/history/post" => None,
            _ => Some(rest.strip_suffix("/post").filter(|i| !i.is_empty() && !i.contains('/'))?),
        };
        let (alink, request) = Alink::parse_with_request(payload);
        let converted = alink.and_then(|alink| match (rest, identifier) {
            ("property/batch/post", _) => batch::batch_post(origin, alink, received_ms),
            ("property/history/post", _) => batch::history_post(origin, alink, received_ms),
            (_, Some(identifier)) => post::post(origin, forwarding, identifier, alink, received_ms),
            (_, None) => Err(ThingError::NoParams),
        });
        let reply = alink::post_reply_to(topic, request, converted.is_ok());
        return Some((converted, reply));
    }
    if let Some(rest) = tail.strip_prefix("service/") {
        return reply::request_of(rest).map(|_| {
            let converted = reply::DeviceReply::parse(topic, payload).map(|r| Converted {
                kind: Kind::Upstream,
                messages: vec![r.platform(origin, received_ms)],
                reply: Some(r),
                body: None,
            });
            (converted, None)
        });
    }
    None
}

/// The JSON of a converted body. Serialising a value of our own types into memory fails only
/// on a map with non-string keys, which they do not have.
fn to_bytes(body: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// `{}`: the platform's `checkFailedData` when nothing failed a check. iotpipe holds no TSL, so
/// nothing is checked and it is always empty.
#[derive(Debug, Clone, Copy, Serialize)]
struct Empty {}

/// A `time` field: the device's, when it sent a number, else the receive time.
#[derive(Debug, Clone, Copy)]
enum Time<'a> {
    Device(&'a Value),
    Received(u64),
}

impl<'a> Time<'a> {
    fn of(given: Option<&'a Value>, received_ms: u64) -> Self {
        match given {
            Some(t) if t.is_number() => Time::Device(t),
            _ => Time::Received(received_ms),
        }
    }
}

impl Serialize for Time<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Time::Device(v) => v.serialize(s),
            Time::Received(ms) => s.serialize_u64(*ms),
        }
    }
}

/// `{"value": .., "time": ..}` of a property or event: the device sends that shape; SDK samples
/// also send bare values, which get the receive time.
#[derive(Debug, Clone, Copy, Serialize)]
struct Item<'a> {
    value: &'a Value,
    time: Time<'a>,
}

impl<'a> Item<'a> {
    fn of(v: &'a Value, received_ms: u64) -> Self {
        match v.as_object() {
            Some(o) if o.contains_key("value") => {
                Item { value: &o["value"], time: Time::of(o.get("time"), received_ms) }
            }
            _ => Item { value: v, time: Time::Received(received_ms) },
        }
    }
}

/// The request `id` and `params` of an Alink body, parsed once.
struct Alink {
    id: Value,
    params: Value,
}

impl Alink {
    fn parse(payload: &[u8]) -> Result<Self, ThingError> {
        Ok(Self::of(serde_json::from_slice(payload)?))
    }

    fn of(mut v: Value) -> Self {
        let id = v.get_mut("id").map(Value::take).unwrap_or(Value::Null);
        let params = v.get_mut("params").map(Value::take).unwrap_or(Value::Null);
        Self { id, params }
    }

    /// As [`Alink::parse`], and what a reply needs of the request ([`alink::Request::read`]),
    /// from one parse of an object with one `id` and one `sys`. Anything else (not an object,
    /// not JSON, a repeated `id` or `sys`) is read for the reply as before, separately: the
    /// reply then follows [`alink::Request::read`]'s rules exactly.
    fn parse_with_request(payload: &[u8]) -> (Result<Self, ThingError>, alink::Request) {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            let mut de = serde_json::Deserializer::from_slice(payload);
            let parsed = de.deserialize_map(Members).and_then(|m| de.end().map(|()| m));
            if let Ok((map, repeated)) = parsed {
                let v = Value::Object(map);
                if !repeated {
                    let request = alink::Request {
                        id: v["id"].clone(),
                        ack: v.get("sys").and_then(|s| s.get("ack")).cloned(),
                    };
                    return (Ok(Self::of(v)), request);
                }
                return (Ok(Self::of(v)), alink::Request::read(payload));
            }
        }
        (Self::parse(payload), alink::Request::read(payload))
    }
}

/// A JSON object as a map, and whether `id` or `sys` came more than once (the map keeps the
/// last, as `serde_json::Value` does).
struct Members;

impl<'de> serde::de::Visitor<'de> for Members {
    type Value = (Map<String, Value>, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        let mut repeated = false;
        while let Some(key) = access.next_key::<String>()? {
            let value: Value = access.next_value()?;
            let watched = key == "id" || key == "sys";
            if map.insert(key, value).is_some() && watched {
                repeated = true;
            }
        }
        Ok((map, repeated))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn origin() -> Origin {
        Origin {
            product_key: "a1demo".into(),
            device_name: "dev1".into(),
            iot_id: "iot1".into(),
            device_type: "Ammeter".into(),
            client_id: "c".into(),
            peer: None,
        }
    }

    pub(crate) fn json(p: &Platform) -> Value {
        serde_json::from_slice(&p.payload).unwrap()
    }

    #[test]
    fn other_topics_and_bad_payloads() {
        let o = origin();
        assert!(convert(&o, "/a1demo/dev1/user/update", b"{}", 0).is_none());
        assert!(convert(&o, "/sys/a1demo/dev1/thing/model/up_raw", b"\x01", 0).is_none());
        assert!(convert(&o, "/sys/a1demo/dev2/thing/event/property/post", b"{}", 0).is_none());
        assert!(convert(&o, "/sys/a1demo/dev1/thing/event//post", b"{}", 0).is_none());
        assert!(convert(&o, "/sys/a1demo/dev1/thing/service/property/set", b"{}", 0).is_none());
        assert!(matches!(
            convert(&o, "/sys/a1demo/dev1/thing/event/property/post", b"not json", 0),
            Some(Err(ThingError::NotJson(_)))
        ));
        assert!(matches!(
            convert(&o, "/sys/a1demo/dev1/thing/event/property/post", b"{\"id\":\"1\"}", 0),
            Some(Err(ThingError::NoParams))
        ));
    }

    #[test]
    fn the_reply_comes_from_the_conversions_parse_and_reads_as_before() {
        let payloads: [&[u8]; 14] = [
            br#"{"id":"1","version":"1.0","params":{"t":1}}"#,
            br#" {"id":"1","sys":{"ack":0},"params":{}}"#,
            br#"{"id":"1","sys":{"ack":"0"},"params":{}}"#,
            br#"{"id":"1","sys":{"ack":1},"params":{"properties":{"t":[{"value":1}]}}}"#,
            br#"{"id":1,"id":2,"params":{}}"#,
            br#"{"sys":{"ack":1},"sys":{"ack":0},"params":{}}"#,
            br#"{"id":"x","params":{"a":1},"params":{}}"#,
            br#"{"id":{"nested":[1]},"sys":5,"params":{}}"#,
            br#"{"id":"9","params":{"t":1e400}}"#,
            br#"{"id":"9"}"#,
            b"[1]",
            br#"[1,{"ack":0}]"#,
            br#""s""#,
            b"not json",
        ];
        for topic in [
            "/sys/a1demo/dev1/thing/event/property/post",
            "/sys/a1demo/dev1/thing/event/alarm/post",
            "/sys/a1demo/dev1/thing/event/property/batch/post",
            "/sys/a1demo/dev1/thing/event/property/history/post",
        ] {
            for payload in payloads {
                let (converted, reply) = convert_and_reply(&origin(), topic, payload, 7).unwrap();
                let alone = convert(&origin(), topic, payload, 7).unwrap();
                assert_eq!(converted.as_ref().ok(), alone.as_ref().ok());
                let valid = alone.is_ok();
                let what = String::from_utf8_lossy(payload);
                assert_eq!(reply, alink::post_reply(topic, payload, valid), "{topic} {what}");
            }
        }
        let service = "/sys/a1demo/dev1/thing/service/property/set_reply";
        let (converted, reply) =
            convert_and_reply(&origin(), service, br#"{"id":"1","code":200}"#, 7).unwrap();
        assert!(converted.is_ok() && reply.is_none(), "a service reply gets no reply");
    }

    #[test]
    fn forwarding_topics_drop_sys_for_thing_topics_only() {
        let o = origin();
        assert_eq!(
            forwarding_topic(&o, "/sys/a1demo/dev1/thing/model/up_raw"),
            Some("/a1demo/dev1/thing/model/up_raw")
        );
        assert_eq!(forwarding_topic(&o, "/a1demo/dev1/user/update"), None);
        assert_eq!(forwarding_topic(&o, "/sys/a1demo/dev1/rrpc/response/1"), None);
    }
}

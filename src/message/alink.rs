//! Alink replies to a device's thing-model posts, as the platform sends them.
//!
//! A property post (`/sys/${pk}/${dn}/thing/event/property/post`), an event post
//! (`.../thing/event/${identifier}/post`), a batch post (`.../thing/event/property/batch/post`)
//! a history post (`.../thing/event/property/history/post`) or a tag report
//! (`.../thing/deviceinfo/update`, `.../thing/deviceinfo/delete`) is answered on the same topic
//! with `_reply` appended:
//! `{"code":200,"data":{},"id":"<request id>","message":"success","method":"thing.event.property.post","version":"1.0"}`.
//! A body that is not valid Alink JSON gets code 460 ("request parameter error", the platform's
//! code for empty or malformed parameters). A request carrying `"sys":{"ack":0}` asked for no
//! reply and gets none. The ingress sends the reply once the message is stored.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

/// The platform's success code.
pub const CODE_SUCCESS: u16 = 200;
/// The platform's code for empty, malformed or too many parameters.
pub const CODE_BAD_PARAMS: u16 = 460;
/// The platform's code for a device that does not exist (tag reports).
pub const CODE_NO_DEVICE: u16 = 6100;

/// A reply to publish to the device on its reply topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's topic with `_reply` appended.
    pub topic: String,
    /// The Alink reply body.
    pub payload: Bytes,
}

/// The request fields a reply needs; the rest of the body (its `params`) is skipped unparsed.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    sys: Value,
}

/// The reply to a post on `topic` (a device's own `/sys/.../thing/event/${identifier}/post`)
/// with body `payload`; `valid` says whether the body is valid Alink (whether it could be
/// converted). `None` when `topic` is not such a post or the device asked for no reply.
///
/// The reply echoes the request's `id` as the device sent it (`null` when the body has none or
/// cannot be read) and names the method of the topic, whatever `method` the body claims.
pub fn post_reply(topic: &str, payload: &[u8], valid: bool) -> Option<Reply> {
    if valid {
        reply_with(topic, payload, CODE_SUCCESS, "success")
    } else {
        reply_with(topic, payload, CODE_BAD_PARAMS, "request parameter error")
    }
}

/// What a reply needs of the request: its `id` and its `sys.ack`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The request's `id` as sent; null when the body has none or cannot be read.
    pub id: Value,
    /// `sys.ack`, when the body has one.
    pub ack: Option<Value>,
}

impl Request {
    /// Reads the request fields of `payload`, skipping the rest unparsed.
    pub fn read(payload: &[u8]) -> Self {
        match serde_json::from_slice::<Head>(payload) {
            Ok(head) => Self { id: head.id, ack: head.sys.get("ack").cloned() },
            Err(_) => Self::default(),
        }
    }
}

/// As [`post_reply`], with the given code and message.
pub fn reply_with(topic: &str, payload: &[u8], code: u16, message: &str) -> Option<Reply> {
    let method = post_method(topic)?;
    answer(topic, &method, Request::read(payload), code, message)
}

/// As [`post_reply`], for a request whose fields the caller has read already (from the one
/// parse of the body that converted it).
pub fn post_reply_to(topic: &str, request: Request, valid: bool) -> Option<Reply> {
    let method = post_method(topic)?;
    if valid {
        answer(topic, &method, request, CODE_SUCCESS, "success")
    } else {
        answer(topic, &method, request, CODE_BAD_PARAMS, "request parameter error")
    }
}

fn answer(topic: &str, method: &str, request: Request, code: u16, message: &str) -> Option<Reply> {
    let Request { id, ack } = request;
    if ack.is_some_and(|a| a == 0 || a == "0") {
        return None;
    }
    let body = json!({
        "code": code,
        "data": {},
        "id": id,
        "message": message,
        "method": method,
        "version": "1.0",
    });
    Some(Reply { topic: format!("{topic}_reply"), payload: Bytes::from(body.to_string()) })
}

/// `thing.event.${identifier}.post` for `/sys/${pk}/${dn}/thing/event/${identifier}/post`,
/// `thing.event.property.batch.post` and `thing.event.property.history.post` for the batch and
/// history posts, `thing.deviceinfo.update` and `thing.deviceinfo.delete` for tag reports.
fn post_method(topic: &str) -> Option<String> {
    let mut levels = topic.strip_prefix("/sys/")?.split('/');
    let (_pk, _dn) = (levels.next()?, levels.next()?);
    let rest: [Option<&str>; 6] = std::array::from_fn(|_| levels.next());
    match rest {
        [Some("thing"), Some("event"), Some(identifier), Some("post"), None, _] if !identifier.is_empty() => {
            Some(format!("thing.event.{identifier}.post"))
        }
        [Some("thing"), Some("event"), Some("property"), Some(kind @ ("batch" | "history")), Some("post"), None] => {
            Some(format!("thing.event.property.{kind}.post"))
        }
        [Some("thing"), Some("deviceinfo"), Some(op @ ("update" | "delete")), None, ..] => {
            Some(format!("thing.deviceinfo.{op}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROPERTY: &str = "/sys/a1demo/dev1/thing/event/property/post";

    fn body(r: &Reply) -> Value {
        serde_json::from_slice(&r.payload).unwrap()
    }

    #[test]
    fn property_post_gets_success() {
        let r = post_reply(PROPERTY, br#"{"id":"123","version":"1.0","params":{"t":1}}"#, true).unwrap();
        assert_eq!(r.topic, "/sys/a1demo/dev1/thing/event/property/post_reply");
        assert_eq!(
            body(&r),
            json!({"code":200,"data":{},"id":"123","message":"success","method":"thing.event.property.post","version":"1.0"})
        );
    }

    #[test]
    fn event_post_names_its_method() {
        let r = post_reply("/sys/a1demo/dev1/thing/event/alarm/post", br#"{"id":"7","params":{}}"#, true)
            .unwrap();
        assert_eq!(r.topic, "/sys/a1demo/dev1/thing/event/alarm/post_reply");
        assert_eq!(body(&r)["method"], "thing.event.alarm.post");
    }

    #[test]
    fn ack_zero_asks_for_none() {
        assert!(post_reply(PROPERTY, br#"{"id":"1","sys":{"ack":0},"params":{}}"#, true).is_none());
        assert!(post_reply(PROPERTY, br#"{"id":"1","sys":{"ack":"0"},"params":{}}"#, true).is_none());
        assert!(post_reply(PROPERTY, br#"{"id":"1","sys":{"ack":1},"params":{}}"#, true).is_some());
        assert!(post_reply(PROPERTY, br#"{"id":"1","sys":{"ack":0}}"#, false).is_none());
    }

    #[test]
    fn malformed_bodies_get_460() {
        let r = post_reply(PROPERTY, b"not json", false).unwrap();
        assert_eq!((body(&r)["code"].as_u64(), &body(&r)["id"]), (Some(460), &Value::Null));
        assert_eq!(body(&r)["message"], "request parameter error");
        let r = post_reply(PROPERTY, br#"{"id":"9"}"#, false).unwrap();
        assert_eq!((body(&r)["code"].as_u64(), &body(&r)["id"]), (Some(460), &json!("9")));
        let r = post_reply(PROPERTY, b"[1]", false).unwrap();
        assert_eq!(body(&r)["code"], 460);
    }

    #[test]
    fn batch_and_history_posts_are_answered() {
        for kind in ["batch", "history"] {
            let topic = format!("/sys/a1demo/dev1/thing/event/property/{kind}/post");
            let r = post_reply(&topic, br#"{"id":"3","params":{}}"#, true).unwrap();
            assert_eq!(r.topic, format!("{topic}_reply"));
            assert_eq!(body(&r)["method"], format!("thing.event.property.{kind}.post"));
        }
        let r = reply_with(
            "/sys/a1demo/dev1/thing/deviceinfo/delete",
            br#"{"id":"4"}"#,
            CODE_NO_DEVICE,
            "device not found",
        )
        .unwrap();
        assert_eq!(r.topic, "/sys/a1demo/dev1/thing/deviceinfo/delete_reply");
        assert_eq!(
            (&body(&r)["method"], &body(&r)["code"]),
            (&json!("thing.deviceinfo.delete"), &json!(6100))
        );
    }

    #[test]
    fn other_topics_get_none() {
        for topic in [
            "/a1demo/dev1/user/update",
            "/sys/a1demo/dev1/thing/event/alarm/history/post",
            "/sys/a1demo/dev1/thing/service/property/set_reply",
            "/sys/a1demo/dev1/thing/event/property/post_reply",
            "/sys/a1demo/dev1/thing/service/property/set",
            "/sys/a1demo/dev1/thing/event//post",
        ] {
            assert!(post_reply(topic, b"{}", true).is_none(), "{topic}");
        }
    }
}

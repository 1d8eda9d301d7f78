//! A device's replies to cloud calls, as the platform forwards them: the downlink reply.
//!
//! A device answers a property set on `/sys/${pk}/${dn}/thing/service/property/set_reply` and a
//! service call on `/sys/${pk}/${dn}/thing/service/${identifier}_reply` with
//! `{"id":"123","code":200,"data":{..},"message":"success","version":"1.0"}`. Rules and
//! subscriptions (upstream type) get, on `/${pk}/${dn}/thing/downlink/reply/message`,
//! `{"gmtCreate":..,"iotId":..,"productKey":..,"deviceName":..,"requestId":"123","code":200,"message":"success","topic":"/sys/${pk}/${dn}/thing/service/property/set","data":{..}}`:
//! `topic` is the request's topic, `requestId` the request's `id` as the device echoes it.
//!
//! [`DeviceReply`] is also what the cloud-to-device calls match their pending requests against.

use serde::Serialize;
use serde_json::Value;

use super::{to_bytes, ThingError};
use crate::message::{Origin, Platform};

/// `message` when a successful reply carries none.
const SUCCESS: &str = "success";

/// The forwarding topic of downlink replies of a device.
pub fn topic(product_key: &str, device_name: &str) -> String {
    format!("/{product_key}/{device_name}/thing/downlink/reply/message")
}

/// The request a reply tail answers: `property/set_reply` -> `property/set`,
/// `property/get_reply` -> `property/get`, `${identifier}_reply` -> `${identifier}` (one level).
/// `tail` is what follows `/sys/${pk}/${dn}/thing/service/`.
pub fn request_of(tail: &str) -> Option<&str> {
    let request = tail.strip_suffix("_reply")?;
    let ok = match request.split_once('/') {
        Some(("property", "set" | "get")) => true,
        Some(_) => false,
        None => !request.is_empty(),
    };
    ok.then_some(request)
}

/// A device's reply to a property set or service call, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReply {
    /// The request's topic: `/sys/${pk}/${dn}/thing/service/...` without `_reply`.
    pub request_topic: String,
    /// The `id` as the device sent it (the request's id when the device echoes it).
    pub request_id: Value,
    /// The device's result code (200 success).
    pub code: i64,
    /// The device's `message`; `success` for a code-200 reply without one, else empty.
    pub message: String,
    /// The device's `data` (the service's output); `{}` when absent.
    pub data: Value,
}

/// The reply fields read from the body; the rest is skipped.
#[derive(serde::Deserialize)]
struct Body {
    #[serde(default)]
    id: Value,
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

impl DeviceReply {
    /// The reply published on `topic` (a device's `/sys/.../thing/service/..._reply`, which the
    /// caller has recognised, see [`request_of`]).
    ///
    /// # Errors
    /// A body that is not JSON or has no numeric `code`.
    pub fn parse(topic: &str, payload: &[u8]) -> Result<Self, ThingError> {
        let request_topic = topic.strip_suffix("_reply").unwrap_or(topic).to_string();
        let body: Body = serde_json::from_slice(payload)?;
        let code = match body.code {
            Some(Value::Number(n)) => n.as_i64().ok_or(ThingError::NoCode)?,
            // Some SDKs write the code as a string.
            Some(Value::String(s)) => s.parse().map_err(|_| ThingError::NoCode)?,
            _ => return Err(ThingError::NoCode),
        };
        let message =
            body.message.unwrap_or_else(|| if code == 200 { SUCCESS.into() } else { String::new() });
        Ok(Self {
            request_topic,
            request_id: body.id,
            code,
            message,
            data: body.data.unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        })
    }

    /// The platform's downlink-reply message of this reply, received at `received_ms`.
    pub fn platform(&self, origin: &Origin, received_ms: u64) -> Platform {
        let body = Message {
            gmt_create: received_ms,
            iot_id: &origin.iot_id,
            product_key: &origin.product_key,
            device_name: &origin.device_name,
            request_id: &self.request_id,
            code: self.code,
            message: &self.message,
            topic: &self.request_topic,
            data: &self.data,
        };
        Platform { topic: topic(&origin.product_key, &origin.device_name), payload: to_bytes(&body) }
    }
}

/// The platform's downlink-reply body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    gmt_create: u64,
    iot_id: &'a str,
    product_key: &'a str,
    device_name: &'a str,
    request_id: &'a Value,
    code: i64,
    message: &'a str,
    topic: &'a str,
    data: &'a Value,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{json, origin};
    use super::super::{convert, ThingError};
    use super::*;
    use crate::message::Kind;

    #[test]
    fn request_tails() {
        assert_eq!(request_of("property/set_reply"), Some("property/set"));
        assert_eq!(request_of("property/get_reply"), Some("property/get"));
        assert_eq!(request_of("reboot_reply"), Some("reboot"));
        for none in ["property/set", "_reply", "a/b_reply", "reboot"] {
            assert_eq!(request_of(none), None, "{none}");
        }
    }

    #[test]
    fn property_set_reply_becomes_the_downlink_reply() {
        let c = convert(
            &origin(),
            "/sys/a1demo/dev1/thing/service/property/set_reply",
            br#"{"id":"123","code":200,"data":{},"version":"1.0"}"#,
            77,
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.kind, c.messages.len()), (Kind::Upstream, 1));
        let reply = c.reply.as_ref().expect("the parsed reply");
        assert_eq!((&reply.request_id, reply.code), (&json!("123"), 200));
        let p = &c.messages[0];
        assert_eq!(p.topic, "/a1demo/dev1/thing/downlink/reply/message");
        assert_eq!(
            json(p),
            json!({
                "gmtCreate": 77, "iotId": "iot1", "productKey": "a1demo", "deviceName": "dev1",
                "requestId": "123", "code": 200, "message": "success",
                "topic": "/sys/a1demo/dev1/thing/service/property/set", "data": {}
            })
        );
    }

    #[test]
    fn service_reply_keeps_the_output_and_the_device_code() {
        let body = br#"{"id":"9","code":"460","message":"bad args","data":{"out":1}}"#;
        let c = convert(&origin(), "/sys/a1demo/dev1/thing/service/reboot_reply", body, 1).unwrap().unwrap();
        let v = json(&c.messages[0]);
        assert_eq!(
            (&v["topic"], &v["code"], &v["message"], &v["data"]),
            (
                &json!("/sys/a1demo/dev1/thing/service/reboot"),
                &json!(460),
                &json!("bad args"),
                &json!({"out":1})
            )
        );
    }

    #[test]
    fn bad_replies() {
        let o = origin();
        let topic = "/sys/a1demo/dev1/thing/service/property/set_reply";
        assert!(matches!(convert(&o, topic, b"nope", 0), Some(Err(ThingError::NotJson(_)))));
        assert!(matches!(convert(&o, topic, br#"{"id":"1"}"#, 0), Some(Err(ThingError::NoCode))));
        assert!(matches!(convert(&o, topic, br#"{"id":"1","code":"x"}"#, 0), Some(Err(ThingError::NoCode))));
        assert!(matches!(convert(&o, topic, b"[1]", 0), Some(Err(ThingError::NotJson(_)))));
    }
}

//! Thing-model (Alink JSON) posts turned into the platform's forwarding format.
//!
//! `/sys/${pk}/${dn}/thing/event/property/post` with
//! `{"id":"1","version":"1.0","params":{"t":{"value":23.6,"time":1524448722000},"h":40}}`
//! becomes, on `/${pk}/${dn}/thing/event/property/post`,
//! `{"requestId":"1","productKey":..,"deviceName":..,"gmtCreate":..,"items":{"t":{"value":23.6,"time":1524448722000},"h":{"value":40,"time":<receive time>}}}`.
//! Event posts (`.../thing/event/${identifier}/post`) become the platform's event format.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::message::{Origin, Platform};

/// Why a thing-model post could not be converted (the raw message is still forwarded).
#[derive(Debug, thiserror::Error)]
pub enum ThingError {
    /// Not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// No `params` object.
    #[error("no \"params\" object")]
    NoParams,
}

/// Converts a thing-model post of `origin` on `topic`. `None` for topics that need no
/// conversion; `Some(Err)` when the payload is not valid Alink JSON.
pub fn convert(
    origin: &Origin,
    topic: &str,
    payload: &[u8],
    received_ms: u64,
) -> Option<Result<Platform, ThingError>> {
    let rest = topic.strip_prefix("/sys/")?;
    let forwarding_topic = &topic["/sys".len()..];
    let tail = rest
        .strip_prefix(origin.product_key.as_str())?
        .strip_prefix('/')?
        .strip_prefix(origin.device_name.as_str())?
        .strip_prefix("/thing/event/")?;
    let identifier = tail.strip_suffix("/post")?;
    if identifier.contains('/') {
        return None;
    }
    let result = parse(payload).map(|(request_id, params)| {
        let body = if identifier == "property" {
            property_post(origin, request_id, params, received_ms)
        } else {
            event_post(origin, identifier, request_id, params, received_ms)
        };
        Platform {
            topic: forwarding_topic.to_string(),
            payload: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        }
    });
    Some(result)
}

fn parse(payload: &[u8]) -> Result<(Value, Map<String, Value>), ThingError> {
    let mut v: Value = serde_json::from_slice(payload)?;
    let request_id = v.get_mut("id").map(Value::take).unwrap_or(Value::Null);
    match v.get_mut("params").map(Value::take) {
        Some(Value::Object(params)) => Ok((request_id, params)),
        _ => Err(ThingError::NoParams),
    }
}

fn property_post(origin: &Origin, request_id: Value, params: Map<String, Value>, now: u64) -> Value {
    let items: Map<String, Value> = params
        .into_iter()
        .map(|(name, v)| {
            // Devices send {"value":..,"time":..}; SDK samples also send bare values.
            let item = match v {
                Value::Object(mut o) if o.contains_key("value") => {
                    let time = o.remove("time").filter(Value::is_number).unwrap_or_else(|| now.into());
                    json!({"value": o.remove("value").unwrap_or(Value::Null), "time": time})
                }
                bare => json!({"value": bare, "time": now}),
            };
            (name, item)
        })
        .collect();
    json!({
        "requestId": request_id,
        "productKey": origin.product_key,
        "deviceName": origin.device_name,
        "gmtCreate": now,
        "items": items,
    })
}

fn event_post(
    origin: &Origin,
    identifier: &str,
    request_id: Value,
    mut params: Map<String, Value>,
    now: u64,
) -> Value {
    let time = params.remove("time").filter(Value::is_number).unwrap_or_else(|| now.into());
    let value = params.remove("value").unwrap_or(Value::Object(params));
    json!({
        "identifier": identifier,
        "requestId": request_id,
        "productKey": origin.product_key,
        "deviceName": origin.device_name,
        "gmtCreate": now,
        "value": value,
        "time": time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { product_key: "a1demo".into(), device_name: "dev1".into(), client_id: "c".into(), peer: None }
    }

    #[test]
    fn property_post_becomes_items() {
        let payload = br#"{"id":"123","version":"1.0","params":{"Power":{"value":"on","time":1524448722000},"WF":23.6},"method":"thing.event.property.post"}"#;
        let p =
            convert(&origin(), "/sys/a1demo/dev1/thing/event/property/post", payload, 99).unwrap().unwrap();
        assert_eq!(p.topic, "/a1demo/dev1/thing/event/property/post");
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(v["items"]["Power"], json!({"value":"on","time":1524448722000u64}));
        assert_eq!(v["items"]["WF"], json!({"value":23.6,"time":99}));
        assert_eq!(v["productKey"], "a1demo");
        assert_eq!(v["deviceName"], "dev1");
        assert_eq!(v["gmtCreate"], 99);
        assert_eq!(v["requestId"], "123");
    }

    #[test]
    fn event_post_keeps_identifier_and_value() {
        let payload = br#"{"id":"7","params":{"value":{"code":1},"time":5}}"#;
        let p = convert(&origin(), "/sys/a1demo/dev1/thing/event/alarm/post", payload, 9).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(
            (v["identifier"].as_str(), &v["value"], &v["time"]),
            (Some("alarm"), &json!({"code":1}), &json!(5))
        );
    }

    #[test]
    fn other_topics_and_bad_payloads() {
        assert!(convert(&origin(), "/a1demo/dev1/user/update", b"{}", 0).is_none());
        assert!(convert(&origin(), "/sys/a1demo/dev1/thing/model/up_raw", b"\x01", 0).is_none());
        assert!(matches!(
            convert(&origin(), "/sys/a1demo/dev1/thing/event/property/post", b"not json", 0),
            Some(Err(ThingError::NotJson(_)))
        ));
        assert!(matches!(
            convert(&origin(), "/sys/a1demo/dev1/thing/event/property/post", b"{\"id\":\"1\"}", 0),
            Some(Err(ThingError::NoParams))
        ));
    }
}

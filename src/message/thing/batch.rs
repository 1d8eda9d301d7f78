//! Batch and history posts.
//!
//! A batch post (`/sys/${pk}/${dn}/thing/event/property/batch/post`,
//! `thing.event.property.batch.post`) carries
//! `{"properties":{"Power":[{"value":"on","time":..},..]},"events":{"alarm":[{"value":{..},"time":..}]}}`.
//! It becomes one message on `/${pk}/${dn}/thing/property/batch/post` when it has properties and
//! one on `/${pk}/${dn}/thing/event/batch/post` when it has events, each shaped as a property post
//! whose `items` map an identifier to its list of `{"value","time"}`.
//!
//! A history post (`/sys/${pk}/${dn}/thing/event/property/history/post`,
//! `thing.event.property.history.post`) carries a list of
//! `{"identity":{"productKey","deviceName"},"properties":[{..}],"events":[{"alarm":{"value","time"}}]}`.
//! Each element of `properties` becomes a property post on
//! `/${pk}/${dn}/thing/event/property/history/post`, each event an event post on
//! `/${pk}/${dn}/thing/event/${identifier}/history/post`: the live shapes, as the platform says.
//! Both are of the thing-history subscription type. An entry whose `identity` names another
//! device is refused: iotpipe has no gateways, so a device reports only its own history.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::post::{event_body, property_body};
use super::{to_bytes, Alink, Converted, Empty, Item, ThingError, MAX_CONVERTED};
use crate::message::{Kind, Origin, Platform};

const BATCH: &str = "thing.event.property.batch.post";
const HISTORY: &str = "thing.event.property.history.post";

/// A batch post's one or two platform messages.
pub(super) fn batch_post(origin: &Origin, alink: Alink, received_ms: u64) -> Result<Converted, ThingError> {
    let Value::Object(params) = &alink.params else {
        return Err(ThingError::NoParams);
    };
    let mut messages = Vec::with_capacity(2);
    for (key, forwarding) in
        [("properties", "thing/property/batch/post"), ("events", "thing/event/batch/post")]
    {
        let lists = match params.get(key) {
            None => continue,
            Some(Value::Object(lists)) => lists,
            Some(_) => {
                return Err(ThingError::BadParams(BATCH, "\"properties\" and \"events\" must be objects"))
            }
        };
        if lists.values().any(|l| !l.is_array()) {
            return Err(ThingError::BadParams(
                BATCH,
                "each identifier maps to a list of {\"value\",\"time\"}",
            ));
        }
        if lists.is_empty() {
            continue;
        }
        let body = BatchPost {
            iot_id: &origin.iot_id,
            request_id: &alink.id,
            device_type: &origin.device_type,
            check_failed_data: Empty {},
            product_key: &origin.product_key,
            device_name: &origin.device_name,
            gmt_create: received_ms,
            items: Lists { lists, received_ms },
        };
        let topic = format!("/{}/{}/{forwarding}", origin.product_key, origin.device_name);
        messages.push(Platform { topic, payload: to_bytes(&body) });
    }
    if messages.is_empty() {
        return Err(ThingError::BadParams(BATCH, "neither \"properties\" nor \"events\" has an entry"));
    }
    Ok(Converted { kind: Kind::Upstream, messages, reply: None, body: None })
}

/// A history post's platform messages, one per properties element and one per event.
pub(super) fn history_post(origin: &Origin, alink: Alink, received_ms: u64) -> Result<Converted, ThingError> {
    let Value::Array(entries) = &alink.params else {
        return Err(ThingError::BadParams(HISTORY, "\"params\" must be a list"));
    };
    let bad = |why| ThingError::BadParams(HISTORY, why);
    let mut count = 0usize;
    for entry in entries {
        let entry = entry.as_object().ok_or(bad("each entry must be an object"))?;
        check_identity(origin, entry.get("identity"))?;
        for key in ["properties", "events"] {
            match entry.get(key) {
                None => {}
                Some(Value::Array(list)) => {
                    for element in list {
                        let element =
                            element.as_object().ok_or(bad("\"properties\" and \"events\" hold objects"))?;
                        count += if key == "properties" { 1 } else { element.len() };
                    }
                }
                Some(_) => return Err(bad("\"properties\" and \"events\" must be lists")),
            }
        }
    }
    if count > MAX_CONVERTED {
        return Err(ThingError::TooMany(count));
    }
    if count == 0 {
        return Err(bad("no entry has properties or events"));
    }
    let base = format!("/{}/{}/thing/event/", origin.product_key, origin.device_name);
    let mut messages = Vec::with_capacity(count);
    let lists = entries.iter().filter_map(Value::as_object);
    for entry in lists {
        for element in entry.get("properties").and_then(Value::as_array).into_iter().flatten() {
            let Some(params) = element.as_object() else { continue };
            let body = property_body(origin, &alink.id, params, received_ms);
            messages
                .push(Platform { topic: format!("{base}property/history/post"), payload: to_bytes(&body) });
        }
        for element in entry.get("events").and_then(Value::as_array).into_iter().flatten() {
            for (identifier, event) in element.as_object().into_iter().flatten() {
                let body = match event.as_object() {
                    Some(params) => event_body(origin, identifier, &alink.id, params, received_ms),
                    None => return Err(bad("an event is {\"value\",\"time\"}")),
                };
                messages.push(Platform {
                    topic: format!("{base}{identifier}/history/post"),
                    payload: to_bytes(&body),
                });
            }
        }
    }
    Ok(Converted { kind: Kind::ThingHistory, messages, reply: None, body: None })
}

/// Refuses an `identity` naming a device other than the sender.
fn check_identity(origin: &Origin, identity: Option<&Value>) -> Result<(), ThingError> {
    let Some(identity) = identity else { return Ok(()) };
    let field = |k: &str| identity.get(k).and_then(Value::as_str).unwrap_or_default();
    let (pk, dn) = (field("productKey"), field("deviceName"));
    let own = (pk.is_empty() || pk == origin.product_key) && (dn.is_empty() || dn == origin.device_name);
    if own {
        Ok(())
    } else {
        Err(ThingError::ForeignIdentity(format!("{pk}/{dn}")))
    }
}

/// The platform's batch post.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchPost<'a> {
    iot_id: &'a str,
    request_id: &'a Value,
    device_type: &'a str,
    check_failed_data: Empty,
    product_key: &'a str,
    device_name: &'a str,
    gmt_create: u64,
    items: Lists<'a>,
}

/// `items` of a batch: identifier -> list of `{"value","time"}`.
struct Lists<'a> {
    lists: &'a Map<String, Value>,
    received_ms: u64,
}

impl Serialize for Lists<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.lists.len()))?;
        for (name, list) in self.lists {
            map.serialize_entry(name, &List { list, received_ms: self.received_ms })?;
        }
        map.end()
    }
}

/// One identifier's list of `{"value","time"}`, written as it is read.
struct List<'a> {
    list: &'a Value,
    received_ms: u64,
}

impl Serialize for List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items = self.list.as_array().map(Vec::as_slice).unwrap_or_default();
        s.collect_seq(items.iter().map(|v| Item::of(v, self.received_ms)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{json, origin};
    use super::super::{convert, ThingError};
    use crate::message::Kind;

    const BATCH: &str = "/sys/a1demo/dev1/thing/event/property/batch/post";
    const HISTORY: &str = "/sys/a1demo/dev1/thing/event/property/history/post";

    #[test]
    fn batch_becomes_a_property_and_an_event_message() {
        let body = br#"{"id":"5","version":"1.0","params":{
            "properties":{"Power":[{"value":"on","time":1},{"value":"off","time":2}],"WF":[3]},
            "events":{"alarm":[{"value":{"code":1},"time":4}]}},"method":"thing.event.property.batch.post"}"#;
        let c = convert(&origin(), BATCH, body, 50).unwrap().unwrap();
        assert_eq!(c.kind, Kind::Upstream);
        let topics: Vec<&str> = c.messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["/a1demo/dev1/thing/property/batch/post", "/a1demo/dev1/thing/event/batch/post"]);
        assert_eq!(
            json(&c.messages[0]),
            json!({
                "iotId": "iot1", "requestId": "5", "deviceType": "Ammeter", "checkFailedData": {},
                "productKey": "a1demo", "deviceName": "dev1", "gmtCreate": 50,
                "items": {"Power": [{"value":"on","time":1},{"value":"off","time":2}], "WF": [{"value":3,"time":50}]}
            })
        );
        assert_eq!(json(&c.messages[1])["items"], json!({"alarm": [{"value":{"code":1},"time":4}]}));
        let only_props = br#"{"id":"6","params":{"properties":{"t":[{"value":1,"time":1}]}}}"#;
        assert_eq!(convert(&origin(), BATCH, only_props, 0).unwrap().unwrap().messages.len(), 1);
    }

    #[test]
    fn bad_batches() {
        for body in [
            &br#"{"id":"1","params":{}}"#[..],
            br#"{"id":"1","params":{"properties":[]}}"#,
            br#"{"id":"1","params":{"properties":{"t":1}}}"#,
            br#"{"id":"1","params":[]}"#,
        ] {
            assert!(
                matches!(convert(&origin(), BATCH, body, 0), Some(Err(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn history_becomes_live_shaped_history_messages() {
        let body = br#"{"id":"9","version":"1.0","method":"thing.event.property.history.post","params":[
            {"identity":{"productKey":"a1demo","deviceName":"dev1"},
             "properties":[{"Power":{"value":"on","time":1}},{"Power":{"value":"off","time":2}}],
             "events":[{"alarm":{"value":{"code":1},"time":3}}]},
            {"properties":[{"WF":{"value":4.5,"time":5}}]}]}"#;
        let c = convert(&origin(), HISTORY, body, 60).unwrap().unwrap();
        assert_eq!(c.kind, Kind::ThingHistory);
        let topics: Vec<&str> = c.messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "/a1demo/dev1/thing/event/property/history/post",
                "/a1demo/dev1/thing/event/property/history/post",
                "/a1demo/dev1/thing/event/alarm/history/post",
                "/a1demo/dev1/thing/event/property/history/post",
            ]
        );
        assert_eq!(json(&c.messages[1])["items"], json!({"Power": {"value":"off","time":2}}));
        assert_eq!(json(&c.messages[1])["iotId"], "iot1");
        let event = json(&c.messages[2]);
        assert_eq!(
            (&event["identifier"], &event["value"], &event["time"]),
            (&json!("alarm"), &json!({"code":1}), &json!(3))
        );
    }

    #[test]
    fn bad_histories() {
        let foreign = br#"{"id":"1","params":[{"identity":{"productKey":"a1demo","deviceName":"dev2"},"properties":[{"t":1}]}]}"#;
        assert!(matches!(convert(&origin(), HISTORY, foreign, 0), Some(Err(ThingError::ForeignIdentity(_)))));
        let many: Vec<String> = (0..201).map(|i| format!("{{\"t\":{i}}}")).collect();
        let body = format!("{{\"id\":\"1\",\"params\":[{{\"properties\":[{}]}}]}}", many.join(","));
        assert!(matches!(
            convert(&origin(), HISTORY, body.as_bytes(), 0),
            Some(Err(ThingError::TooMany(201)))
        ));
        for body in [
            &br#"{"id":"1","params":{}}"#[..],
            br#"{"id":"1","params":[]}"#,
            br#"{"id":"1","params":[{"properties":{}}]}"#,
        ] {
            assert!(matches!(convert(&origin(), HISTORY, body, 0), Some(Err(ThingError::BadParams(..)))));
        }
    }
}

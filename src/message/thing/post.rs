//! Live property and event posts.
//!
//! `/sys/${pk}/${dn}/thing/event/property/post` with
//! `{"id":"1","version":"1.0","params":{"t":{"value":23.6,"time":1524448722000},"h":40}}`
//! becomes, on `/${pk}/${dn}/thing/event/property/post`,
//! `{"iotId":..,"requestId":"1","deviceType":..,"checkFailedData":{},"productKey":..,"deviceName":..,"gmtCreate":..,"items":{"t":{"value":23.6,"time":1524448722000},"h":{"value":40,"time":<receive time>}}}`.
//!
//! `/sys/${pk}/${dn}/thing/event/${identifier}/post` with `{"id":"7","params":{"value":{..},"time":..}}`
//! becomes `{"identifier":..,"name":..,"type":"info","iotId":..,"requestId":"7","productKey":..,"deviceName":..,"gmtCreate":..,"value":{..},"time":..}`.
//! iotpipe holds no TSL: an event's `name` is its identifier and its `type` is `info`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::{to_bytes, Alink, Body, Converted, Empty, Item, ThingError, Time};
use crate::message::{Kind, Origin, Platform};

/// The event type iotpipe gives every event (the TSL's `info`, `alert` or `error` is unknown).
pub const EVENT_TYPE: &str = "info";

/// A live post of `identifier` (`property` for properties) on forwarding topic `forwarding`:
/// one platform message, and the parsed body kept for the rules.
pub(super) fn post(
    origin: &Origin,
    forwarding: &str,
    identifier: &str,
    alink: Alink,
    received_ms: u64,
) -> Result<Converted, ThingError> {
    let Alink { id, params } = alink;
    let Value::Object(params) = params else {
        return Err(ThingError::NoParams);
    };
    let (payload, event) = if identifier == "property" {
        (to_bytes(&property_body(origin, &id, &params, received_ms)), None)
    } else {
        (to_bytes(&event_body(origin, identifier, &id, &params, received_ms)), Some(identifier.to_string()))
    };
    let body = Body { id, params, event, received_ms };
    Ok(Converted {
        kind: Kind::Upstream,
        messages: vec![Platform { topic: forwarding.to_string(), payload }],
        reply: None,
        body: Some(Arc::new(body)),
    })
}

/// A property post's body over `params` (identifier -> value or `{"value","time"}`).
pub(super) fn property_body<'a>(
    origin: &'a Origin,
    request_id: &'a Value,
    params: &'a Map<String, Value>,
    received_ms: u64,
) -> PropertyPost<'a> {
    PropertyPost {
        iot_id: &origin.iot_id,
        request_id,
        device_type: &origin.device_type,
        check_failed_data: Empty {},
        product_key: &origin.product_key,
        device_name: &origin.device_name,
        gmt_create: received_ms,
        items: Items { params, received_ms },
    }
}

/// An event post's body over `params` (`{"value": {..}, "time": ..}`; a body without `value`
/// is taken whole as the value, less its `time`).
pub(super) fn event_body<'a>(
    origin: &'a Origin,
    identifier: &'a str,
    request_id: &'a Value,
    params: &'a Map<String, Value>,
    received_ms: u64,
) -> EventPost<'a> {
    let value = match params.get("value") {
        Some(v) => Cow::Borrowed(v),
        None => {
            let mut rest = params.clone();
            rest.remove("time");
            Cow::Owned(Value::Object(rest))
        }
    };
    EventPost {
        identifier,
        name: identifier,
        r#type: EVENT_TYPE,
        iot_id: &origin.iot_id,
        request_id,
        product_key: &origin.product_key,
        device_name: &origin.device_name,
        gmt_create: received_ms,
        value,
        time: Time::of(params.get("time"), received_ms),
    }
}

/// The platform's property post.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PropertyPost<'a> {
    iot_id: &'a str,
    request_id: &'a Value,
    device_type: &'a str,
    check_failed_data: Empty,
    product_key: &'a str,
    device_name: &'a str,
    gmt_create: u64,
    items: Items<'a>,
}

/// The platform's event post.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventPost<'a> {
    identifier: &'a str,
    name: &'a str,
    r#type: &'static str,
    iot_id: &'a str,
    request_id: &'a Value,
    product_key: &'a str,
    device_name: &'a str,
    gmt_create: u64,
    value: Cow<'a, Value>,
    time: Time<'a>,
}

impl PropertyPost<'_> {
    /// The members `keys` names (all for `None`) as JSON values: what parsing the serialised
    /// body would give, member by member, in the order of the struct above.
    pub(super) fn members(&self, keys: Option<&[&str]>) -> Result<Map<String, Value>, serde_json::Error> {
        let mut m = Members::new(keys);
        m.put("iotId", self.iot_id)?;
        m.put("requestId", self.request_id)?;
        m.put("deviceType", self.device_type)?;
        m.put("checkFailedData", self.check_failed_data)?;
        m.put("productKey", self.product_key)?;
        m.put("deviceName", self.device_name)?;
        m.put("gmtCreate", self.gmt_create)?;
        m.put("items", &self.items)?;
        Ok(m.map)
    }
}

impl EventPost<'_> {
    /// As [`PropertyPost::members`].
    pub(super) fn members(&self, keys: Option<&[&str]>) -> Result<Map<String, Value>, serde_json::Error> {
        let mut m = Members::new(keys);
        m.put("identifier", self.identifier)?;
        m.put("name", self.name)?;
        m.put("type", self.r#type)?;
        m.put("iotId", self.iot_id)?;
        m.put("requestId", self.request_id)?;
        m.put("productKey", self.product_key)?;
        m.put("deviceName", self.device_name)?;
        m.put("gmtCreate", self.gmt_create)?;
        m.put("value", &self.value)?;
        m.put("time", self.time)?;
        Ok(m.map)
    }
}

/// A JSON object of the wanted members of a body.
struct Members<'k> {
    keys: Option<&'k [&'k str]>,
    map: Map<String, Value>,
}

impl<'k> Members<'k> {
    fn new(keys: Option<&'k [&'k str]>) -> Self {
        Self { keys, map: Map::new() }
    }

    fn put(&mut self, name: &str, value: impl Serialize) -> Result<(), serde_json::Error> {
        if self.keys.is_none_or(|k| k.contains(&name)) {
            self.map.insert(name.to_string(), serde_json::to_value(value)?);
        }
        Ok(())
    }
}

/// `items`: every parameter as `{"value","time"}`, written straight from the parsed body.
struct Items<'a> {
    params: &'a Map<String, Value>,
    received_ms: u64,
}

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.params.len()))?;
        for (name, v) in self.params {
            map.serialize_entry(name, &Item::of(v, self.received_ms))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::super::tests::{json, origin};
    use super::super::{convert, Converted};
    use crate::message::Kind;

    fn one(c: Converted) -> crate::message::Platform {
        assert_eq!((c.kind, c.messages.len()), (Kind::Upstream, 1));
        c.messages.into_iter().next().unwrap()
    }

    #[test]
    fn property_post_becomes_items() {
        let payload = br#"{"id":"123","version":"1.0","params":{"Power":{"value":"on","time":1524448722000},"WF":23.6},"method":"thing.event.property.post"}"#;
        let p = one(convert(&origin(), "/sys/a1demo/dev1/thing/event/property/post", payload, 99)
            .unwrap()
            .unwrap());
        assert_eq!(p.topic, "/a1demo/dev1/thing/event/property/post");
        assert_eq!(
            json(&p),
            json!({
                "iotId": "iot1", "requestId": "123", "deviceType": "Ammeter", "checkFailedData": {},
                "productKey": "a1demo", "deviceName": "dev1", "gmtCreate": 99,
                "items": {"Power": {"value":"on","time":1524448722000u64}, "WF": {"value":23.6,"time":99}}
            })
        );
    }

    #[test]
    fn a_live_post_keeps_the_value_its_bytes_parse_to() {
        let posts: [(&str, &[u8]); 4] = [
            (
                "/sys/a1demo/dev1/thing/event/property/post",
                br#"{"id":"1","params":{"t":{"value":23.6,"time":1524448722000},"h":40,"r":-0.1,"big":18446744073709551615,"neg":-9223372036854775808,"s":"a\"b\u00e9","o":{"value":{"x":[1,2.5e-7,null,true]}},"late":{"value":1,"time":"x"}}}"#,
            ),
            ("/sys/a1demo/dev1/thing/event/property/post", br#"{"params":{}}"#),
            ("/sys/a1demo/dev1/thing/event/alarm/post", br#"{"id":7,"params":{"value":{"code":1.25},"time":5}}"#),
            ("/sys/a1demo/dev1/thing/event/alarm/post", br#"{"id":"8","params":{"code":2,"time":"late"}}"#),
        ];
        for (topic, payload) in posts {
            let c = convert(&origin(), topic, payload, 99).unwrap().unwrap();
            let body = c.body.clone().expect("a live post keeps its parsed body");
            let parsed = json(&c.messages[0]);
            assert_eq!(body.value(&origin(), None).as_ref(), Some(&parsed), "{topic}");
            let Value::Object(members) = &parsed else { panic!("an object") };
            for keys in [&["items", "requestId", "value", "nothing"][..], &["time"], &[]] {
                let wanted: Map<String, Value> = members
                    .iter()
                    .filter(|(k, _)| keys.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(
                    body.value(&origin(), Some(keys)),
                    Some(Value::Object(wanted)),
                    "{topic} {keys:?}"
                );
            }
        }
        let batch = br#"{"id":"1","params":{"properties":{"t":[{"value":1,"time":2}]}}}"#;
        let c = convert(&origin(), "/sys/a1demo/dev1/thing/event/property/batch/post", batch, 9);
        assert_eq!(c.unwrap().unwrap().body, None, "other kinds keep none");
    }

    #[test]
    fn event_post_has_identifier_name_type_and_value() {
        let payload = br#"{"id":"7","params":{"value":{"code":1},"time":5}}"#;
        let p =
            one(convert(&origin(), "/sys/a1demo/dev1/thing/event/alarm/post", payload, 9).unwrap().unwrap());
        assert_eq!(p.topic, "/a1demo/dev1/thing/event/alarm/post");
        assert_eq!(
            json(&p),
            json!({
                "identifier": "alarm", "name": "alarm", "type": "info", "iotId": "iot1", "requestId": "7",
                "productKey": "a1demo", "deviceName": "dev1", "gmtCreate": 9, "value": {"code": 1}, "time": 5
            })
        );
        let bare = br#"{"id":"8","params":{"code":2,"time":"late"}}"#;
        let p = one(convert(&origin(), "/sys/a1demo/dev1/thing/event/alarm/post", bare, 9).unwrap().unwrap());
        assert_eq!((&json(&p)["value"], &json(&p)["time"]), (&json!({"code": 2}), &json!(9)));
    }
}

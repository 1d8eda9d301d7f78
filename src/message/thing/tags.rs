//! Device tags: the tag-change messages the platform sends when a device's tags change, and the
//! tag reports a device may send itself.
//!
//! A change is announced on `/${pk}/${dn}/thing/deviceinfo/update` as at most two messages:
//! `{"action":"UPDATE","iotId","productKey","deviceName","items":[{"attrKey","attrValue"}],"messageCreateTime"}`
//! with the tags set or changed, and `"action":"DELETE"` with `items` of `{"attrKey"}` for the
//! tags removed. The platform documents the message type but not its body; the words are those
//! of its device tag protocol.
//!
//! A device reports tags on `/sys/${pk}/${dn}/thing/deviceinfo/update`
//! (`thing.deviceinfo.update`, `params: [{"attrKey","attrValue"}]`) and removes them on
//! `.../thing/deviceinfo/delete` (`thing.deviceinfo.delete`, `params: [{"attrKey"}]`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::{thing_tail, to_bytes, Alink, ThingError};
use crate::message::Origin;

/// Items in one tag report: the platform's limit.
pub const MAX_REPORTED: usize = 200;

/// The tag-change topic of a device.
pub fn topic(product_key: &str, device_name: &str) -> String {
    format!("/{product_key}/{device_name}/thing/deviceinfo/update")
}

/// Who a tag-change message is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// iotId.
    pub iot_id: &'a str,
    /// productKey.
    pub product_key: &'a str,
    /// deviceName.
    pub device_name: &'a str,
}

/// The tag-change bodies for a change from `before` to `after`: an `UPDATE` when tags were set
/// or changed, a `DELETE` when some were removed; none when nothing changed.
pub fn change_bodies(
    subject: Subject<'_>,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    now_ms: u64,
) -> Vec<Bytes> {
    let updated: Vec<Attr<'_>> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| Attr { attr_key: k, attr_value: Some(v) })
        .collect();
    let deleted: Vec<Attr<'_>> = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(|k| Attr { attr_key: k, attr_value: None })
        .collect();
    [("UPDATE", updated), ("DELETE", deleted)]
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(action, items)| {
            to_bytes(&Change {
                action,
                iot_id: subject.iot_id,
                product_key: subject.product_key,
                device_name: subject.device_name,
                items,
                message_create_time: now_ms,
            })
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Change<'a> {
    action: &'static str,
    iot_id: &'a str,
    product_key: &'a str,
    device_name: &'a str,
    items: Vec<Attr<'a>>,
    message_create_time: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Attr<'a> {
    attr_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attr_value: Option<&'a str>,
}

/// What a device's tag report asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOp {
    /// `thing.deviceinfo.update`: set tags.
    Update,
    /// `thing.deviceinfo.delete`: remove tags.
    Delete,
}

/// The tag report `topic` is, when it is one of `origin`'s own.
pub fn report_op(origin: &Origin, topic: &str) -> Option<ReportOp> {
    match thing_tail(origin, topic)? {
        "deviceinfo/update" => Some(ReportOp::Update),
        "deviceinfo/delete" => Some(ReportOp::Delete),
        _ => None,
    }
}

/// The edits of a tag report: `(key, Some(value))` to set, `(key, None)` to remove.
///
/// # Errors
/// Not JSON, `params` not a list of objects with a string `attrKey` (and, to set, a string
/// `attrValue`), or more than [`MAX_REPORTED`] items.
pub fn parse_report(op: ReportOp, payload: &[u8]) -> Result<Vec<(String, Option<String>)>, ThingError> {
    const METHOD: [&str; 2] = ["thing.deviceinfo.update", "thing.deviceinfo.delete"];
    let method = METHOD[usize::from(op == ReportOp::Delete)];
    let alink = Alink::parse(payload)?;
    let Value::Array(items) = alink.params else {
        return Err(ThingError::BadParams(method, "\"params\" must be a list"));
    };
    if items.len() > MAX_REPORTED {
        return Err(ThingError::BadParams(method, "at most 200 items"));
    }
    items
        .into_iter()
        .map(|item| {
            let key = item.get("attrKey").and_then(Value::as_str);
            let value = item.get("attrValue").and_then(Value::as_str);
            match (op, key, value) {
                (_, None, _) => Err(ThingError::BadParams(method, "each item needs a string \"attrKey\"")),
                (ReportOp::Update, Some(_), None) => {
                    Err(ThingError::BadParams(method, "each item needs a string \"attrValue\""))
                }
                (ReportOp::Update, Some(k), Some(v)) => Ok((k.to_string(), Some(v.to_string()))),
                (ReportOp::Delete, Some(k), _) => Ok((k.to_string(), None)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::origin;
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn changes_become_update_and_delete() {
        let subject = Subject { iot_id: "i", product_key: "p", device_name: "d" };
        let bodies =
            change_bodies(subject, &tags(&[("a", "1"), ("b", "2")]), &tags(&[("a", "1"), ("c", "3")]), 9);
        let v: Vec<serde_json::Value> = bodies.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
        assert_eq!(
            v,
            [
                json!({"action":"UPDATE","iotId":"i","productKey":"p","deviceName":"d","items":[{"attrKey":"c","attrValue":"3"}],"messageCreateTime":9}),
                json!({"action":"DELETE","iotId":"i","productKey":"p","deviceName":"d","items":[{"attrKey":"b"}],"messageCreateTime":9}),
            ]
        );
        assert!(change_bodies(subject, &tags(&[("a", "1")]), &tags(&[("a", "1")]), 0).is_empty());
    }

    #[test]
    fn reports() {
        let o = origin();
        assert_eq!(report_op(&o, "/sys/a1demo/dev1/thing/deviceinfo/update"), Some(ReportOp::Update));
        assert_eq!(report_op(&o, "/sys/a1demo/dev1/thing/deviceinfo/delete"), Some(ReportOp::Delete));
        assert_eq!(report_op(&o, "/sys/a1demo/dev2/thing/deviceinfo/update"), None);
        let set = br#"{"id":"1","params":[{"attrKey":"room","attrValue":"lab"}],"method":"thing.deviceinfo.update"}"#;
        assert_eq!(
            parse_report(ReportOp::Update, set).unwrap(),
            [("room".to_string(), Some("lab".to_string()))]
        );
        let del = br#"{"id":"2","params":[{"attrKey":"room"}]}"#;
        assert_eq!(parse_report(ReportOp::Delete, del).unwrap(), [("room".to_string(), None)]);
        for bad in [
            &br#"{"id":"3","params":[{"attrKey":"room"}]}"#[..],
            br#"{"params":{}}"#,
            b"x",
            br#"{"params":[{"attrValue":"v"}]}"#,
        ] {
            assert!(parse_report(ReportOp::Update, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

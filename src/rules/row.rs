//! The result of a rule: a JSON object that keeps the order of the SELECT list, or, for
//! `SELECT *` of a JSON array payload, that array.
//!
//! serde_json's `Map` sorts keys (the crate is built without `preserve_order`), but users read
//! results in the order they wrote their SELECT, so the result is a small ordered list.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// An ordered JSON object. A key set twice keeps its first position and its last value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(Vec<(Arc<str>, Value)>, Option<Value>);

impl Row {
    /// An empty row with room for `n` fields.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n), None)
    }

    /// Makes the result the array `whole` (`SELECT *` of an array payload) instead of an object.
    pub(crate) fn set_whole(&mut self, whole: Value) {
        self.1 = Some(whole);
    }

    /// The array the result is, when it is one (`SELECT *` of an array payload).
    pub fn whole(&self) -> Option<&Value> {
        self.1.as_ref()
    }

    /// Sets a field; null values are left out (a missing field is not part of the result).
    pub(crate) fn set(&mut self, key: &str, value: Value) {
        if value.is_null() {
            return;
        }
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| &**k == key) {
            slot.1 = value;
        } else {
            self.0.push((Arc::from(key), value));
        }
    }

    /// Like [`Row::set`] with a key the caller keeps: compiled rules share their keys with
    /// every result instead of copying them.
    pub(crate) fn set_shared(&mut self, key: &Arc<str>, value: Value) {
        if value.is_null() {
            return;
        }
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.0.push((Arc::clone(key), value));
        }
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    /// Fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the row has no field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The row as compact JSON text.
    pub fn to_json(&self) -> String {
        // Serializing strings and serde_json values into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The row as a serde_json object (key order is lost), or the array it is.
    pub fn to_value(&self) -> Value {
        if let Some(whole) = &self.1 {
            return whole.clone();
        }
        Value::Object(self.0.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(whole) = &self.1 {
            return whole.serialize(s);
        }
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(&**k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_order_skips_nulls_and_overwrites_in_place() {
        let mut r = Row::default();
        r.set("t", json!(40));
        r.set("dn", json!("dev1"));
        r.set("gone", Value::Null);
        r.set("t", json!(41));
        assert_eq!(r.to_json(), r#"{"t":41,"dn":"dev1"}"#);
    }
}

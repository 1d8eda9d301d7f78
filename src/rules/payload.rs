//! Parsing only the payload fields the matching rules read.
//!
//! A typical rule reads three fields of a payload that has a dozen, some of them arrays or
//! objects. Building a full `serde_json::Value` allocates for every member; this parser still
//! checks the whole payload is valid JSON, but materializes only the top-level members named in
//! `keys` and skips the rest without allocating.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Which top-level members to keep.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'k> {
    /// Every member.
    All,
    /// Only these.
    Keys(&'k [&'k str]),
}

/// Parses `bytes`, which must be one JSON object, keeping the members `keep` names.
///
/// # Errors
/// Invalid JSON or JSON that is not an object, as a message.
pub fn parse_object(bytes: &[u8], keep: Keep<'_>) -> Result<Value, String> {
    let Keep::Keys(keys) = keep else {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err("the payload is JSON but not an object".into()),
            Err(e) => Err(format!("the payload is not JSON: {e}")),
        };
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
            Ok(_) => "the payload is JSON but not an object".into(),
            Err(e) => format!("the payload is not JSON: {e}"),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Seed(keys).deserialize(&mut de).map_err(|e| format!("the payload is not JSON: {e}"))?;
    de.end().map_err(|e| format!("the payload is not JSON: {e}"))?;
    Ok(v)
}

struct Seed<'k>(&'k [&'k str]);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(slot) = map.next_key_seed(KeySeed(self.0))? {
            match slot {
                Some(i) => {
                    let v: Value = map.next_value()?;
                    out.insert(self.0[i].to_string(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Reads a key and says which wanted key it is, without allocating for keys that are skipped.
struct KeySeed<'k>(&'k [&'k str]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == s))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_only_wanted_members_and_still_validates() {
        let p = br#"{"a":1,"skip":{"deep":[1,2,{"x":"y"}]},"b":"two","a\u0062c":3,"b":"last"}"#;
        assert_eq!(
            parse_object(p, Keep::Keys(&["a", "b", "abc"])).unwrap(),
            json!({"a":1,"b":"last","abc":3})
        );
        assert_eq!(parse_object(p, Keep::Keys(&[])).unwrap(), json!({}));
        assert_eq!(parse_object(p, Keep::All).unwrap()["skip"]["deep"][0], 1);
        for bad in [&b"{\"a\":1,\"skip\":[1,}"[..], b"{\"a\":1} trailing", b"", b"\xff"] {
            assert!(parse_object(bad, Keep::Keys(&["a"])).unwrap_err().contains("not JSON"), "{bad:?}");
        }
        for not_object in [&b"[1]"[..], b"42", b"\"s\"", b"null"] {
            assert!(parse_object(not_object, Keep::Keys(&["a"])).unwrap_err().contains("not an object"));
            assert!(parse_object(not_object, Keep::All).unwrap_err().contains("not an object"));
        }
    }
}

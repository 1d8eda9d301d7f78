//! Parsing only the payload fields the matching rules read.
//!
//! A payload is a JSON object or, as the platform's SQL page allows, a JSON array (read whole:
//! its elements have no member names to pick).
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

/// Parses `bytes`, which must be one JSON object or array, keeping the members of an object
/// that `keep` names (an array is kept whole).
///
/// # Errors
/// Invalid JSON or JSON that is neither an object nor an array, as a message.
pub fn parse_object(bytes: &[u8], keep: Keep<'_>) -> Result<Value, String> {
    const NEITHER: &str = "the payload is JSON but neither an object nor an array";
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let keys = match keep {
        Keep::Keys(keys) if first == Some(&b'{') => keys,
        _ => {
            return match serde_json::from_slice::<Value>(bytes) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
                Ok(_) => Err(NEITHER.into()),
                Err(e) => Err(format!("the payload is not JSON: {e}")),
            };
        }
    };
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
        for scalar in [&b"42"[..], b"\"s\"", b"null"] {
            assert!(parse_object(scalar, Keep::Keys(&["a"])).unwrap_err().contains("neither"));
            assert!(parse_object(scalar, Keep::All).unwrap_err().contains("neither"));
        }
        for keep in [Keep::Keys(&["a"]), Keep::All] {
            assert_eq!(parse_object(b" [1,{\"a\":2}]", keep).unwrap(), json!([1, {"a":2}]));
            assert!(parse_object(b"[1,", keep).unwrap_err().contains("not JSON"));
        }
    }
}

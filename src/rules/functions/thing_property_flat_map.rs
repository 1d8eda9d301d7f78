//! `thingPropertyFlatMap(p1, ...)`: lifts thing-model properties out of `items` into the result:
//! `items.Power.value` becomes `Power`, and object values are flattened with `_`
//! (`items.Position.value.latitude` becomes `Position_latitude`). Without arguments, every
//! property. A SELECT item only: it adds several fields, which is why it exists (SELECT is
//! capped at 50 fields).

use serde_json::Value;

use super::{Args, Check, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::row::Row;

/// `thingPropertyFlatMap(...)`.
pub static SPEC: FnSpec = FnSpec {
    name: "thingPropertyFlatMap",
    min: 0,
    max: 50,
    star: false,
    check: Some(CHECK),
    call,
    usage: "thingPropertyFlatMap(['Prop', ...])",
};

const CHECK: Check = |args| {
    for a in args {
        match a {
            Some(Value::String(_)) => {}
            _ => return Err("thingPropertyFlatMap() takes property names as string literals".into()),
        }
    }
    Ok(())
};

/// Only reached if the compiler let a call through outside SELECT; it does not.
fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Err(a.err("can only be used as a SELECT item"))
}

/// Adds the properties to `row`.
pub fn expand(names: &[String], payload: &Value, row: &mut Row) {
    let Some(Value::Object(items)) = payload.get("items") else { return };
    let mut add = |name: &str, item: &Value| {
        let v = match item {
            Value::Object(m) if m.contains_key("value") => &m["value"],
            other => other,
        };
        flatten(name, v, row, 0);
    };
    if names.is_empty() {
        for (k, v) in items {
            add(k, v);
        }
    } else {
        for n in names {
            if let Some(v) = items.get(n) {
                add(n, v);
            }
        }
    }
}

/// Nesting deeper than this is kept as an object: JSON from devices can be deep, the result
/// should not explode into thousands of keys.
const MAX_DEPTH: usize = 8;

fn flatten(prefix: &str, v: &Value, row: &mut Row, depth: usize) {
    match v {
        Value::Object(m) if depth < MAX_DEPTH && !m.is_empty() => {
            for (k, inner) in m {
                flatten(&format!("{prefix}_{k}"), inner, row, depth + 1);
            }
        }
        other => row.set(prefix, other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn table() {
        let p = json!({"items":{
            "Power":{"value":"on","time":1},
            "Position":{"value":{"latitude":39.9,"longitude":116.38},"time":2},
            "Temp":{"value":21}}});
        let cases: &[(&[&str], Value)] = &[
            (&[], json!({"Position_latitude":39.9,"Position_longitude":116.38,"Power":"on","Temp":21})),
            (&["Power"], json!({"Power":"on"})),
            (&["Position", "Nope"], json!({"Position_latitude":39.9,"Position_longitude":116.38})),
        ];
        for (names, want) in cases {
            let mut row = Row::default();
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            expand(&names, &p, &mut row);
            assert_eq!(&row.to_value(), want, "{names:?}");
        }
        let mut row = Row::default();
        expand(&[], &json!({"a":1}), &mut row);
        assert!(row.is_empty());
    }
}

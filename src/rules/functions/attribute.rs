//! `attribute(key)`: the sending device's tag `key`; null (left out) when the tag is not set.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `attribute(key)`.
pub static SPEC: FnSpec =
    FnSpec { name: "attribute", min: 1, max: 1, star: false, check: None, call, usage: "attribute(key)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let key = a.text(0);
    Ok(a.env.ctx.tags.and_then(|t| t.get(key.as_ref())).map_or(Value::Null, |v| Value::String(v.clone())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "attribute",
            &[
                (vec![json!("room")], Ok(json!("lab"))),
                (vec![json!("floor")], Ok(json!(null))),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

//! `to_base64(*)`: the raw payload as Base64 (for binary rules); `to_base64(s)` encodes the text `s`.

use base64::Engine as _;
use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `to_base64(*)`.
pub static SPEC: FnSpec =
    FnSpec { name: "to_base64", min: 1, max: 1, star: true, check: None, call, usage: "to_base64(*)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    let owned;
    let bytes: &[u8] = if a.star {
        a.env.payload
    } else if a.any_null() {
        return Ok(Value::Null);
    } else {
        owned = a.text(0);
        owned.as_bytes()
    };
    Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::call_on;

    #[test]
    fn table() {
        assert_eq!(call_on("to_base64", &[], true, &[0, 1, 255]).unwrap(), json!("AAH/"));
        super::super::testing::table(
            "to_base64",
            &[(vec![json!("hi")], Ok(json!("aGk="))), (vec![json!(null)], Ok(json!(null)))],
        );
    }
}

//! `to_hex(*)`: the raw payload as lowercase hex (for binary rules); `to_hex(s)` encodes the text `s`.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `to_hex(*)`.
pub static SPEC: FnSpec =
    FnSpec { name: "to_hex", min: 1, max: 1, star: true, check: None, call, usage: "to_hex(*)" };

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
    Ok(Value::String(hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::call_on;

    #[test]
    fn table() {
        assert_eq!(call_on("to_hex", &[], true, &[0, 1, 255]).unwrap(), json!("0001ff"));
        super::super::testing::table(
            "to_hex",
            &[(vec![json!("hi")], Ok(json!("6869"))), (vec![json!(null)], Ok(json!(null)))],
        );
    }
}

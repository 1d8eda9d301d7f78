//! `sha256(s)`: lowercase hex SHA-256 digest of the text `s` (shorthand for `crypto(s, 'SHA-256')`).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `sha256(s)`.
pub static SPEC: FnSpec =
    FnSpec { name: "sha256", min: 1, max: 1, star: false, check: None, call, usage: "sha256(s)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    Ok(super::crypto::digest("SHA-256", a.text(0).as_bytes()).map_or(Value::Null, Value::String))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "sha256",
            &[
                (
                    vec![json!("abc")],
                    Ok(json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
                ),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

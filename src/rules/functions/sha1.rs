//! `sha1(s)`: lowercase hex SHA1 digest of the text `s` (shorthand for `crypto(s, 'SHA1')`).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `sha1(s)`.
pub static SPEC: FnSpec =
    FnSpec { name: "sha1", min: 1, max: 1, star: false, check: None, call, usage: "sha1(s)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    Ok(super::crypto::digest("SHA1", a.text(0).as_bytes()).map_or(Value::Null, Value::String))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "sha1",
            &[
                (vec![json!("abc")], Ok(json!("a9993e364706816aba3e25717850c26c9cd0d89d"))),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

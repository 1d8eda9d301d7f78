//! `md5(s)`: lowercase hex MD5 digest of the text `s` (shorthand for `crypto(s, 'MD5')`).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `md5(s)`.
pub static SPEC: FnSpec =
    FnSpec { name: "md5", min: 1, max: 1, star: false, check: None, call, usage: "md5(s)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    Ok(super::crypto::digest("MD5", a.text(0).as_bytes()).map_or(Value::Null, Value::String))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "md5",
            &[
                (vec![json!("abc")], Ok(json!("900150983cd24fb0d6963f7d28e17f72"))),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

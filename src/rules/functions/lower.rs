//! `lower(s)`: the text in lower case (Unicode rules).

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `lower(s)`.
pub static SPEC: FnSpec =
    FnSpec { name: "lower", min: 1, max: 1, star: false, check: None, call, usage: "lower(s)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    Ok(Value::String(a.text(0).to_lowercase()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "lower",
            &[
                (vec![json!("AbC")], Ok(json!("abc"))),
                (vec![json!(12)], Ok(json!("12"))),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

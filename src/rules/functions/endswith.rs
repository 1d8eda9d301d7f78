//! `endswith(input, suffix)`: true when the text ends with the suffix.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `endswith(input, suffix)`.
pub static SPEC: FnSpec = FnSpec {
    name: "endswith",
    min: 2,
    max: 2,
    star: false,
    check: None,
    call,
    usage: "endswith(input, suffix)",
};

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    Ok(Value::Bool(a.text(0).ends_with(a.text(1).as_ref())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "endswith",
            &[
                (vec![json!("device.log"), json!(".log")], Ok(json!(true))),
                (vec![json!("device.log"), json!(".txt")], Ok(json!(false))),
                (vec![json!(123), json!(3)], Ok(json!(true))),
                (vec![json!("x"), json!("")], Ok(json!(true))),
                (vec![json!(null), json!("x")], Ok(json!(null))),
            ],
        );
    }
}

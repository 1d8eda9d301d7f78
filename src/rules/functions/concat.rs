//! `concat(s1, s2, ...)`: joins texts; numbers and other values are written as JSON.
//! The platform documents two arguments; more are accepted.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `concat(s1, s2, ...)`.
pub static SPEC: FnSpec = FnSpec {
    name: "concat",
    min: 2,
    max: 16,
    star: false,
    check: None,
    call,
    usage: "concat(s1, s2[, ...])",
};

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let mut s = String::new();
    for i in 0..a.vals.len() {
        s.push_str(&a.text(i));
    }
    Ok(Value::String(s))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "concat",
            &[
                (vec![json!("ab"), json!("cd")], Ok(json!("abcd"))),
                (vec![json!("t="), json!(21.5)], Ok(json!("t=21.5"))),
                (vec![json!("a"), json!("b"), json!(true)], Ok(json!("abtrue"))),
                (vec![json!("a"), json!(null)], Ok(json!(null))),
            ],
        );
    }
}

//! `replace(src, sub, repl)`: every occurrence of `sub` in `src` replaced by `repl`.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `replace(src, sub, repl)`.
pub static SPEC: FnSpec = FnSpec {
    name: "replace",
    min: 3,
    max: 3,
    star: false,
    check: None,
    call,
    usage: "replace(src, sub, repl)",
};

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let sub = a.text(1);
    if sub.is_empty() {
        // Replacing the empty string would insert `repl` between every character.
        return Ok(Value::String(a.text(0).into_owned()));
    }
    Ok(Value::String(a.text(0).replace(sub.as_ref(), &a.text(2))))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "replace",
            &[
                (vec![json!("a-b-c"), json!("-"), json!("+")], Ok(json!("a+b+c"))),
                (vec![json!("abc"), json!(""), json!("x")], Ok(json!("abc"))),
                (vec![json!(1001), json!(0), json!(9)], Ok(json!("1991"))),
                (vec![json!("abc"), json!(null), json!("x")], Ok(json!(null))),
            ],
        );
    }
}

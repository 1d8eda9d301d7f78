//! `abs(x)`: absolute value; integers stay integers.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::value::Num;

/// `abs(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "abs", min: 1, max: 1, star: false, check: None, call, usage: "abs(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    match a.num(0)? {
        // i64::MIN has no positive counterpart: it becomes a float.
        Num::I(i) => Ok(i.checked_abs().map_or_else(|| Value::from((i as f64).abs()), Value::from)),
        Num::F(f) => Num::F(f.abs()).into_value("abs"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "abs",
            &[
                (vec![json!(-3)], Ok(json!(3))),
                (vec![json!(-2.5)], Ok(json!(2.5))),
                (vec![json!("-4")], Ok(json!(4))),
                (vec![json!(i64::MIN)], Ok(json!(9.223372036854776e18))),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!("x")], Err("must be a number")),
            ],
        );
    }
}

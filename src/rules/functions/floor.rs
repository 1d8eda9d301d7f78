//! `floor(x)`: the largest integer not above `x`, as an integer when it fits.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::value::{self, Num};

/// `floor(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "floor", min: 1, max: 1, star: false, check: None, call, usage: "floor(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    match a.num(0)? {
        Num::I(i) => Ok(Value::from(i)),
        Num::F(f) => {
            let r = f.floor();
            // 2^63 as f64: floats at or beyond it do not fit an i64.
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
                Ok(Value::from(r as i64))
            } else {
                value::float(r, "floor")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "floor",
            &[
                (vec![json!(2.7)], Ok(json!(2))),
                (vec![json!(-2.1)], Ok(json!(-3))),
                (vec![json!(5)], Ok(json!(5))),
                (vec![json!("3.9")], Ok(json!(3))),
                (vec![json!(1e30)], Ok(json!(1e30))),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!({})], Err("must be a number")),
            ],
        );
    }
}

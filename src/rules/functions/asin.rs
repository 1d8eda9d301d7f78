//! `asin(x)`: asin of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `asin(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "asin", min: 1, max: 1, star: false, check: None, call, usage: "asin(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::asin)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "asin",
            &[
                (vec![json!(1)], Ok(json!(std::f64::consts::FRAC_PI_2))),
                (vec![json!(0)], Ok(json!(0.0))),
                (vec![json!(2)], Err("not a finite")),
                (vec![json!("x")], Err("must be a number")),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

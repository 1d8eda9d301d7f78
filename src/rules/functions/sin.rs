//! `sin(x)`: sin of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `sin(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "sin", min: 1, max: 1, star: false, check: None, call, usage: "sin(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::sin)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "sin",
            &[
                (vec![json!(0)], Ok(json!(0.0))),
                (vec![json!(std::f64::consts::FRAC_PI_2)], Ok(json!(1.0))),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!([1])], Err("must be a number")),
            ],
        );
    }
}

//! `exp(x)`: exp of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `exp(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "exp", min: 1, max: 1, star: false, check: None, call, usage: "exp(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::exp)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "exp",
            &[
                (vec![json!(0)], Ok(json!(1.0))),
                (vec![json!(1)], Ok(json!(std::f64::consts::E))),
                (vec![json!(1000)], Err("not a finite")),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

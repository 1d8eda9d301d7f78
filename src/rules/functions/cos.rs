//! `cos(x)`: cos of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `cos(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "cos", min: 1, max: 1, star: false, check: None, call, usage: "cos(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::cos)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "cos",
            &[
                (vec![json!(0)], Ok(json!(1.0))),
                (vec![json!("0")], Ok(json!(1.0))),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!(true)], Err("must be a number")),
            ],
        );
    }
}

//! `tanh(x)`: tanh of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `tanh(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "tanh", min: 1, max: 1, star: false, check: None, call, usage: "tanh(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::tanh)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "tanh",
            &[
                (vec![json!(0)], Ok(json!(0.0))),
                (vec![json!(1000)], Ok(json!(1.0))),
                (vec![json!(null)], Ok(json!(null))),
            ],
        );
    }
}

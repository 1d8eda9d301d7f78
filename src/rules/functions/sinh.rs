//! `sinh(x)`: sinh of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `sinh(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "sinh", min: 1, max: 1, star: false, check: None, call, usage: "sinh(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::sinh)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "sinh",
            &[
                (vec![json!(0)], Ok(json!(0.0))),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!(-1000)], Err("not a finite")),
            ],
        );
    }
}

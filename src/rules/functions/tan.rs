//! `tan(x)`: tan of a number, as a float.

use serde_json::Value;

use super::{math1, Args, FnSpec};
use crate::rules::error::EvalError;

/// `tan(x)`.
pub static SPEC: FnSpec =
    FnSpec { name: "tan", min: 1, max: 1, star: false, check: None, call, usage: "tan(x)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    math1(a, f64::tan)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "tan",
            &[
                (vec![json!(0)], Ok(json!(0.0))),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!("a")], Err("must be a number")),
            ],
        );
    }
}

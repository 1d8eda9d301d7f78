//! `nanvl(value, default)`: `value`, or `default` when `value` is null or missing.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;

/// `nanvl(value, default)`.
pub static SPEC: FnSpec =
    FnSpec { name: "nanvl", min: 2, max: 2, star: false, check: None, call, usage: "nanvl(value, default)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    Ok(if a.get(0).is_null() { a.get(1).clone() } else { a.get(0).clone() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "nanvl",
            &[
                (vec![json!(null), json!(0)], Ok(json!(0))),
                (vec![json!(5), json!(0)], Ok(json!(5))),
                (vec![json!(""), json!("d")], Ok(json!(""))),
                (vec![json!(null), json!(null)], Ok(json!(null))),
            ],
        );
    }
}

//! `mod(n, m)`: remainder of `n / m`, with the sign of `n`, like `%`.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::value::{num_op, Arith};

/// `mod(n, m)`.
pub static SPEC: FnSpec =
    FnSpec { name: "mod", min: 2, max: 2, star: false, check: None, call, usage: "mod(n, m)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    num_op(Arith::Rem, a.num(0)?, a.num(1)?)?.into_value("mod")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "mod",
            &[
                (vec![json!(10), json!(3)], Ok(json!(1))),
                (vec![json!(-10), json!(3)], Ok(json!(-1))),
                (vec![json!(5.5), json!(2)], Ok(json!(1.5))),
                (vec![json!(1), json!(0)], Err("division by zero")),
                (vec![json!(null), json!(2)], Ok(json!(null))),
            ],
        );
    }
}

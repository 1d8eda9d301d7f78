//! `power(n, m)`: `n` to the power `m`; an integer when both are integers, `m >= 0` and the
//! result fits.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::value::{self, Num};

/// `power(n, m)`.
pub static SPEC: FnSpec =
    FnSpec { name: "power", min: 2, max: 2, star: false, check: None, call, usage: "power(n, m)" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let (n, m) = (a.num(0)?, a.num(1)?);
    if let (Num::I(b), Num::I(e)) = (n, m) {
        if let Some(r) = u32::try_from(e).ok().and_then(|e| b.checked_pow(e)) {
            return Ok(Value::from(r));
        }
    }
    value::float(n.f().powf(m.f()), "power")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "power",
            &[
                (vec![json!(2), json!(10)], Ok(json!(1024))),
                (vec![json!(2), json!(-1)], Ok(json!(0.5))),
                (vec![json!(4), json!(0.5)], Ok(json!(2.0))),
                (vec![json!(10), json!(400)], Err("not a finite")),
                (vec![json!(-8), json!(0.5)], Err("not a finite")),
                (vec![json!(2), json!(null)], Ok(json!(null))),
            ],
        );
    }
}

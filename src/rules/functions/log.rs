//! `log(n[, m])`: logarithm of `n` to base `m`; base 10 when `m` is left out.

use serde_json::Value;

use super::{Args, FnSpec};
use crate::rules::error::EvalError;
use crate::rules::value;

/// `log(n[, m])`.
pub static SPEC: FnSpec =
    FnSpec { name: "log", min: 1, max: 2, star: false, check: None, call, usage: "log(n[, base])" };

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let n = a.num(0)?.f();
    let base = if a.vals.len() > 1 { a.num(1)?.f() } else { 10.0 };
    if n <= 0.0 || base <= 0.0 || base == 1.0 {
        return Err(a.err(format!("needs n > 0 and a base > 0 other than 1, got n={n}, base={base}")));
    }
    // log10 and log2 are exact for exact powers, where ln(n) / ln(base) can be off by an ulp.
    let r = if base == 10.0 {
        n.log10()
    } else if base == 2.0 {
        n.log2()
    } else {
        n.ln() / base.ln()
    };
    value::float(r, "log")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn table() {
        super::super::testing::table(
            "log",
            &[
                (vec![json!(100)], Ok(json!(2.0))),
                (vec![json!(8), json!(2)], Ok(json!(3.0))),
                (vec![json!(0)], Err("n > 0")),
                (vec![json!(5), json!(1)], Err("base")),
                (vec![json!(null)], Ok(json!(null))),
                (vec![json!("x")], Err("must be a number")),
            ],
        );
    }
}

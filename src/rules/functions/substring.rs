//! `substring(target, start[, end])`: characters from `start` (included) to `end` (excluded).
//!
//! The platform's rules: `target` is a string or an integer (stringified first); indexes are
//! integers or floats (truncated); negative or too large indexes are clamped; `end < start`
//! gives `""`. Any other argument type is an error: at compile time for literals, otherwise a
//! failure of the rule for that message.

use serde_json::Value;

use super::{Args, Check, FnSpec};
use crate::rules::error::EvalError;

/// `substring(target, start[, end])`.
pub static SPEC: FnSpec = FnSpec {
    name: "substring",
    min: 2,
    max: 3,
    star: false,
    check: Some(CHECK),
    call,
    usage: "substring(target, start[, end])",
};

const CHECK: Check = |args| {
    if let Some(Some(t)) = args.first() {
        if !valid_target(t) && !t.is_null() {
            return Err(format!("substring() needs a string or an integer to cut, got {t}"));
        }
    }
    for (i, a) in args.iter().enumerate().skip(1) {
        if let Some(v) = a {
            if !v.is_number() && !v.is_null() {
                return Err(format!("substring() argument {} must be a number, got {v}", i + 1));
            }
        }
    }
    Ok(())
};

fn valid_target(v: &Value) -> bool {
    v.is_string() || v.as_i64().is_some() || v.as_u64().is_some()
}

fn index(a: &Args<'_, '_>, i: usize) -> Result<i64, EvalError> {
    match a.get(i) {
        Value::Number(n) => Ok(n.as_i64().unwrap_or_else(|| n.as_f64().map_or(0, |f| f.trunc() as i64))),
        other => Err(a.err(format!(
            "argument {} must be a number, got {}",
            i + 1,
            crate::rules::value::describe(other)
        ))),
    }
}

fn call(a: &Args<'_, '_>) -> Result<Value, EvalError> {
    if a.any_null() {
        return Ok(Value::Null);
    }
    let target = a.get(0);
    if !valid_target(target) {
        return Err(a.err(format!(
            "needs a string or an integer to cut, got {}",
            crate::rules::value::describe(target)
        )));
    }
    let text = a.text(0);
    let len = text.chars().count() as i64;
    let start = index(a, 1)?.clamp(0, len);
    let end = if a.vals.len() > 2 { index(a, 2)?.clamp(0, len) } else { len };
    if end <= start {
        return Ok(Value::String(String::new()));
    }
    Ok(Value::String(text.chars().skip(start as usize).take((end - start) as usize).collect()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn platform_examples_and_edges() {
        super::super::testing::table(
            "substring",
            &[
                (vec![json!("012345"), json!(2)], Ok(json!("2345"))),
                (vec![json!("012345"), json!(1), json!(3)], Ok(json!("12"))),
                (vec![json!(123), json!(2)], Ok(json!("3"))),
                (vec![json!("012345"), json!(2.745)], Ok(json!("2345"))),
                (vec![json!("012345"), json!(-1), json!(2)], Ok(json!("01"))),
                (vec![json!("012345"), json!(4), json!(99)], Ok(json!("45"))),
                (vec![json!("012345"), json!(4), json!(2)], Ok(json!(""))),
                (vec![json!("héllo"), json!(1), json!(2)], Ok(json!("é"))),
                (vec![json!(1.5), json!(0)], Err("string or an integer")),
                (vec![json!("abc"), json!("1")], Err("must be a number")),
                (vec![json!(null), json!(1)], Ok(json!(null))),
            ],
        );
    }

    #[test]
    fn literal_checks() {
        let c = super::CHECK;
        assert!(c(&[Some(&json!("a")), Some(&json!(1))]).is_ok());
        assert!(c(&[Some(&json!(1.5)), Some(&json!(1))]).is_err());
        assert!(c(&[None, Some(&json!("x"))]).is_err());
    }
}

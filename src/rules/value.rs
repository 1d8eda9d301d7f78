//! Value semantics shared by operators and functions (see docs/rules.md, "Semantics").
//!
//! - null (or a missing field) makes comparisons, arithmetic and most functions null;
//!   a null WHERE is not a match.
//! - Numbers are integers (i64) or floats (f64); integer arithmetic stays integer unless it
//!   overflows or a division is inexact.
//! - A string that reads as a number is that number for arithmetic and for comparison with a
//!   number; strings compare with strings byte-wise.
//! - Values of types that cannot be compared are unequal, and neither smaller nor larger.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::error::EvalError;

/// A number taken from a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Integer.
    I(i64),
    /// Float.
    F(f64),
}

impl Num {
    /// As f64.
    pub fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    /// As a JSON value.
    ///
    /// # Errors
    /// NaN and infinities, which JSON cannot carry.
    pub fn into_value(self, what: &'static str) -> Result<Value, EvalError> {
        match self {
            Num::I(i) => Ok(Value::from(i)),
            Num::F(f) => float(f, what),
        }
    }
}

/// A finite float as a JSON value.
///
/// # Errors
/// NaN and infinities.
pub fn float(f: f64, what: &'static str) -> Result<Value, EvalError> {
    Number::from_f64(f).map(Value::Number).ok_or(EvalError::NotFinite(what))
}

/// The number in a JSON number.
pub fn json_num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::I(i)
    } else {
        Num::F(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Reads a number from text, as the coercion rules allow (`" 42 "`, `"1e3"`, `"-0.5"`).
pub fn parse_num(s: &str) -> Option<Num> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Num::I(i));
    }
    // Rust accepts "inf" and "NaN", which are not numbers a device means.
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(Num::F(f)),
        _ => None,
    }
}

/// The number a value stands for: numbers, and strings that read as numbers.
pub fn to_num(v: &Value) -> Option<Num> {
    match v {
        Value::Number(n) => Some(json_num(n)),
        Value::String(s) => parse_num(s),
        _ => None,
    }
}

/// A short description of a value for error messages.
pub fn describe(v: &Value) -> String {
    let text = match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Number(n) => format!("number {n}"),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Null => "null".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    };
    if text.len() > 60 {
        format!("{}...", &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// Text of a value for string functions and `||`: strings as they are, other values as JSON.
pub fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// Orders two values, `None` when either is null or their types cannot be compared.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_num(json_num(x), json_num(y)),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Number(x), Value::String(y)) => cmp_num(json_num(x), parse_num(y)?),
        (Value::String(x), Value::Number(y)) => cmp_num(parse_num(x)?, json_num(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        _ => a.f().partial_cmp(&b.f()),
    }
}

/// `a = b`: `None` when either side is null.
pub fn equals(a: &Value, b: &Value) -> Option<bool> {
    if a.is_null() || b.is_null() {
        return None;
    }
    match compare(a, b) {
        Some(o) => Some(o == Ordering::Equal),
        None => Some(
            matches!((a, b), (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) if a == b),
        ),
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl Arith {
    fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
            Arith::Rem => "%",
        }
    }
}

/// Applies an arithmetic operator: null in, null out.
///
/// # Errors
/// Non-numeric operands, division by zero, non-finite results.
pub fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, EvalError> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let operand = |v: &Value| {
        to_num(v).ok_or_else(|| {
            let hint = if op == Arith::Add && v.is_string() { " (use || to join strings)" } else { "" };
            EvalError::Type(format!("cannot apply {} to {}{hint}", op.symbol(), describe(v)))
        })
    };
    let (x, y) = (operand(a)?, operand(b)?);
    num_op(op, x, y)?.into_value("arithmetic result")
}

/// Arithmetic on two numbers.
///
/// # Errors
/// Division by zero.
pub fn num_op(op: Arith, x: Num, y: Num) -> Result<Num, EvalError> {
    if matches!(op, Arith::Div | Arith::Rem) && y.f() == 0.0 {
        return Err(EvalError::DivisionByZero);
    }
    if let (Num::I(a), Num::I(b)) = (x, y) {
        let exact = match op {
            Arith::Add => a.checked_add(b),
            Arith::Sub => a.checked_sub(b),
            Arith::Mul => a.checked_mul(b),
            // Integer division stays integer only when exact: 10 / 4 is 2.5, not 2.
            Arith::Div => a.checked_rem(b).filter(|r| *r == 0).and_then(|_| a.checked_div(b)),
            Arith::Rem => a.checked_rem(b),
        };
        if let Some(r) = exact {
            return Ok(Num::I(r));
        }
    }
    let (a, b) = (x.f(), y.f());
    Ok(Num::F(match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div => a / b,
        Arith::Rem => a % b,
    }))
}

/// The truth of a condition: `Some(bool)` for booleans, `None` for null.
///
/// # Errors
/// Any other value: conditions must be comparisons or booleans.
pub fn truth(v: &Value, what: &str) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        other => Err(EvalError::Type(format!("{what} needs a boolean, got {}", describe(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparisons_across_types() {
        let cases: &[(Value, Value, Option<Ordering>)] = &[
            (json!(1), json!(1.0), Some(Ordering::Equal)),
            (json!(2), json!("10"), Some(Ordering::Less)),
            (json!("2"), json!("10"), Some(Ordering::Greater)),
            (json!("abc"), json!(1), None),
            (json!(true), json!(1), None),
            (json!(null), json!(null), None),
            (json!(false), json!(true), Some(Ordering::Less)),
            (json!(i64::MAX), json!(i64::MAX - 1), Some(Ordering::Greater)),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), *want, "{a} vs {b}");
        }
        assert_eq!(equals(&json!("x"), &json!(1)), Some(false));
        assert_eq!(equals(&json!(null), &json!(1)), None);
        assert_eq!(equals(&json!([1, 2]), &json!([1, 2])), Some(true));
    }

    #[test]
    fn arithmetic_int_float_and_errors() {
        let cases: &[(Arith, Value, Value, Result<Value, EvalError>)] = &[
            (Arith::Add, json!(1), json!(2), Ok(json!(3))),
            (Arith::Add, json!(1), json!(2.5), Ok(json!(3.5))),
            (Arith::Div, json!(10), json!(4), Ok(json!(2.5))),
            (Arith::Div, json!(10), json!(5), Ok(json!(2))),
            (Arith::Rem, json!(10), json!(4), Ok(json!(2))),
            (Arith::Rem, json!(5.5), json!(2), Ok(json!(1.5))),
            (Arith::Mul, json!("3"), json!(2), Ok(json!(6))),
            (Arith::Div, json!(1), json!(0), Err(EvalError::DivisionByZero)),
            (Arith::Rem, json!(1), json!(0.0), Err(EvalError::DivisionByZero)),
            (Arith::Add, json!(null), json!(1), Ok(json!(null))),
            (Arith::Add, json!(i64::MAX), json!(1), Ok(json!(9.223372036854776e18))),
        ];
        for (op, a, b, want) in cases {
            assert_eq!(&arith(*op, a, b), want, "{op:?} {a} {b}");
        }
        assert!(
            matches!(arith(Arith::Add, &json!("a"), &json!(1)), Err(EvalError::Type(m)) if m.contains("||"))
        );
    }
}

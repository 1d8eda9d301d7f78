//! The evaluator: runs a compiled [`Query`] against one message.
//!
//! Values are borrowed from the parsed payload where possible (`Cow`), so reading fields copies
//! nothing until the result row is built.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::context::Env;
use super::error::EvalError;
use super::functions::{thing_property_flat_map, Args};
use super::ir::{CmpOp, Expr, Item, LikeSrc, Query};
use super::like::LikePattern;
use super::row::Row;
use super::value::{self, Arith};

static NULL: Value = Value::Null;

/// What one rule made of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Eval {
    /// WHERE held: the result row.
    Row(Row),
    /// WHERE was false or null.
    NoMatch,
}

/// Runs `q`: WHERE first, then the SELECT list.
///
/// # Errors
/// Evaluation failures (division by zero, type errors, ...).
pub fn run(q: &Query, env: &Env<'_>) -> Result<Eval, EvalError> {
    if let Some(c) = &q.cond {
        let v = eval(c, env)?;
        if value::truth(&v, "WHERE")? != Some(true) {
            return Ok(Eval::NoMatch);
        }
    }
    let mut row = Row::with_capacity(q.items.len() + 4);
    for item in &q.items {
        match item {
            Item::All => match env.json {
                Value::Object(m) => {
                    for (k, v) in m {
                        row.set(k, v.clone());
                    }
                }
                // An array has no columns: `SELECT *` alone forwards it whole; beside other
                // fields there is no object to merge it into.
                Value::Array(_) if q.items.len() == 1 => row.set_whole(env.json.clone()),
                Value::Array(_) => {
                    return Err(EvalError::Type(
                        "SELECT * of an array payload cannot stand beside other fields; select its elements (\"[0]\" AS first) instead".into(),
                    ))
                }
                _ => {}
            },
            Item::Field { key, expr } => {
                let v = eval(expr, env)?;
                row.set_shared(key, v.into_owned());
            }
            Item::Flat(names) => thing_property_flat_map::expand(names, env.json, &mut row),
        }
    }
    Ok(Eval::Row(row))
}

fn b(v: Option<bool>) -> Cow<'static, Value> {
    Cow::Owned(v.map_or(Value::Null, Value::Bool))
}

/// Evaluates one expression.
///
/// # Errors
/// Evaluation failures.
pub fn eval<'a>(e: &'a Expr, env: &Env<'a>) -> Result<Cow<'a, Value>, EvalError> {
    Ok(match e {
        Expr::Lit(v) => Cow::Borrowed(v),
        Expr::Field(p) => match p.get(env.json) {
            Some(v) if p.wrap => Cow::Owned(Value::Array(vec![v.clone()])),
            Some(v) => Cow::Borrowed(v),
            None => Cow::Borrowed(&NULL),
        },
        Expr::Star => Cow::Borrowed(env.json),
        Expr::Call(spec, args, star) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, env)?);
            }
            Cow::Owned((spec.call)(&Args { vals: &vals, star: *star, env, name: spec.name })?)
        }
        Expr::Script(f, args) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, env)?.into_owned());
            }
            Cow::Owned(f.call(&vals)?)
        }
        Expr::Not(x) => b(value::truth(&*eval(x, env)?, "NOT")?.map(|t| !t)),
        Expr::Neg(x) => {
            let v = eval(x, env)?;
            Cow::Owned(value::arith(Arith::Sub, &Value::from(0), &v)?)
        }
        Expr::Arith(op, l, r) => Cow::Owned(value::arith(*op, &*eval(l, env)?, &*eval(r, env)?)?),
        Expr::Cmp(op, l, r) => {
            let (l, r) = (eval(l, env)?, eval(r, env)?);
            b(cmp(*op, &l, &r))
        }
        Expr::Concat(l, r) => {
            let (l, r) = (eval(l, env)?, eval(r, env)?);
            if l.is_null() || r.is_null() {
                Cow::Borrowed(&NULL)
            } else {
                let mut s = value::text(&l).into_owned();
                s.push_str(&value::text(&r));
                Cow::Owned(Value::String(s))
            }
        }
        Expr::And(l, r) => {
            // Kleene logic; the right side is not evaluated when the left is false.
            let lt = value::truth(&*eval(l, env)?, "AND")?;
            if lt == Some(false) {
                return Ok(b(Some(false)));
            }
            let rt = value::truth(&*eval(r, env)?, "AND")?;
            b(match (lt, rt) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        Expr::Or(l, r) => {
            let lt = value::truth(&*eval(l, env)?, "OR")?;
            if lt == Some(true) {
                return Ok(b(Some(true)));
            }
            let rt = value::truth(&*eval(r, env)?, "OR")?;
            b(match (lt, rt) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        Expr::In(x, list, negated) => {
            let v = eval(x, env)?;
            if v.is_null() {
                return Ok(Cow::Borrowed(&NULL));
            }
            let mut found = false;
            for item in list {
                if value::equals(&v, &*eval(item, env)?) == Some(true) {
                    found = true;
                    break;
                }
            }
            b(Some(found != *negated))
        }
        Expr::Like(x, pat, negated) => {
            let v = eval(x, env)?;
            if v.is_null() {
                return Ok(Cow::Borrowed(&NULL));
            }
            let text = value::text(&v);
            let m = match pat {
                LikeSrc::Const(p) => p.matches(&text),
                LikeSrc::Dyn(p, esc) => {
                    let pv = eval(p, env)?;
                    if pv.is_null() {
                        return Ok(Cow::Borrowed(&NULL));
                    }
                    LikePattern::new(&value::text(&pv), *esc).map_err(EvalError::Type)?.matches(&text)
                }
            };
            b(Some(m != *negated))
        }
        Expr::Between(x, lo, hi, negated) => {
            let (v, lo, hi) = (eval(x, env)?, eval(lo, env)?, eval(hi, env)?);
            let ge = cmp(CmpOp::Ge, &v, &lo);
            let le = cmp(CmpOp::Le, &v, &hi);
            let inside = match (ge, le) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            b(inside.map(|i| i != *negated))
        }
        Expr::IsNull(x, negated) => b(Some(eval(x, env)?.is_null() != *negated)),
        Expr::Case(operand, whens, otherwise) => {
            let op = match operand {
                Some(o) => Some(eval(o, env)?),
                None => None,
            };
            for (w, then) in whens {
                let wv = eval(w, env)?;
                let hit = match &op {
                    Some(o) => value::equals(o, &wv) == Some(true),
                    None => value::truth(&wv, "WHEN")? == Some(true),
                };
                if hit {
                    return eval(then, env);
                }
            }
            match otherwise {
                Some(o) => eval(o, env)?,
                None => Cow::Borrowed(&NULL),
            }
        }
    })
}

/// A comparison in three-valued logic: null when either side is null.
fn cmp(op: CmpOp, l: &Value, r: &Value) -> Option<bool> {
    if l.is_null() || r.is_null() {
        return None;
    }
    match op {
        CmpOp::Eq => value::equals(l, r),
        CmpOp::Ne => value::equals(l, r).map(|e| !e),
        _ => {
            let o = value::compare(l, r);
            Some(match (op, o) {
                (_, None) => false,
                (CmpOp::Lt, Some(o)) => o == Ordering::Less,
                (CmpOp::Le, Some(o)) => o != Ordering::Greater,
                (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
                (CmpOp::Ge, Some(o)) => o != Ordering::Less,
                _ => false,
            })
        }
    }
}

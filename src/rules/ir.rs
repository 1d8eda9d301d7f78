//! The compiled form of a rule's SQL: what the evaluator runs for every message.
//! Built once by the compiler (`compile.rs`), which depends on this module and not the other way
//! round; no sqlparser type survives into it.

use std::sync::Arc;

use serde_json::Value;

use super::functions::FnSpec;
use super::like::LikePattern;
use super::path::Path;
use super::script::ScriptFn;
use super::topic::TopicFilter;
use super::value::Arith;

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` and `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// The pattern of a `LIKE`.
#[derive(Debug, Clone)]
pub enum LikeSrc {
    /// A literal pattern, compiled once.
    Const(LikePattern),
    /// A pattern computed per message, with its escape character.
    Dyn(Box<Expr>, Option<char>),
}

/// An expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A payload field.
    Field(Path),
    /// `*` as a function argument: the whole payload.
    Star,
    /// A built-in function; `star` when its argument was `*`.
    Call(&'static FnSpec, Vec<Expr>, bool),
    /// A user function from a rhai script.
    Script(Arc<ScriptFn>, Vec<Expr>),
    /// `NOT e`
    Not(Box<Expr>),
    /// `-e`
    Neg(Box<Expr>),
    /// `a + b` and friends.
    Arith(Arith, Box<Expr>, Box<Expr>),
    /// `a = b` and friends.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `a || b`
    Concat(Box<Expr>, Box<Expr>),
    /// `a AND b`
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`
    Or(Box<Expr>, Box<Expr>),
    /// `e [NOT] IN (list)`
    In(Box<Expr>, Vec<Expr>, bool),
    /// `e [NOT] LIKE pattern`
    Like(Box<Expr>, LikeSrc, bool),
    /// `e [NOT] BETWEEN low AND high`
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// `e IS [NOT] NULL` (`true` = NOT).
    IsNull(Box<Expr>, bool),
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`
    Case(Option<Box<Expr>>, Vec<(Expr, Expr)>, Option<Box<Expr>>),
}

/// One SELECT item.
#[derive(Debug, Clone)]
pub enum Item {
    /// `*`: every payload field.
    All,
    /// `expr [AS key]`.
    Field {
        /// Result key.
        key: Arc<str>,
        /// Value.
        expr: Expr,
    },
    /// `thingPropertyFlatMap(...)`: the named thing-model properties (all when empty).
    Flat(Vec<String>),
}

/// A compiled SELECT statement.
#[derive(Debug, Clone)]
pub struct Query {
    /// SELECT list in order.
    pub items: Vec<Item>,
    /// FROM.
    pub filter: TopicFilter,
    /// WHERE.
    pub cond: Option<Expr>,
    /// True when a binary rule selects `*` alone: the payload is forwarded as it is.
    pub raw: bool,
    /// The top-level payload members the query reads; `None` when it reads the whole payload.
    pub keys: Option<Vec<String>>,
}

impl Query {
    /// Computes [`Query::keys`].
    pub fn payload_keys(items: &[Item], cond: Option<&Expr>) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        for item in items {
            match item {
                Item::All => return None,
                Item::Flat(_) => keys.push("items".to_string()),
                Item::Field { expr, .. } => expr_keys(expr, &mut keys)?,
            }
        }
        if let Some(c) = cond {
            expr_keys(c, &mut keys)?;
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    }
}

/// Adds the members `e` reads; `None` when it reads the whole payload.
fn expr_keys(e: &Expr, keys: &mut Vec<String>) -> Option<()> {
    let all = |list: &[Expr], keys: &mut Vec<String>| list.iter().try_for_each(|x| expr_keys(x, keys));
    match e {
        Expr::Lit(_) => {}
        Expr::Field(p) => match p.segs.first() {
            Some(super::path::Seg::Key(k)) => keys.push(k.clone()),
            _ => return None,
        },
        Expr::Star => return None,
        Expr::Call(_, args, _) | Expr::Script(_, args) => all(args, keys)?,
        Expr::Not(x) | Expr::Neg(x) | Expr::IsNull(x, _) => expr_keys(x, keys)?,
        Expr::Arith(_, l, r) | Expr::Cmp(_, l, r) | Expr::Concat(l, r) | Expr::And(l, r) | Expr::Or(l, r) => {
            expr_keys(l, keys)?;
            expr_keys(r, keys)?;
        }
        Expr::In(x, list, _) => {
            expr_keys(x, keys)?;
            all(list, keys)?;
        }
        Expr::Like(x, pat, _) => {
            expr_keys(x, keys)?;
            if let LikeSrc::Dyn(p, _) = pat {
                expr_keys(p, keys)?;
            }
        }
        Expr::Between(x, lo, hi, _) => {
            expr_keys(x, keys)?;
            expr_keys(lo, keys)?;
            expr_keys(hi, keys)?;
        }
        Expr::Case(op, whens, other) => {
            if let Some(o) = op {
                expr_keys(o, keys)?;
            }
            for (w, t) in whens {
                expr_keys(w, keys)?;
                expr_keys(t, keys)?;
            }
            if let Some(o) = other {
                expr_keys(o, keys)?;
            }
        }
    }
    Some(())
}

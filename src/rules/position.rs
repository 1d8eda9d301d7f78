//! Positions of sqlparser nodes for compile errors.
//!
//! sqlparser computes spans by walking the whole subtree, which recurses as deep as an operator
//! chain is long; expressions are located by walking down their leftmost operands instead.

use sqlparser::ast::{self, Expr as A, Ident, SelectItem, Spanned, TableFactor};

use super::error::CompileError;

/// Where a node starts, for error messages.
pub trait At {
    /// 1-based line and column; (0, 0) when unknown.
    fn at(&self) -> (u64, u64);
}

fn loc(l: sqlparser::tokenizer::Location) -> (u64, u64) {
    (l.line, l.column)
}

impl At for A {
    fn at(&self) -> (u64, u64) {
        let mut e = self;
        loop {
            e = match e {
                A::BinaryOp { left, .. } => left,
                A::Nested(x) | A::IsNull(x) | A::IsNotNull(x) | A::IsTrue(x) | A::IsFalse(x) => x,
                A::UnaryOp { expr, .. } | A::Cast { expr, .. } => expr,
                A::Like { expr, .. }
                | A::ILike { expr, .. }
                | A::In { expr, .. }
                | A::Between { expr, .. } => expr,
                A::CompoundFieldAccess { root, .. } => root,
                A::Identifier(id) => return loc(id.span.start),
                A::CompoundIdentifier(ids) => return ids.first().map_or((0, 0), |id| loc(id.span.start)),
                A::Value(v) => return loc(v.span.start),
                A::Function(f) => return f.name.0.first().map_or((0, 0), |p| loc(p.span().start)),
                A::Case { case_token, .. } => return loc(case_token.0.span.start),
                A::Wildcard(t) => return loc(t.0.span.start),
                _ => return (0, 0),
            };
        }
    }
}

impl At for Box<A> {
    fn at(&self) -> (u64, u64) {
        self.as_ref().at()
    }
}

impl At for SelectItem {
    fn at(&self) -> (u64, u64) {
        match self {
            SelectItem::UnnamedExpr(e)
            | SelectItem::ExprWithAlias { expr: e, .. }
            | SelectItem::ExprWithAliases { expr: e, .. } => e.at(),
            other => loc(other.span().start),
        }
    }
}

macro_rules! at_by_span {
    ($($t:ty),*) => {$(
        impl At for $t {
            fn at(&self) -> (u64, u64) {
                loc(self.span().start)
            }
        }
    )*};
}
at_by_span!(ast::ObjectName, ast::Query, TableFactor, ast::TableWithJoins);

pub fn err(at: &(impl At + ?Sized), msg: impl Into<String>) -> CompileError {
    let (l, c) = at.at();
    CompileError::at(l, c, msg)
}

/// Position of an expression's first token (see [`At`]).
pub fn leftmost(e: &A) -> (u64, u64) {
    e.at()
}

pub fn ident_err(id: &Ident, msg: impl Into<String>) -> CompileError {
    CompileError::at(id.span.start.line, id.span.start.column, msg)
}

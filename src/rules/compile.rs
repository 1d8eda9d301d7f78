//! sqlparser AST to the rule IR ([`super::ir`]), checking everything the engine does not support.
//! Every error carries the line and column of the offending expression and, where one is
//! obvious, a hint.

use std::cell::Cell;

use serde_json::Value;
use sqlparser::ast::{
    self, BinaryOperator, CeilFloorKind, Expr as A, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, ObjectNamePart, SelectItem, TableFactor, UnaryOperator, Value as Lit,
};

use super::error::CompileError;
use super::functions::{self, thing_property_flat_map, FnSpec};
use super::ir::{CmpOp, Expr, Item, LikeSrc, Query};
use super::like::LikePattern;
use super::parse::parse_select;
use super::path::{Path, Seg};
use super::position::{err, ident_err, leftmost};
use super::script::Scripts;
use super::suggest::closest;
use super::topic::TopicFilter;
use super::value::{parse_num, Arith};

/// SELECT items a rule may have: the platform's limit.
pub const MAX_FIELDS: usize = 50;

/// Whether the payload is JSON or opaque bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataType {
    /// Parsed as JSON; fields are readable.
    #[default]
    Json,
    /// Not parsed: only `*`, `to_base64(*)`, `to_hex(*)` and functions that do not read fields.
    Binary,
}

/// Compile options.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// JSON or binary rule.
    pub data_type: DataType,
    /// User functions callable from SQL.
    pub scripts: Option<&'a Scripts>,
}

/// Parses and compiles a rule's SQL.
///
/// # Errors
/// Any syntax error or unsupported construct, with its position.
pub fn compile(sql: &str, opts: Options<'_>) -> Result<Query, CompileError> {
    let select = parse_select(sql)?;
    let c = Compiler { opts, depth: Cell::new(0) };
    c.select(&select)
}

/// Expression nesting the compiler accepts. sqlparser limits its own recursion, but builds long
/// left-associative chains (`a + a + a ...`) without recursing; compiling and evaluating them
/// recurses, so the depth is bounded here, far above what a real rule needs.
pub const MAX_DEPTH: usize = 64;

struct Compiler<'a> {
    opts: Options<'a>,
    depth: Cell<usize>,
}

impl Compiler<'_> {
    fn binary(&self) -> bool {
        self.opts.data_type == DataType::Binary
    }

    fn select(&self, s: &ast::Select) -> Result<Query, CompileError> {
        let at = (s.select_token.0.span.start.line, s.select_token.0.span.start.column);
        let unsupported =
            |what: &str| CompileError::at(at.0, at.1, format!("{what} is not supported in rules"));
        if s.distinct.is_some() {
            return Err(unsupported("DISTINCT"));
        }
        if s.top.is_some() || s.into.is_some() || s.prewhere.is_some() || s.qualify.is_some() {
            return Err(unsupported("this SELECT clause"));
        }
        if !s.lateral_views.is_empty() || !s.connect_by.is_empty() || !s.named_window.is_empty() {
            return Err(unsupported("this SELECT clause"));
        }
        match &s.group_by {
            GroupByExpr::Expressions(v, m) if v.is_empty() && m.is_empty() => {}
            _ => {
                return Err(unsupported("GROUP BY")
                    .hint("rules see one message at a time; there is nothing to group"))
            }
        }
        if let Some(h) = &s.having {
            return Err(err(h, "HAVING is not supported in rules"));
        }
        if !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty() {
            return Err(unsupported("CLUSTER/DISTRIBUTE/SORT BY"));
        }
        let filter = self.from(s, at)?;
        if s.projection.len() > MAX_FIELDS {
            return Err(err(
                &s.projection[MAX_FIELDS],
                format!("a rule selects at most {MAX_FIELDS} fields"),
            )
            .hint("use thingPropertyFlatMap() or * to select many properties at once"));
        }
        let mut items = Vec::with_capacity(s.projection.len());
        for item in &s.projection {
            items.push(self.item(item)?);
        }
        let raw = self.binary() && matches!(items.as_slice(), [Item::All]);
        if self.binary() && !raw && items.iter().any(|i| matches!(i, Item::All)) {
            return Err(CompileError::at(at.0, at.1, "a binary rule selects * alone, or functions only")
                .hint("use to_base64(*) or to_hex(*) to put the payload beside other fields"));
        }
        let cond = match &s.selection {
            Some(w) => Some(self.expr(w)?),
            None => None,
        };
        let keys = if self.binary() { Some(Vec::new()) } else { Query::payload_keys(&items, cond.as_ref()) };
        Ok(Query { items, filter, cond, raw, keys })
    }

    fn from(&self, s: &ast::Select, at: (u64, u64)) -> Result<TopicFilter, CompileError> {
        let [table] = s.from.as_slice() else {
            if s.from.is_empty() {
                return Err(CompileError::at(at.0, at.1, "the rule has no FROM topic")
                    .hint("add FROM \"/productKey/+/user/topic\""));
            }
            return Err(err(&s.from[1], "a rule reads from exactly one topic")
                .hint("write one rule per topic filter, or use + and # wildcards"));
        };
        if let Some(j) = table.joins.first() {
            return Err(err(&j.relation, "JOIN is not supported in rules"));
        }
        let TableFactor::Table { name, alias, args, .. } = &table.relation else {
            return Err(err(&table.relation, "FROM takes a topic filter in double quotes")
                .hint("subqueries and table functions are not supported"));
        };
        if let Some(a) = alias {
            return Err(ident_err(&a.name, "FROM takes no alias"));
        }
        if args.is_some() {
            return Err(err(&table.relation, "FROM takes a topic filter in double quotes, not a function"));
        }
        let [ObjectNamePart::Identifier(id)] = name.0.as_slice() else {
            return Err(err(&table.relation, "FROM takes one topic filter in double quotes")
                .hint("write the whole topic in double quotes: FROM \"/pk/+/user/update\""));
        };
        if id.quote_style.is_none() {
            return Err(ident_err(id, "the FROM topic must be in double quotes")
                .hint(format!("write FROM \"{}\"", id.value)));
        }
        let filter = TopicFilter::parse(&id.value).map_err(|m| ident_err(id, m))?;
        if self.binary()
            && filter.levels.get(3).map(String::as_str) != Some("user")
            && filter.levels.len() > 1
        {
            // Custom topics are /pk/dn/user/...; other topics carry platform JSON.
            return Err(ident_err(
                id,
                "a binary rule reads custom topics only (/productKey/deviceName/user/...)",
            ));
        }
        Ok(filter)
    }

    fn item(&self, item: &SelectItem) -> Result<Item, CompileError> {
        match item {
            SelectItem::Wildcard(_) => {
                if item.to_string() != "*" {
                    return Err(err(item, "only a plain * is supported"));
                }
                Ok(Item::All)
            }
            SelectItem::QualifiedWildcard(..) => {
                Err(err(item, "qualified wildcards (x.*) are not supported")
                    .hint("select the object itself: SELECT x"))
            }
            SelectItem::ExprWithAliases { expr, .. } => Err(err(expr, "one alias per field")),
            SelectItem::UnnamedExpr(e) => {
                if let Some(names) = self.flat_map(e)? {
                    return Ok(Item::Flat(names));
                }
                let key = match e {
                    A::Identifier(id) => id.value.clone(),
                    other => other.to_string(),
                };
                Ok(Item::Field { key: key.into(), expr: self.expr(e)? })
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                if self.flat_map(expr)?.is_some() {
                    return Err(err(expr, "thingPropertyFlatMap() adds several fields and takes no alias"));
                }
                Ok(Item::Field { key: alias.value.as_str().into(), expr: self.expr(expr)? })
            }
        }
    }

    /// `thingPropertyFlatMap('a', 'b')` as a SELECT item: the property names.
    fn flat_map(&self, e: &A) -> Result<Option<Vec<String>>, CompileError> {
        let A::Function(f) = e else { return Ok(None) };
        if !f.name.to_string().eq_ignore_ascii_case(thing_property_flat_map::SPEC.name) {
            return Ok(None);
        }
        if self.binary() {
            return Err(err(e, "a binary rule cannot read thing-model properties"));
        }
        let (args, _) = self.args(f, &thing_property_flat_map::SPEC)?;
        let mut names = Vec::new();
        for a in &args {
            match a {
                Expr::Lit(Value::String(s)) => names.push(s.clone()),
                _ => return Err(err(e, "thingPropertyFlatMap() takes property names as string literals")),
            }
        }
        Ok(Some(names))
    }

    fn field(&self, at: &A, path: Path) -> Result<Expr, CompileError> {
        if self.binary() {
            return Err(err(at, "a binary rule cannot read payload fields").hint(
                "binary payloads are not parsed; use to_base64(*) or to_hex(*), or set data_type: json",
            ));
        }
        Ok(Expr::Field(path))
    }

    fn ident_path(id: &Ident) -> Result<Path, CompileError> {
        if id.quote_style.is_some() {
            Path::parse(&id.value).map_err(|m| ident_err(id, m))
        } else {
            Ok(Path::key(&id.value))
        }
    }

    fn expr(&self, e: &A) -> Result<Expr, CompileError> {
        let d = self.depth.get();
        if d >= MAX_DEPTH {
            let (l, c) = leftmost(e);
            return Err(CompileError::at(
                l,
                c,
                format!("the expression is nested too deeply (more than {MAX_DEPTH} levels)"),
            )
            .hint("split long chains of operators, or use IN (...) instead of many ORs"));
        }
        self.depth.set(d + 1);
        let r = self.expr_inner(e);
        self.depth.set(d);
        r
    }

    fn expr_inner(&self, e: &A) -> Result<Expr, CompileError> {
        let bx = |x: &A| self.expr(x).map(Box::new);
        Ok(match e {
            A::Identifier(id) => self.field(e, Self::ident_path(id)?)?,
            A::CompoundIdentifier(ids) => {
                let mut p = Path::default();
                for id in ids {
                    p.extend(Self::ident_path(id)?);
                }
                self.field(e, p)?
            }
            A::CompoundFieldAccess { root, access_chain } => {
                let mut p = match self.expr(root)? {
                    Expr::Field(p) => p,
                    _ => return Err(err(root.as_ref(), "only fields can be followed by .name or [index]")),
                };
                for a in access_chain {
                    match a {
                        ast::AccessExpr::Dot(A::Identifier(id)) => p.extend(Self::ident_path(id)?),
                        ast::AccessExpr::Subscript(ast::Subscript::Index { index }) => match index {
                            A::Value(v) => match &v.value {
                                Lit::Number(n, _) => match n.parse::<usize>() {
                                    Ok(i) => p.segs.push(Seg::Index(i)),
                                    Err(_) => {
                                        return Err(err(index, "an array index is a whole number >= 0"))
                                    }
                                },
                                Lit::SingleQuotedString(k) => p.segs.push(Seg::Key(k.clone())),
                                _ => return Err(err(index, "an index is a number or a 'key'")),
                            },
                            _ => return Err(err(index, "an index must be a literal number")),
                        },
                        _ => return Err(err(e, "unsupported field access; use a.b.c or a[0]")),
                    }
                }
                self.field(e, p)?
            }
            A::Value(v) => Expr::Lit(
                literal(&v.value).ok_or_else(|| err(e, format!("unsupported literal {}", v.value)))?,
            ),
            A::Nested(x) => self.expr(x)?,
            A::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => Expr::Not(bx(expr)?),
                UnaryOperator::Minus => match self.expr(expr)? {
                    Expr::Lit(Value::Number(n)) => {
                        Expr::Lit(negate(&n).ok_or_else(|| err(e, "number out of range"))?)
                    }
                    x => Expr::Neg(Box::new(x)),
                },
                UnaryOperator::Plus => self.expr(expr)?,
                other => return Err(err(e, format!("the operator {other} is not supported"))),
            },
            A::BinaryOp { left, op, right } => {
                let (l, r) = (bx(left)?, bx(right)?);
                match op {
                    BinaryOperator::And => Expr::And(l, r),
                    BinaryOperator::Or => Expr::Or(l, r),
                    BinaryOperator::Eq => Expr::Cmp(CmpOp::Eq, l, r),
                    BinaryOperator::NotEq => Expr::Cmp(CmpOp::Ne, l, r),
                    BinaryOperator::Lt => Expr::Cmp(CmpOp::Lt, l, r),
                    BinaryOperator::LtEq => Expr::Cmp(CmpOp::Le, l, r),
                    BinaryOperator::Gt => Expr::Cmp(CmpOp::Gt, l, r),
                    BinaryOperator::GtEq => Expr::Cmp(CmpOp::Ge, l, r),
                    BinaryOperator::Plus => Expr::Arith(Arith::Add, l, r),
                    BinaryOperator::Minus => Expr::Arith(Arith::Sub, l, r),
                    BinaryOperator::Multiply => Expr::Arith(Arith::Mul, l, r),
                    BinaryOperator::Divide => Expr::Arith(Arith::Div, l, r),
                    BinaryOperator::Modulo => Expr::Arith(Arith::Rem, l, r),
                    BinaryOperator::StringConcat => Expr::Concat(l, r),
                    other => {
                        return Err(err(e, format!("the operator {other} is not supported"))
                            .hint("supported: = <> != < <= > >= AND OR NOT + - * / % ||"))
                    }
                }
            }
            A::IsNull(x) => Expr::IsNull(bx(x)?, false),
            A::IsNotNull(x) => Expr::IsNull(bx(x)?, true),
            A::Between { expr, negated, low, high } => {
                Expr::Between(bx(expr)?, bx(low)?, bx(high)?, *negated)
            }
            A::In { expr, target, negated, .. } => match target {
                ast::InTarget::List(list) => {
                    let items = list.iter().map(|x| self.expr(x)).collect::<Result<Vec<_>, _>>()?;
                    Expr::In(bx(expr)?, items, *negated)
                }
                _ => {
                    return Err(err(e, "IN takes a list of values: x IN (1, 2, 3)")
                        .hint("subqueries are not supported"))
                }
            },
            A::Like { negated, any, expr, pattern, escape_char } => {
                if *any {
                    return Err(err(e, "LIKE ANY is not supported"));
                }
                let esc = match escape_char.as_deref() {
                    None => None,
                    Some(A::Value(v)) => match &v.value {
                        Lit::SingleQuotedString(s) if s.chars().count() == 1 => s.chars().next(),
                        _ => return Err(err(e, "ESCAPE takes one character in single quotes")),
                    },
                    Some(other) => return Err(err(other, "ESCAPE takes one character in single quotes")),
                };
                let pat = match self.expr(pattern)? {
                    Expr::Lit(Value::String(p)) => {
                        LikeSrc::Const(LikePattern::new(&p, esc).map_err(|m| err(pattern.as_ref(), m))?)
                    }
                    other => LikeSrc::Dyn(Box::new(other), esc),
                };
                Expr::Like(bx(expr)?, pat, *negated)
            }
            A::ILike { .. } => {
                return Err(err(e, "ILIKE is not supported").hint("compare lower(x) LIKE 'pattern'"))
            }
            A::Case { operand, conditions, else_result, .. } => {
                let op = match operand {
                    Some(o) => Some(bx(o)?),
                    None => None,
                };
                let mut whens = Vec::with_capacity(conditions.len());
                for w in conditions {
                    whens.push((self.expr(&w.condition)?, self.expr(&w.result)?));
                }
                let other = match else_result {
                    Some(x) => Some(bx(x)?),
                    None => None,
                };
                Expr::Case(op, whens, other)
            }
            A::Function(f) => self.function(e, f)?,
            A::Substring { expr, substring_from, substring_for, .. } => {
                let mut args = vec![self.expr(expr)?];
                match substring_from {
                    Some(x) => args.push(self.expr(x)?),
                    None => return Err(err(e, "substring() needs a start index")),
                }
                if let Some(x) = substring_for {
                    args.push(self.expr(x)?);
                }
                // SQL's SUBSTRING(x FROM a FOR b) syntax is the substring() function, named by its
                // spec rather than looked up: no lookup can miss and pick another function.
                self.call(e, &functions::substring::SPEC, args, false)?
            }
            A::Floor { expr, field } => {
                if !matches!(field, CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime)) {
                    return Err(err(e, "floor() takes one argument"));
                }
                let a = self.expr(expr)?;
                self.call(e, &functions::floor::SPEC, vec![a], false)?
            }
            A::Ceil { .. } => return Err(err(e, "ceil() is not a platform function").hint("use -floor(-x)")),
            A::Cast { .. } => {
                return Err(err(e, "CAST is not supported").hint("values convert as needed: '12' + 1 is 13"))
            }
            A::TypedString(_) => {
                return Err(err(e, "typed literals (such as timestamp 'x') are not supported")
                    .hint("call the function with parentheses: timestamp('yyyy-MM-dd')"))
            }
            A::Subquery(_) | A::Exists { .. } => return Err(err(e, "subqueries are not supported in rules")),
            A::Wildcard(_) => {
                return Err(err(
                    e,
                    "* is only allowed as a SELECT item or as the argument of to_base64(*) / to_hex(*)",
                ))
            }
            other @ A::Array(_) => {
                return Err(err(e, format!("unsupported expression: {other}"))
                    .hint("array paths go in double quotes: \"[0].t\", \"a[1].v\""))
            }
            other => return Err(err(e, format!("unsupported expression: {other}"))),
        })
    }

    fn function(&self, e: &A, f: &ast::Function) -> Result<Expr, CompileError> {
        let [ObjectNamePart::Identifier(id)] = f.name.0.as_slice() else {
            return Err(err(e, format!("unknown function {}", f.name)));
        };
        let name = id.value.as_str();
        if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some()
        {
            return Err(err(e, "aggregate and window syntax is not supported in rules"));
        }
        if !matches!(f.parameters, FunctionArguments::None) {
            return Err(err(e, "unsupported function call syntax"));
        }
        if let Some(spec) = functions::lookup(name) {
            if spec.name == thing_property_flat_map::SPEC.name {
                return Err(err(e, "thingPropertyFlatMap() can only be used as a SELECT item"));
            }
            let (args, star) = self.args(f, spec)?;
            return self.call(e, spec, args, star);
        }
        if let Some(script) = self.opts.scripts.and_then(|s| s.get(name)) {
            let args = self.plain_args(f)?;
            if args.len() != script.params {
                return Err(err(
                    e,
                    format!("{name}() takes {} argument(s), got {}", script.params, args.len()),
                ));
            }
            return Ok(Expr::Script(script, args));
        }
        let mut err = ident_err(id, format!("unknown function {name}()"));
        if let Some(close) = closest(name) {
            err = err.hint(format!("did you mean {close}()?"));
        }
        Err(err)
    }

    fn plain_args(&self, f: &ast::Function) -> Result<Vec<Expr>, CompileError> {
        let list = match &f.args {
            FunctionArguments::List(l) => l,
            FunctionArguments::None => return Ok(Vec::new()),
            FunctionArguments::Subquery(q) => {
                return Err(err(q.as_ref(), "subqueries are not supported in rules"))
            }
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(err(&f.name, "DISTINCT/ALL and clauses inside function calls are not supported"));
        }
        let mut out = Vec::with_capacity(list.args.len());
        for a in &list.args {
            match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => out.push(self.expr(x)?),
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => out.push(Expr::Star),
                _ => return Err(err(&f.name, "named or qualified arguments are not supported")),
            }
        }
        Ok(out)
    }

    /// Arguments of a built-in: count checked; `*` allowed where the function takes it.
    fn args(&self, f: &ast::Function, spec: &FnSpec) -> Result<(Vec<Expr>, bool), CompileError> {
        let args = self.plain_args(f)?;
        let stars = args.iter().filter(|a| matches!(a, Expr::Star)).count();
        if stars > 0 {
            if spec.star && args.len() == 1 {
                return Ok((Vec::new(), true));
            }
            return Err(err(&f.name, format!("{}() does not take *", spec.name))
                .hint("* is an argument of to_base64(*) and to_hex(*) only"));
        }
        if args.len() < spec.min || args.len() > spec.max {
            let want = if spec.min == spec.max {
                format!("{}", spec.min)
            } else if spec.max >= 16 {
                format!("at least {}", spec.min)
            } else {
                format!("{} to {}", spec.min, spec.max)
            };
            return Err(err(
                &f.name,
                format!("{}() takes {want} argument(s), got {}", spec.name, args.len()),
            )
            .hint(format!("usage: {}", spec.usage)));
        }
        Ok((args, false))
    }

    fn call(&self, at: &A, spec: &'static FnSpec, args: Vec<Expr>, star: bool) -> Result<Expr, CompileError> {
        if let Some(check) = spec.check {
            let lits: Vec<Option<&Value>> =
                args.iter().map(|a| if let Expr::Lit(v) = a { Some(v) } else { None }).collect();
            check(&lits).map_err(|m| err(at, m).hint(format!("usage: {}", spec.usage)))?;
        }
        Ok(Expr::Call(spec, args, star))
    }
}

/// A literal's value.
fn literal(v: &Lit) -> Option<Value> {
    Some(match v {
        Lit::Number(n, _) => match parse_num(n)? {
            super::value::Num::I(i) => Value::from(i),
            super::value::Num::F(f) => serde_json::Number::from_f64(f).map(Value::Number)?,
        },
        Lit::SingleQuotedString(s) | Lit::EscapedStringLiteral(s) | Lit::NationalStringLiteral(s) => {
            Value::String(s.clone())
        }
        Lit::Boolean(b) => Value::Bool(*b),
        Lit::Null => Value::Null,
        _ => return None,
    })
}

fn negate(n: &serde_json::Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        return i.checked_neg().map(Value::from);
    }
    serde_json::Number::from_f64(-n.as_f64()?).map(Value::Number)
}

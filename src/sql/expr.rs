//! Typed, compiled expressions: the binder turns a syntax tree into an [`Expr`] over column
//! indexes (names resolved once, at planning), inserting the implicit casts Flink's type rules
//! call for; [`Expr::eval`] evaluates it on a row.
//!
//! Type rules (Flink's): integer literals are INT (BIGINT when they do not fit), decimal
//! literals `DECIMAL(p, s)`; `DECIMAL op BIGINT` is DECIMAL, anything with DOUBLE is DOUBLE;
//! integer `/` is integer division; comparisons coerce to the wider numeric type; NULL
//! propagates through arithmetic and comparisons; AND/OR follow three-valued logic.
//!
//! Invariants: `eval` never panics — division by zero and decimal overflow give NULL;
//! operand values always match the types the binder checked (casts are explicit nodes).

use std::sync::Arc;

use super::ast::{self, BinOp, ExprKind, Pos};
use super::types::{format_value, parse_decimal, parse_timestamp, rescale, SqlType, Str, Value};
use super::SqlError;

/// A column visible to expressions.
#[derive(Clone, Debug)]
pub struct Column {
    pub qualifier: Option<String>,
    pub name: String,
    pub ty: SqlType,
}

/// The columns of a relation, in row order.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub columns: Vec<Column>,
}

impl Scope {
    /// Index of the column `parts` (`a` or `t.a`), or an error naming it.
    pub fn resolve(&self, parts: &[String], pos: Pos) -> Result<usize, SqlError> {
        let (qual, name) = match parts {
            [n] => (None, n),
            [q, n] | [_, q, n] => (Some(q), n),
            _ => return Err(SqlError::at(pos, format!("column reference {} has too many parts", parts.join(".")))),
        };
        let find = |qual: Option<&String>, name: &str| -> Vec<usize> {
            self.columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.name.eq_ignore_ascii_case(name) && qual.is_none_or(|q| c.qualifier.as_deref().is_some_and(|cq| cq.eq_ignore_ascii_case(q))))
                .map(|(i, _)| i)
                .collect()
        };
        let mut matches = match parts {
            [_, _, _] => Vec::new(),
            _ => find(qual, name),
        };
        // Fields of a flattened ROW column are columns named `row.field`: `row.field` or
        // `t.row.field`.
        if matches.is_empty() && parts.len() >= 2 {
            let (q, rest) = if parts.len() == 3 { (Some(&parts[0]), &parts[1..]) } else { (None, parts) };
            matches = find(q, &rest.join("."));
        }
        match matches.as_slice() {
            [i] => Ok(*i),
            [] => {
                let names: Vec<String> = self
                    .columns
                    .iter()
                    .map(|c| match &c.qualifier {
                        Some(q) => format!("{q}.{}", c.name),
                        None => c.name.clone(),
                    })
                    .collect();
                Err(SqlError::at(pos, format!("unknown column `{}`", parts.join("."))).hint(format!("available columns: {}", names.join(", "))))
            }
            _ => Err(SqlError::at(pos, format!("column `{}` is ambiguous", parts.join("."))).hint("qualify it with its table name or alias")),
        }
    }
}

/// Arithmetic operators after typing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Built-in scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    ToTimestampLtz {
        precision: u8,
    },
    Upper,
    Lower,
    CharLength,
    Trim,
    Concat,
    Substring,
    Abs,
    Floor,
    Ceil,
    /// `SPLIT_INDEX(s, separator, index)`.
    SplitIndex,
    /// `REPLACE(s, search, replacement)`.
    Replace,
    /// `HOUR(ts)`.
    Hour,
    /// `PROCTIME()`: processing time now (a processing-time attribute where a table or a
    /// projection defines it; see `sql::proctime`).
    Proctime,
}

/// A regular-expression function with its pattern compiled at planning time.
#[derive(Clone, Debug)]
pub enum RegexFn {
    /// `REGEXP(s, pattern)`: does any substring match?
    Matches,
    /// `REGEXP_EXTRACT(s, pattern [, group])`: the group of the first match.
    Extract,
}

/// A `DATE_FORMAT` pattern (Java `SimpleDateFormat` letters), parsed at planning time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatePart {
    Year(usize),
    Month(usize),
    Day(usize),
    Hour24(usize),
    Hour12(usize),
    Minute(usize),
    Second(usize),
    Millis(usize),
    AmPm,
    Text(String),
}

/// A compiled expression.
#[derive(Clone, Debug)]
pub enum Expr {
    Col(usize),
    Lit(Value),
    /// Integer arithmetic wrapping at `bits`.
    IntArith(Arith, u32, Box<Expr>, Box<Expr>),
    DoubleArith(Arith, Box<Expr>, Box<Expr>),
    /// Decimal arithmetic producing scale `scale`.
    DecArith(Arith, u8, Box<Expr>, Box<Expr>),
    /// Timestamp ± interval (ms).
    TsArith(bool, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull(Box<Expr>, bool),
    Case(Vec<(Expr, Expr)>, Box<Expr>),
    Cast(Box<Expr>, SqlType),
    Coalesce(Vec<Expr>),
    InList(Box<Expr>, Vec<Expr>, bool),
    Like(Box<Expr>, Box<Expr>, bool),
    Call(Func, Vec<Expr>),
    /// A regular-expression function: the function, the compiled pattern, its arguments
    /// (the string, and for `REGEXP_EXTRACT` the group index).
    Regex(RegexFn, Arc<regex::Regex>, Vec<Expr>),
    /// `DATE_FORMAT(ts, pattern)` with the pattern parsed.
    DateFormat(Arc<[DatePart]>, Box<Expr>),
}

/// A bound expression and its type.
#[derive(Clone, Debug)]
pub struct Typed {
    pub expr: Expr,
    pub ty: SqlType,
}

fn type_err(pos: Pos, what: &ast::Expr, msg: String) -> SqlError {
    SqlError::at(pos, format!("type error in `{}`: {msg}", what.display()))
}

/// Resolves what bare function calls mean in the current context (aggregates are resolved by
/// the planner before scalar binding reaches them).
pub trait AggregateHook {
    /// If `e` is an aggregate call or a grouped expression, bind it to a column.
    fn lookup(&mut self, e: &ast::Expr) -> Result<Option<Typed>, SqlError>;
    /// A bare column not covered by `lookup`: is it allowed?
    fn column_allowed(&self) -> bool;
}

/// Bind `e` in `scope`.
pub fn bind(e: &ast::Expr, scope: &Scope) -> Result<Typed, SqlError> {
    Binder { scope, hook: None }.bind(e)
}

/// Bind `e` in `scope`, asking `hook` first for every sub-expression (aggregate queries).
pub fn bind_with(e: &ast::Expr, scope: &Scope, hook: &mut dyn AggregateHook) -> Result<Typed, SqlError> {
    Binder { scope, hook: Some(hook) }.bind(e)
}

/// The common numeric type of two operands of a comparison or CASE.
fn numeric_common(a: SqlType, b: SqlType) -> Option<SqlType> {
    use SqlType::*;
    if !a.is_numeric() && a != Null || !b.is_numeric() && b != Null {
        return None;
    }
    Some(match (a, b) {
        (Null, x) | (x, Null) => x,
        (Double | Float, _) | (_, Double | Float) => Double,
        (Decimal(..), _) | (_, Decimal(..)) => {
            let (p1, s1) = a.as_decimal()?;
            let (p2, s2) = b.as_decimal()?;
            let s = s1.max(s2);
            let p = ((p1 - s1).max(p2 - s2) + s).min(38);
            Decimal(p, s)
        }
        _ => {
            if a.int_bits() >= b.int_bits() {
                a
            } else {
                b
            }
        }
    })
}

/// The common type of two values for comparison, CASE branches, COALESCE.
pub fn common_type(a: SqlType, b: SqlType) -> Option<SqlType> {
    use SqlType::*;
    if a == b {
        return Some(a);
    }
    match (a, b) {
        (Null, x) | (x, Null) => Some(x),
        (Timestamp(p), TimestampLtz(q)) | (TimestampLtz(q), Timestamp(p)) => Some(TimestampLtz(p.max(q))),
        (Timestamp(p), Timestamp(q)) => Some(Timestamp(p.max(q))),
        (TimestampLtz(p), TimestampLtz(q)) => Some(TimestampLtz(p.max(q))),
        _ => numeric_common(a, b),
    }
}

/// Wrap `t` in a cast to `to` unless it already has that representation.
pub fn coerce(t: Typed, to: SqlType) -> Expr {
    if t.ty == to || t.ty == SqlType::Null {
        return t.expr;
    }
    let same_repr = (t.ty.is_integer() && to.is_integer() && t.ty.int_bits() <= to.int_bits())
        || (matches!(t.ty, SqlType::Double | SqlType::Float) && matches!(to, SqlType::Double | SqlType::Float))
        || (t.ty == SqlType::String && to == SqlType::String)
        // A wider DECIMAL of the same scale without a precision check (p >= 19: every i64
        // unscaled value fits): the cast returns its input.
        || matches!((t.ty, to), (SqlType::Decimal(p1, s1), SqlType::Decimal(p2, s2)) if s1 == s2 && p2 >= p1 && p2 >= 19);
    if same_repr {
        return t.expr;
    }
    if let Expr::Lit(v) = &t.expr {
        if let Some(c) = cast_value(v, to) {
            return Expr::Lit(c);
        }
    }
    Expr::Cast(Box::new(t.expr), to)
}

/// Can a value of type `from` be converted to `to` by CAST?
pub fn castable(from: SqlType, to: SqlType) -> bool {
    use SqlType::*;
    if from == to || from == Null {
        return true;
    }
    match to {
        String => from != Interval,
        Boolean => from == String || from.is_integer(),
        _ if to.is_numeric() => from.is_numeric() || from == String || (from.is_timestamp() && to.is_integer()),
        Timestamp(_) | TimestampLtz(_) => from.is_timestamp() || from == String || from.is_integer(),
        _ => false,
    }
}

/// Can a value of `from` be inserted into a column of `to` without an explicit CAST (Flink's
/// implicit assignment casts)?
pub fn assignable(from: SqlType, to: SqlType) -> bool {
    from == to || from == SqlType::Null || (from.is_numeric() && to.is_numeric()) || (from.is_timestamp() && to.is_timestamp())
}

struct Binder<'a, 'h> {
    scope: &'a Scope,
    hook: Option<&'h mut dyn AggregateHook>,
}

impl Binder<'_, '_> {
    fn bind(&mut self, e: &ast::Expr) -> Result<Typed, SqlError> {
        if let Some(h) = self.hook.as_mut() {
            if let Some(t) = h.lookup(e)? {
                return Ok(t);
            }
        }
        let pos = e.pos;
        match &e.kind {
            ExprKind::Column(parts) => {
                if let Some(h) = &self.hook {
                    if !h.column_allowed() {
                        return Err(SqlError::at(pos, format!("column `{}` is neither grouped nor aggregated", parts.join(".")))
                            .hint("add it to GROUP BY or wrap it in an aggregate such as MAX(...)"));
                    }
                }
                let i = self.scope.resolve(parts, pos)?;
                Ok(Typed {
                    expr: Expr::Col(i),
                    ty: self.scope.columns[i].ty,
                })
            }
            ExprKind::Number(n) => number_literal(n, pos),
            ExprKind::Str(s) => Ok(Typed {
                expr: Expr::Lit(Value::Str(Str::from(s.as_str()))),
                ty: SqlType::String,
            }),
            ExprKind::Bool(b) => Ok(Typed {
                expr: Expr::Lit(Value::Bool(*b)),
                ty: SqlType::Boolean,
            }),
            ExprKind::Null => Ok(Typed {
                expr: Expr::Lit(Value::Null),
                ty: SqlType::Null,
            }),
            ExprKind::Interval(ms) => Ok(Typed {
                expr: Expr::Lit(Value::Int(*ms)),
                ty: SqlType::Interval,
            }),
            ExprKind::Neg(inner) => {
                let t = self.bind(inner)?;
                if !t.ty.is_numeric() {
                    return Err(type_err(pos, e, format!("cannot negate {}", t.ty)));
                }
                Ok(Typed {
                    expr: Expr::Neg(Box::new(t.expr)),
                    ty: t.ty,
                })
            }
            ExprKind::Not(inner) => {
                let t = self.boolean(inner, e)?;
                Ok(Typed {
                    expr: Expr::Not(Box::new(t)),
                    ty: SqlType::Boolean,
                })
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r, e),
            ExprKind::IsNull(inner, neg) => {
                let t = self.bind(inner)?;
                Ok(Typed {
                    expr: Expr::IsNull(Box::new(t.expr), *neg),
                    ty: SqlType::Boolean,
                })
            }
            ExprKind::Between { expr, low, high, negated } => {
                let ge = ast::Expr {
                    kind: ExprKind::Binary(BinOp::GtEq, expr.clone(), low.clone()),
                    pos,
                };
                let le = ast::Expr {
                    kind: ExprKind::Binary(BinOp::LtEq, expr.clone(), high.clone()),
                    pos,
                };
                let a = self.bind(&ge)?;
                let b = self.bind(&le)?;
                let both = Expr::And(Box::new(a.expr), Box::new(b.expr));
                Ok(Typed {
                    expr: if *negated { Expr::Not(Box::new(both)) } else { both },
                    ty: SqlType::Boolean,
                })
            }
            ExprKind::InList { expr, list, negated } => {
                let t = self.bind(expr)?;
                let mut items = Vec::new();
                let mut ty = t.ty;
                let mut bound = Vec::new();
                for item in list {
                    let b = self.bind(item)?;
                    ty = common_type(ty, b.ty).ok_or_else(|| type_err(item.pos, e, format!("cannot compare {} with {}", t.ty, b.ty)))?;
                    bound.push(b);
                }
                for b in bound {
                    items.push(coerce(b, ty));
                }
                Ok(Typed {
                    expr: Expr::InList(Box::new(coerce(t, ty)), items, *negated),
                    ty: SqlType::Boolean,
                })
            }
            ExprKind::Like { expr, pattern, negated } => {
                let a = self.bind(expr)?;
                let p = self.bind(pattern)?;
                if !matches!(a.ty, SqlType::String | SqlType::Null) || !matches!(p.ty, SqlType::String | SqlType::Null) {
                    return Err(type_err(pos, e, format!("LIKE needs STRING operands, found {} and {}", a.ty, p.ty)));
                }
                Ok(Typed {
                    expr: Expr::Like(Box::new(a.expr), Box::new(p.expr), *negated),
                    ty: SqlType::Boolean,
                })
            }
            ExprKind::Case { operand, whens, else_ } => self.case(operand.as_deref(), whens, else_.as_deref(), e),
            ExprKind::Cast(inner, tn) => {
                let t = self.bind(inner)?;
                let to = resolve_type(tn)?;
                if !castable(t.ty, to) {
                    return Err(type_err(pos, e, format!("cannot cast {} to {to}", t.ty)));
                }
                Ok(Typed {
                    expr: if t.ty == to { t.expr } else { Expr::Cast(Box::new(t.expr), to) },
                    ty: to,
                })
            }
            ExprKind::Function { name, args, distinct, star } => self.function(name, args, *distinct, *star, e),
            ExprKind::Over { window, .. } => Err(SqlError::at(
                window.pos,
                "OVER aggregates are supported only as select items of a query without GROUP BY",
            )
            .hint("SELECT k, AVG(x) OVER (PARTITION BY k ORDER BY rowtime ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) FROM t; aggregate the result in an outer query")),
            ExprKind::RowNumber { .. } => Err(SqlError::at(pos, "ROW_NUMBER() OVER (...) is only supported as a select item of a window Top-N")
                .hint("SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY ...) AS rownum FROM TABLE(TUMBLE(...))) WHERE rownum <= N")),
        }
    }

    fn boolean(&mut self, inner: &ast::Expr, whole: &ast::Expr) -> Result<Expr, SqlError> {
        let t = self.bind(inner)?;
        if !matches!(t.ty, SqlType::Boolean | SqlType::Null) {
            return Err(type_err(inner.pos, whole, format!("`{}` is {}, expected BOOLEAN", inner.display(), t.ty)));
        }
        Ok(t.expr)
    }

    fn binary(&mut self, op: BinOp, l: &ast::Expr, r: &ast::Expr, e: &ast::Expr) -> Result<Typed, SqlError> {
        use SqlType::*;
        let pos = e.pos;
        match op {
            BinOp::And | BinOp::Or => {
                let a = self.boolean(l, e)?;
                let b = self.boolean(r, e)?;
                let expr = if op == BinOp::And {
                    Expr::And(Box::new(a), Box::new(b))
                } else {
                    Expr::Or(Box::new(a), Box::new(b))
                };
                Ok(Typed { expr, ty: Boolean })
            }
            BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                let a = self.bind(l)?;
                let b = self.bind(r)?;
                let ty = common_type(a.ty, b.ty).ok_or_else(|| type_err(pos, e, format!("cannot compare {} with {}", a.ty, b.ty)))?;
                if ty == Interval {
                    return Err(type_err(pos, e, "intervals cannot be compared".into()));
                }
                let cmp = match op {
                    BinOp::Eq => Cmp::Eq,
                    BinOp::NotEq => Cmp::Ne,
                    BinOp::Lt => Cmp::Lt,
                    BinOp::LtEq => Cmp::Le,
                    BinOp::Gt => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                Ok(Typed {
                    expr: Expr::Compare(cmp, Box::new(coerce(a, ty)), Box::new(coerce(b, ty))),
                    ty: Boolean,
                })
            }
            BinOp::Concat => {
                let a = self.bind(l)?;
                let b = self.bind(r)?;
                for t in [&a, &b] {
                    if !matches!(t.ty, String | Null) {
                        return Err(type_err(pos, e, format!("|| needs STRING operands, found {} and {}", a.ty, b.ty)).hint("CAST the operand AS STRING"));
                    }
                }
                Ok(Typed {
                    expr: Expr::Call(Func::Concat, vec![a.expr, b.expr]),
                    ty: String,
                })
            }
            BinOp::Plus | BinOp::Minus | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                let a = self.bind(l)?;
                let b = self.bind(r)?;
                let arith = match op {
                    BinOp::Plus => Arith::Add,
                    BinOp::Minus => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    BinOp::Div => Arith::Div,
                    _ => Arith::Mod,
                };
                self.arith(arith, a, b, e)
            }
        }
    }

    fn arith(&mut self, op: Arith, a: Typed, b: Typed, e: &ast::Expr) -> Result<Typed, SqlError> {
        arith_typed(op, a, b).map_err(|msg| type_err(e.pos, e, msg))
    }

    fn case(&mut self, operand: Option<&ast::Expr>, whens: &[(ast::Expr, ast::Expr)], else_: Option<&ast::Expr>, e: &ast::Expr) -> Result<Typed, SqlError> {
        let mut conds = Vec::new();
        let mut results = Vec::new();
        for (w, t) in whens {
            let cond = match operand {
                Some(o) => {
                    let eq = ast::Expr {
                        kind: ExprKind::Binary(BinOp::Eq, Box::new(o.clone()), Box::new(w.clone())),
                        pos: w.pos,
                    };
                    self.bind(&eq)?.expr
                }
                None => self.boolean(w, e)?,
            };
            conds.push(cond);
            results.push((self.bind(t)?, t.pos));
        }
        let els = match else_ {
            Some(x) => (self.bind(x)?, x.pos),
            None => (
                Typed {
                    expr: Expr::Lit(Value::Null),
                    ty: SqlType::Null,
                },
                e.pos,
            ),
        };
        let mut ty = SqlType::Null;
        for (t, p) in results.iter().chain(std::iter::once(&els)) {
            ty = common_type(ty, t.ty).ok_or_else(|| type_err(*p, e, format!("CASE branches have incompatible types {ty} and {}", t.ty)))?;
        }
        let branches = conds.into_iter().zip(results).map(|(c, (t, _))| (c, coerce(t, ty))).collect();
        Ok(Typed {
            expr: Expr::Case(branches, Box::new(coerce(els.0, ty))),
            ty,
        })
    }

    fn function(&mut self, name: &str, args: &[ast::Expr], distinct: bool, star: bool, e: &ast::Expr) -> Result<Typed, SqlError> {
        use SqlType::*;
        let pos = e.pos;
        if is_aggregate(name) {
            return Err(SqlError::at(pos, format!("aggregate {name} is not allowed here"))
                .hint("aggregates need GROUP BY window_start, window_end over a window TVF (TUMBLE, HOP, CUMULATE, SESSION)"));
        }
        if distinct || star {
            return Err(SqlError::at(pos, format!("{name}(…) does not take DISTINCT or *")));
        }
        let bound: Vec<Typed> = args.iter().map(|a| self.bind(a)).collect::<Result<_, _>>()?;
        let arity = |n: usize| -> Result<(), SqlError> {
            if bound.len() == n {
                Ok(())
            } else {
                Err(SqlError::at(pos, format!("{name} takes {n} argument(s), got {}", bound.len())))
            }
        };
        let want = |i: usize, ok: bool, what: &str| -> Result<(), SqlError> {
            if ok {
                Ok(())
            } else {
                Err(type_err(
                    args[i].pos,
                    e,
                    format!("argument {} of {name} is {}, expected {what}", i + 1, bound[i].ty),
                ))
            }
        };
        match name {
            "PROCTIME" => {
                arity(0)?;
                Ok(Typed {
                    expr: Expr::Call(Func::Proctime, Vec::new()),
                    ty: TimestampLtz(3),
                })
            }
            "TO_TIMESTAMP_LTZ" => {
                if bound.len() == 1 {
                    want(0, bound[0].ty.is_integer() || bound[0].ty == Null, "an integer (epoch milliseconds)")?;
                    return Ok(Typed {
                        expr: Expr::Call(Func::ToTimestampLtz { precision: 3 }, bound.into_iter().map(|b| b.expr).collect()),
                        ty: TimestampLtz(3),
                    });
                }
                arity(2)?;
                want(0, bound[0].ty.is_integer() || bound[0].ty == Null, "an integer epoch value")?;
                let precision = match &args[1].kind {
                    ExprKind::Number(n) if n == "0" || n == "3" => n.parse::<u8>().unwrap_or(3),
                    _ => {
                        return Err(SqlError::at(
                            args[1].pos,
                            "the precision of TO_TIMESTAMP_LTZ must be the literal 0 (seconds) or 3 (milliseconds)",
                        ));
                    }
                };
                let first = bound.into_iter().next().map(|b| b.expr).unwrap_or(Expr::Lit(Value::Null));
                Ok(Typed {
                    expr: Expr::Call(Func::ToTimestampLtz { precision }, vec![first]),
                    ty: TimestampLtz(3),
                })
            }
            "MOD" => {
                arity(2)?;
                let mut it = bound.into_iter();
                let (a, b) = (it.next().expect("arity"), it.next().expect("arity"));
                self.arith(Arith::Mod, a, b, e)
            }
            "UPPER" | "LOWER" | "TRIM" | "CHAR_LENGTH" | "CHARACTER_LENGTH" => {
                arity(1)?;
                want(0, matches!(bound[0].ty, String | Null), "STRING")?;
                let (f, ty) = match name {
                    "UPPER" => (Func::Upper, String),
                    "LOWER" => (Func::Lower, String),
                    "TRIM" => (Func::Trim, String),
                    _ => (Func::CharLength, Int),
                };
                Ok(Typed {
                    expr: Expr::Call(f, bound.into_iter().map(|b| b.expr).collect()),
                    ty,
                })
            }
            "CONCAT" => {
                if bound.is_empty() {
                    return Err(SqlError::at(pos, "CONCAT needs at least one argument"));
                }
                for (i, b) in bound.iter().enumerate() {
                    want(i, matches!(b.ty, String | Null), "STRING")?;
                }
                Ok(Typed {
                    expr: Expr::Call(Func::Concat, bound.into_iter().map(|b| b.expr).collect()),
                    ty: String,
                })
            }
            "SUBSTRING" | "SUBSTR" => {
                if !(2..=3).contains(&bound.len()) {
                    return Err(SqlError::at(pos, format!("{name} takes 2 or 3 arguments")));
                }
                want(0, matches!(bound[0].ty, String | Null), "STRING")?;
                for (i, b) in bound.iter().enumerate().skip(1) {
                    want(i, b.ty.is_integer(), "an integer")?;
                }
                Ok(Typed {
                    expr: Expr::Call(
                        Func::Substring,
                        bound
                            .into_iter()
                            .enumerate()
                            .map(|(i, b)| if i == 0 { b.expr } else { coerce_int(b) })
                            .collect(),
                    ),
                    ty: String,
                })
            }
            "ABS" | "FLOOR" | "CEIL" | "CEILING" => {
                arity(1)?;
                want(0, bound[0].ty.is_numeric(), "a number")?;
                let ty = bound[0].ty;
                let f = match name {
                    "ABS" => Func::Abs,
                    "FLOOR" => Func::Floor,
                    _ => Func::Ceil,
                };
                let ty = match (f, ty) {
                    (Func::Floor | Func::Ceil, Decimal(p, _)) => Decimal(p, 0),
                    _ => ty,
                };
                Ok(Typed {
                    expr: Expr::Call(f, bound.into_iter().map(|b| b.expr).collect()),
                    ty,
                })
            }
            "SPLIT_INDEX" => {
                arity(3)?;
                want(0, matches!(bound[0].ty, String | Null), "STRING")?;
                want(1, matches!(bound[1].ty, String | Null), "STRING")?;
                want(2, bound[2].ty.is_integer(), "an integer")?;
                Ok(Typed {
                    expr: Expr::Call(
                        Func::SplitIndex,
                        bound
                            .into_iter()
                            .enumerate()
                            .map(|(i, b)| if i == 2 { coerce_int(b) } else { b.expr })
                            .collect(),
                    ),
                    ty: String,
                })
            }
            "REPLACE" => {
                arity(3)?;
                for (i, b) in bound.iter().enumerate() {
                    want(i, matches!(b.ty, String | Null), "STRING")?;
                }
                Ok(Typed {
                    expr: Expr::Call(Func::Replace, bound.into_iter().map(|b| b.expr).collect()),
                    ty: String,
                })
            }
            "HOUR" => {
                arity(1)?;
                want(0, bound[0].ty.is_timestamp() || bound[0].ty == Null, "a TIMESTAMP")?;
                Ok(Typed {
                    expr: Expr::Call(Func::Hour, bound.into_iter().map(|b| b.expr).collect()),
                    ty: BigInt,
                })
            }
            "REGEXP" | "REGEXP_EXTRACT" => {
                let extract = name == "REGEXP_EXTRACT";
                if bound.len() != 2 && !(extract && bound.len() == 3) {
                    return Err(SqlError::at(
                        pos,
                        format!("{name} takes {} arguments, got {}", if extract { "2 or 3" } else { "2" }, bound.len()),
                    ));
                }
                want(0, matches!(bound[0].ty, String | Null), "STRING")?;
                let ExprKind::Str(pattern) = &args[1].kind else {
                    return Err(SqlError::at(args[1].pos, format!("the pattern of {name} must be a string literal")));
                };
                let re = regex::Regex::new(pattern).map_err(|err| {
                    SqlError::at(args[1].pos, format!("bad regular expression '{pattern}': {err}"))
                        .hint("weir uses Rust regex syntax (no look-around or back-references)")
                })?;
                if extract && bound.len() == 3 {
                    want(2, bound[2].ty.is_integer(), "an integer")?;
                }
                let mut it = bound.into_iter();
                let mut call_args = vec![it.next().map(|b| b.expr).unwrap_or(Expr::Lit(Value::Null))];
                if let Some(g) = it.nth(1) {
                    call_args.push(coerce_int(g));
                }
                Ok(Typed {
                    expr: Expr::Regex(if extract { RegexFn::Extract } else { RegexFn::Matches }, Arc::new(re), call_args),
                    ty: if extract { String } else { Boolean },
                })
            }
            "DATE_FORMAT" => {
                arity(2)?;
                want(0, bound[0].ty.is_timestamp() || matches!(bound[0].ty, String | Null), "a TIMESTAMP or STRING")?;
                let ExprKind::Str(pattern) = &args[1].kind else {
                    return Err(SqlError::at(args[1].pos, "the format of DATE_FORMAT must be a string literal"));
                };
                let parts = parse_date_format(pattern).map_err(|m| SqlError::at(args[1].pos, m))?;
                Ok(Typed {
                    expr: Expr::DateFormat(
                        parts.into(),
                        Box::new(bound.into_iter().next().map(|b| b.expr).unwrap_or(Expr::Lit(Value::Null))),
                    ),
                    ty: String,
                })
            }
            "COALESCE" | "IFNULL" => {
                if bound.is_empty() {
                    return Err(SqlError::at(pos, format!("{name} needs arguments")));
                }
                let mut ty = Null;
                for (i, b) in bound.iter().enumerate() {
                    ty = common_type(ty, b.ty).ok_or_else(|| type_err(args[i].pos, e, format!("incompatible argument types {ty} and {}", b.ty)))?;
                }
                Ok(Typed {
                    expr: Expr::Coalesce(bound.into_iter().map(|b| coerce(b, ty)).collect()),
                    ty,
                })
            }
            _ => Err(SqlError::at(pos, format!("unknown function {name}")).hint(
                "supported: TO_TIMESTAMP_LTZ, MOD, ABS, FLOOR, CEIL, UPPER, LOWER, TRIM, CHAR_LENGTH, CONCAT, SUBSTRING, REPLACE, SPLIT_INDEX, REGEXP, \
                 REGEXP_EXTRACT, DATE_FORMAT, HOUR, COALESCE, CAST, CASE; aggregates COUNT, SUM, MIN, MAX, AVG",
            )),
        }
    }
}

/// Parse a Java `SimpleDateFormat` pattern (the letters y M d H h m s S a; text in quotes).
fn parse_date_format(p: &str) -> Result<Vec<DatePart>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut text = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // 'quoted text'; '' is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                text.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                text.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            text.push(c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        if !text.is_empty() {
            out.push(DatePart::Text(std::mem::take(&mut text)));
        }
        out.push(match c {
            'y' => DatePart::Year(n),
            'M' => DatePart::Month(n),
            'd' => DatePart::Day(n),
            'H' => DatePart::Hour24(n),
            'h' => DatePart::Hour12(n),
            'm' => DatePart::Minute(n),
            's' => DatePart::Second(n),
            'S' => DatePart::Millis(n),
            'a' => DatePart::AmPm,
            _ => return Err(format!("DATE_FORMAT pattern letter '{c}' is not supported (supported: y M d H h m s S a)")),
        });
        i += n;
    }
    if !text.is_empty() {
        out.push(DatePart::Text(text));
    }
    Ok(out)
}

/// Format epoch ms (UTC) by a parsed `DATE_FORMAT` pattern.
fn format_date(ms: i64, parts: &[DatePart]) -> std::string::String {
    use std::fmt::Write as _;
    let secs = ms.div_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = super::types::civil_from_days(secs.div_euclid(86_400));
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let millis = ms.rem_euclid(1000);
    let mut out = std::string::String::new();
    for p in parts {
        let _ = match p {
            DatePart::Year(2) => write!(out, "{:02}", y.rem_euclid(100)),
            DatePart::Year(n) => write!(out, "{:0w$}", y, w = *n),
            DatePart::Month(n) => write!(out, "{:0w$}", mo, w = *n),
            DatePart::Day(n) => write!(out, "{:0w$}", d, w = *n),
            DatePart::Hour24(n) => write!(out, "{:0w$}", h, w = *n),
            DatePart::Hour12(n) => write!(out, "{:0w$}", if h % 12 == 0 { 12 } else { h % 12 }, w = *n),
            DatePart::Minute(n) => write!(out, "{:0w$}", mi, w = *n),
            DatePart::Second(n) => write!(out, "{:0w$}", s, w = *n),
            DatePart::Millis(n) => write!(out, "{:0w$}", millis, w = *n),
            DatePart::AmPm => write!(out, "{}", if h < 12 { "AM" } else { "PM" }),
            DatePart::Text(t) => write!(out, "{t}"),
        };
    }
    out
}

fn coerce_int(b: Typed) -> Expr {
    coerce(b, SqlType::BigInt)
}

/// Is `name` an aggregate function?
pub fn is_aggregate(name: &str) -> bool {
    matches!(name, "COUNT" | "SUM" | "MIN" | "MAX" | "AVG")
}

/// Type and compile `a op b`.
pub fn arith_typed(op: Arith, a: Typed, b: Typed) -> Result<Typed, String> {
    use SqlType::*;
    let (ta, tb) = (a.ty, b.ty);
    // Timestamp ± interval.
    if ta.is_timestamp() && tb == Interval && matches!(op, Arith::Add | Arith::Sub) {
        return Ok(Typed {
            expr: Expr::TsArith(op == Arith::Add, Box::new(a.expr), Box::new(b.expr)),
            ty: ta,
        });
    }
    if ta == Interval && tb.is_timestamp() && op == Arith::Add {
        return Ok(Typed {
            expr: Expr::TsArith(true, Box::new(b.expr), Box::new(a.expr)),
            ty: tb,
        });
    }
    if !(ta.is_numeric() || ta == Null) || !(tb.is_numeric() || tb == Null) {
        return Err(format!("operator {} is not defined for {ta} and {tb}", arith_symbol(op)));
    }
    if ta == Null && tb == Null {
        return Ok(Typed {
            expr: Expr::Lit(Value::Null),
            ty: Null,
        });
    }
    let (ta, tb) = (if ta == Null { tb } else { ta }, if tb == Null { ta } else { tb });
    if matches!(ta, Double | Float) || matches!(tb, Double | Float) {
        return Ok(Typed {
            expr: Expr::DoubleArith(op, Box::new(coerce(a, Double)), Box::new(coerce(b, Double))),
            ty: Double,
        });
    }
    if matches!(ta, Decimal(..)) || matches!(tb, Decimal(..)) {
        let (p1, s1) = ta.as_decimal().unwrap_or((19, 0));
        let (p2, s2) = tb.as_decimal().unwrap_or((19, 0));
        let (p, s) = match op {
            Arith::Add | Arith::Sub => {
                let s = s1.max(s2);
                (((p1 - s1).max(p2 - s2) + s + 1) as u32, s as u32)
            }
            Arith::Mul => ((p1 + p2) as u32, (s1 + s2) as u32),
            Arith::Div => {
                let s = 6u32.max(s1 as u32 + p2 as u32 + 1);
                (p1 as u32 - s1 as u32 + s2 as u32 + s, s)
            }
            Arith::Mod => {
                let s = s1.max(s2) as u32;
                (((p1 - s1).min(p2 - s2)) as u32 + s, s)
            }
        };
        // Flink caps precision at 38, reducing scale (keeping at least 6) when it must.
        let (p, s) = if p > 38 {
            let int_digits = p - s;
            let s = s.min(38u32.saturating_sub(int_digits).max(s.min(6)));
            (38, s)
        } else {
            (p, s)
        };
        // weir keeps decimals in 64 bits: at most 18 fractional digits.
        let s = s.min(18);
        let da = coerce(a, Decimal(p1, s1));
        let db = coerce(b, Decimal(p2, s2));
        return Ok(Typed {
            expr: Expr::DecArith(op, s as u8, Box::new(da), Box::new(db)),
            ty: Decimal(p as u8, s as u8),
        });
    }
    let ty = if ta.int_bits() >= tb.int_bits() { ta } else { tb };
    Ok(Typed {
        expr: Expr::IntArith(op, ty.int_bits(), Box::new(a.expr), Box::new(b.expr)),
        ty,
    })
}

fn arith_symbol(op: Arith) -> &'static str {
    match op {
        Arith::Add => "+",
        Arith::Sub => "-",
        Arith::Mul => "*",
        Arith::Div => "/",
        Arith::Mod => "MOD",
    }
}

/// Type of a numeric literal: INT, BIGINT, DECIMAL(p, s) or DOUBLE (with an exponent).
fn number_literal(n: &str, pos: Pos) -> Result<Typed, SqlError> {
    if n.contains(['e', 'E']) {
        let v: f64 = n.parse().map_err(|_| SqlError::at(pos, format!("bad number {n}")))?;
        return Ok(Typed {
            expr: Expr::Lit(Value::Double(v)),
            ty: SqlType::Double,
        });
    }
    if let Some((int, frac)) = n.split_once('.') {
        let digits = int.trim_start_matches('-').trim_start_matches('0').len() + frac.len();
        if frac.len() > 18 {
            return Err(SqlError::at(pos, format!("decimal literal {n} has more than 18 fractional digits"))
                .hint("weir supports DECIMAL scales up to 18; write it as a DOUBLE, e.g. 1.5e-20"));
        }
        let s = frac.len() as u8;
        let p = digits.clamp(s as usize, 38).max(1) as u8;
        let v = parse_decimal(n, s).ok_or_else(|| SqlError::at(pos, format!("decimal literal {n} does not fit in 18 digits")))?;
        return Ok(Typed {
            expr: Expr::Lit(Value::Decimal(v, s)),
            ty: SqlType::Decimal(p, s),
        });
    }
    let v: i64 = n
        .parse()
        .map_err(|_| SqlError::at(pos, format!("integer literal {n} does not fit in BIGINT")).hint("write it as a decimal, e.g. 1e20"))?;
    let ty = if i32::try_from(v).is_ok() { SqlType::Int } else { SqlType::BigInt };
    Ok(Typed {
        expr: Expr::Lit(Value::Int(v)),
        ty,
    })
}

/// Resolve a written type name.
pub fn resolve_type(tn: &ast::TypeName) -> Result<SqlType, SqlError> {
    let p = |i: usize, d: u32| tn.args.get(i).copied().unwrap_or(d);
    let ts_precision = |p: u32| -> Result<u8, SqlError> {
        if p <= 9 {
            Ok(p as u8)
        } else {
            Err(SqlError::at(tn.pos, format!("timestamp precision {p} must be 0..=9")))
        }
    };
    let t = match tn.name.as_str() {
        "BOOLEAN" | "BOOL" => SqlType::Boolean,
        "TINYINT" => SqlType::TinyInt,
        "SMALLINT" => SqlType::SmallInt,
        "INT" | "INTEGER" => SqlType::Int,
        "BIGINT" => SqlType::BigInt,
        "FLOAT" | "REAL" => SqlType::Float,
        "DOUBLE" => SqlType::Double,
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let (pr, sc) = (p(0, 10), p(1, 0));
            if !(1..=38).contains(&pr) || sc > pr {
                return Err(SqlError::at(
                    tn.pos,
                    format!("DECIMAL({pr}, {sc}): precision must be 1..=38 and scale <= precision"),
                ));
            }
            if sc > 18 {
                return Err(SqlError::at(tn.pos, format!("DECIMAL scale {sc} is not supported")).hint("weir supports DECIMAL scales up to 18"));
            }
            SqlType::Decimal(pr as u8, sc as u8)
        }
        "STRING" | "VARCHAR" | "CHAR" | "TEXT" => SqlType::String,
        "TIMESTAMP" => SqlType::Timestamp(ts_precision(p(0, 6))?),
        "TIMESTAMP_LTZ" => SqlType::TimestampLtz(ts_precision(p(0, 6))?),
        other => {
            return Err(SqlError::at(tn.pos, format!("type {other} is not supported")).hint(
                "supported types: BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), STRING/VARCHAR, TIMESTAMP(p), TIMESTAMP_LTZ(p)",
            ))
        }
    };
    Ok(t)
}

/// Wrap an integer result to `bits` like Java's int arithmetic.
#[inline]
fn wrap(v: i64, bits: u32) -> i64 {
    match bits {
        8 => v as i8 as i64,
        16 => v as i16 as i64,
        32 => v as i32 as i64,
        _ => v,
    }
}

fn decimal_of(v: &Value) -> Option<(i64, u8)> {
    match v {
        Value::Decimal(x, s) => Some((*x, *s)),
        Value::Int(x) => Some((*x, 0)),
        _ => None,
    }
}

/// Convert a value to type `to` (CAST semantics; `None` when it cannot be represented, which
/// evaluates to NULL).
pub fn cast_value(v: &Value, to: SqlType) -> Option<Value> {
    use SqlType::*;
    if v.is_null() {
        return Some(Value::Null);
    }
    Some(match to {
        Null | Interval => return None,
        Boolean => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Bool(*i != 0),
            Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return None,
            },
            _ => return None,
        },
        TinyInt | SmallInt | Int | BigInt => {
            let bits = to.int_bits();
            let i = match v {
                Value::Int(i) => *i,
                Value::Double(d) => {
                    if !d.is_finite() {
                        return None;
                    }
                    d.trunc() as i64
                }
                Value::Decimal(x, s) => (*x as i128 / 10i128.pow(*s as u32)) as i64,
                Value::Str(s) => s.trim().parse::<i64>().ok()?,
                Value::Bool(b) => *b as i64,
                Value::Timestamp(ms) | Value::TimestampLtz(ms) => ms.div_euclid(1000),
                Value::Null => return Some(Value::Null),
            };
            Value::Int(wrap(i, bits))
        }
        Float | Double => Value::Double(match v {
            Value::Int(i) => *i as f64,
            Value::Double(d) => *d,
            Value::Decimal(x, s) => decimal_to_f64(*x, *s),
            Value::Str(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        }),
        Decimal(p, s) => {
            let x = match v {
                Value::Int(i) => rescale(*i, 0, s)?,
                Value::Decimal(x, from) => rescale(*x, *from, s)?,
                Value::Double(d) => {
                    let scaled = (d * 10f64.powi(s as i32)).round();
                    if !scaled.is_finite() || scaled.abs() >= 9.2e18 {
                        return None;
                    }
                    scaled as i64
                }
                Value::Str(t) => parse_decimal(t, s)?,
                _ => return None,
            };
            // Values beyond the declared precision are NULL (Flink's overflow).
            if p < 19 && (x as i128).unsigned_abs() >= 10u128.pow(p as u32) {
                return None;
            }
            Value::Decimal(x, s)
        }
        String => match v {
            Value::Str(s) => Value::Str(s.clone()),
            other => {
                let mut out = std::string::String::new();
                match other {
                    Value::TimestampLtz(ms) => super::types::format_timestamp(*ms, &mut out),
                    _ => format_value(other, &mut out),
                }
                Value::Str(Str::from(out))
            }
        },
        Timestamp(_) => match v {
            Value::Timestamp(ms) | Value::TimestampLtz(ms) => Value::Timestamp(*ms),
            Value::Int(secs) => Value::Timestamp(secs.checked_mul(1000)?),
            Value::Str(s) => Value::Timestamp(parse_timestamp(s)?),
            _ => return None,
        },
        TimestampLtz(_) => match v {
            Value::Timestamp(ms) | Value::TimestampLtz(ms) => Value::TimestampLtz(*ms),
            Value::Int(secs) => Value::TimestampLtz(secs.checked_mul(1000)?),
            Value::Str(s) => Value::TimestampLtz(parse_timestamp(s)?),
            _ => return None,
        },
    })
}

/// A decimal as the nearest double (exact for the decimal's shortest text).
pub fn decimal_to_f64(x: i64, s: u8) -> f64 {
    if s == 0 {
        return x as f64;
    }
    let mut t = std::string::String::new();
    super::types::format_decimal(x, s, &mut t);
    t.parse().unwrap_or(f64::NAN)
}

fn like(text: &str, pattern: &str) -> bool {
    // `%` any run, `_` one character; iterative with backtracking on the last `%`.
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) && p[pi] != '%' {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

impl Expr {
    /// The same node with every direct operand replaced by `f(operand)`.
    pub fn map_children(&self, f: &mut dyn FnMut(&Expr) -> Expr) -> Expr {
        let mut b = |e: &Expr| Box::new(f(e));
        match self {
            Expr::Col(_) | Expr::Lit(_) => self.clone(),
            Expr::IntArith(op, bits, a, c) => {
                let a = b(a);
                Expr::IntArith(*op, *bits, a, b(c))
            }
            Expr::DoubleArith(op, a, c) => {
                let a = b(a);
                Expr::DoubleArith(*op, a, b(c))
            }
            Expr::DecArith(op, scale, a, c) => {
                let a = b(a);
                Expr::DecArith(*op, *scale, a, b(c))
            }
            Expr::TsArith(add, a, c) => {
                let a = b(a);
                Expr::TsArith(*add, a, b(c))
            }
            Expr::Neg(a) => Expr::Neg(b(a)),
            Expr::Compare(op, a, c) => {
                let a = b(a);
                Expr::Compare(*op, a, b(c))
            }
            Expr::And(a, c) => {
                let a = b(a);
                Expr::And(a, b(c))
            }
            Expr::Or(a, c) => {
                let a = b(a);
                Expr::Or(a, b(c))
            }
            Expr::Not(a) => Expr::Not(b(a)),
            Expr::IsNull(a, neg) => Expr::IsNull(b(a), *neg),
            Expr::Case(branches, els) => {
                let branches = branches.iter().map(|(c, r)| (f(c), f(r))).collect();
                Expr::Case(branches, Box::new(f(els)))
            }
            Expr::Cast(a, ty) => Expr::Cast(b(a), *ty),
            Expr::Coalesce(items) => Expr::Coalesce(items.iter().map(&mut *f).collect()),
            Expr::InList(a, items, neg) => {
                let a = b(a);
                Expr::InList(a, items.iter().map(&mut *f).collect(), *neg)
            }
            Expr::Like(a, p, neg) => {
                let a = b(a);
                Expr::Like(a, b(p), *neg)
            }
            Expr::Call(func, args) => Expr::Call(*func, args.iter().map(&mut *f).collect()),
            Expr::Regex(kind, re, args) => Expr::Regex(kind.clone(), re.clone(), args.iter().map(&mut *f).collect()),
            Expr::DateFormat(parts, a) => Expr::DateFormat(parts.clone(), b(a)),
        }
    }

    /// Are all direct operands literals (and is there at least one)?
    fn operands_literal(&self) -> bool {
        let mut all = true;
        let mut any = false;
        let _ = self.map_children(&mut |c| {
            any = true;
            all &= matches!(c, Expr::Lit(_));
            Expr::Lit(Value::Null)
        });
        any && all
    }

    /// The expression with the columns `known` names replaced by their values and simplified:
    /// operators over literals are evaluated, CASE branches whose condition is a literal are
    /// decided, `AND`/`OR` with a literal operand reduced. On any row whose known columns hold
    /// those values it evaluates exactly as `self` does (evaluation has no side effects).
    pub fn fold(&self, known: &dyn Fn(usize) -> Option<Value>) -> Expr {
        let folded = match self {
            Expr::Col(i) => return known(*i).map(Expr::Lit).unwrap_or(Expr::Col(*i)),
            Expr::Lit(_) => return self.clone(),
            Expr::Case(branches, otherwise) => {
                let mut kept: Vec<(Expr, Expr)> = Vec::new();
                let mut els = None;
                for (c, r) in branches {
                    let c = c.fold(known);
                    match c {
                        // Taken whenever reached: the rest is unreachable.
                        Expr::Lit(Value::Bool(true)) => {
                            els = Some(r.fold(known));
                            break;
                        }
                        // FALSE or NULL: never taken.
                        Expr::Lit(_) => {}
                        c => kept.push((c, r.fold(known))),
                    }
                }
                let els = els.unwrap_or_else(|| otherwise.fold(known));
                if kept.is_empty() {
                    return els;
                }
                Expr::Case(kept, Box::new(els))
            }
            Expr::And(a, b) => match (a.fold(known), b.fold(known)) {
                (Expr::Lit(Value::Bool(true)), x) | (x, Expr::Lit(Value::Bool(true))) => return x,
                (Expr::Lit(Value::Bool(false)), _) | (_, Expr::Lit(Value::Bool(false))) => return Expr::Lit(Value::Bool(false)),
                (a, b) => Expr::And(Box::new(a), Box::new(b)),
            },
            Expr::Or(a, b) => match (a.fold(known), b.fold(known)) {
                (Expr::Lit(Value::Bool(false)), x) | (x, Expr::Lit(Value::Bool(false))) => return x,
                (Expr::Lit(Value::Bool(true)), _) | (_, Expr::Lit(Value::Bool(true))) => return Expr::Lit(Value::Bool(true)),
                (a, b) => Expr::Or(Box::new(a), Box::new(b)),
            },
            other => other.map_children(&mut |c| c.fold(known)),
        };
        if folded.operands_literal() {
            Expr::Lit(folded.eval(&[]))
        } else {
            folded
        }
    }

    /// Does the expression read the clock (`PROCTIME()`): evaluating it twice may differ.
    pub fn reads_clock(&self) -> bool {
        if matches!(self, Expr::Call(Func::Proctime, _)) {
            return true;
        }
        let mut found = false;
        let _ = self.map_children(&mut |c| {
            found |= c.reads_clock();
            Expr::Lit(Value::Null)
        });
        found
    }

    /// The expression with every column `i` replaced by `columns[i]` (the expressions a
    /// projection computes them with).
    pub fn substitute(&self, columns: &[Expr]) -> Expr {
        match self {
            Expr::Col(i) => columns.get(*i).cloned().unwrap_or(Expr::Lit(Value::Null)),
            other => other.map_children(&mut |c| c.substitute(columns)),
        }
    }

    /// The expression with every column index `i` replaced by `map(i)`.
    pub fn remap(&self, map: &dyn Fn(usize) -> usize) -> Expr {
        match self {
            Expr::Col(i) => Expr::Col(map(*i)),
            other => other.map_children(&mut |c| c.remap(map)),
        }
    }

    /// Visit every column index the expression reads.
    pub fn for_each_column(&self, f: &mut dyn FnMut(usize)) {
        match self {
            Expr::Col(i) => f(*i),
            Expr::Lit(_) => {}
            Expr::IntArith(_, _, a, b)
            | Expr::DoubleArith(_, a, b)
            | Expr::DecArith(_, _, a, b)
            | Expr::TsArith(_, a, b)
            | Expr::Compare(_, a, b)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::Like(a, b, _) => {
                Self::for_each_column(a, f);
                Self::for_each_column(b, f);
            }
            Expr::Neg(a) | Expr::Not(a) | Expr::IsNull(a, _) | Expr::Cast(a, _) => Self::for_each_column(a, f),
            Expr::Case(bs, e) => {
                for (a, b) in bs {
                    Self::for_each_column(a, f);
                    Self::for_each_column(b, f);
                }
                Self::for_each_column(e, f);
            }
            Expr::Coalesce(v) | Expr::Call(_, v) | Expr::Regex(_, _, v) => v.iter().for_each(|a| Self::for_each_column(a, f)),
            Expr::DateFormat(_, a) => Self::for_each_column(a, f),
            Expr::InList(a, v, _) => {
                Self::for_each_column(a, f);
                v.iter().for_each(|x| Self::for_each_column(x, f));
            }
        }
    }

    /// Evaluate on `row`.
    pub fn eval(&self, row: &[Value]) -> Value {
        match self {
            Expr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Lit(v) => v.clone(),
            Expr::IntArith(op, bits, a, b) => match (a.eval(row), b.eval(row)) {
                (Value::Int(x), Value::Int(y)) => {
                    let r = match op {
                        Arith::Add => x.wrapping_add(y),
                        Arith::Sub => x.wrapping_sub(y),
                        Arith::Mul => x.wrapping_mul(y),
                        Arith::Div => match x.checked_div(y) {
                            Some(v) => v,
                            None if y == -1 => x.wrapping_neg(),
                            None => return Value::Null,
                        },
                        Arith::Mod => match x.checked_rem(y) {
                            Some(v) => v,
                            None if y == -1 => 0,
                            None => return Value::Null,
                        },
                    };
                    Value::Int(wrap(r, *bits))
                }
                _ => Value::Null,
            },
            Expr::DoubleArith(op, a, b) => match (a.eval(row), b.eval(row)) {
                (Value::Double(x), Value::Double(y)) => Value::Double(match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                    Arith::Mod => x % y,
                }),
                _ => Value::Null,
            },
            Expr::DecArith(op, scale, a, b) => {
                let (Some((x, sx)), Some((y, sy))) = (decimal_of(&a.eval(row)), decimal_of(&b.eval(row))) else {
                    return Value::Null;
                };
                dec_arith(*op, *scale, x, sx, y, sy).map(|v| Value::Decimal(v, *scale)).unwrap_or(Value::Null)
            }
            Expr::TsArith(add, a, b) => match (a.eval(row), b.eval(row)) {
                (Value::Timestamp(t), Value::Int(ms)) => Value::Timestamp(if *add { t.saturating_add(ms) } else { t.saturating_sub(ms) }),
                (Value::TimestampLtz(t), Value::Int(ms)) => Value::TimestampLtz(if *add { t.saturating_add(ms) } else { t.saturating_sub(ms) }),
                _ => Value::Null,
            },
            Expr::Neg(a) => match a.eval(row) {
                Value::Int(x) => Value::Int(x.wrapping_neg()),
                Value::Double(x) => Value::Double(-x),
                Value::Decimal(x, s) => Value::Decimal(x.wrapping_neg(), s),
                _ => Value::Null,
            },
            Expr::Compare(op, a, b) => {
                let (x, y) = (a.eval(row), b.eval(row));
                if x.is_null() || y.is_null() {
                    return Value::Null;
                }
                let o = x.total_cmp(&y);
                Value::Bool(match op {
                    Cmp::Eq => o.is_eq(),
                    Cmp::Ne => o.is_ne(),
                    Cmp::Lt => o.is_lt(),
                    Cmp::Le => o.is_le(),
                    Cmp::Gt => o.is_gt(),
                    Cmp::Ge => o.is_ge(),
                })
            }
            Expr::And(a, b) => match a.eval(row) {
                Value::Bool(false) => Value::Bool(false),
                x => match (x, b.eval(row)) {
                    (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                },
            },
            Expr::Or(a, b) => match a.eval(row) {
                Value::Bool(true) => Value::Bool(true),
                x => match (x, b.eval(row)) {
                    (_, Value::Bool(true)) => Value::Bool(true),
                    (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                    _ => Value::Null,
                },
            },
            Expr::Not(a) => match a.eval(row) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::IsNull(a, neg) => Value::Bool(a.eval(row).is_null() != *neg),
            Expr::Case(branches, els) => {
                for (c, r) in branches {
                    if matches!(c.eval(row), Value::Bool(true)) {
                        return r.eval(row);
                    }
                }
                els.eval(row)
            }
            Expr::Cast(a, to) => cast_value(&a.eval(row), *to).unwrap_or(Value::Null),
            Expr::Coalesce(items) => {
                for i in items {
                    let v = i.eval(row);
                    if !v.is_null() {
                        return v;
                    }
                }
                Value::Null
            }
            Expr::InList(a, items, neg) => {
                let x = a.eval(row);
                if x.is_null() {
                    return Value::Null;
                }
                let mut saw_null = false;
                for i in items {
                    let y = i.eval(row);
                    if y.is_null() {
                        saw_null = true;
                    } else if x.total_cmp(&y).is_eq() {
                        return Value::Bool(!neg);
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*neg)
                }
            }
            Expr::Like(a, p, neg) => match (a.eval(row), p.eval(row)) {
                (Value::Str(s), Value::Str(p)) => Value::Bool(like(&s, &p) != *neg),
                _ => Value::Null,
            },
            Expr::Call(f, args) => call(*f, args, row),
            Expr::Regex(kind, re, args) => {
                let Value::Str(s) = args[0].eval(row) else { return Value::Null };
                match kind {
                    RegexFn::Matches => Value::Bool(re.is_match(&s)),
                    RegexFn::Extract => {
                        let group = match args.get(1).map(|a| a.eval(row)) {
                            None => 0,
                            Some(Value::Int(g)) if g >= 0 => g as usize,
                            _ => return Value::Null,
                        };
                        match re.captures(&s).and_then(|c| c.get(group)) {
                            Some(m) => Value::Str(Str::from(m.as_str())),
                            None => Value::Null,
                        }
                    }
                }
            }
            Expr::DateFormat(parts, a) => match a.eval(row) {
                Value::Timestamp(ms) | Value::TimestampLtz(ms) => Value::Str(Str::from(format_date(ms, parts))),
                Value::Str(s) => match parse_timestamp(&s) {
                    Some(ms) => Value::Str(Str::from(format_date(ms, parts))),
                    None => Value::Null,
                },
                _ => Value::Null,
            },
        }
    }

    /// True if the expression is a boolean TRUE on `row` (WHERE semantics).
    #[inline]
    pub fn test(&self, row: &[Value]) -> bool {
        matches!(self.eval(row), Value::Bool(true))
    }
}

fn dec_arith(op: Arith, scale: u8, x: i64, sx: u8, y: i64, sy: u8) -> Option<i64> {
    let (x, y) = (x as i128, y as i128);
    let p10 = |n: i64| -> Option<i128> { 10i128.checked_pow(u32::try_from(n).ok()?) };
    let r: i128 = match op {
        Arith::Add | Arith::Sub => {
            let s = sx.max(sy);
            let a = x * p10((s - sx) as i64)?;
            let b = y * p10((s - sy) as i64)?;
            let v = if op == Arith::Add { a + b } else { a - b };
            return i64::try_from(v).ok().and_then(|v| rescale(v, s, scale));
        }
        Arith::Mul => {
            let v = x.checked_mul(y)?;
            let s = sx + sy;
            return round_i128(v, s as i64 - scale as i64);
        }
        Arith::Div => {
            if y == 0 {
                return None;
            }
            // x/10^sx / (y/10^sy) at `scale`: x * 10^(scale + sy - sx) / y, rounded half up.
            let shift = scale as i64 + sy as i64 - sx as i64;
            let (num, den) = if shift >= 0 {
                (x.checked_mul(p10(shift)?)?, y)
            } else {
                (x, y.checked_mul(p10(-shift)?)?)
            };
            let q = num / den;
            let r = num % den;
            if r.abs() * 2 >= den.abs() {
                q + (num.signum() * den.signum())
            } else {
                q
            }
        }
        Arith::Mod => {
            if y == 0 {
                return None;
            }
            let s = sx.max(sy);
            let a = x * p10((s - sx) as i64)?;
            let b = y * p10((s - sy) as i64)?;
            return i64::try_from(a % b).ok().and_then(|v| rescale(v, s, scale));
        }
    };
    i64::try_from(r).ok()
}

/// Divide by 10^drop with half-up rounding (or multiply when `drop` < 0).
fn round_i128(v: i128, drop: i64) -> Option<i64> {
    if drop <= 0 {
        return i64::try_from(v.checked_mul(10i128.checked_pow((-drop) as u32)?)?).ok();
    }
    let f = 10i128.checked_pow(drop as u32)?;
    let q = v / f;
    let r = v % f;
    let q = if r.abs() * 2 >= f { q + r.signum() } else { q };
    i64::try_from(q).ok()
}

fn call(f: Func, args: &[Expr], row: &[Value]) -> Value {
    let arg = |i: usize| args.get(i).map(|a| a.eval(row)).unwrap_or(Value::Null);
    match f {
        Func::Proctime => Value::TimestampLtz(crate::time::processing_now_ms()),
        Func::ToTimestampLtz { precision } => match arg(0) {
            Value::Int(v) => {
                if precision == 0 {
                    v.checked_mul(1000).map(Value::TimestampLtz).unwrap_or(Value::Null)
                } else {
                    Value::TimestampLtz(v)
                }
            }
            _ => Value::Null,
        },
        Func::Upper | Func::Lower | Func::Trim => match arg(0) {
            Value::Str(s) => Value::Str(Str::from(match f {
                Func::Upper => s.to_uppercase(),
                Func::Lower => s.to_lowercase(),
                _ => s.trim_matches(' ').to_string(),
            })),
            _ => Value::Null,
        },
        Func::CharLength => match arg(0) {
            Value::Str(s) => Value::Int(s.chars().count() as i64),
            _ => Value::Null,
        },
        Func::Concat => {
            let mut out = String::new();
            for a in args {
                match a.eval(row) {
                    Value::Str(s) => out.push_str(&s),
                    _ => return Value::Null,
                }
            }
            Value::Str(Str::from(out))
        }
        Func::Substring => {
            let Value::Str(s) = arg(0) else { return Value::Null };
            let Value::Int(start) = arg(1) else { return Value::Null };
            let len = match args.len() {
                3 => match arg(2) {
                    Value::Int(l) => Some(l),
                    _ => return Value::Null,
                },
                _ => None,
            };
            // SQL positions are 1-based; start <= 0 counts from before the first character.
            let chars: Vec<char> = s.chars().collect();
            let n = chars.len() as i64;
            let begin = if start > 0 {
                start - 1
            } else if start < 0 {
                (n + start).max(0)
            } else {
                0
            };
            let end = match len {
                Some(l) if l < 0 => return Value::Null,
                Some(l) => begin.saturating_add(l).min(n),
                None => n,
            };
            if begin >= n || end <= begin {
                return Value::Str(Str::from(""));
            }
            Value::Str(Str::from(chars[begin as usize..end as usize].iter().collect::<String>()))
        }
        Func::Abs => match arg(0) {
            Value::Int(x) => Value::Int(x.wrapping_abs()),
            Value::Double(x) => Value::Double(x.abs()),
            Value::Decimal(x, s) => Value::Decimal(x.wrapping_abs(), s),
            _ => Value::Null,
        },
        Func::SplitIndex => {
            let (Value::Str(s), Value::Str(sep), Value::Int(i)) = (arg(0), arg(1), arg(2)) else {
                return Value::Null;
            };
            if i < 0 {
                return Value::Null;
            }
            // Flink splits by the whole separator, keeping empty tokens.
            if sep.is_empty() {
                return if i == 0 { Value::Str(s) } else { Value::Null };
            }
            match s.split(&*sep).nth(i as usize) {
                Some(t) => Value::Str(Str::from(t)),
                None => Value::Null,
            }
        }
        Func::Replace => {
            let (Value::Str(s), Value::Str(from), Value::Str(to)) = (arg(0), arg(1), arg(2)) else {
                return Value::Null;
            };
            if from.is_empty() {
                return Value::Str(s);
            }
            Value::Str(Str::from(s.replace(&*from, &to)))
        }
        Func::Hour => match arg(0) {
            Value::Timestamp(ms) | Value::TimestampLtz(ms) => Value::Int(ms.div_euclid(3_600_000).rem_euclid(24)),
            _ => Value::Null,
        },
        Func::Floor | Func::Ceil => match arg(0) {
            Value::Int(x) => Value::Int(x),
            Value::Double(x) => Value::Double(if f == Func::Floor { x.floor() } else { x.ceil() }),
            Value::Decimal(x, s) => {
                let d = 10i64.pow(s as u32);
                let q = x.div_euclid(d);
                let q = if f == Func::Ceil && x.rem_euclid(d) != 0 { q + 1 } else { q };
                Value::Decimal(q, 0)
            }
            _ => Value::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parser::parse_script;
    use std::collections::HashMap;

    fn eval_sql(expr: &str, scope: &Scope, row: &[Value]) -> (Value, SqlType) {
        let st = parse_script(&format!("SELECT {expr} FROM t"), &HashMap::new()).unwrap();
        let ast::Statement::Query(q) = &st[0] else { panic!() };
        let ast::SelectItem::Expr { expr, .. } = &q.select[0] else { panic!() };
        let t = bind(expr, scope).unwrap();
        (t.expr.eval(row), t.ty)
    }

    #[test]
    fn flink_types_and_values() {
        let scope = Scope {
            columns: vec![Column {
                qualifier: None,
                name: "price".into(),
                ty: SqlType::BigInt,
            }],
        };
        let row = [Value::Int(11047)];
        let (v, ty) = eval_sql("0.908 * price", &scope, &row);
        assert_eq!(ty, SqlType::Decimal(22, 3));
        assert_eq!(v, Value::Decimal(10_030_676, 3));
        assert_eq!(eval_sql("MOD(price, 123) = 100 AND price > 5000", &scope, &row).0, Value::Bool(true));
        assert_eq!(eval_sql("price / 2", &scope, &row).0, Value::Int(5523));
        assert_eq!(
            eval_sql("CASE WHEN price > 10 THEN 'big' ELSE 'small' END", &scope, &row).0,
            Value::Str("big".into())
        );
        assert_eq!(eval_sql("CAST(price AS DOUBLE) / 2", &scope, &row).0, Value::Double(5523.5));
        assert_eq!(eval_sql("COALESCE(NULL, price)", &scope, &row).0, Value::Int(11047));
        assert_eq!(eval_sql("NULL > 1 OR TRUE", &scope, &row).0, Value::Bool(true));
        assert_eq!(eval_sql("price / 0", &scope, &row).0, Value::Null);
        assert_eq!(eval_sql("UPPER('ab') || SUBSTRING('hello', 2, 3)", &scope, &row).0, Value::Str("ABell".into()));
        assert_eq!(eval_sql("'abc' LIKE 'a%c'", &scope, &row).0, Value::Bool(true));
    }

    #[test]
    fn regexp_split_index_date_format() {
        let scope = Scope {
            columns: vec![Column {
                qualifier: None,
                name: "url".into(),
                ty: SqlType::String,
            }],
        };
        let row = [Value::Str("https://www.nexmark.com/item.htm?query=1&channel_id=1402".into())];
        let s = |x: &str| Value::Str(x.into());
        assert_eq!(eval_sql("REGEXP(url, 'channel_id=[0-9]+')", &scope, &row).0, Value::Bool(true));
        assert_eq!(eval_sql("REGEXP(url, '^item')", &scope, &row).0, Value::Bool(false));
        assert_eq!(eval_sql("REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)", &scope, &row).0, s("1402"));
        assert_eq!(eval_sql("REGEXP_EXTRACT(url, 'query=[0-9]')", &scope, &row).0, s("query=1"));
        assert_eq!(eval_sql("REGEXP_EXTRACT(url, 'nomatch([0-9])', 1)", &scope, &row).0, Value::Null);
        assert_eq!(eval_sql("SPLIT_INDEX(url, '/', 2)", &scope, &row).0, s("www.nexmark.com"));
        assert_eq!(eval_sql("SPLIT_INDEX(url, '/', 9)", &scope, &row).0, Value::Null);
        assert_eq!(eval_sql("SPLIT_INDEX('a,,b', ',', 1)", &scope, &row).0, s(""));
        assert_eq!(eval_sql("REPLACE('cbcc', 'c', '')", &scope, &row).0, s("b"));
        assert_eq!(
            eval_sql(
                "DATE_FORMAT(CAST('2023-11-14 22:13:19.643' AS TIMESTAMP(3)), 'yyyy-MM-dd HH:mm:ss.SSS')",
                &scope,
                &row
            )
            .0,
            s("2023-11-14 22:13:19.643")
        );
        assert_eq!(
            eval_sql("DATE_FORMAT('2023-11-14 08:05:00', 'yy/M/d hh:mm a')", &scope, &row).0,
            s("23/11/14 08:05 AM")
        );
        assert_eq!(eval_sql("HOUR(CAST('2023-11-14 22:13:19' AS TIMESTAMP(3)))", &scope, &row).0, Value::Int(22));
    }
}

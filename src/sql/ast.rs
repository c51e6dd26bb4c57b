//! The syntax tree of the Flink SQL subset weir runs. Every node that an error can point at
//! carries the [`Pos`] (1-based line and column) of its first token in the script.
//!
//! Invariant: the tree is purely syntactic; names are resolved and types checked by the
//! planner (`plan.rs`), never here.

/// A position in the script: 1-based line and column (characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// One statement of a script.
#[derive(Clone, Debug)]
pub enum Statement {
    CreateTable(CreateTable),
    CreateView {
        name: String,
        pos: Pos,
        query: Query,
    },
    Insert {
        table: String,
        pos: Pos,
        query: Query,
    },
    Set {
        key: String,
        value: String,
        pos: Pos,
    },
    /// A bare query (only meaningful for `explain`).
    Query(Query),
    /// `EXECUTE STATEMENT SET BEGIN ... END` / `BEGIN STATEMENT SET; ... END;`: INSERTs run
    /// as one job.
    StatementSet {
        pos: Pos,
        inserts: Vec<Statement>,
    },
}

/// `CREATE TABLE name (columns, WATERMARK ...) WITH (options)`.
#[derive(Clone, Debug)]
pub struct CreateTable {
    pub name: String,
    pub pos: Pos,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    pub options: Vec<TableOption>,
}

/// A `'key' = 'value'` of a `WITH` clause.
#[derive(Clone, Debug)]
pub struct TableOption {
    pub key: String,
    pub value: String,
    pub pos: Pos,
}

/// A physical or computed column.
#[derive(Clone, Debug)]
pub enum ColumnDef {
    Physical {
        name: String,
        ty: TypeName,
        pos: Pos,
    },
    Computed {
        name: String,
        expr: Expr,
        pos: Pos,
    },
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]` (Kafka tables: `timestamp`, `partition`,
    /// `offset`, `topic`).
    Metadata {
        name: String,
        ty: TypeName,
        key: String,
        pos: Pos,
    },
}

impl ColumnDef {
    pub fn name(&self) -> &str {
        match self {
            ColumnDef::Physical { name, .. } | ColumnDef::Computed { name, .. } | ColumnDef::Metadata { name, .. } => name,
        }
    }
    pub fn pos(&self) -> Pos {
        match self {
            ColumnDef::Physical { pos, .. } | ColumnDef::Computed { pos, .. } | ColumnDef::Metadata { pos, .. } => *pos,
        }
    }
}

/// `WATERMARK FOR column AS expr`.
#[derive(Clone, Debug)]
pub struct WatermarkDef {
    pub column: String,
    pub pos: Pos,
    pub expr: Expr,
}

/// A type as written (`DECIMAL(10, 2)`, `TIMESTAMP_LTZ(3)`, `ROW<a BIGINT, b STRING>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeName {
    pub name: String,
    pub args: Vec<u32>,
    pub pos: Pos,
    /// The fields of a `ROW<...>` type (empty otherwise).
    pub fields: Vec<(String, TypeName)>,
}

/// `SELECT ... FROM ... [WHERE] [GROUP BY] [HAVING]`.
#[derive(Clone, Debug)]
pub struct Query {
    pub pos: Pos,
    pub select: Vec<SelectItem>,
    pub from: FromItem,
    pub where_: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
}

/// One item of a select list.
#[derive(Clone, Debug)]
pub enum SelectItem {
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
    /// `*` or `t.*`.
    Wildcard {
        qualifier: Option<String>,
        pos: Pos,
    },
}

/// Window table-valued functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TvfKind {
    Tumble,
    Hop,
    Cumulate,
    Session,
}

/// Join types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

/// A `FROM` item.
#[derive(Clone, Debug)]
pub enum FromItem {
    Table {
        name: String,
        alias: Option<String>,
        pos: Pos,
    },
    Subquery {
        query: Box<Query>,
        alias: Option<String>,
        pos: Pos,
    },
    /// `TABLE(TUMBLE(TABLE t [PARTITION BY k], DESCRIPTOR(c), args...))`.
    Tvf {
        kind: TvfKind,
        pos: Pos,
        input: Box<FromItem>,
        partition_by: Vec<(String, Pos)>,
        descriptor: (String, Pos),
        args: Vec<Expr>,
        alias: Option<String>,
    },
    Join {
        left: Box<FromItem>,
        right: Box<FromItem>,
        kind: JoinKind,
        on: Expr,
        pos: Pos,
    },
}

/// An expression with its position.
#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Plus,
    Minus,
    Mul,
    Div,
    Mod,
    Concat,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Plus => "+",
            BinOp::Minus => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Concat => "||",
            BinOp::Eq => "=",
            BinOp::NotEq => "<>",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::And => "AND",
            BinOp::Or => "OR",
        }
    }
}

/// Expression forms.
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// `a` or `t.a`.
    Column(Vec<String>),
    /// A numeric literal as written.
    Number(String),
    Str(String),
    Bool(bool),
    Null,
    /// `INTERVAL '10' SECOND`, in milliseconds.
    Interval(i64),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Function {
        name: String,
        args: Vec<Expr>,
        distinct: bool,
        /// `COUNT(*)`.
        star: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        else_: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, TypeName),
    IsNull(Box<Expr>, bool),
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
    },
    /// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY e [ASC|DESC], ...)`; `true` = DESC.
    RowNumber {
        partition_by: Vec<Expr>,
        order_by: Vec<(Expr, bool)>,
    },
    /// An aggregate over an OVER window: `call` (a `Function`) `OVER (spec)` or `OVER name`
    /// (named windows of a `WINDOW` clause are substituted by the parser).
    Over {
        call: Box<Expr>,
        window: Box<OverWindow>,
    },
}

/// The window of an OVER aggregate: `(PARTITION BY ... ORDER BY ... frame)`.
#[derive(Clone, Debug)]
pub struct OverWindow {
    pub pos: Pos,
    /// `OVER name`: a window of the query's `WINDOW` clause (the parser replaces the reference
    /// by the definition; the planner never sees one).
    pub reference: Option<String>,
    pub partition_by: Vec<Expr>,
    /// `true` = DESC.
    pub order_by: Vec<(Expr, bool)>,
    /// `None`: no frame clause (SQL's default, RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW).
    pub frame: Option<OverFrame>,
}

/// `ROWS | RANGE BETWEEN start AND end` (or `ROWS | RANGE start`, meaning `... AND CURRENT ROW`).
#[derive(Clone, Debug)]
pub struct OverFrame {
    pub pos: Pos,
    /// `ROWS` (counted rows) or `RANGE` (an interval of the ORDER BY value).
    pub rows: bool,
    pub start: FrameBound,
    pub end: FrameBound,
}

/// One end of a window frame.
#[derive(Clone, Debug)]
pub enum FrameBound {
    UnboundedPreceding(Pos),
    /// `n PRECEDING` / `INTERVAL '..' .. PRECEDING`.
    Preceding(Expr),
    CurrentRow(Pos),
    /// `n FOLLOWING` / `UNBOUNDED FOLLOWING` (the expression is `None` when unbounded).
    Following(Option<Expr>, Pos),
}

impl FrameBound {
    pub fn display(&self) -> String {
        match self {
            FrameBound::UnboundedPreceding(_) => "UNBOUNDED PRECEDING".into(),
            FrameBound::Preceding(e) => format!("{} PRECEDING", e.display()),
            FrameBound::CurrentRow(_) => "CURRENT ROW".into(),
            FrameBound::Following(Some(e), _) => format!("{} FOLLOWING", e.display()),
            FrameBound::Following(None, _) => "UNBOUNDED FOLLOWING".into(),
        }
    }
    pub fn pos(&self) -> Pos {
        match self {
            FrameBound::UnboundedPreceding(p) | FrameBound::CurrentRow(p) | FrameBound::Following(_, p) => *p,
            FrameBound::Preceding(e) => e.pos,
        }
    }
}

impl OverWindow {
    /// SQL text of the window specification (without `OVER`).
    pub fn display(&self) -> String {
        let mut parts = Vec::new();
        if !self.partition_by.is_empty() {
            let p: Vec<String> = self.partition_by.iter().map(Expr::display).collect();
            parts.push(format!("PARTITION BY {}", p.join(", ")));
        }
        if !self.order_by.is_empty() {
            let o: Vec<String> = self
                .order_by
                .iter()
                .map(|(e, d)| format!("{}{}", e.display(), if *d { " DESC" } else { "" }))
                .collect();
            parts.push(format!("ORDER BY {}", o.join(", ")));
        }
        if let Some(f) = &self.frame {
            parts.push(format!(
                "{} BETWEEN {} AND {}",
                if f.rows { "ROWS" } else { "RANGE" },
                f.start.display(),
                f.end.display()
            ));
        }
        format!("({})", parts.join(" "))
    }
}

impl Expr {
    /// SQL-like text of the expression, for error messages and plans.
    pub fn display(&self) -> String {
        match &self.kind {
            ExprKind::Column(parts) => parts.join("."),
            ExprKind::Number(n) => n.clone(),
            ExprKind::Str(s) => format!("'{}'", s.replace('\'', "''")),
            ExprKind::Bool(b) => (if *b { "TRUE" } else { "FALSE" }).into(),
            ExprKind::Null => "NULL".into(),
            ExprKind::Interval(ms) => format!("INTERVAL '{}' SECOND", *ms as f64 / 1000.0),
            ExprKind::Neg(e) => format!("-{}", e.display()),
            ExprKind::Not(e) => format!("NOT {}", e.display()),
            ExprKind::Binary(op, l, r) => format!("{} {} {}", l.display(), op.symbol(), r.display()),
            ExprKind::Function { name, args, distinct, star } => {
                if *star {
                    format!("{name}(*)")
                } else {
                    let a: Vec<String> = args.iter().map(Expr::display).collect();
                    format!("{name}({}{})", if *distinct { "DISTINCT " } else { "" }, a.join(", "))
                }
            }
            ExprKind::Case { operand, whens, else_ } => {
                let mut s = "CASE".to_string();
                if let Some(o) = operand {
                    s += &format!(" {}", o.display());
                }
                for (w, t) in whens {
                    s += &format!(" WHEN {} THEN {}", w.display(), t.display());
                }
                if let Some(e) = else_ {
                    s += &format!(" ELSE {}", e.display());
                }
                s + " END"
            }
            ExprKind::Cast(e, ty) => format!("CAST({} AS {})", e.display(), ty.name),
            ExprKind::IsNull(e, neg) => format!("{} IS {}NULL", e.display(), if *neg { "NOT " } else { "" }),
            ExprKind::Between { expr, low, high, negated } => format!(
                "{} {}BETWEEN {} AND {}",
                expr.display(),
                if *negated { "NOT " } else { "" },
                low.display(),
                high.display()
            ),
            ExprKind::InList { expr, list, negated } => {
                let a: Vec<String> = list.iter().map(Expr::display).collect();
                format!("{} {}IN ({})", expr.display(), if *negated { "NOT " } else { "" }, a.join(", "))
            }
            ExprKind::Like { expr, pattern, negated } => {
                format!("{} {}LIKE {}", expr.display(), if *negated { "NOT " } else { "" }, pattern.display())
            }
            ExprKind::RowNumber { partition_by, order_by } => {
                let p: Vec<String> = partition_by.iter().map(Expr::display).collect();
                let o: Vec<String> = order_by
                    .iter()
                    .map(|(e, d)| format!("{}{}", e.display(), if *d { " DESC" } else { "" }))
                    .collect();
                format!("ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {})", p.join(", "), o.join(", "))
            }
            ExprKind::Over { call, window } => format!("{} OVER {}", call.display(), window.display()),
        }
    }

    /// A canonical form for matching select items against GROUP BY items (case-insensitive
    /// names, positions ignored).
    pub fn canonical(&self) -> String {
        self.display().to_ascii_lowercase()
    }
}

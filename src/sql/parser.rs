//! The parser: Flink SQL statements from the tokens of the `sqlparser` crate's tokenizer.
//!
//! `sqlparser`'s own parser cannot read Flink's streaming constructs (computed columns,
//! `WATERMARK FOR`, window TVFs with `TABLE t` arguments, `DESCRIPTOR`, `PARTITION BY` inside
//! `SESSION`), so weir uses its tokenizer — which gives every token its line and column — and
//! parses Flink's grammar here by recursive descent.
//!
//! Invariants: the parser never panics on any input; every error names the line and column of
//! the offending token; `${NAME}` variables are substituted inside string literals only, so
//! positions in errors are positions in the script as written.

use std::collections::HashMap;

use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use super::ast::*;
use super::SqlError;

/// Deepest expression nesting accepted (bounds recursion on hostile input).
const MAX_DEPTH: usize = 200;

struct Tok {
    token: Token,
    pos: Pos,
}

/// Parse a whole script into statements.
pub fn parse_script(text: &str, vars: &HashMap<String, String>) -> Result<Vec<Statement>, SqlError> {
    let dialect = GenericDialect {};
    let raw = Tokenizer::new(&dialect, text).tokenize_with_location().map_err(|e| {
        let loc = e.location;
        SqlError::at(
            Pos {
                line: loc.line as u32,
                column: loc.column as u32,
            },
            format!("cannot read the script: {}", e.message),
        )
    })?;
    let mut toks = Vec::with_capacity(raw.len());
    let mut end = Pos { line: 1, column: 1 };
    for t in raw {
        let pos = Pos {
            line: t.span.start.line as u32,
            column: t.span.start.column as u32,
        };
        end = Pos {
            line: t.span.end.line as u32,
            column: t.span.end.column as u32,
        };
        match t.token {
            Token::Whitespace(_) => continue,
            Token::SingleQuotedString(s) => toks.push(Tok {
                token: Token::SingleQuotedString(substitute(&s, vars, pos)?),
                pos,
            }),
            token => toks.push(Tok { token, pos }),
        }
    }
    let _ = Whitespace::Space;
    toks.push(Tok { token: Token::EOF, pos: end });
    let mut p = Parser { toks, i: 0, depth: 0 };
    let mut out = Vec::new();
    loop {
        while p.eat(&Token::SemiColon) {}
        if p.peek() == &Token::EOF {
            break;
        }
        out.push(p.statement()?);
        if !p.eat(&Token::SemiColon) && p.peek() != &Token::EOF {
            return Err(p.unexpected("`;` between statements"));
        }
    }
    Ok(out)
}

/// Replace `${NAME}` in a string literal.
fn substitute(s: &str, vars: &HashMap<String, String>, pos: Pos) -> Result<String, SqlError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            return Err(SqlError::at(pos, format!("unterminated variable `${{` in '{s}'")));
        };
        let name = &after[..j];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                let mut known: Vec<&String> = vars.keys().collect();
                known.sort();
                return Err(SqlError::at(pos, format!("unknown variable ${{{name}}}")).hint(format!("variables given: {known:?}")));
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
    depth: usize,
}

fn describe(t: &Token) -> String {
    match t {
        Token::EOF => "end of script".into(),
        Token::Word(w) => format!("`{}`", w.value),
        Token::SingleQuotedString(s) => format!("'{s}'"),
        t => format!("`{t}`"),
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)].token
    }
    fn peek_at(&self, k: usize) -> &Token {
        &self.toks[(self.i + k).min(self.toks.len() - 1)].token
    }
    fn pos(&self) -> Pos {
        self.toks[self.i.min(self.toks.len() - 1)].pos
    }
    fn advance(&mut self) -> &Token {
        let i = self.i.min(self.toks.len() - 1);
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        &self.toks[i].token
    }
    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == t {
            self.advance();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &Token, what: &str) -> Result<(), SqlError> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }
    fn unexpected(&self, what: &str) -> SqlError {
        SqlError::at(self.pos(), format!("expected {what}, found {}", describe(self.peek())))
    }
    /// Is the next token the unquoted keyword `kw` (upper case)?
    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(0, kw)
    }
    fn is_kw_at(&self, k: usize, kw: &str) -> bool {
        matches!(self.peek_at(k), Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.advance();
            true
        } else {
            false
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{kw}`")))
        }
    }
    /// An identifier (quoted or not, not a reserved word of this grammar).
    fn ident(&mut self, what: &str) -> Result<(String, Pos), SqlError> {
        let pos = self.pos();
        match self.peek().clone() {
            Token::Word(w) if w.quote_style.is_some() || !is_reserved(&w.value) => {
                self.advance();
                Ok((w.value, pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }
    fn string(&mut self, what: &str) -> Result<(String, Pos), SqlError> {
        let pos = self.pos();
        match self.peek().clone() {
            Token::SingleQuotedString(s) => {
                self.advance();
                Ok((s, pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn statement(&mut self) -> Result<Statement, SqlError> {
        let pos = self.pos();
        if self.eat_kw("CREATE") {
            if self.eat_kw("TABLE") {
                return self.create_table();
            }
            if self.eat_kw("TEMPORARY") {
                if self.eat_kw("VIEW") {
                    return self.create_view();
                }
                return Err(self.unexpected("`VIEW` after CREATE TEMPORARY"));
            }
            if self.eat_kw("VIEW") {
                return self.create_view();
            }
            return Err(SqlError::at(self.pos(), format!("CREATE {} is not supported", describe(self.peek()))).hint("supported: CREATE TABLE, CREATE VIEW"));
        }
        if self.eat_kw("INSERT") {
            if !self.eat_kw("INTO") {
                return Err(self.unexpected("`INTO` (INSERT OVERWRITE is not supported)"));
            }
            let (table, tpos) = self.ident("a table name")?;
            if self.peek() == &Token::LParen {
                return Err(SqlError::at(self.pos(), "a column list after INSERT INTO is not supported").hint("select the columns in the sink's order"));
            }
            let query = self.query()?;
            return Ok(Statement::Insert { table, pos: tpos, query });
        }
        if self.is_kw("EXECUTE") || self.is_kw("BEGIN") {
            return self.statement_set();
        }
        if self.eat_kw("SET") {
            let (key, _) = self.string("a quoted key, as in SET 'parallelism.default' = '2'")?;
            self.expect(&Token::Eq, "`=`")?;
            let value = match self.peek().clone() {
                Token::SingleQuotedString(s) => s,
                Token::Number(n, _) => n,
                Token::Word(w) => w.value,
                _ => return Err(self.unexpected("a value")),
            };
            self.advance();
            return Ok(Statement::Set { key, value, pos });
        }
        if self.is_kw("SELECT") {
            return Ok(Statement::Query(self.query()?));
        }
        Err(SqlError::at(pos, format!("expected a statement, found {}", describe(self.peek())))
            .hint("supported statements: CREATE TABLE, CREATE VIEW, INSERT INTO ... SELECT, EXECUTE STATEMENT SET BEGIN ... END, SET"))
    }

    /// `EXECUTE STATEMENT SET BEGIN INSERT ...; ... END` or `BEGIN STATEMENT SET; INSERT ...;
    /// ... END`.
    fn statement_set(&mut self) -> Result<Statement, SqlError> {
        let pos = self.pos();
        let execute = self.eat_kw("EXECUTE");
        if execute {
            self.expect_kw("STATEMENT")?;
            self.expect_kw("SET")?;
            self.expect_kw("BEGIN")?;
        } else {
            self.expect_kw("BEGIN")?;
            self.expect_kw("STATEMENT")?;
            self.expect_kw("SET")?;
        }
        let mut inserts = Vec::new();
        loop {
            while self.eat(&Token::SemiColon) {}
            if self.eat_kw("END") {
                break;
            }
            if !self.is_kw("INSERT") {
                return Err(self.unexpected("INSERT INTO ... or END in the statement set"));
            }
            inserts.push(self.statement()?);
            if !self.eat(&Token::SemiColon) && !self.is_kw("END") {
                return Err(self.unexpected("`;` after the INSERT"));
            }
        }
        if inserts.is_empty() {
            return Err(SqlError::at(pos, "an empty statement set"));
        }
        Ok(Statement::StatementSet { pos, inserts })
    }

    fn create_view(&mut self) -> Result<Statement, SqlError> {
        let (name, pos) = self.ident("a view name")?;
        self.expect_kw("AS")?;
        let query = self.query()?;
        Ok(Statement::CreateView { name, pos, query })
    }

    fn create_table(&mut self) -> Result<Statement, SqlError> {
        if self.eat_kw("IF") {
            self.expect_kw("NOT")?;
            self.expect_kw("EXISTS")?;
        }
        let (name, pos) = self.ident("a table name")?;
        self.expect(&Token::LParen, "`(` and the column list")?;
        let mut columns = Vec::new();
        let mut watermark = None;
        loop {
            if self.is_kw("WATERMARK") {
                let wpos = self.pos();
                self.advance();
                if watermark.is_some() {
                    return Err(SqlError::at(wpos, "a table can have only one WATERMARK"));
                }
                self.expect_kw("FOR")?;
                let (column, cpos) = self.ident("the time attribute column")?;
                self.expect_kw("AS")?;
                let expr = self.expr()?;
                watermark = Some(WatermarkDef { column, pos: cpos, expr });
            } else if self.is_kw("PRIMARY") || self.is_kw("CONSTRAINT") {
                return Err(SqlError::at(self.pos(), "PRIMARY KEY constraints are not supported").hint("weir's SQL tables are append-only"));
            } else {
                let (cname, cpos) = self.ident("a column name")?;
                if self.eat_kw("AS") {
                    let expr = self.expr()?;
                    columns.push(ColumnDef::Computed { name: cname, expr, pos: cpos });
                } else {
                    let ty = self.type_name()?;
                    if self.eat_kw("METADATA") {
                        let key = if self.eat_kw("FROM") {
                            self.string("a quoted metadata key")?.0
                        } else {
                            cname.clone()
                        };
                        self.eat_kw("VIRTUAL");
                        columns.push(ColumnDef::Metadata {
                            name: cname,
                            ty,
                            key,
                            pos: cpos,
                        });
                        if self.eat(&Token::Comma) {
                            continue;
                        }
                        self.expect(&Token::RParen, "`,` or `)` in the column list")?;
                        break;
                    }
                    if self.eat_kw("NOT") {
                        self.expect_kw("NULL")?;
                    } else {
                        self.eat_kw("NULL");
                    }
                    columns.push(ColumnDef::Physical { name: cname, ty, pos: cpos });
                }
            }
            if self.eat(&Token::Comma) {
                continue;
            }
            self.expect(&Token::RParen, "`,` or `)` in the column list")?;
            break;
        }
        if self.is_kw("PARTITIONED") {
            return Err(SqlError::at(self.pos(), "PARTITIONED BY is not supported"));
        }
        let mut options = Vec::new();
        if self.eat_kw("WITH") {
            self.expect(&Token::LParen, "`(` after WITH")?;
            loop {
                let (key, kpos) = self.string("a quoted option key")?;
                self.expect(&Token::Eq, "`=`")?;
                let (value, _) = self.string("a quoted option value")?;
                options.push(TableOption { key, value, pos: kpos });
                if self.eat(&Token::Comma) {
                    continue;
                }
                self.expect(&Token::RParen, "`,` or `)` in WITH")?;
                break;
            }
        }
        Ok(Statement::CreateTable(CreateTable {
            name,
            pos,
            columns,
            watermark,
            options,
        }))
    }

    fn type_name(&mut self) -> Result<TypeName, SqlError> {
        let pos = self.pos();
        let (mut name, _) = match self.peek().clone() {
            Token::Word(w) if w.quote_style.is_none() => {
                self.advance();
                (w.value.to_ascii_uppercase(), pos)
            }
            _ => return Err(self.unexpected("a type")),
        };
        let mut args = Vec::new();
        if name == "ROW" {
            return self.row_type(pos);
        }
        if name == "DOUBLE" {
            self.eat_kw("PRECISION");
        }
        if self.eat(&Token::LParen) {
            loop {
                match self.peek().clone() {
                    Token::Number(n, _) => {
                        self.advance();
                        let v: u32 = n.parse().map_err(|_| SqlError::at(pos, format!("bad type argument {n}")))?;
                        args.push(v);
                    }
                    _ => return Err(self.unexpected("a number")),
                }
                if self.eat(&Token::Comma) {
                    continue;
                }
                self.expect(&Token::RParen, "`)`")?;
                break;
            }
        }
        if name == "TIMESTAMP" {
            if self.eat_kw("WITH") {
                self.expect_kw("LOCAL")?;
                self.expect_kw("TIME")?;
                self.expect_kw("ZONE")?;
                name = "TIMESTAMP_LTZ".into();
            } else if self.eat_kw("WITHOUT") {
                self.expect_kw("TIME")?;
                self.expect_kw("ZONE")?;
            }
        }
        Ok(TypeName {
            name,
            args,
            pos,
            fields: Vec::new(),
        })
    }

    /// `ROW<name TYPE, ...>` or `ROW(name TYPE, ...)` (after `ROW`).
    fn row_type(&mut self, pos: Pos) -> Result<TypeName, SqlError> {
        let close = if self.eat(&Token::Lt) {
            Token::Gt
        } else if self.eat(&Token::LParen) {
            Token::RParen
        } else {
            return Err(self.unexpected("`<` or `(` and the fields of ROW"));
        };
        let mut fields = Vec::new();
        loop {
            let (fname, _) = self.ident("a ROW field name")?;
            let ty = self.type_name()?;
            if !ty.fields.is_empty() {
                return Err(SqlError::at(ty.pos, "nested ROW types inside ROW are not supported"));
            }
            if self.eat_kw("NOT") {
                self.expect_kw("NULL")?;
            }
            fields.push((fname, ty));
            if self.eat(&Token::Comma) {
                continue;
            }
            // `>>` would close two ROWs; nested rows are rejected above.
            self.expect(&close, "`,` or the end of the ROW fields")?;
            break;
        }
        Ok(TypeName {
            name: "ROW".into(),
            args: Vec::new(),
            pos,
            fields,
        })
    }

    fn query(&mut self) -> Result<Query, SqlError> {
        let pos = self.pos();
        if self.is_kw("WITH") {
            return Err(SqlError::at(pos, "WITH (common table expressions) is not supported").hint("use CREATE VIEW"));
        }
        self.expect_kw("SELECT")?;
        if self.eat_kw("DISTINCT") {
            return Err(
                SqlError::at(pos, "SELECT DISTINCT is not supported (it produces updates)").hint("group by a window: GROUP BY window_start, window_end, ...")
            );
        }
        self.eat_kw("ALL");
        let mut select = Vec::new();
        loop {
            let ipos = self.pos();
            if self.eat(&Token::Mul) {
                select.push(SelectItem::Wildcard { qualifier: None, pos: ipos });
            } else if matches!(self.peek(), Token::Word(_)) && self.peek_at(1) == &Token::Period && self.peek_at(2) == &Token::Mul {
                let (q, _) = self.ident("a table name")?;
                self.advance();
                self.advance();
                select.push(SelectItem::Wildcard { qualifier: Some(q), pos: ipos });
            } else {
                let expr = self.expr()?;
                let alias = self.alias()?;
                select.push(SelectItem::Expr { expr, alias });
            }
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        self.expect_kw("FROM")?;
        let from = self.join_tree()?;
        let where_ = if self.eat_kw("WHERE") { Some(self.expr()?) } else { None };
        let mut group_by = Vec::new();
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            loop {
                group_by.push(self.expr()?);
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        let having = if self.eat_kw("HAVING") { Some(self.expr()?) } else { None };
        let mut windows: Vec<(String, OverWindow)> = Vec::new();
        if self.eat_kw("WINDOW") {
            loop {
                let (name, npos) = self.ident("a window name")?;
                if windows.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                    return Err(SqlError::at(npos, format!("window `{name}` is defined twice")));
                }
                self.expect_kw("AS")?;
                let wpos = self.pos();
                self.expect(&Token::LParen, "`(` and the window specification")?;
                let w = self.over_spec(wpos)?;
                self.expect(&Token::RParen, "`)` closing the window specification")?;
                windows.push((name, w));
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        for item in select.iter_mut() {
            if let SelectItem::Expr { expr, .. } = item {
                resolve_named_windows(expr, &windows)?;
            }
        }
        for (kw, what) in [
            ("ORDER", "ORDER BY is not supported on streams"),
            ("LIMIT", "LIMIT is not supported"),
            ("UNION", "UNION is not supported"),
            ("WINDOW", "the WINDOW clause goes after WHERE, GROUP BY and HAVING"),
        ] {
            if self.is_kw(kw) {
                return Err(SqlError::at(self.pos(), what));
            }
        }
        Ok(Query {
            pos,
            select,
            from,
            where_,
            group_by,
            having,
        })
    }

    fn join_tree(&mut self) -> Result<FromItem, SqlError> {
        let mut left = self.table_ref()?;
        loop {
            let pos = self.pos();
            let kind = if self.eat_kw("JOIN") {
                JoinKind::Inner
            } else if self.is_kw("INNER") && self.is_kw_at(1, "JOIN") {
                self.advance();
                self.advance();
                JoinKind::Inner
            } else if self.is_kw("LEFT") || self.is_kw("RIGHT") || self.is_kw("FULL") {
                let k = if self.is_kw("LEFT") {
                    JoinKind::Left
                } else if self.is_kw("RIGHT") {
                    JoinKind::Right
                } else {
                    JoinKind::Full
                };
                self.advance();
                self.eat_kw("OUTER");
                self.expect_kw("JOIN")?;
                k
            } else if self.is_kw("CROSS") || self.peek() == &Token::Comma {
                return Err(SqlError::at(pos, "cross joins are not supported")
                    .hint("use a window join: ... JOIN ... ON L.window_start = R.window_start AND L.window_end = R.window_end"));
            } else {
                return Ok(left);
            };
            let right = self.table_ref()?;
            if !self.eat_kw("ON") {
                return Err(self.unexpected("`ON` and the join condition"));
            }
            let on = self.expr()?;
            left = FromItem::Join {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                on,
                pos,
            };
        }
    }

    fn alias(&mut self) -> Result<Option<String>, SqlError> {
        if self.eat_kw("AS") {
            return Ok(Some(self.ident("an alias")?.0));
        }
        if matches!(self.peek(), Token::Word(w) if w.quote_style.is_some() || !is_reserved(&w.value)) {
            return Ok(Some(self.ident("an alias")?.0));
        }
        Ok(None)
    }

    fn table_ref(&mut self) -> Result<FromItem, SqlError> {
        let pos = self.pos();
        if self.eat(&Token::LParen) {
            if self.is_kw("SELECT") {
                let q = self.query()?;
                self.expect(&Token::RParen, "`)` after the subquery")?;
                let alias = self.alias()?;
                return Ok(FromItem::Subquery {
                    query: Box::new(q),
                    alias,
                    pos,
                });
            }
            let inner = self.join_tree()?;
            self.expect(&Token::RParen, "`)`")?;
            return Ok(inner);
        }
        if self.is_kw("TABLE") && self.peek_at(1) == &Token::LParen {
            self.advance();
            self.advance();
            let tvf = self.tvf()?;
            self.expect(&Token::RParen, "`)` closing TABLE(...)")?;
            let alias = self.alias()?;
            let FromItem::Tvf {
                kind,
                pos,
                input,
                partition_by,
                descriptor,
                args,
                ..
            } = tvf
            else {
                return Err(SqlError::at(pos, "expected a window function inside TABLE(...)"));
            };
            return Ok(FromItem::Tvf {
                kind,
                pos,
                input,
                partition_by,
                descriptor,
                args,
                alias,
            });
        }
        if self.is_kw("LATERAL") || self.is_kw("UNNEST") {
            return Err(SqlError::at(pos, format!("{} is not supported", describe(self.peek()))));
        }
        let (name, npos) = self.ident("a table name, a subquery or TABLE(TUMBLE(...))")?;
        if self.peek() == &Token::Period {
            return Err(SqlError::at(npos, "catalog- or database-qualified table names are not supported").hint("use the plain table name"));
        }
        if self.is_kw("FOR") {
            return Err(SqlError::at(self.pos(), "temporal joins (FOR SYSTEM_TIME AS OF) are not supported"));
        }
        let alias = self.alias()?;
        Ok(FromItem::Table { name, alias, pos: npos })
    }

    /// `TUMBLE(TABLE t, DESCRIPTOR(c), INTERVAL ...)` and friends (after `TABLE(`).
    fn tvf(&mut self) -> Result<FromItem, SqlError> {
        let pos = self.pos();
        let (fname, _) = self.ident("TUMBLE, HOP, CUMULATE or SESSION")?;
        let kind = match fname.to_ascii_uppercase().as_str() {
            "TUMBLE" => TvfKind::Tumble,
            "HOP" => TvfKind::Hop,
            "CUMULATE" => TvfKind::Cumulate,
            "SESSION" => TvfKind::Session,
            _ => {
                return Err(SqlError::at(pos, format!("table function {fname} is not supported")).hint("supported: TUMBLE, HOP, CUMULATE, SESSION"));
            }
        };
        self.expect(&Token::LParen, "`(`")?;
        let ipos = self.pos();
        let input = if self.eat_kw("TABLE") {
            let (name, npos) = self.ident("a table name")?;
            FromItem::Table { name, alias: None, pos: npos }
        } else if self.eat(&Token::LParen) {
            let q = self.query()?;
            self.expect(&Token::RParen, "`)` after the subquery")?;
            FromItem::Subquery {
                query: Box::new(q),
                alias: None,
                pos: ipos,
            }
        } else if self.is_kw("DATA") && self.is_kw_at(1, "=>") {
            return Err(SqlError::at(ipos, "named arguments are not supported").hint("pass arguments by position"));
        } else {
            return Err(self.unexpected("`TABLE name` as the first argument"));
        };
        let mut partition_by = Vec::new();
        if self.eat_kw("PARTITION") {
            self.expect_kw("BY")?;
            partition_by.push(self.ident("a partition column")?);
            loop {
                self.expect(&Token::Comma, "`,` and DESCRIPTOR(time_column)")?;
                if self.is_kw("DESCRIPTOR") {
                    break;
                }
                partition_by.push(self.ident("a partition column or DESCRIPTOR(time_column)")?);
            }
        } else {
            self.expect(&Token::Comma, "`,` after the table")?;
        }
        if !self.is_kw("DESCRIPTOR") {
            return Err(self.unexpected("DESCRIPTOR(time_column)"));
        }
        self.advance();
        self.expect(&Token::LParen, "`(`")?;
        let descriptor = self.ident("the time attribute column")?;
        self.expect(&Token::RParen, "`)`")?;
        let mut args = Vec::new();
        while self.eat(&Token::Comma) {
            args.push(self.expr()?);
        }
        self.expect(&Token::RParen, "`)` closing the window function")?;
        Ok(FromItem::Tvf {
            kind,
            pos,
            input: Box::new(input),
            partition_by,
            descriptor,
            args,
            alias: None,
        })
    }

    // ---- expressions ----

    fn expr(&mut self) -> Result<Expr, SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            return Err(SqlError::at(self.pos(), format!("expression nested deeper than {MAX_DEPTH} levels")));
        }
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.and()?;
        while self.is_kw("OR") {
            let pos = self.pos();
            self.advance();
            let r = self.and()?;
            l = bin(BinOp::Or, l, r, pos);
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.not()?;
        while self.is_kw("AND") {
            let pos = self.pos();
            self.advance();
            let r = self.not()?;
            l = bin(BinOp::And, l, r, pos);
        }
        Ok(l)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.is_kw("NOT") {
            let pos = self.pos();
            self.advance();
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(SqlError::at(pos, "expression nested too deeply"));
            }
            let e = self.not()?;
            self.depth -= 1;
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(e)),
                pos,
            });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SqlError> {
        let l = self.additive()?;
        let pos = self.pos();
        let op = match self.peek() {
            Token::Eq | Token::DoubleEq => Some(BinOp::Eq),
            Token::Neq => Some(BinOp::NotEq),
            Token::Lt => Some(BinOp::Lt),
            Token::LtEq => Some(BinOp::LtEq),
            Token::Gt => Some(BinOp::Gt),
            Token::GtEq => Some(BinOp::GtEq),
            _ => None,
        };
        if let Some(op) = op {
            self.advance();
            let r = self.additive()?;
            return Ok(bin(op, l, r, pos));
        }
        if self.eat_kw("IS") {
            let neg = self.eat_kw("NOT");
            if self.eat_kw("NULL") {
                return Ok(Expr {
                    kind: ExprKind::IsNull(Box::new(l), neg),
                    pos,
                });
            }
            return Err(self.unexpected("NULL after IS (IS TRUE / IS DISTINCT FROM are not supported)"));
        }
        let negated = self.is_kw("NOT") && (self.is_kw_at(1, "BETWEEN") || self.is_kw_at(1, "IN") || self.is_kw_at(1, "LIKE"));
        if negated {
            self.advance();
        }
        if self.eat_kw("BETWEEN") {
            let low = self.additive()?;
            self.expect_kw("AND")?;
            let high = self.additive()?;
            return Ok(Expr {
                kind: ExprKind::Between {
                    expr: Box::new(l),
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                },
                pos,
            });
        }
        if self.eat_kw("IN") {
            self.expect(&Token::LParen, "`(`")?;
            if self.is_kw("SELECT") {
                return Err(SqlError::at(self.pos(), "IN (subquery) is not supported"));
            }
            let mut list = Vec::new();
            loop {
                list.push(self.expr()?);
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
            self.expect(&Token::RParen, "`)`")?;
            return Ok(Expr {
                kind: ExprKind::InList {
                    expr: Box::new(l),
                    list,
                    negated,
                },
                pos,
            });
        }
        if self.eat_kw("LIKE") {
            let pattern = self.additive()?;
            return Ok(Expr {
                kind: ExprKind::Like {
                    expr: Box::new(l),
                    pattern: Box::new(pattern),
                    negated,
                },
                pos,
            });
        }
        Ok(l)
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.multiplicative()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Token::Plus => BinOp::Plus,
                Token::Minus => BinOp::Minus,
                Token::StringConcat => BinOp::Concat,
                _ => return Ok(l),
            };
            self.advance();
            let r = self.multiplicative()?;
            l = bin(op, l, r, pos);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        let mut l = self.unary()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Token::Mul => BinOp::Mul,
                Token::Div => BinOp::Div,
                Token::Mod => BinOp::Mod,
                _ => return Ok(l),
            };
            self.advance();
            let r = self.unary()?;
            l = bin(op, l, r, pos);
        }
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        if self.eat(&Token::Minus) {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(SqlError::at(pos, "expression nested too deeply"));
            }
            let e = self.unary()?;
            self.depth -= 1;
            // Fold `-literal` so that `-2147483648` types like Flink's.
            if let ExprKind::Number(n) = &e.kind {
                return Ok(Expr {
                    kind: ExprKind::Number(format!("-{n}")),
                    pos,
                });
            }
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(e)),
                pos,
            });
        }
        if self.eat(&Token::Plus) {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        let tok = self.peek().clone();
        let kind = match tok {
            Token::Number(n, _) => {
                self.advance();
                ExprKind::Number(n)
            }
            Token::SingleQuotedString(s) => {
                self.advance();
                ExprKind::Str(s)
            }
            Token::LParen => {
                self.advance();
                if self.is_kw("SELECT") {
                    return Err(SqlError::at(self.pos(), "scalar subqueries are not supported"));
                }
                let e = self.expr()?;
                self.expect(&Token::RParen, "`)`")?;
                return Ok(e);
            }
            Token::Word(w) if w.quote_style.is_none() && is_reserved(&w.value) => {
                let up = w.value.to_ascii_uppercase();
                match up.as_str() {
                    "TRUE" | "FALSE" => {
                        self.advance();
                        ExprKind::Bool(up == "TRUE")
                    }
                    "NULL" => {
                        self.advance();
                        ExprKind::Null
                    }
                    "INTERVAL" => {
                        self.advance();
                        ExprKind::Interval(self.interval(pos)?)
                    }
                    "CASE" => {
                        self.advance();
                        self.case(pos)?
                    }
                    "CAST" | "TRY_CAST" => {
                        self.advance();
                        if up == "TRY_CAST" {
                            return Err(SqlError::at(pos, "TRY_CAST is not supported").hint("use CAST"));
                        }
                        self.expect(&Token::LParen, "`(`")?;
                        let e = self.expr()?;
                        self.expect_kw("AS")?;
                        let ty = self.type_name()?;
                        self.expect(&Token::RParen, "`)`")?;
                        ExprKind::Cast(Box::new(e), ty)
                    }
                    _ => return Err(self.unexpected("an expression")),
                }
            }
            Token::Word(w) => {
                self.advance();
                if self.peek() == &Token::LParen && w.quote_style.is_none() {
                    self.advance();
                    let name = w.value.to_ascii_uppercase();
                    let mut args = Vec::new();
                    let mut distinct = false;
                    let mut star = false;
                    if self.eat(&Token::Mul) {
                        star = true;
                    } else if self.peek() != &Token::RParen {
                        distinct = self.eat_kw("DISTINCT");
                        loop {
                            args.push(self.expr()?);
                            if !self.eat(&Token::Comma) {
                                break;
                            }
                        }
                    }
                    self.expect(&Token::RParen, "`)` closing the function call")?;
                    if self.is_kw("OVER") {
                        if name == "ROW_NUMBER" && args.is_empty() && !star {
                            self.advance();
                            return self.row_number(pos);
                        }
                        let over_pos = self.pos();
                        self.advance();
                        let window = self.over_window(over_pos)?;
                        let call = Expr {
                            kind: ExprKind::Function { name, args, distinct, star },
                            pos,
                        };
                        return Ok(Expr {
                            kind: ExprKind::Over {
                                call: Box::new(call),
                                window: Box::new(window),
                            },
                            pos,
                        });
                    }
                    ExprKind::Function { name, args, distinct, star }
                } else {
                    let mut parts = vec![w.value];
                    while self.peek() == &Token::Period {
                        self.advance();
                        parts.push(self.ident("a column name after `.`")?.0);
                    }
                    ExprKind::Column(parts)
                }
            }
            _ => return Err(self.unexpected("an expression")),
        };
        Ok(Expr { kind, pos })
    }

    /// The window after `agg(...) OVER` (`pos`: the OVER keyword's): `(spec)`, or the name of
    /// a window of the query's `WINDOW` clause (resolved by [`resolve_named_windows`] once the
    /// clause is read).
    fn over_window(&mut self, pos: Pos) -> Result<OverWindow, SqlError> {
        if let Token::Word(w) = self.peek().clone() {
            if w.quote_style.is_some() || !is_reserved(&w.value) {
                self.advance();
                return Ok(OverWindow {
                    pos,
                    reference: Some(w.value),
                    partition_by: Vec::new(),
                    order_by: Vec::new(),
                    frame: None,
                });
            }
        }
        self.expect(&Token::LParen, "`(` or a window name after OVER")?;
        let w = self.over_spec(pos)?;
        self.expect(&Token::RParen, "`)` closing OVER (...)")?;
        Ok(w)
    }

    /// `[PARTITION BY e, ...] [ORDER BY e [ASC|DESC], ...] [ROWS|RANGE frame]` (inside the
    /// parentheses of OVER or of a `WINDOW name AS (...)` definition).
    fn over_spec(&mut self, pos: Pos) -> Result<OverWindow, SqlError> {
        let mut partition_by = Vec::new();
        if self.eat_kw("PARTITION") {
            self.expect_kw("BY")?;
            loop {
                partition_by.push(self.expr()?);
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        let mut order_by = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let e = self.expr()?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                order_by.push((e, desc));
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        let frame = if self.is_kw("ROWS") || self.is_kw("RANGE") {
            let fpos = self.pos();
            let rows = self.is_kw("ROWS");
            self.advance();
            let (start, end) = if self.eat_kw("BETWEEN") {
                let start = self.frame_bound()?;
                self.expect_kw("AND")?;
                (start, self.frame_bound()?)
            } else {
                (self.frame_bound()?, FrameBound::CurrentRow(fpos))
            };
            Some(OverFrame { pos: fpos, rows, start, end })
        } else {
            None
        };
        Ok(OverWindow {
            pos,
            reference: None,
            partition_by,
            order_by,
            frame,
        })
    }

    /// `UNBOUNDED PRECEDING | UNBOUNDED FOLLOWING | CURRENT ROW | e PRECEDING | e FOLLOWING`.
    fn frame_bound(&mut self) -> Result<FrameBound, SqlError> {
        let pos = self.pos();
        if self.eat_kw("UNBOUNDED") {
            if self.eat_kw("PRECEDING") {
                return Ok(FrameBound::UnboundedPreceding(pos));
            }
            if self.eat_kw("FOLLOWING") {
                return Ok(FrameBound::Following(None, pos));
            }
            return Err(self.unexpected("PRECEDING or FOLLOWING after UNBOUNDED"));
        }
        if self.is_kw("CURRENT") && self.is_kw_at(1, "ROW") {
            self.advance();
            self.advance();
            return Ok(FrameBound::CurrentRow(pos));
        }
        let e = self.additive()?;
        if self.eat_kw("PRECEDING") {
            return Ok(FrameBound::Preceding(e));
        }
        if self.eat_kw("FOLLOWING") {
            return Ok(FrameBound::Following(Some(e), pos));
        }
        Err(self.unexpected("PRECEDING or FOLLOWING"))
    }

    /// `(PARTITION BY e, ... ORDER BY e [ASC|DESC], ...)` after `ROW_NUMBER() OVER`.
    fn row_number(&mut self, pos: Pos) -> Result<Expr, SqlError> {
        self.expect(&Token::LParen, "`(` after OVER")?;
        let mut partition_by = Vec::new();
        if self.eat_kw("PARTITION") {
            self.expect_kw("BY")?;
            loop {
                partition_by.push(self.expr()?);
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
        }
        self.expect_kw("ORDER")?;
        self.expect_kw("BY")?;
        let mut order_by = Vec::new();
        loop {
            let e = self.expr()?;
            let desc = if self.eat_kw("DESC") {
                true
            } else {
                self.eat_kw("ASC");
                false
            };
            order_by.push((e, desc));
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, "`)` closing OVER (...)")?;
        Ok(Expr {
            kind: ExprKind::RowNumber { partition_by, order_by },
            pos,
        })
    }

    fn interval(&mut self, pos: Pos) -> Result<i64, SqlError> {
        let (text, _) = match self.peek().clone() {
            Token::SingleQuotedString(s) => {
                self.advance();
                (s, pos)
            }
            Token::Number(n, _) => {
                self.advance();
                (n, pos)
            }
            _ => return Err(self.unexpected("a quoted interval value, as in INTERVAL '10' SECOND")),
        };
        let (unit, upos) = match self.peek().clone() {
            Token::Word(w) => {
                let p = self.pos();
                self.advance();
                (w.value.to_ascii_uppercase(), p)
            }
            _ => return Err(self.unexpected("an interval unit (SECOND, MINUTE, HOUR, DAY)")),
        };
        let factor: i64 = match unit.trim_end_matches('S') {
            "MILLISECOND" => 1,
            "SECOND" => 1_000,
            "MINUTE" => 60_000,
            "HOUR" => 3_600_000,
            "DAY" => 86_400_000,
            _ => {
                return Err(SqlError::at(upos, format!("interval unit {unit} is not supported")).hint("use MILLISECOND, SECOND, MINUTE, HOUR or DAY"));
            }
        };
        if self.is_kw("TO") {
            return Err(
                SqlError::at(self.pos(), "compound intervals (… TO …) are not supported").hint("write the interval in one unit, e.g. INTERVAL '90' SECOND")
            );
        }
        let t = text.trim();
        let value: f64 = t
            .parse()
            .map_err(|_| SqlError::at(pos, format!("bad interval value '{text}'")).hint("write a number, e.g. INTERVAL '10' SECOND"))?;
        let ms = value * factor as f64;
        if !ms.is_finite() || ms.abs() > 1e15 || ms.fract() != 0.0 {
            return Err(SqlError::at(
                pos,
                format!("interval '{text}' {unit} is not a whole number of milliseconds in range"),
            ));
        }
        Ok(ms as i64)
    }

    fn case(&mut self, pos: Pos) -> Result<ExprKind, SqlError> {
        let operand = if self.is_kw("WHEN") { None } else { Some(Box::new(self.expr()?)) };
        let mut whens = Vec::new();
        while self.eat_kw("WHEN") {
            let w = self.expr()?;
            self.expect_kw("THEN")?;
            let t = self.expr()?;
            whens.push((w, t));
        }
        if whens.is_empty() {
            return Err(SqlError::at(pos, "CASE needs at least one WHEN"));
        }
        let else_ = if self.eat_kw("ELSE") { Some(Box::new(self.expr()?)) } else { None };
        self.expect_kw("END")?;
        Ok(ExprKind::Case { operand, whens, else_ })
    }
}

/// Replace every `OVER name` in `e` by the window `name` of the query's `WINDOW` clause.
fn resolve_named_windows(e: &mut Expr, windows: &[(String, OverWindow)]) -> Result<(), SqlError> {
    let mut result = Ok(());
    walk_mut(e, &mut |x| {
        let ExprKind::Over { window, .. } = &mut x.kind else { return };
        let Some(name) = window.reference.clone() else { return };
        if result.is_err() {
            return;
        }
        match windows.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some((_, def)) => {
                let pos = window.pos;
                **window = def.clone();
                window.pos = pos;
            }
            None => {
                result = Err(SqlError::at(window.pos, format!("unknown window `{name}`")).hint(if windows.is_empty() {
                    "define it after WHERE / GROUP BY: WINDOW w AS (PARTITION BY ... ORDER BY ... ROWS BETWEEN ...)".to_string()
                } else {
                    format!(
                        "windows of this query: {}",
                        windows.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    )
                }))
            }
        }
    });
    result
}

/// Visit `e` and every expression inside it, parents first, mutably.
fn walk_mut(e: &mut Expr, f: &mut dyn FnMut(&mut Expr)) {
    f(e);
    match &mut e.kind {
        ExprKind::Neg(a) | ExprKind::Not(a) | ExprKind::Cast(a, _) | ExprKind::IsNull(a, _) => walk_mut(a, f),
        ExprKind::Binary(_, a, b) => {
            walk_mut(a, f);
            walk_mut(b, f);
        }
        ExprKind::Function { args, .. } => args.iter_mut().for_each(|a| walk_mut(a, f)),
        ExprKind::Case { operand, whens, else_ } => {
            if let Some(o) = operand {
                walk_mut(o, f);
            }
            for (a, b) in whens {
                walk_mut(a, f);
                walk_mut(b, f);
            }
            if let Some(x) = else_ {
                walk_mut(x, f);
            }
        }
        ExprKind::Between { expr, low, high, .. } => {
            walk_mut(expr, f);
            walk_mut(low, f);
            walk_mut(high, f);
        }
        ExprKind::InList { expr, list, .. } => {
            walk_mut(expr, f);
            list.iter_mut().for_each(|a| walk_mut(a, f));
        }
        ExprKind::Like { expr, pattern, .. } => {
            walk_mut(expr, f);
            walk_mut(pattern, f);
        }
        ExprKind::Over { call, .. } => walk_mut(call, f),
        ExprKind::RowNumber { .. }
        | ExprKind::Column(_)
        | ExprKind::Number(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Null
        | ExprKind::Interval(_) => {}
    }
}

fn bin(op: BinOp, l: Expr, r: Expr, pos: Pos) -> Expr {
    let pos = if matches!(op, BinOp::And | BinOp::Or) { l.pos } else { pos };
    let _ = pos;
    Expr {
        pos: l.pos,
        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
    }
}

/// Words that end an expression or a clause and so cannot be bare aliases or column names.
fn is_reserved(w: &str) -> bool {
    const RESERVED: &[&str] = &[
        "SELECT", "FROM", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT", "UNION", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "ON", "AS",
        "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST", "TRY_CAST", "INTERVAL", "BETWEEN", "IN", "LIKE",
        "WITH", "TABLE", "INSERT", "INTO", "CREATE", "SET", "WINDOW", "LATERAL", "OVER", "DISTINCT", "FOR", "ASC", "DESC",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oracle_shapes() {
        let vars: HashMap<String, String> = [("DATA".to_string(), "/d".to_string())].into();
        let s = "CREATE TABLE bid (a BIGINT, ms BIGINT, t AS TO_TIMESTAMP_LTZ(ms, 3),\n WATERMARK FOR t AS t - INTERVAL '4' SECOND)\n\
                 WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');\n\
                 INSERT INTO o SELECT a, COUNT(*) FROM TABLE(SESSION(TABLE bid PARTITION BY a, DESCRIPTOR(t), INTERVAL '3' SECOND)) GROUP BY a, window_start, window_end;";
        let st = parse_script(s, &vars).unwrap();
        assert_eq!(st.len(), 2);
        let Statement::CreateTable(ct) = &st[0] else { panic!() };
        assert_eq!(ct.options[1].value, "/d/bid.csv");
        assert!(ct.watermark.is_some());
        let Statement::Insert { query, .. } = &st[1] else { panic!() };
        let FromItem::Tvf { partition_by, descriptor, .. } = &query.from else {
            panic!()
        };
        assert_eq!(partition_by[0].0, "a");
        assert_eq!(descriptor.0, "t");
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse_script("SELECT a\nFROM t ORDER BY a", &HashMap::new()).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 8), "{e}");
        let e = parse_script("SET 'a' 'b'", &HashMap::new()).unwrap_err();
        assert_eq!((e.line(), e.column()), (1, 9), "{e}");
    }
}

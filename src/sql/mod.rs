//! Flink SQL front end: run a Flink SQL job script (`weir run job.sql`) on the engine.
//!
//! Pipeline: [`parser`] (statements with positions, on the `sqlparser` tokenizer) → [`plan`]
//! (catalog, name resolution and Flink's type rules via [`expr`], a tree of relational
//! operators: scan, filter, project, window TVF, window aggregate, window join, interval join,
//! window rank) → [`exec`] (the plan as a `DataStream<Row>` job: [`source`] file readers and
//! the [`nexmark`] generator with filters and projections pushed into them, the engine's window
//! operators with a row aggregate, the [`join`] window-join, [`rank`] window Top-N and
//! [`over`] OVER-aggregation operators, the engine's interval join, sinks).
//!
//! Types: BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s ≤ 18), STRING /
//! VARCHAR, TIMESTAMP(p), TIMESTAMP_LTZ(p), and ROW<...> columns in tables (flattened into
//! `column.field`) ([`types`]). Window TVFs TUMBLE, HOP, CUMULATE and SESSION (with PARTITION
//! BY) with COUNT(*), COUNT, COUNT(DISTINCT), SUM, MIN, MAX, AVG; window aggregation over a
//! windowed result (window attributes are followed through aliases); window joins (inner and
//! outer); inner interval joins (`R.ts BETWEEN L.ts - INTERVAL .. AND L.ts + INTERVAL ..`);
//! window Top-N and window deduplication (`ROW_NUMBER() OVER (PARTITION BY window_start,
//! window_end ... ORDER BY ...)` filtered by `rownum <= N`); OVER aggregations on event time
//! with ROWS and RANGE frames ([`over`]); processing-time attributes (`PROCTIME()`) and TUMBLE,
//! HOP, CUMULATE windows over them, fired by the clock ([`proctime`]). Bad input records count
//! under operator `source:<table>`.
//!
//! Supported statements: `CREATE TABLE` (physical, computed and — on Kafka tables — `METADATA
//! FROM 'timestamp' | 'partition' | 'offset' | 'topic'` columns, `WATERMARK FOR c AS c -
//! INTERVAL ...`, `WITH` options of the `filesystem` (csv/json), `kafka` (csv/json/raw, Flink's
//! option names: see `plan::kafka_table`), `nexmark`, `print` and `blackhole` connectors),
//! `CREATE [TEMPORARY] VIEW`, `SET` (`parallelism.default`, `table.local-time-zone` = UTC),
//! `INSERT INTO t SELECT ...` — several per script, also inside `EXECUTE STATEMENT SET BEGIN ...
//! END` / `BEGIN STATEMENT SET; ... END;`, run as one job.
//!
//! Invariants: no input makes this module panic — every problem is a [`SqlError`] naming the
//! line and column of the construct and, where there is one, the supported alternative; every
//! shard runs every segment of the plan, and results do not depend on the number of shards.

pub mod ast;
pub mod connectors;
pub(crate) mod csv_copy;
pub mod exec;
pub mod expr;
pub mod join;
pub mod nexmark;
pub mod over;
pub(crate) mod parallel_file;
pub mod parser;
pub mod plan;
pub mod proctime;
pub(crate) mod prune;
pub mod rank;
pub mod source;
pub mod streams;
pub mod types;
pub mod window_agg;

use std::collections::HashMap;
use std::fmt;

use crate::config::EngineConfig;
use crate::shard::runtime::JobReport;

pub use ast::Pos;

/// An error in a SQL script (or a failure of the job it describes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    /// Where in the script; `None` for failures of the running job.
    pub pos: Option<Pos>,
    pub message: String,
    /// The supported alternative, if there is one.
    pub hint: Option<String>,
}

impl SqlError {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            pos: Some(pos),
            message: message.into(),
            hint: None,
        }
    }
    pub fn job(message: impl Into<String>) -> Self {
        Self {
            pos: None,
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Line of the offending construct (0 if none).
    pub fn line(&self) -> u32 {
        self.pos.map(|p| p.line).unwrap_or(0)
    }
    /// Column of the offending construct (0 if none).
    pub fn column(&self) -> u32 {
        self.pos.map(|p| p.column).unwrap_or(0)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "line {}, column {}: {}", p.line, p.column, self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

/// Parse, plan and run `text`. `vars` substitutes `${NAME}` inside string literals (`${DATA}`,
/// `${OUT}`); `base` is the engine configuration, overridden by `SET 'parallelism.default'`.
pub fn run_script(text: &str, vars: &HashMap<String, String>, base: EngineConfig) -> Result<JobReport, SqlError> {
    let job = plan::plan_script(text, vars, base)?;
    exec::execute(job)
}

/// Parse and plan `text` into an environment ready to [`StreamEnv::execute`] (its
/// configuration is `base` with the script's `SET` statements applied).
pub fn build(text: &str, vars: &HashMap<String, String>, base: EngineConfig) -> Result<crate::api::StreamEnv, SqlError> {
    let job = plan::plan_script(text, vars, base)?;
    exec::build_env(&job)
}

/// Parse and plan `text`, and describe the job it would run.
pub fn explain(text: &str, vars: &HashMap<String, String>, base: EngineConfig) -> Result<String, SqlError> {
    let job = plan::plan_script(text, vars, base)?;
    Ok(exec::explain(&job))
}

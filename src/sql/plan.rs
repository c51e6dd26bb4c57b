//! The planner: runs the DDL of a script against a catalog and turns each `INSERT INTO ...
//! SELECT` into a tree of relational operators ([`Rel`]) with resolved columns and types.
//!
//! Shapes planned (Flink's streaming semantics, append-only):
//! - `SELECT exprs FROM t [WHERE]` → scan, filter, project;
//! - `FROM TABLE(TUMBLE|HOP|CUMULATE|SESSION(...))` without GROUP BY → window TVF (each row
//!   with `window_start`, `window_end`, `window_time` per window it belongs to);
//! - the same with `GROUP BY window_start, window_end, keys...` → window aggregate; grouping a
//!   windowed result by its window columns → a cascaded window aggregate (same windows);
//! - `L JOIN R ON L.window_start = R.window_start AND L.window_end = R.window_end [AND ...]`
//!   over two windowed inputs → window join;
//! - `L JOIN R ON L.k = R.k AND R.ts BETWEEN L.ts - INTERVAL .. AND L.ts + INTERVAL ..` (or
//!   `>=` / `<=` bounds) over two inputs with time attributes → inner interval join;
//! - `ROW_NUMBER() OVER (PARTITION BY window_start, window_end, ... ORDER BY ...)` over a
//!   windowed relation, with `rownum <= N` in the enclosing WHERE → window rank (Top-N,
//!   deduplication);
//! - `agg(x) OVER (PARTITION BY ... ORDER BY rowtime ROWS|RANGE ...)` in a select list without
//!   GROUP BY → OVER aggregation (planned by [`super::over`]);
//! - a window TVF whose DESCRIPTOR names a `PROCTIME()` attribute → processing-time windows
//!   (see [`super::proctime`]; no event time after them).
//!
//! Invariants: every column reference is resolved to an index here, once; a relation's
//! `rowtime` (time attribute) is the column whose value equals the records' event timestamps;
//! its `window` is the pair of window_start / window_end columns, followed through projections.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::ast::{self, BinOp, ColumnDef, ExprKind, FromItem, JoinKind, Pos, SelectItem, Statement, TvfKind};
use super::expr::{assignable, bind, bind_with, coerce, common_type, is_aggregate, resolve_type, AggregateHook, Column, Expr, Scope, Typed};
use super::parser::parse_script;
use super::types::SqlType;
use super::SqlError;
use crate::config::EngineConfig;
use crate::operator::window::WindowAssigner;
use crate::sink::format::Format;

/// Where a table's rows come from or go to.
#[derive(Clone, Debug)]
pub enum Connector {
    Filesystem {
        path: PathBuf,
        format: Format,
    },
    /// The ingestion gateway (a source): its settings and the events' format.
    Gateway {
        config: Box<crate::source::gateway::GatewayConfig>,
        format: Format,
    },
    /// A PostgreSQL table (Flink's `jdbc` connector, a sink).
    Jdbc(Box<crate::sink::postgres::PostgresConfig>),
    /// An Elasticsearch / OpenSearch index (Flink's `elasticsearch-7` connector, a sink).
    Elasticsearch(Box<super::connectors::ElasticsearchTable>),
    /// Flink's `filesystem` connector on an `s3://` path (source and sink).
    S3(Box<super::connectors::S3Table>),
    /// The Nexmark generator ([`super::nexmark`]): per physical column the field it holds;
    /// `flat`: the one kind of a flat table (`None`: the nested `datagen` table).
    Nexmark {
        config: crate::source::nexmark::GeneratorConfig,
        fields: Arc<[(super::nexmark::Field, SqlType)]>,
        flat: Option<super::nexmark::Kind>,
    },
    Kafka(Arc<KafkaTable>),
    /// A Kinesis stream (Flink's `kinesis` connector, a source).
    Kinesis(Arc<super::streams::KinesisTable>),
    /// Pulsar topics (Flink's `pulsar` connector, a source).
    Pulsar(Arc<super::streams::PulsarTable>),
    Print,
    Blackhole,
}

/// The value format of a Kafka table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaFormat {
    Csv,
    Json,
    /// One STRING column holding the whole value.
    Raw,
}

/// A Kafka table's options (Flink's `kafka` connector).
#[derive(Clone, Debug)]
pub struct KafkaTable {
    pub source: crate::source::kafka::KafkaSourceOptions,
    pub format: KafkaFormat,
    /// `scan.watermark.idle-timeout` in ms.
    pub idle_timeout_ms: Option<i64>,
    pub sink_delivery: crate::sink::kafka::DeliveryGuarantee,
    pub sink_transactional_id_prefix: Option<String>,
    pub sink_partitioner: crate::sink::kafka::Partitioner,
    pub sink_transaction_log_dir: Option<PathBuf>,
    /// `key.fields`: columns written (as CSV) as the message key.
    pub key_fields: Vec<String>,
    /// `topic` (the sink's topic; the first when several are listed).
    pub topic: Option<String>,
}

/// Message metadata a Kafka table column can read (`METADATA FROM 'key'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataKey {
    Timestamp,
    Partition,
    Offset,
    Topic,
}

impl Connector {
    /// Can rows be read from a table of this connector?
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Connector::Filesystem { .. }
                | Connector::Nexmark { .. }
                | Connector::Kafka(_)
                | Connector::Gateway { .. }
                | Connector::Kinesis(_)
                | Connector::Pulsar(_)
                | Connector::S3(_)
        )
    }
}

/// How a table column is produced from a file record.
#[derive(Clone, Debug)]
pub enum ColumnSource {
    /// The `n`th physical field.
    Physical(usize),
    /// A computed column over the physical fields.
    Computed(Expr),
    /// Message metadata (Kafka tables).
    Metadata(MetadataKey),
}

/// A table of the catalog.
#[derive(Clone, Debug)]
pub struct TableDef {
    pub name: String,
    pub pos: Pos,
    /// All columns in declared order.
    pub columns: Vec<(String, SqlType)>,
    pub layout: Vec<ColumnSource>,
    /// Physical columns (what a file record holds), in order.
    pub physical: Vec<(String, SqlType)>,
    /// Time attribute: column index and watermark delay in ms.
    pub rowtime: Option<(usize, i64)>,
    pub connector: Connector,
}

/// An aggregate call of a window aggregate.
#[derive(Clone, Debug)]
pub struct AggCall {
    pub func: AggFunc,
    /// Index of the argument among the aggregate's argument columns (`None` for `COUNT(*)`).
    pub arg: Option<usize>,
    pub arg_type: SqlType,
    pub out_type: SqlType,
    pub text: String,
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
}

/// A relational operator tree node.
#[derive(Clone, Debug)]
pub enum Plan {
    Scan {
        table: Arc<TableDef>,
    },
    Filter {
        input: Box<Rel>,
        predicate: Expr,
        text: String,
    },
    Project {
        input: Box<Rel>,
        exprs: Vec<Expr>,
    },
    /// Appends `window_start`, `window_end`, `window_time`; one output row per window.
    WindowTvf {
        input: Box<Rel>,
        assigner: WindowAssigner,
        /// Windows of processing time (the descriptor names a `PROCTIME()` attribute; see
        /// [`super::proctime`]) rather than of event time.
        proctime: bool,
    },
    /// Output: `[keys..., window_start, window_end, window_time, aggregates...]`.
    WindowAgg {
        input: Box<Rel>,
        assigner: WindowAssigner,
        keys: Vec<Expr>,
        key_texts: Vec<String>,
        /// Argument expressions of the aggregates (over the input).
        args: Vec<Expr>,
        aggs: Vec<AggCall>,
        ltz: bool,
        /// A window aggregate over a windowed relation's result (no window TVF): the input's
        /// `window_start` and `window_end` columns, whose windows are kept.
        cascade: Option<(usize, usize)>,
        /// Processing-time windows (fired by the clock, see [`super::proctime`]).
        proctime: bool,
    },
    /// OVER aggregates: input columns then one column per aggregate (see [`super::over`]).
    Over(Box<super::over::OverNode>),
    /// Window Top-N / deduplication: input columns then the row number (see [`super::rank`]).
    WindowRank {
        input: Box<Rel>,
        /// `window_end` of the input.
        window_end: usize,
        keys: Vec<Expr>,
        order: Vec<(Expr, bool)>,
        /// From the enclosing query's `rownum <= N` (`None`: not found yet).
        limit: Option<usize>,
        text: String,
    },
    /// Inner interval join: `r.ts - l.ts ∈ [lower, upper]` ms on equal keys; output: left
    /// columns then right columns, at `max(l.ts, r.ts)`.
    IntervalJoin {
        left: Box<Rel>,
        right: Box<Rel>,
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
        key_texts: Vec<String>,
        lower: i64,
        upper: i64,
        bounds_text: String,
        residual: Option<Expr>,
        residual_text: Option<String>,
    },
    /// Output: left columns then right columns.
    WindowJoin {
        left: Box<Rel>,
        right: Box<Rel>,
        kind: JoinKind,
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
        key_texts: Vec<String>,
        /// `window_end` column of each side.
        left_end: usize,
        right_end: usize,
        /// Remaining condition over the concatenated row.
        residual: Option<Expr>,
        residual_text: Option<String>,
    },
}

/// A relation: a plan and the columns it produces.
#[derive(Clone, Debug)]
pub struct Rel {
    pub plan: Plan,
    pub scope: Scope,
    pub rowtime: Option<usize>,
    /// The `window_start` and `window_end` columns of a windowed relation (window TVF, window
    /// aggregate, window join), followed through projections and aliases as Flink does.
    pub window: Option<(usize, usize)>,
}

/// One `INSERT INTO sink SELECT ...`: the query, the sink and its conversions.
#[derive(Clone, Debug)]
pub struct InsertPlan {
    pub query: Rel,
    pub sink: Arc<TableDef>,
    /// Conversions from the query's columns to the sink's column types.
    pub sink_exprs: Vec<Expr>,
}

/// A planned job: its INSERTs (all of the script's, run together as a statement set) and the
/// engine configuration.
#[derive(Clone, Debug)]
pub struct Job {
    pub config: EngineConfig,
    pub inserts: Vec<InsertPlan>,
}

struct Catalog {
    tables: HashMap<String, Arc<TableDef>>,
    views: HashMap<String, ast::Query>,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Parse and plan a script.
pub fn plan_script(text: &str, vars: &HashMap<String, String>, base: EngineConfig) -> Result<Job, SqlError> {
    let statements = parse_script(text, vars)?;
    let mut catalog = Catalog {
        tables: HashMap::new(),
        views: HashMap::new(),
    };
    let mut config = base;
    let mut inserts: Vec<InsertPlan> = Vec::new();
    let mut flat = Vec::new();
    for st in statements {
        match st {
            Statement::StatementSet { inserts, .. } => flat.extend(inserts),
            other => flat.push(other),
        }
    }
    for st in flat {
        match st {
            Statement::CreateTable(ct) => {
                let pos = ct.pos;
                let key = lower(&ct.name);
                if catalog.tables.contains_key(&key) || catalog.views.contains_key(&key) {
                    return Err(SqlError::at(pos, format!("table or view `{}` already exists", ct.name)));
                }
                let def = create_table(ct)?;
                catalog.tables.insert(key, Arc::new(def));
            }
            Statement::CreateView { name, pos, query } => {
                let key = lower(&name);
                if catalog.tables.contains_key(&key) || catalog.views.contains_key(&key) {
                    return Err(SqlError::at(pos, format!("table or view `{name}` already exists")));
                }
                // Plan once now so errors point at the view's definition.
                Planner { catalog: &catalog, depth: 0 }.query(&query)?;
                catalog.views.insert(key, query);
            }
            Statement::Set { key, value, pos } => apply_set(&mut config, &key, &value, pos)?,
            Statement::Query(q) => {
                return Err(SqlError::at(q.pos, "a bare SELECT has no sink")
                    .hint("write INSERT INTO <table> SELECT ..., e.g. into a table WITH ('connector' = 'print')"));
            }
            Statement::StatementSet { pos, .. } => return Err(SqlError::at(pos, "statement sets cannot be nested")),
            Statement::Insert { table, pos, query } => {
                let sink = catalog.tables.get(&lower(&table)).cloned().ok_or_else(|| {
                    SqlError::at(pos, format!("unknown sink table `{table}`")).hint("create it first with CREATE TABLE ... WITH ('connector' = ...)")
                })?;
                if matches!(sink.connector, Connector::Gateway { .. }) {
                    return Err(
                        SqlError::at(pos, format!("table `{table}` uses the gateway connector, which is a source")).hint("read it with SELECT ... FROM")
                    );
                }
                if matches!(sink.connector, Connector::Nexmark { .. }) {
                    return Err(SqlError::at(pos, format!("nexmark table `{table}` cannot be written")));
                }
                if let Some(other) = inserts
                    .iter()
                    .find(|i| i.sink.name.eq_ignore_ascii_case(&table) && matches!(i.sink.connector, Connector::Filesystem { .. } | Connector::S3(_)))
                {
                    return Err(SqlError::at(pos, format!("filesystem table `{}` is written by two INSERTs", other.sink.name))
                        .hint("write each filesystem sink from one INSERT"));
                }
                let planner = Planner { catalog: &catalog, depth: 0 };
                let rel = planner.query(&query)?;
                let sink_exprs = sink_conversions(&rel, &sink, &query, pos)?;
                inserts.push(InsertPlan { query: rel, sink, sink_exprs });
            }
        }
    }
    if inserts.is_empty() {
        return Err(SqlError::at(Pos { line: 1, column: 1 }, "the script has no INSERT INTO ... SELECT statement")
            .hint("end the script with INSERT INTO <sink> SELECT ..."));
    }
    if config.scale_out_slots > 0 {
        config.scale_out_group = Some(scale_out_group(&catalog)?);
    }
    Ok(Job { config, inserts })
}

/// A scaled-out job's consumer group: the `properties.group.id` of its Kafka tables (they must
/// agree), with that table's connection (also used for the internal topics).
fn scale_out_group(catalog: &Catalog) -> Result<crate::scaleout::GroupTarget, SqlError> {
    let mut tables: Vec<(&String, &Arc<TableDef>)> = catalog.tables.iter().collect();
    tables.sort_by(|a, b| a.0.cmp(b.0));
    let mut found: Option<(crate::scaleout::GroupTarget, &str)> = None;
    for (_, t) in tables {
        let Connector::Kafka(k) = &t.connector else { continue };
        let Some(group) = &k.source.group_id else { continue };
        match &found {
            Some((g, other)) if &g.group != group => {
                return Err(SqlError::at(
                    t.pos,
                    format!(
                        "table `{}` has properties.group.id = '{group}', table `{other}` '{}': a scaled-out job has one group",
                        t.name, g.group
                    ),
                ))
            }
            Some(_) => {}
            None => {
                found = Some((
                    crate::scaleout::GroupTarget {
                        connection: k.source.connection.clone(),
                        group: group.clone(),
                    },
                    &t.name,
                ))
            }
        }
    }
    found.map(|(g, _)| g).ok_or_else(|| {
        SqlError::at(
            Pos { line: 1, column: 1 },
            "a scaled-out job (weir.scale-out.slots) needs a Kafka table with 'properties.group.id'",
        )
        .hint("the processes that share the job join that consumer group")
    })
}

fn apply_set(config: &mut EngineConfig, key: &str, value: &str, pos: Pos) -> Result<(), SqlError> {
    match key {
        "parallelism.default" => {
            let n: usize = value
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| SqlError::at(pos, format!("parallelism.default = '{value}' must be a number of cores in 1..=1024")))?;
            config.cores = n;
        }
        "table.local-time-zone" => {
            if !matches!(value.trim(), "UTC" | "Etc/UTC" | "GMT" | "Z" | "+00:00") {
                return Err(
                    SqlError::at(pos, format!("table.local-time-zone = '{value}' is not supported")).hint("weir runs with table.local-time-zone = 'UTC' only")
                );
            }
        }
        "pipeline.auto-watermark-interval" => {
            // weir computes the watermark after every record (interval 0): accepted, no effect.
        }
        "state.backend" | "state.backend.type" => {
            config.state_backend = value.parse().map_err(|e: String| SqlError::at(pos, format!("{key} = '{value}': {e}")))?;
        }
        "state.backend.rocksdb.localdir" | "state.backend.lsm.dir" => {
            config.state_dir = Some(value.trim().into());
        }
        "execution.runtime-mode" => {
            if value.trim() != "streaming" {
                return Err(SqlError::at(pos, format!("execution.runtime-mode = '{value}' is not supported")).hint("weir runs in streaming mode"));
            }
        }
        _ => {
            let known = config.set_flink_option(key, value).map_err(|e| SqlError::at(pos, e))?;
            if !known {
                return Err(SqlError::at(pos, format!("unknown or unsupported setting '{key}'")).hint(
                    "supported: parallelism.default, table.local-time-zone (UTC), pipeline.auto-watermark-interval, execution.runtime-mode, \
                     execution.checkpointing.{interval,dir,timeout,min-pause,max-concurrent-checkpoints,mode}, state.checkpoints.num-retained, \
                     restart-strategy.type, restart-strategy.fixed-delay.{attempts,delay}, state.backend (hashmap|rocksdb|memory|lsm), state.backend.rocksdb.localdir",
                ));
            }
        }
    }
    Ok(())
}

fn create_table(ct: ast::CreateTable) -> Result<TableDef, SqlError> {
    let mut physical = Vec::new();
    let mut seen = HashMap::new();
    for c in &ct.columns {
        if seen.insert(lower(c.name()), ()).is_some() {
            return Err(SqlError::at(c.pos(), format!("column `{}` is declared twice", c.name())));
        }
        if let ColumnDef::Physical { name, ty, .. } = c {
            if ty.name == "ROW" {
                // A ROW column is flattened into one physical column per field, named
                // `column.field` (what `column.field` in expressions refers to).
                for (f, fty) in &ty.fields {
                    physical.push((format!("{name}.{f}"), resolve_type(fty)?));
                }
            } else {
                physical.push((name.clone(), resolve_type(ty)?));
            }
        }
    }
    if physical.is_empty() {
        return Err(SqlError::at(ct.pos, format!("table `{}` has no physical columns", ct.name)));
    }
    let phys_scope = Scope {
        columns: physical
            .iter()
            .map(|(n, t)| Column {
                qualifier: None,
                name: n.clone(),
                ty: *t,
            })
            .collect(),
    };
    let mut columns = Vec::new();
    let mut layout = Vec::new();
    let mut pi = 0;
    for c in &ct.columns {
        match c {
            ColumnDef::Physical { ty, .. } => {
                for _ in 0..ty.fields.len().max(1) {
                    columns.push(physical[pi].clone());
                    layout.push(ColumnSource::Physical(pi));
                    pi += 1;
                }
            }
            ColumnDef::Metadata { name, ty, key, pos } => {
                let ty = resolve_type(ty)?;
                let (meta, ok) = match key.as_str() {
                    "timestamp" | "publish_time" => (MetadataKey::Timestamp, ty.is_timestamp()),
                    "partition" => (MetadataKey::Partition, matches!(ty, SqlType::Int | SqlType::BigInt)),
                    "offset" => (MetadataKey::Offset, ty == SqlType::BigInt),
                    "topic" => (MetadataKey::Topic, ty == SqlType::String),
                    _ => {
                        return Err(
                            SqlError::at(*pos, format!("unknown metadata key '{key}'")).hint("Kafka tables offer 'timestamp', 'partition', 'offset', 'topic'")
                        )
                    }
                };
                if !ok {
                    return Err(SqlError::at(*pos, format!("metadata '{key}' cannot be read as {ty}"))
                        .hint("timestamp: TIMESTAMP_LTZ(3) or TIMESTAMP(3); partition: INT; offset: BIGINT; topic: STRING"));
                }
                columns.push((name.clone(), ty));
                layout.push(ColumnSource::Metadata(meta));
            }
            ColumnDef::Computed { name, expr, .. } => {
                let t = bind(expr, &phys_scope).map_err(|e| e.hint("computed columns may refer to physical columns only"))?;
                if t.ty == SqlType::Interval {
                    return Err(SqlError::at(expr.pos, "a column cannot hold an interval"));
                }
                let ty = if t.ty == SqlType::Null { SqlType::String } else { t.ty };
                columns.push((name.clone(), ty));
                layout.push(ColumnSource::Computed(t.expr));
            }
        }
    }
    let rowtime = match &ct.watermark {
        None => None,
        Some(w) => {
            let idx = columns
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(&w.column))
                .ok_or_else(|| SqlError::at(w.pos, format!("WATERMARK FOR unknown column `{}`", w.column)))?;
            let ty = columns[idx].1;
            if !ty.is_timestamp() {
                return Err(SqlError::at(w.pos, format!("the time attribute `{}` is {ty}", w.column))
                    .hint("declare it TIMESTAMP(3) or TIMESTAMP_LTZ(3), e.g. ts AS TO_TIMESTAMP_LTZ(ms, 3)"));
            }
            Some((idx, watermark_delay(&w.expr, &w.column)?))
        }
    };
    let mut opts: HashMap<String, (String, Pos)> = HashMap::new();
    for o in &ct.options {
        opts.insert(o.key.clone(), (o.value.clone(), o.pos));
    }
    let connector = match opts.get("connector").map(|(v, p)| (v.as_str(), *p)) {
        None => {
            return Err(SqlError::at(ct.pos, format!("table `{}` has no 'connector' option", ct.name))
                .hint("add WITH ('connector' = 'filesystem', 'path' = ..., 'format' = 'csv')"))
        }
        Some(("filesystem", _)) => {
            let (path, _) = opts
                .get("path")
                .ok_or_else(|| SqlError::at(ct.pos, "the filesystem connector needs a 'path' option"))?;
            let format = match opts.get("format").map(|(v, p)| (v.as_str(), *p)) {
                Some(("csv", _)) => Format::Csv,
                Some(("json", _)) => Format::Json,
                Some((f, p)) => return Err(SqlError::at(p, format!("format '{f}' is not supported")).hint("use 'csv' or 'json'")),
                None => return Err(SqlError::at(ct.pos, "the filesystem connector needs a 'format' option").hint("'format' = 'csv' or 'json'")),
            };
            if crate::s3::S3Url::is_s3(path) {
                Connector::S3(Box::new(super::connectors::s3(&opts, ct.pos, path, format)?))
            } else {
                for (k, (_, p)) in &opts {
                    if !matches!(
                        k.as_str(),
                        "connector" | "path" | "format" | "csv.field-delimiter" | "csv.ignore-parse-errors" | "json.ignore-parse-errors"
                    ) {
                        return Err(SqlError::at(*p, format!("option '{k}' is not supported by weir's filesystem connector"))
                            .hint("supported: connector, path, format"));
                    }
                    if k == "csv.field-delimiter" && opts[k].0 != "," {
                        return Err(SqlError::at(*p, "only ',' is supported as csv.field-delimiter"));
                    }
                }
                Connector::Filesystem {
                    path: PathBuf::from(path),
                    format,
                }
            }
        }
        Some(("kafka", _)) => Connector::Kafka(Arc::new(kafka_table(&ct, &opts, &physical)?)),
        Some(("kinesis", _)) => Connector::Kinesis(Arc::new(super::streams::kinesis(&opts, ct.pos, &physical)?)),
        Some(("pulsar", _)) => Connector::Pulsar(Arc::new(super::streams::pulsar(&opts, ct.pos, &physical)?)),
        Some(("gateway" | "mqtt", _)) => {
            let (config, format) = super::connectors::gateway(&opts, ct.pos)?;
            Connector::Gateway {
                config: Box::new(config),
                format,
            }
        }
        Some(("jdbc", _)) => {
            let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
            Connector::Jdbc(Box::new(super::connectors::jdbc(&opts, ct.pos, &names)?))
        }
        Some(("elasticsearch-7", _)) => {
            let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
            Connector::Elasticsearch(Box::new(super::connectors::elasticsearch(&opts, ct.pos, &names)?))
        }
        Some(("nexmark", _)) => super::nexmark::connector(&ct.name, ct.pos, &physical, &opts)?,
        Some(("print", _)) => Connector::Print,
        Some(("blackhole", _)) => Connector::Blackhole,
        Some((c, p)) => {
            return Err(SqlError::at(p, format!("connector '{c}' is not supported"))
                .hint("supported connectors: filesystem, kafka, kinesis, pulsar, nexmark, print, blackhole, gateway, mqtt, jdbc, elasticsearch-7"))
        }
    };
    if !matches!(connector, Connector::Kafka(_) | Connector::Kinesis(_) | Connector::Pulsar(_)) {
        if let Some(ColumnDef::Metadata { pos, .. }) = ct.columns.iter().find(|c| matches!(c, ColumnDef::Metadata { .. })) {
            return Err(SqlError::at(*pos, "METADATA columns exist only on 'kafka', 'kinesis' and 'pulsar' tables"));
        }
    }
    if matches!(connector, Connector::Kinesis(_)) {
        if let Some(ColumnDef::Metadata { pos, .. }) = ct.columns.iter().find(|c| matches!(c, ColumnDef::Metadata { key, .. } if key == "offset")) {
            return Err(SqlError::at(*pos, "kinesis tables have no 'offset' metadata")
                .hint("'timestamp' (approximate arrival time), 'partition' (shard index), 'topic' (stream)"));
        }
    }
    Ok(TableDef {
        name: ct.name,
        pos: ct.pos,
        columns,
        layout,
        physical,
        rowtime,
        connector,
    })
}

/// A duration option: `500`, `500 ms`, `5 s`, `5 sec`, `1 min` → ms.
fn duration_ms(v: &str) -> Option<i64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: i64 = v[..split].parse().ok()?;
    let unit = v[split..].trim().to_ascii_lowercase();
    let factor = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "minute" | "minutes" => 60_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// The options of a `'connector' = 'kafka'` table (Flink's names).
fn kafka_table(ct: &ast::CreateTable, opts: &HashMap<String, (String, Pos)>, physical: &[(String, SqlType)]) -> Result<KafkaTable, SqlError> {
    use crate::sink::kafka::{DeliveryGuarantee, Partitioner};
    use crate::source::kafka::{KafkaSourceOptions, StartupMode, Topics};
    let get = |k: &str| opts.get(k).map(|(v, p)| (v.as_str(), *p));
    let (bootstrap, _) = get("properties.bootstrap.servers").ok_or_else(|| {
        SqlError::at(ct.pos, "the kafka connector needs 'properties.bootstrap.servers'").hint("e.g. 'properties.bootstrap.servers' = 'localhost:9092'")
    })?;
    let topics = match (get("topic"), get("topic-pattern")) {
        (Some(_), Some((_, p))) => return Err(SqlError::at(p, "give either 'topic' or 'topic-pattern', not both")),
        (Some((t, _)), None) => Topics::Names(t.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
        (None, Some((p, _))) => Topics::Pattern(p.to_string()),
        (None, None) => return Err(SqlError::at(ct.pos, "the kafka connector needs 'topic' or 'topic-pattern'")),
    };
    let topic = match &topics {
        Topics::Names(n) => n.first().cloned(),
        Topics::Pattern(_) => None,
    };
    let mut source = KafkaSourceOptions::new(bootstrap, "").topics(topics);
    let format = match get("format").or_else(|| get("value.format")) {
        Some(("csv", _)) => KafkaFormat::Csv,
        Some(("json", _)) => KafkaFormat::Json,
        Some(("raw", p)) => {
            if physical.len() != 1 || physical[0].1 != SqlType::String {
                return Err(SqlError::at(p, "the raw format needs exactly one physical STRING column"));
            }
            KafkaFormat::Raw
        }
        Some((f, p)) => return Err(SqlError::at(p, format!("format '{f}' is not supported")).hint("use 'csv', 'json' or 'raw'")),
        None => return Err(SqlError::at(ct.pos, "the kafka connector needs a 'format' option").hint("'format' = 'csv', 'json' or 'raw'")),
    };
    let mut table = KafkaTable {
        source: KafkaSourceOptions::new(bootstrap, ""),
        format,
        idle_timeout_ms: None,
        sink_delivery: DeliveryGuarantee::AtLeastOnce,
        sink_transactional_id_prefix: None,
        sink_partitioner: Partitioner::Default,
        sink_transaction_log_dir: None,
        key_fields: Vec::new(),
        topic,
    };
    let mut startup_ts = None;
    let mut specific = None;
    for (k, (v, p)) in opts {
        let p = *p;
        match k.as_str() {
            "connector" | "topic" | "topic-pattern" | "format" | "value.format" | "properties.bootstrap.servers" => {}
            "properties.group.id" => source.group_id = Some(v.clone()),
            "scan.startup.mode" => {
                source.startup = match v.as_str() {
                    "earliest-offset" => StartupMode::Earliest,
                    "latest-offset" => StartupMode::Latest,
                    "group-offsets" => StartupMode::GroupOffsets,
                    "timestamp" => StartupMode::Timestamp(0),
                    "specific-offsets" => StartupMode::SpecificOffsets(Default::default()),
                    _ => {
                        return Err(SqlError::at(p, format!("scan.startup.mode '{v}' is not supported"))
                            .hint("earliest-offset, latest-offset, group-offsets, timestamp, specific-offsets"))
                    }
                }
            }
            "scan.startup.timestamp-millis" => {
                startup_ts = Some(
                    v.parse::<i64>()
                        .map_err(|_| SqlError::at(p, format!("'{v}' is not a number of milliseconds")))?,
                )
            }
            "scan.startup.specific-offsets" => {
                // 'partition:0,offset:42;partition:1,offset:300'
                let mut m = std::collections::BTreeMap::new();
                for part in v.split(';').filter(|s| !s.trim().is_empty()) {
                    let mut partition = None;
                    let mut offset = None;
                    for kv in part.split(',') {
                        match kv.trim().split_once(':') {
                            Some(("partition", n)) => partition = n.trim().parse::<i32>().ok(),
                            Some(("offset", n)) => offset = n.trim().parse::<i64>().ok(),
                            _ => {}
                        }
                    }
                    match (partition, offset) {
                        (Some(pa), Some(o)) => {
                            m.insert(pa, o);
                        }
                        _ => {
                            return Err(SqlError::at(p, format!("cannot read specific offsets '{part}'")).hint("'partition:0,offset:42;partition:1,offset:300'"))
                        }
                    }
                }
                specific = Some(m);
            }
            "scan.bounded.mode" => {
                source.bounded = match v.as_str() {
                    "unbounded" => false,
                    "latest-offset" => true,
                    _ => return Err(SqlError::at(p, format!("scan.bounded.mode '{v}' is not supported")).hint("unbounded or latest-offset")),
                }
            }
            "scan.watermark.idle-timeout" => {
                table.idle_timeout_ms = Some(duration_ms(v).ok_or_else(|| SqlError::at(p, format!("'{v}' is not a duration")).hint("e.g. '500 ms' or '5 s'"))?)
            }
            "scan.dead-letter-topic" => source.dead_letter_topic = Some(v.clone()),
            "sink.delivery-guarantee" => {
                table.sink_delivery = match v.as_str() {
                    "none" => DeliveryGuarantee::None,
                    "at-least-once" => DeliveryGuarantee::AtLeastOnce,
                    "exactly-once" => DeliveryGuarantee::ExactlyOnce,
                    _ => return Err(SqlError::at(p, format!("sink.delivery-guarantee '{v}' is not supported")).hint("none, at-least-once, exactly-once")),
                }
            }
            "sink.transactional-id-prefix" => table.sink_transactional_id_prefix = Some(v.clone()),
            "sink.transaction-log-dir" => table.sink_transaction_log_dir = Some(PathBuf::from(v)),
            "sink.partitioner" => {
                table.sink_partitioner = match v.as_str() {
                    "default" => Partitioner::Default,
                    "fixed" => Partitioner::Fixed,
                    "round-robin" => Partitioner::RoundRobin,
                    _ => return Err(SqlError::at(p, format!("sink.partitioner '{v}' is not supported")).hint("default, fixed, round-robin")),
                }
            }
            "key.fields" => {
                for f in v.split(';').map(str::trim).filter(|f| !f.is_empty()) {
                    if !physical.iter().any(|(n, _)| n.eq_ignore_ascii_case(f)) {
                        return Err(SqlError::at(p, format!("key field `{f}` is not a physical column")));
                    }
                    table.key_fields.push(f.to_string());
                }
            }
            "key.format" if v == "csv" || v == "raw" => {}
            other if other.starts_with("properties.") => {
                source.connection.properties.insert(other["properties.".len()..].to_string(), v.clone());
            }
            _ => {
                return Err(SqlError::at(p, format!("option '{k}' is not supported by weir's kafka connector")).hint(
                    "supported: topic, topic-pattern, properties.*, format, scan.startup.mode, scan.startup.timestamp-millis, \
                     scan.startup.specific-offsets, scan.bounded.mode, scan.watermark.idle-timeout, scan.dead-letter-topic, key.fields, \
                     sink.delivery-guarantee, sink.transactional-id-prefix, sink.partitioner, sink.transaction-log-dir",
                ))
            }
        }
    }
    match &mut source.startup {
        StartupMode::Timestamp(ts) => {
            *ts = startup_ts.ok_or_else(|| SqlError::at(ct.pos, "scan.startup.mode = 'timestamp' needs 'scan.startup.timestamp-millis'"))?;
        }
        StartupMode::SpecificOffsets(m) => {
            let given = specific.ok_or_else(|| SqlError::at(ct.pos, "scan.startup.mode = 'specific-offsets' needs 'scan.startup.specific-offsets'"))?;
            let t = table.topic.clone().ok_or_else(|| SqlError::at(ct.pos, "specific offsets need one 'topic'"))?;
            *m = given.into_iter().map(|(p, o)| ((t.clone(), p), o)).collect();
        }
        _ => {}
    }
    table.source = source;
    Ok(table)
}

/// `col` or `col - INTERVAL 'n' unit` → delay in ms.
fn watermark_delay(e: &ast::Expr, column: &str) -> Result<i64, SqlError> {
    let is_col = |x: &ast::Expr| matches!(&x.kind, ExprKind::Column(p) if p.len() == 1 && p[0].eq_ignore_ascii_case(column));
    if is_col(e) {
        return Ok(0);
    }
    if let ExprKind::Binary(BinOp::Minus, l, r) = &e.kind {
        if is_col(l) {
            if let ExprKind::Interval(ms) = r.kind {
                if ms >= 0 {
                    return Ok(ms);
                }
            }
        }
    }
    Err(SqlError::at(e.pos, format!("unsupported watermark expression `{}`", e.display()))
        .hint(format!("use `{column} - INTERVAL 'n' SECOND` (bounded out-of-orderness) or `{column}`")))
}

fn sink_conversions(rel: &Rel, sink: &TableDef, query: &ast::Query, pos: Pos) -> Result<Vec<Expr>, SqlError> {
    if let Some(ColumnSource::Computed(_)) = sink.layout.iter().find(|c| matches!(c, ColumnSource::Computed(_))) {
        return Err(SqlError::at(pos, format!("sink table `{}` has computed columns", sink.name)).hint("declare sink tables with physical columns only"));
    }
    if rel.scope.columns.len() != sink.columns.len() {
        return Err(SqlError::at(
            query.pos,
            format!(
                "the query produces {} columns but sink `{}` has {}",
                rel.scope.columns.len(),
                sink.name,
                sink.columns.len()
            ),
        )
        .hint(format!(
            "select exactly: {}",
            sink.columns.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut out = Vec::new();
    for (i, (c, (name, ty))) in rel.scope.columns.iter().zip(&sink.columns).enumerate() {
        if !assignable(c.ty, *ty) {
            let at = match query.select.get(i) {
                Some(SelectItem::Expr { expr, .. }) => expr.pos,
                _ => query.pos,
            };
            return Err(SqlError::at(
                at,
                format!(
                    "type error: column {} `{}` of the query is {}, but sink column `{name}` is {ty}",
                    i + 1,
                    c.name,
                    c.ty
                ),
            )
            .hint(format!("CAST it: CAST(... AS {ty})")));
        }
        out.push(coerce(Typed { expr: Expr::Col(i), ty: c.ty }, *ty));
    }
    Ok(out)
}

struct Planner<'a> {
    catalog: &'a Catalog,
    depth: usize,
}

const MAX_VIEW_DEPTH: usize = 32;

impl Planner<'_> {
    fn query(&self, q: &ast::Query) -> Result<Rel, SqlError> {
        let from = self.from(&q.from)?;
        let has_agg =
            !q.group_by.is_empty() || q.having.is_some() || q.select.iter().any(|s| matches!(s, SelectItem::Expr { expr, .. } if contains_aggregate(expr)));
        if has_agg {
            super::over::not_with_group_by(&q.select)?;
            return self.window_aggregate(q, from);
        }
        let mut rel = from;
        if let Some(w) = &q.where_ {
            rank_limit(&mut rel, w);
            rel = filter(rel, w)?;
        }
        if super::over::in_select(&q.select) {
            return super::over::plan(rel, &q.select);
        }
        if let Some(k) = q
            .select
            .iter()
            .position(|s| matches!(s, SelectItem::Expr { expr, .. } if matches!(expr.kind, ExprKind::RowNumber { .. })))
        {
            return window_rank(rel, &q.select, k);
        }
        project(rel, &q.select, bind)
    }

    fn from(&self, f: &FromItem) -> Result<Rel, SqlError> {
        match f {
            FromItem::Table { name, alias, pos } => {
                let key = lower(name);
                let qual = alias.clone().unwrap_or_else(|| name.clone());
                if let Some(t) = self.catalog.tables.get(&key) {
                    if !t.connector.is_source() {
                        return Err(SqlError::at(*pos, format!("table `{name}` is a sink-only table and cannot be read")));
                    }
                    let scope = Scope {
                        columns: t
                            .columns
                            .iter()
                            .map(|(n, ty)| Column {
                                qualifier: Some(qual.clone()),
                                name: n.clone(),
                                ty: *ty,
                            })
                            .collect(),
                    };
                    return Ok(Rel {
                        plan: Plan::Scan { table: t.clone() },
                        scope,
                        rowtime: t.rowtime.map(|(i, _)| i),
                        window: None,
                    });
                }
                if let Some(v) = self.catalog.views.get(&key) {
                    if self.depth >= MAX_VIEW_DEPTH {
                        return Err(SqlError::at(*pos, "views nested too deeply"));
                    }
                    let mut rel = Planner {
                        catalog: self.catalog,
                        depth: self.depth + 1,
                    }
                    .query(v)?;
                    requalify(&mut rel.scope, &qual);
                    return Ok(rel);
                }
                let mut known: Vec<&String> = self.catalog.tables.keys().chain(self.catalog.views.keys()).collect();
                known.sort();
                Err(SqlError::at(*pos, format!("unknown table `{name}`")).hint(format!("tables and views: {known:?}")))
            }
            FromItem::Subquery { query, alias, .. } => {
                let mut rel = self.query(query)?;
                if let Some(a) = alias {
                    requalify(&mut rel.scope, a);
                } else {
                    for c in rel.scope.columns.iter_mut() {
                        c.qualifier = None;
                    }
                }
                Ok(rel)
            }
            FromItem::Tvf {
                kind,
                pos,
                input,
                partition_by,
                descriptor,
                args,
                alias,
            } => {
                let input = self.from(input)?;
                let (dname, dpos) = descriptor;
                let time_col = input.scope.resolve(std::slice::from_ref(dname), *dpos)?;
                let proctime = input.rowtime != Some(time_col) && super::proctime::is_proctime(&input, time_col);
                if proctime && *kind == TvfKind::Session {
                    return Err(SqlError::at(*dpos, "SESSION windows on processing time are not supported")
                        .hint("use TUMBLE, HOP or CUMULATE on the processing-time attribute, or SESSION on the event-time attribute"));
                }
                if input.rowtime != Some(time_col) && !proctime {
                    return Err(
                        SqlError::at(*dpos, format!("DESCRIPTOR({dname}) must name the time attribute of the input")).hint(match input.rowtime {
                            Some(i) => format!("the input's time attribute is `{}`", input.scope.columns[i].name),
                            None => "the input has no time attribute: declare WATERMARK FOR <column> AS <column> - INTERVAL ... in its CREATE TABLE, \
                                     or a processing-time attribute: <column> AS PROCTIME()"
                                .into(),
                        }),
                    );
                }
                for (p, ppos) in partition_by {
                    input.scope.resolve(std::slice::from_ref(p), *ppos)?;
                    if *kind != TvfKind::Session {
                        return Err(SqlError::at(*ppos, "PARTITION BY is only allowed in SESSION windows"));
                    }
                }
                let intervals = args
                    .iter()
                    .map(|a| match a.kind {
                        ExprKind::Interval(ms) => Ok(ms),
                        _ => Err(SqlError::at(a.pos, format!("expected an interval literal, found `{}`", a.display())).hint("write e.g. INTERVAL '10' SECOND")),
                    })
                    .collect::<Result<Vec<i64>, _>>()?;
                let need = |n: usize, sig: &str| -> Result<(), SqlError> {
                    if intervals.len() == n {
                        Ok(())
                    } else if intervals.len() == n + 1 {
                        Err(SqlError::at(*pos, "window offsets are not supported").hint(sig.to_string()))
                    } else {
                        Err(SqlError::at(*pos, format!("wrong number of window arguments: expected {sig}")))
                    }
                };
                let assigner = match kind {
                    TvfKind::Tumble => {
                        need(1, "TUMBLE(TABLE t, DESCRIPTOR(ts), size)")?;
                        WindowAssigner::Tumbling {
                            size_ms: intervals[0],
                            offset_ms: 0,
                        }
                    }
                    TvfKind::Hop => {
                        need(2, "HOP(TABLE t, DESCRIPTOR(ts), slide, size)")?;
                        if intervals[0] > 0 && intervals[1] % intervals[0] != 0 {
                            return Err(SqlError::at(args[1].pos, "HOP size must be an integral multiple of the slide (as in Flink)"));
                        }
                        WindowAssigner::Sliding {
                            size_ms: intervals[1],
                            slide_ms: intervals[0],
                            offset_ms: 0,
                        }
                    }
                    TvfKind::Cumulate => {
                        need(2, "CUMULATE(TABLE t, DESCRIPTOR(ts), step, max_size)")?;
                        WindowAssigner::Cumulate {
                            step_ms: intervals[0],
                            max_size_ms: intervals[1],
                            offset_ms: 0,
                        }
                    }
                    TvfKind::Session => {
                        need(1, "SESSION(TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap)")?;
                        WindowAssigner::Session { gap_ms: intervals[0] }
                    }
                };
                assigner.validate().map_err(|m| SqlError::at(*pos, m))?;
                let ltz = matches!(input.scope.columns[time_col].ty, SqlType::TimestampLtz(_));
                let mut scope = input.scope.clone();
                let q = alias.clone().or_else(|| scope.columns.first().and_then(|c| c.qualifier.clone()));
                if let Some(a) = alias {
                    requalify(&mut scope, a);
                }
                for (n, ty) in window_columns(ltz) {
                    scope.columns.push(Column {
                        qualifier: q.clone(),
                        name: n.into(),
                        ty,
                    });
                }
                let n_in = input.scope.columns.len();
                // Processing-time windows have no event time downstream: their results are not a
                // windowed relation for cascades, window joins or Top-N.
                let (rowtime, window) = if proctime {
                    (None, None)
                } else {
                    (Some(scope.columns.len() - 1), Some((n_in, n_in + 1)))
                };
                Ok(Rel {
                    plan: Plan::WindowTvf {
                        input: Box::new(input),
                        assigner,
                        proctime,
                    },
                    scope,
                    rowtime,
                    window,
                })
            }
            FromItem::Join { left, right, kind, on, pos } => self.join(left, right, *kind, on, *pos),
        }
    }

    fn window_aggregate(&self, q: &ast::Query, from: Rel) -> Result<Rel, SqlError> {
        // The input rows and where their window columns are: after a window TVF, the three
        // columns it appends; over a windowed result (a window aggregate, a window join), its
        // own window_start, window_end and time attribute (a cascaded window aggregate).
        let (input, tvf_scope, assigner, win, cascade, proctime) = match from {
            Rel {
                plan: Plan::WindowTvf { input, assigner, proctime },
                scope,
                ..
            } => {
                let n = input.scope.columns.len();
                (*input, scope, assigner, [n, n + 1, n + 2], None, proctime)
            }
            Rel {
                window: Some((ws, we)),
                rowtime,
                ..
            } => {
                // Rows of a windowed result carry their window's `window_end - 1` as timestamp.
                let wt = rowtime.unwrap_or(usize::MAX);
                let scope = from.scope.clone();
                let assigner = WindowAssigner::Tumbling { size_ms: 1, offset_ms: 0 };
                (from, scope, assigner, [ws, we, wt], Some((ws, we)), false)
            }
            _ => {
                return Err(SqlError::at(
                    q.pos,
                    "GROUP BY and aggregates are supported only over a window TVF (non-windowed aggregation produces updates)",
                )
                .hint("aggregate FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end, ..."))
            }
        };
        let is_win = |e: &Expr| {
            let mut any = false;
            columns(e, &mut |i| any |= win.contains(&i));
            any
        };
        let n_in = input.scope.columns.len();
        let ltz = matches!(tvf_scope.columns.get(win[2]).map(|c| c.ty), Some(SqlType::TimestampLtz(_)));
        let mut input = input;
        if let Some(w) = &q.where_ {
            let t = bind(w, &tvf_scope)?;
            if is_win(&t.expr) || references_at_least(&t.expr, n_in) {
                return Err(
                    SqlError::at(w.pos, "WHERE on window columns before a window aggregate is not supported").hint("filter window results in an outer query")
                );
            }
            input = filter(input, w)?;
        }
        // GROUP BY: window columns and keys.
        let mut keys: Vec<Typed> = Vec::new();
        let mut key_texts = Vec::new();
        let mut key_cols: Vec<Option<usize>> = Vec::new();
        let mut group_canon: Vec<(String, usize)> = Vec::new();
        let (mut has_start, mut has_end) = (false, false);
        for g in &q.group_by {
            let t = bind(g, &tvf_scope)?;
            match t.expr {
                Expr::Col(i) if i == win[0] => {
                    has_start = true;
                    group_canon.push((g.canonical(), usize::MAX - 2));
                }
                Expr::Col(i) if i == win[1] => {
                    has_end = true;
                    group_canon.push((g.canonical(), usize::MAX - 1));
                }
                Expr::Col(i) if i == win[2] => group_canon.push((g.canonical(), usize::MAX)),
                ref e => {
                    if is_win(e) || (cascade.is_none() && references_at_least(e, n_in)) {
                        return Err(SqlError::at(g.pos, "GROUP BY expressions over window columns are not supported")
                            .hint("group by window_start, window_end directly"));
                    }
                    group_canon.push((g.canonical(), keys.len()));
                    key_cols.push(if let Expr::Col(i) = e { Some(*i) } else { None });
                    key_texts.push(g.display());
                    keys.push(t);
                }
            }
        }
        if !(has_start && has_end) {
            let at = q.group_by.first().map(|g| g.pos).unwrap_or(q.pos);
            return Err(SqlError::at(at, "a window aggregate must GROUP BY window_start and window_end").hint("GROUP BY window_start, window_end, <keys>"));
        }
        let nk = keys.len();
        // Post-aggregate scope: keys, window columns, aggregates (filled by the hook).
        let mut hook = AggHook {
            tvf_scope: &tvf_scope,
            win,
            nk,
            key_cols: &key_cols,
            group_canon: &group_canon,
            ltz,
            args: Vec::new(),
            aggs: Vec::new(),
        };
        let post_base = post_agg_scope(&keys, &key_texts, &key_cols, &tvf_scope, ltz);
        // Bind HAVING and the select list with the hook; collect aggregates.
        let having = match &q.having {
            Some(h) => {
                let t = bind_with(h, &post_base, &mut hook)?;
                if !matches!(t.ty, SqlType::Boolean | SqlType::Null) {
                    return Err(SqlError::at(h.pos, format!("HAVING `{}` is {}, expected BOOLEAN", h.display(), t.ty)));
                }
                Some((t.expr, h.display()))
            }
            None => None,
        };
        let mut items = Vec::new();
        for s in &q.select {
            match s {
                SelectItem::Wildcard { pos, .. } => {
                    return Err(SqlError::at(*pos, "`*` is not allowed in an aggregate query").hint("list the grouped columns and aggregates"));
                }
                SelectItem::Expr { expr, alias } => {
                    let t = bind_with(expr, &post_base, &mut hook)?;
                    items.push((t, output_name(expr, alias.as_deref(), items.len())));
                }
            }
        }
        let AggHook { args, aggs, .. } = hook;
        let mut scope = post_base;
        for (k, a) in aggs.iter().enumerate() {
            scope.columns.push(Column {
                qualifier: None,
                name: format!("$agg{k}"),
                ty: a.out_type,
            });
        }
        let agg_rel = Rel {
            plan: Plan::WindowAgg {
                input: Box::new(input),
                assigner,
                keys: keys.into_iter().map(|k| k.expr).collect(),
                key_texts,
                args: args.into_iter().map(|a| a.expr).collect(),
                aggs,
                ltz,
                cascade,
                proctime,
            },
            scope,
            rowtime: (!proctime).then_some(nk + 2),
            window: (!proctime).then_some((nk, nk + 1)),
        };
        let mut rel = agg_rel;
        if let Some((pred, text)) = having {
            let scope = rel.scope.clone();
            let (rowtime, window) = (rel.rowtime, rel.window);
            rel = Rel {
                plan: Plan::Filter {
                    input: Box::new(rel),
                    predicate: pred,
                    text,
                },
                scope,
                rowtime,
                window,
            };
        }
        Ok(projection(rel, items))
    }

    fn join(&self, left: &FromItem, right: &FromItem, kind: JoinKind, on: &ast::Expr, pos: Pos) -> Result<Rel, SqlError> {
        let l = self.from(left)?;
        let r = self.from(right)?;
        let nl = l.scope.columns.len();
        let mut scope = l.scope.clone();
        scope.columns.extend(r.scope.columns.iter().cloned());
        let mut conjuncts = Vec::new();
        split_and(on, &mut conjuncts);
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        let mut key_texts = Vec::new();
        let mut residual: Option<(Expr, String)> = None;
        let mut interval_parts: Vec<(Expr, String, Vec<Bound>)> = Vec::new();
        let (mut start_eq, mut end_eq) = (None::<(usize, usize)>, None::<(usize, usize)>);
        for c in conjuncts {
            if let ExprKind::Binary(BinOp::Eq, a, b) = &c.kind {
                let ta = bind(a, &scope)?;
                let tb = bind(b, &scope)?;
                let side = |e: &Expr| -> Option<bool> {
                    let mut lo = usize::MAX;
                    let mut hi = 0;
                    column_range(e, &mut lo, &mut hi);
                    if lo == usize::MAX {
                        None
                    } else if hi < nl {
                        Some(true)
                    } else if lo >= nl {
                        Some(false)
                    } else {
                        None
                    }
                };
                let (sa, sb) = (side(&ta.expr), side(&tb.expr));
                let pair = match (sa, sb) {
                    (Some(true), Some(false)) => Some((ta, tb)),
                    (Some(false), Some(true)) => Some((tb, ta)),
                    _ => None,
                };
                if let Some((lt, rt)) = pair {
                    let ty = common_type(lt.ty, rt.ty)
                        .ok_or_else(|| SqlError::at(c.pos, format!("type error in `{}`: cannot compare {} with {}", c.display(), lt.ty, rt.ty)))?;
                    if let (Expr::Col(li), Expr::Col(ri), Some(lw), Some(rw)) = (&lt.expr, &rt.expr, l.window, r.window) {
                        if *li == lw.0 && *ri - nl == rw.0 {
                            start_eq = Some((*li, *ri - nl));
                        }
                        if *li == lw.1 && *ri - nl == rw.1 {
                            end_eq = Some((*li, *ri - nl));
                        }
                    }
                    left_keys.push(coerce(lt, ty));
                    right_keys.push(shift_columns(coerce(rt, ty), nl));
                    key_texts.push(c.display());
                    continue;
                }
            }
            let t = bind(c, &scope)?;
            if !matches!(t.ty, SqlType::Boolean | SqlType::Null) {
                return Err(SqlError::at(c.pos, format!("join condition `{}` is {}, expected BOOLEAN", c.display(), t.ty)));
            }
            let bounds = match (l.rowtime, r.rowtime) {
                (Some(lt), Some(rt)) => time_bounds(c, &scope, lt, rt + nl),
                _ => Vec::new(),
            };
            if !bounds.is_empty() {
                interval_parts.push((t.expr.clone(), c.display(), bounds));
                continue;
            }
            residual = Some(match residual {
                None => (t.expr, c.display()),
                Some((e, s)) => (Expr::And(Box::new(e), Box::new(t.expr)), format!("{s} AND {}", c.display())),
            });
        }
        let (Some(_), Some((le, re))) = (start_eq, end_eq) else {
            // Not a window join: an interval join if the time attributes are bounded both ways.
            let (mut lower, mut upper) = (None::<i64>, None::<i64>);
            for (_, _, bounds) in &interval_parts {
                for b in bounds {
                    match b {
                        Bound::Lower(x) => lower = Some(lower.map_or(*x, |y| y.max(*x))),
                        Bound::Upper(x) => upper = Some(upper.map_or(*x, |y| y.min(*x))),
                    }
                }
            }
            let (Some(lower), Some(upper)) = (lower, upper) else {
                return Err(
                    SqlError::at(pos, "only window joins and interval joins are supported: regular joins produce updates").hint(
                        "join two windowed inputs ON L.window_start = R.window_start AND L.window_end = R.window_end, or bound the time attributes: \
                     ON L.k = R.k AND R.ts BETWEEN L.ts - INTERVAL '1' MINUTE AND L.ts + INTERVAL '1' MINUTE",
                    ),
                );
            };
            if kind != JoinKind::Inner {
                return Err(SqlError::at(pos, "outer interval joins are not supported").hint("use an inner interval join"));
            }
            if lower > upper {
                return Err(SqlError::at(
                    pos,
                    format!("the time bounds of the interval join are empty ({lower} ms > {upper} ms)"),
                ));
            }
            if left_keys.is_empty() {
                return Err(SqlError::at(pos, "an interval join needs at least one equality between the two sides"));
            }
            let text = interval_parts.iter().map(|(_, t, _)| t.clone()).collect::<Vec<_>>().join(" AND ");
            return Ok(Rel {
                plan: Plan::IntervalJoin {
                    left: Box::new(l),
                    right: Box::new(r),
                    left_keys,
                    right_keys,
                    key_texts,
                    lower,
                    upper,
                    bounds_text: text,
                    residual: residual.as_ref().map(|(e, _)| e.clone()),
                    residual_text: residual.map(|(_, s)| s),
                },
                scope,
                rowtime: None,
                window: None,
            });
        };
        // A window join: time bounds are ordinary conditions.
        for (e, text, _) in interval_parts {
            residual = Some(match residual {
                None => (e, text),
                Some((r, s)) => (Expr::And(Box::new(r), Box::new(e)), format!("{s} AND {text}")),
            });
        }
        let rowtime = l.rowtime;
        let window = l.window;
        let (residual, residual_text) = match residual {
            Some((e, s)) => (Some(e), Some(s)),
            None => (None, None),
        };
        Ok(Rel {
            plan: Plan::WindowJoin {
                left: Box::new(l),
                right: Box::new(r),
                kind,
                left_keys,
                right_keys,
                key_texts,
                left_end: le,
                right_end: re,
                residual,
                residual_text,
            },
            scope,
            rowtime,
            window,
        })
    }
}

/// `SELECT ..., ROW_NUMBER() OVER (PARTITION BY window_start, window_end, keys ORDER BY ...)
/// FROM windowed` (the row number is select item `k`): a window rank node and the projection.
fn window_rank(rel: Rel, select: &[SelectItem], k: usize) -> Result<Rel, SqlError> {
    let SelectItem::Expr { expr, alias } = &select[k] else {
        unreachable!("checked by the caller")
    };
    let ExprKind::RowNumber { partition_by, order_by } = &expr.kind else {
        unreachable!("checked by the caller")
    };
    let Some((ws, we)) = rel.window else {
        return Err(SqlError::at(expr.pos, "ROW_NUMBER() is supported only over a windowed relation (window Top-N)")
            .hint("rank rows of a window TVF, a window aggregate or a window join, PARTITION BY window_start, window_end, ..."));
    };
    let (mut has_start, mut has_end) = (false, false);
    let mut keys = Vec::new();
    for p in partition_by {
        let t = bind(p, &rel.scope)?;
        match t.expr {
            Expr::Col(i) if i == ws => has_start = true,
            Expr::Col(i) if i == we => has_end = true,
            e => keys.push(e),
        }
    }
    if !(has_start && has_end) {
        return Err(SqlError::at(expr.pos, "a window Top-N must PARTITION BY window_start, window_end")
            .hint("ROW_NUMBER() OVER (PARTITION BY window_start, window_end, <keys> ORDER BY ...)"));
    }
    let mut order = Vec::new();
    for (e, desc) in order_by {
        let t = bind(e, &rel.scope)?;
        if matches!(t.ty, SqlType::Interval) {
            return Err(SqlError::at(e.pos, "cannot order by an interval"));
        }
        order.push((t.expr, *desc));
    }
    let n = rel.scope.columns.len();
    let mut scope = rel.scope.clone();
    scope.columns.push(Column {
        qualifier: None,
        name: alias.clone().unwrap_or_else(|| "rownum".into()),
        ty: SqlType::BigInt,
    });
    let (rowtime, window) = (rel.rowtime, rel.window);
    let input_scope = rel.scope.clone();
    let ranked = Rel {
        plan: Plan::WindowRank {
            input: Box::new(rel),
            window_end: we,
            keys,
            order,
            limit: None,
            text: expr.display(),
        },
        scope,
        rowtime,
        window,
    };
    // The select list over the input's columns, with the row number as column `n`.
    let mut items = Vec::new();
    for (i, s) in select.iter().enumerate() {
        match s {
            SelectItem::Expr { alias, .. } if i == k => items.push((
                Typed {
                    expr: Expr::Col(n),
                    ty: SqlType::BigInt,
                },
                alias.clone().unwrap_or_else(|| "rownum".into()),
            )),
            SelectItem::Wildcard { qualifier, pos } => {
                let before = items.len();
                for (c, col) in input_scope.columns.iter().enumerate() {
                    if qualifier
                        .as_ref()
                        .is_none_or(|q| col.qualifier.as_deref().is_some_and(|cq| cq.eq_ignore_ascii_case(q)))
                    {
                        items.push((
                            Typed {
                                expr: Expr::Col(c),
                                ty: col.ty,
                            },
                            col.name.clone(),
                        ));
                    }
                }
                if items.len() == before {
                    return Err(SqlError::at(*pos, "`*` matches no column"));
                }
            }
            SelectItem::Expr { expr, alias } => {
                let t = bind(expr, &input_scope)?;
                let name = output_name(expr, alias.as_deref(), items.len());
                items.push((t, name));
            }
        }
    }
    Ok(projection(ranked, items))
}

/// If `w` has a conjunct `c <= N` / `c < N` / `c = N` where column `c` of `rel` is a window
/// rank's row number, record the limit in that rank node.
fn rank_limit(rel: &mut Rel, w: &ast::Expr) {
    let mut conjuncts = Vec::new();
    split_and(w, &mut conjuncts);
    for c in conjuncts {
        let ExprKind::Binary(op, a, b) = &c.kind else { continue };
        let (ExprKind::Column(parts), ExprKind::Number(n)) = (&a.kind, &b.kind) else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        let limit = match op {
            BinOp::LtEq | BinOp::Eq => n,
            BinOp::Lt => n.saturating_sub(1),
            _ => continue,
        };
        if *op == BinOp::Eq && n != 1 {
            continue;
        }
        if let Ok(col) = rel.scope.resolve(parts, c.pos) {
            set_rank_limit(rel, col, limit);
        }
    }
}

fn set_rank_limit(rel: &mut Rel, col: usize, limit: usize) -> bool {
    let width = rel.scope.columns.len();
    match &mut rel.plan {
        Plan::Project { input, exprs } => match exprs.get(col) {
            Some(Expr::Col(i)) => {
                let i = *i;
                set_rank_limit(input, i, limit)
            }
            _ => false,
        },
        Plan::Filter { input, .. } => set_rank_limit(input, col, limit),
        Plan::WindowRank { limit: l, .. } if col + 1 == width => {
            *l = Some(l.map_or(limit, |x| x.min(limit)));
            true
        }
        _ => false,
    }
}

/// A bound on `r.ts - l.ts` (ms, inclusive).
#[derive(Clone, Copy, Debug)]
enum Bound {
    Lower(i64),
    Upper(i64),
}

/// `column [± INTERVAL]` → the column's parts and the offset in ms.
fn time_offset(e: &ast::Expr) -> Option<(&[String], i64)> {
    match &e.kind {
        ExprKind::Column(p) => Some((p, 0)),
        ExprKind::Binary(op @ (BinOp::Plus | BinOp::Minus), a, b) => match (&a.kind, &b.kind) {
            (ExprKind::Column(p), ExprKind::Interval(ms)) => Some((p, if *op == BinOp::Plus { *ms } else { -*ms })),
            _ => None,
        },
        _ => None,
    }
}

/// The bounds on `r.ts - l.ts` a conjunct states (`l_rt`, `r_rt`: the time attributes'
/// indexes in the joined scope): comparisons of the two time attributes (± intervals) and
/// `BETWEEN`.
fn time_bounds(c: &ast::Expr, scope: &Scope, l_rt: usize, r_rt: usize) -> Vec<Bound> {
    let cmp = |op: BinOp, a: &ast::Expr, b: &ast::Expr| -> Option<Bound> {
        let ((pa, oa), (pb, ob)) = (time_offset(a)?, time_offset(b)?);
        let (ia, ib) = (scope.resolve(pa, a.pos).ok()?, scope.resolve(pb, b.pos).ok()?);
        // Rewrite `a + oa op b + ob` as `r - l op' k`.
        let (op, k) = if ia == r_rt && ib == l_rt {
            (op, ob - oa)
        } else if ia == l_rt && ib == r_rt {
            let flipped = match op {
                BinOp::Lt => BinOp::Gt,
                BinOp::LtEq => BinOp::GtEq,
                BinOp::Gt => BinOp::Lt,
                BinOp::GtEq => BinOp::LtEq,
                o => o,
            };
            (flipped, oa - ob)
        } else {
            return None;
        };
        match op {
            BinOp::LtEq => Some(Bound::Upper(k)),
            BinOp::Lt => Some(Bound::Upper(k - 1)),
            BinOp::GtEq => Some(Bound::Lower(k)),
            BinOp::Gt => Some(Bound::Lower(k + 1)),
            _ => None,
        }
    };
    match &c.kind {
        ExprKind::Binary(op @ (BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq), a, b) => cmp(*op, a, b).into_iter().collect(),
        ExprKind::Between {
            expr,
            low,
            high,
            negated: false,
        } => match (cmp(BinOp::GtEq, expr, low), cmp(BinOp::LtEq, expr, high)) {
            (Some(x), Some(y)) => vec![x, y],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn window_columns(ltz: bool) -> [(&'static str, SqlType); 3] {
    [
        ("window_start", SqlType::Timestamp(3)),
        ("window_end", SqlType::Timestamp(3)),
        ("window_time", if ltz { SqlType::TimestampLtz(3) } else { SqlType::Timestamp(3) }),
    ]
}

fn post_agg_scope(keys: &[Typed], key_texts: &[String], key_cols: &[Option<usize>], tvf: &Scope, ltz: bool) -> Scope {
    let mut cols = Vec::new();
    for (k, t) in keys.iter().enumerate() {
        let (qualifier, name) = match key_cols[k] {
            Some(i) => (tvf.columns[i].qualifier.clone(), tvf.columns[i].name.clone()),
            None => (None, key_texts[k].clone()),
        };
        cols.push(Column { qualifier, name, ty: t.ty });
    }
    let q = tvf.columns.first().and_then(|c| c.qualifier.clone());
    for (n, ty) in window_columns(ltz) {
        cols.push(Column {
            qualifier: q.clone(),
            name: n.into(),
            ty,
        });
    }
    Scope { columns: cols }
}

/// Binds aggregate calls and grouped expressions of an aggregate query.
struct AggHook<'a> {
    tvf_scope: &'a Scope,
    /// Columns of `tvf_scope` holding window_start, window_end, window_time.
    win: [usize; 3],
    nk: usize,
    key_cols: &'a [Option<usize>],
    group_canon: &'a [(String, usize)],
    ltz: bool,
    args: Vec<Typed>,
    aggs: Vec<AggCall>,
}

impl AggHook<'_> {
    fn post_index(&self, g: usize) -> usize {
        match g {
            x if x == usize::MAX - 2 => self.nk,
            x if x == usize::MAX - 1 => self.nk + 1,
            usize::MAX => self.nk + 2,
            k => k,
        }
    }
    fn post_type(&self, idx: usize, key_types: SqlType) -> SqlType {
        if idx == self.nk + 2 && self.ltz {
            SqlType::TimestampLtz(3)
        } else if idx >= self.nk {
            SqlType::Timestamp(3)
        } else {
            key_types
        }
    }
}

impl AggregateHook for AggHook<'_> {
    fn lookup(&mut self, e: &ast::Expr) -> Result<Option<Typed>, SqlError> {
        // A grouped column, by resolution.
        if let ExprKind::Column(parts) = &e.kind {
            let i = self.tvf_scope.resolve(parts, e.pos)?;
            let g = if i == self.win[0] {
                Some(usize::MAX - 2)
            } else if i == self.win[1] {
                Some(usize::MAX - 1)
            } else if i == self.win[2] {
                Some(usize::MAX)
            } else {
                self.key_cols.iter().position(|k| *k == Some(i))
            };
            return match g {
                Some(g) => {
                    let idx = self.post_index(g);
                    let ty = self.post_type(idx, self.tvf_scope.columns[i].ty);
                    Ok(Some(Typed { expr: Expr::Col(idx), ty }))
                }
                None => Err(SqlError::at(e.pos, format!("column `{}` is neither grouped nor aggregated", parts.join(".")))
                    .hint("add it to GROUP BY or wrap it in an aggregate such as MAX(...)")),
            };
        }
        // A grouped expression, by text.
        let canon = e.canonical();
        if let Some((_, g)) = self.group_canon.iter().find(|(c, _)| *c == canon) {
            let idx = self.post_index(*g);
            let t = bind(e, self.tvf_scope)?;
            let ty = self.post_type(idx, t.ty);
            return Ok(Some(Typed { expr: Expr::Col(idx), ty }));
        }
        let ExprKind::Function { name, args, distinct, star } = &e.kind else {
            return Ok(None);
        };
        if !is_aggregate(name) {
            return Ok(None);
        }
        let text = e.display();
        let (func, arg) = if *star {
            if name != "COUNT" {
                return Err(SqlError::at(e.pos, format!("{name}(*) is not valid")).hint("only COUNT(*) takes *"));
            }
            (AggFunc::CountStar, None)
        } else {
            if args.len() != 1 {
                return Err(SqlError::at(e.pos, format!("{name} takes exactly one argument")));
            }
            if contains_aggregate(&args[0]) {
                return Err(SqlError::at(args[0].pos, "aggregates cannot be nested"));
            }
            let t = bind(&args[0], self.tvf_scope)?;
            let mut on_window = false;
            columns(&t.expr, &mut |i| on_window |= self.win.contains(&i));
            if on_window {
                return Err(SqlError::at(args[0].pos, "aggregating window columns is not supported"));
            }
            let f = match (name.as_str(), *distinct) {
                ("COUNT", true) => AggFunc::CountDistinct,
                ("COUNT", false) => AggFunc::Count,
                (_, true) => return Err(SqlError::at(e.pos, format!("{name}(DISTINCT ...) is not supported")).hint("only COUNT(DISTINCT ...) is")),
                ("SUM", _) => AggFunc::Sum,
                ("MIN", _) => AggFunc::Min,
                ("MAX", _) => AggFunc::Max,
                _ => AggFunc::Avg,
            };
            (f, Some(t))
        };
        let arg_type = arg.as_ref().map(|a| a.ty).unwrap_or(SqlType::BigInt);
        let out_type = match func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::CountDistinct => SqlType::BigInt,
            AggFunc::Sum => match arg_type {
                SqlType::Decimal(_, s) => SqlType::Decimal(38, s),
                t if t.is_numeric() => t,
                t => return Err(SqlError::at(e.pos, format!("type error in `{text}`: SUM of {t}")).hint("SUM takes a number")),
            },
            AggFunc::Avg => match arg_type {
                SqlType::Decimal(_, s) => SqlType::Decimal(38, s.max(6)),
                t if t.is_numeric() => t,
                t => return Err(SqlError::at(e.pos, format!("type error in `{text}`: AVG of {t}")).hint("AVG takes a number")),
            },
            AggFunc::Min | AggFunc::Max => {
                if matches!(arg_type, SqlType::Interval | SqlType::Null) {
                    return Err(SqlError::at(e.pos, format!("type error in `{text}`: {name} of {arg_type}")));
                }
                arg_type
            }
        };
        let arg_index = arg.map(|a| {
            self.args.push(a);
            self.args.len() - 1
        });
        self.aggs.push(AggCall {
            func,
            arg: arg_index,
            arg_type,
            out_type,
            text,
        });
        let idx = self.nk + 3 + self.aggs.len() - 1;
        Ok(Some(Typed {
            expr: Expr::Col(idx),
            ty: out_type,
        }))
    }
    fn column_allowed(&self) -> bool {
        false
    }
}

pub(super) fn output_name(e: &ast::Expr, alias: Option<&str>, i: usize) -> String {
    if let Some(a) = alias {
        return a.to_string();
    }
    match &e.kind {
        ExprKind::Column(parts) => parts.last().cloned().unwrap_or_default(),
        _ => format!("EXPR${i}"),
    }
}

fn requalify(scope: &mut Scope, q: &str) {
    for c in scope.columns.iter_mut() {
        c.qualifier = Some(q.to_string());
    }
}

fn filter(rel: Rel, w: &ast::Expr) -> Result<Rel, SqlError> {
    let t = bind(w, &rel.scope)?;
    if !matches!(t.ty, SqlType::Boolean | SqlType::Null) {
        return Err(SqlError::at(w.pos, format!("WHERE `{}` is {}, expected BOOLEAN", w.display(), t.ty)));
    }
    let scope = rel.scope.clone();
    let (rowtime, window) = (rel.rowtime, rel.window);
    Ok(Rel {
        plan: Plan::Filter {
            input: Box::new(rel),
            predicate: t.expr,
            text: w.display(),
        },
        scope,
        rowtime,
        window,
    })
}

fn project(rel: Rel, select: &[SelectItem], mut bind_fn: impl FnMut(&ast::Expr, &Scope) -> Result<Typed, SqlError>) -> Result<Rel, SqlError> {
    let mut items = Vec::new();
    for s in select {
        match s {
            SelectItem::Wildcard { qualifier, pos } => {
                let mut any = false;
                for (i, c) in rel.scope.columns.iter().enumerate() {
                    if qualifier
                        .as_ref()
                        .is_none_or(|q| c.qualifier.as_deref().is_some_and(|cq| cq.eq_ignore_ascii_case(q)))
                    {
                        any = true;
                        items.push((Typed { expr: Expr::Col(i), ty: c.ty }, c.name.clone()));
                    }
                }
                if !any {
                    return Err(SqlError::at(*pos, format!("`{}.*` matches no table", qualifier.clone().unwrap_or_default())));
                }
            }
            SelectItem::Expr { expr, alias } => {
                let t = bind_fn(expr, &rel.scope)?;
                if t.ty == SqlType::Interval {
                    return Err(SqlError::at(expr.pos, "selecting an interval is not supported"));
                }
                let name = output_name(expr, alias.as_deref(), items.len());
                items.push((t, name));
            }
        }
    }
    Ok(projection(rel, items))
}

pub(super) fn projection(rel: Rel, items: Vec<(Typed, String)>) -> Rel {
    let mut rowtime = None;
    let (mut start, mut end) = (None, None);
    let mut cols = Vec::new();
    let mut exprs = Vec::new();
    for (k, (t, name)) in items.into_iter().enumerate() {
        if let Expr::Col(i) = t.expr {
            if Some(i) == rel.rowtime && rowtime.is_none() {
                rowtime = Some(k);
            }
            if rel.window.is_some_and(|w| w.0 == i) && start.is_none() {
                start = Some(k);
            }
            if rel.window.is_some_and(|w| w.1 == i) && end.is_none() {
                end = Some(k);
            }
        }
        let ty = if t.ty == SqlType::Null { SqlType::String } else { t.ty };
        cols.push(Column { qualifier: None, name, ty });
        exprs.push(t.expr);
    }
    // Identity projections are dropped.
    let identity = exprs.len() == rel.scope.columns.len() && exprs.iter().enumerate().all(|(k, e)| matches!(e, Expr::Col(i) if *i == k));
    if identity {
        let mut rel = rel;
        for (c, n) in rel.scope.columns.iter_mut().zip(cols) {
            c.name = n.name;
            c.qualifier = None;
        }
        return rel;
    }
    Rel {
        plan: Plan::Project { input: Box::new(rel), exprs },
        scope: Scope { columns: cols },
        rowtime,
        window: start.zip(end),
    }
}

fn contains_aggregate(e: &ast::Expr) -> bool {
    let mut found = false;
    walk(e, &mut |x| {
        if let ExprKind::Function { name, .. } = &x.kind {
            if is_aggregate(name) {
                found = true;
            }
        }
    });
    found
}

fn walk(e: &ast::Expr, f: &mut dyn FnMut(&ast::Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Neg(a) | ExprKind::Not(a) | ExprKind::Cast(a, _) | ExprKind::IsNull(a, _) => walk(a, f),
        ExprKind::Binary(_, a, b) => {
            walk(a, f);
            walk(b, f);
        }
        ExprKind::Function { args, .. } => args.iter().for_each(|a| walk(a, f)),
        ExprKind::Case { operand, whens, else_ } => {
            if let Some(o) = operand {
                walk(o, f);
            }
            for (a, b) in whens {
                walk(a, f);
                walk(b, f);
            }
            if let Some(x) = else_ {
                walk(x, f);
            }
        }
        ExprKind::Between { expr, low, high, .. } => {
            walk(expr, f);
            walk(low, f);
            walk(high, f);
        }
        ExprKind::InList { expr, list, .. } => {
            walk(expr, f);
            list.iter().for_each(|a| walk(a, f));
        }
        ExprKind::Like { expr, pattern, .. } => {
            walk(expr, f);
            walk(pattern, f);
        }
        _ => {}
    }
}

fn split_and<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    if let ExprKind::Binary(BinOp::And, a, b) = &e.kind {
        split_and(a, out);
        split_and(b, out);
    } else {
        out.push(e);
    }
}

/// Visit every column index an expression reads.
fn columns(e: &Expr, f: &mut dyn FnMut(usize)) {
    e.for_each_column(f)
}

fn references_at_least(e: &Expr, n: usize) -> bool {
    let mut any = false;
    columns(e, &mut |i| any |= i >= n);
    any
}

fn column_range(e: &Expr, lo: &mut usize, hi: &mut usize) {
    columns(e, &mut |i| {
        *lo = (*lo).min(i);
        *hi = (*hi).max(i);
    });
}

/// Rewrite column indexes `i` to `i - by` (right-side keys evaluated on right rows).
fn shift_columns(e: Expr, by: usize) -> Expr {
    let b = |x: Box<Expr>| Box::new(shift_columns(*x, by));
    match e {
        Expr::Col(i) => Expr::Col(i - by),
        Expr::Lit(v) => Expr::Lit(v),
        Expr::IntArith(o, w, x, y) => Expr::IntArith(o, w, b(x), b(y)),
        Expr::DoubleArith(o, x, y) => Expr::DoubleArith(o, b(x), b(y)),
        Expr::DecArith(o, s, x, y) => Expr::DecArith(o, s, b(x), b(y)),
        Expr::TsArith(a, x, y) => Expr::TsArith(a, b(x), b(y)),
        Expr::Neg(x) => Expr::Neg(b(x)),
        Expr::Compare(c, x, y) => Expr::Compare(c, b(x), b(y)),
        Expr::And(x, y) => Expr::And(b(x), b(y)),
        Expr::Or(x, y) => Expr::Or(b(x), b(y)),
        Expr::Not(x) => Expr::Not(b(x)),
        Expr::IsNull(x, n) => Expr::IsNull(b(x), n),
        Expr::Case(bs, e) => Expr::Case(bs.into_iter().map(|(x, y)| (shift_columns(x, by), shift_columns(y, by))).collect(), b(e)),
        Expr::Cast(x, t) => Expr::Cast(b(x), t),
        Expr::Coalesce(v) => Expr::Coalesce(v.into_iter().map(|x| shift_columns(x, by)).collect()),
        Expr::InList(x, v, n) => Expr::InList(b(x), v.into_iter().map(|y| shift_columns(y, by)).collect(), n),
        Expr::Like(x, y, n) => Expr::Like(b(x), b(y), n),
        Expr::Call(f, v) => Expr::Call(f, v.into_iter().map(|x| shift_columns(x, by)).collect()),
        Expr::Regex(k, re, v) => Expr::Regex(k, re, v.into_iter().map(|x| shift_columns(x, by)).collect()),
        Expr::DateFormat(p, x) => Expr::DateFormat(p, b(x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateBackendKind;

    #[test]
    fn set_chooses_the_state_backend_by_flink_or_weir_name() {
        let pos = Pos { line: 1, column: 1 };
        let mut c = EngineConfig::default();
        for (name, kind) in [
            ("rocksdb", StateBackendKind::Lsm),
            ("hashmap", StateBackendKind::Memory),
            ("LSM", StateBackendKind::Lsm),
            ("memory", StateBackendKind::Memory),
        ] {
            apply_set(&mut c, "state.backend", name, pos).unwrap();
            assert_eq!(c.state_backend, kind, "{name}");
        }
        apply_set(&mut c, "state.backend.type", "rocksdb", pos).unwrap();
        apply_set(&mut c, "state.backend.rocksdb.localdir", "/var/weir", pos).unwrap();
        assert_eq!((c.state_backend, c.state_dir.clone()), (StateBackendKind::Lsm, Some("/var/weir".into())));
        assert!(apply_set(&mut c, "state.backend", "forst", pos).unwrap_err().to_string().contains("rocksdb"));
    }
}

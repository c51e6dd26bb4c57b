//! From plan to job: each [`Plan`] node becomes DataStream operators over [`Row`]s, the
//! window aggregate uses the engine's window operators with [`RowAggregate`], and the sink
//! writes Flink's CSV/JSON text. Also [`explain`]: the plan, its exchanges and segments.
//!
//! Invariants: every expression was compiled by the planner (no name lookups per row); the
//! timestamp of a row is the value of its relation's time attribute; window results carry
//! `window_end - 1` (their `window_time`), as Flink's do.

use std::fmt::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use smallvec::SmallVec;

use super::expr::{decimal_to_f64, Expr};
use super::join::WindowJoinOp;
use super::plan::{AggCall, AggFunc, Connector, Job, KafkaFormat, KafkaTable, Plan, Rel};
use super::source::{RowFileSource, ScanPost};
use super::types::{format_value, KeyRow, Row, SqlType, Value};
use super::window_agg::{
    keyed_args, row_key_hash, CountStars, FewArgs, GroupKey, IntKey, KeyHash, KeyedArgs, OutputShape, Slicer, SqlAggregates, SqlWindowAggOp, WindowArgs,
};
use super::SqlError;
use crate::api::stream::{connect_all, Tail};
use crate::api::{DataStream, StreamEnv};
use crate::operator::aggregate::AggregateFunction;
use crate::operator::window::session::SessionWindowOp;
use crate::operator::window::{WindowAssigner, WindowDriver, WindowResult, WindowSpec};
use crate::operator::{Output, Push, Push2};
use crate::shard::runtime::JobReport;
use crate::shard::segment::run_two_input;
use crate::sink::blackhole::BlackholeSink;
use crate::sink::file::FileSink;
use crate::sink::format::Format;
use crate::sink::stdout::StdoutSink;
use crate::time::{Timestamp, WatermarkStrategy};

/// Build and run the job.
pub fn execute(job: Job) -> Result<JobReport, SqlError> {
    build_env(&job)?.execute().map_err(|e| SqlError::job(format!("job failed: {e}")))
}

thread_local! {
    /// While one INSERT is built: whether its keyed exchange went through a repartition topic.
    static REPARTITIONED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// While a job is built: repartition topics so far (numbers them, in the same order in
    /// every stage's process).
    static REPARTITIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// While one INSERT is built: its file scans may read files as byte ranges in parallel (its
    /// result does not depend on the order of the rows: see [`order_free`]).
    static SPLIT_FILES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Does the INSERT's result not depend on the order its rows arrive in: only scans, filters and
/// projections (no operator reads event time or arrival order) into a sink that keeps every
/// row as a multiset (files, print, blackhole — not upserting or ordered sinks)?
fn order_free(insert: &super::plan::InsertPlan) -> bool {
    fn rows_only(rel: &Rel) -> bool {
        match &rel.plan {
            Plan::Scan { .. } => true,
            Plan::Filter { input, .. } | Plan::Project { input, .. } => rows_only(input),
            _ => false,
        }
    }
    matches!(
        insert.sink.connector,
        Connector::Filesystem { .. } | Connector::S3(_) | Connector::Print | Connector::Blackhole
    ) && rows_only(&insert.query)
}

/// The internal error that ends an INSERT's build in a scaled-out job's exchange stage.
const STAGE_CUT: &str = "weir: scale-out exchange stage ends at the repartition topic";

/// The keyed exchange in front of a keyed operator of kind `kind`: through a repartition topic
/// when the job is scaled out (see [`crate::scaleout`]), else the in-process exchange.
fn keyed_exchange<K, KF>(env: &StreamEnv, stream: DataStream<Row>, key_fn: KF, kind: &str) -> Result<crate::api::KeyedStream<Row, K, KF>, SqlError>
where
    K: crate::key::StableHash + std::hash::Hash + Eq + Ord + Clone + Send + 'static,
    KF: Fn(&Row) -> K + Clone + Send + Sync + 'static,
{
    let Some((_, _)) = crate::scaleout::role(env.config()) else {
        return Ok(stream.key_by(key_fn));
    };
    if REPARTITIONED.with(|r| r.replace(true)) {
        return Err(SqlError::job(
            "a scaled-out job supports one keyed exchange per INSERT (cascaded windows need two)",
        ));
    }
    let connection = env
        .config()
        .scale_out_group
        .as_ref()
        .map(|g| g.connection.clone())
        .ok_or_else(|| SqlError::job("a scaled-out job needs a Kafka table with properties.group.id"))?;
    let n = REPARTITIONS.with(|c| c.replace(c.get() + 1));
    let operator = format!("{}-{n}", kind.replace(':', "-"));
    let options = || crate::scaleout::repartition::RepartitionOptions::new(connection, env.config(), &operator);
    match crate::scaleout::repartition::through_kafka(env, stream, key_fn, options) {
        Ok(Some(keyed)) => Ok(keyed),
        Ok(None) => Err(SqlError::job(STAGE_CUT)),
        Err(e) => Err(SqlError::job(format!("scale-out: {e}"))),
    }
}

/// Keyed operators other than window aggregations cannot be scaled out yet.
pub(super) fn no_scale_out(env: &StreamEnv, what: &str) -> Result<(), SqlError> {
    match crate::scaleout::role(env.config()) {
        Some(_) => Err(SqlError::job(format!(
            "a scaled-out job (weir.scale-out.slots) supports window aggregations; {what} are not scaled out yet"
        ))),
        None => Ok(()),
    }
}

/// Build the job's operator graph into a fresh environment, ready to execute.
pub fn build_env(job: &Job) -> Result<StreamEnv, SqlError> {
    job.config.validate().map_err(|e| SqlError::job(format!("engine configuration: {e}")))?;
    REPARTITIONS.with(|c| c.set(0));
    let env = StreamEnv::new(job.config.clone());
    for insert in &job.inserts {
        build_insert(&env, insert)?;
    }
    Ok(env)
}

/// The INSERT's query with the sink's conversions composed into it, when they are composed:
/// a query that is a projection gets them in its projection (one fused projection, in the
/// reader when it reads a scan); `None` for others (converted after the query, or no
/// conversions: see [`has_conversions`]).
fn with_conversions(job: &super::plan::InsertPlan) -> Option<Rel> {
    if !has_conversions(job) || !matches!(job.query.plan, Plan::Project { .. }) {
        return None;
    }
    Some(Rel {
        plan: Plan::Project {
            input: Box::new(job.query.clone()),
            exprs: job.sink_exprs.clone(),
        },
        scope: super::expr::Scope {
            columns: job
                .sink
                .columns
                .iter()
                .map(|(name, ty)| super::expr::Column {
                    qualifier: None,
                    name: name.clone(),
                    ty: *ty,
                })
                .collect(),
        },
        rowtime: None,
        window: None,
    })
}

/// Does the sink convert the query's columns (not just take them in order)?
fn has_conversions(job: &super::plan::InsertPlan) -> bool {
    !job.sink_exprs.iter().enumerate().all(|(k, e)| matches!(e, Expr::Col(i) if *i == k))
}

/// The INSERT as a fused CSV copy (see [`super::csv_copy`]), if it is one.
fn csv_copy_plan(config: &crate::config::EngineConfig, job: &super::plan::InsertPlan) -> Option<super::csv_copy::CopyPlan> {
    // Without byte-range splits a lone file is better read by the row path (parsed on every
    // shard, see `with_parallel_parse`).
    if !config.sql_csv_copy || config.file_split_bytes == 0 || crate::scaleout::role(config).is_some() {
        return None;
    }
    let converted = with_conversions(job);
    if converted.is_none() && has_conversions(job) {
        return None;
    }
    super::csv_copy::plan(job, converted.as_ref().unwrap_or(&job.query), order_free(job))
}

/// One INSERT's operators and sink.
fn build_insert(env: &StreamEnv, job: &super::plan::InsertPlan) -> Result<(), SqlError> {
    REPARTITIONED.with(|r| r.set(false));
    SPLIT_FILES.with(|f| f.set(order_free(job)));
    if let Some(copy) = csv_copy_plan(env.config(), job) {
        return super::csv_copy::build(env, copy);
    }
    let conv = Arc::new(job.sink_exprs.clone());
    let identity = !has_conversions(job);
    let converted = with_conversions(job);
    let fuse_conversions = converted.is_some();
    let query = converted.as_ref().unwrap_or(&job.query);
    let all = vec![true; query.scope.columns.len()];
    let stream = match build(env, query, &all) {
        // Exchange stage: the query's input went to its repartition topic; the rest of the
        // INSERT runs in the keyed stage.
        Err(e) if e.message == STAGE_CUT => return Ok(()),
        other => other?,
    };
    if let Some((role, _)) = crate::scaleout::role(env.config()) {
        if role.stage == crate::scaleout::Stage::Keyed && !REPARTITIONED.with(|r| r.get()) {
            // Without a keyed exchange the whole INSERT runs in the exchange stage.
            return Ok(());
        }
    }
    let out = if identity || fuse_conversions {
        stream
    } else {
        stream.map(move |row: Row| conv.iter().map(|e| e.eval(&row)).collect::<Row>())
    };
    match &job.sink.connector {
        Connector::Filesystem { path, format: Format::Csv } => out.sink(CsvFileSink(FileSink::new(path.clone(), Format::Csv))),
        Connector::Filesystem { path, format: Format::Json } => {
            let names: Arc<[String]> = job.sink.columns.iter().map(|(n, _)| n.clone()).collect();
            out.map(move |row| JsonRow { names: names.clone(), row })
                .sink(FileSink::new(path.clone(), Format::Json))
        }
        Connector::S3(t) => {
            let sink = crate::sink::s3::S3Sink::new(&t.path, t.format, &t.options)
                .map_err(|e| SqlError::at(job.sink.pos, format!("sink table `{}`: {e}", job.sink.name)))?
                .rolling(t.rolling)
                .part_size(t.part_size);
            match t.format {
                Format::Csv => out.map(CsvRow).sink(sink),
                Format::Json => {
                    let names: Arc<[String]> = job.sink.columns.iter().map(|(n, _)| n.clone()).collect();
                    out.map(move |row| JsonRow { names: names.clone(), row }).sink(sink)
                }
            }
        }
        Connector::Print => out.map(CsvRow).sink(StdoutSink { format: Format::Csv }),
        Connector::Blackhole => out.sink(BlackholeSink),
        Connector::Jdbc(config) => out.sink(crate::sink::postgres::PostgresSink::<Row>::new((**config).clone())),
        Connector::Elasticsearch(es) => {
            let names: Arc<[String]> = job.sink.columns.iter().map(|(n, _)| n.clone()).collect();
            let (ids, delimiter): (Arc<[usize]>, Arc<str>) = (es.id_columns.clone().into(), es.delimiter.as_str().into());
            out.map(move |row| EsRow {
                json: JsonRow { names: names.clone(), row },
                id_columns: ids.clone(),
                delimiter: delimiter.clone(),
            })
            .sink(crate::sink::elasticsearch::ElasticsearchSink::new(es.config.clone()))
        }
        Connector::Gateway { .. } => return Err(SqlError::at(job.sink.pos, format!("gateway table `{}` cannot be written", job.sink.name))),
        Connector::Nexmark { .. } => return Err(SqlError::at(job.sink.pos, format!("nexmark table `{}` cannot be written", job.sink.name))),
        Connector::Kafka(k) => kafka_sink(job, k, out)?,
        Connector::Kinesis(_) | Connector::Pulsar(_) => {
            return Err(SqlError::at(
                job.sink.pos,
                format!("table `{}` is a source only (weir has no Kinesis or Pulsar sink)", job.sink.name),
            ))
        }
    }
    Ok(())
}

/// Write `out` to a Kafka table.
fn kafka_sink(job: &super::plan::InsertPlan, k: &KafkaTable, out: DataStream<Row>) -> Result<(), SqlError> {
    use crate::sink::kafka::{KafkaSink, KafkaSinkOptions, ValueFormat};
    let table = &job.sink;
    let topic = k
        .topic
        .clone()
        .ok_or_else(|| SqlError::at(table.pos, format!("sink table `{}` needs one 'topic' (not a pattern)", table.name)))?;
    if table.layout.iter().any(|c| matches!(c, super::plan::ColumnSource::Metadata(_))) {
        return Err(SqlError::at(
            table.pos,
            format!("sink table `{}`: writing METADATA columns is not supported", table.name),
        ));
    }
    let mut options = KafkaSinkOptions::new(k.source.connection.bootstrap_servers.clone(), topic)
        .delivery(k.sink_delivery)
        .partitioner(k.sink_partitioner);
    options.connection = k.source.connection.clone();
    options.transactional_id_prefix = k.sink_transactional_id_prefix.clone();
    if let Some(d) = &k.sink_transaction_log_dir {
        options.transaction_log_dir = d.clone();
    }
    let key_columns: Arc<[usize]> = k
        .key_fields
        .iter()
        .filter_map(|f| table.columns.iter().position(|(n, _)| n.eq_ignore_ascii_case(f)))
        .collect();
    let key_of = move |row: &Row| -> Option<Vec<u8>> {
        if key_columns.is_empty() {
            return None;
        }
        let mut s = String::new();
        for (i, c) in key_columns.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            format_value(&row[*c], &mut s);
        }
        Some(s.into_bytes())
    };
    let err = |e: crate::error::WeirError| SqlError::at(table.pos, format!("sink table `{}`: {e}", table.name));
    match k.format {
        KafkaFormat::Csv => {
            let sink = KafkaSink::<CsvRow>::new(options, ValueFormat::Csv)
                .map_err(err)?
                .key(move |r: &CsvRow| key_of(&r.0));
            out.map(CsvRow).sink(sink);
        }
        KafkaFormat::Json => {
            let names: Arc<[String]> = table.columns.iter().map(|(n, _)| n.clone()).collect();
            let sink = KafkaSink::<JsonRow>::new(options, ValueFormat::Json)
                .map_err(err)?
                .key(move |r: &JsonRow| key_of(&r.row));
            out.map(move |row| JsonRow { names: names.clone(), row }).sink(sink);
        }
        KafkaFormat::Raw => {
            let sink = KafkaSink::<String>::new(options, ValueFormat::Raw).map_err(err)?;
            out.map(|row: Row| {
                let mut s = String::new();
                format_value(&row[0], &mut s);
                s
            })
            .sink(sink);
        }
    }
    Ok(())
}

impl crate::sink::postgres::SqlValues for Row {
    fn write_sql(&self, out: &mut String) -> Result<(), String> {
        out.push('(');
        let mut text = String::new();
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match v {
                Value::Null => out.push_str("NULL"),
                Value::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
                Value::Int(n) => out.push_str(&n.to_string()),
                Value::Double(d) if d.is_nan() => out.push_str("'NaN'"),
                Value::Double(d) if d.is_infinite() => out.push_str(if *d > 0.0 { "'Infinity'" } else { "'-Infinity'" }),
                Value::Double(d) => out.push_str(&format!("{d:?}")),
                Value::Decimal(..) => {
                    text.clear();
                    format_value(v, &mut text);
                    out.push_str(&text);
                }
                Value::Str(s) => crate::sink::postgres::quote_literal(s, out)?,
                Value::Timestamp(_) | Value::TimestampLtz(_) => {
                    text.clear();
                    format_value(v, &mut text);
                    crate::sink::postgres::quote_literal(&text, out)?;
                }
            }
        }
        out.push(')');
        Ok(())
    }
}

/// A row as an Elasticsearch document: its JSON object and an id from its key columns (values in
/// Flink's text forms joined by the delimiter, as Flink's connector builds them).
pub struct EsRow {
    pub json: JsonRow,
    pub id_columns: Arc<[usize]>,
    pub delimiter: Arc<str>,
}

impl crate::sink::elasticsearch::EsDocument for EsRow {
    fn doc_id(&self) -> Option<String> {
        if self.id_columns.is_empty() {
            return None;
        }
        let mut id = String::new();
        for (k, &i) in self.id_columns.iter().enumerate() {
            if k > 0 {
                id.push_str(&self.delimiter);
            }
            match &self.json.row[i] {
                Value::Null => id.push_str("null"),
                v => format_value(v, &mut id),
            }
        }
        Some(id)
    }
    fn write_source(&self, out: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(out, &self.json).map_err(|e| e.to_string())
    }
}

/// A row written as CSV fields in Flink's text forms.
pub struct CsvRow(pub Row);

impl Serialize for CsvRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut buf = String::new();
        for v in &self.0 {
            buf.clear();
            format_value(v, &mut buf);
            seq.serialize_element(buf.as_str())?;
        }
        seq.end()
    }
}

/// Writes SQL rows as CSV lines exactly as the `csv` crate writes [`CsvRow`]s — fields quoted
/// only when they hold `,`, `"`, `\r` or `\n`, quotes doubled, a record of one empty field
/// written `""` — without serde or a text buffer per row, and reusing the text of a timestamp
/// column that repeats from row to row (window bounds). Integers and separators are formatted
/// into a line buffer owned by the encoder and copied to the output once per line (other
/// values flush it and are written to the output directly).
pub(crate) struct CsvRowEncoder {
    /// Per column: the last timestamp written there (value, LTZ or not) and its text.
    stamps: Vec<Option<StampText>>,
    scratch: String,
    /// The line being formatted: `line[..filled]` (a fixed size; flushed when full).
    line: Box<[u8]>,
}

impl Default for CsvRowEncoder {
    fn default() -> Self {
        Self {
            stamps: Vec::new(),
            scratch: String::new(),
            line: vec![0; LINE_BUFFER_BYTES].into_boxed_slice(),
        }
    }
}

/// One field of a line for [`CsvRowEncoder::write_fields`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum CsvField<'v> {
    /// A value, formatted and quoted as needed.
    Value(&'v Value),
    /// A value's text as it is written (a canonical integer copied from the input: non-empty,
    /// nothing to quote).
    Text(&'v [u8]),
}

/// Bytes of [`CsvRowEncoder`]'s line buffer (at least one integer and a separator).
const LINE_BUFFER_BYTES: usize = 512;

/// A timestamp value (milliseconds, LTZ or not) and its CSV text.
type StampText = (i64, bool, Box<[u8]>);

/// Eight ASCII zeros.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// `v` (< 10^8) as eight ASCII digits with leading zeros, the first digit in the low byte:
/// the digits of both halves of four are split out in parallel lanes of one word.
#[inline]
fn eight_digit_text(v: u32) -> u64 {
    debug_assert!(v < 100_000_000);
    // Lanes of 32 bits: [v / 10^4, v % 10^4].
    let x = (v / 10_000) as u64 | ((v % 10_000) as u64) << 32;
    // Lanes of 16 bits: [x / 100, x % 100] per 32-bit lane (x * 10486 >> 20 is x / 100 for x < 10^4).
    let hundreds = ((x * 10486) >> 20) & 0x0000_007f_0000_007f;
    let x = hundreds | (x - hundreds * 100) << 16;
    // Lanes of 8 bits: [y / 10, y % 10] per 16-bit lane (y * 103 >> 10 is y / 10 for y < 100).
    let tens = ((x * 103) >> 10) & 0x000f_000f_000f_000f;
    let x = tens | (x - tens * 10) << 8;
    x + ASCII_ZEROS
}

/// Write the digits of `v` (< 10^8, without leading zeros) at `buf[at..]`, which has room for
/// eight bytes (bytes after the digits are clobbered); returns the end.
#[inline]
fn write_short(buf: &mut [u8], at: usize, v: u32) -> usize {
    let text = eight_digit_text(v);
    // Leading zeros (at most seven: zero is written "0").
    let zeros = ((text - ASCII_ZEROS).trailing_zeros() / 8).min(7) as usize;
    buf[at..at + 8].copy_from_slice(&(text >> (8 * zeros)).to_le_bytes());
    at + 8 - zeros
}

/// Write `v` in decimal at `buf[at..]`, which has room for 22 bytes (bytes after the number
/// are clobbered); returns the end.
#[inline]
fn write_int(buf: &mut [u8], mut at: usize, v: i64) -> usize {
    if v < 0 {
        buf[at] = b'-';
        at += 1;
    }
    let u = v.unsigned_abs();
    const E8: u64 = 100_000_000;
    if u < E8 {
        return write_short(buf, at, u as u32);
    }
    let low = (u % E8) as u32;
    let high = u / E8;
    if high < E8 {
        at = write_short(buf, at, high as u32);
    } else {
        at = write_short(buf, at, (high / E8) as u32);
        buf[at..at + 8].copy_from_slice(&eight_digit_text((high % E8) as u32).to_le_bytes());
        at += 8;
    }
    buf[at..at + 8].copy_from_slice(&eight_digit_text(low).to_le_bytes());
    at + 8
}

impl CsvRowEncoder {
    /// Append `row` as one CSV line to `out`.
    #[inline]
    pub(crate) fn write(&mut self, row: &Row, out: &mut Vec<u8>) {
        self.write_fields(row.iter().map(CsvField::Value), out)
    }

    /// Append the record of `fields` (in order) as one CSV line to `out`.
    pub(crate) fn write_fields<'v>(&mut self, fields: impl ExactSizeIterator<Item = CsvField<'v>>, out: &mut Vec<u8>) {
        let start = out.len();
        let count = fields.len();
        // Bytes of the line formatted in `self.line` and not yet copied to `out`.
        let mut filled = 0;
        let room = self.line.len() - 22;
        for (k, field) in fields.enumerate() {
            if filled > room {
                out.extend_from_slice(&self.line[..filled]);
                filled = 0;
            }
            if k > 0 {
                self.line[filled] = b',';
                filled += 1;
            }
            let v = match field {
                CsvField::Value(v) => v,
                CsvField::Text(t) if filled + t.len() < self.line.len() => {
                    copy_field(&mut self.line, filled, t);
                    filled += t.len();
                    continue;
                }
                CsvField::Text(t) => {
                    out.extend_from_slice(&self.line[..filled]);
                    filled = 0;
                    out.extend_from_slice(t);
                    continue;
                }
            };
            if let Value::Int(i) = v {
                filled = write_int(&mut self.line, filled, *i);
                continue;
            }
            if v.is_null() {
                continue;
            }
            out.extend_from_slice(&self.line[..filled]);
            filled = 0;
            match v {
                Value::Str(s) => write_csv_field(s.as_bytes(), out),
                Value::Timestamp(ms) | Value::TimestampLtz(ms) => {
                    let ltz = matches!(v, Value::TimestampLtz(_));
                    if self.stamps.len() <= k {
                        self.stamps.resize(k + 1, None);
                    }
                    let slot = &mut self.stamps[k];
                    match slot {
                        Some((last, was_ltz, text)) if *last == *ms && *was_ltz == ltz => out.extend_from_slice(text),
                        _ => {
                            self.scratch.clear();
                            format_value(v, &mut self.scratch);
                            write_csv_field(self.scratch.as_bytes(), out);
                            *slot = Some((*ms, ltz, self.scratch.as_bytes().into()));
                        }
                    }
                }
                other => {
                    self.scratch.clear();
                    format_value(other, &mut self.scratch);
                    write_csv_field(self.scratch.as_bytes(), out);
                }
            }
        }
        if count <= 1 && filled == 0 && out.len() == start {
            out.extend_from_slice(b"\"\"");
        }
        self.line[filled] = b'\n';
        let len = filled + 1;
        if len <= SHORT_LINE {
            // A fixed-size copy (inlined moves, no call to memcpy) and the tail cut off.
            let end = out.len() + len;
            out.extend_from_slice(&self.line[..SHORT_LINE]);
            out.truncate(end);
        } else {
            out.extend_from_slice(&self.line[..len]);
        }
    }
}

/// Lines up to this long are copied out of the line buffer as a fixed-size block.
const SHORT_LINE: usize = 64;

/// Copy `src` into `dst[at..]` with a few overlapping fixed-size moves when it is short (a
/// call to memcpy per field costs more than the copy).
#[inline]
fn copy_field(dst: &mut [u8], at: usize, src: &[u8]) {
    let n = src.len();
    let dst = &mut dst[at..at + n];
    match n {
        0..=3 => dst.copy_from_slice(src),
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// One CSV field, quoted if it holds a delimiter, quote or line break (the `csv` crate's
/// `QuoteStyle::Necessary`).
#[inline]
fn write_csv_field(text: &[u8], out: &mut Vec<u8>) {
    if !text.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.extend_from_slice(text);
        return;
    }
    out.push(b'"');
    for &b in text {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A `filesystem` CSV sink table: rows written by [`CsvRowEncoder`] (the same bytes as
/// [`CsvRow`] through the `csv` crate).
pub(crate) struct CsvFileSink(pub FileSink);

impl crate::sink::Sink<Row> for CsvFileSink {
    fn name(&self) -> String {
        format!("filesystem:{}", self.0.dir.display())
    }
    fn build(&self, ctx: &mut crate::shard::BuildCtx<'_>, operator_name: &str) -> crate::error::Result<Box<dyn Push<Row>>> {
        let mut encoder = CsvRowEncoder::default();
        self.0.build_encoding(ctx, operator_name, move |rows: &[Row], out: &mut Vec<u8>| {
            for row in rows {
                encoder.write(row, out);
            }
            Ok(())
        })
    }
}

/// A row written as a JSON object keyed by the sink's column names.
pub struct JsonRow {
    pub names: Arc<[String]>,
    pub row: Row,
}

impl Serialize for JsonRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.row.len()))?;
        let mut buf = String::new();
        for (n, v) in self.names.iter().zip(self.row.iter()) {
            match v {
                Value::Null => map.serialize_entry(n, &())?,
                Value::Bool(b) => map.serialize_entry(n, b)?,
                Value::Int(i) => map.serialize_entry(n, i)?,
                Value::Double(d) => map.serialize_entry(n, d)?,
                Value::Decimal(x, sc) => map.serialize_entry(n, &decimal_to_f64(*x, *sc))?,
                other => {
                    buf.clear();
                    format_value(other, &mut buf);
                    map.serialize_entry(n, buf.as_str())?
                }
            }
        }
        map.end()
    }
}

fn ts_of(v: &Value) -> Timestamp {
    match v {
        Value::Timestamp(t) | Value::TimestampLtz(t) => *t,
        _ => crate::time::WATERMARK_MIN,
    }
}

/// Mark the columns `e` reads.
pub(super) fn mark(e: &Expr, needed: &mut [bool]) {
    e.for_each_column(&mut |i| {
        if let Some(x) = needed.get_mut(i) {
            *x = true;
        }
    });
}

/// The kind `event_type = k` (or `k = event_type`) in a conjunct of `predicate` keeps, if the
/// predicate is over a nexmark `datagen` scan.
fn event_type_filter(table: &super::plan::TableDef, predicate: &Expr) -> Option<i64> {
    let Connector::Nexmark { fields, .. } = &table.connector else { return None };
    let is_event_type = |i: usize| matches!(table.layout.get(i), Some(super::plan::ColumnSource::Physical(p)) if matches!(fields.get(*p), Some((super::nexmark::Field::EventType, _))));
    let mut conjuncts = vec![predicate];
    while let Some(e) = conjuncts.pop() {
        match e {
            Expr::And(a, b) => {
                conjuncts.push(a);
                conjuncts.push(b);
            }
            Expr::Compare(super::expr::Cmp::Eq, a, b) => match (&**a, &**b) {
                (Expr::Col(i), Expr::Lit(Value::Int(k))) | (Expr::Lit(Value::Int(k)), Expr::Col(i)) if is_event_type(*i) => return Some(*k),
                _ => {}
            },
            _ => {}
        }
    }
    None
}

/// The stream of a scan of `table` producing the columns `needed` of its output (others may
/// be NULL), with `post` (a filter and projection) fused into the reader; `rowtime` is the time
/// attribute's index in the output rows.
fn scan(env: &StreamEnv, table: &Arc<super::plan::TableDef>, needed: &[bool], post: ScanPost, rowtime: Option<usize>) -> Result<DataStream<Row>, SqlError> {
    let physical = super::source::physical_needed(table, needed);
    let mut post = post.reading(table, needed);
    // Flink generates the watermark before a WHERE over the table: rows the fused predicate
    // drops leave placeholders that advance the watermark (below), except on the generator,
    // whose splits' event times never decrease (no row can become late by a dropped one).
    let dropped_rows = match (&post.predicate, rowtime, &table.connector) {
        (Some(_), Some(rt), c) if !matches!(c, Connector::Nexmark { .. }) => {
            let width = post.project.as_ref().map_or(table.columns.len(), |p| p.len());
            Some(super::source::DroppedRow::new(rt, width))
        }
        _ => None,
    };
    post.dropped_rows = dropped_rows;
    let event_type = post.predicate.as_ref().and_then(|p| event_type_filter(table, p));
    let mut idle = None;
    if crate::scaleout::role(env.config()).is_some() && !matches!(table.connector, Connector::Kafka(_)) {
        return Err(SqlError::at(
            table.pos,
            format!("table `{}`: a scaled-out job (weir.scale-out.slots) reads Kafka tables only", table.name),
        ));
    }
    let source = match &table.connector {
        Connector::Nexmark { .. } => env.source(super::nexmark::NexmarkRowSource::new(table.clone(), physical, event_type, post)?),
        Connector::Kafka(k) => {
            idle = k.idle_timeout_ms;
            let slot = crate::scaleout::role(env.config()).map(|(r, n)| (r.slot, n));
            env.source(super::source::kafka_row_source(table.clone(), physical, post, slot)?)
        }
        Connector::Kinesis(k) => {
            idle = k.idle_timeout_ms;
            env.source(super::source::kinesis_row_source(table.clone(), physical, post)?)
        }
        Connector::Pulsar(p) => {
            idle = p.idle_timeout_ms;
            env.source(super::source::pulsar_row_source(table.clone(), physical, post)?)
        }
        Connector::Gateway { .. } => {
            let gateway = super::source::gateway_source(table.clone(), env.config().shard_count(), physical, post)?;
            eprintln!("{}", gateway.gateway().describe());
            env.source(gateway)
        }
        Connector::S3(_) => env.source(super::source::s3_row_source(table.clone(), physical, post)?),
        _ => {
            let split_bytes = if SPLIT_FILES.with(|f| f.get()) { env.config().file_split_bytes } else { 0 };
            let source = RowFileSource::new(table.clone(), physical, post, split_bytes)?;
            let config = env.config();
            env.source(source.with_parallel_parse(config.file_parse_chunk_bytes, config.file_parse_ahead_chunks))
        }
    };
    Ok(match (table.rowtime, rowtime) {
        (Some((_, delay)), Some(idx)) => {
            let mut strategy = WatermarkStrategy::bounded_out_of_orderness(delay);
            if let Some(ms) = idle {
                strategy = strategy.with_idleness(ms);
            }
            let timestamp = move |r: &Row| ts_of(&r[idx]);
            match dropped_rows {
                Some(d) => source.assign_timestamps_and_watermarks_then_filter(strategy, timestamp, move |r: &Row| d.is_real(r)),
                None => source.assign_timestamps_and_watermarks(strategy, timestamp),
            }
        }
        _ => source.without_event_time(),
    })
}

/// `exprs` with the outputs nobody reads replaced by NULL.
fn pruned(exprs: &[Expr], needed: &[bool]) -> Vec<Expr> {
    exprs
        .iter()
        .enumerate()
        .map(|(k, e)| {
            if needed.get(k).copied().unwrap_or(true) {
                e.clone()
            } else {
                Expr::Lit(Value::Null)
            }
        })
        .collect()
}

/// The stream of a relation; only the columns `needed` must be right (projection pushdown:
/// the others may be NULL).
pub(super) fn build(env: &StreamEnv, rel: &Rel, needed: &[bool]) -> Result<DataStream<Row>, SqlError> {
    if let Some(simpler) = merged(rel) {
        return build(env, &simpler, needed);
    }
    let width_of = |r: &Rel| r.scope.columns.len();
    Ok(match &rel.plan {
        Plan::Scan { table } => scan(env, table, needed, ScanPost::default(), table.rowtime.map(|(i, _)| i))?,
        Plan::Filter { input, predicate, .. } if matches!(&input.plan, Plan::Scan { .. }) => {
            let Plan::Scan { table } = &input.plan else { unreachable!("matched above") };
            let mut need = needed.to_vec();
            mark(predicate, &mut need);
            let post = ScanPost {
                predicate: Some(predicate.clone()),
                ..Default::default()
            };
            scan(env, table, &need, post, table.rowtime.map(|(i, _)| i))?
        }
        // A projection (over a filter) over a scan runs inside the reader. (A projection that
        // drops the time attribute makes a relation without one: no operator after it reads
        // event time, so its scan runs without watermarks.)
        Plan::Project { input, exprs } if scan_of(input).is_some() => {
            let (table, predicate) = match &input.plan {
                Plan::Scan { table } => (table, None),
                Plan::Filter {
                    input: scan_rel, predicate, ..
                } => match &scan_rel.plan {
                    Plan::Scan { table } => (table, Some(predicate.clone())),
                    _ => unreachable!("scan_of checked the shape"),
                },
                _ => unreachable!("fusable checked the shape"),
            };
            let exprs = pruned(exprs, needed);
            let mut need = vec![false; width_of(input)];
            exprs.iter().chain(predicate.iter()).for_each(|e| mark(e, &mut need));
            let post = ScanPost {
                predicate,
                project: Some(exprs.into()),
                columns: None,
                dropped_rows: None,
            };
            scan(env, table, &need, post, rel.rowtime)?
        }
        Plan::Filter { input, predicate, .. } => {
            let mut need = needed.to_vec();
            mark(predicate, &mut need);
            let p = Arc::new(predicate.clone());
            build(env, input, &need)?.filter(move |r: &Row| p.test(r))
        }
        Plan::Project { input: tvf, exprs } if TvfProjectOp::fuses(tvf, exprs) => {
            let Plan::WindowTvf { input, assigner, proctime } = &tvf.plan else {
                unreachable!("checked by fuses")
            };
            let exprs = pruned(exprs, needed);
            let width = width_of(input);
            let rt = input.rowtime.unwrap_or(0);
            let mut need = vec![false; width];
            for e in &exprs {
                mark(e, &mut need);
            }
            if let Some(x) = need.get_mut(rt) {
                *x = true;
            }
            // PROCTIME() is a TIMESTAMP_LTZ(3).
            let ltz = *proctime || matches!(input.scope.columns.get(rt).map(|c| c.ty), Some(SqlType::TimestampLtz(_)));
            let slots: Arc<[TvfSlot]> = TvfProjectOp::slots(&exprs, width).into();
            let (a, proctime) = (*assigner, *proctime);
            build(env, input, &need)?.then("window_tvf", move |ctx, _, down| {
                Ok(Box::new(TvfProjectOp {
                    assigner: a,
                    proctime,
                    ltz,
                    rowtime: rt,
                    slots: slots.clone(),
                    batch_size: ctx.config.batch_size,
                    buf: crate::batch::Batch::with_capacity(ctx.config.batch_size),
                    down,
                }))
            })
        }
        Plan::Project { input, exprs } => {
            let exprs = pruned(exprs, needed);
            // Plain columns, each once, over a window aggregate: its output rows are built projected.
            let cols: Option<Vec<usize>> = exprs.iter().map(|e| if let Expr::Col(i) = e { Some(*i) } else { None }).collect();
            if let (Plan::WindowAgg { .. }, Some(cols)) = (&input.plan, cols) {
                let mut seen = vec![false; width_of(input)];
                if cols.iter().all(|&c| c < seen.len() && !std::mem::replace(&mut seen[c], true)) {
                    return window_agg(env, input, Some(cols.into()));
                }
            }
            let mut need = vec![false; width_of(input)];
            for e in &exprs {
                mark(e, &mut need);
            }
            // Columns read once are moved out of the input row, not cloned.
            let projection = super::source::Projection::new(&exprs, width_of(input));
            build(env, input, &need)?.map(move |mut r: Row| projection.project(&mut r))
        }
        Plan::WindowTvf { input, assigner, proctime } => {
            if matches!(assigner, WindowAssigner::Session { .. }) {
                return Err(SqlError::job(
                    "a SESSION window TVF must be aggregated (GROUP BY window_start, window_end, ...)",
                ));
            }
            let rt = input.rowtime.unwrap_or(0);
            let a = *assigner;
            let proctime = *proctime;
            // PROCTIME() is a TIMESTAMP_LTZ(3).
            let ltz = proctime || matches!(input.scope.columns.get(rt).map(|c| c.ty), Some(SqlType::TimestampLtz(_)));
            let mut need: Vec<bool> = needed.iter().copied().take(width_of(input)).collect();
            need.resize(width_of(input), false);
            if let Some(x) = need.get_mut(rt) {
                *x = true;
            }
            build(env, input, &need)?.flat_map(move |r: Row| {
                // Processing-time windows: the row's window is where the clock stands now.
                let ts = if proctime { crate::time::processing_now_ms() } else { ts_of(&r[rt]) };
                let mut windows: SmallVec<[(i64, i64); 2]> = SmallVec::new();
                a.for_each_window(ts, |s, e| windows.push((s, e)));
                let mut out: SmallVec<[Row; 2]> = SmallVec::new();
                let mut r = Some(r);
                let last = windows.len().saturating_sub(1);
                for (k, (s, e)) in windows.into_iter().enumerate() {
                    // The input row itself for the last window, copies for the others.
                    let mut row = if k == last {
                        r.take().unwrap_or_default()
                    } else {
                        r.clone().unwrap_or_default()
                    };
                    row.push(Value::Timestamp(s));
                    row.push(Value::Timestamp(e));
                    row.push(if ltz { Value::TimestampLtz(e - 1) } else { Value::Timestamp(e - 1) });
                    out.push(row);
                }
                out
            })
        }
        Plan::WindowAgg { .. } => window_agg(env, rel, None)?,
        Plan::Over(node) => super::over::build(env, node, needed)?,
        Plan::IntervalJoin {
            left,
            right,
            left_keys,
            right_keys,
            lower,
            upper,
            residual,
            ..
        } => {
            let (nl, nr) = (width_of(left), width_of(right));
            let mut joined = needed.to_vec();
            joined.resize(nl + nr, true);
            if let Some(p) = residual {
                mark(p, &mut joined);
            }
            let mut need_l = joined[..nl].to_vec();
            let mut need_r = joined[nl..].to_vec();
            left_keys.iter().for_each(|e| mark(e, &mut need_l));
            right_keys.iter().for_each(|e| mark(e, &mut need_r));
            for (rel, need) in [(&**left, &mut need_l), (&**right, &mut need_r)] {
                if let Some(rt) = rel.rowtime {
                    need[rt] = true;
                }
            }
            no_scale_out(env, "interval joins")?;
            let l = build(env, left, &need_l)?;
            let r = build(env, right, &need_r)?;
            let lk: Arc<[Expr]> = left_keys.clone().into();
            let rk: Arc<[Expr]> = right_keys.clone().into();
            let lkf = move |row: &Row| KeyRow(lk.iter().map(|e| e.eval(row)).collect());
            let rkf = move |row: &Row| KeyRow(rk.iter().map(|e| e.eval(row)).collect());
            let residual = residual.clone().map(Arc::new);
            l.key_by(lkf).interval_join(r.key_by(rkf), *lower, *upper, move |a: &Row, b: &Row| {
                let mut row = a.clone();
                row.extend(b.iter().cloned());
                residual.as_ref().is_none_or(|p| p.test(&row)).then_some(row)
            })
        }
        Plan::WindowRank {
            input,
            window_end,
            keys,
            order,
            limit,
            ..
        } => {
            let Some(limit) = *limit else {
                return Err(SqlError::job("a window Top-N needs a filter on its row number: WHERE rownum <= N"));
            };
            let n = width_of(input);
            let mut need: Vec<bool> = (0..n).map(|k| needed.get(k).copied().unwrap_or(true)).collect();
            need[*window_end] = true;
            keys.iter().chain(order.iter().map(|(e, _)| e)).for_each(|e| mark(e, &mut need));
            if let Some(rt) = input.rowtime {
                need[rt] = true;
            }
            let spec = Arc::new(super::rank::RankSpec {
                window_end: *window_end,
                keys: keys.clone(),
                order: order.clone(),
                limit,
                // Flink's keep-last-row deduplication: Top-1 by a time attribute, descending.
                later_wins_ties: limit == 1
                    && matches!(order.as_slice(), [(Expr::Col(c), true)]
                        if Some(*c) == input.rowtime || matches!(&input.plan, Plan::WindowTvf { input: tvf_in, .. } if tvf_in.rowtime == Some(*c))),
            });
            let key_spec = spec.clone();
            no_scale_out(env, "window Top-N and deduplication")?;
            let (stream, _) = build(env, input, &need)?.key_by(move |r: &Row| key_spec.partition(r)).exchanged();
            stream.then("window:rank", move |ctx, name, down| {
                let out = Output::new(down, ctx.config.batch_size);
                Ok(Box::new(super::rank::WindowRankOp::build(spec.clone(), ctx, name, out)?) as Box<dyn Push<Row>>)
            })
        }
        Plan::WindowJoin {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            left_end,
            right_end,
            residual,
            ..
        } => {
            let (nl, nr) = (width_of(left), width_of(right));
            let mut joined = needed.to_vec();
            joined.resize(nl + nr, true);
            if let Some(p) = residual {
                mark(p, &mut joined);
            }
            let mut need_l = joined[..nl].to_vec();
            let mut need_r = joined[nl..].to_vec();
            left_keys.iter().for_each(|e| mark(e, &mut need_l));
            right_keys.iter().for_each(|e| mark(e, &mut need_r));
            need_l[*left_end] = true;
            need_r[*right_end] = true;
            for (rel, need) in [(&**left, &mut need_l), (&**right, &mut need_r)] {
                if let Some(rt) = rel.rowtime {
                    need[rt] = true;
                }
            }
            no_scale_out(env, "interval joins")?;
            let mut l = build(env, left, &need_l)?;
            let mut r = build(env, right, &need_r)?;
            // A side joined on its value = a window MAX over its own rows: rows below a maximum
            // already seen cannot match (see `super::prune`). Never on a preserved side.
            use super::ast::JoinKind;
            if matches!(kind, JoinKind::Inner | JoinKind::Right) {
                if let Some(value) = super::prune::prunable(left, left_keys, right, right_keys) {
                    let end = *left_end;
                    l = l.then("window_join:max_prune", move |ctx, name, down| {
                        Ok(Box::new(super::prune::MaxPruneOp::new(value, end, ctx.operator_metrics(name), down)))
                    });
                }
            }
            if matches!(kind, JoinKind::Inner | JoinKind::Left) {
                if let Some(value) = super::prune::prunable(right, right_keys, left, left_keys) {
                    let end = *right_end;
                    r = r.then("window_join:max_prune", move |ctx, name, down| {
                        Ok(Box::new(super::prune::MaxPruneOp::new(value, end, ctx.operator_metrics(name), down)))
                    });
                }
            }
            let lk: Arc<[Expr]> = left_keys.clone().into();
            let rk: Arc<[Expr]> = right_keys.clone().into();
            let (le, re) = (*left_end, *right_end);
            let lkf = move |row: &Row| join_key(&lk, row, le);
            let rkf = move |row: &Row| join_key(&rk, row, re);
            let left_edge = env.keyed_edge(l, lkf.clone());
            let right_edge = env.keyed_edge(r, rkf.clone());
            let name = env.name("window_join");
            let seg_name = name.clone();
            let spec = Arc::new(super::join::JoinSpec {
                kind: *kind,
                left_width: left.scope.columns.len(),
                right_width: right.scope.columns.len(),
                left_end: le,
                right_end: re,
                residual: residual.clone(),
            });
            let tail: Tail<Row> = Arc::new(move |ctx, down| {
                let mut l_ends = vec![ctx.take_receiver_ends(left_edge)];
                let mut r_ends = vec![ctx.take_receiver_ends(right_edge)];
                let out = Output::new(down, ctx.config.batch_size);
                let op: Box<dyn Push2<Row, Row>> = Box::new(WindowJoinOp::build(spec.clone(), lkf.clone(), rkf.clone(), ctx, &seg_name, out)?);
                let op = crate::control::latency::LatencyProbe2::wrap_operator(op, ctx, &seg_name);
                let mut senv = StreamEnv::segment_env(ctx, &seg_name);
                Ok(Box::pin(async move {
                    let (li, ri, connected) = futures::join!(connect_all::<Row>(&mut l_ends), connect_all::<Row>(&mut r_ends), senv.connect());
                    connected?;
                    run_two_input(li, ri, op, senv).await
                }))
            });
            DataStream { env: env.clone(), tail, name }
        }
    })
}

/// One output column of a window TVF fused with the projection over it.
#[derive(Clone, Debug)]
enum TvfSlot {
    /// An input column read by this slot only (moved out for the row's last window).
    Move(usize),
    /// An input column read by several slots (cloned).
    Copy(usize),
    Start,
    End,
    Time,
    Const(Value),
}

/// A window TVF (TUMBLE, HOP, CUMULATE) and the column projection over its result as one
/// operator: each input row becomes one output row per window, built straight from the input
/// row and the window bounds (no wide intermediate row, no per-row list of rows), in the
/// order and with the timestamps of the unfused pair.
struct TvfProjectOp {
    assigner: WindowAssigner,
    proctime: bool,
    ltz: bool,
    rowtime: usize,
    slots: Arc<[TvfSlot]>,
    batch_size: usize,
    buf: crate::batch::Batch<Row>,
    down: Box<dyn Push<Row>>,
}

impl TvfProjectOp {
    /// Whether `Project { exprs }` over `tvf` can be fused: a non-SESSION window TVF and a
    /// projection that only picks columns (or constants).
    fn fuses(tvf: &Rel, exprs: &[Expr]) -> bool {
        matches!(&tvf.plan, Plan::WindowTvf { assigner, .. } if !matches!(assigner, WindowAssigner::Session { .. }))
            && exprs.iter().all(|e| matches!(e, Expr::Col(_) | Expr::Lit(_)))
    }

    fn slots(exprs: &[Expr], width: usize) -> Vec<TvfSlot> {
        let uses = |c: usize| exprs.iter().filter(|e| matches!(e, Expr::Col(k) if *k == c)).count();
        exprs
            .iter()
            .map(|e| match e {
                Expr::Col(c) if *c < width && uses(*c) == 1 => TvfSlot::Move(*c),
                Expr::Col(c) if *c < width => TvfSlot::Copy(*c),
                Expr::Col(c) if *c == width => TvfSlot::Start,
                Expr::Col(c) if *c == width + 1 => TvfSlot::End,
                Expr::Col(_) => TvfSlot::Time,
                Expr::Lit(v) => TvfSlot::Const(v.clone()),
                _ => TvfSlot::Const(Value::Null),
            })
            .collect()
    }
}

impl crate::batch::InOrder<Row> for TvfProjectOp {
    fn on_watermark(&mut self, wm: Timestamp) {
        self.buf.mark(wm);
    }

    fn on_record(&mut self, mut record: Row, ts: Timestamp) {
        // Processing-time windows: the row's window is where the clock stands now.
        let at = if self.proctime {
            crate::time::processing_now_ms()
        } else {
            ts_of(&record[self.rowtime])
        };
        let mut windows: SmallVec<[(i64, i64); 4]> = SmallVec::new();
        self.assigner.for_each_window(at, |s, e| windows.push((s, e)));
        let last = windows.len().saturating_sub(1);
        for (k, (s, e)) in windows.into_iter().enumerate() {
            let wt = if self.ltz { Value::TimestampLtz(e - 1) } else { Value::Timestamp(e - 1) };
            let row: Row = self
                .slots
                .iter()
                .map(|slot| match slot {
                    TvfSlot::Move(c) if k == last => std::mem::take(&mut record[*c]),
                    TvfSlot::Move(c) | TvfSlot::Copy(c) => record[*c].clone(),
                    TvfSlot::Start => Value::Timestamp(s),
                    TvfSlot::End => Value::Timestamp(e),
                    TvfSlot::Time => wt.clone(),
                    TvfSlot::Const(v) => v.clone(),
                })
                .collect();
            self.buf.push(row, ts);
        }
        if self.buf.len() >= self.batch_size {
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }
}

impl Push<Row> for TvfProjectOp {
    fn push(&mut self, batch: &mut crate::batch::Batch<Row>) {
        batch.drain_in_order(self);
        if !self.buf.is_void() {
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.down.watermark(wm)
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
    fn idle(&mut self) {
        self.down.idle()
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {
        self.down.barrier(epoch, snapshot)
    }
}

/// A window aggregate (`rel` is a [`Plan::WindowAgg`]); `select`: the output columns to keep,
/// in order (a projection of plain columns fused into the operator's output rows).
fn window_agg(env: &StreamEnv, rel: &Rel, select: Option<Arc<[usize]>>) -> Result<DataStream<Row>, SqlError> {
    let width_of = |r: &Rel| r.scope.columns.len();
    let Plan::WindowAgg {
        input,
        assigner,
        keys,
        args,
        aggs,
        ltz,
        cascade,
        proctime,
        ..
    } = &rel.plan
    else {
        unreachable!("window_agg of a {:?}", std::mem::discriminant(&rel.plan))
    };
    // Pre-aggregate rows: [keys..., (cascade: window_start, window_end,) args...]; the
    // grouping key is everything before the arguments.
    let window_keys: Vec<Expr> = cascade.iter().flat_map(|(s, e)| [Expr::Col(*s), Expr::Col(*e)]).collect();
    let pre: Arc<[Expr]> = keys.iter().chain(window_keys.iter()).chain(args.iter()).cloned().collect();
    let nk = keys.len();
    let nkey = nk + window_keys.len();
    let agg = RowAggregate {
        calls: aggs.clone().into(),
        first_arg: nkey,
    };
    let ltz = *ltz;
    let proctime = *proctime;
    let cascaded = cascade.is_some();
    let mut need = vec![false; width_of(input)];
    for e in pre.iter() {
        mark(e, &mut need);
    }
    if let Some(rt) = input.rowtime {
        need[rt] = true;
    }
    // Over a scan (or a filter over one), or a projection of one (a view), the
    // pre-aggregate projection runs inside the reader, composed with the view's.
    let fused_input = match &input.plan {
        Plan::Project { input: inner, exprs } if scan_of(inner).is_some() && !exprs.iter().any(Expr::reads_clock) => {
            let composed: Vec<Expr> = pre.iter().map(|e| e.substitute(exprs)).collect();
            Some((&**inner, composed, input.rowtime.map(|rt| exprs[rt].clone())))
        }
        _ if scan_of(input).is_some() => Some((&**input, pre.to_vec(), input.rowtime.map(Expr::Col))),
        _ => None,
    };
    let pre_stream = match fused_input.and_then(|(rel, project, rowtime)| scan_of(rel).map(|(t, p)| (rel, t, p, project, rowtime))) {
        // The time attribute rides along as a last, unused column.
        Some((scan_rel, table, predicate, mut project, rowtime)) if rowtime.is_some() || table.rowtime.is_none() => {
            let rowtime_out = rowtime.map(|rt| {
                project.push(rt);
                project.len() - 1
            });
            let mut need = vec![false; width_of(scan_rel)];
            project.iter().chain(predicate).for_each(|e| mark(e, &mut need));
            let post = ScanPost {
                predicate: predicate.cloned(),
                project: Some(project.into()),
                columns: None,
                dropped_rows: None,
            };
            scan(env, table, &need, post, rowtime_out)?
        }
        _ => build(env, input, &need)?.map(move |r: Row| pre.iter().map(|e| e.eval(&r)).collect::<Row>()),
    };
    let assigner = *assigner;
    let kind = match assigner {
        _ if cascaded => "window:cascade",
        WindowAssigner::Tumbling { .. } => "window:tumble",
        WindowAssigner::Sliding { .. } => "window:hop",
        WindowAssigner::Cumulate { .. } => "window:cumulate",
        WindowAssigner::Session { .. } => "window:session",
    };
    let Some(slicer) = Slicer::new(assigner) else {
        let sessions = session_aggregate(env, pre_stream, assigner, agg, nk, nkey, ltz, cascaded, kind)?;
        return Ok(match select {
            Some(cols) => sessions.map(move |mut r: Row| cols.iter().map(|&c| std::mem::take(&mut r[c])).collect::<Row>()),
            None => sessions,
        });
    };
    let shape = OutputShape {
        keys: nk,
        cascade: cascaded,
        ltz,
    };
    let int_key = nkey == 1 && rel.scope.columns.first().is_some_and(|c| c.ty.is_integer() || c.ty.is_timestamp());
    let count_stars = aggs.iter().all(|a| a.func == AggFunc::CountStar).then_some(CountStars { n: aggs.len() });
    let w = AlignedWindowAgg {
        slicer,
        shape,
        assigner,
        kind,
        proctime,
        nkey,
        nargs: args.len(),
        select,
    };
    // The aggregate reads its arguments alone (the records carry the key apart).
    let args_agg = RowAggregate {
        calls: aggs.clone().into(),
        first_arg: 0,
    };
    match (int_key, count_stars) {
        (true, Some(c)) => aligned_window_aggregate::<IntKey, (), _>(env, pre_stream, c, w),
        (false, Some(c)) => aligned_window_aggregate::<KeyRow, (), _>(env, pre_stream, c, w),
        (true, None) if w.nargs <= 2 => aligned_window_aggregate::<IntKey, FewArgs, _>(env, pre_stream, args_agg, w),
        (false, None) if w.nargs <= 2 => aligned_window_aggregate::<KeyRow, FewArgs, _>(env, pre_stream, args_agg, w),
        (true, None) => aligned_window_aggregate::<IntKey, Row, _>(env, pre_stream, args_agg, w),
        (false, None) => aligned_window_aggregate::<KeyRow, Row, _>(env, pre_stream, args_agg, w),
    }
}

/// An aligned window aggregate (`TUMBLE`, `HOP`, `CUMULATE`, cascaded windows) as the planner
/// laid it out.
#[derive(Clone)]
struct AlignedWindowAgg {
    slicer: Slicer,
    shape: OutputShape,
    assigner: WindowAssigner,
    kind: &'static str,
    proctime: bool,
    /// The pre-aggregate rows are `[keys (nkey)..., arguments (nargs)..., time]`.
    nkey: usize,
    nargs: usize,
    /// The output columns kept (a fused projection), or all.
    select: Option<Arc<[usize]>>,
}

/// The window aggregate of `pre`'s rows: each row crosses the keyed exchange as a compact
/// `(key, arguments)` record (the exchange converts it; a scaled-out job's rows cross Kafka whole
/// and are converted in front of the operator), which [`SqlWindowAggOp`] aggregates by `agg`.
fn aligned_window_aggregate<K, P, A>(env: &StreamEnv, pre: DataStream<Row>, agg: A, w: AlignedWindowAgg) -> Result<DataStream<Row>, SqlError>
where
    K: GroupKey,
    P: WindowArgs,
    A: SqlAggregates<P> + Send + Sync,
{
    let (nkey, nargs) = (w.nkey, w.nargs);
    let split = move |r: &mut Row| keyed_args::<K, P>(r, nkey, nargs);
    let build = move |ctx: &mut crate::shard::BuildCtx<'_>, name: &str, down: Box<dyn Push<Row>>| -> crate::error::Result<Box<dyn Push<KeyedArgs<K, P>>>> {
        let out = Output::new(down, ctx.config.batch_size);
        let metrics = ctx.operator_metrics(name);
        let op: Box<dyn Push<KeyedArgs<K, P>>> = Box::new(WindowDriver::build(
            SqlWindowAggOp::new(w.slicer, agg.clone(), w.shape, w.select.clone(), out, metrics),
            ctx,
            name,
        )?);
        if w.proctime {
            return super::proctime::fired_by_clock(op, w.assigner, ctx, name);
        }
        Ok(op)
    };
    if crate::scaleout::role(env.config()).is_some() {
        // Rows go to the shard of their key's group: the exchange only hashes the key.
        let (rows, _) = keyed_exchange(env, pre, move |r: &Row| KeyHash(row_key_hash(r, nkey)), w.kind)?.exchanged();
        return Ok(rows.then(w.kind, move |ctx, name, down| {
            let op = build(ctx, name, down)?;
            Ok(Box::new(crate::operator::stateless::MapOp {
                f: move |mut r: Row| split(&mut r),
                buf: crate::batch::Batch::with_capacity(ctx.config.batch_size),
                down: op,
                _in: std::marker::PhantomData,
            }) as Box<dyn Push<Row>>)
        }));
    }
    let records = env.keyed_input_converted(pre, split, |r: &KeyedArgs<K, P>| KeyHash(GroupKey::stable_hash(&r.0)));
    Ok(records.then(w.kind, build))
}

/// A SESSION window aggregate: the engine's session window operator over `KeyRow` keys, its
/// results as rows `[keys..., window_start, window_end, window_time, aggregates...]`.
#[allow(clippy::too_many_arguments)]
fn session_aggregate(
    env: &StreamEnv,
    pre_stream: DataStream<Row>,
    assigner: WindowAssigner,
    agg: RowAggregate,
    nk: usize,
    nkey: usize,
    ltz: bool,
    cascaded: bool,
    kind: &str,
) -> Result<DataStream<Row>, SqlError> {
    let (stream, key_fn) = keyed_exchange(env, pre_stream, move |r: &Row| KeyRow(r[..nkey].iter().cloned().collect()), kind)?.exchanged();
    let results: DataStream<WindowResult<KeyRow, Vec<Value>>> = stream.then(kind, move |ctx, name, down| {
        let out = Output::new(down, ctx.config.batch_size);
        let metrics = ctx.operator_metrics(name);
        let spec = WindowSpec {
            assigner,
            allowed_lateness_ms: 0,
        };
        Ok(Box::new(WindowDriver::build(
            SessionWindowOp::new(spec, key_fn, agg.clone(), out, None, metrics),
            ctx,
            name,
        )?) as Box<dyn Push<Row>>)
    });
    Ok(results.map(move |w: WindowResult<KeyRow, Vec<Value>>| {
        let mut key = w.key.0.into_iter();
        let mut row: Row = key.by_ref().take(nk).collect();
        let (start, end) = if cascaded {
            // The input's window, carried in the key.
            (ts_of(&key.next().unwrap_or(Value::Null)), ts_of(&key.next().unwrap_or(Value::Null)))
        } else {
            (w.window_start, w.window_end)
        };
        row.push(Value::Timestamp(start));
        row.push(Value::Timestamp(end));
        let wt = end.saturating_sub(1);
        row.push(if ltz { Value::TimestampLtz(wt) } else { Value::Timestamp(wt) });
        row.extend(w.value);
        row
    }))
}

/// `rel` with a projection or filter over a projection, or a filter over a filter, merged into
/// one (so chains of views reach the scan as one fused filter and projection); `None` if there
/// is nothing to merge. Expressions have no side effects, so substituting a projection's
/// expressions for its columns keeps every value.
pub(super) fn merged(rel: &Rel) -> Option<Rel> {
    let with_plan = |plan: Plan| Rel {
        plan,
        scope: rel.scope.clone(),
        rowtime: rel.rowtime,
        window: rel.window,
    };
    match &rel.plan {
        // project(project(x)) = project(x) with the inner expressions substituted.
        Plan::Project { input, exprs } => match &input.plan {
            Plan::Project {
                input: inner,
                exprs: inner_exprs,
            } => Some(with_plan(Plan::Project {
                input: inner.clone(),
                exprs: exprs.iter().map(|e| e.substitute(inner_exprs)).collect(),
            })),
            _ => None,
        },
        Plan::Filter { input, predicate, text } => match &input.plan {
            Plan::Project { exprs, .. } if exprs.iter().any(Expr::reads_clock) => None,
            // filter(project(x)) = project(filter(x)) with the predicate over x.
            Plan::Project { input: inner, exprs } => {
                let filtered = Rel {
                    plan: Plan::Filter {
                        input: inner.clone(),
                        predicate: predicate.substitute(exprs),
                        text: text.clone(),
                    },
                    scope: inner.scope.clone(),
                    rowtime: inner.rowtime,
                    window: inner.window,
                };
                Some(with_plan(Plan::Project {
                    input: Box::new(filtered),
                    exprs: exprs.clone(),
                }))
            }
            // filter(filter(x)) = filter(x) with both predicates (a row passes when both are TRUE).
            Plan::Filter {
                input: inner,
                predicate: first,
                text: first_text,
            } => Some(with_plan(Plan::Filter {
                input: inner.clone(),
                predicate: Expr::And(Box::new(first.clone()), Box::new(predicate.clone())),
                text: format!("{first_text} AND {text}"),
            })),
            _ => None,
        },
        _ => None,
    }
}

/// The table and the filter of a scan or of a filter directly over a scan.
fn scan_of(rel: &Rel) -> Option<(&Arc<super::plan::TableDef>, Option<&Expr>)> {
    match &rel.plan {
        Plan::Scan { table } => Some((table, None)),
        Plan::Filter { input, predicate, .. } => match &input.plan {
            Plan::Scan { table } => Some((table, Some(predicate))),
            _ => None,
        },
        _ => None,
    }
}

/// The join key of a row: its window end and the equi-join key values.
fn join_key(keys: &[Expr], row: &Row, end: usize) -> KeyRow {
    let mut k: SmallVec<[Value; 4]> = SmallVec::new();
    k.push(row.get(end).cloned().unwrap_or(Value::Null));
    for e in keys {
        k.push(e.eval(row));
    }
    KeyRow(k)
}

/// Accumulator of one aggregate call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AccState {
    Count(i64),
    SumInt(i64, bool),
    SumDouble(f64, bool),
    SumDecimal(i128, u8, bool),
    /// MIN or MAX so far (`Null`: none yet).
    Extreme(Value),
    AvgInt(i128, i64),
    AvgDouble(f64, i64),
    AvgDecimal(i128, u8, i64),
    Distinct(FxHashSet<Value>),
}

/// Flink's SQL aggregates over rows laid out as `[keys..., aggregate arguments...]`.
#[derive(Clone)]
pub struct RowAggregate {
    pub calls: Arc<[AggCall]>,
    pub first_arg: usize,
}

fn wrap_bits(v: i64, ty: SqlType) -> i64 {
    match ty.int_bits() {
        8 => v as i8 as i64,
        16 => v as i16 as i64,
        32 => v as i32 as i64,
        _ => v,
    }
}

impl RowAggregate {
    /// The result of aggregate call `c` from its accumulator state `a`.
    pub fn result_of(c: &AggCall, a: &AccState) -> Value {
        match a {
            AccState::Count(n) => Value::Int(*n),
            AccState::Distinct(s) => Value::Int(s.len() as i64),
            AccState::Extreme(v) => v.clone(),
            AccState::SumInt(s, any) => {
                if *any {
                    Value::Int(*s)
                } else {
                    Value::Null
                }
            }
            AccState::SumDouble(s, any) => {
                if *any {
                    Value::Double(*s)
                } else {
                    Value::Null
                }
            }
            AccState::SumDecimal(s, sc, any) => match (*any, i64::try_from(*s)) {
                (true, Ok(v)) => Value::Decimal(v, *sc),
                _ => Value::Null,
            },
            AccState::AvgInt(s, n) => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Int(wrap_bits((*s / *n as i128) as i64, c.out_type))
                }
            }
            AccState::AvgDouble(s, n) => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Double(*s / *n as f64)
                }
            }
            AccState::AvgDecimal(s, sc, n) => {
                let SqlType::Decimal(_, out_scale) = c.out_type else { return Value::Null };
                if *n == 0 {
                    return Value::Null;
                }
                // sum at scale `sc` / n, at scale `out_scale`, rounded half up.
                let num = s.saturating_mul(10i128.pow((out_scale - sc) as u32));
                let den = *n as i128;
                let q = num / den;
                let r = num % den;
                let q = if r.abs() * 2 >= den { q + num.signum() } else { q };
                i64::try_from(q).map(|v| Value::Decimal(v, out_scale)).unwrap_or(Value::Null)
            }
        }
    }

    /// Add the arguments of `row` (from `first_arg` on) to the accumulators.
    #[inline]
    pub fn add_values(&self, acc: &mut SmallVec<[AccState; 2]>, row: &[Value]) {
        for (c, a) in self.calls.iter().zip(acc.iter_mut()) {
            let v = match c.arg {
                Some(i) => row.get(self.first_arg + i).unwrap_or(&Value::Null),
                None => {
                    if let AccState::Count(n) = a {
                        *n += 1;
                    }
                    continue;
                }
            };
            if v.is_null() {
                continue;
            }
            match (a, v) {
                (AccState::Count(n), _) => *n += 1,
                (AccState::Distinct(set), v) if !set.contains(v) => {
                    set.insert(v.clone());
                }
                (AccState::Extreme(cur), v) => {
                    let better = cur.is_null()
                        || match c.func {
                            AggFunc::Min => v.total_cmp(cur).is_lt(),
                            _ => v.total_cmp(cur).is_gt(),
                        };
                    if better {
                        *cur = v.clone();
                    }
                }
                (AccState::SumInt(s, any), Value::Int(x)) => {
                    *s = wrap_bits(s.wrapping_add(*x), c.out_type);
                    *any = true;
                }
                (AccState::SumDouble(s, any), Value::Double(x)) => {
                    *s += x;
                    *any = true;
                }
                (AccState::SumDecimal(s, _, any), Value::Decimal(x, _)) => {
                    *s = s.saturating_add(*x as i128);
                    *any = true;
                }
                (AccState::AvgInt(s, n), Value::Int(x)) => {
                    *s += *x as i128;
                    *n += 1;
                }
                (AccState::AvgDouble(s, n), Value::Double(x)) => {
                    *s += x;
                    *n += 1;
                }
                (AccState::AvgDecimal(s, _, n), Value::Decimal(x, _)) => {
                    *s = s.saturating_add(*x as i128);
                    *n += 1;
                }
                _ => {}
            }
        }
    }
}

impl AggregateFunction<Row> for RowAggregate {
    /// Two accumulators inline (a window key's state stays small; more aggregates allocate
    /// once per key and window, not per record).
    type Acc = SmallVec<[AccState; 2]>;
    type Out = Vec<Value>;

    fn create(&self) -> Self::Acc {
        self.calls
            .iter()
            .map(|c| match c.func {
                AggFunc::CountStar | AggFunc::Count => AccState::Count(0),
                AggFunc::CountDistinct => AccState::Distinct(FxHashSet::default()),
                AggFunc::Min | AggFunc::Max => AccState::Extreme(Value::Null),
                AggFunc::Sum => match c.arg_type {
                    SqlType::Decimal(_, s) => AccState::SumDecimal(0, s, false),
                    SqlType::Double | SqlType::Float => AccState::SumDouble(0.0, false),
                    _ => AccState::SumInt(0, false),
                },
                AggFunc::Avg => match c.arg_type {
                    SqlType::Decimal(_, s) => AccState::AvgDecimal(0, s, 0),
                    SqlType::Double | SqlType::Float => AccState::AvgDouble(0.0, 0),
                    _ => AccState::AvgInt(0, 0),
                },
            })
            .collect()
    }

    #[inline]
    fn add(&self, acc: &mut Self::Acc, row: &Row) {
        self.add_values(acc, row)
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        for ((c, a), o) in self.calls.iter().zip(acc.iter_mut()).zip(other.iter()) {
            match (a, o) {
                (AccState::Count(n), AccState::Count(m)) => *n += m,
                (AccState::Distinct(s), AccState::Distinct(t)) => s.extend(t.iter().cloned()),
                (AccState::Extreme(cur), AccState::Extreme(v)) if !v.is_null() => {
                    let better = cur.is_null()
                        || match c.func {
                            AggFunc::Min => v.total_cmp(cur).is_lt(),
                            _ => v.total_cmp(cur).is_gt(),
                        };
                    if better {
                        *cur = v.clone();
                    }
                }
                (AccState::SumInt(s, a1), AccState::SumInt(t, a2)) => {
                    *s = wrap_bits(s.wrapping_add(*t), c.out_type);
                    *a1 |= a2;
                }
                (AccState::SumDouble(s, a1), AccState::SumDouble(t, a2)) => {
                    *s += t;
                    *a1 |= a2;
                }
                (AccState::SumDecimal(s, _, a1), AccState::SumDecimal(t, _, a2)) => {
                    *s = s.saturating_add(*t);
                    *a1 |= a2;
                }
                (AccState::AvgInt(s, n), AccState::AvgInt(t, m)) => {
                    *s += t;
                    *n += m;
                }
                (AccState::AvgDouble(s, n), AccState::AvgDouble(t, m)) => {
                    *s += t;
                    *n += m;
                }
                (AccState::AvgDecimal(s, _, n), AccState::AvgDecimal(t, _, m)) => {
                    *s = s.saturating_add(*t);
                    *n += m;
                }
                _ => {}
            }
        }
    }

    fn result(&self, acc: &Self::Acc) -> Vec<Value> {
        self.calls.iter().zip(acc.iter()).map(|(c, a)| Self::result_of(c, a)).collect()
    }
}

/// Describe the job: the operator tree, its exchanges and its segments.
pub fn explain(job: &Job) -> String {
    let mut out = String::new();
    let shards = job.config.shard_count();
    let mut edges = Vec::new();
    if job.inserts.len() > 1 {
        let _ = writeln!(out, "== statement set: {} INSERTs in one job ==", job.inserts.len());
    }
    for insert in &job.inserts {
        let sink = match &insert.sink.connector {
            Connector::Filesystem { path, format } => format!("filesystem {} → {}", format.extension(), path.display()),
            Connector::S3(t) => format!(
                "filesystem {} → {}, multipart uploads completed at checkpoints, rolling at {} bytes / {:?}",
                t.format.extension(),
                t.path,
                t.rolling.file_size,
                t.rolling.rollover_interval
            ),
            Connector::Print => "print (stdout)".into(),
            Connector::Blackhole => "blackhole".into(),
            Connector::Nexmark { .. } => "nexmark".into(),
            Connector::Kafka(k) => format!("kafka {} topic {}", format!("{:?}", k.format).to_lowercase(), k.topic.as_deref().unwrap_or("?")),
            Connector::Gateway { .. } => "gateway".into(),
            Connector::Kinesis(_) | Connector::Pulsar(_) => "a source-only table".into(),
            Connector::Elasticsearch(es) => format!(
                "elasticsearch-7 {} index {}, ids from columns {:?}",
                es.config.address, es.config.index, es.id_columns
            ),
            Connector::Jdbc(c) => format!(
                "jdbc postgresql://{}/{} table {} ({:?}{})",
                c.address,
                c.database,
                c.table,
                c.guarantee,
                if c.upsert_key.is_empty() {
                    String::new()
                } else {
                    format!(", upsert on {}", c.upsert_key.join(", "))
                }
            ),
        };
        let _ = writeln!(out, "== weir SQL plan: INSERT INTO {} ({sink}) ==", insert.sink.name);
        let cols: Vec<String> = insert.sink.columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        let _ = writeln!(out, "sink {} [{}]", insert.sink.name, cols.join(", "));
        describe(&insert.query, 1, &mut out, &mut edges);
        if csv_copy_plan(&job.config, insert).is_some() {
            let _ = writeln!(
                out,
                "fused: scan → sink; each reader writes its rows as CSV text (no rows built), files read as byte ranges in parallel"
            );
        } else if order_free(insert) {
            let _ = writeln!(out, "order-free: files read as byte ranges in parallel");
        }
    }
    let _ = writeln!(out, "\n== exchanges ==");
    if edges.is_empty() {
        let _ = writeln!(out, "none: the whole job is one segment (source → operators → sink), chained on each shard");
    }
    for (k, e) in edges.iter().enumerate() {
        let _ = writeln!(out, "edge {}: {e} — full mesh of {shards}×{shards} bounded rings", k + 1);
    }
    let _ = writeln!(
        out,
        "\n== execution ==\n{shards} shard(s); {} segment(s); every shard runs every segment; split i of a source is read by shard i % {shards} \
         (a file is one split, read in order, unless its INSERT is order-free: then byte ranges of file_split_bytes); \
         watermarks are combined by minimum over rings",
        edges.len() + job.inserts.len()
    );
    out
}

pub(super) fn describe(rel: &Rel, depth: usize, out: &mut String, edges: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let cols: Vec<String> = rel.scope.columns.iter().map(|c| format!("{} {}", c.name, c.ty)).collect();
    match &rel.plan {
        Plan::Scan { table } => {
            let src = match &table.connector {
                Connector::Filesystem { path, format } => format!("filesystem {} {}", format.extension(), path.display()),
                Connector::S3(t) => format!("filesystem {} {} (one split per object)", t.format.extension(), t.path),
                Connector::Gateway { config, format } => format!(
                    "gateway {} events, log {}, {} partition(s){}{}",
                    format.extension(),
                    config.log_dir.display(),
                    if config.partitions == 0 {
                        "one per shard".to_string()
                    } else {
                        config.partitions.to_string()
                    },
                    config.http_address.as_ref().map(|a| format!(", http {a}")).unwrap_or_default(),
                    config.tcp_address.as_ref().map(|a| format!(", tcp {a}")).unwrap_or_default()
                ),
                Connector::Nexmark { config, flat, .. } => format!(
                    "nexmark {}events.num {}, one generator split per shard",
                    flat.map(|k| format!("{k:?} events, ")).unwrap_or_default(),
                    config.max_events
                ),
                Connector::Kafka(k) => format!("kafka {} {:?}", format!("{:?}", k.format).to_lowercase(), k.source.topics),
                Connector::Kinesis(k) => format!(
                    "kinesis {} stream {}, one split per shard",
                    format!("{:?}", k.format).to_lowercase(),
                    k.source.stream
                ),
                Connector::Pulsar(p) => format!(
                    "pulsar {} topics {:?}, subscription {}, one split per partition",
                    format!("{:?}", p.format).to_lowercase(),
                    p.source.topics,
                    p.source.subscription
                ),
                _ => "?".into(),
            };
            let wm = match table.rowtime {
                Some((i, d)) => format!("; watermark = max({}) - {d} ms per split", table.columns[i].0),
                None => "; no event time".into(),
            };
            let _ = writeln!(out, "{pad}scan {} [{src}{wm}] -> [{}]", table.name, cols.join(", "));
        }
        Plan::Filter { input, text, .. } => {
            let _ = writeln!(out, "{pad}filter {text}");
            describe(input, depth + 1, out, edges);
        }
        Plan::Project { input, .. } => {
            let _ = writeln!(out, "{pad}project -> [{}]", cols.join(", "));
            describe(input, depth + 1, out, edges);
        }
        Plan::WindowTvf { input, assigner, proctime } => {
            let _ = writeln!(
                out,
                "{pad}window_tvf {}{} (adds window_start, window_end, window_time)",
                window_text(assigner),
                if *proctime { " on processing time" } else { "" }
            );
            describe(input, depth + 1, out, edges);
        }
        Plan::WindowAgg {
            input,
            assigner,
            key_texts,
            aggs,
            proctime,
            ..
        } => {
            let a: Vec<&str> = aggs.iter().map(|a| a.text.as_str()).collect();
            let _ = writeln!(
                out,
                "{pad}window_aggregate {} group by [{}] aggregates [{}] {}",
                window_text(assigner),
                key_texts.join(", "),
                a.join(", "),
                if *proctime {
                    "on processing time (fired by the clock; open windows fire at end of input)"
                } else {
                    "(late records dropped, as Flink)"
                }
            );
            let _ = writeln!(out, "{pad}  <- hash exchange by [{}]", key_texts.join(", "));
            edges.push(format!("hash by [{}] into window_aggregate", key_texts.join(", ")));
            describe(input, depth + 2, out, edges);
        }
        Plan::Over(node) => super::over::describe(node, &pad, depth, out, edges),
        Plan::IntervalJoin {
            left,
            right,
            key_texts,
            bounds_text,
            lower,
            upper,
            residual_text,
            ..
        } => {
            let _ = writeln!(
                out,
                "{pad}interval_join on [{}] and {bounds_text} (right time - left time in [{lower}, {upper}] ms){} (late rows dropped)",
                key_texts.join(" AND "),
                residual_text.as_ref().map(|r| format!(" where {r}")).unwrap_or_default()
            );
            let _ = writeln!(out, "{pad}  <- left: hash exchange by [equi keys]");
            edges.push("hash by [equi keys] into interval_join (left)".into());
            describe(left, depth + 2, out, edges);
            let _ = writeln!(out, "{pad}  <- right: hash exchange by [equi keys]");
            edges.push("hash by [equi keys] into interval_join (right)".into());
            describe(right, depth + 2, out, edges);
        }
        Plan::WindowRank { input, limit, text, .. } => {
            let _ = writeln!(
                out,
                "{pad}window_rank {text} keep {} per partition (fires at window end; late rows dropped)",
                limit.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
            );
            let _ = writeln!(out, "{pad}  <- hash exchange by [window_end, partition keys]");
            edges.push("hash by [window_end, partition keys] into window_rank".into());
            describe(input, depth + 2, out, edges);
        }
        Plan::WindowJoin {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            key_texts,
            residual_text,
            ..
        } => {
            let _ = writeln!(
                out,
                "{pad}window_join {kind:?} on [{}]{} (fires at window end; late rows dropped)",
                key_texts.join(" AND "),
                residual_text.as_ref().map(|r| format!(" where {r}")).unwrap_or_default()
            );
            use super::ast::JoinKind;
            let prune = |side: &Rel, keys: &[Expr], other: &Rel, other_keys: &[Expr], allowed: bool| {
                if allowed && super::prune::prunable(side, keys, other, other_keys).is_some() {
                    " (rows below their window's running maximum dropped first)"
                } else {
                    ""
                }
            };
            let left_prune = prune(left, left_keys, right, right_keys, matches!(kind, JoinKind::Inner | JoinKind::Right));
            let right_prune = prune(right, right_keys, left, left_keys, matches!(kind, JoinKind::Inner | JoinKind::Left));
            let _ = writeln!(out, "{pad}  <- left: hash exchange by [window_end, equi keys]{left_prune}");
            edges.push("hash by [window_end, equi keys] into window_join (left)".into());
            describe(left, depth + 2, out, edges);
            let _ = writeln!(out, "{pad}  <- right: hash exchange by [window_end, equi keys]{right_prune}");
            edges.push("hash by [window_end, equi keys] into window_join (right)".into());
            describe(right, depth + 2, out, edges);
        }
    }
}

fn window_text(a: &WindowAssigner) -> String {
    match a {
        WindowAssigner::Tumbling { size_ms, .. } => format!("TUMBLE(size {size_ms} ms)"),
        WindowAssigner::Sliding { size_ms, slide_ms, .. } => format!("HOP(slide {slide_ms} ms, size {size_ms} ms)"),
        WindowAssigner::Cumulate { step_ms, max_size_ms, .. } => format!("CUMULATE(step {step_ms} ms, max size {max_size_ms} ms)"),
        WindowAssigner::Session { gap_ms } => format!("SESSION(gap {gap_ms} ms)"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::EngineConfig;

    /// The direct CSV encoder writes the bytes the `csv` crate writes for the same rows,
    /// including quoting, one-empty-field records and repeated timestamps.
    #[test]
    fn csv_encoder_writes_what_the_csv_crate_writes() {
        use super::super::types::{Row, Str, Value};
        let s = |t: &str| Value::Str(Str::from(t));
        let rows: Vec<Row> = vec![
            [
                Value::Int(-3),
                Value::Timestamp(1_700_000_000_000),
                Value::TimestampLtz(1_700_000_000_001),
                Value::Null,
            ]
            .into_iter()
            .collect(),
            [
                Value::Int(4),
                Value::Timestamp(1_700_000_000_000),
                Value::TimestampLtz(1_700_000_000_001),
                Value::Int(0),
            ]
            .into_iter()
            .collect(),
            [
                Value::Int(4),
                Value::TimestampLtz(1_700_000_000_000),
                Value::Timestamp(1_700_000_000_001),
                Value::Int(0),
            ]
            .into_iter()
            .collect(),
            [s("a,b"), s("say \"hi\""), s("two\nlines"), s("cr\r")].into_iter().collect(),
            [s(""), Value::Null, Value::Bool(true), Value::Double(1.0e7)].into_iter().collect(),
            [s("")].into_iter().collect(),
            [Value::Null].into_iter().collect(),
            [
                Value::Decimal(-12340, 3),
                Value::Double(f64::NAN),
                Value::Timestamp(-62_200_000_000_000),
                s("é,ü"),
            ]
            .into_iter()
            .collect(),
        ];
        // Integers at every digit count and sign, and rows longer than the line buffer.
        let mut rows = rows;
        let mut ints: Vec<i64> = vec![i64::MIN, i64::MAX, i64::MIN + 1, 0, -1];
        for d in 0..19 {
            let p = 10i64.pow(d);
            ints.extend([p, p - 1, -p, 1 - p, p + 7]);
        }
        rows.push(ints.iter().map(|i| Value::Int(*i)).collect());
        rows.extend(ints.iter().map(|i| [Value::Int(*i)].into_iter().collect()));
        rows.push((0..120).map(|k| if k % 7 == 3 { s("x,y") } else { Value::Int(i64::MIN + k) }).collect());
        rows.push((0..60).map(|k| if k % 5 == 0 { Value::Null } else { Value::Int(-k) }).collect());
        let mut want = csv::WriterBuilder::new().has_headers(false).flexible(true).from_writer(Vec::new());
        for r in &rows {
            want.serialize(super::CsvRow(r.clone())).unwrap();
        }
        let want = want.into_inner().unwrap();
        let mut got = Vec::new();
        let mut encoder = super::CsvRowEncoder::default();
        for r in &rows {
            encoder.write(r, &mut got);
        }
        assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
    }

    #[test]
    fn explain_names_operators_keys_edges_and_segments() {
        let script = "CREATE TABLE bid (auction BIGINT, price BIGINT, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts - INTERVAL '4' SECOND) \
                      WITH ('connector' = 'filesystem', 'path' = '/data/bid.csv', 'format' = 'csv');\n\
                      CREATE TABLE o (auction BIGINT, n BIGINT, hi BIGINT) WITH ('connector' = 'blackhole');\n\
                      INSERT INTO o SELECT auction, COUNT(*), MAX(price) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
                      GROUP BY auction, window_start, window_end;";
        let config = EngineConfig {
            cores: 3,
            pin_cores: false,
            ..Default::default()
        };
        let text = crate::sql::explain(script, &HashMap::new(), config).unwrap();
        for needle in [
            "window_aggregate TUMBLE(size 10000 ms) group by [auction] aggregates [COUNT(*), MAX(price)]",
            "hash exchange by [auction]",
            "scan bid",
            "max(ts) - 4000 ms",
            "edge 1: hash by [auction]",
            "3×3 bounded rings",
            "2 segment(s); every shard runs every segment",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}

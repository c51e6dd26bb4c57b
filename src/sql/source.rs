//! The filesystem source of SQL tables: CSV or JSON-lines files read into [`Row`]s by the
//! table's schema, computed columns evaluated on the way.
//!
//! `path` is a file or a folder (every file in it not starting with `.` or `_`, sorted by
//! name); each file is one split, read in order by one shard through glommio's buffered
//! (io_uring) positional reads, in chunks of `file_read_chunk_bytes` (engine config).
//!
//! The CSV hot path: a plain line (no quotes) is found and split into fields in one pass,
//! sixteen bytes at a time (SSE2 on x86-64, 64-bit words elsewhere); integers of up to 16
//! digits are read eight digits at a time; only the columns some operator reads are parsed.
//! Computed columns such as `TO_TIMESTAMP_LTZ(ms, 3)` are compiled (`ColumnFn`), and a scan
//! without a fused filter whose projection reads only physical and compiled columns builds
//! its output rows straight from the parsed values (`DirectProgram`); everything else takes
//! the general `ScanProgram` (table row, filter, projection), with the same results.
//!
//! Invariants: a line longer than `max_line_bytes` or one that does not parse is a bad record:
//! with `on_bad_record = fail` the job stops with an error naming file, line and field; with
//! `skip` it is counted in `bad_records` and dropped. A row whose time attribute is NULL is a
//! bad record too (Flink fails on it). Empty CSV fields of non-string columns are NULL.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use glommio::io::BufferedFile;

use super::exec::{CsvField, CsvRowEncoder};
use super::plan::{ColumnSource, Connector, MetadataKey, TableDef};
use super::types::{parse_decimal, parse_timestamp, Row, SqlType, Str, Value};
use super::SqlError;
use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::shard::{BuildCtx, OperatorMetrics};
use crate::sink::format::Format;
use crate::source::file::{BadLine, LineInfo, ParseLine};
use crate::source::gateway::{Gateway, GatewaySource};
use crate::source::{ReadStatus, Source, SplitReader};

/// A table's files as a source of rows.
pub struct RowFileSource {
    table: Arc<TableDef>,
    /// The splits: whole files, or byte ranges of files (see [`RowFileSource::new`]).
    splits: Vec<FileRange>,
    format: Format,
    /// Physical columns some operator reads; the others are not parsed (left NULL).
    needed: Arc<[bool]>,
    post: Arc<ScanPost>,
    /// Parallel parsing of a lone whole file (see [`RowFileSource::with_parallel_parse`]).
    parallel: Option<super::parallel_file::ParallelParse>,
}

/// The lines of `path` that start in `[start, end)` (`end` = `u64::MAX`: to the end of the file).
#[derive(Clone, Debug)]
struct FileRange {
    path: PathBuf,
    start: u64,
    end: u64,
}

impl RowFileSource {
    /// List the table's files (at planning time, so every shard sees the same splits).
    /// `needed`: which physical columns are read (see [`physical_needed`]); `post`: the filter
    /// and projection fused into the scan. `split_bytes > 0`: each file is read as
    /// `ceil(size / split_bytes)` byte ranges (only for scans whose results do not depend on the
    /// order of their rows: nothing downstream reads event time or arrival order).
    pub fn new(table: Arc<TableDef>, needed: Vec<bool>, post: ScanPost, split_bytes: u64) -> Result<Self, SqlError> {
        let Connector::Filesystem { path, format } = &table.connector else {
            return Err(SqlError::at(table.pos, format!("table `{}` cannot be read", table.name)));
        };
        let meta = std::fs::metadata(path).map_err(|e| SqlError::at(table.pos, format!("table `{}`: cannot read path {}: {e}", table.name, path.display())))?;
        let files = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| SqlError::at(table.pos, format!("table `{}`: cannot list {}: {e}", table.name, path.display())))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .filter(|e| !e.file_name().to_string_lossy().starts_with(['.', '_']))
                .map(|e| e.path())
                .collect();
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        let mut splits = Vec::new();
        for file in files {
            let size = if split_bytes == 0 {
                0
            } else {
                std::fs::metadata(&file)
                    .map_err(|e| SqlError::at(table.pos, format!("table `{}`: cannot read {}: {e}", table.name, file.display())))?
                    .len()
            };
            let ranges = if split_bytes == 0 { 1 } else { size.div_ceil(split_bytes).max(1) };
            for k in 0..ranges {
                splits.push(FileRange {
                    path: file.clone(),
                    start: k * split_bytes,
                    end: if k + 1 == ranges { u64::MAX } else { (k + 1) * split_bytes },
                });
            }
        }
        Ok(Self {
            format: *format,
            table,
            splits,
            needed: needed.into(),
            post: Arc::new(post),
            parallel: None,
        })
    }
}

/// The gateway of a `'connector' = 'gateway'` table as a source of rows (started now: it binds
/// its addresses and recovers its log). `partitions = 0` becomes one per shard. Events are
/// parsed like lines of a file of the table's format (`needed` and `post` as for files); a bad
/// event follows the engine's bad-record policy, named by gateway partition and event ordinal.
pub fn gateway_source(table: Arc<TableDef>, shards: usize, needed: Vec<bool>, post: ScanPost) -> Result<GatewaySource<Row>, SqlError> {
    let Connector::Gateway { config, format } = &table.connector else {
        return Err(SqlError::at(table.pos, format!("table `{}` is not a gateway table", table.name)));
    };
    let mut config = (**config).clone();
    if config.partitions == 0 {
        config.partitions = shards.max(1);
    }
    let gateway = Gateway::start(&table.name, config).map_err(|e| SqlError::at(table.pos, format!("table `{}`: {e}", table.name)))?;
    let format = *format;
    let (needed, post): (Arc<[bool]>, Arc<ScanPost>) = (needed.into(), Arc::new(post));
    Ok(GatewaySource::with_parser(
        gateway,
        Arc::new(move || {
            Box::new(GatewayRowParser {
                parser: RowParser::new(table.clone(), needed.clone(), post.clone()),
                format,
            }) as Box<dyn ParseLine<Row>>
        }),
    ))
}

/// The objects under an S3 table's path as a source of rows (listed now, on the driver): each
/// object one split, its lines parsed like a file's of the table's format (`needed` and `post`
/// as for files); bad lines follow the engine's bad-record policy, named by `s3://bucket/key`
/// and line.
pub fn s3_row_source(table: Arc<TableDef>, needed: Vec<bool>, post: ScanPost) -> Result<crate::source::s3::S3Source<Row>, SqlError> {
    let Connector::S3(t) = &table.connector else {
        return Err(SqlError::at(table.pos, format!("table `{}` is not an S3 table", table.name)));
    };
    let (format, chunk) = (t.format, t.read_chunk_bytes);
    let (needed, post): (Arc<[bool]>, Arc<ScanPost>) = (needed.into(), Arc::new(post));
    let (parsers_table, name, pos) = (table.clone(), table.name.clone(), table.pos);
    let factory: crate::source::s3::S3ParserFactory<Row> = Arc::new(move || {
        Box::new(GatewayRowParser {
            parser: RowParser::new(parsers_table.clone(), needed.clone(), post.clone()),
            format,
        }) as Box<dyn ParseLine<Row>>
    });
    crate::source::s3::S3Source::with_parser(&t.path, &t.options, factory)
        .map(|s| s.chunk_bytes(chunk))
        .map_err(|e| SqlError::at(pos, format!("table `{name}`: {e}")))
}

/// One gateway event (or a line of an S3 object) parsed like one line of the table's format.
struct GatewayRowParser {
    parser: RowParser,
    format: Format,
}

impl ParseLine<Row> for GatewayRowParser {
    fn parse(&mut self, line: &[u8], _info: &LineInfo, out: &mut Vec<Row>) -> std::result::Result<(), BadLine> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.parser.parse(self.format, line, None, out).map_err(|b| BadLine {
            field: b.field,
            message: b.message,
        })
    }
}

impl RowFileSource {
    /// The reader of split `split` on this shard, reading the split alone (no parallel parse).
    pub(crate) fn split_reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> RowFileReader {
        let range = self.splits[split].clone();
        self.template(ctx).range(range.path, range.start, range.end, (range.start == 0).then_some(0))
    }

    /// Does the scan read CSV and can it write its rows as CSV text without building them
    /// (see [`RowParser::parse_csv_to_csv`])?
    pub(crate) fn copies_to_csv(&self) -> bool {
        self.format == Format::Csv && copy_slots(&self.table, &self.post).is_some()
    }

    /// Number of splits (files or byte ranges of files).
    pub fn split_total(&self) -> usize {
        self.splits.len()
    }
}

impl Source<Row> for RowFileSource {
    fn name(&self) -> String {
        self.table.name.clone()
    }
    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.splits.len())
    }
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<Row>>> {
        if let Some(parallel) = self.parallel.as_ref().filter(|_| ctx.shards > 1) {
            let session = parallel.join(ctx);
            return Ok(Box::new(super::parallel_file::OrderedFileReader::new(
                session,
                self.template(ctx),
                self.splits[split].path.clone(),
                ctx.shard,
            )));
        }
        Ok(Box::new(self.split_reader(split, ctx)))
    }

    fn shard_work(&self, ctx: &mut BuildCtx<'_>) -> Result<Option<LocalBoxFuture<'static, Result<()>>>> {
        let Some(parallel) = self.parallel.as_ref().filter(|_| ctx.shards > 1) else {
            return Ok(None);
        };
        // The file is split 0, read by shard 0; every other shard parses chunks for it.
        if ctx.shard == 0 {
            return Ok(None);
        }
        let session = parallel.join(ctx);
        let path = self.splits[0].path.clone();
        Ok(Some(Box::pin(super::parallel_file::parse_ahead(session, self.template(ctx), path, ctx.shard))))
    }
}

/// What it takes to build a [`RowFileReader`] for any byte range of the table's files on one
/// shard.
pub(crate) struct ReaderTemplate {
    format: Format,
    policy: ErrorPolicy,
    max_line: usize,
    chunk_bytes: usize,
    metrics: Arc<OperatorMetrics>,
    table: Arc<TableDef>,
    needed: Arc<[bool]>,
    post: Arc<ScanPost>,
}

impl ReaderTemplate {
    /// A reader of the lines of `path` that start in `[start, end)`; `lines_before`: the lines
    /// of the file before the range's first line, if known (else counted when a bad line
    /// fails the job).
    pub(crate) fn range(&self, path: PathBuf, start: u64, end: u64, lines_before: Option<u64>) -> RowFileReader {
        RowFileReader {
            format: self.format,
            path,
            file: None,
            // A later range starts at its first line start: after the newline at or after
            // `start - 1` (the line running into the range belongs to the range before).
            offset: start.saturating_sub(1),
            skipping: start > 0,
            range_start: start,
            range_end: end,
            lines_before,
            pending: Vec::new(),
            start: 0,
            line_no: 0,
            eof: false,
            done: false,
            policy: self.policy.clone(),
            max_line: self.max_line,
            chunk_bytes: self.chunk_bytes,
            metrics: self.metrics.clone(),
            parser: RowParser::new(self.table.clone(), self.needed.clone(), self.post.clone()),
            row_ends: None,
        }
    }
}

impl RowFileSource {
    fn template(&self, ctx: &mut BuildCtx<'_>) -> ReaderTemplate {
        ReaderTemplate {
            format: self.format,
            policy: ctx.config.on_bad_record.clone(),
            max_line: ctx.config.max_line_bytes,
            chunk_bytes: ctx.config.file_read_chunk_bytes,
            metrics: ctx.operator_metrics(&format!("source:{}", self.table.name)),
            table: self.table.clone(),
            needed: self.needed.clone(),
            post: self.post.clone(),
        }
    }

    /// Read a lone whole file (one split) in order on shard 0 while the other shards parse
    /// its chunks of `chunk_bytes` ahead, at most `ahead` chunks each (see
    /// [`super::parallel_file`]). No effect on byte-range splits, several files, files not
    /// larger than one chunk, or `chunk_bytes = 0`.
    pub fn with_parallel_parse(mut self, chunk_bytes: u64, ahead: usize) -> Self {
        if chunk_bytes == 0 || ahead == 0 || self.splits.len() != 1 || self.splits[0].start != 0 || self.splits[0].end != u64::MAX {
            return self;
        }
        let Ok(meta) = std::fs::metadata(&self.splits[0].path) else { return self };
        if meta.len() <= chunk_bytes {
            return self;
        }
        self.parallel = Some(super::parallel_file::ParallelParse::new(chunk_bytes, meta.len().div_ceil(chunk_bytes), ahead));
        self
    }
}

pub(crate) struct RowFileReader {
    format: Format,
    path: PathBuf,
    file: Option<std::rc::Rc<BufferedFile>>,
    /// Next byte offset to read.
    offset: u64,
    /// Still skipping the bytes before the range's first line start (through the first newline).
    skipping: bool,
    /// The range: lines starting in `[range_start, range_end)`.
    range_start: u64,
    range_end: u64,
    /// Lines of the file before the range's first line (counted on demand, for error messages).
    lines_before: Option<u64>,
    /// Bytes read but not yet consumed (an incomplete last line).
    pending: Vec<u8>,
    /// Bytes of `pending` already consumed.
    start: usize,
    /// Lines of the range read so far.
    line_no: u64,
    eof: bool,
    /// Every line of the range was read.
    done: bool,
    policy: ErrorPolicy,
    max_line: usize,
    /// Bytes per read request.
    chunk_bytes: usize,
    metrics: Arc<OperatorMetrics>,
    parser: RowParser,
    /// When set, for every row handed out: the file offset after its line and the lines of
    /// the range read through it (positions inside a chunk parsed ahead).
    row_ends: Option<Vec<(u64, u64)>>,
}

/// Why a row is bad: the column (if known) and what was wrong.
pub(crate) struct BadRow {
    pub field: Option<String>,
    pub message: String,
}

fn bad_row(field: Option<&str>, message: impl Into<String>) -> BadRow {
    BadRow {
        field: field.map(str::to_string),
        message: message.into(),
    }
}

/// Message metadata for a table's metadata columns (Kafka tables).
pub struct RowMetadata<'a> {
    pub timestamp: i64,
    pub partition: i32,
    pub offset: i64,
    pub topic: &'a Str,
}

/// Parses one record's text (a file line, a Kafka value) into table rows: CSV or JSON fields
/// by the table's physical columns (only the `needed` ones), then computed and metadata
/// columns, the fused filter and projection. Shared by the filesystem and Kafka sources.
pub(crate) struct RowParser {
    table: Arc<TableDef>,
    program: ScanProgram,
    /// The program's direct form, used instead when there is one.
    direct: Option<DirectProgram>,
    physical: Row,
    /// The table row when it differs from the physical one (reused).
    wide: Row,
    fields: Vec<(usize, usize)>,
    needed: Arc<[bool]>,
    /// The physical columns read, in order (CSV: the others stay NULL in `physical`).
    read_columns: Vec<usize>,
    /// The last physical column read: CSV fields after it are only counted.
    last_needed: usize,
    /// The line [`RowParser::split_next_line`] split into `fields` (its address and length
    /// without `\r`) and its field count, for the next [`RowParser::parse`] of that line.
    presplit: Option<(usize, usize, usize)>,
    /// Set by [`RowFileReader::write_csv_text`] (the fused copy): the output columns, each a
    /// physical value or a constant.
    copy: Option<Vec<CopySlot>>,
    /// After a CSV parse, when `copy` is set: bit `k` (`k < 64`) is set if physical column
    /// `k` is an integer whose field is its canonical text (plain digits, no `+`, no leading
    /// zero, not `-0`).
    canonical_ints: u64,
}

/// Where a reader puts what it parses from each line: rows ([`Vec<Row>`]), or their CSV text
/// (a scan fused with a CSV file sink, see [`super::csv_copy`]).
pub(crate) trait ParsedRows {
    /// Rows put here so far.
    fn count(&self) -> usize;
    /// Parse `line` (non-empty, without its newline) in `format` and put its row here (unless
    /// the fused filter drops it).
    fn parse_line(&mut self, parser: &mut RowParser, format: Format, line: &[u8]) -> Result<(), BadRow>;
}

impl ParsedRows for Vec<Row> {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn parse_line(&mut self, parser: &mut RowParser, format: Format, line: &[u8]) -> Result<(), BadRow> {
        parser.parse(format, line, None, self)
    }
}

/// One output column of a scan whose rows are written as text straight from the physical
/// values (see [`RowParser::parse_csv_to_csv`]).
#[derive(Clone, Debug)]
pub(crate) enum CopySlot {
    Physical(usize),
    Const(Value),
}

impl RowParser {
    pub(crate) fn new(table: Arc<TableDef>, needed: Arc<[bool]>, post: Arc<ScanPost>) -> Self {
        Self {
            copy: None,
            read_columns: (0..table.physical.len()).filter(|k| needed.get(*k).copied().unwrap_or(false)).collect(),
            program: ScanProgram::new(&table, &post),
            direct: DirectProgram::new(&table, &post),
            table,
            physical: Row::new(),
            wide: Row::new(),
            fields: Vec::new(),
            last_needed: needed.iter().rposition(|n| *n).unwrap_or(0),
            presplit: None,
            needed,
            canonical_ints: 0,
        }
    }

    /// Parse `text` (non-empty, without its newline) in `format` and append its row to `out`
    /// (unless the fused filter drops it).
    pub(crate) fn parse(&mut self, format: Format, text: &[u8], meta: Option<&RowMetadata<'_>>, out: &mut Vec<Row>) -> Result<(), BadRow> {
        match format {
            Format::Csv => self.parse_csv(text)?,
            Format::Json => self.parse_json(text)?,
        }
        self.emit(meta, out)
    }

    /// Parse the CSV `line` (non-empty, without its newline) and append its output row to
    /// `out` as a CSV line, encoded straight from the physical values: the same bytes as
    /// [`RowParser::parse`] then [`CsvRowEncoder::write`], and the same errors.
    ///
    /// Panics without [`RowFileReader::write_csv_text`] (the planner checks [`copy_slots`]).
    #[inline]
    pub(crate) fn parse_csv_to_csv(&mut self, line: &[u8], encoder: &mut CsvRowEncoder, out: &mut Vec<u8>) -> Result<(), BadRow> {
        self.parse_csv(line)?;
        let (Some(direct), Some(copy)) = (&self.direct, &self.copy) else {
            panic!("parse_csv_to_csv without write_csv_text (planner bug)");
        };
        if let Err(rt) = direct.check_rowtime(&self.physical) {
            return Err(bad_row(Some(&self.table.columns[rt].0), "the time attribute is NULL"));
        }
        // An integer whose text is what the encoder would write is copied as it is.
        let (physical, fields, canonical) = (&self.physical, &self.fields, self.canonical_ints);
        encoder.write_fields(
            copy.iter().map(|s| match s {
                CopySlot::Physical(i) if *i < 64 && canonical >> *i & 1 == 1 => {
                    let (s, e) = fields[*i];
                    CsvField::Text(&line[s..e])
                }
                CopySlot::Physical(i) => CsvField::Value(&physical[*i]),
                CopySlot::Const(v) => CsvField::Value(v),
            }),
            out,
        );
        Ok(())
    }

    /// A raw value: the one physical STRING column holds the whole text.
    pub(crate) fn parse_raw(&mut self, text: &[u8], meta: Option<&RowMetadata<'_>>, out: &mut Vec<Row>) -> Result<(), BadRow> {
        let text = std::str::from_utf8(text).map_err(|e| bad_row(None, format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1)))?;
        self.physical.clear();
        self.physical.push(Value::Str(Str::from(text)));
        self.emit(meta, out)
    }

    fn emit(&mut self, meta: Option<&RowMetadata<'_>>, out: &mut Vec<Row>) -> Result<(), BadRow> {
        if let Some(direct) = &self.direct {
            return direct
                .emit(&mut self.physical, meta, out)
                .map_err(|rt| bad_row(Some(&self.table.columns[rt].0), "the time attribute is NULL"));
        }
        let rowtime = self.table.rowtime;
        let r = self
            .program
            .emit(&self.table, &mut self.physical, &mut self.wide, meta, out, |row| match rowtime {
                Some((rt, _)) if row[rt].is_null() => Err(rt),
                _ => Ok(()),
            });
        r.map_err(|rt| bad_row(Some(&self.table.columns[rt].0), "the time attribute is NULL"))
    }
}

impl RowParser {
    /// The length of the first line of `text` (up to its newline) of a CSV file, found in the
    /// same pass that splits it into fields for the next [`RowParser::parse`] of that line;
    /// `None` if the line has quotes or runs to the last few bytes of `text` (find the newline
    /// otherwise: the parse splits the line itself).
    #[inline]
    pub(crate) fn split_next_line(&mut self, text: &[u8]) -> Option<usize> {
        self.presplit = None;
        self.fields.clear();
        let (nl, total) = split_plain_first_line(text, self.last_needed + 1, &mut self.fields)?;
        let len = if nl > 0 && text[nl - 1] == b'\r' { nl - 1 } else { nl };
        self.presplit = Some((text.as_ptr() as usize, len, total));
        Some(nl)
    }

    fn parse_csv(&mut self, line: &[u8]) -> Result<(), BadRow> {
        // Field byte ranges of the columns up to the last one read; the fields after it are
        // only counted.
        let want = self.last_needed + 1;
        let total = match self.presplit.take() {
            Some((at, len, total)) if at == line.as_ptr() as usize && len == line.len() => total,
            _ => {
                self.fields.clear();
                match split_plain(line, want, &mut self.fields) {
                    Some(total) => total,
                    None => {
                        self.fields.clear();
                        split_quoted(line, want, &mut self.fields)?
                    }
                }
            }
        };
        let phys = &self.table.physical;
        if total != phys.len() {
            return Err(bad_row(None, format!("{total} fields, the table has {} physical columns", phys.len())));
        }
        // The physical row keeps one value per physical column from line to line: the columns
        // not read stay NULL, the others are overwritten (the emit step may have moved values
        // out, or appended the table's other columns).
        if self.physical.len() > phys.len() {
            self.physical.truncate(phys.len());
        } else if self.physical.len() < phys.len() {
            self.physical.clear();
            self.physical.resize(phys.len(), Value::Null);
        }
        self.canonical_ints = 0;
        let track = self.copy.is_some();
        for &k in &self.read_columns {
            let (name, ty) = &phys[k];
            let (s, e) = self.fields[k];
            let raw = &line[s..e];
            if ty.is_integer() {
                // Fast path: plain digits (what `parse_field` accepts, without the text work).
                if let Some(v) = parse_int_field(line, s, e).filter(|v| int_fits(*v, *ty)) {
                    self.physical[k] = Value::Int(v);
                    if track && k < 64 && is_canonical_int(raw) {
                        self.canonical_ints |= 1 << k;
                    }
                    continue;
                }
            }
            let text: std::borrow::Cow<'_, [u8]> = if raw.first() == Some(&b'"') && raw.len() >= 2 {
                let inner = &raw[1..raw.len() - 1];
                if inner.windows(2).any(|w| w == b"\"\"") {
                    let mut v = Vec::with_capacity(inner.len());
                    let mut j = 0;
                    while j < inner.len() {
                        v.push(inner[j]);
                        j += if inner[j] == b'"' { 2 } else { 1 };
                    }
                    v.into()
                } else {
                    inner.into()
                }
            } else {
                raw.into()
            };
            let Ok(text) = std::str::from_utf8(&text) else {
                return Err(bad_row(Some(name), "not UTF-8"));
            };
            self.physical[k] = parse_field(text, *ty).map_err(|m| bad_row(Some(name), m))?;
        }
        Ok(())
    }

    fn parse_json(&mut self, line: &[u8]) -> Result<(), BadRow> {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| bad_row(None, format!("not JSON: {e}")))?;
        let serde_json::Value::Object(map) = v else {
            return Err(bad_row(None, "not a JSON object"));
        };
        self.physical.clear();
        let table = self.table.clone();
        for (k, (name, ty)) in table.physical.iter().enumerate() {
            if !self.needed[k] {
                self.physical.push(Value::Null);
                continue;
            }
            // A flattened ROW field `row.field` is the nested object's member.
            let found = map.get(name).or_else(|| {
                let (row, field) = name.split_once('.')?;
                map.get(row)?.as_object()?.get(field)
            });
            let val = match found {
                None | Some(serde_json::Value::Null) => Value::Null,
                Some(serde_json::Value::String(s)) => parse_field(s, *ty).map_err(|m| bad_row(Some(name), m))?,
                Some(serde_json::Value::Bool(b)) if *ty == SqlType::Boolean => Value::Bool(*b),
                Some(other) => parse_field(&other.to_string(), *ty).map_err(|m| bad_row(Some(name), m))?,
            };
            self.physical.push(val);
        }
        Ok(())
    }
}

impl RowFileReader {
    /// The bad-record error for the current line (its line number in the whole file).
    fn bad(&mut self, field: Option<&str>, message: String) -> WeirError {
        let before = match self.lines_before {
            Some(n) => n,
            None => {
                // Only on the way to failing the job: count the lines before the range.
                let n = count_lines_before(&self.path, self.range_start).unwrap_or(0);
                self.lines_before = Some(n);
                n
            }
        };
        WeirError::BadRecord {
            file: self.path.display().to_string(),
            line: before + self.line_no,
            field: field.map(str::to_string),
            message,
        }
    }

    /// A bad line: counted and dropped (`skip`), or the job's error.
    fn bad_line(&mut self, field: Option<&str>, message: String) -> Result<()> {
        match self.policy {
            ErrorPolicy::Skip => {
                OperatorMetrics::add(&self.metrics.bad_records, 1);
                Ok(())
            }
            _ => Err(self.bad(field, message)),
        }
    }

    /// Parse one line into `out` (a bad line is skipped or fails, by the policy).
    fn parse_line<O: ParsedRows>(&mut self, line: &[u8], out: &mut O) -> Result<()> {
        self.line_no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        match out.parse_line(&mut self.parser, self.format, line) {
            Ok(()) => Ok(()),
            Err(b) => self.bad_line(b.field.as_deref(), b.message),
        }
    }

    /// Read the next chunk into `pending`; returns the number of bytes read (0 at end).
    async fn fill(&mut self) -> Result<usize> {
        let file = self.file.as_ref().expect("opened");
        let chunk = crate::shard::inflight::read_at(file, self.offset, self.chunk_bytes)
            .await
            .map_err(|e| WeirError::io("reading", &self.path, e))?;
        self.pending.extend_from_slice(&chunk);
        self.offset += chunk.len() as u64;
        Ok(chunk.len())
    }
}

/// Work fused into a scan, applied to each table row inside the reader (no intermediate wide
/// row leaves the reader): a filter, then a projection.
#[derive(Clone, Debug, Default)]
pub struct ScanPost {
    pub predicate: Option<super::expr::Expr>,
    pub project: Option<Arc<[super::expr::Expr]>>,
    /// Table columns read by the predicate, the projection or later operators (`None`: all);
    /// the others are left NULL in the table row.
    pub columns: Option<Arc<[bool]>>,
    /// Set on event-time scans whose predicate runs in the reader: a row the predicate drops
    /// is emitted as a [`DroppedRow`] placeholder instead, so the source loop can advance the
    /// watermark by its event time before discarding it (Flink generates watermarks before
    /// the filter).
    pub dropped_rows: Option<DroppedRow>,
}

/// The placeholder of a row a scan's fused predicate dropped: only its event time, at output
/// column `rowtime`; every real output row has exactly `width` columns and a placeholder never
/// does, so [`DroppedRow::is_real`] tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DroppedRow {
    pub rowtime: usize,
    pub width: usize,
}

impl DroppedRow {
    pub fn new(rowtime: usize, width: usize) -> Self {
        assert!(rowtime < width, "the time attribute {rowtime} is not an output column of {width}");
        Self { rowtime, width }
    }

    /// The placeholder of a dropped row with event time `ts` (a time value): `rowtime + 1`
    /// columns, or `width + 1` when that would be `width`.
    fn placeholder(&self, ts: &Value) -> Row {
        let len = if self.rowtime + 1 == self.width { self.width + 1 } else { self.rowtime + 1 };
        let mut row: Row = std::iter::repeat_n(Value::Null, len).collect();
        row[self.rowtime] = ts.clone();
        row
    }

    /// False for placeholders.
    #[inline]
    pub fn is_real(&self, row: &Row) -> bool {
        row.len() == self.width
    }
}

impl ScanPost {
    /// Read only the table columns `needed` (and the time attribute).
    pub fn reading(mut self, table: &TableDef, needed: &[bool]) -> Self {
        let mut cols: Vec<bool> = (0..table.columns.len()).map(|k| needed.get(k).copied().unwrap_or(true)).collect();
        if let Some((rt, _)) = table.rowtime {
            cols[rt] = true;
        }
        self.columns = Some(cols.into());
        self
    }
}

/// One output column of a fused projection: a column moved out of the input row (it is read
/// by nothing else), or an expression evaluated on it.
#[derive(Clone, Debug)]
enum Slot {
    Move(usize),
    Eval(super::expr::Expr),
}

/// A projection compiled for rows of `width` columns: columns read once are moved, not cloned.
#[derive(Clone, Debug)]
pub(crate) struct Projection {
    slots: Vec<Slot>,
}

impl Projection {
    pub(crate) fn new(exprs: &[super::expr::Expr], width: usize) -> Self {
        let mut uses = vec![0usize; width];
        for e in exprs {
            e.for_each_column(&mut |i| {
                if let Some(u) = uses.get_mut(i) {
                    *u += 1;
                }
            });
        }
        let slots = exprs
            .iter()
            .map(|e| match e {
                super::expr::Expr::Col(i) if uses.get(*i) == Some(&1) => Slot::Move(*i),
                other => Slot::Eval(other.clone()),
            })
            .collect();
        Self { slots }
    }

    /// The projection of `row` (left with the moved columns NULL).
    #[inline]
    pub(crate) fn project(&self, row: &mut Row) -> Row {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Move(i) => std::mem::take(&mut row[*i]),
                Slot::Eval(e) => e.eval(row),
            })
            .collect()
    }

    /// Append the projection of `row` to `out` (built in place: the new row is not moved
    /// again); `row` is left with the moved columns NULL.
    #[inline]
    pub(crate) fn apply(&self, row: &mut Row, out: &mut Vec<Row>) {
        out.push(Row::new());
        let o = out.last_mut().expect("just pushed");
        for slot in &self.slots {
            o.push(match slot {
                Slot::Move(i) => std::mem::take(&mut row[*i]),
                Slot::Eval(e) => e.eval(row),
            });
        }
    }
}

/// A [`ScanPost`] compiled against its table, once per reader: how the table row is completed
/// from the physical values and how the fused filter and projection turn it into the output
/// row, without intermediate rows where the layout allows.
///
/// Invariant: the output is exactly what evaluating the table's computed columns, the predicate
/// and the projection expressions on the full table row gives (columns nobody reads are NULL).
#[derive(Clone, Debug)]
pub(crate) struct ScanProgram {
    /// The layout is the physical columns in order (the physical row is the table row).
    identity: bool,
    /// The layout starts with the physical columns in order: the table row is the physical row
    /// with the remaining columns appended (`extra`, NULL where unread).
    prefix: Option<Vec<Option<ColumnFn>>>,
    /// Table columns read (`None`: all).
    columns: Option<Arc<[bool]>>,
    predicate: Option<super::expr::Expr>,
    project: Option<Projection>,
    /// Placeholders for dropped rows, and the table row's time attribute they carry.
    dropped_rows: Option<(DroppedRow, usize)>,
}

impl ScanProgram {
    pub(crate) fn new(table: &TableDef, post: &ScanPost) -> Self {
        let nphys = table.physical.len();
        let read = |k: usize| post.columns.as_ref().is_none_or(|c| c[k]);
        let identity = super::nexmark::is_identity_layout(&table.layout, nphys);
        let is_prefix = table.layout.len() >= nphys
            && table.layout[..nphys]
                .iter()
                .enumerate()
                .all(|(k, c)| matches!(c, ColumnSource::Physical(i) if *i == k));
        let prefix = (is_prefix && !identity).then(|| {
            (nphys..table.layout.len())
                .map(|k| read(k).then(|| ColumnFn::compile(table, k, &table.layout[k])))
                .collect()
        });
        let project = post.project.as_ref().map(|exprs| Projection::new(exprs, table.layout.len()));
        Self {
            identity,
            prefix,
            columns: post.columns.clone(),
            predicate: post.predicate.clone(),
            project,
            dropped_rows: post.dropped_rows.zip(table.rowtime.map(|(rt, _)| rt)),
        }
    }

    /// The table row of the physical values in `physical` (`wide` is a reused buffer for
    /// layouts that are not a prefix), filtered and projected, appended to `out`. `check` sees
    /// the table row first (an `Err` drops it and is returned).
    pub(crate) fn emit<E>(
        &self,
        table: &TableDef,
        physical: &mut Row,
        wide: &mut Row,
        meta: Option<&RowMetadata<'_>>,
        out: &mut Vec<Row>,
        check: impl FnOnce(&Row) -> Result<(), E>,
    ) -> Result<(), E> {
        let row: &mut Row = if self.identity {
            physical
        } else if let Some(extra) = &self.prefix {
            let nphys = physical.len();
            for c in extra {
                let v = match c {
                    None => Value::Null,
                    Some(f) => f.value(&physical[..nphys], meta),
                };
                physical.push(v);
            }
            physical
        } else {
            wide.clear();
            for (k, c) in table.layout.iter().enumerate() {
                if self.columns.as_ref().is_some_and(|n| !n[k]) {
                    wide.push(Value::Null);
                    continue;
                }
                wide.push(column_value(table, k, c, physical, meta));
            }
            wide
        };
        check(row)?;
        if let Some(p) = &self.predicate {
            if !p.test(row) {
                if let Some((dropped, rt)) = &self.dropped_rows {
                    out.push(dropped.placeholder(&row[*rt]));
                }
                return Ok(());
            }
        }
        match &self.project {
            None => out.push(std::mem::take(row)),
            Some(p) => p.apply(row, out),
        }
        Ok(())
    }
}

/// The value of table column `k` (produced by `c`) given the physical values.
#[inline]
fn column_value(table: &TableDef, k: usize, c: &ColumnSource, physical: &[Value], meta: Option<&RowMetadata<'_>>) -> Value {
    match c {
        ColumnSource::Physical(i) => physical[*i].clone(),
        ColumnSource::Computed(e) => e.eval(physical),
        ColumnSource::Metadata(key) => match meta {
            None => Value::Null,
            Some(m) => match key {
                MetadataKey::Timestamp => match table.columns[k].1 {
                    SqlType::Timestamp(_) => Value::Timestamp(m.timestamp),
                    _ => Value::TimestampLtz(m.timestamp),
                },
                MetadataKey::Partition => Value::Int(m.partition as i64),
                MetadataKey::Offset => Value::Int(m.offset),
                MetadataKey::Topic => Value::Str(m.topic.clone()),
            },
        },
    }
}

/// A table column compiled against the physical values, once per reader: physical values and
/// column-only computed columns such as `TO_TIMESTAMP_LTZ(ms, 3)` are read without walking an
/// expression tree. Invariant: [`ColumnFn::value`] is exactly [`column_value`] of the source.
#[derive(Clone, Debug)]
enum ColumnFn {
    /// A copy of physical value `i`.
    Physical(usize),
    /// `TO_TIMESTAMP_LTZ(physical[i], precision)`: an integer as epoch milliseconds, or as
    /// epoch seconds when `seconds` (NULL on overflow or a non-integer).
    EpochLtz { col: usize, seconds: bool },
    /// Any other computed column.
    Eval(super::expr::Expr),
    /// Message metadata; `ltz`: a timestamp column declared `TIMESTAMP_LTZ`.
    Metadata(MetadataKey, bool),
}

impl ColumnFn {
    /// The function computing table column `k` (produced by `c`).
    fn compile(table: &TableDef, k: usize, c: &ColumnSource) -> Self {
        use super::expr::{Expr, Func};
        match c {
            ColumnSource::Physical(i) => ColumnFn::Physical(*i),
            ColumnSource::Computed(Expr::Col(i)) => ColumnFn::Physical(*i),
            ColumnSource::Computed(Expr::Call(Func::ToTimestampLtz { precision }, args)) if matches!(args.as_slice(), [Expr::Col(_)]) => {
                let [Expr::Col(col)] = args.as_slice() else { unreachable!("matched above") };
                ColumnFn::EpochLtz {
                    col: *col,
                    seconds: *precision == 0,
                }
            }
            ColumnSource::Computed(e) => ColumnFn::Eval(e.clone()),
            ColumnSource::Metadata(key) => ColumnFn::Metadata(*key, !matches!(table.columns[k].1, SqlType::Timestamp(_))),
        }
    }

    /// Call `f` with every physical column read.
    fn for_each_column(&self, f: &mut dyn FnMut(usize)) {
        match self {
            ColumnFn::Physical(i) | ColumnFn::EpochLtz { col: i, .. } => f(*i),
            ColumnFn::Eval(e) => e.for_each_column(f),
            ColumnFn::Metadata(..) => {}
        }
    }

    #[inline(always)]
    fn value(&self, physical: &[Value], meta: Option<&RowMetadata<'_>>) -> Value {
        match self {
            ColumnFn::Physical(i) => match physical.get(*i) {
                Some(Value::Int(v)) => Value::Int(*v),
                Some(v) => v.clone(),
                None => Value::Null,
            },
            ColumnFn::EpochLtz { col, seconds } => match physical.get(*col) {
                Some(Value::Int(v)) if *seconds => v.checked_mul(1000).map(Value::TimestampLtz).unwrap_or(Value::Null),
                Some(Value::Int(v)) => Value::TimestampLtz(*v),
                _ => Value::Null,
            },
            _ => self.value_slow(physical, meta),
        }
    }

    /// [`ColumnFn::value`] of the other forms (kept out of line).
    #[inline(never)]
    fn value_slow(&self, physical: &[Value], meta: Option<&RowMetadata<'_>>) -> Value {
        match self {
            ColumnFn::Physical(_) | ColumnFn::EpochLtz { .. } => self.value(physical, meta),
            ColumnFn::Eval(e) => e.eval(physical),
            ColumnFn::Metadata(key, ltz) => match meta {
                None => Value::Null,
                Some(m) => match key {
                    MetadataKey::Timestamp if *ltz => Value::TimestampLtz(m.timestamp),
                    MetadataKey::Timestamp => Value::Timestamp(m.timestamp),
                    MetadataKey::Partition => Value::Int(m.partition as i64),
                    MetadataKey::Offset => Value::Int(m.offset),
                    MetadataKey::Topic => Value::Str(m.topic.clone()),
                },
            },
        }
    }
}

/// One output column of a [`DirectProgram`].
#[derive(Clone, Debug)]
enum DirectSlot {
    /// Physical value `i`, moved out (nothing else reads it).
    Move(usize),
    /// A table column computed from the physical values (copies of physical values included).
    Column(ColumnFn),
    /// An expression over physical columns only (the layout starts with them).
    Eval(super::expr::Expr),
    Const(Value),
}

/// A scan without a filter whose projection reads only physical columns, compiled computed
/// columns and constants: each output row is built straight from the physical values, without
/// the table row in between.
///
/// Invariant: the output is exactly [`ScanProgram::emit`]'s for the same scan, and a row whose
/// time attribute is NULL is rejected the same way.
#[derive(Clone, Debug)]
pub(crate) struct DirectProgram {
    /// The time attribute: its table column and how it is computed (checked for NULL first).
    rowtime: Option<(usize, ColumnFn)>,
    slots: Vec<DirectSlot>,
}

impl DirectProgram {
    /// The direct form of `post` over `table`, if it has one.
    pub(crate) fn new(table: &TableDef, post: &ScanPost) -> Option<Self> {
        use super::expr::Expr;
        let nphys = table.physical.len();
        let is_prefix = table.layout.len() >= nphys
            && table.layout[..nphys]
                .iter()
                .enumerate()
                .all(|(k, c)| matches!(c, ColumnSource::Physical(i) if *i == k));
        if post.predicate.is_some() || !is_prefix {
            return None;
        }
        let exprs = post.project.as_ref()?;
        let read = |k: usize| post.columns.as_ref().is_none_or(|c| c.get(k).copied().unwrap_or(true));
        let mut slots = Vec::with_capacity(exprs.len());
        for e in exprs.iter() {
            slots.push(match e {
                Expr::Col(k) if !read(*k) => DirectSlot::Const(Value::Null),
                Expr::Col(k) => DirectSlot::Column(ColumnFn::compile(table, *k, table.layout.get(*k)?)),
                Expr::Lit(v) => DirectSlot::Const(v.clone()),
                other => {
                    let mut physical_only = true;
                    other.for_each_column(&mut |k| physical_only &= k < nphys && read(k));
                    if !physical_only {
                        return None;
                    }
                    DirectSlot::Eval(other.clone())
                }
            });
        }
        let rowtime = table.rowtime.map(|(rt, _)| (rt, ColumnFn::compile(table, rt, &table.layout[rt])));
        // Physical values read once are moved into the output row, not cloned.
        let mut uses = vec![0usize; nphys];
        let mut count = |i: usize| {
            if let Some(u) = uses.get_mut(i) {
                *u += 1;
            }
        };
        if let Some((_, f)) = &rowtime {
            f.for_each_column(&mut count);
        }
        for s in &slots {
            match s {
                DirectSlot::Column(f) => f.for_each_column(&mut count),
                DirectSlot::Eval(e) => e.for_each_column(&mut count),
                DirectSlot::Move(_) | DirectSlot::Const(_) => {}
            }
        }
        for s in &mut slots {
            if let DirectSlot::Column(ColumnFn::Physical(i)) = s {
                if uses.get(*i) == Some(&1) {
                    *s = DirectSlot::Move(*i);
                }
            }
        }
        Some(Self { rowtime, slots })
    }

    /// The output columns as physical values and constants, if that is all they are.
    fn copy_slots(&self) -> Option<Vec<CopySlot>> {
        self.slots
            .iter()
            .map(|s| match s {
                DirectSlot::Move(i) | DirectSlot::Column(ColumnFn::Physical(i)) => Some(CopySlot::Physical(*i)),
                DirectSlot::Const(v) => Some(CopySlot::Const(v.clone())),
                DirectSlot::Column(_) | DirectSlot::Eval(_) => None,
            })
            .collect()
    }

    /// `Err(column)` if the time attribute of the row of `physical` is NULL (a table without
    /// metadata columns).
    #[inline]
    fn check_rowtime(&self, physical: &Row) -> Result<(), usize> {
        match &self.rowtime {
            Some((rt, f)) if f.value(physical, None).is_null() => Err(*rt),
            _ => Ok(()),
        }
    }

    /// Append the output row of the physical values in `physical` to `out` (left with the
    /// moved values NULL); `Err(column)`: the time attribute is NULL (nothing appended).
    #[inline]
    pub(crate) fn emit(&self, physical: &mut Row, meta: Option<&RowMetadata<'_>>, out: &mut Vec<Row>) -> Result<(), usize> {
        if let Some((rt, f)) = &self.rowtime {
            if f.value(physical, meta).is_null() {
                return Err(*rt);
            }
        }
        // Built in place (a row moved into `out` is a 136-byte copy, a call to memcpy).
        out.extend(std::iter::once_with(Row::new));
        let row = out.last_mut().expect("just added");
        for slot in &self.slots {
            row.push(match slot {
                DirectSlot::Move(i) => std::mem::take(&mut physical[*i]),
                DirectSlot::Column(f) => f.value(physical, meta),
                DirectSlot::Eval(e) => e.eval(physical),
                DirectSlot::Const(v) => v.clone(),
            });
        }
        Ok(())
    }
}

/// The output columns of the scan of `table` with `post` when each is a physical value or a
/// constant: its rows can be written as text without building them ([`RowParser::parse_csv_to_csv`]).
pub(crate) fn copy_slots(table: &TableDef, post: &ScanPost) -> Option<Vec<CopySlot>> {
    DirectProgram::new(table, post)?.copy_slots()
}

/// Which physical columns a scan must produce when the table columns `needed` are read (the
/// time attribute always is): physical columns read directly or by a read computed column.
pub fn physical_needed(table: &TableDef, needed: &[bool]) -> Vec<bool> {
    let mut out = vec![false; table.physical.len()];
    for (k, c) in table.layout.iter().enumerate() {
        let read = needed.get(k).copied().unwrap_or(true) || table.rowtime.is_some_and(|(rt, _)| rt == k);
        if !read {
            continue;
        }
        match c {
            ColumnSource::Physical(i) => out[*i] = true,
            ColumnSource::Computed(e) => e.for_each_column(&mut |i| {
                if let Some(x) = out.get_mut(i) {
                    *x = true;
                }
            }),
            ColumnSource::Metadata(_) => {}
        }
    }
    out
}

/// The high bit of each byte of the result is set exactly where `x` holds byte `b`.
#[inline]
fn bytes_equal(x: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let y = x ^ (0x0101_0101_0101_0101u64 * b as u64);
    // No carry crosses a byte: (y & 0x7f) + 0x7f <= 0xfe.
    !(((y & LOW7) + LOW7) | y | LOW7)
}

/// One bit per byte of `x` (bit `i` for byte `i`) from a word whose bytes are `0x80` or `0`
/// (as [`bytes_equal`] gives).
#[inline]
fn movemask8(x: u64) -> u32 {
    // The multiplier moves bit 8i to bit 56 + i; no two partial products share a bit.
    ((x >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// Masks of where 16 bytes hold each of `bytes` (bit `i` for byte `i`).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn byte_masks16<const N: usize>(block: &[u8], bytes: [u8; N]) -> [u32; N] {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8, _mm_set_epi64x};
    let lo = i64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
    let hi = i64::from_le_bytes(block[8..16].try_into().expect("8 bytes"));
    // SAFETY: the intrinsics only need SSE2, which this build enables (the cfg above); they
    // read no memory.
    unsafe {
        let v = _mm_set_epi64x(hi, lo);
        bytes.map(|b| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))) as u32)
    }
}

/// Masks of where 16 bytes hold each of `bytes` (bit `i` for byte `i`).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn byte_masks16<const N: usize>(block: &[u8], bytes: [u8; N]) -> [u32; N] {
    let lo = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(block[8..16].try_into().expect("8 bytes"));
    bytes.map(|b| movemask8(bytes_equal(lo, b)) | movemask8(bytes_equal(hi, b)) << 8)
}

/// Masks of the commas and quotes in 16 bytes (bit `i` for byte `i`).
#[inline]
fn comma_quote_masks16(block: &[u8]) -> (u32, u32) {
    let [commas, quotes] = byte_masks16(block, [b',', b'"']);
    (commas, quotes)
}

/// The first line of `text` (up to its newline) if it has no quote and its newline lies in
/// the sixteen-byte blocks of `text`: split like [`split_plain`] in the same pass that finds
/// the newline. Returns the newline's index and the number of fields; the line's fields are
/// in `fields` (the last one ends before a `\r` that precedes the newline). `None` otherwise
/// (then `fields` is partly written).
#[inline]
fn split_plain_first_line(text: &[u8], want: usize, fields: &mut Vec<(usize, usize)>) -> Option<(usize, usize)> {
    let mut cut = FieldCuts::new(want, fields);
    let mut base = 0;
    for block in text.chunks_exact(16) {
        let [c, q, n] = byte_masks16(block, [b',', b'"', b'\n']);
        if n != 0 {
            let nl = n.trailing_zeros();
            let before = (1u32 << nl) - 1;
            if q & before != 0 {
                return None;
            }
            cut.commas(c & before, base);
            let nl = base + nl as usize;
            let end = if nl > cut.start && text[nl - 1] == b'\r' { nl - 1 } else { nl };
            return Some((nl, cut.finish(end)));
        }
        if q != 0 {
            return None;
        }
        cut.commas(c, base);
        base += 16;
    }
    None
}

/// The field ranges of one plain line, collected from comma bit masks: the first `want` go
/// to `fields`, the rest are only counted.
struct FieldCuts<'a> {
    want: usize,
    fields: &'a mut Vec<(usize, usize)>,
    /// Where the current field starts.
    start: usize,
    commas: usize,
}

impl<'a> FieldCuts<'a> {
    #[inline]
    fn new(want: usize, fields: &'a mut Vec<(usize, usize)>) -> Self {
        Self {
            want,
            fields,
            start: 0,
            commas: 0,
        }
    }

    /// Record the commas of `mask` (bit i: a comma at `base + i`).
    #[inline]
    fn commas(&mut self, mut mask: u32, base: usize) {
        while mask != 0 {
            if self.fields.len() < self.want {
                let at = base + mask.trailing_zeros() as usize;
                self.fields.push((self.start, at));
                self.start = at + 1;
            }
            self.commas += 1;
            mask &= mask - 1;
        }
    }

    /// The last field ends at `end`; returns the number of fields.
    #[inline]
    fn finish(self, end: usize) -> usize {
        if self.fields.len() < self.want {
            self.fields.push((self.start, end));
        }
        self.commas + 1
    }
}

/// Split a CSV line without quotes into the byte ranges of its first `want` fields (the text
/// between commas), sixteen bytes at a time (SSE2 on x86-64, words elsewhere; a line's last
/// partial block is the line's last sixteen bytes, the bytes already seen masked off); returns
/// the number of fields, or `None` if the line holds a quote (then `fields` is partly written).
#[inline]
fn split_plain(line: &[u8], want: usize, fields: &mut Vec<(usize, usize)>) -> Option<usize> {
    let mut cut = FieldCuts::new(want, fields);
    let mut blocks = line.chunks_exact(16);
    let mut base = 0;
    for block in blocks.by_ref() {
        let (c, q) = comma_quote_masks16(block);
        if q != 0 {
            return None;
        }
        cut.commas(c, base);
        base += 16;
    }
    let rest = blocks.remainder().len();
    if rest > 0 && line.len() >= 16 {
        // The last sixteen bytes, of which the first `16 - rest` were seen.
        let (c, q) = comma_quote_masks16(&line[line.len() - 16..]);
        let seen = 16 - rest;
        if q >> seen != 0 {
            return None;
        }
        cut.commas(c >> seen, base);
    } else if rest > 0 {
        let mut words = blocks.remainder().chunks_exact(8);
        for word in words.by_ref() {
            let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            if bytes_equal(x, b'"') != 0 {
                return None;
            }
            cut.commas(movemask8(bytes_equal(x, b',')), base);
            base += 8;
        }
        for &b in words.remainder() {
            match b {
                b'"' => return None,
                b',' => cut.commas(1, base),
                _ => {}
            }
            base += 1;
        }
    }
    Some(cut.finish(line.len()))
}

/// Split a CSV line with quotes (RFC 4180) into the byte ranges of its first `want` fields
/// (quoted fields keep their quotes; doubled quotes are unescaped by the caller); returns the
/// number of fields.
fn split_quoted(line: &[u8], want: usize, fields: &mut Vec<(usize, usize)>) -> Result<usize, BadRow> {
    let n = line.len();
    let mut i = 0;
    let mut total = 0;
    loop {
        if total >= want && memchr::memchr(b'"', &line[i..]).is_none() {
            // Past the last column read and no quotes left: only the field count matters.
            return Ok(total + memchr::memchr_iter(b',', &line[i..]).count() + 1);
        }
        let start = i;
        if i < n && line[i] == b'"' {
            i += 1;
            loop {
                if i >= n {
                    return Err(bad_row(None, "unterminated quoted field"));
                }
                if line[i] == b'"' {
                    if i + 1 < n && line[i + 1] == b'"' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            if i < n && line[i] != b',' {
                return Err(bad_row(None, "text after a closing quote"));
            }
        } else {
            while i < n && line[i] != b',' {
                i += 1;
            }
        }
        if total < want {
            fields.push((start, i));
        }
        total += 1;
        if i >= n {
            return Ok(total);
        }
        i += 1; // the comma
        if i == n {
            if total < want {
                fields.push((n, n));
            }
            return Ok(total + 1);
        }
    }
}

/// Eight ASCII zeros.
const ZEROS: u64 = 0x3030_3030_3030_3030;

/// The eight bytes of `line` at `at` (`at + 8 <= line.len()`), the first in the low byte.
#[inline]
fn load8(line: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(line[at..at + 8].try_into().expect("8 bytes"))
}

/// The 1 to 8 bytes `line[s..e]` as a word of eight, front-padded with ASCII zeros (the field's
/// first byte in the low byte of the padded text); `None` if `line` is shorter than eight bytes
/// around the field.
#[inline]
fn padded8(line: &[u8], s: usize, e: usize) -> Option<u64> {
    let n = e - s;
    debug_assert!((1..=8).contains(&n));
    // The (8 - n) low bytes hold the padding.
    let pad = if n == 8 { 0 } else { u64::MAX >> (8 * n) };
    if e >= 8 {
        Some((load8(line, e - 8) & !pad) | (ZEROS & pad))
    } else if s + 8 <= line.len() {
        // n < 8 here (e < 8): the field is at the low end of the word.
        Some((load8(line, s) << (8 * (8 - n))) | (ZEROS & pad))
    } else {
        None
    }
}

/// The value of eight ASCII digits (the first in the low byte), or `None` if a byte is not a
/// digit.
#[inline]
fn eight_digits(x: u64) -> Option<u64> {
    // A digit's high nibble is 3 and adding 6 to it does not carry into the high nibble.
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    if x & HIGH != ZEROS || (x.wrapping_add(0x0606_0606_0606_0606)) & HIGH != ZEROS {
        return None;
    }
    let d = x - ZEROS;
    let d = (d & 0x000f_000f_000f_000f) * 10 + ((d >> 8) & 0x000f_000f_000f_000f);
    let d = (d & 0x0000_00ff_0000_00ff) * 100 + ((d >> 16) & 0x0000_00ff_0000_00ff);
    Some((d & 0x0000_0000_0000_ffff) * 10000 + ((d >> 32) & 0x0000_0000_0000_ffff))
}

/// The integer `line[s..e]` written as plain ASCII digits with an optional sign and at most 18
/// digits (so it cannot overflow); `None` for anything else (blank, spaces, quotes, longer
/// numbers), which takes the general path. Reads eight digits at a time where the line allows.
#[inline]
fn parse_int_field(line: &[u8], s: usize, e: usize) -> Option<i64> {
    let raw = &line[s..e];
    let (neg, s) = match raw.first() {
        Some(b'-') => (true, s + 1),
        Some(b'+') => (false, s + 1),
        _ => (false, s),
    };
    let n = e - s;
    let v = match n {
        1..=8 => match padded8(line, s, e) {
            Some(x) => eight_digits(x)? as i64,
            None => digits_loop(&line[s..e])?,
        },
        9..=16 => {
            let high = match padded8(line, s, e - 8) {
                Some(x) => eight_digits(x)?,
                None => digits_loop(&line[s..e - 8])? as u64,
            };
            (high * 100_000_000 + eight_digits(load8(line, e - 8))?) as i64
        }
        17..=18 => digits_loop(&line[s..e])?,
        _ => return None,
    };
    Some(if neg { -v } else { v })
}

/// Is `raw`, which [`parse_int_field`] accepted, the text the CSV encoder writes for its value
/// (no `+`, no leading zero, not `-0`)?
#[inline]
fn is_canonical_int(raw: &[u8]) -> bool {
    matches!(raw, [b'0'] | [b'-', b'1'..=b'9', ..] | [b'1'..=b'9', ..])
}

/// Plain ASCII digits (at most 18) one at a time.
#[inline]
fn digits_loop(digits: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as i64;
    }
    Some(v)
}

/// An integer written as plain ASCII digits with an optional sign and at most 18 digits (see
/// [`parse_int_field`]).
#[cfg(test)]
fn parse_int_digits(raw: &[u8]) -> Option<i64> {
    parse_int_field(raw, 0, raw.len())
}

/// Does `v` fit the integer type `ty`?
#[inline]
fn int_fits(v: i64, ty: SqlType) -> bool {
    let bits = ty.int_bits();
    bits >= 64 || (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&v)
}

/// Parse one text field as `ty` (empty → NULL for non-string types).
fn parse_field(text: &str, ty: SqlType) -> Result<Value, String> {
    if ty == SqlType::String {
        return Ok(Value::Str(Str::from(text)));
    }
    let t = text.trim();
    if t.is_empty() {
        return Ok(Value::Null);
    }
    let bad = || format!("'{t}' is not a valid {ty}");
    Ok(match ty {
        SqlType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad()),
        },
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            let v: i64 = t.parse().map_err(|_| bad())?;
            let bits = ty.int_bits();
            if bits < 64 && (v < -(1i64 << (bits - 1)) || v >= (1i64 << (bits - 1))) {
                return Err(format!("{t} is out of range for {ty}"));
            }
            Value::Int(v)
        }
        SqlType::Float | SqlType::Double => Value::Double(t.parse().map_err(|_| bad())?),
        SqlType::Decimal(_, s) => Value::Decimal(parse_decimal(t, s).ok_or_else(bad)?, s),
        SqlType::Timestamp(_) => Value::Timestamp(parse_timestamp(t).ok_or_else(bad)?),
        SqlType::TimestampLtz(_) => Value::TimestampLtz(parse_timestamp(t).ok_or_else(bad)?),
        SqlType::String | SqlType::Interval | SqlType::Null => return Err(bad()),
    })
}

impl RowFileReader {
    /// Parse up to `max` more rows of the range into `out` (rows, or their encoded form: see
    /// [`ParsedRows`]).
    pub(crate) async fn read_into<O: ParsedRows>(&mut self, out: &mut O, max: usize) -> Result<ReadStatus> {
        let target = out.count() + max;
        if self.done {
            return Ok(ReadStatus::Exhausted);
        }
        loop {
            if self.skipping {
                // Drop the bytes through the first newline: the line they end belongs to
                // the range before.
                match memchr::memchr(b'\n', &self.pending[self.start..]) {
                    Some(nl) => {
                        self.start += nl + 1;
                        self.skipping = false;
                    }
                    None => self.start = self.pending.len(),
                }
            }
            if !self.skipping {
                // Parse complete lines from `pending[start..]` (taken out so lines can be
                // borrowed); consumed bytes are dropped only before the next fill, so a read
                // call never moves the unread rest of the buffer.
                let pending = std::mem::take(&mut self.pending);
                let base = self.offset - pending.len() as u64;
                while out.count() < target {
                    if base + self.start as u64 >= self.range_end {
                        // The next line starts in the next range.
                        self.pending = pending;
                        self.done = true;
                        return Ok(ReadStatus::Exhausted);
                    }
                    let rest = &pending[self.start..];
                    let split = match self.format {
                        Format::Csv => self.parser.split_next_line(rest),
                        Format::Json => None,
                    };
                    let Some(nl) = split.or_else(|| memchr::memchr(b'\n', rest)) else { break };
                    self.start += nl + 1;
                    let before = out.count();
                    let res = if nl > self.max_line {
                        self.line_no += 1;
                        self.bad_line(None, format!("line longer than max_line_bytes = {}", self.max_line))
                    } else {
                        self.parse_line(&rest[..nl], out)
                    };
                    if let Some(ends) = &mut self.row_ends {
                        let end = base + self.start as u64;
                        ends.extend(std::iter::repeat_n((end, self.line_no), out.count() - before));
                    }
                    if let Err(e) = res {
                        self.pending = pending;
                        return Err(e);
                    }
                }
                self.pending = pending;
                if out.count() >= target {
                    return Ok(ReadStatus::More);
                }
            }
            self.pending.drain(..self.start);
            self.start = 0;
            if self.eof {
                // A last line without a newline (if it starts in the range).
                let starts_at = self.offset - self.pending.len() as u64;
                if !self.skipping && !self.pending.is_empty() && starts_at < self.range_end {
                    let line = std::mem::take(&mut self.pending);
                    let before = out.count();
                    self.parse_line(&line, out)?;
                    if let Some(ends) = &mut self.row_ends {
                        ends.extend(std::iter::repeat_n((self.offset, self.line_no), out.count() - before));
                    }
                }
                self.done = true;
                return Ok(ReadStatus::Exhausted);
            }
            if self.pending.len() > self.max_line {
                self.line_no += 1;
                let e = self.bad(None, format!("line longer than max_line_bytes = {}", self.max_line));
                return Err(e);
            }
            if self.fill().await? == 0 {
                self.eof = true;
            }
        }
    }
}

impl SplitReader<Row> for RowFileReader {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let file = crate::shard::inflight::open_buffered(&self.path)
                .await
                .map_err(|e| WeirError::io("opening", &self.path, e.into()))?;
            self.file = Some(std::rc::Rc::new(file));
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<Row>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(self.read_into(out, max))
    }

    fn position(&self) -> Result<Vec<u8>> {
        // The byte offset of the first unread line (before a range's first line is found:
        // `start - 1`), and the lines read before it; ranges also name themselves.
        let unread = (self.pending.len() - self.start) as u64;
        let offset = if self.skipping {
            self.range_start.saturating_sub(1)
        } else {
            self.offset - unread
        };
        Ok(if self.is_whole_file() {
            crate::checkpoint::snapshot::encode(&(offset, self.line_no))
        } else {
            crate::checkpoint::snapshot::encode(&(offset, self.line_no, self.range_start, self.range_end))
        })
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let ranged: Result<(u64, u64, u64, u64)> = crate::checkpoint::snapshot::decode(position, "SQL file range position");
        let (offset, line_no, range) = match ranged {
            Ok((offset, line_no, start, end)) => (offset, line_no, Some((start, end))),
            Err(_) => {
                let (offset, line_no): (u64, u64) = crate::checkpoint::snapshot::decode(position, "SQL file split position")?;
                (offset, line_no, None)
            }
        };
        let mine = (!self.is_whole_file()).then_some((self.range_start, self.range_end));
        if range != mine {
            return Err(WeirError::Other(format!(
                "{}: the checkpoint read this file as {}, this job reads it as {} (another file_split_bytes, or the file changed)",
                self.path.display(),
                describe_range(range),
                describe_range(mine)
            )));
        }
        self.offset = offset;
        self.skipping = self.range_start > 0 && offset + 1 == self.range_start;
        self.line_no = line_no;
        self.pending.clear();
        self.start = 0;
        self.eof = false;
        self.done = false;
        Ok(())
    }

    fn describe(&self) -> String {
        match self.is_whole_file() {
            true => self.path.display().to_string(),
            false => format!("{} {}", self.path.display(), describe_range(Some((self.range_start, self.range_end)))),
        }
    }
}

impl RowFileReader {
    fn is_whole_file(&self) -> bool {
        self.range_start == 0 && self.range_end == u64::MAX
    }

    /// Prepare the parser for [`RowParser::parse_csv_to_csv`] (the fused copy): its output
    /// columns, and noting which integer fields are canonical text.
    ///
    /// Panics if the scan is not a plain copy (the planner checks [`copy_slots`] first).
    pub(crate) fn write_csv_text(&mut self) {
        let p = &mut self.parser;
        p.copy = p.direct.as_ref().and_then(DirectProgram::copy_slots);
        assert!(p.copy.is_some(), "write_csv_text on a scan that is not a plain copy (planner bug)");
    }

    /// Record the end offset and line count of every row handed out from now on.
    pub(crate) fn track_rows(&mut self) {
        self.row_ends = Some(Vec::new());
    }

    /// The recorded row ends (see [`RowFileReader::track_rows`]), taken.
    pub(crate) fn take_row_ends(&mut self) -> Vec<(u64, u64)> {
        self.row_ends.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Lines of the range read so far.
    pub(crate) fn lines_read(&self) -> u64 {
        self.line_no
    }

    /// The offset of the first unread line, once the range's first line was found (`None`
    /// before).
    pub(crate) fn unread_offset(&self) -> Option<u64> {
        (!self.skipping).then(|| self.offset - (self.pending.len() - self.start) as u64)
    }

    /// After the range is exhausted: the offset of the first line after it (the end of the
    /// file if none follows).
    pub(crate) fn end_offset(&self) -> u64 {
        self.unread_offset().unwrap_or(self.offset)
    }

    /// Start reading at `offset`, a line start in the range, with `lines` of the range
    /// already read (a restored position).
    pub(crate) fn start_at(&mut self, offset: u64, lines: u64) {
        self.offset = offset;
        self.skipping = false;
        self.line_no = lines;
    }
}

fn describe_range(range: Option<(u64, u64)>) -> String {
    match range {
        None => "a whole".into(),
        Some((start, u64::MAX)) => format!("bytes [{start}, end)"),
        Some((start, end)) => format!("bytes [{start}, {end})"),
    }
}

/// The lines of `path` before the first line starting at or after `range_start` (> 0): the
/// newlines before `range_start - 1`, plus the one ending the line that runs into the range.
/// A blocking read, used only to name the line of a bad record that fails the job.
fn count_lines_before(path: &std::path::Path, range_start: u64) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?.take(range_start.saturating_sub(1));
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = file.read(&mut buf)?;
        if k == 0 {
            return Ok(n + 1);
        }
        n += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64;
    }
}

/// A Kafka table's messages as rows (the value parsed by the table's format, metadata columns
/// from the message, only the `needed` physical columns parsed, `post` fused); bad values
/// follow the engine's bad-record policy like any Kafka source.
/// `slot`: a scaled-out job's `(slot, slots)` (see [`crate::scaleout`]).
pub fn kafka_row_source(
    table: Arc<TableDef>,
    needed: Vec<bool>,
    post: ScanPost,
    slot: Option<(usize, usize)>,
) -> Result<crate::source::kafka::KafkaSource<Row>, SqlError> {
    let Connector::Kafka(k) = &table.connector else {
        return Err(SqlError::at(table.pos, format!("table `{}` is not a kafka table", table.name)));
    };
    let factory = row_decoder(&table, k.format, needed, post);
    let mut options = k.source.clone();
    options.slot = slot;
    crate::source::kafka::KafkaSource::new(options, factory).map_err(|e| SqlError::at(table.pos, format!("table `{}`: {e}", table.name)))
}

/// The row decoder of a message table (Kafka, Kinesis, Pulsar): the value parsed by `format`,
/// metadata columns from the message, only the `needed` physical columns, `post` fused.
fn row_decoder(table: &Arc<TableDef>, format: super::plan::KafkaFormat, needed: Vec<bool>, post: ScanPost) -> crate::source::kafka::DecoderFactory<Row> {
    let t = table.clone();
    let (needed, post): (Arc<[bool]>, Arc<ScanPost>) = (needed.into(), Arc::new(post));
    Arc::new(move || {
        Box::new(RowDecoder {
            parser: RowParser::new(t.clone(), needed.clone(), post.clone()),
            format,
            topic: None,
        })
    })
}

/// A Kinesis table's records as rows (see [`row_decoder`]).
pub fn kinesis_row_source(table: Arc<TableDef>, needed: Vec<bool>, post: ScanPost) -> Result<crate::source::kinesis::KinesisSource<Row>, SqlError> {
    let Connector::Kinesis(k) = &table.connector else {
        return Err(SqlError::at(table.pos, format!("table `{}` is not a kinesis table", table.name)));
    };
    let factory = row_decoder(&table, k.format, needed, post);
    crate::source::kinesis::KinesisSource::new(k.source.clone(), factory).map_err(|e| SqlError::at(table.pos, format!("table `{}`: {e}", table.name)))
}

/// A Pulsar table's messages as rows (see [`row_decoder`]).
pub fn pulsar_row_source(table: Arc<TableDef>, needed: Vec<bool>, post: ScanPost) -> Result<crate::source::pulsar::PulsarSource<Row>, SqlError> {
    let Connector::Pulsar(p) = &table.connector else {
        return Err(SqlError::at(table.pos, format!("table `{}` is not a pulsar table", table.name)));
    };
    let factory = row_decoder(&table, p.format, needed, post);
    crate::source::pulsar::PulsarSource::new(p.source.clone(), factory).map_err(|e| SqlError::at(table.pos, format!("table `{}`: {e}", table.name)))
}

/// Decodes one message (Kafka, Kinesis, Pulsar) into a row.
struct RowDecoder {
    parser: RowParser,
    format: super::plan::KafkaFormat,
    /// The last message's topic as a SQL string (topics repeat: no allocation per message).
    topic: Option<(Arc<str>, Str)>,
}

impl crate::source::kafka::DecodeMessage<Row> for RowDecoder {
    fn decode(&mut self, msg: &crate::source::kafka::MessageView<'_>, out: &mut Vec<Row>) -> Result<(), crate::source::file::BadLine> {
        use super::plan::KafkaFormat;
        let Some(value) = msg.value else { return Ok(()) };
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        if !self.topic.as_ref().is_some_and(|(t, _)| Arc::ptr_eq(t, msg.topic)) {
            self.topic = Some((msg.topic.clone(), Str::from(&**msg.topic)));
        }
        let meta = RowMetadata {
            timestamp: msg.timestamp,
            partition: msg.partition,
            offset: msg.offset,
            topic: &self.topic.as_ref().expect("set above").1,
        };
        let res = match self.format {
            KafkaFormat::Raw => self.parser.parse_raw(value, Some(&meta), out),
            _ if value.iter().all(u8::is_ascii_whitespace) => return Ok(()),
            KafkaFormat::Csv => self.parser.parse(Format::Csv, value, Some(&meta), out),
            KafkaFormat::Json => self.parser.parse(Format::Json, value, Some(&meta), out),
        };
        res.map_err(|b| crate::source::file::BadLine {
            field: b.field,
            message: b.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_splitting_agree_on_lines_without_quotes() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..4000 {
            let len = next() % 70;
            let line: Vec<u8> = (0..len).map(|_| b"ab,1-,"[next() % 6]).collect();
            if line.is_empty() {
                continue;
            }
            for want in [1, 2, 3, 7, 17, 40] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let plain = split_plain(&line, want, &mut a);
                let quoted = split_quoted(&line, want, &mut b).ok();
                assert_eq!((plain, &a), (quoted, &b), "{:?} want {want}", String::from_utf8_lossy(&line));
            }
        }
        // The first line of a text, split in the pass that finds its newline.
        for _ in 0..4000 {
            let len = next() % 70;
            let text: Vec<u8> = (0..len).map(|_| b"ab,1-,\n\r\""[next() % 9]).collect();
            for want in [1, 2, 3, 7, 40] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let Some((nl, total)) = split_plain_first_line(&text, want, &mut a) else {
                    let nl = text.iter().position(|&c| c == b'\n');
                    let quoted = nl.is_some_and(|nl| text[..nl].contains(&b'"'));
                    assert!(quoted || nl.is_none_or(|nl| nl >= len / 16 * 16), "{:?}", String::from_utf8_lossy(&text));
                    continue;
                };
                assert_eq!(Some(nl), text.iter().position(|&c| c == b'\n'));
                let line = &text[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert_eq!(
                    (Some(total), &a),
                    (split_plain(line, want, &mut b), &b),
                    "{:?} want {want}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        let mut f = Vec::new();
        assert_eq!(split_plain(b"12345678,\"x\"", 2, &mut f), None);
        f.clear();
        assert_eq!(split_plain(b"a,b,\"c\"", 1, &mut f), None);
    }

    #[test]
    fn direct_program_emits_what_the_table_row_program_emits() {
        use super::super::expr::{Arith, Expr, Func};
        let col = |i: usize| Box::new(Expr::Col(i));
        let table = TableDef {
            name: "t".into(),
            pos: Default::default(),
            columns: [
                ("a", SqlType::BigInt),
                ("s", SqlType::String),
                ("ms", SqlType::BigInt),
                ("secs", SqlType::Int),
                ("ts", SqlType::TimestampLtz(3)),
                ("t0", SqlType::TimestampLtz(0)),
                ("d", SqlType::BigInt),
                ("copy", SqlType::String),
            ]
            .iter()
            .map(|(n, t)| (n.to_string(), *t))
            .collect(),
            layout: vec![
                ColumnSource::Physical(0),
                ColumnSource::Physical(1),
                ColumnSource::Physical(2),
                ColumnSource::Physical(3),
                ColumnSource::Computed(Expr::Call(Func::ToTimestampLtz { precision: 3 }, vec![Expr::Col(2)])),
                ColumnSource::Computed(Expr::Call(Func::ToTimestampLtz { precision: 0 }, vec![Expr::Col(3)])),
                ColumnSource::Computed(Expr::IntArith(Arith::Add, 64, col(0), col(2))),
                ColumnSource::Computed(Expr::Col(1)),
            ],
            physical: vec![
                ("a".into(), SqlType::BigInt),
                ("s".into(), SqlType::String),
                ("ms".into(), SqlType::BigInt),
                ("secs".into(), SqlType::Int),
            ],
            rowtime: Some((4, 4000)),
            connector: Connector::Filesystem {
                path: "/nowhere".into(),
                format: Format::Csv,
            },
        };
        let projections: Vec<Vec<Expr>> = vec![
            vec![Expr::Col(0), Expr::Col(1), Expr::Col(4)],
            vec![Expr::Col(2), Expr::Col(2), Expr::Col(1), Expr::Col(5), Expr::Col(6), Expr::Col(7)],
            vec![
                Expr::IntArith(Arith::Mul, 64, col(0), col(2)),
                Expr::Lit(Value::Null),
                Expr::Col(1),
                Expr::Col(1),
            ],
            vec![Expr::Lit(Value::Int(7)), Expr::Col(3), Expr::Col(5)],
        ];
        let mut seed = 5u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as i64
        };
        for (p, exprs) in projections.iter().enumerate() {
            for columns in [None, Some(vec![true, true, true, true, true, p % 2 == 0, true, false])] {
                let post = ScanPost {
                    predicate: None,
                    project: Some(exprs.clone().into()),
                    columns: columns.map(Into::into),
                    dropped_rows: None,
                };
                let direct = DirectProgram::new(&table, &post).expect("a direct form");
                let general = ScanProgram::new(&table, &post);
                for _ in 0..200 {
                    let mut value = |k: i64| match next() % 5 {
                        0 => Value::Null,
                        _ if k == 1 => Value::Str(Str::from(format!("s{}", next() % 100))),
                        _ => Value::Int(next() % 2_000_000_000_000 - 1_000_000_000_000),
                    };
                    let physical: Row = (0..4).map(&mut value).collect();
                    let (mut a, mut b, mut wide) = (physical.clone(), physical.clone(), Row::new());
                    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
                    let ra = direct.emit(&mut a, None, &mut out_a);
                    let rb = general.emit(
                        &table,
                        &mut b,
                        &mut wide,
                        None,
                        &mut out_b,
                        |row| if row[4].is_null() { Err(4) } else { Ok(()) },
                    );
                    assert_eq!((ra, &out_a), (rb, &out_b), "projection {p} of {physical:?}");
                }
            }
        }
        // A filter, or a projection reading a computed column through an expression, has no direct form.
        let filtered = ScanPost {
            predicate: Some(Expr::Lit(Value::Bool(true))),
            project: Some(vec![Expr::Col(0)].into()),
            columns: None,
            dropped_rows: None,
        };
        assert!(DirectProgram::new(&table, &filtered).is_none());
        let computed = ScanPost {
            predicate: None,
            project: Some(vec![Expr::IntArith(Arith::Add, 64, col(6), col(0))].into()),
            columns: None,
            dropped_rows: None,
        };
        assert!(DirectProgram::new(&table, &computed).is_none());
    }

    #[test]
    fn digit_fast_path_agrees_with_the_text_path() {
        for text in [
            "0",
            "-0",
            "+7",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "",
            "-",
            "+",
            " 1",
            "1 ",
            "1a",
            "--1",
        ] {
            let fast = parse_int_digits(text.as_bytes()).map(Value::Int);
            match fast {
                Some(v) => assert_eq!(parse_field(text, SqlType::BigInt).ok(), Some(v), "{text:?}"),
                None => assert!(
                    text.len() > 18 || text.trim() != text || text.parse::<i64>().is_err(),
                    "{text:?} has a fast form"
                ),
            }
        }
        assert!(int_fits(127, SqlType::TinyInt) && !int_fits(128, SqlType::TinyInt) && int_fits(-128, SqlType::TinyInt));
        // Fields anywhere in a line (the word-at-a-time reads look around the field).
        let mut seed = 11u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..20000 {
            let len = next() % 24;
            let field: Vec<u8> = (0..len).map(|_| b"0123456789012345678-+ a"[next() % 23]).collect();
            let (before, after) = (next() % 12, next() % 12);
            let mut line = vec![b'7'; before];
            line.extend_from_slice(&field);
            line.extend(std::iter::repeat_n(b',', after));
            let reference = std::str::from_utf8(&field)
                .ok()
                .filter(|t| !t.is_empty() && t.len() <= 19 && t.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && (b == b'-' || b == b'+'))))
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|_| field.len() - usize::from(matches!(field.first(), Some(b'-' | b'+'))) <= 18);
            assert_eq!(parse_int_field(&line, before, before + len), reference, "{:?}", String::from_utf8_lossy(&line));
        }
        assert_eq!(movemask8(bytes_equal(u64::from_le_bytes(*b",a,,bbb,"), b',')), 0b1000_1101);
        assert!(int_fits(i64::MIN, SqlType::BigInt));
    }
}

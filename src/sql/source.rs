//! The filesystem source of SQL tables: CSV or JSON-lines files read into [`Row`]s by the
//! table's schema, computed columns evaluated on the way.
//!
//! `path` is a file or a folder (every file in it not starting with `.` or `_`, sorted by
//! name); each file is one split, read in order by one shard through glommio's buffered
//! (io_uring) positional reads, in chunks of [`READ_CHUNK_BYTES`].
//!
//! Invariants: a line longer than `max_line_bytes` or one that does not parse is a bad record:
//! with `on_bad_record = fail` the job stops with an error naming file, line and field; with
//! `skip` it is counted in `bad_records` and dropped. A row whose time attribute is NULL is a
//! bad record too (Flink fails on it). Empty CSV fields of non-string columns are NULL.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use glommio::io::BufferedFile;

use super::plan::{ColumnSource, Connector, MetadataKey, TableDef};
use super::types::{parse_decimal, parse_timestamp, Row, SqlType, Value};
use super::SqlError;
use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::shard::{BuildCtx, OperatorMetrics};
use crate::sink::format::Format;
use crate::source::{ReadStatus, Source, SplitReader};

/// Bytes read from a file per read call.
pub const READ_CHUNK_BYTES: usize = 256 << 10;

/// A table's files as a source of rows.
pub struct RowFileSource {
    table: Arc<TableDef>,
    files: Vec<PathBuf>,
    format: Format,
}

impl RowFileSource {
    /// List the table's files (at planning time, so every shard sees the same splits).
    pub fn new(table: Arc<TableDef>) -> Result<Self, SqlError> {
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
        Ok(Self { format: *format, table, files })
    }
}

impl RowFileSource {
    /// Number of files (splits).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

impl Source<Row> for RowFileSource {
    fn name(&self) -> String {
        self.table.name.clone()
    }
    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.files.len())
    }
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<Row>>> {
        let path = self.files[split].clone();
        Ok(Box::new(RowFileReader {
            format: self.format,
            path,
            file: None,
            offset: 0,
            pending: Vec::new(),
            line_no: 0,
            eof: false,
            policy: ctx.config.on_bad_record.clone(),
            max_line: ctx.config.max_line_bytes,
            metrics: ctx.operator_metrics(&format!("source:{}", self.table.name)),
            parser: RowParser::new(self.table.clone()),
        }))
    }
}

struct RowFileReader {
    format: Format,
    path: PathBuf,
    file: Option<BufferedFile>,
    /// Next byte offset to read.
    offset: u64,
    /// Bytes read but not yet consumed (an incomplete last line).
    pending: Vec<u8>,
    line_no: u64,
    eof: bool,
    policy: ErrorPolicy,
    max_line: usize,
    metrics: Arc<OperatorMetrics>,
    parser: RowParser,
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
pub(crate) struct RowMetadata<'a> {
    pub timestamp: i64,
    pub partition: i32,
    pub offset: i64,
    pub topic: &'a Arc<str>,
}

/// Parses one record's text (a file line, a Kafka value) into a table row: CSV or JSON fields
/// by the table's physical columns, then computed and metadata columns. Shared by the
/// filesystem and Kafka sources.
pub(crate) struct RowParser {
    table: Arc<TableDef>,
    physical: Row,
    fields: Vec<(usize, usize)>,
}

impl RowParser {
    pub(crate) fn new(table: Arc<TableDef>) -> Self {
        Self {
            table,
            physical: Row::new(),
            fields: Vec::new(),
        }
    }

    /// Parse `text` (non-empty, without its newline) in `format` into a complete row.
    pub(crate) fn parse(&mut self, format: Format, text: &[u8], meta: Option<&RowMetadata<'_>>) -> Result<Row, BadRow> {
        match format {
            Format::Csv => self.parse_csv(text)?,
            Format::Json => self.parse_json(text)?,
        }
        self.complete_row(meta)
    }

    /// A raw value: the one physical STRING column holds the whole text.
    pub(crate) fn parse_raw(&mut self, text: &[u8], meta: Option<&RowMetadata<'_>>) -> Result<Row, BadRow> {
        let text = std::str::from_utf8(text).map_err(|e| bad_row(None, format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1)))?;
        self.physical.clear();
        self.physical.push(Value::Str(Arc::from(text)));
        self.complete_row(meta)
    }
}

impl RowParser {
    fn complete_row(&mut self, meta: Option<&RowMetadata<'_>>) -> Result<Row, BadRow> {
        let mut row = Row::new();
        for (k, c) in self.table.layout.iter().enumerate() {
            row.push(match c {
                ColumnSource::Physical(i) => self.physical[*i].clone(),
                ColumnSource::Computed(e) => e.eval(&self.physical),
                ColumnSource::Metadata(key) => match meta {
                    None => Value::Null,
                    Some(m) => match key {
                        MetadataKey::Timestamp => match self.table.columns[k].1 {
                            SqlType::Timestamp(_) => Value::Timestamp(m.timestamp),
                            _ => Value::TimestampLtz(m.timestamp),
                        },
                        MetadataKey::Partition => Value::Int(m.partition as i64),
                        MetadataKey::Offset => Value::Int(m.offset),
                        MetadataKey::Topic => Value::Str(m.topic.clone()),
                    },
                },
            });
        }
        if let Some((rt, _)) = self.table.rowtime {
            if row[rt].is_null() {
                let name = self.table.columns[rt].0.clone();
                return Err(bad_row(Some(&name), "the time attribute is NULL"));
            }
        }
        Ok(row)
    }

    fn parse_csv(&mut self, line: &[u8]) -> Result<(), BadRow> {
        // Split into fields (RFC 4180 quotes), remembering byte ranges; quoted fields with
        // doubled quotes are unescaped on demand.
        self.fields.clear();
        let mut i = 0;
        let n = line.len();
        let mut quoted_any = false;
        loop {
            let start = i;
            if i < n && line[i] == b'"' {
                quoted_any = true;
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
            self.fields.push((start, i));
            if i >= n {
                break;
            }
            i += 1; // the comma
            if i == n {
                self.fields.push((n, n));
                break;
            }
        }
        let _ = quoted_any;
        let phys = &self.table.physical;
        if self.fields.len() != phys.len() {
            return Err(bad_row(
                None,
                format!("{} fields, the table has {} physical columns", self.fields.len(), phys.len()),
            ));
        }
        self.physical.clear();
        for (k, (name, ty)) in phys.iter().enumerate() {
            let (s, e) = self.fields[k];
            let raw = &line[s..e];
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
            let v = parse_field(text, *ty).map_err(|m| bad_row(Some(name), m))?;
            self.physical.push(v);
        }
        Ok(())
    }

    fn parse_json(&mut self, line: &[u8]) -> Result<(), BadRow> {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| bad_row(None, format!("not JSON: {e}")))?;
        let serde_json::Value::Object(map) = v else {
            return Err(bad_row(None, "not a JSON object"));
        };
        self.physical.clear();
        for (name, ty) in self.table.physical.clone().iter() {
            let val = match map.get(name) {
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
    fn bad(&self, field: Option<&str>, message: String) -> WeirError {
        WeirError::BadRecord {
            file: self.path.display().to_string(),
            line: self.line_no,
            field: field.map(str::to_string),
            message,
        }
    }

    /// Parse one line into `out`; `Ok(false)` if it was skipped as bad.
    fn parse_line(&mut self, line: &[u8], out: &mut Vec<Row>) -> Result<()> {
        self.line_no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        let res = self.parser.parse(self.format, line, None).map_err(|b| self.bad(b.field.as_deref(), b.message));
        match res {
            Ok(row) => {
                out.push(row);
                Ok(())
            }
            Err(e) => match self.policy {
                ErrorPolicy::Skip => {
                    OperatorMetrics::add(&self.metrics.bad_records, 1);
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Read the next chunk into `pending`; returns the number of bytes read (0 at end).
    async fn fill(&mut self) -> Result<usize> {
        let file = self.file.as_ref().expect("opened");
        let chunk = file
            .read_at(self.offset, READ_CHUNK_BYTES)
            .await
            .map_err(|e| WeirError::io("reading", &self.path, e.into()))?;
        self.pending.extend_from_slice(&chunk);
        self.offset += chunk.len() as u64;
        Ok(chunk.len())
    }
}

/// Parse one text field as `ty` (empty → NULL for non-string types).
fn parse_field(text: &str, ty: SqlType) -> Result<Value, String> {
    if ty == SqlType::String {
        return Ok(Value::Str(Arc::from(text)));
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

impl SplitReader<Row> for RowFileReader {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let file = BufferedFile::open(&self.path)
                .await
                .map_err(|e| WeirError::io("opening", &self.path, e.into()))?;
            self.file = Some(file);
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<Row>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(async move {
            let target = out.len() + max;
            let mut consumed = 0usize;
            loop {
                // Parse complete lines from `pending` (taken out so lines can be borrowed).
                let pending = std::mem::take(&mut self.pending);
                while out.len() < target {
                    let rest = &pending[consumed..];
                    let Some(nl) = rest.iter().position(|b| *b == b'\n') else { break };
                    consumed += nl + 1;
                    if nl > self.max_line {
                        self.line_no += 1;
                        let e = self.bad(None, format!("line longer than max_line_bytes = {}", self.max_line));
                        match self.policy {
                            ErrorPolicy::Skip => OperatorMetrics::add(&self.metrics.bad_records, 1),
                            _ => return Err(e),
                        }
                        continue;
                    }
                    self.parse_line(&rest[..nl], out)?;
                }
                self.pending = pending;
                self.pending.drain(..consumed);
                consumed = 0;
                if out.len() >= target {
                    return Ok(ReadStatus::More);
                }
                if self.eof {
                    if !self.pending.is_empty() {
                        let line = std::mem::take(&mut self.pending);
                        self.parse_line(&line, out)?;
                    }
                    return Ok(ReadStatus::Exhausted);
                }
                if self.pending.len() > self.max_line {
                    self.line_no += 1;
                    return Err(self.bad(None, format!("line longer than max_line_bytes = {}", self.max_line)));
                }
                if self.fill().await? == 0 {
                    self.eof = true;
                }
            }
        })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A Kafka table's messages as rows (the value parsed by the table's format, metadata columns
/// from the message); bad values follow the engine's bad-record policy like any Kafka source.
pub fn kafka_row_source(table: Arc<TableDef>) -> Result<crate::source::kafka::KafkaSource<Row>, SqlError> {
    let Connector::Kafka(k) = &table.connector else {
        return Err(SqlError::at(table.pos, format!("table `{}` is not a kafka table", table.name)));
    };
    let (t, format) = (table.clone(), k.format);
    let factory: crate::source::kafka::DecoderFactory<Row> = Arc::new(move || {
        Box::new(RowDecoder {
            parser: RowParser::new(t.clone()),
            format,
        })
    });
    crate::source::kafka::KafkaSource::new(k.source.clone(), factory).map_err(|e| SqlError::at(table.pos, format!("table `{}`: {e}", table.name)))
}

/// Decodes one Kafka message into a row.
struct RowDecoder {
    parser: RowParser,
    format: super::plan::KafkaFormat,
}

impl crate::source::kafka::DecodeMessage<Row> for RowDecoder {
    fn decode(&mut self, msg: &crate::source::kafka::MessageView<'_>, out: &mut Vec<Row>) -> Result<(), crate::source::file::BadLine> {
        use super::plan::KafkaFormat;
        let Some(value) = msg.value else { return Ok(()) };
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        let meta = RowMetadata {
            timestamp: msg.timestamp,
            partition: msg.partition,
            offset: msg.offset,
            topic: msg.topic,
        };
        let row = match self.format {
            KafkaFormat::Raw => self.parser.parse_raw(value, Some(&meta)),
            _ if value.iter().all(u8::is_ascii_whitespace) => return Ok(()),
            KafkaFormat::Csv => self.parser.parse(Format::Csv, value, Some(&meta)),
            KafkaFormat::Json => self.parser.parse(Format::Json, value, Some(&meta)),
        };
        match row {
            Ok(row) => {
                out.push(row);
                Ok(())
            }
            Err(b) => Err(crate::source::file::BadLine {
                field: b.field,
                message: b.message,
            }),
        }
    }
}

//! The filesystem source: CSV or JSON-lines files (or raw lines) from a file or a folder
//! (Flink's `filesystem` connector as a source).
//!
//! A folder means every regular file directly in it, sorted by name; hidden files (`.name`) and
//! in-progress files (`*.inprogress`) are skipped. The list is taken once, when the source is
//! created, so every shard sees the same splits. Each file is one split, read start to end in
//! order by one reader (Flink: one reader per file), so lateness decisions are those of an
//! in-order read of that file.
//!
//! Reading never blocks the shard: chunks of `file_read_chunk_bytes` are read with glommio's
//! async buffered file I/O and cut into lines by [`reader::LineSplitter`]; a line longer than
//! `max_line_bytes` is a bad record (memory stays bounded).
//!
//! Bad lines (unparsable, missing field, wrong type, invalid UTF-8, too long) follow
//! `EngineConfig::on_bad_record`:
//! - `Fail`: the job fails with [`WeirError::BadRecord`] naming file, line (from 1) and field;
//! - `Skip`: the line is skipped and counted in the source operator's `bad_records`;
//! - `DeadLetter`: counted, and written with its error to `dead-letter-<shard>.jsonl` in
//!   `dead_letter_dir` (see [`dead_letter`]).
//!
//! Invariants: every line is either a record, a counted bad record, or blank (skipped in CSV /
//! JSON formats, handed out in raw-lines mode); no input bytes make the source panic.

pub mod csv;
pub mod dead_letter;
pub mod json;
pub mod reader;

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use glommio::io::BufferedFile;
use serde::de::DeserializeOwned;

use self::csv::{CsvOptions, CsvParser};
use self::dead_letter::SharedDeadLetters;
use self::json::JsonParser;
use self::reader::{LineKind, LineSplitter, Next};
use super::{ReadStatus, Source, SplitReader};
use crate::checkpoint::snapshot::{decode, encode};
use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::shard::{BuildCtx, OperatorMetrics};

/// Where a line came from: file path and line number (from 1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineInfo {
    pub file: Arc<str>,
    pub line: u64,
}

/// A record of [`FileSource::lines`]: the line's text and where it came from.
pub type Line = (String, LineInfo);

/// The format of the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Csv(CsvOptions),
    JsonLines,
    /// Raw lines as text (the caller parses them).
    Lines,
}

/// Why a line is bad: the field (if known) and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    pub field: Option<String>,
    pub message: String,
}

/// Turns lines into records of `T` (one parser per file).
pub(crate) trait ParseLine<T> {
    /// True while the next line is a header to give to [`Self::header`].
    fn wants_header(&self) -> bool {
        false
    }
    fn header(&mut self, _line: &[u8]) {}
    /// Parse one line (without its newline), pushing zero or one record.
    fn parse(&mut self, line: &[u8], info: &LineInfo, out: &mut Vec<T>) -> Result<(), BadLine>;
}

/// Raw lines: the text and its position; only invalid UTF-8 is bad.
struct LineParser;

impl ParseLine<Line> for LineParser {
    fn parse(&mut self, line: &[u8], info: &LineInfo, out: &mut Vec<Line>) -> Result<(), BadLine> {
        match std::str::from_utf8(line) {
            Ok(text) => {
                out.push((text.to_string(), info.clone()));
                Ok(())
            }
            Err(e) => Err(BadLine {
                field: None,
                message: format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
            }),
        }
    }
}

/// Builds the parser of one file; one [`FileReader`] type serves every format, the per-line
/// parse call being its only dynamic dispatch.
type ParserFactory<T> = fn(FileFormat) -> Box<dyn ParseLine<T>>;

fn csv_parser<T: DeserializeOwned + 'static>(format: FileFormat) -> Box<dyn ParseLine<T>> {
    match format {
        FileFormat::Csv(options) => Box::new(CsvParser::<T>::new(options)),
        _ => unreachable!("csv_parser for a non-CSV source"),
    }
}

pub(crate) fn json_parser<T: DeserializeOwned + 'static>(_format: FileFormat) -> Box<dyn ParseLine<T>> {
    Box::new(JsonParser::<T>::new())
}

pub(crate) fn line_parser(_format: FileFormat) -> Box<dyn ParseLine<Line>> {
    Box::new(LineParser)
}

static NEXT_SOURCE_ID: AtomicU64 = AtomicU64::new(0);

/// A process-unique source id (keys the per-shard dead-letter buffer of a source).
pub(crate) fn next_source_id() -> u64 {
    NEXT_SOURCE_ID.fetch_add(1, Ordering::Relaxed)
}

/// The shard's dead-letter buffer of source `source_id` under the `dead-letter` policy (the first
/// reader of the source on the shard registers the writer with the segment), `None` otherwise.
pub(crate) fn dead_letters_for(source_id: u64, ctx: &mut BuildCtx<'_>) -> Result<Option<SharedDeadLetters>> {
    if ctx.config.on_bad_record != ErrorPolicy::DeadLetter {
        return Ok(None);
    }
    let dir = match &ctx.config.dead_letter_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| WeirError::io("finding the working directory", ".", e))?
            .join("dead-letter"),
    };
    let (buffer, writer) = dead_letter::shard_buffer(source_id, dir, ctx.shard, ctx.config.dead_letter_buffer_records);
    if let Some(writer) = writer {
        ctx.add_flusher(Box::new(writer));
    }
    Ok(Some(buffer))
}

/// Apply the bad-record `policy` to one bad input record at `info` (`raw` is its bytes, maybe
/// only a prefix when `truncated`): fail with its position, or count it (and dead-letter it).
pub(crate) fn handle_bad_record(
    policy: &ErrorPolicy,
    metrics: &OperatorMetrics,
    dead_letters: Option<&SharedDeadLetters>,
    info: &LineInfo,
    bad: BadLine,
    raw: &[u8],
    truncated: bool,
) -> Result<()> {
    match policy {
        ErrorPolicy::Fail => Err(WeirError::BadRecord {
            file: info.file.to_string(),
            line: info.line,
            field: bad.field,
            message: bad.message,
        }),
        ErrorPolicy::Skip => {
            OperatorMetrics::add(&metrics.bad_records, 1);
            Ok(())
        }
        ErrorPolicy::DeadLetter => {
            OperatorMetrics::add(&metrics.bad_records, 1);
            let buffer = dead_letters.expect("dead-letter buffer for the dead-letter policy");
            buffer
                .borrow_mut()
                .push(&info.file, info.line, bad.field.as_deref(), &bad.message, raw, truncated);
            Ok(())
        }
    }
}

/// Reads the files of a path (see the module docs).
pub struct FileSource<T> {
    path: PathBuf,
    files: Arc<Vec<PathBuf>>,
    format: FileFormat,
    make_parser: ParserFactory<T>,
    chunk_bytes: Option<usize>,
    id: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + 'static> FileSource<T> {
    /// CSV files (no header, `,` delimiter; see [`Self::has_header`], [`Self::delimiter`]).
    pub fn csv(path: impl Into<PathBuf>) -> Result<Self> {
        Self::new(path.into(), FileFormat::Csv(CsvOptions::default()), csv_parser::<T>)
    }

    /// JSON-lines files: one JSON value per line.
    pub fn json_lines(path: impl Into<PathBuf>) -> Result<Self> {
        Self::new(path.into(), FileFormat::JsonLines, json_parser::<T>)
    }
}

impl FileSource<Line> {
    /// Raw lines with their file and line number (invalid UTF-8 and over-long lines are bad).
    pub fn lines(path: impl Into<PathBuf>) -> Result<Self> {
        Self::new(path.into(), FileFormat::Lines, line_parser)
    }
}

impl<T> FileSource<T> {
    fn new(path: PathBuf, format: FileFormat, make_parser: ParserFactory<T>) -> Result<Self> {
        let files = list_files(&path)?;
        Ok(Self {
            path,
            files: Arc::new(files),
            format,
            make_parser,
            chunk_bytes: None,
            id: next_source_id(),
            _t: PhantomData,
        })
    }

    /// CSV: the first line of every file is a header naming the columns.
    pub fn has_header(mut self, has_header: bool) -> Self {
        if let FileFormat::Csv(o) = &mut self.format {
            o.has_header = has_header;
        }
        self
    }

    /// CSV: the field delimiter.
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        if let FileFormat::Csv(o) = &mut self.format {
            o.delimiter = delimiter;
        }
        self
    }

    /// Bytes per read request (overrides `EngineConfig::file_read_chunk_bytes`; tests use tiny ones).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = Some(bytes.max(1));
        self
    }

    /// The files, in split order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }
}

/// The files of `path`: itself if a file, else the visible, finished regular files in it by name.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| WeirError::io("reading input path", path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| WeirError::io("listing input folder", path, e))? {
        let entry = entry.map_err(|e| WeirError::io("listing input folder", path, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with(".inprogress") {
            continue;
        }
        let p = entry.path();
        // Follows symlinks: a link to a regular file is read.
        let is_file = std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false);
        if is_file {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

impl<T: Send + 'static> Source<T> for FileSource<T> {
    fn name(&self) -> String {
        "file".into()
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.files.len())
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        let path = self.files.get(split).cloned().ok_or_else(|| {
            WeirError::Other(format!(
                "file source {}: split {split} of {} does not exist",
                self.path.display(),
                self.files.len()
            ))
        })?;
        let policy = ctx.config.on_bad_record.clone();
        let dead_letters = dead_letters_for(self.id, ctx)?;
        Ok(Box::new(FileReader {
            info: LineInfo {
                file: Arc::from(path.to_string_lossy().as_ref()),
                line: 0,
            },
            path,
            file: None,
            offset: 0,
            chunk_bytes: self.chunk_bytes.unwrap_or(ctx.config.file_read_chunk_bytes),
            splitter: LineSplitter::new(ctx.config.max_line_bytes),
            parser: (self.make_parser)(self.format),
            policy,
            max_line_bytes: ctx.config.max_line_bytes,
            metrics: ctx
                .source_metrics()
                .ok_or_else(|| WeirError::Other("file source built outside a source segment".into()))?,
            dead_letters,
            header: None,
        }))
    }
}

/// Reads one file.
struct FileReader<T> {
    path: PathBuf,
    info: LineInfo,
    file: Option<std::rc::Rc<BufferedFile>>,
    offset: u64,
    chunk_bytes: usize,
    splitter: LineSplitter,
    parser: Box<dyn ParseLine<T>>,
    policy: ErrorPolicy,
    max_line_bytes: usize,
    metrics: Arc<OperatorMetrics>,
    dead_letters: Option<SharedDeadLetters>,
    /// The header line, once read (kept for checkpoints).
    header: Option<Vec<u8>>,
}

impl<T> FileReader<T> {
    /// Apply the bad-record policy to the current line.
    fn bad(&mut self, bad: BadLine, truncated: bool) -> Result<()> {
        handle_bad_record(
            &self.policy,
            &self.metrics,
            self.dead_letters.as_ref(),
            &self.info,
            bad,
            self.splitter.line(),
            truncated,
        )
    }

    fn dead_letters_full(&self) -> bool {
        self.dead_letters.as_ref().is_some_and(|b| b.borrow().is_full())
    }

    async fn read_chunk(&mut self) -> Result<()> {
        let file = self.file.as_ref().expect("file opened before reading");
        let chunk = crate::shard::inflight::read_at(file, self.offset, self.chunk_bytes)
            .await
            .map_err(|e| WeirError::io("reading input file", &self.path, e))?;
        if chunk.is_empty() {
            self.splitter.finish();
        } else {
            self.offset += chunk.len() as u64;
            self.splitter.feed(&chunk);
        }
        Ok(())
    }

    async fn read_lines(&mut self, out: &mut Vec<T>, max: usize) -> Result<ReadStatus> {
        let target = out.len() + max.max(1);
        while out.len() < target {
            if self.dead_letters_full() {
                // Let the segment task write them out before reading on.
                return Ok(ReadStatus::More);
            }
            match self.splitter.next_line() {
                Next::NeedData => self.read_chunk().await?,
                Next::Done => {
                    // A file a dropped read still holds is closed when that read ends.
                    if let Some(file) = self.file.take().and_then(|f| std::rc::Rc::try_unwrap(f).ok()) {
                        file.close().await.map_err(|e| WeirError::io("closing input file", &self.path, e.into()))?;
                    }
                    return Ok(ReadStatus::Exhausted);
                }
                Next::Line(kind) => {
                    self.info.line = self.splitter.line_number();
                    match kind {
                        LineKind::TooLong if self.parser.wants_header() => {
                            // Without its header the file cannot be read: fail whatever the policy.
                            return Err(WeirError::BadRecord {
                                file: self.info.file.to_string(),
                                line: self.info.line,
                                field: None,
                                message: format!("header line longer than max_line_bytes = {}", self.max_line_bytes),
                            });
                        }
                        LineKind::TooLong => {
                            let bad = BadLine {
                                field: None,
                                message: format!("line longer than max_line_bytes = {}", self.max_line_bytes),
                            };
                            self.bad(bad, true)?;
                        }
                        LineKind::Complete if self.parser.wants_header() => {
                            self.header = Some(self.splitter.line().to_vec());
                            self.parser.header(self.splitter.line());
                        }
                        LineKind::Complete => {
                            if let Err(bad) = self.parser.parse(self.splitter.line(), &self.info, out) {
                                self.bad(bad, false)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(ReadStatus::More)
    }
}

impl<T> SplitReader<T> for FileReader<T> {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let file = crate::shard::inflight::open_buffered(&self.path)
                .await
                .map_err(|e| WeirError::io("opening input file", &self.path, e.into()))?;
            self.file = Some(std::rc::Rc::new(file));
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(self.read_lines(out, max))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    /// The byte offset and number of the next unread line (reads stop only between lines), and
    /// the header line of a CSV file, which a restored reader does not read again.
    fn position(&self) -> Result<Vec<u8>> {
        let next_line_offset = self.offset - self.splitter.unconsumed() as u64;
        Ok(encode(&FilePosition {
            offset: next_line_offset,
            line: self.splitter.line_number(),
            header: self.header.clone(),
        }))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let p: FilePosition = decode(position, &self.describe())?;
        self.offset = p.offset;
        self.splitter.set_line_number(p.line);
        if let Some(h) = &p.header {
            self.parser.header(h);
        }
        self.header = p.header;
        Ok(())
    }
}

/// A [`FileReader`]'s checkpointed position.
#[derive(serde::Serialize, serde::Deserialize)]
struct FilePosition {
    offset: u64,
    line: u64,
    header: Option<Vec<u8>>,
}

/// The field a serde message names: "missing field `x`", "unknown field `x`", "duplicate field `x`".
pub(crate) fn field_from_serde_message(message: &str) -> Option<String> {
    for prefix in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(start) = message.find(prefix) {
            let rest = &message[start + prefix.len()..];
            return rest.find('`').map(|end| rest[..end].to_string());
        }
    }
    None
}

/// The field names of `T` if it deserialises as a struct (serde tells `deserialize_struct`).
pub(crate) fn struct_field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{Error as _, Visitor};
    use serde::forward_to_deserialize_any;

    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> std::result::Result<V::Value, Self::Error> {
            Err(Self::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(Self::Error::custom("probe"))
        }
        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = None;
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Bid {
        auction: u64,
        price: i64,
    }

    #[test]
    fn struct_fields_and_serde_messages() {
        assert_eq!(struct_field_names::<Bid>(), Some(&["auction", "price"][..]));
        assert_eq!(struct_field_names::<(u64, i64)>(), None);
        assert_eq!(field_from_serde_message("missing field `price` at line 1"), Some("price".into()));
        assert_eq!(field_from_serde_message("invalid type"), None);
    }
}

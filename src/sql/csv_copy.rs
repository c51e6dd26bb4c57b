//! A CSV scan fused with a CSV file sink: an INSERT that copies columns of a CSV `filesystem`
//! table into a CSV `filesystem` table — a projection of physical columns and constants, no
//! filter, nothing that reads event time or row order — runs without building rows. Each
//! reader parses its lines and writes every output line straight from the parsed values into a
//! chunk of text; the sink appends the chunks to its part file.
//!
//! Invariants:
//! - Output bytes, bad-record errors and skips, positions and checkpoints are those of the row
//!   path (scan → projection → [`super::exec::CsvFileSink`]): the same parser validates every
//!   field read, the same encoder writes the same values; only the row in between is gone
//!   (`tests/sql_csv_copy.rs` compares both paths byte for byte).
//! - A record ([`CsvLines`]) is the text of the rows of one read (at most `batch_size`): a
//!   checkpoint barrier, which comes between reads, never cuts one. The records-read and
//!   records-written metrics count its rows.
//! - Only without event time: the rows' order and timestamps are not observable through a
//!   file sink of an order-free INSERT (see `order_free` in [`super::exec`]).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use super::exec::CsvRowEncoder;
use super::plan::{Connector, InsertPlan, Plan, Rel, TableDef};
use super::source::{ParsedRows, RowFileReader, RowFileSource, RowParser, ScanPost};
use super::types::Row;
use super::SqlError;
use crate::api::StreamEnv;
use crate::error::Result;
use crate::operator::Push;
use crate::shard::BuildCtx;
use crate::sink::file::FileSink;
use crate::sink::format::Format;
use crate::sink::Sink;
use crate::source::{ReadStatus, Source, SplitReader};

/// Most bytes a reader reserves up front for a chunk's text (it grows past this if needed).
const CHUNK_RESERVE_MAX: usize = 4 << 20;

/// The CSV text of the rows of one read.
#[derive(Debug, Default)]
pub struct CsvLines {
    /// Complete lines, each ending in `\n`.
    text: Vec<u8>,
    rows: u64,
}

/// A fused copy: which table, which of its columns are read, and the projection.
pub(super) struct CopyPlan {
    table: Arc<TableDef>,
    physical: Vec<bool>,
    post: ScanPost,
    sink_dir: PathBuf,
}

/// The fused copy of `insert` whose query (with the sink's conversions composed in) is
/// `query`, if it is one: an order-free INSERT into a CSV `filesystem` table of a projection
/// over a CSV `filesystem` table whose columns are physical columns and constants.
pub(super) fn plan(insert: &InsertPlan, query: &Rel, order_free: bool) -> Option<CopyPlan> {
    let Connector::Filesystem {
        path: sink_dir,
        format: Format::Csv,
    } = &insert.sink.connector
    else {
        return None;
    };
    if !order_free {
        return None;
    }
    let merged = super::exec::merged(query);
    let rel = merged.as_ref().unwrap_or(query);
    let Plan::Project { input, exprs } = &rel.plan else { return None };
    let Plan::Scan { table } = &input.plan else { return None };
    if !matches!(table.connector, Connector::Filesystem { format: Format::Csv, .. }) {
        return None;
    }
    let mut need = vec![false; input.scope.columns.len()];
    exprs.iter().for_each(|e| super::exec::mark(e, &mut need));
    let post = ScanPost {
        predicate: None,
        project: Some(exprs.clone().into()),
        columns: None,
        dropped_rows: None,
    }
    .reading(table, &need);
    let physical = super::source::physical_needed(table, &need);
    super::source::copy_slots(table, &post).is_some().then(|| CopyPlan {
        table: table.clone(),
        physical,
        post,
        sink_dir: sink_dir.clone(),
    })
}

/// Add the fused copy to `env`: its files read as byte ranges in parallel, each shard writing
/// its own part files.
pub(super) fn build(env: &StreamEnv, plan: CopyPlan) -> Result<(), SqlError> {
    let rows = RowFileSource::new(plan.table, plan.physical, plan.post, env.config().file_split_bytes)?;
    debug_assert!(rows.copies_to_csv(), "planned as a copy");
    env.source(CsvCopySource { rows })
        .without_event_time()
        .sink(CsvLinesSink(FileSink::new(plan.sink_dir, Format::Csv)));
    Ok(())
}

/// The table's files as a source of [`CsvLines`].
struct CsvCopySource {
    rows: RowFileSource,
}

impl Source<CsvLines> for CsvCopySource {
    fn name(&self) -> String {
        <RowFileSource as Source<Row>>::name(&self.rows)
    }
    fn split_count(&self, shards: usize) -> Result<usize> {
        <RowFileSource as Source<Row>>::split_count(&self.rows, shards)
    }
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<CsvLines>>> {
        let mut inner = self.rows.split_reader(split, ctx);
        inner.write_csv_text();
        Ok(Box::new(CsvCopyReader {
            inner,
            encoder: CsvRowEncoder::default(),
            reserve: 0,
        }))
    }
}

/// A [`RowFileReader`] that writes its rows as CSV text.
struct CsvCopyReader {
    inner: RowFileReader,
    encoder: CsvRowEncoder,
    /// Bytes to reserve for the next chunk: the largest chunk so far (at most
    /// [`CHUNK_RESERVE_MAX`]).
    reserve: usize,
}

/// Where [`RowFileReader::read_into`] puts the lines of a copy: their output text.
struct CsvText<'a> {
    text: &'a mut Vec<u8>,
    rows: usize,
    encoder: &'a mut CsvRowEncoder,
}

impl ParsedRows for CsvText<'_> {
    #[inline]
    fn count(&self) -> usize {
        self.rows
    }
    #[inline]
    fn parse_line(&mut self, parser: &mut RowParser, format: Format, line: &[u8]) -> std::result::Result<(), super::source::BadRow> {
        assert_eq!(format, Format::Csv, "a copy reads CSV (planner checked)");
        parser.parse_csv_to_csv(line, self.encoder, self.text)?;
        self.rows += 1;
        Ok(())
    }
}

impl SplitReader<CsvLines> for CsvCopyReader {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        <RowFileReader as SplitReader<Row>>::open(&mut self.inner)
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<CsvLines>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(async move {
            let mut text = Vec::with_capacity(self.reserve);
            let mut lines = CsvText {
                text: &mut text,
                rows: 0,
                encoder: &mut self.encoder,
            };
            // On an error the rows before the bad line are dropped with the chunk: the job
            // fails and restarts from its checkpoint (as the row path does).
            let status = self.inner.read_into(&mut lines, max).await?;
            let rows = lines.rows as u64;
            if rows > 0 {
                self.reserve = self.reserve.max(text.len()).min(CHUNK_RESERVE_MAX);
                out.push(CsvLines { text, rows });
            }
            Ok(status)
        })
    }

    fn describe(&self) -> String {
        <RowFileReader as SplitReader<Row>>::describe(&self.inner)
    }
    fn position(&self) -> Result<Vec<u8>> {
        <RowFileReader as SplitReader<Row>>::position(&self.inner)
    }
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        <RowFileReader as SplitReader<Row>>::seek(&mut self.inner, position)
    }
    fn rows_in(&self, records: &[CsvLines]) -> u64 {
        rows_of(records)
    }
}

fn rows_of(chunks: &[CsvLines]) -> u64 {
    chunks.iter().map(|c| c.rows).sum()
}

/// A CSV `filesystem` sink of [`CsvLines`]: the text appended as it is.
struct CsvLinesSink(FileSink);

impl Sink<CsvLines> for CsvLinesSink {
    fn name(&self) -> String {
        format!("filesystem:{}", self.0.dir.display())
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<CsvLines>>> {
        self.0.build_encoding_rows(
            ctx,
            operator_name,
            |chunks: &[CsvLines], out: &mut Vec<u8>| {
                for c in chunks {
                    out.extend_from_slice(&c.text);
                }
                Ok(())
            },
            rows_of,
        )
    }
}

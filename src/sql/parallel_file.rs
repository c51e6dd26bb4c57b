//! Parallel parsing of a file that is read in order: the shards other than the reading one
//! parse the file's chunks ahead, and the reading shard hands every row out in file order.
//!
//! Event-time queries read a file as one split in order (watermarks are `max timestamp −
//! delay` over the rows read so far, so lateness depends on the order of the whole file). A
//! lone file is then parsed by one shard while the others wait. Here the file is cut into
//! chunks of `file_parse_chunk_bytes`: chunk `k` holds the lines that start in
//! `[k·C, (k+1)·C)` (the rule of byte-range splits, see [`super::source`]). The reading shard
//! (shard 0, which reads split 0) parses the first chunk it reads and `READER_SHARE` chunks in
//! every period of `READER_SHARE + HELPER_SHARE·(shards − 1)` itself (it also stamps and routes
//! every row, so it takes two thirds of a helper's share); shard `j ≠ 0` parses `HELPER_SHARE`
//! chunks in every period (see [`Session::parser_of`]) into rows and queues them, at most
//! `file_parse_ahead_chunks` ahead. The reader takes chunk after chunk in file
//! order, from its own parsing or from the queue of the shard that parsed it, so the rows it
//! hands out — and therefore timestamps, watermarks and late records — are exactly those of
//! one in-order read.
//!
//! Invariants:
//! - Rows, bad-record counts (`skip`) and the failing line of a bad record (`fail`, numbered in
//!   the whole file: the reader adds the lines before the chunk) are those of one in-order read;
//!   a chunk's rows before its bad line are handed out before the error.
//! - Positions are the whole-file ones of the in-order reader (`(offset of the first unread
//!   line, lines read)`): checkpoints move freely between parallel and in-order reading. A
//!   restored reader parses the chunk of its position itself from the position on; the helpers
//!   start after it.
//! - Bounded: a helper holds at most `file_parse_ahead_chunks` parsed chunks plus the one it
//!   parses. Helpers wait without blocking (wakers), yield between batches of rows, and end
//!   once their chunks are taken or the reader is gone (dropped with its segment).
//! - Shards meet per job attempt ([`BuildCtx::attempt`]): each shard joins the attempt's session
//!   exactly once (shard 0 with its reader, the others with their helper task).

use std::collections::HashMap;
use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use crossbeam_queue::ArrayQueue;
use futures::future::LocalBoxFuture;
use futures::task::AtomicWaker;

use super::source::{ReaderTemplate, RowFileReader};
use super::types::Row;
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;
use crate::source::{ReadStatus, SplitReader};

/// Rows a helper parses between two yields to its shard's other tasks.
const ROWS_PER_YIELD: usize = 4096;

/// Chunks the reading shard parses per `HELPER_SHARE` a helper parses (it also stamps and
/// routes every row; 2:3 measured best on 2 cores once exchanges carry compact records).
const READER_SHARE: u64 = 2;
const HELPER_SHARE: u64 = 3;

/// The plan of a file parsed in parallel (held by the source; sessions are per job attempt).
pub struct ParallelParse {
    chunk_bytes: u64,
    chunks: u64,
    ahead: usize,
    /// Sessions of attempts being built, with the number of shards that joined so far.
    sessions: Mutex<HashMap<u64, (Arc<Session>, usize)>>,
}

impl ParallelParse {
    /// A file of `chunks` chunks of `chunk_bytes` (> 0), `ahead` (> 0) parsed chunks queued
    /// per helper shard at most.
    pub fn new(chunk_bytes: u64, chunks: u64, ahead: usize) -> Self {
        assert!(chunk_bytes > 0 && ahead > 0 && chunks > 0, "parallel parsing needs chunks");
        Self {
            chunk_bytes,
            chunks,
            ahead,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// This shard's end of the attempt's session (each shard calls this once per attempt).
    pub(crate) fn join(&self, ctx: &BuildCtx<'_>) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sessions.entry(ctx.attempt).or_insert_with(|| {
            let session = Session {
                shards: ctx.shards as u64,
                chunk_bytes: self.chunk_bytes,
                chunks: self.chunks,
                start: AtomicU64::new(u64::MAX),
                closed: AtomicBool::new(false),
                started: (0..ctx.shards).map(|_| AtomicWaker::new()).collect(),
                queues: (0..ctx.shards)
                    .map(|_| ChunkQueue {
                        slots: ArrayQueue::new(self.ahead),
                        filled: AtomicWaker::new(),
                        drained: AtomicWaker::new(),
                    })
                    .collect(),
            };
            (Arc::new(session), 0)
        });
        entry.1 += 1;
        let session = entry.0.clone();
        if entry.1 >= ctx.shards {
            sessions.remove(&ctx.attempt);
        }
        session
    }
}

/// What the shards of one attempt share.
pub(crate) struct Session {
    shards: u64,
    chunk_bytes: u64,
    chunks: u64,
    /// The first chunk helpers parse (`u64::MAX` until the reader opened).
    start: AtomicU64,
    /// The reader is gone: helpers stop.
    closed: AtomicBool,
    /// Per shard: the helper waiting for `start`.
    started: Vec<AtomicWaker>,
    /// Per shard: the chunks it parsed, in order (shard 0's is unused).
    queues: Vec<ChunkQueue>,
}

impl Session {
    fn chunk_range(&self, k: u64) -> (u64, u64) {
        let end = if k + 1 >= self.chunks { u64::MAX } else { (k + 1) * self.chunk_bytes };
        (k * self.chunk_bytes, end)
    }

    /// The shard that parses chunk `k` (unless it is the reader's first): in every period of
    /// `READER_SHARE + HELPER_SHARE·(shards − 1)` chunks, the first `READER_SHARE` for the
    /// reading shard 0, `HELPER_SHARE` each for the others.
    fn parser_of(&self, k: u64) -> usize {
        match k % (READER_SHARE + HELPER_SHARE * (self.shards - 1)) {
            r if r < READER_SHARE => 0,
            r => (1 + (r - READER_SHARE) / HELPER_SHARE) as usize,
        }
    }

    fn publish_start(&self, first: u64) {
        self.start.store(first, Ordering::Release);
        self.started.iter().for_each(AtomicWaker::wake);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.started.iter().for_each(AtomicWaker::wake);
        self.queues.iter().for_each(|q| q.drained.wake());
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The first chunk to parse, once the reader opened (`None`: the reader is gone).
    async fn wait_start(&self, shard: usize) -> Option<u64> {
        poll_fn(|cx| {
            for attempt in 0..2 {
                if self.is_closed() {
                    return Poll::Ready(None);
                }
                let start = self.start.load(Ordering::Acquire);
                if start != u64::MAX {
                    return Poll::Ready(Some(start));
                }
                if attempt == 0 {
                    self.started[shard].register(cx.waker());
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// One helper's parsed chunks on their way to the reader (single producer, single consumer).
struct ChunkQueue {
    slots: ArrayQueue<ParsedChunk>,
    /// The reader waiting for a chunk.
    filled: AtomicWaker,
    /// The helper waiting for room.
    drained: AtomicWaker,
}

impl ChunkQueue {
    /// Queue `chunk`, waiting for room; `false` if the reader is gone.
    async fn push(&self, chunk: ParsedChunk, session: &Session) -> bool {
        let mut item = Some(chunk);
        poll_fn(|cx| {
            for attempt in 0..2 {
                if session.is_closed() {
                    return Poll::Ready(false);
                }
                match self.slots.push(item.take().expect("pushed once")) {
                    Ok(()) => {
                        self.filled.wake();
                        return Poll::Ready(true);
                    }
                    Err(back) => item = Some(back),
                }
                if attempt == 0 {
                    self.drained.register(cx.waker());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// The next chunk, waiting for it.
    async fn pop(&self) -> ParsedChunk {
        poll_fn(|cx| {
            for attempt in 0..2 {
                if let Some(chunk) = self.slots.pop() {
                    self.drained.wake();
                    return Poll::Ready(chunk);
                }
                if attempt == 0 {
                    self.filled.register(cx.waker());
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// A chunk's rows, parsed by a helper.
struct ParsedChunk {
    index: u64,
    rows: Vec<Row>,
    /// Per row: the offset after its line, the chunk's lines read through it.
    ends: Vec<(u64, u64)>,
    /// Lines of the chunk read (through the bad line, if `error`).
    lines: u64,
    /// Offset of the first line after the chunk (the file's end after the last).
    end_offset: u64,
    /// Parsing stopped here (after `rows`): a bad line (numbered within the chunk) or I/O.
    error: Option<WeirError>,
}

/// A helper shard's work: parse its chunks from the reader's start on and queue them.
pub(crate) fn parse_ahead(session: Arc<Session>, template: ReaderTemplate, path: PathBuf, shard: usize) -> LocalBoxFuture<'static, Result<()>> {
    Box::pin(async move {
        let Some(start) = session.wait_start(shard).await else { return Ok(()) };
        let mut expected_rows = 0usize;
        for k in start..session.chunks {
            if session.parser_of(k) != shard {
                continue;
            }
            let (from, to) = session.chunk_range(k);
            let mut reader = template.range(path.clone(), from, to, Some(0));
            reader.track_rows();
            let mut rows = Vec::with_capacity(expected_rows);
            let mut error = None;
            match reader.open().await {
                Err(e) => error = Some(e),
                Ok(()) => loop {
                    match reader.read(&mut rows, ROWS_PER_YIELD).await {
                        Ok(ReadStatus::Exhausted) => break,
                        Ok(_) => {
                            futures_lite::future::yield_now().await;
                            if session.is_closed() {
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                },
            }
            expected_rows = expected_rows.max(rows.len() + rows.len() / 16);
            let failed = error.is_some();
            let chunk = ParsedChunk {
                index: k,
                ends: reader.take_row_ends(),
                lines: reader.lines_read(),
                end_offset: reader.end_offset(),
                rows,
                error,
            };
            if !session.queues[shard].push(chunk, &session).await || failed {
                return Ok(());
            }
        }
        Ok(())
    })
}

/// A chunk being handed out.
enum Current {
    /// Between chunks.
    Between,
    /// A chunk this shard parses.
    Own(Box<RowFileReader>),
    /// A chunk a helper parsed.
    Ahead {
        rows: std::vec::IntoIter<Row>,
        ends: Vec<(u64, u64)>,
        handed: usize,
        lines: u64,
        end_offset: u64,
        error: Option<WeirError>,
    },
}

/// The reader of the file (split 0, on shard 0): rows in file order, from its own chunks and
/// the helpers' queues.
pub(crate) struct OrderedFileReader {
    session: Arc<Session>,
    template: ReaderTemplate,
    path: PathBuf,
    shard: usize,
    /// The chunk being handed out (or next).
    chunk: u64,
    /// Offset of the chunk's first line (or of the restored position in it) and the lines of
    /// the file before that.
    chunk_offset: u64,
    lines_before: u64,
    /// The first chunk this reader reads (parsed here, from `chunk_offset`).
    first: u64,
    current: Current,
    done: bool,
}

impl OrderedFileReader {
    pub(crate) fn new(session: Arc<Session>, template: ReaderTemplate, path: PathBuf, shard: usize) -> Self {
        Self {
            session,
            template,
            path,
            shard,
            chunk: 0,
            chunk_offset: 0,
            lines_before: 0,
            first: 0,
            current: Current::Between,
            done: false,
        }
    }

    fn parses_here(&self, k: u64) -> bool {
        k == self.first || self.session.parser_of(k) == self.shard
    }

    /// A helper's error, with a bad line numbered in the whole file.
    fn in_file(&self, e: WeirError) -> WeirError {
        match e {
            WeirError::BadRecord { file, line, field, message } => WeirError::BadRecord {
                file,
                line: line + self.lines_before,
                field,
                message,
            },
            other => other,
        }
    }

    fn next_chunk(&mut self, end_offset: u64, lines: u64) {
        self.chunk_offset = end_offset;
        self.lines_before += lines;
        self.chunk += 1;
        self.current = Current::Between;
    }
}

impl Drop for OrderedFileReader {
    fn drop(&mut self) {
        self.session.close();
    }
}

impl SplitReader<Row> for OrderedFileReader {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.session.publish_start(self.first + 1);
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<Row>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(async move {
            if self.done {
                return Ok(ReadStatus::Exhausted);
            }
            let target = out.len() + max;
            loop {
                match &mut self.current {
                    Current::Between => {
                        if self.chunk >= self.session.chunks {
                            self.done = true;
                            return Ok(ReadStatus::Exhausted);
                        }
                        if self.parses_here(self.chunk) {
                            let (from, to) = self.session.chunk_range(self.chunk);
                            let mut reader = self.template.range(self.path.clone(), from, to, Some(self.lines_before));
                            if self.chunk == self.first {
                                reader.start_at(self.chunk_offset, 0);
                            }
                            reader.open().await?;
                            self.current = Current::Own(Box::new(reader));
                        } else {
                            let queue = &self.session.queues[self.session.parser_of(self.chunk)];
                            let chunk = queue.pop().await;
                            assert_eq!(chunk.index, self.chunk, "a helper queued chunks out of order");
                            self.current = Current::Ahead {
                                rows: chunk.rows.into_iter(),
                                ends: chunk.ends,
                                handed: 0,
                                lines: chunk.lines,
                                end_offset: chunk.end_offset,
                                error: chunk.error,
                            };
                        }
                    }
                    Current::Own(reader) => {
                        let status = reader.read(out, target - out.len()).await?;
                        if status == ReadStatus::Exhausted {
                            let (end, lines) = (reader.end_offset(), reader.lines_read());
                            self.next_chunk(end, lines);
                        }
                        if out.len() >= target {
                            return Ok(ReadStatus::More);
                        }
                    }
                    Current::Ahead {
                        rows,
                        handed,
                        lines,
                        end_offset,
                        error,
                        ..
                    } => {
                        let n = (target - out.len()).min(rows.len());
                        out.extend(rows.by_ref().take(n));
                        *handed += n;
                        if rows.len() == 0 {
                            if let Some(e) = error.take() {
                                let e = self.in_file(e);
                                self.done = true;
                                return Err(e);
                            }
                            let (end, lines) = (*end_offset, *lines);
                            self.next_chunk(end, lines);
                        }
                        if out.len() >= target {
                            return Ok(ReadStatus::More);
                        }
                    }
                }
            }
        })
    }

    fn position(&self) -> Result<Vec<u8>> {
        let (offset, lines) = match &self.current {
            Current::Between => (self.chunk_offset, self.lines_before),
            Current::Own(reader) => match reader.unread_offset() {
                Some(offset) => (offset, self.lines_before + reader.lines_read()),
                None => (self.chunk_offset, self.lines_before),
            },
            Current::Ahead { ends, handed, .. } => match handed.checked_sub(1) {
                None => (self.chunk_offset, self.lines_before),
                Some(last) => (ends[last].0, self.lines_before + ends[last].1),
            },
        };
        Ok(crate::checkpoint::snapshot::encode(&(offset, lines)))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        if let Ok((_, _, start, end)) = crate::checkpoint::snapshot::decode::<(u64, u64, u64, u64)>(position, "SQL file range position") {
            return Err(WeirError::Other(format!(
                "{}: the checkpoint read this file as bytes [{start}, {end}), this job reads it as a whole (another file_split_bytes, or the file changed)",
                self.path.display()
            )));
        }
        let (offset, lines): (u64, u64) = crate::checkpoint::snapshot::decode(position, "SQL file split position")?;
        self.first = (offset / self.session.chunk_bytes).min(self.session.chunks - 1);
        self.chunk = self.first;
        self.chunk_offset = offset;
        self.lines_before = lines;
        self.current = Current::Between;
        self.done = false;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

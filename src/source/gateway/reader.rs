//! The split reader of one gateway partition, on its shard: reads the partition's log segments
//! with glommio's direct-I/O file reads and hands out the events that are durable, parsed by the
//! source's format, with the file source's bad-record policy (fail / skip / dead-letter; the
//! "file" is `gateway <name> partition <p>` and the "line" the event's ordinal).
//!
//! Position (checkpoints): `(segment, offset, next)` = the segment file (its first ordinal), the
//! byte offset of the frame holding event `next`, and the ordinal of the next event to hand
//! out. `seek` resumes exactly there; without a seek the reader starts at the oldest event the
//! log retains (a restart without a checkpoint replays the retained log: at-least-once).
//!
//! Invariants: only events with an ordinal below the partition's `durable_next` are handed out,
//! each exactly once per run, in ordinal order; the reader publishes its next ordinal to
//! `consumed` after every read; the buffer holds at most one read chunk plus one frame.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use glommio::io::DmaFile;
use weir_storage::wal::record::{decode_frame, decode_payload, FrameError, HEADER_BYTES};
use weir_storage::wal::segment_path;

use super::GatewayShared;
use crate::checkpoint::snapshot;
use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::shard::OperatorMetrics;
use crate::source::file::dead_letter::SharedDeadLetters;
use crate::source::file::{handle_bad_record, BadLine, LineInfo, ParseLine};
use crate::source::{ReadStatus, SplitReader};

/// Where a reader stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub segment: u64,
    pub offset: u64,
    pub next: u64,
}

/// Reads one partition of the gateway log.
pub(crate) struct GatewayReader<T> {
    pub(crate) shared: Arc<GatewayShared>,
    pub(crate) partition: usize,
    pub(crate) dir: PathBuf,
    pub(crate) position: Option<LogPosition>,
    pub(crate) file: Option<std::rc::Rc<DmaFile>>,
    /// Bytes of the current segment from `buf_offset` on.
    pub(crate) buf: Vec<u8>,
    pub(crate) buf_offset: u64,
    pub(crate) chunk_bytes: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) poll_ms: u64,
    pub(crate) parser: Box<dyn ParseLine<T>>,
    pub(crate) info: LineInfo,
    pub(crate) policy: ErrorPolicy,
    pub(crate) metrics: Arc<OperatorMetrics>,
    pub(crate) dead_letters: Option<SharedDeadLetters>,
    /// The job checkpoints: positions are reported at barriers (see `retain_from`).
    pub(crate) checkpointing: bool,
    /// The position handed out at the previous barrier.
    pub(crate) last_checkpoint_next: std::cell::Cell<Option<u64>>,
}

/// What the bytes at the current offset hold.
enum AtOffset {
    Frame,
    /// Not a whole frame in the buffer yet: read more.
    NeedBytes,
    /// No frame here (end of the segment's data, or not written yet).
    Nothing,
}

impl<T> GatewayReader<T> {
    fn part(&self) -> &super::log::PartitionShared {
        &self.shared.partitions[self.partition]
    }

    fn pos(&self) -> LogPosition {
        self.position.expect("position set at open")
    }

    fn describe_at(&self) -> String {
        let p = self.pos();
        format!("{} offset {}", segment_path(&self.dir, p.segment).display(), p.offset)
    }

    async fn open_segment(&mut self, segment: u64) -> Result<()> {
        let path = segment_path(&self.dir, segment);
        let file = crate::shard::inflight::open_dma(&path).await.map_err(|e| {
            let oldest = self.part().oldest.load(Ordering::Acquire);
            WeirError::Other(format!(
                "gateway log partition {}: cannot open {} (events from {oldest} on are retained): {e}",
                self.partition,
                path.display()
            ))
        })?;
        // A file a dropped read still holds is closed when that read ends.
        if let Some(old) = self.file.replace(std::rc::Rc::new(file)).and_then(|f| std::rc::Rc::try_unwrap(f).ok()) {
            let _ = old.close().await;
        }
        self.buf.clear();
        Ok(())
    }

    /// Read up to one chunk more of the current segment into the buffer; false at end of file.
    async fn fill(&mut self) -> Result<bool> {
        let file = self.file.as_ref().expect("segment open");
        let at = self.buf_offset + self.buf.len() as u64;
        let chunk = crate::shard::inflight::read_dma_at(file, at, self.chunk_bytes).await.map_err(|e| {
            WeirError::Other(format!(
                "gateway log partition {}: reading {} at {at}: {e}",
                self.partition,
                segment_path(&self.dir, self.pos().segment).display()
            ))
        })?;
        if chunk.is_empty() {
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk);
        Ok(true)
    }

    fn classify(&self) -> Result<AtOffset> {
        let start = (self.pos().offset - self.buf_offset) as usize;
        let bytes = &self.buf[start..];
        if bytes.len() >= HEADER_BYTES && bytes[..HEADER_BYTES].iter().all(|b| *b == 0) {
            return Ok(AtOffset::Nothing);
        }
        match decode_frame(bytes) {
            Ok(_) => Ok(AtOffset::Frame),
            Err(FrameError::ShortHeader) => Ok(AtOffset::NeedBytes),
            Err(FrameError::BadLength(len)) => {
                let declared = bytes.get(4..8).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
                match declared {
                    Some(l) if l <= self.max_frame_bytes => Ok(AtOffset::NeedBytes),
                    _ => Err(WeirError::Other(format!(
                        "gateway log {}: frame length {len} exceeds the largest request ({} bytes)",
                        self.describe_at(),
                        self.max_frame_bytes
                    ))),
                }
            }
            Err(FrameError::BadCrc { .. }) => Ok(AtOffset::Nothing),
        }
    }

    /// Make the frame at the current position available; false if no frame is there.
    async fn frame_here(&mut self) -> Result<bool> {
        loop {
            match self.classify()? {
                AtOffset::Frame => return Ok(true),
                AtOffset::Nothing => return Ok(false),
                AtOffset::NeedBytes => {
                    if !self.fill().await? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Drop consumed bytes from the buffer (keeps it bounded).
    fn compact(&mut self) {
        let start = (self.pos().offset - self.buf_offset) as usize;
        if start > 0 {
            self.buf.drain(..start);
            self.buf_offset = self.pos().offset;
        }
    }

    /// Forget buffered bytes at and after the current frame (they may be older than the
    /// durability frontier just loaded) so they are read again.
    fn refresh(&mut self) {
        self.compact();
        self.buf.clear();
    }

    fn bad(&self, bad: BadLine, raw: &[u8]) -> Result<()> {
        handle_bad_record(&self.policy, &self.metrics, self.dead_letters.as_ref(), &self.info, bad, raw, false)
    }

    fn dead_letters_full(&self) -> bool {
        self.dead_letters.as_ref().is_some_and(|b| b.borrow().is_full())
    }

    async fn read_events(&mut self, out: &mut Vec<T>, max: usize) -> Result<ReadStatus> {
        let target = out.len() + max.max(1);
        let mut refreshed = false;
        loop {
            if let Some(p) = self.shared.poison.get() {
                return Err(WeirError::Other(format!("gateway log failed: {p}")));
            }
            let durable = self.part().durable_next.load(Ordering::Acquire);
            let pos = self.pos();
            if pos.next >= durable {
                self.part().consumed.store(pos.next, Ordering::Release);
                if self.shared.drained.load(Ordering::Acquire) && self.part().durable_next.load(Ordering::Acquire) <= pos.next {
                    return Ok(ReadStatus::Exhausted);
                }
                return Ok(ReadStatus::Idle { retry_after_ms: self.poll_ms });
            }
            if out.len() >= target || self.dead_letters_full() {
                self.part().consumed.store(pos.next, Ordering::Release);
                return Ok(ReadStatus::More);
            }
            if self.file.is_none() {
                // Nothing was durable at open: the first segment exists now.
                self.open_segment(pos.segment).await?;
                self.buf_offset = pos.offset;
            }
            if !self.frame_here().await? {
                if !refreshed {
                    // The buffer may predate the durability frontier: read the bytes again.
                    self.refresh();
                    refreshed = true;
                    continue;
                }
                // Event `next` is durable but not in this segment: the next segment starts at it.
                self.open_segment(pos.next).await?;
                self.buf_offset = 0;
                self.position = Some(LogPosition {
                    segment: pos.next,
                    offset: 0,
                    next: pos.next,
                });
                if !self.frame_here().await? {
                    return Err(WeirError::Other(format!(
                        "gateway log partition {}: event {} is durable but {} holds no frame at its start",
                        self.partition,
                        pos.next,
                        segment_path(&self.dir, pos.next).display()
                    )));
                }
            }
            refreshed = false;
            self.take_frame(out, target)?;
            self.compact();
        }
    }

    /// Hand out events of the frame at the current position (from `next` on), up to `target`.
    fn take_frame(&mut self, out: &mut Vec<T>, target: usize) -> Result<()> {
        let pos = self.pos();
        let start = (pos.offset - self.buf_offset) as usize;
        let buf = std::mem::take(&mut self.buf);
        let result = (|| {
            let frame = decode_frame(&buf[start..]).map_err(|e| WeirError::Other(format!("gateway log {}: {e:?}", self.describe_at())))?;
            let ops = decode_payload(frame.payload).map_err(|at| WeirError::Other(format!("gateway log {}: bad payload at byte {at}", self.describe_at())))?;
            let count = ops.len() as u64;
            let first = (frame.seq + 1).checked_sub(count).filter(|f| *f <= pos.next && pos.next <= frame.seq);
            let Some(first) = first else {
                return Err(WeirError::Other(format!(
                    "gateway log {}: frame of events ..={} does not hold event {}",
                    self.describe_at(),
                    frame.seq,
                    pos.next
                )));
            };
            let mut next = pos.next;
            for op in &ops[(pos.next - first) as usize..] {
                if out.len() >= target || self.dead_letters_full() {
                    break;
                }
                self.info.line = next;
                let value = op.value();
                if let Err(bad) = self.parser.parse(value, &self.info, out) {
                    self.bad(bad, value)?;
                }
                next += 1;
            }
            let position = if next > frame.seq {
                LogPosition {
                    segment: pos.segment,
                    offset: pos.offset + frame.frame_len as u64,
                    next,
                }
            } else {
                LogPosition { next, ..pos }
            };
            Ok(position)
        })();
        self.buf = buf;
        self.position = Some(result?);
        Ok(())
    }
}

impl<T> SplitReader<T> for GatewayReader<T> {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let position = match self.position {
                Some(p) => p,
                None => {
                    let oldest = self.part().oldest.load(Ordering::Acquire);
                    LogPosition {
                        segment: oldest,
                        offset: 0,
                        next: oldest,
                    }
                }
            };
            self.position = Some(position);
            self.part().consumed.store(position.next, Ordering::Release);
            if self.checkpointing {
                self.part().retain_from.fetch_max(position.next, Ordering::AcqRel);
                self.part().checkpointed.store(true, Ordering::Release);
            }
            if position.next < self.part().durable_next.load(Ordering::Acquire) {
                self.open_segment(position.segment).await?;
                self.buf_offset = position.offset;
            }
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(self.read_events(out, max))
    }

    fn describe(&self) -> String {
        format!("gateway {} partition {}", self.shared.name, self.partition)
    }

    fn position(&self) -> Result<Vec<u8>> {
        let pos = self.pos();
        // Keep the log back to the previous barrier's position: the checkpoint of the latest
        // barrier may still fail, the one before it completed (or failed, then older ones
        // are gone anyway with max one checkpoint in flight).
        if let Some(prev) = self.last_checkpoint_next.replace(Some(pos.next)) {
            self.part().retain_from.fetch_max(prev, Ordering::AcqRel);
        }
        Ok(snapshot::encode(&pos))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let p: LogPosition = snapshot::decode(position, "gateway log position")?;
        self.position = Some(p);
        Ok(())
    }
}

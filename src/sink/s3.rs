//! The S3 sink: Flink's `filesystem` connector on an `s3://bucket/prefix` path. Rows are
//! written as CSV or JSON lines ([`Format`]) into part files
//! `<prefix>/part-<shard>-<run>-<n>.<ext>`, each one S3 multipart upload.
//!
//! Data flows into the open part file's buffer; whenever it holds `part_size` bytes (at least
//! S3's 5 MiB minimum) one part is uploaded, so memory per shard is bounded by one part plus
//! one input step's output. A part file rolls (its last, possibly short, part is uploaded)
//! when it reaches `file_size` bytes (`sink.rolling-policy.file-size`), when it has been open
//! `rollover_interval` (`sink.rolling-policy.rollover-interval`, checked when the sink is
//! flushed), and — with checkpoints — at every checkpoint barrier.
//!
//! **Exactly-once** (checkpoints on; Flink's two-phase commit with S3's multipart uploads):
//! an upload is completed only when the checkpoint that covers it completes. At a barrier the
//! open part file's last part is uploaded and the upload's key, upload id and part ETags join
//! the *committable* stored in the checkpoint; nothing is visible yet (an unfinished upload is
//! no object). When the checkpoint completes, `CompleteMultipartUpload` publishes the files,
//! idempotently: an upload already completed (gone, with the object present) counts as done. On
//! restore each shard completes its share of the restored checkpoint's uploads, and shard 0
//! aborts every other unfinished upload of this sink's earlier runs under the prefix
//! (`ListMultipartUploads`): output written after the restored checkpoint is discarded and the
//! replay produces it again. `<run>` is unique per run, so no two runs share a key.
//!
//! Without checkpoints a part file is completed as soon as it rolls, and at the end of input.
//!
//! Invariants: an object under the prefix exists only for a completed checkpoint (with
//! checkpoints on); every part but a file's last is exactly `part_size` bytes; a formatting
//! error is kept and fails the job at the next flush; S3 requests run on the shard's executor
//! through [`crate::s3::S3Client`] (never blocking).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};

use super::file::{format_encoder, EncodePush, SharedBuffer};
use super::format::Format;
use super::Sink;
use crate::checkpoint::snapshot::{decode, encode};
use crate::error::{Result, WeirError};
use crate::operator::Push;
use crate::s3::{BucketTarget, S3Client, S3Config, S3Options, S3Url};
use crate::shard::{BuildCtx, Flusher};

/// S3's smallest part (all but the last part of an upload).
pub const MIN_PART_BYTES: usize = 5 << 20;
/// S3's largest part.
pub const MAX_PART_BYTES: usize = 5 << 30;

/// When part files roll (Flink's `DefaultRollingPolicy` options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollingPolicy {
    /// `sink.rolling-policy.file-size` (default 128 MiB).
    pub file_size: u64,
    /// `sink.rolling-policy.rollover-interval` (default 30 min).
    pub rollover_interval: Duration,
}

impl Default for RollingPolicy {
    fn default() -> Self {
        Self {
            file_size: 128 << 20,
            rollover_interval: Duration::from_secs(30 * 60),
        }
    }
}

/// Writes rows into part files under an `s3://` path (see the module docs).
#[derive(Clone, Debug)]
pub struct S3Sink {
    pub url: S3Url,
    pub format: Format,
    pub rolling: RollingPolicy,
    /// Bytes per uploaded part (`s3.upload.min.part.size`, default 8 MiB; at least 5 MiB).
    pub part_size: usize,
    config: Arc<S3Config>,
    target: BucketTarget,
}

impl S3Sink {
    /// A sink writing `format` rows under `path` (`s3://bucket/prefix`), connection settings
    /// from `options` and the `AWS_*` environment. Resolves the endpoint now.
    pub fn new(path: &str, format: Format, options: &S3Options) -> Result<Self> {
        let url = S3Url::parse(path).map_err(WeirError::Config)?;
        let config = Arc::new(options.resolve().map_err(WeirError::Config)?);
        let target = config.target(&url.bucket)?;
        Ok(Self {
            url,
            format,
            rolling: RollingPolicy::default(),
            part_size: 8 << 20,
            config,
            target,
        })
    }

    pub fn rolling(mut self, rolling: RollingPolicy) -> Self {
        self.rolling = rolling;
        self
    }

    /// Bytes per part, clamped to S3's limits (5 MiB ..= 5 GiB).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.clamp(MIN_PART_BYTES, MAX_PART_BYTES);
        self
    }
}

/// One part file waiting for its checkpoint: the upload to complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingUpload {
    key: String,
    upload_id: String,
    /// `(part number, ETag)`, numbers from 1.
    parts: Vec<(u32, String)>,
}

/// The open part file.
struct OpenFile {
    key: String,
    /// Created on the first part upload (an empty file creates nothing).
    upload_id: Option<String>,
    parts: Vec<(u32, String)>,
    /// Bytes not uploaded yet (less than `part_size` between flushes).
    tail: Vec<u8>,
    bytes: u64,
    opened: Instant,
}

/// The exactly-once state.
struct ExactlyOnce {
    /// Files rolled since the last barrier.
    closed: Vec<PendingUpload>,
    /// Pre-committed files by epoch, not yet committed.
    pending: Vec<(u64, PendingUpload)>,
    /// The restored checkpoint's committables this shard completes at connect.
    restored: Vec<Vec<u8>>,
    /// Upload ids in the restored checkpoint (any shard's): never aborted.
    referenced: HashSet<String>,
    /// This instance aborts leftover uploads of earlier runs.
    clean_leftovers: bool,
}

/// The async half: uploads parts, rolls, completes.
struct S3PartWriter {
    client: S3Client,
    folder: String,
    ext: &'static str,
    shard: usize,
    run: String,
    rolling: RollingPolicy,
    part_size: usize,
    buffer: SharedBuffer,
    current: Option<OpenFile>,
    next_file: u64,
    exactly_once: Option<ExactlyOnce>,
}

fn run_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", nanos as u64 ^ ((std::process::id() as u64) << 48))
}

impl<T: Serialize + Send + 'static> Sink<T> for S3Sink {
    fn name(&self) -> String {
        format!("filesystem:{}", self.url)
    }

    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        let buffer = SharedBuffer::default();
        let mut writer = S3PartWriter {
            client: S3Client::new(self.config.clone(), self.target.clone()),
            folder: self.url.folder(),
            ext: self.format.extension(),
            shard: ctx.shard,
            run: ctx.checkpoint.as_ref().map(|c| c.attempt_token()).unwrap_or_else(run_token),
            rolling: self.rolling,
            part_size: self.part_size.clamp(MIN_PART_BYTES, MAX_PART_BYTES),
            buffer: buffer.clone(),
            current: None,
            next_file: 0,
            exactly_once: None,
        };
        if ctx.checkpointing() {
            let mut referenced = HashSet::new();
            for (_, c) in ctx.restore().and_then(|r| r.committables.get(operator_name)).into_iter().flatten() {
                if let Ok(uploads) = decode::<Vec<(u64, PendingUpload)>>(c, "S3 sink committable") {
                    referenced.extend(uploads.into_iter().map(|(_, u)| u.upload_id));
                }
            }
            writer.exactly_once = Some(ExactlyOnce {
                closed: Vec::new(),
                pending: Vec::new(),
                restored: ctx.restored_committables(operator_name),
                referenced,
                clean_leftovers: ctx.shard == 0,
            });
            ctx.add_committing_flusher(operator_name, Box::new(writer));
        } else {
            ctx.add_flusher(Box::new(writer));
        }
        Ok(Box::new(EncodePush {
            encode: format_encoder::<T>(self.format),
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            rows: super::file::one_row_each::<T>,
        }))
    }
}

impl S3PartWriter {
    fn open_file(&mut self) -> &mut OpenFile {
        if self.current.is_none() {
            let key = format!("{}part-{}-{}-{}.{}", self.folder, self.shard, self.run, self.next_file, self.ext);
            self.next_file += 1;
            self.current = Some(OpenFile {
                key,
                upload_id: None,
                parts: Vec::new(),
                tail: Vec::new(),
                bytes: 0,
                opened: Instant::now(),
            });
        }
        self.current.as_mut().expect("opened above")
    }

    /// Upload `bytes` as the next part of the open file (creating its upload first if needed).
    async fn upload_part(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self.current.as_mut().expect("a file is open");
        if file.upload_id.is_none() {
            file.upload_id = Some(self.client.create_multipart_upload(&file.key).await?);
        }
        let number = file.parts.len() as u32 + 1;
        let upload_id = file.upload_id.as_deref().expect("created above");
        let etag = self.client.upload_part(&file.key, upload_id, number, bytes).await?;
        file.parts.push((number, etag));
        Ok(())
    }

    /// Roll the open file: upload its tail as the last part; then complete it (no checkpoints)
    /// or keep it for the next checkpoint.
    async fn finish_file(&mut self) -> Result<()> {
        let Some(file) = self.current.as_mut() else { return Ok(()) };
        if !file.tail.is_empty() {
            let tail = std::mem::take(&mut file.tail);
            self.upload_part(&tail).await?;
        }
        let file = self.current.take().expect("checked above");
        let Some(upload_id) = file.upload_id else { return Ok(()) };
        let done = PendingUpload {
            key: file.key,
            upload_id,
            parts: file.parts,
        };
        match &mut self.exactly_once {
            Some(eo) => eo.closed.push(done),
            None => self.client.complete_multipart_upload(&done.key, &done.upload_id, &done.parts).await?,
        }
        Ok(())
    }

    fn roll_due(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|f| f.bytes >= self.rolling.file_size || f.opened.elapsed() >= self.rolling.rollover_interval)
    }

    async fn complete_all(&mut self, uploads: &[PendingUpload]) -> Result<()> {
        for u in uploads {
            self.client.complete_multipart_upload(&u.key, &u.upload_id, &u.parts).await?;
        }
        Ok(())
    }

    /// After a restore: complete this shard's share of the restored checkpoint's uploads and
    /// (shard 0) abort unfinished uploads of earlier runs that it does not reference.
    async fn recover(&mut self) -> Result<()> {
        let Some(eo) = &mut self.exactly_once else { return Ok(()) };
        let restored = std::mem::take(&mut eo.restored);
        let (clean, referenced) = (eo.clean_leftovers, std::mem::take(&mut eo.referenced));
        let mut uploads = Vec::new();
        for c in &restored {
            uploads.extend(decode::<Vec<(u64, PendingUpload)>>(c, "S3 sink committable")?.into_iter().map(|(_, u)| u));
        }
        self.complete_all(&uploads).await?;
        if clean {
            let own = format!("{}part-", self.folder);
            let this_run = format!("-{}-", self.run);
            // Listed by the folder without its last `/` and filtered here: a query value with
            // `/` is signed correctly (`%2F`) but moto, the test server, checks it decoded.
            let listed = self.client.list_multipart_uploads(self.folder.trim_end_matches('/')).await?;
            for (key, upload_id) in listed {
                let Some(name) = key.strip_prefix(&own) else { continue };
                if name.contains('/') || name.contains(&this_run) || referenced.contains(&upload_id) {
                    continue;
                }
                self.client.abort_multipart_upload(&key, &upload_id).await?;
            }
        }
        Ok(())
    }
}

impl Flusher for S3PartWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.recover())
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bytes = self.buffer.borrow_mut().take_bytes()?;
            if !bytes.is_empty() {
                let part_size = self.part_size;
                let file = self.open_file();
                file.bytes += bytes.len() as u64;
                if file.tail.is_empty() {
                    file.tail = bytes;
                } else {
                    file.tail.extend_from_slice(&bytes);
                }
                while self.current.as_ref().is_some_and(|f| f.tail.len() >= part_size) {
                    let file = self.current.as_mut().expect("checked");
                    let rest = file.tail.split_off(part_size);
                    let part = std::mem::replace(&mut file.tail, rest);
                    self.upload_part(&part).await?;
                }
            }
            if self.roll_due() {
                self.finish_file().await?;
            }
            Ok(())
        })
    }

    fn has_pending(&self) -> bool {
        self.buffer.borrow().has_pending() || self.roll_due()
    }

    fn pre_commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.flush().await?;
            self.finish_file().await?;
            let eo = self.exactly_once.as_mut().expect("pre-commit only with checkpoints");
            for u in eo.closed.drain(..) {
                eo.pending.push((epoch, u));
            }
            Ok((!eo.pending.is_empty()).then(|| encode(&eo.pending)))
        })
    }

    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(eo) = self.exactly_once.as_mut() else { return Ok(()) };
            let (done, keep): (Vec<_>, Vec<_>) = eo.pending.drain(..).partition(|(e, _)| *e <= epoch);
            eo.pending = keep;
            let uploads: Vec<PendingUpload> = done.into_iter().map(|(_, u)| u).collect();
            self.complete_all(&uploads).await
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.flush().await?;
            if let Some(eo) = &self.exactly_once {
                // Everything was pre-committed at the final barrier and completed by the final
                // checkpoint; an open file here would be output no checkpoint covers.
                assert!(
                    self.current.is_none() && eo.closed.is_empty(),
                    "S3 sink closed with output no checkpoint covers"
                );
                return Ok(());
            }
            self.finish_file().await
        })
    }
}

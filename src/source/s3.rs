//! The S3 source: Flink's `filesystem` connector reading an `s3://bucket/prefix` path. Every
//! object under the prefix (recursively, in key order; keys whose last segment starts with `.`
//! or `_`, and folder markers ending in `/`, are skipped) is one split, read start to end by one
//! shard as CSV or JSON lines.
//!
//! The objects are listed once, when the source is created (on the driver), so every shard sees
//! the same splits. A reader fetches its object with ranged GETs of `chunk_bytes`
//! (`s3.read.chunk-size`, default 4 MiB) on the shard's executor, never blocking, and cuts them
//! into lines with [`LineSplitter`] (memory: one chunk plus one line of at most
//! `max_line_bytes`). Every GET carries `If-Match` with the ETag seen at listing, so an object
//! replaced while it is read fails the job (`PreconditionFailed`) instead of mixing versions.
//!
//! Checkpoints: a split's position is the object key, its ETag, the byte offset of the next
//! unread line and the line number; a restore checks that the split still names the same
//! object and resumes with a ranged GET at that offset.
//!
//! Bad lines follow `EngineConfig::on_bad_record` as in the file source (errors name
//! `s3://bucket/key`, line and field).
//!
//! Invariants: a split is read in order by one reader; every line becomes a record, a counted
//! bad record, or is blank; no input bytes make the reader panic.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::file::csv::{CsvOptions, CsvParser};
use super::file::dead_letter::SharedDeadLetters;
use super::file::json::JsonParser;
use super::file::reader::{LineKind, LineSplitter, Next};
use super::file::{dead_letters_for, handle_bad_record, next_source_id, BadLine, LineInfo, ParseLine};
use super::{ReadStatus, Source, SplitReader};
use crate::checkpoint::snapshot::{decode, encode};
use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::s3::{BucketTarget, ObjectInfo, S3Client, S3Config, S3Options, S3Url};
use crate::shard::{BuildCtx, OperatorMetrics};

/// Makes the line parser of one split.
pub(crate) type S3ParserFactory<T> = Arc<dyn Fn() -> Box<dyn ParseLine<T>> + Send + Sync>;

/// Reads the objects under an `s3://` path (see the module docs).
pub struct S3Source<T> {
    url: S3Url,
    objects: Arc<Vec<ObjectInfo>>,
    config: Arc<S3Config>,
    target: BucketTarget,
    make_parser: S3ParserFactory<T>,
    chunk_bytes: usize,
    id: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + 'static> S3Source<T> {
    /// CSV objects (no header, `,` delimiter).
    pub fn csv(path: &str, options: &S3Options) -> Result<Self> {
        Self::with_parser(
            path,
            options,
            Arc::new(|| Box::new(CsvParser::<T>::new(CsvOptions::default())) as Box<dyn ParseLine<T>>),
        )
    }

    /// JSON-lines objects: one JSON value per line.
    pub fn json_lines(path: &str, options: &S3Options) -> Result<Self> {
        Self::with_parser(path, options, Arc::new(|| Box::new(JsonParser::<T>::new()) as Box<dyn ParseLine<T>>))
    }
}

/// Whether a listed key is data (not hidden, not a folder marker).
fn is_data_key(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    !key.ends_with('/') && !name.is_empty() && !name.starts_with(['.', '_'])
}

impl<T> S3Source<T> {
    /// List the objects of `path` now (on the calling thread, through a helper executor).
    pub(crate) fn with_parser(path: &str, options: &S3Options, make_parser: S3ParserFactory<T>) -> Result<Self> {
        let url = S3Url::parse(path).map_err(WeirError::Config)?;
        let config = Arc::new(options.resolve().map_err(WeirError::Config)?);
        let target = config.target(&url.bucket)?;
        let (c, t, prefix) = (config.clone(), target.clone(), url.prefix.clone());
        let listed = crate::s3::blocking(move || async move { S3Client::new(c, t).list_objects(&prefix).await })??;
        // `prefix` names a folder or one object: keep the object itself and what is below `prefix/`.
        let folder = url.folder();
        let objects: Vec<ObjectInfo> = listed
            .into_iter()
            .filter(|o| o.key == url.prefix || o.key.starts_with(&folder))
            .filter(|o| is_data_key(&o.key))
            .collect();
        Ok(Self {
            url,
            objects: Arc::new(objects),
            config,
            target,
            make_parser,
            chunk_bytes: 4 << 20,
            id: next_source_id(),
            _t: PhantomData,
        })
    }

    /// Bytes per ranged GET (at least 1 KiB, at most 64 MiB).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.clamp(1 << 10, 64 << 20);
        self
    }

    /// The objects, in split order.
    pub fn objects(&self) -> &[ObjectInfo] {
        &self.objects
    }

    pub fn url(&self) -> &S3Url {
        &self.url
    }
}

impl<T: Send + 'static> Source<T> for S3Source<T> {
    fn name(&self) -> String {
        format!("filesystem:{}", self.url)
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.objects.len())
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        let object = self
            .objects
            .get(split)
            .cloned()
            .ok_or_else(|| WeirError::Other(format!("S3 source {}: split {split} of {} does not exist", self.url, self.objects.len())))?;
        let dead_letters = dead_letters_for(self.id, ctx)?;
        Ok(Box::new(S3Reader {
            info: LineInfo {
                file: Arc::from(format!("s3://{}/{}", self.url.bucket, object.key).as_str()),
                line: 0,
            },
            client: S3Client::new(self.config.clone(), self.target.clone()),
            object,
            offset: 0,
            chunk_bytes: self.chunk_bytes,
            splitter: LineSplitter::new(ctx.config.max_line_bytes),
            parser: (self.make_parser)(),
            policy: ctx.config.on_bad_record.clone(),
            max_line_bytes: ctx.config.max_line_bytes,
            metrics: ctx
                .source_metrics()
                .ok_or_else(|| WeirError::Other("S3 source built outside a source segment".into()))?,
            dead_letters,
            header: None,
        }))
    }
}

/// Reads one object.
struct S3Reader<T> {
    client: S3Client,
    object: ObjectInfo,
    info: LineInfo,
    /// Next byte to fetch.
    offset: u64,
    chunk_bytes: usize,
    splitter: LineSplitter,
    parser: Box<dyn ParseLine<T>>,
    policy: ErrorPolicy,
    max_line_bytes: usize,
    metrics: Arc<OperatorMetrics>,
    dead_letters: Option<SharedDeadLetters>,
    header: Option<Vec<u8>>,
}

/// An [`S3Reader`]'s checkpointed position.
#[derive(serde::Serialize, serde::Deserialize)]
struct S3Position {
    key: String,
    etag: String,
    /// Byte offset of the next unread line.
    offset: u64,
    line: u64,
    header: Option<Vec<u8>>,
}

impl<T> S3Reader<T> {
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

    async fn read_chunk(&mut self) -> Result<()> {
        if self.offset >= self.object.size {
            self.splitter.finish();
            return Ok(());
        }
        let len = (self.chunk_bytes as u64).min(self.object.size - self.offset);
        let etag = (!self.object.etag.is_empty()).then_some(self.object.etag.as_str());
        let chunk = self.client.get_range(&self.object.key, self.offset, len, etag).await?;
        if chunk.is_empty() {
            return Err(WeirError::Other(format!(
                "S3 source {}: the object ended at byte {} although it was listed with {} bytes",
                self.info.file, self.offset, self.object.size
            )));
        }
        self.offset += chunk.len() as u64;
        self.splitter.feed(&chunk);
        Ok(())
    }

    async fn read_lines(&mut self, out: &mut Vec<T>, max: usize) -> Result<ReadStatus> {
        let target = out.len() + max.max(1);
        while out.len() < target {
            if self.dead_letters.as_ref().is_some_and(|b| b.borrow().is_full()) {
                return Ok(ReadStatus::More);
            }
            match self.splitter.next_line() {
                Next::NeedData => self.read_chunk().await?,
                Next::Done => return Ok(ReadStatus::Exhausted),
                Next::Line(kind) => {
                    self.info.line = self.splitter.line_number();
                    match kind {
                        LineKind::TooLong if self.parser.wants_header() => {
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

impl<T> SplitReader<T> for S3Reader<T> {
    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(self.read_lines(out, max))
    }

    fn describe(&self) -> String {
        self.info.file.to_string()
    }

    fn position(&self) -> Result<Vec<u8>> {
        Ok(encode(&S3Position {
            key: self.object.key.clone(),
            etag: self.object.etag.clone(),
            offset: self.offset - self.splitter.unconsumed() as u64,
            line: self.splitter.line_number(),
            header: self.header.clone(),
        }))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let p: S3Position = decode(position, &self.describe())?;
        if p.key != self.object.key {
            return Err(WeirError::Checkpoint(format!(
                "S3 source split {}: the checkpoint's position is for object '{}' (objects under the prefix changed since the checkpoint; \
                 restore needs the same listing)",
                self.info.file, p.key
            )));
        }
        if !p.etag.is_empty() && !self.object.etag.is_empty() && p.etag != self.object.etag {
            return Err(WeirError::Checkpoint(format!(
                "S3 source split {}: the object was replaced since the checkpoint (ETag {} then, {} now)",
                self.info.file, p.etag, self.object.etag
            )));
        }
        self.offset = p.offset;
        self.splitter.set_line_number(p.line);
        if let Some(h) = &p.header {
            self.parser.header(h);
        }
        self.header = p.header;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hidden_keys_and_folder_markers_are_not_data() {
        assert!(super::is_data_key("in/bids-1.csv"));
        assert!(!super::is_data_key("in/_SUCCESS"));
        assert!(!super::is_data_key("in/.part-0.inprogress"));
        assert!(!super::is_data_key("in/sub/"));
    }
}

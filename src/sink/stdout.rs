//! The print sink: rows to standard output as `<shard>> <row>` lines (Flink's `print`
//! connector prefixes rows with the subtask index the same way).
//!
//! Writing to a terminal can block, so the bytes go to one writer thread through a bounded
//! channel; a full channel makes the shard wait (counted as backpressure), never block.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde::Serialize;

use super::file::{format_encoder, EncodePush, SharedBuffer};
use super::format::Format;
use super::Sink;
use crate::error::Result;
use crate::operator::Push;
use crate::shard::{BuildCtx, Flusher};

/// Prints rows as JSON (or CSV) lines.
#[derive(Clone, Copy, Debug)]
pub struct StdoutSink {
    pub format: Format,
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self { format: Format::Json }
    }
}

/// Chunks in flight to the writer thread, at most.
const STDOUT_QUEUE_CHUNKS: usize = 64;

fn writer() -> &'static SyncSender<Vec<u8>> {
    static WRITER: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Vec<u8>>(STDOUT_QUEUE_CHUNKS);
        std::thread::Builder::new()
            .name("weir-stdout".into())
            .spawn(move || {
                use std::io::Write;
                let out = std::io::stdout();
                for chunk in rx {
                    let mut lock = out.lock();
                    // A closed stdout (e.g. `| head`) must not crash the job: drop the output.
                    let _ = lock.write_all(&chunk).and_then(|_| lock.flush());
                }
            })
            .expect("spawning the stdout writer thread");
        tx
    })
}

impl<T: Serialize + Send + 'static> Sink<T> for StdoutSink {
    fn name(&self) -> String {
        "print".into()
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        let buffer = SharedBuffer::default();
        ctx.add_flusher(Box::new(StdoutFlusher {
            buffer: buffer.clone(),
            prefix: format!("{}> ", ctx.shard),
        }));
        Ok(Box::new(EncodePush {
            encode: format_encoder::<T>(self.format),
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            rows: super::file::one_row_each::<T>,
        }))
    }
}

struct StdoutFlusher {
    buffer: SharedBuffer,
    prefix: String,
}

impl Flusher for StdoutFlusher {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bytes = self.buffer.borrow_mut().take_bytes()?;
            let mut chunk = Vec::with_capacity(bytes.len() + bytes.len() / 8);
            for line in bytes.split_inclusive(|b| *b == b'\n') {
                chunk.extend_from_slice(self.prefix.as_bytes());
                chunk.extend_from_slice(line);
            }
            let mut chunk = Some(chunk);
            while let Some(c) = chunk.take() {
                match writer().try_send(c) {
                    Ok(()) => {}
                    Err(TrySendError::Full(c)) => {
                        chunk = Some(c);
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
            Ok(())
        })
    }
    fn has_pending(&self) -> bool {
        self.buffer.borrow().has_pending()
    }
}

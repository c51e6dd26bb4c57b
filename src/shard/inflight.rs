//! File reads that may outlive the future that asked for them.
//!
//! A buffered io_uring read is copied by a kernel worker into a buffer that glommio owns until
//! the completion arrives. When a reader's future is dropped mid-read (its task cancelled
//! because another task of the shard failed), glommio keeps the buffer until it sees the
//! completion — but only while the executor keeps running: once the shard's executor ends,
//! the buffer is freed and the kernel may still write into it (heap corruption, seen as
//! `malloc(): mismatching next->prev_size` in a later allocation of another thread).
//!
//! The same holds for opening a file: glommio's open ends with a `statx` the kernel writes into
//! a buffer of the open's own.
//!
//! So every file read and open on a shard goes through this module ([`read_at`],
//! [`open_buffered`], ...): the operation runs as a detached task of its own (dropping the
//! caller does not cancel it) and counts itself in flight until the kernel completed it, and a
//! shard awaits [`drain`] before its executor ends. (Writes need no such care: the kernel only
//! reads their buffers.) The task and its count are `weir_storage::inflight`'s, which the state
//! stores' own file creates use too: one count per shard covers both.
//!
//! Invariants: the in-flight count is per thread (shard) and never negative; [`drain`] returns
//! only when it is zero or its bound passed (logged: a read the kernel never completes).

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::{BufferedFile, DmaFile, ReadResult};

/// The counted detached task and the count, shared with the state stores' own file creates
/// (one counter per thread: [`drain`] waits for both).
pub use weir_storage::inflight::{detached, in_flight};

/// `file.read_at(pos, len)` through [`detached`].
pub async fn read_at(file: &Rc<BufferedFile>, pos: u64, len: usize) -> std::io::Result<ReadResult> {
    let file = file.clone();
    detached(async move { file.read_at(pos, len).await })
        .await
        .unwrap_or_else(|| Err(executor_ended()))
        .map_err(std::io::Error::from)
}

/// `file.read_at(pos, len)` of a direct-I/O file through [`detached`].
pub async fn read_dma_at(file: &Rc<DmaFile>, pos: u64, len: usize) -> std::io::Result<ReadResult> {
    let file = file.clone();
    detached(async move { file.read_at(pos, len).await })
        .await
        .unwrap_or_else(|| Err(executor_ended()))
        .map_err(std::io::Error::from)
}

/// `BufferedFile::open(path)` through [`detached`] (glommio's open ends with a `statx` the
/// kernel writes into a buffer of the open's own).
pub async fn open_buffered(path: &Path) -> glommio::Result<BufferedFile, ()> {
    let path = path.to_path_buf();
    detached(async move { BufferedFile::open(&path).await })
        .await
        .unwrap_or_else(|| Err(executor_ended()))
}

/// `BufferedFile::create(path)` through [`detached`].
pub async fn create_buffered(path: &Path) -> glommio::Result<BufferedFile, ()> {
    let path = path.to_path_buf();
    detached(async move { BufferedFile::create(&path).await })
        .await
        .unwrap_or_else(|| Err(executor_ended()))
}

/// `DmaFile::open(path)` through [`detached`].
pub async fn open_dma(path: &Path) -> glommio::Result<DmaFile, ()> {
    let path = path.to_path_buf();
    detached(async move { DmaFile::open(&path).await })
        .await
        .unwrap_or_else(|| Err(executor_ended()))
}

fn executor_ended() -> glommio::GlommioError<()> {
    glommio::GlommioError::IoError(std::io::Error::new(
        std::io::ErrorKind::Interrupted,
        "the shard's executor ended during the read",
    ))
}

/// Wait (yielding to the executor, which keeps collecting completions) until no read started
/// on this thread is in flight, or `bound` passed.
pub async fn drain(bound: Duration) {
    let start = Instant::now();
    while in_flight() > 0 {
        if start.elapsed() >= bound {
            tracing::warn!(reads = in_flight(), "file reads still in flight when the shard ended");
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader dropped mid-read leaves its read running; `drain` waits for it.
    #[test]
    fn a_dropped_reader_leaves_its_read_counted_until_the_kernel_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = Rc::new(BufferedFile::open(&path).await.unwrap());
                let whole = read_at(&file, 0, 1 << 20).await.unwrap();
                assert_eq!(whole.len(), 1 << 20);
                assert_eq!(in_flight(), 0);
                {
                    // Started (the task is spawned on the first poll), then dropped.
                    let mut read = std::pin::pin!(read_at(&file, 0, 1 << 20));
                    let _ = futures_lite::future::poll_once(&mut read).await;
                    assert_eq!(in_flight(), 1);
                }
                drain(Duration::from_secs(60)).await;
                assert_eq!(in_flight(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

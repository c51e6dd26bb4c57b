//! Sinks: where records leave a job. A sink builds, per shard, the synchronous operator that
//! formats records into a bounded buffer, plus (optionally) a [`crate::shard::Flusher`] that
//! writes the buffer out asynchronously, so no sink does blocking I/O on a shard's run loop.
//!
//! Invariant: a sink's buffer is drained after every input step of its segment, so it holds at
//! most one step's output.

pub mod blackhole;
pub mod collect;
pub mod elasticsearch;
pub mod file;
pub mod format;
pub mod kafka;
pub mod postgres;
pub mod s3;
pub mod stdout;

use crate::error::Result;
use crate::operator::Push;
use crate::shard::BuildCtx;

/// A destination for records of type `T`.
pub trait Sink<T>: Send + Sync + 'static {
    /// Name used in metrics and plans.
    fn name(&self) -> String;
    /// Build this shard's instance (and register its flusher with `ctx`).
    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>>;
}

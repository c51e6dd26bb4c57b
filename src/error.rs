//! Operating errors of the engine: bad input, I/O, configuration. Each names what was wrong and
//! where (file, line, field; operation and path). Programmer errors are assertions instead.

use std::path::PathBuf;

/// An error that stops a job.
#[derive(Debug, thiserror::Error)]
pub enum WeirError {
    #[error("bad record in {file} line {line}{}: {message}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    BadRecord {
        file: String,
        line: u64,
        field: Option<String>,
        message: String,
    },
    #[error("bad record in {topic}[{partition}] offset {offset}{}: {message}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    BadMessage {
        topic: String,
        partition: i32,
        offset: i64,
        field: Option<String>,
        message: String,
    },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("configuration: {0}")]
    Config(String),
    #[error("job failed on shard {shard}: {message}")]
    Shard { shard: usize, message: String },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The keyed-state backend failed (store I/O, damaged state bytes).
    #[error("keyed state: {0}")]
    State(String),
    #[error("{0}")]
    Other(String),
    /// The job was cancelled through the control API (not a failure: no restart).
    #[error("cancelled")]
    Cancelled,
}

impl WeirError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WeirError::Io { op, path: path.into(), source }
    }
}

pub type Result<T, E = WeirError> = std::result::Result<T, E>;

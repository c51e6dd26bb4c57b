//! # weir
//!
//! Apache Flink's job — event time, watermarks, windows, keyed state — as one thread-per-core
//! Rust binary. A Flink user should feel at home: the concepts (watermark strategies, allowed
//! lateness, key groups, side outputs) and the results are Flink's; the engine underneath is
//! shared-nothing: one glommio executor pinned per core, each owning a contiguous range of key
//! groups, talking to the others only through bounded rings.
//!
//! ## A first job
//!
//! ```
//! use weir::prelude::*;
//!
//! let env = StreamEnv::new(EngineConfig { cores: 2, pin_cores: false, ..Default::default() });
//! let words = env
//!     .from_collection(vec!["a b", "b c", "b"])
//!     .without_event_time()
//!     .flat_map(|line: &str| line.split(' ').map(str::to_string).collect::<Vec<_>>())
//!     .key_by(|w: &String| w.clone())
//!     .window(WindowAssigner::tumbling(60_000))
//!     .aggregate(Count)
//!     .collect();
//! env.execute().unwrap();
//! let mut counts: Vec<(String, i64)> = words.take().into_iter().map(|r| (r.key, r.value)).collect();
//! counts.sort();
//! assert_eq!(counts, vec![("a".into(), 1), ("b".into(), 3), ("c".into(), 1)]);
//! ```
//!
//! ## Architecture invariants
//!
//! - No locks and no shared mutable state on the data path: a shard's operators run on one
//!   thread; shards exchange data only through bounded rings ([`ring`]).
//! - Records move in batches ([`batch::Batch`]) with per-record watermark marks, so batching
//!   never changes which records are late.
//! - `key → stable hash → key group → shard` ([`key`]) is frozen: savepoints depend on it.
//! - Every queue and buffer is bounded; waiting on a full ring is measured as backpressure.
//!
//! See README.md for the code map.

pub mod api;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod error;
pub mod jobs;
pub mod key;
pub mod logging;
pub mod operator;
pub mod ring;
pub mod s3;
pub mod scaleout;
pub mod shard;
pub mod sink;
pub mod source;
pub mod sql;
pub mod state;
pub mod testing;
pub mod time;

/// The names most jobs need.
pub mod prelude {
    pub use crate::api::join::JoinInput;
    pub use crate::api::{DataStream, KeyedStream, SourceStream, StreamEnv, WindowedStream};
    pub use crate::config::{EngineConfig, ErrorPolicy};
    pub use crate::error::{Result, WeirError};
    pub use crate::operator::aggregate::{AggregateFn, AggregateFunction, Avg, AvgInt, Count, CountDistinct, Max, Min, Sum};
    pub use crate::operator::process::{KeyedProcessFunction, ProcessContext, TimeDomain};
    pub use crate::operator::window::{WindowAssigner, WindowResult};
    pub use crate::shard::runtime::JobReport;
    pub use crate::sink::blackhole::BlackholeSink;
    pub use crate::sink::file::FileSink;
    pub use crate::sink::format::Format;
    pub use crate::sink::stdout::StdoutSink;
    pub use crate::source::collection::CollectionSource;
    pub use crate::state::{AggregatingState, ListState, MapState, StateBackendKind, StateContext, StateTtl, TtlUpdate, ValueState};
    pub use crate::time::{Timestamp, WatermarkStrategy, WATERMARK_MAX, WATERMARK_MIN};
}

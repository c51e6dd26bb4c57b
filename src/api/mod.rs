//! The typed DataStream API: build a job graph from sources, operators and sinks, then run it.
//!
//! ```
//! use weir::prelude::*;
//!
//! // Bids as (auction, price, event time ms); one in-order split, like one file.
//! let bids = vec![(1i64, 10i64, 1_000i64), (2, 20, 1_500), (1, 30, 9_000), (1, 40, 12_000)];
//! let env = StreamEnv::new(EngineConfig { cores: 2, pin_cores: false, ..Default::default() });
//! let counts = env
//!     .from_collection(bids)
//!     .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(1_000), |b| b.2)
//!     .key_by(|b| b.0)
//!     .window(WindowAssigner::tumbling(10_000))
//!     .aggregate(Count)
//!     .collect();
//! env.execute().unwrap();
//! let mut rows: Vec<_> = counts.take().into_iter().map(|r| (r.key, r.window_start, r.value)).collect();
//! rows.sort();
//! assert_eq!(rows, vec![(1, 0, 2), (1, 10_000, 1), (2, 0, 1)]);
//! ```
//!
//! Invariants: building a job does no I/O and starts nothing; everything runs in
//! [`StreamEnv::execute`]. Every user function is cloned once per shard, so it must be
//! `Clone + Send + Sync`; per-shard mutable state belongs in keyed state, not in closures.

pub mod join;
pub mod process;
pub mod stream;
pub mod windowed;

pub use stream::{DataStream, KeyedStream, SourceStream, StreamEnv};
pub use windowed::WindowedStream;

//! weir: Apache Flink's job as one thread-per-core Rust binary.
pub mod source;

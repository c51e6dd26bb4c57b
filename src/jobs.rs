//! Built-in jobs (in progress).

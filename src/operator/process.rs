//! Keyed process functions (in progress).

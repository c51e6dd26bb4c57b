//! Keyed state (in progress).

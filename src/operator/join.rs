//! Joins (in progress).

//! Nexmark generator (in progress).

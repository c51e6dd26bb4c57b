//! Nexmark source (in progress).

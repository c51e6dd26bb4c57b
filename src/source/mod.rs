//! Sources: where records enter a job.
pub mod nexmark;

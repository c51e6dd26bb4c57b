//! weir-tuning

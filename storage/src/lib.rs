//! weir-storage (filled by the store issue)

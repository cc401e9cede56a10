//! The real registry harness (owned by the registry work).

//! In-memory backend (single node).

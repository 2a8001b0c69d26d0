//! In-memory Store adapter (tests and benchmarks).

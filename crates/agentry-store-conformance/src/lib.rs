//! The Store port's conformance suite, run by every store adapter.

//! Agentry's workflow engine (the LangGraph role): declarative graph
//! definitions, a super-step scheduler with a durable commit protocol,
//! retries, timeouts, approvals, cancellation and resume.
//!
//! - [`definition`]: the TOML workflow format (`workflows/sdlc.toml`), parsed
//!   and validated with errors that name the file and the problem.
//! - [`expr`]: the small, safe `when` expression language of edges.
//! - [`routing`]: from a finished super-step to the next cursor and the
//!   step's whole advance (pure).
//! - [`engine`]: [`Engine`]: submit, run (= resume), approve, reject,
//!   cancel, workers, the stall sweep and the outbox relay; a module
//!   folder with one file per concern (its doc lists them).
//! - [`bench`](mod@bench): the engine benchmark `agentry bench engine`
//!   runs.
//!
//! Key design decision: ONE path. Starting a workflow is resuming it from
//! its empty checkpoint; every node run is a task on the bus consumed by a
//! worker (in-process in embedded mode, remote in scale-out), and a task's
//! delta, events and — when it finishes its super-step — the next cursor are
//! written in one `Store::commit_task` before anything is dispatched or
//! acknowledged. Whatever crashes, `run` on the same store finds either a
//! committed task or none, and continues from there.

pub mod bench;
pub mod definition;
pub mod engine;
pub mod expr;
pub mod routing;

pub use bench::{bench_engine, BenchConfig, BenchReport, IntoStoreBytes};
pub use definition::{
    EdgeAction, EdgeDef, NodeDef, NodeKind, RetryPolicy, WorkflowDefinition, BENCH_WORKFLOW,
    DEFAULT_WORKFLOW,
};
pub use engine::{Engine, EngineConfig, MetricsSnapshot, QueueLoad, Submission, WorkerHandle};

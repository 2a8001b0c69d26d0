//! The `Sandbox` port: run a project's tests in a fresh checkout, in a
//! subprocess with wall-time, memory and network limits.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{RepoPath, Result};

/// Limits for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxLimits {
    /// Wall-clock limit; the whole process group is killed when it passes.
    pub wall_time: Duration,
    /// Address-space limit of the test process, in bytes.
    pub memory_bytes: u64,
    /// Allow network access (default false).
    pub network: bool,
    /// Keep at most this many bytes of stdout and of stderr (the tail).
    pub output_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            wall_time: Duration::from_secs(120),
            memory_bytes: 2 * 1024 * 1024 * 1024,
            network: false,
            output_bytes: 64 * 1024,
        }
    }
}

/// The kind of project, detected from its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectKind {
    /// `pytest` when the project uses it and it is installed, else `unittest`.
    Python,
    /// `cargo test`.
    Rust,
    /// `npm test`.
    Node,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRunRequest {
    /// Where to clone from: a local repository path or a clone URL.
    pub clone_from: String,
    /// Branch to check out.
    pub branch: String,
    /// Extra files written into the checkout before the run (e.g. QA's
    /// tests); paths are confined to the checkout.
    pub overlay: Vec<(RepoPath, String)>,
    /// Command override (None: detected from the project).
    pub command: Option<Vec<String>>,
    /// Limits.
    pub limits: SandboxLimits,
}

/// The result of one run, stored as the QA agent's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRun {
    /// Run id.
    pub id: Uuid,
    /// Detected project kind (None when nothing was recognised).
    pub project_kind: Option<ProjectKind>,
    /// Command that ran.
    pub command: Vec<String>,
    /// Exit code (None when killed by a signal).
    pub exit_code: Option<i32>,
    /// Exit code 0, not killed, and tests ran: a run whose summary says
    /// no test ran (`Ran 0 tests`) did not pass, whatever its exit code.
    pub passed: bool,
    /// Killed at the wall-time limit.
    pub timed_out: bool,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Whether the run was cut off from the network.
    pub network_isolated: bool,
    /// Tail of stdout.
    pub stdout: String,
    /// Tail of stderr.
    pub stderr: String,
    /// Wall time.
    pub duration_ms: u64,
    /// Tests counted from the runner's output, when it said.
    pub tests_passed: Option<u32>,
    /// Failed tests counted from the runner's output, when it said.
    pub tests_failed: Option<u32>,
    /// Commit that was tested.
    pub commit: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// Runs tests in isolation.
#[async_trait]
pub trait Sandbox: Send + Sync + 'static {
    /// Adapter name (`process`).
    fn name(&self) -> &'static str;

    /// Clones, overlays, detects and runs. A failing test suite is a
    /// successful call with `passed == false`; errors are for runs that
    /// could not happen (clone failed, no project detected, bad path).
    async fn run_tests(&self, request: TestRunRequest) -> Result<TestRun>;
}

//! The `Sandbox` port: run a project's tests in a fresh checkout, isolated
//! from the host, under limits.
//!
//! The code a sandbox runs was written by a language model: it is untrusted.
//! A run reports the isolation it actually had ([`Isolation`]), never the
//! isolation that was asked for.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{RepoPath, Result};

/// Limits for one run. Each is applied to every process of the run
/// (resource limits are per process, except `processes`, which counts the
/// run's processes and threads together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxLimits {
    /// Wall-clock limit; every process of the run is killed when it passes.
    pub wall_time: Duration,
    /// Address-space limit of each process, in bytes.
    pub memory_bytes: u64,
    /// Allow network access (default false).
    pub network: bool,
    /// Keep at most this many bytes of stdout and of stderr (the tail).
    pub output_bytes: usize,
    /// CPU time of each process.
    pub cpu_time: Duration,
    /// Largest file a process may write, in bytes.
    pub file_size_bytes: u64,
    /// Open file descriptors of each process.
    pub open_files: u64,
    /// Processes and threads the run may have at once.
    pub processes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            wall_time: Duration::from_secs(120),
            memory_bytes: 2 * 1024 * 1024 * 1024,
            network: false,
            output_bytes: 64 * 1024,
            cpu_time: Duration::from_secs(120),
            file_size_bytes: 256 * 1024 * 1024,
            open_files: 1024,
            processes: 256,
        }
    }
}

/// How far a sandbox isolates the code it runs (the operator's choice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    /// Fresh namespaces and a private filesystem; a host that cannot give
    /// them refuses to run generated code.
    #[default]
    Full,
    /// A plain subprocess with the host's filesystem (and network, unless
    /// cut off some other way): only for hosts where the operator accepts
    /// that, set explicitly.
    None,
}

impl IsolationMode {
    /// Stable name (`full`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Full => "full",
            IsolationMode::None => "none",
        }
    }
}

impl std::fmt::Display for IsolationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IsolationMode {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(IsolationMode::Full),
            "none" => Ok(IsolationMode::None),
            other => Err(crate::Error::invalid(format!(
                "unknown sandbox isolation `{other}`: expected `full` or `none`"
            ))),
        }
    }
}

/// A kernel namespace a run had of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    /// User ids and capabilities.
    User,
    /// Mounts: the filesystem it sees.
    Mount,
    /// Process ids: every process dies with the run.
    Pid,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Host and domain name: the run sees its own (`agentry-sandbox`).
    Uts,
    /// Network: loopback only.
    Net,
    /// Control groups (where the kernel has them).
    Cgroup,
}

/// The isolation a run actually had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    /// The mode it ran under.
    pub mode: IsolationMode,
    /// The namespaces it had of its own (none in mode `none`).
    pub namespaces: Vec<Namespace>,
    /// The unprivileged host user id its processes ran as, when the
    /// sandbox dropped to one (a sandbox started by root does, so the
    /// kernel enforces the process limit and root's files stay root's).
    pub host_uid: Option<u32>,
    /// Whether its filesystem was private: only the clone writable,
    /// system directories and toolchains read-only, nothing else of the
    /// host visible.
    pub private_filesystem: bool,
    /// The limits applied.
    pub limits: SandboxLimits,
}

impl Isolation {
    /// Whether the run was cut off from the network.
    pub fn network_cut_off(&self) -> bool {
        self.namespaces.contains(&Namespace::Net)
    }

    /// One line for people: `full (user, mount, pid, ipc, uts, net; private filesystem)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.namespaces.is_empty() {
            let names: Vec<String> = self
                .namespaces
                .iter()
                .map(|n| {
                    serde_json::to_value(n)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect();
            parts.push(format!("namespaces: {}", names.join(", ")));
        }
        if self.private_filesystem {
            parts.push("private filesystem".into());
        }
        if let Some(uid) = self.host_uid {
            parts.push(format!("host uid {uid}"));
        }
        if !self.network_cut_off() {
            parts.push("host network".into());
        }
        format!("{} ({})", self.mode, parts.join("; "))
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
    /// Limits for every process of the run (the agents pass the
    /// configured `sandbox` limits).
    pub limits: SandboxLimits,
}

/// The result of one run, stored as the QA agent's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRun {
    /// Fresh random id (UUID v4) of this run; merge requests link to it
    /// ([`TestResultLink::run_id`](crate::TestResultLink::run_id)).
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
    /// The isolation the run actually had.
    pub isolation: Isolation,
    /// The last `limits.output_bytes` of stdout, paths shown relative to
    /// the repository.
    pub stdout: String,
    /// The last `limits.output_bytes` of stderr, likewise.
    pub stderr: String,
    /// Wall-clock time the test command ran, in milliseconds (clone and
    /// setup not included).
    pub duration_ms: u64,
    /// Tests counted from the runner's output, when it said.
    pub tests_passed: Option<u32>,
    /// Failed tests counted from the runner's output, when it said.
    pub tests_failed: Option<u32>,
    /// One result per test, parsed from the runner's output (unittest's
    /// `-v` lines and failure sections, pytest's `-rA` summary); empty
    /// where the runner's output was not recognised.
    #[serde(default)]
    pub cases: Vec<TestCaseResult>,
    /// Commit that was tested: the one the agents made, read before any
    /// test code ran.
    pub commit: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    /// It ran and every check held.
    Passed,
    /// A check failed (unittest's `FAIL`, an `AssertionError`).
    Failed,
    /// It raised something other than a failed check, or could not be
    /// loaded or set up (unittest's `ERROR`).
    Error,
    /// It was skipped (or was an expected failure).
    Skipped,
}

/// A place in the repository's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    /// Path relative to the repository root (`todo_cli/store.py`).
    pub path: String,
    /// 1-based line.
    pub line: u32,
    /// The function the line is in, as the traceback names it
    /// (`<module>` at module level).
    pub function: Option<String>,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCaseResult {
    /// The runner's name for it: `tests.test_app.TestApp.test_add`
    /// (unittest) or `tests/test_app.py::TestApp::test_add` (pytest); a
    /// module that failed to load is named by its module.
    pub id: String,
    /// How it ended.
    pub outcome: TestOutcome,
    /// The exception's type when it failed or erred (`AssertionError`,
    /// `ModuleNotFoundError`).
    pub error_type: Option<String>,
    /// The exception's message, its first lines, capped at 500 bytes.
    pub message: Option<String>,
    /// The innermost frame of the traceback inside the repository: where
    /// the failure was raised, in the test's code or in the code under
    /// test. None when no frame of the repository was printed.
    pub raised_in: Option<SourceLocation>,
}

impl TestCaseResult {
    /// Whether it failed or erred.
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, TestOutcome::Failed | TestOutcome::Error)
    }
}

/// Runs tests in isolation.
#[async_trait]
pub trait Sandbox: Send + Sync + 'static {
    /// Adapter name (`process`).
    fn name(&self) -> &'static str;

    /// Clones, overlays, detects and runs. A failing test suite is a
    /// successful call with `passed == false`; errors are for runs that
    /// could not happen (clone failed, no project detected, bad path, or a
    /// host that cannot give the configured isolation).
    async fn run_tests(&self, request: TestRunRequest) -> Result<TestRun>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_modes_parse_and_print_one_way() {
        for mode in [IsolationMode::Full, IsolationMode::None] {
            assert_eq!(mode.to_string().parse::<IsolationMode>().unwrap(), mode);
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                serde_json::json!(mode.as_str())
            );
        }
        let err = "partial".parse::<IsolationMode>().unwrap_err();
        assert!(err.to_string().contains("`partial`"), "{err}");
    }

    #[test]
    fn isolation_describes_what_the_run_had() {
        let full = Isolation {
            mode: IsolationMode::Full,
            namespaces: vec![Namespace::Mount, Namespace::Pid, Namespace::Net],
            host_uid: Some(1234),
            private_filesystem: true,
            limits: SandboxLimits::default(),
        };
        assert!(full.network_cut_off());
        assert_eq!(
            full.describe(),
            "full (namespaces: mount, pid, net; private filesystem; host uid 1234)"
        );
        let none = Isolation {
            mode: IsolationMode::None,
            namespaces: vec![],
            host_uid: None,
            private_filesystem: false,
            limits: SandboxLimits::default(),
        };
        assert!(!none.network_cut_off());
        assert_eq!(none.describe(), "none (host network)");
    }
}

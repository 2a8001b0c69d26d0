//! Sandbox adapter: runs a project's tests in a fresh, shallow checkout of
//! the branch under test, in a subprocess with wall-time, memory and
//! network limits ([`ProcessSandbox`], implementing [`agentry_core::Sandbox`]).
//!
//! Key design decision: isolation is a chain of ordinary binaries in front
//! of the test command — `prlimit --as=…` (util-linux) for the address-space
//! limit, then `unshare --user --map-root-user --net` for a private network
//! namespace — started in its own process group, rather than `pre_exec`
//! hooks. The workspace forbids `unsafe`, and a wrapper chain is visible in
//! one place, testable, and degrades openly: when `unshare` does not work
//! on a host (probed once, at construction) the run still happens and says
//! so with `TestRun::network_isolated == false`; when `prlimit` is missing
//! the memory limit falls back to `sh -c 'ulimit -v …'`. On timeout the
//! whole process group is killed with `SIGKILL`, so test grandchildren die
//! too (a process that leaves the group with `setsid` is not tracked).

mod counts;
mod detect;
mod exec;
mod git;
mod overlay;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentry_core::{Error, ProjectKind, Result, Sandbox, SandboxLimits, TestRun, TestRunRequest};
use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::OnceCell;
use tracing::{field, info, warn, Instrument};

use crate::exec::{MemoryLimiter, Spec, Wrappers};

/// Configuration of a [`ProcessSandbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Directory under which each run's temporary directory is made
    /// (None: the system temp dir). Created when missing.
    pub work_root: Option<PathBuf>,
    /// Limits for callers that have none of their own
    /// ([`ProcessSandbox::default_limits`]); a request's own limits are
    /// used as given.
    pub default_limits: SandboxLimits,
    /// Try to cut runs off from the network with `unshare` when a request's
    /// `limits.network` is false. When false, or when `unshare` does not
    /// work here, runs have the host's network and say so.
    pub network_isolation: bool,
    /// The `git` binary (a name looked up on `PATH`, or a path).
    pub git: PathBuf,
    /// Limit for the clone and for `git rev-parse`.
    pub git_timeout: Duration,
    /// `prlimit --nproc` for the test process (None: no limit). The limit
    /// counts every process of the user, not just the run's, so it is off
    /// by default.
    pub max_processes: Option<u64>,
    /// `PATH` given to git and to the tests (None: this process's `PATH`).
    pub path: Option<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            work_root: None,
            default_limits: SandboxLimits::default(),
            network_isolation: true,
            git: PathBuf::from("git"),
            git_timeout: Duration::from_secs(120),
            max_processes: None,
            path: None,
        }
    }
}

/// Runs tests in a temporary shallow clone, in a limited subprocess.
#[derive(Debug)]
pub struct ProcessSandbox {
    config: SandboxConfig,
    path_env: String,
    memory: MemoryLimiter,
    /// `unshare` when it was probed and works.
    unshare: Option<PathBuf>,
    /// Whether `python3 -m pytest --version` works (asked once, lazily).
    pytest_installed: OnceCell<bool>,
}

/// How long the construction-time probes may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

impl ProcessSandbox {
    /// Builds the sandbox and probes, once, for `prlimit` and for a working
    /// `unshare --user --map-root-user --net`.
    pub fn new(config: SandboxConfig) -> Self {
        let path_env = config
            .path
            .clone()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
        let memory = match exec::find_program(Path::new("prlimit"), &path_env) {
            Some(prlimit) => MemoryLimiter::Prlimit(prlimit),
            None => {
                warn!("prlimit not found; memory limits use `sh -c 'ulimit -v'`");
                MemoryLimiter::ShellUlimit
            }
        };
        let unshare = if config.network_isolation {
            let found = exec::find_program(Path::new("unshare"), &path_env);
            let works = found.as_ref().is_some_and(|u| {
                let u = u.to_string_lossy();
                exec::probe(
                    &[&u, "--user", "--map-root-user", "--net", "--", "true"],
                    PROBE_LIMIT,
                )
            });
            if !works {
                warn!(
                    unshare = ?found,
                    "`unshare --user --map-root-user --net true` does not work here; \
                     test runs will have network access (network_isolated = false)"
                );
            }
            found.filter(|_| works)
        } else {
            None
        };
        ProcessSandbox {
            config,
            path_env,
            memory,
            unshare,
            pytest_installed: OnceCell::new(),
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Limits for callers that have none of their own.
    pub fn default_limits(&self) -> SandboxLimits {
        self.config.default_limits.clone()
    }

    /// Whether runs with `limits.network == false` are really cut off from
    /// the network on this host.
    pub fn network_isolation_available(&self) -> bool {
        self.unshare.is_some()
    }

    async fn run_in_scratch(&self, request: TestRunRequest) -> Result<TestRun> {
        git::validate(&request.clone_from, &request.branch)?;
        if request.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(Error::invalid("the command override is empty"));
        }
        let root = self
            .config
            .work_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let scratch = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root)?;
            tempfile::Builder::new()
                .prefix("agentry-sandbox-")
                .tempdir_in(&root)
        })
        .await
        .map_err(|error| Error::permanent(format!("sandbox setup task failed: {error}")))?
        .map_err(|error| Error::transient(format!("creating the sandbox directory: {error}")))?;

        let result = self.run_in(scratch.path(), request).await;

        // Removal may be slow (a Rust target dir); keep it off the runtime.
        let shown = scratch.path().display().to_string();
        match tokio::task::spawn_blocking(move || scratch.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(dir = %shown, %error, "Could not remove the sandbox directory.")
            }
            Err(error) => warn!(dir = %shown, %error, "Sandbox cleanup task failed."),
        }
        result
    }

    async fn run_in(&self, scratch: &Path, request: TestRunRequest) -> Result<TestRun> {
        let started_at = Utc::now();
        let home = scratch.join("home");
        let tmp = scratch.join("tmp");
        let checkout = scratch.join("checkout");
        for dir in [&home, &tmp] {
            tokio::fs::create_dir(dir).await.map_err(|error| {
                Error::transient(format!("creating {}: {error}", dir.display()))
            })?;
        }

        let git = git::Git {
            program: &self.config.git,
            path_env: &self.path_env,
            home: &home,
            timeout: self.config.git_timeout,
        };
        git.clone(&request.clone_from, &request.branch, &checkout)
            .await?;
        let commit = git.head(&checkout).await?;

        let overlay = request.overlay.clone();
        let dir = checkout.clone();
        let project = tokio::task::spawn_blocking(move || {
            overlay::write_all(&dir, &overlay).map(|()| detect::detect(&dir))
        })
        .await
        .map_err(|error| Error::permanent(format!("overlay task failed: {error}")))??;

        let span = tracing::Span::current();
        span.record("commit", commit.as_str());
        if let Some(project) = project {
            span.record("kind", field::debug(project.kind()));
        }
        let command = match (&request.command, project) {
            (Some(command), _) => command.clone(),
            (None, Some(project)) => {
                let pytest = match project {
                    detect::Project::Python {
                        uses_pytest: true, ..
                    } => self.pytest_installed(&home, &tmp).await,
                    _ => false,
                };
                project.command(pytest)
            }
            (None, None) => {
                return Err(Error::invalid(format!(
                    "no test runner detected in {}: {}",
                    request.branch,
                    detect::EXPECTED
                )));
            }
        };
        span.record("command", command.join(" "));

        let limits = &request.limits;
        let isolate = !limits.network && self.unshare.is_some();
        let argv = Wrappers {
            memory: &self.memory,
            memory_bytes: limits.memory_bytes,
            max_processes: self.config.max_processes,
            unshare: self.unshare.as_deref().filter(|_| isolate),
        }
        .wrap(&command);
        let env = self.test_env(&home, &tmp, scratch, project.map(|p| p.kind()));
        let outcome = exec::run(Spec {
            argv: &argv,
            cwd: &checkout,
            env: &env,
            wall_time: limits.wall_time,
            output_bytes: limits.output_bytes,
        })
        .await?;

        let counts = counts::parse(&outcome.stdout, &outcome.stderr);
        // Paths in tracebacks are shown relative to the repository: the
        // temporary checkout's location means nothing to the agents (and
        // would make two runs of the same tests read differently).
        let prefix = format!("{}/", checkout.display());
        let relative = |text: String| text.replace(&prefix, "");
        let run = TestRun {
            id: uuid::Uuid::new_v4(),
            project_kind: project.map(|p| p.kind()),
            command,
            exit_code: outcome.exit_code,
            passed: outcome.exit_code == Some(0) && !outcome.timed_out && !counts.none_ran(),
            timed_out: outcome.timed_out,
            signal: outcome.signal,
            network_isolated: isolate,
            stdout: relative(outcome.stdout),
            stderr: relative(outcome.stderr),
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            tests_passed: counts.passed,
            tests_failed: counts.failed,
            commit: Some(commit),
            started_at,
        };
        span.record("passed", run.passed);
        span.record("timed_out", run.timed_out);
        span.record("network_isolated", run.network_isolated);
        span.record("duration_ms", run.duration_ms);
        if let Some(code) = run.exit_code {
            span.record("exit_code", code);
        }
        if let Some(signal) = run.signal {
            span.record("signal", signal);
        }
        if let Some(n) = run.tests_passed {
            span.record("tests_passed", n);
        }
        if let Some(n) = run.tests_failed {
            span.record("tests_failed", n);
        }
        info!("Test run finished.");
        Ok(run)
    }

    /// The whole environment of a test run; nothing else is inherited.
    fn test_env(
        &self,
        home: &Path,
        tmp: &Path,
        scratch: &Path,
        kind: Option<ProjectKind>,
    ) -> Vec<(String, OsString)> {
        let mut env: Vec<(String, OsString)> = vec![
            ("PATH".into(), self.path_env.clone().into()),
            ("HOME".into(), home.as_os_str().to_owned()),
            ("TMPDIR".into(), tmp.as_os_str().to_owned()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("PYTHONHASHSEED".into(), "0".into()),
            ("CI".into(), "true".into()),
        ];
        if kind == Some(ProjectKind::Rust) {
            env.push(("CARGO_TARGET_DIR".into(), scratch.join("target").into()));
            // HOME is the scratch dir, so point cargo and rustup at the
            // host's toolchain and (offline) registry explicitly.
            let host_home = std::env::var_os("HOME").map(PathBuf::from);
            for (var, default) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
                let value = std::env::var_os(var)
                    .or_else(|| host_home.as_ref().map(|h| h.join(default).into_os_string()));
                if let Some(value) = value {
                    env.push((var.into(), value));
                }
            }
        }
        if kind == Some(ProjectKind::Node) {
            env.push(("NPM_CONFIG_UPDATE_NOTIFIER".into(), "false".into()));
        }
        env
    }

    async fn pytest_installed(&self, home: &Path, tmp: &Path) -> bool {
        *self
            .pytest_installed
            .get_or_init(|| async {
                let argv: Vec<OsString> = ["python3", "-m", "pytest", "--version"]
                    .iter()
                    .map(OsString::from)
                    .collect();
                let env = self.test_env(home, tmp, tmp, Some(ProjectKind::Python));
                let outcome = exec::run(Spec {
                    argv: &argv,
                    cwd: tmp,
                    env: &env,
                    wall_time: PROBE_LIMIT,
                    output_bytes: 1024,
                })
                .await;
                let installed = outcome.is_ok_and(|o| o.exit_code == Some(0));
                info!(installed, "Probed for pytest.");
                installed
            })
            .await
    }
}

#[async_trait]
impl Sandbox for ProcessSandbox {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn run_tests(&self, request: TestRunRequest) -> Result<TestRun> {
        let span = tracing::info_span!(
            "sandbox.run_tests",
            branch = %request.branch,
            clone_from = %request.clone_from,
            kind = field::Empty,
            command = field::Empty,
            commit = field::Empty,
            passed = field::Empty,
            exit_code = field::Empty,
            signal = field::Empty,
            timed_out = field::Empty,
            network_isolated = field::Empty,
            duration_ms = field::Empty,
            tests_passed = field::Empty,
            tests_failed = field::Empty,
        );
        let result = self.run_in_scratch(request).instrument(span.clone()).await;
        if let Err(error) = &result {
            span.in_scope(|| warn!(%error, class = %error.class(), "Test run could not happen."));
        }
        result
    }
}

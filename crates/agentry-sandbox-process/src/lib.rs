//! Sandbox adapter: runs a project's tests — code a language model wrote,
//! so untrusted — in a fresh, shallow clone of the branch under test,
//! isolated from the host ([`ProcessSandbox`], implementing
//! [`agentry_core::Sandbox`]).
//!
//! Key design decision: the isolation is bubblewrap (`bwrap`, the sandbox
//! of Flatpak and of several coding agents), driven as a command line
//! built in one place (`jail.rs`), rather than namespaces hand-rolled in
//! this process: the workspace forbids `unsafe`, and `bwrap` is small,
//! audited and does the delicate parts (mount propagation, `/proc` of a
//! new PID namespace, dropping capabilities, dying with its parent). A run
//! gets fresh mount, PID, IPC, UTS and network namespaces (and a user
//! namespace, or a host uid of its own when started by root), a filesystem
//! holding only read-only system directories and toolchains, a private
//! `/tmp` and its clone, and resource limits (`prlimit`). The sandbox
//! **fails closed**: where `bwrap` is missing or the kernel refuses its
//! namespaces, [`ProcessSandbox::ready`] (asked once, lazily) says why and
//! every run is refused, unless the operator chose
//! [`IsolationMode::None`]. Each [`TestRun`] records the isolation it
//! actually had.

mod cases;
mod counts;
mod detect;
mod exec;
mod git;
mod jail;
mod overlay;
mod scratch;
mod toolchain;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentry_core::{
    Error, Isolation, IsolationMode, ProjectKind, Result, Sandbox, SandboxLimits, TestRun,
    TestRunRequest,
};
use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::OnceCell;
use tracing::{field, info, warn, Instrument};

use crate::exec::{Rlimits, Spec};
use crate::jail::{Cell, Jail, Privilege};
use crate::toolchain::Toolchain;

/// Configuration of a [`ProcessSandbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Directory under which each run's scratch directory is made (None:
    /// the system temp dir). Created when missing.
    pub work_root: Option<PathBuf>,
    /// Limits for callers that have none of their own
    /// ([`ProcessSandbox::default_limits`]); a request's own limits are
    /// used as given.
    pub default_limits: SandboxLimits,
    /// `full` (the default): namespaces and a private filesystem, or no run
    /// at all. `none`: a plain subprocess with the host's filesystem and
    /// network, only when the operator says so.
    pub isolation: IsolationMode,
    /// The bubblewrap binary (a name looked up on `PATH`, or a path).
    pub bwrap: PathBuf,
    /// Extra host directories mounted read-only at the same paths (a
    /// toolchain the sandbox cannot find by itself).
    pub read_only_paths: Vec<PathBuf>,
    /// Size of the private `/tmp` (which holds `HOME`), bytes.
    pub tmp_bytes: u64,
    /// The `git` binary (a name looked up on `PATH`, or a path).
    pub git: PathBuf,
    /// Limit for the clone and for `git rev-parse`.
    pub git_timeout: Duration,
    /// `PATH` on the host, where git, `python3` and the toolchains are
    /// looked up (None: this process's `PATH`). Inside the jail, `PATH` is
    /// the toolchains' directories and the system's.
    pub path: Option<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            work_root: None,
            default_limits: SandboxLimits::default(),
            isolation: IsolationMode::Full,
            bwrap: PathBuf::from("bwrap"),
            read_only_paths: Vec::new(),
            tmp_bytes: 512 * 1024 * 1024,
            git: PathBuf::from("git"),
            git_timeout: Duration::from_secs(120),
            path: None,
        }
    }
}

/// Runs tests in a temporary shallow clone, isolated and limited.
#[derive(Debug)]
pub struct ProcessSandbox {
    config: SandboxConfig,
    path_env: String,
    work_root: PathBuf,
    /// What a run needs, found once: `Err` says why no run may happen.
    ready: OnceCell<std::result::Result<Arc<Ready>, String>>,
    /// Whether `python3 -m pytest --version` works in the sandbox (asked
    /// once, lazily).
    pytest_installed: OnceCell<bool>,
}

/// The host facts and programs of every run.
#[derive(Debug)]
struct Ready {
    prlimit: PathBuf,
    /// None in [`IsolationMode::None`].
    jail: Option<Jail>,
    python: Toolchain,
    rust: Toolchain,
    node: Toolchain,
}

/// How long a construction-time or readiness probe may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// Per-run host uids (a sandbox started by root) are drawn from
/// `UID_BASE .. UID_BASE + UID_SPAN`, far above any real account.
const UID_BASE: u32 = 1_500_000_000;
const UID_SPAN: u32 = 1 << 24;

/// The oldest `bwrap` whose options the jail uses (`--perms` and `--size`
/// for tmpfs).
const BWRAP_MIN: (u32, u32) = (0, 6);

impl ProcessSandbox {
    /// Builds the sandbox. Nothing is probed yet (see
    /// [`ProcessSandbox::ready`]); scratch directories that earlier
    /// processes left behind when they died are removed.
    pub fn new(config: SandboxConfig) -> Self {
        let path_env = config
            .path
            .clone()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
        let work_root = config.work_root.clone().unwrap_or_else(std::env::temp_dir);
        scratch::sweep_orphans(&work_root);
        if config.isolation == IsolationMode::None {
            warn!(
                "sandbox.isolation = \"none\": generated code runs with the host's filesystem, \
                 network and processes"
            );
        }
        ProcessSandbox {
            config,
            path_env,
            work_root,
            ready: OnceCell::new(),
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

    /// Whether runs can happen here with the configured isolation, and
    /// what they get: `Ok` with the isolation of a run with `limits`, or a
    /// permanent error saying what is missing and how to fix it. Probed
    /// once (a real jailed `true`), then remembered.
    pub async fn ready(&self, limits: &SandboxLimits) -> Result<Isolation> {
        let ready = self.prepared().await?;
        Ok(self.isolation(&ready, limits, None))
    }

    async fn prepared(&self) -> Result<Arc<Ready>> {
        self.ready
            .get_or_init(|| async {
                let ready = self.probe().await;
                match &ready {
                    Ok(r) => info!(
                        isolation = %self.config.isolation,
                        privilege = ?r.jail.as_ref().map(|j| &j.privilege),
                        "Sandbox ready."
                    ),
                    Err(why) => warn!(%why, "The sandbox cannot run tests on this host."),
                }
                ready.map(Arc::new)
            })
            .await
            .clone()
            .map_err(Error::permanent)
    }

    /// Finds what runs need, and for `full` runs a jailed `true`.
    async fn probe(&self) -> std::result::Result<Ready, String> {
        let prlimit =
            exec::find_program(Path::new("prlimit"), &self.path_env).ok_or_else(|| {
                "`prlimit` (util-linux) is not on PATH: the sandbox cannot limit test runs"
                    .to_owned()
            })?;
        let host_home = std::env::var_os("HOME").map(PathBuf::from);
        let python = toolchain::python(&self.path_env, host_home.as_deref()).await;
        let rust = toolchain::rust(
            host_home.as_deref(),
            std::env::var_os("CARGO_HOME").map(PathBuf::from),
            std::env::var_os("RUSTUP_HOME").map(PathBuf::from),
        );
        let node = toolchain::node(&self.path_env);
        let jail = match self.config.isolation {
            IsolationMode::None => None,
            IsolationMode::Full => Some(self.jail().await?),
        };
        let ready = Ready {
            prlimit,
            jail,
            python,
            rust,
            node,
        };
        if ready.jail.is_some() {
            self.jailed_true(&ready).await?;
        }
        Ok(ready)
    }

    /// bubblewrap, its version, and how it gets privileges here.
    async fn jail(&self) -> std::result::Result<Jail, String> {
        const FIX: &str = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, \
             Fedora: `dnf install bubblewrap`), or set sandbox.isolation = \"none\" to run \
             generated code unconfined on this host";
        let bwrap = exec::find_program(&self.config.bwrap, &self.path_env).ok_or_else(|| {
            format!(
                "bubblewrap (`{}`) is not installed: {FIX}",
                self.config.bwrap.display()
            )
        })?;
        let version = exec::run(Spec {
            argv: &[bwrap.clone().into_os_string(), "--version".into()],
            cwd: &std::env::temp_dir(),
            env: &[("PATH".into(), self.path_env.clone().into())],
            wall_time: PROBE_LIMIT,
            output_bytes: 1024,
        })
        .await
        .ok()
        .and_then(|o| parse_bwrap_version(&o.stdout))
        .ok_or_else(|| format!("`{} --version` did not answer: {FIX}", bwrap.display()))?;
        if (version.0, version.1) < BWRAP_MIN {
            return Err(format!(
                "bubblewrap {}.{}.{} is too old (the sandbox needs {}.{} or later): {FIX}",
                version.0, version.1, version.2, BWRAP_MIN.0, BWRAP_MIN.1
            ));
        }
        let privilege = if nix::unistd::geteuid().is_root() {
            let setpriv = exec::find_program(Path::new("setpriv"), &self.path_env)
                .filter(|p| toolchain::is_system(p))
                .ok_or_else(|| {
                    "`setpriv` (util-linux) is not in /usr: a sandbox started by root \
                     cannot drop to an unprivileged user"
                        .to_owned()
                })?;
            Privilege::DropToUid { setpriv }
        } else {
            Privilege::UserNamespace
        };
        Ok(Jail {
            bwrap,
            privilege,
            etc: Jail::host_etc(Path::new("/etc")),
            read_only_paths: self.config.read_only_paths.clone(),
            tmp_bytes: self.config.tmp_bytes,
            disable_userns: (version.0, version.1) >= (0, 8),
        })
    }

    /// Runs `true` in a jail like a test's; its failure (the kernel
    /// refusing namespaces, a missing program) is the refusal.
    async fn jailed_true(&self, ready: &Ready) -> std::result::Result<(), String> {
        let scratch = scratch::Scratch::create(&self.work_root)
            .map_err(|e| format!("cannot create a sandbox directory: {e}"))?;
        let result = async {
            let layout = async {
                Layout::create(scratch.path())
                    .await?
                    .for_run(None, run_uid(ready))
                    .await
            }
            .await
            .map_err(|e| e.to_string())?;
            let limits = SandboxLimits {
                wall_time: PROBE_LIMIT,
                ..SandboxLimits::default()
            };
            let outcome = self
                .exec_jailed(ready, &layout, &limits, None, &["true".to_owned()])
                .await
                .map_err(|e| e.to_string())?;
            if outcome.exit_code == Some(0) {
                Ok(())
            } else {
                Err(format!(
                    "the kernel or bubblewrap refused the sandbox's namespaces ({}): {}; \
                     enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
                     or an AppArmor profile for bwrap), run agentry where they are allowed, or \
                     set sandbox.isolation = \"none\" to run generated code unconfined",
                    exit_text(outcome.exit_code, outcome.signal),
                    outcome.stderr.trim()
                ))
            }
        }
        .await;
        let _ = scratch.close();
        result
    }

    async fn run_in_scratch(&self, request: TestRunRequest) -> Result<TestRun> {
        git::validate(&request.clone_from, &request.branch)?;
        if request.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(Error::invalid("the command override is empty"));
        }
        let ready = self.prepared().await?;
        let root = self.work_root.clone();
        let scratch = tokio::task::spawn_blocking(move || scratch::Scratch::create(&root))
            .await
            .map_err(|error| Error::permanent(format!("sandbox setup task failed: {error}")))?
            .map_err(|error| {
                Error::transient(format!("creating the sandbox directory: {error}"))
            })?;

        let result = self.run_in(scratch.path(), &ready, request).await;

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

    async fn run_in(
        &self,
        scratch: &Path,
        ready: &Ready,
        request: TestRunRequest,
    ) -> Result<TestRun> {
        let started_at = Utc::now();
        let layout = Layout::create(scratch).await?;

        let git = git::Git {
            program: &self.config.git,
            path_env: &self.path_env,
            home: &layout.home,
            timeout: self.config.git_timeout,
        };
        git.clone(&request.clone_from, &request.branch, &layout.checkout)
            .await?;
        // The result is keyed to the commit the agents made, read before
        // any test code runs; the clone keeps no way back to its origin.
        let commit = git.head(&layout.checkout).await?;
        git.forget_origin(&layout.checkout).await?;

        let overlay = request.overlay.clone();
        let dir = layout.checkout.clone();
        let project = tokio::task::spawn_blocking(move || {
            overlay::write_all(&dir, &overlay).map(|()| detect::detect(&dir))
        })
        .await
        .map_err(|error| Error::permanent(format!("overlay task failed: {error}")))??;
        let kind = project.map(|p| p.kind());

        let span = tracing::Span::current();
        span.record("commit", commit.as_str());
        if let Some(kind) = kind {
            span.record("kind", field::debug(kind));
        }

        let uid = run_uid(ready);
        let layout = layout.for_run(kind, uid).await?;

        let command = match (&request.command, project) {
            (Some(command), _) => command.clone(),
            (None, Some(project)) => {
                let pytest = match project {
                    detect::Project::Python {
                        uses_pytest: true, ..
                    } => self.pytest_installed(ready, &layout, uid).await,
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
        let outcome = self
            .exec_jailed(ready, &layout, limits, kind, &command)
            .await?;
        let isolation = self.isolation(ready, limits, uid);

        let counts = counts::parse(&outcome.stdout, &outcome.stderr);
        // Paths in tracebacks are shown relative to the repository: where
        // the clone lives means nothing to the agents (and would make two
        // runs of the same tests read differently).
        let prefix = match ready.jail {
            Some(_) => format!("{}/", jail::WORKSPACE),
            None => format!("{}/", layout.checkout.display()),
        };
        let relative = |text: String| text.replace(&prefix, "");
        let (stdout, stderr) = (relative(outcome.stdout), relative(outcome.stderr));
        let cases = cases::parse(&stdout, &stderr);
        let run = TestRun {
            id: uuid::Uuid::new_v4(),
            project_kind: kind,
            command,
            exit_code: outcome.exit_code,
            passed: outcome.exit_code == Some(0) && !outcome.timed_out && !counts.none_ran(),
            timed_out: outcome.timed_out,
            signal: outcome.signal,
            isolation,
            stdout,
            stderr,
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
            tests_passed: counts.passed,
            tests_failed: counts.failed,
            cases,
            commit: Some(commit),
            started_at,
        };
        span.record("passed", run.passed);
        span.record("timed_out", run.timed_out);
        span.record("isolation", run.isolation.describe());
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

    /// What a run with `limits` gets here.
    fn isolation(&self, ready: &Ready, limits: &SandboxLimits, uid: Option<u32>) -> Isolation {
        match &ready.jail {
            Some(jail) => Isolation {
                mode: IsolationMode::Full,
                namespaces: jail.namespaces(limits.network),
                host_uid: match jail.privilege {
                    Privilege::DropToUid { .. } => uid,
                    Privilege::UserNamespace => None,
                },
                private_filesystem: true,
                limits: limits.clone(),
            },
            None => Isolation {
                mode: IsolationMode::None,
                namespaces: Vec::new(),
                host_uid: None,
                private_filesystem: false,
                limits: limits.clone(),
            },
        }
    }

    /// Runs `command` under the limits, in the jail when there is one.
    async fn exec_jailed(
        &self,
        ready: &Ready,
        layout: &Layout,
        limits: &SandboxLimits,
        kind: Option<ProjectKind>,
        command: &[String],
    ) -> Result<exec::Outcome> {
        let limited = Rlimits {
            prlimit: &ready.prlimit,
            limits,
        }
        .wrap(command);
        let toolchain = toolchain::for_kind(kind, &ready.python, &ready.rust, &ready.node);
        let (argv, cwd, env) = match &ready.jail {
            Some(jail) => {
                let cell = Cell {
                    checkout: &layout.checkout,
                    target: layout.target.as_deref(),
                    etc: &layout.etc,
                    uid: layout.uid,
                    network: limits.network,
                    toolchain: &toolchain,
                };
                let env = jailed_env(&toolchain, kind, layout.target.is_some());
                (jail.argv(&cell, &limited), layout.root.clone(), env)
            }
            None => {
                let env = self.host_env(layout, kind);
                (limited, layout.checkout.clone(), env)
            }
        };
        exec::run(Spec {
            argv: &argv,
            cwd: &cwd,
            env: &env,
            wall_time: limits.wall_time,
            output_bytes: limits.output_bytes,
        })
        .await
    }

    /// The whole environment of an unconfined run (`isolation = "none"`);
    /// nothing else of this process's environment is inherited.
    fn host_env(&self, layout: &Layout, kind: Option<ProjectKind>) -> Vec<(String, OsString)> {
        let mut env = base_env();
        env.push(("PATH".into(), self.path_env.clone().into()));
        env.push(("HOME".into(), layout.home.clone().into_os_string()));
        env.push(("TMPDIR".into(), layout.tmp.clone().into_os_string()));
        if kind == Some(ProjectKind::Rust) {
            env.push(("CARGO_TARGET_DIR".into(), layout.root.join("target").into()));
            // HOME is the scratch dir, so point cargo and rustup at the
            // host's toolchain and (offline) registry explicitly.
            env.extend(
                toolchain::rust(
                    std::env::var_os("HOME").map(PathBuf::from).as_deref(),
                    std::env::var_os("CARGO_HOME").map(PathBuf::from),
                    std::env::var_os("RUSTUP_HOME").map(PathBuf::from),
                )
                .env,
            );
        }
        if kind == Some(ProjectKind::Node) {
            env.push(("NPM_CONFIG_UPDATE_NOTIFIER".into(), "false".into()));
        }
        env
    }

    async fn pytest_installed(&self, ready: &Ready, layout: &Layout, uid: Option<u32>) -> bool {
        *self
            .pytest_installed
            .get_or_init(|| async {
                let limits = SandboxLimits {
                    wall_time: PROBE_LIMIT,
                    ..SandboxLimits::default()
                };
                let command: Vec<String> = ["python3", "-m", "pytest", "--version"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let outcome = self
                    .exec_jailed(ready, layout, &limits, Some(ProjectKind::Python), &command)
                    .await;
                let installed = outcome.is_ok_and(|o| o.exit_code == Some(0));
                info!(installed, ?uid, "Probed for pytest.");
                installed
            })
            .await
    }
}

/// A run's directories on the host.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    checkout: PathBuf,
    /// The generated `passwd`, `group` and `hosts` of the jail.
    etc: PathBuf,
    /// `HOME` and `TMPDIR` of git, and of an unconfined run.
    home: PathBuf,
    tmp: PathBuf,
    /// A Rust project's target directory.
    target: Option<PathBuf>,
    /// The host uid the run drops to.
    uid: Option<u32>,
}

impl Layout {
    async fn create(root: &Path) -> Result<Layout> {
        let layout = Layout {
            root: root.to_path_buf(),
            checkout: root.join("checkout"),
            etc: root.join("etc"),
            home: root.join("home"),
            tmp: root.join("tmp"),
            target: None,
            uid: None,
        };
        // git clones into the empty checkout directory.
        for dir in [&layout.checkout, &layout.etc, &layout.home, &layout.tmp] {
            tokio::fs::create_dir(dir).await.map_err(|error| {
                Error::transient(format!("creating {}: {error}", dir.display()))
            })?;
        }
        Ok(layout)
    }

    /// The layout of a run of `kind` by `uid`: a target directory for Rust,
    /// the generated `/etc` files, and, when the run drops to a uid of its
    /// own, the clone and the target directory handed to it.
    async fn for_run(mut self, kind: Option<ProjectKind>, uid: Option<u32>) -> Result<Layout> {
        if kind == Some(ProjectKind::Rust) {
            let target = self.root.join("target");
            tokio::fs::create_dir(&target).await.map_err(|error| {
                Error::transient(format!("creating {}: {error}", target.display()))
            })?;
            self.target = Some(target);
        }
        self.uid = uid;
        let inside_uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        for (name, content) in jail::etc_files(inside_uid) {
            let path = self.etc.join(name);
            tokio::fs::write(&path, content).await.map_err(|error| {
                Error::transient(format!("writing {}: {error}", path.display()))
            })?;
        }
        if let Some(uid) = uid {
            let dirs: Vec<PathBuf> = std::iter::once(self.checkout.clone())
                .chain(self.target.clone())
                .collect();
            tokio::task::spawn_blocking(move || dirs.iter().try_for_each(|d| chown_tree(d, uid)))
                .await
                .map_err(|error| Error::permanent(format!("chown task failed: {error}")))?
                .map_err(|error| {
                    Error::permanent(format!("handing the clone to the sandbox's user: {error}"))
                })?;
        }
        Ok(self)
    }
}

/// The environment every run starts from.
fn base_env() -> Vec<(String, OsString)> {
    vec![
        ("LANG".into(), "C.UTF-8".into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("PYTHONHASHSEED".into(), "0".into()),
        ("CI".into(), "true".into()),
    ]
}

/// The whole environment inside the jail; nothing of this process's
/// environment is inherited (bwrap passes its own on).
fn jailed_env(
    toolchain: &Toolchain,
    kind: Option<ProjectKind>,
    target: bool,
) -> Vec<(String, OsString)> {
    let mut path: Vec<String> = toolchain
        .path
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    path.push(jail::SYSTEM_PATH.to_owned());
    let mut env = base_env();
    env.push(("PATH".into(), path.join(":").into()));
    env.push(("HOME".into(), jail::HOME.into()));
    env.push(("TMPDIR".into(), jail::TMP.into()));
    env.push(("USER".into(), jail::USER.into()));
    env.push(("LOGNAME".into(), jail::USER.into()));
    env.extend(toolchain.env.iter().cloned());
    if target {
        env.push(("CARGO_TARGET_DIR".into(), jail::TARGET.into()));
    }
    if kind == Some(ProjectKind::Node) {
        env.push(("NPM_CONFIG_UPDATE_NOTIFIER".into(), "false".into()));
    }
    env
}

/// `lchown -R uid:uid`, never following a link.
fn chown_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The host uid a run drops to: a fresh one when the sandbox was started
/// by root, none otherwise.
fn run_uid(ready: &Ready) -> Option<u32> {
    match ready.jail.as_ref().map(|j| &j.privilege) {
        Some(Privilege::DropToUid { .. }) => Some(fresh_uid()),
        _ => None,
    }
}

/// A host uid for one run of a sandbox started by root.
fn fresh_uid() -> u32 {
    let bits = uuid::Uuid::new_v4().as_u128();
    UID_BASE + u32::try_from(bits % u128::from(UID_SPAN)).unwrap_or(0)
}

/// `bubblewrap 0.8.0` -> `(0, 8, 0)`.
fn parse_bwrap_version(text: &str) -> Option<(u32, u32, u32)> {
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "no exit status".into(),
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
            isolation = field::Empty,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bwrap_versions_parse() {
        assert_eq!(parse_bwrap_version("bubblewrap 0.8.0\n"), Some((0, 8, 0)));
        assert_eq!(parse_bwrap_version("bubblewrap 0.11"), Some((0, 11, 0)));
        assert_eq!(parse_bwrap_version("bwrap: unknown"), None);
    }

    #[test]
    fn run_uids_stay_in_their_range() {
        for _ in 0..1000 {
            let uid = fresh_uid();
            assert!((UID_BASE..UID_BASE + UID_SPAN).contains(&uid), "{uid}");
        }
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The process sandbox against real git repositories and real Python
//! processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentry_core::{Error, ProjectKind, RepoPath, Sandbox, SandboxLimits, TestRun, TestRunRequest};
use agentry_sandbox_process::{ProcessSandbox, SandboxConfig};
use tempfile::TempDir;

/// A git repository with `files` committed on `main`.
struct Repo {
    dir: TempDir,
}

impl Repo {
    fn new(files: &[(&str, &str)]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        Repo::commit(&dir);
        Repo { dir }
    }

    fn commit(dir: &TempDir) {
        git(dir.path(), &["add", "--all"]);
        git(
            dir.path(),
            &["commit", "--quiet", "--allow-empty", "-m", "fixture"],
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn head(&self) -> String {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(self.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A sandbox whose scratch directories live under a directory the test
/// can inspect afterwards.
struct Fixture {
    sandbox: ProcessSandbox,
    work_root: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let work_root = tempfile::tempdir().unwrap();
        let sandbox = ProcessSandbox::new(SandboxConfig {
            work_root: Some(work_root.path().to_path_buf()),
            git_timeout: Duration::from_secs(30),
            ..SandboxConfig::default()
        });
        Fixture { sandbox, work_root }
    }

    /// Runs and checks that the scratch directory is gone afterwards,
    /// whatever the outcome.
    async fn run(&self, request: TestRunRequest) -> Result<TestRun, Error> {
        let result = self.sandbox.run_tests(request).await;
        let left: Vec<PathBuf> = std::fs::read_dir(self.work_root.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
        result
    }
}

fn request(repo: &Repo, overlay: &[(&str, &str)]) -> TestRunRequest {
    TestRunRequest {
        clone_from: repo.path().display().to_string(),
        branch: "main".into(),
        overlay: overlay
            .iter()
            .map(|(p, c)| (RepoPath::parse(p).unwrap(), c.to_string()))
            .collect(),
        command: None,
        limits: SandboxLimits {
            wall_time: Duration::from_secs(20),
            memory_bytes: 1024 * 1024 * 1024,
            network: false,
            output_bytes: 64 * 1024,
        },
    }
}

const APP: &str = "def shorten(url):\n    return str(abs(hash(url)) % 10000)\n";

fn test_file(body: &str) -> String {
    format!("import unittest\nfrom app import shorten\n\nclass T(unittest.TestCase):\n{body}")
}

// ---- Python projects, pass and fail -------------------------------------

#[tokio::test]
async fn unittest_project_passing_reports_counts_and_commit() {
    let fx = Fixture::new();
    let repo = Repo::new(&[("app.py", APP)]);
    let tests = test_file(
        "    def test_same(self):\n        self.assertEqual(shorten('a'), shorten('a'))\n\
         \n    def test_short(self):\n        self.assertLessEqual(len(shorten('b')), 4)\n",
    );
    // QA's tests arrive as an overlay, in a tests/ without __init__.py.
    let run = fx
        .run(request(&repo, &[("tests/test_app.py", &tests)]))
        .await
        .unwrap();
    assert!(run.passed, "{run:#?}");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!((run.tests_passed, run.tests_failed), (Some(2), Some(0)));
    assert_eq!(run.project_kind, Some(ProjectKind::Python));
    assert_eq!(
        run.command.join(" "),
        "python3 -m unittest discover -v -s tests"
    );
    assert_eq!(run.commit.as_deref(), Some(repo.head().as_str()));
    assert!(!run.timed_out);
    assert_eq!(
        run.network_isolated,
        fx.sandbox.network_isolation_available()
    );
}

#[tokio::test]
async fn unittest_project_failing_reports_the_assertion() {
    let fx = Fixture::new();
    let tests = test_file(
        "    def test_ok(self):\n        self.assertTrue(shorten('a'))\n\
         \n    def test_wrong(self):\n        self.assertEqual(shorten('a'), 'nope')\n",
    );
    let repo = Repo::new(&[
        ("app.py", APP),
        ("tests/__init__.py", ""),
        ("tests/test_app.py", &tests),
    ]);
    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(!run.passed);
    assert_eq!(run.exit_code, Some(1));
    assert!(run.stderr.contains("AssertionError"), "{}", run.stderr);
    assert_eq!((run.tests_passed, run.tests_failed), (Some(1), Some(1)));
    assert_eq!(
        run.command.join(" "),
        "python3 -m unittest discover -v -s tests -t ."
    );
}

#[tokio::test]
async fn a_suite_in_which_no_test_ran_did_not_pass() {
    let fx = Fixture::new();
    let repo = Repo::new(&[("app.py", APP)]);
    // Only a data file: discovery finds no test, and unittest exits 0.
    let run = fx
        .run(request(&repo, &[("tests/data/sample.txt", "a b a\n")]))
        .await
        .unwrap();
    assert!(!run.passed, "{run:#?}");
    assert_eq!((run.tests_passed, run.tests_failed), (Some(0), Some(0)));
    // A Python version that exits 5 for an empty suite fails it too.
    assert!(matches!(run.exit_code, Some(0) | Some(5)), "{run:#?}");
}

// ---- limits ---------------------------------------------------------------

fn process_is_gone(pid: i32) -> bool {
    // A zombie nobody has reaped yet is dead too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn wall_time_limit_kills_the_whole_process_group() {
    let fx = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let pid_file = outside.path().join("grandchild.pid");
    let tests = format!(
        "import subprocess, time, unittest\n\n\
         class T(unittest.TestCase):\n    def test_hangs(self):\n\
         \x20       child = subprocess.Popen(['sleep', '1000'])\n\
         \x20       with open({pid:?}, 'w') as f:\n            f.write(str(child.pid))\n\
         \x20       time.sleep(30)\n",
        pid = pid_file.display().to_string()
    );
    let repo = Repo::new(&[("test_hang.py", &tests)]);
    let mut req = request(&repo, &[]);
    req.limits.wall_time = Duration::from_secs(2);

    let started = Instant::now();
    let run = fx.run(req).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(run.timed_out && !run.passed, "{run:#?}");
    assert_eq!(run.signal, Some(9));
    assert_eq!(run.exit_code, None);

    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_is_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn memory_limit_is_the_address_space() {
    let fx = Fixture::new();
    let tests = "import resource, unittest\n\n\
        class T(unittest.TestCase):\n    def test_limit_is_set(self):\n\
        \x20       self.assertEqual(resource.getrlimit(resource.RLIMIT_AS)[0], 256 * 1024 * 1024)\n\n\
        \x20   def test_big(self):\n        block = bytearray(1024 ** 3)\n        self.assertEqual(len(block), 1024 ** 3)\n";
    let repo = Repo::new(&[("test_mem.py", tests)]);
    let mut req = request(&repo, &[]);
    req.limits.memory_bytes = 256 * 1024 * 1024;
    let run = fx.run(req).await.unwrap();
    assert!(!run.passed);
    assert_ne!(run.exit_code, Some(0));
    assert!(run.stderr.contains("MemoryError"), "{}", run.stderr);
    // The limit test itself passed: exactly the allocation failed.
    assert_eq!(
        (run.tests_passed, run.tests_failed),
        (Some(1), Some(1)),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn network_is_cut_off_unless_allowed() {
    let fx = Fixture::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tests = format!(
        "import socket, unittest\n\n\
         class T(unittest.TestCase):\n    def test_connect(self):\n\
         \x20       socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
    );
    let repo = Repo::new(&[("test_net.py", &tests)]);

    // Control: with network allowed, the same test reaches the listener.
    let mut open = request(&repo, &[]);
    open.limits.network = true;
    let run = fx.run(open).await.unwrap();
    assert!(run.passed, "{}", run.stderr);
    assert!(!run.network_isolated);

    let run = fx.run(request(&repo, &[])).await.unwrap();
    if fx.sandbox.network_isolation_available() {
        assert!(run.network_isolated);
        assert!(
            !run.passed,
            "connected from inside the sandbox: {}",
            run.stderr
        );
        assert!(run.stderr.contains("Error"), "{}", run.stderr);
    } else {
        // Hosts without user namespaces say so instead of pretending.
        assert!(!run.network_isolated);
    }
    drop(listener);
}

#[tokio::test]
async fn output_keeps_only_the_tail() {
    let fx = Fixture::new();
    let repo = Repo::new(&[("README.md", "no tests here\n")]);
    let mut req = request(&repo, &[]);
    req.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "seq 1 100000; echo last-line; echo oops >&2; exit 3".into(),
    ]);
    req.limits.output_bytes = 100;
    let run = fx.run(req).await.unwrap();
    assert_eq!(run.exit_code, Some(3));
    assert!(!run.passed);
    assert!(run.stdout.len() <= 100);
    assert!(
        run.stdout.ends_with("100000\nlast-line\n"),
        "{:?}",
        run.stdout
    );
    assert_eq!(run.stderr, "oops\n");
    // An override runs even where nothing was detected.
    assert_eq!(run.project_kind, None);
    assert_eq!(run.command[0], "sh");
}

// ---- paths ----------------------------------------------------------------

#[tokio::test]
async fn overlay_paths_cannot_escape_the_checkout() {
    // Lexical escapes never become a RepoPath at all.
    for raw in ["../x.py", "/etc/passwd", "tests/../../x.py"] {
        assert!(
            matches!(RepoPath::parse(raw), Err(Error::InvalidInput(_))),
            "{raw}"
        );
    }

    // A symlink committed in the repository is refused by the sandbox.
    let fx = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let repo = Repo::new(&[("app.py", APP)]);
    std::os::unix::fs::symlink(outside.path(), repo.path().join("evil")).unwrap();
    Repo::commit(&repo.dir);
    let err = fx
        .run(request(&repo, &[("evil/x.py", "print('escaped')\n")]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("`evil/x.py`"), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!outside.path().join("x.py").exists());
}

// ---- what cannot run ------------------------------------------------------

#[tokio::test]
async fn undetectable_project_is_invalid_input() {
    let fx = Fixture::new();
    let repo = Repo::new(&[("README.md", "# notes\n")]);
    let err = fx.run(request(&repo, &[])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        err.to_string().contains(
            "no test runner detected in main: expected pyproject.toml, Cargo.toml or package.json"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn missing_branch_is_not_found() {
    let fx = Fixture::new();
    let repo = Repo::new(&[("app.py", APP)]);
    let mut req = request(&repo, &[]);
    req.branch = "feature/nope".into();
    let err = fx.run(req).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("feature/nope"), "{err}");
}

// ---- other project kinds ----------------------------------------------------

#[tokio::test]
async fn rust_and_node_projects_run_their_own_runners() {
    let fx = Fixture::new();
    let rust = Repo::new(&[
        (
            "Cargo.toml",
            "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        ),
        (
            "src/lib.rs",
            "pub fn add(a: i32, b: i32) -> i32 { a + b }\n\n#[test]\nfn adds() { assert_eq!(add(2, 2), 4); }\n\n#[test]\nfn fails() { assert_eq!(add(2, 2), 5); }\n",
        ),
    ]);
    let mut req = request(&rust, &[]);
    req.limits.memory_bytes = SandboxLimits::default().memory_bytes;
    let run = fx.run(req).await.unwrap();
    assert_eq!(run.project_kind, Some(ProjectKind::Rust));
    assert_eq!(run.command.join(" "), "cargo test --offline");
    assert_eq!(
        (run.tests_passed, run.tests_failed),
        (Some(1), Some(1)),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.passed);

    let node = Repo::new(&[
        ("package.json", r#"{"name": "demo", "scripts": {"test": "node test.js"}}"#),
        ("test.js", "const assert = require('assert');\nassert.strictEqual(1 + 1, 2);\nconsole.log('node ok');\n"),
    ]);
    let mut req = request(&node, &[]);
    req.limits.memory_bytes = SandboxLimits::default().memory_bytes;
    let run = fx.run(req).await.unwrap();
    assert_eq!(run.project_kind, Some(ProjectKind::Node));
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("node ok"), "{}", run.stdout);
}

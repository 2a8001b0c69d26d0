#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The process sandbox against real git repositories and real Python
//! processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentry_core::{
    Error, IsolationMode, Namespace, ProjectKind, RepoPath, Sandbox, SandboxLimits, TestRun,
    TestRunRequest,
};
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
    /// The default sandbox (`isolation = "full"`). A host that cannot give
    /// it fails these tests: the test command installs bubblewrap.
    fn new() -> Fixture {
        Fixture::with(SandboxConfig::default())
    }

    fn with(config: SandboxConfig) -> Fixture {
        let work_root = tempfile::tempdir().unwrap();
        let sandbox = ProcessSandbox::new(SandboxConfig {
            work_root: Some(work_root.path().to_path_buf()),
            git_timeout: Duration::from_secs(30),
            ..config
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
            ..SandboxLimits::default()
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
    assert_eq!(run.isolation.mode, IsolationMode::Full);
    assert!(run.isolation.network_cut_off());
    assert!(run.isolation.private_filesystem);
    for ns in [
        Namespace::Mount,
        Namespace::Pid,
        Namespace::Ipc,
        Namespace::Uts,
    ] {
        assert!(
            run.isolation.namespaces.contains(&ns),
            "{:?}",
            run.isolation
        );
    }
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

/// Processes whose command line holds `marker`, seen from the host.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !process_is_gone(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[tokio::test]
async fn no_process_outlives_a_timeout_not_even_one_started_with_setsid() {
    let fx = Fixture::new();
    let marker = format!("agentry-marker-{}", uuid::Uuid::new_v4().simple());
    let tests = format!(
        "import subprocess, sys, time, unittest\n\n\
         class T(unittest.TestCase):\n    def test_hangs(self):\n\
         \x20       sleeper = ['python3', '-c', 'import time; time.sleep(1000)', {marker:?}]\n\
         \x20       subprocess.Popen(sleeper)\n\
         \x20       subprocess.Popen(sleeper, start_new_session=True)\n\
         \x20       subprocess.Popen(['setsid', '-f'] + sleeper)\n\
         \x20       print('children started', flush=True)\n\
         \x20       time.sleep(30)\n"
    );
    let repo = Repo::new(&[("test_hang.py", &tests)]);
    let mut req = request(&repo, &[]);
    req.limits.wall_time = Duration::from_secs(3);

    let started = Instant::now();
    let run = fx.run(req).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(run.timed_out && !run.passed, "{run:#?}");
    assert_eq!(run.signal, Some(9));
    assert_eq!(run.exit_code, None);
    assert!(run.stdout.contains("children started"), "{run:#?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} survived the timeout"
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
    assert!(!run.isolation.network_cut_off());
    assert!(!run.isolation.namespaces.contains(&Namespace::Net));

    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(run.isolation.network_cut_off());
    assert!(
        !run.passed,
        "connected from inside the sandbox: {}",
        run.stderr
    );
    assert!(run.stderr.contains("Error"), "{}", run.stderr);
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

// ---- containment: what generated test code must not reach -----------------

/// A Python test module whose test methods are `body`'s, with the usual
/// imports.
fn py_tests(body: &str) -> String {
    format!(
        "import errno, os, socket, subprocess, sys, unittest\n\n\
         class T(unittest.TestCase):\n{body}"
    )
}

#[tokio::test]
async fn generated_tests_cannot_read_or_write_outside_their_clone() {
    let fx = Fixture::new();
    // What the review reached from a test: a file elsewhere on the host,
    // the data directory with its database, and the host's /tmp.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    let data_dir = host.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("agentry.db"), "SQLite format 3\0").unwrap();
    let escaped = host.path().join("escaped.txt");
    let host_tmp_probe =
        std::env::temp_dir().join(format!("agentry-probe-{}", uuid::Uuid::new_v4()));

    let body = format!(
        "    def test_host_files_are_not_there(self):\n\
         \x20       for path in ({secret:?}, {db:?}, '/etc/shadow', '/etc/ssh', '/home', '/run', '/var'):\n\
         \x20           self.assertFalse(os.path.exists(path), path)\n\
         \x20       # The root holds the system, the clone, and the way to the toolchain.\n\
         \x20       toolchain = {{sys.prefix.split('/')[1], sys.base_prefix.split('/')[1]}}\n\
         \x20       system = {{'usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'etc', 'proc', 'dev', 'tmp', 'workspace'}}\n\
         \x20       self.assertEqual(set(os.listdir('/')) - system - toolchain, set())\n\
         \x20       with self.assertRaises(OSError):\n\
         \x20           open({secret:?}).read()\n\n\
         \x20   def test_nothing_outside_the_clone_is_writable(self):\n\
         \x20       for path in ({escaped:?}, '/usr/escaped', '/etc/escaped', '/escaped'):\n\
         \x20           with self.assertRaises(OSError, msg=path):\n\
         \x20               open(path, 'w').write('x')\n\n\
         \x20   def test_tmp_and_the_clone_are_writable_and_private(self):\n\
         \x20       with open({tmp:?}, 'w') as f:\n\
         \x20           f.write('only inside')\n\
         \x20       with open('written_by_test.txt', 'w') as f:\n\
         \x20           f.write('discarded')\n\
         \x20       self.assertTrue(os.path.isdir(os.environ['HOME']))\n",
        secret = secret.display().to_string(),
        db = data_dir.join("agentry.db").display().to_string(),
        escaped = escaped.display().to_string(),
        tmp = host_tmp_probe.display().to_string(),
    );
    let repo = Repo::new(&[("test_fs.py", &py_tests(&body))]);
    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
    assert_eq!((run.tests_passed, run.tests_failed), (Some(3), Some(0)));
    assert!(!escaped.exists());
    assert!(!host_tmp_probe.exists(), "the test's /tmp is the host's");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret");
    // What the test left in its clone is gone with the clone.
    assert!(!repo.path().join("written_by_test.txt").exists());
}

#[tokio::test]
async fn generated_tests_cannot_read_the_parent_environment() {
    // The parent's environment holds a secret; the test's is an allow-list.
    std::env::set_var("AGENTRY_TEST_PARENT_SECRET", "hunter2");
    let fx = Fixture::new();
    let body = "    def test_no_secret_anywhere(self):\n\
        \x20       self.assertNotIn('AGENTRY_TEST_PARENT_SECRET', os.environ)\n\
        \x20       for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n\
        \x20           try:\n\
        \x20               environ = open(f'/proc/{pid}/environ', 'rb').read()\n\
        \x20           except OSError:\n\
        \x20               continue\n\
        \x20           self.assertNotIn(b'hunter2', environ, pid)\n\n\
        \x20   def test_environment_is_the_allow_list(self):\n\
        \x20       allowed = {'PATH', 'HOME', 'TMPDIR', 'USER', 'LOGNAME', 'LANG', 'CI',\n\
        \x20                  'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED', 'PWD', 'SHLVL', '_'}\n\
        \x20       self.assertEqual(set(os.environ) - allowed, set())\n";
    let repo = Repo::new(&[("test_env.py", &py_tests(body))]);
    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
}

#[tokio::test]
async fn generated_tests_cannot_push_or_change_any_branch() {
    let fx = Fixture::new();
    let body = format!(
        "    def git(self, *args):\n\
         \x20       return subprocess.run(['git', *args], capture_output=True, text=True)\n\n\
         \x20   def test_no_way_back_to_the_repository(self):\n\
         \x20       self.assertNotEqual(self.git('remote', 'get-url', 'origin').returncode, 0)\n\
         \x20       self.git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--allow-empty', '-qm', 'evil')\n\
         \x20       for target in ('origin', {source:?}, 'file://' + {source:?}):\n\
         \x20           pushed = self.git('push', target, 'HEAD:refs/heads/main', 'HEAD:refs/heads/evil')\n\
         \x20           self.assertNotEqual(pushed.returncode, 0, pushed.stderr)\n",
        source = "SOURCE"
    );
    let repo = Repo::new(&[("app.py", APP)]);
    let body = body.replace("SOURCE", &repo.path().display().to_string());
    std::fs::write(repo.path().join("test_push.py"), py_tests(&body)).unwrap();
    Repo::commit(&repo.dir);
    let before = repo.head();

    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
    // The result belongs to the agents' commit, and no branch moved.
    assert_eq!(run.commit.as_deref(), Some(before.as_str()));
    assert_eq!(repo.head(), before);
    let branches = Command::new("git")
        .args(["branch", "--list"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&branches.stdout).trim(), "* main");
}

#[tokio::test]
async fn unix_sockets_of_the_host_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let fx = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let path = host.path().join("service.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let name = format!("agentry-test-{}", uuid::Uuid::new_v4().simple());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();

    let body = format!(
        "    def test_sockets(self):\n\
         \x20       targets = [{path:?}, '\\0' + {name:?}, '/run/postgresql/.s.PGSQL.5432',\n\
         \x20                  '/var/run/postgresql/.s.PGSQL.5432', '/run/dbus/system_bus_socket']\n\
         \x20       for target in targets:\n\
         \x20           s = socket.socket(socket.AF_UNIX)\n\
         \x20           with self.assertRaises(OSError, msg=repr(target)):\n\
         \x20               s.connect(target)\n\
         \x20           s.close()\n",
        path = path.display().to_string(),
    );
    let repo = Repo::new(&[("test_unix.py", &py_tests(&body))]);
    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);

    // Control: the same test, unconfined, reaches the host's sockets.
    let open = Fixture::with(SandboxConfig {
        isolation: IsolationMode::None,
        ..SandboxConfig::default()
    });
    let run = open.run(request(&repo, &[])).await.unwrap();
    assert!(!run.passed, "the control did not reach the host's socket");
    assert!(run.stderr.contains("AssertionError"), "{}", run.stderr);
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_limit() {
    let fx = Fixture::new();
    let body = "    def test_bounded(self):\n\
        \x20       children = []\n\
        \x20       try:\n\
        \x20           for _ in range(200):\n\
        \x20               children.append(subprocess.Popen(['sleep', '30']))\n\
        \x20       except OSError as e:\n\
        \x20           self.assertEqual(e.errno, errno.EAGAIN)\n\
        \x20       finally:\n\
        \x20           for c in children:\n\
        \x20               c.kill()\n\
        \x20       self.assertLess(len(children), 32)\n";
    let repo = Repo::new(&[("test_fork.py", &py_tests(body))]);
    let mut req = request(&repo, &[]);
    req.limits.processes = 32;
    let run = fx.run(req).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.isolation.limits.processes, 32);
}

#[tokio::test]
async fn file_size_open_files_and_cpu_time_are_limited() {
    let fx = Fixture::new();
    let body = "    def test_file_size(self):\n\
        \x20       with open('big.bin', 'wb') as f:\n\
        \x20           with self.assertRaises(OSError) as caught:\n\
        \x20               f.write(b'x' * (2 * 1024 * 1024))\n\
        \x20               f.flush()\n\
        \x20       self.assertEqual(caught.exception.errno, errno.EFBIG)\n\n\
        \x20   def test_open_files(self):\n\
        \x20       files = []\n\
        \x20       with self.assertRaises(OSError) as caught:\n\
        \x20           for _ in range(100):\n\
        \x20               files.append(open('/dev/null'))\n\
        \x20       self.assertEqual(caught.exception.errno, errno.EMFILE)\n\
        \x20       self.assertLess(len(files), 64)\n\n\
        \x20   def test_cpu_time(self):\n\
        \x20       spin = subprocess.run([sys.executable, '-c', 'while True: pass'])\n\
        \x20       self.assertNotEqual(spin.returncode, 0)\n";
    let repo = Repo::new(&[("test_limits.py", &py_tests(body))]);
    let mut req = request(&repo, &[]);
    req.limits.file_size_bytes = 1024 * 1024;
    req.limits.open_files = 64;
    req.limits.cpu_time = Duration::from_secs(1);
    let run = fx.run(req).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
    assert_eq!((run.tests_passed, run.tests_failed), (Some(3), Some(0)));
    assert!(!run.timed_out);
}

// ---- refusing to run ----------------------------------------------------------

#[tokio::test]
async fn without_bubblewrap_no_generated_code_runs() {
    let fx = Fixture::with(SandboxConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::default()
    });
    let repo = Repo::new(&[
        ("app.py", APP),
        (
            "test_app.py",
            &test_file("    def test_x(self):\n        open('ran', 'w')\n"),
        ),
    ]);
    let err = fx.run(request(&repo, &[])).await.unwrap_err();
    assert!(matches!(err, Error::Permanent(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("bubblewrap"), "{text}");
    assert!(text.contains("sandbox.isolation = \"none\""), "{text}");
    assert!(fx.sandbox.ready(&SandboxLimits::default()).await.is_err());
}

#[tokio::test]
async fn a_kernel_that_refuses_the_namespaces_is_a_refusal() {
    // A bwrap that fails the way it does where user namespaces are off.
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("bwrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in --version) echo bubblewrap 0.8.0;; \
         *) echo 'bwrap: No permissions to creating new namespace' >&2; exit 1;; esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fx = Fixture::with(SandboxConfig {
        bwrap: fake,
        ..SandboxConfig::default()
    });
    let repo = Repo::new(&[("app.py", APP)]);
    let err = fx.run(request(&repo, &[])).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("No permissions to creating new namespace"),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
}

#[tokio::test]
async fn isolation_none_runs_unconfined_only_when_chosen_and_says_so() {
    let fx = Fixture::with(SandboxConfig {
        isolation: IsolationMode::None,
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxConfig::default()
    });
    let tests = test_file("    def test_ok(self):\n        self.assertTrue(shorten('a'))\n");
    let repo = Repo::new(&[("app.py", APP), ("test_app.py", &tests)]);
    let run = fx.run(request(&repo, &[])).await.unwrap();
    assert!(run.passed, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.isolation.mode, IsolationMode::None);
    assert!(run.isolation.namespaces.is_empty());
    assert!(!run.isolation.private_filesystem);
    assert!(!run.isolation.network_cut_off());
}

//! The sandbox as the `agentry` binary uses it: refused before any agent
//! runs where it cannot isolate, and nothing left behind when `agentry`
//! itself is killed in the middle of a test run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{agentry, assert_fails_with, assert_ok, run, stdout_json, Running};

/// The demo session with QA's tests replaced by `test_code`.
fn session_with_qa_tests(dir: &Path, test_code: &str) -> std::path::PathBuf {
    let mut session: toml::Table = agentry_agents::demo::DEMO_SESSION.parse().unwrap();
    let responses = session["responses"].as_array_mut().unwrap();
    let qa_answer = responses
        .iter_mut()
        .find(|r| {
            r["role"].as_str() == Some("qa")
                && r.get("turn").and_then(|t| t.as_integer()) == Some(1)
        })
        .unwrap();
    let answer = json!({
        "test_plan": "## Test plan\n\nOne test that never ends.",
        "test_files": [{"path": "tests/acceptance/test_hang.py", "content": test_code}],
        "focus": ["nothing"],
    });
    qa_answer
        .as_table_mut()
        .unwrap()
        .insert("content".into(), toml::Value::String(answer.to_string()));
    let path = dir.join("session.toml");
    std::fs::write(&path, toml::to_string(&session).unwrap()).unwrap();
    path
}

/// Live processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

fn scratch_dirs(work: &Path) -> Vec<String> {
    std::fs::read_dir(work)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("agentry-sandbox-"))
                .collect()
        })
        .unwrap_or_default()
}

fn poll(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_agentry_mid_test_run_leaves_no_process_and_the_next_start_removes_its_directory() {
    let data = support::tempdir();
    let work = support::tempdir();
    let marker = format!("agentry-marker-{}", uuid::Uuid::new_v4().simple());
    let tests = format!(
        "import subprocess, time, unittest\n\n\
         class HangTest(unittest.TestCase):\n\
         \x20   def test_hangs(self):\n\
         \x20       sleeper = ['python3', '-c', 'import time; time.sleep(1000)', {marker:?}]\n\
         \x20       subprocess.Popen(sleeper, start_new_session=True)\n\
         \x20       subprocess.Popen(sleeper)\n\
         \x20       time.sleep(1000)\n\
         \x20       self.assertGreater(time.time(), 0)\n"
    );
    let script = session_with_qa_tests(data.path(), &tests);
    let mut cmd = agentry(data.path());
    cmd.env("AGENTRY_SANDBOX__WORK_DIR", work.path())
        .env("AGENTRY_SANDBOX__WALL_TIME_S", "900")
        .args(["run", "--llm", "scripted", "--llm-script"])
        .arg(&script)
        .arg("A URL shortener service in Python with tests.");
    let running = Running::spawn(cmd);

    poll(
        "both test processes started",
        Duration::from_secs(120),
        || processes_with(&marker).len() == 2,
    );
    assert_eq!(scratch_dirs(work.path()).len(), 1);
    running.kill();

    poll(
        "every test process gone after agentry died",
        Duration::from_secs(10),
        || processes_with(&marker).is_empty(),
    );
    // The directory of the dead run is removed by the next start.
    assert_eq!(scratch_dirs(work.path()).len(), 1);
    let out = run(agentry(data.path())
        .env("AGENTRY_SANDBOX__WORK_DIR", work.path())
        .args(["sandbox", "check"]));
    assert_ok(&out);
    assert_eq!(scratch_dirs(work.path()), Vec::<String>::new());
}

#[test]
fn a_host_that_cannot_isolate_refuses_before_any_agent_runs() {
    let data = support::tempdir();
    let out = run(agentry(data.path())
        .env("AGENTRY_SANDBOX__BWRAP", "/nonexistent/bwrap")
        .args(["--json", "demo"]));
    assert_fails_with(&out, "bubblewrap");
    assert_fails_with(&out, "sandbox.isolation = \"none\"");
    // Nothing was started: no workflow, no repository.
    let list = run(agentry(data.path()).args(["--json", "workflows", "list"]));
    assert_ok(&list);
    assert_eq!(
        stdout_json(&list).as_array().map(Vec::len),
        Some(0),
        "{list:?}"
    );
    assert!(!data.path().join("repos/url-shortener.git").exists());

    let check = run(agentry(data.path())
        .env("AGENTRY_SANDBOX__BWRAP", "/nonexistent/bwrap")
        .args(["sandbox", "check"]));
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("NOT ready"),
        "{check:?}"
    );
}

#[test]
fn isolation_none_is_an_explicit_choice_and_each_run_records_what_it_had() {
    let data = support::tempdir();
    let out = run(agentry(data.path())
        .env("AGENTRY_SANDBOX__BWRAP", "/nonexistent/bwrap")
        .env("AGENTRY_SANDBOX__ISOLATION", "none")
        .args(["--json", "demo"]));
    assert_ok(&out);
    let summary = stdout_json(&out);
    let runs = summary["test_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{summary:#}");
    for r in runs {
        assert!(r["isolation"].as_str().unwrap().starts_with("none"), "{r}");
    }

    // The default is full isolation, and the runs say so.
    let data = support::tempdir();
    let out = run(agentry(data.path()).args(["--json", "demo"]));
    assert_ok(&out);
    let summary = stdout_json(&out);
    for r in summary["test_runs"].as_array().unwrap() {
        let isolation = r["isolation"].as_str().unwrap();
        assert!(isolation.starts_with("full (namespaces:"), "{isolation}");
        assert!(isolation.contains("net"), "{isolation}");
        assert!(isolation.contains("private filesystem"), "{isolation}");
    }
    let check = run(agentry(data.path()).args(["--json", "sandbox", "check"]));
    assert_ok(&check);
    let report = stdout_json(&check);
    assert_eq!(report["ready"], true);
    assert_eq!(report["isolation"]["mode"], "full");
}

#[test]
fn an_unprivileged_user_runs_its_tests_in_a_user_namespace() {
    // Run by root (as CI is), the suite also checks the path an ordinary
    // user takes: `agentry` under an unprivileged uid of its own.
    let home = support::tempdir();
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let uid = 4000 + (std::process::id() % 50_000);
        std::os::unix::fs::chown(home.path(), Some(uid), Some(uid)).unwrap();
        let mut cmd = std::process::Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_agentry"));
        cmd
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_agentry"))
    };
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home.path())
        .env("AGENTRY_SANDBOX__WORK_DIR", home.path().join("work"))
        .arg("--data-dir")
        .arg(home.path().join("data"))
        .args(["--json", "demo"]);
    let out = run(&mut cmd);
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed");
    let runs = summary["test_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        let isolation = r["isolation"].as_str().unwrap();
        assert!(
            isolation.starts_with("full (namespaces: user, mount, pid, ipc, uts, net;"),
            "{isolation}"
        );
        assert!(!isolation.contains("host uid"), "{isolation}");
    }
}

//! Helpers for driving the real `agentry` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A command for the binary with a data dir and no stray AGENTRY_* settings.
pub fn agentry(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentry"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTRY_") || k.ends_with("_API_KEY") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--data-dir").arg(data_dir);
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs to completion, returning the output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("agentry runs")
}

/// Parses stdout as JSON, with the output in the panic message on failure.
pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); status {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts success, showing stderr otherwise.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "agentry failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts failure whose stderr contains `needle`.
pub fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(needle),
        "stderr does not mention `{needle}`:\n{stderr}"
    );
}

/// A running child whose stderr lines arrive on a channel.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn agentry");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with `{needle}` within {within:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The workflow id printed right after submission.
    pub fn workflow_id(&mut self) -> String {
        let line = self.wait_for("workflow ", Duration::from_secs(60));
        line.split_whitespace()
            .find(|w| w.len() == 36 && w.chars().filter(|c| *c == '-').count() == 4)
            .unwrap_or_else(|| panic!("no id in `{line}`"))
            .to_string()
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The artifacts of a finished demo, reduced to what must be identical
/// between an interrupted-and-resumed run and an uninterrupted one.
pub fn artifact_fingerprint(summary: &Value) -> Value {
    let mut tickets: Vec<String> = summary["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}|{}",
                t["kind"].as_str().unwrap(),
                t["title"].as_str().unwrap()
            )
        })
        .collect();
    tickets.sort();
    let mut pages: Vec<String> = summary["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}|v{}", p["title"].as_str().unwrap(), p["version"]))
        .collect();
    pages.sort();
    let repo = &summary["repository"];
    let commits: Vec<String> = repo["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_string())
        .collect();
    let runs: Vec<String> = summary["test_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("round {} passed {}", r["round"], r["passed"]))
        .collect();
    serde_json::json!({
        "tickets": tickets,
        "pages": pages,
        "commits": commits,
        "files": repo["files"],
        "merge_request": [repo["merge_request"]["id"], repo["merge_request"]["state"]],
        "test_runs": runs,
    })
}

/// `git log` of a repository path, one subject per line.
pub fn git_log(repo: &str, branch: &str) -> Vec<String> {
    let out = Command::new("git")
        .args(["--git-dir", repo, "log", "--format=%s", branch])
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git log failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A fresh temp dir.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Writes a file and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

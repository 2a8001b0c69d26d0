//! Running the git CLI: isolated from the user's configuration and
//! environment, bounded by a timeout, errors classified.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agentry_core::{Error, Result};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The default limit for one git call.
pub(crate) const GIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a git call produced.
#[derive(Debug)]
pub(crate) struct GitOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output, as bytes (blobs need not be UTF-8).
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl GitOutput {
    /// Standard output as text, without the trailing newline.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_string()
    }
}

/// One git invocation.
#[derive(Debug)]
pub(crate) struct GitCall<'a> {
    git_dir: Option<&'a Path>,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(String, String)>,
    identity: (String, String),
    timeout: Duration,
}

impl<'a> GitCall<'a> {
    /// `git --git-dir=<git_dir> <args>` (no `--git-dir` when `None`).
    pub fn new<I, S>(git_dir: Option<&'a Path>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GitCall {
            git_dir,
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            env: Vec::new(),
            identity: ("Agentry".to_string(), "agentry@agentry.local".to_string()),
            timeout: GIT_TIMEOUT,
        }
    }

    /// Feeds `input` on standard input.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Sets an environment variable for the call.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Author and committer identity (also passed as `user.name`/`user.email`).
    pub fn identity(mut self, name: &str, email: &str) -> Self {
        self.identity = (name.to_string(), email.to_string());
        self
    }

    /// Overrides the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn what(&self) -> String {
        format!(
            "git {}",
            self.args.first().map(String::as_str).unwrap_or("")
        )
    }

    /// Runs the call; a non-zero exit is returned, not an error.
    pub async fn output(self) -> Result<GitOutput> {
        let what = self.what();
        let (name, email) = &self.identity;
        let mut cmd = Command::new("git");
        // Nothing from the caller's git environment leaks in (GIT_DIR,
        // GIT_INDEX_FILE, GIT_CONFIG_PARAMETERS, ...); no user or system
        // config is read; no prompt can block us.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", email)
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email)
            .env("LC_ALL", "C");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        if let Some(dir) = self.git_dir {
            cmd.arg("--git-dir").arg(dir);
        }
        cmd.args([
            "-c",
            &format!("user.name={name}"),
            "-c",
            &format!("user.email={email}"),
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "gc.auto=0",
        ])
        .args(&self.args)
        .stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                Error::transient("the `git` executable was not found on PATH")
            } else {
                Error::transient(format!("starting {what}: {error}"))
            }
        })?;
        if let (Some(input), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            // Written concurrently with reading the output, so a large input
            // cannot deadlock against a full stdout pipe.
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
                let _ = pipe.shutdown().await;
            });
        }
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => Err(Error::Timeout {
                what,
                after: self.timeout,
            }),
            Ok(Err(error)) => Err(Error::transient(format!("running {what}: {error}"))),
            Ok(Ok(out)) => Ok(GitOutput {
                code: out.status.code().unwrap_or(-1),
                stdout: out.stdout,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    /// Runs the call; a non-zero exit is an error (see [`classify`]).
    pub async fn run(self) -> Result<GitOutput> {
        let what = self.what();
        let out = self.output().await?;
        if out.code == 0 {
            Ok(out)
        } else {
            Err(classify(&what, &out))
        }
    }
}

/// A failed git call: lock contention is transient, the rest permanent.
pub(crate) fn classify(what: &str, out: &GitOutput) -> Error {
    let msg = format!("{what} failed (exit {}): {}", out.code, out.stderr);
    let transient = [
        "index.lock",
        "cannot lock ref",
        "Unable to create",
        "unable to create temporary",
    ]
    .iter()
    .any(|needle| out.stderr.contains(needle));
    if transient {
        Error::transient(msg)
    } else {
        Error::permanent(msg)
    }
}

//! The shallow clone of the branch under test, with the git CLI.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use agentry_core::{Error, Result};

use crate::exec::{self, Spec};

/// Git, run without the user's or the system's configuration and without
/// ever prompting for credentials.
pub(crate) struct Git<'a> {
    pub program: &'a Path,
    pub path_env: &'a str,
    pub home: &'a Path,
    pub timeout: Duration,
}

impl Git<'_> {
    fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("PATH".into(), self.path_env.into()),
            ("HOME".into(), self.home.as_os_str().to_owned()),
            ("LANG".into(), "C".into()),
            ("LC_ALL".into(), "C".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_ASKPASS".into(), "true".into()),
            ("GIT_SSH_COMMAND".into(), "ssh -o BatchMode=yes".into()),
        ]
    }

    async fn git(&self, cwd: &Path, args: &[&OsString]) -> Result<exec::Outcome> {
        let mut argv: Vec<OsString> = vec![self.program.as_os_str().to_owned()];
        argv.extend(args.iter().map(|a| (*a).clone()));
        let env = self.env();
        let outcome = exec::run(Spec {
            argv: &argv,
            cwd,
            env: &env,
            wall_time: self.timeout,
            output_bytes: 16 * 1024,
        })
        .await?;
        if outcome.timed_out {
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            return Err(Error::Timeout {
                what: format!("git {}", shown.join(" ")),
                after: self.timeout,
            });
        }
        Ok(outcome)
    }

    /// `git clone --quiet --depth 1 --branch <branch> -- <from> <dest>`.
    pub(crate) async fn clone(&self, from: &str, branch: &str, dest: &Path) -> Result<()> {
        let url = clone_url(from);
        let args: Vec<OsString> = [
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "--branch",
            branch,
            "--",
            &url,
        ]
        .iter()
        .map(OsString::from)
        .chain([dest.as_os_str().to_owned()])
        .collect();
        let args: Vec<&OsString> = args.iter().collect();
        let cwd = dest.parent().unwrap_or(self.home);
        let out = self.git(cwd, &args).await?;
        if out.exit_code == Some(0) {
            return Ok(());
        }
        let said = out.stderr.trim();
        let missing_branch = said.contains("not found in upstream")
            || (said.contains("Remote branch") && said.contains("not found"));
        let missing_repo = said.contains("does not appear to be a git repository")
            || said.contains("does not exist")
            || (said.contains("repository") && said.contains("not found"));
        Err(if missing_branch {
            Error::not_found(format!("branch `{branch}` in `{from}`: {said}"))
        } else if missing_repo {
            Error::not_found(format!("repository `{from}`: {said}"))
        } else {
            Error::transient(format!(
                "git clone of `{from}` branch `{branch}` failed ({}): {said}",
                describe_exit(&out)
            ))
        })
    }

    /// `git remote remove origin` in `checkout`: the clone keeps no way back
    /// to the repository it came from (its branch is the agents'; a test
    /// has nothing to push to).
    pub(crate) async fn forget_origin(&self, checkout: &Path) -> Result<()> {
        let args = [
            OsString::from("remote"),
            OsString::from("remove"),
            OsString::from("origin"),
        ];
        let out = self.git(checkout, &args.iter().collect::<Vec<_>>()).await?;
        if out.exit_code == Some(0) {
            Ok(())
        } else {
            Err(Error::permanent(format!(
                "git remote remove origin failed ({}): {}",
                describe_exit(&out),
                out.stderr.trim()
            )))
        }
    }

    /// `git rev-parse HEAD` in `checkout`.
    pub(crate) async fn head(&self, checkout: &Path) -> Result<String> {
        let args = [OsString::from("rev-parse"), OsString::from("HEAD")];
        let out = self.git(checkout, &args.iter().collect::<Vec<_>>()).await?;
        let sha = out.stdout.trim();
        if out.exit_code == Some(0) && !sha.is_empty() {
            Ok(sha.to_owned())
        } else {
            Err(Error::permanent(format!(
                "git rev-parse HEAD failed ({}): {}",
                describe_exit(&out),
                out.stderr.trim()
            )))
        }
    }
}

fn describe_exit(out: &exec::Outcome) -> String {
    match (out.exit_code, out.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "no exit status".into(),
    }
}

/// A local repository directory becomes a `file://` URL, so `--depth` is
/// honoured (git ignores it for plain local paths); URLs pass unchanged.
fn clone_url(from: &str) -> String {
    let path = Path::new(from);
    if !from.contains("://") && path.is_dir() {
        if let Ok(abs) = path.canonicalize() {
            return format!("file://{}", abs.display());
        }
    }
    from.to_owned()
}

/// Refuses branch names and sources that git could read as options, or
/// that are not branch names at all.
pub(crate) fn validate(from: &str, branch: &str) -> Result<()> {
    if from.trim().is_empty() || from.starts_with('-') {
        return Err(Error::invalid(format!(
            "clone source `{from}` is not a repository"
        )));
    }
    let bad_branch = branch.is_empty()
        || branch.starts_with('-')
        || branch.contains("..")
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad_branch {
        return Err(Error::invalid(format!(
            "`{branch}` is not a valid branch name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(from: &str, branch: &str, ok: bool) {
        assert_eq!(validate(from, branch).is_ok(), ok, "{from} {branch}");
    }

    #[test]
    fn validates_sources_and_branches() {
        check("/srv/repo.git", "main", true);
        check("https://example.com/x.git", "feature/login-42", true);
        check("--upload-pack=evil", "main", false);
        check("/srv/repo.git", "--upload-pack=evil", false);
        check("/srv/repo.git", "a..b", false);
        check("/srv/repo.git", "has space", false);
        check("", "main", false);
    }
}

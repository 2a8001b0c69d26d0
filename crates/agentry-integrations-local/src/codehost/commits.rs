//! Commits and their idempotency keys: the trailer written into a commit's
//! message, `git log` records parsed into [`CommitInfo`]s, and the commit a
//! key already made found again on a branch's history.

use std::path::Path;

use agentry_core::{CommitInfo, Error, Result};
use chrono::{DateTime, Utc};

use crate::git::GitCall;

/// The trailer that makes a commit findable by its idempotency key.
pub const IDEMPOTENCY_TRAILER: &str = "Agentry-Idempotency-Key";

/// Parses `git log -z --name-only --format=%x1e%H%x1f%an%x1f%aI%x1f%s`.
fn parse_log(out: &[u8]) -> Result<Vec<CommitInfo>> {
    let text = String::from_utf8_lossy(out);
    let mut commits = Vec::new();
    for record in text.split('\x1e').filter(|r| !r.trim().is_empty()) {
        let (header, files) = record.split_once('\0').unwrap_or((record, ""));
        let mut fields = header.split('\x1f');
        let (Some(sha), Some(author), Some(date), Some(title)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(Error::permanent(format!(
                "unexpected `git log` output: {}",
                header.escape_debug()
            )));
        };
        let created_at = DateTime::parse_from_rfc3339(date.trim())
            .map_err(|error| Error::permanent(format!("commit date `{date}`: {error}")))?
            .with_timezone(&Utc);
        let mut files: Vec<String> = files
            .trim_start_matches('\n')
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        files.sort();
        commits.push(CommitInfo {
            sha: sha.trim().to_string(),
            title: title.to_string(),
            author: author.to_string(),
            files,
            created_at,
        });
    }
    Ok(commits)
}

/// The full message: the caller's text plus the idempotency trailer in its
/// own final paragraph.
pub(super) fn commit_message(message: &str, key: &str) -> String {
    format!("{}\n\n{IDEMPOTENCY_TRAILER}: {key}\n", message.trim_end())
}

/// Commits on `rev` (newest first), at most `limit` when given.
pub(super) async fn log(
    git_dir: &Path,
    rev: &str,
    limit: Option<usize>,
) -> Result<Vec<CommitInfo>> {
    let mut args = vec![
        "log".to_string(),
        "-z".to_string(),
        "--name-only".to_string(),
        "--diff-merges=first-parent".to_string(),
        "--format=%x1e%H%x1f%an%x1f%aI%x1f%s".to_string(),
    ];
    if let Some(n) = limit {
        args.push(format!("--max-count={n}"));
    }
    args.push(rev.to_string());
    args.push("--".to_string());
    parse_log(&GitCall::new(Some(git_dir), args).run().await?.stdout)
}

pub(super) async fn commit_info(git_dir: &Path, sha: &str) -> Result<CommitInfo> {
    log(git_dir, sha, Some(1))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::permanent(format!("commit {sha} vanished")))
}

/// The commit on `head`'s history whose idempotency trailer is exactly `key`.
pub(super) async fn find_by_key(git_dir: &Path, head: &str, key: &str) -> Result<Option<String>> {
    let out = GitCall::new(
        Some(git_dir),
        [
            "log".to_string(),
            "--fixed-strings".to_string(),
            format!("--grep={IDEMPOTENCY_TRAILER}: {key}"),
            format!(
                "--format=%H%x00%(trailers:key={IDEMPOTENCY_TRAILER},valueonly,separator=%x00)%x1e"
            ),
            head.to_string(),
            "--".to_string(),
        ],
    )
    .run()
    .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    for record in text.split('\x1e') {
        let mut parts = record.trim_start_matches('\n').split('\0');
        let sha = parts.next().unwrap_or_default().trim();
        if !sha.is_empty() && parts.any(|value| value.trim() == key) {
            return Ok(Some(sha.to_string()));
        }
    }
    Ok(None)
}

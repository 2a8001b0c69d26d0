//! Branches of one bare repository: read with `rev-parse`, and moved only
//! by compare-and-swap (`update-ref <ref> <new> <old>`), so a writer that
//! lost a race learns it and retries instead of overwriting.

use std::path::Path;

use agentry_core::{Error, Result};

use super::names::valid_branch;
use crate::git::{classify, GitCall};

/// How often a compare-and-swap ref update is retried when another writer
/// moved the branch in between.
pub(super) const CAS_ATTEMPTS: usize = 8;

/// The commit a branch points at, if the branch exists.
pub(super) async fn branch_head(git_dir: &Path, branch: &str) -> Result<Option<String>> {
    let out = GitCall::new(
        Some(git_dir),
        [
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
    )
    .output()
    .await?;
    match out.code {
        0 => Ok(Some(out.text())),
        1 => Ok(None),
        _ => Err(classify("git rev-parse", &out)),
    }
}

pub(super) async fn require_branch(
    git_dir: &Path,
    repository: &str,
    branch: &str,
) -> Result<String> {
    valid_branch(branch)?;
    branch_head(git_dir, branch)
        .await?
        .ok_or_else(|| Error::not_found(format!("branch `{branch}` in `{repository}`")))
}

/// Compare-and-swap: moves `branch` from `old` (None: must not exist) to
/// `new`. `Ok(false)` when another writer got there first.
pub(super) async fn swap_ref(
    git_dir: &Path,
    branch: &str,
    new: &str,
    old: Option<&str>,
) -> Result<bool> {
    let out = GitCall::new(
        Some(git_dir),
        [
            "update-ref",
            &format!("refs/heads/{branch}"),
            new,
            old.unwrap_or(""),
        ],
    )
    .output()
    .await?;
    if out.code == 0 {
        return Ok(true);
    }
    let now = branch_head(git_dir, branch).await?;
    if now.as_deref() != old {
        Ok(false)
    } else {
        Err(classify("git update-ref", &out))
    }
}

//! A merge request's branches merged for real: nothing when already
//! merged, a fast-forward when possible, else a merge commit on the tree
//! `git merge-tree` wrote; published by compare-and-swap.

use std::path::Path;
use std::time::Duration;

use agentry_core::{Error, MergeRequest, Result};

use super::refs::{branch_head, swap_ref, CAS_ATTEMPTS};
use crate::git::{classify, GitCall};

const MERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Merges `source` into `target` for real: nothing when already merged,
/// a fast-forward when possible, else a merge commit. Conflicts leave
/// everything as it was and return [`Error::Conflict`].
pub(super) async fn merge_branches(git_dir: &Path, mr: &MergeRequest) -> Result<String> {
    let (source, target) = (&mr.source_branch, &mr.target_branch);
    for _ in 0..CAS_ATTEMPTS {
        let src = branch_head(git_dir, source)
            .await?
            .ok_or_else(|| Error::invalid(format!("source branch `{source}` no longer exists")))?;
        let tgt = branch_head(git_dir, target)
            .await?
            .ok_or_else(|| Error::invalid(format!("target branch `{target}` no longer exists")))?;
        let ancestor = |a: &str, b: &str| {
            let (a, b) = (a.to_string(), b.to_string());
            async move {
                let out = GitCall::new(Some(git_dir), ["merge-base", "--is-ancestor", &a, &b])
                    .output()
                    .await?;
                match out.code {
                    0 => Ok(true),
                    1 => Ok(false),
                    _ => Err(classify("git merge-base", &out)),
                }
            }
        };
        if ancestor(&src, &tgt).await? {
            return Ok(tgt);
        }
        let new = if ancestor(&tgt, &src).await? {
            src.clone()
        } else {
            let out = GitCall::new(
                Some(git_dir),
                [
                    "merge-tree",
                    "--write-tree",
                    "--name-only",
                    "--no-messages",
                    &tgt,
                    &src,
                ],
            )
            .timeout(MERGE_TIMEOUT)
            .output()
            .await?;
            let text = out.text();
            let mut lines = text.lines();
            let tree = lines.next().unwrap_or_default().trim().to_string();
            match out.code {
                0 => {}
                1 => {
                    let files: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
                    return Err(Error::Conflict(format!(
                        "merging `{source}` into `{target}` conflicts in: {}",
                        files.join(", ")
                    )));
                }
                _ => return Err(classify("git merge-tree", &out)),
            }
            GitCall::new(
                Some(git_dir),
                ["commit-tree", &tree, "-p", &tgt, "-p", &src, "-F", "-"],
            )
            .identity("Agentry", "merge@agentry.local")
            .stdin(format!(
                "Merge branch '{source}' into '{target}'\n\n{}\n\nSee merge request !{}\n",
                mr.title, mr.id
            ))
            .run()
            .await?
            .text()
        };
        if swap_ref(git_dir, target, &new, Some(&tgt)).await? {
            return Ok(new);
        }
    }
    Err(Error::transient(format!(
        "branch `{target}` kept moving while merging `{source}`"
    )))
}

//! Trees in the object store: read flat with `ls-tree`, written through a
//! private index file (`update-index`, `write-tree`; no working tree) and
//! checked against the entries asked for.

use std::collections::BTreeMap;
use std::path::Path;

use agentry_core::{Error, Result};

use super::tree::TreeEntry;
use crate::git::GitCall;

/// Every blob of a commit's (or a tree's) tree: path -> (mode, object id).
pub(super) async fn flat_tree(git_dir: &Path, commit: &str) -> Result<BTreeMap<String, TreeEntry>> {
    let out = GitCall::new(
        Some(git_dir),
        ["ls-tree", "-r", "-z", "--full-tree", commit],
    )
    .run()
    .await?;
    let mut map = BTreeMap::new();
    for record in String::from_utf8_lossy(&out.stdout).split('\0') {
        let Some((meta, path)) = record.split_once('\t') else {
            continue;
        };
        let mut meta = meta.split(' ');
        if let (Some(mode), Some(_kind), Some(oid)) = (meta.next(), meta.next(), meta.next()) {
            map.insert(path.to_string(), (mode.to_string(), oid.to_string()));
        }
    }
    Ok(map)
}

/// Writes a flattened tree into the object store via a private index,
/// and checks that the tree git wrote holds exactly these entries:
/// `update-index --index-info` skips a path it refuses (`.GIT/config`)
/// with a line on stderr and exit 0, which would commit less than was
/// asked and report success.
pub(super) async fn write_tree(
    git_dir: &Path,
    tree: &BTreeMap<String, TreeEntry>,
) -> Result<String> {
    let index = git_dir.join(format!("agentry-index-{}", uuid::Uuid::new_v4().simple()));
    let index_str = index.display().to_string();
    let mut input = Vec::new();
    for (path, (mode, oid)) in tree {
        input.extend_from_slice(format!("{mode} {oid}\t{path}").as_bytes());
        input.push(0);
    }
    let result = async {
        GitCall::new(
            Some(git_dir),
            ["update-index", "-z", "--add", "--index-info"],
        )
        .env("GIT_INDEX_FILE", index_str.clone())
        .stdin(input)
        .run()
        .await?;
        let written = GitCall::new(Some(git_dir), ["write-tree"])
            .env("GIT_INDEX_FILE", index_str.clone())
            .run()
            .await?
            .text();
        let landed = flat_tree(git_dir, &written).await?;
        let dropped: Vec<&str> = tree
            .iter()
            .filter(|(path, entry)| landed.get(*path) != Some(*entry))
            .map(|(path, _)| path.as_str())
            .collect();
        if !dropped.is_empty() {
            return Err(Error::invalid(format!(
                "git left {} out of the tree it wrote (it refuses such paths); nothing \
                 was committed",
                dropped
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(written)
    }
    .await;
    let _ = tokio::fs::remove_file(&index).await;
    result
}

pub(super) async fn tree_of(git_dir: &Path, commit: &str) -> Result<String> {
    Ok(
        GitCall::new(Some(git_dir), ["rev-parse", &format!("{commit}^{{tree}}")])
            .run()
            .await?
            .text(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A developer's `write_file` to `.GIT/config` was reported committed,
    /// but `update-index` skipped it and exited 0: the tree git writes is
    /// checked against the one asked for.
    #[tokio::test]
    async fn a_path_git_drops_from_the_tree_fails_the_write_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join("r.git");
        GitCall::new(
            None,
            ["init", "--quiet", "--bare", git_dir.to_str().unwrap()],
        )
        .run()
        .await
        .unwrap();
        let blob = GitCall::new(Some(&git_dir), ["hash-object", "-w", "--stdin"])
            .stdin("x\n")
            .run()
            .await
            .unwrap()
            .text();
        let entry = ("100644".to_string(), blob);
        let mut tree = BTreeMap::from([("app.py".to_string(), entry.clone())]);
        write_tree(&git_dir, &tree)
            .await
            .expect("a tree of good paths is written");
        tree.insert(".GIT/config".to_string(), entry.clone());
        tree.insert("sub/.Git/hooks/x".to_string(), entry);
        let error = write_tree(&git_dir, &tree).await.unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput(m)
                if m.contains("`.GIT/config`, `sub/.Git/hooks/x`") && !m.contains("app.py")
                    && m.contains("nothing was committed")),
            "{error}"
        );
    }
}

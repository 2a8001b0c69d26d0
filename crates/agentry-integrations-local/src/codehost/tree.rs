//! A commit's changes applied to a flattened tree (path -> mode and object
//! id) in memory: the rules for symlinks, submodules, and files against
//! directories, decided before git writes anything. Pure: no git.

use std::collections::BTreeMap;

use agentry_core::{Error, RepoPath, Result};

const MODE_SYMLINK: &str = "120000";
const MODE_GITLINK: &str = "160000";

/// One entry of a flattened tree: mode and object id.
pub(super) type TreeEntry = (String, String);

/// Applies the changes to a flattened tree, refusing writes through
/// symlinks or submodules, files over directories and the reverse.
/// Deletions go first, so a file may replace a directory whose files
/// the same commit deletes (and the reverse).
pub(super) fn apply_changes(
    tree: &mut BTreeMap<String, TreeEntry>,
    changes: &[(RepoPath, Option<String>)],
) -> Result<()> {
    let (deletions, writes): (Vec<_>, Vec<_>) =
        changes.iter().partition(|(_, blob)| blob.is_none());
    for (path, blob) in deletions.into_iter().chain(writes) {
        let p = path.as_str();
        let mut prefix = String::new();
        for part in p.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            let is_self = prefix.len() == p.len();
            match tree.get(&prefix).map(|(mode, _)| mode.as_str()) {
                Some(MODE_SYMLINK) if !is_self || blob.is_some() => {
                    return Err(Error::invalid(format!(
                        "path `{p}` goes through `{prefix}`, a symlink in the repository; \
                         refusing to write through it"
                    )))
                }
                Some(MODE_GITLINK) if !is_self || blob.is_some() => {
                    return Err(Error::invalid(format!(
                        "path `{p}` goes through `{prefix}`, a submodule"
                    )))
                }
                _ => {}
            }
        }
        let dir_prefix = format!("{p}/");
        if tree
            .range(dir_prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dir_prefix))
        {
            return Err(Error::invalid(format!(
                "path `{p}` is a directory in the repository; change its files one by one"
            )));
        }
        match blob {
            Some(oid) => {
                let mode = match tree.get(p).map(|(m, _)| m.as_str()) {
                    Some("100755") => "100755",
                    _ => "100644",
                };
                tree.insert(p.to_string(), (mode.to_string(), oid.clone()));
            }
            None => {
                tree.remove(p);
            }
        }
    }
    // The result must still be a tree: no path may be both a file and a
    // directory (`a` written while `a/b` exists, or the reverse).
    for path in tree.keys() {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if tree.contains_key(&prefix) {
                return Err(Error::invalid(format!(
                    "path `{path}` needs `{prefix}` to be a directory, but it is a file; \
                     delete `{prefix}` in the same commit"
                )));
            }
        }
    }
    Ok(())
}

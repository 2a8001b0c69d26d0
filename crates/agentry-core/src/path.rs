//! `RepoPath`: a path an LLM proposed, proven to stay inside its repository.
//!
//! Lexical checks happen here (no `..`, no absolute or drive paths, no empty
//! components, no NUL, and no component that git itself treats as its own
//! `.git` directory, see `is_git_dir_name`); adapters that touch a real
//! directory also refuse to follow symlinks (see
//! [`RepoPath::prefixes_under`]).

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// A normalized, relative, `/`-separated path inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoPath(String);

impl RepoPath {
    /// Validates a proposed path.
    pub fn parse(raw: &str) -> Result<RepoPath, Error> {
        let reject = |why: &str| Err(Error::invalid(format!("path `{raw}` rejected: {why}")));
        if raw.trim().is_empty() {
            return reject("it is empty");
        }
        if raw.contains('\0') {
            return reject("it contains a NUL byte");
        }
        if raw.contains('\\') {
            return reject("backslashes are not allowed; use `/`");
        }
        if raw.starts_with('/') || raw.starts_with('~') {
            return reject("absolute paths are not allowed");
        }
        if raw.len() >= 2 && raw.as_bytes()[1] == b':' {
            return reject("drive paths are not allowed");
        }
        if raw.len() > 512 {
            return reject("it is longer than 512 bytes");
        }
        let mut parts = Vec::new();
        for comp in Path::new(raw).components() {
            match comp {
                Component::Normal(c) => {
                    let c = c.to_string_lossy();
                    if is_git_dir_name(&c) {
                        return reject(&format!(
                            "`{c}` names git's own `.git` directory (git matches it in any \
                             letter case, with trailing dots or spaces, and as `git~1`), \
                             which is not writable"
                        ));
                    }
                    parts.push(c.into_owned());
                }
                Component::CurDir => {}
                Component::ParentDir => return reject("`..` leaves the repository"),
                Component::RootDir | Component::Prefix(_) => {
                    return reject("absolute paths are not allowed")
                }
            }
        }
        if parts.is_empty() {
            return reject("it names no file");
        }
        Ok(RepoPath(parts.join("/")))
    }

    /// The path as `/`-separated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Joins under `root` lexically. Callers that write must additionally
    /// check that no existing component under `root` is a symlink (the
    /// sandbox does, walking [`RepoPath::prefixes_under`]; the code host
    /// checks the git tree it writes instead).
    pub fn join_under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// The prefixes of this path under `root`, shortest first (`a`, `a/b`,
    /// `a/b/c.py`), for a symlink walk by an adapter that does I/O.
    pub fn prefixes_under(&self, root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut cur = root.to_path_buf();
        for part in self.0.split('/') {
            cur = cur.join(part);
            out.push(cur.clone());
        }
        out
    }
}

/// Whether git treats a path component as its own `.git` directory, and so
/// refuses (or, through `update-index --index-info`, silently drops) any
/// path through it. These are the rules of git's `verify_path` with both
/// `core.protectNTFS` and `core.protectHFS` on, so a path accepted here is
/// accepted by git on every platform and safe in a clone on any of them:
///
/// - `.git` in any letter case (`verify_dotfile`; case-insensitive file
///   systems open `.GIT` as `.git`);
/// - on NTFS, `.git` or its 8.3 short name `git~1`, in any case, followed
///   only by dots and spaces, which Windows strips (`is_ntfs_dotgit`);
/// - on HFS+, `.git` with any of the code points HFS+ ignores (zero-width
///   joiners, direction marks, the byte-order mark) inserted
///   (`is_hfs_dotgit`).
fn is_git_dir_name(component: &str) -> bool {
    let ntfs = |name: &str| {
        let lower = name.to_ascii_lowercase();
        [".git", "git~1"].iter().any(|stem| {
            lower
                .strip_prefix(stem)
                .is_some_and(|rest| rest.chars().all(|c| c == '.' || c == ' '))
        })
    };
    let hfs = |name: &str| {
        let folded: String = name
            .chars()
            .filter(|c| !is_hfs_ignorable(*c))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        folded == ".git"
    };
    ntfs(component) || hfs(component)
}

/// The code points HFS+ drops when it compares names (git's
/// `next_hfs_char`).
fn is_hfs_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'
    )
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RepoPath {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        RepoPath::parse(&s)
    }
}

impl From<RepoPath> for String {
    fn from(p: RepoPath) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<&str, &str>) {
        match (RepoPath::parse(raw), expected) {
            (Ok(p), Ok(want)) => assert_eq!(p.as_str(), want, "{raw}"),
            (Err(e), Err(why)) => assert!(e.to_string().contains(why), "{raw}: {e}"),
            (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn accepts_and_normalizes() {
        check("src/app.py", Ok("src/app.py"));
        check("./src//app.py", Ok("src/app.py"));
        check(".gitlab-ci.yml", Ok(".gitlab-ci.yml"));
    }

    #[test]
    fn rejects_escapes() {
        check("../etc/passwd", Err("`..` leaves the repository"));
        check("src/../../x", Err("`..` leaves the repository"));
        check("/etc/passwd", Err("absolute paths"));
        check("~/x", Err("absolute paths"));
        check("C:/x", Err("drive paths"));
        check("a\\b", Err("backslashes"));
        check("", Err("empty"));
        check(".", Err("names no file"));
        check("a\0b", Err("NUL"));
    }

    /// A developer's `write_file` to `.GIT/config` was reported staged and
    /// committed, but git dropped it: every name git takes for its own
    /// directory is refused up front, naming the component.
    #[test]
    fn rejects_every_spelling_of_the_git_directory() {
        for raw in [
            ".git/config",
            ".GIT/config",
            "sub/.Git/hooks/x",
            ".git",
            "a/.gIt",
            ".git./config",
            ".git ../config",
            ".git . /config",
            "git~1/config",
            "GIT~1/hooks/pre-commit",
            "git~1.. /x",
            "a/.g\u{200c}it/config",
            "\u{feff}.GIT/config",
        ] {
            let component = raw
                .split('/')
                .find(|c| is_git_dir_name(c))
                .unwrap_or_else(|| panic!("{raw:?}: no git component found"));
            check(
                raw,
                Err(&format!("`{component}` names git's own `.git` directory")),
            );
            check(raw, Err("not writable"));
        }
    }

    #[test]
    fn names_that_only_look_like_the_git_directory_are_fine() {
        for raw in [
            ".gitignore",
            ".gitlab-ci.yml",
            ".gitlab/ci.yml",
            ".github/workflows/ci.yml",
            "git/config",
            "a.git/x",
            ".git-keep",
            ".gitx/y",
            "git~2/x",
            "git~1x/y",
            "docs/.git_notes.md",
        ] {
            check(raw, Ok(raw));
        }
    }
}

//! `RepoPath`: a path an LLM proposed, proven to stay inside its repository.
//!
//! Lexical checks happen here (no `..`, no absolute or drive paths, no empty
//! or `.git` components, no NUL); adapters that touch a real directory also
//! refuse to follow symlinks (see `RepoPath::resolve_under`'s contract).

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
                    if c == ".git" {
                        return reject("`.git` is not writable");
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
    /// sandbox and code host do, with [`RepoPath::check_no_symlinks`]).
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
        check(".git/config", Err("`.git` is not writable"));
        check("a\0b", Err("NUL"));
    }
}

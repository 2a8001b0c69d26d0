//! The `CodeHost` port (the seed's GitLab integration): repositories,
//! branches, commits of several files, merge requests with a linked test
//! result. The local git host and the GitLab client implement it.
//!
//! A `CodeHost` acts for one [`ArtifactOwner`](crate::ArtifactOwner) (see
//! [`IntegrationResolver`](crate::IntegrationResolver)): repository names,
//! merge requests and idempotency keys name things of that owner only (for
//! GitLab, the tenant's own namespace).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, IdempotencyKey, RepoPath, Result};

/// The most bytes one file of a commit may hold: 1 MiB. Agents write
/// source, tests and configuration; a file past this is a runaway answer or
/// a data dump, and it would be copied into every later prompt, cassette
/// and clone. Every code host refuses it ([`CommitRequest::check_sizes`]);
/// the agents' tools refuse it earlier, so the model can repair.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The most bytes of file content one commit may carry in all: 4 MiB.
pub const MAX_COMMIT_BYTES: usize = 4 * 1024 * 1024;

/// Why a file of `bytes` bytes at `path` may not be committed, or None when
/// it may (at most [`MAX_FILE_BYTES`]). The text names the path, its size
/// and the limit, and says what to do; tools show it to the model.
pub fn file_size_problem(path: &str, bytes: usize) -> Option<String> {
    (bytes > MAX_FILE_BYTES).then(|| {
        format!(
            "`{path}` is {} ({bytes} bytes), over the {} one file may hold: write smaller \
             files, and keep generated or binary data out of the repository",
            human_bytes(bytes),
            human_bytes(MAX_FILE_BYTES)
        )
    })
}

/// Why files of `bytes` bytes in all may not go into one commit, or None
/// when they may (at most [`MAX_COMMIT_BYTES`]).
pub fn commit_size_problem(bytes: usize) -> Option<String> {
    (bytes > MAX_COMMIT_BYTES).then(|| {
        format!(
            "the files of one commit hold {} ({bytes} bytes) in all, over the {} a commit may \
             carry: commit fewer or smaller files",
            human_bytes(bytes),
            human_bytes(MAX_COMMIT_BYTES)
        )
    })
}

/// `1 MiB`, `20.5 MiB`, `512 KiB`, `12 bytes`.
fn human_bytes(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    let scaled = |unit: usize, name: &str| {
        if bytes.is_multiple_of(unit) {
            format!("{} {name}", bytes / unit)
        } else {
            format!("{:.1} {name}", bytes as f64 / unit as f64)
        }
    };
    match bytes {
        b if b >= MIB => scaled(MIB, "MiB"),
        b if b >= KIB => scaled(KIB, "KiB"),
        b => format!("{b} bytes"),
    }
}

/// A repository (a GitLab project). The business analyst names one per
/// workflow; the developer ensures it and works on a branch of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    /// Name (`url-shortener`): 1-64 lower-case letters, digits, `-`, `_`,
    /// not starting with `-`; unique per owner.
    pub name: String,
    /// Where to clone it from (a local path or a URL).
    pub clone_url: String,
    /// Default branch (`main`).
    pub default_branch: String,
}

/// One file of a commit: a whole new content, or a deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileChange {
    /// Where in the repository; a [`RepoPath`] is proven to stay inside it.
    /// At most once per commit.
    pub path: RepoPath,
    /// New content (None: delete the file).
    pub content: Option<String>,
}

impl FileChange {
    /// Bytes of new content (0 for a deletion).
    pub fn size(&self) -> usize {
        self.content.as_ref().map_or(0, String::len)
    }
}

/// A commit to make; see [`CodeHost::commit_files`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Name of an existing repository of this owner.
    pub repository: String,
    /// Branch to commit on (`agentry/<repository>`), created from the
    /// default branch if missing.
    pub branch: String,
    /// Changes (at least one), within [`MAX_FILE_BYTES`] each and
    /// [`MAX_COMMIT_BYTES`] in all.
    pub files: Vec<FileChange>,
    /// Message, first line first; must not be blank. The host appends its
    /// idempotency trailer.
    pub message: String,
    /// Author name (`Agentry Developer`, `Agentry DevOps`): who the history
    /// says wrote it; blank means `Agentry`.
    pub author: String,
    /// Idempotency key: a commit with this key already on the branch is
    /// returned instead of committing again.
    pub idempotency_key: IdempotencyKey,
}

impl CommitRequest {
    /// The size limits every code host enforces before it writes anything:
    /// each file at most [`MAX_FILE_BYTES`], all of them together at most
    /// [`MAX_COMMIT_BYTES`]. The error ([`Error::InvalidInput`]) names every
    /// file over the limit.
    pub fn check_sizes(&self) -> Result<()> {
        let mut problems: Vec<String> = self
            .files
            .iter()
            .filter_map(|f| file_size_problem(f.path.as_str(), f.size()))
            .collect();
        problems.extend(commit_size_problem(
            self.files.iter().map(FileChange::size).sum(),
        ));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "commit to `{}` of `{}` refused: {}",
                self.branch,
                self.repository,
                problems.join("; ")
            )))
        }
    }
}

/// A commit on a branch's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Full 40-hex-digit commit id; what QA's test run and the summary cite.
    pub sha: String,
    /// First line of the message.
    pub title: String,
    /// Author name, as the request gave it.
    pub author: String,
    /// Paths it added, changed or deleted, sorted (a merge commit's: those
    /// changed against its first parent).
    pub files: Vec<String>,
    /// Author date (UTC).
    pub created_at: DateTime<Utc>,
}

/// A merge request's state; names as GitLab's (`opened`, `merged`,
/// `closed`). `merged` is final; `opened` and `closed` move both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRequestState {
    /// Open for review; at most one per source and target branch.
    Opened,
    /// Its source branch was merged into its target (by the update that
    /// set this state); final.
    Merged,
    /// Closed without merging; may be reopened.
    Closed,
}

/// The test result linked to a merge request: QA's latest sandbox run of
/// its branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResultLink {
    /// The [`TestRun`](crate::TestRun)'s id.
    pub run_id: Uuid,
    /// Whether the tests passed (see [`TestRun::passed`](crate::TestRun::passed)).
    pub passed: bool,
    /// SHA of the commit that was tested; `None` when the sandbox did not
    /// say.
    pub commit: Option<String>,
    /// One line for people (`QA round 1: PASSED (exit 0; 3 passed, 0
    /// failed) in 840 ms: ...`).
    pub summary: String,
}

/// A merge request to open; see [`CodeHost::create_merge_request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMergeRequest {
    /// Name of an existing repository of this owner.
    pub repository: String,
    /// Branch with the changes (the developer's `agentry/<repository>`);
    /// it must exist.
    pub source_branch: String,
    /// Branch to merge into (`main` unless the run's options say
    /// otherwise); it must exist and differ from the source.
    pub target_branch: String,
    /// One-line title; must not be blank.
    pub title: String,
    /// Body in Markdown.
    pub description: String,
    /// Makes the call idempotent: a key seen before returns the merge
    /// request it first opened.
    pub idempotency_key: IdempotencyKey,
}

/// Changes to a merge request; each `None` keeps what is there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MergeRequestUpdate {
    /// State to move to: `merged` merges the branches first; leaving
    /// `merged`, or `closed` to `merged`, is a conflict.
    pub state: Option<MergeRequestState>,
    /// Replaces the body (DevOps adds its pipeline notes this way).
    pub description: Option<String>,
    /// Replaces the linked test result (QA links each run).
    pub test_result: Option<TestResultLink>,
}

/// A merge request as the code host holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRequest {
    /// Number within its repository, from 1, like GitLab's `iid` (`!3`);
    /// fixed at creation.
    pub id: u64,
    /// Name of its repository.
    pub repository: String,
    /// Branch with the changes.
    pub source_branch: String,
    /// Branch it merges into.
    pub target_branch: String,
    /// One-line title, as opened.
    pub title: String,
    /// Body in Markdown, as last set.
    pub description: String,
    /// Where it stands; `opened` at creation.
    pub state: MergeRequestState,
    /// Latest linked test result; `None` until QA links one.
    pub test_result: Option<TestResultLink>,
    /// When it was opened (UTC).
    pub created_at: DateTime<Utc>,
    /// When an update last changed it (UTC).
    pub updated_at: DateTime<Utc>,
}

/// A git code host acting for one owner: the local one in the embedded
/// mode, GitLab's client in its place. Commits and merge requests are
/// idempotent by their keys.
#[async_trait]
pub trait CodeHost: Send + Sync + 'static {
    /// Adapter name (`local`, `gitlab`).
    fn name(&self) -> &'static str;
    /// Creates the repository (with an initial commit on its default branch)
    /// if missing; returns it.
    async fn ensure_repository(&self, name: &str, description: &str) -> Result<Repository>;
    /// A repository, or not found.
    async fn get_repository(&self, name: &str) -> Result<Repository>;
    /// Creates `branch` from `from` if missing.
    async fn ensure_branch(&self, repository: &str, branch: &str, from: &str) -> Result<()>;
    /// Commits several files at once (idempotent by key).
    async fn commit_files(&self, request: CommitRequest) -> Result<CommitInfo>;
    /// A file's content on a branch (None when absent).
    async fn read_file(
        &self,
        repository: &str,
        branch: &str,
        path: &RepoPath,
    ) -> Result<Option<String>>;
    /// Paths of all files on a branch, sorted.
    async fn list_files(&self, repository: &str, branch: &str) -> Result<Vec<String>>;
    /// Commits on a branch, newest first.
    async fn commits(&self, repository: &str, branch: &str) -> Result<Vec<CommitInfo>>;
    /// Opens a merge request (idempotent by key; also returns the open one
    /// for the same source and target).
    async fn create_merge_request(&self, new: NewMergeRequest) -> Result<MergeRequest>;
    /// Updates a merge request.
    async fn update_merge_request(
        &self,
        repository: &str,
        id: u64,
        update: MergeRequestUpdate,
    ) -> Result<MergeRequest>;
    /// One merge request.
    async fn get_merge_request(&self, repository: &str, id: u64) -> Result<MergeRequest>;
    /// Merge requests of a repository.
    async fn list_merge_requests(&self, repository: &str) -> Result<Vec<MergeRequest>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(files: &[(&str, usize)]) -> CommitRequest {
        CommitRequest {
            repository: "shop".into(),
            branch: "agentry/shop".into(),
            files: files
                .iter()
                .map(|(path, size)| FileChange {
                    path: RepoPath::parse(path).unwrap_or_else(|e| panic!("{e}")),
                    content: Some("x".repeat(*size)),
                })
                .collect(),
            message: "m".into(),
            author: "a".into(),
            idempotency_key: IdempotencyKey("k".into()),
        }
    }

    fn check(files: &[(&str, usize)], expected: Result<(), &[&str]>) {
        match (request(files).check_sizes(), expected) {
            (Ok(()), Ok(())) => {}
            (Err(Error::InvalidInput(message)), Err(mentions)) => {
                for mention in mentions {
                    assert!(message.contains(mention), "`{message}` lacks `{mention}`");
                }
            }
            (got, want) => panic!("{files:?}: got {got:?}, want {want:?}"),
        }
    }

    /// A 20 MiB file an agent wrote was committed as it was.
    #[test]
    fn files_and_commits_over_the_size_limits_are_refused() {
        check(&[("app.py", MAX_FILE_BYTES)], Ok(()));
        check(
            &[("dump.json", 20 * 1024 * 1024)],
            Err(&["`dump.json` is 20 MiB (20971520 bytes)", "over the 1 MiB"]),
        );
        check(
            &[("a.txt", 3), ("b.bin", MAX_FILE_BYTES + 1)],
            Err(&["`b.bin` is 1.0 MiB (1048577 bytes)"]),
        );
        let quarter = MAX_COMMIT_BYTES / 4;
        check(
            &[
                ("a", quarter),
                ("b", quarter),
                ("c", quarter),
                ("d", quarter),
            ],
            Ok(()),
        );
        check(
            &[
                ("a", quarter),
                ("b", quarter),
                ("c", quarter),
                ("d", quarter),
                ("e", 1),
            ],
            Err(&["hold 4.0 MiB (4194305 bytes) in all, over the 4 MiB"]),
        );
    }

    #[test]
    fn deletions_weigh_nothing() {
        let quarter = MAX_COMMIT_BYTES / 4;
        let mut full = request(&[
            ("a", quarter),
            ("b", quarter),
            ("c", quarter),
            ("d", quarter),
        ]);
        full.files.push(FileChange {
            path: RepoPath::parse("gone.bin").unwrap_or_else(|e| panic!("{e}")),
            content: None,
        });
        assert_eq!(full.files[4].size(), 0);
        assert!(full.check_sizes().is_ok());
    }
}

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

use crate::{IdempotencyKey, RepoPath, Result};

/// A repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repository {
    /// Name (`url-shortener`): lower-case letters, digits, `-`, `_`.
    pub name: String,
    /// Where to clone it from (a local path or a URL).
    pub clone_url: String,
    /// Default branch (`main`).
    pub default_branch: String,
}

/// One file change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileChange {
    /// Path inside the repository.
    pub path: RepoPath,
    /// New content (None: delete the file).
    pub content: Option<String>,
}

/// A commit to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Repository name.
    pub repository: String,
    /// Branch (created from the default branch if missing).
    pub branch: String,
    /// Changes (at least one).
    pub files: Vec<FileChange>,
    /// Commit message.
    pub message: String,
    /// Author name (`Agentry Developer`).
    pub author: String,
    /// Idempotency key: a commit with this key already on the branch is
    /// returned instead of committing again.
    pub idempotency_key: IdempotencyKey,
}

/// A commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Full SHA.
    pub sha: String,
    /// First line of the message.
    pub title: String,
    /// Author name.
    pub author: String,
    /// Paths it touched.
    pub files: Vec<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Merge request states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRequestState {
    /// Open.
    Opened,
    /// Merged.
    Merged,
    /// Closed without merging.
    Closed,
}

/// The test result linked to a merge request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResultLink {
    /// Test run id.
    pub run_id: Uuid,
    /// Passed or not.
    pub passed: bool,
    /// Commit that was tested.
    pub commit: Option<String>,
    /// One-line summary.
    pub summary: String,
}

/// A merge request to open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMergeRequest {
    /// Repository name.
    pub repository: String,
    /// Source branch.
    pub source_branch: String,
    /// Target branch.
    pub target_branch: String,
    /// Title.
    pub title: String,
    /// Description (Markdown).
    pub description: String,
    /// Idempotency key.
    pub idempotency_key: IdempotencyKey,
}

/// Changes to a merge request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MergeRequestUpdate {
    /// New state.
    pub state: Option<MergeRequestState>,
    /// New description.
    pub description: Option<String>,
    /// Linked test result.
    pub test_result: Option<TestResultLink>,
}

/// A merge request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRequest {
    /// Id (per repository, 1-based, like GitLab's iid).
    pub id: u64,
    /// Repository name.
    pub repository: String,
    /// Source branch.
    pub source_branch: String,
    /// Target branch.
    pub target_branch: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// State.
    pub state: MergeRequestState,
    /// Latest linked test result.
    pub test_result: Option<TestResultLink>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// A code host.
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

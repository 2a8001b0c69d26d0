//! `GitCodeHost`: bare git repositories driven by plumbing, and merge
//! requests in SQLite. This file holds the type and its [`CodeHost`] impl,
//! which checks each request and composes the files below it:
//!
//! - `names.rs`: repository and branch names checked, authors' e-mail
//!   addresses derived (pure);
//! - `tree.rs`: a commit's changes applied to a flattened tree (pure);
//! - `mr_state.rs`: merge request states and the moves allowed between
//!   them (pure);
//! - `refs.rs`: branches read and moved by compare-and-swap;
//! - `index.rs`: trees read, and written through a private index;
//! - `commits.rs`: the idempotency trailer in a commit's message, commits
//!   read back and found again by their key;
//! - `merge.rs`: a merge request's branches merged (fast-forward or
//!   `merge-tree`);
//! - `tables.rs`: the SQL for repositories, merge requests and their
//!   idempotency keys.
//!
//! Each file imports only files listed above it (the pure ones none), and
//! none imports this one.

mod commits;
mod index;
mod merge;
mod mr_state;
mod names;
mod refs;
mod tables;
mod tree;

use std::collections::HashSet;
use std::path::PathBuf;

use agentry_core::{
    ArtifactOwner, CodeHost, CommitInfo, CommitRequest, Error, MergeRequest, MergeRequestUpdate,
    NewMergeRequest, RepoPath, Repository, Result,
};
use async_trait::async_trait;
use sqlx::SqlitePool;

pub use commits::IDEMPOTENCY_TRAILER;

use crate::db::{self, io_error};
use crate::git::GitCall;
use crate::validate;
use names::{email_for, valid_branch, valid_repo_name};

/// Every repository's default branch.
pub const DEFAULT_BRANCH: &str = "main";

/// The local code host (the embedded stand-in for GitLab).
///
/// Repositories are bare, at `<owner dir>/repos/<name>.git` (the absolute
/// path is the clone URL). Commits are built with plumbing on a private
/// index file and published with a compare-and-swap `update-ref`, so nothing
/// is ever checked out and concurrent writers to one branch are retried, not
/// lost. Merge requests live in `code_merge_requests`; merging one really
/// merges (fast-forward, else a merge commit from `git merge-tree`).
///
/// A commit whose changes leave the branch's tree as it was returns the
/// branch head instead of making an empty commit.
///
/// A code host acts for one owner (see [`crate::LocalIntegrations`]): its
/// repositories are in that owner's directory, and its merge requests and
/// idempotency keys are the rows of that owner only.
#[derive(Debug)]
pub struct GitCodeHost {
    pool: SqlitePool,
    /// The owner's string form, bound into every query.
    owner: String,
    root: PathBuf,
}

impl GitCodeHost {
    /// The code host of `owner` on an open pool whose schema is applied,
    /// keeping bare repositories under `root` (`<owner dir>/repos`).
    pub(crate) async fn new(
        pool: SqlitePool,
        owner: &ArtifactOwner,
        root: PathBuf,
    ) -> Result<Self> {
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|error| io_error(format!("creating {}", root.display()), error))?;
        let root = tokio::fs::canonicalize(&root)
            .await
            .map_err(|error| io_error(format!("resolving {}", root.display()), error))?;
        Ok(GitCodeHost {
            pool,
            owner: owner.to_string(),
            root,
        })
    }

    /// The bare repository directory of `name` (`<root>/<name>.git`).
    pub fn repository_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.git"))
    }

    /// The bare repository of `name`, or not found.
    async fn require_repo(&self, name: &str) -> Result<PathBuf> {
        valid_repo_name(name)?;
        let path = self.repository_path(name);
        if tokio::fs::metadata(path.join("HEAD")).await.is_ok() {
            Ok(path)
        } else {
            Err(Error::not_found(format!("repository `{name}`")))
        }
    }

    fn repository(&self, name: &str) -> Repository {
        Repository {
            name: name.to_string(),
            clone_url: self.repository_path(name).display().to_string(),
            default_branch: DEFAULT_BRANCH.to_string(),
        }
    }

    /// Creates the bare repository with its first commit in a temporary
    /// directory, then renames it into place (a racing creator's rename
    /// loses harmlessly).
    async fn create_repository(&self, name: &str, description: &str) -> Result<()> {
        let tmp = self
            .root
            .join(format!(".tmp-{name}-{}.git", uuid::Uuid::new_v4().simple()));
        let result = async {
            let tmp_str = tmp.display().to_string();
            GitCall::new(
                None,
                [
                    "init",
                    "--quiet",
                    "--bare",
                    "--initial-branch=main",
                    &tmp_str,
                ],
            )
            .run()
            .await?;
            let dir = Some(tmp.as_path());
            let readme = format!("# {name}\n\n{}\n", description.trim());
            let blob = GitCall::new(dir, ["hash-object", "-w", "--stdin"])
                .stdin(readme)
                .run()
                .await?
                .text();
            let tree = GitCall::new(dir, ["mktree"])
                .stdin(format!("100644 blob {blob}\tREADME.md\n"))
                .run()
                .await?
                .text();
            let commit = GitCall::new(dir, ["commit-tree", &tree, "-F", "-"])
                .stdin(format!(
                    "Initial commit\n\n{IDEMPOTENCY_TRAILER}: init:{name}\n"
                ))
                .run()
                .await?
                .text();
            GitCall::new(dir, ["update-ref", "refs/heads/main", &commit, ""])
                .run()
                .await?;
            tokio::fs::write(tmp.join("description"), format!("{}\n", description.trim()))
                .await
                .map_err(|error| io_error("writing the repository description", error))?;
            match tokio::fs::rename(&tmp, self.repository_path(name)).await {
                Ok(()) => Ok(()),
                Err(_) if self.require_repo(name).await.is_ok() => Ok(()),
                Err(error) => Err(io_error(format!("creating repository `{name}`"), error)),
            }
        }
        .await;
        if tokio::fs::metadata(&tmp).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        result
    }
}

#[async_trait]
impl CodeHost for GitCodeHost {
    fn name(&self) -> &'static str {
        "local"
    }

    #[tracing::instrument(skip(self, description), fields(repository = %name))]
    async fn ensure_repository(&self, name: &str, description: &str) -> Result<Repository> {
        valid_repo_name(name)?;
        if self.require_repo(name).await.is_err() {
            self.create_repository(name, description).await?;
            tracing::info!("Created repository.");
        }
        let (name_owned, description) = (name.to_string(), description.trim().to_string());
        let owner = self.owner.clone();
        db::write(&self.pool, "ensure_repository", move |conn| {
            Box::pin(async move {
                tables::record_repository(conn, &owner, &name_owned, &description, DEFAULT_BRANCH)
                    .await
            })
        })
        .await?;
        Ok(self.repository(name))
    }

    #[tracing::instrument(skip(self), fields(repository = %name))]
    async fn get_repository(&self, name: &str) -> Result<Repository> {
        self.require_repo(name).await?;
        Ok(self.repository(name))
    }

    #[tracing::instrument(skip(self), fields(repository = %repository, branch = %branch))]
    async fn ensure_branch(&self, repository: &str, branch: &str, from: &str) -> Result<()> {
        let git_dir = self.require_repo(repository).await?;
        valid_branch(branch)?;
        if refs::branch_head(&git_dir, branch).await?.is_some() {
            return Ok(());
        }
        let start = match valid_branch(from) {
            Ok(()) => refs::branch_head(&git_dir, from).await?,
            Err(_) => None,
        };
        let start = match start {
            Some(sha) => sha,
            None if (4..=64).contains(&from.len())
                && from.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                let out = GitCall::new(
                    Some(&git_dir),
                    [
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{from}^{{commit}}"),
                    ],
                )
                .output()
                .await?;
                if out.code != 0 {
                    return Err(Error::not_found(format!(
                        "branch or commit `{from}` in `{repository}`"
                    )));
                }
                out.text()
            }
            None => {
                return Err(Error::not_found(format!(
                    "branch `{from}` in `{repository}`"
                )))
            }
        };
        // Lost a race with another creator: the branch exists, which is all
        // that was asked.
        refs::swap_ref(&git_dir, branch, &start, None).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self, request), fields(repository = %request.repository, branch = %request.branch, idempotency_key = %request.idempotency_key, files = request.files.len()))]
    async fn commit_files(&self, request: CommitRequest) -> Result<CommitInfo> {
        let git_dir = self.require_repo(&request.repository).await?;
        valid_branch(&request.branch)?;
        let key = validate::idempotency_key(&request.idempotency_key)?.to_string();
        let message = validate::non_empty("the commit message", &request.message)?.to_string();
        let author = match request.author.trim() {
            "" => "Agentry".to_string(),
            a => a.to_string(),
        };
        let email = email_for(&author);
        if request.files.is_empty() {
            return Err(Error::invalid("a commit needs at least one file change"));
        }
        request.check_sizes()?;
        let mut seen = HashSet::new();
        for change in &request.files {
            if !seen.insert(change.path.as_str()) {
                return Err(Error::invalid(format!(
                    "path `{}` appears more than once in one commit",
                    change.path
                )));
            }
        }
        let branch = request.branch.as_str();
        // Already committed by an earlier attempt?
        if let Some(head) = refs::branch_head(&git_dir, branch).await? {
            if let Some(sha) = commits::find_by_key(&git_dir, &head, &key).await? {
                tracing::debug!(sha = %sha, "Commit found by idempotency key.");
                return commits::commit_info(&git_dir, &sha).await;
            }
        }
        let mut changes = Vec::with_capacity(request.files.len());
        for change in &request.files {
            let blob = match &change.content {
                Some(content) => Some(
                    GitCall::new(Some(&git_dir), ["hash-object", "-w", "--stdin"])
                        .stdin(content.as_bytes().to_vec())
                        .run()
                        .await?
                        .text(),
                ),
                None => None,
            };
            changes.push((change.path.clone(), blob));
        }
        let full_message = commits::commit_message(&message, &key);
        for _ in 0..refs::CAS_ATTEMPTS {
            let head = refs::branch_head(&git_dir, branch).await?;
            if let Some(head) = &head {
                if let Some(sha) = commits::find_by_key(&git_dir, head, &key).await? {
                    return commits::commit_info(&git_dir, &sha).await;
                }
            }
            let parent = match &head {
                Some(h) => h.clone(),
                None => refs::branch_head(&git_dir, DEFAULT_BRANCH)
                    .await?
                    .ok_or_else(|| {
                        Error::permanent(format!(
                        "repository `{}` has no `{DEFAULT_BRANCH}` branch to start `{branch}` from",
                        request.repository
                    ))
                    })?,
            };
            let mut tree = index::flat_tree(&git_dir, &parent).await?;
            tree::apply_changes(&mut tree, &changes)?;
            let new_tree = index::write_tree(&git_dir, &tree).await?;
            let sha = if new_tree == index::tree_of(&git_dir, &parent).await? {
                tracing::debug!("The changes leave the tree as it is; returning the head.");
                parent.clone()
            } else {
                GitCall::new(
                    Some(&git_dir),
                    ["commit-tree", &new_tree, "-p", &parent, "-F", "-"],
                )
                .identity(&author, &email)
                .stdin(full_message.clone())
                .run()
                .await?
                .text()
            };
            if head.as_deref() == Some(sha.as_str())
                || refs::swap_ref(&git_dir, branch, &sha, head.as_deref()).await?
            {
                tracing::info!(sha = %sha, "Committed.");
                return commits::commit_info(&git_dir, &sha).await;
            }
            tracing::debug!("Branch moved during commit; retrying.");
        }
        Err(Error::transient(format!(
            "branch `{branch}` of `{}` kept moving; commit not made",
            request.repository
        )))
    }

    #[tracing::instrument(skip(self), fields(repository = %repository, branch = %branch, path = %path))]
    async fn read_file(
        &self,
        repository: &str,
        branch: &str,
        path: &RepoPath,
    ) -> Result<Option<String>> {
        let git_dir = self.require_repo(repository).await?;
        let head = refs::require_branch(&git_dir, repository, branch).await?;
        let out = GitCall::new(
            Some(&git_dir),
            ["ls-tree", "-z", &head, "--", path.as_str()],
        )
        .run()
        .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some((meta, _)) = text.split('\0').next().and_then(|r| r.split_once('\t')) else {
            return Ok(None);
        };
        let parts: Vec<&str> = meta.split(' ').collect();
        let (Some(&"blob"), Some(oid)) = (parts.get(1), parts.get(2)) else {
            return Ok(None);
        };
        let blob = GitCall::new(Some(&git_dir), ["cat-file", "blob", oid])
            .run()
            .await?;
        String::from_utf8(blob.stdout)
            .map(Some)
            .map_err(|_| Error::invalid(format!("`{path}` on `{branch}` is not UTF-8 text")))
    }

    #[tracing::instrument(skip(self), fields(repository = %repository, branch = %branch))]
    async fn list_files(&self, repository: &str, branch: &str) -> Result<Vec<String>> {
        let git_dir = self.require_repo(repository).await?;
        let head = refs::require_branch(&git_dir, repository, branch).await?;
        let out = GitCall::new(
            Some(&git_dir),
            ["ls-tree", "-r", "-z", "--name-only", &head],
        )
        .run()
        .await?;
        let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        files.sort();
        Ok(files)
    }

    #[tracing::instrument(skip(self), fields(repository = %repository, branch = %branch))]
    async fn commits(&self, repository: &str, branch: &str) -> Result<Vec<CommitInfo>> {
        let git_dir = self.require_repo(repository).await?;
        let head = refs::require_branch(&git_dir, repository, branch).await?;
        commits::log(&git_dir, &head, None).await
    }

    #[tracing::instrument(skip(self, new), fields(repository = %new.repository, source = %new.source_branch, target = %new.target_branch, idempotency_key = %new.idempotency_key))]
    async fn create_merge_request(&self, new: NewMergeRequest) -> Result<MergeRequest> {
        let git_dir = self.require_repo(&new.repository).await?;
        let key = validate::idempotency_key(&new.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        let lookup = |key: String, repo: String| {
            let owner = owner.clone();
            db::read(&self.pool, "find merge request by key", move |conn| {
                Box::pin(async move { tables::mr_by_key(conn, &owner, &key, &repo).await })
            })
        };
        if let Some(mr) = lookup(key.clone(), new.repository.clone()).await? {
            return Ok(mr);
        }
        let title = validate::non_empty("the merge request title", &new.title)?.to_string();
        if new.source_branch == new.target_branch {
            return Err(Error::invalid(format!(
                "source and target are both `{}`",
                new.source_branch
            )));
        }
        for (role, branch) in [
            ("source", &new.source_branch),
            ("target", &new.target_branch),
        ] {
            valid_branch(branch)?;
            if refs::branch_head(&git_dir, branch).await?.is_none() {
                return Err(Error::invalid(format!(
                    "{role} branch `{branch}` does not exist in `{}`",
                    new.repository
                )));
            }
        }
        db::write(&self.pool, "create_merge_request", move |conn| {
            Box::pin(
                async move { tables::open_merge_request(conn, &owner, &new, &title, &key).await },
            )
        })
        .await
    }

    #[tracing::instrument(skip(self, update), fields(repository = %repository, merge_request = id))]
    async fn update_merge_request(
        &self,
        repository: &str,
        id: u64,
        update: MergeRequestUpdate,
    ) -> Result<MergeRequest> {
        let git_dir = self.require_repo(repository).await?;
        let mr = self.get_merge_request(repository, id).await?;
        let merge_commit = if mr_state::needs_merge(id, mr.state, update.state)? {
            let sha = merge::merge_branches(&git_dir, &mr).await?;
            tracing::info!(sha = %sha, "Merged.");
            Some(sha)
        } else {
            None
        };
        let test_result = update
            .test_result
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let change = tables::MergeRequestChange {
            state: update.state,
            description: update.description,
            test_result,
            merge_commit,
        };
        let repo = repository.to_string();
        let owner = self.owner.clone();
        let expected = mr.state;
        let id = i64::try_from(id).map_err(|_| Error::not_found(format!("merge request !{id}")))?;
        db::write(&self.pool, "update_merge_request", move |conn| {
            Box::pin(async move {
                tables::update_merge_request(conn, &owner, &repo, id, expected, &change).await
            })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(repository = %repository, merge_request = id))]
    async fn get_merge_request(&self, repository: &str, id: u64) -> Result<MergeRequest> {
        self.require_repo(repository).await?;
        let repo = repository.to_string();
        let owner = self.owner.clone();
        let id = i64::try_from(id).map_err(|_| Error::not_found(format!("merge request !{id}")))?;
        db::read(&self.pool, "get_merge_request", move |conn| {
            Box::pin(async move { tables::fetch_mr(conn, &owner, &repo, id).await })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(repository = %repository))]
    async fn list_merge_requests(&self, repository: &str) -> Result<Vec<MergeRequest>> {
        self.require_repo(repository).await?;
        let repo = repository.to_string();
        let owner = self.owner.clone();
        db::read(&self.pool, "list_merge_requests", move |conn| {
            Box::pin(async move { tables::list_merge_requests(conn, &owner, &repo).await })
        })
        .await
    }
}

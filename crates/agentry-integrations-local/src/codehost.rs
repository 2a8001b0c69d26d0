//! `GitCodeHost`: bare git repositories driven by plumbing, and merge
//! requests in SQLite.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentry_core::{
    ArtifactOwner, CodeHost, CommitInfo, CommitRequest, Error, MergeRequest, MergeRequestState,
    MergeRequestUpdate, NewMergeRequest, RepoPath, Repository, Result, TestResultLink,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};

use crate::db::{self, db_error, io_error};
use crate::git::{classify, GitCall};
use crate::validate;

/// The trailer that makes a commit findable by its idempotency key.
pub const IDEMPOTENCY_TRAILER: &str = "Agentry-Idempotency-Key";
/// Every repository's default branch.
pub const DEFAULT_BRANCH: &str = "main";
/// How often a compare-and-swap ref update is retried when another writer
/// moved the branch in between.
const CAS_ATTEMPTS: usize = 8;
const MERGE_TIMEOUT: Duration = Duration::from_secs(120);
const MODE_SYMLINK: &str = "120000";
const MODE_GITLINK: &str = "160000";

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

/// One entry of a flattened tree: mode and object id.
type TreeEntry = (String, String);

fn valid_repo_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "repository name `{name}` is not valid: use 1-64 characters a-z, 0-9, `-` and `_`, \
             not starting with `-`"
        )))
    }
}

/// Branch names per `git check-ref-format --branch`, checked without a
/// subprocess.
fn valid_branch(branch: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "branch name `{branch}` is not valid: {why}"
        )))
    };
    if branch.is_empty() || branch.len() > 200 {
        return bad("use 1-200 characters");
    }
    if branch.starts_with('-') || branch.starts_with('/') || branch.ends_with('/') {
        return bad("it must not start with `-` or `/`, nor end with `/`");
    }
    if branch.ends_with('.') || branch.ends_with(".lock") || branch == "@" || branch == "HEAD" {
        return bad("it must not end with `.` or `.lock`, nor be `@` or `HEAD`");
    }
    if branch.contains("..") || branch.contains("@{") || branch.contains("//") {
        return bad("it must not contain `..`, `@{` or `//`");
    }
    if branch
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it must not contain spaces, control characters or any of ~ ^ : ? * [ \\");
    }
    if branch.split('/').any(|part| part.starts_with('.')) {
        return bad("no component may start with `.`");
    }
    Ok(())
}

/// `Agentry Developer` -> `developer@agentry.local`.
fn email_for(author: &str) -> String {
    let lower = author.trim().to_lowercase();
    let role = lower.strip_prefix("agentry").unwrap_or(&lower);
    let mut slug = String::new();
    for c in role.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    format!(
        "{}@agentry.local",
        if slug.is_empty() { "agentry" } else { slug }
    )
}

fn parse_state(raw: &str) -> Result<MergeRequestState> {
    match raw {
        "opened" => Ok(MergeRequestState::Opened),
        "merged" => Ok(MergeRequestState::Merged),
        "closed" => Ok(MergeRequestState::Closed),
        other => Err(Error::permanent(format!(
            "code_merge_requests holds an unknown state `{other}`"
        ))),
    }
}

fn state_str(state: MergeRequestState) -> &'static str {
    match state {
        MergeRequestState::Opened => "opened",
        MergeRequestState::Merged => "merged",
        MergeRequestState::Closed => "closed",
    }
}

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
fn commit_message(message: &str, key: &str) -> String {
    format!("{}\n\n{IDEMPOTENCY_TRAILER}: {key}\n", message.trim_end())
}

#[derive(sqlx::FromRow)]
struct MergeRequestRow {
    repository: String,
    id: i64,
    source_branch: String,
    target_branch: String,
    title: String,
    description: String,
    state: String,
    test_result: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl MergeRequestRow {
    fn into_mr(self) -> Result<MergeRequest> {
        Ok(MergeRequest {
            id: u64::try_from(self.id).unwrap_or_default(),
            state: parse_state(&self.state)?,
            test_result: self
                .test_result
                .as_deref()
                .map(serde_json::from_str::<TestResultLink>)
                .transpose()?,
            repository: self.repository,
            source_branch: self.source_branch,
            target_branch: self.target_branch,
            title: self.title,
            description: self.description,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const MR_COLUMNS: &str = "repository, id, source_branch, target_branch, title, description, \
                          state, test_result, created_at, updated_at";

async fn fetch_mr(
    conn: &mut SqliteConnection,
    owner: &str,
    repository: &str,
    id: i64,
) -> Result<MergeRequest> {
    let row: Option<MergeRequestRow> = sqlx::query_as(&format!(
        "SELECT {MR_COLUMNS} FROM code_merge_requests WHERE owner = ? AND repository = ? AND id = ?"
    ))
    .bind(owner)
    .bind(repository)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.ok_or_else(|| Error::not_found(format!("merge request !{id} in `{repository}`")))?
        .into_mr()
}

/// The merge request an idempotency key of this owner opened in `repository`.
async fn mr_by_key(
    conn: &mut SqliteConnection,
    owner: &str,
    key: &str,
    repository: &str,
) -> Result<Option<MergeRequest>> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT merge_request_id FROM code_idempotency
         WHERE owner = ? AND key = ? AND repository = ?",
    )
    .bind(owner)
    .bind(key)
    .bind(repository)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    match id {
        Some(id) => fetch_mr(conn, owner, repository, id).await.map(Some),
        None => Ok(None),
    }
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

    /// The commit a branch points at, if the branch exists.
    async fn branch_head(git_dir: &Path, branch: &str) -> Result<Option<String>> {
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

    async fn require_branch(git_dir: &Path, repository: &str, branch: &str) -> Result<String> {
        valid_branch(branch)?;
        Self::branch_head(git_dir, branch)
            .await?
            .ok_or_else(|| Error::not_found(format!("branch `{branch}` in `{repository}`")))
    }

    /// Compare-and-swap: moves `branch` from `old` (None: must not exist) to
    /// `new`. `Ok(false)` when another writer got there first.
    async fn swap_ref(git_dir: &Path, branch: &str, new: &str, old: Option<&str>) -> Result<bool> {
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
        let now = Self::branch_head(git_dir, branch).await?;
        if now.as_deref() != old {
            Ok(false)
        } else {
            Err(classify("git update-ref", &out))
        }
    }

    /// Commits on `rev` (newest first), at most `limit` when given.
    async fn log(git_dir: &Path, rev: &str, limit: Option<usize>) -> Result<Vec<CommitInfo>> {
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

    async fn commit_info(git_dir: &Path, sha: &str) -> Result<CommitInfo> {
        Self::log(git_dir, sha, Some(1))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::permanent(format!("commit {sha} vanished")))
    }

    /// The commit on `head`'s history whose idempotency trailer is exactly `key`.
    async fn find_by_key(git_dir: &Path, head: &str, key: &str) -> Result<Option<String>> {
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

    /// Every blob of a commit's (or a tree's) tree: path -> (mode, object id).
    async fn flat_tree(git_dir: &Path, commit: &str) -> Result<BTreeMap<String, TreeEntry>> {
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

    /// Applies the changes to a flattened tree, refusing writes through
    /// symlinks or submodules, files over directories and the reverse.
    /// Deletions go first, so a file may replace a directory whose files
    /// the same commit deletes (and the reverse).
    fn apply_changes(
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

    /// Writes a flattened tree into the object store via a private index,
    /// and checks that the tree git wrote holds exactly these entries:
    /// `update-index --index-info` skips a path it refuses (`.GIT/config`)
    /// with a line on stderr and exit 0, which would commit less than was
    /// asked and report success.
    async fn write_tree(git_dir: &Path, tree: &BTreeMap<String, TreeEntry>) -> Result<String> {
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
            let landed = Self::flat_tree(git_dir, &written).await?;
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

    async fn tree_of(git_dir: &Path, commit: &str) -> Result<String> {
        Ok(
            GitCall::new(Some(git_dir), ["rev-parse", &format!("{commit}^{{tree}}")])
                .run()
                .await?
                .text(),
        )
    }

    /// Merges `source` into `target` for real: nothing when already merged,
    /// a fast-forward when possible, else a merge commit. Conflicts leave
    /// everything as it was and return [`Error::Conflict`].
    async fn merge_branches(git_dir: &Path, mr: &MergeRequest) -> Result<String> {
        let (source, target) = (&mr.source_branch, &mr.target_branch);
        for _ in 0..CAS_ATTEMPTS {
            let src = Self::branch_head(git_dir, source).await?.ok_or_else(|| {
                Error::invalid(format!("source branch `{source}` no longer exists"))
            })?;
            let tgt = Self::branch_head(git_dir, target).await?.ok_or_else(|| {
                Error::invalid(format!("target branch `{target}` no longer exists"))
            })?;
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
            if Self::swap_ref(git_dir, target, &new, Some(&tgt)).await? {
                return Ok(new);
            }
        }
        Err(Error::transient(format!(
            "branch `{target}` kept moving while merging `{source}`"
        )))
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
                sqlx::query(
                    "INSERT INTO code_repositories (owner, name, description, default_branch,
                       created_at)
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, name) DO NOTHING",
                )
                .bind(&owner)
                .bind(&name_owned)
                .bind(&description)
                .bind(DEFAULT_BRANCH)
                .bind(Utc::now())
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(())
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
        if Self::branch_head(&git_dir, branch).await?.is_some() {
            return Ok(());
        }
        let start = match valid_branch(from) {
            Ok(()) => Self::branch_head(&git_dir, from).await?,
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
        Self::swap_ref(&git_dir, branch, &start, None).await?;
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
        if let Some(head) = Self::branch_head(&git_dir, branch).await? {
            if let Some(sha) = Self::find_by_key(&git_dir, &head, &key).await? {
                tracing::debug!(sha = %sha, "Commit found by idempotency key.");
                return Self::commit_info(&git_dir, &sha).await;
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
        let full_message = commit_message(&message, &key);
        for _ in 0..CAS_ATTEMPTS {
            let head = Self::branch_head(&git_dir, branch).await?;
            if let Some(head) = &head {
                if let Some(sha) = Self::find_by_key(&git_dir, head, &key).await? {
                    return Self::commit_info(&git_dir, &sha).await;
                }
            }
            let parent = match &head {
                Some(h) => h.clone(),
                None => Self::branch_head(&git_dir, DEFAULT_BRANCH)
                    .await?
                    .ok_or_else(|| {
                        Error::permanent(format!(
                        "repository `{}` has no `{DEFAULT_BRANCH}` branch to start `{branch}` from",
                        request.repository
                    ))
                    })?,
            };
            let mut tree = Self::flat_tree(&git_dir, &parent).await?;
            Self::apply_changes(&mut tree, &changes)?;
            let new_tree = Self::write_tree(&git_dir, &tree).await?;
            let sha = if new_tree == Self::tree_of(&git_dir, &parent).await? {
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
                || Self::swap_ref(&git_dir, branch, &sha, head.as_deref()).await?
            {
                tracing::info!(sha = %sha, "Committed.");
                return Self::commit_info(&git_dir, &sha).await;
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
        let head = Self::require_branch(&git_dir, repository, branch).await?;
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
        let head = Self::require_branch(&git_dir, repository, branch).await?;
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
        let head = Self::require_branch(&git_dir, repository, branch).await?;
        Self::log(&git_dir, &head, None).await
    }

    #[tracing::instrument(skip(self, new), fields(repository = %new.repository, source = %new.source_branch, target = %new.target_branch, idempotency_key = %new.idempotency_key))]
    async fn create_merge_request(&self, new: NewMergeRequest) -> Result<MergeRequest> {
        let git_dir = self.require_repo(&new.repository).await?;
        let key = validate::idempotency_key(&new.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        let lookup = |key: String, repo: String| {
            let owner = owner.clone();
            db::read(&self.pool, "find merge request by key", move |conn| {
                Box::pin(async move { mr_by_key(conn, &owner, &key, &repo).await })
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
            if Self::branch_head(&git_dir, branch).await?.is_none() {
                return Err(Error::invalid(format!(
                    "{role} branch `{branch}` does not exist in `{}`",
                    new.repository
                )));
            }
        }
        db::write(&self.pool, "create_merge_request", move |conn| {
            Box::pin(async move {
                if let Some(mr) = mr_by_key(conn, &owner, &key, &new.repository).await? {
                    return Ok(mr);
                }
                let open: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM code_merge_requests WHERE owner = ? AND repository = ?
                       AND source_branch = ? AND target_branch = ? AND state = 'opened'",
                )
                .bind(&owner)
                .bind(&new.repository)
                .bind(&new.source_branch)
                .bind(&new.target_branch)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
                let now = Utc::now();
                let id = match open {
                    Some(id) => id,
                    None => {
                        let id: i64 = sqlx::query_scalar(
                            "SELECT COALESCE(MAX(id), 0) + 1 FROM code_merge_requests
                             WHERE owner = ? AND repository = ?",
                        )
                        .bind(&owner)
                        .bind(&new.repository)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_error)?;
                        sqlx::query(
                            "INSERT INTO code_merge_requests (owner, repository, id, source_branch,
                               target_branch, title, description, state, test_result, merge_commit,
                               idempotency_key, created_at, updated_at)
                             VALUES (?, ?, ?, ?, ?, ?, ?, 'opened', NULL, NULL, ?, ?, ?)",
                        )
                        .bind(&owner)
                        .bind(&new.repository)
                        .bind(id)
                        .bind(&new.source_branch)
                        .bind(&new.target_branch)
                        .bind(&title)
                        .bind(&new.description)
                        .bind(&key)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *conn)
                        .await
                        .map_err(db_error)?;
                        id
                    }
                };
                sqlx::query(
                    "INSERT INTO code_idempotency (owner, key, repository, merge_request_id,
                       created_at)
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&owner)
                .bind(&key)
                .bind(&new.repository)
                .bind(id)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                fetch_mr(conn, &owner, &new.repository, id).await
            })
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
        use MergeRequestState::{Closed, Merged, Opened};
        let mut merge_commit = None;
        match (mr.state, update.state) {
            (_, None) => {}
            (from, Some(to)) if from == to => {}
            (Opened, Some(Merged)) => {
                let sha = Self::merge_branches(&git_dir, &mr).await?;
                tracing::info!(sha = %sha, "Merged.");
                merge_commit = Some(sha);
            }
            (Opened, Some(Closed)) | (Closed, Some(Opened)) => {}
            (from, Some(to)) => {
                return Err(Error::Conflict(format!(
                    "merge request !{id} is {}; it cannot become {}",
                    state_str(from),
                    state_str(to)
                )))
            }
        }
        let test_result = update
            .test_result
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let repo = repository.to_string();
        let owner = self.owner.clone();
        let expected = state_str(mr.state);
        let id = i64::try_from(id).map_err(|_| Error::not_found(format!("merge request !{id}")))?;
        db::write(&self.pool, "update_merge_request", move |conn| {
            Box::pin(async move {
                let now = Utc::now();
                let done = sqlx::query(
                    "UPDATE code_merge_requests SET
                       state = COALESCE(?, state),
                       description = COALESCE(?, description),
                       test_result = COALESCE(?, test_result),
                       merge_commit = COALESCE(?, merge_commit),
                       updated_at = ?
                     WHERE owner = ? AND repository = ? AND id = ? AND state = ?",
                )
                .bind(update.state.map(state_str))
                .bind(&update.description)
                .bind(&test_result)
                .bind(&merge_commit)
                .bind(now)
                .bind(&owner)
                .bind(&repo)
                .bind(id)
                .bind(expected)
                .execute(&mut *conn)
                .await
                .map_err(|error| match db_error(error) {
                    Error::Conflict(_) => Error::Conflict(format!(
                        "another merge request for the same source and target is open in `{repo}`"
                    )),
                    other => other,
                })?;
                if done.rows_affected() == 0 {
                    return Err(Error::Conflict(format!(
                        "merge request !{id} changed while it was being updated; read it and retry"
                    )));
                }
                fetch_mr(conn, &owner, &repo, id).await
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
            Box::pin(async move { fetch_mr(conn, &owner, &repo, id).await })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(repository = %repository))]
    async fn list_merge_requests(&self, repository: &str) -> Result<Vec<MergeRequest>> {
        self.require_repo(repository).await?;
        let repo = repository.to_string();
        let owner = self.owner.clone();
        db::read(&self.pool, "list_merge_requests", move |conn| {
            Box::pin(async move {
                let rows: Vec<MergeRequestRow> = sqlx::query_as(&format!(
                    "SELECT {MR_COLUMNS} FROM code_merge_requests WHERE owner = ? AND repository = ?
                     ORDER BY id"
                ))
                .bind(&owner)
                .bind(&repo)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                rows.into_iter().map(MergeRequestRow::into_mr).collect()
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_branch(name: &str, ok: bool) {
        assert_eq!(valid_branch(name).is_ok(), ok, "{name}");
    }

    #[test]
    fn branch_names_follow_git_rules() {
        check_branch("main", true);
        check_branch("feature/url-shortener", true);
        check_branch("agentry/wf-1_2", true);
        check_branch("-x", false);
        check_branch("a..b", false);
        check_branch("a b", false);
        check_branch("a/.hidden", false);
        check_branch("x.lock", false);
        check_branch("a~1", false);
        check_branch("", false);
    }

    #[test]
    fn emails_name_the_role() {
        assert_eq!(email_for("Agentry Developer"), "developer@agentry.local");
        assert_eq!(email_for("QA Agent"), "qa-agent@agentry.local");
        assert_eq!(email_for("  "), "agentry@agentry.local");
    }

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
        GitCodeHost::write_tree(&git_dir, &tree)
            .await
            .expect("a tree of good paths is written");
        tree.insert(".GIT/config".to_string(), entry.clone());
        tree.insert("sub/.Git/hooks/x".to_string(), entry);
        let error = GitCodeHost::write_tree(&git_dir, &tree).await.unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput(m)
                if m.contains("`.GIT/config`, `sub/.Git/hooks/x`") && !m.contains("app.py")
                    && m.contains("nothing was committed")),
            "{error}"
        );
    }

    #[test]
    fn repository_names() {
        assert!(valid_repo_name("url-shortener_2").is_ok());
        for bad in ["", "Upper", "a/b", "..", "-x", &"a".repeat(65)] {
            assert!(valid_repo_name(bad).is_err(), "{bad}");
        }
    }
}

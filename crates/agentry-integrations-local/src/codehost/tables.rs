//! The code host's rows in SQLite: repositories, merge requests and the
//! idempotency keys that opened them. Every query binds the owner.

use agentry_core::{
    Error, MergeRequest, MergeRequestState, NewMergeRequest, Result, TestResultLink,
};
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::mr_state::{parse_state, state_str};
use crate::db::db_error;

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

pub(super) async fn fetch_mr(
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
pub(super) async fn mr_by_key(
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

/// Records the repository `name` of `owner` (kept as it is when already
/// recorded).
pub(super) async fn record_repository(
    conn: &mut SqliteConnection,
    owner: &str,
    name: &str,
    description: &str,
    default_branch: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO code_repositories (owner, name, description, default_branch,
           created_at)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, name) DO NOTHING",
    )
    .bind(owner)
    .bind(name)
    .bind(description)
    .bind(default_branch)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The merge request `key` opens from `new` (whose title is `title`): the
/// one `key` opened before, else the open one with the same source and
/// target, else a new one numbered after the repository's highest; `key`
/// is recorded against it.
pub(super) async fn open_merge_request(
    conn: &mut SqliteConnection,
    owner: &str,
    new: &NewMergeRequest,
    title: &str,
    key: &str,
) -> Result<MergeRequest> {
    if let Some(mr) = mr_by_key(conn, owner, key, &new.repository).await? {
        return Ok(mr);
    }
    let open: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM code_merge_requests WHERE owner = ? AND repository = ?
           AND source_branch = ? AND target_branch = ? AND state = 'opened'",
    )
    .bind(owner)
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
            .bind(owner)
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
            .bind(owner)
            .bind(&new.repository)
            .bind(id)
            .bind(&new.source_branch)
            .bind(&new.target_branch)
            .bind(title)
            .bind(&new.description)
            .bind(key)
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
    .bind(owner)
    .bind(key)
    .bind(&new.repository)
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    fetch_mr(conn, owner, &new.repository, id).await
}

/// What an update sets on a merge request's row; `None` keeps the stored
/// value.
pub(super) struct MergeRequestChange {
    /// State to store; the move was checked (`mr_state::needs_merge`).
    pub(super) state: Option<MergeRequestState>,
    /// Body to store in place of the old one.
    pub(super) description: Option<String>,
    /// Linked test result, as JSON.
    pub(super) test_result: Option<String>,
    /// The commit that merged it.
    pub(super) merge_commit: Option<String>,
}

/// Applies `change` to merge request `id`, provided it is still in state
/// `expected` (a conflict otherwise, as when the change would open a
/// second merge request for the same source and target).
pub(super) async fn update_merge_request(
    conn: &mut SqliteConnection,
    owner: &str,
    repo: &str,
    id: i64,
    expected: MergeRequestState,
    change: &MergeRequestChange,
) -> Result<MergeRequest> {
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
    .bind(change.state.map(state_str))
    .bind(&change.description)
    .bind(&change.test_result)
    .bind(&change.merge_commit)
    .bind(now)
    .bind(owner)
    .bind(repo)
    .bind(id)
    .bind(state_str(expected))
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
    fetch_mr(conn, owner, repo, id).await
}

/// Every merge request of `repo`, by id.
pub(super) async fn list_merge_requests(
    conn: &mut SqliteConnection,
    owner: &str,
    repo: &str,
) -> Result<Vec<MergeRequest>> {
    let rows: Vec<MergeRequestRow> = sqlx::query_as(&format!(
        "SELECT {MR_COLUMNS} FROM code_merge_requests WHERE owner = ? AND repository = ?
         ORDER BY id"
    ))
    .bind(owner)
    .bind(repo)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    rows.into_iter().map(MergeRequestRow::into_mr).collect()
}

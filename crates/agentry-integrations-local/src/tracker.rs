//! `LocalTracker`: projects, issues, links, comments and attachments in the
//! shared SQLite file.

use agentry_core::{
    ArtifactOwner, Attachment, Comment, Error, Issue, IssueKind, IssueLink, NewAttachment,
    NewComment, NewIssue, NewIssueLink, Project, Result, Tracker,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};

use crate::db::{self, db_error, BoxFuture};
use crate::validate;

/// The workflow every issue follows; any move among these is allowed.
pub const STATUSES: [&str; 4] = ["To Do", "In Progress", "In Review", "Done"];

/// The local issue tracker (the embedded stand-in for Jira).
///
/// Issue keys are `<PROJECT>-<n>` with `n` from a per-project sequence that
/// is allocated inside the insert transaction. Create calls are idempotent:
/// a key seen before returns the entity it first created, whatever the other
/// fields of the repeated call say.
///
/// A tracker acts for one owner (see [`crate::LocalIntegrations`]): its
/// projects, issues, links, comments, attachments and idempotency keys are
/// the rows of that owner only.
#[derive(Debug, Clone)]
pub struct LocalTracker {
    pool: SqlitePool,
    /// The owner's string form, bound into every query.
    owner: String,
}

#[derive(sqlx::FromRow)]
struct IssueRow {
    key: String,
    project: String,
    kind: String,
    title: String,
    description: String,
    status: String,
    parent: Option<String>,
    labels: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl IssueRow {
    fn into_issue(self) -> Result<Issue> {
        Ok(Issue {
            kind: parse_kind(&self.kind)?,
            labels: serde_json::from_str(&self.labels)?,
            key: self.key,
            project: self.project,
            title: self.title,
            description: self.description,
            status: self.status,
            parent: self.parent,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CommentRow {
    id: i64,
    issue: String,
    body: String,
    created_at: DateTime<Utc>,
}

impl From<CommentRow> for Comment {
    fn from(r: CommentRow) -> Self {
        Comment {
            id: r.id.to_string(),
            issue: r.issue,
            body: r.body,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AttachmentRow {
    id: i64,
    issue: String,
    filename: String,
    media_type: String,
    size: i64,
    created_at: DateTime<Utc>,
}

impl From<AttachmentRow> for Attachment {
    fn from(r: AttachmentRow) -> Self {
        Attachment {
            id: r.id.to_string(),
            issue: r.issue,
            filename: r.filename,
            media_type: r.media_type,
            size: u64::try_from(r.size).unwrap_or_default(),
            created_at: r.created_at,
        }
    }
}

fn parse_kind(raw: &str) -> Result<IssueKind> {
    match raw {
        "epic" => Ok(IssueKind::Epic),
        "story" => Ok(IssueKind::Story),
        "task" => Ok(IssueKind::Task),
        "bug" => Ok(IssueKind::Bug),
        other => Err(Error::permanent(format!(
            "tracker_issues holds an unknown issue kind `{other}`"
        ))),
    }
}

/// Which parent kinds an issue kind accepts (`None`: no parent allowed).
fn allowed_parents(kind: IssueKind) -> &'static [IssueKind] {
    match kind {
        IssueKind::Epic => &[],
        IssueKind::Story => &[IssueKind::Epic],
        IssueKind::Task | IssueKind::Bug => &[IssueKind::Story, IssueKind::Epic],
    }
}

const ISSUE_COLUMNS: &str =
    "key, project, kind, title, description, status, parent, labels, created_at, updated_at";

async fn fetch_issue(conn: &mut SqliteConnection, owner: &str, key: &str) -> Result<Option<Issue>> {
    let row: Option<IssueRow> = sqlx::query_as(&format!(
        "SELECT {ISSUE_COLUMNS} FROM tracker_issues WHERE owner = ? AND key = ?"
    ))
    .bind(owner)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.map(IssueRow::into_issue).transpose()
}

async fn require_issue(conn: &mut SqliteConnection, owner: &str, key: &str) -> Result<Issue> {
    fetch_issue(conn, owner, key)
        .await?
        .ok_or_else(|| Error::not_found(format!("issue `{key}`")))
}

async fn seen_key(
    conn: &mut SqliteConnection,
    owner: &str,
    entity: &str,
    key: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT entity_id FROM tracker_idempotency WHERE owner = ? AND entity = ? AND key = ?",
    )
    .bind(owner)
    .bind(entity)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)
}

async fn remember_key(
    conn: &mut SqliteConnection,
    owner: &str,
    entity: &str,
    key: &str,
    id: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tracker_idempotency (owner, entity, key, entity_id, created_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(owner)
    .bind(entity)
    .bind(key)
    .bind(id)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn fetch_comment(conn: &mut SqliteConnection, owner: &str, id: &str) -> Result<Comment> {
    let row: CommentRow = sqlx::query_as(
        "SELECT id, issue, body, created_at FROM tracker_comments WHERE owner = ? AND id = ?",
    )
    .bind(owner)
    .bind(id.parse::<i64>().unwrap_or(-1))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Error::not_found(format!("comment `{id}`")))?;
    Ok(row.into())
}

async fn fetch_attachment(
    conn: &mut SqliteConnection,
    owner: &str,
    id: &str,
) -> Result<Attachment> {
    let row: AttachmentRow = sqlx::query_as(
        "SELECT id, issue, filename, media_type, size, created_at FROM tracker_attachments
         WHERE owner = ? AND id = ?",
    )
    .bind(owner)
    .bind(id.parse::<i64>().unwrap_or(-1))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Error::not_found(format!("attachment `{id}`")))?;
    Ok(row.into())
}

/// Matches a status case-insensitively and returns its canonical spelling.
fn canonical_status(raw: &str) -> Result<&'static str> {
    STATUSES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(raw.trim()))
        .copied()
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown status `{raw}`; allowed: {}",
                STATUSES
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn valid_filename(name: &str) -> Result<()> {
    let bad = name.trim().is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.len() > 255;
    if bad {
        Err(Error::invalid(format!(
            "attachment file name `{}` must be a plain file name (no path, 1-255 bytes)",
            name.escape_debug()
        )))
    } else {
        Ok(())
    }
}

impl LocalTracker {
    /// A tracker on an open pool whose schema is applied (see
    /// [`crate::LocalIntegrations::open`]).
    pub(crate) fn new(pool: SqlitePool, owner: &ArtifactOwner) -> Self {
        LocalTracker {
            pool,
            owner: owner.to_string(),
        }
    }

    async fn read<T>(
        &self,
        what: &str,
        f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send,
    ) -> Result<T> {
        db::read(&self.pool, what, f).await
    }

    async fn write<T>(
        &self,
        what: &str,
        f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send,
    ) -> Result<T> {
        db::write(&self.pool, what, f).await
    }
}

#[async_trait]
impl Tracker for LocalTracker {
    fn name(&self) -> &'static str {
        "local"
    }

    #[tracing::instrument(skip(self, name), fields(project = %key))]
    async fn ensure_project(&self, key: &str, name: &str) -> Result<Project> {
        validate::project_key("project", key)?;
        let key = key.to_string();
        let name = validate::display_name(&key, name);
        let owner = self.owner.clone();
        self.write("ensure_project", move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO tracker_projects (owner, key, name, next_seq, created_at)
                     VALUES (?, ?, ?, 1, ?) ON CONFLICT (owner, key) DO NOTHING",
                )
                .bind(&owner)
                .bind(&key)
                .bind(&name)
                .bind(Utc::now())
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                let name: String = sqlx::query_scalar(
                    "SELECT name FROM tracker_projects WHERE owner = ? AND key = ?",
                )
                .bind(&owner)
                .bind(&key)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(Project { key, name })
            })
        })
        .await
    }

    #[tracing::instrument(skip(self, new), fields(project = %new.project, kind = new.kind.as_str(), idempotency_key = %new.idempotency_key))]
    async fn create_issue(&self, new: NewIssue) -> Result<Issue> {
        let idem = validate::idempotency_key(&new.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        let issue = self
            .write("create_issue", move |conn| {
                Box::pin(async move {
                    if let Some(key) = seen_key(conn, &owner, "issue", &idem).await? {
                        return require_issue(conn, &owner, &key).await;
                    }
                    let title = validate::non_empty("the issue title", &new.title)?.to_string();
                    let project_known: Option<String> = sqlx::query_scalar(
                        "SELECT key FROM tracker_projects WHERE owner = ? AND key = ?",
                    )
                    .bind(&owner)
                    .bind(&new.project)
                    .fetch_optional(&mut *conn)
                            .await
                            .map_err(db_error)?;
                    if project_known.is_none() {
                        return Err(Error::invalid(format!(
                            "project `{}` does not exist; ensure it first",
                            new.project
                        )));
                    }
                    let parent = match new.parent.as_deref().map(str::trim) {
                        None | Some("") => None,
                        Some(parent_key) => {
                            let parent = fetch_issue(conn, &owner, parent_key).await?.ok_or_else(|| {
                                Error::invalid(format!("parent issue `{parent_key}` does not exist"))
                            })?;
                            if parent.project != new.project {
                                return Err(Error::invalid(format!(
                                    "parent issue `{parent_key}` is in project `{}`, not `{}`",
                                    parent.project, new.project
                                )));
                            }
                            let allowed = allowed_parents(new.kind);
                            if !allowed.contains(&parent.kind) {
                                let want = if allowed.is_empty() {
                                    "no parent".to_string()
                                } else {
                                    allowed
                                        .iter()
                                        .map(|k| k.as_str())
                                        .collect::<Vec<_>>()
                                        .join(" or ")
                                };
                                return Err(Error::invalid(format!(
                                    "a {} cannot have the {} `{parent_key}` as parent (allowed: {want})",
                                    new.kind.as_str(),
                                    parent.kind.as_str()
                                )));
                            }
                            Some(parent.key)
                        }
                    };
                    let seq: i64 = sqlx::query_scalar(
                        "UPDATE tracker_projects SET next_seq = next_seq + 1
                         WHERE owner = ? AND key = ? RETURNING next_seq - 1",
                    )
                    .bind(&owner)
                    .bind(&new.project)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    let key = format!("{}-{seq}", new.project);
                    let now = Utc::now();
                    sqlx::query(
                        "INSERT INTO tracker_issues (owner, key, project, seq, kind, title,
                           description, status, parent, labels, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&owner)
                    .bind(&key)
                    .bind(&new.project)
                    .bind(seq)
                    .bind(new.kind.as_str())
                    .bind(&title)
                    .bind(&new.description)
                    .bind(STATUSES[0])
                    .bind(&parent)
                    .bind(serde_json::to_string(&new.labels)?)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_error)?;
                    remember_key(conn, &owner, "issue", &idem, &key).await?;
                    require_issue(conn, &owner, &key).await
                })
            })
            .await?;
        tracing::debug!(issue = %issue.key, "Issue ready.");
        Ok(issue)
    }

    #[tracing::instrument(skip(self), fields(issue = %key))]
    async fn get_issue(&self, key: &str) -> Result<Issue> {
        let key = key.to_string();
        let owner = self.owner.clone();
        self.read("get_issue", move |conn| {
            Box::pin(async move { require_issue(conn, &owner, &key).await })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(project = %project))]
    async fn list_issues(&self, project: &str) -> Result<Vec<Issue>> {
        let project = project.to_string();
        let owner = self.owner.clone();
        self.read("list_issues", move |conn| {
            Box::pin(async move {
                let known: Option<String> = sqlx::query_scalar(
                    "SELECT key FROM tracker_projects WHERE owner = ? AND key = ?",
                )
                .bind(&owner)
                .bind(&project)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
                if known.is_none() {
                    return Err(Error::not_found(format!("project `{project}`")));
                }
                let rows: Vec<IssueRow> = sqlx::query_as(&format!(
                    "SELECT {ISSUE_COLUMNS} FROM tracker_issues WHERE owner = ? AND project = ?
                     ORDER BY seq"
                ))
                .bind(&owner)
                .bind(&project)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                rows.into_iter().map(IssueRow::into_issue).collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(issue = %key))]
    async fn transition_issue(&self, key: &str, status: &str) -> Result<Issue> {
        let status = canonical_status(status)?;
        let key = key.to_string();
        let owner = self.owner.clone();
        self.write("transition_issue", move |conn| {
            Box::pin(async move {
                let issue = require_issue(conn, &owner, &key).await?;
                if issue.status == status {
                    return Ok(issue);
                }
                sqlx::query(
                    "UPDATE tracker_issues SET status = ?, updated_at = ? WHERE owner = ? AND key = ?",
                )
                .bind(status)
                .bind(Utc::now())
                .bind(&owner)
                .bind(&key)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                tracing::debug!(from = %issue.status, to = status, "Issue transitioned.");
                require_issue(conn, &owner, &key).await
            })
        })
        .await
    }

    #[tracing::instrument(skip(self, link), fields(from = %link.from, to = %link.to, kind = %link.kind))]
    async fn link_issues(&self, link: NewIssueLink) -> Result<IssueLink> {
        let kind = validate::non_empty("the link type", &link.kind)?.to_string();
        if link.from == link.to {
            return Err(Error::invalid(format!(
                "issue `{}` cannot be linked to itself",
                link.from
            )));
        }
        let owner = self.owner.clone();
        self.write("link_issues", move |conn| {
            Box::pin(async move {
                require_issue(conn, &owner, &link.from).await?;
                require_issue(conn, &owner, &link.to).await?;
                sqlx::query(
                    "INSERT INTO tracker_links (owner, from_key, to_key, kind, created_at)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (owner, from_key, to_key, kind) DO NOTHING",
                )
                .bind(&owner)
                .bind(&link.from)
                .bind(&link.to)
                .bind(&kind)
                .bind(Utc::now())
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(IssueLink {
                    from: link.from,
                    to: link.to,
                    kind,
                })
            })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(issue = %key))]
    async fn links(&self, key: &str) -> Result<Vec<IssueLink>> {
        let key = key.to_string();
        let owner = self.owner.clone();
        self.read("links", move |conn| {
            Box::pin(async move {
                require_issue(conn, &owner, &key).await?;
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT from_key, to_key, kind FROM tracker_links
                     WHERE owner = ?1 AND (from_key = ?2 OR to_key = ?2) ORDER BY id",
                )
                .bind(&owner)
                .bind(&key)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(rows
                    .into_iter()
                    .map(|(from, to, kind)| IssueLink { from, to, kind })
                    .collect())
            })
        })
        .await
    }

    #[tracing::instrument(skip(self, comment), fields(issue = %comment.issue, idempotency_key = %comment.idempotency_key))]
    async fn add_comment(&self, comment: NewComment) -> Result<Comment> {
        let idem = validate::idempotency_key(&comment.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        self.write("add_comment", move |conn| {
            Box::pin(async move {
                if let Some(id) = seen_key(conn, &owner, "comment", &idem).await? {
                    return fetch_comment(conn, &owner, &id).await;
                }
                validate::non_empty("the comment body", &comment.body)?;
                require_issue(conn, &owner, &comment.issue).await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO tracker_comments (owner, issue, body, created_at)
                     VALUES (?, ?, ?, ?) RETURNING id",
                )
                .bind(&owner)
                .bind(&comment.issue)
                .bind(&comment.body)
                .bind(Utc::now())
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
                let id = id.to_string();
                remember_key(conn, &owner, "comment", &idem, &id).await?;
                fetch_comment(conn, &owner, &id).await
            })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(issue = %key))]
    async fn comments(&self, key: &str) -> Result<Vec<Comment>> {
        let key = key.to_string();
        let owner = self.owner.clone();
        self.read("comments", move |conn| {
            Box::pin(async move {
                require_issue(conn, &owner, &key).await?;
                let rows: Vec<CommentRow> = sqlx::query_as(
                    "SELECT id, issue, body, created_at FROM tracker_comments
                     WHERE owner = ? AND issue = ? ORDER BY id",
                )
                .bind(&owner)
                .bind(&key)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(rows.into_iter().map(Comment::from).collect())
            })
        })
        .await
    }

    #[tracing::instrument(skip(self, attachment), fields(issue = %attachment.issue, filename = %attachment.filename, idempotency_key = %attachment.idempotency_key))]
    async fn add_attachment(&self, attachment: NewAttachment) -> Result<Attachment> {
        let idem = validate::idempotency_key(&attachment.idempotency_key)?.to_string();
        let owner = self.owner.clone();
        self.write("add_attachment", move |conn| {
            Box::pin(async move {
                if let Some(id) = seen_key(conn, &owner, "attachment", &idem).await? {
                    return fetch_attachment(conn, &owner, &id).await;
                }
                valid_filename(&attachment.filename)?;
                require_issue(conn, &owner, &attachment.issue).await?;
                let size = i64::try_from(attachment.content.len())
                    .map_err(|_| Error::invalid("the attachment is too large"))?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO tracker_attachments (owner, issue, filename, media_type, content, size,
                       created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(&owner)
                .bind(&attachment.issue)
                .bind(&attachment.filename)
                .bind(&attachment.media_type)
                .bind(&attachment.content)
                .bind(size)
                .bind(Utc::now())
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
                let id = id.to_string();
                remember_key(conn, &owner, "attachment", &idem, &id).await?;
                fetch_attachment(conn, &owner, &id).await
            })
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(issue = %key))]
    async fn attachments(&self, key: &str) -> Result<Vec<Attachment>> {
        let key = key.to_string();
        let owner = self.owner.clone();
        self.read("attachments", move |conn| {
            Box::pin(async move {
                require_issue(conn, &owner, &key).await?;
                let rows: Vec<AttachmentRow> = sqlx::query_as(
                    "SELECT id, issue, filename, media_type, size, created_at
                     FROM tracker_attachments WHERE owner = ? AND issue = ? ORDER BY id",
                )
                .bind(&owner)
                .bind(&key)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_error)?;
                Ok(rows.into_iter().map(Attachment::from).collect())
            })
        })
        .await
    }
}

impl LocalTracker {
    /// The bytes of an attachment (local-only: the port has no download call).
    pub async fn attachment_content(&self, id: &str) -> Result<Vec<u8>> {
        let id = id.to_string();
        let owner = self.owner.clone();
        self.read("attachment_content", move |conn| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "SELECT content FROM tracker_attachments WHERE owner = ? AND id = ?",
                )
                .bind(&owner)
                .bind(id.parse::<i64>().unwrap_or(-1))
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::not_found(format!("attachment `{id}`")))
            })
        })
        .await
    }
}

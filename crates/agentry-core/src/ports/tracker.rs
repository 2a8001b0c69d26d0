//! The `Tracker` port (the seed's Jira integration): projects with keys,
//! epics, stories, tasks, status transitions, links, comments, attachments.
//! The local tracker and the Jira client implement it and pass the same
//! behavioural suite. Every create call carries an idempotency key: a second
//! call with the same key returns what the first one made.
//!
//! A `Tracker` acts for one [`ArtifactOwner`](crate::ArtifactOwner) (see
//! [`IntegrationResolver`](crate::IntegrationResolver)): project keys, issue
//! keys and idempotency keys name things of that owner only.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{IdempotencyKey, Result};

/// Issue types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Epic.
    Epic,
    /// User story.
    Story,
    /// Task.
    Task,
    /// Bug.
    Bug,
}

impl IssueKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Epic => "epic",
            IssueKind::Story => "story",
            IssueKind::Task => "task",
            IssueKind::Bug => "bug",
        }
    }
}

/// A project (`SHOP`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Key: 2-10 upper-case letters/digits, starting with a letter.
    pub key: String,
    /// Display name.
    pub name: String,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIssue {
    /// Project key.
    pub project: String,
    /// Type.
    pub kind: IssueKind,
    /// Summary (non-empty).
    pub title: String,
    /// Description (Markdown).
    pub description: String,
    /// Parent (the epic of a story, the story of a task).
    pub parent: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Idempotency key.
    pub idempotency_key: IdempotencyKey,
}

/// An issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// Key (`SHOP-12`).
    pub key: String,
    /// Project key.
    pub project: String,
    /// Type.
    pub kind: IssueKind,
    /// Summary.
    pub title: String,
    /// Description.
    pub description: String,
    /// Status (`To Do`, `In Progress`, `In Review`, `Done`).
    pub status: String,
    /// Parent key.
    pub parent: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// A link to make (`SHOP-3 tests SHOP-2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIssueLink {
    /// Outward issue.
    pub from: String,
    /// Inward issue.
    pub to: String,
    /// Link type (`relates to`, `blocks`, `tests`).
    pub kind: String,
}

/// A link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueLink {
    /// Outward issue.
    pub from: String,
    /// Inward issue.
    pub to: String,
    /// Link type.
    pub kind: String,
}

/// A comment to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewComment {
    /// Issue key.
    pub issue: String,
    /// Body (Markdown).
    pub body: String,
    /// Idempotency key.
    pub idempotency_key: IdempotencyKey,
}

/// A comment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// Id.
    pub id: String,
    /// Issue key.
    pub issue: String,
    /// Body.
    pub body: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An attachment to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAttachment {
    /// Issue key.
    pub issue: String,
    /// File name (no path).
    pub filename: String,
    /// MIME type.
    pub media_type: String,
    /// Content.
    pub content: Vec<u8>,
    /// Idempotency key.
    pub idempotency_key: IdempotencyKey,
}

/// An attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Id.
    pub id: String,
    /// Issue key.
    pub issue: String,
    /// File name.
    pub filename: String,
    /// MIME type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An issue tracker.
#[async_trait]
pub trait Tracker: Send + Sync + 'static {
    /// Adapter name (`local`, `jira`).
    fn name(&self) -> &'static str;
    /// Creates the project if missing; returns it.
    async fn ensure_project(&self, key: &str, name: &str) -> Result<Project>;
    /// Creates an issue (idempotent by key). Unknown project or parent is
    /// invalid input.
    async fn create_issue(&self, new: NewIssue) -> Result<Issue>;
    /// One issue, or not found.
    async fn get_issue(&self, key: &str) -> Result<Issue>;
    /// Issues of a project, in creation order.
    async fn list_issues(&self, project: &str) -> Result<Vec<Issue>>;
    /// Moves an issue to a status; an unknown status is invalid input
    /// naming the allowed ones. Moving to the current status is a no-op.
    async fn transition_issue(&self, key: &str, status: &str) -> Result<Issue>;
    /// Links two issues (idempotent by `(from, to, kind)`).
    async fn link_issues(&self, link: NewIssueLink) -> Result<IssueLink>;
    /// Links of an issue, either direction.
    async fn links(&self, key: &str) -> Result<Vec<IssueLink>>;
    /// Adds a comment (idempotent by key).
    async fn add_comment(&self, comment: NewComment) -> Result<Comment>;
    /// Comments of an issue, oldest first.
    async fn comments(&self, key: &str) -> Result<Vec<Comment>>;
    /// Adds an attachment (idempotent by key).
    async fn add_attachment(&self, attachment: NewAttachment) -> Result<Attachment>;
    /// Attachments of an issue.
    async fn attachments(&self, key: &str) -> Result<Vec<Attachment>>;
}

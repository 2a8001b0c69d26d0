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

/// An issue's type (Jira's `issuetype`). The hierarchy is Jira's: an epic
/// has no parent, a story's parent is an epic, a task's or bug's a story or
/// an epic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// A feature area; the business analyst makes one per epic of its
    /// analysis.
    Epic,
    /// A user story under an epic, its description ending in its
    /// acceptance criteria; the agents move stories through the statuses.
    Story,
    /// A unit of work under a story (the analyst's task list).
    Task,
    /// A defect; QA files one per failed test round, unparented.
    Bug,
}

impl IssueKind {
    /// The lower-case name (`epic`, `story`, `task`, `bug`): the serde form
    /// and what the local tracker stores, so it never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Epic => "epic",
            IssueKind::Story => "story",
            IssueKind::Task => "task",
            IssueKind::Bug => "bug",
        }
    }
}

/// A project (`SHOP`): the namespace of its issues' keys. The business
/// analyst ensures one per workflow, under the key its analysis chose or the
/// one the run's options or the configuration fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Key: 2-10 upper-case letters/digits, starting with a letter; unique
    /// per owner, and the prefix of every issue key in the project.
    pub key: String,
    /// Human-readable name; the key when created with a blank one. An
    /// existing project keeps the name it was created with.
    pub name: String,
}

/// An issue to create; see [`Tracker::create_issue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIssue {
    /// Key of an existing project of this owner (`SHOP`); an unknown one is
    /// invalid input.
    pub project: String,
    /// Its type; it decides which parents are allowed (see [`IssueKind`]).
    pub kind: IssueKind,
    /// One-line summary (Jira's `summary`); must not be blank.
    pub title: String,
    /// Body in Markdown; may be empty (the analyst's tasks have none).
    pub description: String,
    /// Key of the parent issue in the same project: a story's epic, a
    /// task's or bug's story or epic. `None` (or blank): top level.
    pub parent: Option<String>,
    /// Jira-style labels, kept as given; the agents tag every issue
    /// `agentry` (and QA's bugs `qa`).
    pub labels: Vec<String>,
    /// Makes the call idempotent: a key this owner's tracker has seen
    /// returns the issue it first made, whatever the other fields say.
    pub idempotency_key: IdempotencyKey,
}

/// An issue as the tracker holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// `<PROJECT>-<n>` (`SHOP-12`), `n` counted per project from 1 and
    /// never reused; set at creation and never changed.
    pub key: String,
    /// Key of the project it belongs to (the part of `key` before the `-`).
    pub project: String,
    /// Its type, fixed at creation.
    pub kind: IssueKind,
    /// One-line summary (Jira's `summary`), never empty.
    pub title: String,
    /// Body in Markdown, as created.
    pub description: String,
    /// Workflow status: `To Do` at creation, then any of `In Progress`,
    /// `In Review`, `Done` (the local tracker's workflow; see
    /// [`Tracker::transition_issue`]).
    pub status: String,
    /// Key of the parent issue (epic or story); `None` for a top-level one.
    pub parent: Option<String>,
    /// Labels, as given at creation.
    pub labels: Vec<String>,
    /// When it was created (UTC); never changes.
    pub created_at: DateTime<Utc>,
    /// When it last changed status (UTC); `created_at` until then.
    pub updated_at: DateTime<Utc>,
}

/// A link to make (`SHOP-3 tests SHOP-2`), read as `from kind to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIssueLink {
    /// Key of the issue the sentence starts from (Jira's outward issue).
    pub from: String,
    /// Key of the issue it points to (Jira's inward issue); not `from`.
    pub to: String,
    /// Link type as a phrase (`relates to`, `blocks`, `tests`); must not be
    /// blank.
    pub kind: String,
}

/// A link between two issues, unique by `(from, to, kind)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueLink {
    /// Key of the outward issue (`SHOP-3` in `SHOP-3 tests SHOP-2`).
    pub from: String,
    /// Key of the inward issue (`SHOP-2` there).
    pub to: String,
    /// Link type as a phrase (`tests`).
    pub kind: String,
}

/// A comment to add; see [`Tracker::add_comment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewComment {
    /// Key of the issue to comment on (`SHOP-1`); it must exist.
    pub issue: String,
    /// Text in Markdown; must not be blank.
    pub body: String,
    /// Makes the call idempotent: a key seen before returns the comment it
    /// first added.
    pub idempotency_key: IdempotencyKey,
}

/// A comment on an issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    /// Assigned by the tracker (the local one: a decimal number, Jira's
    /// comment id); opaque to callers.
    pub id: String,
    /// Key of the issue it is on.
    pub issue: String,
    /// Text in Markdown, as added.
    pub body: String,
    /// When it was added (UTC); comments are listed oldest first.
    pub created_at: DateTime<Utc>,
}

/// An attachment to add; see [`Tracker::add_attachment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAttachment {
    /// Key of the issue to attach to (`SHOP-1`); it must exist.
    pub issue: String,
    /// A plain file name, 1-255 bytes, no `/`, `\` or NUL, not `.` or `..`
    /// (`analysis.json`).
    pub filename: String,
    /// MIME type of `content` (`application/json`), kept as given.
    pub media_type: String,
    /// The file's bytes.
    pub content: Vec<u8>,
    /// Makes the call idempotent: a key seen before returns the attachment
    /// it first added.
    pub idempotency_key: IdempotencyKey,
}

/// An attachment's metadata (its bytes are not part of the port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Assigned by the tracker (the local one: a decimal number, Jira's
    /// attachment id); opaque to callers.
    pub id: String,
    /// Key of the issue it is attached to.
    pub issue: String,
    /// The file name it was added with.
    pub filename: String,
    /// MIME type, as given.
    pub media_type: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// When it was added (UTC).
    pub created_at: DateTime<Utc>,
}

/// An issue tracker acting for one owner: the local one in the embedded
/// mode, Jira's client in its place. Every create call is idempotent by its
/// key.
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

//! The `Store` port: workflows, checkpoints (deltas with history), agent
//! outputs, shared context and the event outbox.
//!
//! The commit protocol: a task's delta, its checkpoint, its events and (when
//! it is the last task of its super-step) the scheduler's next cursor are
//! written in ONE transaction by [`Store::commit_task`]. Control actions
//! (start, approve, reject, cancel, resume, fail) go through
//! [`Store::transition`], which is guarded by the expected status and step so
//! that two racing actors cannot both win.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    Error, Event, RequestId, Result, RunOptions, StateDelta, StoredEvent, TaskId, WorkflowId,
    WorkflowState, WorkflowStatus,
};

/// The scheduler's position in a workflow's graph. Opaque to stores (they
/// persist it as JSON); the engine owns its meaning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Current super-step.
    pub step: u64,
    /// Nodes to run in the current super-step. A node whose task checkpoint
    /// exists for `step` has already run.
    pub pending: Vec<String>,
    /// How many times each node has completed.
    #[serde(default)]
    pub visits: BTreeMap<String, u32>,
    /// Nodes a human approved to run (for `approval_before`).
    #[serde(default)]
    pub approved: BTreeSet<String>,
    /// Join bookkeeping: join target -> sources that have arrived.
    #[serde(default)]
    pub joins: BTreeMap<String, BTreeSet<String>>,
}

/// A stored workflow (the seed's `workflows` row plus the engine's columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// UUID v7 the engine gives it at submission (the seed's
    /// `workflows.id`); never changes.
    pub id: WorkflowId,
    /// Caller's request id (unique).
    pub request_id: RequestId,
    /// Requirement text.
    /// The seed's `workflows.requirements`: what the submitter asked for,
    /// as submitted; never blank.
    pub requirements: String,
    /// Where its lifecycle stands (the seed's `workflows.status`, stored as
    /// [`WorkflowStatus::as_str`]); only an advance in
    /// [`Store::commit_task`] or a [`Store::transition`] changes it.
    pub status: WorkflowStatus,
    /// Name of the workflow definition (`sdlc`).
    pub workflow_name: String,
    /// The workflow definition's text, snapshotted at creation so a resume
    /// runs the same graph.
    pub definition: String,
    /// What the run was started with (stored as JSON).
    pub options: RunOptions,
    /// Owning tenant, for the gateway's isolation (None in the CLI).
    pub tenant: Option<String>,
    /// Where the scheduler stands (the step and its pending nodes): empty
    /// until the start transition, then moved by each advance.
    pub cursor: Cursor,
    /// Node(s) currently or last running.
    pub current_step: String,
    /// When it was submitted (UTC; the seed's `workflows.created_at`);
    /// never changes.
    pub created_at: DateTime<Utc>,
    /// When its last task commit or transition was written (UTC; the
    /// seed's `workflows.updated_at`).
    pub updated_at: DateTime<Utc>,
}

/// What [`Store::create_workflow`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWorkflow {
    /// Id to use.
    pub id: WorkflowId,
    /// Caller's request id; a second create with the same request id returns
    /// the first workflow instead of making another.
    pub request_id: RequestId,
    /// Requirement text (non-empty).
    pub requirements: String,
    /// Name the definition gives itself (`sdlc`), for listings.
    pub workflow_name: String,
    /// The definition's source text (TOML), kept so that every later run
    /// of this workflow follows the same graph.
    pub definition: String,
    /// What the run is started with.
    pub options: RunOptions,
    /// Owning tenant.
    /// `None` for the command line's workflows; decides the workflow's
    /// [`ArtifactOwner`](crate::ArtifactOwner).
    pub tenant: Option<String>,
}

/// The scheduler's decision after a super-step: where to go next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advance {
    /// The new cursor (usually `step + 1`).
    pub cursor: Cursor,
    /// The new status (`running`, `completed`, `failed`, `awaiting_approval`).
    pub status: WorkflowStatus,
    /// Node(s) to show as current.
    pub current_step: String,
}

/// One task's results, committed atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCommit {
    /// The task (its `attempt` is recorded; the checkpoint is unique per
    /// `(workflow_id, step, node)`).
    #[serde(with = "crate::ids::task_fields")]
    pub task: TaskId,
    /// What it changed.
    pub delta: StateDelta,
    /// Events to put in the outbox.
    pub events: Vec<Event>,
    /// Set by the last task of a super-step: the next cursor and status.
    pub advance: Option<Advance>,
}

/// What [`Store::commit_task`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommitOutcome {
    /// Written; `seq` is the checkpoint's position in the workflow's history.
    Committed {
        /// Checkpoint sequence number.
        seq: u64,
    },
    /// A checkpoint for this `(workflow, step, node)` already exists (a
    /// redelivered or duplicated task); nothing was written.
    Duplicate,
    /// The workflow is not running at this step (cancelled, failed, moved
    /// on); nothing was written.
    Stale {
        /// Its status now.
        status: WorkflowStatus,
        /// Its step now.
        step: u64,
    },
}

/// A guarded control action (start, approve, reject, cancel, resume, fail,
/// or an advance that no task carried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The action only applies if the workflow's status is one of these.
    pub expected_status: Vec<WorkflowStatus>,
    /// ...and, when set, if its cursor is at this step.
    pub expected_step: Option<u64>,
    /// The status the workflow has after the action (`running` after a
    /// start, approval or resume; `cancelled`, `rejected`, `failed`).
    pub status: WorkflowStatus,
    /// New cursor, when it changes.
    pub cursor: Option<Cursor>,
    /// New current step, when it changes.
    pub current_step: Option<String>,
    /// State changes (e.g. an error entry for a rejection).
    pub delta: StateDelta,
    /// Events to put in the outbox.
    pub events: Vec<Event>,
    /// What happened, for the history (`approved`, `cancelled by cli`).
    pub note: String,
}

/// One entry of a workflow's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The workflow whose history it belongs to.
    pub workflow_id: WorkflowId,
    /// 1-based position in the workflow's history.
    pub seq: u64,
    /// Super-step it belongs to.
    pub step: u64,
    /// Node whose task wrote it; None for a control action.
    pub node: Option<String>,
    /// Attempt that wrote it.
    pub attempt: Option<u32>,
    /// The state changes it made; the state at any step is these folded in
    /// `seq` order ([`fold_state`]).
    pub delta: StateDelta,
    /// Cursor after it, when it moved the cursor.
    pub cursor: Option<Cursor>,
    /// Status after it.
    pub status: WorkflowStatus,
    /// Current step after it.
    pub current_step: String,
    /// Control-action note (empty for tasks).
    pub note: String,
    /// When it was committed (UTC); the folded state's `updated_at` as of
    /// this entry.
    pub created_at: DateTime<Utc>,
}

/// A row of the seed's `agent_outputs` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutputRecord {
    /// UUID v7 the store gives the row when the task commits.
    pub id: Uuid,
    /// The workflow whose task wrote it (`agent_outputs.workflow_id`).
    pub workflow_id: WorkflowId,
    /// Agent (role) name.
    pub agent_name: String,
    /// Kind of output (`analysis`, `implementation`, `test_run`): the
    /// column `agent_outputs.output_type`.
    pub output_type: String,
    /// The output itself, as JSON (`agent_outputs.content`).
    pub content: Value,
    /// Super-step that wrote it.
    pub step: u64,
    /// When the task that wrote it committed (UTC).
    pub created_at: DateTime<Utc>,
}

/// Filter and page for [`Store::list_workflows`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowQuery {
    /// Only this status.
    pub status: Option<WorkflowStatus>,
    /// Only this tenant (None: any tenant).
    pub tenant: Option<String>,
    /// Page size (stores cap it at 500; 0 means 50).
    pub limit: u32,
    /// Continue after this id (newest first: ids older than it).
    pub before: Option<WorkflowId>,
}

impl WorkflowQuery {
    /// Page size when `limit` is 0.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size.
    pub const MAX_LIMIT: u32 = 500;

    /// The page size every store uses: `limit`, 0 meaning
    /// [`Self::DEFAULT_LIMIT`], capped at [`Self::MAX_LIMIT`].
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// This page's workflows, newest first; at most the query's page size.
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; None at the end.
    pub next: Option<WorkflowId>,
}

impl Page<WorkflowRecord> {
    /// The page of a query that fetched one row more than `page_size`
    /// (newest first), to learn whether a next page exists without a count.
    pub fn from_overfetch(mut items: Vec<WorkflowRecord>, page_size: u32) -> Self {
        let more = items.len() > page_size as usize;
        items.truncate(page_size as usize);
        let next = if more {
            items.last().map(|r| r.id)
        } else {
            None
        };
        Page { items, next }
    }
}

/// Durable state of workflows. Implemented by the SQLite, in-memory and
/// PostgreSQL stores; all of them pass `agentry-store-conformance`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The adapter's name (`sqlite`, `memory`, `postgres`).
    fn name(&self) -> &'static str;

    /// Checks the store is reachable (for `/readyz`).
    async fn health(&self) -> Result<()>;

    /// Creates a workflow in `pending` status with an empty cursor. If one
    /// with the same `request_id` exists, returns it unchanged. An empty
    /// requirement is [`Error::InvalidInput`].
    async fn create_workflow(&self, new: NewWorkflow) -> Result<WorkflowRecord>;

    /// A workflow, or [`Error::NotFound`] naming the id.
    async fn get_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord>;

    /// A workflow by request id.
    async fn find_by_request_id(&self, request_id: &RequestId) -> Result<Option<WorkflowRecord>>;

    /// Workflows, newest first.
    async fn list_workflows(&self, query: WorkflowQuery) -> Result<Page<WorkflowRecord>>;

    /// Commits one task atomically: checkpoint + seed tables (`agent_outputs`
    /// rows, `shared_context` upserts) + outbox events + the workflow row
    /// (`updated_at`, and cursor/status/current_step when `advance` is set).
    /// Applies only if the workflow is `running` with `cursor.step ==
    /// task.key.step`, else [`CommitOutcome::Stale`]; a second commit of the same
    /// `(workflow, step, node)` is [`CommitOutcome::Duplicate`].
    async fn commit_task(&self, commit: TaskCommit) -> Result<CommitOutcome>;

    /// Applies a guarded control action atomically (workflow row + a
    /// checkpoint with `node = None` + outbox events). If the status or step
    /// does not match, returns [`Error::Conflict`] naming the actual status.
    async fn transition(&self, id: WorkflowId, transition: Transition) -> Result<WorkflowRecord>;

    /// The workflow's history, oldest first.
    async fn checkpoints(&self, id: WorkflowId) -> Result<Vec<Checkpoint>>;

    /// The seed's `agent_outputs` rows, oldest first.
    async fn agent_outputs(&self, id: WorkflowId) -> Result<Vec<AgentOutputRecord>>;

    /// The seed's `shared_context` rows as a map.
    async fn shared_context(&self, id: WorkflowId) -> Result<BTreeMap<String, Value>>;

    /// Stored events with `seq > after`, oldest first, at most `limit`; of
    /// one workflow or of all.
    async fn events(
        &self,
        workflow: Option<WorkflowId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>>;

    /// Outbox: events not yet published, oldest first.
    async fn unpublished_events(&self, limit: u32) -> Result<Vec<StoredEvent>>;

    /// Outbox: marks events published (idempotent).
    async fn mark_published(&self, seqs: &[u64]) -> Result<()>;

    /// The state at the end of `step` (None: now), folded from checkpoints.
    async fn state_at(&self, id: WorkflowId, step: Option<u64>) -> Result<WorkflowState> {
        let record = self.get_workflow(id).await?;
        let checkpoints = self.checkpoints(id).await?;
        fold_state(&record, &checkpoints, step)
    }
}

/// Folds checkpoints (oldest first) into the state at the end of `up_to_step`
/// (None: all of them). Every store's [`Store::state_at`] is this.
pub fn fold_state(
    record: &WorkflowRecord,
    checkpoints: &[Checkpoint],
    up_to_step: Option<u64>,
) -> Result<WorkflowState> {
    if let Some(step) = up_to_step {
        let last = checkpoints.last().map(|c| c.step).unwrap_or(0);
        if step > last {
            return Err(Error::invalid(format!(
                "workflow {} has no step {step} (last step is {last})",
                record.id
            )));
        }
    }
    let mut state = WorkflowState::initial(
        record.id,
        record.request_id.clone(),
        record.requirements.clone(),
        record.created_at,
    );
    for cp in checkpoints {
        if up_to_step.is_some_and(|s| cp.step > s) {
            break;
        }
        state.apply(&cp.delta);
        state.status = cp.status;
        state.current_step = cp.current_step.clone();
        state.step = cp.step;
        state.updated_at = cp.created_at;
    }
    if up_to_step.is_none() {
        state.status = record.status;
        state.current_step = record.current_step.clone();
        state.step = record.cursor.step;
        state.updated_at = record.updated_at;
    }
    Ok(state)
}

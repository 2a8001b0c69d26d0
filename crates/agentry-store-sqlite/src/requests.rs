//! Write requests as the writer runs them, prepared by the callers.
//!
//! Everything a write needs that does not need the write connection (JSON
//! serialization, ids of new seed rows, range checks) is done here, on the
//! caller's task, before the request is queued: there is one writer, and the
//! callers run in parallel with it. A task commit or a transition becomes
//! one JSON object, the row the writer inserts into the `task_commits` or
//! `transitions` view (see [`crate::procedures`]).

use agentry_core::{
    Cursor, Error, Event, NewWorkflow, RequestId, Result, StateDelta, TaskCommit, TaskId,
    Transition, WorkflowId, WorkflowStatus,
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::rows::{id_text, timestamp, to_i64};

/// A request row of [`crate::procedures`]' views, as JSON (absent fields
/// are NULL there).
#[derive(Serialize)]
struct RequestRow<'a> {
    workflow_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    delta: &'a StateDelta,
    /// When the cursor moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<&'a Cursor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_step: Option<&'a str>,
    note: &'a str,
    /// (Transitions) the statuses the workflow must have.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_status: Option<Vec<&'static str>>,
    /// (Transitions) the step its cursor must be at, when one is expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_step: Option<i64>,
    /// Ids of the new `agent_outputs` rows, one per output of the delta.
    output_ids: Vec<String>,
    context: Vec<ContextRow<'a>>,
    events: Vec<EventRow<'a>>,
}

impl<'a> RequestRow<'a> {
    fn new(
        workflow_id: WorkflowId,
        delta: &'a StateDelta,
        events: &'a [Event],
        cursor: Option<&'a Cursor>,
    ) -> Result<Self> {
        if let Some(cursor) = cursor {
            // Checked here: the row's cursor_step is read back from it.
            to_i64(cursor.step, "cursor step")?;
        }
        Ok(RequestRow {
            workflow_id: id_text(workflow_id),
            step: None,
            node: None,
            attempt: None,
            delta,
            cursor,
            status: None,
            current_step: None,
            note: "",
            expected_status: None,
            expected_step: None,
            output_ids: delta.agent_outputs.iter().map(|_| new_row_id()).collect(),
            context: delta
                .shared_context
                .iter()
                .map(|(key, value)| ContextRow {
                    id: new_row_id(),
                    key,
                    value,
                })
                .collect(),
            events: events.iter().map(EventRow::new).collect::<Result<_>>()?,
        })
    }
}

/// A `shared_context` key to upsert.
#[derive(Serialize)]
struct ContextRow<'a> {
    /// The row's id if the key is new.
    id: String,
    key: &'a str,
    value: &'a Value,
}

/// An `events` row to insert.
#[derive(Serialize)]
struct EventRow<'a> {
    id: String,
    kind: &'a str,
    workflow_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    payload: &'a Value,
    at: String,
}

impl<'a> EventRow<'a> {
    fn new(event: &'a Event) -> Result<Self> {
        Ok(EventRow {
            id: event.id.hyphenated().to_string(),
            kind: event.kind.as_str(),
            workflow_id: id_text(event.workflow_id),
            step: event.step.map(|s| to_i64(s, "event step")).transpose()?,
            node: event.node.as_deref(),
            attempt: event.attempt,
            request_id: event.request_id.as_ref().map(RequestId::as_str),
            payload: &event.payload,
            at: timestamp(event.at),
        })
    }
}

/// Id of a new seed-table row (time-ordered).
fn new_row_id() -> String {
    Uuid::now_v7().hyphenated().to_string()
}

/// A prepared [`agentry_core::Store::create_workflow`].
#[derive(Debug)]
pub(crate) struct CreateRequest {
    pub(crate) id: WorkflowId,
    pub(crate) request_id: String,
    /// The row to insert, as a JSON object of strings (see
    /// [`crate::procedures::BATCH`]).
    pub(crate) row: String,
}

/// A `workflows` row to insert; `options` and `cursor` are JSON texts.
#[derive(Serialize)]
struct CreateRow<'a> {
    id: String,
    request_id: &'a str,
    requirements: &'a str,
    workflow_name: &'a str,
    definition: &'a str,
    options: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    cursor: String,
}

impl CreateRequest {
    pub(crate) fn new(new: &NewWorkflow) -> Result<Self> {
        let row = CreateRow {
            id: id_text(new.id),
            request_id: new.request_id.as_str(),
            requirements: &new.requirements,
            workflow_name: &new.workflow_name,
            definition: &new.definition,
            options: serde_json::to_string(&new.options)?,
            tenant: new.tenant.as_deref(),
            cursor: serde_json::to_string(&Cursor::default())?,
        };
        Ok(CreateRequest {
            id: new.id,
            request_id: new.request_id.to_string(),
            row: serde_json::to_string(&row)?,
        })
    }
}

/// A prepared [`agentry_core::Store::commit_task`].
#[derive(Debug)]
pub(crate) struct CommitRequest {
    pub(crate) task: TaskId,
    /// The `task_commits` row, as a JSON object.
    pub(crate) row: String,
}

impl CommitRequest {
    pub(crate) fn new(commit: &TaskCommit) -> Result<Self> {
        let task = &commit.task;
        let advance = commit.advance.as_ref();
        let mut row = RequestRow::new(
            task.key.workflow,
            &commit.delta,
            &commit.events,
            advance.map(|a| &a.cursor),
        )?;
        row.step = Some(to_i64(task.key.step, "step")?);
        row.node = Some(&task.key.node);
        row.attempt = Some(task.attempt);
        row.status = advance.map(|a| a.status.as_str());
        row.current_step = advance.map(|a| a.current_step.as_str());
        Ok(CommitRequest {
            task: task.clone(),
            row: serde_json::to_string(&row)?,
        })
    }
}

/// A prepared [`agentry_core::Store::transition`].
#[derive(Debug)]
pub(crate) struct TransitionRequest {
    pub(crate) workflow_id: WorkflowId,
    pub(crate) expected_status: Vec<WorkflowStatus>,
    pub(crate) expected_step: Option<u64>,
    pub(crate) note: String,
    /// The `transitions` row, as a JSON object.
    pub(crate) row: String,
}

impl TransitionRequest {
    pub(crate) fn new(workflow_id: WorkflowId, transition: &Transition) -> Result<Self> {
        let mut row = RequestRow::new(
            workflow_id,
            &transition.delta,
            &transition.events,
            transition.cursor.as_ref(),
        )?;
        row.status = Some(transition.status.as_str());
        row.current_step = transition.current_step.as_deref();
        row.note = &transition.note;
        row.expected_status = Some(
            transition
                .expected_status
                .iter()
                .map(|s| s.as_str())
                .collect(),
        );
        // A step beyond i64 cannot be the cursor's: expect one that never is.
        row.expected_step = transition
            .expected_step
            .map(|s| i64::try_from(s).unwrap_or(-1));
        Ok(TransitionRequest {
            workflow_id,
            expected_status: transition.expected_status.clone(),
            expected_step: transition.expected_step,
            note: transition.note.clone(),
            row: serde_json::to_string(&row)?,
        })
    }
}

/// The JSON array of [`agentry_core::Store::mark_published`]'s seqs.
pub(crate) fn seqs_json(seqs: &[i64]) -> Result<String> {
    serde_json::to_string(seqs).map_err(Error::from)
}

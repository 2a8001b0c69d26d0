//! Control actions: the guarded transitions that start, resume, approve,
//! reject and cancel a workflow. Each is ONE `Store::transition` whose
//! guard (the expected status and step) makes a race with another process
//! a `Conflict` rather than a lost update; its events go through the
//! outbox like a task's.
//!
//! A resume never stands in for an approval: a workflow cancelled while it
//! waited for a human waits again, and so does one whose pending nodes are
//! gated by `approval_before` and not yet approved.

use std::sync::Arc;

use agentry_core::{
    Cursor, Error, ErrorClass, Event, EventKind, Result, StateDelta, Transition,
    WorkflowErrorEntry, WorkflowId, WorkflowRecord, WorkflowState, WorkflowStatus,
};
use chrono::Utc;
use serde_json::json;
use tracing::info;

use super::Engine;
use crate::routing::assigned_events;

impl Engine {
    /// Pending -> Running at step 0 with the start nodes.
    pub(super) async fn start(&self, record: &WorkflowRecord) -> Result<WorkflowRecord> {
        let def = self.inner.caches.definition(record)?;
        let cursor = Cursor {
            step: 0,
            pending: def.start.clone(),
            ..Cursor::default()
        };
        let rid = Some(&record.request_id);
        let mut events = vec![Event::workflow(
            EventKind::WorkflowStarted,
            record.id,
            json!({ "workflow": def.name, "start": def.start }),
        )
        .with_request_id(rid.cloned())];
        events.extend(assigned_events(&cursor, record.id, rid));
        let r = self
            .apply_transition(
                record.id,
                Transition {
                    expected_status: vec![WorkflowStatus::Pending],
                    expected_step: Some(0),
                    status: WorkflowStatus::Running,
                    current_step: Some(cursor.pending.join("+")),
                    cursor: Some(cursor),
                    delta: StateDelta::default(),
                    events,
                    note: "started".into(),
                },
            )
            .await?;
        // The state at the start of step 0 is the initial state: cache it so
        // the first task needs no checkpoint read.
        let mut st = WorkflowState::initial(
            r.id,
            r.request_id.clone(),
            r.requirements.clone(),
            r.created_at,
        );
        st.status = WorkflowStatus::Running;
        st.current_step = r.current_step.clone();
        self.inner
            .caches
            .set_start_state(r.id, &def, 0, Arc::new(st));
        self.inner.caches.set_record(&def, &r);
        info!("Workflow started.");
        Ok(r)
    }

    /// Failed / Cancelled -> Running from the last checkpoint.
    pub(super) async fn resume(&self, record: &WorkflowRecord) -> Result<WorkflowRecord> {
        let def = self.inner.caches.definition(record)?;
        let mut cursor = record.cursor.clone();
        let never_started = cursor.step == 0 && cursor.pending.is_empty();
        if never_started {
            cursor.pending = def.start.clone();
        }
        // A resume never stands in for an approval: a workflow cancelled
        // while it waited for a human waits again, and so does one whose
        // pending nodes are gated by `approval_before` and not yet approved.
        let was_waiting = record.status == WorkflowStatus::Cancelled
            && !never_started
            && self.status_before_cancel(record.id).await?
                == Some(WorkflowStatus::AwaitingApproval);
        let gated = cursor
            .pending
            .iter()
            .any(|n| def.approval_before.contains(n) && !cursor.approved.contains(n));
        let status = if was_waiting || gated {
            WorkflowStatus::AwaitingApproval
        } else {
            WorkflowStatus::Running
        };
        if status == WorkflowStatus::Running
            && record.status == WorkflowStatus::Failed
            && !never_started
        {
            // An explicit resume of a failure is a human's go-ahead: the
            // pending nodes may run past their max_visits once.
            cursor.approved.extend(cursor.pending.iter().cloned());
        }
        let rid = Some(&record.request_id);
        let mut events = vec![Event::workflow(
            EventKind::WorkflowResumed,
            record.id,
            json!({ "from": record.status, "step": cursor.step, "pending": cursor.pending }),
        )
        .with_request_id(rid.cloned())];
        if status == WorkflowStatus::Running {
            events.extend(assigned_events(&cursor, record.id, rid));
        } else {
            events.push(
                Event::workflow(
                    EventKind::WorkflowAwaitingApproval,
                    record.id,
                    json!({ "pending": cursor.pending }),
                )
                .with_request_id(rid.cloned()),
            );
        }
        self.inner.caches.invalidate_state(record.id);
        let r = self
            .apply_transition(
                record.id,
                Transition {
                    expected_status: vec![record.status],
                    expected_step: Some(record.cursor.step),
                    status,
                    current_step: Some(cursor.pending.join("+")),
                    cursor: Some(cursor),
                    delta: StateDelta::default(),
                    events,
                    note: format!("resumed from {} to {status}", record.status),
                },
            )
            .await?;
        self.inner.caches.set_record(&def, &r);
        info!(from = %record.status, step = r.cursor.step, "Workflow resumed.");
        Ok(r)
    }

    /// Applies a guarded control action and wakes the outbox relay for the
    /// events it committed.
    pub(super) async fn apply_transition(
        &self,
        id: WorkflowId,
        t: Transition,
    ) -> Result<WorkflowRecord> {
        let r = self.inner.store.transition(id, t).await?;
        self.inner.relay_wake.notify_one();
        Ok(r)
    }

    /// The status a workflow had before the cancel that ended it.
    async fn status_before_cancel(&self, id: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let checkpoints = self.inner.store.checkpoints(id).await?;
        Ok(checkpoints
            .iter()
            .rev()
            .map(|c| c.status)
            .find(|s| *s != WorkflowStatus::Cancelled))
    }

    /// The record of a workflow that must be awaiting approval, or a
    /// Conflict naming its actual status.
    async fn awaiting_approval(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.ensure_background();
        let record = self.inner.store.get_workflow(id).await?;
        if record.status != WorkflowStatus::AwaitingApproval {
            return Err(Error::Conflict(format!(
                "workflow {id} is {}, not awaiting approval",
                record.status
            )));
        }
        Ok(record)
    }

    /// Approves the pending nodes of a workflow awaiting approval:
    /// `awaiting_approval -> running`. Does not run it; call [`Engine::run`].
    pub async fn approve(&self, id: WorkflowId, note: &str) -> Result<WorkflowRecord> {
        let record = self.awaiting_approval(id).await?;
        let mut cursor = record.cursor.clone();
        cursor.approved.extend(cursor.pending.iter().cloned());
        let rid = Some(&record.request_id);
        let mut events = vec![Event::workflow(
            EventKind::WorkflowApproved,
            id,
            json!({ "approved": cursor.pending, "note": note }),
        )
        .with_request_id(rid.cloned())];
        events.extend(assigned_events(&cursor, id, rid));
        let r = self
            .apply_transition(
                id,
                Transition {
                    expected_status: vec![WorkflowStatus::AwaitingApproval],
                    expected_step: Some(record.cursor.step),
                    status: WorkflowStatus::Running,
                    current_step: None,
                    cursor: Some(cursor),
                    delta: StateDelta::default(),
                    events,
                    note: if note.is_empty() {
                        "approved".into()
                    } else {
                        format!("approved: {note}")
                    },
                },
            )
            .await?;
        info!(workflow_id = %id, "Workflow approved.");
        Ok(r)
    }

    /// Rejects a workflow awaiting approval: `awaiting_approval -> rejected`,
    /// with the reason recorded in its errors.
    pub async fn reject(&self, id: WorkflowId, reason: &str) -> Result<WorkflowRecord> {
        let record = self.awaiting_approval(id).await?;
        let message = format!("rejected: {reason}");
        let r = self
            .apply_transition(
                id,
                Transition {
                    expected_status: vec![WorkflowStatus::AwaitingApproval],
                    expected_step: Some(record.cursor.step),
                    status: WorkflowStatus::Rejected,
                    current_step: None,
                    cursor: None,
                    delta: StateDelta {
                        errors: vec![WorkflowErrorEntry {
                            step: record.cursor.step,
                            node: None,
                            attempt: 0,
                            class: ErrorClass::Permanent,
                            message: message.clone(),
                            at: Utc::now(),
                        }],
                        ..StateDelta::default()
                    },
                    events: vec![Event::workflow(
                        EventKind::WorkflowRejected,
                        id,
                        json!({ "reason": reason, "pending": record.cursor.pending }),
                    )
                    .with_request_id(Some(record.request_id.clone()))],
                    note: message,
                },
            )
            .await?;
        self.wake(id);
        self.forget(id);
        info!(workflow_id = %id, "Workflow rejected.");
        Ok(r)
    }

    /// Cancels a non-terminal workflow and aborts its node tasks running in
    /// this process. Workers elsewhere notice when their commit comes back
    /// stale; a `run` elsewhere notices by its poll.
    pub async fn cancel(&self, id: WorkflowId, reason: &str) -> Result<WorkflowRecord> {
        self.ensure_background();
        let record = self.inner.store.get_workflow(id).await?;
        let r = self
            .apply_transition(
                id,
                Transition {
                    expected_status: vec![
                        WorkflowStatus::Pending,
                        WorkflowStatus::Running,
                        WorkflowStatus::AwaitingApproval,
                    ],
                    expected_step: None,
                    status: WorkflowStatus::Cancelled,
                    current_step: None,
                    cursor: None,
                    delta: StateDelta::default(),
                    events: vec![Event::workflow(
                        EventKind::WorkflowCancelled,
                        id,
                        json!({ "reason": reason, "step": record.cursor.step }),
                    )
                    .with_request_id(Some(record.request_id.clone()))],
                    note: format!("cancelled: {reason}"),
                },
            )
            .await?;
        if let Some(token) = self.inner.cancels.lock().remove(&id) {
            token.cancel();
        }
        self.wake(id);
        self.forget(id);
        info!(workflow_id = %id, reason, "Workflow cancelled.");
        Ok(r)
    }
}

//! Committing a node run, and what follows the commit.
//!
//! A successful task is committed with its delta, its events and, when it
//! is the last of its super-step, the step's advance (decided by
//! [`crate::routing::advance`]), in ONE `Store::commit_task`. What follows
//! (the next step's tasks, a sibling's missing advance) is dispatched
//! before the delivery is acknowledged; a commit refused as a duplicate or
//! stale dispatches whatever the current step still misses. A node that
//! failed for good fails the workflow with a guarded transition and no task
//! checkpoint, so a resume runs it again.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{
    Advance, Checkpoint, CommitOutcome, Error, Event, EventKind, NodeOutput, Result, StateDelta,
    TaskCommit, TaskId, Transition, WorkflowErrorEntry, WorkflowId, WorkflowRecord, WorkflowState,
    WorkflowStatus,
};
use chrono::Utc;
use serde_json::json;
use tracing::{debug, warn};

use super::{conflict_is_benign, Engine};
use crate::definition::WorkflowDefinition;
use crate::routing::{self, task_checkpoints_at, StepAdvance};

/// How to settle a delivery.
pub(super) enum Settle {
    /// Done with: committed, already committed, stale, or failed for good.
    Ack,
    /// Given back to the queue: the store or the bus is out; a redelivery
    /// finds out what happened.
    Requeue,
    /// Refused for good: to the dead-letter queue.
    DeadLetter,
}

/// A node run that succeeded, to commit.
pub(super) struct Success<'a> {
    /// The workflow as the task ran against it.
    pub(super) record: &'a WorkflowRecord,
    /// The graph the record snapshotted, parsed: what routes the advance.
    pub(super) def: &'a Arc<WorkflowDefinition>,
    /// The task, with the attempt that succeeded.
    pub(super) task: TaskId,
    /// What the node produced.
    pub(super) output: NodeOutput,
    /// The state at the start of the step (the node ran on it).
    pub(super) start_state: &'a Arc<WorkflowState>,
    /// Time spent in the node over all attempts.
    pub(super) node_ns: u64,
}

impl Engine {
    /// Builds and commits a successful task (advancing the cursor when it is
    /// the last of its step), then dispatches what follows. Returns the
    /// settle decision and whether this call committed.
    pub(super) async fn commit_success(&self, run: Success<'_>) -> (Settle, bool) {
        let Success {
            record,
            def,
            task,
            output,
            start_state,
            node_ns,
        } = run;
        let id = record.id;
        let rid = Some(record.request_id.clone());
        let NodeOutput {
            mut delta,
            mut events,
        } = output;
        for e in &mut events {
            if e.request_id.is_none() {
                e.request_id = rid.clone();
            }
        }
        events.push(
            Event::task(
                EventKind::TaskCompleted,
                &task,
                json!({ "duration_ms": node_ns / 1_000_000, "visit": record.cursor.visits.get(&task.key.node).copied().unwrap_or(0) }),
            )
            .with_request_id(rid.clone()),
        );
        if !delta.shared_context.is_empty() {
            let keys: Vec<&String> = delta.shared_context.keys().collect();
            events.push(
                Event::task(EventKind::ContextUpdated, &task, json!({ "keys": keys }))
                    .with_request_id(rid.clone()),
            );
        }

        // The last task of its step carries the step's advance.
        let mut advanced: Option<(Advance, WorkflowState)> = None;
        if let Some(checkpoints) = self.checkpoints_if_last(record, &task).await {
            let step = task.key.step;
            let siblings = checkpoints
                .iter()
                .filter(|c| c.step == step && c.node.is_some())
                .map(|c| &c.delta);
            let StepAdvance {
                advance,
                errors,
                events: routed,
                next_state,
            } = routing::advance(
                def,
                &record.cursor,
                (**start_state).clone(),
                siblings.chain([&delta]),
                id,
                Some(&record.request_id),
            );
            delta.errors.extend(errors);
            events.extend(routed);
            advanced = Some((advance, next_state));
        }
        let commit = TaskCommit {
            task,
            delta,
            events,
            advance: advanced.as_ref().map(|(advance, _)| advance.clone()),
        };
        let outcome = match self.commit_with_retry(commit).await {
            Ok(o) => o,
            Err(error) if error.class().is_retryable() => {
                warn!(%error, "Commit failed; task requeued.");
                return (Settle::Requeue, false);
            }
            Err(error) => {
                warn!(%error, "Commit failed permanently; task dead-lettered.");
                return (Settle::DeadLetter, false);
            }
        };
        // After a commit the delivery is acknowledged only once what follows
        // is on the bus: if dispatching fails (the broker is down), the task
        // goes back and its redelivery finds it committed and dispatches
        // the rest.
        let then = |followed: Result<()>| match followed {
            Ok(()) => Settle::Ack,
            Err(error) => {
                warn!(%error, "Could not dispatch what follows a commit; task requeued for recovery.");
                Settle::Requeue
            }
        };
        match outcome {
            CommitOutcome::Committed { seq } => {
                debug!(seq, advanced = advanced.is_some(), "Task committed.");
                self.inner.relay_wake.notify_one();
                let followed = match advanced {
                    Some((advance, state)) => self.after_advance(record, def, advance, state).await,
                    None => {
                        // Fan-out: a sibling may have committed meanwhile
                        // without seeing us; whoever commits last advances.
                        match self
                            .ride("store: read workflow", || self.inner.store.get_workflow(id))
                            .await
                        {
                            Ok(r) => self.advance_if_finished(&r).await,
                            Err(error) => Err(error),
                        }
                    }
                };
                (then(followed), true)
            }
            CommitOutcome::Duplicate => {
                debug!("Task was already committed (duplicate); dropped.");
                let followed = self.recover_after_refused_commit(id).await;
                (then(followed), false)
            }
            CommitOutcome::Stale { status, step } => {
                debug!(%status, at_step = step, "Workflow moved on (stale commit); dropped.");
                let followed = self.recover_after_refused_commit(id).await;
                (then(followed), false)
            }
        }
    }

    /// Whether `task` is the last of its step to commit: with one pending
    /// node, yes (and no checkpoint is read); with fan-out, when the store
    /// holds a checkpoint of every other pending node. Then the workflow's
    /// checkpoints (its siblings' among them, in commit order), else None
    /// (also when they cannot be read: the task commits without advancing,
    /// and whoever finds the step finished later advances it).
    async fn checkpoints_if_last(
        &self,
        record: &WorkflowRecord,
        task: &TaskId,
    ) -> Option<Vec<Checkpoint>> {
        let pending = &record.cursor.pending;
        if pending.len() <= 1 {
            return Some(Vec::new());
        }
        let read = self
            .ride("store: read checkpoints", || {
                self.inner.store.checkpoints(record.id)
            })
            .await;
        match read {
            Ok(cps) => {
                let done = task_checkpoints_at(&cps, task.key.step);
                let all = pending
                    .iter()
                    .all(|p| p == &task.key.node || done.contains_key(p.as_str()));
                all.then_some(cps)
            }
            Err(error) => {
                warn!(%error, "Cannot read sibling checkpoints; committing without advancing.");
                None
            }
        }
    }

    /// Commits, retrying transient store errors at least `commit_attempts`
    /// times and for as long as `outage_grace` lasts. A retry after a lost
    /// reply finds the first try committed (`Duplicate`).
    async fn commit_with_retry(&self, commit: TaskCommit) -> Result<CommitOutcome> {
        let attempts = self.inner.config.commit_attempts.max(1);
        let mut n = 1;
        loop {
            match self.inner.store.commit_task(commit.clone()).await {
                Ok(o) => return Ok(o),
                Err(error) if error.class().is_retryable() && n < attempts => {
                    warn!(%error, attempt = n, "Commit failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(n))).await;
                    n += 1;
                }
                Err(error) if error.class().is_retryable() => {
                    return self
                        .ride("store: commit task", || {
                            self.inner.store.commit_task(commit.clone())
                        })
                        .await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A refused commit (duplicate or stale) can hide an advance whose
    /// dispatch never happened: this process's own, when the store committed
    /// it but the reply was lost and the retry came back duplicate; or another
    /// process's that died before dispatching. Dispatch whatever the current
    /// step still misses (tasks in flight here are not dispatched twice).
    async fn recover_after_refused_commit(&self, id: WorkflowId) -> Result<()> {
        let recovered = match self
            .ride("store: read workflow", || self.inner.store.get_workflow(id))
            .await
        {
            Ok(r) => self.advance_or_dispatch(&r).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &recovered {
            warn!(%error, "Recovery after a refused commit failed.");
        }
        recovered
    }

    /// Fails the workflow because a node failed (no retry left; `task`
    /// carries the attempt that failed): a guarded transition recording the
    /// error. No task checkpoint is written, so a resume runs the node
    /// again.
    pub(super) async fn fail_task(&self, record: &WorkflowRecord, task: &TaskId, error: &Error) {
        let message = error.to_string();
        let class = error.class();
        let attempt = task.attempt;
        warn!(%error, %class, attempt, "Node failed; failing the workflow.");
        let t = Transition {
            expected_status: vec![WorkflowStatus::Running],
            expected_step: Some(task.key.step),
            status: WorkflowStatus::Failed,
            current_step: Some(task.key.node.clone()),
            cursor: None,
            delta: StateDelta {
                errors: vec![WorkflowErrorEntry {
                    step: task.key.step,
                    node: Some(task.key.node.clone()),
                    attempt,
                    class,
                    message: message.clone(),
                    at: Utc::now(),
                }],
                ..StateDelta::default()
            },
            events: vec![{
                let mut e = Event::task(
                    EventKind::WorkflowFailed,
                    task,
                    json!({ "error": message, "class": class, "node": task.key.node, "attempt": attempt }),
                );
                e.request_id = Some(record.request_id.clone());
                e
            }],
            note: format!("node `{}` failed: {message}", task.key.node),
        };
        match self
            .ride("store: record failure", || {
                self.apply_transition(record.id, t.clone())
            })
            .await
        {
            Ok(_) => {
                self.wake(record.id);
                self.forget(record.id);
            }
            Err(e) if conflict_is_benign(&e) => {
                debug!(error = %e, "Workflow already moved on; failure not recorded.")
            }
            Err(e) => warn!(error = %e, "Could not record the node failure."),
        }
    }
}

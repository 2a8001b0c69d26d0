//! Moving a running workflow on: what follows a committed advance (the
//! next step's start state cached, its tasks dispatched, or the run's end),
//! the recovery of an advance no task carried, and dispatching tasks.
//!
//! The advance itself is decided by the pure [`crate::routing::advance`],
//! here for the recovery as in `commit` for the task that finishes a step.

use std::sync::Arc;

use agentry_core::{
    Advance, Checkpoint, Result, StateDelta, TaskId, TaskKey, TaskMessage, Transition,
    WorkflowRecord, WorkflowState, WorkflowStatus,
};
use chrono::Utc;
use tracing::{debug, info, warn};

use super::{conflict_is_benign, Engine};
use crate::definition::WorkflowDefinition;
use crate::routing::{self, fold_step_start, task_checkpoints_at, StepAdvance};

/// What [`Engine::kick`] does with the pending tasks of a step that has
/// not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Dispatch those that have no checkpoint (tasks in flight here are
    /// never dispatched twice).
    Dispatch,
    /// Leave them: they may be running elsewhere.
    Leave,
}

impl Engine {
    /// Makes sure a running workflow progresses: applies the advance of a
    /// finished step that no task carried ([`Engine::advance_if_finished`]),
    /// or else dispatches the pending tasks that have no checkpoint yet.
    pub(super) async fn advance_or_dispatch(&self, record: &WorkflowRecord) -> Result<()> {
        self.kick(record, Missing::Dispatch).await
    }

    /// If every pending node of a running workflow's current step has a
    /// task checkpoint but the cursor did not move (a crash between
    /// commits, or siblings that each committed without seeing the other),
    /// decides the advance and applies it with a guarded transition.
    pub(super) async fn advance_if_finished(&self, record: &WorkflowRecord) -> Result<()> {
        self.kick(record, Missing::Leave).await
    }

    async fn kick(&self, record: &WorkflowRecord, missing: Missing) -> Result<()> {
        if record.status != WorkflowStatus::Running {
            return Ok(());
        }
        let def = self.inner.caches.definition(record)?;
        let cps = self
            .ride("store: read checkpoints", || {
                self.inner.store.checkpoints(record.id)
            })
            .await?;
        let step = record.cursor.step;
        let done = task_checkpoints_at(&cps, step);
        let not_done: Vec<String> = record
            .cursor
            .pending
            .iter()
            .filter(|p| !done.contains_key(p.as_str()))
            .cloned()
            .collect();
        if not_done.is_empty() {
            // Merge the siblings in commit order, as `fold_state` does, so
            // routing sees the state that is stored.
            let mut siblings: Vec<&Checkpoint> = record
                .cursor
                .pending
                .iter()
                .filter_map(|p| done.get(p.as_str()).copied())
                .collect();
            siblings.sort_by_key(|cp| cp.seq);
            let StepAdvance {
                advance,
                errors,
                events,
                next_state,
            } = routing::advance(
                &def,
                &record.cursor,
                fold_step_start(record, &cps),
                siblings.iter().map(|cp| &cp.delta),
                record.id,
                Some(&record.request_id),
            );
            let result = self
                .apply_transition(
                    record.id,
                    Transition {
                        expected_status: vec![WorkflowStatus::Running],
                        expected_step: Some(step),
                        status: advance.status,
                        cursor: Some(advance.cursor.clone()),
                        current_step: Some(advance.current_step.clone()),
                        delta: StateDelta {
                            errors,
                            ..StateDelta::default()
                        },
                        events,
                        note: format!("advanced after step {step}"),
                    },
                )
                .await;
            match result {
                Ok(r) => {
                    info!(step, status = %r.status, "Applied an advance no task carried.");
                    self.after_advance(&r, &def, advance, next_state).await?;
                }
                Err(e) if conflict_is_benign(&e) => {
                    debug!(error = %e, "Someone else advanced the step.")
                }
                Err(e) => return Err(e),
            }
        } else if missing == Missing::Dispatch {
            self.dispatch(record, &def, &not_done).await?;
        }
        Ok(())
    }

    /// After a committed advance: cache the next step's start state, dispatch
    /// its tasks, or wake `run` when the run ended.
    /// `base` is the record the advance was computed from; with the advance
    /// applied it is what the store now holds, remembered for the next
    /// step's tasks.
    pub(super) async fn after_advance(
        &self,
        base: &WorkflowRecord,
        def: &Arc<WorkflowDefinition>,
        advance: Advance,
        next_state: WorkflowState,
    ) -> Result<()> {
        let id = base.id;
        let status = advance.status;
        if status == WorkflowStatus::Running {
            let step = advance.cursor.step;
            self.inner
                .caches
                .set_start_state(id, def, step, Arc::new(next_state));
            let record = WorkflowRecord {
                status,
                cursor: advance.cursor,
                current_step: advance.current_step,
                updated_at: Utc::now(),
                ..base.clone()
            };
            self.inner.caches.set_record(def, &record);
            self.dispatch(&record, def, &record.cursor.pending).await
        } else {
            info!(%status, "Workflow run ended.");
            self.wake(id);
            self.forget(id);
            Ok(())
        }
    }

    /// Puts a task of `record`'s current step on the bus for each node,
    /// unless this process already has it in flight; a bus that is down is
    /// retried for `outage_grace`. Err when some node could not be
    /// dispatched (the others were).
    pub(super) async fn dispatch(
        &self,
        record: &WorkflowRecord,
        def: &WorkflowDefinition,
        nodes: &[String],
    ) -> Result<()> {
        let mut failed = None;
        for n in nodes {
            let Some(node) = def.node(n) else {
                warn!(node = %n, "Pending node is not in the definition; not dispatched.");
                continue;
            };
            let key = TaskKey::new(record.id, record.cursor.step, n.as_str());
            if !self.inner.inflight.lock().insert(key.clone()) {
                continue;
            }
            let msg = TaskMessage {
                task: TaskId::new(key, 1),
                queue: if self.inner.config.route_by_tags {
                    node.queue()
                } else {
                    node.kind.queue_role().as_str().to_string()
                },
                request_id: Some(record.request_id.clone()),
                tags: node.tags.clone(),
                enqueued_at: Utc::now(),
            };
            let sent = self
                .ride("bus: dispatch", || self.inner.bus.dispatch(msg.clone()))
                .await;
            if let Err(error) = sent {
                warn!(%error, node = %n, "Dispatch failed; recovery will retry.");
                self.inner.inflight.lock().remove(&msg.task.key);
                failed = Some(error);
            }
        }
        match failed {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }
}

//! The stall sweep of a fleet: recovering workflows no process is moving,
//! from the one process that holds the sweep's lease. It knows what live
//! workers run (their heartbeats) and what the dead-letter queue holds, so
//! it can re-dispatch what was lost without copying what is only slow.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agentry_core::{Result, TaskKey, WorkflowQuery, WorkflowRecord, WorkflowStatus};
use chrono::Utc;
use tracing::{info, info_span, warn, Instrument};

use super::Engine;

/// Most times the stall sweep re-dispatches one task (see
/// [`Engine::sweep_stalled`]).
pub const SWEEP_MAX_REDISPATCH: u32 = 3;

impl Engine {
    /// Recovers workflows that no process is moving. Running ones whose
    /// record has not changed for `stalled_for`: a finished but un-advanced
    /// step is advanced, and the pending tasks that have no checkpoint and
    /// are not in `busy` are dispatched again. `busy` holds the tasks that
    /// live workers report running, and those of dead-lettered tasks (a
    /// poison task stays in the dead-letter queue until someone replays
    /// it). A task is re-dispatched at most [`SWEEP_MAX_REDISPATCH`] times,
    /// the n-th time only `stalled_for * 2^n` after the one before, so a
    /// task that is merely queued (a backlog, a variant no worker serves)
    /// gets a bounded number of copies. Pending ones older than
    /// `stalled_for` (accepted, but their start was lost) are started. This
    /// is what makes a dispatch lost to a dead process or a broker outage
    /// harmless when no `run` waits on the workflow. Run it from one
    /// process at a time (a lease); a task dispatched twice is still
    /// committed once. Returns how many workflows it kicked or started.
    pub async fn sweep_stalled(
        &self,
        stalled_for: Duration,
        busy: &HashSet<TaskKey>,
    ) -> Result<usize> {
        self.ensure_background();
        let cutoff = Utc::now()
            - chrono::Duration::from_std(stalled_for).unwrap_or_else(|_| chrono::Duration::zero());
        let mut kicked = 0;
        for status in [WorkflowStatus::Running, WorkflowStatus::Pending] {
            let mut before = None;
            loop {
                let page = self
                    .inner
                    .store
                    .list_workflows(WorkflowQuery {
                        status: Some(status),
                        tenant: None,
                        limit: WorkflowQuery::MAX_LIMIT,
                        before,
                    })
                    .await?;
                for record in page.items.iter().filter(|r| r.updated_at < cutoff) {
                    let span = info_span!("sweep", workflow_id = %record.id, step = record.cursor.step, request_id = %record.request_id);
                    let result = if status == WorkflowStatus::Pending {
                        self.start_detached(record.id)
                            .instrument(span.clone())
                            .await
                            .map(|_| true)
                    } else {
                        self.sweep_one(record, stalled_for, busy)
                            .instrument(span.clone())
                            .await
                    };
                    let _g = span.enter();
                    match result {
                        Ok(true) => {
                            kicked += 1;
                            info!(%status, "Stalled workflow kicked.");
                        }
                        Ok(false) => {}
                        Err(error) => warn!(%error, "Could not kick a stalled workflow."),
                    }
                }
                match page.next {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
        }
        Ok(kicked)
    }

    /// One running workflow of the sweep: [`Engine::advance_or_dispatch`],
    /// leaving out busy tasks and tasks re-dispatched too often or too
    /// recently. Whether it did anything.
    async fn sweep_one(
        &self,
        record: &WorkflowRecord,
        stalled_for: Duration,
        busy: &HashSet<TaskKey>,
    ) -> Result<bool> {
        let step = record.cursor.step;
        let now = Instant::now();
        let (allowed, held): (Vec<TaskKey>, Vec<TaskKey>) = {
            let swept = self.inner.swept.lock();
            record
                .cursor
                .pending
                .iter()
                .map(|n| TaskKey::new(record.id, step, n.as_str()))
                .partition(|key| {
                    if busy.contains(key) {
                        return false;
                    }
                    match swept.get(key) {
                        None => true,
                        Some((at, count)) => {
                            *count < SWEEP_MAX_REDISPATCH
                                && now.duration_since(*at)
                                    >= stalled_for * 2u32.saturating_pow(*count)
                        }
                    }
                })
        };
        if allowed.is_empty() && !record.cursor.pending.is_empty() {
            return Ok(false);
        }
        {
            let mut inflight = self.inner.inflight.lock();
            // What this process dispatched for the step long ago and is not
            // running anywhere was lost (its delivery dropped): forget it so
            // it is dispatched again. What is held back is marked in flight
            // for the kick, so it is left alone.
            inflight.retain(|k| k.workflow != record.id || k.step != step);
            inflight.extend(held.iter().cloned());
        }
        let result = self.advance_or_dispatch(record).await;
        {
            let mut inflight = self.inner.inflight.lock();
            for key in &held {
                inflight.remove(key);
            }
        }
        result?;
        let mut swept = self.inner.swept.lock();
        for key in allowed {
            let entry = swept.entry(key).or_insert((now, 0));
            entry.0 = now;
            entry.1 += 1;
        }
        Ok(true)
    }
}

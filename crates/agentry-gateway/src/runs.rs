//! Workflows this server drives in the background, under a concurrency
//! limit.
//!
//! A submission answers 202 at once and its workflow runs in a task here
//! holding one permit of the limit; a submission that finds no permit is
//! refused with 503 before anything is stored. With
//! [`Execution::Dispatch`] the task only starts the workflow (workers
//! elsewhere carry it) and gives the permit back. On start, every workflow
//! a previous process left `pending` or `running` is picked up again (the
//! engine's run is also its resume), queueing for permits; a dispatching
//! server picks up only the `pending` ones and leaves the `running` ones to
//! the workers and the stall sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agentry_core::{WorkflowId, WorkflowQuery, WorkflowStatus};
use agentry_engine::Engine;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use crate::problem::ApiError;

/// Where a server's workflows run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Execution {
    /// Driven by this server to their end, node runs by its workers (the
    /// embedded mode), under the running limit.
    #[default]
    Local,
    /// Only started here (start transition, first tasks on the bus);
    /// workers elsewhere advance them. No permit is held past the start.
    Dispatch,
}

/// A request, made while a run is in progress, to run once more.
#[derive(Debug, Default)]
struct Again {
    rerun: bool,
    resume: bool,
}

/// Takes a workflow out of `active` when its run task ends.
struct Leave<'a> {
    runs: &'a Runs,
    id: WorkflowId,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.runs.active.lock().remove(&self.id);
    }
}

/// The background runs of one server.
pub struct Runs {
    engine: Engine,
    permits: Arc<Semaphore>,
    limit: usize,
    active: Mutex<HashMap<WorkflowId, Again>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// Drive runs here (embedded), or only start them for workers
    /// elsewhere.
    execution: Execution,
}

impl Runs {
    /// Runs at most `limit` workflows at once on `engine`.
    pub fn new(engine: Engine, limit: usize, execution: Execution) -> Arc<Runs> {
        Arc::new(Runs {
            engine,
            permits: Arc::new(Semaphore::new(limit.max(1))),
            limit: limit.max(1),
            active: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            execution,
        })
    }

    /// A permit for one more run, or 503 when the server is full.
    pub fn try_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable {
                detail: format!(
                    "the server is running its limit of {} workflows; retry later",
                    self.limit
                ),
                retry_after: Duration::from_secs(5),
            })
    }

    /// Workflows being driven here now.
    pub fn running(&self) -> usize {
        self.active.lock().len()
    }

    /// Where its workflows run.
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// The most workflows driven here at once (the configured
    /// `max_running_workflows`, at least 1).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `id` is being driven here.
    pub fn is_active(&self, id: WorkflowId) -> bool {
        self.active.lock().contains_key(&id)
    }

    /// Drives `id` in the background until it ends or awaits approval.
    /// Without a permit, the run waits for one. A workflow found cancelled
    /// or failed (stopped meanwhile by someone else) is left so. If `id` is
    /// being driven here already, that run goes round once more when it
    /// ends (an approval that lands while the previous run is finishing
    /// must not be lost); the permit is given back.
    pub fn start(self: &Arc<Self>, id: WorkflowId, permit: Option<OwnedSemaphorePermit>) {
        self.spawn(id, permit, false);
    }

    /// [`Runs::start`] for a workflow just submitted.
    pub fn start_new(self: &Arc<Self>, id: WorkflowId, permit: OwnedSemaphorePermit) {
        self.spawn(id, Some(permit), false);
    }

    /// Like [`Runs::start`], but a cancelled or failed workflow continues
    /// from its last checkpoint (an explicit resume).
    pub fn resume(self: &Arc<Self>, id: WorkflowId, permit: Option<OwnedSemaphorePermit>) {
        self.spawn(id, permit, true);
    }

    fn spawn(self: &Arc<Self>, id: WorkflowId, permit: Option<OwnedSemaphorePermit>, resume: bool) {
        if self.stop.is_cancelled() {
            return;
        }
        {
            let mut active = self.active.lock();
            if let Some(again) = active.get_mut(&id) {
                // The run in progress goes round once more when it ends.
                again.rerun = true;
                again.resume |= resume;
                return;
            }
            active.insert(id, Again::default());
        }
        let runs = self.clone();
        let span = info_span!("run", workflow_id = %id);
        self.tasks.spawn(
            async move {
                // Leaves `active` however the task ends (a panic included),
                // so the workflow can be run again.
                let _leave = Leave { runs: &runs, id };
                let permit = match permit {
                    Some(p) => Some(p),
                    None => tokio::select! {
                        _ = runs.stop.cancelled() => None,
                        p = runs.permits.clone().acquire_owned() => p.ok(),
                    },
                };
                if permit.is_none() {
                    return;
                }
                let mut resume = resume;
                loop {
                    if !runs.run_once(id, resume).await {
                        return;
                    }
                    // Asked to go round again while running?
                    let mut active = runs.active.lock();
                    match active.get_mut(&id) {
                        Some(again) if again.rerun => {
                            resume = again.resume;
                            *again = Again::default();
                        }
                        _ => return,
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One run of `id`; false when the server is stopping.
    async fn run_once(&self, id: WorkflowId, resume: bool) -> bool {
        if self.execution == Execution::Dispatch {
            let started = if resume {
                self.engine.resume_detached(id).await
            } else {
                self.engine.start_detached(id).await
            };
            match started {
                Ok(record) => info!(status = %record.status, "Workflow set going for the workers."),
                Err(error) => warn!(%error, "Workflow start failed."),
            }
            return true;
        }
        let run = async {
            if resume {
                self.engine.run(id).await
            } else {
                self.engine.run_unless_stopped(id).await
            }
        };
        tokio::select! {
            _ = self.stop.cancelled() => {
                info!("Server stopping; the workflow resumes at the next start.");
                false
            }
            result = run => {
                match result {
                    Ok(record) => info!(status = %record.status, "Workflow run ended."),
                    Err(error) => warn!(%error, "Workflow run failed."),
                }
                true
            }
        }
    }

    /// Picks up every workflow left `pending` or `running` (by a crash or a
    /// shutdown), of every tenant; with [`Execution::Dispatch`], only the
    /// `pending` ones. Returns how many.
    pub async fn resume_unfinished(self: &Arc<Self>) -> agentry_core::Result<usize> {
        let mut resumed = 0;
        // Dispatch only: running workflows are the workers' (and the stall
        // sweep's, under its lease); kicking them from every starting
        // replica would dispatch tasks that are running elsewhere. Pending
        // ones (accepted, never started) are started here: a start is
        // guarded, so two replicas cannot both start one.
        let statuses: &[WorkflowStatus] = match self.execution {
            Execution::Local => &[WorkflowStatus::Running, WorkflowStatus::Pending],
            Execution::Dispatch => &[WorkflowStatus::Pending],
        };
        for &status in statuses {
            let mut before = None;
            loop {
                let page = self
                    .engine
                    .store()
                    .list_workflows(WorkflowQuery {
                        status: Some(status),
                        tenant: None,
                        limit: 500,
                        before,
                    })
                    .await?;
                // Oldest first, so earlier submissions get permits first.
                for record in page.items.iter().rev() {
                    self.start(record.id, None);
                    resumed += 1;
                }
                match page.next {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
        }
        if resumed > 0 {
            info!(resumed, "Resumed unfinished workflows.");
        }
        Ok(resumed)
    }

    /// Stops driving: runs waiting for a permit give up, runs in progress
    /// stop waiting (their workflows stay `running` in the store and resume
    /// at the next start). Node runs in hand are the workers' business.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

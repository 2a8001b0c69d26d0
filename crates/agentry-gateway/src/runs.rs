//! Workflows this server drives in the background, under a concurrency
//! limit.
//!
//! A submission answers 202 at once and its workflow runs here, in a task
//! holding one permit of the limit; a submission that finds no permit is
//! refused with 503 before anything is stored. On start, every workflow a
//! previous process left `pending` or `running` is picked up again (the
//! engine's run is also its resume), queueing for permits.

use std::collections::HashSet;
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

/// How a run begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A workflow just submitted (pending).
    New,
    /// Any other start: only a pending or running workflow is run.
    Checked,
    /// An explicit resume: a cancelled or failed workflow continues.
    Resume,
}

/// The background runs of one server.
pub struct Runs {
    engine: Engine,
    permits: Arc<Semaphore>,
    limit: usize,
    active: Mutex<HashSet<WorkflowId>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// Drive runs here (embedded), or only start them for workers
    /// elsewhere.
    execution: Execution,
    /// Notified whenever a run leaves `active`.
    ended: tokio::sync::Notify,
}

impl Runs {
    /// Runs at most `limit` workflows at once on `engine`.
    pub fn new(engine: Engine, limit: usize, execution: Execution) -> Arc<Runs> {
        Arc::new(Runs {
            engine,
            permits: Arc::new(Semaphore::new(limit.max(1))),
            limit: limit.max(1),
            active: Mutex::new(HashSet::new()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            execution,
            ended: tokio::sync::Notify::new(),
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

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `id` is being driven here.
    pub fn is_active(&self, id: WorkflowId) -> bool {
        self.active.lock().contains(&id)
    }

    /// Drives `id` in the background until it ends or awaits approval. A
    /// workflow already driven here is left to that run (the permit is
    /// given back). Without a permit, the run waits for one. A workflow
    /// found cancelled or failed when its run begins (stopped before it
    /// started) is left so.
    pub fn start(self: &Arc<Self>, id: WorkflowId, permit: Option<OwnedSemaphorePermit>) {
        self.spawn(id, permit, Mode::Checked);
    }

    /// [`Runs::start`] for a workflow just submitted: the engine's start of
    /// a `pending` workflow already refuses one cancelled meanwhile, so no
    /// store read is needed.
    pub fn start_new(self: &Arc<Self>, id: WorkflowId, permit: OwnedSemaphorePermit) {
        self.spawn(id, Some(permit), Mode::New);
    }

    /// Like [`Runs::start`], but a cancelled or failed workflow continues
    /// from its last checkpoint (an explicit resume).
    pub fn resume(self: &Arc<Self>, id: WorkflowId, permit: Option<OwnedSemaphorePermit>) {
        self.spawn(id, permit, Mode::Resume);
    }

    /// Waits until `id` is not driven here, at most `timeout`; whether it
    /// is free.
    pub async fn wait_inactive(&self, id: WorkflowId, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if !self.is_active(id) {
                    return;
                }
                ended.await;
            }
        })
        .await
        .is_ok()
    }

    fn spawn(self: &Arc<Self>, id: WorkflowId, permit: Option<OwnedSemaphorePermit>, mode: Mode) {
        if self.stop.is_cancelled() || !self.active.lock().insert(id) {
            return;
        }
        let runs = self.clone();
        let span = info_span!("run", workflow_id = %id);
        self.tasks.spawn(
            async move {
                let permit = match permit {
                    Some(p) => Some(p),
                    None => tokio::select! {
                        _ = runs.stop.cancelled() => None,
                        p = runs.permits.clone().acquire_owned() => p.ok(),
                    },
                };
                // `Engine::run` also resumes: a workflow cancelled before
                // this run began must stay cancelled unless resumed.
                let go = permit.is_some()
                    && (mode != Mode::Checked
                        || match runs.engine.store().get_workflow(id).await {
                            Ok(r) => matches!(
                                r.status,
                                WorkflowStatus::Pending | WorkflowStatus::Running
                            ),
                            Err(error) => {
                                warn!(%error, "Cannot read the workflow; not running it.");
                                false
                            }
                        });
                if go && runs.execution == Execution::Dispatch {
                    match runs.engine.start_detached(id).await {
                        Ok(record) => {
                            info!(status = %record.status, "Workflow started for the workers.")
                        }
                        Err(error) => warn!(%error, "Workflow start failed."),
                    }
                } else if go {
                    tokio::select! {
                        _ = runs.stop.cancelled() => {
                            info!("Server stopping; the workflow resumes at the next start.");
                        }
                        result = runs.engine.run(id) => match result {
                            Ok(record) => info!(status = %record.status, "Workflow run ended."),
                            Err(error) => warn!(%error, "Workflow run failed."),
                        },
                    }
                }
                runs.active.lock().remove(&id);
                runs.ended.notify_waiters();
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Picks up every workflow left `pending` or `running` (by a crash or a
    /// shutdown), of every tenant. Returns how many.
    pub async fn resume_unfinished(self: &Arc<Self>) -> agentry_core::Result<usize> {
        let mut resumed = 0;
        for status in [WorkflowStatus::Running, WorkflowStatus::Pending] {
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

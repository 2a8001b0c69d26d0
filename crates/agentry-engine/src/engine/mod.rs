//! The scheduler: starting (= resuming) workflows, workers that run node
//! tasks and commit them, approvals, cancellation, and the outbox relay.
//!
//! The commit protocol (see `agentry_core::store`): a worker runs one node
//! task, then commits its delta, its events and, when it is the last task of
//! its super-step, the next cursor, in ONE `Store::commit_task`; only then
//! does it dispatch the next tasks and acknowledge the delivery. Events reach
//! the bus only through the outbox relay, so a published event always
//! describes committed state.
//!
//! This file is the [`Engine`] itself: its configuration, its shared state,
//! `submit` and `run` (a run drives a workflow: it starts or resumes it,
//! then waits, checking a stalled step), and the background tasks. Each
//! other concern has its own file:
//!
//! - `worker`: the worker tasks ([`WorkerHandle`]) and the delivery path,
//!   from a delivery to the node run, its commit and the settlement;
//! - `retry`: a node's attempts under its retry policy, and store and bus
//!   calls ridden out through an outage;
//! - `commit`: committing a successful task and what follows it; recording
//!   a failed node;
//! - `advance`: after an advance, and the recovery of a lost one (the
//!   decision itself is the pure [`crate::routing::advance`]); dispatching
//!   tasks;
//! - `sweep`: the stall sweep of a fleet;
//! - `control`: the guarded control actions (start, resume, approve,
//!   reject, cancel);
//! - `caches`, `relay`, `metrics`: per-workflow caches, the outbox relay,
//!   and the counters of the task path; they know nothing of the engine.

mod advance;
mod caches;
mod commit;
mod control;
mod metrics;
mod relay;
mod retry;
mod sweep;
mod worker;

pub use metrics::{EngineMetrics, MetricsSnapshot, QueueLoad};
pub use sweep::SWEEP_MAX_REDISPATCH;
pub use worker::WorkerHandle;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    Bus, Error, Event, NewWorkflow, NodeRunner, RequestId, Result, RunOptions, Store, TaskId,
    TaskKey, WorkflowId, WorkflowRecord, WorkflowStatus,
};
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::definition::WorkflowDefinition;
use caches::Caches;
use relay::{relay_loop, relay_once};

/// How an engine times, retries and routes its work. The defaults suit one
/// process; the CLI turns off `route_by_tags` in the embedded mode and
/// `redispatch_on_stall` in the distributed one.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How often `run` re-reads the workflow as a backstop to bus events
    /// (notices a cancel made by another process).
    pub poll_interval: Duration,
    /// If a running workflow's step has not moved for this long, `run`
    /// checks whether a finished step was left un-advanced (a process died
    /// between a sibling's commit and the advance) and applies the advance.
    pub stall_check_after: Duration,
    /// Per-attempt timeout of nodes that set none.
    pub default_node_timeout: Duration,
    /// Events the outbox relay moves per batch.
    pub relay_batch: u32,
    /// How often the relay looks at the outbox without being woken (events
    /// committed by other processes).
    pub relay_interval: Duration,
    /// Store attempts for one commit on transient store errors (at
    /// least; retries go on while `outage_grace` lasts).
    pub commit_attempts: u32,
    /// How long a worker keeps retrying a store or bus that is unavailable
    /// (a database restart, a broker restart) before it gives the task
    /// back to the queue. Giving a task back counts against the bus's
    /// delivery limit, so riding out an outage in place keeps tasks off
    /// the dead-letter queue.
    pub outage_grace: Duration,
    /// Whether a tagged node's tasks go to their variant queue
    /// (`developer.python`, served only by workers with those tags) or to
    /// the plain role queue. Off in the embedded mode, whose in-process
    /// workers serve every variant.
    pub route_by_tags: bool,
    /// Whether `run`'s stall check also re-dispatches the pending tasks of
    /// a stuck step (after a second check). On in one process, where
    /// `run` knows every worker; off in the distributed mode, where the
    /// tasks may be running in other processes and the stall sweep
    /// ([`Engine::sweep_stalled`]), which knows what live workers run,
    /// does it instead.
    pub redispatch_on_stall: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            poll_interval: Duration::from_millis(500),
            stall_check_after: Duration::from_secs(5),
            default_node_timeout: Duration::from_secs(3600),
            relay_batch: 1024,
            relay_interval: Duration::from_secs(1),
            commit_attempts: 3,
            outage_grace: Duration::from_secs(60),
            route_by_tags: true,
            redispatch_on_stall: true,
        }
    }
}

/// What [`Engine::submit`] needs.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Requirement text (non-empty).
    pub requirements: String,
    /// Caller's request id; a second submit with the same id returns the
    /// first workflow. None: a fresh one.
    pub request_id: Option<RequestId>,
    /// The graph to run (its source text is snapshotted in the store).
    pub definition: WorkflowDefinition,
    /// What the run is started with (stored, and passed to every node).
    pub options: RunOptions,
    /// Owning tenant.
    /// `None` for the command line's workflows; the gateway sets the
    /// caller's, which decides whose artifacts the agents make.
    pub tenant: Option<String>,
}

/// The workflow engine. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

type Waiters = Arc<Mutex<HashMap<WorkflowId, Arc<Notify>>>>;

struct Inner {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    runner: Arc<dyn NodeRunner>,
    config: EngineConfig,
    caches: Caches,
    cancels: Mutex<HashMap<WorkflowId, CancellationToken>>,
    waiters: Waiters,
    /// Tasks dispatched by this process and not yet settled here.
    inflight: Mutex<HashSet<TaskKey>>,
    /// Tasks the stall sweep re-dispatched: when last, and how often.
    swept: Mutex<HashMap<TaskKey, (Instant, u32)>>,
    relay_wake: Arc<Notify>,
    /// The outbox relay's task, awaited by [`Engine::close`].
    relay_task: Mutex<Option<JoinHandle<()>>>,
    progress_tx: Mutex<Option<mpsc::UnboundedSender<Event>>>,
    background_started: AtomicBool,
    shutdown: CancellationToken,
    metrics: EngineMetrics,
}

impl Inner {
    /// Drops a workflow's per-workflow state once its run ended.
    fn forget(&self, id: WorkflowId) {
        self.caches.forget(id);
        self.cancels.lock().remove(&id);
        self.inflight.lock().retain(|k| k.workflow != id);
        self.swept.lock().retain(|k, _| k.workflow != id);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What starting a workflow does with one that failed or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfStopped {
    /// Resume it from its last checkpoint (a failed node runs again).
    Resume,
    /// Leave it as it is: a stop made by someone else stands.
    Leave,
}

fn conflict_is_benign(error: &Error) -> bool {
    matches!(error, Error::Conflict(_))
}

impl Engine {
    /// An engine over the given adapters. Background tasks (outbox relay,
    /// event router, progress publisher) start on first use, inside the
    /// caller's Tokio runtime.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        runner: Arc<dyn NodeRunner>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            inner: Arc::new(Inner {
                store,
                bus,
                runner,
                config,
                caches: Caches::default(),
                cancels: Mutex::new(HashMap::new()),
                waiters: Arc::new(Mutex::new(HashMap::new())),
                inflight: Mutex::new(HashSet::new()),
                swept: Mutex::new(HashMap::new()),
                relay_wake: Arc::new(Notify::new()),
                relay_task: Mutex::new(None),
                progress_tx: Mutex::new(None),
                background_started: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
                metrics: EngineMetrics::default(),
            }),
        }
    }

    /// The store it commits to, for callers that read workflows (the CLI's
    /// `workflows` commands, the gateway).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The bus it dispatches tasks and publishes events on.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// Task-path counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Load of every queue this process's workers consume.
    pub fn queue_loads(&self) -> Vec<QueueLoad> {
        self.inner.metrics.queue_loads()
    }

    /// The tasks this process's workers are processing now (see
    /// [`EngineMetrics::running_tasks`]).
    pub fn running_tasks(&self) -> Vec<TaskId> {
        self.inner.metrics.running_tasks()
    }

    /// Every agent-role queue name, for workers that serve all roles
    /// (embedded mode).
    pub fn all_queues() -> Vec<String> {
        agentry_core::AgentRole::ALL
            .iter()
            .map(|r| r.as_str().to_string())
            .collect()
    }

    /// Live events from the bus (committed events via the outbox relay,
    /// plus `agent.task.failed` attempts and `agent.progress`).
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        self.inner.bus.subscribe()
    }

    /// Creates a workflow in `pending` status (idempotent by request id).
    /// It does not run; call [`Engine::run`].
    pub async fn submit(&self, sub: Submission) -> Result<WorkflowRecord> {
        self.ensure_background();
        let request_id = sub.request_id.unwrap_or_else(RequestId::generate);
        let def = Arc::new(sub.definition);
        let record = self
            .inner
            .store
            .create_workflow(NewWorkflow {
                id: WorkflowId::new(),
                request_id,
                requirements: sub.requirements,
                workflow_name: def.name.clone(),
                definition: def.source().to_string(),
                options: sub.options,
                tenant: sub.tenant,
            })
            .await?;
        self.inner.caches.remember_definition(&def, &record);
        info!(workflow_id = %record.id, request_id = %record.request_id, "Workflow submitted.");
        if record.status == WorkflowStatus::Pending {
            self.inner.caches.remember_submitted(&record);
        }
        Ok(record)
    }

    /// Sets a workflow going and returns at once, waiting for nothing: a
    /// `pending` one is started (the start transition and its first tasks
    /// on the bus), and a `running` one gets the tasks of its current step
    /// that are missing dispatched (after an approval or a crash); a
    /// `failed` or `cancelled` one is left as it is (see
    /// [`Engine::resume_detached`]). Workers, here or in other processes,
    /// carry it from there: each commit dispatches the next step. This is
    /// the whole job of a gateway whose workers run elsewhere.
    pub async fn start_detached(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.set_going(id, IfStopped::Leave).await
    }

    /// [`Engine::start_detached`], except that a `failed` or `cancelled`
    /// workflow continues from its last checkpoint (a failed node runs
    /// again), as with [`Engine::run`].
    pub async fn resume_detached(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.set_going(id, IfStopped::Resume).await
    }

    async fn set_going(&self, id: WorkflowId, if_stopped: IfStopped) -> Result<WorkflowRecord> {
        self.ensure_background();
        let record = match self.inner.caches.take_submitted(id) {
            Some(r) => r,
            None => self.inner.store.get_workflow(id).await?,
        };
        let span = info_span!("workflow", workflow_id = %id, request_id = %record.request_id);
        async {
            let attempt = match record.status {
                WorkflowStatus::Pending => self.start(&record).await.map(|r| (r, true)),
                WorkflowStatus::Failed | WorkflowStatus::Cancelled
                    if if_stopped == IfStopped::Resume =>
                {
                    self.resume(&record).await.map(|r| (r, false))
                }
                WorkflowStatus::Running => Ok((record.clone(), false)),
                _ => return Ok(record.clone()),
            };
            let (now, fresh) = match attempt {
                Ok(r) => r,
                // Someone else moved it first; they own what happens next.
                Err(e) if conflict_is_benign(&e) => return self.inner.store.get_workflow(id).await,
                Err(e) => return Err(e),
            };
            if now.status == WorkflowStatus::Running {
                if fresh {
                    let def = self.inner.caches.definition(&now)?;
                    if let Err(error) = self.dispatch(&now, &def, &now.cursor.pending).await {
                        // Started and stored: the stall sweep dispatches
                        // what is missing once the bus is back.
                        warn!(%error, "Started, but its first tasks are not dispatched yet.");
                    }
                } else {
                    self.advance_or_dispatch(&now).await?;
                }
            }
            Ok(now)
        }
        .instrument(span)
        .await
    }

    /// Drives a workflow until it is terminal or awaiting approval, and
    /// returns its record. This is also resume: a `pending` workflow starts
    /// from its empty checkpoint, a `failed` or `cancelled` one continues
    /// from its last checkpoint (a failed node runs again), a `running` one
    /// (after a crash) gets its missing tasks dispatched and any finished but
    /// un-advanced step advanced. Needs workers ([`Engine::start_workers`]),
    /// here or in another process.
    pub async fn run(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.run_with(id, IfStopped::Resume).await
    }

    /// [`Engine::run`], except that a `failed` or `cancelled` workflow is
    /// returned as it is, never resumed: for a process that runs workflows
    /// on its own initiative (a server after a submission, an approval or a
    /// restart), where a stop made meanwhile by someone else must stand.
    pub async fn run_unless_stopped(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.run_with(id, IfStopped::Leave).await
    }

    async fn run_with(&self, id: WorkflowId, if_stopped: IfStopped) -> Result<WorkflowRecord> {
        self.ensure_background();
        // A record `submit` just created is still pending unless someone
        // started it meanwhile; then starting it is a conflict, and `drive`
        // reads the store.
        let record = match self.inner.caches.take_submitted(id) {
            Some(r) => r,
            None => self.inner.store.get_workflow(id).await?,
        };
        let span = info_span!("workflow", workflow_id = %id, request_id = %record.request_id);
        self.run_inner(record, if_stopped).instrument(span).await
    }

    async fn run_inner(
        &self,
        record: WorkflowRecord,
        if_stopped: IfStopped,
    ) -> Result<WorkflowRecord> {
        let id = record.id;
        let notify = self.waiter(id);
        let result = self.drive(record, &notify, if_stopped).await;
        {
            // Another `run` of the same workflow in this process may share
            // the waiter (map + ours = 2 references when we are the last).
            let mut waiters = self.inner.waiters.lock();
            if Arc::strong_count(&notify) <= 2 {
                waiters.remove(&id);
            }
        }
        if let Ok(r) = &result {
            if r.status != WorkflowStatus::Running {
                self.forget(id);
            }
        }
        result
    }

    async fn drive(
        &self,
        mut record: WorkflowRecord,
        notify: &Notify,
        if_stopped: IfStopped,
    ) -> Result<WorkflowRecord> {
        let id = record.id;
        // Armed before anything is dispatched, so an end of the run that
        // happens before the loop below waits still wakes it.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut fresh = false;
        loop {
            let attempt = match record.status {
                WorkflowStatus::Pending => {
                    fresh = true;
                    self.start(&record).await
                }
                WorkflowStatus::Failed | WorkflowStatus::Cancelled
                    if if_stopped == IfStopped::Resume =>
                {
                    self.resume(&record).await
                }
                WorkflowStatus::Running => break,
                _ => return Ok(record),
            };
            match attempt {
                Ok(r) => {
                    record = r;
                    break;
                }
                // Someone else moved it; look again.
                Err(e) if conflict_is_benign(&e) => {
                    let was_start = record.status == WorkflowStatus::Pending;
                    fresh = false;
                    record = self.inner.store.get_workflow(id).await?;
                    // Stopped before it started (a cancel between submit and
                    // run): this run is a start, not a resume, so it stays
                    // stopped.
                    if was_start
                        && matches!(
                            record.status,
                            WorkflowStatus::Cancelled
                                | WorkflowStatus::Failed
                                | WorkflowStatus::Rejected
                        )
                    {
                        return Ok(record);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if record.status != WorkflowStatus::Running {
            return Ok(record);
        }
        if fresh {
            let def = self.inner.caches.definition(&record)?;
            if let Err(error) = self.dispatch(&record, &def, &record.cursor.pending).await {
                // The stall check below dispatches them again.
                warn!(%error, "Started, but its first tasks are not dispatched yet.");
            }
        } else {
            self.advance_or_dispatch(&record).await?;
        }
        let mut last_step = record.cursor.step;
        let mut last_change = Instant::now();
        let mut stalls = 0u32;
        // The first pass looks at the record just written; later passes
        // read the store, after a wake-up (an event that ends the run) or
        // the periodic poll (the backstop: a cancel by another process, a
        // stalled step).
        let mut known = Some(record);
        loop {
            let r = match known.take() {
                Some(r) => r,
                None => {
                    self.ride("store: read workflow", || self.inner.store.get_workflow(id))
                        .await?
                }
            };
            if r.status != WorkflowStatus::Running {
                info!(status = %r.status, step = r.cursor.step, "Workflow run ended.");
                return Ok(r);
            }
            if r.cursor.step != last_step {
                last_step = r.cursor.step;
                last_change = Instant::now();
                stalls = 0;
            } else if last_change.elapsed() >= self.inner.config.stall_check_after {
                // First look for a finished but un-advanced step; if the step
                // is still stuck at the next check, also dispatch its missing
                // tasks (an advance whose dispatcher died). Tasks in flight
                // in this process are never dispatched twice, and the store
                // refuses a second commit of the same task.
                stalls += 1;
                debug!(
                    step = last_step,
                    stalls, "No progress for a while; checking the step."
                );
                let checked = if stalls > 1 && self.inner.config.redispatch_on_stall {
                    self.advance_or_dispatch(&r).await
                } else {
                    self.advance_if_finished(&r).await
                };
                if let Err(error) = checked {
                    warn!(%error, "Stall check failed.");
                }
                last_change = Instant::now();
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
            }
            // Re-armed before the next read, so an end after that read
            // still wakes the next wait.
            notified.set(notify.notified());
            notified.as_mut().enable();
        }
    }

    fn cancel_token(&self, id: WorkflowId) -> CancellationToken {
        self.inner.cancels.lock().entry(id).or_default().clone()
    }

    fn waiter(&self, id: WorkflowId) -> Arc<Notify> {
        self.inner.waiters.lock().entry(id).or_default().clone()
    }

    fn wake(&self, id: WorkflowId) {
        if let Some(n) = self.inner.waiters.lock().get(&id) {
            n.notify_waiters();
        }
    }

    /// Drops per-workflow caches once a run ended.
    fn forget(&self, id: WorkflowId) {
        self.inner.forget(id);
    }

    /// Stops the background tasks (relay, event router, progress
    /// publisher), waiting for the relay to finish the pass it is in, then
    /// publishes what is left in the outbox. Call it before the process
    /// exits; workers are stopped separately with [`WorkerHandle::shutdown`].
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        // The relay finishes the pass it is in (so no store call of it is
        // left in flight when the caller drops the store), then the last
        // pass here publishes the rest.
        let relay = self.inner.relay_task.lock().take();
        if let Some(task) = relay {
            if let Err(error) = task.await {
                warn!(%error, "The outbox relay task failed.");
            }
        }
        relay_once(
            self.inner.store.as_ref(),
            self.inner.bus.as_ref(),
            self.inner.config.relay_batch.max(1),
        )
        .await;
    }

    /// Starts the outbox relay, the event router (wakes `run` on events that
    /// end a run, including ones from other processes) and the progress
    /// publisher, once.
    fn ensure_background(&self) {
        if self.inner.background_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.inner.store.clone();
        let bus = self.inner.bus.clone();
        let wake = self.inner.relay_wake.clone();
        let shutdown = self.inner.shutdown.clone();
        let batch = self.inner.config.relay_batch.max(1);
        let interval = self.inner.config.relay_interval;
        *self.inner.relay_task.lock() = Some(tokio::spawn(relay_loop(
            store,
            bus.clone(),
            wake,
            shutdown.clone(),
            batch,
            interval,
        )));

        let waiters = self.inner.waiters.clone();
        let weak = Arc::downgrade(&self.inner);
        let mut events = bus.subscribe();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = sd.cancelled() => return,
                    ev = events.next() => ev,
                };
                let Some(ev) = ev else { return };
                if ev.kind.ends_run() {
                    if let Some(n) = waiters.lock().get(&ev.workflow_id) {
                        n.notify_waiters();
                    }
                    // The run ended (here or in another process): drop its
                    // caches, unless a `run` here still waits on it (it
                    // forgets them itself when it returns).
                    if let Some(inner) = weak.upgrade() {
                        if !inner.waiters.lock().contains_key(&ev.workflow_id) {
                            inner.forget(ev.workflow_id);
                        }
                    }
                }
            }
        });

        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        *self.inner.progress_tx.lock() = Some(tx);
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = rx.recv() => ev,
                };
                let Some(ev) = ev else { return };
                if let Err(error) = bus.publish(&[ev]).await {
                    debug!(%error, "Could not publish progress.");
                }
            }
        });
    }
}

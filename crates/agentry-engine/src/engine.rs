//! The scheduler: starting (= resuming) workflows, workers that run node
//! tasks and commit them, approvals, cancellation, and the outbox relay.
//!
//! The commit protocol (see `agentry_core::store`): a worker runs one node
//! task, then commits its delta, its events and, when it is the last task of
//! its super-step, the next cursor, in ONE `Store::commit_task`; only then
//! does it dispatch the next tasks and acknowledge the delivery. Events reach
//! the bus only through the outbox relay, so a published event always
//! describes committed state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    Advance, ArtifactOwner, Bus, Checkpoint, CommitOutcome, Cursor, Delivery, Error, ErrorClass,
    Event, EventKind, NewWorkflow, NodeContext, NodeOutput, NodeRunner, Progress, ProgressSink,
    RequestId, Result, StateDelta, Store, TaskCommit, TaskId, TaskKey, TaskMessage, Transition,
    WorkflowErrorEntry, WorkflowId, WorkflowRecord, WorkflowState, WorkflowStatus,
};
use chrono::Utc;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::definition::{NodeDef, WorkflowDefinition};
use crate::routing::{self, assigned_events, fold_step_start, task_checkpoints_at, StepAdvance};

/// Engine settings.
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
    pub request_id: Option<String>,
    /// The graph to run (its source text is snapshotted in the store).
    pub definition: WorkflowDefinition,
    /// Per-run options, free-form JSON (passed to nodes).
    pub options: Value,
    /// Owning tenant.
    pub tenant: Option<String>,
}

/// Counters of the task path, for the benchmark and metrics.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    tasks_committed: AtomicU64,
    task_ns: AtomicU64,
    node_ns: AtomicU64,
    attempts_failed: AtomicU64,
    queues: Mutex<BTreeMap<String, QueueLoad>>,
    /// Tasks being processed by this process's workers.
    running: Mutex<BTreeSet<TaskId>>,
}

/// Load of one queue (an agent role) in this process: the agent manager's
/// view of the embedded workers, shown by `GET /v1/agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueLoad {
    /// Queue (agent role) name.
    pub queue: String,
    /// Worker tasks consuming it.
    pub workers: u32,
    /// Deliveries being processed now.
    pub in_flight: u32,
    /// Deliveries settled by acknowledgement (committed or already done).
    pub completed: u64,
    /// Deliveries given back or dead-lettered.
    pub failed: u64,
    /// When a delivery of it last started here.
    pub last_task_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl EngineMetrics {
    fn queue(&self, name: &str, f: impl FnOnce(&mut QueueLoad)) {
        let mut queues = self.queues.lock();
        let load = queues.entry(name.to_string()).or_insert_with(|| QueueLoad {
            queue: name.to_string(),
            ..QueueLoad::default()
        });
        f(load);
    }

    /// Per-queue load, by queue name.
    pub fn queue_loads(&self) -> Vec<QueueLoad> {
        self.queues.lock().values().cloned().collect()
    }

    /// The tasks this process's workers are processing now.
    pub fn running_tasks(&self) -> Vec<TaskId> {
        self.running.lock().iter().cloned().collect()
    }
}

/// A snapshot of [`EngineMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Tasks whose commit this process made.
    pub tasks_committed: u64,
    /// Sum over those tasks of the time from dequeue to ack, in ns.
    pub task_ns: u64,
    /// Sum over those tasks of the time inside `NodeRunner::run` (all
    /// attempts), in ns.
    pub node_ns: u64,
    /// Failed node attempts (retried or not).
    pub attempts_failed: u64,
}

impl EngineMetrics {
    /// Current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            tasks_committed: self.tasks_committed.load(Ordering::Relaxed),
            task_ns: self.task_ns.load(Ordering::Relaxed),
            node_ns: self.node_ns.load(Ordering::Relaxed),
            attempts_failed: self.attempts_failed.load(Ordering::Relaxed),
        }
    }
}

/// The workflow engine. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Per-workflow cache: the parsed graph, the state at the start of the
/// current step, and the record as this process last wrote it.
struct WfCache {
    def: Arc<WorkflowDefinition>,
    start_state: Option<(u64, Arc<WorkflowState>)>,
    /// The workflow row right after the transition or advance that this
    /// process committed and that dispatched the current step's tasks. A
    /// worker here uses it instead of reading the store; it may be stale
    /// only if another process moved the workflow since, and then the
    /// store's commit guard refuses the task's commit (nothing is written).
    record: Option<Arc<WorkflowRecord>>,
}

/// Most times the stall sweep re-dispatches one task (see
/// [`Engine::sweep_stalled`]).
pub const SWEEP_MAX_REDISPATCH: u32 = 3;

/// The most records [`Engine::submit`] keeps for the [`Engine::run`] that
/// usually follows (beyond it the map is cleared: it only saves a read).
const SUBMITTED_CAP: usize = 4096;

type Waiters = Arc<Mutex<HashMap<WorkflowId, Arc<Notify>>>>;

/// The consumer stream the worker tasks of one `start_workers` share.
type SharedStream = Arc<tokio::sync::Mutex<Option<BoxStream<'static, Result<Delivery>>>>>;

struct Inner {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    runner: Arc<dyn NodeRunner>,
    config: EngineConfig,
    /// Parsed definitions by source text (many workflows share one).
    defs: Mutex<HashMap<String, Arc<WorkflowDefinition>>>,
    cache: Mutex<HashMap<WorkflowId, WfCache>>,
    /// Records just created by `submit`, taken by `run` (see
    /// [`SUBMITTED_CAP`]).
    submitted: Mutex<HashMap<WorkflowId, WorkflowRecord>>,
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

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Running workers. Dropping the handle detaches them (they run until the
/// runtime stops); [`WorkerHandle::shutdown`] stops them gracefully and
/// [`WorkerHandle::abort`] kills them like a dead process (their unsettled
/// deliveries go back to the queue).
pub struct WorkerHandle {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl WorkerHandle {
    /// A handle of no workers (a process whose workers run elsewhere).
    pub fn none() -> WorkerHandle {
        WorkerHandle {
            tasks: Vec::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Stops taking deliveries, lets the ones in hand finish, and waits.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Stops taking deliveries and waits up to `grace` for the ones in
    /// hand to settle; workers still busy then are killed (their
    /// deliveries go back unsettled, and the tasks run again elsewhere or
    /// at the next start). Returns whether every worker stopped in time.
    pub async fn shutdown_within(mut self, grace: Duration) -> bool {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        let mut clean = true;
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                clean = false;
            }
        }
        clean
    }

    /// Kills the workers now (tasks in flight are dropped unsettled).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Number of worker tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are no worker tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Takes a worker set's count off its queues once its last task ends
/// (shut down, aborted or stopped on a bus error).
struct WorkersGone {
    engine: std::sync::Weak<Inner>,
    queues: Vec<String>,
    count: u32,
}

impl Drop for WorkersGone {
    fn drop(&mut self) {
        if let Some(inner) = self.engine.upgrade() {
            for queue in &self.queues {
                inner
                    .metrics
                    .queue(queue, |q| q.workers = q.workers.saturating_sub(self.count));
            }
        }
    }
}

/// How to settle a delivery.
enum Settle {
    Ack,
    Requeue,
    DeadLetter,
}

/// Publishes `agent.progress` events on the bus (never stored).
struct BusProgress {
    tx: Option<mpsc::UnboundedSender<Event>>,
    request_id: Option<String>,
}

impl ProgressSink for BusProgress {
    fn report(&self, progress: Progress) {
        if let Some(tx) = &self.tx {
            let event = Event::task(
                EventKind::AgentProgress,
                &progress.task,
                json!({ "message": progress.message, "fraction": progress.fraction }),
            )
            .with_request_id(self.request_id.clone());
            let _ = tx.send(event);
        }
    }
}

fn conflict_is_benign(error: &Error) -> bool {
    matches!(error, Error::Conflict(_))
}

/// Runs `op` until it succeeds, fails with an error that is not
/// retryable, `grace` has passed since the first failure, or `stop` is
/// cancelled; backs off from 50 ms to 2 s between tries. `what` names the
/// call in the log (one warning per outage, one line when it is over).
async fn ride_out<T, F, Fut>(
    what: &str,
    grace: Duration,
    stop: &CancellationToken,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut first_failure: Option<Instant> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(value) => {
                if let Some(t) = first_failure {
                    info!(
                        what,
                        after_ms = t.elapsed().as_millis() as u64,
                        "Available again."
                    );
                }
                return Ok(value);
            }
            Err(error) if error.class().is_retryable() && !stop.is_cancelled() => {
                let since = *first_failure.get_or_insert_with(Instant::now);
                let left = grace.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(error);
                }
                if since.elapsed() < delay {
                    warn!(%error, what, grace_s = grace.as_secs(), "Unavailable; retrying.");
                } else {
                    debug!(%error, what, "Still unavailable; retrying.");
                }
                tokio::select! {
                    _ = stop.cancelled() => return Err(error),
                    _ = tokio::time::sleep(delay.min(left)) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error),
        }
    }
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
                defs: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
                submitted: Mutex::new(HashMap::new()),
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

    /// [`ride_out`] with this engine's grace and shutdown.
    async fn ride<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        ride_out(
            what,
            self.inner.config.outage_grace,
            &self.inner.shutdown,
            op,
        )
        .await
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The bus.
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

    /// Recovers workflows that no process is moving. Running ones whose
    /// record has not changed for `stalled_for`: a finished but un-advanced
    /// step is advanced, and the pending tasks that have no checkpoint and
    /// are not in `busy` are dispatched again. `busy` holds the tasks that
    /// live workers report running, and those of dead-lettered tasks (a poison task stays in the dead-letter
    /// queue until someone replays it). A task is re-dispatched at most
    /// [`SWEEP_MAX_REDISPATCH`] times, the n-th time only `stalled_for *
    /// 2^n` after the one before, so a task that is merely queued (a
    /// backlog, a variant no worker serves) gets a bounded number of
    /// copies. Pending ones older than `stalled_for` (accepted, but their
    /// start was lost) are started. This is what makes a dispatch lost to a
    /// dead process or a broker outage harmless when no `run` waits on the
    /// workflow. Run it from one process at a time (a lease); a task
    /// dispatched twice is still committed once. Returns how many
    /// workflows it kicked or started.
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
                    .list_workflows(agentry_core::WorkflowQuery {
                        status: Some(status),
                        tenant: None,
                        limit: agentry_core::WorkflowQuery::MAX_LIMIT,
                        before,
                    })
                    .await?;
                for record in page.items.iter().filter(|r| r.updated_at < cutoff) {
                    let span = info_span!("sweep", workflow_id = %record.id, step = record.cursor.step, request_id = %record.request_id);
                    let result = if status == WorkflowStatus::Pending {
                        self.start_detached(record.id, false)
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

    /// One running workflow of the sweep: [`Engine::kick`] with dispatch,
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
        let result = self.kick(record, true).await;
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
        let request_id = sub
            .request_id
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| RequestId::generate().0);
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
        if record.definition == def.source() {
            self.inner
                .defs
                .lock()
                .entry(record.definition.clone())
                .or_insert_with(|| def.clone());
        }
        info!(workflow_id = %record.id, request_id = %record.request_id, "Workflow submitted.");
        if record.status == WorkflowStatus::Pending {
            let mut submitted = self.inner.submitted.lock();
            if submitted.len() >= SUBMITTED_CAP {
                submitted.clear();
            }
            submitted.insert(record.id, record.clone());
        }
        Ok(record)
    }

    /// Sets a workflow going and returns at once, waiting for nothing: a
    /// `pending` one is started (the start transition and its first tasks
    /// on the bus), a `running` one gets the tasks of its current step that
    /// are missing dispatched (after an approval or a crash), and a
    /// `failed` or `cancelled` one continues from its last checkpoint when
    /// `resume_stopped` (else it is left as it is). Workers, here or in
    /// other processes, carry it from there: each commit dispatches the
    /// next step. This is the whole job of a gateway whose workers run
    /// elsewhere.
    pub async fn start_detached(
        &self,
        id: WorkflowId,
        resume_stopped: bool,
    ) -> Result<WorkflowRecord> {
        self.ensure_background();
        let submitted = self.inner.submitted.lock().remove(&id);
        let record = match submitted {
            Some(r) => r,
            None => self.inner.store.get_workflow(id).await?,
        };
        let span = info_span!("workflow", workflow_id = %id, request_id = %record.request_id);
        async {
            let attempt = match record.status {
                WorkflowStatus::Pending => self.start(&record).await.map(|r| (r, true)),
                WorkflowStatus::Failed | WorkflowStatus::Cancelled if resume_stopped => {
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
                    let def = self.definition_for(&now)?;
                    if let Err(error) = self.dispatch_nodes(&now, &def, &now.cursor.pending).await {
                        // Started and stored: the stall sweep dispatches
                        // what is missing once the bus is back.
                        warn!(%error, "Started, but its first tasks are not dispatched yet.");
                    }
                } else {
                    self.kick(&now, true).await?;
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
        self.run_with(id, true).await
    }

    /// [`Engine::run`], except that a `failed` or `cancelled` workflow is
    /// returned as it is, never resumed: for a process that runs workflows
    /// on its own initiative (a server after a submission, an approval or a
    /// restart), where a stop made meanwhile by someone else must stand.
    pub async fn run_unless_stopped(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.run_with(id, false).await
    }

    async fn run_with(&self, id: WorkflowId, resume_stopped: bool) -> Result<WorkflowRecord> {
        self.ensure_background();
        // A record `submit` just created is still pending unless someone
        // started it meanwhile; then starting it is a conflict, and `drive`
        // reads the store.
        let submitted = self.inner.submitted.lock().remove(&id);
        let record = match submitted {
            Some(r) => r,
            None => self.inner.store.get_workflow(id).await?,
        };
        let span = info_span!("workflow", workflow_id = %id, request_id = %record.request_id);
        self.run_inner(record, resume_stopped)
            .instrument(span)
            .await
    }

    async fn run_inner(
        &self,
        record: WorkflowRecord,
        resume_stopped: bool,
    ) -> Result<WorkflowRecord> {
        let id = record.id;
        let notify = self.waiter(id);
        let result = self.drive(record, &notify, resume_stopped).await;
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
        resume_stopped: bool,
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
                WorkflowStatus::Failed | WorkflowStatus::Cancelled if resume_stopped => {
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
            let def = self.definition_for(&record)?;
            if let Err(error) = self
                .dispatch_nodes(&record, &def, &record.cursor.pending)
                .await
            {
                // The stall check below dispatches them again.
                warn!(%error, "Started, but its first tasks are not dispatched yet.");
            }
        } else {
            self.kick(&record, true).await?;
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
                let redispatch = stalls > 1 && self.inner.config.redispatch_on_stall;
                if let Err(error) = self.kick(&r, redispatch).await {
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

    /// Pending -> Running at step 0 with the start nodes.
    async fn start(&self, record: &WorkflowRecord) -> Result<WorkflowRecord> {
        let def = self.definition_for(record)?;
        let cursor = Cursor {
            step: 0,
            pending: def.start.clone(),
            ..Cursor::default()
        };
        let rid = Some(record.request_id.as_str());
        let mut events = vec![Event::workflow(
            EventKind::WorkflowStarted,
            record.id,
            json!({ "workflow": def.name, "start": def.start }),
        )
        .with_request_id(rid.map(String::from))];
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
        self.set_start_state(r.id, &def, 0, Arc::new(st));
        self.set_record(&def, &r);
        info!("Workflow started.");
        Ok(r)
    }

    /// Failed / Cancelled -> Running from the last checkpoint.
    async fn resume(&self, record: &WorkflowRecord) -> Result<WorkflowRecord> {
        let def = self.definition_for(record)?;
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
        let rid = Some(record.request_id.as_str());
        let mut events = vec![Event::workflow(
            EventKind::WorkflowResumed,
            record.id,
            json!({ "from": record.status, "step": cursor.step, "pending": cursor.pending }),
        )
        .with_request_id(rid.map(String::from))];
        if status == WorkflowStatus::Running {
            events.extend(assigned_events(&cursor, record.id, rid));
        } else {
            events.push(
                Event::workflow(
                    EventKind::WorkflowAwaitingApproval,
                    record.id,
                    json!({ "pending": cursor.pending }),
                )
                .with_request_id(rid.map(String::from)),
            );
        }
        self.invalidate_state(record.id);
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
        self.set_record(&def, &r);
        info!(from = %record.status, step = r.cursor.step, "Workflow resumed.");
        Ok(r)
    }

    /// Applies a guarded control action and wakes the outbox relay for the
    /// events it committed.
    async fn apply_transition(&self, id: WorkflowId, t: Transition) -> Result<WorkflowRecord> {
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
            Ok(r) => self.kick(&r, true).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &recovered {
            warn!(%error, "Recovery after a refused commit failed.");
        }
        recovered
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
        let rid = Some(record.request_id.as_str());
        let mut events = vec![Event::workflow(
            EventKind::WorkflowApproved,
            id,
            json!({ "approved": cursor.pending, "note": note }),
        )
        .with_request_id(rid.map(String::from))];
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

    /// Starts `concurrency` worker tasks, each a competing consumer of the
    /// named queues (agent role names; see [`Engine::all_queues`]).
    pub async fn start_workers(&self, queues: Vec<String>, concurrency: usize) -> WorkerHandle {
        self.ensure_background();
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for queue in &queues {
            self.inner
                .metrics
                .queue(queue, |q| q.workers += concurrency.max(1) as u32);
        }
        let gone = Arc::new(WorkersGone {
            engine: Arc::downgrade(&self.inner),
            queues: queues.clone(),
            count: concurrency.max(1) as u32,
        });
        // One consumer stream shared by the worker tasks: a free task takes
        // the next delivery whichever queue it came from, so a delivery the
        // bus handed this process (prefetch) never waits behind one busy
        // task while another is idle.
        let shared: SharedStream = Arc::new(tokio::sync::Mutex::new(None));
        for worker in 0..concurrency.max(1) {
            let gone = gone.clone();
            let engine = self.clone();
            let queues = queues.clone();
            let stop = stop.clone();
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let _gone = gone;
                loop {
                    let next = {
                        let mut guard = tokio::select! {
                            _ = stop.cancelled() => break,
                            g = shared.lock() => g,
                        };
                        if guard.is_none() {
                            match engine.consume_with_retry(&queues, &stop, worker).await {
                                Some(s) => *guard = Some(s),
                                None => break,
                            }
                        }
                        let Some(stream) = guard.as_mut() else { break };
                        let next = tokio::select! {
                            _ = stop.cancelled() => break,
                            n = stream.next() => n,
                        };
                        if next.is_none() {
                            // The bus ended this stream: consume again.
                            *guard = None;
                        }
                        next
                    };
                    match next {
                        None => {}
                        Some(Err(error)) => {
                            warn!(%error, worker, "Delivery failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Some(Ok(delivery)) => engine.handle_delivery(delivery).await,
                    }
                }
            }));
        }
        WorkerHandle { tasks, stop }
    }

    /// Consumes `queues`, retrying a bus that cannot be consumed from now
    /// (a broker restarting) with backoff. None when stopped or refused for
    /// good.
    async fn consume_with_retry(
        &self,
        queues: &[String],
        stop: &CancellationToken,
        worker: usize,
    ) -> Option<BoxStream<'static, Result<Delivery>>> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.inner.bus.consume(queues).await {
                Ok(s) => return Some(s),
                Err(error) if error.class().is_retryable() => {
                    warn!(%error, worker, "Worker cannot consume yet; retrying.");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    warn!(%error, worker, "Worker cannot consume; it stops.");
                    return None;
                }
            }
        }
    }

    // ---------------------------------------------------------------- worker

    async fn handle_delivery(&self, delivery: Delivery) {
        let started = Instant::now();
        let Delivery {
            message,
            redelivered,
            ack,
        } = delivery;
        let task = message.task.clone();
        let queue = message.queue.clone();
        self.inner.metrics.queue(&queue, |q| {
            q.in_flight += 1;
            q.last_task_at = Some(chrono::Utc::now());
        });
        self.inner.metrics.running.lock().insert(task.clone());
        let span = info_span!(
            "task",
            workflow_id = %task.key.workflow,
            step = task.key.step,
            node = %task.key.node,
            attempt = task.attempt,
            request_id = message.request_id.as_deref().unwrap_or(""),
        );
        let (settle, node_ns, committed) = self
            .process(&message, redelivered)
            .instrument(span.clone())
            .await;
        let settled = match settle {
            Settle::Ack => ack.ack().await,
            Settle::Requeue => ack.nack(true).await,
            Settle::DeadLetter => ack.nack(false).await,
        };
        if !matches!(settle, Settle::Requeue) {
            self.inner.inflight.lock().remove(&task.key);
        }
        self.inner.metrics.running.lock().remove(&task);
        self.inner.metrics.queue(&queue, |q| {
            q.in_flight = q.in_flight.saturating_sub(1);
            match settle {
                Settle::Ack => q.completed += 1,
                Settle::Requeue | Settle::DeadLetter => q.failed += 1,
            }
        });
        if let Err(error) = settled {
            let _g = span.enter();
            warn!(%error, "Settling the delivery failed; it may be redelivered.");
        }
        if committed {
            let m = &self.inner.metrics;
            m.tasks_committed.fetch_add(1, Ordering::Relaxed);
            m.task_ns
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            m.node_ns.fetch_add(node_ns, Ordering::Relaxed);
        }
    }

    /// Runs one task to its commit. Returns how to settle the delivery, the
    /// time spent in the node, and whether this call committed the task.
    async fn process(&self, message: &TaskMessage, redelivered: bool) -> (Settle, u64, bool) {
        let task = &message.task;
        let id = task.key.workflow;
        // The record this process wrote when it dispatched the task, if it
        // did (a redelivery always reads the store: it may follow a crash).
        let cached = if redelivered {
            None
        } else {
            self.cached_record(task)
        };
        let loaded = match cached {
            Some(r) => Ok(r),
            None => self
                .ride("store: read workflow", || self.inner.store.get_workflow(id))
                .await
                .map(Arc::new),
        };
        let record = match loaded {
            Ok(r) => r,
            Err(Error::NotFound(_)) => {
                warn!("Task for an unknown workflow; dead-lettered.");
                return (Settle::DeadLetter, 0, false);
            }
            Err(error) if error.class().is_retryable() => {
                warn!(%error, "Store unavailable; task requeued.");
                return (Settle::Requeue, 0, false);
            }
            Err(error) => {
                warn!(%error, "Cannot load the workflow; task dead-lettered.");
                return (Settle::DeadLetter, 0, false);
            }
        };
        if record.status != WorkflowStatus::Running
            || record.cursor.step != task.key.step
            || !record.cursor.pending.contains(&task.key.node)
        {
            debug!(status = %record.status, at_step = record.cursor.step, "Stale task; dropped.");
            if redelivered {
                // A worker died after committing (or not) but before acking:
                // make sure what should follow was dispatched.
                if let Err(error) = self.kick(&record, true).await {
                    warn!(%error, "Recovery after a redelivery failed; task requeued.");
                    return (Settle::Requeue, 0, false);
                }
            }
            return (Settle::Ack, 0, false);
        }
        if redelivered {
            let cps = self
                .ride("store: read checkpoints", || {
                    self.inner.store.checkpoints(id)
                })
                .await;
            match cps {
                Ok(cps)
                    if task_checkpoints_at(&cps, task.key.step)
                        .contains_key(task.key.node.as_str()) =>
                {
                    debug!("Redelivered task was already committed.");
                    if let Err(error) = self.kick(&record, true).await {
                        warn!(%error, "Recovery after a redelivery failed; task requeued.");
                        return (Settle::Requeue, 0, false);
                    }
                    return (Settle::Ack, 0, false);
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "Cannot read the checkpoints; task requeued.");
                    return (Settle::Requeue, 0, false);
                }
            }
        }
        let def = match self.definition_for(&record) {
            Ok(d) => d,
            Err(error) => {
                self.fail_task(&record, task, task.attempt, &error).await;
                return (Settle::Ack, 0, false);
            }
        };
        let Some(node) = def.node(&task.key.node).cloned() else {
            let error = Error::permanent(format!(
                "node `{}` is not in the workflow definition",
                task.key.node
            ));
            self.fail_task(&record, task, task.attempt, &error).await;
            return (Settle::Ack, 0, false);
        };
        let state = match self
            .ride("store: read state", || self.step_start_state(&record, &def))
            .await
        {
            Ok(s) => s,
            Err(error) => {
                warn!(%error, "Cannot load the workflow state; task requeued.");
                return (Settle::Requeue, 0, false);
            }
        };
        let token = self.cancel_token(id);
        let (output, attempt, node_ns) = match self
            .run_attempts(&record, &node, task, message, &state, &token)
            .await
        {
            AttemptsOutcome::Done {
                output,
                attempt,
                node_ns,
            } => (output, attempt, node_ns),
            AttemptsOutcome::Cancelled { node_ns } => {
                info!("Node aborted: the workflow was cancelled.");
                return (Settle::Ack, node_ns, false);
            }
            AttemptsOutcome::Failed {
                error,
                attempt,
                node_ns,
            } => {
                self.fail_task(&record, task, attempt, &error).await;
                return (Settle::Ack, node_ns, false);
            }
        };
        let settle = self
            .commit_success(&record, &def, task, attempt, output, &state, node_ns)
            .await;
        let committed = matches!(settle, (Settle::Ack, true));
        (settle.0, node_ns, committed)
    }

    async fn run_attempts(
        &self,
        record: &WorkflowRecord,
        node: &NodeDef,
        task: &TaskId,
        message: &TaskMessage,
        state: &Arc<WorkflowState>,
        token: &CancellationToken,
    ) -> AttemptsOutcome {
        let limit = node
            .timeout
            .unwrap_or(self.inner.config.default_node_timeout);
        let visit = record
            .cursor
            .visits
            .get(&task.key.node)
            .copied()
            .unwrap_or(0);
        let progress: Arc<dyn ProgressSink> = Arc::new(BusProgress {
            tx: self.inner.progress_tx.lock().clone(),
            request_id: message.request_id.clone(),
        });
        let mut attempt = task.attempt.max(1);
        let mut node_ns = 0u64;
        // The stored workflow's owner, so a worker in any process acts in
        // the namespace of the tenant that submitted it.
        let owner = match ArtifactOwner::of_workflow(record) {
            Ok(owner) => owner,
            Err(error) => {
                return AttemptsOutcome::Failed {
                    error,
                    attempt,
                    node_ns,
                }
            }
        };
        loop {
            let this = TaskId {
                attempt,
                ..task.clone()
            };
            let ctx = NodeContext {
                task: this.clone(),
                role: Some(node.role),
                settings: node.settings.clone(),
                visit,
                state: state.clone(),
                options: record.options.clone(),
                owner: owner.clone(),
                request_id: message.request_id.clone(),
                progress: progress.clone(),
            };
            let t0 = Instant::now();
            let result = tokio::select! {
                biased;
                _ = token.cancelled() => None,
                r = tokio::time::timeout(limit, self.inner.runner.run(ctx)) => Some(match r {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout { what: format!("node `{}`", task.key.node), after: limit }),
                }),
            };
            node_ns += t0.elapsed().as_nanos() as u64;
            let error = match result {
                None => return AttemptsOutcome::Cancelled { node_ns },
                Some(Ok(output)) => {
                    return AttemptsOutcome::Done {
                        output,
                        attempt,
                        node_ns,
                    }
                }
                Some(Err(error)) => error,
            };
            self.inner
                .metrics
                .attempts_failed
                .fetch_add(1, Ordering::Relaxed);
            let class = error.class();
            let will_retry = class.is_retryable() && attempt < node.retry.max_attempts;
            warn!(%error, %class, attempt, will_retry, "Node attempt failed.");
            let event = Event::task(
                EventKind::TaskFailed,
                &this,
                json!({ "error": error.to_string(), "class": class, "will_retry": will_retry, "attempt": attempt }),
            )
            .with_request_id(message.request_id.clone());
            if let Err(error) = self.inner.bus.publish(&[event]).await {
                debug!(%error, "Could not publish agent.task.failed.");
            }
            if !will_retry {
                return AttemptsOutcome::Failed {
                    error,
                    attempt,
                    node_ns,
                };
            }
            let mut delay = node.retry.delay(attempt);
            if let Some(after) = error.retry_after() {
                delay = delay.max(after);
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => return AttemptsOutcome::Cancelled { node_ns },
                _ = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }

    /// Builds and commits a successful task (advancing the cursor when it is
    /// the last of its step), then dispatches what follows. Returns the
    /// settle decision and whether this call committed.
    #[allow(clippy::too_many_arguments)]
    async fn commit_success(
        &self,
        record: &WorkflowRecord,
        def: &Arc<WorkflowDefinition>,
        task: &TaskId,
        attempt: u32,
        output: NodeOutput,
        start_state: &Arc<WorkflowState>,
        node_ns: u64,
    ) -> (Settle, bool) {
        let id = record.id;
        let step = task.key.step;
        let this = TaskId {
            attempt,
            ..task.clone()
        };
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
                &this,
                json!({ "duration_ms": node_ns / 1_000_000, "visit": record.cursor.visits.get(&task.key.node).copied().unwrap_or(0) }),
            )
            .with_request_id(rid.clone()),
        );
        if !delta.shared_context.is_empty() {
            let keys: Vec<&String> = delta.shared_context.keys().collect();
            events.push(
                Event::task(EventKind::ContextUpdated, &this, json!({ "keys": keys }))
                    .with_request_id(rid.clone()),
            );
        }

        // Is this the last task of the step? With one pending node, yes;
        // with fan-out, ask the store which siblings committed.
        let pending = &record.cursor.pending;
        let mut siblings: Option<Vec<Checkpoint>> = None;
        if pending.len() <= 1 {
            siblings = Some(Vec::new());
        } else {
            match self
                .ride("store: read checkpoints", || {
                    self.inner.store.checkpoints(id)
                })
                .await
            {
                Ok(cps) => {
                    let done = task_checkpoints_at(&cps, step);
                    let all = pending
                        .iter()
                        .all(|p| p == &task.key.node || done.contains_key(p.as_str()));
                    if all {
                        siblings = Some(cps);
                    }
                }
                Err(error) => {
                    warn!(%error, "Cannot read sibling checkpoints; committing without advancing.");
                }
            }
        };
        let mut advance = None;
        let mut next_state = None;
        if let Some(checkpoints) = &siblings {
            let deltas = checkpoints
                .iter()
                .filter(|c| c.step == step && c.node.is_some())
                .map(|c| &c.delta);
            let StepAdvance {
                advance: decided,
                errors,
                events: routed,
                next_state: state,
            } = routing::advance(
                def,
                &record.cursor,
                (**start_state).clone(),
                deltas.chain([&delta]),
                id,
                Some(&record.request_id),
            );
            delta.errors.extend(errors);
            events.extend(routed);
            next_state = Some(state);
            advance = Some(decided);
        }
        let commit = TaskCommit {
            task: this,
            delta,
            events,
            advance: advance.clone(),
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
                debug!(seq, advanced = advance.is_some(), "Task committed.");
                self.inner.relay_wake.notify_one();
                let followed = match (advance, next_state) {
                    (Some(adv), Some(state)) => self.after_advance(record, def, adv, state).await,
                    _ => {
                        // Fan-out: a sibling may have committed meanwhile
                        // without seeing us; whoever commits last advances.
                        match self
                            .ride("store: read workflow", || self.inner.store.get_workflow(id))
                            .await
                        {
                            Ok(r) => self.kick(&r, false).await,
                            Err(error) => Err(error),
                        }
                    }
                };
                (then(followed), true)
            }
            CommitOutcome::Duplicate => {
                debug!("Task was already committed (duplicate); dropped.");
                let followed = self.recover_after_refused_commit(task.key.workflow).await;
                (then(followed), false)
            }
            CommitOutcome::Stale { status, step } => {
                debug!(%status, at_step = step, "Workflow moved on (stale commit); dropped.");
                let followed = self.recover_after_refused_commit(task.key.workflow).await;
                (then(followed), false)
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

    /// After a committed advance: cache the next step's start state, dispatch
    /// its tasks, or wake `run` when the run ended.
    /// `base` is the record the advance was computed from; with the advance
    /// applied it is what the store now holds, remembered for the next
    /// step's tasks.
    async fn after_advance(
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
            self.set_start_state(id, def, step, Arc::new(next_state));
            let record = WorkflowRecord {
                status,
                cursor: advance.cursor,
                current_step: advance.current_step,
                updated_at: Utc::now(),
                ..base.clone()
            };
            self.set_record(def, &record);
            let rec_like = (id, step, record.request_id.as_str());
            self.dispatch_pending(rec_like, def, &record.cursor.pending)
                .await
        } else {
            info!(%status, "Workflow run ended.");
            self.wake(id);
            self.forget(id);
            Ok(())
        }
    }

    /// Fails the workflow because a node failed (no retry left): a guarded
    /// transition recording the error. No task checkpoint is written, so a
    /// resume runs the node again.
    async fn fail_task(&self, record: &WorkflowRecord, task: &TaskId, attempt: u32, error: &Error) {
        let message = error.to_string();
        let class = error.class();
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
                    &TaskId {
                        attempt,
                        ..task.clone()
                    },
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

    /// Makes sure a running workflow progresses: if every pending node of
    /// the current step has a task checkpoint but the cursor did not move (a
    /// crash between commits), computes the advance and applies it with a
    /// guarded transition; otherwise, when `dispatch_missing`, dispatches the
    /// pending nodes that have no checkpoint yet.
    async fn kick(&self, record: &WorkflowRecord, dispatch_missing: bool) -> Result<()> {
        if record.status != WorkflowStatus::Running {
            return Ok(());
        }
        let def = self.definition_for(record)?;
        let cps = self
            .ride("store: read checkpoints", || {
                self.inner.store.checkpoints(record.id)
            })
            .await?;
        let step = record.cursor.step;
        let done = task_checkpoints_at(&cps, step);
        let missing: Vec<String> = record
            .cursor
            .pending
            .iter()
            .filter(|p| !done.contains_key(p.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
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
        } else if dispatch_missing {
            self.dispatch_pending((record.id, step, &record.request_id), &def, &missing)
                .await?;
        }
        Ok(())
    }

    async fn dispatch_nodes(
        &self,
        record: &WorkflowRecord,
        def: &WorkflowDefinition,
        nodes: &[String],
    ) -> Result<()> {
        self.dispatch_pending(
            (record.id, record.cursor.step, &record.request_id),
            def,
            nodes,
        )
        .await
    }

    /// Puts a task on the bus for each node, unless this process already has
    /// it in flight; a bus that is down is retried for `outage_grace`. Err
    /// when some node could not be dispatched (the others were).
    async fn dispatch_pending(
        &self,
        at: (WorkflowId, u64, &str),
        def: &WorkflowDefinition,
        nodes: &[String],
    ) -> Result<()> {
        let (id, step, request_id) = at;
        let mut failed = None;
        for n in nodes {
            let Some(node) = def.node(n) else {
                warn!(node = %n, "Pending node is not in the definition; not dispatched.");
                continue;
            };
            let key = TaskKey::new(id, step, n.as_str());
            if !self.inner.inflight.lock().insert(key.clone()) {
                continue;
            }
            let msg = TaskMessage {
                task: TaskId::new(key, 1),
                queue: if self.inner.config.route_by_tags {
                    node.queue()
                } else {
                    node.role.as_str().to_string()
                },
                request_id: Some(request_id.to_string()),
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

    // ----------------------------------------------------------- caches etc.

    fn definition_for(&self, record: &WorkflowRecord) -> Result<Arc<WorkflowDefinition>> {
        if let Some(c) = self.inner.cache.lock().get(&record.id) {
            return Ok(c.def.clone());
        }
        let cached = self.inner.defs.lock().get(&record.definition).cloned();
        let def = match cached {
            Some(d) => d,
            None => {
                let file = format!(
                    "{} (snapshot of workflow {})",
                    record.workflow_name, record.id
                );
                let d = Arc::new(WorkflowDefinition::parse(&record.definition, &file)?);
                self.inner
                    .defs
                    .lock()
                    .insert(record.definition.clone(), d.clone());
                d
            }
        };
        self.inner
            .cache
            .lock()
            .entry(record.id)
            .or_insert_with(|| WfCache {
                def: def.clone(),
                start_state: None,
                record: None,
            });
        Ok(def)
    }

    fn set_start_state(
        &self,
        id: WorkflowId,
        def: &Arc<WorkflowDefinition>,
        step: u64,
        state: Arc<WorkflowState>,
    ) {
        let mut cache = self.inner.cache.lock();
        let entry = cache.entry(id).or_insert_with(|| WfCache {
            def: def.clone(),
            start_state: None,
            record: None,
        });
        entry.start_state = Some((step, state));
    }

    fn invalidate_state(&self, id: WorkflowId) {
        if let Some(c) = self.inner.cache.lock().get_mut(&id) {
            c.start_state = None;
            c.record = None;
        }
    }

    /// Remembers `record` (just written by this process) as the one the
    /// tasks of its current step run against.
    fn set_record(&self, def: &Arc<WorkflowDefinition>, record: &WorkflowRecord) {
        let mut cache = self.inner.cache.lock();
        let entry = cache.entry(record.id).or_insert_with(|| WfCache {
            def: def.clone(),
            start_state: None,
            record: None,
        });
        entry.record = Some(Arc::new(record.clone()));
    }

    /// The remembered record, if it is running at `task`'s step with
    /// `task`'s node pending.
    fn cached_record(&self, task: &TaskId) -> Option<Arc<WorkflowRecord>> {
        let cache = self.inner.cache.lock();
        let record = cache.get(&task.key.workflow)?.record.as_ref()?;
        let fits = record.status == WorkflowStatus::Running
            && record.cursor.step == task.key.step
            && record.cursor.pending.contains(&task.key.node);
        fits.then(|| record.clone())
    }

    /// The state at the start of the record's current step: cached, or
    /// folded from the checkpoints.
    async fn step_start_state(
        &self,
        record: &WorkflowRecord,
        def: &Arc<WorkflowDefinition>,
    ) -> Result<Arc<WorkflowState>> {
        let step = record.cursor.step;
        if let Some(c) = self.inner.cache.lock().get(&record.id) {
            if let Some((s, st)) = &c.start_state {
                if *s == step {
                    return Ok(st.clone());
                }
            }
        }
        let cps = self.inner.store.checkpoints(record.id).await?;
        let st = Arc::new(fold_step_start(record, &cps));
        self.set_start_state(record.id, def, step, st.clone());
        Ok(st)
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
        forget_in(&self.inner, id);
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
                            forget_in(&inner, ev.workflow_id);
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

/// Drops a workflow's per-workflow caches.
fn forget_in(inner: &Inner, id: WorkflowId) {
    inner.cache.lock().remove(&id);
    inner.cancels.lock().remove(&id);
    inner.inflight.lock().retain(|k| k.workflow != id);
    inner.swept.lock().retain(|k, _| k.workflow != id);
}

enum AttemptsOutcome {
    Done {
        output: NodeOutput,
        attempt: u32,
        node_ns: u64,
    },
    Cancelled {
        node_ns: u64,
    },
    Failed {
        error: Error,
        attempt: u32,
        node_ns: u64,
    },
}

/// The outbox relay: moves committed events from the store to the bus, in
/// batches, when woken after a commit (and every `interval` for events other
/// processes committed).
async fn relay_loop(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    batch: u32,
    interval: Duration,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        relay_once(store.as_ref(), bus.as_ref(), batch).await;
    }
}

/// Moves every unpublished event to the bus, batch by batch; stops at the
/// first error (the next pass retries: publishing twice is harmless).
async fn relay_once(store: &dyn Store, bus: &dyn Bus, batch: u32) {
    loop {
        let stored = match store.unpublished_events(batch).await {
            Ok(e) => e,
            Err(error) => {
                warn!(%error, "Outbox relay cannot read the outbox.");
                return;
            }
        };
        if stored.is_empty() {
            return;
        }
        let full = stored.len() as u32 >= batch;
        let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
        let events: Vec<Event> = stored.into_iter().map(|s| s.event).collect();
        if let Err(error) = bus.publish(&events).await {
            warn!(%error, "Outbox relay cannot publish; will retry.");
            return;
        }
        if let Err(error) = store.mark_published(&seqs).await {
            warn!(%error, "Outbox relay cannot mark events published; they may be published twice.");
            return;
        }
        if !full {
            return;
        }
    }
}

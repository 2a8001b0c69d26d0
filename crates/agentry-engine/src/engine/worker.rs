//! Workers: competing consumers of task queues, and the delivery path.
//!
//! A delivery is processed in this order:
//!
//! 1. The workflow's record: the one this process cached when it
//!    dispatched the task, else (another process dispatched it, or a
//!    redelivery, which may follow a crash) the store's.
//! 2. A stale task (the workflow is not running at its step with its node
//!    pending) is dropped; a redelivered one first makes sure what should
//!    follow it was dispatched. A redelivered task already committed is
//!    dropped the same way.
//! 3. The node runs ([`Engine::run_attempts`]) on the state at the start of
//!    the step; a failure with no retry left fails the workflow.
//! 4. The result is committed ([`Engine::commit_success`]) and what follows
//!    dispatched.
//! 5. Only then is the delivery settled: acknowledged, given back
//!    (requeued) when the store or bus is out, or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    Delivery, Error, RequestId, Result, TaskId, TaskMessage, WorkflowRecord, WorkflowState,
    WorkflowStatus,
};
use futures::stream::{BoxStream, StreamExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::commit::{Settle, Success};
use super::retry::AttemptsOutcome;
use super::{Engine, Inner};
use crate::definition::WorkflowDefinition;
use crate::routing::{fold_step_start, task_checkpoints_at};

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

/// The consumer stream the worker tasks of one `start_workers` share.
type SharedStream = Arc<tokio::sync::Mutex<Option<BoxStream<'static, Result<Delivery>>>>>;

impl Engine {
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

    /// Processes one delivery and settles it, keeping the queue's load and
    /// the task-path counters.
    async fn handle_delivery(&self, delivery: Delivery) {
        let started = Instant::now();
        let Delivery {
            message,
            redelivered,
            ack,
        } = delivery;
        let task = &message.task;
        let queue = message.queue.as_str();
        self.inner.metrics.queue(queue, |q| {
            q.in_flight += 1;
            q.last_task_at = Some(chrono::Utc::now());
        });
        self.inner.metrics.task_started(task);
        let span = info_span!(
            "task",
            workflow_id = %task.key.workflow,
            step = task.key.step,
            node = %task.key.node,
            attempt = task.attempt,
            request_id = message.request_id.as_ref().map_or("", RequestId::as_str),
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
        self.inner.metrics.task_ended(task);
        self.inner.metrics.queue(queue, |q| {
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
            self.inner
                .metrics
                .task_committed(started.elapsed().as_nanos() as u64, node_ns);
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
            self.inner.caches.record_for(&task.key)
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
                if let Err(error) = self.advance_or_dispatch(&record).await {
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
                    if let Err(error) = self.advance_or_dispatch(&record).await {
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
        let def = match self.inner.caches.definition(&record) {
            Ok(d) => d,
            Err(error) => {
                self.fail_task(&record, task, &error).await;
                return (Settle::Ack, 0, false);
            }
        };
        let Some(node) = def.node(&task.key.node).cloned() else {
            let error = Error::permanent(format!(
                "node `{}` is not in the workflow definition",
                task.key.node
            ));
            self.fail_task(&record, task, &error).await;
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
            .run_attempts(&record, &node, message, &state, &token)
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
                let failed = TaskId::new(task.key.clone(), attempt);
                self.fail_task(&record, &failed, &error).await;
                return (Settle::Ack, node_ns, false);
            }
        };
        let settle = self
            .commit_success(Success {
                record: &record,
                def: &def,
                task: TaskId::new(task.key.clone(), attempt),
                output,
                start_state: &state,
                node_ns,
            })
            .await;
        let committed = matches!(settle, (Settle::Ack, true));
        (settle.0, node_ns, committed)
    }

    /// The state at the start of the record's current step: cached, or
    /// folded from the checkpoints.
    async fn step_start_state(
        &self,
        record: &WorkflowRecord,
        def: &Arc<WorkflowDefinition>,
    ) -> Result<Arc<WorkflowState>> {
        let step = record.cursor.step;
        if let Some(state) = self.inner.caches.start_state(record.id, step) {
            return Ok(state);
        }
        let cps = self.inner.store.checkpoints(record.id).await?;
        let st = Arc::new(fold_step_start(record, &cps));
        self.inner
            .caches
            .set_start_state(record.id, def, step, st.clone());
        Ok(st)
    }
}

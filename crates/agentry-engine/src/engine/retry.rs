//! Retries, of two kinds:
//!
//! - a node's attempts ([`Engine::run_attempts`]): each under the node's
//!   timeout, a failed one retried after the node's backoff when its error
//!   class is retryable (never by parsing messages), a cancel of the
//!   workflow aborting the attempt or the wait;
//! - store and bus calls ridden out through an outage ([`Engine::ride`]),
//!   in place, because giving a task back to the queue counts against the
//!   bus's delivery limit.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    ArtifactOwner, Error, Event, EventKind, NodeContext, NodeOutput, Progress, ProgressSink,
    RequestId, Result, TaskId, TaskMessage, WorkflowRecord, WorkflowState,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Engine;
use crate::definition::NodeDef;

/// How a node's attempts ended.
pub(super) enum AttemptsOutcome {
    /// An attempt succeeded.
    Done {
        output: NodeOutput,
        attempt: u32,
        node_ns: u64,
    },
    /// The workflow was cancelled meanwhile.
    Cancelled { node_ns: u64 },
    /// The last attempt failed and no retry is left.
    Failed {
        error: Error,
        attempt: u32,
        node_ns: u64,
    },
}

/// Publishes `agent.progress` events on the bus (never stored).
struct BusProgress {
    tx: Option<mpsc::UnboundedSender<Event>>,
    request_id: Option<RequestId>,
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

impl Engine {
    /// Runs `task`'s node until an attempt succeeds, fails for good, or
    /// the workflow is cancelled (`token`). Each failed attempt is
    /// published as `agent.task.failed` (never stored), saying whether it
    /// will be retried.
    pub(super) async fn run_attempts(
        &self,
        record: &WorkflowRecord,
        node: &NodeDef,
        message: &TaskMessage,
        state: &Arc<WorkflowState>,
        token: &CancellationToken,
    ) -> AttemptsOutcome {
        let task = &message.task;
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
            let this = TaskId::new(task.key.clone(), attempt);
            let ctx = NodeContext {
                task: this.clone(),
                role: node.kind.agent(),
                check: node.kind.check().map(str::to_string),
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
            self.inner.metrics.attempt_failed();
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

    /// [`ride_out`] with this engine's grace and shutdown.
    pub(super) async fn ride<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        ride_out(
            what,
            self.inner.config.outage_grace,
            &self.inner.shutdown,
            op,
        )
        .await
    }
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
    Fut: Future<Output = Result<T>>,
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

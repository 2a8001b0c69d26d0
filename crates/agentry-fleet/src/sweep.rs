//! The stall sweep: one process of the fleet at a time, under a lease in
//! the store, forgets long-gone workers and re-dispatches the tasks of
//! running workflows that nobody moves (see `Engine::sweep_stalled` for
//! what a pass kicks).
//!
//! Each interval: take or renew the lease (a holder that loses it sits
//! out); prune workers silent for `forget_after`; collect the tasks that
//! healthy workers report running and those in the dead-letter queue, which
//! are left alone; run one engine pass, bounded by two intervals so it ends
//! well inside the lease's three. On stop the lease is released, so another
//! process takes over at its next interval rather than after the lease
//! runs out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agentry_core::{DeadLetters, TaskKey, WorkerHealth, WorkerRecord, WorkerRegistry};
use agentry_engine::Engine;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The lease one process at a time holds to sweep for stalled workflows.
pub const SWEEP_LEASE: &str = "sweep-stalled";

/// Dead letters the sweep reads to leave their tasks alone.
const DEAD_LETTERS_SEEN: usize = 1000;

/// Every `interval`, if this process holds (or takes) the sweep lease,
/// kicks running workflows unchanged for `stalled_for` whose missing tasks
/// no live worker is running.
pub async fn sweep_loop(
    registry: Arc<dyn WorkerRegistry>,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    engine: Engine,
    holder: String,
    timing: SweepTiming,
    stop: CancellationToken,
) {
    let SweepTiming {
        interval,
        stalled_for,
        unhealthy_after,
        forget_after,
    } = timing;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let ttl = interval * 3;
        match registry
            .acquire_lease(SWEEP_LEASE, &holder, ttl, Utc::now())
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                warn!(%error, "Cannot take the sweep lease.");
                continue;
            }
        }
        let forget_before = Utc::now()
            - chrono::Duration::from_std(forget_after)
                .unwrap_or_else(|_| chrono::Duration::days(1));
        match registry.prune_workers(forget_before).await {
            Ok(0) => {}
            Ok(n) => info!(pruned = n, "Forgot long-gone workers."),
            Err(error) => warn!(%error, "Cannot prune the worker registry."),
        }
        let mut busy = match registry.list_workers().await {
            Ok(workers) => busy_tasks(&workers, unhealthy_after),
            Err(error) => {
                warn!(%error, "Cannot read the worker registry; sweep skipped.");
                continue;
            }
        };
        // A dead-lettered task waits for `dlq replay`: never re-dispatched.
        if let Some(dead) = &dead_letters {
            match dead.list_dead(DEAD_LETTERS_SEEN).await {
                Ok(list) => busy.extend(list.iter().map(|d| d.message.task.key.clone())),
                Err(error) => {
                    warn!(%error, "Cannot read the dead-letter queue; sweep skipped.");
                    continue;
                }
            }
        }
        // One pass stays well inside the lease, and a stop does not wait
        // for it.
        let pass = tokio::time::timeout(interval * 2, engine.sweep_stalled(stalled_for, &busy));
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = pass => r,
        };
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(kicked = n, "Swept stalled workflows."),
            Ok(Err(error)) => warn!(%error, "Sweep failed."),
            Err(_) => warn!("A sweep pass took longer than two intervals; cut short."),
        }
    }
    let _ = registry.release_lease(SWEEP_LEASE, &holder).await;
}

/// How often the sweep runs and what it considers stalled, dead or gone.
#[derive(Debug, Clone, Copy)]
pub struct SweepTiming {
    /// Between sweeps; the lease lasts three of them.
    pub interval: Duration,
    /// A running workflow unchanged this long is checked.
    pub stalled_for: Duration,
    /// A worker silent this long is not trusted to run what it reported.
    pub unhealthy_after: Duration,
    /// A worker silent this long leaves the registry.
    pub forget_after: Duration,
}

/// The tasks that healthy workers run now.
pub fn busy_tasks(workers: &[WorkerRecord], unhealthy_after: Duration) -> HashSet<TaskKey> {
    let now = Utc::now();
    workers
        .iter()
        .filter(|w| w.health(now, unhealthy_after) == WorkerHealth::Healthy)
        .flat_map(|w| w.beat.tasks.iter())
        .map(|t| t.key.clone())
        .collect()
}

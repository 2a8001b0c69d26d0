//! How a process leaves the fleet: the signal that starts it, and the order
//! in which a worker lets go of what it holds.

use std::time::Duration;

use agentry_engine::{Engine, WorkerHandle};
use tracing::warn;

use crate::Duties;

/// Resolves on SIGTERM or SIGINT (on Ctrl-C alone where the handlers
/// cannot be installed).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A worker's way out, in this order:
///
/// 1. its workers take no new delivery, and the tasks in hand get `grace`
///    to commit; what is still running then is given back to the bus, for
///    another worker (whether all finished is returned);
/// 2. its duties stop: the last heartbeat deregisters it, after its tasks
///    ended, so the registry never shows it stopped while it still works;
///    the sweep lease is released, so another process sweeps next;
/// 3. the engine closes, publishing what is left in the outbox.
///
/// Closing the bus is the caller's, after this: the engine's last publish
/// needs it.
pub async fn leave_fleet(
    engine: &Engine,
    workers: WorkerHandle,
    duties: Duties,
    grace: Duration,
) -> bool {
    let clean = workers.shutdown_within(grace).await;
    if !clean {
        warn!("Tasks still running at the end of the grace period were given back.");
    }
    duties.stop().await;
    engine.close().await;
    clean
}

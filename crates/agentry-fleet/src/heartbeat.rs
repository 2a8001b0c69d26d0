//! Heartbeats: a process registers in the worker registry, reports its load
//! and the tasks in its hands every interval, and marks itself stopped on
//! the way out. What `agentry agents`, `GET /v1/agents` and the sweep know
//! about live workers comes from here.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{WorkerBeat, WorkerInfo, WorkerRegistry};
use agentry_engine::Engine;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, warn, Instrument};

/// This process as a registry entry: a fresh `w-<uuid v7>` id, the host
/// name (`localhost` where the kernel does not say), the process id and
/// this build's version, serving `roles` (and the variants `tags` name)
/// `concurrency` tasks at a time.
pub fn worker_info(roles: &[String], tags: &[String], concurrency: u32) -> WorkerInfo {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    WorkerInfo {
        id: format!("w-{}", uuid::Uuid::now_v7().simple()),
        host,
        pid: std::process::id(),
        roles: roles.to_vec(),
        tags: tags.to_vec(),
        concurrency,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: Utc::now(),
    }
}

/// Registers `info`, then heartbeats the engine's load every `every` until
/// `stop`; deregisters on the way out. A beat refused as unknown (the
/// record was pruned) registers again.
pub async fn heartbeat_loop(
    registry: Arc<dyn WorkerRegistry>,
    engine: Engine,
    info: WorkerInfo,
    every: Duration,
    stop: CancellationToken,
) {
    let span = info_span!("worker", worker_id = %info.id);
    async move {
        if let Err(error) = registry.register(info.clone()).await {
            warn!(%error, "Cannot register the worker; retrying with the heartbeats.");
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let beat = beat_of(&engine, &info.id);
            match registry.heartbeat(beat).await {
                Ok(()) => {}
                Err(agentry_core::Error::NotFound(_)) => {
                    if let Err(error) = registry.register(info.clone()).await {
                        warn!(%error, "Cannot register the worker again.");
                    }
                }
                Err(error) => warn!(%error, "Heartbeat failed."),
            }
        }
        if let Err(error) = registry.deregister(&info.id, Utc::now()).await {
            warn!(%error, "Cannot deregister the worker.");
        }
    }
    .instrument(span)
    .await
}

/// The engine's load as one beat of worker `id`: tasks in flight and in
/// hand, counts over every queue it consumes, its last task's time.
fn beat_of(engine: &Engine, id: &str) -> WorkerBeat {
    let loads = engine.queue_loads();
    WorkerBeat {
        id: id.to_string(),
        in_flight: loads.iter().map(|q| q.in_flight).sum(),
        tasks: engine.running_tasks(),
        completed: loads.iter().map(|q| q.completed).sum(),
        failed: loads.iter().map(|q| q.failed).sum(),
        last_task_at: loads.iter().filter_map(|q| q.last_task_at).max(),
        at: Utc::now(),
    }
}

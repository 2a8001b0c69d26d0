//! [`Duties`]: the loops one process runs for the fleet, started as the
//! process's role asks and stopped together.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{DeadLetters, WorkerInfo, WorkerRegistry};
use agentry_engine::Engine;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{heartbeat_loop, sweep_loop, SweepTiming};

/// The fleet loops of one process, each on its own task: a worker process
/// runs both, a distributed server only the sweep, an embedded server only
/// the heartbeat (it is its deployment's one worker). [`Duties::stop`]
/// ends them all and waits until each has left cleanly.
#[derive(Debug, Default)]
pub struct Duties {
    stop: CancellationToken,
    loops: Vec<JoinHandle<()>>,
}

impl Duties {
    /// No loop yet: each is started by the method named after it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts [`heartbeat_loop`]: `info` registers now and beats the
    /// engine's load every `every`.
    pub fn heartbeat(
        &mut self,
        registry: Arc<dyn WorkerRegistry>,
        engine: Engine,
        info: WorkerInfo,
        every: Duration,
    ) {
        self.loops.push(tokio::spawn(heartbeat_loop(
            registry,
            engine,
            info,
            every,
            self.stop.clone(),
        )));
    }

    /// Starts [`sweep_loop`] as lease holder `holder` (unique in the fleet).
    pub fn sweep(
        &mut self,
        registry: Arc<dyn WorkerRegistry>,
        dead_letters: Option<Arc<dyn DeadLetters>>,
        engine: Engine,
        holder: String,
        timing: SweepTiming,
    ) {
        self.loops.push(tokio::spawn(sweep_loop(
            registry,
            dead_letters,
            engine,
            holder,
            timing,
            self.stop.clone(),
        )));
    }

    /// Stops every loop and waits for each: the heartbeat deregisters, the
    /// sweep releases its lease.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.loops {
            let _ = task.await;
        }
    }
}

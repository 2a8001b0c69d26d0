//! Counters of the task path (for the benchmark and metrics), the load of
//! each queue this process's workers consume (the agent manager's view of
//! the embedded workers, shown by `GET /v1/agents`), and the tasks in hand
//! (what a worker's heartbeat reports).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use agentry_core::TaskId;
use parking_lot::Mutex;

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
    /// Updates the load of queue `name`.
    pub(super) fn queue(&self, name: &str, f: impl FnOnce(&mut QueueLoad)) {
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

    /// A worker took `task` in hand.
    pub(super) fn task_started(&self, task: &TaskId) {
        self.running.lock().insert(task.clone());
    }

    /// A worker settled `task`.
    pub(super) fn task_ended(&self, task: &TaskId) {
        self.running.lock().remove(task);
    }

    /// A node attempt failed (retried or not).
    pub(super) fn attempt_failed(&self) {
        self.attempts_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// This process committed a task that took `task_ns` from dequeue to
    /// ack, `node_ns` of them in the node.
    pub(super) fn task_committed(&self, task_ns: u64, node_ns: u64) {
        self.tasks_committed.fetch_add(1, Ordering::Relaxed);
        self.task_ns.fetch_add(task_ns, Ordering::Relaxed);
        self.node_ns.fetch_add(node_ns, Ordering::Relaxed);
    }

    /// The counters now; each is read on its own, so together they need
    /// not be one instant's.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            tasks_committed: self.tasks_committed.load(Ordering::Relaxed),
            task_ns: self.task_ns.load(Ordering::Relaxed),
            node_ns: self.node_ns.load(Ordering::Relaxed),
            attempts_failed: self.attempts_failed.load(Ordering::Relaxed),
        }
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

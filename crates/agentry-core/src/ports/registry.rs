//! The agent manager's registry ([`WorkerRegistry`]): which worker
//! processes are alive, what they serve, their load, and leases for jobs
//! that one process of many must do (picking up unfinished workflows,
//! sweeping stalled ones).
//!
//! Key design decision: the registry lives in the store (SQLite in one
//! process, PostgreSQL when scaled out) rather than in Redis, so the
//! embedded mode needs nothing more and `agentry agents` reads the same
//! database the workers commit to. A worker registers once, then
//! heartbeats every few seconds with its load; health is derived by the
//! reader from the age of the last heartbeat, so a SIGKILLed worker turns
//! unhealthy without anyone writing for it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, TaskId};

/// What a worker says of itself when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique id of this worker process (`w-<uuid>`).
    pub id: String,
    /// Host name of the machine it runs on (`localhost` when unknown);
    /// `agentry agents` and `GET /v1/agents` show it with `pid`.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Agent roles it serves (`developer`, `qa`).
    pub roles: Vec<String>,
    /// Variant tags it serves (`python`, `model:large`); empty for none.
    pub tags: Vec<String>,
    /// Tasks it runs at once.
    pub concurrency: u32,
    /// The `agentry` version it runs (the crate's, `0.1.0`), kept in its
    /// record.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A worker's periodic report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// The worker's id.
    pub id: String,
    /// Tasks running now.
    pub in_flight: u32,
    /// The tasks running now (stored and shown in their text form,
    /// `<workflow>:<step>:<node>#<attempt>`).
    pub tasks: Vec<TaskId>,
    /// Deliveries it settled by acknowledgement since it started.
    pub completed: u64,
    /// Deliveries it gave back or dead-lettered since it started.
    pub failed: u64,
    /// When it last started a task.
    pub last_task_at: Option<DateTime<Utc>>,
    /// When this beat was sent (the worker's clock).
    pub at: DateTime<Utc>,
}

/// A worker as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// What it said when it registered.
    pub info: WorkerInfo,
    /// Its last beat; before the first, the registration's zero load.
    pub beat: WorkerBeat,
    /// When it stopped cleanly (deregistered), if it did.
    pub stopped_at: Option<DateTime<Utc>>,
}

/// A worker's health, derived from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerHealth {
    /// It beat within the timeout.
    Healthy,
    /// It has not beaten within the timeout: it died or hangs.
    Unhealthy,
    /// It stopped cleanly.
    Stopped,
}

impl WorkerHealth {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerHealth::Healthy => "healthy",
            WorkerHealth::Unhealthy => "unhealthy",
            WorkerHealth::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for WorkerHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WorkerRecord {
    /// Health at `now`: stopped if it deregistered, unhealthy if its last
    /// beat is older than `timeout`, else healthy.
    pub fn health(&self, now: DateTime<Utc>, timeout: Duration) -> WorkerHealth {
        if self.stopped_at.is_some() {
            return WorkerHealth::Stopped;
        }
        let age = now.signed_duration_since(self.beat.at);
        match chrono::Duration::from_std(timeout) {
            Ok(limit) if age > limit => WorkerHealth::Unhealthy,
            _ => WorkerHealth::Healthy,
        }
    }
}

/// When the lease `name` taken at `now` for `ttl` expires; a ttl beyond
/// what a time can hold is invalid input. Every store computes it this way.
pub fn lease_expiry(name: &str, ttl: Duration, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .ok_or_else(|| Error::invalid(format!("lease `{name}`: ttl {ttl:?} is too long")))
}

/// Worker registration, heartbeats and leases.
#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Registers a worker (or re-registers one with the same id: its info
    /// is replaced, its load reset and any `stopped_at` cleared).
    async fn register(&self, info: WorkerInfo) -> Result<()>;

    /// Records a beat. `NotFound` when the id is not registered (the
    /// worker then registers again: its record was pruned).
    async fn heartbeat(&self, beat: WorkerBeat) -> Result<()>;

    /// Marks a worker stopped cleanly. Unknown ids are ignored.
    async fn deregister(&self, id: &str, at: DateTime<Utc>) -> Result<()>;

    /// Every registered worker, oldest registration first.
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>>;

    /// Removes workers whose last beat (or stop) is before `before`;
    /// returns how many.
    async fn prune_workers(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Takes or renews the lease `name` for `holder` until `now + ttl`:
    /// true when `holder` holds it afterwards (it was free, expired, or
    /// already `holder`'s), false when another holder's lease is live.
    /// Atomic across processes sharing the store.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives the lease up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: DateTime<Utc>, stopped: bool) -> WorkerRecord {
        WorkerRecord {
            info: WorkerInfo {
                id: "w-1".into(),
                host: "h".into(),
                pid: 1,
                roles: vec!["qa".into()],
                tags: vec![],
                concurrency: 1,
                version: "0".into(),
                started_at: at,
            },
            beat: WorkerBeat {
                id: "w-1".into(),
                in_flight: 0,
                tasks: vec![],
                completed: 0,
                failed: 0,
                last_task_at: None,
                at,
            },
            stopped_at: stopped.then_some(at),
        }
    }

    #[test]
    fn health_follows_the_last_beat() {
        let t0 = Utc::now();
        let r = record(t0, false);
        let timeout = Duration::from_secs(10);
        assert_eq!(r.health(t0, timeout), WorkerHealth::Healthy);
        assert_eq!(
            r.health(t0 + chrono::Duration::seconds(10), timeout),
            WorkerHealth::Healthy
        );
        assert_eq!(
            r.health(t0 + chrono::Duration::seconds(11), timeout),
            WorkerHealth::Unhealthy
        );
        assert_eq!(
            record(t0, true).health(t0 + chrono::Duration::seconds(99), timeout),
            WorkerHealth::Stopped
        );
    }
}

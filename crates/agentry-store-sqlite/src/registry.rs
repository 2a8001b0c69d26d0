//! The worker registry ([`WorkerRegistry`]: workers and leases) in the
//! store's file. Like the API keys, it is written through the read pool
//! (single-row statements, serialized by SQLite's write lock and the busy
//! timeout) rather than the group-commit writer: a heartbeat belongs to no
//! task's commit and must not wait for a batch.
//!
//! Every write is ONE statement, so it is atomic without a transaction,
//! also against other processes sharing the file: a (re-)registration is
//! an upsert, a deregister keeps the first stop with `COALESCE`, and a
//! lease is taken by an upsert whose `DO UPDATE` applies only when the
//! lease is the caller's or expired. Whether it applied is the statement's
//! own change count (an upsert whose `WHERE` fails changes no row), so no
//! second statement can see another holder's write in between.

use std::time::Duration;

use agentry_core::{Error, Result, WorkerBeat, WorkerInfo, WorkerRecord, WorkerRegistry};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::db_error;
use crate::rows::{timestamp, to_i64, worker_from_row, WORKER_COLUMNS};
use crate::SqliteStore;

#[async_trait]
impl WorkerRegistry for SqliteStore {
    #[tracing::instrument(skip_all, fields(worker_id = %info.id, host = %info.host, pid = info.pid))]
    async fn register(&self, info: WorkerInfo) -> Result<()> {
        let roles = serde_json::to_string(&info.roles)?;
        let tags = serde_json::to_string(&info.tags)?;
        self.read("register_worker", move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO workers (id, host, pid, roles, tags, concurrency, version, \
                     started_at, in_flight, tasks, completed, failed, last_task_at, beat_at, \
                     stopped_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, '[]', 0, 0, NULL, ?8, NULL) \
                     ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
                     roles = excluded.roles, tags = excluded.tags, \
                     concurrency = excluded.concurrency, version = excluded.version, \
                     started_at = excluded.started_at, in_flight = 0, tasks = '[]', \
                     completed = 0, failed = 0, last_task_at = NULL, \
                     beat_at = excluded.started_at, stopped_at = NULL",
                )
                .bind(&info.id)
                .bind(&info.host)
                .bind(i64::from(info.pid))
                .bind(&roles)
                .bind(&tags)
                .bind(i64::from(info.concurrency))
                .bind(&info.version)
                .bind(timestamp(info.started_at))
                .execute(&mut *conn)
                .await
                .map_err(|error| db_error(&format!("registering worker `{}`", info.id), error))?;
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(worker_id = %beat.id, in_flight = beat.in_flight))]
    async fn heartbeat(&self, beat: WorkerBeat) -> Result<()> {
        let tasks = serde_json::to_string(&beat.tasks)?;
        let completed = to_i64(beat.completed, "completed")?;
        let failed = to_i64(beat.failed, "failed")?;
        self.read("worker_heartbeat", move |conn| {
            Box::pin(async move {
                let updated = sqlx::query(
                    "UPDATE workers SET in_flight = ?2, tasks = ?3, completed = ?4, failed = ?5, \
                     last_task_at = ?6, beat_at = ?7 WHERE id = ?1",
                )
                .bind(&beat.id)
                .bind(i64::from(beat.in_flight))
                .bind(&tasks)
                .bind(completed)
                .bind(failed)
                .bind(beat.last_task_at.map(timestamp))
                .bind(timestamp(beat.at))
                .execute(&mut *conn)
                .await
                .map_err(|error| {
                    db_error(&format!("recording a beat of worker `{}`", beat.id), error)
                })?;
                if updated.rows_affected() == 0 {
                    return Err(Error::not_found(format!("worker `{}`", beat.id)));
                }
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(worker_id = %id))]
    async fn deregister(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let id = id.to_string();
        self.read("deregister_worker", move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE workers SET stopped_at = COALESCE(stopped_at, ?2) WHERE id = ?1",
                )
                .bind(&id)
                .bind(timestamp(at))
                .execute(&mut *conn)
                .await
                .map_err(|error| db_error(&format!("deregistering worker `{id}`"), error))?;
                Ok(())
            })
        })
        .await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        self.read("list_workers", move |conn| {
            Box::pin(async move {
                let sql = format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY started_at, id");
                let rows = sqlx::query(&sql)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|error| db_error("listing workers", error))?;
                rows.iter().map(worker_from_row).collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(before = %before))]
    async fn prune_workers(&self, before: DateTime<Utc>) -> Result<u64> {
        self.read("prune_workers", move |conn| {
            Box::pin(async move {
                let deleted = sqlx::query(
                    "DELETE FROM workers WHERE beat_at < ?1 \
                     AND (stopped_at IS NULL OR stopped_at < ?1)",
                )
                .bind(timestamp(before))
                .execute(&mut *conn)
                .await
                .map_err(|error| db_error("pruning workers", error))?;
                Ok(deleted.rows_affected())
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(lease = %name, holder = %holder))]
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let expires = agentry_core::lease_expiry(name, ttl, now)?;
        let (name, holder) = (name.to_string(), holder.to_string());
        self.read("acquire_lease", move |conn| {
            Box::pin(async move {
                let taken = sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at \
                     WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
                )
                .bind(&name)
                .bind(&holder)
                .bind(timestamp(expires))
                .bind(timestamp(now))
                .execute(&mut *conn)
                .await
                .map_err(|error| {
                    db_error(&format!("taking lease `{name}` for `{holder}`"), error)
                })?;
                Ok(taken.rows_affected() == 1)
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(lease = %name, holder = %holder))]
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.read("release_lease", move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
                    .bind(&name)
                    .bind(&holder)
                    .execute(&mut *conn)
                    .await
                    .map_err(|error| {
                        db_error(&format!("releasing lease `{name}` by `{holder}`"), error)
                    })?;
                Ok(())
            })
        })
        .await
    }
}

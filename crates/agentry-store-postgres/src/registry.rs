//! The worker registry ([`WorkerRegistry`]: workers and leases) in the
//! store's schema. Every write is ONE statement, atomic without a
//! transaction and across processes: a (re-)registration is an upsert, a
//! deregister keeps the first stop with `COALESCE`, and a lease is taken by
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE` (same holder, or expired).
//! PostgreSQL runs the `DO UPDATE` under the row's lock and evaluates its
//! `WHERE` on the newest committed version, so of holders racing for a free
//! or expired lease exactly one writes; whether this call wrote is the
//! statement's own row count. Times are the caller's, kept to the
//! nanosecond (see `rows`), so lease expiry and prune cuts compare
//! `(time, ns)` pairs.

use std::time::Duration;

use agentry_core::{Error, Result, WorkerBeat, WorkerInfo, WorkerRecord, WorkerRegistry};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::db_error;
use crate::rows::{json, split_time, to_i64, worker_from_row, WORKER_COLUMNS};
use crate::PostgresStore;

#[async_trait]
impl WorkerRegistry for PostgresStore {
    #[tracing::instrument(skip_all, fields(worker_id = %info.id, host = %info.host, pid = info.pid))]
    async fn register(&self, info: WorkerInfo) -> Result<()> {
        let (started, started_ns) = split_time(info.started_at);
        self.bounded("register_worker", async {
            sqlx::query(
                "INSERT INTO workers (id, host, pid, roles, tags, concurrency, version, \
                 started_at, started_at_ns, in_flight, tasks, completed, failed, last_task_at, \
                 last_task_at_ns, beat_at, beat_at_ns, stopped_at, stopped_at_ns) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, '[]', 0, 0, NULL, NULL, $8, $9, \
                 NULL, NULL) \
                 ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, \
                 roles = EXCLUDED.roles, tags = EXCLUDED.tags, \
                 concurrency = EXCLUDED.concurrency, version = EXCLUDED.version, \
                 started_at = EXCLUDED.started_at, started_at_ns = EXCLUDED.started_at_ns, \
                 in_flight = 0, tasks = '[]', completed = 0, failed = 0, last_task_at = NULL, \
                 last_task_at_ns = NULL, beat_at = EXCLUDED.started_at, \
                 beat_at_ns = EXCLUDED.started_at_ns, stopped_at = NULL, stopped_at_ns = NULL",
            )
            .bind(&info.id)
            .bind(&info.host)
            .bind(i64::from(info.pid))
            .bind(json(&info.roles))
            .bind(json(&info.tags))
            .bind(i64::from(info.concurrency))
            .bind(&info.version)
            .bind(started)
            .bind(started_ns)
            .execute(&self.pool)
            .await
            .map_err(|error| db_error(&format!("registering worker `{}`", info.id), error))?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(worker_id = %beat.id, in_flight = beat.in_flight))]
    async fn heartbeat(&self, beat: WorkerBeat) -> Result<()> {
        let completed = to_i64(beat.completed, "completed")?;
        let failed = to_i64(beat.failed, "failed")?;
        let last_task = beat.last_task_at.map(split_time);
        let (at, at_ns) = split_time(beat.at);
        self.bounded("worker_heartbeat", async {
            let updated = sqlx::query(
                "UPDATE workers SET in_flight = $2, tasks = $3, completed = $4, failed = $5, \
                 last_task_at = $6, last_task_at_ns = $7, beat_at = $8, beat_at_ns = $9 \
                 WHERE id = $1",
            )
            .bind(&beat.id)
            .bind(i64::from(beat.in_flight))
            .bind(json(&beat.tasks))
            .bind(completed)
            .bind(failed)
            .bind(last_task.map(|(at, _)| at))
            .bind(last_task.map(|(_, ns)| ns))
            .bind(at)
            .bind(at_ns)
            .execute(&self.pool)
            .await
            .map_err(|error| {
                db_error(&format!("recording a beat of worker `{}`", beat.id), error)
            })?;
            if updated.rows_affected() == 0 {
                return Err(Error::not_found(format!("worker `{}`", beat.id)));
            }
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(worker_id = %id))]
    async fn deregister(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let (at, ns) = split_time(at);
        self.bounded("deregister_worker", async {
            // Every right-hand side reads the row as it was, so the CASE
            // keeps the first stop's nanoseconds with its time.
            sqlx::query(
                "UPDATE workers SET stopped_at = COALESCE(stopped_at, $2), \
                 stopped_at_ns = CASE WHEN stopped_at IS NULL THEN $3 ELSE stopped_at_ns END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(ns)
            .execute(&self.pool)
            .await
            .map_err(|error| db_error(&format!("deregistering worker `{id}`"), error))?;
            Ok(())
        })
        .await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        self.bounded("list_workers", async {
            // Ids in byte order, whatever the database's collation, like
            // the other stores.
            let sql = format!(
                "SELECT {WORKER_COLUMNS} FROM workers \
                 ORDER BY started_at, started_at_ns, id COLLATE \"C\""
            );
            let rows = sqlx::query(&sql)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| db_error("listing workers", error))?;
            rows.iter().map(worker_from_row).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(before = %before))]
    async fn prune_workers(&self, before: DateTime<Utc>) -> Result<u64> {
        let (before, ns) = split_time(before);
        self.bounded("prune_workers", async {
            let deleted = sqlx::query(
                "DELETE FROM workers WHERE (beat_at, beat_at_ns) < ($1, $2) \
                 AND (stopped_at IS NULL OR (stopped_at, stopped_at_ns) < ($1, $2))",
            )
            .bind(before)
            .bind(ns)
            .execute(&self.pool)
            .await
            .map_err(|error| db_error("pruning workers", error))?;
            Ok(deleted.rows_affected())
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
        let (expires, expires_ns) = split_time(agentry_core::lease_expiry(name, ttl, now)?);
        let (now, now_ns) = split_time(now);
        self.bounded("acquire_lease", async {
            let taken = sqlx::query(
                "INSERT INTO leases (name, holder, expires_at, expires_at_ns) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 expires_at = EXCLUDED.expires_at, expires_at_ns = EXCLUDED.expires_at_ns \
                 WHERE leases.holder = EXCLUDED.holder \
                 OR (leases.expires_at, leases.expires_at_ns) <= ($5, $6)",
            )
            .bind(name)
            .bind(holder)
            .bind(expires)
            .bind(expires_ns)
            .bind(now)
            .bind(now_ns)
            .execute(&self.pool)
            .await
            .map_err(|error| db_error(&format!("taking lease `{name}` for `{holder}`"), error))?;
            Ok(taken.rows_affected() == 1)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(lease = %name, holder = %holder))]
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.bounded("release_lease", async {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(&self.pool)
                .await
                .map_err(|error| {
                    db_error(&format!("releasing lease `{name}` by `{holder}`"), error)
                })?;
            Ok(())
        })
        .await
    }
}

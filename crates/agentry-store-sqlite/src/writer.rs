//! Group commit: the one task that writes.
//!
//! Every write (create, commit, transition, mark published) is a
//! [`WriteRequest`] sent to [`run`], which owns the only write connection.
//! It takes whatever is queued (up to `max_batch`), runs it in ONE
//! `BEGIN IMMEDIATE` transaction with each request inside its own
//! `SAVEPOINT` (a request that fails, or that must write nothing, such as a
//! stale or duplicate commit, is rolled back alone), then `COMMIT`s once, so
//! one fsync covers the whole batch. Replies go out only after the COMMIT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agentry_core::{
    CommitOutcome, Error, Event, NewWorkflow, Result, StateDelta, TaskCommit, Transition,
    WorkflowId, WorkflowRecord, WorkflowStatus,
};
use chrono::Utc;
use sqlx::{Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::error::{db_error, is_primary_key_violation};
use crate::rows::{id_text, timestamp, to_i64, workflow_from_row};

/// A write the writer task performs.
pub(crate) enum WriteOp {
    /// [`agentry_core::Store::create_workflow`] (already validated).
    Create(NewWorkflow),
    /// [`agentry_core::Store::commit_task`].
    Commit(TaskCommit),
    /// [`agentry_core::Store::transition`].
    Transition(WorkflowId, Transition),
    /// [`agentry_core::Store::mark_published`] (non-empty, in range).
    MarkPublished(Vec<i64>),
}

/// What a write produced.
#[derive(Debug)]
pub(crate) enum Written {
    /// The workflow row after the write.
    Record(Box<WorkflowRecord>),
    /// A commit's outcome.
    Outcome(CommitOutcome),
    /// Nothing to report.
    Done,
}

/// A write and where its result goes.
pub(crate) struct WriteRequest {
    pub(crate) op: WriteOp,
    pub(crate) reply: oneshot::Sender<Result<Written>>,
}

/// Counters of the writer, shared with the store.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub(crate) batches: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
}

/// Keep the request's writes, or roll its savepoint back.
enum Keep {
    Yes,
    No,
}

/// The writer loop: runs until every sender is dropped (the store was
/// dropped or closed), then closes the connection.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut requests: mpsc::Receiver<WriteRequest>,
    max_batch: usize,
    counters: std::sync::Arc<WriterCounters>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while requests.recv_many(&mut batch, max_batch).await > 0 {
        let size = batch.len() as u64;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(size, Ordering::Relaxed);
        counters.largest_batch.fetch_max(size, Ordering::Relaxed);
        run_batch(&mut conn, &mut batch).await;
    }
    debug!("Store writer stopping: every handle was dropped.");
    if let Err(error) = sqlx::Connection::close(conn).await {
        warn!(%error, "Closing the SQLite write connection failed.");
    }
}

async fn exec(
    conn: &mut SqliteConnection,
    sql: &'static str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

fn fail_all(batch: &mut Vec<WriteRequest>, error: &Error) {
    for request in batch.drain(..) {
        // A caller that gave up (timed out) no longer listens; nothing to do.
        let _ = request.reply.send(Err(error.clone()));
    }
}

async fn rollback(conn: &mut SqliteConnection) {
    if let Err(error) = exec(conn, "ROLLBACK").await {
        // SQLite may already have rolled back (e.g. after an I/O error).
        debug!(%error, "ROLLBACK after a failed batch failed.");
    }
}

/// Runs one batch in one transaction and replies to every request.
async fn run_batch(conn: &mut SqliteConnection, batch: &mut Vec<WriteRequest>) {
    let started = Instant::now();
    let size = batch.len();
    if let Err(error) = exec(conn, "BEGIN IMMEDIATE").await {
        let error = db_error("starting a write transaction", error);
        warn!(batch_size = size, %error, "Group commit could not begin.");
        fail_all(batch, &error);
        return;
    }
    let mut results = Vec::with_capacity(size);
    for request in batch.iter() {
        match in_savepoint(conn, &request.op).await {
            Ok(result) => results.push(result),
            Err(error) => {
                // The transaction itself is broken: nothing of it may stand.
                warn!(batch_size = size, %error, "Group commit failed; rolling the batch back.");
                rollback(conn).await;
                fail_all(batch, &error);
                return;
            }
        }
    }
    let applied = started.elapsed();
    if let Err(error) = exec(conn, "COMMIT").await {
        let error = db_error("committing a write batch", error);
        warn!(batch_size = size, %error, "Group commit failed at COMMIT.");
        rollback(conn).await;
        fail_all(batch, &error);
        return;
    }
    debug!(
        batch_size = size,
        apply_us = applied.as_micros() as u64,
        commit_us = (started.elapsed() - applied).as_micros() as u64,
        "Group commit."
    );
    for (request, result) in batch.drain(..).zip(results) {
        let _ = request.reply.send(result);
    }
}

/// Runs one request inside its own savepoint. The outer error means the
/// savepoint machinery failed (the whole transaction is suspect); the inner
/// result is the request's own.
async fn in_savepoint(conn: &mut SqliteConnection, op: &WriteOp) -> Result<Result<Written>> {
    let savepoint_error = |error| db_error("write savepoint", error);
    exec(conn, "SAVEPOINT request")
        .await
        .map_err(savepoint_error)?;
    let result = apply(conn, op).await;
    match &result {
        Ok((_, Keep::Yes)) => {}
        Ok((_, Keep::No)) | Err(_) => {
            exec(conn, "ROLLBACK TO request")
                .await
                .map_err(savepoint_error)?;
        }
    }
    exec(conn, "RELEASE request")
        .await
        .map_err(savepoint_error)?;
    if let Err(error) = &result {
        debug!(%error, "A write request failed; its savepoint was rolled back.");
    }
    Ok(result.map(|(written, _)| written))
}

async fn apply(conn: &mut SqliteConnection, op: &WriteOp) -> Result<(Written, Keep)> {
    match op {
        WriteOp::Create(new) => create(conn, new).await,
        WriteOp::Commit(commit) => commit_task(conn, commit).await,
        WriteOp::Transition(id, transition) => transition_workflow(conn, *id, transition).await,
        WriteOp::MarkPublished(seqs) => mark_published(conn, seqs).await,
    }
}

async fn create(conn: &mut SqliteConnection, new: &NewWorkflow) -> Result<(Written, Keep)> {
    let now = timestamp(Utc::now());
    let id = id_text(new.id);
    let options = serde_json::to_string(&new.options)?;
    let cursor = serde_json::to_string(&agentry_core::Cursor::default())?;
    let inserted = sqlx::query(INSERT_WORKFLOW)
        .bind(&id)
        .bind(&new.request_id)
        .bind(&new.requirements)
        .bind(&now)
        .bind(&new.workflow_name)
        .bind(&new.definition)
        .bind(&options)
        .bind(&new.tenant)
        .bind(&cursor)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|error| {
            if is_primary_key_violation(&error) {
                Error::Conflict(format!(
                    "workflow {id} already exists (with another request id than `{}`)",
                    new.request_id
                ))
            } else {
                db_error(&format!("creating workflow {id}"), error)
            }
        })?;
    if let Some(row) = inserted {
        return Ok((
            Written::Record(Box::new(workflow_from_row(&row)?)),
            Keep::Yes,
        ));
    }
    // Same request id: the first workflow, unchanged.
    let existing = sqlx::query(SELECT_WORKFLOW_BY_REQUEST_ID)
        .bind(&new.request_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| {
            db_error(
                &format!("reading workflow of request {}", new.request_id),
                error,
            )
        })?;
    Ok((
        Written::Record(Box::new(workflow_from_row(&existing)?)),
        Keep::No,
    ))
}

/// Inserts a pending workflow unless its request id exists; returns the
/// row's [`crate::rows::WORKFLOW_COLUMNS`].
const INSERT_WORKFLOW: &str =
    "INSERT INTO workflows (id, request_id, requirements, status, created_at, updated_at, \
         workflow_name, definition, options, tenant, cursor, cursor_step, current_step, last_seq) \
     VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5, ?6, ?7, ?8, ?9, 0, '', 0) \
     ON CONFLICT (request_id) DO NOTHING \
     RETURNING id, request_id, requirements, status, workflow_name, definition, options, tenant, \
         cursor, current_step, created_at, updated_at";

/// A workflow's [`crate::rows::WORKFLOW_COLUMNS`] by request id.
const SELECT_WORKFLOW_BY_REQUEST_ID: &str =
    "SELECT id, request_id, requirements, status, workflow_name, definition, options, tenant, \
         cursor, current_step, created_at, updated_at FROM workflows WHERE request_id = ?1";

async fn commit_task(conn: &mut SqliteConnection, commit: &TaskCommit) -> Result<(Written, Keep)> {
    let task = &commit.task;
    let id = id_text(task.workflow_id);
    let step = to_i64(task.step, "step")?;
    let now = timestamp(Utc::now());
    let delta = serde_json::to_string(&commit.delta)?;
    let (cursor, cursor_step, status, current_step) = match &commit.advance {
        Some(advance) => (
            Some(serde_json::to_string(&advance.cursor)?),
            Some(to_i64(advance.cursor.step, "cursor step")?),
            Some(advance.status.as_str()),
            Some(advance.current_step.as_str()),
        ),
        None => (None, None, None, None),
    };
    // The guard and the row update in one statement: applies only if the
    // workflow is running at the task's step.
    let guarded = sqlx::query(
        "UPDATE workflows SET last_seq = last_seq + 1, updated_at = ?1, \
             cursor = COALESCE(?2, cursor), cursor_step = COALESCE(?3, cursor_step), \
             status = COALESCE(?4, status), current_step = COALESCE(?5, current_step) \
         WHERE id = ?6 AND status = 'running' AND cursor_step = ?7 \
         RETURNING last_seq, status, current_step",
    )
    .bind(&now)
    .bind(&cursor)
    .bind(cursor_step)
    .bind(status)
    .bind(current_step)
    .bind(&id)
    .bind(step)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|error| db_error(&format!("committing task {task}"), error))?;

    let Some(row) = guarded else {
        return Ok((Written::Outcome(why_not(conn, commit).await?), Keep::No));
    };
    let seq: i64 = row
        .try_get(0)
        .map_err(|error| db_error("reading workflows.last_seq", error))?;
    let status_after: String = row
        .try_get(1)
        .map_err(|error| db_error("reading workflows.status", error))?;
    let current_after: String = row
        .try_get(2)
        .map_err(|error| db_error("reading workflows.current_step", error))?;

    let inserted = sqlx::query(
        "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
             current_step, note, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '', ?10) \
         ON CONFLICT (workflow_id, step, node) DO NOTHING",
    )
    .bind(&id)
    .bind(seq)
    .bind(step)
    .bind(&task.node)
    .bind(i64::from(task.attempt))
    .bind(&delta)
    .bind(&cursor)
    .bind(&status_after)
    .bind(&current_after)
    .bind(&now)
    .execute(&mut *conn)
    .await
    .map_err(|error| db_error(&format!("writing the checkpoint of {task}"), error))?;
    if inserted.rows_affected() == 0 {
        return Ok((Written::Outcome(CommitOutcome::Duplicate), Keep::No));
    }
    write_delta(conn, &id, step, &commit.delta, &now).await?;
    write_events(conn, &commit.events).await?;
    let seq = u64::try_from(seq).map_err(|_| Error::permanent(format!("negative seq {seq}")))?;
    Ok((
        Written::Outcome(CommitOutcome::Committed { seq }),
        Keep::Yes,
    ))
}

/// Why a guarded commit did not apply: unknown workflow, duplicate, or stale.
async fn why_not(conn: &mut SqliteConnection, commit: &TaskCommit) -> Result<CommitOutcome> {
    let task = &commit.task;
    let id = id_text(task.workflow_id);
    let row = sqlx::query(
        "SELECT status, cursor_step, \
             EXISTS (SELECT 1 FROM checkpoints WHERE workflow_id = ?1 AND step = ?2 AND node = ?3) \
         FROM workflows WHERE id = ?1",
    )
    .bind(&id)
    .bind(to_i64(task.step, "step")?)
    .bind(&task.node)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|error| db_error(&format!("checking task {task}"), error))?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("workflow {id}")));
    };
    let duplicate: bool = row
        .try_get(2)
        .map_err(|error| db_error("reading the duplicate check", error))?;
    if duplicate {
        return Ok(CommitOutcome::Duplicate);
    }
    let (status, step) = status_and_step(&row)?;
    Ok(CommitOutcome::Stale { status, step })
}

fn status_and_step(row: &sqlx::sqlite::SqliteRow) -> Result<(WorkflowStatus, u64)> {
    let status: String = row
        .try_get(0)
        .map_err(|error| db_error("reading workflows.status", error))?;
    let step: i64 = row
        .try_get(1)
        .map_err(|error| db_error("reading workflows.cursor_step", error))?;
    let status = status
        .parse::<WorkflowStatus>()
        .map_err(|error| crate::error::corrupt("workflows", error))?;
    let step = u64::try_from(step)
        .map_err(|_| crate::error::corrupt("workflows", format!("negative cursor_step {step}")))?;
    Ok((status, step))
}

async fn transition_workflow(
    conn: &mut SqliteConnection,
    workflow_id: WorkflowId,
    transition: &Transition,
) -> Result<(Written, Keep)> {
    let id = id_text(workflow_id);
    let now = timestamp(Utc::now());
    let row = sqlx::query("SELECT status, cursor_step, last_seq FROM workflows WHERE id = ?1")
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("reading workflow {id}"), error))?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("workflow {id}")));
    };
    let (status, step) = status_and_step(&row)?;
    let last_seq: i64 = row
        .try_get(2)
        .map_err(|error| db_error("reading workflows.last_seq", error))?;
    let status_ok = transition.expected_status.contains(&status);
    let step_ok = transition.expected_step.is_none_or(|s| s == step);
    if !status_ok || !step_ok {
        let expected: Vec<&str> = transition
            .expected_status
            .iter()
            .map(|s| s.as_str())
            .collect();
        let expected_step = transition
            .expected_step
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default();
        return Err(Error::Conflict(format!(
            "workflow {id} is {status} at step {step}; `{}` needs it {}{expected_step}",
            transition.note,
            if expected.is_empty() {
                "in no status".to_string()
            } else {
                expected.join(" or ")
            },
        )));
    }
    let (cursor, cursor_step) = match &transition.cursor {
        Some(c) => (
            Some(serde_json::to_string(c)?),
            Some(to_i64(c.step, "cursor step")?),
        ),
        None => (None, None),
    };
    let seq = last_seq + 1;
    // Returns the row's WORKFLOW_COLUMNS.
    let sql = "UPDATE workflows SET status = ?1, cursor = COALESCE(?2, cursor), \
                   cursor_step = COALESCE(?3, cursor_step), \
                   current_step = COALESCE(?4, current_step), last_seq = ?5, updated_at = ?6 \
               WHERE id = ?7 \
               RETURNING id, request_id, requirements, status, workflow_name, definition, options, \
                   tenant, cursor, current_step, created_at, updated_at";
    let updated = sqlx::query(sql)
        .bind(transition.status.as_str())
        .bind(&cursor)
        .bind(cursor_step)
        .bind(&transition.current_step)
        .bind(seq)
        .bind(&now)
        .bind(&id)
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("updating workflow {id}"), error))?;
    let record = workflow_from_row(&updated)?;
    let step = to_i64(step, "step")?;
    sqlx::query(
        "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
             current_step, note, created_at) \
         VALUES (?1, ?2, ?3, NULL, NULL, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(&id)
    .bind(seq)
    .bind(step)
    .bind(serde_json::to_string(&transition.delta)?)
    .bind(&cursor)
    .bind(transition.status.as_str())
    .bind(&record.current_step)
    .bind(&transition.note)
    .bind(&now)
    .execute(&mut *conn)
    .await
    .map_err(|error| db_error(&format!("writing a checkpoint of workflow {id}"), error))?;
    write_delta(conn, &id, step, &transition.delta, &now).await?;
    write_events(conn, &transition.events).await?;
    Ok((Written::Record(Box::new(record)), Keep::Yes))
}

/// The seed tables: one `agent_outputs` row per output, `shared_context`
/// upserts.
async fn write_delta(
    conn: &mut SqliteConnection,
    workflow_id: &str,
    step: i64,
    delta: &StateDelta,
    now: &str,
) -> Result<()> {
    for output in &delta.agent_outputs {
        sqlx::query(
            "INSERT INTO agent_outputs (id, workflow_id, agent_name, output_type, content, \
                 created_at, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(Uuid::now_v7().hyphenated().to_string())
        .bind(workflow_id)
        .bind(&output.agent_name)
        .bind(&output.output_type)
        .bind(serde_json::to_string(&output.content)?)
        .bind(now)
        .bind(step)
        .execute(&mut *conn)
        .await
        .map_err(|error| {
            db_error(
                &format!("writing agent_outputs of workflow {workflow_id}"),
                error,
            )
        })?;
    }
    for (key, value) in &delta.shared_context {
        sqlx::query(
            "INSERT INTO shared_context (id, workflow_id, key, value, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (workflow_id, key) DO UPDATE \
                 SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(Uuid::now_v7().hyphenated().to_string())
        .bind(workflow_id)
        .bind(key)
        .bind(serde_json::to_string(value)?)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|error| {
            db_error(
                &format!("writing shared_context of workflow {workflow_id}"),
                error,
            )
        })?;
    }
    Ok(())
}

/// The outbox.
async fn write_events(conn: &mut SqliteConnection, events: &[Event]) -> Result<()> {
    for event in events {
        let step = event.step.map(|s| to_i64(s, "event step")).transpose()?;
        sqlx::query(
            "INSERT INTO events (id, kind, workflow_id, step, node, attempt, request_id, payload, \
                 at, published) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
        )
        .bind(event.id.hyphenated().to_string())
        .bind(event.kind.as_str())
        .bind(id_text(event.workflow_id))
        .bind(step)
        .bind(&event.node)
        .bind(event.attempt.map(i64::from))
        .bind(&event.request_id)
        .bind(serde_json::to_string(&event.payload)?)
        .bind(timestamp(event.at))
        .execute(&mut *conn)
        .await
        .map_err(|error| {
            db_error(
                &format!("writing event {} ({})", event.id, event.kind.as_str()),
                error,
            )
        })?;
    }
    Ok(())
}

async fn mark_published(conn: &mut SqliteConnection, seqs: &[i64]) -> Result<(Written, Keep)> {
    sqlx::query(
        "UPDATE events SET published = 1 \
         WHERE published = 0 AND seq IN (SELECT value FROM json_each(?1))",
    )
    .bind(serde_json::to_string(seqs)?)
    .execute(&mut *conn)
    .await
    .map_err(|error| db_error("marking events published", error))?;
    Ok((Written::Done, Keep::Yes))
}

//! Group commit: the one task that writes.
//!
//! Every write (create, commit, transition, mark published) is a
//! [`WriteRequest`], prepared by its caller (see [`crate::requests`]) and
//! sent to [`run`], which owns the only write connection. It takes whatever
//! is queued (up to `max_batch`), runs it in ONE `BEGIN IMMEDIATE`
//! transaction and `COMMIT`s once, so one fsync covers the whole batch.
//! Replies go out only after the COMMIT.
//!
//! A batch first runs optimistically, with no savepoints: the requests other
//! than task commits one by one in queue order, then all the task commits in
//! ONE statement (rows inserted into the `task_commits` view, see
//! [`crate::procedures`]). Requests of one batch were all in flight at the
//! same time, so any order among them is one the callers could have seen.
//! Running without savepoints is safe because a request that must write
//! nothing (a stale or duplicate commit, a create whose request id exists)
//! writes nothing by construction: its guard is its first statement and the
//! others depend on it. Only a FAILED request (an error from a statement, or
//! a refusal such as a transition's conflict) may have written part of its
//! rows, and a failed statement fails the whole group of task commits; then
//! the whole batch is rolled back and run again carefully, in queue order,
//! each request inside its own `SAVEPOINT`, so the failed one is rolled back
//! alone, gets its own error, and the others commit as if it had not been
//! there. Failures are rare, so the common batch pays neither for
//! savepoints nor for a statement per task commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agentry_core::{CommitOutcome, Error, Result, WorkflowRecord, WorkflowStatus};
use chrono::Utc;
use sqlx::{Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::{db_error, is_primary_key_violation};
use crate::procedures::{COMMIT_TASKS, TRANSITION};
use crate::requests::{CommitRequest, CreateRequest, TransitionRequest};
use crate::rows::{id_text, timestamp, workflow_from_row};

/// A write the writer task performs, prepared by the caller.
pub(crate) enum WriteOp {
    /// [`agentry_core::Store::create_workflow`] (already validated).
    Create(CreateRequest),
    /// [`agentry_core::Store::commit_task`].
    Commit(CommitRequest),
    /// [`agentry_core::Store::transition`].
    Transition(TransitionRequest),
    /// [`agentry_core::Store::mark_published`]: a non-empty JSON array of
    /// seqs.
    MarkPublished(String),
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
    /// Batches run again in careful mode because a request failed.
    pub(crate) careful_reruns: AtomicU64,
}

/// Keep the request's writes, or roll its savepoint back (careful mode).
enum Keep {
    Yes,
    No,
}

/// How a batch runs: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No savepoints; any failed request aborts the attempt.
    Optimistic,
    /// One savepoint per request.
    Careful,
}

/// Why an attempt at a batch did not commit (it was rolled back).
enum Abort {
    /// A request failed in optimistic mode: run the batch carefully.
    RequestFailed,
    /// The transaction itself failed: every request gets this error.
    Batch(Error),
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
        run_batch(&mut conn, &mut batch, &counters).await;
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

async fn rollback(conn: &mut SqliteConnection) {
    if let Err(error) = exec(conn, "ROLLBACK").await {
        // SQLite may already have rolled back (e.g. after an I/O error).
        debug!(%error, "ROLLBACK after a failed batch failed.");
    }
}

/// Runs one batch (optimistically, then carefully if a request failed) and
/// replies to every request.
async fn run_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<WriteRequest>,
    counters: &WriterCounters,
) {
    let started = Instant::now();
    let size = batch.len();
    let mut attempt = attempt_batch(conn, batch, Mode::Optimistic).await;
    if let Err(Abort::RequestFailed) = attempt {
        counters.careful_reruns.fetch_add(1, Ordering::Relaxed);
        debug!(
            batch_size = size,
            "A request failed; running the batch again with a savepoint per request."
        );
        attempt = attempt_batch(conn, batch, Mode::Careful).await;
    }
    match attempt {
        Ok(results) => {
            debug!(
                batch_size = size,
                elapsed_us = started.elapsed().as_micros() as u64,
                "Group commit."
            );
            for (request, result) in batch.drain(..).zip(results) {
                // A caller that gave up (timed out) no longer listens.
                let _ = request.reply.send(result);
            }
        }
        Err(abort) => {
            let error = match abort {
                Abort::Batch(error) => error,
                // Careful mode answers a failed request in its result.
                Abort::RequestFailed => Error::permanent("a write batch failed twice"),
            };
            warn!(batch_size = size, %error, "Group commit failed; the batch was rolled back.");
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(error.clone()));
            }
        }
    }
}

/// One transaction over the whole batch; rolled back unless it returns the
/// results (one per request, in batch order).
async fn attempt_batch(
    conn: &mut SqliteConnection,
    batch: &[WriteRequest],
    mode: Mode,
) -> std::result::Result<Vec<Result<Written>>, Abort> {
    if let Err(error) = exec(conn, "BEGIN IMMEDIATE").await {
        return Err(Abort::Batch(db_error(
            "starting a write transaction",
            error,
        )));
    }
    let results = match mode {
        Mode::Optimistic => optimistic(conn, batch).await,
        Mode::Careful => careful(conn, batch).await,
    };
    let results = match results {
        Ok(results) => results,
        Err(abort) => {
            rollback(conn).await;
            return Err(abort);
        }
    };
    let applied = Instant::now();
    if let Err(error) = exec(conn, "COMMIT").await {
        rollback(conn).await;
        return Err(Abort::Batch(db_error("committing a write batch", error)));
    }
    debug!(
        batch_size = batch.len(),
        ?mode,
        commit_us = applied.elapsed().as_micros() as u64,
        "Batch committed."
    );
    Ok(results)
}

/// The requests other than task commits in queue order, then every task
/// commit in one statement; any failure aborts.
async fn optimistic(
    conn: &mut SqliteConnection,
    batch: &[WriteRequest],
) -> std::result::Result<Vec<Result<Written>>, Abort> {
    let mut results: Vec<Option<Result<Written>>> = batch.iter().map(|_| None).collect();
    let mut commits = Vec::new();
    for (i, request) in batch.iter().enumerate() {
        match &request.op {
            WriteOp::Commit(commit) => commits.push((i, commit)),
            op => match apply(conn, op).await {
                Ok((written, _)) => results[i] = Some(Ok(written)),
                Err(error) => {
                    debug!(%error, "A write request failed in optimistic mode.");
                    return Err(Abort::RequestFailed);
                }
            },
        }
    }
    if !commits.is_empty() {
        let requests: Vec<&CommitRequest> = commits.iter().map(|(_, c)| *c).collect();
        match commit_tasks(conn, &requests).await {
            Ok(outcomes) => {
                for ((i, _), outcome) in commits.iter().zip(outcomes) {
                    results[*i] = Some(outcome);
                }
            }
            Err(error) => {
                debug!(%error, commits = requests.len(), "Task commits failed in optimistic mode.");
                return Err(Abort::RequestFailed);
            }
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.ok_or(Abort::Batch(Error::permanent(
                "a write request was skipped",
            )))
        })
        .collect()
}

/// Each request in queue order inside its own savepoint.
async fn careful(
    conn: &mut SqliteConnection,
    batch: &[WriteRequest],
) -> std::result::Result<Vec<Result<Written>>, Abort> {
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        // An error here means the transaction itself is broken.
        results.push(
            in_savepoint(conn, &request.op)
                .await
                .map_err(Abort::Batch)?,
        );
    }
    Ok(results)
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
        WriteOp::Create(request) => create(conn, request).await,
        WriteOp::Commit(request) => {
            let outcome = commit_tasks(conn, &[request])
                .await?
                .pop()
                .unwrap_or_else(|| Err(Error::permanent("a task commit got no outcome")))?;
            let keep = match outcome {
                Written::Outcome(CommitOutcome::Committed { .. }) => Keep::Yes,
                _ => Keep::No,
            };
            Ok((outcome, keep))
        }
        WriteOp::Transition(request) => transition_workflow(conn, request).await,
        WriteOp::MarkPublished(seqs) => mark_published(conn, seqs).await,
    }
}

async fn create(conn: &mut SqliteConnection, request: &CreateRequest) -> Result<(Written, Keep)> {
    let now = timestamp(Utc::now());
    let new = &request.new;
    let id = &request.id;
    let inserted = sqlx::query(INSERT_WORKFLOW)
        .bind(id)
        .bind(&new.request_id)
        .bind(&new.requirements)
        .bind(&now)
        .bind(&new.workflow_name)
        .bind(&new.definition)
        .bind(&request.options)
        .bind(&new.tenant)
        .bind(&request.cursor)
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

/// Task commits in one statement (see [`crate::procedures`]). The outer
/// error means the statement failed, and none of them applied; otherwise one
/// outcome per request, in order.
async fn commit_tasks(
    conn: &mut SqliteConnection,
    requests: &[&CommitRequest],
) -> Result<Vec<Result<Written>>> {
    let mut rows_json =
        String::with_capacity(2 + requests.iter().map(|r| r.row.len() + 1).sum::<usize>());
    rows_json.push('[');
    for (i, request) in requests.iter().enumerate() {
        if i > 0 {
            rows_json.push(',');
        }
        rows_json.push_str(&request.row);
    }
    rows_json.push(']');
    let now = timestamp(Utc::now());
    let rows = sqlx::query(COMMIT_TASKS)
        .bind(rows_json)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| match requests {
            [one] => db_error(&format!("committing task {}", one.task), error),
            _ => db_error(&format!("committing {} tasks", requests.len()), error),
        })?;
    let mut outcomes: Vec<Result<Written>> = requests
        .iter()
        .map(|request| {
            Err(Error::not_found(format!(
                "workflow {}",
                request.task.workflow_id
            )))
        })
        .collect();
    for row in &rows {
        let (index, outcome) = commit_result(row)?;
        match outcomes.get_mut(index) {
            Some(slot) => *slot = Ok(Written::Outcome(outcome)),
            None => return Err(Error::permanent(format!("no task commit number {index}"))),
        }
    }
    Ok(outcomes)
}

/// A `commit_results` row: the request's index and its outcome.
fn commit_result(row: &sqlx::sqlite::SqliteRow) -> Result<(usize, CommitOutcome)> {
    let get = |error| db_error("reading commit_results", error);
    let index: i64 = row.try_get("request").map_err(get)?;
    let seq: Option<i64> = row.try_get("seq").map_err(get)?;
    let duplicate: bool = row.try_get("duplicate").map_err(get)?;
    let index = usize::try_from(index)
        .map_err(|_| Error::permanent(format!("negative task commit number {index}")))?;
    let outcome = match seq {
        Some(seq) => CommitOutcome::Committed {
            seq: u64::try_from(seq).map_err(|_| Error::permanent(format!("negative seq {seq}")))?,
        },
        None if duplicate => CommitOutcome::Duplicate,
        None => {
            let (status, step) = status_and_step(row)?;
            CommitOutcome::Stale { status, step }
        }
    };
    Ok((index, outcome))
}

fn status_and_step(row: &sqlx::sqlite::SqliteRow) -> Result<(WorkflowStatus, u64)> {
    let status: String = row
        .try_get("status")
        .map_err(|error| db_error("reading workflows.status", error))?;
    let step: i64 = row
        .try_get("step")
        .map_err(|error| db_error("reading workflows.cursor_step", error))?;
    let status = status
        .parse::<WorkflowStatus>()
        .map_err(|error| crate::error::corrupt("workflows", error))?;
    let step = u64::try_from(step)
        .map_err(|_| crate::error::corrupt("workflows", format!("negative cursor_step {step}")))?;
    Ok((status, step))
}

/// Checks the transition's expectations, then writes it in one round trip.
async fn transition_workflow(
    conn: &mut SqliteConnection,
    request: &TransitionRequest,
) -> Result<(Written, Keep)> {
    let id = id_text(request.workflow_id);
    let row = sqlx::query("SELECT status, cursor_step AS step FROM workflows WHERE id = ?1")
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("reading workflow {id}"), error))?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("workflow {id}")));
    };
    let (status, step) = status_and_step(&row)?;
    let status_ok = request.expected_status.contains(&status);
    let step_ok = request.expected_step.is_none_or(|s| s == step);
    if !status_ok || !step_ok {
        let expected: Vec<&str> = request.expected_status.iter().map(|s| s.as_str()).collect();
        let expected_step = request
            .expected_step
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default();
        return Err(Error::Conflict(format!(
            "workflow {id} is {status} at step {step}; `{}` needs it {}{expected_step}",
            request.note,
            if expected.is_empty() {
                "in no status".to_string()
            } else {
                expected.join(" or ")
            },
        )));
    }
    let now = timestamp(Utc::now());
    let rows = sqlx::query(TRANSITION)
        .bind(request.row.as_str())
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("updating workflow {id}"), error))?;
    let Some(row) = rows.first() else {
        return Err(Error::permanent(format!(
            "updating workflow {id}: the transition wrote no checkpoint"
        )));
    };
    Ok((
        Written::Record(Box::new(workflow_from_row(row)?)),
        Keep::Yes,
    ))
}

async fn mark_published(conn: &mut SqliteConnection, seqs: &str) -> Result<(Written, Keep)> {
    sqlx::query(
        "UPDATE events SET published = 1 \
         WHERE published = 0 AND seq IN (SELECT value FROM json_each(?1))",
    )
    .bind(seqs)
    .execute(&mut *conn)
    .await
    .map_err(|error| db_error("marking events published", error))?;
    Ok((Written::Done, Keep::Yes))
}

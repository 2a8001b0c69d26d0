//! Group commit: the one task that writes.
//!
//! Every write (create, commit, transition, mark published) is a
//! [`WriteRequest`], prepared by its caller (see [`crate::requests`]) and
//! sent to [`run`], which owns the only write connection. It takes whatever
//! is queued (up to `max_batch`), runs it in ONE `BEGIN IMMEDIATE`
//! transaction and `COMMIT`s once, so one fsync covers the whole batch.
//! Replies go out only after the COMMIT.
//!
//! A batch first runs optimistically, with no savepoints, as ONE statement
//! ([`crate::procedures::BATCH`]): all its creates, then all its
//! transitions, then all its task commits (rows inserted into TEMP views),
//! then its outbox marks; so a batch costs three round trips to sqlx's
//! connection thread (BEGIN, the batch, COMMIT) whatever its size. Requests
//! of one batch were all in flight at the same time, so any order among
//! them is one the callers could have seen. Running without savepoints is
//! safe because a request that must write nothing (a stale or duplicate
//! commit, a transition from the wrong status or step, a create whose
//! request id exists) writes nothing by construction: its guard is its
//! first statement and the others depend on it; its outcome (or conflict)
//! is a result like any other. Only a FAILED statement (a constraint
//! violation, an I/O error) may have written part of its rows, and it fails
//! the whole batch; then the batch is rolled back and run again carefully,
//! in queue order, each request alone inside its own `SAVEPOINT`, so the
//! failed one is rolled back alone, gets its own error, and the others
//! commit as if it had not been there. Failures are rare, so the common
//! batch pays neither for savepoints nor for a statement per request.
//!
//! Checkpoints of the write-ahead log (copying it into the database file)
//! run on their own connection ([`checkpointer`]), so the writer rarely
//! stops to do one inside a COMMIT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agentry_core::{CommitOutcome, Error, Result, WorkflowRecord, WorkflowStatus};
use chrono::Utc;
use sqlx::{Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::{db_error, is_busy, is_primary_key_violation};
use crate::procedures::{BATCH, BATCH_TRANSACTION};
use crate::requests::{CommitRequest, CreateRequest, TransitionRequest};
use crate::rows::{timestamp, workflow_from_row};

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

/// Requests between two wake-ups of the checkpointer (a request writes a
/// few pages; SQLite's own default checkpoints every 1000 pages).
const CHECKPOINT_EVERY: u64 = 128;

/// The writer loop: runs until every sender is dropped (the store was
/// dropped or closed), then closes the connection (and so stops the
/// checkpointer).
pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut requests: mpsc::Receiver<WriteRequest>,
    max_batch: usize,
    counters: std::sync::Arc<WriterCounters>,
    checkpoints: mpsc::Sender<()>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut since_checkpoint = 0;
    while requests.recv_many(&mut batch, max_batch).await > 0 {
        let size = batch.len() as u64;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.requests.fetch_add(size, Ordering::Relaxed);
        counters.largest_batch.fetch_max(size, Ordering::Relaxed);
        run_batch(&mut conn, &mut batch, &counters).await;
        since_checkpoint += size;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            // Full: a checkpoint is already due, which covers this one.
            let _ = checkpoints.try_send(());
        }
    }
    debug!("Store writer stopping: every handle was dropped.");
    if let Err(error) = sqlx::Connection::close(conn).await {
        warn!(%error, "Closing the SQLite write connection failed.");
    }
}

/// The checkpointer: copies the write-ahead log into the database file
/// (`PRAGMA wal_checkpoint(PASSIVE)`) on its own connection, when the writer
/// asks, so the writer does not stop to do it inside a COMMIT. A passive
/// checkpoint runs alongside the writer and readers and waits for neither;
/// at `synchronous = FULL` it syncs the log before and the file after, as
/// SQLite's automatic one would. Stops when the writer does.
pub(crate) async fn checkpointer(
    mut conn: SqliteConnection,
    mut wake: mpsc::Receiver<()>,
    limit: std::time::Duration,
) {
    while wake.recv().await.is_some() {
        let started = Instant::now();
        let run = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_optional(&mut conn);
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(_)) => debug!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "WAL checkpoint."
            ),
            Ok(Err(error)) => warn!(%error, "A WAL checkpoint failed; the next one retries."),
            Err(_) => warn!(?limit, "A WAL checkpoint timed out; the next one retries."),
        }
    }
    if let Err(error) = sqlx::Connection::close(conn).await {
        warn!(%error, "Closing the SQLite checkpoint connection failed.");
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
    if mode == Mode::Optimistic {
        // BEGIN and COMMIT travel with the batch.
        let results = optimistic(conn, batch).await;
        if results.is_err() {
            rollback(conn).await;
        }
        return results;
    }
    if let Err(error) = exec(conn, "BEGIN IMMEDIATE").await {
        return Err(Abort::Batch(db_error(
            "starting a write transaction",
            error,
        )));
    }
    let results = match careful(conn, batch).await {
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
        commit_us = applied.elapsed().as_micros() as u64,
        "Careful batch committed."
    );
    Ok(results)
}

/// The whole batch in one transaction of one statement
/// ([`BATCH_TRANSACTION`]); a failed statement aborts (before the COMMIT).
async fn optimistic(
    conn: &mut SqliteConnection,
    batch: &[WriteRequest],
) -> std::result::Result<Vec<Result<Written>>, Abort> {
    let ops: Vec<&WriteOp> = batch.iter().map(|r| &r.op).collect();
    match run_ops(conn, BATCH_TRANSACTION, &ops).await {
        Ok(Ok(results)) => Ok(results),
        // Like a reply lost after the COMMIT: a retry finds what was written
        // (an existing request id, a duplicate commit, a moved workflow).
        Ok(Err(error)) => Err(Abort::Batch(Error::transient(format!(
            "the write batch was committed, but its results could not be read: {error}"
        )))),
        // Only its BEGIN can wait for the lock (another process writing):
        // a rerun would wait again.
        Err(error) if is_busy(&error) => Err(Abort::Batch(db_error(
            "starting a write transaction",
            error,
        ))),
        Err(error) => {
            debug!(%error, requests = ops.len(), "A write batch failed in optimistic mode.");
            Err(Abort::RequestFailed)
        }
    }
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
    let result = match run_ops(conn, BATCH, &[op]).await {
        Ok(Ok(mut results)) => results
            .pop()
            .unwrap_or_else(|| Err(Error::permanent("a write request got no result"))),
        Ok(Err(error)) => Err(error),
        Err(error) => Err(request_error(op, error)),
    };
    let keep = match &result {
        Ok(Written::Outcome(CommitOutcome::Committed { .. })) => true,
        Ok(Written::Outcome(_)) | Err(_) => false,
        Ok(Written::Record(_) | Written::Done) => true,
    };
    if !keep {
        exec(conn, "ROLLBACK TO request")
            .await
            .map_err(savepoint_error)?;
    }
    exec(conn, "RELEASE request")
        .await
        .map_err(savepoint_error)?;
    if let Err(error) = &result {
        debug!(%error, "A write request failed; its savepoint was rolled back.");
    }
    Ok(result)
}

/// The error of a failed statement that ran `op` alone.
fn request_error(op: &WriteOp, error: sqlx::Error) -> Error {
    match op {
        WriteOp::Create(request) if is_primary_key_violation(&error) => Error::Conflict(format!(
            "workflow {} already exists (with another request id than `{}`)",
            request.id, request.request_id
        )),
        WriteOp::Create(request) => db_error(&format!("creating workflow {}", request.id), error),
        WriteOp::Commit(request) => db_error(&format!("committing task {}", request.task), error),
        WriteOp::Transition(request) => {
            db_error(&format!("updating workflow {}", request.workflow_id), error)
        }
        WriteOp::MarkPublished(_) => db_error("marking events published", error),
    }
}

/// The requests of one kind, as the JSON array [`BATCH`] takes, and their
/// positions in the batch.
struct Group {
    json: String,
    positions: Vec<usize>,
}

impl Group {
    fn new() -> Self {
        Group {
            json: String::from("["),
            positions: Vec::new(),
        }
    }

    /// Appends `item` (a JSON value) for the request at `position`.
    fn push(&mut self, position: usize, item: &str) {
        if self.json.len() > 1 {
            self.json.push(',');
        }
        self.json.push_str(item);
        self.positions.push(position);
    }

    fn finish(mut self) -> (String, Vec<usize>) {
        self.json.push(']');
        (self.json, self.positions)
    }
}

/// Runs `ops` in ONE [`BATCH`] statement (`sql`: [`BATCH`], or
/// [`BATCH_TRANSACTION`] to run it in a transaction of its own). The outer
/// error means the statement failed (what it wrote is rolled back by the
/// caller); the middle one that its answer could not be read; otherwise one
/// result per op, in order.
async fn run_ops(
    conn: &mut SqliteConnection,
    sql: &'static str,
    ops: &[&WriteOp],
) -> std::result::Result<Result<Vec<Result<Written>>>, sqlx::Error> {
    let (mut creates, mut transitions, mut commits, mut seqs) =
        (Group::new(), Group::new(), Group::new(), Group::new());
    let mut results: Vec<Result<Written>> = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        results.push(match op {
            WriteOp::Create(request) => {
                creates.push(i, &request.row);
                Err(Error::permanent(format!(
                    "creating workflow {}: nothing was written",
                    request.id
                )))
            }
            WriteOp::Transition(request) => {
                transitions.push(i, &request.row);
                Err(Error::permanent(format!(
                    "updating workflow {}: the transition got no result",
                    request.workflow_id
                )))
            }
            WriteOp::Commit(request) => {
                commits.push(i, &request.row);
                Err(Error::not_found(format!(
                    "workflow {}",
                    request.task.key.workflow
                )))
            }
            WriteOp::MarkPublished(array) => {
                // A non-empty JSON array: its items join the batch's.
                let items = array
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim();
                if !items.is_empty() {
                    seqs.push(i, items);
                }
                Ok(Written::Done)
            }
        });
    }
    let (creates, create_at) = creates.finish();
    let (transitions, transition_at) = transitions.finish();
    let (commits, commit_at) = commits.finish();
    let (seqs, _) = seqs.finish();
    let rows = sqlx::query(sql)
        .bind(creates)
        .bind(transitions)
        .bind(commits)
        .bind(seqs)
        .bind(timestamp(Utc::now()))
        .fetch_all(&mut *conn)
        .await?;
    let place = |positions: &[usize], index: usize| {
        positions
            .get(index)
            .copied()
            .ok_or_else(|| Error::permanent(format!("no write request number {index}")))
    };
    for row in &rows {
        let decoded = (|| -> Result<()> {
            let kind: String = row
                .try_get("kind")
                .map_err(|error| db_error("reading a batch result", error))?;
            let index = request_index(row)?;
            match kind.as_str() {
                "create" => {
                    results[place(&create_at, index)?] =
                        Ok(Written::Record(Box::new(workflow_from_row(row)?)));
                }
                "transition" => {
                    let i = place(&transition_at, index)?;
                    if let WriteOp::Transition(request) = ops[i] {
                        results[i] = transition_result(row, request);
                    }
                }
                "commit" => {
                    results[place(&commit_at, index)?] = Ok(Written::Outcome(commit_result(row)?));
                }
                other => {
                    return Err(Error::permanent(format!(
                        "unknown batch result kind `{other}`"
                    )))
                }
            }
            Ok(())
        })();
        if let Err(error) = decoded {
            return Ok(Err(error));
        }
    }
    Ok(Ok(results))
}

/// The `request` column of a batch result row.
fn request_index(row: &sqlx::sqlite::SqliteRow) -> Result<usize> {
    let index: i64 = row
        .try_get("request")
        .map_err(|error| db_error("reading a batch result", error))?;
    usize::try_from(index)
        .map_err(|_| Error::permanent(format!("negative write request number {index}")))
}

/// A `commit_results` row's outcome.
fn commit_result(row: &sqlx::sqlite::SqliteRow) -> Result<CommitOutcome> {
    let get = |error| db_error("reading commit_results", error);
    let seq: Option<i64> = row.try_get("seq").map_err(get)?;
    let duplicate: bool = row.try_get("duplicate").map_err(get)?;
    Ok(match seq {
        Some(seq) => CommitOutcome::Committed {
            seq: u64::try_from(seq).map_err(|_| Error::permanent(format!("negative seq {seq}")))?,
        },
        None if duplicate => CommitOutcome::Duplicate,
        None => {
            let (status, step) = status_and_step(row, "step")?;
            CommitOutcome::Stale { status, step }
        }
    })
}

/// A `transition_results` row: the record after it, or why it was refused.
fn transition_result(
    row: &sqlx::sqlite::SqliteRow,
    request: &TransitionRequest,
) -> Result<Written> {
    let get = |error| db_error("reading transition_results", error);
    let id: Option<String> = row.try_get("id").map_err(get)?;
    if id.is_none() {
        return Err(Error::not_found(format!(
            "workflow {}",
            request.workflow_id
        )));
    }
    let applied: bool = row.try_get("applied").map_err(get)?;
    if applied {
        return Ok(Written::Record(Box::new(workflow_from_row(row)?)));
    }
    let (status, step) = status_and_step(row, "cursor_step")?;
    let expected: Vec<&str> = request.expected_status.iter().map(|s| s.as_str()).collect();
    let expected_step = request
        .expected_step
        .map(|s| format!(" at step {s}"))
        .unwrap_or_default();
    Err(Error::Conflict(format!(
        "workflow {} is {status} at step {step}; `{}` needs it {}{expected_step}",
        request.workflow_id,
        request.note,
        if expected.is_empty() {
            "in no status".to_string()
        } else {
            expected.join(" or ")
        },
    )))
}

fn status_and_step(
    row: &sqlx::sqlite::SqliteRow,
    step_column: &str,
) -> Result<(WorkflowStatus, u64)> {
    let status: String = row
        .try_get("status")
        .map_err(|error| db_error("reading workflows.status", error))?;
    let step: i64 = row
        .try_get(step_column)
        .map_err(|error| db_error("reading workflows.cursor_step", error))?;
    let status = status
        .parse::<WorkflowStatus>()
        .map_err(|error| crate::error::corrupt("workflows", error))?;
    let step = u64::try_from(step)
        .map_err(|_| crate::error::corrupt("workflows", format!("negative cursor_step {step}")))?;
    Ok((status, step))
}

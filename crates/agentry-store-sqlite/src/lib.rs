//! SQLite adapter of the [`Store`] port (sqlx, WAL), the embedded default.
//!
//! [`SqliteStore`] keeps workflows, checkpoints (deltas, never whole states),
//! the seed's `agent_outputs` and `shared_context` tables and the event outbox
//! in one SQLite file, created and migrated by embedded migrations. Other
//! crates may keep their own tables in the same file (see [`SqliteStore::pool`]).
//! The same file holds the LLM call ledger and cache ([`agentry_core::LlmLedger`],
//! [`agentry_core::LlmCache`]), the gateway's API keys
//! ([`agentry_core::ApiKeyStore`]) and the worker registry with its leases
//! ([`agentry_core::WorkerRegistry`]), written row by row through the pool.
//!
//! Key design decision: GROUP COMMIT through a single writer task. SQLite
//! allows one writer at a time and, at `synchronous = FULL`, every COMMIT
//! costs an fsync; a commit per task would cap the engine at the disk's fsync
//! rate. So every write is a request to one task owning the only write
//! connection, which drains the queue into ONE `BEGIN IMMEDIATE` transaction
//! and COMMITs once: one fsync for up to `max_batch` commits, with the same
//! durability per commit, since nobody is answered before the COMMIT. Inside
//! it, all the batch's task commits run as ONE statement (rows inserted into
//! a TEMP view whose trigger is the commit, see `procedures`), because each
//! sqlx statement is a round trip to another thread; likewise all its
//! creates and all its transitions, and the whole batch is sent as ONE
//! multi-statement query. A stale or duplicate commit, or a refused
//! transition, writes nothing by construction, and a batch in which a
//! statement fails is rolled back and run again with a `SAVEPOINT` per
//! request, so the failing one fails alone (see `writer`). Callers
//! serialize their requests to JSON before queueing them, in parallel with
//! the writer. Reads use a separate pool, which WAL lets run alongside the
//! writer, and so do checkpoints of the log (their own connection).

mod access;
mod error;
mod file;
mod llm;
mod options;
mod procedures;
mod registry;
mod requests;
mod rows;
mod writer;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agentry_core::{
    fold_state, AgentOutputRecord, Checkpoint, CommitOutcome, Error, ListPage, NewWorkflow,
    RequestId, Result, Store, StoredEvent, TaskCommit, Transition, WorkflowId, WorkflowQuery,
    WorkflowRecord, WorkflowState,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use options::{SqliteStoreOptions, Synchronous};

use crate::error::{db_error, is_not_a_database};
use crate::requests::{seqs_json, CommitRequest, CreateRequest, TransitionRequest};
use crate::rows::{
    checkpoint_from_row, context_from_rows, event_from_row, id_text, output_from_row, to_i64,
    workflow_from_row, CHECKPOINT_COLUMNS, EVENT_COLUMNS, OUTPUT_COLUMNS, WORKFLOW_COLUMNS,
};
use crate::writer::{WriteOp, WriteRequest, WriterCounters, Written};

/// Default number of events of [`Store::events`] and
/// [`Store::unpublished_events`] when `limit` is 0.
const DEFAULT_EVENT_LIMIT: u32 = 1000;
/// Page size of new database files (existing files keep theirs). 8 KiB
/// rather than SQLite's 4: a task commit typically writes rows of a few KB
/// (a checkpoint's delta, an agent output), of which a 4 KiB page holds
/// one; bigger pages mean fewer pages written to the log per commit and
/// smaller files.
const PAGE_SIZE: u32 = 8192;

/// Counters of the group-committing writer (see [`SqliteStore::write_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Transactions run (each one COMMIT, one fsync at `synchronous = FULL`).
    pub batches: u64,
    /// Write requests taken into those transactions.
    pub requests: u64,
    /// The most requests one transaction carried.
    pub largest_batch: u64,
    /// Batches run a second time, with a savepoint per request, because a
    /// request failed in the first (savepoint-free) run.
    pub careful_reruns: u64,
    /// Requests waiting in the queue right now.
    pub queued: usize,
}

/// The SQLite [`Store`]. Cheap to share behind an `Arc`; dropping the last
/// handle stops the writer task (after it finishes the queued writes) and
/// closes the connections.
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteStoreOptions,
    writes: mpsc::Sender<WriteRequest>,
    writer_task: Option<JoinHandle<()>>,
    checkpointer_task: Option<JoinHandle<()>>,
    pool: SqlitePool,
    counters: Arc<WriterCounters>,
    // Last, so the file's directory outlives the handles above when dropped.
    _temp_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating the file and its parent directory if missing) and
    /// migrates the store at `path`: WAL journal, the configured
    /// `synchronous`, the busy timeout, foreign keys on. A file that is not a
    /// SQLite database (or is corrupt) is a permanent error naming the path;
    /// so is an empty file, which is a lost store rather than a new one, and
    /// is left as it is (a missing file is created whole, never empty: see
    /// `file`).
    #[tracing::instrument(skip(options), fields(path = %path.display(), synchronous = %options.synchronous))]
    pub async fn open(path: &Path, options: SqliteStoreOptions) -> Result<Self> {
        Self::open_with(path, options, None).await
    }

    /// A private, empty, throw-away store for tests: a fresh database file
    /// in a temporary directory that is deleted when the store is dropped.
    /// (A real file rather than `:memory:`, because WAL and the separate read
    /// pool need one; it behaves exactly like [`SqliteStore::open`].)
    pub async fn open_in_memory() -> Result<Self> {
        Self::open_temporary(SqliteStoreOptions::default()).await
    }

    /// Like [`SqliteStore::open_in_memory`], with options.
    pub async fn open_temporary(options: SqliteStoreOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("agentry-store-")
            .tempdir()
            .map_err(|error| {
                Error::transient(format!("creating a temporary directory: {error}"))
            })?;
        let path = dir.path().join("agentry.db");
        Self::open_with(&path, options, Some(dir)).await
    }

    async fn open_with(
        path: &Path,
        options: SqliteStoreOptions,
        temp_dir: Option<tempfile::TempDir>,
    ) -> Result<Self> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| {
                Error::permanent(format!(
                    "cannot create the directory of the store {shown}: {error}"
                ))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(options.synchronous.to_sqlx())
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            .statement_cache_capacity(256)
            .page_size(PAGE_SIZE);
        let open_error = |error: sqlx::Error| {
            if is_not_a_database(&error) {
                Error::permanent(format!(
                    "{shown} is not a SQLite database, or it is corrupt: {error}"
                ))
            } else {
                db_error(&format!("opening the store {shown}"), error)
            }
        };
        let limit = options.busy_timeout + options.operation_timeout;
        // Two processes opening a fresh file at once race twice: switching
        // it to WAL (SQLite answers one of them SQLITE_BUSY at once, to
        // avoid a lock deadlock) and applying the same migration (the loser
        // finds its tables already made). Both resolve by trying again: the
        // second attempt finds WAL on and the migration recorded. A real
        // failure fails every attempt and is returned.
        let mut attempt = 0;
        let mut writer = loop {
            attempt += 1;
            let opened = async {
                let mut writer = bounded(&format!("opening {shown}"), limit, async {
                    file::prepare(path, &shown, PAGE_SIZE).await?;
                    connect.connect().await.map_err(open_error)
                })
                .await
                .map_err(|error| {
                    let retry = error.class().is_retryable();
                    (error, retry)
                })?;
                // Any migration failure may be the race; a real one fails
                // every attempt.
                migrate(&mut writer, &shown, open_error, limit)
                    .await
                    .map_err(|error| (error, true))?;
                Ok::<_, (Error, bool)>(writer)
            }
            .await;
            match opened {
                Ok(writer) => break writer,
                Err((error, true)) if attempt < OPEN_ATTEMPTS => {
                    tracing::debug!(path = %shown, attempt, %error, "Opening the store failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
                Err((error, _)) => return Err(error),
            }
        };
        bounded(&format!("preparing the writer of {shown}"), limit, async {
            sqlx::raw_sql(procedures::INSTALL)
                .execute(&mut writer)
                .await
                .map(|_| ())
                .map_err(open_error)
        })
        .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.operation_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(open_error)?;
        let checkpoint_conn = bounded(&format!("opening {shown}"), limit, async {
            connect.connect().await.map_err(open_error)
        })
        .await?;
        let (checkpoints, checkpoint_wake) = mpsc::channel(1);
        let checkpointer_task = tokio::spawn(
            writer::checkpointer(checkpoint_conn, checkpoint_wake, limit)
                .instrument(tracing::debug_span!("sqlite_store_checkpointer", path = %shown)),
        );
        let (writes, requests) = mpsc::channel(options.queue_capacity.max(1));
        let span = tracing::debug_span!("sqlite_store_writer", path = %shown);
        let counters = Arc::new(WriterCounters::default());
        let writer_task = tokio::spawn(
            writer::run(
                writer,
                requests,
                options.max_batch.max(1),
                counters.clone(),
                checkpoints,
            )
            .instrument(span),
        );
        tracing::debug!(path = %shown, "SQLite store open.");
        Ok(SqliteStore {
            path: path.to_path_buf(),
            options,
            writes,
            writer_task: Some(writer_task),
            checkpointer_task: Some(checkpointer_task),
            pool,
            counters,
            _temp_dir: temp_dir,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The read pool, for crates that keep their own tables in the same
    /// file. Writes through it take SQLite's write lock alongside this
    /// store's writer (both wait up to the busy timeout), so keep them short.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// What the group-committing writer has done so far.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            largest_batch: self.counters.largest_batch.load(Ordering::Relaxed),
            careful_reruns: self.counters.careful_reruns.load(Ordering::Relaxed),
            queued: self.writes.max_capacity() - self.writes.capacity(),
        }
    }

    /// Bytes on disk: the database file plus its write-ahead log.
    pub fn file_size_bytes(&self) -> Result<u64> {
        let mut wal = OsString::from(self.path.as_os_str());
        wal.push("-wal");
        let mut total = 0;
        for file in [self.path.clone(), PathBuf::from(wal)] {
            match std::fs::metadata(&file) {
                Ok(meta) => total += meta.len(),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Error::transient(format!(
                        "reading the size of {}: {error}",
                        file.display()
                    )))
                }
            }
        }
        Ok(total)
    }

    /// Stops accepting writes, waits for the queued ones to commit, and
    /// closes every connection. Dropping the store does the same without
    /// waiting.
    pub async fn close(mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.writes, closed));
        if let Some(task) = self.writer_task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "The store's writer task failed.");
            }
        }
        // It stops once the writer has.
        if let Some(task) = self.checkpointer_task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "The store's checkpoint task failed.");
            }
        }
        self.pool.close().await;
    }

    /// Sends a write to the writer and waits for its answer.
    async fn write(&self, what: &str, op: WriteOp) -> Result<Written> {
        let (reply, answer) = oneshot::channel();
        let limit = self.options.operation_timeout;
        let enqueue = self.writes.send(WriteRequest { op, reply });
        match tokio::time::timeout(limit, enqueue).await {
            Err(_) => return Err(timeout(what, limit)),
            Ok(Err(_)) => return Err(Error::transient(format!("{what}: the store is closed"))),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout(limit, answer).await {
            Err(_) => Err(timeout(what, limit)),
            Ok(Err(_)) => Err(Error::transient(format!(
                "{what}: the store's writer stopped"
            ))),
            Ok(Ok(result)) => result,
        }
    }

    /// Runs a read on a pooled connection, bounded by the operation timeout.
    async fn read<T, F>(&self, what: &str, f: F) -> Result<T>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>>,
    {
        let limit = self.options.operation_timeout;
        bounded(what, limit, async {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(|error| db_error(what, error))?;
            f(&mut conn).await
        })
        .await
    }
}

fn timeout(what: &str, after: Duration) -> Error {
    Error::Timeout {
        what: what.to_string(),
        after,
    }
}

async fn bounded<T>(what: &str, limit: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(timeout(what, limit)))
}

async fn read_workflow(conn: &mut SqliteConnection, id: WorkflowId) -> Result<WorkflowRecord> {
    let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?1");
    let row = sqlx::query(&sql)
        .bind(id_text(id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("reading workflow {id}"), error))?;
    match row {
        Some(row) => workflow_from_row(&row),
        None => Err(Error::not_found(format!("workflow {id}"))),
    }
}

async fn read_checkpoints(conn: &mut SqliteConnection, id: WorkflowId) -> Result<Vec<Checkpoint>> {
    let sql =
        format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE workflow_id = ?1 ORDER BY seq");
    let rows = sqlx::query(&sql)
        .bind(id_text(id))
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("reading checkpoints of workflow {id}"), error))?;
    rows.iter().map(checkpoint_from_row).collect()
}

fn event_limit(limit: u32) -> i64 {
    i64::from(if limit == 0 {
        DEFAULT_EVENT_LIMIT
    } else {
        limit
    })
}

/// Attempts [`SqliteStore::open`] makes at connecting and migrating.
const OPEN_ATTEMPTS: u32 = 6;

/// Runs the embedded migrations on the writer connection.
async fn migrate(
    writer: &mut SqliteConnection,
    shown: &str,
    open_error: impl Fn(sqlx::Error) -> Error,
    limit: Duration,
) -> Result<()> {
    bounded(&format!("migrating {shown}"), limit, async {
        let mut migrator = sqlx::migrate!("./migrations");
        // Tolerate versions this build does not know (a newer build ran
        // on this file); other crates' tables are never looked at.
        migrator.set_ignore_missing(true);
        migrator.run(writer).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => open_error(error),
            other => Error::permanent(format!("migrating the store {shown}: {other}")),
        })
    })
    .await
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    #[tracing::instrument(skip_all)]
    async fn health(&self) -> Result<()> {
        if self.writes.is_closed() {
            return Err(Error::transient("the SQLite store's writer has stopped"));
        }
        self.read("health check", |conn| {
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
                    .map_err(|error| db_error("health check", error))
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %new.id, request_id = %new.request_id))]
    async fn create_workflow(&self, new: NewWorkflow) -> Result<WorkflowRecord> {
        if new.requirements.trim().is_empty() {
            return Err(Error::invalid(format!(
                "workflow {} (request {}) has an empty requirement",
                new.id, new.request_id
            )));
        }
        let request = CreateRequest::new(&new)?;
        match self
            .write("create_workflow", WriteOp::Create(request))
            .await?
        {
            Written::Record(record) => Ok(*record),
            other => Err(unexpected("create_workflow", &other)),
        }
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn get_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.read("get_workflow", move |conn| {
            Box::pin(read_workflow(conn, id))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(request_id = %request_id))]
    async fn find_by_request_id(&self, request_id: &RequestId) -> Result<Option<WorkflowRecord>> {
        let request_id = request_id.to_string();
        self.read("find_by_request_id", move |conn| {
            Box::pin(async move {
                let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE request_id = ?1");
                let row = sqlx::query(&sql)
                    .bind(&request_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|error| db_error(&format!("reading request {request_id}"), error))?;
                row.as_ref().map(workflow_from_row).transpose()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(status = ?query.status, tenant = ?query.tenant))]
    async fn list_workflows(&self, query: WorkflowQuery) -> Result<ListPage<WorkflowRecord>> {
        let limit = query.page_size();
        self.read("list_workflows", move |conn| {
            Box::pin(async move {
                // Only the filters in use, so SQLite can pick the matching index.
                let mut conditions = Vec::new();
                if query.status.is_some() {
                    conditions.push("status = ?");
                }
                if query.tenant.is_some() {
                    conditions.push("tenant = ?");
                }
                if query.before.is_some() {
                    conditions.push("id < ?");
                }
                let filter = if conditions.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", conditions.join(" AND "))
                };
                let sql = format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows{filter} ORDER BY id DESC LIMIT ?"
                );
                let mut select = sqlx::query(&sql);
                if let Some(status) = query.status {
                    select = select.bind(status.as_str());
                }
                if let Some(tenant) = &query.tenant {
                    select = select.bind(tenant);
                }
                if let Some(before) = query.before {
                    select = select.bind(id_text(before));
                }
                // One more than asked, to know whether a next page exists.
                let rows = select
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|error| db_error("listing workflows", error))?;
                let items = rows
                    .iter()
                    .map(workflow_from_row)
                    .collect::<Result<Vec<_>>>()?;
                Ok(ListPage::from_overfetch(items, limit))
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(
        workflow_id = %commit.task.key.workflow,
        step = commit.task.key.step,
        node = %commit.task.key.node,
        attempt = commit.task.attempt,
    ))]
    async fn commit_task(&self, commit: TaskCommit) -> Result<CommitOutcome> {
        let request = CommitRequest::new(&commit)?;
        match self.write("commit_task", WriteOp::Commit(request)).await? {
            Written::Outcome(outcome) => Ok(outcome),
            other => Err(unexpected("commit_task", &other)),
        }
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id, status = %transition.status, note = %transition.note))]
    async fn transition(&self, id: WorkflowId, transition: Transition) -> Result<WorkflowRecord> {
        let request = TransitionRequest::new(id, &transition)?;
        match self
            .write("transition", WriteOp::Transition(request))
            .await?
        {
            Written::Record(record) => Ok(*record),
            other => Err(unexpected("transition", &other)),
        }
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn checkpoints(&self, id: WorkflowId) -> Result<Vec<Checkpoint>> {
        self.read("checkpoints", move |conn| {
            Box::pin(read_checkpoints(conn, id))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn agent_outputs(&self, id: WorkflowId) -> Result<Vec<AgentOutputRecord>> {
        self.read("agent_outputs", move |conn| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {OUTPUT_COLUMNS} FROM agent_outputs WHERE workflow_id = ?1 ORDER BY rowid"
                );
                let rows = sqlx::query(&sql)
                    .bind(id_text(id))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|error| db_error(&format!("reading agent_outputs of {id}"), error))?;
                rows.iter().map(output_from_row).collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn shared_context(&self, id: WorkflowId) -> Result<BTreeMap<String, Value>> {
        self.read("shared_context", move |conn| {
            Box::pin(async move {
                let rows =
                    sqlx::query("SELECT key, value FROM shared_context WHERE workflow_id = ?1")
                        .bind(id_text(id))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(|error| {
                            db_error(&format!("reading shared_context of {id}"), error)
                        })?;
                context_from_rows(&rows)
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = ?workflow, after, limit))]
    async fn events(
        &self,
        workflow: Option<WorkflowId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let after = to_i64(after, "event seq").unwrap_or(i64::MAX);
        self.read("events", move |conn| {
            Box::pin(async move {
                let rows = match workflow {
                    Some(id) => {
                        let sql = format!(
                            "SELECT {EVENT_COLUMNS} FROM events \
                             WHERE workflow_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                        );
                        sqlx::query(&sql)
                            .bind(id_text(id))
                            .bind(after)
                            .bind(event_limit(limit))
                            .fetch_all(&mut *conn)
                            .await
                    }
                    None => {
                        let sql = format!(
                            "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                        );
                        sqlx::query(&sql)
                            .bind(after)
                            .bind(event_limit(limit))
                            .fetch_all(&mut *conn)
                            .await
                    }
                }
                .map_err(|error| db_error("reading events", error))?;
                rows.iter().map(event_from_row).collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn unpublished_events(&self, limit: u32) -> Result<Vec<StoredEvent>> {
        self.read("unpublished_events", move |conn| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE published = 0 ORDER BY seq LIMIT ?1"
                );
                let rows = sqlx::query(&sql)
                    .bind(event_limit(limit))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|error| db_error("reading unpublished events", error))?;
                rows.iter().map(event_from_row).collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(count = seqs.len()))]
    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        // Seqs beyond i64 cannot exist; marking them is a no-op.
        let seqs: Vec<i64> = seqs.iter().filter_map(|&s| i64::try_from(s).ok()).collect();
        if seqs.is_empty() {
            return Ok(());
        }
        self.write("mark_published", WriteOp::MarkPublished(seqs_json(&seqs)?))
            .await
            .map(|_| ())
    }

    /// Same result as the trait's default (`fold_state` over the record and
    /// its checkpoints), but both are read in one read transaction, so a
    /// concurrent commit cannot land between them.
    #[tracing::instrument(skip_all, fields(workflow_id = %id, step = ?step))]
    async fn state_at(&self, id: WorkflowId, step: Option<u64>) -> Result<WorkflowState> {
        let (record, checkpoints) = self
            .read("state_at", move |conn| {
                Box::pin(async move {
                    // Rolled back (it only read) when dropped.
                    let mut tx = sqlx::Connection::begin(conn)
                        .await
                        .map_err(|error| db_error("starting a read transaction", error))?;
                    let record = read_workflow(&mut tx, id).await?;
                    let checkpoints = read_checkpoints(&mut tx, id).await?;
                    Ok((record, checkpoints))
                })
            })
            .await?;
        fold_state(&record, &checkpoints, step)
    }
}

fn unexpected(what: &str, written: &Written) -> Error {
    Error::permanent(format!("{what}: the writer answered {written:?}"))
}

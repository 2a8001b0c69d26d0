//! PostgreSQL adapter of the [`Store`] port (sqlx, pooled, JSONB): the store
//! of the distributed mode.
//!
//! [`PostgresStore`] keeps workflows, checkpoints (deltas, never whole
//! states), the seed's `workflows`, `agent_outputs` and `shared_context`
//! tables (UUID keys, JSONB content, TIMESTAMPTZ) and the event outbox, plus
//! the LLM call ledger and cache ([`agentry_core::LlmLedger`],
//! [`agentry_core::LlmCache`]), the gateway's API keys
//! ([`agentry_core::ApiKeyStore`]) and the worker registry with its leases
//! ([`agentry_core::WorkerRegistry`]), created by embedded migrations in the
//! configured schema ([`PostgresOptions::schema`]).
//!
//! Key design decision: each [`Store::commit_task`] and [`Store::transition`]
//! is ONE statement (a chain of CTEs, one round trip, committed on its own),
//! and it takes no store-wide lock: its events go to a staging table,
//! `events_pending`, without a seq, and a **sequencer** numbers committed
//! ones into `events` later, so **seq order is the sequencer's commit
//! order**:
//!
//! - The guard is checked under the workflow's row lock (`SELECT ... FOR
//!   NO KEY UPDATE` in the statement's first CTE): two racing writers of
//!   one workflow run one after the other, and the second sees the first's
//!   result (stale step or status: in READ COMMITTED, a lock that had to
//!   wait returns the row as the winner left it).
//! - A task's checkpoint is unique per `(workflow_id, step, node)`; its
//!   `INSERT ... ON CONFLICT DO NOTHING` writing no row is the
//!   [`CommitOutcome::Duplicate`] (checked before the guard's Stale when the
//!   workflow has moved on, so a redelivered task reads as a duplicate).
//!   Every other write of the statement hangs off that row, so a refused
//!   commit writes nothing.
//! - Event seqs come neither from a sequence nor from the committing
//!   transaction. A sequence hands out numbers at INSERT time and
//!   transactions commit in another order: a reader of `events(after)`
//!   could see seq 6 before seq 5 commits, move its position to 6 and never
//!   see 5. Allocating from a counter row inside the commit (what this
//!   store did first) keeps the order but holds the counter's lock through
//!   every commit's WAL flush, so commits with events ran one at a time:
//!   about 1,000 steps/s at most on the benchmark machine, whatever the
//!   concurrency (BENCHMARKS.md). Now commits only INSERT into
//!   `events_pending` (whose `ord`, taken under the workflow's row lock,
//!   orders each workflow's events), so commits of different workflows
//!   flush their WAL together.
//! - A sequencer pass is one short transaction: lock the single row of
//!   `event_seq`, then (in a statement whose snapshot is taken after the
//!   lock was granted) delete pending rows in `ord` order, number them on
//!   from `event_seq.last`, insert them into `events` and move `last` on.
//!   Passes, of this store or of any other on the schema, hold that lock
//!   until COMMIT, so they commit one after the other and in seq order, and
//!   PostgreSQL releases a row lock only once its transaction is visible:
//!   every snapshot sees a gap-free prefix of the passes, so
//!   `events(after)` never skips a seq. Each workflow's events keep their
//!   commit order (a pass that sees a workflow's later event sees its
//!   earlier ones too, with smaller `ord`s). A pass amortises its WAL flush
//!   over every event it moves.
//! - The readers run the sequencer: [`Store::events`] and
//!   [`Store::unpublished_events`] first move whatever is pending (a cheap
//!   `SELECT EXISTS` when nothing is), so an event is readable, with its
//!   seq, as soon as its commit returned, through any store on the schema
//!   (read-your-writes). Nothing sequences eagerly after a commit: the
//!   engine's outbox relay reads right after its commits anyway, and one
//!   pass per relay batch flushes far less often than one per commit. The
//!   passes of one store are single-flight: callers that arrive while a
//!   pass runs share the next one. A pass moves at most 10,000 events and
//!   is repeated until the backlog is gone.
//! - An event id is unique in the outbox. A commit repeating the id of a
//!   pending event fails as a conflict; one repeating the id of an event
//!   already sequenced carries the same event again, and the sequencer
//!   drops it (its seq stays unused) rather than stop the outbox.
//!
//! Nothing waits for a lock while holding another that a writer could want:
//! commits lock only their workflow's row; a pass holds `event_seq`, and
//! the foreign-key checks of its inserts take `KEY SHARE` on workflow rows,
//! which `NO KEY UPDATE` does not block. (A build from before the staging
//! table, still running on the schema during an upgrade, locks workflow
//! rows `FOR UPDATE` and then `event_seq`; a pass can deadlock with it,
//! and PostgreSQL aborts one of the two, a transient error. Such a build
//! does not see events still pending until a newer store reads.)
//! Connections run with `statement_timeout` and `jit = off` (the store's
//! statements are all short: compiling one costs more than it saves), and
//! every operation is bounded by the acquire timeout plus the statement
//! timeout.
//!
//! Where PostgreSQL differs from the SQLite store, by choice:
//!
//! - TIMESTAMPTZ keeps microseconds. Times the store makes are truncated to
//!   microseconds before they are written; times a caller hands in (an
//!   event's `at`, an API key's times, a worker's beats, a lease's expiry)
//!   keep the nanoseconds below in a `*_ns` column, so they read back
//!   exactly and compare exactly.
//! - The seed's column lengths are enforced (`request_id VARCHAR(255)`,
//!   `agent_name VARCHAR(100)`, `output_type VARCHAR(50)`, `key
//!   VARCHAR(255)`): a longer value is [`Error::InvalidInput`] and writes
//!   nothing. So is text or JSON holding a NUL character, which PostgreSQL
//!   cannot store.
//! - JSONB keeps JSON's value, not its text: object keys are reordered
//!   (irrelevant to `serde_json::Value`), and numbers come back in
//!   PostgreSQL's `numeric` notation, so a float written in exponent form
//!   with an integral value (`1e18`) reads back as an integer, and `-0.0`
//!   as `0`.
//! - `checkpoints`, `agent_outputs` and `shared_context` of an unknown
//!   workflow are [`Error::NotFound`] (as in the memory store).

mod access;
mod error;
mod llm;
mod options;
mod outbox;
mod registry;
mod rows;
mod write;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use agentry_core::{
    fold_state, AgentOutputRecord, Checkpoint, CommitOutcome, Error, ListPage, NewWorkflow,
    RequestId, Result, Store, StoredEvent, TaskCommit, Transition, WorkflowId, WorkflowQuery,
    WorkflowRecord, WorkflowState, WorkflowStatus,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

pub use options::PostgresOptions;

use crate::error::{db_error, is_unique_violation};
use crate::options::{quote_ident, session_sql};
use crate::rows::{
    checkpoint_from_row, context_from_rows, event_from_row, json, now, output_from_row, to_i64,
    workflow_from_row, CHECKPOINT_COLUMNS, EVENT_COLUMNS, OUTPUT_COLUMNS, WORKFLOW_COLUMNS,
};

/// Number of events of [`Store::events`] and [`Store::unpublished_events`]
/// when `limit` is 0.
const DEFAULT_EVENT_LIMIT: u32 = 1000;
/// How long dropping a temporary store waits to drop its schema.
const DROP_SCHEMA_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL [`Store`]. Share it behind an `Arc`; clones of
/// [`PostgresStore::pool`] share its connections.
pub struct PostgresStore {
    pool: PgPool,
    options: PostgresOptions,
    /// Where it connects, without the password (for messages).
    shown: String,
    /// Set for [`PostgresStore::connect_temporary`]: the schema to drop when
    /// the store is dropped.
    temporary: Option<(PgConnectOptions, String)>,
    /// Numbers committed events into `events` before they are read.
    sequencer: outbox::Sequencer,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.shown)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`),
    /// creates the schema when [`PostgresOptions::schema`] names one, and runs
    /// the embedded migrations. An unreachable server is a transient error
    /// naming the server (never the password); a malformed URL is invalid
    /// input.
    #[tracing::instrument(skip_all, fields(schema = ?options.schema))]
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self> {
        let connect = parse_url(url)?;
        Self::connect_with(connect, options, false).await
    }

    /// A private, empty, throw-away store for tests: a fresh schema
    /// `t_<uuid>` in the database at `url` (`options.schema` is replaced),
    /// dropped with everything in it when the store is dropped. The drop
    /// runs on its own connection and thread and waits for it (at most
    /// 10 s); a process that dies first leaves the schema behind.
    pub async fn connect_temporary(url: &str, options: PostgresOptions) -> Result<Self> {
        let connect = parse_url(url)?;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        Self::connect_with(connect, options.with_schema(schema), true).await
    }

    async fn connect_with(
        connect: PgConnectOptions,
        options: PostgresOptions,
        temporary: bool,
    ) -> Result<Self> {
        let shown = shown(&connect, options.schema.as_deref());
        let unreachable = |error: sqlx::Error| db_error(&format!("connecting to {shown}"), error);
        if let Some(schema) = &options.schema {
            if schema.is_empty() {
                return Err(Error::invalid("the PostgreSQL schema name is empty"));
            }
            create_schema(&connect, schema, &options)
                .await
                .map_err(unreachable)?;
        }
        let session = session_sql(&options);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let session = session.clone();
                Box::pin(async move {
                    conn.execute(sqlx::raw_sql(&session)).await?;
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(unreachable)?;
        let store = PostgresStore {
            temporary: match (&options.schema, temporary) {
                (Some(schema), true) => Some((connect, schema.clone())),
                _ => None,
            },
            pool,
            options,
            shown,
            sequencer: outbox::Sequencer::default(),
        };
        store.migrate().await?;
        tracing::debug!(server = %store.shown, "PostgreSQL store open.");
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let what = format!("migrating the store at {}", self.shown);
        self.bounded(&what, async {
            let mut migrator = sqlx::migrate!("./migrations");
            // Tolerate versions this build does not know (a newer build ran
            // on this schema).
            migrator.set_ignore_missing(true);
            migrator.run(&self.pool).await.map_err(|error| match error {
                sqlx::migrate::MigrateError::Execute(error) => db_error(&what, error),
                other => Error::permanent(format!("{what}: {other}")),
            })
        })
        .await
    }

    /// The connection pool (its connections use the store's schema), for
    /// crates that keep their own tables beside the store's.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema the store's tables are in, when one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.options.schema.as_deref()
    }

    /// Closes every connection, waiting for operations in flight. A
    /// temporary store's schema is dropped when the store is dropped.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `f` bounded by the operation timeout.
    async fn bounded<T>(&self, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
        match self.options.operation_timeout() {
            Some(limit) => tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: what.to_string(),
                    after: limit,
                })
            }),
            None => f.await,
        }
    }

    async fn read_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error(&format!("reading workflow {id}"), error))?;
        match row {
            Some(row) => workflow_from_row(&row),
            None => Err(Error::not_found(format!("workflow {id}"))),
        }
    }

    /// Fails with NotFound naming `id` when the workflow does not exist.
    async fn require_workflow(&self, id: WorkflowId) -> Result<()> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM workflows WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error(&format!("reading workflow {id}"), error))?;
        match found {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!("workflow {id}"))),
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let Some((connect, schema)) = self.temporary.take() else {
            return;
        };
        // Drop may run inside or outside a runtime, and a task spawned on a
        // test's runtime dies with it: use a thread with its own runtime.
        let dropper = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::warn!(%schema, %error, "Cannot drop a temporary schema.");
                    return;
                }
            };
            let dropped = runtime.block_on(async {
                tokio::time::timeout(DROP_SCHEMA_TIMEOUT, async {
                    let mut conn = connect.connect().await?;
                    let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&schema));
                    sqlx::raw_sql(&sql).execute(&mut conn).await?;
                    conn.close().await
                })
                .await
            });
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%schema, %error, "Dropping a temporary schema failed.")
                }
                Err(_) => tracing::warn!(%schema, "Dropping a temporary schema timed out."),
            }
        });
        if dropper.join().is_err() {
            tracing::warn!("The thread dropping a temporary schema panicked.");
        }
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    // The errors never repeat the URL: it may hold a password.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::invalid(
            "the PostgreSQL URL must start with postgres:// or postgresql://",
        ));
    }
    url.parse::<PgConnectOptions>()
        .map_err(|error| Error::invalid(format!("the PostgreSQL URL is malformed: {error}")))
}

/// `postgres://user@host:port/db (schema s)`, without the password.
fn shown(connect: &PgConnectOptions, schema: Option<&str>) -> String {
    let mut shown = format!(
        "postgres://{}@{}:{}/{}",
        connect.get_username(),
        connect.get_host(),
        connect.get_port(),
        connect.get_database().unwrap_or("")
    );
    if let Some(schema) = schema {
        shown.push_str(&format!(" (schema {schema})"));
    }
    shown
}

/// `CREATE SCHEMA IF NOT EXISTS`, on a connection of its own (the pool's
/// connections select the schema, which must exist first).
async fn create_schema(
    connect: &PgConnectOptions,
    schema: &str,
    options: &PostgresOptions,
) -> std::result::Result<(), sqlx::Error> {
    let mut conn = tokio::time::timeout(options.acquire_timeout, connect.connect())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
    match sqlx::raw_sql(&sql).execute(&mut conn).await {
        Ok(_) => {}
        // Two processes creating it at once: the loser's IF NOT EXISTS
        // can still trip the catalog's unique index. The schema exists.
        Err(error) if is_unique_violation(&error) => {}
        Err(error) => return Err(error),
    }
    conn.close().await
}

fn event_limit(limit: u32) -> i64 {
    i64::from(if limit == 0 {
        DEFAULT_EVENT_LIMIT
    } else {
        limit
    })
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    #[tracing::instrument(skip_all)]
    async fn health(&self) -> Result<()> {
        let limit = self.options.acquire_timeout;
        let check = async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|error| db_error(&format!("health check of {}", self.shown), error))
        };
        tokio::time::timeout(limit, check)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    what: format!("health check of {}", self.shown),
                    after: limit,
                })
            })
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %new.id, request_id = %new.request_id))]
    async fn create_workflow(&self, new: NewWorkflow) -> Result<WorkflowRecord> {
        if new.requirements.trim().is_empty() {
            return Err(Error::invalid(format!(
                "workflow {} (request {}) has an empty requirement",
                new.id, new.request_id
            )));
        }
        self.bounded("create_workflow", async {
            let at = now();
            let sql = format!(
                "INSERT INTO workflows (id, request_id, requirements, status, created_at, \
                 updated_at, workflow_name, definition, options, tenant, cursor, cursor_step, \
                 current_step) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, 0, '') \
                 ON CONFLICT (request_id) DO NOTHING RETURNING {WORKFLOW_COLUMNS}"
            );
            let inserted = sqlx::query(&sql)
                .bind(new.id.0)
                .bind(new.request_id.as_str())
                .bind(&new.requirements)
                .bind(WorkflowStatus::Pending.as_str())
                .bind(at)
                .bind(&new.workflow_name)
                .bind(&new.definition)
                .bind(json(&new.options))
                .bind(&new.tenant)
                .bind(json(&agentry_core::Cursor::default()))
                .fetch_optional(&self.pool)
                .await;
            match inserted {
                Ok(Some(row)) => workflow_from_row(&row),
                // The request id exists (perhaps committed by a racing
                // create this INSERT waited for): return that workflow.
                Ok(None) => self
                    .find_by_request_id(&new.request_id)
                    .await?
                    .ok_or_else(|| {
                        Error::transient(format!(
                            "request {} was created and is gone",
                            new.request_id
                        ))
                    }),
                Err(error) if is_unique_violation(&error) => Err(Error::Conflict(format!(
                    "workflow {} already exists",
                    new.id
                ))),
                Err(error) => Err(db_error(&format!("creating workflow {}", new.id), error)),
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn get_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.bounded("get_workflow", self.read_workflow(id)).await
    }

    #[tracing::instrument(skip_all, fields(request_id = %request_id))]
    async fn find_by_request_id(&self, request_id: &RequestId) -> Result<Option<WorkflowRecord>> {
        self.bounded("find_by_request_id", async {
            let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE request_id = $1");
            let row = sqlx::query(&sql)
                .bind(request_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|error| db_error(&format!("reading request {request_id}"), error))?;
            row.as_ref().map(workflow_from_row).transpose()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(status = ?query.status, tenant = ?query.tenant))]
    async fn list_workflows(&self, query: WorkflowQuery) -> Result<ListPage<WorkflowRecord>> {
        let limit = query.page_size();
        self.bounded("list_workflows", async {
            // Only the filters in use, so the planner can pick the index.
            let mut conditions = Vec::new();
            let mut n = 0;
            let mut param = || {
                n += 1;
                n
            };
            if query.status.is_some() {
                conditions.push(format!("status = ${}", param()));
            }
            if query.tenant.is_some() {
                conditions.push(format!("tenant = ${}", param()));
            }
            if query.before.is_some() {
                conditions.push(format!("id < ${}", param()));
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            };
            let sql = format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows{filter} ORDER BY id DESC LIMIT ${}",
                param()
            );
            let mut select = sqlx::query(&sql);
            if let Some(status) = query.status {
                select = select.bind(status.as_str());
            }
            if let Some(tenant) = &query.tenant {
                select = select.bind(tenant);
            }
            if let Some(before) = query.before {
                select = select.bind(before.0);
            }
            // One more than asked, to know whether a next page exists.
            let rows = select
                .bind(i64::from(limit) + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| db_error("listing workflows", error))?;
            let items = rows
                .iter()
                .map(workflow_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(ListPage::from_overfetch(items, limit))
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
        self.bounded("commit_task", write::commit_task(&self.pool, &commit))
            .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id, status = %transition.status, note = %transition.note))]
    async fn transition(&self, id: WorkflowId, transition: Transition) -> Result<WorkflowRecord> {
        self.bounded("transition", write::transition(&self.pool, id, &transition))
            .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn checkpoints(&self, id: WorkflowId) -> Result<Vec<Checkpoint>> {
        self.bounded("checkpoints", async {
            let rows = read_checkpoints(&self.pool, id).await?;
            if rows.is_empty() {
                self.require_workflow(id).await?;
            }
            Ok(rows)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn agent_outputs(&self, id: WorkflowId) -> Result<Vec<AgentOutputRecord>> {
        self.bounded("agent_outputs", async {
            let sql = format!(
                "SELECT {OUTPUT_COLUMNS} FROM agent_outputs WHERE workflow_id = $1 ORDER BY ord"
            );
            let rows = sqlx::query(&sql)
                .bind(id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| db_error(&format!("reading agent_outputs of {id}"), error))?;
            if rows.is_empty() {
                self.require_workflow(id).await?;
            }
            rows.iter().map(output_from_row).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(workflow_id = %id))]
    async fn shared_context(&self, id: WorkflowId) -> Result<BTreeMap<String, Value>> {
        self.bounded("shared_context", async {
            let rows = sqlx::query("SELECT key, value FROM shared_context WHERE workflow_id = $1")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| db_error(&format!("reading shared_context of {id}"), error))?;
            if rows.is_empty() {
                self.require_workflow(id).await?;
            }
            context_from_rows(&rows)
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
        self.bounded("events", async {
            self.sequencer.catch_up(&self.pool).await?;
            let rows = match workflow {
                Some(id) => {
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM events \
                         WHERE workflow_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                    );
                    sqlx::query(&sql)
                        .bind(id.0)
                        .bind(after)
                        .bind(event_limit(limit))
                        .fetch_all(&self.pool)
                        .await
                }
                None => {
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
                    );
                    sqlx::query(&sql)
                        .bind(after)
                        .bind(event_limit(limit))
                        .fetch_all(&self.pool)
                        .await
                }
            }
            .map_err(|error| db_error("reading events", error))?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn unpublished_events(&self, limit: u32) -> Result<Vec<StoredEvent>> {
        self.bounded("unpublished_events", async {
            self.sequencer.catch_up(&self.pool).await?;
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE NOT published ORDER BY seq LIMIT $1"
            );
            let rows = sqlx::query(&sql)
                .bind(event_limit(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|error| db_error("reading unpublished events", error))?;
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(count = seqs.len()))]
    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        // Seqs beyond i64 cannot exist; marking them is a no-op.
        let mut seqs: Vec<i64> = seqs.iter().filter_map(|&s| i64::try_from(s).ok()).collect();
        if seqs.is_empty() {
            return Ok(());
        }
        // In seq order, so two overlapping marks lock rows in one order.
        seqs.sort_unstable();
        seqs.dedup();
        self.bounded("mark_published", async {
            sqlx::query("UPDATE events SET published = TRUE WHERE seq = ANY($1) AND NOT published")
                .bind(&seqs)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|error| db_error("marking events published", error))
        })
        .await
    }

    /// Same result as the trait's default (`fold_state` over the record and
    /// its checkpoints), but both are read in one REPEATABLE READ
    /// transaction, so a concurrent commit cannot land between them.
    #[tracing::instrument(skip_all, fields(workflow_id = %id, step = ?step))]
    async fn state_at(&self, id: WorkflowId, step: Option<u64>) -> Result<WorkflowState> {
        let (record, checkpoints) = self
            .bounded("state_at", async {
                let what = format!("reading the state of workflow {id}");
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(|error| db_error(&what, error))?;
                let mut tx = conn
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(|error| db_error(&what, error))?;
                let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1");
                let row = sqlx::query(&sql)
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|error| db_error(&what, error))?;
                let record = match row {
                    Some(row) => workflow_from_row(&row)?,
                    None => return Err(Error::not_found(format!("workflow {id}"))),
                };
                let checkpoints = read_checkpoints(&mut *tx, id).await?;
                tx.commit().await.map_err(|error| db_error(&what, error))?;
                Ok((record, checkpoints))
            })
            .await?;
        fold_state(&record, &checkpoints, step)
    }
}

async fn read_checkpoints<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: WorkflowId,
) -> Result<Vec<Checkpoint>> {
    let sql =
        format!("SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE workflow_id = $1 ORDER BY seq");
    let rows = sqlx::query(&sql)
        .bind(id.0)
        .fetch_all(executor)
        .await
        .map_err(|error| db_error(&format!("reading checkpoints of workflow {id}"), error))?;
    rows.iter().map(checkpoint_from_row).collect()
}

//! The shared SQLite pool, this crate's own schema, and sqlx error mapping.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use agentry_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Sqlite, SqliteConnection, SqlitePool, Transaction};

/// How long SQLite waits on a lock held by another writer before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The ceiling for one whole database operation (acquire + statements).
pub(crate) const DB_OP_TIMEOUT: Duration = Duration::from_secs(30);

/// This crate's schema, one entry per version, each applied in one
/// transaction with its version row. A fresh file goes through every
/// version, so old and new files reach the same tables by one path.
const SCHEMA: &[(i64, &[&str])] = &[
    (
    1,
    &[
        "CREATE TABLE IF NOT EXISTS tracker_projects (
            key        TEXT PRIMARY KEY NOT NULL,
            name       TEXT NOT NULL,
            next_seq   INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS tracker_issues (
            key         TEXT PRIMARY KEY NOT NULL,
            project     TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            title       TEXT NOT NULL,
            description TEXT NOT NULL,
            status      TEXT NOT NULL,
            parent      TEXT,
            labels      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL,
            UNIQUE (project, seq)
        )",
        "CREATE TABLE IF NOT EXISTS tracker_links (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            from_key   TEXT NOT NULL,
            to_key     TEXT NOT NULL,
            kind       TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (from_key, to_key, kind)
        )",
        "CREATE INDEX IF NOT EXISTS tracker_links_to ON tracker_links (to_key)",
        "CREATE TABLE IF NOT EXISTS tracker_comments (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            issue      TEXT NOT NULL,
            body       TEXT NOT NULL,
            created_at TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS tracker_comments_issue ON tracker_comments (issue, id)",
        "CREATE TABLE IF NOT EXISTS tracker_attachments (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            issue      TEXT NOT NULL,
            filename   TEXT NOT NULL,
            media_type TEXT NOT NULL,
            content    BLOB NOT NULL,
            size       INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )",
        "CREATE INDEX IF NOT EXISTS tracker_attachments_issue ON tracker_attachments (issue, id)",
        "CREATE TABLE IF NOT EXISTS tracker_idempotency (
            entity     TEXT NOT NULL,
            key        TEXT NOT NULL,
            entity_id  TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (entity, key)
        )",
        "CREATE TABLE IF NOT EXISTS wiki_spaces (
            key        TEXT PRIMARY KEY NOT NULL,
            name       TEXT NOT NULL,
            created_at TEXT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS wiki_pages (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            space      TEXT NOT NULL,
            title      TEXT NOT NULL COLLATE NOCASE,
            parent_id  INTEGER,
            body       TEXT NOT NULL,
            version    INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (space, title)
        )",
        "CREATE TABLE IF NOT EXISTS wiki_page_versions (
            page_id         INTEGER NOT NULL,
            version         INTEGER NOT NULL,
            title           TEXT NOT NULL,
            body            TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            created_at      TEXT NOT NULL,
            PRIMARY KEY (page_id, version)
        )",
        "CREATE TABLE IF NOT EXISTS wiki_idempotency (
            key        TEXT PRIMARY KEY NOT NULL,
            page_id    INTEGER NOT NULL,
            version    INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS code_repositories (
            name           TEXT PRIMARY KEY NOT NULL,
            description    TEXT NOT NULL,
            default_branch TEXT NOT NULL,
            created_at     TEXT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS code_merge_requests (
            repository      TEXT NOT NULL,
            id              INTEGER NOT NULL,
            source_branch   TEXT NOT NULL,
            target_branch   TEXT NOT NULL,
            title           TEXT NOT NULL,
            description     TEXT NOT NULL,
            state           TEXT NOT NULL,
            test_result     TEXT,
            merge_commit    TEXT,
            idempotency_key TEXT NOT NULL UNIQUE,
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL,
            PRIMARY KEY (repository, id)
        )",
        "CREATE UNIQUE INDEX IF NOT EXISTS code_merge_requests_one_open
            ON code_merge_requests (repository, source_branch, target_branch)
            WHERE state = 'opened'",
        "CREATE TABLE IF NOT EXISTS code_idempotency (
            key              TEXT PRIMARY KEY NOT NULL,
            repository       TEXT NOT NULL,
            merge_request_id INTEGER NOT NULL,
            created_at       TEXT NOT NULL
        )",
    ],
    ),
    (2, OWNERS),
];

/// Version 2: every table gets an `owner` column (`ArtifactOwner`'s string
/// form) in its keys, so two owners' projects, spaces, repositories, merge
/// requests and idempotency keys never meet. Tables are rebuilt (SQLite
/// cannot change a primary key) and existing rows become the command
/// line's (`cli`): data directories made before tenants keep their
/// artifacts for `agentry run`. Row ids (issues' comments, pages) are kept.
/// `owner` has no default, so a query that forgets it fails loudly.
const OWNERS: &[&str] = &[
    "CREATE TABLE tracker_projects_v2 (
        owner      TEXT NOT NULL,
        key        TEXT NOT NULL,
        name       TEXT NOT NULL,
        next_seq   INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        PRIMARY KEY (owner, key)
    )",
    "INSERT INTO tracker_projects_v2 (owner, key, name, next_seq, created_at)
        SELECT 'cli', key, name, next_seq, created_at FROM tracker_projects",
    "DROP TABLE tracker_projects",
    "ALTER TABLE tracker_projects_v2 RENAME TO tracker_projects",
    "CREATE TABLE tracker_issues_v2 (
        owner       TEXT NOT NULL,
        key         TEXT NOT NULL,
        project     TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        title       TEXT NOT NULL,
        description TEXT NOT NULL,
        status      TEXT NOT NULL,
        parent      TEXT,
        labels      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (owner, key),
        UNIQUE (owner, project, seq)
    )",
    "INSERT INTO tracker_issues_v2 (owner, key, project, seq, kind, title, description, status,
            parent, labels, created_at, updated_at)
        SELECT 'cli', key, project, seq, kind, title, description, status, parent, labels,
            created_at, updated_at FROM tracker_issues",
    "DROP TABLE tracker_issues",
    "ALTER TABLE tracker_issues_v2 RENAME TO tracker_issues",
    "CREATE TABLE tracker_links_v2 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        owner      TEXT NOT NULL,
        from_key   TEXT NOT NULL,
        to_key     TEXT NOT NULL,
        kind       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (owner, from_key, to_key, kind)
    )",
    "INSERT INTO tracker_links_v2 (id, owner, from_key, to_key, kind, created_at)
        SELECT id, 'cli', from_key, to_key, kind, created_at FROM tracker_links",
    "DROP TABLE tracker_links",
    "ALTER TABLE tracker_links_v2 RENAME TO tracker_links",
    "CREATE INDEX tracker_links_to ON tracker_links (owner, to_key)",
    "CREATE TABLE tracker_comments_v2 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        owner      TEXT NOT NULL,
        issue      TEXT NOT NULL,
        body       TEXT NOT NULL,
        created_at TEXT NOT NULL
    )",
    "INSERT INTO tracker_comments_v2 (id, owner, issue, body, created_at)
        SELECT id, 'cli', issue, body, created_at FROM tracker_comments",
    "DROP TABLE tracker_comments",
    "ALTER TABLE tracker_comments_v2 RENAME TO tracker_comments",
    "CREATE INDEX tracker_comments_issue ON tracker_comments (owner, issue, id)",
    "CREATE TABLE tracker_attachments_v2 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        owner      TEXT NOT NULL,
        issue      TEXT NOT NULL,
        filename   TEXT NOT NULL,
        media_type TEXT NOT NULL,
        content    BLOB NOT NULL,
        size       INTEGER NOT NULL,
        created_at TEXT NOT NULL
    )",
    "INSERT INTO tracker_attachments_v2 (id, owner, issue, filename, media_type, content, size,
            created_at)
        SELECT id, 'cli', issue, filename, media_type, content, size, created_at
        FROM tracker_attachments",
    "DROP TABLE tracker_attachments",
    "ALTER TABLE tracker_attachments_v2 RENAME TO tracker_attachments",
    "CREATE INDEX tracker_attachments_issue ON tracker_attachments (owner, issue, id)",
    "CREATE TABLE tracker_idempotency_v2 (
        owner      TEXT NOT NULL,
        entity     TEXT NOT NULL,
        key        TEXT NOT NULL,
        entity_id  TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (owner, entity, key)
    )",
    "INSERT INTO tracker_idempotency_v2 (owner, entity, key, entity_id, created_at)
        SELECT 'cli', entity, key, entity_id, created_at FROM tracker_idempotency",
    "DROP TABLE tracker_idempotency",
    "ALTER TABLE tracker_idempotency_v2 RENAME TO tracker_idempotency",
    "CREATE TABLE wiki_spaces_v2 (
        owner      TEXT NOT NULL,
        key        TEXT NOT NULL,
        name       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (owner, key)
    )",
    "INSERT INTO wiki_spaces_v2 (owner, key, name, created_at)
        SELECT 'cli', key, name, created_at FROM wiki_spaces",
    "DROP TABLE wiki_spaces",
    "ALTER TABLE wiki_spaces_v2 RENAME TO wiki_spaces",
    "CREATE TABLE wiki_pages_v2 (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        owner      TEXT NOT NULL,
        space      TEXT NOT NULL,
        title      TEXT NOT NULL COLLATE NOCASE,
        parent_id  INTEGER,
        body       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (owner, space, title)
    )",
    "INSERT INTO wiki_pages_v2 (id, owner, space, title, parent_id, body, version, created_at,
            updated_at)
        SELECT id, 'cli', space, title, parent_id, body, version, created_at, updated_at
        FROM wiki_pages",
    "DROP TABLE wiki_pages",
    "ALTER TABLE wiki_pages_v2 RENAME TO wiki_pages",
    "CREATE TABLE wiki_idempotency_v2 (
        owner      TEXT NOT NULL,
        key        TEXT NOT NULL,
        page_id    INTEGER NOT NULL,
        version    INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (owner, key)
    )",
    "INSERT INTO wiki_idempotency_v2 (owner, key, page_id, version, created_at)
        SELECT 'cli', key, page_id, version, created_at FROM wiki_idempotency",
    "DROP TABLE wiki_idempotency",
    "ALTER TABLE wiki_idempotency_v2 RENAME TO wiki_idempotency",
    "CREATE TABLE code_repositories_v2 (
        owner          TEXT NOT NULL,
        name           TEXT NOT NULL,
        description    TEXT NOT NULL,
        default_branch TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        PRIMARY KEY (owner, name)
    )",
    "INSERT INTO code_repositories_v2 (owner, name, description, default_branch, created_at)
        SELECT 'cli', name, description, default_branch, created_at FROM code_repositories",
    "DROP TABLE code_repositories",
    "ALTER TABLE code_repositories_v2 RENAME TO code_repositories",
    "CREATE TABLE code_merge_requests_v2 (
        owner           TEXT NOT NULL,
        repository      TEXT NOT NULL,
        id              INTEGER NOT NULL,
        source_branch   TEXT NOT NULL,
        target_branch   TEXT NOT NULL,
        title           TEXT NOT NULL,
        description     TEXT NOT NULL,
        state           TEXT NOT NULL,
        test_result     TEXT,
        merge_commit    TEXT,
        idempotency_key TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        PRIMARY KEY (owner, repository, id),
        UNIQUE (owner, idempotency_key)
    )",
    "INSERT INTO code_merge_requests_v2 (owner, repository, id, source_branch, target_branch,
            title, description, state, test_result, merge_commit, idempotency_key, created_at,
            updated_at)
        SELECT 'cli', repository, id, source_branch, target_branch, title, description, state,
            test_result, merge_commit, idempotency_key, created_at, updated_at
        FROM code_merge_requests",
    "DROP TABLE code_merge_requests",
    "ALTER TABLE code_merge_requests_v2 RENAME TO code_merge_requests",
    "CREATE UNIQUE INDEX code_merge_requests_one_open
        ON code_merge_requests (owner, repository, source_branch, target_branch)
        WHERE state = 'opened'",
    "CREATE TABLE code_idempotency_v2 (
        owner            TEXT NOT NULL,
        key              TEXT NOT NULL,
        repository       TEXT NOT NULL,
        merge_request_id INTEGER NOT NULL,
        created_at       TEXT NOT NULL,
        PRIMARY KEY (owner, key)
    )",
    "INSERT INTO code_idempotency_v2 (owner, key, repository, merge_request_id, created_at)
        SELECT 'cli', key, repository, merge_request_id, created_at FROM code_idempotency",
    "DROP TABLE code_idempotency",
    "ALTER TABLE code_idempotency_v2 RENAME TO code_idempotency",
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 2;

/// How long [`open_pool`] keeps retrying transient failures.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(10);

/// Opens (creating if missing, refusing if empty: see [`prepare_file`]) the
/// shared database file: WAL, a 5 s busy timeout, and this crate's schema
/// applied. Transient failures are retried
/// for up to [`OPEN_RETRY_FOR`]: two processes opening a fresh file at once
/// both switch it to WAL, and SQLite answers one of them `SQLITE_BUSY` at
/// once, without waiting for the busy timeout, to avoid a lock deadlock.
pub(crate) async fn open_pool(db_path: &Path) -> Result<SqlitePool> {
    let deadline = std::time::Instant::now() + OPEN_RETRY_FOR;
    let mut delay = Duration::from_millis(20);
    loop {
        match try_open_pool(db_path).await {
            Err(error)
                if error.class() == agentry_core::ErrorClass::Transient
                    && std::time::Instant::now() + delay < deadline =>
            {
                tracing::debug!(%error, "Opening the database failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

async fn try_open_pool(db_path: &Path) -> Result<SqlitePool> {
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|error| io_error(format!("creating {}", dir.display()), error))?;
    }
    prepare_file(db_path).await?;
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|error| Error::permanent(format!("sqlite options: {error}")))?
        .filename(db_path)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = with_timeout("opening the database", async {
        SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(DB_OP_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_error)
    })
    .await
    .map_err(|e| e.context(format!("opening {}", db_path.display())))?;
    apply_schema(&pool).await?;
    Ok(pool)
}

/// Makes sure a database file is at `db_path` for SQLite to open without
/// creating anything. SQLite takes a zero-length file for a new database,
/// so an empty `agentry.db` (a truncated store) would silently start over:
/// it is refused, permanently, naming the file and what to do, and left as
/// it is. A missing file is created whole (in a temporary file beside it,
/// linked into place once it holds its header), so an empty file is never
/// one of ours half made. The same rule as the SQLite store's, which opens
/// the same file (adapters share no code, so each keeps its copy).
async fn prepare_file(db_path: &Path) -> Result<()> {
    let shown = db_path.display();
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        Error::transient(format!("creating the database {shown}: {what}: {error}"))
    };
    match std::fs::metadata(db_path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => {
            return Err(Error::permanent(format!(
                "the store {shown} is empty (0 bytes): an empty file where a store should be is \
                 a lost store, not a new one, so nothing is written to it. Restore it from a \
                 backup, or move it away to start a new, empty store"
            )))
        }
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(format!("reading {shown}"), error)),
    }
    let dir = db_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".agentry-new-")
        .suffix(".db")
        .tempfile_in(dir)
        .map_err(|error| failed("making a temporary file", &error))?;
    // Switching a new database to WAL writes its first page to the main
    // file; closing the only connection leaves no log.
    let conn = SqliteConnectOptions::new()
        .filename(temp.path())
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .map_err(|error| failed("initializing it", &error))?;
    conn.close()
        .await
        .map_err(|error| failed("closing it", &error))?;
    let written = std::fs::metadata(temp.path())
        .map_err(|error| failed("reading it back", &error))?
        .len();
    if written == 0 {
        return Err(failed("initializing it", &"SQLite wrote no header"));
    }
    match temp.persist_noclobber(db_path) {
        Ok(_) => Ok(()),
        // Another opener made it first, just as whole; dropping the error
        // removes our temporary file.
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(failed("moving it into place", &error.error)),
    }
}

/// Applies the versions of [`SCHEMA`] newer than the recorded one, in one
/// `BEGIN IMMEDIATE` transaction (so two openers do not race).
async fn apply_schema(pool: &SqlitePool) -> Result<()> {
    with_timeout("applying the local integrations schema", async {
        let mut tx = begin_write(pool).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS local_integrations_schema (
                version    INTEGER PRIMARY KEY NOT NULL,
                applied_at TEXT NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM local_integrations_schema")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        if current > SCHEMA_VERSION {
            return Err(Error::permanent(format!(
                "the local integrations schema is at version {current}, newer than this build's \
                 {SCHEMA_VERSION}; upgrade Agentry"
            )));
        }
        for (version, statements) in SCHEMA.iter().filter(|(v, _)| *v > current) {
            for statement in *statements {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            sqlx::query(
                "INSERT INTO local_integrations_schema (version, applied_at) VALUES (?, ?)",
            )
            .bind(version)
            .bind(chrono::Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tracing::info!(version, "Applied local integrations schema version.");
        }
        tx.commit().await.map_err(db_error)
    })
    .await
}

/// Begins a write transaction that takes SQLite's write lock up front
/// (`BEGIN IMMEDIATE`), so the busy timeout applies to it and a read never
/// has to be upgraded to a write mid-transaction.
pub(crate) async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

/// Bounds a database operation by [`DB_OP_TIMEOUT`].
pub(crate) async fn with_timeout<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(DB_OP_TIMEOUT, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            what: what.to_string(),
            after: DB_OP_TIMEOUT,
        }),
    }
}

/// Classifies a sqlx error: busy/locked database, pool timeouts and I/O are
/// transient; constraint violations are conflicts; the rest is permanent.
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
            Error::transient(format!("sqlite: {error}"))
        }
        sqlx::Error::Database(db) => {
            // Primary result codes: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (extended
            // codes keep the primary code in the low byte).
            let primary = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match primary {
                Some(5) | Some(6) => Error::transient(format!("sqlite busy: {error}")),
                _ if db.is_unique_violation() => Error::Conflict(format!("sqlite: {error}")),
                _ => Error::permanent(format!("sqlite: {error}")),
            }
        }
        _ => Error::permanent(format!("sqlite: {error}")),
    }
}

/// Classifies a file-system error: always transient (disk full, permissions
/// fixed by an operator, a racing writer), with what was being done.
pub(crate) fn io_error(what: impl std::fmt::Display, error: std::io::Error) -> Error {
    Error::transient(format!("{what}: {error}"))
}

/// A boxed future, as the closures passed to [`read`] and [`write`] return.
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `f` on a pooled connection, bounded by [`DB_OP_TIMEOUT`].
pub(crate) async fn read<T>(
    pool: &SqlitePool,
    what: &str,
    f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send,
) -> Result<T> {
    with_timeout(what, async {
        let mut conn = pool.acquire().await.map_err(db_error)?;
        f(&mut conn).await
    })
    .await
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction committed when it returns
/// `Ok` (rolled back otherwise), bounded by [`DB_OP_TIMEOUT`].
pub(crate) async fn write<T>(
    pool: &SqlitePool,
    what: &str,
    f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send,
) -> Result<T> {
    with_timeout(what, async {
        let mut tx = begin_write(pool).await?;
        let out = f(&mut tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    })
    .await
}

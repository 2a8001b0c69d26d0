//! Local Tracker, Wiki and git CodeHost adapters: the embedded, zero set-up
//! defaults that stand in for Jira, Confluence and GitLab.
//!
//! [`LocalIntegrations::open`] opens ONE SQLite pool on the engine's own
//! database file and hands out a [`LocalTracker`], a [`LocalWiki`] (which also
//! mirrors every page as a Markdown file under `<data_dir>/wiki/<SPACE>/`) and
//! a [`GitCodeHost`] (real bare git repositories under
//! `<data_dir>/repos/<name>.git`, merge requests in SQLite).
//!
//! Key design decision: the adapters share the store's database file but not
//! its migrator. They keep their own `tracker_`/`wiki_`/`code_` tables,
//! versioned in `local_integrations_schema` and created with
//! `CREATE ... IF NOT EXISTS` in one `BEGIN IMMEDIATE` transaction, so the
//! store's sqlx migrator never sees migrations it did not write, either side
//! can open the file first, and reopening is a no-op. Every write transaction
//! takes the write lock up front (`BEGIN IMMEDIATE` plus a 5 s busy timeout),
//! which makes per-project key sequences and idempotency checks race-free
//! against the other writer on the file. Git is driven through its CLI with
//! plumbing only (`hash-object`, `update-index` on a private index,
//! `write-tree`, `commit-tree`, compare-and-swap `update-ref`, `merge-tree`),
//! so no working tree is ever checked out and concurrent committers cannot
//! lose each other's work.

mod codehost;
mod db;
mod git;
mod tracker;
mod validate;
mod wiki;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentry_core::Result;
use sqlx::SqlitePool;

pub use codehost::{GitCodeHost, DEFAULT_BRANCH, IDEMPOTENCY_TRAILER};
pub use db::SCHEMA_VERSION;
pub use tracker::LocalTracker;
pub use tracker::STATUSES;
pub use wiki::LocalWiki;

/// The three local adapters, sharing one database pool.
#[derive(Clone)]
pub struct LocalIntegrations {
    tracker: Arc<LocalTracker>,
    wiki: Arc<LocalWiki>,
    code_host: Arc<GitCodeHost>,
    pool: SqlitePool,
    data_dir: PathBuf,
}

impl std::fmt::Debug for LocalIntegrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIntegrations")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl LocalIntegrations {
    /// Opens (creating if missing) the database at `db_path` (normally the
    /// store's `<data_dir>/agentry.db`), applies this crate's schema, and
    /// prepares `<data_dir>/wiki` and `<data_dir>/repos`. An empty file at
    /// `db_path` is a lost store, not a new one: refused (permanent, naming
    /// it) and left as it is.
    pub async fn open(db_path: &Path, data_dir: &Path) -> Result<LocalIntegrations> {
        let pool = db::open_pool(db_path).await?;
        let tracker = Arc::new(LocalTracker::new(pool.clone()));
        let wiki = Arc::new(LocalWiki::new(pool.clone(), data_dir.join("wiki")).await?);
        let code_host = Arc::new(GitCodeHost::new(pool.clone(), data_dir.join("repos")).await?);
        Ok(LocalIntegrations {
            tracker,
            wiki,
            code_host,
            pool,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The tracker (`Arc<dyn Tracker>` by coercion).
    pub fn tracker(&self) -> Arc<LocalTracker> {
        self.tracker.clone()
    }

    /// The wiki (`Arc<dyn Wiki>` by coercion).
    pub fn wiki(&self) -> Arc<LocalWiki> {
        self.wiki.clone()
    }

    /// The code host (`Arc<dyn CodeHost>` by coercion).
    pub fn code_host(&self) -> Arc<GitCodeHost> {
        self.code_host.clone()
    }

    /// The data directory the wiki mirror and repositories live under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Closes the pool (waits for checked-out connections to return).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

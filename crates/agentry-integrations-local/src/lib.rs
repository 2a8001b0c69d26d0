//! Local Tracker, Wiki and git CodeHost adapters: the embedded, zero set-up
//! defaults that stand in for Jira, Confluence and GitLab.
//!
//! [`LocalIntegrations::open`] opens ONE SQLite pool on the engine's own
//! database file; as the [`IntegrationResolver`] it hands out, per
//! [`ArtifactOwner`], a [`LocalTracker`], a [`LocalWiki`] (which also mirrors
//! every page as a Markdown file under `<owner dir>/wiki/<SPACE>/`) and a
//! [`GitCodeHost`] (real bare git repositories under
//! `<owner dir>/repos/<name>.git`, merge requests in SQLite). The command
//! line's owner directory is the data directory itself, a tenant's is
//! `<data_dir>/tenants/<tenant dir>` (see [`layout`]).
//!
//! Tenancy: every row of every table carries its owner in its key, and each
//! adapter is bound to one owner, whose string form it binds into every
//! query; nothing is looked up by a bare key, id or name.
//!
//! Key design decision: the adapters share the store's database file but not
//! its migrator. They keep their own `tracker_`/`wiki_`/`code_` tables,
//! versioned in `local_integrations_schema` and applied version by version,
//! each in one `BEGIN IMMEDIATE` transaction with its version row, so the
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
pub mod layout;
mod tracker;
mod validate;
mod wiki;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agentry_core::{ArtifactOwner, CodeHost, IntegrationResolver, Result, Tracker, Wiki};
use async_trait::async_trait;
use sqlx::SqlitePool;

pub use codehost::{GitCodeHost, DEFAULT_BRANCH, IDEMPOTENCY_TRAILER};
pub use db::SCHEMA_VERSION;
pub use tracker::LocalTracker;
pub use tracker::STATUSES;
pub use wiki::LocalWiki;

/// The local adapters of every owner, sharing one database pool.
#[derive(Clone)]
pub struct LocalIntegrations {
    pool: SqlitePool,
    data_dir: PathBuf,
    /// One wiki per owner, kept so its mirror lock serializes every writer
    /// of that owner's mirror in this process.
    wikis: Arc<Mutex<HashMap<ArtifactOwner, Arc<LocalWiki>>>>,
    /// One code host per owner (its directory made and resolved once).
    code_hosts: Arc<Mutex<HashMap<ArtifactOwner, Arc<GitCodeHost>>>>,
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
    /// prepares the command line's `<data_dir>/wiki` and `<data_dir>/repos`.
    /// An empty file at `db_path` is a lost store, not a new one: refused
    /// (permanent, naming it) and left as it is.
    pub async fn open(db_path: &Path, data_dir: &Path) -> Result<LocalIntegrations> {
        let pool = db::open_pool(db_path).await?;
        let local = LocalIntegrations {
            pool,
            data_dir: data_dir.to_path_buf(),
            wikis: Arc::default(),
            code_hosts: Arc::default(),
        };
        local.wiki_for(&ArtifactOwner::Cli).await?;
        local.code_host_for(&ArtifactOwner::Cli).await?;
        Ok(local)
    }

    /// The tracker of `owner`.
    pub fn tracker_for(&self, owner: &ArtifactOwner) -> Arc<LocalTracker> {
        Arc::new(LocalTracker::new(self.pool.clone(), owner))
    }

    /// The wiki of `owner` (its mirror directory is made on first use).
    pub async fn wiki_for(&self, owner: &ArtifactOwner) -> Result<Arc<LocalWiki>> {
        if let Some(wiki) = cached(&self.wikis, owner) {
            return Ok(wiki);
        }
        let root = layout::owner_dir(&self.data_dir, owner).join(layout::WIKI_DIR);
        let wiki = Arc::new(LocalWiki::new(self.pool.clone(), owner, root).await?);
        Ok(remember(&self.wikis, owner, wiki))
    }

    /// The code host of `owner` (its repository directory is made on first
    /// use).
    pub async fn code_host_for(&self, owner: &ArtifactOwner) -> Result<Arc<GitCodeHost>> {
        if let Some(host) = cached(&self.code_hosts, owner) {
            return Ok(host);
        }
        let root = layout::owner_dir(&self.data_dir, owner).join(layout::REPOS_DIR);
        let host = Arc::new(GitCodeHost::new(self.pool.clone(), owner, root).await?);
        Ok(remember(&self.code_hosts, owner, host))
    }

    /// The data directory the owners' wiki mirrors and repositories live
    /// under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Closes the pool (waits for checked-out connections to return).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn cached<T>(map: &Mutex<HashMap<ArtifactOwner, Arc<T>>>, owner: &ArtifactOwner) -> Option<Arc<T>> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(owner)
        .cloned()
}

/// Keeps `made` for `owner` unless a racing caller kept one first; returns
/// the kept one.
fn remember<T>(
    map: &Mutex<HashMap<ArtifactOwner, Arc<T>>>,
    owner: &ArtifactOwner,
    made: Arc<T>,
) -> Arc<T> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(owner.clone())
        .or_insert(made)
        .clone()
}

#[async_trait]
impl IntegrationResolver for LocalIntegrations {
    async fn tracker(&self, owner: &ArtifactOwner) -> Result<Arc<dyn Tracker>> {
        Ok(self.tracker_for(owner))
    }

    async fn wiki(&self, owner: &ArtifactOwner) -> Result<Arc<dyn Wiki>> {
        Ok(self.wiki_for(owner).await?)
    }

    async fn code_host(&self, owner: &ArtifactOwner) -> Result<Arc<dyn CodeHost>> {
        Ok(self.code_host_for(owner).await?)
    }
}

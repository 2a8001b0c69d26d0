//! The `Wiki` port (the seed's Confluence integration): spaces, a page
//! hierarchy and page versions. The local wiki and the Confluence client
//! implement it. Create calls are idempotent by key.
//!
//! A `Wiki` acts for one [`ArtifactOwner`](crate::ArtifactOwner) (see
//! [`IntegrationResolver`](crate::IntegrationResolver)): space keys, page
//! ids and idempotency keys name things of that owner only; another owner's
//! page id is not found.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{IdempotencyKey, Result};

/// A space (`SHOP`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// Key.
    pub key: String,
    /// Display name.
    pub name: String,
}

/// A page to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPage {
    /// Space key.
    pub space: String,
    /// Title (unique within the space).
    pub title: String,
    /// Parent page id (None: a root page).
    pub parent_id: Option<String>,
    /// Body (Markdown).
    pub body: String,
    /// Idempotency key.
    pub idempotency_key: IdempotencyKey,
}

/// A new version of a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageUpdate {
    /// Page id.
    pub id: String,
    /// New title (None: keep).
    pub title: Option<String>,
    /// New body.
    pub body: String,
    /// Optimistic lock: the version the caller saw (None: any).
    pub expected_version: Option<u32>,
    /// Idempotency key: a repeated update with the same key is a no-op.
    pub idempotency_key: IdempotencyKey,
}

/// A page (its latest version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Id.
    pub id: String,
    /// Space key.
    pub space: String,
    /// Title.
    pub title: String,
    /// Parent page id.
    pub parent_id: Option<String>,
    /// Body (Markdown).
    pub body: String,
    /// Version (1-based).
    pub version: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// One version of a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageVersion {
    /// Page id.
    pub page_id: String,
    /// Version.
    pub version: u32,
    /// Title at that version.
    pub title: String,
    /// Body at that version.
    pub body: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A wiki.
#[async_trait]
pub trait Wiki: Send + Sync + 'static {
    /// Adapter name (`local`, `confluence`).
    fn name(&self) -> &'static str;
    /// Creates the space if missing; returns it.
    async fn ensure_space(&self, key: &str, name: &str) -> Result<Space>;
    /// Creates a page (idempotent by key). Unknown space or parent, or a
    /// duplicate title in the space, is invalid input.
    async fn create_page(&self, new: NewPage) -> Result<Page>;
    /// Writes a new version.
    async fn update_page(&self, update: PageUpdate) -> Result<Page>;
    /// A page, or not found.
    async fn get_page(&self, id: &str) -> Result<Page>;
    /// Pages of a space, parents before children.
    async fn list_pages(&self, space: &str) -> Result<Vec<Page>>;
    /// Versions of a page, oldest first.
    async fn page_versions(&self, id: &str) -> Result<Vec<PageVersion>>;
}

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

/// A space (`SHOP`): the namespace of a workflow's pages. The agents use
/// the tracker's project key as the space key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// Key: 2-10 upper-case letters/digits, starting with a letter (as a
    /// project key); unique per owner.
    pub key: String,
    /// Human-readable name; the key when created with a blank one. An
    /// existing space keeps the name it was created with.
    pub name: String,
}

/// A page to create; see [`Wiki::create_page`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPage {
    /// Key of an existing space of this owner.
    pub space: String,
    /// Title: unique within the space, 1-255 bytes, no control characters.
    pub title: String,
    /// Id of the parent page, in the same space (Confluence's `parentId`);
    /// `None` (or blank): a root page of the space.
    pub parent_id: Option<String>,
    /// Body in Markdown.
    pub body: String,
    /// Makes the call idempotent: a key seen before returns the page it
    /// first created.
    pub idempotency_key: IdempotencyKey,
}

/// A new version of a page; see [`Wiki::update_page`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageUpdate {
    /// Id of the page to update.
    pub id: String,
    /// New title, under the same rules as a new page's (None: keep).
    pub title: Option<String>,
    /// The whole new body in Markdown (not a diff).
    pub body: String,
    /// Optimistic lock: the version the caller saw (None: any).
    pub expected_version: Option<u32>,
    /// Idempotency key: a repeated update with the same key is a no-op.
    pub idempotency_key: IdempotencyKey,
}

/// A page (its latest version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Assigned by the wiki at creation and never changed (the local one:
    /// a decimal number; Confluence's page id); what the workflow state's
    /// `confluence_pages` lists.
    pub id: String,
    /// Key of its space.
    pub space: String,
    /// Title, unique within the space.
    pub title: String,
    /// Id of the parent page; `None` for a root page of the space.
    pub parent_id: Option<String>,
    /// Body of the latest version, in Markdown.
    pub body: String,
    /// Latest version: 1 at creation, one more per update.
    pub version: u32,
    /// When version 1 was written (UTC).
    pub created_at: DateTime<Utc>,
    /// When the latest version was written (UTC).
    pub updated_at: DateTime<Utc>,
}

/// One version of a page, as it was written; versions are never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageVersion {
    /// Id of the page.
    pub page_id: String,
    /// Its number: 1 for the page as created, then consecutive.
    pub version: u32,
    /// Title at that version.
    pub title: String,
    /// Body at that version.
    pub body: String,
    /// When this version was written (UTC).
    pub created_at: DateTime<Utc>,
}

/// A wiki acting for one owner: the local one (pages in SQLite, mirrored
/// as Markdown files) in the embedded mode, Confluence's client in its
/// place. Creates and updates are idempotent by their keys.
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

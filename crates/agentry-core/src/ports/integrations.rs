//! The `IntegrationResolver` port: which tracker, wiki and code host hold
//! one owner's artifacts.
//!
//! The `Tracker`, `Wiki` and `CodeHost` ports each act for ONE owner: every
//! project key, space key, repository name, issue key, page id and
//! idempotency key they are given is read inside that owner's namespace.
//! This port is where an owner becomes such a set of adapters, once per
//! task, from the workflow's stored owner. The local adapters bind their
//! tables and directories to the owner; a Jira, Confluence or GitLab
//! adapter maps each tenant to its own site, project, space, namespace and
//! credentials (and may refuse an owner it has no configuration for).
//!
//! Contract, checked by the `owners` conformance suite: two owners that use
//! the same project key, space key, repository name, branch or idempotency
//! key get disjoint artifacts. Neither can read, list, change or find by
//! key what the other made.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{ArtifactOwner, CodeHost, Result, Tracker, Wiki};

/// The tracker, wiki and code host of one owner.
#[derive(Clone)]
pub struct Integrations {
    /// The owner they act for.
    pub owner: ArtifactOwner,
    /// The tracker holding `owner`'s projects and issues.
    pub tracker: Arc<dyn Tracker>,
    /// The wiki holding `owner`'s spaces and pages.
    pub wiki: Arc<dyn Wiki>,
    /// The code host holding `owner`'s repositories and merge requests.
    pub code_host: Arc<dyn CodeHost>,
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations")
            .field("owner", &self.owner)
            .field("tracker", &self.tracker.name())
            .field("wiki", &self.wiki.name())
            .field("code_host", &self.code_host.name())
            .finish()
    }
}

/// Resolves an owner to the adapters holding its artifacts.
#[async_trait]
pub trait IntegrationResolver: Send + Sync + 'static {
    /// The owner's tracker. An owner the adapter has no configuration for
    /// is invalid input naming it.
    async fn tracker(&self, owner: &ArtifactOwner) -> Result<Arc<dyn Tracker>>;
    /// The owner's wiki; refuses an unconfigured owner likewise.
    async fn wiki(&self, owner: &ArtifactOwner) -> Result<Arc<dyn Wiki>>;
    /// The owner's code host; refuses an unconfigured owner likewise.
    async fn code_host(&self, owner: &ArtifactOwner) -> Result<Arc<dyn CodeHost>>;

    /// The owner's tracker, wiki and code host together, as an agent's node
    /// run needs them; fails as the first of the three that fails.
    async fn integrations(&self, owner: &ArtifactOwner) -> Result<Integrations> {
        Ok(Integrations {
            owner: owner.clone(),
            tracker: self.tracker(owner).await?,
            wiki: self.wiki(owner).await?,
            code_host: self.code_host(owner).await?,
        })
    }
}

//! The shared Tracker, Wiki, CodeHost and owner suites, run against the
//! local adapters (each test on a fresh temporary data directory). The
//! per-port suites run on a tenant's adapters: the command line's are the
//! same code with another owner, and the owner suite puts both side by side.

use std::sync::Arc;

use agentry_core::{ArtifactOwner, CodeHost, IntegrationResolver, Tracker, Wiki};
use agentry_integrations_conformance::{
    code_host_conformance, owners_conformance, tracker_conformance, wiki_conformance, Fixture,
};
use agentry_integrations_local::LocalIntegrations;

async fn open() -> (LocalIntegrations, tempfile::TempDir) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("temporary directory: {error}"),
    };
    match LocalIntegrations::open(&dir.path().join("agentry.db"), dir.path()).await {
        Ok(local) => (local, dir),
        Err(error) => panic!("opening the local integrations: {error}"),
    }
}

fn tenant() -> ArtifactOwner {
    match ArtifactOwner::tenant("acme") {
        Ok(owner) => owner,
        Err(error) => panic!("tenant: {error}"),
    }
}

async fn local_tracker() -> Fixture<dyn Tracker> {
    let (local, dir) = open().await;
    Fixture::with_guard(local.tracker_for(&tenant()) as Arc<dyn Tracker>, dir)
}

async fn local_wiki() -> Fixture<dyn Wiki> {
    let (local, dir) = open().await;
    match local.wiki_for(&tenant()).await {
        Ok(wiki) => Fixture::with_guard(wiki as Arc<dyn Wiki>, dir),
        Err(error) => panic!("wiki: {error}"),
    }
}

async fn local_code_host() -> Fixture<dyn CodeHost> {
    let (local, dir) = open().await;
    match local.code_host_for(&tenant()).await {
        Ok(host) => Fixture::with_guard(host as Arc<dyn CodeHost>, dir),
        Err(error) => panic!("code host: {error}"),
    }
}

async fn local_resolver() -> Fixture<dyn IntegrationResolver> {
    let (local, dir) = open().await;
    Fixture::with_guard(Arc::new(local) as Arc<dyn IntegrationResolver>, dir)
}

tracker_conformance!(local_tracker);
wiki_conformance!(local_wiki);
code_host_conformance!(local_code_host);
owners_conformance!(local_resolver);

/// The whole suites in sequence on ONE backend, as a shared Jira,
/// Confluence or GitLab would be: unique names must keep them apart.
#[tokio::test]
async fn suites_share_one_backend() {
    let (local, _dir) = open().await;
    let cli = ArtifactOwner::Cli;
    let resolver: Arc<dyn IntegrationResolver> = Arc::new(local.clone());
    let ports = match resolver.integrations(&cli).await {
        Ok(ports) => ports,
        Err(error) => panic!("the command line's integrations: {error}"),
    };
    agentry_integrations_conformance::tracker_suite(ports.tracker).await;
    agentry_integrations_conformance::wiki_suite(ports.wiki).await;
    agentry_integrations_conformance::code_host_suite(ports.code_host).await;
    agentry_integrations_conformance::owners_suite(resolver).await;
}

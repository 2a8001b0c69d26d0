//! The shared Tracker, Wiki and CodeHost behaviour suites, run against the
//! local adapters (each test on a fresh temporary data directory).

use std::sync::Arc;

use agentry_core::{CodeHost, Tracker, Wiki};
use agentry_integrations_conformance::{
    code_host_conformance, tracker_conformance, wiki_conformance, Fixture,
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

async fn local_tracker() -> Fixture<dyn Tracker> {
    let (local, dir) = open().await;
    Fixture::with_guard(local.tracker() as Arc<dyn Tracker>, dir)
}

async fn local_wiki() -> Fixture<dyn Wiki> {
    let (local, dir) = open().await;
    Fixture::with_guard(local.wiki() as Arc<dyn Wiki>, dir)
}

async fn local_code_host() -> Fixture<dyn CodeHost> {
    let (local, dir) = open().await;
    Fixture::with_guard(local.code_host() as Arc<dyn CodeHost>, dir)
}

tracker_conformance!(local_tracker);
wiki_conformance!(local_wiki);
code_host_conformance!(local_code_host);

/// The whole suites in sequence on ONE backend, as a shared Jira,
/// Confluence or GitLab would be: unique names must keep them apart.
#[tokio::test]
async fn suites_share_one_backend() {
    let (local, _dir) = open().await;
    agentry_integrations_conformance::tracker_suite(local.tracker()).await;
    agentry_integrations_conformance::wiki_suite(local.wiki()).await;
    agentry_integrations_conformance::code_host_suite(local.code_host()).await;
}

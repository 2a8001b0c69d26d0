//! The four conformance suites (`Store`, LLM data, API keys, worker
//! registry) against the PostgreSQL store: every behaviour on a fresh schema
//! of the test database (`AGENTRY_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use agentry_core::Store;

agentry_store_conformance::store_conformance_tests!(async {
    Arc::new(support::fresh_store().await)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_behaviours_with_a_pool_of_two() {
    let small = || async {
        let options = agentry_store_postgres::PostgresOptions::default().with_max_connections(2);
        Arc::new(support::fresh_store_with(options).await) as Arc<dyn Store>
    };
    agentry_store_conformance::concurrent_commits_on_many_workflows(small().await).await;
    agentry_store_conformance::concurrent_duplicate_commits_one_wins(small().await).await;
    agentry_store_conformance::transitions_racing_one_wins(small().await).await;
}

mod llm_data {
    use super::*;
    agentry_store_conformance::llm_data_conformance_tests!(async {
        Arc::new(support::fresh_store().await)
    });
}

mod api_keys {
    use super::*;
    agentry_store_conformance::api_key_conformance_tests!(async {
        Arc::new(support::fresh_store().await)
    });
}

mod workers {
    use super::*;
    agentry_store_conformance::worker_registry_conformance_tests!(async {
        Arc::new(support::fresh_store().await)
    });
}

//! The conformance suites (`Store`, LLM data, API keys, worker registry)
//! against the SQLite store: every behaviour on a fresh file-backed database
//! at `synchronous = FULL` (the default), and the whole `Store` suite again
//! at `synchronous = NORMAL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentry_core::Store;
use agentry_store_sqlite::{SqliteStore, SqliteStoreOptions, Synchronous};

agentry_store_conformance::store_conformance_tests!(async {
    Arc::new(
        SqliteStore::open_in_memory()
            .await
            .expect("open a temporary store"),
    )
});

async fn store_with(synchronous: Synchronous) -> Arc<dyn Store> {
    let options = SqliteStoreOptions::default().with_synchronous(synchronous);
    Arc::new(
        SqliteStore::open_temporary(options)
            .await
            .expect("open a temporary store"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_suite_at_synchronous_normal() {
    agentry_store_conformance::run_all(|| store_with(Synchronous::Normal)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_at_synchronous_full() {
    agentry_store_conformance::concurrent_commits_on_many_workflows(
        store_with(Synchronous::Full).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_one_still_pass_the_concurrency_behaviours() {
    let one_at_a_time = || async {
        let options = SqliteStoreOptions::default().with_max_batch(1);
        Arc::new(SqliteStore::open_temporary(options).await.unwrap()) as Arc<dyn Store>
    };
    agentry_store_conformance::concurrent_commits_on_many_workflows(one_at_a_time().await).await;
    agentry_store_conformance::concurrent_duplicate_commits_one_wins(one_at_a_time().await).await;
    agentry_store_conformance::transitions_racing_one_wins(one_at_a_time().await).await;
}

mod llm_data {
    use super::*;
    agentry_store_conformance::llm_data_conformance_tests!(async {
        Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("open a temporary store"),
        )
    });
}

mod api_keys {
    use super::*;
    agentry_store_conformance::api_key_conformance_tests!(async {
        Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("open a temporary store"),
        )
    });
}

mod workers {
    use super::*;
    agentry_store_conformance::worker_registry_conformance_tests!(async {
        Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("open a temporary store"),
        )
    });
}

//! Behaviours specific to the PostgreSQL store: several stores (processes)
//! on one schema (racing commits, racing for a lease), reopening, the
//! outbox's seq order under concurrent commits, connection failures and
//! PostgreSQL's own limits on values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{CommitOutcome, Error, ErrorClass, StateDelta, Store, TaskId, WorkerRegistry};
use agentry_store_conformance::{advance_to, commit_of, new_workflow, started, task};
use agentry_store_postgres::{PostgresOptions, PostgresStore};

/// A second store on `first`'s schema, as another process would open it.
async fn same_schema(first: &PostgresStore) -> PostgresStore {
    let schema = first.schema().expect("a temporary store has a schema");
    let url = support::database_url();
    PostgresStore::connect(&url, PostgresOptions::default().with_schema(schema))
        .await
        .unwrap_or_else(|error| support::unreachable(&url, error))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_racing_one_task_one_commits_the_other_is_duplicate() {
    let first = Arc::new(support::fresh_store().await);
    let second = Arc::new(same_schema(&first).await);
    let a: Arc<dyn Store> = first.clone();
    let b: Arc<dyn Store> = second.clone();
    for round in 0..10 {
        let id = started(&a, &format!("req-race-{round}"), &["developer"]).await;
        let commit = |attempt| {
            let t = TaskId {
                attempt,
                ..task(id, 0, "developer")
            };
            commit_of(&t, StateDelta::default(), Some(advance_to(1, &["qa"])))
        };
        let (x, y) = tokio::join!(a.commit_task(commit(1)), b.commit_task(commit(2)));
        let mut outcomes = vec![x.expect("commit via a"), y.expect("commit via b")];
        outcomes.sort_by_key(|o| matches!(o, CommitOutcome::Duplicate));
        assert_eq!(
            outcomes,
            vec![
                CommitOutcome::Committed { seq: 2 },
                CommitOutcome::Duplicate
            ],
            "round {round}"
        );
        assert_eq!(a.checkpoints(id).await.expect("checkpoints").len(), 2);
        assert_eq!(b.events(Some(id), 0, 100).await.expect("events").len(), 2);
    }
    drop(second);
}

/// Ten holders spread over three stores on one schema (three processes),
/// racing for one free lease: one wins, every round, and every store sees
/// it as the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_race_between_stores_on_one_schema_grants_one() {
    let first = Arc::new(support::fresh_store().await);
    let stores = [
        first.clone(),
        Arc::new(same_schema(&first).await),
        Arc::new(same_schema(&first).await),
    ];
    let now = agentry_store_conformance::worker_time(0);
    let ttl = Duration::from_secs(30);
    for round in 0..10 {
        let name = format!("resume-{round}");
        let races: Vec<_> = (0..10)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let holder = format!("w-{i}");
                    let taken = store.acquire_lease(&name, &holder, ttl, now).await;
                    (holder, taken.expect("acquire is not an error"))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for race in races {
            let (holder, taken) = race.await.expect("the racing task");
            if taken {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        for store in &stores {
            assert!(
                store
                    .acquire_lease(&name, &winners[0], ttl, now)
                    .await
                    .expect("renew"),
                "round {round}: every store sees {} as the holder",
                winners[0]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_schema_keeps_everything() {
    let first = support::fresh_store().await;
    let store: Arc<dyn Store> = Arc::new(same_schema(&first).await);
    let id = started(&store, "req-reopen", &["n0"]).await;
    store
        .commit_task(commit_of(
            &task(id, 0, "n0"),
            StateDelta::default(),
            Some(advance_to(1, &["n1"])),
        ))
        .await
        .expect("commit");
    let before = agentry_store_conformance::snapshot(&store, id).await;
    drop(store);
    // The migrations run again on an existing schema and change nothing.
    let reopened: Arc<dyn Store> = Arc::new(same_schema(&first).await);
    assert_eq!(
        agentry_store_conformance::snapshot(&reopened, id).await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_opens_of_one_schema_both_succeed() {
    let url = support::database_url();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let options = PostgresOptions::default().with_schema(schema.clone());
    let (a, b) = tokio::join!(
        PostgresStore::connect(&url, options.clone()),
        PostgresStore::connect(&url, options)
    );
    let a = a.unwrap_or_else(|error| support::unreachable(&url, error));
    let b = b.expect("the second simultaneous open");
    a.health().await.expect("health a");
    b.health().await.expect("health b");
    b.close().await;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(a.pool())
        .await
        .expect("drop the schema");
}

/// Regression guard for the outbox's seq allocation: with a sequence,
/// concurrent transactions commit out of seq order and a reader following
/// `events(after)` skips the late ones. A reader polling while 20 workflows
/// commit must see every seq, 1..=N, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_events_after_never_skips_one() {
    const WORKFLOWS: usize = 20;
    const STEPS: u64 = 10;
    let store: Arc<dyn Store> = Arc::new(support::fresh_store().await);
    let mut ids = Vec::new();
    for i in 0..WORKFLOWS {
        ids.push(started(&store, &format!("req-follow-{i}"), &["n"]).await);
    }
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = store.events(None, after, 50).await.expect("events");
                for event in &page {
                    seen.push(event.seq);
                    after = event.seq;
                }
                if finished && page.is_empty() {
                    return seen;
                }
            }
        })
    };
    let writers: Vec<_> = ids
        .iter()
        .map(|&id| {
            let store = store.clone();
            tokio::spawn(async move {
                for step in 0..STEPS {
                    let commit = commit_of(
                        &task(id, step, "n"),
                        StateDelta::default(),
                        Some(advance_to(step + 1, &["n"])),
                    );
                    match store.commit_task(commit).await.expect("commit") {
                        CommitOutcome::Committed { .. } => {}
                        other => panic!("{id} step {step}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer panicked");
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("the reader panicked");
    let total = (WORKFLOWS * (1 + STEPS as usize)) as u64;
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "the reader saw every seq once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_transient_and_the_message_hides_the_password() {
    let started = Instant::now();
    let options = PostgresOptions::default().with_acquire_timeout(Duration::from_secs(2));
    let error = PostgresStore::connect("postgres://agentry:s3cret@127.0.0.1:1/nowhere", options)
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:1/nowhere"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_url_is_invalid_input() {
    for url in ["mysql://x@y/z", "postgres://x@y:port/z"] {
        let error = PostgresStore::connect(url, PostgresOptions::default())
            .await
            .expect_err("not a PostgreSQL URL");
        assert!(matches!(error, Error::InvalidInput(_)), "{url}: {error:?}");
    }
}

/// The seed's `request_id VARCHAR(255)` is kept as written: a longer request
/// id is the caller's error and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_long_for_a_seed_column_is_invalid_input() {
    let store: Arc<dyn Store> = Arc::new(support::fresh_store().await);
    let long = "r".repeat(256);
    let result = store.create_workflow(new_workflow(&long)).await;
    assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
    assert_eq!(store.find_by_request_id(&long).await.expect("find"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_temporary_store_drops_its_schema() {
    let store = support::fresh_store().await;
    let schema = store.schema().expect("schema").to_string();
    let observer = support::fresh_store().await;
    let count = |pool: sqlx::PgPool, schema: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
            .bind(schema)
            .fetch_one(&pool)
            .await
            .expect("count schemas")
    };
    assert_eq!(count(observer.pool().clone(), schema.clone()).await, 1);
    drop(store);
    assert_eq!(count(observer.pool().clone(), schema).await, 0);
}

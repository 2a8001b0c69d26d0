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
use agentry_store_conformance::{advance_to, commit_of, commit_ok, new_workflow, started, task};
use agentry_store_postgres::{PostgresOptions, PostgresStore};

/// A second store on `first`'s schema, as another process would open it.
async fn same_schema(first: &PostgresStore) -> PostgresStore {
    let schema = first.schema().expect("a temporary store has a schema");
    open_schema(schema).await
}

/// A store on the schema `pool`'s connections use.
async fn same_schema_of(pool: &sqlx::PgPool) -> Arc<dyn Store> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await
        .expect("the schema");
    Arc::new(open_schema(&schema).await)
}

async fn open_schema(schema: &str) -> PostgresStore {
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

/// A beat's tasks are stored as the task ids' text, the form every earlier
/// version wrote and reads: a row written before `TaskKey` reads back, and
/// a beat written now is the same text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beat_tasks_are_stored_as_task_id_texts() {
    let store = support::fresh_store().await;
    store
        .register(agentry_store_conformance::worker_info("w-1", 0))
        .await
        .expect("register");
    let earlier = serde_json::json!(["0190f5a2-7c3e-7d4e-8f00-0123456789ab:3:qa#2"]);
    sqlx::query("UPDATE workers SET tasks = $1 WHERE id = 'w-1'")
        .bind(sqlx::types::Json(&earlier))
        .execute(store.pool())
        .await
        .expect("write an earlier beat");
    let listed = store.list_workers().await.expect("list");
    assert_eq!(
        listed[0].beat.tasks,
        vec![agentry_store_conformance::running_task("qa")]
    );

    let beat = agentry_store_conformance::worker_beat("w-1", 5, &["qa"]);
    store.heartbeat(beat).await.expect("heartbeat");
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT tasks FROM workers WHERE id = 'w-1'")
            .fetch_one(store.pool())
            .await
            .expect("read the row");
    assert_eq!(stored, earlier);
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

/// The outbox under load from several processes: three stores on one
/// schema commit concurrently while a reader on each follows
/// `events(None, after)` with small pages (so the three stores' sequencers
/// race all along). Every reader ends with every event exactly once, in seq
/// order: a seq filled in behind a reader's position would be missing from
/// what it saw. Each workflow's events come in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_on_three_stores_following_events_after_see_every_event_once_in_order() {
    const WORKFLOWS: usize = 24;
    const STEPS: u64 = 8;
    let first = Arc::new(support::fresh_store().await);
    let stores: Vec<Arc<dyn Store>> = vec![
        first.clone(),
        Arc::new(same_schema(&first).await),
        Arc::new(same_schema(&first).await),
    ];
    let mut ids = Vec::new();
    for i in 0..WORKFLOWS {
        let store = &stores[i % stores.len()];
        ids.push(started(store, &format!("req-three-{i}"), &["n"]).await);
    }
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = store.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut after = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let page = store.events(None, after, 7).await.expect("events");
                    for event in &page {
                        assert!(event.seq > after, "a page goes forward");
                        after = event.seq;
                    }
                    let empty = page.is_empty();
                    seen.extend(page);
                    if finished && empty {
                        return seen;
                    }
                }
            })
        })
        .collect();
    let writers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            // Each workflow's commits alternate between the stores.
            let stores = stores.clone();
            tokio::spawn(async move {
                for step in 0..STEPS {
                    let store = &stores[(i + step as usize) % stores.len()];
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
    let total = (WORKFLOWS * (1 + STEPS as usize)) as u64;
    let all = stores[0].events(None, 0, 10_000).await.expect("all events");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "every event has a seq, 1..=N"
    );
    for (n, reader) in readers.into_iter().enumerate() {
        let seen = reader.await.expect("a reader panicked");
        assert_eq!(seen, all, "reader {n} saw every event once, in seq order");
    }
    for &id in &ids {
        let steps: Vec<Option<u64>> = all
            .iter()
            .filter(|e| e.event.workflow_id == id)
            .map(|e| e.event.step)
            .collect();
        let mut expected = vec![None];
        expected.extend((0..STEPS).map(Some));
        assert_eq!(steps, expected, "{id}'s events in commit order");
    }
}

/// Siblings of one step committing at once through two stores queue on the
/// workflow's row; each one's single statement then writes on top of the
/// row its predecessor left (the lock returns that version), so the
/// checkpoint seqs are consecutive (a lost update of the row's `last_seq`
/// would repeat a seq and fail the next commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn siblings_committing_at_once_through_two_stores_get_consecutive_seqs() {
    const SIBLINGS: usize = 12;
    let first = Arc::new(support::fresh_store().await);
    let stores: Vec<Arc<dyn Store>> = vec![first.clone(), Arc::new(same_schema(&first).await)];
    let nodes: Vec<String> = (0..SIBLINGS).map(|i| format!("n{i}")).collect();
    let pending: Vec<&str> = nodes.iter().map(String::as_str).collect();
    for round in 0..5 {
        let id = started(&stores[0], &format!("req-siblings-{round}"), &pending).await;
        let commits: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let store = stores[i % stores.len()].clone();
                let delta = StateDelta {
                    agent_outputs: vec![agentry_store_conformance::output(
                        node,
                        "out",
                        serde_json::json!({ "i": i }),
                    )],
                    ..StateDelta::default()
                };
                let commit = commit_of(&task(id, 0, node), delta, None);
                tokio::spawn(async move { store.commit_task(commit).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for commit in commits {
            match commit.await.expect("a committing task").expect("commit") {
                CommitOutcome::Committed { seq } => seqs.push(seq),
                other => panic!("round {round}: {other:?}"),
            }
        }
        seqs.sort_unstable();
        let expected: Vec<u64> = (2..=1 + SIBLINGS as u64).collect();
        assert_eq!(seqs, expected, "round {round}");
        let snap = agentry_store_conformance::snapshot(&stores[1], id).await;
        assert_eq!(
            snap.checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
            (1..=1 + SIBLINGS as u64).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(snap.outputs.len(), SIBLINGS, "round {round}");
        assert_eq!(snap.events.len(), 1 + SIBLINGS, "round {round}");
    }
}

/// Read-your-writes across processes: events committed through one store
/// are in another store's `events` and `unpublished_events` as soon as the
/// commit returned, though the committing store never read (so never
/// sequenced) them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_visible_at_once_through_another_store() {
    let first = Arc::new(support::fresh_store().await);
    let pool = first.pool().clone();
    let writer: Arc<dyn Store> = first;
    let reader = same_schema_of(&pool).await;
    let pending = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events_pending")
            .fetch_one(&pool)
            .await
            .expect("count pending events")
    };
    for round in 0..10u64 {
        let id = started(&writer, &format!("req-ryw-{round}"), &["n"]).await;
        assert_eq!(pending().await, 1, "round {round}: the start event waits");
        let events = reader.events(Some(id), 0, 100).await.expect("events");
        assert_eq!(events.len(), 1, "round {round}: the start event");
        let commit = commit_of(
            &task(id, 0, "n"),
            StateDelta::default(),
            Some(advance_to(1, &["n"])),
        );
        let event_id = commit.events[0].id;
        writer.commit_task(commit).await.expect("commit");
        assert_eq!(
            pending().await,
            1,
            "round {round}: the commit's event waits"
        );
        let unpublished = reader.unpublished_events(1000).await.expect("outbox");
        assert_eq!(
            unpublished.last().map(|e| e.event.id),
            Some(event_id),
            "round {round}: the commit's event is the newest in the outbox"
        );
        reader
            .mark_published(&unpublished.iter().map(|e| e.seq).collect::<Vec<_>>())
            .await
            .expect("mark published");
        assert_eq!(pending().await, 0);
    }
}

/// The new migration is additive: a schema whose outbox already holds
/// events (and whose counter says so) numbers new events after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_are_numbered_after_the_existing_outbox() {
    let first = Arc::new(support::fresh_store().await);
    let pool = first.pool().clone();
    let store: Arc<dyn Store> = first;
    let id = started(&store, "req-existing", &["n"]).await;
    let old = store.events(Some(id), 0, 10).await.expect("events");
    assert_eq!(old.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    // As a build without the staging table left it: events up to 41.
    sqlx::query(
        "INSERT INTO events (seq, id, kind, workflow_id, payload, at) \
         SELECT 41, $1, kind, workflow_id, payload, at FROM events WHERE seq = 1",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&pool)
    .await
    .expect("an event written the old way");
    sqlx::query("UPDATE event_seq SET last = 41")
        .execute(&pool)
        .await
        .expect("its counter");
    let commit = commit_of(
        &task(id, 0, "n"),
        StateDelta::default(),
        Some(advance_to(1, &["n"])),
    );
    commit_ok(&store, commit).await;
    let seqs: Vec<u64> = store
        .events(None, 0, 100)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 41, 42]);
}

/// A backlog larger than one sequencer pass (nobody read for a while) is
/// moved whole, by consecutive passes, before the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_one_pass_is_sequenced_whole_before_a_read() {
    const BACKLOG: i64 = 10_050;
    let first = Arc::new(support::fresh_store().await);
    let pool = first.pool().clone();
    let store: Arc<dyn Store> = first;
    let id = started(&store, "req-backlog", &["n"]).await;
    sqlx::query(
        "INSERT INTO events_pending (id, kind, workflow_id, step, payload, at) \
         SELECT gen_random_uuid(), 'agent.task.completed', $1, n, '{}', now() \
         FROM generate_series(1, $2) AS n",
    )
    .bind(id.0)
    .bind(BACKLOG)
    .execute(&pool)
    .await
    .expect("a backlog");
    let unpublished = store.unpublished_events(2).await.expect("outbox");
    assert_eq!(unpublished.len(), 2);
    let all = store.events(Some(id), 0, 20_000).await.expect("events");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=1 + BACKLOG as u64).collect::<Vec<_>>()
    );
    let steps: Vec<u64> = all[1..].iter().filter_map(|e| e.event.step).collect();
    assert_eq!(steps, (1..=BACKLOG as u64).collect::<Vec<_>>(), "in order");
}

/// Event ids are unique in the outbox. A commit repeating the id of an
/// event still pending fails as a Conflict and writes nothing; one
/// repeating the id of an event already sequenced carries the same event
/// again, which the sequencer drops, and the outbox goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_never_stops_the_outbox() {
    let store: Arc<dyn Store> = Arc::new(support::fresh_store().await);
    let a = started(&store, "req-dup-id-a", &["n"]).await;
    let b = started(&store, "req-dup-id-b", &["n"]).await;
    let first = commit_of(
        &task(a, 0, "n"),
        StateDelta::default(),
        Some(advance_to(1, &["n"])),
    );
    let repeated = first.events[0].clone();
    commit_ok(&store, first).await;
    // Still pending: refused.
    let mut clash = commit_of(
        &task(b, 0, "n"),
        StateDelta::default(),
        Some(advance_to(1, &["n"])),
    );
    clash.events.push(repeated.clone());
    let refused = store.commit_task(clash.clone()).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    assert_eq!(store.checkpoints(b).await.expect("checkpoints").len(), 1);
    // Sequenced: the copy is dropped, the rest of the commit is kept.
    let before = store.events(None, 0, 100).await.expect("events");
    assert_eq!(before.len(), 3);
    commit_ok(&store, clash).await;
    let after = store.events(None, 0, 100).await.expect("events");
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(after[..3], before[..]);
    assert_eq!(after[3].event.workflow_id, b);
    assert_eq!(
        after.iter().filter(|e| e.event.id == repeated.id).count(),
        1
    );
    // And later events flow.
    let next = commit_of(
        &task(a, 1, "n"),
        StateDelta::default(),
        Some(advance_to(2, &["n"])),
    );
    commit_ok(&store, next).await;
    let last = store.events(None, 0, 100).await.expect("events");
    assert_eq!(last.len(), 5);
    assert!(last.windows(2).all(|w| w[0].seq < w[1].seq), "{last:?}");
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
    // Past `RequestId::new`'s check: the store is the last guard.
    let long = agentry_core::RequestId::from_stored("r".repeat(256));
    let result = store
        .create_workflow(agentry_core::NewWorkflow {
            request_id: long.clone(),
            ..new_workflow("placeholder")
        })
        .await;
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

//! What the SQLite store promises beyond the shared conformance suite:
//! durability across reopen, migrations, clear errors on foreign files, the
//! seed's table layout, group commit, and leases that hold across
//! processes sharing the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    AccessRole, ApiKeyStore, CommitOutcome, Error, ErrorClass, Event, EventKind, NewWorkflow,
    StateDelta, Store, WorkerRegistry, WorkflowId, WorkflowStatus,
};
use agentry_store_conformance::{
    advance_to, commit_of, commit_ok, new_workflow, output, snapshot, start_transition, started,
    task,
};
use agentry_store_sqlite::{SqliteStore, SqliteStoreOptions, Synchronous};
use serde_json::json;
use sqlx::Row;

async fn open(path: &Path) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(path, SqliteStoreOptions::default())
            .await
            .expect("open store"),
    )
}

fn dyn_store(store: &Arc<SqliteStore>) -> Arc<dyn Store> {
    store.clone()
}

/// Polls `condition` until it holds, failing after five seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A workflow with one committed step, its outputs, context and events.
async fn busy_workflow(store: &Arc<dyn Store>, request_id: &str) -> WorkflowId {
    let id = started(store, request_id, &["business_analyst"]).await;
    let delta = StateDelta {
        agent_outputs: vec![output(
            "business_analyst",
            "analysis",
            json!({"epics": ["cart"]}),
        )],
        shared_context: BTreeMap::from([("scope".to_string(), json!("mvp"))]),
        jira_tickets: vec!["SHOP-1".to_string()],
        ..StateDelta::default()
    };
    commit_ok(
        store,
        commit_of(
            &task(id, 0, "business_analyst"),
            delta,
            Some(advance_to(1, &["developer"])),
        ),
    )
    .await;
    id
}

#[tokio::test]
async fn everything_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dirs/agentry.db");
    let (id, before, events) = {
        let store = open(&path).await;
        let s = dyn_store(&store);
        let id = busy_workflow(&s, "req-durable").await;
        let events = s.unpublished_events(100).await.unwrap();
        (id, snapshot(&s, id).await, events)
        // Dropped here without close(): a crash-like exit of the handle.
    };
    assert!(path.exists(), "open creates missing parent directories");

    let store = open(&path).await;
    let s = dyn_store(&store);
    assert_eq!(
        snapshot(&s, id).await,
        before,
        "the reopened file holds everything"
    );
    assert_eq!(
        s.unpublished_events(100).await.unwrap(),
        events,
        "the outbox survives"
    );
    let state = s.state_at(id, None).await.unwrap();
    assert_eq!(state.jira_tickets, vec!["SHOP-1"]);
    // And it keeps working where it left off.
    let seq = commit_ok(
        &s,
        commit_of(&task(id, 1, "developer"), StateDelta::default(), None),
    )
    .await;
    assert_eq!(seq, 3);
}

#[tokio::test]
async fn close_then_reopen_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.db");
    let store = open(&path).await;
    let s = dyn_store(&store);
    let id = busy_workflow(&s, "req-close").await;
    let before = snapshot(&s, id).await;
    drop(s);
    let store = Arc::try_unwrap(store).expect("sole handle");
    store.close().await;
    assert!(
        std::fs::metadata(format!("{}-wal", path.display())).map_or(true, |m| m.len() == 0),
        "a clean close checkpoints the write-ahead log into the database"
    );
    let reopened = open(&path).await;
    assert_eq!(snapshot(&dyn_store(&reopened), id).await, before);
}

#[tokio::test]
async fn migrations_are_idempotent_and_leave_other_tables_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.db");
    let store = open(&path).await;
    // Another crate's tables and its own schema-version table, in the same file.
    sqlx::query("CREATE TABLE tracker_issues (key TEXT PRIMARY KEY, title TEXT)")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("CREATE TABLE integrations_schema_version (version INTEGER)")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO tracker_issues VALUES ('SHOP-1', 'Cart')")
        .execute(store.pool())
        .await
        .unwrap();
    let id = busy_workflow(&dyn_store(&store), "req-migrate").await;
    drop(store);

    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    for _ in 0..2 {
        let store = open(&path).await;
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(applied, migrations, "each migration is applied once");
        let title: String =
            sqlx::query_scalar("SELECT title FROM tracker_issues WHERE key = 'SHOP-1'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(title, "Cart", "other crates' tables are untouched");
        assert_eq!(store.get_workflow(id).await.unwrap().cursor.step, 1);
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "These are my notes, not a database.\n".repeat(200)).unwrap();
    let error = SqliteStore::open(&path, SqliteStoreOptions::default())
        .await
        .expect_err("a text file is not a store");
    let message = error.to_string();
    assert_eq!(error.class(), ErrorClass::Permanent, "{message}");
    assert!(
        message.contains(&path.display().to_string()),
        "names the path: {message}"
    );
    assert!(
        message.contains("not a SQLite database"),
        "says what is wrong: {message}"
    );
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("These are my notes"),
        "the foreign file is left as it was"
    );
}

/// A zero-length `agentry.db` was silently treated as a new store: the
/// workflows it held were gone and a fresh store grew in their place.
#[tokio::test]
async fn an_empty_store_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.db");
    std::fs::write(&path, b"").unwrap();
    let error = SqliteStore::open(&path, SqliteStoreOptions::default())
        .await
        .expect_err("an empty file is a lost store, not a new one");
    let message = error.to_string();
    assert_eq!(error.class(), ErrorClass::Permanent, "{message}");
    for needle in [
        path.display().to_string().as_str(),
        "is empty",
        "lost store",
        "Restore it",
        "move it away",
    ] {
        assert!(message.contains(needle), "`{needle}` in: {message}");
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "nothing written"
    );
    assert_eq!(
        files_in(dir.path()),
        ["agentry.db"],
        "no log, no temporary file beside it"
    );
}

/// A path with nothing there is still a fresh store, and the file never
/// exists empty: it appears whole, so the refusal above cannot mistake a
/// store another process is creating for a lost one.
#[tokio::test]
async fn a_missing_store_file_is_created_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/agentry.db");
    let store = open(&path).await;
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    let id = busy_workflow(&dyn_store(&store), "fresh").await;
    Arc::try_unwrap(store).unwrap().close().await;
    assert_eq!(files_in(&dir.path().join("new")), ["agentry.db"]);
    let store = open(&path).await;
    assert_eq!(store.get_workflow(id).await.unwrap().cursor.step, 1);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn seed_tables_keep_the_seed_column_names() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let check = |table: &'static str,
                 seed: &'static [&'static str],
                 extra: &'static [&'static str]| {
        let pool = store.pool().clone();
        async move {
            let rows = sqlx::query(&format!("PRAGMA table_info({table})"))
                .fetch_all(&pool)
                .await
                .unwrap();
            let columns: Vec<String> = rows.iter().map(|r| r.get::<String, _>("name")).collect();
            assert_eq!(
                &columns[..seed.len()],
                seed,
                "{table} starts with the seed's columns, in order"
            );
            for column in extra {
                assert!(
                    columns.iter().any(|c| c == column),
                    "{table} has {column}: {columns:?}"
                );
            }
        }
    };
    check(
        "workflows",
        &[
            "id",
            "request_id",
            "requirements",
            "status",
            "created_at",
            "updated_at",
        ],
        &[
            "workflow_name",
            "definition",
            "options",
            "tenant",
            "cursor",
            "current_step",
        ],
    )
    .await;
    check(
        "agent_outputs",
        &[
            "id",
            "workflow_id",
            "agent_name",
            "output_type",
            "content",
            "created_at",
        ],
        &["step"],
    )
    .await;
    check(
        "shared_context",
        &["id", "workflow_id", "key", "value", "updated_at"],
        &[],
    )
    .await;
    check(
        "checkpoints",
        &[
            "workflow_id",
            "seq",
            "step",
            "node",
            "attempt",
            "delta",
            "cursor",
            "status",
            "current_step",
            "note",
            "created_at",
        ],
        &[],
    )
    .await;
    check(
        "events",
        &[
            "seq",
            "id",
            "kind",
            "workflow_id",
            "step",
            "node",
            "attempt",
            "request_id",
            "payload",
            "at",
            "published",
        ],
        &[],
    )
    .await;

    // The seed's UNIQUE request_id, and the store's UNIQUE (workflow_id, key).
    let unique_columns = |table: &'static str| {
        let pool = store.pool().clone();
        async move {
            let indexes = sqlx::query(&format!("PRAGMA index_list({table})"))
                .fetch_all(&pool)
                .await
                .unwrap();
            let mut uniques = Vec::new();
            for index in indexes.iter().filter(|i| i.get::<i64, _>("unique") == 1) {
                let name: String = index.get("name");
                let cols = sqlx::query(&format!("PRAGMA index_info('{name}')"))
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                uniques.push(
                    cols.iter()
                        .map(|c| c.get::<String, _>("name"))
                        .collect::<Vec<_>>(),
                );
            }
            uniques
        }
    };
    assert!(unique_columns("workflows")
        .await
        .contains(&vec!["request_id".to_string()]));
    assert!(unique_columns("shared_context")
        .await
        .contains(&vec!["workflow_id".to_string(), "key".to_string()]));
    assert!(unique_columns("checkpoints").await.contains(&vec![
        "workflow_id".to_string(),
        "step".to_string(),
        "node".to_string()
    ]));
}

#[tokio::test]
async fn connections_use_wal_the_chosen_synchronous_and_foreign_keys() {
    for (synchronous, level) in [(Synchronous::Full, 2i64), (Synchronous::Normal, 1)] {
        let options = SqliteStoreOptions::default().with_synchronous(synchronous);
        let store = SqliteStore::open_temporary(options).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(sync, level, "synchronous {synchronous}");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
    }
}

#[tokio::test]
async fn checkpoints_store_deltas_not_states() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let s = dyn_store(&store);
    let id = busy_workflow(&s, "req-delta").await;
    let second = StateDelta {
        shared_context: BTreeMap::from([("round".to_string(), json!(2))]),
        ..StateDelta::default()
    };
    commit_ok(
        &s,
        commit_of(&task(id, 1, "developer"), second.clone(), None),
    )
    .await;
    let stored: String =
        sqlx::query_scalar("SELECT delta FROM checkpoints WHERE workflow_id = ?1 AND seq = 3")
            .bind(id.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        serde_json::to_value(&second).unwrap()
    );
    assert!(
        !stored.contains("SHOP-1"),
        "the earlier step's data is not repeated: {stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_200_concurrent_commits() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let s = dyn_store(&store);
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(started(&s, &format!("req-group-{i}"), &["developer"]).await);
    }
    let before = store.write_stats();
    let handles: Vec<_> = ids
        .iter()
        .map(|&id| {
            let s = s.clone();
            tokio::spawn(async move {
                let delta = StateDelta {
                    agent_outputs: vec![output(
                        "developer",
                        "implementation",
                        json!({"id": id.to_string()}),
                    )],
                    ..StateDelta::default()
                };
                s.commit_task(commit_of(
                    &task(id, 0, "developer"),
                    delta,
                    Some(advance_to(1, &["qa"])),
                ))
                .await
            })
        })
        .collect();
    for handle in handles {
        assert!(matches!(
            handle.await.unwrap().unwrap(),
            CommitOutcome::Committed { seq: 2 }
        ));
    }
    let after = store.write_stats();
    let requests = after.requests - before.requests;
    let batches = after.batches - before.batches;
    assert_eq!(requests, 200);
    assert!(
        batches < requests,
        "200 concurrent commits share transactions: {batches} batches"
    );
    assert!(after.largest_batch > 1);
    for &id in &ids {
        let snap = snapshot(&s, id).await;
        assert_eq!(snap.record.cursor.step, 1, "{id}");
        assert_eq!(snap.checkpoints.len(), 2);
        assert_eq!(snap.outputs[0].content, json!({"id": id.to_string()}));
        assert_eq!(snap.events.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_request_in_a_batch_fails_alone() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let s = dyn_store(&store);
    let ok_a = started(&s, "req-ok-a", &["n"]).await;
    let stale = started(&s, "req-stale", &["n"]).await;
    let broken = started(&s, "req-broken", &["n"]).await;
    let ok_b = started(&s, "req-ok-b", &["n"]).await;
    let blocker = started(&s, "req-blocker", &["n"]).await;
    let broken_before = snapshot(&s, broken).await;
    let stale_before = snapshot(&s, stale).await;

    // Hold SQLite's write lock from another connection, so the writer waits
    // while the requests below queue up behind it and land in ONE batch.
    let mut lock = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let commit = |id: WorkflowId, step: u64| {
        commit_of(
            &task(id, step, "n"),
            StateDelta {
                shared_context: BTreeMap::from([("k".to_string(), json!(id.to_string()))]),
                ..StateDelta::default()
            },
            Some(advance_to(step + 1, &["n"])),
        )
    };
    let taken = store.write_stats().requests;
    let first = tokio::spawn({
        let s = s.clone();
        let c = commit(blocker, 0);
        async move { s.commit_task(c).await }
    });
    eventually("the writer took the first request", || {
        store.write_stats().requests == taken + 1
    })
    .await;
    // An event about a workflow that does not exist violates a foreign key.
    let mut bad = commit(broken, 0);
    bad.events.push(Event::workflow(
        EventKind::ContextUpdated,
        WorkflowId::new(),
        json!({}),
    ));
    let requests = vec![commit(ok_a, 0), commit(stale, 3), bad, commit(ok_b, 0)];
    let handles: Vec<_> = requests
        .into_iter()
        .map(|c| {
            let s = s.clone();
            tokio::spawn(async move { s.commit_task(c).await })
        })
        .collect();
    eventually("four requests queued", || store.write_stats().queued == 4).await;
    let batches_before = store.write_stats().batches;
    let reruns_before = store.write_stats().careful_reruns;
    sqlx::query("COMMIT").execute(&mut *lock).await.unwrap();
    drop(lock);

    assert!(matches!(
        first.await.unwrap(),
        Ok(CommitOutcome::Committed { .. })
    ));
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    let stats = store.write_stats();
    assert_eq!(
        stats.batches,
        batches_before + 1,
        "the four queued requests ran in one batch"
    );
    assert!(stats.largest_batch >= 4);
    assert_eq!(
        stats.careful_reruns,
        reruns_before + 1,
        "the failure made the batch run again with a savepoint per request"
    );

    assert!(
        matches!(results[0], Ok(CommitOutcome::Committed { seq: 2 })),
        "{:?}",
        results[0]
    );
    assert_eq!(
        results[1],
        Ok(CommitOutcome::Stale {
            status: WorkflowStatus::Running,
            step: 0
        })
    );
    match &results[2] {
        Err(Error::Permanent(message)) => assert!(message.contains("constraint"), "{message}"),
        other => panic!("the broken request gets its own permanent error, got {other:?}"),
    }
    assert!(
        matches!(results[3], Ok(CommitOutcome::Committed { seq: 2 })),
        "{:?}",
        results[3]
    );

    for id in [ok_a, ok_b] {
        let snap = snapshot(&s, id).await;
        assert_eq!(snap.record.cursor.step, 1);
        assert_eq!(snap.context["k"], json!(id.to_string()));
        assert_eq!(snap.events.len(), 2);
    }
    assert_eq!(
        snapshot(&s, broken).await,
        broken_before,
        "the failed request left nothing"
    );
    assert_eq!(
        snapshot(&s, stale).await,
        stale_before,
        "the stale request left nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_in_a_mixed_batch_need_no_rerun() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let s = dyn_store(&store);
    let running = started(&s, "req-running", &["n"]).await;
    let pending = new_workflow("req-pending");
    let pending_id = pending.id;
    s.create_workflow(pending).await.unwrap();
    let blocker = started(&s, "req-blocker", &["n"]).await;
    let existing = snapshot(&s, running).await;

    // Queue every kind of request, including refusals, behind the write
    // lock held by another connection, so that they land in ONE batch.
    let mut lock = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let taken = store.write_stats().requests;
    let first = tokio::spawn({
        let s = s.clone();
        let c = commit_of(&task(blocker, 0, "n"), StateDelta::default(), None);
        async move { s.commit_task(c).await }
    });
    eventually("the writer took the first request", || {
        store.write_stats().requests == taken + 1
    })
    .await;
    let fresh = new_workflow("req-fresh");
    let fresh_id = fresh.id;
    let again = NewWorkflow {
        id: WorkflowId::new(),
        ..new_workflow("req-running")
    };
    let creates = [fresh, again].map(|new| {
        let s = s.clone();
        tokio::spawn(async move { s.create_workflow(new).await })
    });
    // Starting a running workflow is refused; starting a pending one works.
    let transitions = [running, pending_id, WorkflowId::new()].map(|id| {
        let s = s.clone();
        tokio::spawn(async move { s.transition(id, start_transition(id, &["n"])).await })
    });
    // The stale one is at step 5 of the workflow started in this batch
    // (transitions run before task commits).
    let commits = [(running, 0), (pending_id, 5)].map(|(id, step)| {
        let s = s.clone();
        let c = commit_of(
            &task(id, step, "n"),
            StateDelta::default(),
            Some(advance_to(step + 1, &["n"])),
        );
        async move { s.commit_task(c).await }
    });
    let commits = commits.map(tokio::spawn);
    eventually("seven requests queued", || store.write_stats().queued == 7).await;
    let before = store.write_stats();
    sqlx::query("COMMIT").execute(&mut *lock).await.unwrap();
    drop(lock);
    first.await.unwrap().unwrap();

    let [fresh_created, again_created] = creates;
    assert_eq!(fresh_created.await.unwrap().unwrap().id, fresh_id);
    let first_of_request = again_created.await.unwrap().unwrap();
    assert_eq!(first_of_request.id, running, "same request id: the first");
    assert_eq!(first_of_request.status, WorkflowStatus::Running);
    let [refused, started_now, unknown] = transitions;
    match refused.await.unwrap() {
        Err(Error::Conflict(message)) => assert!(message.contains("is running"), "{message}"),
        other => panic!("starting a running workflow is a conflict, got {other:?}"),
    }
    let started_now = started_now.await.unwrap().unwrap();
    assert_eq!(started_now.status, WorkflowStatus::Running);
    assert_eq!(started_now.cursor.pending, ["n"]);
    assert!(matches!(unknown.await.unwrap(), Err(Error::NotFound(_))));
    let [ok, stale] = commits;
    assert_eq!(ok.await.unwrap(), Ok(CommitOutcome::Committed { seq: 2 }));
    assert_eq!(
        stale.await.unwrap(),
        Ok(CommitOutcome::Stale {
            status: WorkflowStatus::Running,
            step: 0
        })
    );

    let after = store.write_stats();
    assert_eq!(after.batches, before.batches + 1, "one batch");
    assert_eq!(
        after.careful_reruns, before.careful_reruns,
        "refusals are answers, not failures: no rerun"
    );
    let now = snapshot(&s, running).await;
    assert_eq!(now.record.cursor.step, 1);
    assert_eq!(
        now.checkpoints.len(),
        existing.checkpoints.len() + 1,
        "only the good commit wrote a checkpoint"
    );
}

#[tokio::test]
async fn a_write_locked_out_past_the_busy_timeout_is_transient() {
    let options = SqliteStoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..SqliteStoreOptions::default()
    };
    let store = Arc::new(SqliteStore::open_temporary(options).await.unwrap());
    let s = dyn_store(&store);
    let id = started(&s, "req-busy", &["n"]).await;
    let mut lock = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let commit = commit_of(&task(id, 0, "n"), StateDelta::default(), None);
    let error = s.commit_task(commit.clone()).await.expect_err("locked out");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    assert_eq!(
        s.commit_task(commit).await.unwrap(),
        CommitOutcome::Committed { seq: 2 },
        "a retry succeeds once the lock is gone"
    );
}

#[tokio::test]
async fn file_size_counts_the_database_and_its_log() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let empty = store.file_size_bytes().unwrap();
    assert!(empty > 0);
    let s = dyn_store(&store);
    for i in 0..20 {
        busy_workflow(&s, &format!("req-size-{i}")).await;
    }
    assert!(
        store.file_size_bytes().unwrap() > empty,
        "writes take space"
    );
    assert!(store.path().ends_with("agentry.db"));
}

/// Two `agentry` processes started at once on a fresh data directory both
/// create and migrate the file; both must come up.
#[tokio::test]
async fn simultaneous_first_opens_of_a_fresh_file_all_succeed() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("fresh-{round}.db"));
        let opens = (0..4).map(|_| SqliteStore::open(&path, SqliteStoreOptions::default()));
        for open in futures::future::join_all(opens).await {
            let store = open.unwrap_or_else(|e| panic!("round {round}: {e}"));
            store.health().await.unwrap();
        }
    }
}

#[tokio::test]
async fn an_api_key_row_with_an_unknown_role_names_the_key_and_the_role() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let insert = "INSERT INTO api_keys (id, tenant, role, name, secret_hash, created_at) \
                  VALUES ('k-legacy', 'acme', 'superuser', 'old key', 'ab12', \
                  '2026-01-01T00:00:00.000000000Z')";
    sqlx::query(insert)
        .execute(store.pool())
        .await
        .expect_err("the CHECK constraint refuses an unknown role");
    // A row such as another build (or a hand edit without the CHECK) left.
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(insert).execute(&mut *conn).await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let read = store.api_key("k-legacy").await.map(|_| ());
    let listed = store.list_api_keys(Some("acme")).await.map(|_| ());
    for result in [read, listed] {
        let error = result.expect_err("an unknown role does not decode");
        assert!(
            matches!(&error, Error::Permanent(message)
                if message.contains("k-legacy") && message.contains("superuser")),
            "a permanent error naming the key and the role, got {error:?}"
        );
    }
}

#[tokio::test]
async fn api_keys_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.db");
    let store = open(&path).await;
    let key = agentry_store_conformance::api_key_record("k1", "acme", AccessRole::Admin, 0);
    store.create_api_key(key.clone()).await.unwrap();
    let revoked = store
        .revoke_api_key("k1", agentry_store_conformance::key_time(9))
        .await
        .unwrap();
    drop(store);
    let store = open(&path).await;
    assert_eq!(store.api_key("k1").await.unwrap(), Some(revoked.clone()));
    assert_eq!(store.list_api_keys(None).await.unwrap(), vec![revoked]);
}

/// Stores opened on one file are what separate `agentry` processes are to
/// SQLite (connections of their own, the file's locks between them): ten
/// holders spread over four of them, racing for one free lease, one wins,
/// every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_race_between_stores_sharing_a_file_grants_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.db");
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(open(&path).await);
    }
    let now = agentry_store_conformance::worker_time(0);
    let ttl = Duration::from_secs(30);
    for round in 0..10 {
        let name = format!("resume-{round}");
        let races = (0..10).map(|i| {
            let store = stores[i % stores.len()].clone();
            let name = name.clone();
            tokio::spawn(async move {
                let holder = format!("w-{i}");
                let taken = store.acquire_lease(&name, &holder, ttl, now).await;
                (holder, taken.expect("acquire is not an error"))
            })
        });
        let winners: Vec<String> = futures::future::join_all(races)
            .await
            .into_iter()
            .map(|joined| joined.expect("the racing task"))
            .filter(|(_, taken)| *taken)
            .map(|(holder, _)| holder)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        for store in &stores {
            assert!(
                store
                    .acquire_lease(&name, &winners[0], ttl, now)
                    .await
                    .unwrap(),
                "round {round}: every store sees {} as the holder",
                winners[0]
            );
        }
    }
}

/// A beat's tasks are stored as the task ids' text, the form every earlier
/// version wrote and reads: a row written before `TaskKey` reads back, and
/// a beat written now is the same text.
#[tokio::test]
async fn beat_tasks_are_stored_as_task_id_texts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("agentry.db")).await;
    store
        .register(agentry_store_conformance::worker_info("w-1", 0))
        .await
        .unwrap();
    let earlier = r#"["0190f5a2-7c3e-7d4e-8f00-0123456789ab:3:qa#2"]"#;
    sqlx::query("UPDATE workers SET tasks = ?1 WHERE id = 'w-1'")
        .bind(earlier)
        .execute(store.pool())
        .await
        .unwrap();
    let listed = store.list_workers().await.unwrap();
    assert_eq!(
        listed[0].beat.tasks,
        vec![agentry_store_conformance::running_task("qa")]
    );

    let beat = agentry_store_conformance::worker_beat("w-1", 5, &["qa"]);
    store.heartbeat(beat).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT tasks FROM workers WHERE id = 'w-1'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, earlier);
}

#[tokio::test]
async fn workers_and_leases_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentry.db");
    let store = open(&path).await;
    let info = agentry_store_conformance::worker_info("w-1", 0);
    let beat = agentry_store_conformance::worker_beat("w-1", 5, &["wf/1/qa#1"]);
    let now = agentry_store_conformance::worker_time(5);
    store.register(info.clone()).await.unwrap();
    store.heartbeat(beat.clone()).await.unwrap();
    assert!(store
        .acquire_lease("sweep", "w-1", Duration::from_secs(60), now)
        .await
        .unwrap());
    let before = store.list_workers().await.unwrap();
    drop(store);
    let store = open(&path).await;
    assert_eq!(store.list_workers().await.unwrap(), before);
    assert_eq!(before[0].beat, beat);
    assert!(
        !store
            .acquire_lease("sweep", "w-2", Duration::from_secs(60), now)
            .await
            .unwrap(),
        "the lease is still w-1's"
    );
}

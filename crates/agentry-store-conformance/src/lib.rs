//! The `Store` port's conformance suite, run by every store adapter.
//!
//! Every adapter (in-memory, SQLite, PostgreSQL) runs the very same
//! behaviours, so "passes the suite" means the same thing for all of them.
//! Each behaviour is a `pub async fn(Arc<dyn Store>)` that panics with a
//! message naming what went wrong; [`run_all`] runs every behaviour, each on a
//! fresh store, and [`store_conformance_tests!`] expands to one `#[tokio::test]`
//! per behaviour so a failure is reported under the behaviour's name:
//!
//! ```text
//! // crates/agentry-store-foo/tests/conformance.rs (needs tokio as a dev-dependency)
//! agentry_store_conformance::store_conformance_tests!(async {
//!     std::sync::Arc::new(FooStore::new())
//! });
//! ```
//!
//! Key design decision: behaviours receive a store, never construct one, and
//! only use the port (`dyn Store`). The suite therefore cannot lean on any
//! adapter's internals, and an adapter cannot pass by special-casing it.
//! Each behaviour also checks that what was NOT supposed to be written was not
//! written (stale and duplicate commits, conflicting transitions), because a
//! store that writes too much passes every "is it there" check.
//!
//! Three smaller suites cover the other ports a store implements:
//! [`llm_data_conformance_tests!`] (`LlmLedger`, `LlmCache`),
//! [`api_key_conformance_tests!`] (`ApiKeyStore`) and
//! [`worker_registry_conformance_tests!`] (`WorkerRegistry`). A fourth,
//! [`rate_limiter_conformance_tests!`] (`RateLimiter`), covers state kept
//! beside the store rather than in it: rate-limit buckets, in the
//! process's memory or in Redis (which runs the `LlmCache` suite from here
//! too).

// This crate is test code: a failed expectation is the test failure, so it
// panics with a message instead of returning errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use agentry_core::{
    fold_state, Advance, AgentOutputRecord, AgentOutputWrite, Checkpoint, CommitOutcome, Cursor,
    Error, Event, EventKind, NewWorkflow, StateDelta, Store, StoredEvent, TaskCommit, TaskId,
    TaskKey, Transition, UsageRecord, WorkflowErrorEntry, WorkflowId, WorkflowQuery,
    WorkflowRecord, WorkflowStatus,
};
use serde_json::{json, Value};

#[doc(hidden)]
pub use agentry_core;

mod access;
pub use access::*;

mod registry;
pub use registry::*;

mod ratelimit;
pub use ratelimit::*;

/// Lists every behaviour, in the order [`run_all`] runs them, and hands the
/// list to `$callback`. The single list keeps [`run_all`] and
/// [`store_conformance_tests!`] in step.
#[doc(hidden)]
#[macro_export]
macro_rules! __behaviours {
    ($callback:ident, $($args:tt)*) => {
        $crate::$callback!($($args)*;
            health_and_name,
            create_workflow_starts_pending,
            create_workflow_same_request_id_returns_first,
            create_workflow_rejects_blank_requirement,
            get_workflow_unknown_is_not_found,
            list_workflows_newest_first_and_filtered,
            list_workflows_pages_without_gaps,
            list_workflows_limit_defaults_and_cap,
            transition_start_writes_control_checkpoint,
            transition_guard_mismatch_is_conflict_and_changes_nothing,
            transition_unknown_workflow_is_not_found,
            transitions_racing_one_wins,
            commit_task_writes_checkpoint_outputs_context_events,
            commit_task_duplicate_writes_nothing,
            commit_task_stale_writes_nothing,
            commit_task_fan_out_siblings_share_a_step,
            commit_task_unknown_workflow_is_not_found,
            state_at_is_the_fold_of_deltas,
            events_are_ordered_by_seq,
            outbox_tracks_unpublished_events,
            rejected_writes_add_no_events,
            concurrent_commits_on_many_workflows,
            concurrent_duplicate_commits_one_wins,
            invalid_calls_lose_nothing
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __run_each {
    ($make:expr; $($name:ident),*) => {
        $( $crate::$name(($make)().await).await; )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_test {
    ($make:expr; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::agentry_core::Store> = $make.await;
                $crate::$name(store).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per behaviour of the suite, named after
/// the behaviour. The argument is an expression evaluating to a future of a
/// fresh, empty store (`Arc<dyn Store>` or `Arc<YourStore>`); it is
/// evaluated once per test. The calling crate needs `tokio` (with the
/// `macros` and `rt-multi-thread` features) as a dev-dependency.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::__behaviours!(__store_conformance_test, $make);
    };
}

/// Runs every behaviour of the suite, each on a fresh store made by `make`.
/// Panics at the first failure, naming it. Prefer
/// [`store_conformance_tests!`], which reports each behaviour as its own test.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    crate::__behaviours!(__run_each, make);
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A valid [`NewWorkflow`] with a fresh id and the given request id.
pub fn new_workflow(request_id: &str) -> NewWorkflow {
    NewWorkflow {
        id: WorkflowId::new(),
        request_id: agentry_core::RequestId::new(request_id).expect("a valid request id"),
        requirements: "Build an online shop with a cart and a checkout.".to_string(),
        workflow_name: "sdlc".to_string(),
        definition: "name = \"sdlc\"\n[nodes.business_analyst]\nrole = \"business_analyst\"\n"
            .to_string(),
        options: agentry_core::RunOptions {
            llm: Some(agentry_core::LlmSelection {
                provider: "scripted".into(),
                ..agentry_core::LlmSelection::default()
            }),
            project_key: Some("SHOP".into()),
            ..agentry_core::RunOptions::default()
        },
        tenant: None,
    }
}

/// Task `step`/`node` of `id`, attempt 1.
pub fn task(id: WorkflowId, step: u64, node: &str) -> TaskId {
    TaskId::new(TaskKey::new(id, step, node), 1)
}

/// A cursor at `step` with `pending` nodes.
pub fn cursor(step: u64, pending: &[&str]) -> Cursor {
    Cursor {
        step,
        pending: pending.iter().map(|s| s.to_string()).collect(),
        ..Cursor::default()
    }
}

/// One agent output.
pub fn output(agent: &str, output_type: &str, content: Value) -> AgentOutputWrite {
    AgentOutputWrite {
        agent_name: agent.to_string(),
        output_type: output_type.to_string(),
        content,
    }
}

/// The advance to `step` with `pending` nodes, still running.
pub fn advance_to(step: u64, pending: &[&str]) -> Advance {
    Advance {
        cursor: cursor(step, pending),
        status: WorkflowStatus::Running,
        current_step: pending.join("+"),
    }
}

/// A commit of `task` with `delta`, one `agent.task.completed` event and
/// `advance`.
pub fn commit_of(task: &TaskId, delta: StateDelta, advance: Option<Advance>) -> TaskCommit {
    TaskCommit {
        task: task.clone(),
        delta,
        events: vec![Event::task(
            EventKind::TaskCompleted,
            task,
            json!({"node": task.key.node, "attempt": task.attempt}),
        )],
        advance,
    }
}

/// The start action: `pending` -> `running` at step 0 with `pending` nodes.
pub fn start_transition(id: WorkflowId, pending: &[&str]) -> Transition {
    Transition {
        expected_status: vec![WorkflowStatus::Pending],
        expected_step: Some(0),
        status: WorkflowStatus::Running,
        cursor: Some(cursor(0, pending)),
        current_step: Some(pending.join("+")),
        delta: StateDelta::default(),
        events: vec![
            Event::workflow(EventKind::WorkflowStarted, id, json!({"pending": pending}))
                .with_request_id(Some(agentry_core::RequestId::new("req-start").unwrap())),
        ],
        note: "started".to_string(),
    }
}

/// Creates a workflow (request id `request_id`) and starts it with `pending`.
pub async fn started(store: &Arc<dyn Store>, request_id: &str, pending: &[&str]) -> WorkflowId {
    let new = new_workflow(request_id);
    let id = new.id;
    store
        .create_workflow(new)
        .await
        .unwrap_or_else(|error| panic!("create_workflow({request_id}) failed: {error}"));
    store
        .transition(id, start_transition(id, pending))
        .await
        .unwrap_or_else(|error| panic!("starting {id} failed: {error}"));
    id
}

/// Commits and expects [`CommitOutcome::Committed`]; returns its seq.
pub async fn commit_ok(store: &Arc<dyn Store>, commit: TaskCommit) -> u64 {
    let what = commit.task.to_string();
    match store.commit_task(commit).await {
        Ok(CommitOutcome::Committed { seq }) => seq,
        other => panic!("commit of {what} should be Committed, got {other:?}"),
    }
}

/// Everything the store holds about one workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSnapshot {
    /// Its `workflows` row.
    pub record: WorkflowRecord,
    /// Its checkpoints, oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// `agent_outputs` rows.
    pub outputs: Vec<AgentOutputRecord>,
    /// `shared_context`.
    pub context: BTreeMap<String, Value>,
    /// Its events in the outbox, by `seq`.
    pub events: Vec<StoredEvent>,
}

/// Reads everything about `id`.
pub async fn snapshot(store: &Arc<dyn Store>, id: WorkflowId) -> WorkflowSnapshot {
    WorkflowSnapshot {
        record: store.get_workflow(id).await.expect("get_workflow"),
        checkpoints: store.checkpoints(id).await.expect("checkpoints"),
        outputs: store.agent_outputs(id).await.expect("agent_outputs"),
        context: store.shared_context(id).await.expect("shared_context"),
        events: store.events(Some(id), 0, 100_000).await.expect("events"),
    }
}

async fn all_events(store: &Arc<dyn Store>) -> Vec<StoredEvent> {
    store.events(None, 0, 100_000).await.expect("events(None)")
}

fn assert_invalid_input<T: std::fmt::Debug>(what: &str, result: agentry_core::Result<T>) {
    match result {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("{what}: expected Error::InvalidInput, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(
    what: &str,
    result: agentry_core::Result<T>,
    id: WorkflowId,
) {
    match result {
        Err(Error::NotFound(message)) => assert!(
            message.contains(&id.to_string()),
            "{what}: NotFound message should name {id}: {message}"
        ),
        other => panic!("{what}: expected Error::NotFound, got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(
    what: &str,
    result: agentry_core::Result<T>,
    actual: WorkflowStatus,
) {
    match result {
        Err(Error::Conflict(message)) => assert!(
            message.contains(actual.as_str()),
            "{what}: Conflict message should name the actual status `{actual}`: {message}"
        ),
        other => panic!("{what}: expected Error::Conflict, got {other:?}"),
    }
}

fn assert_strictly_increasing(what: &str, events: &[StoredEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "{what}: seqs must strictly increase, got {} then {}",
            pair[0].seq,
            pair[1].seq
        );
    }
}

async fn list_all(store: &Arc<dyn Store>, query: WorkflowQuery) -> Vec<WorkflowId> {
    let page = store.list_workflows(query).await.expect("list_workflows");
    page.items.iter().map(|r| r.id).collect()
}

// ---------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------

/// `name()` is non-empty and `health()` succeeds on a fresh store.
pub async fn health_and_name(store: Arc<dyn Store>) {
    assert!(!store.name().is_empty(), "name() must not be empty");
    store.health().await.expect("health() on a fresh store");
}

/// A new workflow is `pending` with an empty cursor, stores every field, and
/// reads back identically by id, by request id and in listings.
pub async fn create_workflow_starts_pending(store: Arc<dyn Store>) {
    let mut new = new_workflow("req-create");
    new.tenant = Some("acme".to_string());
    let rec = store
        .create_workflow(new.clone())
        .await
        .expect("create_workflow");
    assert_eq!(rec.id, new.id);
    assert_eq!(rec.request_id, new.request_id);
    assert_eq!(rec.requirements, new.requirements);
    assert_eq!(rec.workflow_name, new.workflow_name);
    assert_eq!(rec.definition, new.definition);
    assert_eq!(rec.options, new.options);
    assert_eq!(rec.tenant, new.tenant);
    assert_eq!(
        rec.status,
        WorkflowStatus::Pending,
        "a new workflow is pending"
    );
    assert_eq!(
        rec.cursor,
        Cursor::default(),
        "a new workflow has an empty cursor"
    );
    assert_eq!(rec.cursor.step, 0);
    assert!(rec.cursor.pending.is_empty());
    assert!(
        rec.current_step.is_empty(),
        "nothing runs yet: {:?}",
        rec.current_step
    );
    assert!(rec.created_at <= rec.updated_at);

    assert_eq!(store.get_workflow(new.id).await.expect("get_workflow"), rec);
    assert_eq!(
        store
            .find_by_request_id(&agentry_core::RequestId::new("req-create").unwrap())
            .await
            .expect("find_by_request_id"),
        Some(rec.clone())
    );
    assert_eq!(
        store
            .find_by_request_id(&agentry_core::RequestId::new("req-other").unwrap())
            .await
            .expect("find_by_request_id"),
        None
    );
    assert!(store
        .checkpoints(new.id)
        .await
        .expect("checkpoints")
        .is_empty());
    assert!(
        all_events(&store).await.is_empty(),
        "creating writes no events"
    );

    let untenanted = store
        .create_workflow(new_workflow("req-create-2"))
        .await
        .expect("create_workflow without tenant");
    assert_eq!(untenanted.tenant, None);
    let state = store.state_at(new.id, None).await.expect("state_at(None)");
    assert_eq!(state.requirements, new.requirements);
    assert_eq!(state.status, WorkflowStatus::Pending);
    assert_eq!(state.step, 0);
}

/// A second create with the same request id returns the first workflow,
/// unchanged, and makes nothing.
pub async fn create_workflow_same_request_id_returns_first(store: Arc<dyn Store>) {
    let first = store
        .create_workflow(new_workflow("req-dup"))
        .await
        .expect("first create");
    let mut again = new_workflow("req-dup");
    again.requirements = "Something else entirely.".to_string();
    again.tenant = Some("globex".to_string());
    let second = store
        .create_workflow(again.clone())
        .await
        .expect("second create");
    assert_eq!(
        second, first,
        "same request id must return the first workflow unchanged"
    );
    assert_not_found(
        "the second id was never created",
        store.get_workflow(again.id).await,
        again.id,
    );
    assert_eq!(
        list_all(&store, WorkflowQuery::default()).await,
        vec![first.id]
    );
    assert_eq!(store.get_workflow(first.id).await.expect("get"), first);
}

/// Empty or whitespace-only requirements are invalid input and create nothing.
pub async fn create_workflow_rejects_blank_requirement(store: Arc<dyn Store>) {
    for (i, blank) in ["", "   ", " \n\t "].into_iter().enumerate() {
        let mut new = new_workflow(&format!("req-blank-{i}"));
        new.requirements = blank.to_string();
        assert_invalid_input(
            &format!("create_workflow with requirements {blank:?}"),
            store.create_workflow(new.clone()).await,
        );
        assert_eq!(
            store
                .find_by_request_id(&new.request_id)
                .await
                .expect("find"),
            None,
            "a rejected create must not be stored"
        );
    }
    assert!(list_all(&store, WorkflowQuery::default()).await.is_empty());
}

/// `get_workflow` of an unknown id is NotFound naming the id.
pub async fn get_workflow_unknown_is_not_found(store: Arc<dyn Store>) {
    store
        .create_workflow(new_workflow("req-known"))
        .await
        .expect("create");
    let unknown = WorkflowId::new();
    assert_not_found(
        "get_workflow(unknown)",
        store.get_workflow(unknown).await,
        unknown,
    );
}

/// Listings are newest first and filter by status and tenant.
pub async fn list_workflows_newest_first_and_filtered(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut new = new_workflow(&format!("req-list-{i}"));
        new.tenant = Some(if i % 2 == 0 { "acme" } else { "globex" }.to_string());
        ids.push(store.create_workflow(new).await.expect("create").id);
    }
    // Start workflows 1 (globex) and 4 (acme).
    for &i in &[1usize, 4] {
        store
            .transition(ids[i], start_transition(ids[i], &["business_analyst"]))
            .await
            .expect("start");
    }
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    let page = store
        .list_workflows(WorkflowQuery::default())
        .await
        .expect("list");
    assert_eq!(
        page.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        newest_first
    );
    assert_eq!(page.next, None, "everything fits in one page");

    let running = list_all(
        &store,
        WorkflowQuery {
            status: Some(WorkflowStatus::Running),
            ..WorkflowQuery::default()
        },
    )
    .await;
    assert_eq!(running, vec![ids[4], ids[1]], "status filter");

    let acme = list_all(
        &store,
        WorkflowQuery {
            tenant: Some("acme".to_string()),
            ..WorkflowQuery::default()
        },
    )
    .await;
    assert_eq!(acme, vec![ids[4], ids[2], ids[0]], "tenant filter");

    let acme_pending = list_all(
        &store,
        WorkflowQuery {
            tenant: Some("acme".to_string()),
            status: Some(WorkflowStatus::Pending),
            ..WorkflowQuery::default()
        },
    )
    .await;
    assert_eq!(
        acme_pending,
        vec![ids[2], ids[0]],
        "tenant and status filters together"
    );

    let nobody = list_all(
        &store,
        WorkflowQuery {
            tenant: Some("initech".to_string()),
            ..WorkflowQuery::default()
        },
    )
    .await;
    assert!(nobody.is_empty(), "unknown tenant sees nothing");
}

/// Following `next` pages through everything, newest first, no item twice,
/// none missing, and `next` is None on the last page.
pub async fn list_workflows_pages_without_gaps(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..23 {
        let mut new = new_workflow(&format!("req-page-{i}"));
        new.tenant = Some(if i % 3 == 0 { "acme" } else { "globex" }.to_string());
        ids.push(store.create_workflow(new).await.expect("create").id);
    }
    let check = |tenant: Option<&str>, limit: u32, expected_pages: usize| {
        let store = store.clone();
        let expected: Vec<WorkflowId> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| match tenant {
                None => true,
                Some("acme") => i % 3 == 0,
                Some(_) => i % 3 != 0,
            })
            .map(|(_, id)| *id)
            .rev()
            .collect();
        let tenant = tenant.map(str::to_string);
        async move {
            let mut seen = Vec::new();
            let mut before = None;
            let mut pages = 0;
            loop {
                let page = store
                    .list_workflows(WorkflowQuery {
                        tenant: tenant.clone(),
                        limit,
                        before,
                        ..WorkflowQuery::default()
                    })
                    .await
                    .expect("list page");
                pages += 1;
                assert!(pages <= 100, "pagination does not terminate");
                assert!(
                    page.items.len() <= limit as usize,
                    "page larger than limit {limit}"
                );
                seen.extend(page.items.iter().map(|r| r.id));
                match page.next {
                    Some(next) => {
                        assert_eq!(Some(&next), seen.last(), "next is the last item's id");
                        before = Some(next);
                    }
                    None => break,
                }
            }
            let unique: BTreeSet<_> = seen.iter().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "no item twice (tenant {tenant:?}, limit {limit})"
            );
            assert_eq!(
                seen, expected,
                "every item, newest first (tenant {tenant:?}, limit {limit})"
            );
            assert_eq!(
                pages, expected_pages,
                "pages (tenant {tenant:?}, limit {limit})"
            );
        }
    };
    check(None, 5, 5).await;
    check(None, 1, 23).await;
    check(None, 23, 1).await;
    check(None, 22, 2).await;
    check(Some("acme"), 3, 3).await; // 8 acme workflows
    check(Some("globex"), 4, 4).await; // 15 globex workflows
}

/// `limit` 0 means 50; limits above 500 are capped at 500.
pub async fn list_workflows_limit_defaults_and_cap(store: Arc<dyn Store>) {
    let news: Vec<NewWorkflow> = (0..501)
        .map(|i| new_workflow(&format!("req-cap-{i}")))
        .collect();
    let oldest = news[0].id;
    // Created concurrently (stores may batch), ids were minted in order.
    for chunk in news.chunks(100) {
        let results =
            futures::future::join_all(chunk.iter().cloned().map(|n| store.create_workflow(n)))
                .await;
        for r in results {
            r.expect("create");
        }
    }
    let page = store
        .list_workflows(WorkflowQuery::default())
        .await
        .expect("list limit 0");
    assert_eq!(page.items.len(), 50, "limit 0 means 50");
    assert!(page.next.is_some());
    let page = store
        .list_workflows(WorkflowQuery {
            limit: 10_000,
            ..WorkflowQuery::default()
        })
        .await
        .expect("list limit 10000");
    assert_eq!(page.items.len(), 500, "limit is capped at 500");
    let next = page.next.expect("a 501st workflow remains");
    let rest = store
        .list_workflows(WorkflowQuery {
            limit: 10_000,
            before: Some(next),
            ..WorkflowQuery::default()
        })
        .await
        .expect("second page");
    assert_eq!(
        rest.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![oldest]
    );
    assert_eq!(rest.next, None);
}

/// Starting a workflow writes the row, a control checkpoint (node None, the
/// note) and the events, atomically.
pub async fn transition_start_writes_control_checkpoint(store: Arc<dyn Store>) {
    let created = store
        .create_workflow(new_workflow("req-start"))
        .await
        .expect("create");
    let id = created.id;
    let transition = start_transition(id, &["business_analyst"]);
    let rec = store
        .transition(id, transition.clone())
        .await
        .expect("start");
    assert_eq!(rec.status, WorkflowStatus::Running);
    assert_eq!(rec.cursor, cursor(0, &["business_analyst"]));
    assert_eq!(rec.current_step, "business_analyst");
    assert!(rec.updated_at >= created.updated_at);
    assert_eq!(
        rec.requirements, created.requirements,
        "untouched fields stay"
    );
    assert_eq!(rec.created_at, created.created_at);
    assert_eq!(store.get_workflow(id).await.expect("get"), rec);

    let cps = store.checkpoints(id).await.expect("checkpoints");
    assert_eq!(cps.len(), 1, "one control checkpoint: {cps:?}");
    let cp = &cps[0];
    assert_eq!(cp.workflow_id, id);
    assert_eq!(cp.seq, 1);
    assert_eq!(cp.step, 0);
    assert_eq!(cp.node, None, "control checkpoints have no node");
    assert_eq!(cp.attempt, None);
    assert_eq!(cp.note, "started");
    assert_eq!(cp.status, WorkflowStatus::Running);
    assert_eq!(cp.current_step, "business_analyst");
    assert_eq!(cp.cursor, Some(cursor(0, &["business_analyst"])));
    assert_eq!(cp.delta, StateDelta::default());

    let events = store.events(Some(id), 0, 100).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event, transition.events[0],
        "event stored as given"
    );
    assert!(!events[0].published);
    let unpublished = store.unpublished_events(100).await.expect("unpublished");
    assert_eq!(unpublished, events, "the event is in the outbox");

    // An advance no task carried: the checkpoint belongs to the step the
    // workflow was at, and its delta lands in the seed tables too.
    let skip = Transition {
        expected_status: vec![WorkflowStatus::Running],
        expected_step: Some(0),
        status: WorkflowStatus::Running,
        cursor: Some(cursor(2, &["qa"])),
        current_step: Some("qa".to_string()),
        delta: StateDelta {
            agent_outputs: vec![output("engine", "skip", json!({"skipped": ["developer"]}))],
            shared_context: BTreeMap::from([("skipped".to_string(), json!(true))]),
            ..StateDelta::default()
        },
        events: vec![Event::workflow(
            EventKind::StepCompleted,
            id,
            json!({"step": 0}),
        )],
        note: "advanced".to_string(),
    };
    let rec = store.transition(id, skip).await.expect("advance");
    assert_eq!(rec.cursor, cursor(2, &["qa"]));
    assert_eq!(rec.current_step, "qa");
    let outputs = store.agent_outputs(id).await.expect("agent_outputs");
    let rows: Vec<_> = outputs
        .iter()
        .map(|o| (o.agent_name.as_str(), o.output_type.as_str(), o.step))
        .collect();
    assert_eq!(
        rows,
        vec![("engine", "skip", 0)],
        "a transition's outputs are rows too"
    );
    assert_eq!(
        store.shared_context(id).await.expect("shared_context"),
        BTreeMap::from([("skipped".to_string(), json!(true))]),
        "a transition's context is upserted too"
    );

    // A transition with an error records it and folds it into the state.
    let error = WorkflowErrorEntry {
        step: 2,
        node: Some("qa".to_string()),
        attempt: 3,
        class: agentry_core::ErrorClass::Permanent,
        message: "gave up".to_string(),
        at: chrono::Utc::now(),
    };
    let fail = Transition {
        expected_status: vec![WorkflowStatus::Running, WorkflowStatus::AwaitingApproval],
        expected_step: None,
        status: WorkflowStatus::Failed,
        cursor: None,
        current_step: None,
        delta: StateDelta {
            errors: vec![error.clone()],
            ..StateDelta::default()
        },
        events: vec![Event::workflow(EventKind::WorkflowFailed, id, json!({}))],
        note: "failed".to_string(),
    };
    let rec = store.transition(id, fail).await.expect("fail");
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert_eq!(
        rec.cursor,
        cursor(2, &["qa"]),
        "cursor None keeps the cursor"
    );
    assert_eq!(rec.current_step, "qa", "current_step None keeps it");
    let cps = store.checkpoints(id).await.expect("checkpoints");
    let shape: Vec<_> = cps
        .iter()
        .map(|c| (c.seq, c.step, c.node.clone(), c.note.as_str(), c.status))
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, 0, None, "started", WorkflowStatus::Running),
            (2, 0, None, "advanced", WorkflowStatus::Running),
            (3, 2, None, "failed", WorkflowStatus::Failed),
        ],
        "control checkpoints belong to the step the workflow was at"
    );
    assert_eq!(cps[1].cursor, Some(cursor(2, &["qa"])));
    assert_eq!(cps[2].cursor, None, "the cursor did not move");
    let state = store.state_at(id, None).await.expect("state_at");
    assert_eq!(state.errors, vec![error]);
    assert_eq!(state.status, WorkflowStatus::Failed);
    assert_eq!(state.shared_context["skipped"], json!(true));
    assert_eq!(
        store.events(Some(id), 0, 100).await.expect("events").len(),
        3,
        "every transition's events are stored"
    );
}

/// A transition whose expected status or step does not match is a Conflict
/// naming the actual status, and changes nothing.
pub async fn transition_guard_mismatch_is_conflict_and_changes_nothing(store: Arc<dyn Store>) {
    let id = store
        .create_workflow(new_workflow("req-guard"))
        .await
        .expect("create")
        .id;
    let approve = |expected_step| Transition {
        expected_status: vec![WorkflowStatus::Running],
        expected_step,
        status: WorkflowStatus::AwaitingApproval,
        cursor: Some(cursor(3, &["deploy"])),
        current_step: Some("deploy".to_string()),
        delta: StateDelta {
            jira_tickets: vec!["SHOP-9".to_string()],
            ..StateDelta::default()
        },
        events: vec![Event::workflow(
            EventKind::WorkflowAwaitingApproval,
            id,
            json!({}),
        )],
        note: "should not happen".to_string(),
    };
    let before = snapshot(&store, id).await;
    assert_conflict(
        "expecting running on a pending workflow",
        store.transition(id, approve(None)).await,
        WorkflowStatus::Pending,
    );
    assert_eq!(
        snapshot(&store, id).await,
        before,
        "a conflicting transition changes nothing"
    );

    store
        .transition(id, start_transition(id, &["business_analyst"]))
        .await
        .expect("start");
    let before = snapshot(&store, id).await;
    assert_conflict(
        "expecting step 3 on a workflow at step 0",
        store.transition(id, approve(Some(3))).await,
        WorkflowStatus::Running,
    );
    assert_conflict(
        "starting twice",
        store
            .transition(id, start_transition(id, &["business_analyst"]))
            .await,
        WorkflowStatus::Running,
    );
    assert_eq!(
        snapshot(&store, id).await,
        before,
        "a conflicting transition changes nothing"
    );
    assert_eq!(
        all_events(&store).await.len(),
        1,
        "only the start event exists"
    );

    store
        .transition(id, approve(Some(0)))
        .await
        .expect("matching guard applies");
}

/// A transition of an unknown workflow is NotFound naming the id.
pub async fn transition_unknown_workflow_is_not_found(store: Arc<dyn Store>) {
    let unknown = WorkflowId::new();
    assert_not_found(
        "transition(unknown)",
        store
            .transition(unknown, start_transition(unknown, &["a"]))
            .await,
        unknown,
    );
    assert!(all_events(&store).await.is_empty());
}

/// Two actors racing the same guarded transition: exactly one wins.
pub async fn transitions_racing_one_wins(store: Arc<dyn Store>) {
    let id = store
        .create_workflow(new_workflow("req-race"))
        .await
        .expect("create")
        .id;
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.transition(id, start_transition(id, &["a"])).await })
        })
        .collect();
    let mut won = 0;
    for handle in handles {
        match handle.await.expect("join") {
            Ok(_) => won += 1,
            Err(Error::Conflict(_)) => {}
            Err(other) => panic!("a losing racer must get Conflict, got {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one racer wins");
    assert_eq!(store.checkpoints(id).await.expect("checkpoints").len(), 1);
    assert_eq!(
        store.events(Some(id), 0, 100).await.expect("events").len(),
        1
    );
}

/// A task commit writes its checkpoint (seq 1, 2, 3... per workflow), the
/// seed tables and the outbox, and `advance` moves the workflow.
pub async fn commit_task_writes_checkpoint_outputs_context_events(store: Arc<dyn Store>) {
    let id = started(&store, "req-commit", &["business_analyst"]).await;
    let other = started(&store, "req-commit-other", &["business_analyst"]).await;

    let ba = task(id, 0, "business_analyst");
    let ba_delta = StateDelta {
        agent_outputs: vec![output("business_analyst", "analysis", json!({"epics": 2}))],
        shared_context: BTreeMap::from([
            ("scope".to_string(), json!("v1")),
            ("ba.done".to_string(), json!(true)),
        ]),
        jira_tickets: vec!["SHOP-1".to_string()],
        ..StateDelta::default()
    };
    let ba_commit = commit_of(&ba, ba_delta.clone(), Some(advance_to(1, &["developer"])));
    assert_eq!(
        commit_ok(&store, ba_commit.clone()).await,
        2,
        "seq 1 is the start"
    );
    let rec = store.get_workflow(id).await.expect("get");
    assert_eq!(rec.cursor, cursor(1, &["developer"]));
    assert_eq!(rec.status, WorkflowStatus::Running);
    assert_eq!(rec.current_step, "developer");

    // The other workflow's history is its own.
    let other_ba = task(other, 0, "business_analyst");
    assert_eq!(
        commit_ok(&store, commit_of(&other_ba, StateDelta::default(), None)).await,
        2
    );

    let dev = task(id, 1, "developer");
    let dev_delta = StateDelta {
        agent_outputs: vec![
            output(
                "developer",
                "implementation",
                json!({"files": ["src/main.rs"]}),
            ),
            output("developer", "design", json!("hexagonal")),
        ],
        shared_context: BTreeMap::from([("scope".to_string(), json!("v2"))]),
        ..StateDelta::default()
    };
    let dev_commit = commit_of(&dev, dev_delta.clone(), Some(advance_to(2, &["qa"])));
    assert_eq!(commit_ok(&store, dev_commit.clone()).await, 3);

    let qa = task(id, 2, "qa");
    let done = Advance {
        cursor: cursor(3, &[]),
        status: WorkflowStatus::Completed,
        current_step: String::new(),
    };
    let qa_commit = commit_of(&qa, StateDelta::default(), Some(done.clone()));
    assert_eq!(commit_ok(&store, qa_commit.clone()).await, 4);

    let rec = store.get_workflow(id).await.expect("get");
    assert_eq!(rec.status, WorkflowStatus::Completed);
    assert_eq!(rec.cursor, done.cursor);
    assert_eq!(rec.current_step, "");

    let cps = store.checkpoints(id).await.expect("checkpoints");
    let shape: Vec<_> = cps
        .iter()
        .map(|c| (c.seq, c.step, c.node.as_deref(), c.attempt, c.status))
        .collect();
    assert_eq!(
        shape,
        vec![
            (1, 0, None, None, WorkflowStatus::Running),
            (
                2,
                0,
                Some("business_analyst"),
                Some(1),
                WorkflowStatus::Running
            ),
            (3, 1, Some("developer"), Some(1), WorkflowStatus::Running),
            (4, 2, Some("qa"), Some(1), WorkflowStatus::Completed),
        ]
    );
    assert_eq!(
        cps[1].delta, ba_delta,
        "checkpoints store the delta as given"
    );
    assert_eq!(cps[2].delta, dev_delta);
    assert_eq!(cps[1].cursor, Some(cursor(1, &["developer"])));
    assert_eq!(cps[1].current_step, "developer");
    assert_eq!(cps[3].cursor, Some(done.cursor));
    assert!(cps.iter().all(|c| c.workflow_id == id));
    assert!(
        cps[1..].iter().all(|c| c.note.is_empty()),
        "task checkpoints have no note"
    );

    let outputs = store.agent_outputs(id).await.expect("agent_outputs");
    let rows: Vec<_> = outputs
        .iter()
        .map(|o| {
            (
                o.agent_name.as_str(),
                o.output_type.as_str(),
                o.content.clone(),
                o.step,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("business_analyst", "analysis", json!({"epics": 2}), 0),
            (
                "developer",
                "implementation",
                json!({"files": ["src/main.rs"]}),
                1
            ),
            ("developer", "design", json!("hexagonal"), 1),
        ],
        "one agent_outputs row per output, oldest first"
    );
    assert!(outputs.iter().all(|o| o.workflow_id == id));
    let row_ids: BTreeSet<_> = outputs.iter().map(|o| o.id).collect();
    assert_eq!(row_ids.len(), outputs.len(), "row ids are unique");

    let context = store.shared_context(id).await.expect("shared_context");
    assert_eq!(
        context,
        BTreeMap::from([
            ("ba.done".to_string(), json!(true)),
            ("scope".to_string(), json!("v2")),
        ]),
        "shared_context is upserted: the later value wins"
    );
    assert!(store
        .shared_context(other)
        .await
        .expect("other context")
        .is_empty());

    let events: Vec<_> = store
        .events(Some(id), 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].kind, EventKind::WorkflowStarted);
    assert_eq!(
        &events[1..],
        &[
            ba_commit.events[0].clone(),
            dev_commit.events[0].clone(),
            qa_commit.events[0].clone(),
        ]
    );
}

/// A second commit of the same `(workflow, step, node)`, any attempt, is
/// Duplicate and writes nothing at all (not even its events).
pub async fn commit_task_duplicate_writes_nothing(store: Arc<dyn Store>) {
    let id = started(&store, "req-duplicate", &["technical_writer", "devops"]).await;
    let writer = task(id, 0, "technical_writer");
    let first = commit_of(
        &writer,
        StateDelta {
            agent_outputs: vec![output("technical_writer", "docs", json!({"pages": 3}))],
            shared_context: BTreeMap::from([("docs".to_string(), json!("first"))]),
            ..StateDelta::default()
        },
        None,
    );
    commit_ok(&store, first).await;
    let before = snapshot(&store, id).await;

    let retried = TaskId {
        attempt: 2,
        ..writer.clone()
    };
    let second = commit_of(
        &retried,
        StateDelta {
            agent_outputs: vec![output("technical_writer", "docs", json!({"pages": 99}))],
            shared_context: BTreeMap::from([("docs".to_string(), json!("second"))]),
            jira_tickets: vec!["SHOP-77".to_string()],
            ..StateDelta::default()
        },
        Some(advance_to(1, &["end"])),
    );
    assert_eq!(
        store.commit_task(second).await.expect("duplicate commit"),
        CommitOutcome::Duplicate
    );
    assert_eq!(
        snapshot(&store, id).await,
        before,
        "a duplicate writes nothing"
    );

    // A redelivery after the super-step moved on: the task's checkpoint
    // exists, so nothing may be written (the contract allows Duplicate or
    // Stale here).
    let devops = task(id, 0, "devops");
    commit_ok(
        &store,
        commit_of(
            &devops,
            StateDelta::default(),
            Some(advance_to(1, &["end"])),
        ),
    )
    .await;
    let before = snapshot(&store, id).await;
    let outcome = store
        .commit_task(commit_of(
            &devops,
            StateDelta {
                jira_tickets: vec!["SHOP-78".to_string()],
                ..StateDelta::default()
            },
            Some(advance_to(2, &["x"])),
        ))
        .await
        .expect("redelivered commit");
    assert!(
        matches!(
            outcome,
            CommitOutcome::Duplicate | CommitOutcome::Stale { .. }
        ),
        "redelivery after the step moved on: {outcome:?}"
    );
    assert_eq!(
        snapshot(&store, id).await,
        before,
        "a redelivery writes nothing"
    );
}

/// A commit for a workflow that is not running at the task's step is Stale
/// (reporting the status and step now) and writes nothing.
pub async fn commit_task_stale_writes_nothing(store: Arc<dyn Store>) {
    let check = |id: WorkflowId, step: u64, node: &'static str, status, now_step| {
        let store = store.clone();
        async move {
            let before = snapshot(&store, id).await;
            let commit = commit_of(
                &task(id, step, node),
                StateDelta {
                    agent_outputs: vec![output(node, "late", json!(1))],
                    shared_context: BTreeMap::from([("late".to_string(), json!(node))]),
                    ..StateDelta::default()
                },
                Some(advance_to(step + 1, &["next"])),
            );
            let outcome = store.commit_task(commit).await.expect("stale commit");
            assert_eq!(
                outcome,
                CommitOutcome::Stale {
                    status,
                    step: now_step
                },
                "commit of step {step} node {node}"
            );
            assert_eq!(
                snapshot(&store, id).await,
                before,
                "a stale commit writes nothing"
            );
        }
    };
    let id = store
        .create_workflow(new_workflow("req-stale"))
        .await
        .expect("create")
        .id;
    check(id, 0, "business_analyst", WorkflowStatus::Pending, 0).await;

    store
        .transition(id, start_transition(id, &["a", "b"]))
        .await
        .expect("start");
    check(id, 1, "a", WorkflowStatus::Running, 0).await;

    commit_ok(
        &store,
        commit_of(
            &task(id, 0, "a"),
            StateDelta::default(),
            Some(advance_to(1, &["c"])),
        ),
    )
    .await;
    check(id, 0, "b", WorkflowStatus::Running, 1).await;

    let cancel = Transition {
        expected_status: vec![WorkflowStatus::Running],
        expected_step: None,
        status: WorkflowStatus::Cancelled,
        cursor: None,
        current_step: None,
        delta: StateDelta::default(),
        events: vec![Event::workflow(EventKind::WorkflowCancelled, id, json!({}))],
        note: "cancelled by test".to_string(),
    };
    store.transition(id, cancel).await.expect("cancel");
    check(id, 1, "c", WorkflowStatus::Cancelled, 1).await;
}

/// Fan-out: sibling tasks of one super-step all commit at that step; only the
/// last carries `advance`, and the workflow moves only then.
pub async fn commit_task_fan_out_siblings_share_a_step(store: Arc<dyn Store>) {
    let id = started(&store, "req-fanout", &["qa"]).await;
    commit_ok(
        &store,
        commit_of(
            &task(id, 0, "qa"),
            StateDelta::default(),
            Some(advance_to(1, &["technical_writer", "devops"])),
        ),
    )
    .await;
    assert_eq!(
        store.get_workflow(id).await.expect("get").current_step,
        "technical_writer+devops"
    );

    let writer = commit_of(
        &task(id, 1, "technical_writer"),
        StateDelta {
            agent_outputs: vec![output("technical_writer", "docs", json!({"pages": 4}))],
            confluence_pages: vec!["page-1".to_string()],
            ..StateDelta::default()
        },
        None,
    );
    assert_eq!(commit_ok(&store, writer).await, 3);
    let rec = store.get_workflow(id).await.expect("get");
    assert_eq!(
        rec.cursor,
        cursor(1, &["technical_writer", "devops"]),
        "no advance, no move"
    );
    assert_eq!(rec.status, WorkflowStatus::Running);

    let devops = commit_of(
        &task(id, 1, "devops"),
        StateDelta {
            agent_outputs: vec![output("devops", "pipeline", json!({"ci": "github"}))],
            gitlab_repos: vec!["shop".to_string()],
            ..StateDelta::default()
        },
        Some(Advance {
            cursor: cursor(2, &[]),
            status: WorkflowStatus::Completed,
            current_step: String::new(),
        }),
    );
    assert_eq!(commit_ok(&store, devops).await, 4);
    let rec = store.get_workflow(id).await.expect("get");
    assert_eq!(rec.cursor.step, 2);
    assert_eq!(rec.status, WorkflowStatus::Completed);

    let cps = store.checkpoints(id).await.expect("checkpoints");
    let siblings: Vec<_> = cps
        .iter()
        .filter(|c| c.step == 1)
        .map(|c| c.node.clone())
        .collect();
    assert_eq!(
        siblings,
        vec![
            Some("technical_writer".to_string()),
            Some("devops".to_string())
        ]
    );
    assert_eq!(
        cps[2].cursor, None,
        "the first sibling did not move the cursor"
    );
    assert_eq!(cps[2].status, WorkflowStatus::Running);
    let at_one = store.state_at(id, Some(1)).await.expect("state_at(1)");
    assert_eq!(at_one.confluence_pages, vec!["page-1".to_string()]);
    assert_eq!(at_one.gitlab_repos, vec!["shop".to_string()]);
    assert!(at_one.agent_outputs.contains_key("technical_writer.docs"));
    assert!(at_one.agent_outputs.contains_key("devops.pipeline"));
}

/// A commit for an unknown workflow is NotFound naming it, and writes nothing.
pub async fn commit_task_unknown_workflow_is_not_found(store: Arc<dyn Store>) {
    let unknown = WorkflowId::new();
    let commit = commit_of(&task(unknown, 0, "a"), StateDelta::default(), None);
    assert_not_found(
        "commit_task(unknown)",
        store.commit_task(commit).await,
        unknown,
    );
    assert!(all_events(&store).await.is_empty());
}

/// `state_at(Some(step))` is the fold of the deltas up to that step;
/// `state_at(None)` is the state now; a step beyond the last is invalid input.
pub async fn state_at_is_the_fold_of_deltas(store: Arc<dyn Store>) {
    let id = started(&store, "req-state", &["business_analyst"]).await;
    let usage = |agent: &str, prompt: u64| UsageRecord {
        agent: agent.to_string(),
        provider: "scripted".to_string(),
        model: "m1".to_string(),
        calls: 1,
        prompt_tokens: prompt,
        completion_tokens: 5,
        cached_calls: 0,
        cost_usd: 0.5,
    };
    let steps = [
        (
            "business_analyst",
            StateDelta {
                agent_outputs: vec![output("business_analyst", "analysis", json!({"v": 0}))],
                shared_context: BTreeMap::from([("scope".to_string(), json!("small"))]),
                jira_tickets: vec!["SHOP-1".to_string(), "SHOP-2".to_string()],
                usage: vec![usage("business_analyst", 100)],
                ..StateDelta::default()
            },
        ),
        (
            "developer",
            StateDelta {
                agent_outputs: vec![output("developer", "implementation", json!({"v": 1}))],
                jira_tickets: vec!["SHOP-2".to_string(), "SHOP-3".to_string()],
                gitlab_repos: vec!["shop".to_string()],
                usage: vec![usage("developer", 10)],
                ..StateDelta::default()
            },
        ),
        (
            "developer",
            StateDelta {
                agent_outputs: vec![output("developer", "implementation", json!({"v": 2}))],
                shared_context: BTreeMap::from([("scope".to_string(), json!("large"))]),
                gitlab_repos: vec!["shop".to_string()],
                usage: vec![usage("developer", 20)],
                ..StateDelta::default()
            },
        ),
    ];
    for (step, (node, delta)) in steps.iter().enumerate() {
        let step = step as u64;
        let next = steps.get(step as usize + 1).map(|(n, _)| *n);
        let advance = match next {
            Some(n) => advance_to(step + 1, &[n]),
            None => Advance {
                cursor: cursor(step + 1, &[]),
                status: WorkflowStatus::Completed,
                current_step: String::new(),
            },
        };
        commit_ok(
            &store,
            commit_of(&task(id, step, node), delta.clone(), Some(advance)),
        )
        .await;
    }

    let record = store.get_workflow(id).await.expect("get");
    let checkpoints = store.checkpoints(id).await.expect("checkpoints");
    for step in 0..3u64 {
        let state = store
            .state_at(id, Some(step))
            .await
            .expect("state_at(step)");
        let folded = fold_state(&record, &checkpoints, Some(step)).expect("fold_state");
        assert_eq!(state, folded, "state_at({step}) is the fold of the deltas");
        assert_eq!(state.step, step);
    }
    let s0 = store.state_at(id, Some(0)).await.expect("state_at(0)");
    assert_eq!(s0.jira_tickets, vec!["SHOP-1", "SHOP-2"]);
    assert_eq!(
        s0.agent_outputs["business_analyst.analysis"],
        json!({"v": 0})
    );
    assert!(
        !s0.agent_outputs.contains_key("developer.implementation"),
        "step 1 not yet"
    );
    assert_eq!(s0.current_step, "developer");
    let s1 = store.state_at(id, Some(1)).await.expect("state_at(1)");
    assert_eq!(
        s1.jira_tickets,
        vec!["SHOP-1", "SHOP-2", "SHOP-3"],
        "tickets deduplicated"
    );
    assert_eq!(
        s1.agent_outputs["developer.implementation"],
        json!({"v": 1})
    );
    assert_eq!(s1.shared_context["scope"], json!("small"));
    assert_eq!(s1.usage["developer"].prompt_tokens, 10);

    let now = store.state_at(id, None).await.expect("state_at(None)");
    assert_eq!(now, fold_state(&record, &checkpoints, None).expect("fold"));
    assert_eq!(now.status, WorkflowStatus::Completed);
    assert_eq!(now.step, 3);
    assert_eq!(now.gitlab_repos, vec!["shop"], "repos deduplicated");
    assert_eq!(
        now.agent_outputs["developer.implementation"],
        json!({"v": 2}),
        "latest wins"
    );
    assert_eq!(now.shared_context["scope"], json!("large"));
    let dev = &now.usage["developer"];
    assert_eq!(
        (dev.calls, dev.prompt_tokens, dev.completion_tokens),
        (2, 30, 10),
        "usage summed"
    );
    assert!((dev.cost_usd - 1.0).abs() < 1e-9);
    assert_eq!(now.usage["business_analyst"].prompt_tokens, 100);
    assert_eq!(now.requirements, record.requirements);
    assert_eq!(now.request_id, record.request_id);

    assert_invalid_input(
        "state_at beyond the last step",
        store.state_at(id, Some(3)).await,
    );
    let unknown = WorkflowId::new();
    assert_not_found(
        "state_at(unknown)",
        store.state_at(unknown, None).await,
        unknown,
    );
}

/// `events` lists stored events by strictly increasing seq, store-wide or for
/// one workflow, after a seq, at most `limit`.
pub async fn events_are_ordered_by_seq(store: Arc<dyn Store>) {
    let a = started(&store, "req-events-a", &["n0"]).await;
    let b = started(&store, "req-events-b", &["n0"]).await;
    let mut written: Vec<Event> = Vec::new();
    for step in 0..3u64 {
        for id in [a, b] {
            let t = task(id, step, &format!("n{step}"));
            let mut commit = commit_of(
                &t,
                StateDelta::default(),
                Some(advance_to(step + 1, &[&format!("n{}", step + 1)])),
            );
            commit.events.push(
                Event::task(
                    EventKind::ContextUpdated,
                    &t,
                    json!({"keys": ["k"], "n": 1.5}),
                )
                .with_request_id(Some(
                    agentry_core::RequestId::new(format!("req-{step}")).unwrap(),
                )),
            );
            written.extend(commit.events.iter().cloned());
            commit_ok(&store, commit).await;
        }
    }
    let all = all_events(&store).await;
    assert_eq!(
        all.len(),
        2 + written.len(),
        "two start events plus the commits'"
    );
    assert_strictly_increasing("events(None)", &all);
    let stored: Vec<_> = all[2..].iter().map(|e| e.event.clone()).collect();
    assert_eq!(stored, written, "events stored as given, in commit order");
    assert!(all.iter().all(|e| !e.published));

    let of_a = store.events(Some(a), 0, 100).await.expect("events(a)");
    assert_strictly_increasing("events(a)", &of_a);
    assert_eq!(of_a.len(), 7);
    assert!(
        of_a.iter().all(|e| e.event.workflow_id == a),
        "only a's events"
    );
    let expected_a: Vec<_> = all
        .iter()
        .filter(|e| e.event.workflow_id == a)
        .cloned()
        .collect();
    assert_eq!(of_a, expected_a);

    let after = all[3].seq;
    let rest = store.events(None, after, 100).await.expect("events after");
    assert_eq!(rest, all[4..].to_vec(), "after is exclusive");
    let two = store.events(None, after, 2).await.expect("events limit");
    assert_eq!(two, all[4..6].to_vec(), "limit");
    let of_b_after = store
        .events(Some(b), after, 100)
        .await
        .expect("events(b) after");
    let expected_b: Vec<_> = all
        .iter()
        .filter(|e| e.event.workflow_id == b && e.seq > after)
        .cloned()
        .collect();
    assert_eq!(of_b_after, expected_b);
    let last = all.last().expect("events").seq;
    assert!(store
        .events(None, last, 100)
        .await
        .expect("events at end")
        .is_empty());
}

/// The outbox returns exactly the events not marked published, oldest first;
/// marking is idempotent.
pub async fn outbox_tracks_unpublished_events(store: Arc<dyn Store>) {
    let id = started(&store, "req-outbox", &["n0"]).await;
    for step in 0..4u64 {
        let t = task(id, step, "n");
        commit_ok(
            &store,
            commit_of(
                &t,
                StateDelta::default(),
                Some(advance_to(step + 1, &["n"])),
            ),
        )
        .await;
    }
    let all = all_events(&store).await;
    assert_eq!(all.len(), 5);
    assert_eq!(
        store.unpublished_events(100).await.expect("unpublished"),
        all
    );
    assert_eq!(
        store
            .unpublished_events(2)
            .await
            .expect("unpublished limit"),
        all[..2].to_vec(),
        "oldest first, at most limit"
    );

    let marked = [all[0].seq, all[2].seq];
    store.mark_published(&marked).await.expect("mark_published");
    let expect_rest = |all: &[StoredEvent]| -> Vec<StoredEvent> {
        all.iter()
            .filter(|e| !marked.contains(&e.seq))
            .cloned()
            .collect()
    };
    assert_eq!(
        store.unpublished_events(100).await.expect("unpublished"),
        expect_rest(&all),
        "exactly the unmarked events"
    );
    // Idempotent: again, with an unknown seq, and empty.
    store
        .mark_published(&marked)
        .await
        .expect("mark_published again");
    store
        .mark_published(&[all[0].seq, u64::from(u32::MAX)])
        .await
        .expect("unknown seq");
    store.mark_published(&[]).await.expect("empty");
    assert_eq!(
        store.unpublished_events(100).await.expect("unpublished"),
        expect_rest(&all)
    );
    let flags: Vec<_> = all_events(&store)
        .await
        .iter()
        .map(|e| e.published)
        .collect();
    assert_eq!(
        flags,
        vec![true, false, true, false, false],
        "events show the flag"
    );

    let all_seqs: Vec<_> = all.iter().map(|e| e.seq).collect();
    store.mark_published(&all_seqs).await.expect("mark all");
    assert!(store
        .unpublished_events(100)
        .await
        .expect("unpublished")
        .is_empty());
    let after_all: Vec<_> = all_events(&store)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        after_all,
        all.into_iter().map(|e| e.event).collect::<Vec<_>>(),
        "marking changes only the flag"
    );
}

/// Stale and duplicate commits and conflicting transitions add no events.
pub async fn rejected_writes_add_no_events(store: Arc<dyn Store>) {
    let id = started(&store, "req-noevents", &["a"]).await;
    commit_ok(
        &store,
        commit_of(&task(id, 0, "a"), StateDelta::default(), None),
    )
    .await;
    let before = all_events(&store).await;
    let unpublished = store.unpublished_events(100).await.expect("unpublished");

    let duplicate = commit_of(&task(id, 0, "a"), StateDelta::default(), None);
    assert_eq!(
        store.commit_task(duplicate).await.expect("dup"),
        CommitOutcome::Duplicate
    );
    let stale = commit_of(&task(id, 5, "a"), StateDelta::default(), None);
    assert!(matches!(
        store.commit_task(stale).await.expect("stale"),
        CommitOutcome::Stale { .. }
    ));
    let conflict = store.transition(id, start_transition(id, &["a"])).await;
    assert!(matches!(conflict, Err(Error::Conflict(_))), "{conflict:?}");

    assert_eq!(
        all_events(&store).await,
        before,
        "rejected writes add no events"
    );
    assert_eq!(
        store.unpublished_events(100).await.expect("unpublished"),
        unpublished
    );
}

/// 50 workflows x 7 steps committed concurrently: all succeed, all visible.
pub async fn concurrent_commits_on_many_workflows(store: Arc<dyn Store>) {
    const WORKFLOWS: usize = 50;
    const STEPS: u64 = 7;
    let mut ids = Vec::new();
    for i in 0..WORKFLOWS {
        ids.push(started(&store, &format!("req-many-{i}"), &["n0"]).await);
    }
    let handles: Vec<_> = ids
        .iter()
        .map(|&id| {
            let store = store.clone();
            tokio::spawn(async move {
                for step in 0..STEPS {
                    let advance = if step + 1 == STEPS {
                        Advance {
                            cursor: cursor(STEPS, &[]),
                            status: WorkflowStatus::Completed,
                            current_step: String::new(),
                        }
                    } else {
                        advance_to(step + 1, &[&format!("n{}", step + 1)])
                    };
                    let delta = StateDelta {
                        agent_outputs: vec![output("developer", "step", json!({"step": step}))],
                        shared_context: BTreeMap::from([("last".to_string(), json!(step))]),
                        ..StateDelta::default()
                    };
                    let seq = commit_ok(
                        &store,
                        commit_of(&task(id, step, &format!("n{step}")), delta, Some(advance)),
                    )
                    .await;
                    assert_eq!(seq, step + 2, "seq of {id} step {step}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a committing task panicked");
    }
    for &id in &ids {
        let snap = snapshot(&store, id).await;
        assert_eq!(snap.record.status, WorkflowStatus::Completed, "{id}");
        assert_eq!(snap.record.cursor.step, STEPS);
        assert_eq!(
            snap.checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
            (1..=STEPS + 1).collect::<Vec<_>>()
        );
        assert_eq!(snap.outputs.len(), STEPS as usize);
        assert_eq!(snap.context["last"], json!(STEPS - 1));
        assert_eq!(snap.events.len(), 1 + STEPS as usize);
    }
    let all = all_events(&store).await;
    assert_eq!(all.len(), WORKFLOWS * (1 + STEPS as usize));
    assert_strictly_increasing("events(None) after concurrent commits", &all);
    let completed = store
        .list_workflows(WorkflowQuery {
            status: Some(WorkflowStatus::Completed),
            limit: 500,
            ..WorkflowQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(completed.items.len(), WORKFLOWS);
}

/// The same task committed concurrently: exactly one Committed, the rest
/// Duplicate, one checkpoint.
pub async fn concurrent_duplicate_commits_one_wins(store: Arc<dyn Store>) {
    let id = started(&store, "req-dup-race", &["developer"]).await;
    let handles: Vec<_> = (1..=16u32)
        .map(|attempt| {
            let store = store.clone();
            let t = TaskId {
                attempt,
                ..task(id, 0, "developer")
            };
            let delta = StateDelta {
                agent_outputs: vec![output(
                    "developer",
                    "implementation",
                    json!({"attempt": attempt}),
                )],
                ..StateDelta::default()
            };
            tokio::spawn(async move {
                store
                    .commit_task(commit_of(&t, delta, Some(advance_to(1, &["qa"]))))
                    .await
            })
        })
        .collect();
    let mut committed = 0;
    for handle in handles {
        match handle.await.expect("join").expect("commit") {
            CommitOutcome::Committed { seq } => {
                assert_eq!(seq, 2);
                committed += 1;
            }
            CommitOutcome::Duplicate => {}
            other => panic!("a losing duplicate must be Duplicate, got {other:?}"),
        }
    }
    assert_eq!(committed, 1, "exactly one commit wins");
    let snap = snapshot(&store, id).await;
    assert_eq!(snap.checkpoints.len(), 2);
    assert_eq!(snap.outputs.len(), 1);
    assert_eq!(snap.events.len(), 2);
    assert_eq!(snap.record.cursor.step, 1);
}

/// Invalid calls (bad input, conflicts, stale commits, unknown ids) leave the
/// stored workflow exactly as it was.
pub async fn invalid_calls_lose_nothing(store: Arc<dyn Store>) {
    let id = started(&store, "req-intact", &["business_analyst"]).await;
    commit_ok(
        &store,
        commit_of(
            &task(id, 0, "business_analyst"),
            StateDelta {
                agent_outputs: vec![output("business_analyst", "analysis", json!({"ok": true}))],
                shared_context: BTreeMap::from([("k".to_string(), json!("v"))]),
                ..StateDelta::default()
            },
            Some(advance_to(1, &["developer"])),
        ),
    )
    .await;
    let before = snapshot(&store, id).await;
    let everything = store
        .list_workflows(WorkflowQuery::default())
        .await
        .expect("list");

    let mut blank = new_workflow("req-intact-blank");
    blank.id = id;
    blank.requirements = " ".to_string();
    assert_invalid_input("blank requirement", store.create_workflow(blank).await);
    let mut same_id = new_workflow("req-intact-other");
    same_id.id = id;
    assert!(
        store.create_workflow(same_id).await.is_err(),
        "creating a second workflow with an existing id must fail"
    );
    assert!(store
        .transition(id, start_transition(id, &["x"]))
        .await
        .is_err());
    let stale = commit_of(&task(id, 0, "developer"), StateDelta::default(), None);
    assert!(matches!(
        store.commit_task(stale).await.expect("stale"),
        CommitOutcome::Stale { .. }
    ));
    assert_invalid_input("state_at beyond", store.state_at(id, Some(99)).await);
    let unknown = WorkflowId::new();
    assert!(store
        .commit_task(commit_of(
            &task(unknown, 0, "a"),
            StateDelta::default(),
            None
        ))
        .await
        .is_err());
    store
        .mark_published(&[u64::from(u32::MAX)])
        .await
        .expect("mark unknown");

    assert_eq!(
        snapshot(&store, id).await,
        before,
        "the stored workflow is intact"
    );
    assert_eq!(
        store
            .list_workflows(WorkflowQuery::default())
            .await
            .expect("list"),
        everything,
        "no workflow appeared or changed"
    );
}

// ---------------------------------------------------------------------------
// LLM data: the call ledger and the response cache, kept by the store too.
// ---------------------------------------------------------------------------

/// Expands to one `#[tokio::test]` per behaviour of the LLM-data suite (the
/// [`agentry_core::LlmLedger`] and [`agentry_core::LlmCache`] ports). The
/// argument evaluates to a future of a fresh store implementing both.
#[macro_export]
macro_rules! llm_data_conformance_tests {
    ($make:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ledger_records_every_call_per_workflow() {
            $crate::ledger_records_every_call_per_workflow($make.await).await;
        }
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cache_serves_until_expiry_and_overwrites() {
            $crate::cache_serves_until_expiry_and_overwrites($make.await).await;
        }
    };
}

fn llm_call(
    workflow: WorkflowId,
    role: agentry_core::AgentRole,
    turn: u32,
) -> agentry_core::LlmCall {
    agentry_core::LlmCall {
        workflow_id: workflow,
        step: 1,
        node: role.as_str().to_string(),
        role,
        attempt: 1,
        turn,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        prompt_tokens: 100 + u64::from(turn),
        completion_tokens: 20,
        cached: turn == 2,
        cost_usd: if turn == 2 { 0.0 } else { 0.25 },
        latency_ms: 12,
        finish_reason: "stop".into(),
        request_id: Some(agentry_core::RequestId::new("req-1").unwrap()),
        at: chrono::Utc::now(),
    }
}

/// Every recorded call reads back whole, in record order, only under its
/// workflow; spend sums cost and tokens per role, cached calls adding no
/// tokens.
pub async fn ledger_records_every_call_per_workflow<L: agentry_core::LlmLedger + ?Sized>(
    ledger: Arc<L>,
) {
    use agentry_core::AgentRole;
    let a = WorkflowId::new();
    let b = WorkflowId::new();
    let calls = [
        llm_call(a, AgentRole::Developer, 0),
        llm_call(a, AgentRole::Developer, 1),
        llm_call(a, AgentRole::Qa, 2),
        llm_call(b, AgentRole::Qa, 0),
    ];
    for call in &calls {
        ledger.record_call(call).await.expect("record_call");
    }
    let back = ledger.calls(a).await.expect("calls");
    assert_eq!(back, calls[..3].to_vec(), "calls of workflow a, in order");
    assert_eq!(ledger.calls(b).await.expect("calls").len(), 1);
    assert!(ledger
        .calls(WorkflowId::new())
        .await
        .expect("calls")
        .is_empty());
    let (total, roles) = ledger.spend(a).await.expect("spend");
    assert!((total.cost_usd - 0.5).abs() < 1e-9, "{total:?}");
    assert_eq!(
        total.tokens,
        100 + 20 + 101 + 20,
        "a cached call adds no tokens"
    );
    assert_eq!(roles["developer"].tokens, 241);
    assert_eq!(roles["qa"].tokens, 0);
}

/// A stored response is served until its TTL runs out; a second put under
/// the same key replaces it; unknown keys miss.
pub async fn cache_serves_until_expiry_and_overwrites<C: agentry_core::LlmCache + ?Sized>(
    cache: Arc<C>,
) {
    use std::time::Duration;
    let response = |content: &str| agentry_core::ChatResponse {
        content: content.into(),
        tool_calls: vec![agentry_core::ToolCall {
            id: "call_1".into(),
            name: "write_file".into(),
            arguments: json!({"path": "a.py"}),
        }],
        usage: agentry_core::Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached: false,
        },
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        finish_reason: "tool_calls".into(),
    };
    assert_eq!(cache.get("k1").await.expect("get"), None);
    cache
        .put("k1", &response("one"), Duration::from_secs(60))
        .await
        .expect("put");
    assert_eq!(cache.get("k1").await.expect("get"), Some(response("one")));
    cache
        .put("k1", &response("two"), Duration::from_secs(60))
        .await
        .expect("put again");
    assert_eq!(cache.get("k1").await.expect("get"), Some(response("two")));
    cache
        .put("short", &response("brief"), Duration::from_millis(50))
        .await
        .expect("put short");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cache.get("short").await.expect("get").is_some() {
        assert!(std::time::Instant::now() < deadline, "entry never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.get("k1").await.expect("get"), Some(response("two")));
    assert_eq!(cache.get("k2").await.expect("get"), None);
}

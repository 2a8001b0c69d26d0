//! Regression tests, each named after what broke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agentry_bus_inproc::InprocBus;
use agentry_core::{
    ArtifactOwner, CommitOutcome, NodeContext, NodeOutput, NodeRunner, Result, Store, TaskCommit,
    Transition, WorkflowStatus,
};
use agentry_engine::{Engine, Submission, WorkflowDefinition};
use agentry_store_memory::MemoryStore;
use async_trait::async_trait;
use serde_json::json;
use support::faults::{FaultyStore, LosesOneReply};
use support::scripted::Harness;
use support::{config, run_to_end, submission, wait_status, wait_terminal, Recorder};

const GATED: &str = r#"
name = "gated"
start = ["a"]
approval_before = ["b"]
[nodes.a]
agent = "developer"
[nodes.b]
agent = "qa"
[[edges]]
from = "a"
to = ["b"]
[[edges]]
from = "b"
to = ["end"]
"#;

#[tokio::test]
async fn resume_after_cancelling_a_workflow_awaiting_approval_waits_for_approval_again() {
    let Harness {
        runner,
        engine,
        workers: _workers,
        ..
    } = Harness::new(Recorder::default()).await;
    let rec = engine.submit(submission(GATED)).await.unwrap();
    assert_eq!(
        run_to_end(&engine, rec.id).await.status,
        WorkflowStatus::AwaitingApproval
    );

    engine.cancel(rec.id, "not now").await.unwrap();
    let resumed = run_to_end(&engine, rec.id).await;
    assert_eq!(resumed.status, WorkflowStatus::AwaitingApproval);
    assert_eq!(runner.runs("b"), 0, "b ran without an approval");

    engine.approve(rec.id, "go").await.unwrap();
    assert_eq!(
        run_to_end(&engine, rec.id).await.status,
        WorkflowStatus::Completed
    );
    assert_eq!(runner.runs("b"), 1);
}

#[tokio::test]
async fn a_lost_reply_to_an_advancing_commit_does_not_stall_the_workflow() {
    let store = FaultyStore::new(LosesOneReply {
        armed: AtomicBool::new(true),
    });
    let runner = Arc::new(Recorder::default());
    let engine = Engine::new(
        store.clone(),
        Arc::new(InprocBus::new()),
        runner.clone(),
        config(),
    );
    let _workers = engine.start_workers(Engine::all_queues(), 2).await;
    let rec = engine
        .submit(submission(&GATED.replace("approval_before = [\"b\"]", "")))
        .await
        .unwrap();
    let done = run_to_end(&engine, rec.id).await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert!(
        !store.faults.armed.load(Ordering::SeqCst),
        "the reply was lost once"
    );
    assert_eq!((runner.runs("a"), runner.runs("b")), (1, 1));
}

const SIBLINGS: &str = r#"
name = "siblings"
start = ["x", "y"]
[nodes.x]
agent = "developer"
[nodes.y]
agent = "qa"
[nodes.z]
agent = "devops"
[[edges]]
from = ["x", "y"]
to = ["z"]
when = "context.k == 'from x'"
[[edges]]
from = ["x", "y"]
to = ["end"]
when = "context.k != 'from x'"
"#;

/// After a crash between two siblings' commits and the advance, the
/// recovery advance merged the siblings in pending order, while the store
/// folds them in commit order: routing saw a value that is not the stored
/// one.
#[tokio::test]
async fn a_recovered_advance_routes_on_the_siblings_merged_in_commit_order() {
    use agentry_core::{Cursor, StateDelta, TaskId, TaskKey};

    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Recorder::default());
    let engine = Engine::new(
        store.clone(),
        Arc::new(InprocBus::new()),
        runner.clone(),
        config(),
    );
    let rec = engine.submit(submission(SIBLINGS)).await.unwrap();
    store
        .transition(
            rec.id,
            Transition {
                expected_status: vec![WorkflowStatus::Pending],
                expected_step: Some(0),
                status: WorkflowStatus::Running,
                cursor: Some(Cursor {
                    step: 0,
                    pending: vec!["x".into(), "y".into()],
                    ..Cursor::default()
                }),
                current_step: Some("x+y".into()),
                delta: StateDelta::default(),
                events: vec![],
                note: "started".into(),
            },
        )
        .await
        .unwrap();
    // y commits first, x last: the stored value of `k` is x's.
    for (node, value) in [("y", "from y"), ("x", "from x")] {
        let commit = TaskCommit {
            task: TaskId::new(TaskKey::new(rec.id, 0, node), 1),
            delta: StateDelta {
                shared_context: BTreeMap::from([("k".to_string(), json!(value))]),
                ..StateDelta::default()
            },
            events: vec![],
            advance: None,
        };
        assert!(matches!(
            store.commit_task(commit).await.unwrap(),
            CommitOutcome::Committed { .. }
        ));
    }
    // The process "crashed" before anyone advanced; a new run repairs it.
    let _workers = engine.start_workers(Engine::all_queues(), 2).await;
    let done = run_to_end(&engine, rec.id).await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    let stored = store.state_at(rec.id, None).await.unwrap();
    assert_eq!(stored.shared_context["k"], json!("from x"));
    assert_eq!(runner.runs("z"), 1, "routing must see the stored value");
}

#[tokio::test]
async fn a_detached_start_is_carried_to_the_end_by_workers_alone() {
    let Harness {
        store,
        runner: recorder,
        engine,
        workers: _workers,
        ..
    } = Harness::new(Recorder::default()).await;
    let bench = WorkflowDefinition::bench().unwrap();
    let record = engine
        .submit(Submission {
            definition: bench,
            ..submission(GATED)
        })
        .await
        .unwrap();
    let started = engine.start_detached(record.id).await.unwrap();
    assert_eq!(started.status, WorkflowStatus::Running);
    // Nobody runs `Engine::run`: each commit dispatches the next step.
    wait_status(store.as_ref(), record.id, WorkflowStatus::Completed).await;
    assert_eq!(recorder.ran().len(), 7);
    // A second start of a running or finished workflow changes nothing.
    let again = engine.start_detached(record.id).await.unwrap();
    assert_eq!(again.status, WorkflowStatus::Completed);
}

#[tokio::test]
async fn a_workflow_cancelled_before_its_run_starts_stays_cancelled() {
    let Harness {
        store,
        runner: recorder,
        engine,
        workers: _workers,
        ..
    } = Harness::new(Recorder::default()).await;
    let record = engine.submit(submission(GATED)).await.unwrap();
    // The cancel lands between submit and run (another process, or an API
    // call racing the background start).
    let control = Engine::new(
        store.clone(),
        Arc::new(InprocBus::new()),
        recorder.clone(),
        config(),
    );
    control.cancel(record.id, "changed my mind").await.unwrap();
    let after = run_to_end(&engine, record.id).await;
    assert_eq!(after.status, WorkflowStatus::Cancelled);
    assert_eq!(recorder.runs("a"), 0, "a cancelled workflow ran a node");
}

/// Records the owner each node ran for.
#[derive(Default)]
struct OwnerRecorder(Mutex<Vec<(String, ArtifactOwner)>>);

#[async_trait]
impl NodeRunner for OwnerRecorder {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        self.0
            .lock()
            .unwrap()
            .push((ctx.task.key.node.clone(), ctx.owner.clone()));
        Ok(NodeOutput::default())
    }
}

const TWO_NODES: &str = r#"
name = "two"
start = ["a"]
[nodes.a]
agent = "developer"
[nodes.b]
agent = "qa"
[[edges]]
from = "a"
to = ["b"]
[[edges]]
from = "b"
to = ["end"]
"#;

/// Regression: nodes ran with no notion of whose workflow it was, so every
/// tenant's agents shared one tracker, wiki and code host. The owner now
/// comes from the stored workflow, also on a worker engine that did not
/// submit or dispatch it (the distributed mode), and a stored tenant that is
/// not a tenant name fails the node with the name in the error.
#[tokio::test]
async fn nodes_act_for_the_stored_tenant_on_a_worker_that_did_not_dispatch() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(InprocBus::new());
    let gateway = Engine::new(
        store.clone(),
        bus.clone(),
        Arc::new(Recorder::default()),
        config(),
    );
    let runner = Arc::new(OwnerRecorder::default());
    let worker = Engine::new(store.clone(), bus, runner.clone(), config());
    let _workers = worker.start_workers(Engine::all_queues(), 2).await;

    let mut ids = Vec::new();
    for tenant in [Some("acme"), None, Some("bad\ntenant")] {
        let rec = gateway
            .submit(Submission {
                tenant: tenant.map(str::to_string),
                ..submission(TWO_NODES)
            })
            .await
            .unwrap();
        gateway.start_detached(rec.id).await.unwrap();
        ids.push(rec.id);
    }
    assert_eq!(
        wait_terminal(store.as_ref(), &ids).await,
        [
            WorkflowStatus::Completed,
            WorkflowStatus::Completed,
            WorkflowStatus::Failed
        ]
    );
    let mut seen = runner.0.lock().unwrap().clone();
    seen.sort();
    let acme = ArtifactOwner::tenant("acme").unwrap();
    assert_eq!(
        seen,
        [
            ("a".to_string(), ArtifactOwner::Cli),
            ("a".to_string(), acme.clone()),
            ("b".to_string(), ArtifactOwner::Cli),
            ("b".to_string(), acme),
        ]
    );
    let failed = store.state_at(ids[2], None).await.unwrap();
    let error = &failed.errors.last().unwrap().message;
    assert!(error.contains("tenant `bad\\ntenant`"), "{error}");
}

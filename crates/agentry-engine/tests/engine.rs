#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The engine's behaviour, end to end: MemoryStore + InprocBus + a scripted
//! NodeRunner whose behaviour per node is a table.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_bus_inproc::InprocBus;
use agentry_core::{
    Bus, Cursor, Error, ErrorClass, Event, EventKind, StateDelta, Store, TaskCommit, TaskId,
    TaskKey, TaskMessage, Transition, WorkflowStatus,
};
use agentry_engine::{
    bench_engine, BenchConfig, Engine, EngineConfig, WorkflowDefinition, DEFAULT_WORKFLOW,
};
use agentry_store_memory::MemoryStore;
use futures::StreamExt;
use serde_json::json;
use support::scripted::{qa_passes_from, sleep, writes, Behaviour, Harness, Scripted};
use support::{config, definition, eventually};

// ------------------------------------------------------------ harness

/// The settings of these tests: a stalled step is checked after 200 ms.
fn scripted_config() -> EngineConfig {
    EngineConfig {
        stall_check_after: Duration::from_millis(200),
        ..config()
    }
}

/// A scripted engine with four workers on `store`.
async fn harness_on(store: Arc<MemoryStore>, script: Vec<(&str, Behaviour)>) -> Harness<Scripted> {
    Harness::on(store, Scripted::new(script), scripted_config(), 4).await
}

/// A scripted engine with four workers on a fresh store.
async fn harness(script: Vec<(&str, Behaviour)>) -> Harness<Scripted> {
    harness_on(Arc::new(MemoryStore::new()), script).await
}

fn def(text: &str) -> WorkflowDefinition {
    definition(text)
}

/// The default SDLC file with textual replacements.
fn sdlc_with(replacements: &[(&str, &str)]) -> WorkflowDefinition {
    let mut text = DEFAULT_WORKFLOW.to_string();
    for (from, to) in replacements {
        assert!(text.contains(from), "sdlc.toml has no `{from}`");
        text = text.replace(from, to);
    }
    def(&text)
}

fn nodes(h: &Harness<Scripted>) -> Vec<String> {
    h.runner.nodes()
}

// ------------------------------------------------------------ routing

const BRANCH: &str = r#"
name = "branch"
start = ["a"]
[nodes.a]
agent = "business_analyst"
[nodes.b]
agent = "developer"
[nodes.c]
agent = "qa"
[[edges]]
from = "a"
to = ["b"]
when = "context.go == 'b'"
[[edges]]
from = "a"
to = "c"
when = "context.go == 'c'"
[[edges]]
from = ["b"]
to = ["end"]
[[edges]]
from = "c"
to = ["end"]
"#;

#[tokio::test]
async fn conditional_edge_is_taken_per_when() {
    async fn check(go: &'static str, expected: &[&str]) {
        let h = harness(vec![("a", writes(vec![vec![("go", json!(go))]]))]).await;
        let (rec, _) = h.run(def(BRANCH)).await;
        assert_eq!(rec.status, WorkflowStatus::Completed);
        assert_eq!(nodes(&h), expected);
    }
    check("b", &["a", "b"]).await;
    check("c", &["a", "c"]).await;
    // Nothing matched: the workflow fails and says which node had no edge.
    let h = harness(vec![("a", writes(vec![vec![("go", json!("x"))]]))]).await;
    let (rec, st) = h.run(def(BRANCH)).await;
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert_eq!(st.errors[0].message, "no edge from `a` matched");
}

#[tokio::test]
async fn sdlc_happy_path_runs_every_role_once() {
    let h = harness(vec![("qa", qa_passes_from(0))]).await;
    let (rec, st) = h.run(WorkflowDefinition::default_sdlc().unwrap()).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    let mut ran = nodes(&h);
    ran[4..].sort();
    assert_eq!(
        ran,
        [
            "business",
            "developer",
            "qa",
            "mutation",
            "devops",
            "technical_writer"
        ]
    );
    // The check node ran on its stated queue, as a check, not an agent.
    let mutation = h
        .runner
        .runs()
        .into_iter()
        .find(|r| r.node == "mutation")
        .unwrap();
    assert_eq!(mutation.check.as_deref(), Some("mutation_score"));
    assert!(st.agent_outputs.contains_key("devops.result"));
    let kinds = h.event_kinds(rec.id).await;
    assert_eq!(kinds.first(), Some(&EventKind::WorkflowStarted));
    assert_eq!(kinds.last(), Some(&EventKind::WorkflowCompleted));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::StepCompleted)
            .count(),
        5
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::TaskCompleted)
            .count(),
        6
    );
    assert!(kinds.contains(&EventKind::ContextUpdated));
    // Every stored event reached the bus through the relay.
    eventually("outbox drained", || {
        futures::executor::block_on(h.store.unpublished_events(0))
            .unwrap()
            .is_empty()
    })
    .await;
}

// ------------------------------------------------------------ QA loop

#[tokio::test]
async fn qa_loop_is_bounded() {
    // Fails twice, then passes: three developer rounds, completed.
    let h = harness(vec![("qa", qa_passes_from(2))]).await;
    let (rec, _) = h.run(WorkflowDefinition::default_sdlc().unwrap()).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    assert_eq!(rec.cursor.visits["developer"], 3);
    assert_eq!(rec.cursor.visits["qa"], 3);
    assert_eq!(h.runner.count("technical_writer"), 1);

    // Always fails: the fail edge's reason, filled, is the recorded error.
    let h = harness(vec![("qa", qa_passes_from(99))]).await;
    let (rec, st) = h.run(WorkflowDefinition::default_sdlc().unwrap()).await;
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert_eq!(h.runner.count("developer"), 3);
    assert_eq!(st.errors.len(), 1);
    assert_eq!(
        st.errors[0].message,
        "generated tests still fail after 3 developer rounds"
    );
    assert_eq!(st.errors[0].node.as_deref(), Some("qa"));
    assert!(h
        .event_kinds(rec.id)
        .await
        .contains(&EventKind::WorkflowFailed));
}

#[tokio::test]
async fn max_visits_bound_fails_the_workflow() {
    let text = r#"
name = "loop"
start = ["a"]
[nodes.a]
agent = "developer"
max_visits = 2
[[edges]]
from = "a"
to = ["a"]
"#;
    let h = harness(vec![]).await;
    let (rec, st) = h.run(def(text)).await;
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert_eq!(h.runner.count("a"), 2);
    assert_eq!(
        st.errors[0].message,
        "node `a` would run more than its max_visits = 2 (it ran 2 times)"
    );
}

// ------------------------------------------------------------ fan-out / join

#[tokio::test]
async fn fan_out_runs_concurrently_and_join_fires_once() {
    let h = harness(vec![
        ("qa", qa_passes_from(0)),
        ("technical_writer", sleep(150)),
        ("devops", sleep(150)),
    ])
    .await;
    let (rec, _) = h.run(WorkflowDefinition::default_sdlc().unwrap()).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    let runs = h.runner.runs();
    let tw = runs.iter().find(|r| r.node == "technical_writer").unwrap();
    let dv = runs.iter().find(|r| r.node == "devops").unwrap();
    assert_eq!(tw.step, dv.step, "same super-step");
    assert!(
        tw.start < dv.end.unwrap() && dv.start < tw.end.unwrap(),
        "technical_writer and devops ran one after the other"
    );
    assert_eq!(h.runner.count("technical_writer"), 1);
    assert_eq!(h.runner.count("devops"), 1);
    assert!(
        rec.cursor.joins.is_empty(),
        "the join fired and was cleared"
    );
    let kinds = h.event_kinds(rec.id).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::WorkflowCompleted)
            .count(),
        1
    );
}

// ------------------------------------------------------------ retries, errors, timeouts

const SINGLE: &str = r#"
name = "single"
start = ["a"]
[retry]
max_attempts = 4
initial_backoff_ms = 40
max_backoff_ms = 1000
multiplier = 2.0
jitter = 0.0
[nodes.a]
agent = "developer"
[[edges]]
from = "a"
to = ["end"]
"#;

#[tokio::test]
async fn transient_errors_are_retried_with_growing_backoff() {
    let h = harness(vec![(
        "a",
        Behaviour {
            transient: 2,
            ..Default::default()
        },
    )])
    .await;
    let mut events = h.engine.subscribe();
    let (rec, st) = h.run(def(SINGLE)).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    assert!(st.errors.is_empty());
    let runs = h.runner.runs();
    let attempts: Vec<u32> = runs.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let gap1 = runs[1].start - runs[0].start;
    let gap2 = runs[2].start - runs[1].start;
    assert!(gap1 >= Duration::from_millis(40), "{gap1:?}");
    assert!(
        gap2 >= Duration::from_millis(80) && gap2 > gap1,
        "{gap1:?} then {gap2:?}"
    );
    // Failed attempts are published (not stored), saying they will retry.
    let mut failed = vec![];
    let mut progress = vec![];
    while failed.len() < 2 || progress.len() < 3 {
        let e: Event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap();
        match e.kind {
            EventKind::TaskFailed => failed.push(e),
            EventKind::AgentProgress => progress.push(e),
            _ => {}
        }
    }
    assert_eq!(progress[0].payload["message"], json!("running a"));
    assert!(
        !h.event_kinds(rec.id)
            .await
            .contains(&EventKind::AgentProgress),
        "progress is never stored"
    );
    assert_eq!(failed[0].payload["will_retry"], json!(true));
    assert_eq!(failed[0].payload["class"], json!("transient"));
    assert_eq!(failed[1].payload["attempt"], json!(2));
    assert!(!h.event_kinds(rec.id).await.contains(&EventKind::TaskFailed));
    // The committed checkpoint records the attempt that succeeded.
    let cps = h.store.checkpoints(rec.id).await.unwrap();
    assert_eq!(
        cps.iter().find(|c| c.node.is_some()).unwrap().attempt,
        Some(3)
    );
}

#[tokio::test]
async fn permanent_error_fails_the_workflow_with_the_error() {
    let h = harness(vec![(
        "a",
        Behaviour {
            permanent: Some("repository is archived"),
            ..Default::default()
        },
    )])
    .await;
    let (rec, st) = h.run(def(SINGLE)).await;
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert_eq!(h.runner.count("a"), 1, "permanent errors are not retried");
    let e = &st.errors[0];
    assert_eq!(
        (e.class, e.message.as_str(), e.node.as_deref(), e.attempt),
        (
            ErrorClass::Permanent,
            "repository is archived",
            Some("a"),
            1
        )
    );
    let failed = h
        .store
        .events(Some(rec.id), 0, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event.kind == EventKind::WorkflowFailed)
        .expect("workflow.failed stored");
    assert_eq!(
        failed.event.payload["error"],
        json!("repository is archived")
    );
}

#[tokio::test]
async fn node_timeout_fails_with_a_timeout_error() {
    let text = SINGLE
        .replace("max_attempts = 4", "max_attempts = 1")
        .replace(
            "agent = \"developer\"",
            "agent = \"developer\"\ntimeout_ms = 50",
        );
    let h = harness(vec![("a", sleep(5_000))]).await;
    let t0 = Instant::now();
    let (rec, st) = h.run(def(&text)).await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(rec.status, WorkflowStatus::Failed);
    assert_eq!(st.errors[0].class, ErrorClass::Transient);
    assert_eq!(st.errors[0].message, "timed out after 50 ms: node `a`");
    // Fractional seconds work too.
    assert_eq!(
        def(&SINGLE.replace(
            "agent = \"developer\"",
            "agent = \"developer\"\ntimeout_s = 0.05"
        ))
        .node("a")
        .unwrap()
        .timeout,
        Some(Duration::from_millis(50))
    );
}

// ------------------------------------------------------------ approvals

fn approval_sdlc() -> WorkflowDefinition {
    sdlc_with(&[("approval_before = []", "approval_before = [\"developer\"]")])
}

#[tokio::test]
async fn approval_then_resume_completes() {
    let h = harness(vec![("qa", qa_passes_from(0))]).await;
    let (rec, _) = h.run(approval_sdlc()).await;
    assert_eq!(rec.status, WorkflowStatus::AwaitingApproval);
    assert_eq!(rec.cursor.pending, ["developer"]);
    assert_eq!(nodes(&h), ["business"]);
    let approved = h.engine.approve(rec.id, "looks right").await.unwrap();
    assert_eq!(approved.status, WorkflowStatus::Running);
    let (rec, _) = h.run_id(rec.id).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    let notes: Vec<String> = h
        .store
        .checkpoints(rec.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(notes, ["started", "approved: looks right"]);
    // Approving again is a conflict that names the status.
    let err = h.engine.approve(rec.id, "").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("is completed, not awaiting approval"),
        "{err}"
    );
}

#[tokio::test]
async fn approval_edge_interrupts_and_rejection_records_the_reason() {
    let text = BRANCH.replace(
        "to = \"c\"",
        "to = \"c\"\napproval = \"run c? go={context.go}\"",
    );
    let h = harness(vec![("a", writes(vec![vec![("go", json!("c"))]]))]).await;
    let (rec, _) = h.run(def(&text)).await;
    assert_eq!(rec.status, WorkflowStatus::AwaitingApproval);
    let awaiting = h
        .store
        .events(Some(rec.id), 0, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event.kind == EventKind::WorkflowAwaitingApproval)
        .unwrap();
    assert_eq!(awaiting.event.payload["reason"], json!("run c? go=c"));
    let rej = h.engine.reject(rec.id, "not now").await.unwrap();
    assert_eq!(rej.status, WorkflowStatus::Rejected);
    let st = h.store.state_at(rec.id, None).await.unwrap();
    assert_eq!(st.errors[0].message, "rejected: not now");
    assert!(h
        .event_kinds(rec.id)
        .await
        .contains(&EventKind::WorkflowRejected));
    // run on a rejected workflow returns it as it is.
    let (again, _) = h.run_id(rec.id).await;
    assert_eq!(again.status, WorkflowStatus::Rejected);
    assert_eq!(h.runner.count("c"), 0);
}

// ------------------------------------------------------------ cancel

#[tokio::test]
async fn cancel_aborts_the_running_node_and_run_returns() {
    let h = harness(vec![("a", sleep(30_000))]).await;
    let rec = h.submit(def(SINGLE)).await;
    let engine = h.engine.clone();
    let run = tokio::spawn(async move { engine.run(rec.id).await });
    eventually("node a started", || h.runner.runs().len() == 1).await;
    let cancelled = h.engine.cancel(rec.id, "changed my mind").await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    let ran = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ran.status, WorkflowStatus::Cancelled);
    eventually("node a aborted", || h.runner.runs()[0].aborted).await;
    assert!(h.task_checkpoints(rec.id).await.is_empty());
    // A second cancel is a conflict naming the status.
    let err = h.engine.cancel(rec.id, "again").await.unwrap_err();
    assert!(err.to_string().contains("is cancelled"), "{err}");
}

/// Two nodes in a row, both developers.
const CHAIN: &str = r#"
name = "chain"
start = ["a"]
[nodes.a]
agent = "developer"
[nodes.b]
agent = "developer"
[[edges]]
from = "a"
to = ["b"]
[[edges]]
from = "b"
to = ["end"]
"#;

#[tokio::test]
async fn cancel_by_another_process_ends_the_run_and_commits_nothing_more() {
    let store = Arc::new(MemoryStore::new());
    let h = harness_on(store.clone(), vec![("a", sleep(300))]).await;
    // Another process: its own engine and bus on the same store, no workers.
    let other = Engine::new(
        store.clone(),
        Arc::new(InprocBus::new()),
        h.runner.clone(),
        config(),
    );
    let rec = h.submit(def(CHAIN)).await;
    let engine = h.engine.clone();
    let run = tokio::spawn(async move { engine.run(rec.id).await });
    eventually("node a started", || h.runner.runs().len() == 1).await;
    let cancelled = other.cancel(rec.id, "from elsewhere").await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    let ran = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run notices the cancel by its poll")
        .unwrap()
        .unwrap();
    assert_eq!(ran.status, WorkflowStatus::Cancelled);
    // Node a finishes (this process's token was never cancelled), but its
    // commit is refused: nothing is written and b never runs.
    eventually("node a finished", || {
        h.runner
            .runs()
            .first()
            .is_some_and(|r| r.end.is_some() && !r.aborted)
    })
    .await;
    // Its commit follows within milliseconds; watch that it never lands.
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        assert!(h.task_checkpoints(rec.id).await.is_empty());
        assert_eq!(h.runner.count("b"), 0, "b ran after the cancel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.get_workflow(rec.id).await.unwrap().status,
        WorkflowStatus::Cancelled
    );
}

// ------------------------------------------------------------ crash and resume

#[tokio::test]
async fn resume_after_a_crash_runs_each_node_exactly_once() {
    let store = Arc::new(MemoryStore::new());
    // First process: developer hangs; we kill everything mid-step.
    let h1 = harness_on(
        store.clone(),
        vec![("qa", qa_passes_from(0)), ("developer", sleep(30_000))],
    )
    .await;
    let rec = h1.submit(WorkflowDefinition::default_sdlc().unwrap()).await;
    let engine = h1.engine.clone();
    let run = tokio::spawn(async move { engine.run(rec.id).await });
    eventually("developer started", || {
        h1.runner.runs().iter().any(|r| r.node == "developer")
    })
    .await;
    run.abort();
    h1.workers.abort();
    drop(h1);
    assert_eq!(
        store.get_workflow(rec.id).await.unwrap().status,
        WorkflowStatus::Running
    );

    // Second process on the same store.
    let h2 = harness_on(store.clone(), vec![("qa", qa_passes_from(0))]).await;
    let (done, _) = h2.run_id(rec.id).await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    let mut cps = h2.task_checkpoints(rec.id).await;
    let total = cps.len();
    cps.dedup();
    assert_eq!(cps.len(), total, "a node committed twice: {cps:?}");
    let names: Vec<&str> = cps.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names.len(), 6);
    assert_eq!(&names[..4], ["business", "developer", "qa", "mutation"]);
    assert_eq!(nodes(&h2)[0], "developer", "business was not re-run");
}

#[tokio::test]
async fn resume_applies_an_advance_lost_between_sibling_commits() {
    // Simulates a crash after both fan-out siblings committed but before
    // anyone advanced the cursor.
    let h = harness(vec![]).await;
    let rec = h.submit(WorkflowDefinition::default_sdlc().unwrap()).await;
    let cursor = Cursor {
        step: 4,
        pending: vec!["technical_writer".into(), "devops".into()],
        visits: BTreeMap::from([
            ("business".into(), 1),
            ("developer".into(), 1),
            ("qa".into(), 1),
        ]),
        ..Cursor::default()
    };
    h.store
        .transition(
            rec.id,
            Transition {
                expected_status: vec![WorkflowStatus::Pending],
                expected_step: None,
                status: WorkflowStatus::Running,
                cursor: Some(cursor),
                current_step: Some("technical_writer+devops".into()),
                delta: StateDelta::default(),
                events: vec![],
                note: "test setup".into(),
            },
        )
        .await
        .unwrap();
    for node in ["technical_writer", "devops"] {
        h.store
            .commit_task(TaskCommit {
                task: TaskId::new(TaskKey::new(rec.id, 4, node), 1),
                delta: StateDelta::default(),
                events: vec![],
                advance: None,
            })
            .await
            .unwrap();
    }
    let (done, _) = h.run_id(rec.id).await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(done.cursor.step, 5);
    assert!(h.runner.runs().is_empty(), "nothing re-ran");
}

#[tokio::test]
async fn resume_of_a_failed_workflow_retries_the_failed_node() {
    let h = harness(vec![(
        "a",
        Behaviour {
            transient: 1,
            ..Default::default()
        },
    )])
    .await;
    let text = SINGLE.replace("max_attempts = 4", "max_attempts = 1");
    let (rec, _) = h.run(def(&text)).await;
    assert_eq!(rec.status, WorkflowStatus::Failed);
    // The script fails attempt 1 of the task only; a resume runs it again.
    let (rec, st) = h.run_id(rec.id).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    assert_eq!(
        st.errors.len(),
        1,
        "the earlier failure stays in the history"
    );
    assert_eq!(h.task_checkpoints(rec.id).await, [(0, "a".to_string())]);
}

// ------------------------------------------------------------ history

#[tokio::test]
async fn history_lists_every_step_and_state_at_replays_it() {
    let h = harness(vec![("qa", qa_passes_from(1))]).await;
    let (rec, now) = h.run(WorkflowDefinition::default_sdlc().unwrap()).await;
    assert_eq!(rec.status, WorkflowStatus::Completed);
    let steps: Vec<(u64, String)> = h.task_checkpoints(rec.id).await;
    let expected = [
        (0, "business"),
        (1, "developer"),
        (2, "qa"),
        (3, "developer"),
        (4, "qa"),
    ];
    for (i, (s, n)) in expected.iter().enumerate() {
        assert_eq!(steps[i], (*s, n.to_string()));
    }
    let seqs: Vec<u64> = h
        .store
        .checkpoints(rec.id)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let at0 = h.store.state_at(rec.id, Some(0)).await.unwrap();
    assert_eq!(
        at0.agent_outputs.keys().collect::<Vec<_>>(),
        ["business.result"]
    );
    let at2 = h.store.state_at(rec.id, Some(2)).await.unwrap();
    assert_eq!(at2.shared_context["qa.passed"], json!(false));
    assert_eq!(at2.agent_outputs["developer.result"], json!({"visit": 0}));
    assert_eq!(now.shared_context["qa.passed"], json!(true));
    assert_eq!(now.agent_outputs["developer.result"], json!({"visit": 1}));
    // Nodes saw their visit number.
    let dev_visits: Vec<u32> = h
        .runner
        .runs()
        .iter()
        .filter(|r| r.node == "developer")
        .map(|r| r.visit)
        .collect();
    assert_eq!(dev_visits, [0, 1]);
}

// ------------------------------------------------------------ duplicates

#[tokio::test]
async fn duplicate_delivery_is_committed_once() {
    let h = harness(vec![("a", sleep(20))]).await;
    let rec = h.submit(def(SINGLE)).await;
    h.store
        .transition(
            rec.id,
            Transition {
                expected_status: vec![WorkflowStatus::Pending],
                expected_step: None,
                status: WorkflowStatus::Running,
                cursor: Some(Cursor {
                    step: 0,
                    pending: vec!["a".into()],
                    ..Cursor::default()
                }),
                current_step: Some("a".into()),
                delta: StateDelta::default(),
                events: vec![],
                note: "test setup".into(),
            },
        )
        .await
        .unwrap();
    let msg = TaskMessage {
        task: TaskId::new(TaskKey::new(rec.id, 0, "a"), 1),
        queue: "developer".into(),
        request_id: None,
        tags: vec![],
        enqueued_at: chrono::Utc::now(),
    };
    h.bus.dispatch(msg.clone()).await.unwrap();
    h.bus.dispatch(msg).await.unwrap();
    let (done, _) = h.run_id(rec.id).await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(h.task_checkpoints(rec.id).await, [(0, "a".to_string())]);
    let completed = h
        .event_kinds(rec.id)
        .await
        .into_iter()
        .filter(|k| *k == EventKind::TaskCompleted)
        .count();
    assert_eq!(completed, 1);
}

// ------------------------------------------------------------ definitions

fn check_invalid(text: &str, expected: &str) {
    let err = WorkflowDefinition::parse(text, "my-flow.toml").expect_err(expected);
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("my-flow.toml"), "no file name in: {msg}");
    assert!(msg.contains(expected), "expected `{expected}` in: {msg}");
}

#[test]
fn invalid_definitions_are_explained() {
    let base = BRANCH;
    check_invalid("name = \"x\"\nstart = [", "line 2");
    check_invalid(
        &base.replace("start = [\"a\"]", "start = []"),
        "`start` is empty",
    );
    check_invalid(
        &base.replace("start = [\"a\"]", "start = [\"z\"]"),
        "unknown node `z` in `start`",
    );
    check_invalid(
        &base.replace(
            "start = [\"a\"]",
            "start = [\"a\"]\napproval_before = [\"q\"]",
        ),
        "unknown node `q` in `approval_before`",
    );
    check_invalid(
        &base.replace("to = [\"b\"]", "to = [\"bb\"]"),
        "edge #1 (from `a`): unknown node `bb` in `to`",
    );
    check_invalid(
        &base.replace("from = [\"b\"]", "from = [\"x\"]"),
        "unknown node `x` in `from`",
    );
    check_invalid(
        &base.replace("agent = \"qa\"", "agent = \"tester\""),
        "node `c`: unknown agent role `tester`",
    );
    check_invalid(
        &base.replace("agent = \"qa\"", "agnt = \"qa\""),
        "unknown field `agnt`",
    );
    check_invalid(
        &format!("{base}\n[nodes.z]\nagent = \"qa\"\n"),
        "`z` cannot be reached from `start`",
    );
    check_invalid(
        &format!("{base}\n[[edges]]\nfrom = \"b\"\nto = [\"c\"]\n[[edges]]\nfrom = \"c\"\nto = [\"b\"]\n"),
        "cycle `b` -> `c` -> `b` has no bound",
    );
    check_invalid(
        &base.replace("to = [\"b\"]", "to = [\"b\"]\nfail = \"x\""),
        "has both `fail` and `to`",
    );
    check_invalid(
        &base.replace("to = [\"b\"]\n", ""),
        "needs `to` (where to go) or `fail`",
    );
    check_invalid(
        &base.replace("context.go == 'b'", "context.go = 'b'"),
        "bad `when` expression `context.go = 'b'` at column 12",
    );
    check_invalid(
        &base.replace("context.go == 'b'", "visits.zz > 1"),
        "`visits.zz` names an unknown node",
    );
    check_invalid(
        &base.replace("to = [\"b\"]", "to = [\"b\"]\napproval = \"ok {visits.\""),
        "bad `approval` template",
    );
    // A bounded cycle is fine; the shipped files are valid.
    let bounded = format!("{base}\n[[edges]]\nfrom = \"b\"\nto = [\"a\"]\n").replace(
        "agent = \"business_analyst\"",
        "agent = \"business_analyst\"\nmax_visits = 2",
    );
    def(&bounded);
    WorkflowDefinition::default_sdlc().unwrap();
    WorkflowDefinition::bench().unwrap();
}

// ------------------------------------------------------------ bench

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_runs_seven_steps_per_workflow() {
    let store = Arc::new(MemoryStore::new());
    let size = store.clone();
    let report = bench_engine(
        store,
        Arc::new(InprocBus::new()),
        BenchConfig {
            local_workers: true,
            workflows: 6,
            concurrency: 3,
            node_latency: Duration::from_millis(1),
        },
        move || size.approx_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.steps, 7 * 6);
    assert!(report.steps_per_s > 0.0 && report.p99_ms >= report.p50_ms);
    assert!(report.node_us_per_step >= 1000.0, "{report:?}");
    assert!(report.store_bytes_per_workflow.unwrap() > 7 * 2048);
    let line = serde_json::to_string(&report).unwrap();
    assert!(line.contains("\"overhead_us_per_step\""));
}

#[tokio::test]
async fn approval_edge_lets_a_human_extend_a_bounded_loop_once_per_approval() {
    // The variant sdlc.toml's comment describes, with qa's bound raised
    // (its own bound would stop the approved round's test run).
    let variant = sdlc_with(&[
        (
            "fail = \"generated tests still fail after {visits.developer} developer rounds\"",
            "to = [\"developer\"]\napproval = \"tests still fail after {visits.developer} rounds; another?\"",
        ),
        ("max_visits = 6", "max_visits = 99"),
    ]);
    let h = harness(vec![("qa", qa_passes_from(99))]).await;
    let (rec, _) = h.run(variant).await;
    assert_eq!(rec.status, WorkflowStatus::AwaitingApproval);
    assert_eq!(rec.cursor.pending, ["developer"]);
    assert_eq!(h.runner.count("developer"), 3);
    h.engine.approve(rec.id, "one more").await.unwrap();
    let (rec, _) = h.run_id(rec.id).await;
    // One more round past max_visits = 3, then a human is asked again.
    assert_eq!(h.runner.count("developer"), 4);
    assert_eq!(rec.status, WorkflowStatus::AwaitingApproval);
}

//! Recovery in a fleet of processes: outages of the store or the bus
//! ridden out in place, a commit whose follow-up dispatch failed is given
//! back rather than acknowledged, the stall sweep re-dispatches lost tasks
//! (and leaves alone the ones live workers run), and tagged nodes go to
//! their variant queues.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agentry_bus_inproc::InprocBus;
use agentry_core::{NodeContext, NodeOutput, NodeRunner, Result, Store, TaskKey, WorkflowStatus};
use agentry_engine::{Engine, EngineConfig, Submission, WorkflowDefinition};
use agentry_store_memory::MemoryStore;
use async_trait::async_trait;
use support::faults::{FaultyStore, FlakyBus, Outage};
use support::{eventually, wait_checkpoint, wait_status, wait_step, Recorder};

const CHAIN: &str = r#"
name = "chain"
start = ["a"]
[nodes.a]
agent = "developer"
[nodes.b]
agent = "qa"
[nodes.c]
agent = "devops"
tags = ["python"]
[[edges]]
from = "a"
to = ["b"]
[[edges]]
from = "b"
to = ["c"]
[[edges]]
from = "c"
to = ["end"]
"#;

/// The settings of these tests: `run` never checks a stalled step on its
/// own, and an outage is ridden out for 10 s.
fn config() -> EngineConfig {
    EngineConfig {
        stall_check_after: Duration::from_secs(3600),
        outage_grace: Duration::from_secs(10),
        ..support::config()
    }
}

fn submission() -> Submission {
    support::submission(CHAIN)
}

fn all_queues() -> Vec<String> {
    let mut q = Engine::all_queues();
    q.push("devops.python".into());
    q
}

#[tokio::test]
async fn a_broker_outage_shorter_than_the_grace_is_ridden_out() {
    let bus = FlakyBus::new();
    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Recorder::default());
    let engine = Engine::new(store.clone(), bus.clone(), runner.clone(), config());
    let _workers = engine.start_workers(all_queues(), 2).await;
    let record = engine.submit(submission()).await.unwrap();
    bus.down.store(true, Ordering::SeqCst);
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(record.id).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    bus.down.store(false, Ordering::SeqCst);
    let done = run.await.unwrap().unwrap();
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(runner.ran(), ["a", "b", "c"]);
}

#[tokio::test]
async fn a_store_outage_shorter_than_the_grace_is_ridden_out_by_the_workers() {
    let store = FaultyStore::new(Outage::default());
    let bus = Arc::new(InprocBus::new());
    struct Slow(Arc<FaultyStore<Outage>>);
    #[async_trait]
    impl NodeRunner for Slow {
        async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
            if ctx.task.key.node == "a" {
                // The database goes away while the first node runs.
                self.0.faults.down.store(true, Ordering::SeqCst);
            }
            Ok(NodeOutput::default())
        }
    }
    let engine = Engine::new(store.clone(), bus, Arc::new(Slow(store.clone())), config());
    let _workers = engine.start_workers(all_queues(), 2).await;
    let record = engine.submit(submission()).await.unwrap();
    engine.start_detached(record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store.faults.refused.load(Ordering::SeqCst) > 0,
        "the outage was not hit"
    );
    store.faults.down.store(false, Ordering::SeqCst);
    let done = wait_status(store.as_ref(), record.id, WorkflowStatus::Completed).await;
    assert_eq!(done.cursor.visits.get("c"), Some(&1));
}

#[tokio::test]
async fn a_commit_whose_dispatch_fails_is_given_back_and_its_redelivery_dispatches() {
    let bus = FlakyBus::new();
    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Recorder::default());
    let mut cfg = config();
    // The outage outlasts the grace: the worker gives the task back.
    cfg.outage_grace = Duration::from_millis(200);
    struct DownAfterA(Arc<FlakyBus>, Arc<Recorder>);
    #[async_trait]
    impl NodeRunner for DownAfterA {
        async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
            if ctx.task.key.node == "a" && self.1.ran().is_empty() {
                self.0.down.store(true, Ordering::SeqCst);
            }
            self.1.run(ctx).await
        }
    }
    let engine = Engine::new(
        store.clone(),
        bus.clone(),
        Arc::new(DownAfterA(bus.clone(), runner.clone())),
        cfg,
    );
    let _workers = engine.start_workers(all_queues(), 1).await;
    let record = engine.submit(submission()).await.unwrap();
    engine.start_detached(record.id).await.unwrap();
    // `a` commits, its dispatch of `b` fails past the grace: the delivery
    // of `a` goes back (redelivered) while the broker is down.
    wait_checkpoint(store.as_ref(), record.id, "a").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = store.get_workflow(record.id).await.unwrap();
    assert_eq!(r.cursor.pending, vec!["b"], "{r:?}");
    bus.down.store(false, Ordering::SeqCst);
    // The redelivered `a` finds itself committed and dispatches `b`.
    wait_status(store.as_ref(), record.id, WorkflowStatus::Completed).await;
    assert_eq!(runner.ran(), ["a", "b", "c"], "a ran once");
}

#[tokio::test]
async fn the_sweep_redispatches_a_lost_task_but_not_one_a_live_worker_runs() {
    let bus = FlakyBus::new();
    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Recorder::default());
    let engine = Engine::new(store.clone(), bus.clone(), runner.clone(), config());
    let _workers = engine.start_workers(all_queues(), 1).await;
    let record = engine.submit(submission()).await.unwrap();
    // The broker takes the first task and loses it.
    bus.drop_next.store(1, Ordering::SeqCst);
    engine.start_detached(record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(runner.ran().is_empty());
    let id = record.id;

    // Reported running by a live worker: left alone.
    let busy: HashSet<TaskKey> = [TaskKey::new(id, 0, "a")].into_iter().collect();
    let kicked = engine.sweep_stalled(Duration::ZERO, &busy).await.unwrap();
    assert_eq!(kicked, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(runner.ran().is_empty());

    // Not stalled long enough: left alone.
    let kicked = engine
        .sweep_stalled(Duration::from_secs(3600), &HashSet::new())
        .await
        .unwrap();
    assert_eq!(kicked, 0);

    // Stalled and running nowhere: dispatched again, and the run goes on.
    let kicked = engine
        .sweep_stalled(Duration::ZERO, &HashSet::new())
        .await
        .unwrap();
    assert_eq!(kicked, 1);
    wait_status(store.as_ref(), id, WorkflowStatus::Completed).await;
    assert_eq!(runner.ran(), ["a", "b", "c"]);
}

#[tokio::test]
async fn tagged_nodes_go_to_their_variant_queue_unless_routing_by_tags_is_off() {
    for (route, want) in [(true, "devops.python"), (false, "devops")] {
        let bus = FlakyBus::new();
        let store = Arc::new(MemoryStore::new());
        let mut cfg = config();
        cfg.route_by_tags = route;
        let engine = Engine::new(
            store.clone(),
            bus.clone(),
            Arc::new(Recorder::default()),
            cfg,
        );
        let _workers = engine.start_workers(all_queues(), 1).await;
        let record = engine.submit(submission()).await.unwrap();
        let done = engine.run(record.id).await.unwrap();
        assert_eq!(done.status, WorkflowStatus::Completed);
        let queues = bus.queues();
        assert_eq!(queues, vec!["developer", "qa", want]);
    }
    let def = WorkflowDefinition::parse(CHAIN, "chain.toml").unwrap();
    assert_eq!(def.queues(), vec!["developer", "devops.python", "qa"]);
    let bad = CHAIN.replace(r#"tags = ["python"]"#, r#"tags = ["py thon"]"#);
    let err = WorkflowDefinition::parse(&bad, "chain.toml").unwrap_err();
    assert!(err.to_string().contains("node `c`: tags"), "{err}");
}

#[tokio::test]
async fn running_tasks_are_reported_while_they_run() {
    struct Gate(tokio::sync::Notify);
    #[async_trait]
    impl NodeRunner for Gate {
        async fn run(&self, _ctx: NodeContext) -> Result<NodeOutput> {
            self.0.notified().await;
            Ok(NodeOutput::default())
        }
    }
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new(Gate(tokio::sync::Notify::new()));
    let engine = Engine::new(
        store.clone(),
        Arc::new(InprocBus::new()),
        gate.clone(),
        config(),
    );
    let _workers = engine.start_workers(all_queues(), 1).await;
    let record = engine.submit(submission()).await.unwrap();
    engine.start_detached(record.id).await.unwrap();
    // As a worker's beat lists them: in their text form.
    let running = || -> Vec<String> {
        engine
            .running_tasks()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let want = format!("{}:0:a#1", record.id);
    eventually("a reported running", || running() == [want.as_str()]).await;
    gate.0.notify_one();
    eventually("a no longer reported", || {
        !running().iter().any(|t| t.contains(":0:a#"))
    })
    .await;
}

#[tokio::test]
async fn the_sweep_re_dispatches_a_task_only_queued_a_bounded_number_of_times() {
    let bus = FlakyBus::new();
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        bus.clone(),
        Arc::new(Recorder::default()),
        config(),
    );
    // Nobody serves `devops.python`: its task stays queued.
    let _workers = engine.start_workers(Engine::all_queues(), 1).await;
    let record = engine.submit(submission()).await.unwrap();
    engine.start_detached(record.id).await.unwrap();
    let id = record.id;
    assert_eq!(wait_step(store.as_ref(), id, 2).await.cursor.pending, ["c"]);
    for _ in 0..10 {
        engine
            .sweep_stalled(Duration::ZERO, &HashSet::new())
            .await
            .unwrap();
    }
    let copies = bus
        .queues()
        .iter()
        .filter(|q| *q == "devops.python")
        .count();
    assert_eq!(
        copies,
        1 + agentry_engine::engine::SWEEP_MAX_REDISPATCH as usize,
        "the first dispatch and at most the cap of copies"
    );
}

#[tokio::test]
async fn a_run_without_workers_leaves_a_slow_task_to_the_worker_that_runs_it() {
    struct Slow(Recorder);
    #[async_trait]
    impl NodeRunner for Slow {
        async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
            if ctx.task.key.node == "b" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            self.0.run(ctx).await
        }
    }
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(InprocBus::new());
    let runner = Arc::new(Slow(Recorder::default()));
    // The worker process.
    let workers_engine = Engine::new(store.clone(), bus.clone(), runner.clone(), config());
    let _workers = workers_engine.start_workers(all_queues(), 2).await;
    // The process that submits and waits (`agentry run` in the distributed
    // mode): its stall check must not dispatch `b` again while it runs.
    let mut cfg = config();
    cfg.stall_check_after = Duration::from_millis(100);
    cfg.redispatch_on_stall = false;
    let driver = Engine::new(
        store.clone(),
        bus.clone(),
        Arc::new(Recorder::default()),
        cfg,
    );
    let record = driver.submit(submission()).await.unwrap();
    let done = driver.run(record.id).await.unwrap();
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(runner.0.ran(), ["a", "b", "c"], "b ran once");
}

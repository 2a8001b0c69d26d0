//! Recovery in a fleet of processes: outages of the store or the bus
//! ridden out in place, a commit whose follow-up dispatch failed is given
//! back rather than acknowledged, the stall sweep re-dispatches lost tasks
//! (and leaves alone the ones live workers run), and tagged nodes go to
//! their variant queues.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry_bus_inproc::InprocBus;
use agentry_core::store::{AgentOutputRecord, Page};
use agentry_core::{
    Bus, Checkpoint, CommitOutcome, Delivery, Error, Event, NewWorkflow, NodeContext, NodeOutput,
    NodeRunner, Result, Store, StoredEvent, TaskCommit, TaskKey, TaskMessage, Transition,
    WorkflowId, WorkflowQuery, WorkflowRecord, WorkflowStatus,
};
use agentry_engine::{Engine, EngineConfig, Submission, WorkflowDefinition};
use agentry_store_memory::MemoryStore;
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::{json, Value};

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

/// Records which nodes ran.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait]
impl NodeRunner for Recorder {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        self.0.lock().unwrap().push(ctx.task.key.node.clone());
        Ok(NodeOutput::default())
    }
}

/// A bus whose dispatches fail while `down`, or silently vanish while
/// `drop_next` counts down (a broker that lost them); it records queues.
struct FlakyBus {
    inner: InprocBus,
    down: AtomicBool,
    drop_next: AtomicUsize,
    queues: Mutex<Vec<String>>,
}

impl FlakyBus {
    fn new() -> Arc<FlakyBus> {
        Arc::new(FlakyBus {
            inner: InprocBus::new(),
            down: AtomicBool::new(false),
            drop_next: AtomicUsize::new(0),
            queues: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Bus for FlakyBus {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    async fn publish(&self, events: &[Event]) -> Result<()> {
        self.inner.publish(events).await
    }
    fn subscribe(&self) -> BoxStream<'static, Event> {
        self.inner.subscribe()
    }
    async fn dispatch(&self, task: TaskMessage) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::transient("broker down"));
        }
        self.queues.lock().unwrap().push(task.queue.clone());
        if self
            .drop_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(());
        }
        self.inner.dispatch(task).await
    }
    async fn consume(&self, queues: &[String]) -> Result<BoxStream<'static, Result<Delivery>>> {
        self.inner.consume(queues).await
    }
}

/// A store whose calls fail with a transient error while `down`.
struct FlakyStore {
    inner: MemoryStore,
    down: AtomicBool,
    refused: AtomicUsize,
}

impl FlakyStore {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::transient("database restarting"));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn health(&self) -> Result<()> {
        self.check()?;
        self.inner.health().await
    }
    async fn create_workflow(&self, new: NewWorkflow) -> Result<WorkflowRecord> {
        self.check()?;
        self.inner.create_workflow(new).await
    }
    async fn get_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.check()?;
        self.inner.get_workflow(id).await
    }
    async fn list_workflows(&self, query: WorkflowQuery) -> Result<Page<WorkflowRecord>> {
        self.check()?;
        self.inner.list_workflows(query).await
    }
    async fn commit_task(&self, commit: TaskCommit) -> Result<CommitOutcome> {
        self.check()?;
        self.inner.commit_task(commit).await
    }
    async fn transition(&self, id: WorkflowId, t: Transition) -> Result<WorkflowRecord> {
        self.check()?;
        self.inner.transition(id, t).await
    }
    async fn checkpoints(&self, id: WorkflowId) -> Result<Vec<Checkpoint>> {
        self.check()?;
        self.inner.checkpoints(id).await
    }
    async fn agent_outputs(&self, id: WorkflowId) -> Result<Vec<AgentOutputRecord>> {
        self.check()?;
        self.inner.agent_outputs(id).await
    }
    async fn find_by_request_id(&self, r: &str) -> Result<Option<WorkflowRecord>> {
        self.check()?;
        self.inner.find_by_request_id(r).await
    }
    async fn shared_context(&self, id: WorkflowId) -> Result<BTreeMap<String, Value>> {
        self.check()?;
        self.inner.shared_context(id).await
    }
    async fn events(
        &self,
        workflow: Option<WorkflowId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        self.check()?;
        self.inner.events(workflow, after, limit).await
    }
    async fn unpublished_events(&self, limit: u32) -> Result<Vec<StoredEvent>> {
        self.check()?;
        self.inner.unpublished_events(limit).await
    }
    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        self.check()?;
        self.inner.mark_published(seqs).await
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(20),
        relay_interval: Duration::from_millis(50),
        stall_check_after: Duration::from_secs(3600),
        outage_grace: Duration::from_secs(10),
        ..EngineConfig::default()
    }
}

fn submission() -> Submission {
    Submission {
        requirements: "build it".into(),
        request_id: None,
        definition: WorkflowDefinition::parse(CHAIN, "chain.toml").unwrap(),
        options: json!({}),
        tenant: None,
    }
}

fn all_queues() -> Vec<String> {
    let mut q = Engine::all_queues();
    q.push("devops.python".into());
    q
}

async fn wait_status(store: &dyn Store, id: WorkflowId, want: WorkflowStatus) -> WorkflowRecord {
    for _ in 0..500 {
        if let Ok(r) = store.get_workflow(id).await {
            if r.status == want {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("workflow {id} never became {want}");
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
    assert_eq!(*runner.0.lock().unwrap(), vec!["a", "b", "c"]);
}

#[tokio::test]
async fn a_store_outage_shorter_than_the_grace_is_ridden_out_by_the_workers() {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        down: AtomicBool::new(false),
        refused: AtomicUsize::new(0),
    });
    let bus = Arc::new(InprocBus::new());
    struct Slow(Arc<FlakyStore>);
    #[async_trait]
    impl NodeRunner for Slow {
        async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
            if ctx.task.key.node == "a" {
                // The database goes away while the first node runs.
                self.0.down.store(true, Ordering::SeqCst);
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
        store.refused.load(Ordering::SeqCst) > 0,
        "the outage was not hit"
    );
    store.down.store(false, Ordering::SeqCst);
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
            if ctx.task.key.node == "a" && self.1 .0.lock().unwrap().is_empty() {
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
    assert_eq!(*runner.0.lock().unwrap(), vec!["a", "b", "c"], "a ran once");
}

async fn wait_checkpoint(store: &dyn Store, id: WorkflowId, node: &str) {
    for _ in 0..500 {
        let cps = store.checkpoints(id).await.unwrap();
        if cps.iter().any(|c| c.node.as_deref() == Some(node)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no checkpoint of {node}");
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
    assert!(runner.0.lock().unwrap().is_empty());
    let id = record.id;

    // Reported running by a live worker: left alone.
    let busy: HashSet<TaskKey> = [TaskKey::new(id, 0, "a")].into_iter().collect();
    let kicked = engine.sweep_stalled(Duration::ZERO, &busy).await.unwrap();
    assert_eq!(kicked, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(runner.0.lock().unwrap().is_empty());

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
    assert_eq!(*runner.0.lock().unwrap(), vec!["a", "b", "c"]);
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
        let queues = bus.queues.lock().unwrap().clone();
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
    for _ in 0..200 {
        if running() == vec![want.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running(), vec![want]);
    gate.0.notify_one();
    for _ in 0..200 {
        if !running().iter().any(|t| t.contains(":0:a#")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!running().iter().any(|t| t.contains(":0:a#")));
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
    for _ in 0..200 {
        if store.get_workflow(id).await.unwrap().cursor.step == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.get_workflow(id).await.unwrap().cursor.pending,
        vec!["c"]
    );
    for _ in 0..10 {
        engine
            .sweep_stalled(Duration::ZERO, &HashSet::new())
            .await
            .unwrap();
    }
    let copies = bus
        .queues
        .lock()
        .unwrap()
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
    assert_eq!(
        *runner.0 .0.lock().unwrap(),
        vec!["a", "b", "c"],
        "b ran once"
    );
}

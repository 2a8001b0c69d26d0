//! The fleet protocols against the in-memory store (the worker registry)
//! and the in-process bus: what a worker tells the registry, what the sweep
//! re-dispatches and what it leaves alone, and how a process lets go of
//! the lease and its registration.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry_bus_inproc::InprocBus;
use agentry_core::{
    NodeContext, NodeOutput, NodeRunner, Store, WorkerRecord, WorkerRegistry, WorkflowId,
    WorkflowStatus,
};
use agentry_engine::{Engine, EngineConfig, Submission, WorkflowDefinition};
use agentry_fleet::{leave_fleet, worker_info, Duties, SweepTiming, SWEEP_LEASE};
use agentry_store_memory::MemoryStore;

/// How long anything a test waits for may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// A sweep every 20 ms that finds every running workflow stalled, trusts
/// workers for 10 s and forgets none.
const EAGER: SweepTiming = SweepTiming {
    interval: Duration::from_millis(20),
    stalled_for: Duration::ZERO,
    unhealthy_after: Duration::from_secs(10),
    forget_after: Duration::from_secs(86_400),
};

/// A node runner whose nodes never finish; it counts its calls by the
/// workflow's request id.
#[derive(Default)]
struct Stuck {
    calls: Mutex<HashMap<String, usize>>,
}

impl Stuck {
    fn calls(&self, request_id: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(request_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl NodeRunner for Stuck {
    async fn run(&self, ctx: NodeContext) -> agentry_core::Result<NodeOutput> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(ctx.state.request_id.to_string())
            .or_default() += 1;
        std::future::pending().await
    }
}

/// An engine over `store`, its own in-process bus and `runner`, that never
/// re-dispatches on its own (as in the distributed mode: only the sweep
/// does).
fn engine(store: &Arc<MemoryStore>, runner: Arc<dyn NodeRunner>) -> Engine {
    Engine::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(InprocBus::new()),
        runner,
        EngineConfig {
            redispatch_on_stall: false,
            ..EngineConfig::default()
        },
    )
}

/// Stores a workflow of one `business` node under `request_id`, pending:
/// nobody starts it.
async fn submit(engine: &Engine, request_id: &str) -> WorkflowId {
    let definition = WorkflowDefinition::parse(
        "name = \"one\"\nstart = [\"business\"]\n[nodes.business]\nagent = \"business_analyst\"\n",
        "one.toml",
    )
    .unwrap();
    engine
        .submit(Submission {
            requirements: "a todo app".into(),
            request_id: Some(agentry_core::RequestId::new(request_id).unwrap()),
            definition,
            options: agentry_core::RunOptions::default(),
            tenant: None,
        })
        .await
        .unwrap()
        .id
}

/// Polls `check` until it holds, failing the test with `what` after
/// [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn worker(store: &MemoryStore, id: &str) -> Option<WorkerRecord> {
    let workers = store.list_workers().await.unwrap();
    workers.into_iter().find(|w| w.info.id == id)
}

async fn status(store: &MemoryStore, id: WorkflowId) -> WorkflowStatus {
    store.get_workflow(id).await.unwrap().status
}

#[tokio::test]
async fn a_worker_registers_beats_registers_again_when_pruned_and_deregisters() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, Arc::new(Stuck::default()));
    let info = worker_info(&["qa".to_string()], &["python".to_string()], 3);
    let id = info.id.clone();
    let mut duties = Duties::new();
    duties.heartbeat(
        store.clone(),
        engine.clone(),
        info,
        Duration::from_millis(10),
    );
    eventually("a beat after the registration", || async {
        worker(&store, &id)
            .await
            .is_some_and(|w| w.beat.at > w.info.started_at)
    })
    .await;
    let record = worker(&store, &id).await.unwrap();
    assert_eq!(
        (record.info.roles, record.info.tags, record.info.concurrency),
        (vec!["qa".to_string()], vec!["python".to_string()], 3)
    );

    let future = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(store.prune_workers(future).await.unwrap(), 1);
    eventually("registered again after the prune", || async {
        worker(&store, &id).await.is_some()
    })
    .await;

    duties.stop().await;
    let record = worker(&store, &id).await.unwrap();
    assert!(record.stopped_at.is_some(), "deregistered on the way out");
}

#[tokio::test]
async fn the_sweep_starts_a_workflow_whose_start_was_lost() {
    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Stuck::default());
    let engine = engine(&store, runner.clone());
    let _workers = engine.start_workers(Engine::all_queues(), 2).await;
    let id = submit(&engine, "lost-start").await;
    assert_eq!(status(&store, id).await, WorkflowStatus::Pending);

    let mut duties = Duties::new();
    duties.sweep(store.clone(), None, engine.clone(), "sweeper".into(), EAGER);
    eventually("the first node runs", || async {
        runner.calls("lost-start") == 1
    })
    .await;
    assert_eq!(status(&store, id).await, WorkflowStatus::Running);
    duties.stop().await;
}

#[tokio::test]
async fn the_sweep_dispatches_again_a_task_no_worker_reports_running() {
    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Stuck::default());
    let engine = engine(&store, runner.clone());
    let _workers = engine.start_workers(Engine::all_queues(), 4).await;
    let id = submit(&engine, "unreported").await;
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(id).await }
    });
    eventually("the first node runs", || async {
        runner.calls("unreported") == 1
    })
    .await;

    // No heartbeat: as far as the registry knows, nobody runs the task.
    let mut duties = Duties::new();
    duties.sweep(store.clone(), None, engine.clone(), "sweeper".into(), EAGER);
    eventually("the task dispatched again", || async {
        runner.calls("unreported") >= 2
    })
    .await;
    duties.stop().await;
    run.abort();
}

#[tokio::test]
async fn the_sweep_leaves_alone_a_task_a_healthy_worker_reports_running() {
    let store = Arc::new(MemoryStore::new());
    let runner = Arc::new(Stuck::default());
    let engine = engine(&store, runner.clone());
    let _workers = engine.start_workers(Engine::all_queues(), 4).await;
    let info = worker_info(&Engine::all_queues(), &[], 4);
    let worker_id = info.id.clone();
    let mut duties = Duties::new();
    duties.heartbeat(
        store.clone(),
        engine.clone(),
        info,
        Duration::from_millis(10),
    );
    let id = submit(&engine, "reported").await;
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(id).await }
    });
    eventually(
        "the registry shows the task in the worker's hands",
        || async {
            worker(&store, &worker_id)
                .await
                .is_some_and(|w| !w.beat.tasks.is_empty())
        },
    )
    .await;

    // Every pass from now on reads the beat that reports the task. A
    // workflow submitted now and started by the sweep proves a pass went
    // by; that pass looked at the running workflow first, so a copy of its
    // task would have been queued before the probe's, on the same queue.
    duties.sweep(store.clone(), None, engine.clone(), "sweeper".into(), EAGER);
    submit(&engine, "probe").await;
    eventually(
        "a sweep pass starts the probe, and its node runs",
        || async { runner.calls("probe") == 1 },
    )
    .await;
    assert_eq!(
        runner.calls("reported"),
        1,
        "the running task was left alone"
    );
    duties.stop().await;
    run.abort();
}

#[tokio::test]
async fn a_sweeper_holds_the_lease_while_it_runs_and_gives_it_up_when_stopped() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, Arc::new(Stuck::default()));
    // A lease of three 200 ms intervals: when the probe gets it right after
    // the stop, it was given up, not run out.
    let timing = SweepTiming {
        interval: Duration::from_millis(200),
        ..EAGER
    };
    // The probe's own lease ends at once, so it never keeps the sweeper out.
    let ttl = Duration::from_millis(1);
    let mut duties = Duties::new();
    duties.sweep(
        store.clone(),
        None,
        engine.clone(),
        "sweeper".into(),
        timing,
    );
    eventually("the sweeper takes the lease", || async {
        !store
            .acquire_lease(SWEEP_LEASE, "probe", ttl, chrono::Utc::now())
            .await
            .unwrap()
    })
    .await;
    duties.stop().await;
    assert!(
        store
            .acquire_lease(SWEEP_LEASE, "probe", ttl, chrono::Utc::now())
            .await
            .unwrap(),
        "the stopped sweeper released the lease"
    );
}

#[tokio::test]
async fn leaving_the_fleet_stops_the_workers_then_deregisters() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(&store, Arc::new(Stuck::default()));
    let workers = engine.start_workers(Engine::all_queues(), 1).await;
    let info = worker_info(&Engine::all_queues(), &[], 1);
    let id = info.id.clone();
    let mut duties = Duties::new();
    duties.heartbeat(
        store.clone(),
        engine.clone(),
        info,
        Duration::from_millis(10),
    );
    eventually("registered", || async {
        worker(&store, &id).await.is_some()
    })
    .await;

    let clean = leave_fleet(&engine, workers, duties, Duration::from_secs(5)).await;
    assert!(clean, "no task was in hand");
    let record = worker(&store, &id).await.unwrap();
    assert!(record.stopped_at.is_some());
}

//! The engine benchmark (`agentry bench engine`): N workflows of a fixed
//! 7-step shape through the REAL engine (submit + run, the same commit
//! protocol) over whichever store and bus the caller passes, its nodes run
//! by workers in this process or, with [`BenchConfig::local_workers`] off,
//! by worker processes elsewhere.
//!
//! Shape (`workflows/bench.toml`): business -> developer -> qa -> developer
//! -> qa -> technical_writer -> devops; every node writes ~2 KB into
//! `agent_outputs` and otherwise only sleeps `node_latency` (if non-zero).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    AgentOutputWrite, BenchRun, Bus, Error, NodeContext, NodeOutput, NodeRunner, Result,
    RunOptions, StateDelta, Store, WorkflowStatus,
};
use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};

use crate::definition::WorkflowDefinition;
use crate::engine::{Engine, EngineConfig, Submission};

/// Node runs per benchmark workflow.
pub const STEPS_PER_WORKFLOW: u64 = 7;

/// Bytes of payload each node writes.
const PAYLOAD_BYTES: usize = 2048;

/// What `agentry bench engine` runs: how many workflows of the benchmark
/// graph, how many at once, how long each node sleeps, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// Workflows to run.
    pub workflows: usize,
    /// Workflows in flight at once (also the number of workers).
    pub concurrency: usize,
    /// Sleep inside each node (zero: none).
    pub node_latency: Duration,
    /// Whether this process runs the nodes (`concurrency` workers here), or
    /// only submits and drives while worker processes elsewhere run them
    /// (the distributed benchmark; their runner is picked by
    /// [`bench_options`] in each workflow's options).
    pub local_workers: bool,
}

/// The options of a benchmark workflow: they tell a worker process to run
/// its nodes with [`bench_runner`] (see [`bench_latency`]).
pub fn bench_options(node_latency: Duration) -> RunOptions {
    RunOptions {
        bench: Some(BenchRun {
            node_latency_ms: node_latency.as_secs_f64() * 1e3,
        }),
        ..RunOptions::default()
    }
}

/// The node latency of a benchmark workflow's options, None when they are
/// not a benchmark's.
pub fn bench_latency(options: &RunOptions) -> Option<Duration> {
    let ms = options.bench?.node_latency_ms;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1e3))
}

/// What a store-size closure may return: bytes, or a `Result` of bytes (an
/// error reports no size).
pub trait IntoStoreBytes {
    /// The size, when known.
    fn into_store_bytes(self) -> Option<u64>;
}

impl IntoStoreBytes for u64 {
    fn into_store_bytes(self) -> Option<u64> {
        Some(self)
    }
}

impl IntoStoreBytes for Option<u64> {
    fn into_store_bytes(self) -> Option<u64> {
        self
    }
}

impl<E> IntoStoreBytes for std::result::Result<u64, E> {
    fn into_store_bytes(self) -> Option<u64> {
        self.ok()
    }
}

/// The result, printed by the CLI as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Store adapter name.
    pub store: String,
    /// Workflows submitted and driven to their end.
    pub workflows: u64,
    /// Workflows that did not end `completed` (should be 0).
    pub failed: u64,
    /// Workflows in flight at once (the config's `concurrency`).
    pub concurrency: u64,
    /// Node sleep, in ms.
    pub node_latency_ms: f64,
    /// Node runs committed (= 7 * workflows when all complete).
    pub steps: u64,
    /// Wall time from the first submit to the last completion, seconds.
    pub wall_s: f64,
    /// `workflows / wall_s`.
    pub workflows_per_s: f64,
    /// `steps / wall_s`.
    pub steps_per_s: f64,
    /// `wall_s * 1e6 / steps`: wall time per step with `concurrency` in
    /// flight (inverse throughput).
    pub wall_us_per_step: f64,
    /// Wall time minus time inside nodes, per step:
    /// `(wall_s * 1e6 - node_us_total / concurrency) / steps`. Node time is
    /// divided by the concurrency because that many nodes sleep at once; with
    /// no node latency it equals `wall_us_per_step`. This is the engine's
    /// (and store's) cost per step as the rest of the world sees it.
    pub overhead_us_per_step: f64,
    /// Mean, over committed tasks, of (time from the worker receiving the
    /// delivery to its ack) minus (time inside the node body): the latency a
    /// task spends in the engine, including queueing for the store behind
    /// the other `concurrency - 1` workflows' commits.
    pub task_overhead_us: f64,
    /// Mean time inside the node body per task.
    pub node_us_per_step: f64,
    /// Median workflow latency (submit to `run` returning completed), ms.
    pub p50_ms: f64,
    /// 99th percentile workflow latency, ms.
    pub p99_ms: f64,
    /// Peak resident set of the process (VmHWM), MiB; 0 where unknown.
    pub peak_rss_mb: f64,
    /// Store size after the run divided by workflows (None when the size
    /// closure could not tell).
    pub store_bytes_per_workflow: Option<u64>,
}

/// The benchmark's node runner (writes ~2 KB, sleeps `latency`), for other
/// benchmarks that drive the engine (`agentry bench api`).
pub fn bench_runner(latency: Duration) -> Arc<dyn NodeRunner> {
    Arc::new(BenchRunner {
        latency,
        blob: json!("x".repeat(PAYLOAD_BYTES)),
    })
}

/// The benchmark's node: writes ~2 KB, optionally sleeps.
struct BenchRunner {
    latency: Duration,
    blob: Value,
}

#[async_trait]
impl NodeRunner for BenchRunner {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let role = ctx.role.map(|r| r.as_str()).unwrap_or("engine");
        Ok(NodeOutput {
            delta: StateDelta {
                agent_outputs: vec![AgentOutputWrite {
                    agent_name: role.to_string(),
                    output_type: ctx.task.key.node.clone(),
                    content: json!({ "visit": ctx.visit, "step": ctx.task.key.step, "blob": self.blob }),
                }],
                ..StateDelta::default()
            },
            events: Vec::new(),
        })
    }
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

/// Peak resident set size in MiB, from `/proc/self/status` (Linux).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the benchmark. Errors only when the engine cannot submit or run
/// (a store failure); a workflow that ends in another status than
/// `completed` is counted in `failed`.
///
/// `store_bytes` reports the store's size after the run (e.g.
/// `MemoryStore::approx_bytes`, or the SQLite file size); it is called once.
pub async fn bench_engine<F, R>(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    cfg: BenchConfig,
    store_bytes: F,
) -> Result<BenchReport>
where
    F: Fn() -> R + Send + Sync + 'static,
    R: IntoStoreBytes,
{
    if cfg.workflows == 0 {
        return Err(Error::invalid("bench needs at least one workflow"));
    }
    let concurrency = cfg.concurrency.max(1);
    let def = WorkflowDefinition::bench()?;
    let runner = Arc::new(BenchRunner {
        latency: cfg.node_latency,
        blob: Value::String("x".repeat(PAYLOAD_BYTES)),
    });
    let engine = Engine::new(store.clone(), bus, runner, EngineConfig::default());
    let workers = if cfg.local_workers {
        engine
            .start_workers(Engine::all_queues(), concurrency)
            .await
    } else {
        crate::engine::WorkerHandle::none()
    };
    let options = bench_options(cfg.node_latency);
    let before = engine.metrics();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut drivers = Vec::new();
    for _ in 0..concurrency.min(cfg.workflows) {
        let engine = engine.clone();
        let next = next.clone();
        let def = def.clone();
        let options = options.clone();
        let total = cfg.workflows;
        drivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t0 = Instant::now();
                let record = engine
                    .submit(Submission {
                        requirements: format!("benchmark workflow {i}"),
                        request_id: None,
                        definition: def.clone(),
                        options: options.clone(),
                        tenant: None,
                    })
                    .await?;
                let done = engine.run(record.id).await?;
                if done.status != WorkflowStatus::Completed {
                    failed += 1;
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, Error>((latencies, failed))
        }));
    }
    let mut latencies = Vec::with_capacity(cfg.workflows);
    let mut failed = 0;
    for d in drivers {
        let (l, f) = d
            .await
            .map_err(|e| Error::permanent(format!("benchmark driver panicked: {e}")))??;
        latencies.extend(l);
        failed += f;
    }
    let wall = started.elapsed().as_secs_f64();
    workers.shutdown().await;
    engine.close().await;
    let m = engine.metrics();
    // Remote workers' commits are not counted here: every completed
    // workflow committed its seven steps.
    let steps = if cfg.local_workers {
        m.tasks_committed - before.tasks_committed
    } else {
        STEPS_PER_WORKFLOW * (cfg.workflows as u64 - failed)
    };
    let task_ns = (m.task_ns - before.task_ns) as f64;
    let node_ns = (m.node_ns - before.node_ns) as f64;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let per_step = |ns: f64| {
        if steps == 0 {
            0.0
        } else {
            ns / 1e3 / steps as f64
        }
    };
    let n = cfg.workflows as u64;
    Ok(BenchReport {
        store: store.name().to_string(),
        workflows: n,
        failed,
        concurrency: concurrency as u64,
        node_latency_ms: cfg.node_latency.as_secs_f64() * 1e3,
        steps,
        wall_s: wall,
        workflows_per_s: n as f64 / wall,
        steps_per_s: steps as f64 / wall,
        wall_us_per_step: if steps == 0 {
            0.0
        } else {
            wall * 1e6 / steps as f64
        },
        overhead_us_per_step: if steps == 0 {
            0.0
        } else {
            (wall * 1e6 - node_ns / 1e3 / concurrency as f64).max(0.0) / steps as f64
        },
        task_overhead_us: per_step(task_ns - node_ns),
        node_us_per_step: per_step(node_ns),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        peak_rss_mb: peak_rss_mb(),
        store_bytes_per_workflow: store_bytes().into_store_bytes().map(|b| b / n),
    })
}

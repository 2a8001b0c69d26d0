//! The distributed mode: connecting to PostgreSQL, RabbitMQ and Redis,
//! `agentry worker` (registration, heartbeats, the stall sweep),
//! `agentry agents` and `agentry dlq`.
//!
//! Key design decision: a worker is the same engine as the embedded one,
//! with its queues on RabbitMQ and its store in PostgreSQL; it only adds
//! what a fleet of processes needs: it registers in the store's worker
//! registry and heartbeats its load, so `agentry agents` and
//! `GET /v1/agents` see every live worker and a killed one turns unhealthy
//! by the age of its last beat; and one process at a time (under a lease in
//! the store) sweeps for running workflows nobody moves, re-dispatching
//! tasks that are neither committed nor running on a live worker. The LLM
//! a task uses comes from its workflow's stored options, so a worker serves
//! runs started with any provider.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use serde_json::{json, Value};
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use agentry_agents::AgentNodeRunner;
use agentry_bus_amqp::{AmqpBus, AmqpOptions};
use agentry_core::{
    queues_for, AgentRole, Budget, LlmCache, NodeContext, NodeOutput, NodeRunner, RateLimiter,
    WorkerBeat, WorkerHealth, WorkerInfo, WorkerRecord, WorkerRegistry,
};
use agentry_engine::Engine;
use agentry_store_postgres::{PostgresOptions, PostgresStore};

use crate::app::{App, StoreAll};
use crate::cli::{AgentsArgs, DlqCommand, LlmArgs, WorkerArgs};
use crate::config::Config;
use crate::llm::LlmChoice;

/// The lease one process at a time holds to sweep for stalled workflows.
pub const SWEEP_LEASE: &str = "sweep-stalled";

/// Dead letters the sweep reads to leave their tasks alone.
const DEAD_LETTERS_SEEN: usize = 1000;

/// The distributed adapters: store, bus, LLM cache and rate limiter.
pub async fn connect(
    config: &Config,
) -> Result<(
    Arc<dyn StoreAll>,
    Option<Arc<AmqpBus>>,
    Arc<dyn LlmCache>,
    Arc<dyn RateLimiter>,
)> {
    let c = &config.cluster;
    let database_url = config.database_url.as_deref().ok_or_else(|| {
        anyhow!("mode = \"distributed\" needs database_url (AGENTRY_DATABASE_URL)")
    })?;
    let amqp_url = config
        .amqp_url
        .as_deref()
        .ok_or_else(|| anyhow!("mode = \"distributed\" needs amqp_url (AGENTRY_AMQP_URL)"))?;
    let mut options = PostgresOptions::default().with_max_connections(c.max_connections);
    if let Some(schema) = &c.database_schema {
        options = options.with_schema(schema.clone());
    }
    let store = PostgresStore::connect(database_url, options)
        .await
        .map_err(|e| anyhow!("cannot open the PostgreSQL store: {e}"))?;
    let store: Arc<dyn StoreAll> = Arc::new(store);
    let bus = AmqpBus::connect(AmqpOptions {
        url: amqp_url.to_string(),
        prefix: c.amqp_prefix.clone(),
        prefetch: c.prefetch,
        delivery_limit: c.delivery_limit,
        connection_name: Some(format!("agentry-{}", std::process::id())),
        ..AmqpOptions::default()
    })
    .await
    .map_err(|e| anyhow!("cannot connect to RabbitMQ: {e}"))?;
    let (cache, limiter): (Arc<dyn LlmCache>, Arc<dyn RateLimiter>) = match &config.redis_url {
        Some(url) if !url.trim().is_empty() => {
            let client = agentry_redis::RedisClient::connect(
                agentry_redis::RedisOptions::new(url.clone()).with_prefix(c.redis_prefix.clone()),
            )
            .await
            .map_err(|e| anyhow!("cannot connect to Redis: {e}"))?;
            (
                Arc::new(agentry_redis::RedisLlmCache::new(client.clone())),
                Arc::new(agentry_redis::RedisRateLimiter::new(client)),
            )
        }
        _ => (
            store.clone(),
            Arc::new(agentry_store_memory::MemoryRateLimiter::new()),
        ),
    };
    Ok((store, Some(Arc::new(bus)), cache, limiter))
}

/// Runs each task with the LLM its workflow was started with (the stored
/// `options.llm`), building one agent runner per distinct choice.
pub struct PerWorkflowRunner {
    app: Arc<App>,
    runners: Mutex<HashMap<String, Arc<dyn NodeRunner>>>,
}

impl PerWorkflowRunner {
    /// A runner over `app`'s adapters.
    pub fn new(app: Arc<App>) -> Self {
        PerWorkflowRunner {
            app,
            runners: Mutex::new(HashMap::new()),
        }
    }

    fn runner_for(&self, options: &Value) -> agentry_core::Result<Arc<dyn NodeRunner>> {
        // `agentry bench engine --worker-processes`: the benchmark's nodes.
        if let Some(latency) = agentry_engine::bench::bench_latency(options) {
            let key = format!("bench:{}", latency.as_nanos());
            let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
            let runner = runners
                .entry(key)
                .or_insert_with(|| agentry_engine::bench::bench_runner(latency));
            return Ok(runner.clone());
        }
        let mut llm = options.get("llm").cloned().unwrap_or(Value::Null);
        // Recording is the submitting process's business.
        if let Some(obj) = llm.as_object_mut() {
            obj.remove("record");
        }
        let key = llm.to_string();
        if let Some(r) = self
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let stored = json!({ "llm": llm });
        let app = &self.app;
        let build = || -> Result<Arc<dyn NodeRunner>> {
            let choice = LlmChoice::resolve(&LlmArgs::default(), Some(&stored), &app.config)?;
            let provider = choice.provider(&app.config, app.llm_cache.clone())?;
            let runner: AgentNodeRunner = app.runner(provider, Budget::default());
            Ok(Arc::new(runner))
        };
        let runner = build().map_err(|e| {
            agentry_core::Error::permanent(format!("cannot build the workflow's LLM: {e:#}"))
        })?;
        self.runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, runner.clone());
        Ok(runner)
    }
}

#[async_trait::async_trait]
impl NodeRunner for PerWorkflowRunner {
    async fn run(&self, ctx: NodeContext) -> agentry_core::Result<NodeOutput> {
        let runner = self.runner_for(&ctx.options)?;
        runner.run(ctx).await
    }
}

/// The roles a `--roles` list names (`all` for every role).
pub fn parse_roles(list: &str) -> Result<Vec<String>> {
    let mut roles = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            roles.extend(Engine::all_queues());
            continue;
        }
        let role: AgentRole = part
            .parse()
            .map_err(|e| anyhow!("--roles: `{part}`: {e}"))?;
        roles.push(role.as_str().to_string());
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        bail!("--roles: name at least one role (business_analyst, developer, qa, technical_writer, devops) or `all`");
    }
    Ok(roles)
}

/// This process as a registry entry.
pub fn worker_info(roles: &[String], tags: &[String], concurrency: u32) -> WorkerInfo {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    WorkerInfo {
        id: format!("w-{}", uuid::Uuid::now_v7().simple()),
        host,
        pid: std::process::id(),
        roles: roles.to_vec(),
        tags: tags.to_vec(),
        concurrency,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: Utc::now(),
    }
}

/// Registers `info`, then heartbeats the engine's load every `every` until
/// `stop`; deregisters on the way out. A beat refused as unknown (the
/// record was pruned) registers again.
pub async fn heartbeat_loop(
    registry: Arc<dyn WorkerRegistry>,
    engine: Engine,
    info: WorkerInfo,
    every: Duration,
    stop: CancellationToken,
) {
    let span = info_span!("worker", worker_id = %info.id);
    async move {
        if let Err(error) = registry.register(info.clone()).await {
            warn!(%error, "Cannot register the worker; retrying with the heartbeats.");
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let beat = beat_of(&engine, &info.id);
            match registry.heartbeat(beat).await {
                Ok(()) => {}
                Err(agentry_core::Error::NotFound(_)) => {
                    if let Err(error) = registry.register(info.clone()).await {
                        warn!(%error, "Cannot register the worker again.");
                    }
                }
                Err(error) => warn!(%error, "Heartbeat failed."),
            }
        }
        if let Err(error) = registry.deregister(&info.id, Utc::now()).await {
            warn!(%error, "Cannot deregister the worker.");
        }
    }
    .instrument(span)
    .await
}

fn beat_of(engine: &Engine, id: &str) -> WorkerBeat {
    let loads = engine.queue_loads();
    WorkerBeat {
        id: id.to_string(),
        in_flight: loads.iter().map(|q| q.in_flight).sum(),
        tasks: engine.running_tasks(),
        completed: loads.iter().map(|q| q.completed).sum(),
        failed: loads.iter().map(|q| q.failed).sum(),
        last_task_at: loads.iter().filter_map(|q| q.last_task_at).max(),
        at: Utc::now(),
    }
}

/// Every `interval`, if this process holds (or takes) the sweep lease,
/// kicks running workflows unchanged for `stalled_for` whose missing tasks
/// no live worker is running.
pub async fn sweep_loop(
    registry: Arc<dyn WorkerRegistry>,
    dead_letters: Option<Arc<dyn agentry_core::DeadLetters>>,
    engine: Engine,
    holder: String,
    timing: SweepTiming,
    stop: CancellationToken,
) {
    let SweepTiming {
        interval,
        stalled_for,
        unhealthy_after,
        forget_after,
    } = timing;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let ttl = interval * 3;
        match registry
            .acquire_lease(SWEEP_LEASE, &holder, ttl, Utc::now())
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                warn!(%error, "Cannot take the sweep lease.");
                continue;
            }
        }
        let forget_before = Utc::now()
            - chrono::Duration::from_std(forget_after)
                .unwrap_or_else(|_| chrono::Duration::days(1));
        match registry.prune_workers(forget_before).await {
            Ok(0) => {}
            Ok(n) => info!(pruned = n, "Forgot long-gone workers."),
            Err(error) => warn!(%error, "Cannot prune the worker registry."),
        }
        let mut busy = match registry.list_workers().await {
            Ok(workers) => busy_tasks(&workers, unhealthy_after),
            Err(error) => {
                warn!(%error, "Cannot read the worker registry; sweep skipped.");
                continue;
            }
        };
        // A dead-lettered task waits for `dlq replay`: never re-dispatched.
        if let Some(dead) = &dead_letters {
            match dead.list_dead(DEAD_LETTERS_SEEN).await {
                Ok(list) => busy.extend(list.iter().map(|d| {
                    let t = &d.message.task;
                    format!("{}:{}:{}", t.workflow_id, t.step, t.node)
                })),
                Err(error) => {
                    warn!(%error, "Cannot read the dead-letter queue; sweep skipped.");
                    continue;
                }
            }
        }
        // One pass stays well inside the lease, and a stop does not wait
        // for it.
        let pass = tokio::time::timeout(interval * 2, engine.sweep_stalled(stalled_for, &busy));
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = pass => r,
        };
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(kicked = n, "Swept stalled workflows."),
            Ok(Err(error)) => warn!(%error, "Sweep failed."),
            Err(_) => warn!("A sweep pass took longer than two intervals; cut short."),
        }
    }
    let _ = registry.release_lease(SWEEP_LEASE, &holder).await;
}

/// How often the sweep runs and what it considers stalled, dead or gone.
#[derive(Debug, Clone, Copy)]
pub struct SweepTiming {
    /// Between sweeps.
    pub interval: Duration,
    /// A running workflow unchanged this long is checked.
    pub stalled_for: Duration,
    /// A worker silent this long is not trusted to run what it reported.
    pub unhealthy_after: Duration,
    /// A worker silent this long leaves the registry.
    pub forget_after: Duration,
}

impl SweepTiming {
    /// From the `[cluster]` settings.
    pub fn of(c: &crate::config::ClusterConfig) -> Self {
        SweepTiming {
            interval: Duration::from_secs(c.sweep_interval_s),
            stalled_for: Duration::from_secs(c.stall_after_s),
            unhealthy_after: Duration::from_secs(c.unhealthy_after_s),
            forget_after: Duration::from_secs(c.forget_after_s),
        }
    }
}

/// Task keys (`<workflow>:<step>:<node>`) that healthy workers run now.
pub fn busy_tasks(workers: &[WorkerRecord], unhealthy_after: Duration) -> HashSet<String> {
    let now = Utc::now();
    workers
        .iter()
        .filter(|w| w.health(now, unhealthy_after) == WorkerHealth::Healthy)
        .flat_map(|w| w.beat.tasks.iter())
        .map(|t| t.split('#').next().unwrap_or(t).to_string())
        .collect()
}

/// `agentry worker`
pub async fn worker(app: App, args: WorkerArgs, json_out: bool) -> Result<ExitCode> {
    if !app.distributed() {
        bail!("`agentry worker` runs in the distributed mode: set mode = \"distributed\" (AGENTRY_MODE=distributed) with database_url and amqp_url; the embedded mode runs its agents inside `agentry run` and `agentry serve`");
    }
    let roles = parse_roles(&args.roles)?;
    let tags: Vec<String> = args
        .tags
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let queues = queues_for(&roles, &tags).map_err(|e| anyhow!("--tags: {e}"))?;
    // QA runs generated code: a worker that would take QA's tasks on a
    // host that cannot isolate it does not start.
    if roles
        .iter()
        .any(|r| r == agentry_core::AgentRole::Qa.as_str())
    {
        app.sandbox_ready().await?;
    }
    let concurrency = args.concurrency.max(1);
    let cluster = app.config.cluster.clone();
    let app = Arc::new(app);
    let engine = app.engine_with(Arc::new(PerWorkflowRunner::new(app.clone())));
    let workers = engine.start_workers(queues.clone(), concurrency).await;
    let info = worker_info(&roles, &tags, concurrency as u32);
    let stop = CancellationToken::new();
    let beats = tokio::spawn(heartbeat_loop(
        app.registry(),
        engine.clone(),
        info.clone(),
        Duration::from_secs(cluster.heartbeat_s),
        stop.clone(),
    ));
    let sweeps = tokio::spawn(sweep_loop(
        app.registry(),
        app.dead_letters(),
        engine.clone(),
        info.id.clone(),
        SweepTiming::of(&cluster),
        stop.clone(),
    ));
    if json_out {
        println!(
            "{}",
            json!({"worker": info.id, "roles": roles, "tags": tags, "queues": queues, "concurrency": concurrency})
        );
    } else {
        println!(
            "agentry worker {}: serving {} with {concurrency} at a time",
            info.id,
            queues.join(", ")
        );
    }
    info!(worker_id = %info.id, queues = ?queues, concurrency, "Worker started.");
    crate::serve::shutdown_signal().await;
    info!(worker_id = %info.id, "Worker stopping.");
    let clean = workers
        .shutdown_within(Duration::from_secs(cluster.shutdown_grace_s))
        .await;
    if !clean {
        warn!("Tasks still running at the end of the grace period were given back.");
    }
    stop.cancel();
    let _ = beats.await;
    let _ = sweeps.await;
    engine.close().await;
    if let Some(bus) = &app.bus {
        bus.close().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `agentry agents`: the registry's workers with health and load, and
/// per role the live workers (and, distributed, the queue depth).
pub async fn agents(app: &App, args: AgentsArgs, json_out: bool) -> Result<ExitCode> {
    let timeout = Duration::from_secs(app.config.cluster.unhealthy_after_s);
    let mut workers = app
        .registry()
        .list_workers()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let now = Utc::now();
    if !args.all {
        workers.retain(|w| w.health(now, timeout) != WorkerHealth::Stopped);
    }
    let mut roles: BTreeMap<String, (u32, u32)> = Engine::all_queues()
        .into_iter()
        .map(|r| (r, (0, 0)))
        .collect();
    for w in &workers {
        if w.health(now, timeout) != WorkerHealth::Healthy {
            continue;
        }
        for r in &w.info.roles {
            let e = roles.entry(r.clone()).or_default();
            e.0 += 1;
            e.1 += w.info.concurrency;
        }
    }
    let mut depth: BTreeMap<String, Option<u32>> = BTreeMap::new();
    if let Some(bus) = &app.bus {
        for role in roles.keys() {
            let ready = bus.queue_stats(role).await.ok().map(|s| s.ready);
            depth.insert(role.clone(), ready);
        }
    }
    if json_out {
        let items: Vec<Value> = workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.info.id, "host": w.info.host, "pid": w.info.pid,
                    "roles": w.info.roles, "tags": w.info.tags, "concurrency": w.info.concurrency,
                    "health": w.health(now, timeout), "in_flight": w.beat.in_flight,
                    "tasks": w.beat.tasks, "completed": w.beat.completed, "failed": w.beat.failed,
                    "last_heartbeat": w.beat.at, "last_task_at": w.beat.last_task_at,
                    "started_at": w.info.started_at, "stopped_at": w.stopped_at,
                })
            })
            .collect();
        let role_items: Vec<Value> = roles
            .iter()
            .map(|(r, (n, slots))| {
                json!({"role": r, "healthy_workers": n, "slots": slots,
                       "queued": depth.get(r).copied().flatten()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"workers": items, "roles": role_items}))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        println!("no workers registered");
    }
    for w in &workers {
        let age = now.signed_duration_since(w.beat.at).num_seconds();
        println!(
            "{}  {:<9}  {}:{}  roles {}{}  in flight {}/{}  done {}  failed {}  beat {}s ago",
            w.info.id,
            w.health(now, timeout).as_str(),
            w.info.host,
            w.info.pid,
            w.info.roles.join(","),
            if w.info.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", w.info.tags.join(","))
            },
            w.beat.in_flight,
            w.info.concurrency,
            w.beat.completed,
            w.beat.failed,
            age.max(0)
        );
    }
    println!();
    for (r, (n, slots)) in &roles {
        let queued = depth
            .get(r)
            .copied()
            .flatten()
            .map(|d| format!(", {d} queued"))
            .unwrap_or_default();
        println!("{r:<18} {n} healthy worker(s), {slots} slot(s){queued}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `agentry dlq list` / `agentry dlq replay ID`
pub async fn dlq(app: &App, command: DlqCommand, json_out: bool) -> Result<ExitCode> {
    let Some(dead) = app.dead_letters() else {
        bail!("the dead-letter queue is RabbitMQ's: set mode = \"distributed\" (AGENTRY_MODE=distributed) with amqp_url");
    };
    match command {
        DlqCommand::List(args) => {
            let list = dead
                .list_dead(args.limit)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("the dead-letter queue is empty");
            } else {
                for d in &list {
                    println!(
                        "{}  {}  queue {}  {}  deliveries {}  {}",
                        d.id,
                        d.message.task,
                        d.message.queue,
                        d.reason,
                        d.deliveries
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "?".into()),
                        d.dead_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default()
                    );
                }
            }
        }
        DlqCommand::Replay(args) => {
            let task = dead
                .replay_dead(&args.id)
                .await
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("cannot replay dead letter {}", args.id))?;
            if json_out {
                println!(
                    "{}",
                    json!({"replayed": args.id, "task": task.task.to_string(), "queue": task.queue})
                );
            } else {
                println!("replayed {} ({}) onto {}", args.id, task.task, task.queue);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker processes of `agentry bench engine --worker-processes W`:
/// this binary's `worker` command, W times, on the benchmark's schema and
/// queue prefix.
pub struct BenchFleet {
    children: Vec<std::process::Child>,
    /// The workers' data directory, removed with the fleet.
    _data: tempfile::TempDir,
}

impl BenchFleet {
    /// Starts `count` workers of `concurrency` each and waits until all are
    /// registered.
    pub async fn start(
        config: &Config,
        schema: &str,
        prefix: &str,
        count: usize,
        concurrency: usize,
    ) -> Result<BenchFleet> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let database_url = config.database_url.clone().unwrap_or_default();
        let amqp_url = config.amqp_url.clone().unwrap_or_default();
        let data = tempfile::tempdir().context("cannot make a temporary data directory")?;
        let mut children = Vec::new();
        for _ in 0..count {
            let child = std::process::Command::new(&exe)
                .arg("--data-dir")
                .arg(data.path())
                .args(["--json", "worker", "--roles", "all", "--concurrency"])
                .arg(concurrency.to_string())
                .env("AGENTRY_MODE", "distributed")
                .env("AGENTRY_DATABASE_URL", &database_url)
                .env("AGENTRY_AMQP_URL", &amqp_url)
                .env_remove("AGENTRY_REDIS_URL")
                .env("AGENTRY_CLUSTER__DATABASE_SCHEMA", schema)
                .env("AGENTRY_CLUSTER__AMQP_PREFIX", prefix)
                .env(
                    "AGENTRY_CLUSTER__PREFETCH",
                    config.cluster.prefetch.to_string(),
                )
                .env("AGENTRY_CLUSTER__HEARTBEAT_S", "1")
                .env("AGENTRY_CLUSTER__UNHEALTHY_AFTER_S", "5")
                // A connection per task plus two for the heartbeat and the
                // relay, so a fleet fits PostgreSQL's default 100.
                .env(
                    "AGENTRY_CLUSTER__MAX_CONNECTIONS",
                    (concurrency + 2).min(16).to_string(),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("cannot start a worker process")?;
            children.push(child);
        }
        // Dropped on an early return below: the workers are killed.
        let mut fleet = BenchFleet {
            children,
            _data: data,
        };
        let registry = PostgresStore::connect(
            &database_url,
            PostgresOptions::default()
                .with_schema(schema)
                .with_max_connections(2),
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = registry
                .list_workers()
                .await
                .map_err(|e| anyhow!("{e}"))?
                .iter()
                .filter(|w| w.stopped_at.is_none())
                .count();
            if up >= count {
                break;
            }
            for child in &mut fleet.children {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("a benchmark worker exited early: {status}");
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("only {up} of {count} benchmark workers registered within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(fleet)
    }

    /// SIGTERM to every worker; waits for them (killing any still there
    /// after 30 s).
    pub async fn stop(mut self) {
        self.terminate().await;
    }

    async fn terminate(&mut self) {
        for child in &self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for child in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

impl Drop for BenchFleet {
    fn drop(&mut self) {
        // Workers still running (a benchmark that failed half-way) die
        // with the fleet.
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

//! The distributed mode's commands: `agentry worker`, `agentry agents`,
//! `agentry dlq`, and the worker fleet of `bench engine
//! --worker-processes`.
//!
//! Key design decision: a worker is the same engine as the embedded one,
//! with its queues on RabbitMQ and its store in PostgreSQL; what a fleet of
//! processes needs besides (heartbeats into the registry, the stall sweep
//! under a lease, a graceful way out) is `agentry-fleet`'s, which this
//! module only starts. The LLM a task uses comes from its workflow's
//! stored options ([`PerWorkflowRunner`]), so a worker serves runs started
//! with any provider.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use serde_json::{json, Value};
use tracing::info;

use agentry_agents::AgentNodeRunner;
use agentry_core::{
    queues_for, AgentRole, Budget, LlmSelection, NodeContext, NodeOutput, NodeRunner, RunOptions,
    WorkerHealth, WorkerRegistry,
};
use agentry_engine::Engine;
use agentry_fleet::Duties;
use agentry_store_postgres::{PostgresOptions, PostgresStore};

use crate::app::App;
use crate::cli::{AgentsArgs, DlqCommand, LlmArgs, WorkerArgs};
use crate::config::Config;
use crate::llm::LlmChoice;

/// Runs each task with the LLM its workflow was started with (the stored
/// `options.llm`), building one agent runner per distinct choice.
pub struct PerWorkflowRunner {
    app: Arc<App>,
    runners: Mutex<HashMap<String, Arc<dyn NodeRunner>>>,
}

impl PerWorkflowRunner {
    /// A runner over `app`'s adapters, with no agent runner built yet:
    /// each is built on the first task that needs its LLM.
    pub fn new(app: Arc<App>) -> Self {
        PerWorkflowRunner {
            app,
            runners: Mutex::new(HashMap::new()),
        }
    }

    fn runner_for(&self, options: &RunOptions) -> agentry_core::Result<Arc<dyn NodeRunner>> {
        // `agentry bench engine --worker-processes`: the benchmark's nodes.
        if let Some(latency) = agentry_engine::bench::bench_latency(options) {
            let key = format!("bench:{}", latency.as_nanos());
            let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
            let runner = runners
                .entry(key)
                .or_insert_with(|| agentry_engine::bench::bench_runner(latency));
            return Ok(runner.clone());
        }
        // Recording is the submitting process's business.
        let llm = options
            .llm
            .clone()
            .map(|l| LlmSelection { record: None, ..l });
        let key = serde_json::to_string(&llm).unwrap_or_default();
        if let Some(r) = self
            .runners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let app = &self.app;
        let build = || -> Result<Arc<dyn NodeRunner>> {
            let choice = LlmChoice::resolve(&LlmArgs::default(), llm.as_ref(), &app.config)?;
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
        let role: AgentRole = part.parse().with_context(|| format!("--roles: `{part}`"))?;
        roles.push(role.as_str().to_string());
    }
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        bail!("--roles: name at least one role (business_analyst, developer, qa, technical_writer, devops) or `all`");
    }
    Ok(roles)
}

/// `agentry worker`: consumes the queues of `--roles` (and their `--tags`
/// variants) until SIGTERM or SIGINT, registered and sweeping as a fleet
/// member; refuses the embedded mode, and a QA worker on a host that
/// cannot isolate generated tests.
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
    let queues = queues_for(&roles, &tags).context("--tags")?;
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
    let info = agentry_fleet::worker_info(&roles, &tags, concurrency as u32);
    let mut duties = Duties::new();
    duties.heartbeat(
        app.registry(),
        engine.clone(),
        info.clone(),
        Duration::from_secs(cluster.heartbeat_s),
    );
    duties.sweep(
        app.registry(),
        app.dead_letters(),
        engine.clone(),
        info.id.clone(),
        cluster.sweep_timing(),
    );
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
    agentry_fleet::shutdown_signal().await;
    info!(worker_id = %info.id, "Worker stopping.");
    let grace = Duration::from_secs(cluster.shutdown_grace_s);
    agentry_fleet::leave_fleet(&engine, workers, duties, grace).await;
    if let Some(bus) = &app.bus {
        bus.close().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `agentry agents`: the registry's workers with health and load, and
/// per role the live workers (and, distributed, the queue depth).
pub async fn agents(app: &App, args: AgentsArgs, json_out: bool) -> Result<ExitCode> {
    let timeout = Duration::from_secs(app.config.cluster.unhealthy_after_s);
    let mut workers = app.registry().list_workers().await?;
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

/// `agentry dlq list` / `agentry dlq replay ID`: the RabbitMQ dead-letter
/// queue, read without taking anything off it, and one letter put back on
/// its task queue.
pub async fn dlq(app: &App, command: DlqCommand, json_out: bool) -> Result<ExitCode> {
    let Some(dead) = app.dead_letters() else {
        bail!("the dead-letter queue is RabbitMQ's: set mode = \"distributed\" (AGENTRY_MODE=distributed) with amqp_url");
    };
    match command {
        DlqCommand::List(args) => {
            let list = dead.list_dead(args.limit).await?;
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
        .await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = registry
                .list_workers()
                .await?
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

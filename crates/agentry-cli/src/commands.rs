//! The handlers of the commands that act on workflows (`run`, `demo`,
//! `resume`, `approve`, `reject`, `cancel`, `workflows`), of `bench engine`,
//! `llm check` and `sandbox check`, and the dispatch of every command to
//! its handler; the distributed mode's, the gateway's and the models'
//! commands live in `cluster.rs`, `serve.rs` and `models.rs`. Each maps a
//! command to library calls, and its exit code says how the workflow ended.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use agentry_core::{
    Budget, Checkpoint, Limit, RunOptions, Store, WorkflowId, WorkflowQuery, WorkflowRecord,
    WorkflowStatus,
};
use agentry_engine::{Engine, Submission};

use crate::app::{env_map, App};
use crate::cli::{
    ApproveArgs, BenchBus, BenchCommand, BenchEngineArgs, BenchStore, Cli, Command, DemoArgs,
    HistoryArgs, ListArgs, LlmArgs, LlmCommand, ResumeArgs, RunArgs, SandboxCommand,
    WorkflowsCommand,
};
use crate::config::Config;
use crate::llm::LlmChoice;
use crate::progress::ProgressDisplay;
use crate::summary;

/// Runs one command; the exit code says how the workflow ended.
pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref(), &env_map())?;
    let json = cli.json;
    let command = match cli.command {
        // The benchmark uses its own stores, never the data directory's.
        Command::Bench(BenchCommand::Engine(args)) => {
            return bench_engine(&args, cli.data_dir.as_deref(), &config).await
        }
        Command::Bench(BenchCommand::Api(args)) => return crate::serve::bench_api(&args).await,
        Command::Bench(BenchCommand::Llm(args)) => {
            return crate::models::bench_llm(&args, &config, json).await
        }
        Command::Bench(BenchCommand::Quality(args)) => {
            return crate::bench_quality::bench_quality(&args, &config, json).await
        }
        Command::Bench(BenchCommand::Humaneval(args)) => {
            return crate::bench_humaneval::bench_humaneval(&args, &config, json).await
        }
        // A provider check needs no data directory.
        Command::Llm(LlmCommand::Check(args)) => return llm_check(&args, &config, json).await,
        // The model cache is not in the data directory.
        Command::Models(command) => return crate::models::command(command, &config, json).await,
        Command::Sandbox(SandboxCommand::Check) => return sandbox_check(&config, json).await,
        other => other,
    };
    let app = App::open(cli.data_dir.as_deref(), config).await?;
    match command {
        Command::Run(args) => run(&app, args, json).await,
        Command::Demo(args) => demo(&app, args, json).await,
        Command::Workflows(WorkflowsCommand::List(args)) => list(&app, args, json).await,
        Command::Workflows(WorkflowsCommand::Show(args)) => show(&app, &args.id, json).await,
        Command::Workflows(WorkflowsCommand::History(args)) => history(&app, args, json).await,
        Command::Resume(args) => resume(&app, args, json).await,
        Command::Approve(args) => approve(&app, args, json).await,
        Command::Reject(args) => {
            control(&app, &args.id, json, |engine, id| async move {
                engine.reject(id, &args.reason).await
            })
            .await
        }
        Command::Cancel(args) => {
            control(&app, &args.id, json, |engine, id| async move {
                engine.cancel(id, &args.reason).await
            })
            .await
        }
        Command::Serve(args) => crate::serve::serve(app, args, json).await,
        Command::Keys(command) => crate::serve::keys_command(&app, command, json).await,
        Command::Worker(args) => crate::cluster::worker(app, args, json).await,
        Command::Agents(args) => crate::cluster::agents(&app, args, json).await,
        Command::Dlq(command) => crate::cluster::dlq(&app, command, json).await,
        Command::Bench(_) | Command::Llm(_) | Command::Models(_) | Command::Sandbox(_) => {
            bail!(
                "internal error: bench, llm, models and sandbox are handled before the data directory opens"
            )
        }
    }
}

/// Applies one control action (reject, cancel) with a control-only engine,
/// publishes its events, and prints the new status.
async fn control<F, Fut>(app: &App, id: &str, json: bool, action: F) -> Result<ExitCode>
where
    F: FnOnce(Engine, WorkflowId) -> Fut,
    Fut: std::future::Future<Output = agentry_core::Result<WorkflowRecord>>,
{
    let record = app.workflow(id).await?;
    let engine = app.control_engine();
    let result = action(engine.clone(), record.id).await;
    engine.close().await;
    print_status(&result?, json);
    Ok(ExitCode::SUCCESS)
}

async fn run(app: &App, args: RunArgs, json: bool) -> Result<ExitCode> {
    let requirement = match (&args.requirement, &args.file) {
        (Some(text), None) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read requirement file {}", path.display()))?,
        (None, None) => {
            bail!("give a requirement: `agentry run \"...\"` or `agentry run --file FILE`")
        }
        (Some(_), Some(_)) => bail!("give the requirement as text or with --file, not both"),
    };
    if requirement.trim().is_empty() {
        bail!("the requirement is empty: describe the software you want built");
    }
    let definition = app.definition(args.workflow.as_deref())?;
    let choice = LlmChoice::resolve(&args.llm, None, &app.config)?;
    let project = &app.config.project;
    let options = RunOptions {
        llm: Some(choice.selection()),
        project_key: args.project_key.clone().or_else(|| project.key.clone()),
        repository: args
            .repository
            .clone()
            .or_else(|| project.repository.clone()),
        target_branch: args
            .target_branch
            .clone()
            .or_else(|| project.target_branch.clone()),
        budget: flag_budget(&args.llm)?,
        bench: None,
    };
    options.validate()?;
    let engine = app
        .engine(
            choice.provider(&app.config, app.llm_cache.clone())?,
            Budget::default(),
        )
        .await?;
    let record = engine
        .submit(Submission {
            requirements: requirement,
            request_id: args.request_id.clone(),
            definition,
            options,
            tenant: None,
        })
        .await?;
    eprintln!("workflow {}", record.id);
    if args.detach {
        // Distributed: started and its first tasks queued; the workers
        // carry it from there. Embedded: stored, to be run by `resume`
        // (this process's workers end with it).
        let record = if app.distributed() {
            let started = engine.start_detached(record.id).await;
            engine.close().await;
            started?
        } else {
            record
        };
        print_status(&record, json);
        return Ok(ExitCode::SUCCESS);
    }
    drive(app, &engine, record.id, json).await
}

async fn demo(app: &App, args: DemoArgs, json: bool) -> Result<ExitCode> {
    let run_args = RunArgs {
        requirement: Some(agentry_agents::demo::DEMO_REQUIREMENT.to_string()),
        file: None,
        workflow: args.workflow,
        project_key: None,
        repository: None,
        target_branch: None,
        request_id: None,
        detach: false,
        llm: LlmArgs {
            llm: Some("demo".into()),
            llm_latency_ms: args.llm_latency_ms,
            ..LlmArgs::default()
        },
    };
    run(app, run_args, json).await
}

async fn resume(app: &App, args: ResumeArgs, json: bool) -> Result<ExitCode> {
    let record = app.workflow(&args.id).await?;
    let engine = engine_for(app, &record, &args.llm).await?;
    drive(app, &engine, record.id, json).await
}

async fn approve(app: &App, args: ApproveArgs, json: bool) -> Result<ExitCode> {
    let record = app.workflow(&args.id).await?;
    let engine = engine_for(app, &record, &args.llm).await?;
    let record = engine.approve(record.id, &args.note).await?;
    if args.no_run {
        print_status(&record, json);
        return Ok(ExitCode::SUCCESS);
    }
    drive(app, &engine, record.id, json).await
}

/// An engine for a stored workflow, with the LLM it started with unless
/// flags override it.
async fn engine_for(app: &App, record: &WorkflowRecord, llm: &LlmArgs) -> Result<Engine> {
    let choice = LlmChoice::resolve(llm, record.options.llm.as_ref(), &app.config)?;
    app.engine(
        choice.provider(&app.config, app.llm_cache.clone())?,
        flag_budget(llm)?,
    )
    .await
}

/// The workflow-wide budget given by `--budget-usd` / `--budget-tokens`.
fn flag_budget(args: &LlmArgs) -> Result<Budget> {
    if let Some(usd) = args.budget_usd {
        if !(usd.is_finite() && usd >= 0.0) {
            bail!("--budget-usd must be a non-negative number of US dollars, not {usd}");
        }
    }
    Ok(Budget {
        workflow: Limit {
            max_cost_usd: args.budget_usd,
            max_tokens: args.budget_tokens,
        },
        roles: Default::default(),
    })
}

/// `agentry llm check`: one tiny request to each provider the
/// configuration names; exits 1 unless every one answered.
async fn llm_check(args: &LlmArgs, config: &Config, json: bool) -> Result<ExitCode> {
    let reports = crate::llm::check(args, config).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", crate::llm::render_check(&reports));
    }
    let healthy = !reports.is_empty() && reports.iter().all(|r| r.status == "ok");
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `agentry sandbox check`: whether generated tests can run here with the
/// configured isolation, and with what; exits 1 when they cannot.
async fn sandbox_check(config: &Config, json: bool) -> Result<ExitCode> {
    let sandbox = agentry_sandbox_process::ProcessSandbox::new(config.sandbox.adapter());
    let ready = sandbox.ready(&config.sandbox.limits()).await;
    match (&ready, json) {
        (Ok(isolation), true) => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ready": true, "isolation": isolation}))?
        ),
        (Err(error), true) => println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ready": false, "error": error.to_string()}))?
        ),
        (Ok(isolation), false) => println!("sandbox ready: {}", isolation.describe()),
        (Err(error), false) => println!("sandbox NOT ready: {error}"),
    }
    Ok(if ready.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs (or resumes) a workflow with live progress, then prints the summary.
async fn drive(app: &App, engine: &Engine, id: WorkflowId, json: bool) -> Result<ExitCode> {
    let display = ProgressDisplay::new(false);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(display.follow(id, engine.subscribe(), ended_rx));
    let result = engine.run(id).await;
    engine.close().await;
    if let Ok(record) = &result {
        let _ = ended_tx.send(record.status);
    }
    // Let the display drain the final events, but never wait long for it.
    let _ = tokio::time::timeout(Duration::from_secs(2), follower).await;
    let record = result?;
    let summary = summary::summarize(app, id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("\n{}", summary::render(&summary, false));
    }
    Ok(exit_code(record.status))
}

fn exit_code(status: WorkflowStatus) -> ExitCode {
    match status {
        WorkflowStatus::Completed | WorkflowStatus::AwaitingApproval => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn print_status(record: &WorkflowRecord, json: bool) {
    if json {
        println!(
            "{}",
            json!({"id": record.id, "status": record.status, "current_step": record.current_step})
        );
    } else {
        println!("workflow {}: {}", record.id, record.status);
    }
}

async fn list(app: &App, args: ListArgs, json: bool) -> Result<ExitCode> {
    let status = match &args.status {
        Some(s) => Some(s.parse::<WorkflowStatus>()?),
        None => None,
    };
    let page = app
        .store
        .list_workflows(WorkflowQuery {
            status,
            tenant: None,
            limit: args.limit,
            before: None,
        })
        .await?;
    if json {
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|w| {
                json!({
                    "id": w.id, "request_id": w.request_id, "status": w.status,
                    "current_step": w.current_step, "workflow": w.workflow_name,
                    "requirements": first_line(&w.requirements),
                    "created_at": w.created_at, "updated_at": w.updated_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for w in &page.items {
            println!(
                "{}  {:<17}  {:<24}  {}",
                w.id,
                w.status.as_str(),
                w.current_step,
                first_line(&w.requirements)
            );
        }
        if page.items.is_empty() {
            println!("no workflows");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = line.trim().trim_start_matches('#').trim();
    if line.chars().count() > 60 {
        format!("{}...", line.chars().take(57).collect::<String>())
    } else {
        line.to_string()
    }
}

async fn show(app: &App, id: &str, json: bool) -> Result<ExitCode> {
    let record = app.workflow(id).await?;
    let state = app.store.state_at(record.id, None).await?;
    let summary = summary::summarize(app, record.id).await?;
    if json {
        let mut value = serde_json::to_value(&state)?;
        if let Value::Object(map) = &mut value {
            map.insert("workflow".into(), json!(record.workflow_name));
            map.insert("pending".into(), json!(record.cursor.pending));
            map.insert("artifacts".into(), serde_json::to_value(&summary)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("requirement: {}", first_line(&state.requirements));
        println!("current step: {} (step {})", state.current_step, state.step);
        println!("{}", summary::render(&summary, true));
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(app: &App, args: HistoryArgs, json: bool) -> Result<ExitCode> {
    let record = app.workflow(&args.id).await?;
    if let Some(step) = args.step {
        let state = app.store.state_at(record.id, Some(step)).await?;
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(ExitCode::SUCCESS);
    }
    let checkpoints = app.store.checkpoints(record.id).await?;
    if json {
        let items: Vec<Value> = checkpoints.iter().map(history_entry).collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for cp in &checkpoints {
            let entry = history_entry(cp);
            println!(
                "#{:<3} step {:<3} {:<18} {:<18} {}",
                cp.seq,
                cp.step,
                cp.node.as_deref().unwrap_or("(control)"),
                cp.status.as_str(),
                entry["changes"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history_entry(cp: &Checkpoint) -> Value {
    let d = &cp.delta;
    let mut changes: Vec<String> = Vec::new();
    for o in &d.agent_outputs {
        changes.push(format!("output {}", o.state_key()));
    }
    for k in d.shared_context.keys() {
        changes.push(format!("context {k}"));
    }
    if !d.jira_tickets.is_empty() {
        changes.push(format!("tickets {}", d.jira_tickets.join(",")));
    }
    if !d.confluence_pages.is_empty() {
        changes.push(format!("{} pages", d.confluence_pages.len()));
    }
    for e in &d.errors {
        changes.push(format!("error: {}", e.message));
    }
    if !cp.note.is_empty() {
        changes.push(cp.note.clone());
    }
    json!({
        "seq": cp.seq, "step": cp.step, "node": cp.node, "attempt": cp.attempt,
        "status": cp.status, "current_step": cp.current_step, "note": cp.note,
        "pending": cp.cursor.as_ref().map(|c| c.pending.clone()),
        "changes": changes.join("; "), "created_at": cp.created_at,
    })
}

/// Reports a benchmark store's size in bytes, when it can tell.
type SizeProbe = Box<dyn Fn() -> Option<u64> + Send + Sync>;

async fn bench_engine(
    args: &BenchEngineArgs,
    data_dir: Option<&Path>,
    config: &Config,
) -> Result<ExitCode> {
    if args.workflows == 0 || args.concurrency == 0 {
        bail!("--workflows and --concurrency must be at least 1");
    }
    let remote = args.worker_processes > 0;
    if remote && (args.bus != BenchBus::Amqp || !matches!(args.store, BenchStore::Postgres)) {
        bail!("--worker-processes needs --bus amqp and --store postgres (the workers share them)");
    }
    let cfg = agentry_engine::bench::BenchConfig {
        workflows: args.workflows,
        concurrency: args.concurrency,
        node_latency: Duration::from_millis(args.llm_latency_ms),
        local_workers: !remote,
    };
    // Each store with its size probe (the memory store's JSON, or the
    // SQLite database plus its log).
    let mut schema = None;
    let (store, size): (Arc<dyn Store>, SizeProbe) = match args.store {
        BenchStore::Memory => {
            let store = Arc::new(agentry_store_memory::MemoryStore::new());
            let probe = store.clone();
            (store, Box::new(move || Some(probe.approx_bytes())))
        }
        BenchStore::Sqlite => {
            let options = agentry_store_sqlite::SqliteStoreOptions::default()
                .with_synchronous(args.synchronous.parse()?);
            let store = match data_dir {
                Some(dir) => {
                    let path = dir.join(format!("bench-{}.db", uuid::Uuid::new_v4().simple()));
                    agentry_store_sqlite::SqliteStore::open(&path, options).await
                }
                None => agentry_store_sqlite::SqliteStore::open_temporary(options).await,
            }?;
            let store = Arc::new(store);
            let probe = store.clone();
            (store, Box::new(move || probe.file_size_bytes().ok()))
        }
        BenchStore::Postgres => {
            let url = config.database_url.clone().ok_or_else(|| {
                anyhow!("--store postgres needs AGENTRY_DATABASE_URL (or database_url in the config), e.g. postgres://postgres@127.0.0.1:5432/test")
            })?;
            // With worker processes, this process only submits and waits.
            let pool = if args.worker_processes > 0 { 8 } else { 32 };
            let options = agentry_store_postgres::PostgresOptions::default()
                .with_max_connections(args.concurrency.clamp(4, pool) as u32);
            let store =
                agentry_store_postgres::PostgresStore::connect_temporary(&url, options).await?;
            schema = store.schema().map(str::to_string);
            (Arc::new(store), Box::new(|| None))
        }
    };
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (bus, amqp): (Arc<dyn agentry_core::Bus>, _) = match args.bus {
        BenchBus::Inproc => (Arc::new(agentry_bus_inproc::InprocBus::new()), None),
        BenchBus::Amqp => {
            let url = config.amqp_url.clone().ok_or_else(|| {
                anyhow!("--bus amqp needs AGENTRY_AMQP_URL (or amqp_url in the config), e.g. amqp://guest:guest@127.0.0.1:5672/%2f")
            })?;
            let bus = Arc::new(
                agentry_bus_amqp::AmqpBus::connect(agentry_bus_amqp::AmqpOptions {
                    url,
                    prefix: prefix.clone(),
                    prefetch: config.cluster.prefetch,
                    ..agentry_bus_amqp::AmqpOptions::default()
                })
                .await
                .context("cannot connect to RabbitMQ")?,
            );
            (bus.clone(), Some(bus))
        }
    };
    let fleet = if remote {
        let per = args
            .worker_concurrency
            .unwrap_or_else(|| args.concurrency.div_ceil(args.worker_processes))
            .max(1);
        Some(
            crate::cluster::BenchFleet::start(
                config,
                schema.as_deref().unwrap_or("public"),
                &prefix,
                args.worker_processes,
                per,
            )
            .await?,
        )
    } else {
        None
    };
    // The store outlives the worker processes: a temporary schema is
    // dropped with it.
    let result = agentry_engine::bench::bench_engine(store.clone(), bus, cfg, size).await;
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    drop(store);
    if let Some(bus) = amqp {
        // The benchmark's queues and exchanges go with it.
        if let Err(error) = bus.delete_topology(&Engine::all_queues()).await {
            tracing::warn!(%error, "Cannot delete the benchmark's RabbitMQ queues.");
        }
        bus.close().await;
    }
    let report = result?;
    let mut value = serde_json::to_value(&report)?;
    if let Value::Object(map) = &mut value {
        if matches!(args.store, BenchStore::Sqlite) {
            map.insert("synchronous".into(), json!(args.synchronous));
        }
        map.insert(
            "bus".into(),
            json!(match args.bus {
                BenchBus::Inproc => "inproc",
                BenchBus::Amqp => "amqp",
            }),
        );
        map.insert("worker_processes".into(), json!(args.worker_processes));
    }
    println!("{}", serde_json::to_string(&value)?);
    Ok(ExitCode::SUCCESS)
}

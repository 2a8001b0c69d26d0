//! `agentry serve`, `agentry keys` and `agentry bench api`: the gateway
//! wired to the app's adapters. Embedded, the server runs every node in
//! its own workers; distributed, it only accepts and dispatches, and
//! `GET /v1/agents` reads the worker registry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use agentry_core::{AccessRole, ApiKeyStore, Budget, RunOptions, Store};
use agentry_engine::{Engine, EngineConfig, WorkflowDefinition};
use agentry_fleet::Duties;
use agentry_gateway::auth::keys;
use agentry_gateway::{DefinitionSource, Gateway, GatewayConfig, GatewayDeps, TlsConfig};
use agentry_store_memory::MemoryRateLimiter;

use crate::app::App;
use crate::bench_api::{run_load, LoadSpec};
use crate::cli::{BenchApiArgs, BenchExecution, KeysCommand, ServeArgs};
use crate::llm::LlmChoice;

/// Definitions an API submission may name: the bundled `sdlc`, the
/// configured `workflow.file` (by its file stem), and `NAME.toml` files in
/// `workflow.dir`.
struct AppDefinitions {
    default: WorkflowDefinition,
    file: Option<(String, PathBuf)>,
    dir: Option<PathBuf>,
}

impl AppDefinitions {
    fn new(app: &App) -> Result<Self> {
        let default = app.definition(None)?;
        let file = app.config.workflow.file.as_ref().and_then(|p| {
            p.file_stem()
                .map(|s| (s.to_string_lossy().to_string(), p.clone()))
        });
        if let Some(dir) = &app.config.workflow.dir {
            anyhow::ensure!(
                dir.is_dir(),
                "workflow.dir {} is not a directory",
                dir.display()
            );
        }
        Ok(AppDefinitions {
            default,
            file,
            dir: app.config.workflow.dir.clone(),
        })
    }

    fn dir_names(&self) -> Vec<String> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                (path.extension()? == "toml")
                    .then(|| path.file_stem().map(|s| s.to_string_lossy().to_string()))?
            })
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl DefinitionSource for AppDefinitions {
    fn names(&self) -> Vec<String> {
        let mut names = vec![self.default.name.clone()];
        if let Some((name, _)) = &self.file {
            names.push(name.clone());
        }
        names.extend(self.dir_names());
        names.sort();
        names.dedup();
        names
    }

    fn load(&self, name: Option<&str>) -> Result<WorkflowDefinition, String> {
        let Some(name) = name else {
            return Ok(self.default.clone());
        };
        if name == self.default.name {
            return Ok(self.default.clone());
        }
        if let Some((file_name, path)) = &self.file {
            if name == file_name {
                return WorkflowDefinition::load(path)
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        crate::app::known_checks(&d)
                            .map(|()| d)
                            .map_err(|e| e.to_string())
                    });
            }
        }
        if valid_name(name) {
            if let Some(dir) = &self.dir {
                let path = dir.join(format!("{name}.toml"));
                if path.is_file() {
                    return WorkflowDefinition::load(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|d| {
                            crate::app::known_checks(&d)
                                .map(|()| d)
                                .map_err(|e| e.to_string())
                        });
                }
            }
        }
        Err(format!(
            "unknown workflow `{name}`; known: {}",
            self.names().join(", ")
        ))
    }
}

/// The benchmark's definition source: its one workflow is also the
/// default, and any other name is refused.
struct OneDefinition(WorkflowDefinition);

impl DefinitionSource for OneDefinition {
    fn names(&self) -> Vec<String> {
        vec![self.0.name.clone()]
    }

    fn load(&self, name: Option<&str>) -> Result<WorkflowDefinition, String> {
        match name {
            None => Ok(self.0.clone()),
            Some(n) if n == self.0.name => Ok(self.0.clone()),
            Some(n) => Err(format!("unknown workflow `{n}`; known: {}", self.0.name)),
        }
    }
}

/// `agentry serve`: the gateway over this deployment's engine until
/// SIGTERM or SIGINT. Embedded, it runs the agents itself and heartbeats
/// as the deployment's one worker; distributed, it only accepts and
/// dispatches, and takes its turn at the stall sweep.
pub async fn serve(app: App, args: ServeArgs, json: bool) -> Result<ExitCode> {
    let mut config = app.config.gateway.clone();
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let Some(n) = args.max_running {
        config.max_running_workflows = n;
    }
    let choice = LlmChoice::resolve(&args.llm, None, &app.config)?;
    let (engine, workers) = app
        .engine_with_workers(
            choice.provider(&app.config, app.llm_cache.clone())?,
            Budget::default(),
        )
        .await?;
    let distributed = app.distributed();
    let cluster = app.config.cluster.clone();
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let unhealthy_after = Duration::from_secs(cluster.unhealthy_after_s);
    let gateway = Gateway::new(GatewayDeps {
        engine: engine.clone(),
        workers: (!distributed).then_some(workers),
        keys: app.store.clone(),
        limiter: app.limiter.clone(),
        definitions: Arc::new(AppDefinitions::new(&app)?),
        base_options: RunOptions {
            llm: Some(choice.selection()),
            ..RunOptions::default()
        },
        config,
        // Distributed: this server only accepts and dispatches; the
        // workers' commits carry every workflow on, and the registry
        // shows them.
        execution: if distributed {
            agentry_gateway::Execution::Dispatch
        } else {
            agentry_gateway::Execution::Local
        },
        registry: distributed.then(|| (app.registry(), unhealthy_after)),
    })?;
    let mut duties = Duties::new();
    if distributed {
        // Lost dispatches (a worker killed between commit and dispatch
        // with its redelivery dead-lettered, a broker outage) are swept by
        // whichever process holds the lease: a worker or a server.
        duties.sweep(
            app.registry(),
            app.dead_letters(),
            engine.clone(),
            format!("gateway-{}", uuid::Uuid::now_v7().simple()),
            cluster.sweep_timing(),
        );
    } else {
        // The embedded server is this deployment's one worker: it shows in
        // `agentry agents` like a worker process does.
        let roles = Engine::all_queues();
        let info = agentry_fleet::worker_info(&roles, &[], app.config.engine.workers as u32);
        duties.heartbeat(
            app.registry(),
            engine.clone(),
            info,
            Duration::from_secs(cluster.heartbeat_s),
        );
    }
    if json {
        println!(
            "{}",
            json!({"listening": addr.to_string(), "url": format!("{scheme}://{addr}")})
        );
    } else {
        println!(
            "agentry serve: listening on {scheme}://{addr} (API docs at {scheme}://{addr}/docs)"
        );
    }
    let served = gateway
        .serve(listener, agentry_fleet::shutdown_signal())
        .await;
    duties.stop().await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `agentry keys create|list|revoke`: API keys in the store; a new key is
/// printed once, on stdout, and never again.
pub async fn keys_command(app: &App, command: KeysCommand, json: bool) -> Result<ExitCode> {
    let store: Arc<dyn ApiKeyStore> = app.store.clone();
    match command {
        KeysCommand::Create(args) => {
            let role: AccessRole = args.role.parse().context("--role")?;
            let issued = keys::issue(&args.tenant, role, &args.name).context("--tenant")?;
            store.create_api_key(issued.record.clone()).await?;
            if json {
                println!(
                    "{}",
                    json!({"key": issued.key, "id": issued.record.id, "tenant": issued.record.tenant,
                           "role": issued.record.role, "name": issued.record.name})
                );
            } else {
                println!("{}", issued.key);
                eprintln!(
                    "API key {} for tenant {} ({}); it is shown only now.",
                    issued.record.id, issued.record.tenant, issued.record.role
                );
            }
        }
        KeysCommand::List(args) => {
            let list = store.list_api_keys(args.tenant.as_deref()).await?;
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|k| {
                        json!({"id": k.id, "tenant": k.tenant, "role": k.role, "name": k.name,
                                    "created_at": k.created_at, "revoked_at": k.revoked_at})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if list.is_empty() {
                println!("no API keys");
            } else {
                for k in &list {
                    println!(
                        "{}  {:<20}  {:<8}  {}  {}",
                        k.id,
                        k.tenant,
                        k.role,
                        k.revoked_at
                            .map(|t| format!("revoked {}", t.format("%Y-%m-%d %H:%M")))
                            .unwrap_or_else(|| "active".to_string()),
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke(args) => {
            let id = keys::parse(&args.id)
                .map(|(id, _)| id.to_string())
                .unwrap_or(args.id.clone());
            let record = store.revoke_api_key(&id, chrono::Utc::now()).await?;
            if json {
                println!(
                    "{}",
                    json!({"id": record.id, "revoked_at": record.revoked_at})
                );
            } else {
                println!("API key {} revoked", record.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `agentry bench api`: a real server on loopback over a temporary SQLite
/// store, its workflows run by the engine benchmark's node runner.
pub async fn bench_api(args: &BenchApiArgs) -> Result<ExitCode> {
    if !(args.rate.is_finite() && args.rate > 0.0) || args.duration_s <= 0.0 {
        bail!("--rate and --duration-s must be positive");
    }
    let options = agentry_store_sqlite::SqliteStoreOptions::default()
        .with_synchronous(args.synchronous.parse()?);
    let store = Arc::new(agentry_store_sqlite::SqliteStore::open_temporary(options).await?);
    let engine = Engine::new(
        store.clone() as Arc<dyn Store>,
        Arc::new(agentry_bus_inproc::InprocBus::new()),
        agentry_engine::bench::bench_runner(Duration::from_millis(args.llm_latency_ms)),
        EngineConfig::default(),
    );
    // `dispatch`: accepted workflows are started and their first tasks
    // queued for workers elsewhere, as a gateway in front of remote workers
    // does; `local`: this process also runs every node.
    let execution = match args.execution {
        BenchExecution::Local => agentry_gateway::Execution::Local,
        BenchExecution::Dispatch => agentry_gateway::Execution::Dispatch,
    };
    let workers = match args.execution {
        BenchExecution::Dispatch => None,
        BenchExecution::Local => Some(
            engine
                .start_workers(Engine::all_queues(), args.workers.max(1))
                .await,
        ),
    };
    let workers_n = if workers.is_some() {
        args.workers.max(1)
    } else {
        0
    };
    let issued = keys::issue("bench", AccessRole::Operator, "bench")?;
    store.create_api_key(issued.record.clone()).await?;
    let config = GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        rate_limit: agentry_core::RateLimit {
            rate_per_s: 1e9,
            burst: u32::MAX,
        },
        max_running_workflows: 1_000_000,
        shutdown_grace_s: 5,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(GatewayDeps {
        engine: engine.clone(),
        workers,
        keys: store.clone(),
        limiter: Arc::new(MemoryRateLimiter::new()),
        definitions: Arc::new(OneDefinition(WorkflowDefinition::bench()?)),
        base_options: RunOptions::default(),
        config,
        execution,
        registry: None,
    })?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind loopback")?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let spec = LoadSpec {
        url: format!("http://{addr}/v1/workflows"),
        bearer: issued.key,
        body: json!({"requirement": "benchmark: a URL shortener with tests"}),
        rate_per_s: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        warmup: Duration::from_secs_f64(args.warmup_s.max(0.0)),
        max_in_flight: args.max_in_flight.max(1),
    };
    let report = run_load(&spec).await;
    let completed_steps = engine.metrics().tasks_committed;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    let report = report?;
    let mut value = serde_json::to_value(&report)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("bench".into(), json!("api"));
        map.insert("store".into(), json!("sqlite"));
        map.insert("synchronous".into(), json!(args.synchronous));
        map.insert("node_latency_ms".into(), json!(args.llm_latency_ms));
        map.insert(
            "execution".into(),
            json!(format!("{:?}", args.execution).to_lowercase()),
        );
        map.insert("workers".into(), json!(workers_n));
        map.insert("node_runs_committed".into(), json!(completed_steps));
        map.insert(
            "peak_rss_mb".into(),
            json!(agentry_engine::bench::peak_rss_mb()),
        );
    }
    println!("{}", serde_json::to_string(&value)?);
    Ok(ExitCode::SUCCESS)
}

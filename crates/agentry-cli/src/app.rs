//! Wiring: configuration -> adapters -> engine.
//!
//! Key design decision: the app holds every adapter as a port (`Arc<dyn
//! ...>`), chosen once from `mode`: the embedded mode opens SQLite and
//! gives each engine its own in-process bus; the distributed mode connects
//! to PostgreSQL, RabbitMQ and (when configured) Redis, shared by every
//! engine of the process. Commands never know which.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use agentry_agents::{AgentConfig, AgentDeps, AgentNodeRunner};
use agentry_bus_inproc::InprocBus;
use agentry_core::{
    ApiKeyStore, Budget, Bus, DeadLetters, IntegrationResolver, Isolation, LlmCache, LlmLedger,
    LlmProvider, NodeContext, NodeOutput, NodeRunner, RateLimiter, SandboxLimits, Store,
    WorkerRegistry, WorkflowRecord,
};
use agentry_engine::{Engine, EngineConfig, WorkerHandle, WorkflowDefinition};
use agentry_integrations_local::LocalIntegrations;
use agentry_sandbox_process::ProcessSandbox;
use agentry_store_sqlite::SqliteStore;

use crate::config::{Config, Mode};

/// Every store port in one object: the SQLite and PostgreSQL stores
/// implement them all.
pub trait StoreAll: Store + LlmLedger + LlmCache + ApiKeyStore + WorkerRegistry {}

impl<T> StoreAll for T where T: Store + LlmLedger + LlmCache + ApiKeyStore + WorkerRegistry {}

/// The adapters of one deployment.
pub struct App {
    /// Effective configuration.
    pub config: Config,
    /// The store (SQLite or PostgreSQL).
    pub store: Arc<dyn StoreAll>,
    /// The shared bus of the distributed mode (RabbitMQ); None in the
    /// embedded mode, where each engine gets its own in-process bus.
    pub bus: Option<Arc<agentry_bus_amqp::AmqpBus>>,
    /// The LLM response cache (Redis when configured, else the store).
    pub llm_cache: Arc<dyn LlmCache>,
    /// Rate-limit buckets (Redis when configured, else this process).
    pub limiter: Arc<dyn RateLimiter>,
    /// The tracker, wiki and code host of each artifact owner (the
    /// command line's namespace, or an API tenant's).
    pub integrations: Arc<dyn IntegrationResolver>,
    sandbox: Arc<ProcessSandbox>,
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "agentry.db";

impl App {
    /// Opens (creating if needed) the data directory and the adapters of
    /// the configured mode.
    pub async fn open(cli_data_dir: Option<&Path>, config: Config) -> Result<App> {
        let data_dir = cli_data_dir
            .map(Path::to_path_buf)
            .or_else(|| config.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".agentry"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
        let db_path = data_dir.join(DB_FILE);
        let (store, bus, llm_cache, limiter) = match config.mode {
            Mode::Embedded => {
                let store: Arc<dyn StoreAll> = Arc::new(
                    SqliteStore::open(&db_path, sqlite_options(&config.store.synchronous)?)
                        .await
                        .with_context(|| format!("cannot open the store {}", db_path.display()))?,
                );
                let limiter: Arc<dyn RateLimiter> =
                    Arc::new(agentry_store_memory::MemoryRateLimiter::new());
                (store.clone(), None, store as Arc<dyn LlmCache>, limiter)
            }
            Mode::Distributed => crate::cluster::connect(&config).await?,
        };
        let local = LocalIntegrations::open(&db_path, &data_dir)
            .await
            .with_context(|| {
                format!(
                    "cannot open the local integrations in {}",
                    data_dir.display()
                )
            })?;
        let sandbox = ProcessSandbox::new(config.sandbox.adapter());
        Ok(App {
            integrations: Arc::new(local),
            sandbox: Arc::new(sandbox),
            store,
            bus,
            llm_cache,
            limiter,
            config,
        })
    }

    /// The store as the port.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The worker registry (in the store).
    pub fn registry(&self) -> Arc<dyn WorkerRegistry> {
        self.store.clone()
    }

    /// The dead-letter queue: RabbitMQ's in the distributed mode; None in
    /// the embedded mode (its in-process bus lives and dies with one
    /// command).
    pub fn dead_letters(&self) -> Option<Arc<dyn DeadLetters>> {
        self.bus.clone().map(|b| b as Arc<dyn DeadLetters>)
    }

    /// Whether agents run in `agentry worker` processes (distributed) rather
    /// than in this one.
    pub fn distributed(&self) -> bool {
        self.config.mode == Mode::Distributed
    }

    /// The agents' node runner over `llm`. This is the one place that
    /// decides compact prompts: the configuration's `compact_prompts` when
    /// set, else what the provider's profile asks for (the local model's,
    /// through whatever layers wrap it).
    pub fn runner(&self, llm: Arc<dyn LlmProvider>, budget_override: Budget) -> AgentNodeRunner {
        let compact = self
            .config
            .llm
            .compact_prompts
            .unwrap_or_else(|| llm.profile().compact_prompts());
        AgentNodeRunner::new(
            AgentDeps {
                llm,
                llm_by_role: HashMap::new(),
                integrations: self.integrations.clone(),
                sandbox: self.sandbox.clone(),
                ledger: Some(self.store.clone()),
            },
            AgentConfig {
                sandbox_limits: self.sandbox_limits(),
                default_project_key: self.config.project.key.clone(),
                prices: self.config.llm.prices.clone(),
                budget: self.config.budget.clone(),
                budget_override,
                compact,
                ..AgentConfig::default()
            },
        )
    }

    /// Sandbox limits from the configuration.
    fn sandbox_limits(&self) -> SandboxLimits {
        self.config.sandbox.limits()
    }

    /// The isolation a test run gets here, or why none may run: asked
    /// before agents start, so a host that cannot run generated code
    /// safely fails at once rather than after the developer's work.
    pub async fn sandbox_ready(&self) -> Result<Isolation> {
        self.sandbox
            .ready(&self.sandbox_limits())
            .await
            .map_err(|error| anyhow!("test runs cannot happen on this host: {error}"))
    }

    /// An engine whose agents use `llm`, with in-process workers started.
    /// `budget_override` caps win over the workflow's stored budget (a
    /// budget raised on resume).
    pub async fn engine(
        &self,
        llm: Arc<dyn LlmProvider>,
        budget_override: Budget,
    ) -> Result<Engine> {
        let (engine, _workers) = self.engine_with_workers(llm, budget_override).await?;
        Ok(engine)
    }

    /// [`App::engine`], keeping the workers' handle so a server can stop
    /// them gracefully. In the distributed mode no worker starts here:
    /// `agentry worker` processes run the agents.
    pub async fn engine_with_workers(
        &self,
        llm: Arc<dyn LlmProvider>,
        budget_override: Budget,
    ) -> Result<(Engine, WorkerHandle)> {
        if !self.distributed() {
            self.sandbox_ready().await?;
        }
        let runner = self.runner(llm, budget_override);
        let engine = self.engine_with(Arc::new(runner));
        let workers = if self.distributed() {
            WorkerHandle::none()
        } else {
            engine
                .start_workers(Engine::all_queues(), self.config.engine.workers)
                .await
        };
        Ok((engine, workers))
    }

    /// An engine for control actions (cancel, reject): it runs no node and
    /// starts no worker.
    pub fn control_engine(&self) -> Engine {
        self.engine_with(Arc::new(ControlOnly))
    }

    /// An engine over this deployment's store and bus.
    pub fn engine_with(&self, runner: Arc<dyn NodeRunner>) -> Engine {
        let (bus, route_by_tags): (Arc<dyn Bus>, bool) = match &self.bus {
            Some(bus) => (bus.clone(), true),
            // In-process workers serve every variant of a role.
            None => (Arc::new(InprocBus::new()), false),
        };
        Engine::new(
            self.store(),
            bus,
            runner,
            EngineConfig {
                route_by_tags,
                // Distributed: tasks may be running in other processes;
                // only the sweep, which knows what live workers run,
                // dispatches a stuck step's tasks again.
                redispatch_on_stall: self.bus.is_none(),
                ..EngineConfig::default()
            },
        )
    }

    /// A workflow by id text, with a clear error for a malformed or unknown id.
    pub async fn workflow(&self, id: &str) -> Result<WorkflowRecord> {
        let id = id.parse().map_err(|e| anyhow!("{e}"))?;
        self.store
            .get_workflow(id)
            .await
            .map_err(|e| anyhow!("{e}"))
    }

    /// Loads a workflow definition: the given file, else the configured one,
    /// else the bundled SDLC graph.
    pub fn definition(&self, file: Option<&Path>) -> Result<WorkflowDefinition> {
        match file.or(self.config.workflow.file.as_deref()) {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read workflow file {}", path.display()))?;
                WorkflowDefinition::parse(&text, &path.display().to_string())
                    .map_err(|e| anyhow!("{e}"))
            }
            None => WorkflowDefinition::default_sdlc().map_err(|e| anyhow!("{e}")),
        }
    }
}

fn sqlite_options(synchronous: &str) -> Result<agentry_store_sqlite::SqliteStoreOptions> {
    Ok(agentry_store_sqlite::SqliteStoreOptions::default()
        .with_synchronous(synchronous.parse().map_err(|e| anyhow!("{e}"))?))
}

/// The process environment as a map (for config overrides).
pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// The runner of a control-only engine: it has no workers, so it is never
/// asked to run a node; if it were, it refuses rather than run agents.
struct ControlOnly;

#[async_trait::async_trait]
impl NodeRunner for ControlOnly {
    async fn run(&self, ctx: NodeContext) -> agentry_core::Result<NodeOutput> {
        Err(agentry_core::Error::permanent(format!(
            "task {} reached a control-only engine",
            ctx.task
        )))
    }
}

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

use anyhow::{Context, Result};

use agentry_agents::{AgentConfig, AgentDeps, AgentNodeRunner};
use agentry_bus_amqp::{AmqpBus, AmqpOptions};
use agentry_bus_inproc::InprocBus;
use agentry_core::{
    ApiKeyStore, Budget, Bus, DeadLetters, IntegrationResolver, Isolation, LlmCache, LlmLedger,
    LlmProvider, NodeContext, NodeOutput, NodeRunner, RateLimiter, SandboxLimits, Store,
    WorkerRegistry, WorkflowRecord,
};
use agentry_engine::{Engine, EngineConfig, WorkerHandle, WorkflowDefinition};
use agentry_integrations_local::LocalIntegrations;
use agentry_redis::{RedisClient, RedisLlmCache, RedisOptions, RedisRateLimiter};
use agentry_sandbox_process::ProcessSandbox;
use agentry_store_memory::MemoryRateLimiter;
use agentry_store_postgres::{PostgresOptions, PostgresStore};
use agentry_store_sqlite::SqliteStore;

use crate::config::{Config, Mode};

/// Refuses a definition whose check nodes name a check the agents' runner
/// does not know, before anything runs.
pub fn known_checks(definition: &WorkflowDefinition) -> Result<()> {
    for node in definition.nodes.values() {
        if let Some(check) = node.kind.check() {
            if !agentry_agents::checks::CHECKS.contains(&check) {
                anyhow::bail!(
                    "workflow `{}`: node `{}` runs the unknown check `{check}`; known checks: {}",
                    definition.name,
                    node.name,
                    agentry_agents::checks::CHECKS.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Every store port in one object: the SQLite and PostgreSQL stores
/// implement them all.
pub trait StoreAll: Store + LlmLedger + LlmCache + ApiKeyStore + WorkerRegistry {}

impl<T> StoreAll for T where T: Store + LlmLedger + LlmCache + ApiKeyStore + WorkerRegistry {}

/// The adapters of one deployment, each held as its port: commands and
/// libraries get `Arc<dyn ...>` and never learn which mode they run in.
pub struct App {
    /// The configuration after the file, the `AGENTRY_*` overrides and
    /// the global flags.
    pub config: Config,
    /// The store (SQLite or PostgreSQL).
    pub store: Arc<dyn StoreAll>,
    /// The shared bus of the distributed mode (RabbitMQ); None in the
    /// embedded mode, where each engine gets its own in-process bus.
    pub bus: Option<Arc<AmqpBus>>,
    /// The LLM response cache (Redis when configured, else the store).
    pub llm_cache: Arc<dyn LlmCache>,
    /// Rate-limit buckets (Redis when configured, else this process).
    pub limiter: Arc<dyn RateLimiter>,
    /// The tracker, wiki and code host of each artifact owner (the
    /// command line's namespace, or an API tenant's).
    pub integrations: Arc<dyn IntegrationResolver>,
    sandbox: Arc<ProcessSandbox>,
}

/// The adapters that differ by mode: store, bus, LLM cache, rate limiter.
struct Adapters {
    store: Arc<dyn StoreAll>,
    bus: Option<Arc<AmqpBus>>,
    llm_cache: Arc<dyn LlmCache>,
    limiter: Arc<dyn RateLimiter>,
}

impl Adapters {
    /// The SQLite file at `db_path` holds the store and the LLM cache;
    /// rate-limit buckets live in this process; each engine gets its own
    /// in-process bus.
    async fn embedded(config: &Config, db_path: &Path) -> Result<Adapters> {
        let store: Arc<dyn StoreAll> = Arc::new(
            SqliteStore::open(db_path, sqlite_options(&config.store.synchronous)?)
                .await
                .with_context(|| format!("cannot open the store {}", db_path.display()))?,
        );
        Ok(Adapters {
            store: store.clone(),
            bus: None,
            llm_cache: store,
            limiter: Arc::new(MemoryRateLimiter::new()),
        })
    }

    /// PostgreSQL holds the store; RabbitMQ is every engine's bus; Redis,
    /// when `redis_url` is set, holds the LLM cache and rate-limit buckets
    /// shared by every process (else the store and this process do).
    async fn distributed(config: &Config) -> Result<Adapters> {
        let c = &config.cluster;
        let database_url = config
            .database_url
            .as_deref()
            .context("mode = \"distributed\" needs database_url (AGENTRY_DATABASE_URL)")?;
        let amqp_url = config
            .amqp_url
            .as_deref()
            .context("mode = \"distributed\" needs amqp_url (AGENTRY_AMQP_URL)")?;
        let mut options = PostgresOptions::default().with_max_connections(c.max_connections);
        if let Some(schema) = &c.database_schema {
            options = options.with_schema(schema.clone());
        }
        let store: Arc<dyn StoreAll> = Arc::new(
            PostgresStore::connect(database_url, options)
                .await
                .context("cannot open the PostgreSQL store")?,
        );
        let bus = AmqpBus::connect(AmqpOptions {
            url: amqp_url.to_string(),
            prefix: c.amqp_prefix.clone(),
            prefetch: c.prefetch,
            delivery_limit: c.delivery_limit,
            connection_name: Some(format!("agentry-{}", std::process::id())),
            ..AmqpOptions::default()
        })
        .await
        .context("cannot connect to RabbitMQ")?;
        let (llm_cache, limiter): (Arc<dyn LlmCache>, Arc<dyn RateLimiter>) =
            match &config.redis_url {
                Some(url) if !url.trim().is_empty() => {
                    let client = RedisClient::connect(
                        RedisOptions::new(url.clone()).with_prefix(c.redis_prefix.clone()),
                    )
                    .await
                    .context("cannot connect to Redis")?;
                    (
                        Arc::new(RedisLlmCache::new(client.clone())),
                        Arc::new(RedisRateLimiter::new(client)),
                    )
                }
                _ => (store.clone(), Arc::new(MemoryRateLimiter::new())),
            };
        Ok(Adapters {
            store,
            bus: Some(Arc::new(bus)),
            llm_cache,
            limiter,
        })
    }
}

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "agentry.db";

impl App {
    /// Opens (creating if needed) the data directory and the adapters of
    /// the configured mode: the embedded mode's SQLite file, or the
    /// distributed mode's PostgreSQL, RabbitMQ and (when `redis_url` is
    /// set) Redis, each error naming the service that failed.
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
        let Adapters {
            store,
            bus,
            llm_cache,
            limiter,
        } = match config.mode {
            Mode::Embedded => Adapters::embedded(&config, &db_path).await?,
            Mode::Distributed => Adapters::distributed(&config).await?,
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

    /// The store as the engine and the gateway see it.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The worker registry: a table of the store, so every process of the
    /// deployment sees every worker.
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

    /// The limits every test run gets, from `[sandbox]`.
    fn sandbox_limits(&self) -> SandboxLimits {
        self.config.sandbox.limits()
    }

    /// One test run in this deployment's sandbox, outside any workflow (the
    /// quality benchmark's hidden suites).
    pub async fn sandbox_run(
        &self,
        request: agentry_core::TestRunRequest,
    ) -> Result<agentry_core::TestRun> {
        use agentry_core::Sandbox;
        self.sandbox
            .run_tests(request)
            .await
            .context("the benchmark's test run")
    }

    /// The isolation a test run gets here, or why none may run: asked
    /// before agents start, so a host that cannot run generated code
    /// safely fails at once rather than after the developer's work.
    pub async fn sandbox_ready(&self) -> Result<Isolation> {
        self.sandbox
            .ready(&self.sandbox_limits())
            .await
            .context("test runs cannot happen on this host")
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

    /// An engine over this deployment's store and bus, running nodes with
    /// `runner`: the shared RabbitMQ bus (tasks routed by variant tags)
    /// or a fresh in-process one (by role only).
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

    /// A workflow by id text; a malformed id is an invalid-input error and
    /// an unknown one a not-found error, each naming the id.
    pub async fn workflow(&self, id: &str) -> Result<WorkflowRecord> {
        let id = id.parse()?;
        Ok(self.store.get_workflow(id).await?)
    }

    /// Loads a workflow definition: the given file, else the configured one,
    /// else the bundled SDLC graph.
    pub fn definition(&self, file: Option<&Path>) -> Result<WorkflowDefinition> {
        let definition = match file.or(self.config.workflow.file.as_deref()) {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read workflow file {}", path.display()))?;
                WorkflowDefinition::parse(&text, &path.display().to_string())?
            }
            None => WorkflowDefinition::default_sdlc()?,
        };
        known_checks(&definition)?;
        Ok(definition)
    }
}

fn sqlite_options(synchronous: &str) -> Result<agentry_store_sqlite::SqliteStoreOptions> {
    Ok(agentry_store_sqlite::SqliteStoreOptions::default().with_synchronous(synchronous.parse()?))
}

/// The process environment as a map, which [`Config::load`] reads its
/// `AGENTRY_*` overrides from.
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

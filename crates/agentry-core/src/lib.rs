//! Agentry's domain model and its ports.
//!
//! This crate holds what every other crate agrees on: the workflow state of the
//! seed (`WorkflowState`, `WorkflowStatus`), the engine's durable records
//! (checkpoints, events, the scheduler cursor), agent roles, the classified
//! [`Error`], and the ports (traits) that adapters implement: [`Store`],
//! [`Bus`], [`LlmProvider`], [`Tracker`], [`Wiki`], [`CodeHost`] (each for
//! one [`ArtifactOwner`], found through the [`IntegrationResolver`]),
//! [`Sandbox`] and [`NodeRunner`].
//!
//! Key design decision: this crate does no I/O and depends on no I/O crate
//! (no sqlx, reqwest, tokio). Ports are `async_trait` object-safe traits so
//! the app crates can pick adapters at run time from configuration, and the
//! engine and agents only ever see `Arc<dyn Port>`.

pub mod cost;
pub mod error;
pub mod event;
pub mod ids;
pub mod layout;
pub mod llm;
pub mod node;
pub mod options;
pub mod owner;
pub mod path;
pub mod ports;
pub mod state;
pub mod store;

pub use cost::{Budget, Limit, ModelPrice, PriceTable, Spend};
pub use error::{Error, ErrorClass, Result};
pub use event::{Event, EventKind, StoredEvent};
pub use ids::{task_fields, IdempotencyKey, RequestId, TaskId, TaskKey, WorkflowId};
pub use layout::AnswerLayout;
pub use llm::{
    ChatMessage, ChatRequest, ChatResponse, ChatRole, LlmCache, LlmCall, LlmLedger, LlmObserver,
    LlmProfile, LlmProgress, LlmProvider, OutputSchema, RequestMeta, ToolCall, ToolDefinition,
    Usage,
};
pub use node::{NoProgress, NodeContext, NodeOutput, NodeRunner, Progress, ProgressSink};
pub use options::{BenchRun, LlmSelection, RunOptions};
pub use owner::{ArtifactOwner, TenantId, MAX_TENANT_BYTES};
pub use path::RepoPath;
pub use ports::access::{
    AccessRole, ApiKeyRecord, ApiKeyStore, RateDecision, RateLimit, RateLimiter,
};
pub use ports::bus::{
    queues_for, Bus, DeadLetter, DeadLetters, Delivery, DeliveryAck, TaskMessage, MAX_WORKER_TAGS,
};
pub use ports::codehost::{
    commit_size_problem, file_size_problem, CodeHost, CommitInfo, CommitRequest, FileChange,
    MergeRequest, MergeRequestState, MergeRequestUpdate, NewMergeRequest, Repository,
    TestResultLink, MAX_COMMIT_BYTES, MAX_FILE_BYTES,
};
pub use ports::integrations::{IntegrationResolver, Integrations};
pub use ports::registry::{
    lease_expiry, WorkerBeat, WorkerHealth, WorkerInfo, WorkerRecord, WorkerRegistry,
};
pub use ports::sandbox::{
    Isolation, IsolationMode, Namespace, ProjectKind, Sandbox, SandboxLimits, SourceLocation,
    TestCaseResult, TestOutcome, TestRun, TestRunRequest,
};
pub use ports::tracker::{
    Attachment, Comment, Issue, IssueKind, IssueLink, NewAttachment, NewComment, NewIssue,
    NewIssueLink, Project, Tracker,
};
pub use ports::wiki::{NewPage, Page, PageUpdate, PageVersion, Space, Wiki};
pub use state::{
    AgentOutputWrite, AgentRole, StateDelta, UsageRecord, WorkflowErrorEntry, WorkflowState,
    WorkflowStatus,
};
pub use store::{
    fold_state, Advance, AgentOutputRecord, Checkpoint, CommitOutcome, Cursor, NewWorkflow,
    Page as ListPage, Store, TaskCommit, Transition, WorkflowQuery, WorkflowRecord,
};

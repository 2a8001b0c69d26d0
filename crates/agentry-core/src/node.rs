//! The `NodeRunner` port: what the engine calls to run one graph node.
//!
//! The engine knows nothing about agents; the agents crate implements this
//! trait for the five roles, and the engine benchmark implements it with a
//! node that only sleeps.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    AgentRole, ArtifactOwner, Event, RequestId, Result, RunOptions, StateDelta, TaskId,
    WorkflowState,
};

/// Live progress of a running node (shown by the CLI, streamed by the
/// gateway). Not stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The task.
    #[serde(with = "crate::ids::task_fields")]
    pub task: TaskId,
    /// What it is doing now (`calling LLM (turn 2)`, `running tests`).
    pub message: String,
    /// Fraction done, when known (0.0 ..= 1.0).
    pub fraction: Option<f32>,
}

/// Receives progress reports. Must not block.
pub trait ProgressSink: Send + Sync {
    /// One report.
    fn report(&self, progress: Progress);
}

/// A sink that drops everything.
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _progress: Progress) {}
}

/// Everything a node run gets.
#[derive(Clone)]
pub struct NodeContext {
    /// The task.
    pub task: TaskId,
    /// Agent role configured for the node (None for built-in nodes).
    pub role: Option<AgentRole>,
    /// Node settings from the workflow file (free-form table).
    pub settings: Value,
    /// How many times this node ran before in this workflow.
    pub visit: u32,
    /// Workflow state at the start of the super-step.
    pub state: Arc<WorkflowState>,
    /// What the workflow was started with.
    pub options: RunOptions,
    /// Whose artifacts the node makes and reads: the workflow's stored
    /// tenant, or the command line's namespace. Side effects go through the
    /// integrations resolved for this owner.
    pub owner: ArtifactOwner,
    /// Correlation id.
    pub request_id: Option<RequestId>,
    /// Progress reports go here.
    pub progress: Arc<dyn ProgressSink>,
}

impl NodeContext {
    /// Reports progress.
    pub fn report(&self, message: impl Into<String>, fraction: Option<f32>) {
        self.progress.report(Progress {
            task: self.task.clone(),
            message: message.into(),
            fraction,
        });
    }
}

/// What a node run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOutput {
    /// State changes.
    pub delta: StateDelta,
    /// Extra events (the engine adds `agent.task.completed` and
    /// `context.updated` itself).
    pub events: Vec<Event>,
}

/// Runs graph nodes. The engine calls it once per attempt; a returned error's
/// class decides retry. Side effects must use `ctx.task.idempotency_key()` so
/// that a retry or a redelivery finds what an earlier attempt made, and the
/// integrations of `ctx.owner`, so that they land in the workflow owner's
/// namespace.
#[async_trait]
pub trait NodeRunner: Send + Sync + 'static {
    /// Runs the node.
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput>;
}

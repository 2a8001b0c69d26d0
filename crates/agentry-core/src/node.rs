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
    /// The node run reporting (its object form on the bus, see
    /// [`task_fields`](crate::task_fields)).
    #[serde(with = "crate::ids::task_fields")]
    pub task: TaskId,
    /// What it is doing now (`calling LLM (turn 2)`, `running tests`).
    pub message: String,
    /// Fraction done, when known (0.0 ..= 1.0).
    pub fraction: Option<f32>,
}

/// Receives progress reports. Must not block.
pub trait ProgressSink: Send + Sync {
    /// Takes one report. Called from the node run itself, so it returns at
    /// once (the engine's sink queues an `agent.progress` event).
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
    /// Which node of which step, and the attempt; its key is the base of
    /// every idempotency key the run uses.
    pub task: TaskId,
    /// Agent role of the node, from the workflow file; None for a check
    /// node (`kind = "check"`), which names its check instead.
    pub role: Option<AgentRole>,
    /// The check a `kind = "check"` node runs (`mutation_score`): a step
    /// of the graph that is no agent and calls no model. None for an agent
    /// node.
    pub check: Option<String>,
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
    /// The workflow's request id, from its task message; the agents put it
    /// on their LLM requests and ledger rows.
    pub request_id: Option<RequestId>,
    /// Progress reports go here.
    pub progress: Arc<dyn ProgressSink>,
}

impl NodeContext {
    /// Sends `message` (and the fraction done, when known) to the progress
    /// sink as this task's report.
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
    /// What the run changed; committed with the task's checkpoint in one
    /// transaction.
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

//! Events: the seed's event names, written to the store's outbox in the same
//! transaction as the change they describe, then published on the bus.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{RequestId, TaskId, WorkflowId};

/// The kind of an event; [`EventKind::as_str`] is its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// `workflow.started`
    #[serde(rename = "workflow.started")]
    WorkflowStarted,
    /// `workflow.completed`
    #[serde(rename = "workflow.completed")]
    WorkflowCompleted,
    /// `workflow.failed`
    #[serde(rename = "workflow.failed")]
    WorkflowFailed,
    /// `workflow.cancelled`
    #[serde(rename = "workflow.cancelled")]
    WorkflowCancelled,
    /// `workflow.awaiting_approval`
    #[serde(rename = "workflow.awaiting_approval")]
    WorkflowAwaitingApproval,
    /// `workflow.approved`
    #[serde(rename = "workflow.approved")]
    WorkflowApproved,
    /// `workflow.rejected`
    #[serde(rename = "workflow.rejected")]
    WorkflowRejected,
    /// `workflow.resumed`
    #[serde(rename = "workflow.resumed")]
    WorkflowResumed,
    /// `workflow.step.completed`: a super-step finished.
    #[serde(rename = "workflow.step.completed")]
    StepCompleted,
    /// `agent.task.assigned`: a node run was scheduled.
    #[serde(rename = "agent.task.assigned")]
    TaskAssigned,
    /// `agent.task.completed`
    #[serde(rename = "agent.task.completed")]
    TaskCompleted,
    /// `agent.task.failed`: an attempt failed (payload says if it will retry).
    #[serde(rename = "agent.task.failed")]
    TaskFailed,
    /// `context.updated`: shared-context keys changed.
    #[serde(rename = "context.updated")]
    ContextUpdated,
    /// `agent.progress`: live progress of a running agent (LLM turn, tool call).
    /// Published on the bus only, never stored.
    #[serde(rename = "agent.progress")]
    AgentProgress,
}

impl EventKind {
    /// The routing key / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::WorkflowStarted => "workflow.started",
            EventKind::WorkflowCompleted => "workflow.completed",
            EventKind::WorkflowFailed => "workflow.failed",
            EventKind::WorkflowCancelled => "workflow.cancelled",
            EventKind::WorkflowAwaitingApproval => "workflow.awaiting_approval",
            EventKind::WorkflowApproved => "workflow.approved",
            EventKind::WorkflowRejected => "workflow.rejected",
            EventKind::WorkflowResumed => "workflow.resumed",
            EventKind::StepCompleted => "workflow.step.completed",
            EventKind::TaskAssigned => "agent.task.assigned",
            EventKind::TaskCompleted => "agent.task.completed",
            EventKind::TaskFailed => "agent.task.failed",
            EventKind::ContextUpdated => "context.updated",
            EventKind::AgentProgress => "agent.progress",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    /// Events that end a workflow run (the scheduler stops driving it).
    pub fn ends_run(self) -> bool {
        matches!(
            self,
            EventKind::WorkflowCompleted
                | EventKind::WorkflowFailed
                | EventKind::WorkflowCancelled
                | EventKind::WorkflowAwaitingApproval
                | EventKind::WorkflowRejected
        )
    }
}

/// Something that happened to a workflow: committed to the outbox with the
/// change it describes, then published (progress events only published).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (UUID v7); consumers deduplicate by it.
    pub id: Uuid,
    /// What happened; its wire name is the bus routing key.
    pub kind: EventKind,
    /// The workflow it concerns.
    pub workflow_id: WorkflowId,
    /// Super-step, when it concerns one.
    pub step: Option<u64>,
    /// Node, when it concerns one.
    pub node: Option<String>,
    /// Attempt, when it concerns a task.
    pub attempt: Option<u32>,
    /// Correlation id of the request that started or drove the workflow.
    pub request_id: Option<RequestId>,
    /// Details (free-form JSON, small).
    pub payload: Value,
    /// When it was made (UTC). Readers order events by their store `seq`,
    /// not by this.
    pub at: DateTime<Utc>,
}

impl Event {
    /// A workflow-level event.
    pub fn workflow(kind: EventKind, workflow_id: WorkflowId, payload: Value) -> Self {
        Event {
            id: Uuid::now_v7(),
            kind,
            workflow_id,
            step: None,
            node: None,
            attempt: None,
            request_id: None,
            payload,
            at: Utc::now(),
        }
    }

    /// A task-level event.
    pub fn task(kind: EventKind, task: &TaskId, payload: Value) -> Self {
        Event {
            id: Uuid::now_v7(),
            kind,
            workflow_id: task.key.workflow,
            step: Some(task.key.step),
            node: Some(task.key.node.clone()),
            attempt: Some(task.attempt),
            request_id: None,
            payload,
            at: Utc::now(),
        }
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, request_id: Option<RequestId>) -> Self {
        self.request_id = request_id;
        self
    }
}

/// An event as stored in the outbox, with its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Store-wide, strictly increasing position (SSE `Last-Event-ID`).
    pub seq: u64,
    /// Whether the outbox relay has published it.
    pub published: bool,
    /// The event as committed.
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for k in [
            EventKind::TaskAssigned,
            EventKind::StepCompleted,
            EventKind::ContextUpdated,
            EventKind::WorkflowAwaitingApproval,
        ] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}

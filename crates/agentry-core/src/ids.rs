//! Identifiers: workflows, tasks, requests and idempotency keys.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::Error;

/// A workflow's id (UUID v7: time-ordered, so listings sort by creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(pub Uuid);

impl WorkflowId {
    /// A fresh id.
    pub fn new() -> Self {
        WorkflowId(Uuid::now_v7())
    }
}

impl Default for WorkflowId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WorkflowId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Uuid::parse_str(s.trim())
            .map(WorkflowId)
            .map_err(|_| Error::invalid(format!("`{s}` is not a workflow id (expected a UUID)")))
    }
}

/// A request correlation id: carried from the caller (CLI, `x-request-id`)
/// into events and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random request id.
    pub fn generate() -> Self {
        RequestId(Uuid::new_v4().simple().to_string())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node run of one super-step: the unit of work and of commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The super-step (0-based).
    pub step: u64,
    /// The graph node's name (e.g. `developer`).
    pub node: String,
    /// 1-based attempt number; retries bump it, redeliveries keep it.
    pub attempt: u32,
}

impl TaskId {
    /// The idempotency key of this task's side effects: `workflow_id:step:node`.
    /// It does not include the attempt, so a retried task finds what an
    /// earlier attempt made.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey(format!("{}:{}:{}", self.workflow_id, self.step, self.node))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}#{}",
            self.workflow_id, self.step, self.node, self.attempt
        )
    }
}

/// A key that makes an external create call idempotent. Derived from the task
/// (`workflow_id:step:node`) plus a suffix naming the item (`story:3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// A key for one item made by the task: `<task key>/<item>`.
    pub fn child(&self, item: impl fmt::Display) -> IdempotencyKey {
        IdempotencyKey(format!("{}/{}", self.0, item))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_ignores_attempt() {
        let wf = WorkflowId::new();
        let a = TaskId {
            workflow_id: wf,
            step: 2,
            node: "developer".into(),
            attempt: 1,
        };
        let b = TaskId {
            attempt: 3,
            ..a.clone()
        };
        assert_eq!(a.idempotency_key(), b.idempotency_key());
        assert_eq!(
            a.idempotency_key().child("story:1").as_str(),
            format!("{wf}:2:developer/story:1")
        );
    }

    #[test]
    fn bad_workflow_id_is_named() {
        let err = "nope".parse::<WorkflowId>().unwrap_err();
        assert!(err.to_string().contains("`nope` is not a workflow id"));
    }
}

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

/// A request correlation id: set by the caller (`agentry run
/// --request-id`, the gateway's `x-request-id`) or generated, and carried
/// from the submission through the engine into every task, event, LLM call
/// record and log line of the workflow it started.
///
/// It is also the submission's idempotency key: a second submission with
/// the same id returns the first workflow. The gateway stores a caller's id
/// scoped by tenant ([`RequestId::scoped`], `tenant:id`), so tenants can
/// neither collide nor probe each other's ids.
///
/// Text form: 1 to [`RequestId::MAX_LEN`] visible ASCII characters (no
/// spaces, no control characters), checked by [`RequestId::new`] and
/// `FromStr` where an id comes in. Wire forms (JSON, SQL, AMQP headers)
/// are the plain string; ids read back from storage are not checked again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// The longest id accepted: the seed's `request_id VARCHAR(255)`,
    /// which holds a caller's 128 characters scoped by a tenant of up to 64
    /// bytes.
    pub const MAX_LEN: usize = 255;

    /// A checked id: 1 to [`RequestId::MAX_LEN`] visible ASCII characters.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let visible = id.bytes().all(|b| b.is_ascii_graphic());
        if id.is_empty() || id.len() > Self::MAX_LEN || !visible {
            let shown: String = id.chars().take(40).collect();
            return Err(Error::invalid(format!(
                "`{shown}` is not a request id: use 1 to {} visible ASCII characters (no spaces)",
                Self::MAX_LEN
            )));
        }
        Ok(RequestId(id))
    }

    /// A fresh random request id (32 hex digits).
    pub fn generate() -> Self {
        RequestId(Uuid::new_v4().simple().to_string())
    }

    /// An id as it was stored: what this process or another wrote earlier,
    /// not checked again (rows of older versions included).
    pub fn from_stored(id: String) -> Self {
        RequestId(id)
    }

    /// `id` scoped by `tenant`: `tenant:id`, the form the gateway stores.
    pub fn scoped(&self, tenant: &str) -> RequestId {
        RequestId(format!("{tenant}:{}", self.0))
    }

    /// The id without its tenant scope, as the caller of `tenant` sent it
    /// (the id itself when it is not scoped by `tenant`).
    pub fn unscoped(&self, tenant: &str) -> &str {
        self.0
            .strip_prefix(tenant)
            .and_then(|rest| rest.strip_prefix(':'))
            .unwrap_or(&self.0)
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RequestId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        RequestId::new(s)
    }
}

/// One node of one super-step of one workflow: what is committed once,
/// whatever the attempts, and what the side effects of every attempt are
/// keyed by.
///
/// Its one text form, `<workflow>:<step>:<node>`, is written by `Display`
/// and read by `FromStr` and nowhere else: it is the base of idempotency
/// keys (kept in the local tracker, wiki and git trailers and in vendors'
/// systems), so it never changes. The workflow is a UUID and the step
/// digits, so the node is everything after the second `:` (a node name may
/// hold any character).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// The workflow it belongs to (the text form's leading UUID).
    pub workflow: WorkflowId,
    /// The super-step (0-based).
    pub step: u64,
    /// The graph node's name (e.g. `developer`).
    pub node: String,
}

impl TaskKey {
    /// The key of `node` at `step` of `workflow`.
    pub fn new(workflow: WorkflowId, step: u64, node: impl Into<String>) -> Self {
        TaskKey {
            workflow,
            step,
            node: node.into(),
        }
    }

    /// The idempotency key of this task's side effects: the key's text.
    /// It does not include the attempt, so a retried task finds what an
    /// earlier attempt made.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey(self.to_string())
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.workflow, self.step, self.node)
    }
}

impl FromStr for TaskKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(format!(
                "`{s}` is not a task key (expected `<workflow>:<step>:<node>`)"
            ))
        };
        let (workflow, rest) = s.split_once(':').ok_or_else(bad)?;
        let (step, node) = rest.split_once(':').ok_or_else(bad)?;
        let workflow = Uuid::parse_str(workflow).map_err(|_| bad())?;
        if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let step = step.parse().map_err(|_| bad())?;
        Ok(TaskKey::new(WorkflowId(workflow), step, node))
    }
}

/// One node run: a [`TaskKey`] and its attempt, the unit of work. Retries
/// bump the attempt; a redelivery keeps it.
///
/// Text form: `<task key>#<attempt>` (`Display`, `FromStr`; how worker
/// beats list the tasks in hand, and how serde writes it). Task messages,
/// task commits and progress reports keep the object form they always had
/// on the bus ([`task_fields`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// Which node of which step.
    pub key: TaskKey,
    /// 1-based attempt number; retries bump it, redeliveries keep it.
    pub attempt: u32,
}

impl TaskId {
    /// Attempt `attempt` of `key`.
    pub fn new(key: TaskKey, attempt: u32) -> Self {
        TaskId { key, attempt }
    }

    /// The idempotency key of this task's side effects (the key's, whatever
    /// the attempt).
    pub fn idempotency_key(&self) -> IdempotencyKey {
        self.key.idempotency_key()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.key, self.attempt)
    }
}

impl FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(format!(
                "`{s}` is not a task id (expected `<workflow>:<step>:<node>#<attempt>`)"
            ))
        };
        // The attempt is digits after the LAST `#`: a node name may hold one.
        let (key, attempt) = s.rsplit_once('#').ok_or_else(bad)?;
        if attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let attempt = attempt.parse().map_err(|_| bad())?;
        Ok(TaskId::new(key.parse().map_err(|_| bad())?, attempt))
    }
}

impl Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = TaskId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a task id `<workflow>:<step>:<node>#<attempt>`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TaskId, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The object form of a [`TaskId`], `{"workflow_id", "step", "node",
/// "attempt"}`, for `#[serde(with = "task_fields")]`: the form task messages
/// (on the bus and in its dead-letter queue), task commits and progress
/// reports have always had, so a message queued by an earlier version still
/// decodes.
pub mod task_fields {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{TaskId, TaskKey, WorkflowId};

    #[derive(Serialize)]
    #[serde(rename = "TaskId")]
    struct Fields<'a> {
        workflow_id: WorkflowId,
        step: u64,
        node: &'a str,
        attempt: u32,
    }

    #[derive(Deserialize)]
    #[serde(rename = "TaskId")]
    struct OwnedFields {
        workflow_id: WorkflowId,
        step: u64,
        node: String,
        attempt: u32,
    }

    /// Writes the four fields.
    pub fn serialize<S: Serializer>(task: &TaskId, serializer: S) -> Result<S::Ok, S::Error> {
        Fields {
            workflow_id: task.key.workflow,
            step: task.key.step,
            node: &task.key.node,
            attempt: task.attempt,
        }
        .serialize(serializer)
    }

    /// Reads the four fields.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TaskId, D::Error> {
        let f = OwnedFields::deserialize(deserializer)?;
        Ok(TaskId::new(
            TaskKey::new(f.workflow_id, f.step, f.node),
            f.attempt,
        ))
    }
}

/// A key that makes an external create call idempotent. Derived from the
/// task's key ([`TaskKey::idempotency_key`], `<workflow>:<step>:<node>`)
/// plus a suffix naming the item (`story:3`).
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
    fn request_ids_are_visible_ascii_of_bounded_length() {
        for ok in [
            "a",
            "req-42",
            "tenant:abc_DEF.1",
            &"x".repeat(RequestId::MAX_LEN),
        ] {
            assert_eq!(RequestId::new(ok).unwrap().as_str(), ok);
            assert_eq!(ok.parse::<RequestId>().unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "has space",
            "tab\there",
            "é",
            &"x".repeat(RequestId::MAX_LEN + 1),
        ] {
            let err = RequestId::new(bad).unwrap_err();
            assert!(err.to_string().contains("not a request id"), "{err}");
        }
    }

    #[test]
    fn a_scoped_request_id_reads_back_as_its_caller_sent_it() {
        let id = RequestId::new("order-7").unwrap();
        let stored = id.scoped("acme");
        assert_eq!(stored.as_str(), "acme:order-7");
        assert_eq!(stored.unscoped("acme"), "order-7");
        // Another tenant's prefix is not stripped, nor a bare prefix.
        assert_eq!(stored.unscoped("acm"), "acme:order-7");
        assert_eq!(RequestId::new("acme").unwrap().unscoped("acme"), "acme");
        // The wire form is the plain string.
        assert_eq!(
            serde_json::to_value(&stored).unwrap(),
            serde_json::json!("acme:order-7")
        );
    }

    fn task(workflow: WorkflowId, step: u64, node: &str, attempt: u32) -> TaskId {
        TaskId::new(TaskKey::new(workflow, step, node), attempt)
    }

    #[test]
    fn idempotency_key_ignores_attempt() {
        let wf = WorkflowId::new();
        let a = task(wf, 2, "developer", 1);
        let b = task(wf, 2, "developer", 3);
        assert_eq!(a.idempotency_key(), b.idempotency_key());
        assert_eq!(
            a.idempotency_key().child("story:1").as_str(),
            format!("{wf}:2:developer/story:1")
        );
    }

    /// The texts earlier versions wrote (idempotency keys in the local
    /// tracker, wiki and git trailers; task ids in worker beats) read back
    /// as the same task, and the same text is written again.
    #[test]
    fn stored_task_texts_keep_their_form() {
        let wf: WorkflowId = "0190f5a2-7c3e-7d4e-8f00-0123456789ab".parse().unwrap();
        let key: TaskKey = "0190f5a2-7c3e-7d4e-8f00-0123456789ab:4:technical_writer"
            .parse()
            .unwrap();
        assert_eq!(key, TaskKey::new(wf, 4, "technical_writer"));
        assert_eq!(
            key.idempotency_key().as_str(),
            "0190f5a2-7c3e-7d4e-8f00-0123456789ab:4:technical_writer"
        );
        let id: TaskId = "0190f5a2-7c3e-7d4e-8f00-0123456789ab:4:technical_writer#2"
            .parse()
            .unwrap();
        assert_eq!(id, task(wf, 4, "technical_writer", 2));
        assert_eq!(
            id.to_string(),
            "0190f5a2-7c3e-7d4e-8f00-0123456789ab:4:technical_writer#2"
        );
        assert_eq!(
            serde_json::to_value(&id).unwrap(),
            serde_json::json!("0190f5a2-7c3e-7d4e-8f00-0123456789ab:4:technical_writer#2")
        );
        let back: TaskId = serde_json::from_value(serde_json::to_value(&id).unwrap()).unwrap();
        assert_eq!(back, id);
    }

    /// Any node name survives the text form, `:` and `#` included.
    #[test]
    fn task_texts_round_trip_whatever_the_node_name() {
        let wf = WorkflowId::new();
        for node in ["qa", "a:b", "a#1", "x#", ":", "", "développeur"] {
            let id = task(wf, 7, node, 12);
            assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id, "{node}");
            assert_eq!(
                id.key.to_string().parse::<TaskKey>().unwrap(),
                id.key,
                "{node}"
            );
        }
    }

    #[test]
    fn bad_task_texts_are_named() {
        for (text, what) in [
            ("nope", "task key"),
            ("nope:1:qa", "task key"),
            ("0190f5a2-7c3e-7d4e-8f00-0123456789ab:x:qa", "task key"),
            ("0190f5a2-7c3e-7d4e-8f00-0123456789ab:-1:qa", "task key"),
            ("0190f5a2-7c3e-7d4e-8f00-0123456789ab", "task key"),
        ] {
            let err = text.parse::<TaskKey>().unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("`{text}` is not a {what}")),
                "{err}"
            );
        }
        for text in [
            "0190f5a2-7c3e-7d4e-8f00-0123456789ab:1:qa",
            "0190f5a2-7c3e-7d4e-8f00-0123456789ab:1:qa#",
            "0190f5a2-7c3e-7d4e-8f00-0123456789ab:1:qa#x",
            "nope#1",
        ] {
            let err = text.parse::<TaskId>().unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("`{text}` is not a task id")),
                "{err}"
            );
        }
    }

    /// Task messages keep the object form they had on the bus, so messages
    /// queued (or dead-lettered) by an earlier version still decode.
    #[test]
    fn task_fields_keep_the_bus_form() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Message {
            #[serde(with = "task_fields")]
            task: TaskId,
        }
        let wf: WorkflowId = "0190f5a2-7c3e-7d4e-8f00-0123456789ab".parse().unwrap();
        let old = serde_json::json!({"task": {
            "workflow_id": "0190f5a2-7c3e-7d4e-8f00-0123456789ab",
            "step": 3, "node": "qa", "attempt": 2
        }});
        let message: Message = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(message.task, task(wf, 3, "qa", 2));
        assert_eq!(serde_json::to_value(&message).unwrap(), old);
    }

    #[test]
    fn bad_workflow_id_is_named() {
        let err = "nope".parse::<WorkflowId>().unwrap_err();
        assert!(err.to_string().contains("`nope` is not a workflow id"));
    }
}

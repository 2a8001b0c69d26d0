//! The `Bus` port: per-queue task dispatch with acknowledgement, and event
//! distribution. The in-process bus and the RabbitMQ bus implement it; the
//! engine's scheduler and workers only see this trait.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{Error, Event, RequestId, Result, TaskId};

/// A task on a queue: "run this node of this workflow at this step".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The task (the object form of [`crate::task_fields`] on the wire).
    #[serde(with = "crate::ids::task_fields")]
    pub task: TaskId,
    /// Queue name: the node's role, plus its tags when it has any
    /// (`developer`, `developer.python`; [`TaskMessage::queue_for`]).
    /// RabbitMQ maps it to `<prefix>.tasks.<queue>`.
    pub queue: String,
    /// The workflow's request id, handed to the node run and its events.
    pub request_id: Option<RequestId>,
    /// Tags for agent selection (`python`, `model:small`); empty for any.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
}

impl TaskMessage {
    /// The queue a task of `role` with `tags` goes to: the role alone when
    /// untagged, else the role and its sorted, de-duplicated tags joined by
    /// `.` (`developer.python`). A worker serving a variant consumes the
    /// queues of every subset of its tags ([`queues_for`]).
    pub fn queue_for(role: &str, tags: &[String]) -> String {
        let mut tags: Vec<&str> = tags
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let mut name = role.to_string();
        for t in tags {
            name.push('.');
            name.push_str(t);
        }
        name
    }
}

/// Most tags one worker may carry: it consumes one queue per subset of its
/// tags and role, so the count stays small.
pub const MAX_WORKER_TAGS: usize = 6;

/// Every queue a worker of `roles` with `tags` consumes: for each role, the
/// untagged queue and one per non-empty subset of the tags (a task tagged
/// `python` is served by a worker tagged `python` or `python,rust`, never by
/// an untagged one). Fails on more than [`MAX_WORKER_TAGS`] tags or a tag
/// that is not `[A-Za-z0-9_:-]+`.
pub fn queues_for(roles: &[String], tags: &[String]) -> Result<Vec<String>> {
    let mut tags: Vec<String> = tags
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    if tags.len() > MAX_WORKER_TAGS {
        return Err(Error::invalid(format!(
            "a worker takes at most {MAX_WORKER_TAGS} tags, got {}",
            tags.len()
        )));
    }
    if let Some(bad) = tags.iter().find(|t| {
        !t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
    }) {
        return Err(Error::invalid(format!(
            "tag `{bad}` may hold only letters, digits, `_`, `:` and `-`"
        )));
    }
    let mut out = Vec::new();
    for role in roles {
        for mask in 0u32..(1u32 << tags.len()) {
            let subset: Vec<String> = tags
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, t)| t.clone())
                .collect();
            out.push(TaskMessage::queue_for(role, &subset));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Settles one delivery. Exactly one of the two is called; dropping it
/// without calling either leaves the message to be redelivered.
#[async_trait]
pub trait DeliveryAck: Send + Sync {
    /// The task's results are committed: remove the message.
    async fn ack(self: Box<Self>) -> Result<()>;
    /// Give the message back (`requeue`) or dead-letter it.
    async fn nack(self: Box<Self>, requeue: bool) -> Result<()>;
}

/// One delivered task.
pub struct Delivery {
    /// The task message as it was published.
    pub message: TaskMessage,
    /// Whether the bus delivered it before (a consumer died holding it).
    pub redelivered: bool,
    /// Acknowledges or gives back this delivery, once; dropped unsettled,
    /// the message is redelivered.
    pub ack: Box<dyn DeliveryAck>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// A task the bus gave up on: it was dead-lettered by a consumer
/// (`nack(requeue = false)`) or delivered more times than the bus allows
/// (a task that kills its worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id to replay it by (unique among the dead letters).
    pub id: String,
    /// The task as it was dispatched.
    pub message: TaskMessage,
    /// Why it died (`rejected`, `delivery_limit`, `expired`).
    pub reason: String,
    /// How many times it was delivered, where the bus knows.
    pub deliveries: Option<u32>,
    /// When it was dead-lettered, where the bus knows.
    pub dead_at: Option<DateTime<Utc>>,
}

/// The dead-letter queue: inspect and replay tasks the bus gave up on
/// (`agentry dlq list`, `agentry dlq replay ID`).
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Up to `limit` dead letters, oldest first. Listing removes nothing.
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Puts the dead letter `id` back on its task queue (with a fresh
    /// delivery count) and removes it from the dead letters; returns the
    /// task. `NotFound` when no dead letter has that id.
    async fn replay_dead(&self, id: &str) -> Result<TaskMessage>;
}

/// Task queues and the event stream.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Adapter name (`inproc`, `amqp`).
    fn name(&self) -> &'static str;

    /// Checks the bus is reachable (for `/readyz`).
    async fn health(&self) -> Result<()>;

    /// Publishes events (after they were committed to the outbox).
    /// Subscribers deduplicate by event id, so re-publishing is harmless.
    async fn publish(&self, events: &[Event]) -> Result<()>;

    /// Live events published from now on. A slow subscriber may miss events
    /// (it can catch up from the store's outbox by `seq`).
    fn subscribe(&self) -> BoxStream<'static, Event>;

    /// Puts a task on its queue.
    async fn dispatch(&self, task: TaskMessage) -> Result<()>;

    /// Competing-consumer stream of tasks from the named queues.
    async fn consume(&self, queues: &[String]) -> Result<BoxStream<'static, Result<Delivery>>>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn queue_names_sort_and_dedup_tags() {
        assert_eq!(TaskMessage::queue_for("qa", &[]), "qa");
        assert_eq!(
            TaskMessage::queue_for("developer", &strings(&["rust", " python", "rust", ""])),
            "developer.python.rust"
        );
    }

    #[test]
    fn a_worker_consumes_every_subset_of_its_tags() {
        let q = queues_for(
            &strings(&["developer", "qa"]),
            &strings(&["rust", "python"]),
        )
        .unwrap();
        assert_eq!(
            q,
            strings(&[
                "developer",
                "developer.python",
                "developer.python.rust",
                "developer.rust",
                "qa",
                "qa.python",
                "qa.python.rust",
                "qa.rust",
            ])
        );
        assert_eq!(
            queues_for(&strings(&["qa"]), &[]).unwrap(),
            strings(&["qa"])
        );
        let err = queues_for(&strings(&["qa"]), &strings(&["a b"])).unwrap_err();
        assert!(err.to_string().contains("`a b`"), "{err}");
        let many: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        assert!(queues_for(&strings(&["qa"]), &many).is_err());
    }
}

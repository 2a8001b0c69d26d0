//! The `Bus` port: per-queue task dispatch with acknowledgement, and event
//! distribution. The in-process bus and the RabbitMQ bus implement it; the
//! engine's scheduler and workers only see this trait.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{Event, Result, TaskId};

/// A task on a queue: "run this node of this workflow at this step".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The task.
    pub task: TaskId,
    /// Queue name: the agent role of the node (`developer`), or `engine`
    /// for built-in nodes. RabbitMQ maps it to `agent.tasks.<queue>`.
    pub queue: String,
    /// Correlation id.
    pub request_id: Option<String>,
    /// Tags for agent selection (`python`, `model:small`); empty for any.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
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
    /// The message.
    pub message: TaskMessage,
    /// Whether the bus delivered it before (a consumer died holding it).
    pub redelivered: bool,
    /// Settles it.
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

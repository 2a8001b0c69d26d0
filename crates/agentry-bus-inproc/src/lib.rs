//! In-process [`Bus`] adapter: task queues and event broadcast on channels.
//!
//! Used by the embedded deployment (one process) and by the engine's tests and
//! benchmark. It keeps RabbitMQ's delivery semantics so the engine runs the
//! same protocol in both deployments: competing consumers per queue,
//! explicit ack, `nack(requeue)` redelivers, `nack(false)` dead-letters, and a
//! delivery dropped without being settled (its consumer died) is redelivered
//! with `redelivered = true`.
//!
//! Key design decision: one unbounded MPMC channel (`async-channel`) per queue
//! name, shared by every consumer of that queue, so consumers compete for
//! messages without a dispatcher task in between; settling lives in the
//! [`Delivery`]'s ack handle, which holds a sender to the message's own queue
//! so a nack or a drop can put the message back. Events go through a tokio
//! `broadcast` channel of [`EVENT_CAPACITY`]: a subscriber that falls more
//! than that behind skips the events it missed (they stay in the store's
//! outbox, readable by `seq`) instead of slowing publishers down.
//!
//! Dead letters (`nack(false)`) are kept in memory with an id, listed and
//! replayed through the [`DeadLetters`] port like RabbitMQ's dead-letter
//! queue; this bus has no delivery limit, so their reason is `rejected`.

use std::collections::HashMap;
use std::sync::Arc;

use agentry_core::{
    Bus, DeadLetter, DeadLetters, Delivery, DeliveryAck, Error, Event, Result, TaskMessage,
};
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;

/// Capacity of the event broadcast channel; a subscriber lagging further
/// behind skips the oldest events.
pub const EVENT_CAPACITY: usize = 4096;

/// A message as it sits on a queue.
#[derive(Debug, Clone)]
struct Envelope {
    message: TaskMessage,
    redelivered: bool,
    /// How many times it was handed to a consumer.
    deliveries: u32,
}

impl Envelope {
    fn new(message: TaskMessage) -> Self {
        Envelope {
            message,
            redelivered: false,
            deliveries: 0,
        }
    }
}

/// The dead letters, oldest first.
type DeadList = Arc<Mutex<Vec<DeadLetter>>>;

#[derive(Clone)]
struct Queue {
    tx: async_channel::Sender<Envelope>,
    rx: async_channel::Receiver<Envelope>,
}

/// The in-process bus. Cheap to share as `Arc<InprocBus>`.
pub struct InprocBus {
    events: broadcast::Sender<Event>,
    queues: Mutex<HashMap<String, Queue>>,
    dead: DeadList,
}

impl Default for InprocBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InprocBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        InprocBus {
            events,
            queues: Mutex::new(HashMap::new()),
            dead: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn queue(&self, name: &str) -> Queue {
        let mut queues = self.queues.lock();
        queues
            .entry(name.to_string())
            .or_insert_with(|| {
                let (tx, rx) = async_channel::unbounded();
                Queue { tx, rx }
            })
            .clone()
    }

    /// Messages dead-lettered by `nack(requeue = false)`, oldest first
    /// (replayed ones excluded).
    pub fn dead_letters(&self) -> Vec<TaskMessage> {
        self.dead.lock().iter().map(|d| d.message.clone()).collect()
    }

    /// Messages waiting on a queue (not counting unsettled deliveries).
    pub fn queue_depth(&self, queue: &str) -> usize {
        self.queues.lock().get(queue).map_or(0, |q| q.rx.len())
    }
}

/// Settles one in-process delivery.
struct InprocAck {
    /// The message while unsettled; taken when settled.
    envelope: Option<Envelope>,
    queue: async_channel::Sender<Envelope>,
    dead: DeadList,
}

impl InprocAck {
    fn requeue(&mut self) {
        if let Some(mut env) = self.envelope.take() {
            env.redelivered = true;
            // Unbounded: only fails when every receiver is gone, i.e. the bus
            // itself was dropped; then there is nobody to redeliver to.
            if self.queue.try_send(env).is_err() {
                tracing::debug!("bus dropped; an unsettled task message is discarded");
            }
        }
    }
}

#[async_trait]
impl DeliveryAck for InprocAck {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.envelope = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if requeue {
            self.requeue();
        } else if let Some(env) = self.envelope.take() {
            tracing::warn!(task = %env.message.task, queue = %env.message.queue, "Task dead-lettered.");
            self.dead.lock().push(DeadLetter {
                id: uuid::Uuid::new_v4().to_string(),
                message: env.message,
                reason: "rejected".into(),
                deliveries: Some(env.deliveries),
                dead_at: Some(chrono::Utc::now()),
            });
        }
        Ok(())
    }
}

impl Drop for InprocAck {
    fn drop(&mut self) {
        // Dropped without ack or nack: the consumer died holding it.
        self.requeue();
    }
}

#[async_trait]
impl Bus for InprocBus {
    fn name(&self) -> &'static str {
        "inproc"
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, events: &[Event]) -> Result<()> {
        for event in events {
            // Err only means nobody is subscribed right now, which is fine.
            let _ = self.events.send(event.clone());
        }
        Ok(())
    }

    fn subscribe(&self) -> BoxStream<'static, Event> {
        let rx = self.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "Event subscriber lagged; skipping missed events.");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    async fn dispatch(&self, task: TaskMessage) -> Result<()> {
        let queue = self.queue(&task.queue);
        queue
            .tx
            .send(Envelope::new(task))
            .await
            .map_err(|_| Error::transient("in-process queue closed"))
    }

    async fn consume(&self, queues: &[String]) -> Result<BoxStream<'static, Result<Delivery>>> {
        if queues.is_empty() {
            return Err(Error::invalid("consume needs at least one queue name"));
        }
        let streams = queues.iter().map(|name| {
            let q = self.queue(name);
            let dead = self.dead.clone();
            let tx = q.tx.clone();
            q.rx.map(move |mut env| {
                env.deliveries += 1;
                Ok(Delivery {
                    message: env.message.clone(),
                    redelivered: env.redelivered,
                    ack: Box::new(InprocAck {
                        envelope: Some(env),
                        queue: tx.clone(),
                        dead: dead.clone(),
                    }),
                })
            })
            .boxed()
        });
        Ok(futures::stream::select_all(streams).boxed())
    }
}

#[async_trait]
impl DeadLetters for InprocBus {
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.dead.lock().iter().take(limit).cloned().collect())
    }

    async fn replay_dead(&self, id: &str) -> Result<TaskMessage> {
        let (index, letter) = {
            let mut dead = self.dead.lock();
            let index = dead
                .iter()
                .position(|d| d.id == id)
                .ok_or_else(|| Error::not_found(format!("no dead letter with id `{id}`")))?;
            (index, dead.remove(index))
        };
        if let Err(error) = self.dispatch(letter.message.clone()).await {
            // Put it back where it was: a failed replay loses nothing.
            let mut dead = self.dead.lock();
            let index = index.min(dead.len());
            dead.insert(index, letter);
            return Err(error);
        }
        tracing::info!(dead_letter = %id, task = %letter.message.task, queue = %letter.message.queue, "Dead letter replayed.");
        Ok(letter.message)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use agentry_core::{EventKind, TaskId, TaskKey, WorkflowId};
    use std::time::Duration;

    fn task(node: &str, queue: &str) -> TaskMessage {
        TaskMessage {
            task: TaskId::new(TaskKey::new(WorkflowId::new(), 0, node), 1),
            queue: queue.into(),
            request_id: None,
            tags: vec![],
            enqueued_at: chrono::Utc::now(),
        }
    }

    async fn next(stream: &mut BoxStream<'static, Result<Delivery>>) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a delivery within 5 s")
            .expect("stream open")
            .expect("delivery ok")
    }

    /// Asserts a queue is empty right now.
    async fn check_empty(stream: &mut BoxStream<'static, Result<Delivery>>) {
        let got = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(got.is_err(), "expected no delivery, got {got:?}");
    }

    #[tokio::test]
    async fn consume_merges_queues_and_ack_removes() {
        let bus = InprocBus::new();
        let mut s = bus
            .consume(&["qa".into(), "developer".into()])
            .await
            .unwrap();
        bus.dispatch(task("a", "qa")).await.unwrap();
        bus.dispatch(task("b", "developer")).await.unwrap();
        bus.dispatch(task("c", "devops")).await.unwrap();
        let mut nodes = vec![];
        for _ in 0..2 {
            let d = next(&mut s).await;
            assert!(!d.redelivered);
            nodes.push(d.message.task.key.node.clone());
            d.ack.ack().await.unwrap();
        }
        nodes.sort();
        assert_eq!(nodes, vec!["a", "b"]);
        check_empty(&mut s).await;
        assert_eq!(bus.queue_depth("devops"), 1);
    }

    #[tokio::test]
    async fn consumers_compete() {
        let bus = InprocBus::new();
        let mut s1 = bus.consume(&["qa".into()]).await.unwrap();
        let mut s2 = bus.consume(&["qa".into()]).await.unwrap();
        bus.dispatch(task("a", "qa")).await.unwrap();
        bus.dispatch(task("b", "qa")).await.unwrap();
        let d1 = next(&mut s1).await;
        let d2 = next(&mut s2).await;
        assert_ne!(d1.message.task.key.node, d2.message.task.key.node);
        d1.ack.ack().await.unwrap();
        d2.ack.ack().await.unwrap();
        check_empty(&mut s1).await;
        check_empty(&mut s2).await;
    }

    #[tokio::test]
    async fn nack_requeue_drop_and_dead_letter() {
        let bus = InprocBus::new();
        let mut s = bus.consume(&["qa".into()]).await.unwrap();
        bus.dispatch(task("a", "qa")).await.unwrap();
        // nack(requeue) redelivers.
        let d = next(&mut s).await;
        d.ack.nack(true).await.unwrap();
        let d = next(&mut s).await;
        assert!(d.redelivered);
        // Dropping without settling redelivers (consumer died).
        drop(d);
        let d = next(&mut s).await;
        assert!(d.redelivered);
        // nack(false) dead-letters.
        d.ack.nack(false).await.unwrap();
        check_empty(&mut s).await;
        let dead = bus.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].task.key.node, "a");
    }

    #[tokio::test]
    async fn dead_letters_are_listed_and_replayed() {
        let bus = InprocBus::new();
        let mut s = bus.consume(&["qa".into()]).await.unwrap();
        for node in ["a", "b", "c"] {
            bus.dispatch(task(node, "qa")).await.unwrap();
        }
        let first = next(&mut s).await;
        first.ack.nack(true).await.unwrap();
        for _ in 0..3 {
            next(&mut s).await.ack.nack(false).await.unwrap();
        }
        check_empty(&mut s).await;

        let dead = bus.list_dead(10).await.unwrap();
        assert_eq!(
            bus.list_dead(10).await.unwrap(),
            dead,
            "listing removes nothing"
        );
        let nodes: Vec<&str> = dead
            .iter()
            .map(|d| d.message.task.key.node.as_str())
            .collect();
        assert_eq!(nodes, vec!["b", "c", "a"], "oldest first");
        assert!(dead
            .iter()
            .all(|d| d.reason == "rejected" && d.dead_at.is_some()));
        assert_eq!(
            dead[2].deliveries,
            Some(2),
            "a was delivered, requeued, delivered"
        );
        assert_eq!(dead[0].deliveries, Some(1));
        assert_eq!(bus.list_dead(1).await.unwrap(), dead[..1].to_vec());

        let replayed = bus.replay_dead(&dead[1].id).await.unwrap();
        assert_eq!(replayed, dead[1].message);
        let d = next(&mut s).await;
        assert_eq!(d.message, dead[1].message);
        assert!(!d.redelivered, "a replay is a fresh dispatch");
        d.ack.ack().await.unwrap();
        assert_eq!(
            bus.list_dead(10).await.unwrap(),
            vec![dead[0].clone(), dead[2].clone()]
        );
        assert_eq!(bus.dead_letters().len(), 2);

        let err = bus.replay_dead("nope").await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert!(
            bus.replay_dead(&dead[1].id).await.is_err(),
            "replayed once only"
        );
    }

    #[tokio::test]
    async fn events_reach_every_subscriber() {
        let bus = InprocBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let ev = Event::workflow(
            EventKind::WorkflowStarted,
            WorkflowId::new(),
            serde_json::json!({}),
        );
        bus.publish(std::slice::from_ref(&ev)).await.unwrap();
        assert_eq!(a.next().await.unwrap().id, ev.id);
        assert_eq!(b.next().await.unwrap().id, ev.id);
        bus.health().await.unwrap();
    }
}

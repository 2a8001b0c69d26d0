//! Task consumers: one channel and one consumer per queue, forwarded into
//! one stream that outlives connections.
//!
//! Each queue's task owns its channel and lapin consumer. When the
//! connection dies, the consumer ends; the task waits for the supervisor's
//! next connection and consumes again, so the caller's stream only goes
//! quiet for the outage. Deliveries of a dead channel still waiting in the
//! stream are dropped unseen: the broker has already requeued them.

use std::sync::Arc;

use agentry_core::{Delivery, DeliveryAck, Error, Result, TaskMessage};
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, BasicProperties, Channel, Connection, Consumer};
use tokio::sync::mpsc;

use crate::broker::{close_quietly, Broker};
use crate::errors::classify;
use crate::link::Backoff;
use crate::topology::short;

/// A consumer of one task queue, on its own channel.
pub(crate) struct QueueConsumer {
    channel: Channel,
    consumer: Consumer,
}

/// Starts consuming the task queue `queue` on `connection`.
pub(crate) async fn start_consumer(
    broker: &Broker,
    generation: u64,
    connection: &Connection,
    queue: &str,
) -> Result<QueueConsumer> {
    broker
        .ensure_task_queue(generation, connection, queue)
        .await?;
    let channel = broker.channel(connection).await?;
    let name = broker.names.task_queue(queue);
    let started = async {
        channel
            .basic_qos(broker.options.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| classify(&format!("setting the prefetch of {name}"), &e))?;
        channel
            .basic_consume(
                short(&name)?,
                short("")?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(&format!("consuming {name}"), &e))
    }
    .await;
    match started {
        Ok(consumer) => Ok(QueueConsumer { channel, consumer }),
        Err(error) => {
            close_quietly(&channel).await;
            Err(error)
        }
    }
}

/// A delivery on its way to the caller.
pub(crate) struct Pending {
    message: TaskMessage,
    redelivered: bool,
    ack: AmqpAck,
}

/// The merged stream of deliveries sent by the queue tasks. Deliveries
/// whose channel died while they waited are skipped: the broker requeued
/// them already, and settling them would fail.
pub(crate) fn delivery_stream(
    rx: mpsc::UnboundedReceiver<Pending>,
) -> BoxStream<'static, Result<Delivery>> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            let pending = rx.recv().await?;
            if !pending.ack.usable() {
                tracing::debug!(
                    queue = %pending.message.queue,
                    "Skipping a delivery of a closed channel; the broker requeued it."
                );
                continue;
            }
            let delivery = Delivery {
                message: pending.message,
                redelivered: pending.redelivered,
                ack: Box::new(pending.ack),
            };
            return Some((Ok(delivery), rx));
        }
    })
    .boxed()
}

/// Runs one queue's consumer until the caller drops the stream or the bus
/// closes, starting from `first` and consuming again after every outage.
pub(crate) async fn run_queue(
    broker: Arc<Broker>,
    queue: String,
    tx: mpsc::UnboundedSender<Pending>,
    first: QueueConsumer,
) {
    let mut link = broker.link();
    let mut backoff = Backoff::new(&broker.options);
    let mut current = Some(first);
    let mut failures = 0u32;
    loop {
        let QueueConsumer {
            channel,
            mut consumer,
        } = match current.take() {
            Some(c) => c,
            None => {
                let started = tokio::select! {
                    _ = tx.closed() => return,
                    live = broker.next_live(&mut link) => match live {
                        None => return,
                        Some((generation, connection)) => {
                            start_consumer(&broker, generation, &connection, &queue).await
                        }
                    },
                };
                match started {
                    Ok(c) => {
                        tracing::debug!(queue = %queue, "Consuming again after an interruption.");
                        failures = 0;
                        c
                    }
                    Err(error) => {
                        failures += 1;
                        // The first failure of a streak is worth a warning
                        // (a live connection that refuses the queue); the
                        // retries are not.
                        if failures == 1 && broker.live_now().is_some() {
                            tracing::warn!(queue = %queue, %error, "Cannot consume the task queue; retrying.");
                        } else {
                            tracing::debug!(queue = %queue, %error, failures, "Cannot consume yet; retrying.");
                        }
                        broker.suspect_connection();
                        let delay = backoff.next_delay();
                        tokio::select! {
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            }
        };
        backoff.reset();
        loop {
            tokio::select! {
                // The caller dropped the stream: dropping the consumer
                // cancels it; the channel closes (returning what it still
                // holds) once the caller's unsettled deliveries are settled.
                _ = tx.closed() => return,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if let Some(pending) = accept(&queue, &channel, delivery).await {
                            if tx.send(pending).is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(queue = %queue, %error, "Task consumer interrupted.");
                    }
                    None => break,
                },
            }
        }
        // The consumer ended: its connection or channel died, or the broker
        // cancelled it (queue deleted). Consume again, after a pause when
        // the connection itself looks fine, declaring the queue again in
        // case it is gone.
        broker.forget_task_queue(&queue);
        broker.suspect_connection();
        if broker.is_closed() {
            return;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Decodes a delivery; an undecodable one is dead-lettered and skipped.
async fn accept(
    queue: &str,
    channel: &Channel,
    delivery: lapin::message::Delivery,
) -> Option<Pending> {
    let redelivered = delivery.redelivered || delivery_count(&delivery.properties) > 0;
    match serde_json::from_slice::<TaskMessage>(&delivery.data) {
        Ok(message) => {
            tracing::debug!(
                queue = %queue,
                workflow_id = %message.task.key.workflow,
                step = message.task.key.step,
                node = %message.task.key.node,
                attempt = message.task.attempt,
                redelivered,
                "Task delivered."
            );
            Some(Pending {
                ack: AmqpAck {
                    acker: Some(delivery.acker),
                    channel: Some(channel.clone()),
                    queue: queue.to_string(),
                },
                message,
                redelivered,
            })
        }
        Err(error) => {
            tracing::warn!(
                queue = %queue,
                message_id = ?delivery.properties.message_id().as_ref().map(|m| m.as_str()),
                %error,
                "Undecodable task message; dead-lettering it."
            );
            if let Err(error) = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
            {
                tracing::warn!(queue = %queue, %error, "Cannot dead-letter an undecodable task message.");
            }
            None
        }
    }
}

/// The broker's count of earlier failed deliveries (`x-delivery-count`,
/// set by quorum queues), 0 when absent.
pub(crate) fn delivery_count(properties: &BasicProperties) -> u64 {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(as_u64)
        .unwrap_or(0)
}

/// An integer header value of any width.
pub(crate) fn as_u64(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::Timestamp(v) => Some(*v),
        _ => None,
    }
}

/// Settles one delivery through lapin's acker. It keeps the delivery's
/// channel open until settled, and gives the message back (nack with
/// requeue) when dropped unsettled, as the in-process bus does.
pub(crate) struct AmqpAck {
    acker: Option<Acker>,
    /// Keeps the channel open while the delivery is unsettled, even when the
    /// stream that produced it is gone.
    channel: Option<Channel>,
    queue: String,
}

impl AmqpAck {
    fn usable(&self) -> bool {
        self.acker.as_ref().is_some_and(Acker::usable)
    }

    async fn settle(&mut self, what: &str, requeue: Option<bool>) -> Result<()> {
        let Some(acker) = self.acker.take() else {
            return Ok(());
        };
        let settled = match requeue {
            None => acker.ack(lapin::options::BasicAckOptions::default()).await,
            Some(true) => {
                acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            }
            Some(false) => acker.reject(BasicRejectOptions { requeue: false }).await,
        };
        self.channel = None;
        match settled {
            Ok(true) => Ok(()),
            // lapin answers `false` when the channel closed under the
            // delivery: the broker has requeued it already.
            Ok(false) => Err(Error::transient(format!(
                "cannot {what} a delivery from {}: its channel closed and the broker requeued it",
                self.queue
            ))),
            Err(error) => Err(classify(&format!("{what} on {}", self.queue), &error)),
        }
    }
}

#[async_trait]
impl DeliveryAck for AmqpAck {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settle("ack", None).await
    }

    async fn nack(mut self: Box<Self>, requeue: bool) -> Result<()> {
        if !requeue {
            tracing::warn!(queue = %self.queue, "Task dead-lettered.");
        }
        self.settle("nack", Some(requeue)).await
    }
}

impl Drop for AmqpAck {
    fn drop(&mut self) {
        // Dropped unsettled: its consumer died holding it. Give it back now
        // rather than when the channel closes (lapin does nothing on drop).
        let Some(acker) = self.acker.take() else {
            return;
        };
        if !acker.usable() {
            return;
        }
        let channel = self.channel.take();
        let queue = std::mem::take(&mut self.queue);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let requeue = BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    };
                    if let Err(error) = acker.nack(requeue).await {
                        tracing::debug!(queue = %queue, %error, "Cannot requeue a dropped delivery; the broker will when its channel closes.");
                    }
                    drop(channel);
                });
            }
            Err(_) => {
                tracing::debug!(queue = %queue, "No runtime to requeue a dropped delivery; the broker will when its channel closes.");
            }
        }
    }
}

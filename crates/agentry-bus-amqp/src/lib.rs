//! RabbitMQ adapter of the [`Bus`] and [`DeadLetters`] ports, on lapin.
//!
//! The scale-out deployment's gateway and workers share tasks and events
//! through it, with the delivery semantics of the in-process bus:
//! competing consumers per queue, explicit ack, `nack(requeue)` redelivers,
//! `nack(false)` dead-letters, and a delivery dropped unsettled (its
//! consumer died) is redelivered with `redelivered = true`.
//!
//! Topology (see [`TopologyNames`]): tasks go through the direct exchange
//! `<prefix>.tasks` to one durable *quorum* queue per logical queue,
//! `<prefix>.tasks.<queue>`, whose `x-delivery-limit` makes the broker
//! dead-letter a message returned too often (a task that kills its worker)
//! through the fanout `<prefix>.dlx` into `<prefix>.tasks.dead`, where
//! [`DeadLetters`] lists and replays it. Events go through the topic
//! exchange `<prefix>.events` with their kind as routing key. Every publish
//! waits for the broker's confirm, and is at least once: one whose confirm
//! was lost with its connection is sent again on the next connection
//! (consumers deduplicate: tasks by their idempotency key, events by id).
//!
//! Key design decision: the bus owns its reconnection instead of using
//! lapin's opt-in auto-recovery. One supervisor task holds the connection
//! and publishes each new one as a *generation* on a `watch` channel;
//! publishers wait on it (up to their confirm timeout), and every consumer
//! and subscriber task, when its lapin consumer ends, waits on it and runs
//! the very code that started it: declare the topology (cached per
//! generation), open a channel, consume. So a first start and a recovery
//! are one path, a consumer stream never ends while the bus lives, and a
//! delivery from a dead connection fails to settle instead of being
//! silently re-acknowledged on a new one (the broker already requeued it).

#![warn(missing_docs)]

mod broker;
mod consume;
mod dead;
mod errors;
mod link;
mod options;
mod subscribe;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{
    Bus, DeadLetter, DeadLetters, Delivery, Error, ErrorClass, Event, Result, TaskMessage,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{mpsc, watch, Mutex, Notify};
use uuid::Uuid;

use crate::broker::{close_quietly, Broker};
use crate::errors::classify;
use crate::link::{open_connection, Link, Supervisor};
use crate::topology::short;

pub use crate::options::{redact_url, AmqpOptions, MAX_PREFIX_LEN};
pub use crate::subscribe::EVENT_BUFFER;
pub use crate::topology::{TopologyNames, RESERVED_QUEUE};

/// Header carrying a task message's logical queue name.
pub const QUEUE_HEADER: &str = "agentry-queue";

/// Most attempts of one publish when the broker fails it transiently
/// (each within the same confirm timeout).
const PUBLISH_ATTEMPTS: u32 = 4;

/// Depth and consumers of one queue, as the broker reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready for delivery (not counting unacknowledged ones).
    pub ready: u32,
    /// Consumers subscribed to the queue now, in every process.
    pub consumers: u32,
}

/// The publish channel, with confirms on, of one connection generation.
struct Publisher {
    generation: u64,
    channel: Channel,
}

/// A message to publish.
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
    /// The task queue it must reach: declared first, and the publish is
    /// mandatory (a message the broker cannot route comes back as an error).
    task_queue: Option<String>,
}

/// Why one publish attempt failed.
enum PublishFailure {
    /// The broker routed the task to no queue (its queue was deleted).
    Unroutable(String),
    /// The broker refused the message (nack).
    Nacked,
    /// Anything else, classified.
    Failed(Error),
}

/// The RabbitMQ bus. Share it as `Arc<AmqpBus>`; dropping the last
/// reference (or [`AmqpBus::close`]) closes the connection.
pub struct AmqpBus {
    broker: Arc<Broker>,
    /// `true` asks the supervisor to close the connection; dropping it too.
    shutdown: watch::Sender<bool>,
    publisher: Mutex<Option<Publisher>>,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus")
            .field("options", &self.broker.options)
            .finish_non_exhaustive()
    }
}

impl Drop for AmqpBus {
    fn drop(&mut self) {
        // No receiver left means the supervisor is already gone.
        let _ = self.shutdown.send(true);
    }
}

impl AmqpBus {
    /// Validates `options`, connects (within `connect_timeout`), declares
    /// the exchanges and the dead-letter queue, and starts the connection's
    /// supervisor. An unreachable broker is a transient error naming the
    /// (redacted) URL. Must be called inside a tokio runtime.
    pub async fn connect(options: AmqpOptions) -> Result<AmqpBus> {
        options.validate()?;
        let uri = options.parse_uri()?;
        let connection = Arc::new(open_connection(&uri, &options).await?);
        let generation = 1;
        let (link_tx, link_rx) = watch::channel(Link {
            generation,
            connection: Some(connection.clone()),
            closed: false,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let suspect = Arc::new(Notify::new());
        let broker = Arc::new(Broker::new(options.clone(), link_rx, suspect.clone()));
        // Fail now on a broker that refuses the topology (permissions,
        // conflicting declarations), not on the first dispatch.
        if let Err(error) = broker.ensure_base(generation, &connection).await {
            let _ = connection.close(200, "setup failed".into()).await;
            return Err(error);
        }
        tokio::spawn(
            Supervisor {
                options: options.clone(),
                uri,
                link: link_tx,
                shutdown: shutdown_rx,
                suspect,
            }
            .run(connection),
        );
        tracing::info!(
            url = %redact_url(&options.url),
            prefix = %options.prefix,
            connection_name = %options.connection_name(),
            "Connected to the AMQP broker."
        );
        Ok(AmqpBus {
            broker,
            shutdown: shutdown_tx,
            publisher: Mutex::new(None),
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &AmqpOptions {
        &self.broker.options
    }

    /// The exchange and queue names it uses.
    pub fn names(&self) -> &TopologyNames {
        &self.broker.names
    }

    /// Closes the connection cleanly: consumer and subscriber streams end,
    /// unacknowledged deliveries go back to their queues, and later calls
    /// fail. Waits (up to `connect_timeout`) for the broker to confirm.
    pub async fn close(&self) {
        let _ = self.shutdown.send(true);
        let mut link = self.broker.link();
        let _ = tokio::time::timeout(
            self.broker.options.connect_timeout + Duration::from_secs(1),
            link.wait_for(|l| l.closed),
        )
        .await;
        self.publisher.lock().await.take();
    }

    /// Messages ready on the task queue `queue` (logical name, `developer`)
    /// and its consumers; `NotFound` when the queue does not exist (nothing
    /// was dispatched to or consumed from it yet).
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.broker.names.check_task_queue(queue)?;
        self.passive_stats(&self.broker.names.task_queue(queue))
            .await
    }

    /// Messages in the dead-letter queue and its consumers.
    pub async fn dead_letter_stats(&self) -> Result<QueueStats> {
        self.passive_stats(&self.broker.names.dead_letter_queue())
            .await
    }

    /// Passive declaration of `name`. It does not wait for a reconnection:
    /// views asking for stats during an outage get an error at once.
    /// Deletes this prefix's topology from the broker: the task queues of
    /// the logical names `queues`, the dead-letter queue and the three
    /// exchanges, with whatever messages they hold. For throw-away
    /// prefixes (a benchmark's); a deployment's topology is never deleted
    /// by Agentry itself.
    pub async fn delete_topology(&self, queues: &[String]) -> Result<()> {
        let Some((_, connection)) = self.broker.live_now() else {
            return Err(self.not_connected());
        };
        let names = &self.broker.names;
        let channel = self.broker.channel(&connection).await?;
        let mut result = Ok(());
        let mut all: Vec<String> = Vec::new();
        for q in queues {
            names.check_task_queue(q)?;
            all.push(names.task_queue(q));
        }
        all.push(names.dead_letter_queue());
        for queue in &all {
            if let Err(e) = channel
                .queue_delete(short(queue)?, lapin::options::QueueDeleteOptions::default())
                .await
            {
                result = Err(classify(&format!("deleting queue {queue}"), &e));
                break;
            }
        }
        if result.is_ok() {
            for exchange in [
                names.task_exchange(),
                names.dead_letter_exchange(),
                names.events_exchange(),
            ] {
                if let Err(e) = channel
                    .exchange_delete(
                        short(&exchange)?,
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await
                {
                    result = Err(classify(&format!("deleting exchange {exchange}"), &e));
                    break;
                }
            }
        }
        close_quietly(&channel).await;
        result
    }

    async fn passive_stats(&self, name: &str) -> Result<QueueStats> {
        let Some((_, connection)) = self.broker.live_now() else {
            return Err(self.not_connected());
        };
        let channel = self.broker.channel(&connection).await?;
        let declared = channel
            .queue_declare(
                short(name)?,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        close_quietly(&channel).await;
        let queue = declared.map_err(|e| match classify(&format!("queue {name}"), &e) {
            Error::NotFound(_) => Error::not_found(format!("queue {name} does not exist")),
            other => other,
        })?;
        Ok(QueueStats {
            ready: queue.message_count(),
            consumers: queue.consumer_count(),
        })
    }

    /// The error of a call that needs the connection right now.
    fn not_connected(&self) -> Error {
        if self.broker.is_closed() {
            errors::closed()
        } else {
            Error::transient("not connected to the AMQP broker (reconnecting)")
        }
    }

    /// A live connection, waiting up to `budget` for a reconnection.
    async fn live(&self, budget: Duration) -> Result<(u64, Arc<Connection>)> {
        self.broker
            .live_until(tokio::time::Instant::now() + budget, budget)
            .await
    }

    /// The outgoing form of a task message.
    fn task_outgoing(&self, task: &TaskMessage, message_id: &str) -> Result<Outgoing> {
        let mut headers = FieldTable::default();
        headers.insert(
            QUEUE_HEADER.into(),
            AMQPValue::LongString(LongString::from(task.queue.clone())),
        );
        let mut properties = BasicProperties::default()
            .with_content_type(short("application/json")?)
            .with_delivery_mode(2)
            .with_message_id(short(message_id)?)
            .with_timestamp(unix_now())
            .with_headers(headers);
        if let Some(request_id) = &task.request_id {
            if let Ok(id) = lapin::types::ShortString::try_new(request_id.to_string()) {
                properties = properties.with_correlation_id(id);
            }
        }
        Ok(Outgoing {
            exchange: self.broker.names.task_exchange(),
            routing_key: task.queue.clone(),
            body: serde_json::to_vec(task)?,
            properties,
            task_queue: Some(task.queue.clone()),
        })
    }

    /// Publishes `batch` and waits for every confirm, by `deadline`;
    /// retries on a new connection or channel after transient failures.
    async fn publish_confirmed(
        &self,
        what: &str,
        batch: &[Outgoing],
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let budget = self.broker.options.confirm_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generation, connection) = self
                .broker
                .live_until(deadline, budget)
                .await
                .map_err(|e| e.context(what))?;
            let outcome =
                tokio::time::timeout_at(deadline, self.try_publish(generation, &connection, batch))
                    .await;
            let failure = match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("{what}: waiting for the broker's confirm"),
                        after: budget,
                    })
                }
            };
            match failure {
                PublishFailure::Unroutable(queue) if attempt < PUBLISH_ATTEMPTS => {
                    // Its queue vanished: declare it again and retry.
                    self.broker.forget_task_queue(&queue);
                }
                PublishFailure::Unroutable(queue) => {
                    return Err(Error::transient(format!(
                        "{what}: the broker routed the message to no queue (is {} deleted?)",
                        self.broker.names.task_queue(&queue)
                    )));
                }
                PublishFailure::Nacked => {
                    return Err(Error::transient(format!(
                        "{what}: the broker refused the message (nack)"
                    )));
                }
                PublishFailure::Failed(error)
                    if error.class() == ErrorClass::Transient && attempt < PUBLISH_ATTEMPTS =>
                {
                    tracing::debug!(%error, attempt, "Publish failed; retrying.");
                    if !connection.status().connected() {
                        self.broker.suspect_connection();
                    }
                }
                PublishFailure::Failed(error) => return Err(error.context(what)),
            }
        }
    }

    /// One publish attempt on the connection of `generation`.
    async fn try_publish(
        &self,
        generation: u64,
        connection: &Connection,
        batch: &[Outgoing],
    ) -> std::result::Result<(), PublishFailure> {
        self.broker
            .ensure_base(generation, connection)
            .await
            .map_err(PublishFailure::Failed)?;
        for queue in batch.iter().filter_map(|m| m.task_queue.as_deref()) {
            self.broker
                .ensure_task_queue(generation, connection, queue)
                .await
                .map_err(PublishFailure::Failed)?;
        }
        let channel = self
            .publisher_channel(generation, connection)
            .await
            .map_err(PublishFailure::Failed)?;
        let mut confirms = Vec::with_capacity(batch.len());
        for message in batch {
            let confirm = channel
                .basic_publish(
                    short(&message.exchange).map_err(PublishFailure::Failed)?,
                    short(&message.routing_key).map_err(PublishFailure::Failed)?,
                    BasicPublishOptions {
                        mandatory: message.task_queue.is_some(),
                        immediate: false,
                    },
                    &message.body,
                    message.properties.clone(),
                )
                .await
                .map_err(|e| PublishFailure::Failed(classify("publishing", &e)))?;
            confirms.push((message, confirm));
        }
        for (message, confirm) in confirms {
            let confirmation = confirm
                .await
                .map_err(|e| PublishFailure::Failed(classify("awaiting the confirm", &e)))?;
            match confirmation {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_returned)) => {
                    return Err(PublishFailure::Unroutable(
                        message.task_queue.clone().unwrap_or_default(),
                    ));
                }
                Confirmation::Nack(_) => return Err(PublishFailure::Nacked),
                Confirmation::NotRequested => {
                    return Err(PublishFailure::Failed(Error::transient(
                        "the publish channel has no publisher confirms",
                    )));
                }
            }
        }
        Ok(())
    }

    /// The confirm channel of `generation`, opened when missing or dead.
    async fn publisher_channel(&self, generation: u64, connection: &Connection) -> Result<Channel> {
        let mut publisher = self.publisher.lock().await;
        if let Some(p) = publisher.as_ref() {
            if p.generation == generation && p.channel.status().connected() {
                return Ok(p.channel.clone());
            }
        }
        let channel = self.broker.channel(connection).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| classify("enabling publisher confirms", &e))?;
        *publisher = Some(Publisher {
            generation,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    #[tracing::instrument(
        name = "amqp.dispatch",
        skip_all,
        fields(
            queue = %task.queue,
            workflow_id = %task.task.key.workflow,
            step = task.task.key.step,
            node = %task.task.key.node,
            attempt = task.task.attempt,
        )
    )]
    async fn dispatch_task(&self, task: TaskMessage) -> Result<()> {
        self.broker.names.check_task_queue(&task.queue)?;
        let message_id = Uuid::new_v4().to_string();
        let outgoing = self.task_outgoing(&task, &message_id)?;
        let deadline = tokio::time::Instant::now() + self.broker.options.confirm_timeout;
        self.publish_confirmed(
            &format!("dispatching a task to {}", task.queue),
            std::slice::from_ref(&outgoing),
            deadline,
        )
        .await?;
        tracing::debug!(message_id = %message_id, "Task dispatched.");
        Ok(())
    }

    #[tracing::instrument(name = "amqp.consume", skip_all, fields(queues = ?queues))]
    async fn consume_queues(
        &self,
        queues: &[String],
    ) -> Result<BoxStream<'static, Result<Delivery>>> {
        if queues.is_empty() {
            return Err(Error::invalid("consume needs at least one queue name"));
        }
        let mut names: Vec<String> = Vec::with_capacity(queues.len());
        for queue in queues {
            self.broker.names.check_task_queue(queue)?;
            if !names.contains(queue) {
                names.push(queue.clone());
            }
        }
        let (generation, connection) = self.live(self.broker.options.connect_timeout).await?;
        let mut started = Vec::with_capacity(names.len());
        for queue in names {
            // On an error, the consumers started so far are dropped, which
            // cancels them and closes their channels.
            let consumer =
                consume::start_consumer(&self.broker, generation, &connection, &queue).await?;
            started.push((queue, consumer));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for (queue, consumer) in started {
            tokio::spawn(consume::run_queue(
                self.broker.clone(),
                queue,
                tx.clone(),
                consumer,
            ));
        }
        Ok(consume::delivery_stream(rx))
    }
}

/// Seconds since the Unix epoch (AMQP timestamps have second precision).
fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

#[async_trait]
impl Bus for AmqpBus {
    fn name(&self) -> &'static str {
        "amqp"
    }

    async fn health(&self) -> Result<()> {
        let Some((_, connection)) = self.broker.live_now() else {
            return Err(self.not_connected());
        };
        let channel = tokio::time::timeout(
            self.broker.options.connect_timeout,
            self.broker.channel(&connection),
        )
        .await
        .map_err(|_| {
            Error::transient(format!(
                "the AMQP broker opened no channel within {} ms",
                self.broker.options.connect_timeout.as_millis()
            ))
        })??;
        close_quietly(&channel).await;
        Ok(())
    }

    async fn publish(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.broker.options.confirm_timeout;
        // Subscriptions made on this bus before this call see its events.
        self.broker.subscribers_bound(deadline).await;
        let exchange = self.broker.names.events_exchange();
        let mut batch = Vec::with_capacity(events.len());
        for event in events {
            let properties = BasicProperties::default()
                .with_content_type(short("application/json")?)
                .with_message_id(short(&event.id.to_string())?)
                .with_timestamp(u64::try_from(event.at.timestamp()).unwrap_or(0));
            batch.push(Outgoing {
                exchange: exchange.clone(),
                routing_key: event.kind.as_str().to_string(),
                body: serde_json::to_vec(event)?,
                properties,
                task_queue: None,
            });
        }
        self.publish_confirmed(
            &format!("publishing {} events", events.len()),
            &batch,
            deadline,
        )
        .await
    }

    fn subscribe(&self) -> BoxStream<'static, Event> {
        subscribe::subscribe(self.broker.clone())
    }

    async fn dispatch(&self, task: TaskMessage) -> Result<()> {
        self.dispatch_task(task).await
    }

    async fn consume(&self, queues: &[String]) -> Result<BoxStream<'static, Result<Delivery>>> {
        self.consume_queues(queues).await
    }
}

#[async_trait]
impl DeadLetters for AmqpBus {
    /// Fetches up to `limit` dead letters without acknowledging them, then
    /// closes the channel so the broker puts every one back where it was.
    /// While a listing or a replay holds them, a concurrent listing does
    /// not see them.
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (generation, connection) = self.live(self.broker.options.confirm_timeout).await?;
        self.broker.ensure_base(generation, &connection).await?;
        let channel = self.broker.channel(&connection).await?;
        let queue = self.broker.names.dead_letter_queue();
        let listed = async {
            let mut letters = Vec::new();
            while letters.len() < limit {
                let got = channel
                    .basic_get(short(&queue)?, BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|e| classify(&format!("reading {queue}"), &e))?;
                let Some(message) = got else { break };
                match dead::dead_letter(
                    &message.delivery.properties,
                    &message.delivery.data,
                    self.broker.options.delivery_limit,
                ) {
                    Ok(letter) => letters.push(letter),
                    Err(why) => tracing::warn!(queue = %queue, why = %why, "Skipping a dead-letter message."),
                }
            }
            Ok(letters)
        }
        .await;
        // Unacknowledged, they all return to the queue in their order.
        close_quietly(&channel).await;
        listed
    }

    /// Takes messages from the dead-letter queue until the one with message
    /// id `id`, publishes its task to its queue afresh (new message id, new
    /// delivery count) with a confirm, then acknowledges the dead copy; the
    /// other messages go back in their order when the channel closes.
    async fn replay_dead(&self, id: &str) -> Result<TaskMessage> {
        let started = tokio::time::Instant::now();
        let (generation, connection) = self.live(self.broker.options.confirm_timeout).await?;
        self.broker.ensure_base(generation, &connection).await?;
        let channel = self.broker.channel(&connection).await?;
        let queue = self.broker.names.dead_letter_queue();
        let replayed = async {
            let found = loop {
                let got = channel
                    .basic_get(short(&queue)?, BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|e| classify(&format!("reading {queue}"), &e))?;
                match got {
                    None => return Err(Error::not_found(format!("no dead letter with id `{id}`"))),
                    Some(message) if dead::message_id(&message.delivery.properties) == Some(id) => {
                        break message;
                    }
                    Some(_) => {}
                }
            };
            let letter = dead::dead_letter(
                &found.delivery.properties,
                &found.delivery.data,
                self.broker.options.delivery_limit,
            )
                .map_err(|why| Error::permanent(format!("dead letter `{id}` cannot be replayed: {why}")))?;
            self.broker.names.check_task_queue(&letter.message.queue)?;
            let message_id = Uuid::new_v4().to_string();
            let outgoing = self.task_outgoing(&letter.message, &message_id)?;
            self.publish_confirmed(
                &format!("replaying dead letter `{id}` to {}", letter.message.queue),
                std::slice::from_ref(&outgoing),
                started + self.broker.options.confirm_timeout,
            )
            .await?;
            match found.delivery.acker.ack(lapin::options::BasicAckOptions::default()).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::transient(format!(
                        "dead letter `{id}` was replayed as {message_id}, but its dead copy \
                         could not be removed (channel closed); it is still listed"
                    )))
                }
                Err(error) => {
                    return Err(classify(
                        &format!("dead letter `{id}` was replayed as {message_id}, but removing its dead copy failed"),
                        &error,
                    ))
                }
            }
            tracing::info!(
                dead_letter = %id,
                message_id = %message_id,
                queue = %letter.message.queue,
                workflow_id = %letter.message.task.key.workflow,
                node = %letter.message.task.key.node,
                "Dead letter replayed."
            );
            Ok(letter.message)
        }
        .await;
        close_quietly(&channel).await;
        replayed
    }
}

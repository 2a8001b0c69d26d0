//! Event subscriptions: one exclusive, auto-delete, server-named queue per
//! subscriber, bound with `#` to the events exchange, consumed without
//! acknowledgements, and declared again on every new connection.

use std::sync::Arc;

use agentry_core::{Event, Result};
use futures::stream::{BoxStream, StreamExt};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::errors::classify;
use crate::link::Backoff;
use crate::topology::short;

/// Events a subscriber may fall behind by before it skips the newest ones
/// (they stay in the store's outbox, readable by `seq`).
pub const EVENT_BUFFER: usize = 4096;

/// A live subscription: events from now on, across reconnections, until the
/// bus is closed or dropped.
pub(crate) fn subscribe(broker: Arc<Broker>) -> BoxStream<'static, Event> {
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let state = BindState::new(broker.clone());
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(run_subscriber(broker, tx, state));
        }
        Err(_) => {
            tracing::warn!(
                "subscribe() called outside a tokio runtime; the event stream is empty."
            );
            return futures::stream::empty().boxed();
        }
    }
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
}

/// Whether this subscription counts among the bus's unbound ones (which
/// publishers wait for).
struct BindState {
    broker: Arc<Broker>,
    unbound: bool,
}

impl BindState {
    fn new(broker: Arc<Broker>) -> Self {
        broker.subscriber_unbound();
        BindState {
            broker,
            unbound: true,
        }
    }

    fn bound(&mut self) {
        if self.unbound {
            self.unbound = false;
            self.broker.subscriber_bound();
        }
    }

    fn lost(&mut self) {
        if !self.unbound {
            self.unbound = true;
            self.broker.subscriber_unbound();
        }
    }
}

impl Drop for BindState {
    fn drop(&mut self) {
        self.bound();
    }
}

/// Declares this subscriber's queue on `connection` and consumes it.
async fn start(
    broker: &Broker,
    generation: u64,
    connection: &Connection,
) -> Result<(Channel, Consumer)> {
    broker.ensure_base(generation, connection).await?;
    let channel = broker.channel(connection).await?;
    let queue = channel
        .queue_declare(
            short("")?,
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify("declaring an event subscription queue", &e))?;
    let name = queue.name().clone();
    channel
        .queue_bind(
            name.clone(),
            short(&broker.names.events_exchange())?,
            short("#")?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&format!("binding {name} to the events exchange"), &e))?;
    let consumer = channel
        .basic_consume(
            name.clone(),
            short("")?,
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&format!("consuming {name}"), &e))?;
    Ok((channel, consumer))
}

/// Forwards events until the subscriber drops its stream or the bus closes.
async fn run_subscriber(broker: Arc<Broker>, tx: mpsc::Sender<Event>, mut state: BindState) {
    let mut link = broker.link();
    let mut backoff = Backoff::new(&broker.options);
    let mut failures = 0u32;
    loop {
        let live = tokio::select! {
            _ = tx.closed() => return,
            live = broker.next_live(&mut link) => live,
        };
        let Some((generation, connection)) = live else {
            return;
        };
        let (channel, mut consumer) = match start(&broker, generation, &connection).await {
            Ok(started) => started,
            Err(error) => {
                // Do not hold publishers up while this subscription fails.
                state.bound();
                failures += 1;
                if failures == 1 && broker.live_now().is_some() {
                    tracing::warn!(%error, "Cannot subscribe to events; retrying.");
                } else {
                    tracing::debug!(%error, failures, "Cannot subscribe to events yet; retrying.");
                }
                broker.suspect_connection();
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        state.bound();
        backoff.reset();
        failures = 0;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => match serde_json::from_slice::<Event>(&delivery.data) {
                        Ok(event) => match tx.try_send(event) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(event)) => {
                                tracing::debug!(event_id = %event.id, "Event subscriber lagged; skipping an event.");
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        },
                        Err(error) => {
                            tracing::warn!(
                                routing_key = %delivery.routing_key,
                                %error,
                                "Undecodable event skipped."
                            );
                        }
                    },
                    Some(Err(error)) => {
                        tracing::debug!(%error, "Event subscription interrupted.");
                    }
                    None => break,
                },
            }
        }
        state.lost();
        drop(consumer);
        drop(channel);
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

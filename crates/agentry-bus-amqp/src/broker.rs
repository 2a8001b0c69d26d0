//! [`Broker`]: what the bus, its consumers and its subscribers share about
//! the broker: the options, the names, the current connection, and which
//! parts of the topology were declared on it.
//!
//! It holds no power over the connection's life (the supervisor and the bus
//! do), so consumer and subscriber tasks may keep it without keeping the
//! bus alive.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agentry_core::Result;
use lapin::{Channel, Connection};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::errors::classify;
use crate::link::{live_connection, next_live_connection, Link};
use crate::options::AmqpOptions;
use crate::topology::{declare_base, declare_task_queue, TopologyNames};

/// Topology declared on one connection generation.
#[derive(Default)]
struct Declared {
    generation: u64,
    base: bool,
    queues: HashSet<String>,
}

/// Shared view of the broker.
pub(crate) struct Broker {
    pub options: AmqpOptions,
    pub names: TopologyNames,
    link: watch::Receiver<Link>,
    /// Tells the supervisor to look at the connection now.
    suspect: Arc<Notify>,
    declared: Mutex<Declared>,
    /// Held while declaring: RabbitMQ 3.10 answers concurrent declarations
    /// of one quorum queue with INTERNAL_ERROR and closes the connection,
    /// so this process declares one thing at a time.
    declaring: tokio::sync::Mutex<()>,
    /// Subscriptions of this bus not (yet, or not again) bound to the
    /// events exchange; publishers wait for it to be zero.
    unbound_subscribers: watch::Sender<usize>,
}

impl Broker {
    pub fn new(options: AmqpOptions, link: watch::Receiver<Link>, suspect: Arc<Notify>) -> Self {
        let names = TopologyNames::new(options.prefix.clone());
        Broker {
            options,
            names,
            link,
            suspect,
            declared: Mutex::new(Declared::default()),
            declaring: tokio::sync::Mutex::new(()),
            unbound_subscribers: watch::Sender::new(0),
        }
    }

    /// The link, to wait on.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.clone()
    }

    /// Whether the bus was closed.
    pub fn is_closed(&self) -> bool {
        self.link.borrow().closed
    }

    /// The live connection right now, if any.
    pub fn live_now(&self) -> Option<(u64, Arc<Connection>)> {
        let link = self.link.borrow();
        link.live().map(|c| (link.generation, c))
    }

    /// A live connection, waiting for a reconnection until `deadline`
    /// (`budget` is the caller's whole allowance, for the error message).
    pub async fn live_until(
        &self,
        deadline: tokio::time::Instant,
        budget: Duration,
    ) -> Result<(u64, Arc<Connection>)> {
        live_connection(&self.link, deadline, budget).await
    }

    /// A live connection, however long it takes; `None` once closed.
    pub async fn next_live(
        &self,
        link: &mut watch::Receiver<Link>,
    ) -> Option<(u64, Arc<Connection>)> {
        next_live_connection(link).await
    }

    /// An operation failed in a way that may mean the connection died.
    pub fn suspect_connection(&self) {
        self.suspect.notify_one();
    }

    /// Opens a channel on `connection`.
    pub async fn channel(&self, connection: &Connection) -> Result<Channel> {
        connection
            .create_channel()
            .await
            .map_err(|e| classify("opening an AMQP channel", &e))
    }

    /// Declares the exchanges and the dead-letter queue, once per
    /// connection generation.
    pub async fn ensure_base(&self, generation: u64, connection: &Connection) -> Result<()> {
        if self.with_declared(generation, |d| d.base) {
            return Ok(());
        }
        let _declaring = self.declaring.lock().await;
        if self.with_declared(generation, |d| d.base) {
            return Ok(());
        }
        let channel = self.channel(connection).await?;
        let result = declare_base(&channel, &self.names).await;
        close_quietly(&channel).await;
        result?;
        self.with_declared(generation, |d| d.base = true);
        Ok(())
    }

    /// Declares and binds the task queue `queue` (and the base), once per
    /// connection generation.
    pub async fn ensure_task_queue(
        &self,
        generation: u64,
        connection: &Connection,
        queue: &str,
    ) -> Result<()> {
        self.ensure_base(generation, connection).await?;
        if self.with_declared(generation, |d| d.queues.contains(queue)) {
            return Ok(());
        }
        let _declaring = self.declaring.lock().await;
        if self.with_declared(generation, |d| d.queues.contains(queue)) {
            return Ok(());
        }
        let channel = self.channel(connection).await?;
        let result =
            declare_task_queue(&channel, &self.names, queue, self.options.delivery_limit).await;
        close_quietly(&channel).await;
        result?;
        self.with_declared(generation, |d| d.queues.insert(queue.to_string()));
        Ok(())
    }

    /// Forgets that `queue` was declared (it was found missing).
    pub fn forget_task_queue(&self, queue: &str) {
        self.declared.lock().queues.remove(queue);
    }

    /// Runs `f` on the declarations of `generation` (resetting them when the
    /// generation changed).
    fn with_declared<T>(&self, generation: u64, f: impl FnOnce(&mut Declared) -> T) -> T {
        let mut declared = self.declared.lock();
        if declared.generation != generation {
            *declared = Declared {
                generation,
                ..Declared::default()
            };
        }
        f(&mut declared)
    }

    /// One more subscription waits to be bound.
    pub fn subscriber_unbound(&self) {
        self.unbound_subscribers.send_modify(|n| *n += 1);
    }

    /// A subscription was bound (or gave up).
    pub fn subscriber_bound(&self) {
        self.unbound_subscribers
            .send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Waits (until `deadline` at most) for every subscription of this bus
    /// to be bound, so an event published after `subscribe()` reaches it.
    pub async fn subscribers_bound(&self, deadline: tokio::time::Instant) {
        let mut unbound = self.unbound_subscribers.subscribe();
        // On timeout, publish anyway: the publish itself reports a broker
        // that is really gone.
        let _ = tokio::time::timeout_at(deadline, unbound.wait_for(|n| *n == 0)).await;
    }
}

/// Closes a channel, ignoring errors (it may already be closed).
pub(crate) async fn close_quietly(channel: &Channel) {
    if channel.status().connected() {
        if let Err(error) = channel.close(200, "OK".into()).await {
            tracing::trace!(%error, "AMQP channel close failed.");
        }
    }
}

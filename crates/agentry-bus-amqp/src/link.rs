//! The connection and its supervisor: one AMQP connection per bus, replaced
//! by a new one (a new *generation*) whenever it dies.
//!
//! Everything that talks to the broker reads the current [`Link`] from a
//! `watch` channel: publishers wait on it for a live connection (up to their
//! deadline), consumers and subscribers wait on it to resume after an
//! outage. The supervisor task is the only writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{Error, Result};
use futures::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use tokio::sync::{watch, Notify};

use crate::options::{redact_url, AmqpOptions};

/// The connection as the supervisor last published it.
#[derive(Clone)]
pub(crate) struct Link {
    /// Bumped on every new connection.
    pub generation: u64,
    /// The live connection; `None` while reconnecting or once closed.
    pub connection: Option<Arc<Connection>>,
    /// The bus was closed or dropped: nothing will connect again.
    pub closed: bool,
}

impl Link {
    /// The connection, when there is one and lapin still deems it usable.
    pub fn live(&self) -> Option<Arc<Connection>> {
        self.connection
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }
}

/// Opens one connection, bounded by `connect_timeout`.
pub(crate) async fn open_connection(uri: &AMQPUri, options: &AmqpOptions) -> Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name(options.connection_name().into());
    let url = redact_url(&options.url);
    match tokio::time::timeout(
        options.connect_timeout,
        Connection::connect_uri(uri.clone(), properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(Error::transient(format!(
            "cannot connect to the AMQP broker at {url}: {error}"
        ))),
        Err(_) => Err(Error::transient(format!(
            "cannot connect to the AMQP broker at {url}: no connection within {} ms",
            options.connect_timeout.as_millis()
        ))),
    }
}

/// Exponential backoff with jitter, between the options' reconnect bounds.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(options: &AmqpOptions) -> Self {
        Backoff {
            min: options.reconnect_min,
            max: options.reconnect_max,
            next: options.reconnect_min,
        }
    }

    /// The next delay: the current step scaled by a random factor in
    /// [0.5, 1], then the step doubles up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let factor = rand::thread_rng().gen_range(0.5..=1.0);
        let delay = self.next.mul_f64(factor).max(self.min / 2);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How often the supervisor looks at the connection's state, besides
/// listening to its error events.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The task that owns the connection: it notices when the connection dies,
/// reconnects with backoff, publishes each new generation, and closes the
/// connection when the bus shuts down.
pub(crate) struct Supervisor {
    pub options: AmqpOptions,
    pub uri: AMQPUri,
    pub link: watch::Sender<Link>,
    /// `true` (or dropped) once the bus is closed.
    pub shutdown: watch::Receiver<bool>,
    /// Poked by anyone who saw an operation fail for connection reasons.
    pub suspect: Arc<Notify>,
}

impl Supervisor {
    /// Runs until shutdown, starting from the connection `first`.
    pub async fn run(mut self, first: Arc<Connection>) {
        let url = redact_url(&self.options.url);
        let mut connection = first;
        let mut generation = self.link.borrow().generation;
        loop {
            let reason = match self.watch(&connection).await {
                Some(reason) => reason,
                None => {
                    self.close(&connection).await;
                    return;
                }
            };
            self.link.send_modify(|l| l.connection = None);
            drop(connection);
            tracing::warn!(url = %url, error = %reason, "AMQP connection lost; reconnecting.");
            let down_since = Instant::now();
            let mut backoff = Backoff::new(&self.options);
            let mut attempts = 0u32;
            connection = loop {
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = shutdown_signal(&mut self.shutdown) => {
                        self.link.send_modify(|l| { l.connection = None; l.closed = true; });
                        return;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
                attempts += 1;
                match open_connection(&self.uri, &self.options).await {
                    Ok(c) => break Arc::new(c),
                    Err(error) => {
                        tracing::debug!(url = %url, attempts, %error, "AMQP reconnection attempt failed.");
                    }
                }
            };
            generation += 1;
            tracing::info!(
                url = %url,
                attempts,
                down_ms = u64::try_from(down_since.elapsed().as_millis()).unwrap_or(u64::MAX),
                generation,
                "AMQP connection re-established."
            );
            let live = connection.clone();
            self.link.send_modify(|l| {
                l.generation = generation;
                l.connection = Some(live);
            });
        }
    }

    /// Waits until `connection` dies (returns why) or the bus shuts down
    /// (returns `None`).
    async fn watch(&mut self, connection: &Connection) -> Option<String> {
        let mut events = connection.events_listener().boxed();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Channel-level failures (a passive declare of a missing queue) are
        // reported as error events too: only the connection's own state
        // says whether it died; the last error says why.
        let mut last_error: Option<String> = None;
        loop {
            if !connection.status().connected() {
                return Some(
                    last_error
                        .unwrap_or_else(|| format!("connection state {:?}", connection.status())),
                );
            }
            tokio::select! {
                _ = shutdown_signal(&mut self.shutdown) => return None,
                event = events.next() => match event {
                    Some(lapin::Event::Error(error)) => last_error = Some(error.to_string()),
                    Some(_) => {}
                    // No more events (never while the connection lives):
                    // the state check on each tick decides from now on.
                    None => events = futures::stream::pending().boxed(),
                },
                _ = self.suspect.notified() => {}
                _ = tick.tick() => {}
            }
        }
    }

    /// Closes the connection cleanly (the broker requeues what its channels
    /// held unacknowledged) and marks the link closed.
    async fn close(&mut self, connection: &Connection) {
        self.link.send_modify(|l| l.connection = None);
        if connection.status().connected() {
            match tokio::time::timeout(
                self.options.connect_timeout,
                connection.close(200, "bus closed".into()),
            )
            .await
            {
                Ok(Ok(())) => tracing::debug!("AMQP connection closed."),
                Ok(Err(error)) => tracing::debug!(%error, "AMQP connection close failed."),
                Err(_) => tracing::debug!("AMQP connection close timed out."),
            }
        }
        self.link.send_modify(|l| l.closed = true);
    }
}

/// Resolves once shutdown is requested (or its sender is gone).
async fn shutdown_signal(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender (the bus) was dropped: that is shutdown too.
    let _ = shutdown.wait_for(|closed| *closed).await;
}

/// Waits for a live connection until `deadline`.
pub(crate) async fn live_connection(
    link: &watch::Receiver<Link>,
    deadline: tokio::time::Instant,
    waited_for: Duration,
) -> Result<(u64, Arc<Connection>)> {
    let mut link = link.clone();
    let wait = async {
        let current = link
            .wait_for(|l| l.closed || l.live().is_some())
            .await
            .map_err(|_| crate::errors::closed())?;
        if current.closed {
            return Err(crate::errors::closed());
        }
        match current.live() {
            Some(connection) => Ok((current.generation, connection)),
            None => Err(crate::errors::closed()),
        }
    };
    match tokio::time::timeout_at(deadline, wait).await {
        Ok(result) => result,
        Err(_) => Err(Error::transient(format!(
            "the AMQP broker is unreachable: still reconnecting after {} ms",
            waited_for.as_millis()
        ))),
    }
}

/// Waits, without a deadline, for a live connection; `None` once the bus is
/// closed.
pub(crate) async fn next_live_connection(
    link: &mut watch::Receiver<Link>,
) -> Option<(u64, Arc<Connection>)> {
    let current = link
        .wait_for(|l| l.closed || l.live().is_some())
        .await
        .ok()?;
    if current.closed {
        return None;
    }
    current.live().map(|c| (current.generation, c))
}

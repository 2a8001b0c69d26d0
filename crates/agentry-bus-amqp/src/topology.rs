//! The broker-side topology: exchange and queue names derived from the
//! prefix, and their idempotent declarations.
//!
//! ```text
//! <prefix>.tasks   (direct)  --q-->  <prefix>.tasks.<q>    quorum, x-delivery-limit,
//!                                                          dead-letters to <prefix>.dlx
//! <prefix>.dlx     (fanout)  ----->  <prefix>.tasks.dead   classic, durable
//! <prefix>.events  (topic)   --#-->  one exclusive, auto-delete queue per subscriber
//! ```

use agentry_core::{Error, Result};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::errors::classify;

/// Longest name the broker accepts for a queue or an exchange.
const MAX_NAME_LEN: usize = 255;

/// The logical queue name reserved for the dead letters
/// (`<prefix>.tasks.dead`); no task queue may use it.
pub const RESERVED_QUEUE: &str = "dead";

/// Exchange and queue names of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNames {
    prefix: String,
}

impl TopologyNames {
    /// The names under `prefix` (validated by [`crate::AmqpOptions::validate`]).
    pub fn new(prefix: impl Into<String>) -> Self {
        TopologyNames {
            prefix: prefix.into(),
        }
    }

    /// The prefix every exchange and queue name starts with (`agent` by
    /// default: the config's `amqp_prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.tasks`: the direct exchange tasks are published to, with
    /// their queue name as routing key.
    pub fn task_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }

    /// `<prefix>.tasks.<queue>`: the quorum queue of the logical queue
    /// `queue` (`developer`, `developer.python`).
    pub fn task_queue(&self, queue: &str) -> String {
        format!("{}.tasks.{queue}", self.prefix)
    }

    /// `<prefix>.dlx`: the fanout exchange task queues dead-letter to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// `<prefix>.tasks.dead`: the queue holding the dead letters.
    pub fn dead_letter_queue(&self) -> String {
        self.task_queue(RESERVED_QUEUE)
    }

    /// `<prefix>.events`: the topic exchange events are published to, with
    /// their kind (`agent.task.completed`) as routing key.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Checks a logical task queue name: `[A-Za-z0-9_:.-]+` (a role and its
    /// tags), not the reserved `dead`, short enough for the broker.
    pub fn check_task_queue(&self, queue: &str) -> Result<()> {
        if queue.is_empty()
            || !queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
        {
            return Err(Error::invalid(format!(
                "task queue name `{queue}` may hold only letters, digits, `_`, `:`, `.` and `-`"
            )));
        }
        if queue == RESERVED_QUEUE {
            return Err(Error::invalid(format!(
                "task queue name `{RESERVED_QUEUE}` is reserved for the dead letters"
            )));
        }
        if self.task_queue(queue).len() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "task queue name `{queue}` is too long: `{}` exceeds {MAX_NAME_LEN} bytes",
                self.task_queue(queue)
            )));
        }
        Ok(())
    }
}

/// A name the broker accepts (checked lengths make this infallible for
/// the names built above; a failure is reported, not panicked on).
pub(crate) fn short(name: &str) -> Result<ShortString> {
    ShortString::try_new(name).map_err(|e| Error::invalid(format!("name `{name}`: {e}")))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the exchanges and the dead-letter queue.
pub(crate) async fn declare_base(channel: &Channel, names: &TopologyNames) -> Result<()> {
    for (exchange, kind) in [
        (names.task_exchange(), ExchangeKind::Direct),
        (names.dead_letter_exchange(), ExchangeKind::Fanout),
        (names.events_exchange(), ExchangeKind::Topic),
    ] {
        channel
            .exchange_declare(
                short(&exchange)?,
                kind,
                durable_exchange(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(&format!("declaring exchange {exchange}"), &e))?;
    }
    let dead = names.dead_letter_queue();
    channel
        .queue_declare(
            short(&dead)?,
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&format!("declaring queue {dead}"), &e))?;
    channel
        .queue_bind(
            short(&dead)?,
            short(&names.dead_letter_exchange())?,
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&format!("binding queue {dead}"), &e))?;
    Ok(())
}

/// The arguments of every task queue.
pub(crate) fn task_queue_arguments(names: &TopologyNames, delivery_limit: u32) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(delivery_limit)),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(names.dead_letter_exchange())),
    );
    arguments
}

/// Declares the task queue of `queue` and binds it (the base topology must
/// exist).
pub(crate) async fn declare_task_queue(
    channel: &Channel,
    names: &TopologyNames,
    queue: &str,
    delivery_limit: u32,
) -> Result<()> {
    let name = names.task_queue(queue);
    channel
        .queue_declare(
            short(&name)?,
            QueueDeclareOptions::durable(),
            task_queue_arguments(names, delivery_limit),
        )
        .await
        .map_err(|e| match classify(&format!("declaring queue {name}"), &e) {
            Error::Permanent(message) => Error::permanent(format!(
                "{message} (the queue exists with other arguments: another delivery limit \
                 or queue type; delete it or use the same settings)"
            )),
            other => other,
        })?;
    channel
        .queue_bind(
            short(&name)?,
            short(&names.task_exchange())?,
            short(queue)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| classify(&format!("binding queue {name}"), &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let names = TopologyNames::new("agent");
        assert_eq!(names.task_exchange(), "agent.tasks");
        assert_eq!(
            names.task_queue("developer.python"),
            "agent.tasks.developer.python"
        );
        assert_eq!(names.dead_letter_exchange(), "agent.dlx");
        assert_eq!(names.dead_letter_queue(), "agent.tasks.dead");
        assert_eq!(names.events_exchange(), "agent.events");
    }

    #[test]
    fn task_queue_names_are_checked() {
        let names = TopologyNames::new("agent");
        assert!(names.check_task_queue("developer.model:small").is_ok());
        for bad in ["", "a b", "dead", "x/y", &"q".repeat(250)] {
            let err = names.check_task_queue(bad).unwrap_err();
            assert_eq!(
                err.class(),
                agentry_core::ErrorClass::InvalidInput,
                "{bad}: {err}"
            );
        }
    }
}

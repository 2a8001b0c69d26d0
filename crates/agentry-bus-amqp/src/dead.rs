//! Reading dead letters: a dead-lettered task message keeps the properties
//! it was dispatched with (its `message_id` is the dead letter's id) and
//! gains the broker's `x-death` header (why, how often, when).

use agentry_core::{DeadLetter, TaskMessage};
use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::consume::{as_u64, delivery_count};

/// What the broker recorded about a message's death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Death {
    /// `rejected`, `delivery_limit`, `expired`, `maxlen`.
    pub reason: String,
    /// How many times it died that way from that queue.
    pub count: Option<u64>,
    /// When it died (last time).
    pub time: Option<DateTime<Utc>>,
}

/// The message id a message was dispatched with.
pub(crate) fn message_id(properties: &BasicProperties) -> Option<&str> {
    properties.message_id().as_ref().map(|m| m.as_str())
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(key)
}

/// The latest entry of the `x-death` header (the broker keeps the most
/// recent first), or the `x-first-death-reason` header alone.
pub(crate) fn death(properties: &BasicProperties) -> Option<Death> {
    let latest: Option<&FieldTable> = match header(properties, "x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries.as_slice().iter().find_map(|e| match e {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        }),
        _ => None,
    };
    if let Some(entry) = latest {
        let get = |k: &str| entry.inner().get(k);
        if let Some(reason) = get("reason").and_then(text) {
            return Some(Death {
                reason,
                count: get("count").and_then(as_u64),
                time: get("time")
                    .and_then(as_u64)
                    .and_then(|secs| i64::try_from(secs).ok())
                    .and_then(|secs| DateTime::from_timestamp(secs, 0)),
            });
        }
    }
    header(properties, "x-first-death-reason")
        .and_then(text)
        .map(|reason| Death {
            reason,
            count: None,
            time: None,
        })
}

/// A dead letter from a message of the dead-letter queue; `Err` says why
/// it cannot be one (no message id, or a body that is no task).
///
/// `delivery_limit` is the task queues' limit (a queue declared with
/// another one would have failed this bus's declaration).
pub(crate) fn dead_letter(
    properties: &BasicProperties,
    body: &[u8],
    delivery_limit: u32,
) -> Result<DeadLetter, String> {
    let id = message_id(properties)
        .filter(|id| !id.is_empty())
        .ok_or("it has no message id")?
        .to_string();
    let message: TaskMessage =
        serde_json::from_slice(body).map_err(|e| format!("its body is no task message: {e}"))?;
    let death = death(properties);
    // Quorum queues count failed deliveries in `x-delivery-count`, but
    // RabbitMQ 3.10 drops that header when it dead-letters. A message that
    // died of the delivery limit was delivered once plus `delivery_limit`
    // returns; for one rejected, the count is known only if the header is
    // there (the last delivery, which ended in its death, plus the earlier).
    let deliveries = match delivery_count(properties) {
        0 if death.as_ref().is_some_and(|d| d.reason == "delivery_limit") => {
            delivery_limit.checked_add(1)
        }
        0 => None,
        earlier => u32::try_from(earlier + 1).ok(),
    };
    Ok(DeadLetter {
        id,
        message,
        reason: death
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |d| d.reason.clone()),
        deliveries,
        dead_at: death.and_then(|d| d.time),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn death_header(reason: &str, count: i64, time: u64) -> BasicProperties {
        let mut entry = FieldTable::default();
        entry.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        entry.insert("count".into(), AMQPValue::LongLongInt(count));
        entry.insert("time".into(), AMQPValue::Timestamp(time));
        entry.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from("agent.tasks.qa")),
        );
        let mut older = FieldTable::default();
        older.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("expired")),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::FieldTable(entry),
                AMQPValue::FieldTable(older),
            ])),
        );
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        BasicProperties::default()
            .with_headers(headers)
            .with_message_id("m-1".into())
    }

    #[test]
    fn the_latest_death_gives_reason_count_and_time() {
        let props = death_header("delivery_limit", 1, 1_700_000_000);
        assert_eq!(
            death(&props),
            Some(Death {
                reason: "delivery_limit".into(),
                count: Some(1),
                time: DateTime::from_timestamp(1_700_000_000, 0),
            })
        );
        let task = serde_json::json!({
            "task": {"workflow_id": "0190a0b0-0000-7000-8000-000000000000", "step": 1, "node": "qa", "attempt": 1},
            "queue": "qa", "request_id": null, "tags": [], "enqueued_at": "2024-01-01T00:00:00Z"
        });
        let body = task.to_string();
        let letter = dead_letter(&props, body.as_bytes(), 5).unwrap();
        assert_eq!(letter.id, "m-1");
        assert_eq!(letter.reason, "delivery_limit");
        assert_eq!(
            letter.deliveries,
            Some(3),
            "x-delivery-count 2, plus the last"
        );
        assert_eq!(letter.message.queue, "qa");
        assert!(dead_letter(&props, b"not json", 5)
            .unwrap_err()
            .contains("no task message"));
        assert!(dead_letter(&BasicProperties::default(), b"{}", 5)
            .unwrap_err()
            .contains("no message id"));
        // As RabbitMQ 3.10 dead-letters: x-death, no x-delivery-count.
        let strip = |reason: &str| {
            let mut entry = FieldTable::default();
            entry.insert(
                "reason".into(),
                AMQPValue::LongString(LongString::from(reason)),
            );
            let mut headers = FieldTable::default();
            headers.insert(
                "x-death".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(entry)])),
            );
            BasicProperties::default()
                .with_headers(headers)
                .with_message_id("m-2".into())
        };
        let limited = dead_letter(&strip("delivery_limit"), body.as_bytes(), 5).unwrap();
        assert_eq!(limited.deliveries, Some(6));
        let rejected = dead_letter(&strip("rejected"), body.as_bytes(), 5).unwrap();
        assert_eq!(
            (rejected.reason.as_str(), rejected.deliveries),
            ("rejected", None)
        );
    }
}

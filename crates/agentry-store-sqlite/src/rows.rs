//! Encoding of domain values into SQLite columns and decoding of rows back.
//!
//! UUIDs are stored as lower-case hyphenated TEXT (so text order is UUID
//! order, and v7 ids sort by creation), timestamps as RFC 3339 TEXT with
//! nanoseconds and a `Z` suffix (fixed width, lossless), JSON as TEXT.

use std::collections::BTreeMap;

use agentry_core::{
    AccessRole, AgentOutputRecord, ApiKeyRecord, Checkpoint, Cursor, Error, Event, EventKind,
    RequestId, Result, RunOptions, StateDelta, StoredEvent, WorkerBeat, WorkerInfo, WorkerRecord,
    WorkflowId, WorkflowRecord, WorkflowStatus,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, db_error};

/// Columns of `workflows` that make a [`WorkflowRecord`], in the order
/// [`workflow_from_row`] reads them by name.
pub(crate) const WORKFLOW_COLUMNS: &str = "id, request_id, requirements, status, workflow_name, \
     definition, options, tenant, cursor, current_step, created_at, updated_at";

/// Columns of `checkpoints` that make a [`Checkpoint`].
pub(crate) const CHECKPOINT_COLUMNS: &str =
    "workflow_id, seq, step, node, attempt, delta, cursor, status, current_step, note, created_at";

/// Columns of `agent_outputs` that make an [`AgentOutputRecord`].
pub(crate) const OUTPUT_COLUMNS: &str =
    "id, workflow_id, agent_name, output_type, content, step, created_at";

/// Columns of `events` that make a [`StoredEvent`].
pub(crate) const EVENT_COLUMNS: &str =
    "seq, published, id, kind, workflow_id, step, node, attempt, request_id, payload, at";

/// Columns of `api_keys` that make an [`ApiKeyRecord`].
pub(crate) const API_KEY_COLUMNS: &str =
    "id, tenant, role, name, secret_hash, created_at, revoked_at";

/// Columns of `workers` that make a [`WorkerRecord`].
pub(crate) const WORKER_COLUMNS: &str = "id, host, pid, roles, tags, concurrency, version, \
     started_at, in_flight, tasks, completed, failed, last_task_at, beat_at, stopped_at";

/// A timestamp as stored.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A workflow id as stored.
pub(crate) fn id_text(id: WorkflowId) -> String {
    id.0.hyphenated().to_string()
}

/// A `u64` for an INTEGER column; values above `i64::MAX` are invalid input.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(format!("{what} {value} is too large")))
}

fn get<'r, T>(row: &'r SqliteRow, table: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get::<T, _>(column)
        .map_err(|error| db_error(&format!("reading {table}.{column}"), error))
}

fn get_u64(row: &SqliteRow, table: &str, column: &str) -> Result<u64> {
    let value: i64 = get(row, table, column)?;
    u64::try_from(value).map_err(|_| corrupt(table, format!("{column} is negative: {value}")))
}

fn get_opt_u64(row: &SqliteRow, table: &str, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = get(row, table, column)?;
    value
        .map(|v| u64::try_from(v).map_err(|_| corrupt(table, format!("{column} is negative: {v}"))))
        .transpose()
}

fn get_u32(row: &SqliteRow, table: &str, column: &str) -> Result<u32> {
    let value: i64 = get(row, table, column)?;
    u32::try_from(value).map_err(|_| corrupt(table, format!("{column} out of range: {value}")))
}

fn get_opt_u32(row: &SqliteRow, table: &str, column: &str) -> Result<Option<u32>> {
    let value: Option<i64> = get(row, table, column)?;
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| corrupt(table, format!("{column} out of range: {v}")))
        })
        .transpose()
}

fn get_uuid(row: &SqliteRow, table: &str, column: &str) -> Result<Uuid> {
    let text: String = get(row, table, column)?;
    Uuid::parse_str(&text).map_err(|error| corrupt(table, format!("{column} `{text}`: {error}")))
}

fn get_time(row: &SqliteRow, table: &str, column: &str) -> Result<DateTime<Utc>> {
    let text: Option<String> = get(row, table, column)?;
    let text = text.unwrap_or_default();
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|error| corrupt(table, format!("{column} `{text}`: {error}")))
}

fn get_opt_time(row: &SqliteRow, table: &str, column: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = get(row, table, column)?;
    text.map(|text| {
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|error| corrupt(table, format!("{column} `{text}`: {error}")))
    })
    .transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    table: &str,
    column: &str,
) -> Result<T> {
    let text: Option<String> = get(row, table, column)?;
    serde_json::from_str(text.as_deref().unwrap_or("null"))
        .map_err(|error| corrupt(table, format!("{column} is not the expected JSON: {error}")))
}

fn get_status(row: &SqliteRow, table: &str, column: &str) -> Result<WorkflowStatus> {
    let text: Option<String> = get(row, table, column)?;
    text.unwrap_or_default()
        .parse()
        .map_err(|error: Error| corrupt(table, error))
}

/// Decodes a `workflows` row selected with [`WORKFLOW_COLUMNS`].
pub(crate) fn workflow_from_row(row: &SqliteRow) -> Result<WorkflowRecord> {
    const T: &str = "workflows";
    Ok(WorkflowRecord {
        id: WorkflowId(get_uuid(row, T, "id")?),
        request_id: RequestId::from_stored(
            get::<Option<String>>(row, T, "request_id")?.unwrap_or_default(),
        ),
        requirements: get::<Option<String>>(row, T, "requirements")?.unwrap_or_default(),
        status: get_status(row, T, "status")?,
        workflow_name: get(row, T, "workflow_name")?,
        definition: get(row, T, "definition")?,
        options: get_json::<RunOptions>(row, T, "options")?,
        tenant: get(row, T, "tenant")?,
        cursor: get_json::<Cursor>(row, T, "cursor")?,
        current_step: get(row, T, "current_step")?,
        created_at: get_time(row, T, "created_at")?,
        updated_at: get_time(row, T, "updated_at")?,
    })
}

/// Decodes a `checkpoints` row selected with [`CHECKPOINT_COLUMNS`].
pub(crate) fn checkpoint_from_row(row: &SqliteRow) -> Result<Checkpoint> {
    const T: &str = "checkpoints";
    Ok(Checkpoint {
        workflow_id: WorkflowId(get_uuid(row, T, "workflow_id")?),
        seq: get_u64(row, T, "seq")?,
        step: get_u64(row, T, "step")?,
        node: get(row, T, "node")?,
        attempt: get_opt_u32(row, T, "attempt")?,
        delta: get_json::<StateDelta>(row, T, "delta")?,
        cursor: get_json::<Option<Cursor>>(row, T, "cursor")?,
        status: get_status(row, T, "status")?,
        current_step: get(row, T, "current_step")?,
        note: get(row, T, "note")?,
        created_at: get_time(row, T, "created_at")?,
    })
}

/// Decodes an `agent_outputs` row selected with [`OUTPUT_COLUMNS`].
pub(crate) fn output_from_row(row: &SqliteRow) -> Result<AgentOutputRecord> {
    const T: &str = "agent_outputs";
    Ok(AgentOutputRecord {
        id: get_uuid(row, T, "id")?,
        workflow_id: WorkflowId(get_uuid(row, T, "workflow_id")?),
        agent_name: get::<Option<String>>(row, T, "agent_name")?.unwrap_or_default(),
        output_type: get::<Option<String>>(row, T, "output_type")?.unwrap_or_default(),
        content: get_json::<Value>(row, T, "content")?,
        step: get_u64(row, T, "step")?,
        created_at: get_time(row, T, "created_at")?,
    })
}

/// Decodes `shared_context` rows (`key, value`) into a map.
pub(crate) fn context_from_rows(rows: &[SqliteRow]) -> Result<BTreeMap<String, Value>> {
    const T: &str = "shared_context";
    rows.iter()
        .map(|row| {
            let key: Option<String> = get(row, T, "key")?;
            Ok((key.unwrap_or_default(), get_json::<Value>(row, T, "value")?))
        })
        .collect()
}

/// Decodes an `events` row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(row: &SqliteRow) -> Result<StoredEvent> {
    const T: &str = "events";
    let kind: String = get(row, T, "kind")?;
    let kind = EventKind::parse(&kind)
        .ok_or_else(|| corrupt(T, format!("unknown event kind `{kind}`")))?;
    Ok(StoredEvent {
        seq: get_u64(row, T, "seq")?,
        published: get::<i64>(row, T, "published")? != 0,
        event: Event {
            id: get_uuid(row, T, "id")?,
            kind,
            workflow_id: WorkflowId(get_uuid(row, T, "workflow_id")?),
            step: get_opt_u64(row, T, "step")?,
            node: get(row, T, "node")?,
            attempt: get_opt_u32(row, T, "attempt")?,
            request_id: get::<Option<String>>(row, T, "request_id")?.map(RequestId::from_stored),
            payload: get_json::<Value>(row, T, "payload")?,
            at: get_time(row, T, "at")?,
        },
    })
}

/// Decodes an `api_keys` row selected with [`API_KEY_COLUMNS`]. A role
/// this build does not know (the CHECK constraint bypassed, or a newer
/// build's role) is a permanent error naming the key and the value.
pub(crate) fn api_key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord> {
    const T: &str = "api_keys";
    let id: String = get(row, T, "id")?;
    let role: String = get(row, T, "role")?;
    let role = AccessRole::ALL
        .into_iter()
        .find(|known| known.as_str() == role)
        .ok_or_else(|| corrupt(T, format!("API key `{id}` has unknown role `{role}`")))?;
    Ok(ApiKeyRecord {
        tenant: get(row, T, "tenant")?,
        role,
        name: get(row, T, "name")?,
        secret_hash: get(row, T, "secret_hash")?,
        created_at: get_time(row, T, "created_at")?,
        revoked_at: get_opt_time(row, T, "revoked_at")?,
        id,
    })
}

/// Decodes a `workers` row selected with [`WORKER_COLUMNS`].
pub(crate) fn worker_from_row(row: &SqliteRow) -> Result<WorkerRecord> {
    const T: &str = "workers";
    let id: String = get(row, T, "id")?;
    Ok(WorkerRecord {
        info: WorkerInfo {
            id: id.clone(),
            host: get(row, T, "host")?,
            pid: get_u32(row, T, "pid")?,
            roles: get_json(row, T, "roles")?,
            tags: get_json(row, T, "tags")?,
            concurrency: get_u32(row, T, "concurrency")?,
            version: get(row, T, "version")?,
            started_at: get_time(row, T, "started_at")?,
        },
        beat: WorkerBeat {
            id,
            in_flight: get_u32(row, T, "in_flight")?,
            tasks: get_json(row, T, "tasks")?,
            completed: get_u64(row, T, "completed")?,
            failed: get_u64(row, T, "failed")?,
            last_task_at: get_opt_time(row, T, "last_task_at")?,
            at: get_time(row, T, "beat_at")?,
        },
        stopped_at: get_opt_time(row, T, "stopped_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_losslessly_and_sort_as_text() {
        let earlier = Utc::now();
        let later = earlier + chrono::Duration::nanoseconds(1);
        let (a, b) = (timestamp(earlier), timestamp(later));
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), b.len());
        let back = DateTime::parse_from_rfc3339(&a)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(back, earlier);
    }
}

//! Encoding of domain values into PostgreSQL columns and decoding of rows
//! back.
//!
//! UUIDs are `UUID`, JSON is `JSONB`, times are `TIMESTAMPTZ` (microseconds).
//! Times the store makes are truncated to microseconds before they are
//! written ([`now`]); times a caller hands in are split into the
//! microsecond instant and the nanoseconds below it ([`split_time`],
//! [`join_time`]), so they read back exactly as given.

use std::collections::BTreeMap;

use agentry_core::{
    AccessRole, AgentOutputRecord, ApiKeyRecord, Checkpoint, Cursor, Error, Event, EventKind,
    RequestId, Result, RunOptions, StateDelta, StoredEvent, WorkerBeat, WorkerInfo, WorkerRecord,
    WorkflowId, WorkflowRecord, WorkflowStatus,
};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, db_error};

/// Columns of `workflows` that make a [`WorkflowRecord`].
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
    "seq, published, id, kind, workflow_id, step, node, attempt, request_id, payload, at, at_ns";

/// Columns of `api_keys` that make an [`ApiKeyRecord`].
pub(crate) const API_KEY_COLUMNS: &str =
    "id, tenant, role, name, secret_hash, created_at, created_at_ns, revoked_at, revoked_at_ns";

/// Columns of `workers` that make a [`WorkerRecord`].
pub(crate) const WORKER_COLUMNS: &str = "id, host, pid, roles, tags, concurrency, version, \
     started_at, started_at_ns, in_flight, tasks, completed, failed, last_task_at, \
     last_task_at_ns, beat_at, beat_at_ns, stopped_at, stopped_at_ns";

/// The current time as the store writes it (whole microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A caller's time as `(microsecond instant, nanoseconds below it)`.
pub(crate) fn split_time(at: DateTime<Utc>) -> (DateTime<Utc>, i32) {
    let micros = at.trunc_subsecs(6);
    let below = (at - micros).num_nanoseconds().unwrap_or(0);
    (micros, i32::try_from(below).unwrap_or(0))
}

/// The inverse of [`split_time`].
pub(crate) fn join_time(at: DateTime<Utc>, ns: i32) -> DateTime<Utc> {
    at + chrono::Duration::nanoseconds(i64::from(ns))
}

/// A `u64` for a BIGINT column; values above `i64::MAX` are invalid input.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(format!("{what} {value} is too large")))
}

fn get<'r, T>(row: &'r PgRow, table: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<T, _>(column)
        .map_err(|error| db_error(&format!("reading {table}.{column}"), error))
}

fn get_u64(row: &PgRow, table: &str, column: &str) -> Result<u64> {
    let value: i64 = get(row, table, column)?;
    u64::try_from(value).map_err(|_| corrupt(table, format!("{column} is negative: {value}")))
}

fn get_opt_u64(row: &PgRow, table: &str, column: &str) -> Result<Option<u64>> {
    let value: Option<i64> = get(row, table, column)?;
    value
        .map(|v| u64::try_from(v).map_err(|_| corrupt(table, format!("{column} is negative: {v}"))))
        .transpose()
}

fn get_u32(row: &PgRow, table: &str, column: &str) -> Result<u32> {
    let value: i64 = get(row, table, column)?;
    u32::try_from(value).map_err(|_| corrupt(table, format!("{column} out of range: {value}")))
}

fn get_opt_u32(row: &PgRow, table: &str, column: &str) -> Result<Option<u32>> {
    let value: Option<i64> = get(row, table, column)?;
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| corrupt(table, format!("{column} out of range: {v}")))
        })
        .transpose()
}

fn get_time(row: &PgRow, table: &str, column: &str) -> Result<DateTime<Utc>> {
    let at: Option<DateTime<Utc>> = get(row, table, column)?;
    at.ok_or_else(|| corrupt(table, format!("{column} is NULL")))
}

/// A caller's time kept as `column` and `column_ns` (see [`split_time`]).
fn get_exact_time(row: &PgRow, table: &str, column: &str) -> Result<DateTime<Utc>> {
    let ns: i32 = get(row, table, &format!("{column}_ns"))?;
    Ok(join_time(get_time(row, table, column)?, ns))
}

/// Like [`get_exact_time`], for a nullable time.
fn get_opt_exact_time(row: &PgRow, table: &str, column: &str) -> Result<Option<DateTime<Utc>>> {
    let at: Option<DateTime<Utc>> = get(row, table, column)?;
    let ns: Option<i32> = get(row, table, &format!("{column}_ns"))?;
    Ok(at.map(|at| join_time(at, ns.unwrap_or(0))))
}

fn get_json<T: serde::de::DeserializeOwned>(row: &PgRow, table: &str, column: &str) -> Result<T> {
    let value: Option<Value> = get(row, table, column)?;
    serde_json::from_value(value.unwrap_or(Value::Null))
        .map_err(|error| corrupt(table, format!("{column} is not the expected JSON: {error}")))
}

pub(crate) fn get_status(row: &PgRow, table: &str, column: &str) -> Result<WorkflowStatus> {
    let text: Option<String> = get(row, table, column)?;
    text.unwrap_or_default()
        .parse()
        .map_err(|error: Error| corrupt(table, error))
}

/// JSON for a JSONB parameter.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Json<&T> {
    Json(value)
}

/// Decodes a `workflows` row selected with [`WORKFLOW_COLUMNS`].
pub(crate) fn workflow_from_row(row: &PgRow) -> Result<WorkflowRecord> {
    const T: &str = "workflows";
    Ok(WorkflowRecord {
        id: WorkflowId(get(row, T, "id")?),
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
pub(crate) fn checkpoint_from_row(row: &PgRow) -> Result<Checkpoint> {
    const T: &str = "checkpoints";
    Ok(Checkpoint {
        workflow_id: WorkflowId(get(row, T, "workflow_id")?),
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
pub(crate) fn output_from_row(row: &PgRow) -> Result<AgentOutputRecord> {
    const T: &str = "agent_outputs";
    Ok(AgentOutputRecord {
        id: get::<Uuid>(row, T, "id")?,
        workflow_id: WorkflowId(get(row, T, "workflow_id")?),
        agent_name: get::<Option<String>>(row, T, "agent_name")?.unwrap_or_default(),
        output_type: get::<Option<String>>(row, T, "output_type")?.unwrap_or_default(),
        content: get_json::<Value>(row, T, "content")?,
        step: get_u64(row, T, "step")?,
        created_at: get_time(row, T, "created_at")?,
    })
}

/// Decodes `shared_context` rows (`key, value`) into a map.
pub(crate) fn context_from_rows(rows: &[PgRow]) -> Result<BTreeMap<String, Value>> {
    const T: &str = "shared_context";
    rows.iter()
        .map(|row| {
            let key: Option<String> = get(row, T, "key")?;
            Ok((key.unwrap_or_default(), get_json::<Value>(row, T, "value")?))
        })
        .collect()
}

/// Decodes an `events` row selected with [`EVENT_COLUMNS`].
pub(crate) fn event_from_row(row: &PgRow) -> Result<StoredEvent> {
    const T: &str = "events";
    let kind: String = get(row, T, "kind")?;
    let kind = EventKind::parse(&kind)
        .ok_or_else(|| corrupt(T, format!("unknown event kind `{kind}`")))?;
    Ok(StoredEvent {
        seq: get_u64(row, T, "seq")?,
        published: get(row, T, "published")?,
        event: Event {
            id: get(row, T, "id")?,
            kind,
            workflow_id: WorkflowId(get(row, T, "workflow_id")?),
            step: get_opt_u64(row, T, "step")?,
            node: get(row, T, "node")?,
            attempt: get_opt_u32(row, T, "attempt")?,
            request_id: get::<Option<String>>(row, T, "request_id")?.map(RequestId::from_stored),
            payload: get_json::<Value>(row, T, "payload")?,
            at: join_time(get_time(row, T, "at")?, get(row, T, "at_ns")?),
        },
    })
}

/// Decodes an `api_keys` row selected with [`API_KEY_COLUMNS`]. A role
/// this build does not know is a permanent error naming the key and the
/// value.
pub(crate) fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord> {
    const T: &str = "api_keys";
    let id: String = get(row, T, "id")?;
    let role: String = get(row, T, "role")?;
    let role = AccessRole::ALL
        .into_iter()
        .find(|known| known.as_str() == role)
        .ok_or_else(|| corrupt(T, format!("API key `{id}` has unknown role `{role}`")))?;
    let revoked_at: Option<DateTime<Utc>> = get(row, T, "revoked_at")?;
    let revoked_ns: Option<i32> = get(row, T, "revoked_at_ns")?;
    Ok(ApiKeyRecord {
        tenant: get(row, T, "tenant")?,
        role,
        name: get(row, T, "name")?,
        secret_hash: get(row, T, "secret_hash")?,
        created_at: join_time(
            get_time(row, T, "created_at")?,
            get(row, T, "created_at_ns")?,
        ),
        revoked_at: revoked_at.map(|at| join_time(at, revoked_ns.unwrap_or(0))),
        id,
    })
}

/// Decodes a `workers` row selected with [`WORKER_COLUMNS`].
pub(crate) fn worker_from_row(row: &PgRow) -> Result<WorkerRecord> {
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
            started_at: get_exact_time(row, T, "started_at")?,
        },
        beat: WorkerBeat {
            id,
            in_flight: get_u32(row, T, "in_flight")?,
            tasks: get_json(row, T, "tasks")?,
            completed: get_u64(row, T, "completed")?,
            failed: get_u64(row, T, "failed")?,
            last_task_at: get_opt_exact_time(row, T, "last_task_at")?,
            at: get_exact_time(row, T, "beat_at")?,
        },
        stopped_at: get_opt_exact_time(row, T, "stopped_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_times_join_back_exactly() {
        for text in [
            "2026-03-04T05:06:07.123456789Z",
            "1969-12-31T23:59:59.999999999Z",
            "1900-01-01T00:00:00.000000001Z",
        ] {
            let at = DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| e.to_string());
            let Ok(at) = at else { panic!("{text}") };
            let (micros, ns) = split_time(at);
            assert!((0..1000).contains(&ns), "{text}: {ns}");
            assert_eq!(micros, micros.trunc_subsecs(6));
            assert_eq!(join_time(micros, ns), at, "{text}");
        }
    }
}

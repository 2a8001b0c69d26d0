//! The outbox in two halves: commits stage their events in
//! `events_pending` without a seq (the statements of [`crate::write`] bind
//! them as [`EventColumns`] and select them from [`unnest_events`]), and
//! the [`Sequencer`] numbers committed ones into `events` (see the crate
//! docs for why).
//!
//! A sequencer pass is ONE transaction, sent as one multi-statement query
//! (one round trip, an implicit transaction): lock the `event_seq` row,
//! then, in a second statement and so with a snapshot taken after the lock
//! was granted, delete up to [`PASS_BATCH`] pending rows in `ord` order,
//! number them from `event_seq.last`, insert them into `events` and move
//! `last` on. The lock is held until that transaction's COMMIT, so passes
//! (of any store on the schema) run one after another, and each sees every
//! row the one before it moved as gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use agentry_core::{Error, Event, Result};
use sqlx::{PgPool, Row};

use crate::error::db_error;
use crate::rows::{json, split_time, to_i64};

/// Most pending events one sequencer pass moves; a pass that moves this
/// many is followed by another. Bounds the pass's transaction whatever the
/// backlog (a store nobody read from for a long time).
pub(crate) const PASS_BATCH: i64 = 10_000;

/// The columns an event has in both `events_pending` and `events`.
pub(crate) const EVENT_DATA: &str =
    "id, kind, workflow_id, step, node, attempt, request_id, payload, at, at_ns";

/// `UNNEST(...)` of the ten arrays of [`EventColumns`], bound from parameter
/// `$first` on, as a row source with [`EVENT_DATA`]'s columns and the
/// position `n`.
pub(crate) fn unnest_events(first: usize) -> String {
    let types = [
        "uuid[]",
        "text[]",
        "uuid[]",
        "bigint[]",
        "text[]",
        "bigint[]",
        "text[]",
        "jsonb[]",
        "timestamptz[]",
        "int[]",
    ];
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", first + i))
        .collect();
    format!(
        "UNNEST({}) WITH ORDINALITY AS e ({EVENT_DATA}, n)",
        params.join(", ")
    )
}

/// Events as one array per column, for [`unnest_events`].
pub(crate) struct EventColumns<'a> {
    pub(crate) ids: Vec<uuid::Uuid>,
    pub(crate) kinds: Vec<&'a str>,
    pub(crate) workflows: Vec<uuid::Uuid>,
    pub(crate) steps: Vec<Option<i64>>,
    pub(crate) nodes: Vec<Option<&'a str>>,
    pub(crate) attempts: Vec<Option<i64>>,
    pub(crate) request_ids: Vec<Option<&'a str>>,
    pub(crate) payloads: Vec<sqlx::types::Json<&'a serde_json::Value>>,
    pub(crate) ats: Vec<chrono::DateTime<chrono::Utc>>,
    pub(crate) at_ns: Vec<i32>,
}

impl<'a> EventColumns<'a> {
    pub(crate) fn of(events: &'a [Event]) -> Result<Self> {
        let n = events.len();
        let mut columns = EventColumns {
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            workflows: Vec::with_capacity(n),
            steps: Vec::with_capacity(n),
            nodes: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            request_ids: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            ats: Vec::with_capacity(n),
            at_ns: Vec::with_capacity(n),
        };
        for event in events {
            columns.ids.push(event.id);
            columns.kinds.push(event.kind.as_str());
            columns.workflows.push(event.workflow_id.0);
            columns
                .steps
                .push(event.step.map(|s| to_i64(s, "event step")).transpose()?);
            columns.nodes.push(event.node.as_deref());
            columns.attempts.push(event.attempt.map(i64::from));
            columns.request_ids.push(
                event
                    .request_id
                    .as_ref()
                    .map(agentry_core::RequestId::as_str),
            );
            columns.payloads.push(json(&event.payload));
            let (at, ns) = split_time(event.at);
            columns.ats.push(at);
            columns.at_ns.push(ns);
        }
        Ok(columns)
    }
}

/// Moves committed events from `events_pending` to `events`, numbering
/// them. One per store; the passes of one store are single-flight: a
/// caller that arrives while a pass runs waits for it and then runs one
/// more only when no pass that started after it arrived has succeeded.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    /// Passes this store started (changed only while `running` is held).
    started: AtomicU64,
    /// Held while a pass runs; the number of the last pass that succeeded.
    running: tokio::sync::Mutex<u64>,
}

impl Sequencer {
    /// Returns once every event committed before the call is in `events`
    /// with its seq (whoever moved it: this store, or another store on the
    /// schema).
    pub(crate) async fn catch_up(&self, pool: &PgPool) -> Result<()> {
        let arrived = self.started.load(Ordering::Acquire);
        // Empty in a snapshot taken now: every event committed before the
        // call was moved by a pass that committed (a pass in flight has not
        // deleted its rows yet, for this snapshot).
        let pending: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events_pending)")
            .fetch_one(pool)
            .await
            .map_err(|error| db_error("reading the outbox's pending events", error))?;
        if !pending {
            return Ok(());
        }
        let mut succeeded = self.running.lock().await;
        if *succeeded > arrived {
            // A pass that started after this call arrived (so after the
            // caller's commits) has moved everything it needs.
            return Ok(());
        }
        let pass = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        while run_pass(pool).await? == PASS_BATCH {}
        *succeeded = pass;
        Ok(())
    }
}

/// One sequencer pass: two statements in one simple query, so one
/// implicit transaction, and the second statement's snapshot is taken after
/// the first one's lock was granted. The result (of the second) is how many
/// pending events it moved and how many of them it inserted.
static PASS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT last FROM event_seq FOR UPDATE;\n\
         WITH moved AS (\
             DELETE FROM events_pending \
             WHERE ord IN (SELECT ord FROM events_pending ORDER BY ord LIMIT {PASS_BATCH}) \
             RETURNING ord, {EVENT_DATA}\
         ), numbered AS (\
             SELECT c.last + row_number() OVER (ORDER BY m.ord) AS seq, m.* \
             FROM moved m CROSS JOIN event_seq c\
         ), inserted AS (\
             INSERT INTO events (seq, {EVENT_DATA}) \
             SELECT seq, {EVENT_DATA} FROM numbered ORDER BY seq \
             ON CONFLICT (id) DO NOTHING RETURNING seq\
         ), bumped AS (\
             UPDATE event_seq SET last = last + (SELECT count(*) FROM moved) \
             WHERE EXISTS (SELECT 1 FROM moved)\
         ) \
         SELECT count(*) AS moved, (SELECT count(*) FROM inserted) AS kept FROM moved;"
    )
});

/// Runs one sequencer pass ([`PASS_SQL`]); the number of events moved.
async fn run_pass(pool: &PgPool) -> Result<i64> {
    let rows = sqlx::raw_sql(&PASS_SQL)
        .fetch_all(pool)
        .await
        .map_err(|error| db_error("sequencing the outbox's pending events", error))?;
    let counts = rows
        .last()
        .ok_or_else(|| Error::permanent("sequencing the outbox: no result"))?;
    let count = |column: &str| {
        counts
            .try_get::<i64, _>(column)
            .map_err(|error| db_error("sequencing the outbox: reading the counts", error))
    };
    let (moved, kept) = (count("moved")?, count("kept")?);
    if kept < moved {
        tracing::warn!(
            dropped = moved - kept,
            "Pending events repeated the ids of sequenced events; dropped."
        );
    }
    Ok(moved)
}

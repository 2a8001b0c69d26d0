//! `GET /v1/workflows/{id}/events`: server-sent events, resumable.
//!
//! Key design decision: the stream is read from the store's event log, by
//! position (`seq`, sent as the SSE `id`), and the bus only says "look
//! again". So a reconnect with `Last-Event-ID: N` continues exactly after
//! event N, with nothing missed and nothing repeated, whichever process
//! committed the events. Live `agent.progress` events (never stored) are
//! passed through without an id, so they do not move the resume point. The
//! stream ends after the event that ends the workflow's run.

use std::convert::Infallible;
use std::time::Duration;

use agentry_core::{AccessRole, EventKind, WorkflowStatus};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{Stream, StreamExt};
use serde::Deserialize;

use super::model::EventView;
use super::workflows::parse_query;
use super::{require, AppState, Caller, PathParam};
use crate::problem::{ApiError, ReadErrors};

const BATCH: u32 = 500;
const POLL: Duration = Duration::from_millis(1000);

/// Query of the event stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Start after this event position (like `Last-Event-ID`, which wins
    /// when both are given).
    #[param(minimum = 0)]
    pub after: Option<u64>,
}

/// Events that end a stream: the workflow's run is over.
fn ends_stream(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::WorkflowCompleted
            | EventKind::WorkflowFailed
            | EventKind::WorkflowCancelled
            | EventKind::WorkflowRejected
    )
}

fn is_final(status: WorkflowStatus) -> bool {
    matches!(
        status,
        WorkflowStatus::Completed
            | WorkflowStatus::Failed
            | WorkflowStatus::Cancelled
            | WorkflowStatus::Rejected
    )
}

/// Follow a workflow's events as server-sent events.
#[utoipa::path(
    get, path = "/v1/workflows/{id}/events", operation_id = "streamWorkflowEvents", tag = "workflows",
    params(
        ("id" = String, Path, format = Uuid, description = "Workflow id"),
        ("last-event-id" = Option<String>, Header, description = "Resume after this event (the SSE `id` last received)"),
        EventParams
    ),
    responses(
        (status = 200, description = "An event stream: each message has `event:` the kind, `data:` an EventView JSON, and (for stored events) `id:` its position", content_type = "text/event-stream", body = super::model::SseMessage),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    require(&p, AccessRole::Viewer)?;
    let params: EventParams = parse_query(raw)?;
    let record = state.workflow_of(&p, &id).await?;
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::field("last-event-id", "must be an event position (a number)")
            })?,
        None => params.after.unwrap_or(0),
    };
    let keepalive = Duration::from_secs(state.config.sse_keepalive_s.max(1));
    let slot = state.streams.open(&p.subject)?;
    let stream = follow(state, record.id, record.tenant.clone(), after, slot);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response())
}

fn follow(
    state: AppState,
    id: agentry_core::WorkflowId,
    tenant: Option<String>,
    after: u64,
    slot: StreamSlot,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |tx| async move {
        // Held while the stream lives: counts against the caps.
        let _slot = slot;
        // Subscribe before the first read, so nothing falls between them.
        let mut live = state.engine.subscribe();
        let mut last = after;
        loop {
            let batch = match state.store.events(Some(id), last, BATCH).await {
                Ok(b) => b,
                Err(error) => {
                    tracing::warn!(workflow_id = %id, %error, "Event stream cannot read the store.");
                    return;
                }
            };
            let mut ended = false;
            for stored in &batch {
                last = stored.seq;
                let view = EventView::stored(stored, tenant.as_deref());
                let event = SseEvent::default()
                    .id(stored.seq.to_string())
                    .event(view.kind.clone())
                    .json_data(&view);
                let Ok(event) = event else { continue };
                if tx.send(event).await.is_err() {
                    return;
                }
                // Only the latest event counts: a failure followed by a
                // resume goes on.
                ended = ends_stream(stored.event.kind);
            }
            if batch.len() as u32 == BATCH {
                continue;
            }
            if ended {
                return;
            }
            // Nothing more stored: a workflow that already ended (its final
            // event was sent on an earlier connection) ends the stream too.
            match state.store.get_workflow(id).await {
                Ok(r) if is_final(r.status) => {
                    // Its final event may have landed after the read above.
                    if let Ok(rest) = state.store.events(Some(id), last, 1).await {
                        if !rest.is_empty() {
                            continue;
                        }
                    }
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
            // Wait for a sign of news: an event of this workflow on the bus,
            // a poll tick, or shutdown.
            let deadline = tokio::time::sleep(POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    // The client went away: stop reading for it.
                    _ = tx.closed() => return,
                    _ = &mut deadline => break,
                    next = live.next() => match next {
                        None => {
                            (&mut deadline).await;
                            break;
                        }
                        Some(ev) if ev.workflow_id != id => {}
                        Some(ev) if ev.kind == EventKind::AgentProgress => {
                            let view = EventView::new(&ev, None, tenant.as_deref());
                            if let Ok(event) = SseEvent::default().event(view.kind.clone()).json_data(&view) {
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Some(_) => break,
                    },
                }
            }
        }
    })
}

/// Open event streams, capped per caller and in all: each one is a task
/// that reads the store, so a client must not be able to open without end.
#[derive(Debug)]
pub struct StreamCaps {
    per_caller: usize,
    total: usize,
    open: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One open stream; closing it (dropping) frees its place.
#[derive(Debug)]
pub struct StreamSlot {
    caller: String,
    open: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, usize>>>,
}

impl StreamCaps {
    /// At most `per_caller` streams per caller and `total` in all.
    pub fn new(per_caller: usize, total: usize) -> Self {
        StreamCaps {
            per_caller: per_caller.max(1),
            total: total.max(1),
            open: Default::default(),
        }
    }

    /// A place for one more stream of `caller`: 429 over the caller's cap,
    /// 503 over the server's.
    pub fn open(&self, caller: &str) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock();
        let all: usize = open.values().sum();
        let mine = open.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(ApiError::RateLimited(Duration::from_secs(5)));
        }
        if all >= self.total {
            return Err(ApiError::Unavailable {
                detail: format!(
                    "the server has its limit of {} event streams open; retry later",
                    self.total
                ),
                retry_after: Duration::from_secs(5),
            });
        }
        *open.entry(caller.to_string()).or_insert(0) += 1;
        Ok(StreamSlot {
            caller: caller.to_string(),
            open: self.open.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// A stream fed by a producer task through a small channel; the task stops
/// when the client goes away (its sends fail).
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    tokio_stream_from(rx).map(Ok)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<SseEvent>,
) -> impl Stream<Item = SseEvent> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

//! Contract servers for tests: an OpenAI-compatible (`POST
//! /v1/chat/completions`) or Anthropic (`POST /v1/messages`) server on
//! loopback ([`ContractServer`]) whose answers come from any
//! [`LlmProvider`] (the "brain", e.g. a scripted provider or canned
//! responses), with fault injection ([`Fault`]) and request inspection.
//!
//! Key design decision: the server speaks each vendor's real wire format
//! strictly, and validates requests the way the vendor does: required
//! fields, unknown parameters, the credential header, `anthropic-version`,
//! Anthropic's role alternation and non-empty content, and tool results that
//! answer exactly the tool calls of the message before. A violation gets the
//! vendor's own error status and body. A client test against this server
//! therefore fails when the client sends a malformed request, which a mock
//! that accepts anything would hide; and streamed answers are written in
//! small frames (7 bytes by default) so that clients see events, lines and
//! UTF-8 characters split across reads. The vendors' documented example
//! bodies are in [`fixtures`] for serving verbatim with [`Fault::Raw`].
//!
//! The wire carries no [`RequestMeta`](agentry_core::RequestMeta), so the server infers it before asking
//! the brain: `turn` is the number of assistant messages so far, `role` comes
//! from a pluggable detector (by default [`default_role_detector`], which
//! reads the agents' "You are the developer of ..." first line), and `visit`
//! is the index of the conversation among those seen for that role (a
//! conversation is known by its messages before the first assistant
//! message, so a retried first turn is the same visit and the developer's
//! second round is visit 1).

mod anthropic;
mod meta;
mod openai;
mod reply;
mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agentry_core::{AgentRole, ChatRequest, ChatResponse, Error, LlmProvider};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use serde_json::Value;

use crate::meta::VisitBook;
use crate::reply::{Framing, Reply};
use crate::wire::Decoded;

pub use crate::meta::default_role_detector;

/// The vendors' documented example bodies (see `fixtures/README.md` for
/// the source of each).
pub mod fixtures {
    /// OpenAI: a chat completion object.
    pub const OPENAI_CHAT_COMPLETION: &str =
        include_str!("../fixtures/openai_chat_completion.json");
    /// OpenAI: a chat completion with a tool call.
    pub const OPENAI_CHAT_COMPLETION_TOOL_CALLS: &str =
        include_str!("../fixtures/openai_chat_completion_tool_calls.json");
    /// OpenAI: a streamed text answer (chunk objects, `[DONE]`).
    pub const OPENAI_CHAT_COMPLETION_CHUNKS: &str =
        include_str!("../fixtures/openai_chat_completion_chunks.sse");
    /// OpenAI: a streamed tool call, arguments in many deltas.
    pub const OPENAI_TOOL_CALL_DELTAS: &str =
        include_str!("../fixtures/openai_tool_call_deltas.sse");
    /// OpenAI: the error object of a 401 for a wrong key.
    pub const OPENAI_ERROR_INVALID_API_KEY: &str =
        include_str!("../fixtures/openai_error_invalid_api_key.json");
    /// Anthropic: a message.
    pub const ANTHROPIC_MESSAGE: &str = include_str!("../fixtures/anthropic_message.json");
    /// Anthropic: a message with a `tool_use` block (and no `usage`).
    pub const ANTHROPIC_MESSAGE_TOOL_USE: &str =
        include_str!("../fixtures/anthropic_message_tool_use.json");
    /// Anthropic: the basic streaming example.
    pub const ANTHROPIC_STREAM_BASIC: &str = include_str!("../fixtures/anthropic_stream_basic.sse");
    /// Anthropic: the streaming-with-tool-use example.
    pub const ANTHROPIC_STREAM_TOOL_USE: &str =
        include_str!("../fixtures/anthropic_stream_tool_use.sse");
    /// Anthropic: the `overloaded_error` error event.
    pub const ANTHROPIC_STREAM_ERROR: &str = include_str!("../fixtures/anthropic_stream_error.sse");
    /// Anthropic: an error body.
    pub const ANTHROPIC_ERROR: &str = include_str!("../fixtures/anthropic_error.json");
}

/// Which wire format a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// OpenAI chat completions, at `/v1/chat/completions`.
    OpenAi,
    /// Anthropic Messages API, at `/v1/messages`.
    Anthropic,
}

/// One injected misbehaviour, consumed by the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, JSON body (sent as `application/json`
    /// unless `headers` set a content type) and headers.
    Status {
        /// HTTP status.
        status: u16,
        /// The JSON body, as text.
        body: String,
        /// Headers added to the answer (`Retry-After`, a `Content-Type`).
        headers: Vec<(String, String)>,
    },
    /// Answer with this status, content type and body, verbatim (an
    /// event-stream body is written in small frames like any stream): for
    /// serving [`fixtures`].
    Raw {
        /// HTTP status.
        status: u16,
        /// `Content-Type`.
        content_type: String,
        /// The body, sent as it is.
        body: String,
    },
    /// The vendor's 429 body with `Retry-After: <retry_after_secs>`.
    RateLimited {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// The vendor's 500 body.
    ServerError,
    /// 200 with an HTML body, like a proxy error page.
    Malformed,
    /// Sleep this long, then answer normally.
    Delay(Duration),
    /// OpenAI: 400 like a server that does not support `response_format`,
    /// if the request has one (otherwise the request is answered normally).
    RejectResponseFormat,
    /// Answer normally, but cut a streamed body off halfway.
    TruncateStream,
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Headers, names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (a JSON string holding the text when it was not
    /// JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decides the agent role of a conversation.
pub type RoleDetector = Arc<dyn Fn(&ChatRequest) -> Option<AgentRole> + Send + Sync>;

struct Settings {
    api_key: Option<String>,
    role_detector: RoleDetector,
    fallback_role: AgentRole,
    frame_size: usize,
    frame_pause: Duration,
}

struct Shared {
    vendor: Vendor,
    brain: Arc<dyn LlmProvider>,
    settings: Mutex<Settings>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<RecordedRequest>>,
    brain_requests: Mutex<Vec<ChatRequest>>,
    visits: Mutex<VisitBook>,
    serial: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running contract server; dropping it shuts it down.
pub struct ContractServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ContractServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractServer")
            .field("vendor", &self.shared.vendor)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ContractServer {
    /// Starts a server for `vendor` on `127.0.0.1:0`, answering from
    /// `brain`. No API key is expected until [`ContractServer::with_api_key`].
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound (a test environment failure).
    pub async fn start(vendor: Vendor, brain: Arc<dyn LlmProvider>) -> ContractServer {
        let shared = Arc::new(Shared {
            vendor,
            brain,
            settings: Mutex::new(Settings {
                api_key: None,
                role_detector: Arc::new(default_role_detector),
                fallback_role: AgentRole::BusinessAnalyst,
                frame_size: 7,
                frame_pause: Duration::ZERO,
            }),
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            brain_requests: Mutex::new(Vec::new()),
            visits: Mutex::new(VisitBook::default()),
            serial: AtomicU64::new(1),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("contract server: cannot bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("contract server: bound socket has no address");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "Contract server stopped.");
            }
        });
        ContractServer { shared, addr, task }
    }

    /// Requires this API key (`Authorization: Bearer` for OpenAI,
    /// `x-api-key` for Anthropic); requests without it get the vendor's 401.
    pub fn with_api_key(self, key: impl Into<String>) -> Self {
        lock(&self.shared.settings).api_key = Some(key.into());
        self
    }

    /// Replaces the role detector ([`default_role_detector`] by default).
    pub fn with_role_detector(
        self,
        detector: impl Fn(&ChatRequest) -> Option<AgentRole> + Send + Sync + 'static,
    ) -> Self {
        lock(&self.shared.settings).role_detector = Arc::new(detector);
        self
    }

    /// The role of conversations the detector cannot place (business
    /// analyst by default).
    pub fn with_fallback_role(self, role: AgentRole) -> Self {
        lock(&self.shared.settings).fallback_role = role;
        self
    }

    /// Writes event streams in frames of this many bytes (7 by default).
    pub fn with_frame_size(self, bytes: usize) -> Self {
        lock(&self.shared.settings).frame_size = bytes.max(1);
        self
    }

    /// Pauses this long between stream frames (none by default; each frame
    /// is still flushed separately).
    pub fn with_frame_pause(self, pause: Duration) -> Self {
        lock(&self.shared.settings).frame_pause = pause;
        self
    }

    /// The vendor it speaks.
    pub fn vendor(&self) -> Vendor {
        self.shared.vendor
    }

    /// Its socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client is configured with:
    /// `http://127.0.0.1:PORT/v1` for OpenAI, `http://127.0.0.1:PORT` for
    /// Anthropic.
    pub fn base_url(&self) -> String {
        match self.shared.vendor {
            Vendor::OpenAi => format!("http://{}/v1", self.addr),
            Vendor::Anthropic => format!("http://{}", self.addr),
        }
    }

    /// Queues a fault; each request consumes the oldest one.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// The requests handed to the brain, decoded and with their inferred
    /// meta, oldest first.
    pub fn brain_requests(&self) -> Vec<ChatRequest> {
        lock(&self.shared.brain_requests).clone()
    }
}

impl Drop for ContractServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
    };
    let parsed = recorded.body.clone();
    lock(&shared.requests).push(recorded);
    let (reply, truncate) = shared
        .answer(&method, uri.path(), &headers, &body, &parsed)
        .await;
    let framing = {
        let settings = lock(&shared.settings);
        Framing {
            frame_size: settings.frame_size,
            frame_pause: settings.frame_pause,
            truncate,
        }
    };
    reply.into_response(framing)
}

impl Shared {
    /// The reply to one request, and whether to cut its stream off.
    async fn answer(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        parsed: &Value,
    ) -> (Reply, bool) {
        let vendor = self.vendor;
        let expected_path = match vendor {
            Vendor::OpenAi => openai::PATH,
            Vendor::Anthropic => anthropic::PATH,
        };
        if *method != Method::POST || path != expected_path {
            let reply = match vendor {
                Vendor::OpenAi => openai::not_found(method.as_str(), path),
                Vendor::Anthropic => anthropic::not_found(method.as_str(), path),
            };
            return (reply, false);
        }
        let fault = lock(&self.faults).pop_front();
        let mut truncate = false;
        match fault {
            None => {}
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Fault::TruncateStream) => truncate = true,
            Some(Fault::RejectResponseFormat)
                if vendor == Vendor::OpenAi && openai::has_response_format(parsed) =>
            {
                return (openai::reject_response_format(), false);
            }
            Some(Fault::RejectResponseFormat) => {}
            Some(Fault::Status {
                status,
                body,
                headers,
            }) => {
                let mut reply = Reply::text(status, "application/json", body);
                reply.headers = headers;
                return (reply, false);
            }
            Some(Fault::Raw {
                status,
                content_type,
                body,
            }) => return (Reply::text(status, content_type, body), false),
            Some(Fault::RateLimited { retry_after_secs }) => {
                let reply = match vendor {
                    Vendor::OpenAi => openai::rate_limited(retry_after_secs, None),
                    Vendor::Anthropic => anthropic::rate_limited(retry_after_secs, None),
                };
                return (reply, false);
            }
            Some(Fault::ServerError) => {
                let reply = match vendor {
                    Vendor::OpenAi => openai::server_error(None),
                    Vendor::Anthropic => anthropic::server_error(None),
                };
                return (reply, false);
            }
            Some(Fault::Malformed) => {
                let reply = Reply::text(
                    200,
                    "text/html; charset=utf-8",
                    "<html><body><h1>502 Bad Gateway</h1></body></html>",
                );
                return (reply, false);
            }
        }
        match self.answer_from_brain(headers, body).await {
            Ok((decoded, response, serial)) => {
                let reply = match vendor {
                    Vendor::OpenAi => openai::encode(&decoded, &response, serial),
                    Vendor::Anthropic => anthropic::encode(&decoded, &response, serial),
                };
                (reply, truncate)
            }
            Err(reply) => (reply, false),
        }
    }

    /// Checks, decodes and validates the request, infers its meta and asks
    /// the brain.
    async fn answer_from_brain(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Decoded, ChatResponse, u64), Reply> {
        let (api_key, detector, fallback_role) = {
            let settings = lock(&self.settings);
            (
                settings.api_key.clone(),
                settings.role_detector.clone(),
                settings.fallback_role,
            )
        };
        let mut decoded = match self.vendor {
            Vendor::OpenAi => {
                openai::check_auth(headers, api_key.as_deref())?;
                openai::decode(body)?
            }
            Vendor::Anthropic => {
                anthropic::check_headers(headers, api_key.as_deref())?;
                anthropic::decode(body)?
            }
        };
        let role = detector(&decoded.request).unwrap_or(fallback_role);
        decoded.request.meta = lock(&self.visits).meta(&decoded.request, role);
        lock(&self.brain_requests).push(decoded.request.clone());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        match self.brain.complete(&decoded.request).await {
            Ok(response) => Ok((decoded, response, serial)),
            Err(error) => Err(self.brain_error(&error)),
        }
    }

    fn brain_error(&self, error: &Error) -> Reply {
        tracing::debug!(%error, "Contract server brain failed.");
        match self.vendor {
            Vendor::OpenAi => openai::brain_error(error),
            Vendor::Anthropic => anthropic::brain_error(error),
        }
    }
}

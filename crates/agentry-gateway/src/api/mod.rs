//! The REST API: shared state, extractors and middleware; the handlers
//! live in the child modules and the router in `server.rs`.

pub mod agents;
pub mod docs;
pub mod events;
pub mod keys;
pub mod model;
mod strict_json;
pub mod system;
pub mod workflows;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use agentry_core::{
    AccessRole, ApiKeyStore, RateLimiter, RequestId, Store, WorkflowId, WorkflowRecord,
};
use agentry_engine::{Engine, WorkflowDefinition};
use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::auth::{AuthFailure, Authenticator, Principal};
use crate::config::GatewayConfig;
use crate::problem::{ApiError, FieldError, REQUEST_ID};
use crate::runs::Runs;

/// Where submissions' workflow definitions come from.
pub trait DefinitionSource: Send + Sync + 'static {
    /// The names a submission may use.
    fn names(&self) -> Vec<String>;
    /// The definition named `name` (None: the default); an unknown name is
    /// an error naming it and the known names.
    fn load(&self, name: Option<&str>) -> Result<WorkflowDefinition, String>;
}

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

#[doc(hidden)]
pub struct Shared {
    pub(crate) engine: Engine,
    pub(crate) registry: Option<(Arc<dyn agentry_core::WorkerRegistry>, std::time::Duration)>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Arc<dyn ApiKeyStore>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) auth: Authenticator,
    pub(crate) config: GatewayConfig,
    pub(crate) runs: Arc<Runs>,
    pub(crate) definitions: Arc<dyn DefinitionSource>,
    /// Options every workflow starts with (the server's LLM choice).
    pub(crate) base_options: agentry_core::RunOptions,
    pub(crate) validators: HashMap<String, jsonschema::Validator>,
    pub(crate) streams: events::StreamCaps,
    pub(crate) shutdown: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A workflow of the caller's tenant, or 404 (the same 404 as an
    /// unknown id, so ids of other tenants do not leak).
    pub async fn workflow_of(&self, p: &Principal, id: &str) -> Result<WorkflowRecord, ApiError> {
        let id: WorkflowId = parse_id(id)?;
        let not_found = || ApiError::NotFound(format!("workflow {id} not found"));
        match self.store.get_workflow(id).await {
            Ok(record) if record.tenant.as_deref() == Some(p.tenant.as_str()) => Ok(record),
            Ok(_) | Err(agentry_core::Error::NotFound(_)) => Err(not_found()),
            Err(error) => Err(error.into()),
        }
    }
}

/// Parses a workflow id path segment.
pub fn parse_id(id: &str) -> Result<WorkflowId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::field("id", format!("`{id}` is not a workflow id (a UUID)")))
}

/// One path parameter, as text. A segment that is not UTF-8 once
/// percent-decoded is a 422 naming the parameter, like any other bad
/// parameter (axum's own rejection would be a plain-text 400).
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParam(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => match error.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => Err(ApiError::field(
                    key.clone(),
                    "is not UTF-8 text once percent-decoded",
                )),
                _ => Err(ApiError::BadRequest(error.body_text())),
            },
            // A route without the parameter: a bug of ours.
            Err(other) => Err(ApiError::Internal(other.body_text())),
        }
    }
}

/// 403 unless the caller's role includes `needed`.
pub fn require(p: &Principal, needed: AccessRole) -> Result<(), ApiError> {
    if p.role.allows(needed) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this action needs the {needed} role; the caller has {}",
            p.role
        )))
    }
}

/// A JSON body, checked against its OpenAPI schema (every violation named
/// by its JSON pointer) and then decoded. An empty body without a content
/// type reads as `{}`, for actions whose body is optional.
pub struct ValidJson<T>(pub T);

impl<T> FromRequest<AppState> for ValidJson<T>
where
    T: DeserializeOwned + ToSchema,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let is_json = content_type
            .as_deref()
            .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.config.max_body_bytes)
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
            }
        })?;
        let value: Value = if bytes.is_empty() && content_type.is_none() {
            Value::Object(Default::default())
        } else if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        } else {
            strict_json::parse(&bytes).map_err(|error| match error {
                strict_json::BodyError::Syntax(error) => {
                    ApiError::BadRequest(format!("the body is not valid JSON: {error}"))
                }
                strict_json::BodyError::DuplicateKey { pointer, key } => ApiError::field(
                    pointer,
                    format!("`{key}` appears more than once in its object; send each member once"),
                ),
            })?
        };
        let name = T::name();
        if let Some(validator) = state.validators.get(name.as_ref()) {
            let errors: Vec<FieldError> = validator
                .iter_errors(&value)
                .flat_map(|e| {
                    use jsonschema::error::ValidationErrorKind as Kind;
                    let at = e.instance_path.to_string();
                    let member =
                        |name: &str| format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
                    match &e.kind {
                        Kind::MaxLength { limit } | Kind::MinLength { limit }
                            if e.instance.is_string() =>
                        {
                            let chars = e.instance.as_str().map_or(0, |s| s.chars().count());
                            let bound = if matches!(e.kind, Kind::MaxLength { .. }) {
                                "most"
                            } else {
                                "least"
                            };
                            vec![FieldError {
                                field: pointer_or_root(&at),
                                message: format!(
                                    "is {chars} characters long; it may have at {bound} {limit}"
                                ),
                            }]
                        }
                        Kind::AdditionalProperties { unexpected } => unexpected
                            .iter()
                            .map(|name| FieldError {
                                field: member(name),
                                message: "is not a known field".to_string(),
                            })
                            .collect(),
                        Kind::Required { property } => vec![FieldError {
                            field: member(property.as_str().unwrap_or_default()),
                            message: "is required".to_string(),
                        }],
                        _ => vec![FieldError {
                            field: pointer_or_root(&at),
                            message: without_long_instance(&e),
                        }],
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(ApiError::Invalid(errors));
            }
        }
        let decoded: T = serde_path_to_error::deserialize(value).map_err(|error| {
            ApiError::field(
                pointer_or_root(&format!("/{}", error.path()).replace('.', "/")),
                error.inner().to_string(),
            )
        })?;
        Ok(ValidJson(decoded))
    }
}

/// A schema violation's text with the offending value, which jsonschema
/// prints whole, abbreviated.
fn without_long_instance(e: &jsonschema::ValidationError<'_>) -> String {
    let message = e.to_string();
    let shown = e.instance.to_string();
    match crate::problem::abbreviate(&shown, crate::problem::ECHO_CHARS) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(short) => message.replacen(&shown, &short, 1),
    }
}

fn pointer_or_root(pointer: &str) -> String {
    if pointer.is_empty() || pointer == "/" || pointer == "/." {
        "/".to_string()
    } else {
        pointer.to_string()
    }
}

/// What the access log needs from inside: who called.
#[derive(Debug, Clone)]
struct LoggedPrincipal(Principal);

/// Authenticates the caller, applies its rate limit, and hands the
/// [`Principal`] to the handler.
///
/// Failed authentications cost their client address a token of
/// `failed_auth_limit`. That bucket is looked at (without taking) BEFORE
/// any credential is verified, so a client that has used it up is refused
/// whatever it sends, a correct guess included: otherwise the 200 among
/// the 429s would tell a guesser it had found a key. Only a failure takes
/// a token; a request without credentials verifies nothing and costs
/// nothing.
pub async fn authenticate(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let failures_key = presents_credentials(req.headers())
        .then(|| {
            req.extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| format!("auth-failures:{}", c.0.ip()))
        })
        .flatten();
    if let Some(key) = &failures_key {
        let decision = state
            .limiter
            .check(key, state.config.failed_auth_limit)
            .await
            .map_err(ApiError::from)?;
        if !decision.allowed {
            return Err(ApiError::RateLimited(decision.retry_after));
        }
    }
    let principal = match state.auth.authenticate(req.headers()).await {
        Ok(p) => p,
        Err(failure) => {
            if let AuthFailure::Unavailable(detail) = &failure {
                tracing::warn!(error = %detail, "Authentication is unavailable.");
            } else if let Some(key) = &failures_key {
                // The token is taken whatever the bucket holds now (a
                // concurrent failure may have emptied it since the
                // check): this answer is the 401 the check allowed.
                state
                    .limiter
                    .acquire(key, state.config.failed_auth_limit)
                    .await
                    .map_err(ApiError::from)?;
            }
            return Err(ApiError::Auth(failure));
        }
    };
    let limit = state.config.rate_limit;
    let decision = state
        .limiter
        .acquire(&principal.subject, limit)
        .await
        .map_err(ApiError::from)?;
    if !decision.allowed {
        let mut response = ApiError::RateLimited(decision.retry_after).into_response();
        response.extensions_mut().insert(LoggedPrincipal(principal));
        return Ok(response);
    }
    req.extensions_mut().insert(principal.clone());
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(limit.burst));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    response.extensions_mut().insert(LoggedPrincipal(principal));
    Ok(response)
}

/// Whether a request carries credentials to verify (`Authorization` or
/// `x-api-key`, whatever their form).
fn presents_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key("x-api-key")
}

/// The caller, as set by [`authenticate`].
pub type Caller = Extension<Principal>;

/// Refuses a request whose head has more than `max_headers` headers or
/// more than `max_header_bytes` bytes (request line and headers, as sent)
/// with a 431 problem. hyper's own limits sit well above these (see
/// `server.rs`), so this is the answer a client normally gets.
pub async fn head_limits(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let config = &state.config;
    let headers = req.headers();
    let count = headers.len();
    // `METHOD target HTTP/1.1\r\n`, `name: value\r\n` each, `\r\n`.
    let bytes = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
        + 2;
    if count > config.max_headers {
        return ApiError::HeadersTooLarge(format!(
            "the request has {count} headers; the limit is {}",
            config.max_headers
        ))
        .into_response();
    }
    if bytes > config.max_header_bytes {
        return ApiError::HeadersTooLarge(format!(
            "the request line and headers take {bytes} bytes; the limit is {}",
            config.max_header_bytes
        ))
        .into_response();
    }
    next.run(req).await
}

/// Gives every request an id (`x-request-id` as sent, or a new one), runs it
/// with that id in scope, returns the id, and writes one access-log line.
pub async fn request_context(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let (request_id, valid) = request_id_of(req.headers());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".to_string());
    let span = tracing::info_span!("request", request_id = %request_id, route = %route);
    let mut response = {
        use tracing::Instrument;
        let handle = async move {
            if valid {
                next.run(req).await
            } else {
                ApiError::field("x-request-id", "must be 1 to 128 visible ASCII characters")
                    .into_response()
            }
        };
        REQUEST_ID
            .scope(request_id.clone(), handle)
            .instrument(span)
            .await
    };
    if let Ok(v) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert("x-request-id", v);
    }
    let caller = response.extensions().get::<LoggedPrincipal>().cloned();
    tracing::info!(
        target: "agentry::access",
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        tenant = caller.as_ref().map(|c| c.0.tenant.as_str()).unwrap_or(""),
        key_id = caller.as_ref().map(|c| c.0.subject.as_str()).unwrap_or(""),
        request_id = %request_id,
        "request"
    );
    response
}

/// The request's id: `x-request-id` as sent, or a new UUID when there is
/// none; and whether a sent one is valid (1–128 visible ASCII characters).
/// An invalid one is refused rather than replaced, since a submission's
/// request id is its idempotency key.
fn request_id_of(headers: &HeaderMap) -> (RequestId, bool) {
    let Some(sent) = headers.get("x-request-id") else {
        return (RequestId::generate(), true);
    };
    match sent.to_str().map(str::trim) {
        Ok(v) if v.len() <= MAX_CLIENT_REQUEST_ID => match RequestId::new(v) {
            Ok(id) => (id, true),
            Err(_) => (RequestId::generate(), false),
        },
        _ => (RequestId::generate(), false),
    }
}

/// The longest `x-request-id` a client may send: it is stored scoped by
/// its tenant, within [`RequestId::MAX_LEN`].
const MAX_CLIENT_REQUEST_ID: usize = 128;

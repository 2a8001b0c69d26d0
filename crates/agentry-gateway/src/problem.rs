//! Errors as RFC 9457 `application/problem+json` responses.
//!
//! Client errors carry a precise `detail` and are logged at debug; server
//! errors carry a generic detail plus the request id, and the real error
//! goes to the log. Whatever a client sent is echoed at most once per
//! problem and at most [`ECHO_CHARS`] characters of it ([`abbreviate`]),
//! so a 100,000-character value costs its sender a short answer.
//!
//! [`problem_bodies`] is the net under everything else: an error response
//! made by the framework rather than by an [`ApiError`] (axum's 405, an
//! extractor's rejection) leaves the server as a problem document too.

use std::time::Duration;

use agentry_core::RequestId;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthFailure;

tokio::task_local! {
    /// The request id of the request being handled (set by the request
    /// middleware), so any error response can name it.
    pub static REQUEST_ID: RequestId;
}

/// The request id of the current request, if inside one.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer of the field in the body (`/requirement`), or the
    /// parameter's name (`status`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:agentry:problem:validation`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened in this case.
    pub detail: String,
    /// Correlation id of the request (also in the `x-request-id` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a handler can answer instead of success.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed request (bad JSON, bad id, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid body or parameters (422), field by field.
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    /// Not authenticated (401) or not entitled (403).
    #[error(transparent)]
    Auth(AuthFailure),
    /// Authenticated but the role does not allow the action (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown resource, or one of another tenant (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource is not in a state that allows the action (409).
    #[error("{0}")]
    Conflict(String),
    /// Body over the size limit (413).
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// Body not JSON (415).
    #[error("the request body must be JSON (`content-type: application/json`)")]
    UnsupportedMediaType,
    /// The route exists, but not with this method (405). axum adds the
    /// `Allow` header as the response leaves the route.
    #[error("this route does not accept {0}; the `Allow` header lists the methods it does")]
    MethodNotAllowed(String),
    /// Too many request headers, or too large (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// Another client error, made by the framework rather than a handler
    /// (its text is the detail).
    #[error("{detail}")]
    Refused {
        /// A 4xx status.
        status: StatusCode,
        /// What the framework said.
        detail: String,
    },
    /// Rate limit hit (429).
    #[error("rate limit exceeded: retry in {} s", retry_secs(*.0))]
    RateLimited(Duration),
    /// The server is at a limit or a dependency is down (503).
    #[error("{detail}")]
    Unavailable {
        /// What is unavailable.
        detail: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// A bug or an unexpected failure (500); the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl ApiError {
    /// A 422 naming one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Auth(f) if f.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Auth(f) if f.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Refused { status, .. } => *status,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Invalid(_) => "validation",
            ApiError::Auth(f) if f.is_unavailable() => "unavailable",
            ApiError::Auth(f) if f.is_forbidden() => "forbidden",
            ApiError::Auth(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too-large",
            ApiError::UnsupportedMediaType => "unsupported-media-type",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::HeadersTooLarge(_) => "headers-too-large",
            ApiError::Refused { .. } => "bad-request",
            ApiError::RateLimited(_) => "rate-limited",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The problem document. Echoes are capped: each field error's field
    /// and message, and the detail, abbreviate whatever the client sent
    /// ([`tame`]); a validation problem's detail names the fields only, so
    /// a value appears once, in its field's message.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let request_id = current_request_id().map(|r| r.to_string());
        let errors: Vec<FieldError> = match self {
            ApiError::Invalid(errors) => errors
                .iter()
                .map(|e| FieldError {
                    field: abbreviate(&e.field, ECHO_CHARS).into_owned(),
                    message: tame(&e.message),
                })
                .collect(),
            _ => Vec::new(),
        };
        let detail = match self {
            ApiError::Internal(_) => format!(
                "the server failed; report request id {}",
                request_id.as_deref().unwrap_or("(none)")
            ),
            ApiError::Invalid(_) => {
                let fields: Vec<String> = errors
                    .iter()
                    .map(|e| abbreviate(&e.field, FIELD_IN_DETAIL_CHARS).into_owned())
                    .collect();
                match fields.as_slice() {
                    [one] => format!("invalid {one}: see `errors`"),
                    many => format!(
                        "{} invalid fields: {}; see `errors`",
                        many.len(),
                        many.join(", ")
                    ),
                }
            }
            other => tame(&other.to_string()),
        };
        Problem {
            kind: format!("urn:agentry:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            request_id,
            errors,
        }
    }
}

/// How much of a value the client sent an error may repeat, in characters.
pub const ECHO_CHARS: usize = 100;

/// How long a problem's `detail` or a field's `message` may be, in
/// characters (after the echoes in it are abbreviated).
pub const MESSAGE_CHARS: usize = 400;

/// How much of a field's name a validation problem's detail repeats.
const FIELD_IN_DETAIL_CHARS: usize = 40;

/// `text` itself when it has at most `max` characters; else its first
/// `max` characters, an ellipsis and its real length:
/// `xxxxx… (100001 characters)`.
pub fn abbreviate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} characters)",
            &text[..end],
            text.chars().count()
        )),
    }
}

/// An error text fit to send: every quoted part (`` `…` `` or `"…"`, where
/// serde, serde_urlencoded and jsonschema put the values they echo) longer
/// than [`ECHO_CHARS`] abbreviated, then the whole capped at
/// [`MESSAGE_CHARS`].
pub fn tame(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MESSAGE_CHARS * 4));
    let mut rest = text;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        match inner.find(quote) {
            Some(close) => {
                out.push_str(&abbreviate(&inner[..close], ECHO_CHARS));
                out.push(quote);
                rest = &inner[close + 1..];
            }
            None => {
                out.push_str(&abbreviate(inner, ECHO_CHARS));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    abbreviate(&out, MESSAGE_CHARS).into_owned()
}

impl From<agentry_core::Error> for ApiError {
    fn from(error: agentry_core::Error) -> Self {
        use agentry_core::Error as E;
        match error {
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::InvalidInput(m) => ApiError::BadRequest(m),
            e @ (E::Transient(_) | E::Timeout { .. }) => ApiError::Unavailable {
                detail: format!("a dependency is unavailable: {e}"),
                retry_after: Duration::from_secs(1),
            },
            E::RateLimited {
                message,
                retry_after,
            } => ApiError::Unavailable {
                detail: message,
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = self.problem();
        if status.is_server_error() {
            tracing::error!(error = %self, status = status.as_u16(), "Request failed.");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "Request refused.");
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::RateLimited(after)
            | ApiError::Unavailable {
                retry_after: after, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(*after)));
            }
            ApiError::Auth(f) if !f.is_forbidden() && !f.is_unavailable() => {
                let error = if matches!(f, AuthFailure::Missing) {
                    "Bearer realm=\"agentry\"".to_string()
                } else {
                    format!(
                        "Bearer realm=\"agentry\", error=\"invalid_token\", error_description=\"{}\"",
                        f.to_string().replace('"', "'")
                    )
                };
                if let Ok(v) = HeaderValue::from_str(&error) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::Auth(f) if f.is_unavailable() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        response
    }
}

/// Marks an error response whose body is documented as something other
/// than a problem (`/readyz`'s 503 is its readiness report), so
/// [`problem_bodies`] leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct NotAProblem;

/// The most of a framework error's body [`problem_bodies`] reads for its
/// detail.
const FRAMEWORK_TEXT_BYTES: usize = 4096;

/// Turns every error response that is not a problem document yet into
/// one, keeping its status and headers: axum answers some requests itself
/// (a method the route lacks, a rejected extractor) with an empty or
/// plain-text body. (axum sets a 405's `Allow` after this layer, as the
/// response leaves the route, and keeps it.)
pub async fn problem_bodies(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error())
        || is_problem
        || response.extensions().get::<NotAProblem>().is_some()
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FRAMEWORK_TEXT_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = if status == StatusCode::METHOD_NOT_ALLOWED {
        ApiError::MethodNotAllowed(method.to_string())
    } else if status.is_server_error() {
        ApiError::Internal(format!("{status}: {text}"))
    } else {
        let detail = if text.is_empty() {
            status.canonical_reason().unwrap_or("refused").to_string()
        } else {
            text
        };
        ApiError::Refused { status, detail }
    };
    let answer = error.into_response();
    // The framework's headers (Allow, Retry-After, ...) stay; the body and
    // its description are the problem's.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (answer_parts, answer_body) = answer.into_parts();
    parts.headers.extend(answer_parts.headers);
    Response::from_parts(parts, answer_body)
}

/// The problem answers of an operation, for the OpenAPI document.
fn problem_responses(
    statuses: &[(u16, &str)],
) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    statuses
        .iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            (status.to_string(), response.into())
        })
        .collect()
}

const READ_ERRORS: &[(u16, &str)] = &[
    (
        401,
        "Not authenticated: no, invalid, revoked or expired credentials",
    ),
    (
        403,
        "The caller's role does not allow it, or the token grants no role",
    ),
    (404, "No such resource in the caller's tenant"),
    (422, "An invalid parameter, named in `errors`"),
    (429, "Rate limited; retry after `Retry-After` seconds"),
    (431, "Too many request headers, or too large"),
    (
        503,
        "A limit is reached or a dependency is down; retry after `Retry-After` seconds",
    ),
];

const WRITE_ERRORS: &[(u16, &str)] = &[
    (400, "Malformed request (body not JSON)"),
    (409, "The resource's state does not allow it"),
    (413, "Body larger than the limit"),
    (415, "Body not JSON"),
];

/// The problem answers of a read operation: 401, 403, 404, 422, 429, 431,
/// 503.
pub struct ReadErrors;

impl utoipa::IntoResponses for ReadErrors {
    fn responses(
    ) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        problem_responses(READ_ERRORS)
    }
}

/// The problem answers of a write operation: those of a read, and 400,
/// 409, 413, 415.
pub struct WriteErrors;

impl utoipa::IntoResponses for WriteErrors {
    fn responses(
    ) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        let mut all = problem_responses(READ_ERRORS);
        all.extend(problem_responses(WRITE_ERRORS));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers() {
        let r = ApiError::RateLimited(Duration::from_millis(1500)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let r = ApiError::Auth(AuthFailure::Expired).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .is_ok_and(|v| v.contains("invalid_token")));
        let r = ApiError::Auth(AuthFailure::NotEntitled("no role".into())).into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn internal_errors_hide_the_cause() {
        let p = ApiError::Internal("db password wrong".into()).problem();
        assert!(!p.detail.contains("password"), "{}", p.detail);
        assert_eq!(p.status, 500);
    }

    #[test]
    fn long_text_is_abbreviated_with_its_real_length() {
        assert_eq!(abbreviate("short", 10), "short");
        assert_eq!(abbreviate("exactly10!", 10), "exactly10!");
        assert_eq!(
            abbreviate(&"é".repeat(12), 10),
            format!("{}… (12 characters)", "é".repeat(10))
        );
    }

    #[test]
    fn tamed_messages_abbreviate_every_quoted_echo_and_stay_short() {
        let long = "v".repeat(500);
        let message = format!("unknown variant `{long}`, expected `a` or \"{long}\"");
        let tamed = tame(&message);
        assert_eq!(
            tamed,
            format!(
                "unknown variant `{v}… (500 characters)`, expected `a` or \"{v}… (500 characters)\"",
                v = "v".repeat(ECHO_CHARS)
            )
        );
        let unquoted = tame(&"w".repeat(5000));
        assert!(unquoted.chars().count() < MESSAGE_CHARS + 30, "{unquoted}");
        assert_eq!(tame("an `unclosed quote"), "an `unclosed quote");
    }

    #[test]
    fn a_validation_problem_repeats_a_value_once_and_names_fields_in_its_detail() {
        let long = "x".repeat(1000);
        let p = ApiError::Invalid(vec![
            FieldError {
                field: "/project_key".into(),
                message: format!("\"{long}\" does not match \"^[A-Z]+$\""),
            },
            FieldError {
                field: format!("/{long}"),
                message: "is not a known field".into(),
            },
        ])
        .problem();
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.len() < 1000, "{text}");
        assert_eq!(text.matches(&"x".repeat(60)).count(), 2, "{text}");
        assert!(
            p.detail.starts_with("2 invalid fields: /project_key, /xxx"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn validation_problems_name_fields() {
        let p = ApiError::field("/requirement", "must not be empty").problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "/requirement");
        assert!(p.detail.contains("/requirement"));
    }
}

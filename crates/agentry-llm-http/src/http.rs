//! What both vendors' wire mappings share: the classification of HTTP
//! statuses and in-band errors into [`Error`]s, the `Retry-After` parser,
//! the vendor error-body reader, the key redaction, the schema-as-
//! instructions text, and the filling of an answer's gaps (usage estimate,
//! model, unparsable tool-call arguments). Sending and reading is
//! [`crate::transport`]'s.

use std::time::{Duration, SystemTime};

use agentry_core::llm::estimate_tokens;
use agentry_core::{
    ChatRequest, ChatResponse, Error, OutputSchema, Result, ToolCall, ToolDefinition, Usage,
};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::secret::Secret;

/// The longest vendor error text quoted in an error message.
const MAX_QUOTED: usize = 500;

/// The instructions that stand in for a vendor's structured-output feature:
/// appended to the system prompt when the schema cannot be sent as a
/// `response_format` (Anthropic always; OpenAI-compatible servers that
/// reject it; an answer laid out as JSON then files, which no vendor's
/// structured output describes).
pub(crate) fn schema_instructions(schema: &OutputSchema) -> String {
    if !schema.layout.is_json() {
        return schema.instructions();
    }
    format!(
        "Reply with JSON only, matching this JSON schema (`{}`); no prose and no code fences:\n{}",
        schema.name, schema.schema
    )
}

/// A non-2xx answer, before classification (the OpenAI client looks at it
/// to decide on its structured-output fallback).
#[derive(Debug, Clone)]
pub(crate) struct HttpFailure {
    pub status: StatusCode,
    /// The vendor's `error.type` (or `error.code`), when the body had one.
    pub kind: Option<String>,
    /// The vendor's error message (or the start of the body), redacted.
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl HttpFailure {
    pub(crate) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        key: Option<&Secret>,
    ) -> Self {
        let (kind, message) = vendor_error(body);
        HttpFailure {
            status,
            kind,
            message: redact(&message, key),
            retry_after: parse_retry_after(headers, SystemTime::now()),
        }
    }

    /// The classified error: 429 rate-limited, 401/403 permanent (bad key),
    /// 408/409/425/5xx/529 transient, other 4xx invalid input.
    pub(crate) fn classify(&self, provider: &str) -> Error {
        let status = match &self.kind {
            Some(kind) => format!("{}, {kind}", self.status.as_u16()),
            None => self.status.as_u16().to_string(),
        };
        let detail = if self.message.is_empty() {
            self.status
                .canonical_reason()
                .unwrap_or("no details")
                .to_string()
        } else {
            self.message.clone()
        };
        match self.status.as_u16() {
            429 => Error::RateLimited {
                message: format!("{provider} rate-limited the request (HTTP {status}): {detail}"),
                retry_after: self.retry_after,
            },
            401 | 403 => Error::Permanent(format!(
                "{provider}: authentication failed (HTTP {status}): {detail}; check the API key"
            )),
            408 | 409 | 425 | 500..=599 => {
                Error::Transient(format!("{provider} server error (HTTP {status}): {detail}"))
            }
            400..=499 => Error::InvalidInput(format!(
                "{provider} rejected the request (HTTP {status}): {detail}"
            )),
            _ => Error::Permanent(format!(
                "unexpected answer from {provider} (HTTP {status}): {detail}"
            )),
        }
    }
}

/// Why one HTTP attempt failed: an HTTP status (kept unclassified so the
/// caller can still decide on a fallback) or an already classified error.
#[derive(Debug)]
pub(crate) enum Failure {
    Http(HttpFailure),
    Other(Error),
}

impl Failure {
    pub(crate) fn into_error(self, provider: &str) -> Error {
        match self {
            Failure::Http(failure) => failure.classify(provider),
            Failure::Other(error) => error,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Other(error)
    }
}

/// The delay a 429 asks for: `retry-after-ms` (OpenAI), else `Retry-After`
/// as seconds (integer or decimal) or as an HTTP date (relative to `now`;
/// a date in the past means no wait).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    };
    if let Some(delay) = header("retry-after-ms").and_then(|ms| seconds(ms).map(|d| d / 1000)) {
        return Some(delay);
    }
    let value = header("retry-after")?;
    seconds(value).or_else(|| {
        httpdate::parse_http_date(value)
            .ok()
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    })
}

/// The vendor's error type and message from an error body: OpenAI and
/// Anthropic `{"error": {"type", "message"}}`, Ollama `{"error": "..."}`,
/// `{"message"}` / `{"detail"}` of other servers, else the start of the
/// body text.
pub(crate) fn vendor_error(body: &[u8]) -> (Option<String>, String) {
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        match json.get("error") {
            Some(Value::Object(error)) => {
                let kind = str_of(error.get("type"))
                    .filter(|t| !t.is_empty())
                    .or_else(|| str_of(error.get("code")));
                let message = str_of(error.get("message"))
                    .unwrap_or_else(|| Value::Object(error.clone()).to_string());
                return (kind, quoted(&message));
            }
            Some(Value::String(message)) => return (None, quoted(message)),
            _ => {}
        }
        if let Some(message) = str_of(json.get("message")).or_else(|| str_of(json.get("detail"))) {
            return (None, quoted(&message));
        }
    }
    (None, quoted(String::from_utf8_lossy(body).trim()))
}

fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// `text` with every occurrence of the key replaced by `***` (vendors echo
/// parts of a wrong key; the whole key must never reach an error message).
pub(crate) fn redact(text: &str, key: Option<&Secret>) -> String {
    match key.map(Secret::expose).filter(|k| k.len() >= 4) {
        Some(key) => text.replace(key, "***"),
        None => text.to_string(),
    }
}

/// A 2xx body the client cannot read.
pub(crate) fn malformed(provider: &str, what: impl std::fmt::Display) -> Error {
    Error::Permanent(format!("malformed response from {provider}: {what}"))
}

/// A 2xx body as the vendor's answer type `T`; a body that is not one is
/// malformed (`what` names the type, the message quotes the body).
pub(crate) fn parse_body<T: DeserializeOwned>(
    provider: &str,
    what: &str,
    body: &[u8],
) -> Result<T> {
    serde_json::from_slice(body).map_err(|error| {
        malformed(
            provider,
            format!("not {what} ({error}): {}", vendor_error(body).1),
        )
    })
}

/// An error object the vendor sent inside a 2xx answer (mid-stream),
/// classified by its type or code (`kind`, read by the vendor's rule); the
/// message is the object's `message`, else the whole object.
pub(crate) fn in_band_error(provider: &str, kind: Option<&str>, error: &Value) -> Error {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    let kind = kind.unwrap_or("error");
    let text = format!("{provider} reported an error mid-response ({kind}): {message}");
    if kind.contains("rate_limit") {
        Error::RateLimited {
            message: text,
            retry_after: None,
        }
    } else if kind.contains("invalid_request") || kind.contains("not_found") {
        Error::InvalidInput(text)
    } else if kind.contains("authentication") || kind.contains("permission") {
        Error::Permanent(text)
    } else {
        Error::Transient(text)
    }
}

/// Token counts estimated from the texts when the server reports none.
fn estimated_usage(request: &ChatRequest, content: &str, calls: &[ToolCall]) -> Usage {
    let prompt = request
        .messages
        .iter()
        .map(|m| {
            estimate_tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.arguments.to_string()))
                    .sum::<u64>()
        })
        .sum();
    let completion = estimate_tokens(content)
        + calls
            .iter()
            .map(|c| estimate_tokens(&c.arguments.to_string()))
            .sum::<u64>();
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached: false,
    }
}

/// An answer as read off the wire, plain or streamed, before the port's
/// defaults fill its gaps.
#[derive(Debug)]
pub(crate) struct WireAnswer {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// The finish reason, in the port's words, if the server gave one.
    pub finish_reason: Option<String>,
    /// The model the server named, if it named one.
    pub model: Option<String>,
    /// Token counts the server reported; a missing one is estimated.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

impl WireAnswer {
    /// The answer as the port's [`ChatResponse`]: the requested model when
    /// the server named none, token counts estimated from the texts when
    /// the server reported none, and without a (non-empty) finish reason
    /// `tool_calls` when there are tool calls, else `stop`.
    pub(crate) fn into_response(
        self,
        provider: &str,
        requested_model: &str,
        request: &ChatRequest,
    ) -> ChatResponse {
        let usage = match (self.prompt_tokens, self.completion_tokens) {
            (Some(prompt), Some(completion)) => Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                cached: false,
            },
            (prompt, completion) => {
                let estimate = estimated_usage(request, &self.content, &self.tool_calls);
                Usage {
                    prompt_tokens: prompt.unwrap_or(estimate.prompt_tokens),
                    completion_tokens: completion.unwrap_or(estimate.completion_tokens),
                    cached: false,
                }
            }
        };
        let finish_reason = self
            .finish_reason
            .filter(|reason| !reason.is_empty())
            .unwrap_or_else(|| {
                if self.tool_calls.is_empty() {
                    "stop"
                } else {
                    "tool_calls"
                }
                .to_string()
            });
        ChatResponse {
            content: self.content,
            tool_calls: self.tool_calls,
            usage,
            provider: provider.to_string(),
            model: self.model.unwrap_or_else(|| requested_model.to_string()),
            finish_reason,
        }
    }
}

/// Adds the request's tools (each as `tool_json` writes it), if any, and
/// its temperature, if set, to a request body.
pub(crate) fn insert_tools_and_temperature(
    body: &mut Map<String, Value>,
    request: &ChatRequest,
    tool_json: impl Fn(&ToolDefinition) -> Value,
) {
    if !request.tools.is_empty() {
        let tools = request.tools.iter().map(tool_json).collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), temperature_json(temperature));
    }
}

/// Tool-call arguments from the JSON text the model produced: the parsed
/// value, or the raw text as a JSON string when it does not parse (the
/// agent's tool then reports the error to the model). Empty text is `{}`.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// A temperature as JSON, written as the decimal the caller wrote (an `f32`
/// widened to `f64` would send 0.20000000298023224).
fn temperature_json(temperature: f32) -> Value {
    temperature
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn check_retry_after(pairs: &[(&'static str, &str)], expected: Option<Duration>) {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after(&headers(pairs), now),
            expected,
            "{pairs:?}"
        );
    }

    #[test]
    fn retry_after_forms() {
        let secs = Duration::from_secs;
        check_retry_after(&[("retry-after", "7")], Some(secs(7)));
        check_retry_after(&[("retry-after", " 120 ")], Some(secs(120)));
        check_retry_after(&[("retry-after", "1.5")], Some(Duration::from_millis(1500)));
        check_retry_after(
            &[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")],
            Some(secs(30)),
        );
        check_retry_after(
            &[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")],
            Some(secs(0)),
        );
        check_retry_after(
            &[("retry-after-ms", "250"), ("retry-after", "1")],
            Some(Duration::from_millis(250)),
        );
        check_retry_after(
            &[("retry-after-ms", "junk"), ("retry-after", "2")],
            Some(secs(2)),
        );
        check_retry_after(&[("retry-after", "-3")], None);
        check_retry_after(&[("retry-after", "soon")], None);
        check_retry_after(&[("retry-after", "1e300")], None);
        check_retry_after(&[], None);
    }

    fn check_classify(status: u16, body: &str, class: agentry_core::ErrorClass, text: &str) {
        let failure = HttpFailure::new(
            StatusCode::from_u16(status).unwrap(),
            &headers(&[("retry-after", "3")]),
            body.as_bytes(),
            Some(&Secret::new("sk-secret-key")),
        );
        let error = failure.classify("openai");
        assert_eq!(error.class(), class, "{status}: {error}");
        let shown = error.to_string();
        assert!(shown.contains(text), "{shown:?} should contain {text:?}");
        assert!(shown.contains("openai"), "{shown}");
        assert!(!shown.contains("sk-secret-key"), "{shown}");
    }

    #[test]
    fn statuses_are_classified() {
        use agentry_core::ErrorClass::*;
        let openai = r#"{"error":{"message":"Bad things","type":"invalid_request_error","param":null,"code":null}}"#;
        check_classify(400, openai, InvalidInput, "Bad things");
        check_classify(
            404,
            r#"{"error":"model 'x' not found"}"#,
            InvalidInput,
            "model 'x' not found",
        );
        check_classify(422, r#"{"detail":"schema"}"#, InvalidInput, "schema");
        check_classify(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-key","type":"invalid_request_error"}}"#,
            Permanent,
            "check the API key",
        );
        check_classify(403, "", Permanent, "Forbidden");
        check_classify(429, openai, RateLimited, "HTTP 429");
        check_classify(500, "<html>oops</html>", Transient, "<html>oops</html>");
        check_classify(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            Transient,
            "Overloaded",
        );
        let failure = HttpFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "3")]),
            b"{}",
            None,
        );
        assert_eq!(
            failure.classify("x").retry_after(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn vendor_error_bodies() {
        let anthropic = br#"{"type":"error","error":{"type":"not_found_error","message":"The requested resource could not be found."},"request_id":"req_1"}"#;
        assert_eq!(
            vendor_error(anthropic),
            (
                Some("not_found_error".to_string()),
                "The requested resource could not be found.".to_string()
            )
        );
        let code_only = br#"{"error":{"message":"m","type":"","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            vendor_error(code_only).0.as_deref(),
            Some("rate_limit_exceeded")
        );
        let long = "x".repeat(2000);
        assert_eq!(
            vendor_error(long.as_bytes()).1.chars().count(),
            MAX_QUOTED + 1
        );
    }

    #[test]
    fn temperatures_are_written_as_given() {
        assert_eq!(temperature_json(0.2).to_string(), "0.2");
        assert_eq!(temperature_json(1.0).to_string(), "1.0");
    }

    #[test]
    fn arguments_that_do_not_parse_stay_raw() {
        assert_eq!(parse_arguments(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(parse_arguments(""), serde_json::json!({}));
        assert_eq!(parse_arguments("{\"a\":"), Value::String("{\"a\":".into()));
    }
}

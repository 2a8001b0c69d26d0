//! One provider's calls over HTTP, whatever the vendor: the reqwest client
//! and its headers, sending the request, turning a non-2xx status into a
//! [`Failure`], and reading a 2xx answer whole or as an event stream with
//! its idle timeout. What a vendor's answer means is left to its parser
//! ([`ParseAnswer`]) and its [`AnswerStream`], so the vendor modules hold
//! only their wire mapping.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, Error, RequestMeta, Result};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use tracing::{debug, Instrument};

use crate::http::{malformed, Failure, HttpFailure, WireAnswer};
use crate::secret::Secret;
use crate::sse::{SseEvent, SseParser};

/// Reads a vendor's non-streamed answer body: `(provider, body)`.
pub(crate) type ParseAnswer = fn(&str, &[u8]) -> Result<WireAnswer>;

/// A streamed answer being assembled, event by event.
pub(crate) trait AnswerStream: Default {
    /// What a stream that was cut off lacks, for the error message (`no
    /// message_stop and no stop_reason`).
    const MISSING_END: &'static str;

    /// Takes one event; breaks when the vendor's end-of-answer event came.
    fn on_event(&mut self, provider: &str, event: SseEvent) -> Result<ControlFlow<()>>;

    /// Whether the stream said that the answer is complete (its end event
    /// or a finish reason); one that did not was cut off.
    fn is_complete(&self) -> bool;

    /// The answer the stream built.
    fn into_answer(self) -> WireAnswer;
}

/// The settings every provider's config has; implemented for both configs
/// by [`config_builders!`], which also writes their common builders.
pub(crate) trait TransportConfig {
    /// The provider name.
    fn provider(&self) -> &str;
    /// The base URL as configured.
    fn base_url(&self) -> &str;
    /// The API key, if any.
    fn api_key(&self) -> Option<&Secret>;
    /// Extra headers on every request.
    fn headers(&self) -> &[(String, String)];
    /// The model of requests that name none.
    fn model(&self) -> &str;
    /// The time limits.
    fn limits(&self) -> Limits;
    /// Whether answers are asked for as event streams.
    fn stream(&self) -> bool;
}

/// Implements [`TransportConfig`] for a provider config and writes the
/// builders both configs share. The config must have the fields `name`,
/// `base_url`, `api_key`, `model`, `headers`, `timeout`, `connect_timeout`,
/// `read_idle_timeout` and `stream`.
macro_rules! config_builders {
    ($config:ty) => {
        impl $config {
            /// Sets the API key.
            pub fn with_api_key(mut self, key: impl Into<$crate::secret::Secret>) -> Self {
                self.api_key = Some(key.into());
                self
            }

            /// Adds a header sent with every request.
            pub fn with_header(
                mut self,
                name: impl Into<String>,
                value: impl Into<String>,
            ) -> Self {
                self.headers.push((name.into(), value.into()));
                self
            }

            /// Sets the whole-request timeout.
            pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.timeout = timeout;
                self
            }

            /// Streams answers (or not).
            pub fn with_stream(mut self, stream: bool) -> Self {
                self.stream = stream;
                self
            }
        }

        impl $crate::transport::TransportConfig for $config {
            fn provider(&self) -> &str {
                &self.name
            }

            fn base_url(&self) -> &str {
                &self.base_url
            }

            fn api_key(&self) -> Option<&$crate::secret::Secret> {
                self.api_key.as_ref()
            }

            fn headers(&self) -> &[(String, String)] {
                &self.headers
            }

            fn model(&self) -> &str {
                &self.model
            }

            fn limits(&self) -> $crate::transport::Limits {
                $crate::transport::Limits {
                    request: self.timeout,
                    connect: self.connect_timeout,
                    idle: self.read_idle_timeout,
                }
            }

            fn stream(&self) -> bool {
                self.stream
            }
        }
    };
}
pub(crate) use config_builders;

/// The time limits of one provider's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The whole request, streamed body included.
    pub request: Duration,
    /// Establishing the connection.
    pub connect: Duration,
    /// Waiting for the next bytes of a stream.
    pub idle: Duration,
}

/// A provider's HTTP side: its client (connection pool, TLS session
/// cache, default headers with the credential), endpoint and limits.
#[derive(Debug)]
pub(crate) struct Transport {
    provider: String,
    url: String,
    client: reqwest::Client,
    limits: Limits,
    stream: bool,
    api_key: Option<Secret>,
}

impl Transport {
    /// The transport of `config`, posting to `endpoint(base)` (`base` is
    /// the configured base URL without trailing slashes) with the config's
    /// headers, then the `extra` headers, then the API key in the header
    /// that `credential` writes. A base URL that is not http(s) or a header
    /// that cannot be sent is `InvalidInput`.
    pub(crate) fn new(
        config: &impl TransportConfig,
        endpoint: impl FnOnce(&str) -> String,
        extra: &[(String, String)],
        credential: impl FnOnce(&Secret) -> (&'static str, String),
    ) -> Result<Self> {
        let provider = config.provider();
        let base_url = normalized_base_url(provider, config.base_url())?;
        let headers: Vec<(String, String)> =
            config.headers().iter().chain(extra).cloned().collect();
        let credential = config.api_key().map(credential);
        let headers = default_headers(provider, &headers, credential)?;
        let limits = config.limits();
        let client = build_client(provider, headers, limits)?;
        Ok(Transport {
            provider: provider.to_string(),
            url: endpoint(&base_url),
            client,
            limits,
            stream: config.stream(),
            api_key: config.api_key().cloned(),
        })
    }

    /// One call: posts `body` (or reports why it could not be built) and
    /// reads the answer, a JSON body with `parse`, an event stream into an
    /// `S`. A non-2xx status stays an unclassified [`Failure::Http`] so the
    /// caller can still decide on a fallback.
    pub(crate) async fn call<S: AnswerStream>(
        &self,
        body: Result<Value>,
        parse: ParseAnswer,
        model: &str,
        request: &ChatRequest,
    ) -> Result<ChatResponse, Failure> {
        let provider = self.provider.as_str();
        let body = body.map_err(|error| error.context(provider))?;
        let response = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|error| {
                transport_error(provider, "sending the request", self.limits, &error)
            })?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            return Err(Failure::Http(HttpFailure::new(
                status,
                &headers,
                &body,
                self.api_key.as_ref(),
            )));
        }
        match body_kind(provider, response.headers(), self.stream)? {
            BodyKind::Json => {
                let body = response.bytes().await.map_err(|error| {
                    transport_error(provider, "reading the response body", self.limits, &error)
                })?;
                Ok(parse(provider, &body)?.into_response(provider, model, request))
            }
            BodyKind::EventStream => Ok(read_stream::<S>(
                provider,
                self.limits,
                response.bytes_stream(),
                model,
                request,
            )
            .await?),
        }
    }
}

/// The model a request asks for, else the config's.
pub(crate) fn model_of<'a>(config: &'a impl TransportConfig, request: &'a ChatRequest) -> &'a str {
    request.model.as_deref().unwrap_or(config.model())
}

/// Runs one `complete` call in its tracing span (with the request's
/// provenance) and logs how it ended.
pub(crate) async fn traced(
    provider: &str,
    model: &str,
    meta: &RequestMeta,
    call: impl Future<Output = Result<ChatResponse>>,
) -> Result<ChatResponse> {
    let span = tracing::info_span!(
        "llm.complete",
        provider = %provider,
        model = %model,
        workflow_id = meta.workflow_id.map(tracing::field::display),
        role = %meta.role,
        node = %meta.node,
        step = meta.step,
        visit = meta.visit,
        turn = meta.turn,
        request_id = meta.request_id.as_ref().map(agentry_core::RequestId::as_str),
    );
    async {
        let result = call.await;
        match &result {
            Ok(response) => debug!(
                prompt_tokens = response.usage.prompt_tokens,
                completion_tokens = response.usage.completion_tokens,
                finish_reason = %response.finish_reason,
                tool_calls = response.tool_calls.len(),
                "LLM call finished."
            ),
            Err(error) => debug!(%error, class = %error.class(), "LLM call failed."),
        }
        result
    }
    .instrument(span)
    .await
}

/// Default headers of a provider's client: the extra headers of its
/// config plus its credential header, marked sensitive so that reqwest
/// never prints it.
fn default_headers(
    provider: &str,
    extra: &[(String, String)],
    credential: Option<(&'static str, String)>,
) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in extra {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::invalid(format!(
                "{provider}: `{name}` is not a valid HTTP header name"
            ))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::invalid(format!(
                "{provider}: the value of header `{name}` is not a valid HTTP header value"
            ))
        })?;
        headers.insert(header, value);
    }
    if let Some((name, value)) = credential {
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            Error::invalid(format!(
                "{provider}: the API key contains characters that cannot go in an HTTP header"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static(name), value);
    }
    Ok(headers)
}

/// One reqwest client per provider (connection pool, TLS session cache).
fn build_client(provider: &str, headers: HeaderMap, limits: Limits) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(limits.request)
        .connect_timeout(limits.connect)
        .user_agent(concat!("agentry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| {
            Error::permanent(format!("{provider}: cannot build the HTTP client: {error}"))
        })
}

/// `base` without trailing slashes, checked to be an http(s) URL.
fn normalized_base_url(provider: &str, base: &str) -> Result<String> {
    let trimmed = base.trim().trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(Error::invalid(format!(
            "{provider}: base URL `{base}` must start with http:// or https://"
        )));
    }
    Ok(trimmed.to_string())
}

/// A reqwest failure, classified: timeouts are [`Error::Timeout`] (naming
/// the limit that was hit), the rest (connect, reset, body read) transient.
/// The message names the provider and the error's causes.
fn transport_error(provider: &str, doing: &str, limits: Limits, error: &reqwest::Error) -> Error {
    if error.is_timeout() {
        return if error.is_connect() {
            Error::Timeout {
                what: format!("connecting to {provider}"),
                after: limits.connect,
            }
        } else {
            Error::Timeout {
                what: format!("{provider} chat completion"),
                after: limits.request,
            }
        };
    }
    let mut message = format!("{provider}: {doing}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_connect() {
        message.push_str(" (is the server running and the base URL right?)");
    }
    Error::Transient(message)
}

/// How a 2xx answer's body must be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    EventStream,
}

/// The kind of a 2xx body from its content type; `expect_stream` decides
/// when the server sent none. Anything else is a malformed answer.
fn body_kind(provider: &str, headers: &HeaderMap, expect_stream: bool) -> Result<BodyKind> {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Ok(if expect_stream {
            BodyKind::EventStream
        } else {
            BodyKind::Json
        });
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "text/event-stream" => Ok(BodyKind::EventStream),
        "application/json" => Ok(BodyKind::Json),
        // Some servers label JSON as text; the JSON parse decides.
        "text/plain" if !expect_stream => Ok(BodyKind::Json),
        other => Err(malformed(
            provider,
            format!(
                "expected {}, got a `{other}` body",
                if expect_stream {
                    "an event stream"
                } else {
                    "JSON"
                }
            ),
        )),
    }
}

/// Reads an event-stream body into `S`, event by event, until the stream
/// ends or `S` breaks. Waiting longer than `limits.idle` for the next bytes
/// is an [`Error::Timeout`]; a stream that ended before `S` was complete
/// was cut off: transient.
pub(crate) async fn read_stream<S: AnswerStream>(
    provider: &str,
    limits: Limits,
    body: impl Stream<Item = reqwest::Result<Bytes>>,
    model: &str,
    request: &ChatRequest,
) -> Result<ChatResponse> {
    let mut body = std::pin::pin!(body);
    let mut parser = SseParser::new();
    let mut state = S::default();
    'read: loop {
        let next = tokio::time::timeout(limits.idle, body.next())
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{provider} chat completion stream (no data)"),
                after: limits.idle,
            })?;
        let (events, ended) = match next {
            Some(Ok(chunk)) => (parser.push(&chunk), false),
            Some(Err(error)) => {
                return Err(transport_error(
                    provider,
                    "reading the event stream",
                    limits,
                    &error,
                ));
            }
            None => (parser.finish(), true),
        };
        for event in events {
            if state.on_event(provider, event)?.is_break() {
                break 'read;
            }
        }
        if ended {
            break;
        }
    }
    if !state.is_complete() {
        return Err(Error::Transient(format!(
            "{provider}: stream ended early ({})",
            S::MISSING_END
        )));
    }
    Ok(state.into_answer().into_response(provider, model, request))
}

//! The Anthropic Messages API client ([`AnthropicProvider`]):
//! `POST {base_url}/v1/messages`, plain or streamed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use agentry_core::{
    ChatRequest, ChatResponse, ChatRole, Error, LlmProvider, Result, ToolCall, Usage,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::{debug, Instrument};

use crate::http::{
    self, body_kind, call_span, estimated_usage, for_each_event, in_band_error, malformed,
    parse_arguments, read_body, schema_instructions, temperature_json, BodyKind, Failure,
    HttpFailure, Limits,
};
use crate::secret::Secret;
use crate::sse::SseEvent;

/// Configuration of one Anthropic provider.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Provider name: returned by `name()` and put in
    /// `ChatResponse::provider` (`claude`, `anthropic`).
    pub name: String,
    /// Base URL without `/v1` ([`AnthropicConfig::DEFAULT_BASE_URL`]); a
    /// trailing slash, or a trailing `/v1`, is tolerated.
    pub base_url: String,
    /// Sent as `x-api-key`.
    pub api_key: Option<Secret>,
    /// Sent as `anthropic-version` ([`AnthropicConfig::DEFAULT_VERSION`]).
    pub version: String,
    /// The model of requests that name none.
    pub model: String,
    /// `max_tokens` of requests that set none (the API requires one).
    pub max_tokens: u32,
    /// Extra headers on every request (`anthropic-beta`, ...).
    pub headers: Vec<(String, String)>,
    /// Limit on a whole request, streamed body included.
    pub timeout: Duration,
    /// Limit on establishing the connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for the next bytes of a streamed answer.
    pub read_idle_timeout: Duration,
    /// Ask for a server-sent event stream (`stream: true`).
    pub stream: bool,
}

impl AnthropicConfig {
    /// The public API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";
    /// The API version this client speaks.
    pub const DEFAULT_VERSION: &'static str = "2023-06-01";

    /// A config with the defaults: the public API, version 2023-06-01, no
    /// key, `max_tokens` 8192, 300 s request timeout, 10 s connect timeout,
    /// 120 s stream idle timeout, not streamed.
    pub fn new(name: impl Into<String>, model: impl Into<String>) -> Self {
        AnthropicConfig {
            name: name.into(),
            base_url: Self::DEFAULT_BASE_URL.to_string(),
            api_key: None,
            version: Self::DEFAULT_VERSION.to_string(),
            model: model.into(),
            max_tokens: 8192,
            headers: Vec::new(),
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            read_idle_timeout: Duration::from_secs(120),
            stream: false,
        }
    }

    /// Sets the base URL.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the whole-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Streams answers (or not).
    pub fn with_stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }
}

/// An [`LlmProvider`] speaking the Anthropic Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    config: AnthropicConfig,
    url: String,
    client: reqwest::Client,
}

impl AnthropicProvider {
    /// Builds the provider and its HTTP client. A base URL that is not
    /// http(s) or a header that cannot be sent is `InvalidInput`.
    pub fn new(config: AnthropicConfig) -> Result<Self> {
        let base = http::normalized_base_url(&config.name, &config.base_url)?;
        let base = base.strip_suffix("/v1").unwrap_or(&base);
        let mut extra = config.headers.clone();
        extra.push(("anthropic-version".to_string(), config.version.clone()));
        let credential = config
            .api_key
            .as_ref()
            .map(|key| ("x-api-key", key.expose().to_string()));
        let headers = http::default_headers(&config.name, &extra, credential)?;
        let client = http::build_client(
            &config.name,
            headers,
            config.timeout,
            config.connect_timeout,
        )?;
        Ok(AnthropicProvider {
            url: format!("{base}/v1/messages"),
            client,
            config,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    fn limits(&self) -> Limits {
        Limits {
            request: self.config.timeout,
            connect: self.config.connect_timeout,
            idle: self.config.read_idle_timeout,
        }
    }

    async fn attempt(&self, request: &ChatRequest, model: &str) -> Result<ChatResponse, Failure> {
        let provider = self.config.name.as_str();
        let body = request_body(request, model, self.config.max_tokens, self.config.stream)
            .map_err(|error| error.context(provider))?;
        let response = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|error| {
                http::transport_error(provider, "sending the request", self.limits(), &error)
            })?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            return Err(Failure::Http(HttpFailure::new(
                status,
                &headers,
                &body,
                self.config.api_key.as_ref(),
            )));
        }
        match body_kind(provider, response.headers(), self.config.stream)? {
            BodyKind::Json => {
                let body = read_body(provider, self.limits(), response).await?;
                Ok(parse_message(provider, model, request, &body)?)
            }
            BodyKind::EventStream => {
                let mut state = StreamState::default();
                for_each_event(provider, self.limits(), response, |event| {
                    state.on_event(provider, event)
                })
                .await?;
                Ok(state.finish(provider, model, request)?)
            }
        }
    }
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let model = request.model.as_deref().unwrap_or(&self.config.model);
        let span = call_span(&self.config.name, model, &request.meta);
        async {
            let result = self
                .attempt(request, model)
                .await
                .map_err(|failure| failure.into_error(&self.config.name));
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
}

/// The JSON body of a Messages API request: system messages joined into
/// `system` (plus the schema instructions), tool calls as `tool_use`
/// blocks, tool results as `tool_result` blocks of a user message, and
/// consecutive messages of one role merged so that roles alternate.
pub(crate) fn request_body(
    request: &ChatRequest,
    model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Value> {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let text = || json!({"type": "text", "text": message.content});
        let (role, mut blocks) = match message.role {
            ChatRole::System => {
                if !message.content.is_empty() {
                    system.push(message.content.clone());
                }
                continue;
            }
            ChatRole::User => ("user", vec![text()]),
            ChatRole::Assistant => ("assistant", vec![text()]),
            ChatRole::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    Error::invalid(format!(
                        "message {index} is a tool result without a tool_call_id"
                    ))
                })?;
                (
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": id, "content": message.content}),
                    ],
                )
            }
        };
        // The API rejects empty text blocks.
        if message.content.is_empty() && message.role != ChatRole::Tool {
            blocks.clear();
        }
        blocks.extend(message.tool_calls.iter().map(|call| {
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(&call.arguments)})
        }));
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if let Some(schema) = &request.response_schema {
        system.push(schema_instructions(schema));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(default_max_tokens)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), temperature_json(temperature));
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// A `tool_use` block's `input`, which must be an object: arguments kept
/// raw because they did not parse go back as `{"raw_arguments": "..."}`.
fn tool_input(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(object @ Value::Object(_)) => object,
            _ => json!({"raw_arguments": raw}),
        },
        Value::Null => json!({}),
        other => json!({"raw_arguments": other.to_string()}),
    }
}

/// Anthropic's `stop_reason` in the port's words: `end_turn` and
/// `stop_sequence` are `stop`, `tool_use` is `tool_calls`, `max_tokens` is
/// `length`; others (`pause_turn`, `refusal`) pass through.
fn finish_reason(stop_reason: Option<&str>, calls: &[ToolCall]) -> String {
    match stop_reason {
        Some("end_turn" | "stop_sequence") => "stop".to_string(),
        Some("tool_use") => "tool_calls".to_string(),
        Some("max_tokens") => "length".to_string(),
        Some(other) if !other.is_empty() => other.to_string(),
        _ if calls.is_empty() => "stop".to_string(),
        _ => "tool_calls".to_string(),
    }
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    content: Option<Vec<Value>>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

fn usage_or_estimate(
    input: Option<u64>,
    output: Option<u64>,
    request: &ChatRequest,
    content: &str,
    calls: &[ToolCall],
) -> Usage {
    let estimate = estimated_usage(request, content, calls);
    Usage {
        prompt_tokens: input.unwrap_or(estimate.prompt_tokens),
        completion_tokens: output.unwrap_or(estimate.completion_tokens),
        cached: false,
    }
}

fn error_parts(error: &Value) -> (Option<&str>, String) {
    let kind = error.get("type").and_then(Value::as_str);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    (kind, message)
}

/// Reads a non-streamed Messages API answer.
pub(crate) fn parse_message(
    provider: &str,
    requested_model: &str,
    request: &ChatRequest,
    body: &[u8],
) -> Result<ChatResponse> {
    let parsed: MessageBody = serde_json::from_slice(body).map_err(|error| {
        malformed(
            provider,
            format!("not a message ({error}): {}", http::vendor_error(body).1),
        )
    })?;
    if parsed.kind.as_deref() == Some("error") || parsed.content.is_none() {
        if let Some(error) = parsed.error.as_ref().filter(|e| !e.is_null()) {
            let (kind, message) = error_parts(error);
            return Err(in_band_error(provider, kind, &message));
        }
        return Err(malformed(provider, "the body has no `content`"));
    }
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in parsed.content.unwrap_or_default() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => content.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("tool_use") => {
                let field = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            malformed(provider, format!("a tool_use block has no `{name}`"))
                        })
                };
                tool_calls.push(ToolCall {
                    id: field("id")?,
                    name: field("name")?,
                    arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
                });
            }
            _ => {}
        }
    }
    let usage = parsed.usage.unwrap_or_default();
    Ok(ChatResponse {
        finish_reason: finish_reason(parsed.stop_reason.as_deref(), &tool_calls),
        usage: usage_or_estimate(
            usage.input_tokens,
            usage.output_tokens,
            request,
            &content,
            &tool_calls,
        ),
        content,
        tool_calls,
        provider: provider.to_string(),
        model: parsed
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| requested_model.to_string()),
    })
}

#[derive(Debug)]
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
        input: Value,
    },
    Other,
}

/// What a Messages API stream has said so far.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    model: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    blocks: BTreeMap<u64, Block>,
    stop_reason: Option<String>,
    done: bool,
}

impl StreamState {
    /// Takes one event; breaks on `message_stop`.
    pub(crate) fn on_event(&mut self, provider: &str, event: SseEvent) -> Result<ControlFlow<()>> {
        let data: Value = if event.data.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&event.data).map_err(|error| {
                malformed(provider, format!("a stream event is not JSON ({error})"))
            })?
        };
        let name = event
            .event
            .clone()
            .or_else(|| data.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match name.as_str() {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.model = Some(model.to_string());
                }
                self.read_usage(message.get("usage"));
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let text = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => Block::Text(text("text")),
                    Some("tool_use") => Block::ToolUse {
                        id: text("id"),
                        name: text("name"),
                        json: String::new(),
                        input: block.get("input").cloned().unwrap_or_else(|| json!({})),
                    },
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                let piece =
                    |name: &str| delta.get(name).and_then(Value::as_str).unwrap_or_default();
                match (
                    delta.get("type").and_then(Value::as_str),
                    self.blocks.get_mut(&index),
                ) {
                    (Some("text_delta"), Some(Block::Text(text))) => text.push_str(piece("text")),
                    (Some("text_delta"), None) => {
                        self.blocks
                            .insert(index, Block::Text(piece("text").to_string()));
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse { json, .. })) => {
                        json.push_str(piece("partial_json"))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(reason.to_string());
                }
                self.read_usage(data.get("usage"));
            }
            "message_stop" => {
                self.done = true;
                return Ok(ControlFlow::Break(()));
            }
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let (kind, message) = error_parts(error);
                return Err(in_band_error(provider, kind, &message));
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(ControlFlow::Continue(()))
    }

    fn read_usage(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else { return };
        if let Some(input) = usage.get("input_tokens").and_then(Value::as_u64) {
            self.input_tokens = Some(input);
        }
        // Cumulative: the last count is the total.
        if let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) {
            self.output_tokens = Some(output);
        }
    }

    /// The message the stream built. A stream that ended with neither
    /// `message_stop` nor a stop reason was cut off: transient.
    pub(crate) fn finish(
        self,
        provider: &str,
        requested_model: &str,
        request: &ChatRequest,
    ) -> Result<ChatResponse> {
        if !self.done && self.stop_reason.is_none() {
            return Err(Error::Transient(format!(
                "{provider}: stream ended early (no message_stop and no stop_reason)"
            )));
        }
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for block in self.blocks.into_values() {
            match block {
                Block::Text(text) => content.push_str(&text),
                Block::ToolUse {
                    id,
                    name,
                    json,
                    input,
                } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: if json.trim().is_empty() {
                        input
                    } else {
                        parse_arguments(&json)
                    },
                }),
                Block::Other => {}
            }
        }
        Ok(ChatResponse {
            finish_reason: finish_reason(self.stop_reason.as_deref(), &tool_calls),
            usage: usage_or_estimate(
                self.input_tokens,
                self.output_tokens,
                request,
                &content,
                &tool_calls,
            ),
            content,
            tool_calls,
            provider: provider.to_string(),
            model: self.model.unwrap_or_else(|| requested_model.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;
    use agentry_core::{ChatMessage, ErrorClass, OutputSchema, RequestMeta, ToolDefinition};

    fn request(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: None,
            messages,
            tools: Vec::new(),
            response_schema: None,
            temperature: None,
            max_tokens: None,
            meta: RequestMeta {
                workflow_id: None,
                role: agentry_core::AgentRole::Qa,
                node: "qa".into(),
                step: 2,
                visit: 0,
                turn: 0,
                request_id: Some("req-1".into()),
            },
        }
    }

    fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn request_mapping_merges_tool_results_and_alternates_roles() {
        let mut req = request(vec![
            ChatMessage::system("You are the QA engineer of a small team."),
            ChatMessage::system("Project: shortener."),
            ChatMessage::user("Test it."),
            ChatMessage::assistant(
                "Reading both.",
                vec![
                    call("toolu_1", "read_file", json!({"path": "a.rs"})),
                    call("toolu_2", "read_file", Value::String("{\"path\":".into())),
                ],
            ),
            ChatMessage::tool_result("toolu_1", "fn a() {}"),
            ChatMessage::tool_result("toolu_2", "error: bad arguments"),
            ChatMessage::user("Go on."),
            ChatMessage::assistant("", vec![call("toolu_3", "run_tests", json!({}))]),
            ChatMessage::tool_result("toolu_3", "ok"),
        ]);
        req.tools = vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads a file.".into(),
            parameters: json!({"type": "object"}),
        }];
        req.temperature = Some(0.3);
        req.response_schema = Some(OutputSchema {
            name: "QaReport".into(),
            schema: json!({"type": "object"}),
        });
        let instructions = schema_instructions(req.response_schema.as_ref().unwrap());
        let body = request_body(&req, "claude-sonnet-4-5", 8192, true).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 8192,
                "system": format!(
                    "You are the QA engineer of a small team.\n\nProject: shortener.\n\n{instructions}"
                ),
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Test it."}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Reading both."},
                        {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.rs"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "read_file",
                         "input": {"raw_arguments": "{\"path\":"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "fn a() {}"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "error: bad arguments"},
                        {"type": "text", "text": "Go on."},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_3", "name": "run_tests", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_3", "content": "ok"},
                    ]},
                ],
                "tools": [{"name": "read_file", "description": "Reads a file.",
                           "input_schema": {"type": "object"}}],
                "temperature": 0.3,
                "stream": true,
            }),
            "\n{body:#}"
        );
        req.max_tokens = Some(100);
        let body = request_body(&req, "m", 8192, false).unwrap();
        assert_eq!(body["max_tokens"], json!(100));
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn response_parsing() {
        let req = request(vec![ChatMessage::user("weather?")]);
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 12}
        });
        let response =
            parse_message("claude", "claude-y", &req, body.to_string().as_bytes()).unwrap();
        assert_eq!(
            response,
            ChatResponse {
                content: "Checking.".into(),
                tool_calls: vec![
                    call("toolu_a", "get_weather", json!({"city": "Paris"})),
                    call("toolu_b", "get_time", json!({})),
                ],
                usage: Usage {
                    prompt_tokens: 30,
                    completion_tokens: 12,
                    cached: false
                },
                provider: "claude".into(),
                model: "claude-x".into(),
                finish_reason: "tool_calls".into(),
            }
        );
        for (stop, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "refusal"),
        ] {
            let body = json!({"content": [{"type": "text", "text": "x"}], "stop_reason": stop});
            let response = parse_message("c", "m", &req, body.to_string().as_bytes()).unwrap();
            assert_eq!(response.finish_reason, expected);
        }
        let error = parse_message("claude", "m", &req, b"{\"id\":\"x\"}").unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(
            error.to_string().contains("malformed response from claude"),
            "{error}"
        );
    }

    fn stream_result(stream: &str) -> Result<ChatResponse> {
        let req = request(vec![ChatMessage::user("hi")]);
        let mut parser = SseParser::new();
        let mut state = StreamState::default();
        for event in parser
            .push(stream.as_bytes())
            .into_iter()
            .chain(parser.finish())
        {
            if state.on_event("claude", event)?.is_break() {
                break;
            }
        }
        state.finish("claude", "claude-y", &req)
    }

    fn event(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    #[test]
    fn stream_assembles_blocks() {
        let stream = [
            event("message_start", json!({"type": "message_start", "message": {
                "model": "claude-x", "usage": {"input_tokens": 40, "output_tokens": 1}}})),
            event("content_block_start", json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})),
            event("ping", json!({"type": "ping"})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "On "}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "it."}})),
            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            event("content_block_start", json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"ci"}})),
            event("content_block_delta", json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "ty\": \"Paris\"}"}})),
            event("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            event("content_block_start", json!({"type": "content_block_start", "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}})),
            event("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
            event("message_delta", json!({"type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 25}})),
            event("message_stop", json!({"type": "message_stop"})),
        ]
        .concat();
        let response = stream_result(&stream).unwrap();
        assert_eq!(response.content, "On it.");
        assert_eq!(
            response.tool_calls,
            vec![
                call("toolu_a", "get_weather", json!({"city": "Paris"})),
                call("toolu_b", "get_time", json!({})),
            ]
        );
        assert_eq!(response.finish_reason, "tool_calls");
        assert_eq!(
            (
                response.usage.prompt_tokens,
                response.usage.completion_tokens
            ),
            (40, 25)
        );
        assert_eq!(response.model, "claude-x");
    }

    #[test]
    fn stream_errors_are_classified() {
        let start = event(
            "message_start",
            json!({"type": "message_start", "message": {"model": "m"}}),
        );
        let check = |kind: &str, class: ErrorClass| {
            let stream = format!(
                "{start}{}",
                event(
                    "error",
                    json!({"type": "error", "error": {"type": kind, "message": "Nope"}})
                )
            );
            let error = stream_result(&stream).unwrap_err();
            assert_eq!(error.class(), class, "{kind}: {error}");
            assert!(error.to_string().contains("claude"), "{error}");
        };
        check("overloaded_error", ErrorClass::Transient);
        check("api_error", ErrorClass::Transient);
        check("rate_limit_error", ErrorClass::RateLimited);
        check("invalid_request_error", ErrorClass::InvalidInput);
        check("authentication_error", ErrorClass::Permanent);

        let error = stream_result(&start).unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);
        assert!(error.to_string().contains("stream ended early"), "{error}");
    }
}

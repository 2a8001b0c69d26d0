//! The Anthropic Messages API client ([`AnthropicProvider`]):
//! `POST {base_url}/v1/messages`, plain or streamed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, ChatRole, Error, LlmProvider, Result, ToolCall};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::{
    in_band_error, insert_tools_and_temperature, malformed, parse_arguments, parse_body,
    schema_instructions, WireAnswer,
};
use crate::secret::Secret;
use crate::sse::SseEvent;
use crate::transport::{config_builders, model_of, traced, AnswerStream, Transport};

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
}

config_builders!(AnthropicConfig);

/// An [`LlmProvider`] speaking the Anthropic Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    config: AnthropicConfig,
    transport: Transport,
}

impl AnthropicProvider {
    /// Builds the provider and its HTTP client. A base URL that is not
    /// http(s) or a header that cannot be sent is `InvalidInput`.
    pub fn new(config: AnthropicConfig) -> Result<Self> {
        let version = [("anthropic-version".to_string(), config.version.clone())];
        let transport = Transport::new(
            &config,
            |base| {
                let base = base.strip_suffix("/v1").unwrap_or(base);
                format!("{base}/v1/messages")
            },
            &version,
            |key| ("x-api-key", key.expose().to_string()),
        )?;
        Ok(AnthropicProvider { config, transport })
    }

    /// The configuration it was built from (base URL, model, key, timeouts).
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
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
        let provider = self.config.name.as_str();
        let model = model_of(&self.config, request);
        traced(provider, model, &request.meta, async {
            let body = request_body(request, model, self.config.max_tokens, self.config.stream);
            self.transport
                .call::<StreamState>(body, parse_message, model, request)
                .await
                .map_err(|failure| failure.into_error(provider))
        })
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
    insert_tools_and_temperature(&mut body, request, |tool| {
        json!({
            "name": tool.name,
            "description": tool.description,
            "input_schema": tool.parameters,
        })
    });
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
fn finish_reason(stop_reason: Option<&str>) -> Option<String> {
    match stop_reason? {
        "end_turn" | "stop_sequence" => Some("stop".to_string()),
        "tool_use" => Some("tool_calls".to_string()),
        "max_tokens" => Some("length".to_string()),
        other => Some(other.to_string()),
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

/// An error object mid-response, classified by its `type`.
fn error_event(provider: &str, error: &Value) -> Error {
    in_band_error(provider, error.get("type").and_then(Value::as_str), error)
}

/// Reads a non-streamed Messages API answer.
pub(crate) fn parse_message(provider: &str, body: &[u8]) -> Result<WireAnswer> {
    let parsed: MessageBody = parse_body(provider, "a message", body)?;
    if parsed.kind.as_deref() == Some("error") || parsed.content.is_none() {
        if let Some(error) = parsed.error.as_ref().filter(|e| !e.is_null()) {
            return Err(error_event(provider, error));
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
    Ok(WireAnswer {
        finish_reason: finish_reason(parsed.stop_reason.as_deref()),
        content,
        tool_calls,
        model: parsed.model.filter(|m| !m.is_empty()),
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
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

impl AnswerStream for StreamState {
    const MISSING_END: &'static str = "no message_stop and no stop_reason";

    /// Takes one event; breaks on `message_stop`.
    fn on_event(&mut self, provider: &str, event: SseEvent) -> Result<ControlFlow<()>> {
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
                return Err(error_event(provider, error));
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Whether `message_stop` or a stop reason came.
    fn is_complete(&self) -> bool {
        self.done || self.stop_reason.is_some()
    }

    /// The message the stream built.
    fn into_answer(self) -> WireAnswer {
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
        WireAnswer {
            finish_reason: finish_reason(self.stop_reason.as_deref()),
            content,
            tool_calls,
            model: self.model,
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
        }
    }
}

impl StreamState {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, answer, call, request};
    use agentry_core::{ChatMessage, ErrorClass, OutputSchema, ToolDefinition};

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
            layout: Default::default(),
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

    /// The tool calls of the answers that the parsing tests read.
    fn weather_and_time() -> Vec<ToolCall> {
        vec![
            call("toolu_a", "get_weather", json!({"city": "Paris"})),
            call("toolu_b", "get_time", json!({})),
        ]
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
        let parse = |provider: &str, model: &str, body: &[u8]| {
            testkit::parse_result(parse_message, provider, model, &req, body)
        };
        assert_eq!(
            parse("claude", "claude-y", body.to_string().as_bytes()).unwrap(),
            answer(
                "Checking.",
                weather_and_time(),
                "tool_calls",
                (30, 12),
                "claude",
                "claude-x",
            )
        );
        for (stop, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "refusal"),
        ] {
            let body = json!({"content": [{"type": "text", "text": "x"}], "stop_reason": stop});
            let response = parse("c", "m", body.to_string().as_bytes()).unwrap();
            assert_eq!(response.finish_reason, expected);
        }
        let error = parse("claude", "m", b"{\"id\":\"x\"}").unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(
            error.to_string().contains("malformed response from claude"),
            "{error}"
        );
    }

    fn stream_result(stream: &str) -> Result<ChatResponse> {
        testkit::stream_result::<StreamState>("claude", "claude-y", stream)
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
        assert_eq!(
            stream_result(&stream).unwrap(),
            answer(
                "On it.",
                weather_and_time(),
                "tool_calls",
                (40, 25),
                "claude",
                "claude-x",
            )
        );
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

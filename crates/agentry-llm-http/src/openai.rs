//! The OpenAI-compatible chat completions client ([`OpenAiProvider`]): OpenAI,
//! OpenRouter, Ollama, vLLM, llama.cpp and the other servers that speak
//! `POST {base_url}/chat/completions`, plain or streamed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentry_core::{
    ChatMessage, ChatRequest, ChatResponse, ChatRole, Error, LlmProvider, Result, ToolCall,
};
use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::warn;

use crate::http::{
    in_band_error, insert_tools_and_temperature, malformed, parse_arguments, parse_body,
    schema_instructions, Failure, WireAnswer,
};
use crate::secret::Secret;
use crate::sse::SseEvent;
use crate::transport::{config_builders, model_of, traced, AnswerStream, Transport};

/// How a request's response schema reaches an OpenAI-compatible server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// Send `response_format: {"type": "json_schema", ...}`. If the server
    /// answers 400 or 422 to a request that carried it, retry that call
    /// once with the schema as instructions in the system prompt instead;
    /// when the retry succeeds, this provider uses instructions for every
    /// later call (many local servers reject `response_format`, and their
    /// error messages do not name it reliably).
    #[default]
    Auto,
    /// Always send `response_format`; a rejection is the caller's error.
    JsonSchema,
    /// Never send `response_format`; always put the schema in the system
    /// prompt as instructions.
    Instructions,
}

/// Which request field carries the completion token cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_tokens`: what most OpenAI-compatible servers read.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: required by OpenAI's reasoning (o-series)
    /// models.
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The JSON field name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// Configuration of one OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Provider name: returned by `name()` and put in
    /// `ChatResponse::provider` (`openai`, `openrouter`, `ollama`).
    pub name: String,
    /// Base URL up to and including `/v1` (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1`); a trailing slash is tolerated.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; `None` sends no credential (Ollama).
    pub api_key: Option<Secret>,
    /// The model of requests that name none.
    pub model: String,
    /// Extra headers on every request (OpenRouter's `HTTP-Referer`, ...).
    pub headers: Vec<(String, String)>,
    /// Limit on a whole request, streamed body included.
    pub timeout: Duration,
    /// Limit on establishing the connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for the next bytes of a streamed answer.
    pub read_idle_timeout: Duration,
    /// Ask for a server-sent event stream (`stream: true`).
    pub stream: bool,
    /// How a response schema is sent.
    pub structured_output: StructuredOutput,
    /// Which field carries the token cap.
    pub max_tokens_field: MaxTokensField,
}

impl OpenAiConfig {
    /// A config with the defaults: no key, no extra headers, 300 s request
    /// timeout, 10 s connect timeout, 120 s stream idle timeout, not
    /// streamed, [`StructuredOutput::Auto`], `max_tokens`.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        OpenAiConfig {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            read_idle_timeout: Duration::from_secs(120),
            stream: false,
            structured_output: StructuredOutput::Auto,
            max_tokens_field: MaxTokensField::MaxTokens,
        }
    }

    /// Sets how response schemas are sent.
    pub fn with_structured_output(mut self, mode: StructuredOutput) -> Self {
        self.structured_output = mode;
        self
    }
}

config_builders!(OpenAiConfig);

/// How one request carries its response schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaVia {
    ResponseFormat,
    Instructions,
}

/// An [`LlmProvider`] speaking the OpenAI chat completions wire format.
#[derive(Debug)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    transport: Transport,
    /// Set once the server rejected `response_format` in `Auto` mode.
    schema_as_instructions: AtomicBool,
}

impl OpenAiProvider {
    /// Builds the provider and its HTTP client. A base URL that is not
    /// http(s) or a header that cannot be sent is `InvalidInput`.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let transport = Transport::new(
            &config,
            |base| format!("{base}/chat/completions"),
            &[],
            |key| ("authorization", format!("Bearer {}", key.expose())),
        )?;
        Ok(OpenAiProvider {
            config,
            transport,
            schema_as_instructions: AtomicBool::new(false),
        })
    }

    /// The configuration it was built from (base URL, model, key, timeouts).
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Whether response schemas now go as instructions: always in
    /// [`StructuredOutput::Instructions`] mode, and in `Auto` mode once the
    /// server has rejected `response_format`.
    pub fn sends_schema_as_instructions(&self) -> bool {
        match self.config.structured_output {
            StructuredOutput::Instructions => true,
            StructuredOutput::JsonSchema => false,
            StructuredOutput::Auto => self.schema_as_instructions.load(Ordering::Relaxed),
        }
    }

    async fn attempt(
        &self,
        request: &ChatRequest,
        model: &str,
        via: SchemaVia,
    ) -> Result<ChatResponse, Failure> {
        let body = request_body(
            request,
            model,
            self.config.max_tokens_field,
            self.config.stream,
            via,
        );
        self.transport
            .call::<StreamState>(body, parse_completion, model, request)
            .await
    }

    async fn complete_inner(&self, request: &ChatRequest, model: &str) -> Result<ChatResponse> {
        let provider = self.config.name.as_str();
        let via = if self.sends_schema_as_instructions() {
            SchemaVia::Instructions
        } else {
            SchemaVia::ResponseFormat
        };
        let fallback_allowed = self.config.structured_output == StructuredOutput::Auto
            && via == SchemaVia::ResponseFormat
            && request
                .response_schema
                .as_ref()
                .is_some_and(|schema| schema.layout.is_json());
        match self.attempt(request, model, via).await {
            Err(Failure::Http(failure))
                if fallback_allowed
                    && matches!(
                        failure.status,
                        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
                    ) =>
            {
                warn!(
                    status = failure.status.as_u16(),
                    error = %failure.message,
                    "Server rejected a request with response_format; retrying with the schema as instructions."
                );
                let retried = self
                    .attempt(request, model, SchemaVia::Instructions)
                    .await
                    .map_err(|failure| failure.into_error(provider))?;
                self.schema_as_instructions.store(true, Ordering::Relaxed);
                Ok(retried)
            }
            result => result.map_err(|failure| failure.into_error(provider)),
        }
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let model = model_of(&self.config, request);
        traced(
            &self.config.name,
            model,
            &request.meta,
            self.complete_inner(request, model),
        )
        .await
    }
}

/// The JSON body of a chat completion request.
pub(crate) fn request_body(
    request: &ChatRequest,
    model: &str,
    max_tokens_field: MaxTokensField,
    stream: bool,
    via: SchemaVia,
) -> Result<Value> {
    let mut messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(index, message)| message_json(index, message))
        .collect::<Result<Vec<_>>>()?;
    let schema = request.response_schema.as_ref();
    // An answer laid out as JSON then files is not JSON: no
    // `response_format` describes it.
    let via = match schema {
        Some(schema) if !schema.layout.is_json() => SchemaVia::Instructions,
        _ => via,
    };
    if let (Some(schema), SchemaVia::Instructions) = (schema, via) {
        append_to_system_prompt(&mut messages, &schema_instructions(schema));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    insert_tools_and_temperature(&mut body, request, |tool| {
        json!({
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
        })
    });
    if let Some(max_tokens) = request.max_tokens {
        body.insert(max_tokens_field.as_str().into(), json!(max_tokens));
    }
    if let (Some(schema), SchemaVia::ResponseFormat) = (schema, via) {
        body.insert(
            "response_format".into(),
            json!({
                "type": "json_schema",
                "json_schema": {
                    "name": schema_name(&schema.name),
                    "schema": schema.schema,
                    "strict": false,
                }
            }),
        );
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

fn message_json(index: usize, message: &ChatMessage) -> Result<Value> {
    Ok(match message.role {
        ChatRole::System => json!({"role": "system", "content": message.content}),
        ChatRole::User => json!({"role": "user", "content": message.content}),
        ChatRole::Assistant => {
            let mut json = Map::new();
            json.insert("role".into(), json!("assistant"));
            let content = if message.content.is_empty() && !message.tool_calls.is_empty() {
                Value::Null
            } else {
                json!(message.content)
            };
            json.insert("content".into(), content);
            if !message.tool_calls.is_empty() {
                let calls = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": arguments_text(&call.arguments),
                            }
                        })
                    })
                    .collect();
                json.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(json)
        }
        ChatRole::Tool => {
            let id = message.tool_call_id.as_deref().ok_or_else(|| {
                Error::invalid(format!(
                    "message {index} is a tool result without a tool_call_id"
                ))
            })?;
            json!({"role": "tool", "tool_call_id": id, "content": message.content})
        }
    })
}

/// Arguments as the JSON text the wire carries; arguments kept raw because
/// they did not parse go back exactly as the model wrote them.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// Appends `text` to the first system message, or puts a system message
/// first when there is none.
fn append_to_system_prompt(messages: &mut Vec<Value>, text: &str) {
    let system = messages
        .iter_mut()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("system"));
    match system {
        Some(message) => {
            let prompt = message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let joined = if prompt.is_empty() {
                text.to_string()
            } else {
                format!("{prompt}\n\n{text}")
            };
            message["content"] = json!(joined);
        }
        None => messages.insert(0, json!({"role": "system", "content": text})),
    }
}

/// OpenAI requires `json_schema.name` to match `^[a-zA-Z0-9_-]{1,64}$`.
fn schema_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "response".to_string()
    } else {
        cleaned
    }
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    model: Option<String>,
    choices: Option<Vec<Choice>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    content: Option<Value>,
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl WireUsage {
    /// Both counts, or none: a partial report is estimated whole.
    fn counts(&self) -> Option<(u64, u64)> {
        Some((self.prompt_tokens?, self.completion_tokens?))
    }
}

/// Text content: a string, or (some servers) an array of text parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn arguments_value(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(raw)) => parse_arguments(raw),
        Some(Value::Null) | None => Value::Object(Map::new()),
        Some(other) => other.clone(),
    }
}

/// An error object mid-response, classified by its `type` (or `code`).
fn error_object(provider: &str, error: &Value) -> Error {
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .or_else(|| error.get("code").and_then(Value::as_str));
    in_band_error(provider, kind, error)
}

/// Reads a non-streamed chat completion.
pub(crate) fn parse_completion(provider: &str, body: &[u8]) -> Result<WireAnswer> {
    let parsed: CompletionBody = parse_body(provider, "a chat completion", body)?;
    let Some(choices) = parsed.choices else {
        if let Some(error) = parsed.error.as_ref().filter(|e| !e.is_null()) {
            return Err(error_object(provider, error));
        }
        return Err(malformed(provider, "the body has no `choices`"));
    };
    let choice = choices
        .into_iter()
        .next()
        .ok_or_else(|| malformed(provider, "`choices` is empty"))?;
    let message = choice
        .message
        .ok_or_else(|| malformed(provider, "the first choice has no `message`"))?;
    let content = content_text(message.content.as_ref());
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{index}")),
            name: call.function.name,
            arguments: arguments_value(call.function.arguments.as_ref()),
        })
        .collect();
    let usage = parsed.usage.as_ref().and_then(WireUsage::counts);
    Ok(WireAnswer {
        finish_reason: choice.finish_reason,
        content,
        tool_calls,
        model: parsed.model.filter(|m| !m.is_empty()),
        prompt_tokens: usage.map(|(prompt, _)| prompt),
        completion_tokens: usage.map(|(_, completion)| completion),
    })
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// What a chat completion stream has said so far.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    content: String,
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<(u64, u64)>,
    model: Option<String>,
    done: bool,
}

impl AnswerStream for StreamState {
    const MISSING_END: &'static str = "no finish_reason and no [DONE]";

    /// Takes one event; breaks on `data: [DONE]`.
    fn on_event(&mut self, provider: &str, event: SseEvent) -> Result<ControlFlow<()>> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(ControlFlow::Break(()));
        }
        if data.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        let chunk: Value = serde_json::from_str(data).map_err(|error| {
            malformed(provider, format!("a stream chunk is not JSON ({error})"))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(error_object(provider, error));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            if !model.is_empty() {
                self.model = Some(model.to_string());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let usage: WireUsage = serde_json::from_value(usage.clone())
                .map_err(|error| malformed(provider, format!("stream usage: {error}")))?;
            if let Some(usage) = usage.counts() {
                self.usage = Some(usage);
            }
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        let Some(choice) = choices.and_then(|c| {
            c.iter()
                .find(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        }) else {
            return Ok(ControlFlow::Continue(()));
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.content.push_str(text);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    self.merge_call_delta(call);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Whether `[DONE]` or a finish reason came.
    fn is_complete(&self) -> bool {
        self.done || self.finish_reason.is_some()
    }

    /// The completion the stream built.
    fn into_answer(self) -> WireAnswer {
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_values()
            .enumerate()
            .map(|(position, call)| ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{position}")
                } else {
                    call.id
                },
                name: call.name,
                arguments: parse_arguments(&call.arguments),
            })
            .collect();
        WireAnswer {
            finish_reason: self.finish_reason,
            content: self.content,
            tool_calls,
            model: self.model,
            prompt_tokens: self.usage.map(|(prompt, _)| prompt),
            completion_tokens: self.usage.map(|(_, completion)| completion),
        }
    }
}

impl StreamState {
    /// Merges one `delta.tool_calls[]` entry by its `index`: the id and name
    /// come in the first delta of an index, the arguments text in pieces.
    fn merge_call_delta(&mut self, delta: &Value) {
        let id = delta
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let index = match delta.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Servers that omit `index`: a new id starts a new call.
            None => match self.calls.last_key_value() {
                Some((last, call)) if id.is_none_or(|id| id == call.id) => *last,
                Some((last, _)) => last + 1,
                None => 0,
            },
        };
        let call = self.calls.entry(index).or_default();
        if let Some(id) = id {
            call.id = id.to_string();
        }
        let function = delta.get("function");
        if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
            if call.name.is_empty() {
                call.name = name.to_string();
            }
        }
        match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(piece)) => call.arguments.push_str(piece),
            Some(Value::Null) | None => {}
            Some(other) => call.arguments.push_str(&other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, answer, call, request};
    use agentry_core::{OutputSchema, ToolDefinition};

    fn check_body(
        request: &ChatRequest,
        field: MaxTokensField,
        stream: bool,
        via: SchemaVia,
        expected: Value,
    ) {
        let body = request_body(request, "gpt-4o-mini", field, stream, via).unwrap();
        assert_eq!(body, expected, "\n{body:#}");
    }

    #[test]
    fn request_mapping_with_tools_and_tool_results() {
        let mut req = request(vec![
            ChatMessage::system("You are the developer of a small team."),
            ChatMessage::user("Build it."),
            ChatMessage::assistant(
                "",
                vec![
                    call("call_1", "read_file", json!({"path": "a.rs"})),
                    call("call_2", "write_file", Value::String("{\"path\":".into())),
                ],
            ),
            ChatMessage::tool_result("call_1", "fn main() {}"),
            ChatMessage::tool_result("call_2", "error: arguments are not JSON"),
            ChatMessage::assistant("Done.", vec![]),
        ]);
        req.tools = vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads a file.".into(),
            parameters: json!({"type": "object"}),
        }];
        req.temperature = Some(0.2);
        req.max_tokens = Some(512);
        check_body(
            &req,
            MaxTokensField::MaxCompletionTokens,
            false,
            SchemaVia::ResponseFormat,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You are the developer of a small team."},
                    {"role": "user", "content": "Build it."},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "read_file", "arguments": "{\"path\":\"a.rs\"}"}},
                        {"id": "call_2", "type": "function",
                         "function": {"name": "write_file", "arguments": "{\"path\":"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "fn main() {}"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "error: arguments are not JSON"},
                    {"role": "assistant", "content": "Done."},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "read_file", "description": "Reads a file.",
                    "parameters": {"type": "object"}}}],
                "temperature": 0.2,
                "max_completion_tokens": 512,
            }),
        );
    }

    #[test]
    fn an_answer_with_raw_files_is_asked_for_in_the_instructions() {
        let mut req = request(vec![
            ChatMessage::system("You are the developer."),
            ChatMessage::user("Build it."),
        ]);
        let mut schema = OutputSchema::json("Implementation", json!({"type": "object"}));
        schema.layout = agentry_core::AnswerLayout::JsonThenFiles {
            field: "files".into(),
        };
        let instructions = schema.instructions();
        assert!(instructions.contains("FILE <path>"), "{instructions}");
        req.response_schema = Some(schema);
        check_body(
            &req,
            MaxTokensField::MaxTokens,
            false,
            SchemaVia::ResponseFormat,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": format!("You are the developer.\n\n{instructions}")},
                    {"role": "user", "content": "Build it."},
                ],
            }),
        );
    }

    #[test]
    fn request_mapping_of_schemas_and_streaming() {
        let mut req = request(vec![ChatMessage::user("Analyse.")]);
        req.response_schema = Some(OutputSchema {
            name: "Business Analysis".into(),
            schema: json!({"type": "object"}),
            layout: Default::default(),
        });
        check_body(
            &req,
            MaxTokensField::MaxTokens,
            true,
            SchemaVia::ResponseFormat,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Analyse."}],
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "Business_Analysis", "schema": {"type": "object"}, "strict": false}},
                "stream": true,
                "stream_options": {"include_usage": true},
            }),
        );
        let instructions = schema_instructions(req.response_schema.as_ref().unwrap());
        check_body(
            &req,
            MaxTokensField::MaxTokens,
            false,
            SchemaVia::Instructions,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": "Analyse."},
                ],
            }),
        );
        req.messages.insert(0, ChatMessage::system("Be brief."));
        let body = request_body(
            &req,
            "m",
            MaxTokensField::MaxTokens,
            false,
            SchemaVia::Instructions,
        )
        .unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            json!(format!("Be brief.\n\n{instructions}"))
        );
        assert!(
            instructions.starts_with("Reply with JSON only"),
            "{instructions}"
        );
    }

    #[test]
    fn a_tool_result_without_an_id_is_invalid_input() {
        let mut message = ChatMessage::tool_result("x", "y");
        message.tool_call_id = None;
        let error = request_body(
            &request(vec![message]),
            "m",
            MaxTokensField::MaxTokens,
            false,
            SchemaVia::ResponseFormat,
        )
        .unwrap_err();
        assert_eq!(error.class(), agentry_core::ErrorClass::InvalidInput);
    }

    #[test]
    fn response_parsing() {
        let req = request(vec![ChatMessage::user(
            "What is the weather like in Boston?",
        )]);
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Boston\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "get_time", "arguments": "{not json"}},
                ]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}
        });
        let parse = |provider: &str, model: &str, body: &[u8]| {
            testkit::parse_result(parse_completion, provider, model, &req, body)
        };
        assert_eq!(
            parse("openai", "gpt-4o", body.to_string().as_bytes()).unwrap(),
            answer(
                "",
                vec![
                    call("call_a", "get_weather", json!({"city": "Boston"})),
                    call("call_b", "get_time", Value::String("{not json".into())),
                ],
                "tool_calls",
                (20, 7),
                "openai",
                "gpt-4o-2024-08-06",
            )
        );

        // No usage, no model, no finish reason: estimated, requested, "stop".
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"Sunny today."}}]}"#;
        let response = parse("ollama", "llama3", body).unwrap();
        assert_eq!(response.model, "llama3");
        assert_eq!(response.finish_reason, "stop");
        assert_eq!(response.usage.completion_tokens, 3);
        assert_eq!(response.usage.prompt_tokens, 9);
    }

    #[test]
    fn malformed_bodies_are_permanent_and_name_the_provider() {
        let req = request(vec![ChatMessage::user("hi")]);
        for body in [
            &b"<html>502</html>"[..],
            b"{\"object\":\"list\"}",
            b"{\"choices\":[]}",
        ] {
            let error =
                testkit::parse_result(parse_completion, "openrouter", "m", &req, body).unwrap_err();
            assert_eq!(
                error.class(),
                agentry_core::ErrorClass::Permanent,
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("malformed response from openrouter"),
                "{error}"
            );
        }
    }

    fn stream_result(stream: &str) -> Result<ChatResponse> {
        testkit::stream_result::<StreamState>("openai", "gpt-4o", stream)
    }

    #[test]
    fn stream_merges_parallel_tool_call_deltas_by_index() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "model": "gpt-4o-x",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let tc = |index: u64, rest: Value| {
            let mut entry = json!({"index": index});
            entry
                .as_object_mut()
                .unwrap()
                .extend(rest.as_object().unwrap().clone());
            json!({"tool_calls": [entry]})
        };
        let stream = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Let me "}), Value::Null),
            chunk(json!({"content": "look."}), Value::Null),
            chunk(tc(0, json!({"id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": ""}})), Value::Null),
            chunk(tc(1, json!({"id": "call_b", "type": "function", "function": {"name": "list_dir", "arguments": "{\"pa"}})), Value::Null),
            chunk(tc(0, json!({"function": {"arguments": "{\"path\":"}})), Value::Null),
            chunk(tc(1, json!({"function": {"arguments": "th\":\".\"}"}})), Value::Null),
            chunk(tc(0, json!({"function": {"arguments": "\"a.rs\"}"}})), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5}})),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        assert_eq!(
            stream_result(&stream).unwrap(),
            answer(
                "Let me look.",
                vec![
                    call("call_a", "read_file", json!({"path": "a.rs"})),
                    call("call_b", "list_dir", json!({"path": "."})),
                ],
                "tool_calls",
                (11, 5),
                "openai",
                "gpt-4o-x",
            )
        );
    }

    #[test]
    fn stream_endings() {
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        let error = stream_result(text).unwrap_err();
        assert_eq!(error.class(), agentry_core::ErrorClass::Transient);
        assert!(error.to_string().contains("stream ended early"), "{error}");

        // A finish reason without [DONE] is a complete answer.
        let finished = format!(
            "{text}data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\n"
        );
        let response = stream_result(&finished).unwrap();
        assert_eq!(
            (response.content.as_str(), response.finish_reason.as_str()),
            ("Hi", "length")
        );

        let mid_error = format!(
            "{text}data: {{\"error\":{{\"message\":\"The server had an error\",\"type\":\"server_error\"}}}}\n\n"
        );
        let error = stream_result(&mid_error).unwrap_err();
        assert_eq!(error.class(), agentry_core::ErrorClass::Transient);
        assert!(
            error.to_string().contains("The server had an error"),
            "{error}"
        );

        let error = stream_result("data: {oops\n\n").unwrap_err();
        assert_eq!(error.class(), agentry_core::ErrorClass::Permanent);
    }
}

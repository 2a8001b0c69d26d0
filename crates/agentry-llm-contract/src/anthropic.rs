//! The Anthropic Messages API wire format, server side: decoding and
//! validating `POST /v1/messages` (headers, role alternation, tool result
//! ids), encoding answers (a `message`, or the named-event stream) and
//! Anthropic's error bodies.

use std::collections::BTreeSet;

use agentry_core::{ChatMessage, ChatRequest, ChatResponse, Error, ToolCall, ToolDefinition};
use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::reply::Reply;
use crate::wire::{self, pieces, placeholder_meta, valid_tool_name, wire_calls, Decoded};

/// The one path this vendor serves.
pub(crate) const PATH: &str = "/v1/messages";

/// API versions the server accepts in `anthropic-version`.
const VERSIONS: &[&str] = &["2023-06-01", "2023-01-01"];

/// Request fields the real API accepts; any other is rejected.
const KNOWN_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
];

/// Anthropic's error body.
pub(crate) fn error(status: u16, kind: &str, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message.into()}}),
    )
}

fn invalid(message: impl Into<String>) -> Reply {
    error(400, "invalid_request_error", message)
}

/// 401 unless `x-api-key` is the expected key; 400 without a known
/// `anthropic-version`.
pub(crate) fn check_headers(headers: &HeaderMap, expected_key: Option<&str>) -> Result<(), Reply> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(expected) = expected_key {
        match header("x-api-key") {
            Some(key) if key == expected => {}
            Some(_) => return Err(error(401, "authentication_error", "invalid x-api-key")),
            None => {
                return Err(error(
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                ))
            }
        }
    }
    match header("anthropic-version") {
        Some(version) if VERSIONS.contains(&version) => Ok(()),
        Some(version) => Err(invalid(format!(
            "anthropic-version: unknown version `{version}` (expected one of {})",
            VERSIONS.join(", ")
        ))),
        None => Err(invalid("anthropic-version: header is required")),
    }
}

/// A 429 with Anthropic's body and `retry-after`.
pub(crate) fn rate_limited(retry_after_secs: u64, message: Option<&str>) -> Reply {
    error(
        429,
        "rate_limit_error",
        message.unwrap_or("Number of request tokens has exceeded your per-minute rate limit."),
    )
    .with_header("retry-after", retry_after_secs.to_string())
}

/// A 500 with Anthropic's body.
pub(crate) fn server_error(message: Option<&str>) -> Reply {
    error(500, "api_error", message.unwrap_or("Internal server error"))
}

/// Unknown path or method.
pub(crate) fn not_found(method: &str, path: &str) -> Reply {
    error(
        404,
        "not_found_error",
        format!("Not found: {method} {path}"),
    )
}

/// The brain's error as the vendor would answer it: rate limits 429,
/// transient failures 529 (overloaded), the rest 400.
pub(crate) fn brain_error(error_: &Error) -> Reply {
    match error_ {
        Error::RateLimited {
            message,
            retry_after,
        } => rate_limited(wire::retry_after_secs(*retry_after), Some(message)),
        Error::Transient(_) | Error::Timeout { .. } => {
            error(529, "overloaded_error", error_.to_string())
        }
        other => invalid(other.to_string()),
    }
}

/// Text of a `system` or `tool_result` content: a string, or text blocks.
fn text_of(value: &Value, at: &str) -> Result<String, Reply> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(index, block)| {
                match (
                    block.get("type").and_then(Value::as_str),
                    block.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => Ok(text.to_string()),
                    _ => Err(invalid(format!(
                        "{at}.{index}: the contract server accepts text blocks only here"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        other => Err(invalid(format!(
            "{at}: Input should be a valid string or list, got {}",
            wire::json_type(other)
        ))),
    }
}

/// Decodes and validates a request body as the real API would.
pub(crate) fn decode(body: &[u8]) -> Result<Decoded, Reply> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        invalid(format!(
            "There was an issue with the format of your request: {error}"
        ))
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("The request body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "{unknown}: Extra inputs are not permitted"
        )));
    }
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("model: Field required"))?
        .to_string();
    let max_tokens = wire::positive_integer(object, "max_tokens")
        .map_err(invalid)?
        .ok_or_else(|| invalid("max_tokens: Field required"))?;
    let mut messages = Vec::new();
    match object.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => messages.push(ChatMessage::system(text_of(system, "system")?)),
    }
    messages.extend(decode_messages(object.get("messages"))?);
    let tools = decode_tools(object.get("tools"))?;
    let temperature = wire::optional_number_up_to(object.get("temperature"), 1.0).map_err(|t| {
        invalid(format!(
            "temperature: Input should be a number between 0 and 1, got {t}"
        ))
    })?;
    let stream = wire::optional_bool(object.get("stream"))
        .ok_or_else(|| invalid("stream: Input should be a valid boolean"))?;
    Ok(Decoded {
        request: ChatRequest {
            model: Some(model.clone()),
            messages,
            tools,
            response_schema: None,
            temperature,
            max_tokens: Some(max_tokens),
            meta: placeholder_meta(),
        },
        model,
        stream,
        include_usage: false,
    })
}

fn decode_messages(value: Option<&Value>) -> Result<Vec<ChatMessage>, Reply> {
    let messages = value
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages: Field required"))?;
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut decoded = Vec::new();
    let mut previous_role: Option<&str> = None;
    let mut open_tool_uses: Vec<String> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let at = format!("messages.{index}");
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            _ => {
                return Err(invalid(format!(
                    "{at}.role: Input should be 'user' or 'assistant'"
                )))
            }
        };
        if index == 0 && role != "user" {
            return Err(invalid(
                "messages: first message must use the \"user\" role",
            ));
        }
        if previous_role == Some(role) {
            return Err(invalid(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            )));
        }
        previous_role = Some(role);
        let is_last = index + 1 == messages.len();
        let blocks = match message.get("content") {
            Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
            Some(Value::Array(blocks)) => blocks.clone(),
            Some(_) => {
                return Err(invalid(format!(
                    "{at}.content: Input should be a valid string or list"
                )))
            }
            None => return Err(invalid(format!("{at}.content: Field required"))),
        };
        let empty_text = |b: &Value| {
            b.get("type").and_then(Value::as_str) == Some("text")
                && b.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
        };
        if blocks.is_empty() || (blocks.iter().any(empty_text) && !(is_last && role == "assistant"))
        {
            return Err(invalid(format!(
                "{at}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
        if role == "user" {
            decoded.extend(decode_user_blocks(&blocks, &at, &open_tool_uses)?);
            open_tool_uses.clear();
        } else {
            let (message, uses) = decode_assistant_blocks(&blocks, &at)?;
            open_tool_uses = uses;
            decoded.push(message);
        }
    }
    Ok(decoded)
}

fn decode_user_blocks(
    blocks: &[Value],
    at: &str,
    open_tool_uses: &[String],
) -> Result<Vec<ChatMessage>, Reply> {
    let mut messages = Vec::new();
    let mut answered = BTreeSet::new();
    for (index, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!("{at}.content.{index}.text: Field required"))
                })?;
                messages.push(ChatMessage::user(text));
            }
            Some("tool_result") => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(format!("{at}.content.{index}.tool_use_id: Field required"))
                    })?;
                if !open_tool_uses.iter().any(|open| open == id) {
                    return Err(invalid(format!(
                        "{at}.content.{index}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )));
                }
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(content) => text_of(content, &format!("{at}.content.{index}.content"))?,
                };
                answered.insert(id.to_string());
                messages.push(ChatMessage::tool_result(id, content));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "{at}.content.{index}: the contract server does not accept `{other}` blocks in user messages"
                )))
            }
            None => return Err(invalid(format!("{at}.content.{index}.type: Field required"))),
        }
    }
    let missing: Vec<&str> = open_tool_uses
        .iter()
        .filter(|id| !answered.contains(id.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "{at}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
            missing.join(", ")
        )));
    }
    Ok(messages)
}

fn decode_assistant_blocks(
    blocks: &[Value],
    at: &str,
) -> Result<(ChatMessage, Vec<String>), Reply> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(
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
                            invalid(format!("{at}.content.{index}.{name}: Field required"))
                        })
                };
                let input = block.get("input").cloned().unwrap_or(Value::Null);
                if !input.is_object() {
                    return Err(invalid(format!(
                        "{at}.content.{index}.input: Input should be a valid dictionary"
                    )));
                }
                calls.push(ToolCall {
                    id: field("id")?,
                    name: field("name")?,
                    arguments: input,
                });
            }
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "{at}.content.{index}: `{other}` blocks are not allowed in assistant messages"
                )))
            }
            None => {
                return Err(invalid(format!(
                    "{at}.content.{index}.type: Field required"
                )))
            }
        }
    }
    let ids = calls.iter().map(|c| c.id.clone()).collect();
    Ok((ChatMessage::assistant(text, calls), ids))
}

fn decode_tools(value: Option<&Value>) -> Result<Vec<ToolDefinition>, Reply> {
    wire::optional_array(value)
        .ok_or_else(|| invalid("tools: Input should be a valid list"))?
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("tools.{index}.name: Field required")))?;
            if !valid_tool_name(name) {
                return Err(invalid(format!(
                    "tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )));
            }
            let schema = tool
                .get("input_schema")
                .ok_or_else(|| invalid(format!("tools.{index}.input_schema: Field required")))?;
            if !schema.is_object() {
                return Err(invalid(format!(
                    "tools.{index}.input_schema: Input should be a valid dictionary"
                )));
            }
            Ok(wire::tool_definition(name, tool, schema.clone()))
        })
        .collect()
}

fn stop_reason(response: &ChatResponse) -> &str {
    match wire::finish_reason(response) {
        "stop" => "end_turn",
        "tool_calls" => "tool_use",
        "length" => "max_tokens",
        other => other,
    }
}

/// The brain's answer in the vendor's format: a `message`, or the event
/// stream when the request asked for one.
pub(crate) fn encode(decoded: &Decoded, response: &ChatResponse, serial: u64) -> Reply {
    let calls = wire_calls(response, |index| format!("toolu_contract{serial}_{index}"));
    let id = format!("msg_contract{serial}");
    let usage = response.usage;
    if !decoded.stream {
        let mut content = Vec::new();
        if !response.content.is_empty() {
            content.push(json!({"type": "text", "text": response.content}));
        }
        for call in &calls {
            let input = match serde_json::from_str::<Value>(&call.arguments) {
                Ok(object @ Value::Object(_)) => object,
                _ => Value::Object(Map::new()),
            };
            content.push(
                json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}),
            );
        }
        return Reply::json(
            200,
            json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": decoded.model,
                "content": content,
                "stop_reason": stop_reason(response),
                "stop_sequence": null,
                "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
            }),
        );
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "content": [], "model": decoded.model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": 1},
        }}),
    );
    out.push_str(&event("ping", json!({"type": "ping"})));
    let mut index = 0;
    if !response.content.is_empty() {
        out.push_str(&event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in pieces(&response.content, 5) {
            out.push_str(&event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        out.push_str(&event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for call in &calls {
        out.push_str(&event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
        ));
        for piece in std::iter::once(String::new()).chain(pieces(&call.arguments, 3)) {
            out.push_str(&event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        out.push_str(&event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    out.push_str(&event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(response), "stop_sequence": null},
               "usage": {"output_tokens": usage.completion_tokens}}),
    ));
    out.push_str(&event("message_stop", json!({"type": "message_stop"})));
    Reply::event_stream(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_rejected(body: Value, expected: &str) {
        let json = wire::check_rejected(decode, body, expected);
        assert_eq!(json["type"], "error");
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    fn tool_use(id: &str) -> Value {
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "f", "input": {}}]})
    }

    fn result(id: &str) -> Value {
        json!({"type": "tool_result", "tool_use_id": id, "content": "ok"})
    }

    #[test]
    fn validation_like_the_vendor() {
        let base = |messages: Value| json!({"model": "m", "max_tokens": 10, "messages": messages});
        check_rejected(
            json!({"max_tokens": 10, "messages": [user("x")]}),
            "model: Field required",
        );
        check_rejected(
            json!({"model": "m", "messages": [user("x")]}),
            "max_tokens: Field required",
        );
        check_rejected(
            json!({"model": "m", "max_tokens": 10}),
            "messages: Field required",
        );
        check_rejected(base(json!([])), "at least one message");
        check_rejected(base(json!([user("a"), user("b")])), "roles must alternate");
        check_rejected(
            base(json!([{"role": "system", "content": "x"}])),
            "Input should be 'user' or 'assistant'",
        );
        check_rejected(base(json!([user("")])), "non-empty content");
        check_rejected(
            base(json!([user("a"), tool_use("t1"), {"role": "user", "content": [result("t2")]}])),
            "unexpected `tool_use_id` found in `tool_result` blocks: t2",
        );
        check_rejected(
            base(json!([user("a"), tool_use("t1"), user("no result")])),
            "without `tool_result` blocks immediately after: t1",
        );
        check_rejected(
            json!({"model": "m", "max_tokens": 10, "messages": [user("x")], "response_format": {}}),
            "response_format: Extra inputs are not permitted",
        );
        check_rejected(
            json!({"model": "m", "max_tokens": 10, "messages": [user("x")], "temperature": 1.5}),
            "between 0 and 1",
        );
        check_rejected(
            json!({"model": "m", "max_tokens": 10, "messages": [user("x")], "tools": [{"name": "f"}]}),
            "tools.0.input_schema: Field required",
        );
    }

    #[test]
    fn decoding_a_tool_conversation() {
        let body = json!({
            "model": "claude-x", "max_tokens": 100, "system": "You are the QA engineer of X.",
            "messages": [
                user("Test."),
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Running."},
                    {"type": "tool_use", "id": "t1", "name": "run", "input": {"cmd": "cargo test"}},
                    {"type": "tool_use", "id": "t2", "name": "read", "input": {}},
                ]},
                {"role": "user", "content": [result("t2"), result("t1"), {"type": "text", "text": "More?"}]},
            ],
            "tools": [{"name": "run", "description": "Runs.", "input_schema": {"type": "object"}}],
            "temperature": 0.2,
        });
        let decoded = decode(body.to_string().as_bytes()).unwrap_or_else(|r| panic!("{r:?}"));
        let messages = &decoded.request.messages;
        assert_eq!(messages.len(), 6);
        assert_eq!(
            messages[0],
            ChatMessage::system("You are the QA engineer of X.")
        );
        assert_eq!(messages[2].tool_calls.len(), 2);
        assert_eq!(messages[3], ChatMessage::tool_result("t2", "ok"));
        assert_eq!(messages[5], ChatMessage::user("More?"));
        assert_eq!(decoded.request.max_tokens, Some(100));
        assert_eq!(
            decoded.request.tools[0].parameters,
            json!({"type": "object"})
        );
    }
}

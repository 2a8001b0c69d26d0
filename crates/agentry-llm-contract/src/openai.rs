//! The OpenAI chat completions wire format, server side: decoding and
//! validating `POST /v1/chat/completions`, encoding answers (JSON or the
//! `chat.completion.chunk` event stream) and OpenAI's error objects.

use std::collections::BTreeSet;

use agentry_core::{
    ChatMessage, ChatRequest, ChatResponse, Error, OutputSchema, ToolCall, ToolDefinition,
};
use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::reply::Reply;
use crate::wire::{
    self, masked_key, pieces, placeholder_meta, unix_now, valid_tool_name, wire_calls, Decoded,
};

/// The one path this vendor serves.
pub(crate) const PATH: &str = "/v1/chat/completions";

/// Request parameters the real API accepts; any other is rejected.
const KNOWN_PARAMETERS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "response_format",
    "n",
    "stop",
    "seed",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "metadata",
    "store",
    "reasoning_effort",
    "service_tier",
    "modalities",
    "prediction",
    "audio",
    "web_search_options",
];

/// OpenAI's error object.
pub(crate) fn error(
    status: u16,
    kind: &str,
    message: impl Into<String>,
    param: Option<&str>,
    code: Option<&str>,
) -> Reply {
    Reply::json(
        status,
        json!({"error": {"message": message.into(), "type": kind, "param": param, "code": code}}),
    )
}

fn invalid(message: impl Into<String>, param: Option<&str>) -> Reply {
    error(400, "invalid_request_error", message, param, None)
}

/// 401 unless the request carries `Authorization: Bearer <expected>`.
pub(crate) fn check_auth(headers: &HeaderMap, expected: Option<&str>) -> Result<(), Reply> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(key) if key == expected => Ok(()),
        Some(key) => Err(error(
            401,
            "invalid_request_error",
            format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                masked_key(key)
            ),
            None,
            Some("invalid_api_key"),
        )),
        None => Err(error(
            401,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            None,
        )),
    }
}

/// Whether the body asks for structured output.
pub(crate) fn has_response_format(body: &Value) -> bool {
    body.get("response_format").is_some_and(|f| !f.is_null())
}

/// A 400 like a server that does not support `response_format`.
pub(crate) fn reject_response_format() -> Reply {
    invalid(
        "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
        Some("response_format"),
    )
}

/// A 429 with OpenAI's body and `Retry-After`.
pub(crate) fn rate_limited(retry_after_secs: u64, message: Option<&str>) -> Reply {
    error(
        429,
        "requests",
        message.unwrap_or("Rate limit reached for requests. Please try again in a moment."),
        None,
        Some("rate_limit_exceeded"),
    )
    .with_header("retry-after", retry_after_secs.to_string())
}

/// A 500 with OpenAI's body.
pub(crate) fn server_error(message: Option<&str>) -> Reply {
    error(
        500,
        "server_error",
        message
            .unwrap_or("The server had an error while processing your request. Sorry about that!"),
        None,
        None,
    )
}

/// Unknown path or method.
pub(crate) fn not_found(method: &str, path: &str) -> Reply {
    error(
        404,
        "invalid_request_error",
        format!("Invalid URL ({method} {path})"),
        None,
        None,
    )
}

/// The brain's error as the vendor would answer it.
pub(crate) fn brain_error(error: &Error) -> Reply {
    match error {
        Error::RateLimited {
            message,
            retry_after,
        } => rate_limited(wire::retry_after_secs(*retry_after), Some(message)),
        Error::Transient(_) | Error::Timeout { .. } => server_error(Some(&error.to_string())),
        other => invalid(other.to_string(), None),
    }
}

fn text_content(value: Option<&Value>, at: &str) -> Result<Option<String>, Reply> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(piece)) => text.push_str(piece),
                    _ => {
                        return Err(invalid(
                            format!("Invalid content part at '{at}[{index}]': the contract server accepts text parts only."),
                            Some(at),
                        ))
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(invalid(
            format!("Invalid type for '{at}': expected one of a string or array of objects."),
            Some(at),
        )),
    }
}

/// Decodes and validates a request body as the real API would.
pub(crate) fn decode(body: &[u8]) -> Result<Decoded, Reply> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
        )
    })?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("The request body must be a JSON object.", None))?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !KNOWN_PARAMETERS.contains(&k.as_str()))
    {
        return Err(invalid(
            format!("Unrecognized request argument supplied: {unknown}"),
            Some(unknown),
        ));
    }
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("you must provide a model parameter", Some("model")))?
        .to_string();
    let messages = decode_messages(object.get("messages"))?;
    let tools = decode_tools(object.get("tools"))?;
    let response_schema = decode_response_format(object.get("response_format"))?;
    let temperature = wire::optional_number_up_to(object.get("temperature"), 2.0).map_err(|t| {
        invalid(
            format!("Invalid 'temperature': {t} is not a number between 0 and 2."),
            Some("temperature"),
        )
    })?;
    let max_tokens =
        wire::positive_integer(object, "max_tokens").map_err(|m| invalid(m, Some("max_tokens")))?;
    let max_completion = wire::positive_integer(object, "max_completion_tokens")
        .map_err(|m| invalid(m, Some("max_completion_tokens")))?;
    if max_tokens.is_some() && max_completion.is_some() {
        return Err(invalid(
            "max_tokens and max_completion_tokens cannot both be set; use max_completion_tokens.",
            Some("max_tokens"),
        ));
    }
    if let Some(n) = object.get("n").and_then(Value::as_u64) {
        if n != 1 {
            return Err(invalid(
                "The contract server answers with n = 1 only.",
                Some("n"),
            ));
        }
    }
    let stream = wire::optional_bool(object.get("stream")).ok_or_else(|| {
        invalid(
            "Invalid type for 'stream': expected a boolean.",
            Some("stream"),
        )
    })?;
    let include_usage = match object.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return Err(invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                Some("stream_options"),
            ))
        }
        Some(options) => wire::optional_bool(options.get("include_usage")).ok_or_else(|| {
            invalid(
                "Invalid type for 'stream_options.include_usage': expected a boolean.",
                Some("stream_options.include_usage"),
            )
        })?,
    };
    Ok(Decoded {
        request: ChatRequest {
            model: Some(model.clone()),
            messages,
            tools,
            response_schema,
            temperature,
            max_tokens: max_tokens.or(max_completion),
            meta: placeholder_meta(),
        },
        model,
        stream,
        include_usage,
    })
}

fn decode_messages(value: Option<&Value>) -> Result<Vec<ChatMessage>, Reply> {
    let messages = value
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("Missing required parameter: 'messages'.", Some("messages")))?;
    if messages.is_empty() {
        return Err(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
        ));
    }
    let mut decoded = Vec::new();
    // Tool calls of the last assistant message still waiting for a result.
    let mut pending: Vec<String> = Vec::new();
    let mut answered: BTreeSet<String> = BTreeSet::new();
    for (index, message) in messages.iter().enumerate() {
        let at = format!("messages[{index}]");
        let role = message.get("role").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                format!("Missing required parameter: '{at}.role'."),
                Some(&at),
            )
        })?;
        if role != "tool" && !pending.is_empty() {
            return Err(unanswered(&pending));
        }
        let content_at = format!("{at}.content");
        let content = text_content(message.get("content"), &content_at)?;
        let required = |content: Option<String>| {
            content.ok_or_else(|| {
                invalid(
                    format!("Invalid value for '{content_at}': expected a string, got null."),
                    Some(&content_at),
                )
            })
        };
        match role {
            "system" | "developer" => decoded.push(ChatMessage::system(required(content)?)),
            "user" => decoded.push(ChatMessage::user(required(content)?)),
            "assistant" => {
                let calls = decode_tool_calls(message.get("tool_calls"), &at)?;
                if content.is_none() && calls.is_empty() {
                    return Err(invalid(
                        format!("Invalid value for '{content_at}': expected a string, got null."),
                        Some(&content_at),
                    ));
                }
                pending = calls.iter().map(|c| c.id.clone()).collect();
                answered.clear();
                decoded.push(ChatMessage::assistant(content.unwrap_or_default(), calls));
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(
                            format!("Missing required parameter: '{at}.tool_call_id'."),
                            Some(&at),
                        )
                    })?;
                if !pending.iter().any(|p| p == id) {
                    let message = if answered.contains(id) {
                        format!("Invalid parameter: tool_call_id '{id}' in '{at}' was already answered.")
                    } else {
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".to_string()
                    };
                    return Err(invalid(message, Some(&format!("{at}.role"))));
                }
                pending.retain(|p| p != id);
                answered.insert(id.to_string());
                decoded.push(ChatMessage::tool_result(id, required(content)?));
            }
            other => {
                return Err(invalid(
                    format!("Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'."),
                    Some(&format!("{at}.role")),
                ))
            }
        }
    }
    if !pending.is_empty() {
        return Err(unanswered(&pending));
    }
    Ok(decoded)
}

fn unanswered(pending: &[String]) -> Reply {
    invalid(
        format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            pending.join(", ")
        ),
        Some("messages"),
    )
}

fn decode_tool_calls(value: Option<&Value>, at: &str) -> Result<Vec<ToolCall>, Reply> {
    let calls = wire::optional_array(value).ok_or_else(|| {
        invalid(
            format!("Invalid type for '{at}.tool_calls': expected an array."),
            Some(at),
        )
    })?;
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let at = format!("{at}.tool_calls[{index}]");
            let field = |path: &[&str]| {
                path.iter()
                    .try_fold(call, |v, key| v.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let id = field(&["id"]).ok_or_else(|| {
                invalid(format!("Missing required parameter: '{at}.id'."), Some(&at))
            })?;
            if field(&["type"]).as_deref() != Some("function") {
                return Err(invalid(
                    format!("Invalid value for '{at}.type': expected 'function'."),
                    Some(&at),
                ));
            }
            let name = field(&["function", "name"]).ok_or_else(|| {
                invalid(format!("Missing required parameter: '{at}.function.name'."), Some(&at))
            })?;
            let arguments = match call.get("function").and_then(|f| f.get("arguments")) {
                Some(Value::String(raw)) => serde_json::from_str(raw)
                    .unwrap_or_else(|_| Value::String(raw.clone())),
                Some(other) => {
                    return Err(invalid(
                        format!(
                            "Invalid type for '{at}.function.arguments': expected a string, but got {} instead.",
                            wire::json_type(other)
                        ),
                        Some(&at),
                    ))
                }
                None => {
                    return Err(invalid(
                        format!("Missing required parameter: '{at}.function.arguments'."),
                        Some(&at),
                    ))
                }
            };
            Ok(ToolCall { id, name, arguments })
        })
        .collect()
}

fn decode_tools(value: Option<&Value>) -> Result<Vec<ToolDefinition>, Reply> {
    wire::optional_array(value)
        .ok_or_else(|| invalid("Invalid type for 'tools': expected an array.", Some("tools")))?
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let at = format!("tools[{index}]");
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    format!("Missing required parameter: '{at}.type'."),
                    Some(&at),
                ));
            }
            let function = tool.get("function").ok_or_else(|| {
                invalid(format!("Missing required parameter: '{at}.function'."), Some(&at))
            })?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(format!("Missing required parameter: '{at}.function.name'."), Some(&at))
                })?;
            if !valid_tool_name(name) {
                return Err(invalid(
                    format!("Invalid '{at}.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."),
                    Some(&at),
                ));
            }
            let parameters = function.get("parameters").cloned().unwrap_or_else(|| json!({}));
            if !parameters.is_object() {
                return Err(invalid(
                    format!("Invalid type for '{at}.function.parameters': expected an object."),
                    Some(&at),
                ));
            }
            Ok(wire::tool_definition(name, function, parameters))
        })
        .collect()
}

fn decode_response_format(value: Option<&Value>) -> Result<Option<OutputSchema>, Reply> {
    let Some(format) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text" | "json_object") => Ok(None),
        Some("json_schema") => {
            let spec = format.get("json_schema").ok_or_else(|| {
                invalid(
                    "Missing required parameter: 'response_format.json_schema'.",
                    Some("response_format.json_schema"),
                )
            })?;
            let name = spec.get("name").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    Some("response_format.json_schema.name"),
                )
            })?;
            if !valid_tool_name(name) {
                return Err(invalid(
                    "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                    Some("response_format.json_schema.name"),
                ));
            }
            let schema = spec.get("schema").cloned().unwrap_or_else(|| json!({}));
            if !schema.is_object() {
                return Err(invalid(
                    "Invalid type for 'response_format.json_schema.schema': expected an object.",
                    Some("response_format.json_schema.schema"),
                ));
            }
            Ok(Some(OutputSchema {
                name: name.to_string(),
                schema,
                layout: Default::default(),
            }))
        }
        _ => Err(invalid(
            "Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'.",
            Some("response_format.type"),
        )),
    }
}

fn usage_json(response: &ChatResponse) -> Value {
    let usage = response.usage;
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    })
}

/// The brain's answer in the vendor's format: a `chat.completion`, or the
/// chunk stream when the request asked for one.
pub(crate) fn encode(decoded: &Decoded, response: &ChatResponse, serial: u64) -> Reply {
    let calls = wire_calls(response, |index| format!("call_{serial}_{index}"));
    let id = format!("chatcmpl-contract{serial}");
    let created = unix_now();
    if !decoded.stream {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert(
            "content".into(),
            if response.content.is_empty() && !calls.is_empty() {
                Value::Null
            } else {
                json!(response.content)
            },
        );
        message.insert("refusal".into(), Value::Null);
        if !calls.is_empty() {
            let calls = calls
                .iter()
                .map(|call| {
                    json!({"id": call.id, "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}})
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        return Reply::json(
            200,
            json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": decoded.model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": wire::finish_reason(response),
                }],
                "usage": usage_json(response),
                "system_fingerprint": null,
            }),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": decoded.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if decoded.include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    };
    let mut out = String::from(": contract server\n\n");
    out.push_str(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    for piece in pieces(&response.content, 5) {
        out.push_str(&chunk(json!({"content": piece}), Value::Null));
    }
    for (index, call) in calls.iter().enumerate() {
        out.push_str(&chunk(
            json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ));
    }
    // Parallel calls' arguments interleave, a few characters at a time.
    let argument_pieces: Vec<Vec<String>> = calls.iter().map(|c| pieces(&c.arguments, 3)).collect();
    let rounds = argument_pieces.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        for (index, call_pieces) in argument_pieces.iter().enumerate() {
            if let Some(piece) = call_pieces.get(round) {
                out.push_str(&chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
    }
    out.push_str(&chunk(json!({}), json!(wire::finish_reason(response))));
    if decoded.include_usage {
        let last = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": decoded.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage_json(response),
        });
        out.push_str(&format!("data: {last}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    Reply::event_stream(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_rejected(body: Value, expected: &str) {
        wire::check_rejected(decode, body, expected);
    }

    fn call(id: &str) -> Value {
        json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}})
    }

    #[test]
    fn validation_like_the_vendor() {
        let user = json!({"role": "user", "content": "hi"});
        check_rejected(json!({"messages": [user]}), "model parameter");
        check_rejected(json!({"model": "m"}), "'messages'");
        check_rejected(json!({"model": "m", "messages": []}), "empty array");
        check_rejected(
            json!({"model": "m", "messages": [user], "foo": 1}),
            "Unrecognized request argument supplied: foo",
        );
        check_rejected(
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "Invalid value: 'robot'",
        );
        check_rejected(
            json!({"model": "m", "messages": [user, {"role": "tool", "tool_call_id": "x", "content": "r"}]}),
            "must be a response to a preceeding message with 'tool_calls'",
        );
        check_rejected(
            json!({"model": "m", "messages": [user, {"role": "assistant", "content": null, "tool_calls": [call("a"), call("b")]},
                   {"role": "tool", "tool_call_id": "a", "content": "r"}, user]}),
            "did not have response messages: b",
        );
        check_rejected(
            json!({"model": "m", "messages": [user, {"role": "assistant", "content": null, "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}]}),
            "expected a string, but got an object instead",
        );
        check_rejected(
            json!({"model": "m", "messages": [user], "stream_options": {"include_usage": true}}),
            "only allowed when 'stream' is enabled",
        );
        check_rejected(
            json!({"model": "m", "messages": [user], "temperature": 3}),
            "between 0 and 2",
        );
        check_rejected(
            json!({"model": "m", "messages": [user], "max_tokens": 0}),
            "max_tokens",
        );
        check_rejected(
            json!({"model": "m", "messages": [user], "tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "does not match pattern",
        );
        check_rejected(
            json!({"model": "m", "messages": [user], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format.json_schema.name",
        );
    }

    #[test]
    fn decoding_a_full_conversation() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are the developer of X."},
                {"role": "user", "content": [{"type": "text", "text": "Build "}, {"type": "text", "text": "it."}]},
                {"role": "assistant", "content": null, "tool_calls": [call("a"), {"id": "b", "type": "function",
                    "function": {"name": "g", "arguments": "{broken"}}]},
                {"role": "tool", "tool_call_id": "b", "content": "error"},
                {"role": "tool", "tool_call_id": "a", "content": "ok"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "Out", "schema": {"type": "object"}, "strict": false}},
            "temperature": 0.5,
            "max_completion_tokens": 100,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let decoded = decode(body.to_string().as_bytes()).unwrap_or_else(|r| panic!("{r:?}"));
        let request = decoded.request;
        assert!(decoded.stream && decoded.include_usage);
        assert_eq!(request.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(request.messages.len(), 5);
        assert_eq!(request.messages[1].content, "Build it.");
        assert_eq!(
            request.messages[2].tool_calls[1].arguments,
            Value::String("{broken".into())
        );
        assert_eq!(request.messages[3].tool_call_id.as_deref(), Some("b"));
        assert_eq!(request.tools[0].name, "f");
        assert_eq!(request.response_schema.map(|s| s.name), Some("Out".into()));
        assert_eq!(
            (request.temperature, request.max_tokens),
            (Some(0.5), Some(100))
        );
    }
}

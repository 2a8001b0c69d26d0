//! What both vendors' server sides share: the decoded request, the
//! readers of optional fields, and small encoding helpers.

use std::time::Duration;

use agentry_core::{AgentRole, ChatRequest, ChatResponse, RequestMeta, ToolDefinition};
use serde_json::{Map, Value};

/// A validated request.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    /// The port's view of it (its meta is filled in by the server).
    pub request: ChatRequest,
    /// The model the client asked for, echoed in the answer.
    pub model: String,
    /// Answer as an event stream.
    pub stream: bool,
    /// OpenAI: end the stream with a usage chunk.
    pub include_usage: bool,
}

/// A meta to be replaced by the inferred one.
pub(crate) fn placeholder_meta() -> RequestMeta {
    RequestMeta {
        workflow_id: None,
        role: AgentRole::BusinessAnalyst,
        node: String::new(),
        step: 0,
        visit: 0,
        turn: 0,
        request_id: None,
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A key as vendors echo a wrong one: its first 3 and last 4 characters.
pub(crate) fn masked_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 10 {
        return "***".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// `text` cut into pieces of `size` characters.
pub(crate) fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|chunk| chunk.iter().collect())
        .collect()
}

/// `^[a-zA-Z0-9_-]{1,64}$`, the vendors' rule for tool and schema names.
pub(crate) fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// An optional positive integer field.
pub(crate) fn positive_integer(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<u32>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("Invalid '{field}': {value} is not a positive integer.")),
    }
}

/// An optional boolean field: absent or null is `false`; `None` when the
/// value is not a boolean.
pub(crate) fn optional_bool(value: Option<&Value>) -> Option<bool> {
    match value {
        None | Some(Value::Null) => Some(false),
        Some(value) => value.as_bool(),
    }
}

/// An optional array field: absent or null is empty; `None` when the value
/// is not an array.
pub(crate) fn optional_array(value: Option<&Value>) -> Option<&[Value]> {
    match value {
        None | Some(Value::Null) => Some(&[]),
        Some(value) => value.as_array().map(Vec::as_slice),
    }
}

/// An optional number field from 0 to `max` (a temperature); the value
/// itself as the error when it is not one.
pub(crate) fn optional_number_up_to(
    value: Option<&Value>,
    max: f64,
) -> Result<Option<f32>, &Value> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(number) if (0.0..=max).contains(&number) => Ok(Some(number as f32)),
            _ => Err(value),
        },
    }
}

/// A tool definition named `name` with `parameters`, described by the
/// `description` of `spec` (none: empty).
pub(crate) fn tool_definition(name: &str, spec: &Value, parameters: Value) -> ToolDefinition {
    ToolDefinition {
        name: name.to_string(),
        description: spec
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        parameters,
    }
}

/// One tool call of an answer, as the wire carries it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WireCall {
    /// The call's id, or `default_id(index)` when the brain gave none.
    pub id: String,
    pub name: String,
    /// The arguments as JSON text; arguments that are not JSON go out as
    /// they are, like a model that wrote broken JSON.
    pub arguments: String,
}

/// The answer's tool calls as the wire carries them.
pub(crate) fn wire_calls(
    response: &ChatResponse,
    default_id: impl Fn(usize) -> String,
) -> Vec<WireCall> {
    response
        .tool_calls
        .iter()
        .enumerate()
        .map(|(index, call)| WireCall {
            id: if call.id.is_empty() {
                default_id(index)
            } else {
                call.id.clone()
            },
            name: call.name.clone(),
            arguments: match &call.arguments {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            },
        })
        .collect()
}

/// The brain's finish reason; without one, `tool_calls` when it made tool
/// calls, else `stop`.
pub(crate) fn finish_reason(response: &ChatResponse) -> &str {
    match response.finish_reason.as_str() {
        "" if response.tool_calls.is_empty() => "stop",
        "" => "tool_calls",
        other => other,
    }
}

/// The `retry-after` seconds of a brain's rate limit: its delay rounded
/// up, 1 when it named none.
pub(crate) fn retry_after_secs(retry_after: Option<Duration>) -> u64 {
    retry_after
        .map(|d| d.as_secs_f64().ceil() as u64)
        .unwrap_or(1)
}

/// The JSON type of a value, for error messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that `decode` rejects `body` with a 400 whose `error.type` is
/// `invalid_request_error` and whose `error.message` contains `expected`;
/// returns the error body for the vendor's own checks.
#[cfg(test)]
pub(crate) fn check_rejected(
    decode: fn(&[u8]) -> Result<Decoded, crate::reply::Reply>,
    body: Value,
    expected: &str,
) -> Value {
    let reply = match decode(body.to_string().as_bytes()) {
        Ok(decoded) => panic!("accepted: {:?}", decoded.request),
        Err(reply) => reply,
    };
    assert_eq!(reply.status, 400);
    let crate::reply::ReplyBody::Json(json) = reply.body else {
        panic!("not JSON: {reply:?}")
    };
    assert_eq!(json["error"]["type"], "invalid_request_error");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(expected),
        "{message:?} should contain {expected:?}"
    );
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(masked_key("sk-wrong-key-1234"), "sk-**********1234");
        assert_eq!(masked_key("short"), "***");
        assert_eq!(pieces("h\u{e9}llo!", 2), vec!["h\u{e9}", "ll", "o!"]);
        assert!(valid_tool_name("read_file-2"));
        assert!(!valid_tool_name("read file"));
        assert!(!valid_tool_name(""));
    }
}

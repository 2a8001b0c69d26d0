//! What both vendors' server sides share: the decoded request and small
//! encoding helpers.

use agentry_core::{AgentRole, ChatRequest, RequestMeta};
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

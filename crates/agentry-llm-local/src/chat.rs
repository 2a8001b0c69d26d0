//! The Qwen2.5 chat template (ChatML with Qwen's tool format), rendered in
//! Rust, and the parsing of the model's `<tool_call>` blocks.
//!
//! The prompt is rendered as segments: text to tokenize, or the exact
//! tokens the model generated for an earlier assistant answer, so that a
//! follow-up turn (a tool round, a repair round) starts with the very
//! tokens already in the model's key-value cache and only the new part is
//! processed.

use serde_json::{json, Value};

use agentry_core::{ChatMessage, ChatRole, ToolCall, ToolDefinition};

/// The system prompt Qwen's template uses when there is none.
const DEFAULT_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// A piece of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text (may contain `<|im_start|>` and `<|im_end|>`).
    Text(String),
    /// An earlier answer, as the exact tokens generated.
    Tokens(Vec<u32>),
}

/// Renders a conversation as Qwen2.5's template does, ending with the
/// assistant's turn opened. `known` maps an earlier answer's text to the
/// tokens generated for it.
pub fn render(
    messages: &[ChatMessage],
    tools: &[ToolDefinition],
    known: Option<(&str, &[u32])>,
) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut text = String::new();
    let (system, rest) = match messages.first() {
        Some(first) if first.role == ChatRole::System => (first.content.as_str(), &messages[1..]),
        _ => (DEFAULT_SYSTEM, messages),
    };
    text.push_str("<|im_start|>system\n");
    text.push_str(system);
    if !tools.is_empty() {
        text.push_str(
            "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        for tool in tools {
            text.push('\n');
            let signature = json!({
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                }
            });
            text.push_str(&signature.to_string());
        }
        text.push_str(
            "\n</tools>\n\nFor each function call, return a json object with function name and \
             arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
             {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        );
    }
    text.push_str("<|im_end|>\n");
    let mut i = 0;
    while i < rest.len() {
        let message = &rest[i];
        match message.role {
            ChatRole::System | ChatRole::User => {
                let role = if message.role == ChatRole::System {
                    "system"
                } else {
                    "user"
                };
                text.push_str(&format!(
                    "<|im_start|>{role}\n{}<|im_end|>\n",
                    message.content
                ));
            }
            ChatRole::Assistant => {
                let body = assistant_body(message);
                text.push_str("<|im_start|>assistant\n");
                match known {
                    Some((answer, tokens)) if answer == body => {
                        out.push(Segment::Text(std::mem::take(&mut text)));
                        out.push(Segment::Tokens(tokens.to_vec()));
                    }
                    _ => text.push_str(&body),
                }
                text.push_str("<|im_end|>\n");
            }
            ChatRole::Tool => {
                text.push_str("<|im_start|>user");
                while i < rest.len() && rest[i].role == ChatRole::Tool {
                    text.push_str("\n<tool_response>\n");
                    text.push_str(&rest[i].content);
                    text.push_str("\n</tool_response>");
                    i += 1;
                }
                text.push_str("<|im_end|>\n");
                continue;
            }
        }
        i += 1;
    }
    text.push_str("<|im_start|>assistant\n");
    out.push(Segment::Text(text));
    out
}

/// What an assistant message looks like as the model wrote it: the text,
/// then each call in a `<tool_call>` block.
pub fn assistant_body(message: &ChatMessage) -> String {
    let mut body = message.content.clone();
    for call in &message.tool_calls {
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(&tool_call_block(&call.name, &call.arguments));
    }
    body
}

fn tool_call_block(name: &str, arguments: &Value) -> String {
    format!(
        "<tool_call>\n{{\"name\": {}, \"arguments\": {arguments}}}\n</tool_call>",
        Value::String(name.to_string())
    )
}

/// Splits a generated answer into its text and its tool calls: its
/// `<tool_call>` blocks, or the whole answer when it is one bare
/// `{"name": TOOL, "arguments": {...}}` object naming an offered tool. A
/// block whose JSON does not parse stays in the text. Call ids are
/// `call_<turn>_<n>`.
pub fn parse_tool_calls(
    text: &str,
    turn: u32,
    tools: &[ToolDefinition],
) -> (String, Vec<ToolCall>) {
    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text.trim()) {
        let name = object.get("name").and_then(Value::as_str);
        if object.len() == 2 && object.contains_key("arguments") {
            if let Some(name) = name.filter(|n| tools.iter().any(|t| t.name == *n)) {
                let call = ToolCall {
                    id: format!("call_{turn}_0"),
                    name: name.to_string(),
                    arguments: object["arguments"].clone(),
                };
                return (String::new(), vec![call]);
            }
        }
    }
    let mut calls = Vec::new();
    let mut rest = String::new();
    let mut remaining = text;
    while let Some(start) = remaining.find("<tool_call>") {
        let after = &remaining[start + "<tool_call>".len()..];
        let Some(end) = after.find("</tool_call>") else {
            break;
        };
        let parsed = serde_json::from_str::<Value>(after[..end].trim())
            .ok()
            .and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                let arguments = v.get("arguments").cloned().unwrap_or(json!({}));
                Some((name, arguments))
            });
        match parsed {
            Some((name, arguments)) => {
                rest.push_str(&remaining[..start]);
                calls.push(ToolCall {
                    id: format!("call_{turn}_{}", calls.len()),
                    name,
                    arguments,
                });
            }
            None => rest.push_str(&remaining[..start + "<tool_call>".len() + end]),
        }
        remaining = &after[end + "</tool_call>".len()..];
    }
    rest.push_str(remaining);
    (rest.trim().to_string(), calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(segments: &[Segment]) -> String {
        segments
            .iter()
            .map(|s| match s {
                Segment::Text(t) => t.clone(),
                Segment::Tokens(t) => format!("[{} tokens]", t.len()),
            })
            .collect()
    }

    #[test]
    fn renders_chatml_as_qwens_template_does() {
        let messages = vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
        let text = text_of(&render(&messages, &[], None));
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let text = text_of(&render(&[ChatMessage::user("Hi")], &[], None));
        assert!(
            text.starts_with("<|im_start|>system\nYou are Qwen"),
            "{text}"
        );
    }

    #[test]
    fn renders_tools_calls_and_results() {
        let tools = vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads a file.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }];
        let call = ToolCall {
            id: "c1".into(),
            name: "read_file".into(),
            arguments: json!({"path": "a.py"}),
        };
        let messages = vec![
            ChatMessage::system("S"),
            ChatMessage::user("U"),
            ChatMessage::assistant("", vec![call]),
            ChatMessage::tool_result("c1", "print(1)"),
        ];
        let text = text_of(&render(&messages, &tools, None));
        assert!(text.contains("<tools>\n{\""), "{text}");
        assert!(text.contains(
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\":\"a.py\"}}\n</tool_call><|im_end|>"
        ), "{text}");
        assert!(text.contains(
            "<|im_start|>user\n<tool_response>\nprint(1)\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        ), "{text}");
    }

    #[test]
    fn an_earlier_answer_is_reused_as_its_tokens() {
        let messages = vec![
            ChatMessage::system("S"),
            ChatMessage::user("U"),
            ChatMessage::assistant("{\"a\": 1}", Vec::new()),
            ChatMessage::user("fix it"),
        ];
        let segments = render(&messages, &[], Some(("{\"a\": 1}", &[7, 8, 9])));
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[1], Segment::Tokens(vec![7, 8, 9]));
        assert_eq!(
            text_of(&segments[2..]),
            "<|im_end|>\n<|im_start|>user\nfix it<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn parses_tool_call_blocks() {
        let tools: Vec<ToolDefinition> = ["read_file", "list_files"]
            .iter()
            .map(|n| ToolDefinition {
                name: n.to_string(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            })
            .collect();
        let (text, calls) = parse_tool_calls(
            "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"x\"}}\n</tool_call>\n\
             <tool_call>\n{\"name\": \"list_files\", \"arguments\": {}}\n</tool_call>",
            2,
            &tools,
        );
        assert_eq!(text, "");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_2_0");
        assert_eq!(calls[0].arguments, json!({"path": "x"}));
        assert_eq!(calls[1].name, "list_files");
        let (text, calls) = parse_tool_calls("{\"summary\": \"x\"}", 0, &tools);
        assert_eq!(text, "{\"summary\": \"x\"}");
        assert!(calls.is_empty());
        let (text, calls) = parse_tool_calls("<tool_call>\nnot json\n</tool_call>", 0, &tools);
        assert!(calls.is_empty());
        assert!(text.contains("not json"));
        let (text, calls) = parse_tool_calls(
            "{\"name\": \"read_file\", \"arguments\": {\"path\": \"a\"}}",
            1,
            &tools,
        );
        assert_eq!((text.as_str(), calls.len()), ("", 1));
        assert_eq!(calls[0].id, "call_1_0");
        let (_, calls) = parse_tool_calls("{\"name\": \"rm_rf\", \"arguments\": {}}", 1, &tools);
        assert!(calls.is_empty(), "not an offered tool: an answer");
    }
}

//! Grammars that make malformed answers impossible: at each step the
//! model may only pick tokens that keep its output a prefix of a valid
//! answer (llguidance computes the token mask from the grammar).
//!
//! - An answer with a schema: JSON valid against that schema.
//! - With tools as well: either that answer, or tool calls: one or more
//!   Qwen `<tool_call>` blocks, or one bare `{"name": ..., "arguments":
//!   ...}` object (the 1.5B coder model writes bare objects far more often
//!   than tags), whose name is an offered tool and whose arguments are
//!   valid against that tool's parameter schema.

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

use agentry_core::ToolDefinition;

/// How JSON is laid out: one line, Python's separators (what the model saw
/// most in training), and unsupported schema keywords (`format`) ignored
/// rather than refused.
fn json_options() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": true,
    })
}

fn with_options(schema: &Value) -> Value {
    let mut schema = closed(schema);
    if let Some(object) = schema.as_object_mut() {
        object.insert("x-guidance".into(), json_options());
    }
    schema
}

/// `schema` with every object that declares `properties` and says nothing
/// of others closed to them (`additionalProperties: false`). JSON Schema
/// allows unknown keys by default, and a grammar that allows them lets a
/// small model wander: the analyst nested `"epics"` inside an epic, again
/// and again, until the token cap. Objects that say what else they take
/// (a map's `additionalProperties` schema) keep it.
fn closed(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), closed(v))).collect();
            if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(closed).collect()),
        other => other.clone(),
    }
}

/// The grammar of an answer: None when nothing constrains it (free text,
/// or tools without a final schema, where free text is a valid answer).
pub fn grammar(schema: Option<&Value>, tools: &[ToolDefinition]) -> Option<TopLevelGrammar> {
    let schema = schema?;
    if tools.is_empty() {
        return Some(TopLevelGrammar::from_json_schema(with_options(schema)));
    }
    Some(TopLevelGrammar::from_lark(lark(schema, tools)))
}

/// The Lark grammar of "answer or tool calls".
fn lark(schema: &Value, tools: &[ToolDefinition]) -> String {
    let mut out = String::new();
    out.push_str("start: answer | calls\n");
    out.push_str(&format!("answer: %json {}\n", with_options(schema)));
    out.push_str("calls: tagged (\"\\n\" tagged)* | call\n");
    out.push_str("tagged: \"<tool_call>\\n\" call \"\\n</tool_call>\"\n");
    out.push_str("call: \"{\\\"name\\\": \" tool \"}\"\n");
    let names: Vec<String> = (0..tools.len()).map(|i| format!("tool_{i}")).collect();
    out.push_str(&format!("tool: {}\n", names.join(" | ")));
    for (name, tool) in names.iter().zip(tools) {
        let quoted = Value::String(tool.name.clone()).to_string();
        let literal = Value::String(format!("{quoted}, \"arguments\": ")).to_string();
        out.push_str(&format!(
            "{name}: {literal} %json {}\n",
            with_options(&tool.parameters)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_schema_means_no_grammar() {
        assert!(grammar(None, &[]).is_none());
        assert!(grammar(Some(&json!({"type": "object"})), &[]).is_some());
    }

    #[test]
    fn objects_with_properties_are_closed_to_other_keys() {
        let schema = json!({
            "type": "object",
            "properties": {
                "epics": {"type": "array", "items": {"$ref": "#/$defs/Epic"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            },
            "$defs": {"Epic": {"type": "object", "properties": {"title": {"type": "string"}}}}
        });
        let closed = closed(&schema);
        assert_eq!(closed["additionalProperties"], json!(false));
        assert_eq!(
            closed["$defs"]["Epic"]["additionalProperties"],
            json!(false)
        );
        // A map keeps the values it allows; a plain type is left alone.
        assert_eq!(
            closed["properties"]["labels"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert!(closed["properties"]["epics"]
            .get("additionalProperties")
            .is_none());
        assert_eq!(
            with_options(&schema)["$defs"]["Epic"]["additionalProperties"],
            json!(false)
        );
    }

    #[test]
    fn tools_become_alternatives_of_the_answer() {
        let tools = vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }];
        let text = lark(&json!({"type": "object"}), &tools);
        assert!(text.contains("start: answer | calls"), "{text}");
        assert!(
            text.contains(r#"tool_0: "\"read_file\", \"arguments\": " %json {"#),
            "{text}"
        );
    }
}

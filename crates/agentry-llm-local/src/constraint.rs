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
//! - An answer laid out as JSON then files ([`AnswerLayout::JsonThenFiles`]):
//!   the JSON header on one line, then file blocks whose text is raw (no
//!   line of it may start with a backtick, so only the closing fence ends
//!   it).

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

use agentry_core::layout::{FENCE, FILE_MARKER};
use agentry_core::{AnswerLayout, OutputSchema, ToolDefinition};

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
pub fn grammar(schema: Option<&OutputSchema>, tools: &[ToolDefinition]) -> Option<TopLevelGrammar> {
    let schema = schema?;
    if tools.is_empty() && schema.layout.is_json() {
        return Some(TopLevelGrammar::from_json_schema(with_options(
            &schema.schema,
        )));
    }
    Some(TopLevelGrammar::from_lark(lark(schema, tools)))
}

/// The Lark grammar of the answer, or of "answer or tool calls".
fn lark(schema: &OutputSchema, tools: &[ToolDefinition]) -> String {
    let mut out = String::new();
    if tools.is_empty() {
        out.push_str("start: answer\n");
    } else {
        out.push_str("start: answer | calls\n");
    }
    out.push_str(&answer_rules(schema));
    if tools.is_empty() {
        return out;
    }
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

/// The rules of `answer`: the JSON, or the JSON header then the files.
/// A file's text is lines that do not start with a backtick; the first
/// line that does is its closing fence. Paths are plain relative paths
/// (the code host checks them again); the fence names a language.
fn answer_rules(schema: &OutputSchema) -> String {
    if !matches!(schema.layout, AnswerLayout::JsonThenFiles { .. }) {
        return format!("answer: %json {}\n", with_options(&schema.schema));
    }
    let header = schema.layout.header_schema(&schema.schema);
    let files = if schema.layout.min_files(&schema.schema) > 0 {
        "files"
    } else {
        "files?"
    };
    let marker = Value::String(FILE_MARKER.to_string());
    let open = Value::String(format!("\n{FENCE}"));
    let close = Value::String(FENCE.to_string());
    // Lexemes never match the empty string: a file may be empty (`TEXT?`)
    // and a fence may name no language (`LANG?`). The answer may end right
    // after a closing fence, where a model trained on Markdown ends it; a
    // newline there must open another file (with the end allowed only
    // after `\n`, the model kept writing files it had already written).
    format!(
        "answer: %json {header} \"\\n\" {files}\n\
         files: file (\"\\n\" file)*\n\
         file: {marker} PATH {open} LANG? \"\\n\" TEXT? {close}\n\
         PATH: /[A-Za-z0-9_][A-Za-z0-9_.\\/-]*/\n\
         LANG: /[a-z0-9+-]+/\n\
         TEXT: /([^`\\n][^\\n]*\\n|\\n)+/\n",
        header = with_options(&header),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_schema_means_no_grammar() {
        assert!(grammar(None, &[]).is_none());
        assert!(grammar(
            Some(&OutputSchema::json("A", json!({"type": "object"}))),
            &[]
        )
        .is_some());
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

    /// A vocabulary of the 256 bytes and an end token: enough to run a
    /// grammar over any text without a model.
    struct Bytes(toktrie::TokTrie);

    impl toktrie::TokenizerEnv for Bytes {
        fn tok_trie(&self) -> &toktrie::TokTrie {
            &self.0
        }
        fn tokenize_bytes(&self, s: &[u8]) -> Vec<toktrie::TokenId> {
            s.iter().map(|b| u32::from(*b)).collect()
        }
    }

    /// Whether `grammar` accepts `text` whole: every byte allowed, and the
    /// end allowed after the last one.
    fn accepts(grammar: TopLevelGrammar, text: &str) -> bool {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        words.push(vec![toktrie::TokTrie::SPECIAL_TOKEN_MARKER, b'e']);
        let info = toktrie::TokRxInfo::new(words.len() as u32, 256);
        let env: toktrie::TokEnv =
            std::sync::Arc::new(Bytes(toktrie::TokTrie::from(&info, &words)));
        let mut factory = llguidance::ParserFactory::new_simple(&env).unwrap();
        factory.set_stderr_log_level(0);
        let mut matcher = llguidance::Matcher::new(factory.create_parser(grammar));
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        matcher.consume_tokens(&tokens).is_ok()
            && !matcher.is_error()
            && matcher.is_accepting().unwrap_or(false)
    }

    fn files_schema(min_files: u64) -> OutputSchema {
        let mut schema = OutputSchema::json(
            "Implementation",
            json!({
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "files": {"type": "array", "minItems": min_files, "items": {"$ref": "#/$defs/FileSpec"}}
                },
                "required": ["summary", "files"],
                "$defs": {"FileSpec": {"type": "object", "properties": {
                    "path": {"type": "string"}, "content": {"type": "string"}}}}
            }),
        );
        schema.layout = AnswerLayout::JsonThenFiles {
            field: "files".into(),
        };
        schema
    }

    #[test]
    fn files_after_the_header_are_raw_text_up_to_their_closing_fence() {
        let one_file = || grammar(Some(&files_schema(1)), &[]).unwrap();
        let good = "{\"summary\": \"s\"}\nFILE pkg/a.py\n```python\nprint(\"hi\\n\", 'x')\n\nFILE = 1\n```\nFILE pkg/__init__.py\n```python\n```";
        assert!(accepts(one_file(), good));
        // The answer ends at a closing fence; a newline after it opens
        // another file.
        assert!(!accepts(one_file(), &format!("{good}\n")));
        // The files' field is not in the header, and a file is required.
        assert!(!accepts(
            one_file(),
            "{\"summary\": \"s\", \"files\": []}\n"
        ));
        assert!(!accepts(one_file(), "{\"summary\": \"s\"}\n"));
        // A file cut before its closing fence is not an answer.
        assert!(!accepts(
            one_file(),
            "{\"summary\": \"s\"}\nFILE a.py\n```python\nx = 1\n"
        ));
        // Paths are relative and plain.
        assert!(!accepts(
            one_file(),
            "{\"summary\": \"s\"}\nFILE /etc/x\n```\nx\n```\n"
        ));
        // With no file required, the header alone is an answer.
        assert!(accepts(
            grammar(Some(&files_schema(0)), &[]).unwrap(),
            "{\"summary\": \"s\"}\n"
        ));
        assert!(accepts(
            grammar(Some(&files_schema(0)), &[]).unwrap(),
            "{\"summary\": \"s\"}\nFILE a.py\n```\nx = 1\n```"
        ));
        // What the grammar accepts, the layout reads back.
        let value = files_schema(1).layout.value(good).unwrap();
        assert_eq!(
            value["files"][0]["content"],
            "print(\"hi\\n\", 'x')\n\nFILE = 1\n"
        );
        assert_eq!(
            value["files"][1],
            json!({"path": "pkg/__init__.py", "content": ""})
        );
    }

    #[test]
    fn plain_json_answers_keep_their_grammar() {
        let schema = OutputSchema::json(
            "A",
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
        );
        assert!(accepts(
            grammar(Some(&schema), &[]).unwrap(),
            "{\"a\": \"x\"}"
        ));
        assert!(!accepts(
            grammar(Some(&schema), &[]).unwrap(),
            "{\"b\": \"x\"}"
        ));
    }

    #[test]
    fn tools_become_alternatives_of_the_answer() {
        let tools = vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }];
        let text = lark(&OutputSchema::json("A", json!({"type": "object"})), &tools);
        assert!(text.contains("start: answer | calls"), "{text}");
        assert!(
            text.contains(r#"tool_0: "\"read_file\", \"arguments\": " %json {"#),
            "{text}"
        );
    }
}

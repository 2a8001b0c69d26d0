//! How an answer is written down: one JSON object (the default), or a
//! JSON header followed by files as fenced blocks of raw text.
//!
//! Key design decision: code travels raw. Inside a JSON string every
//! double quote and backslash of a source file must be escaped, and a
//! small model forgets: under a grammar constraint, the first bare `"` in
//! `print("hi")` ends the string, and the file is cut mid-line. A fenced
//! block needs no escaping; only a line starting with three backticks
//! would end it. The answer's value is the same either way: the files are
//! put back into the header under their field, so validation, repairs and
//! everything after see one JSON object.
//!
//! ```text
//! {"summary": "Adds the store", "commit_message": "Add the store"}
//! FILE todo/store.py
//! ```python
//! def load(path):
//!     ...
//! ```
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The line that opens a file block: this, then the file's path.
pub const FILE_MARKER: &str = "FILE ";
/// The fence that opens (with a language) and closes a file's text.
pub const FENCE: &str = "```";

/// How an answer is laid out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnswerLayout {
    /// One JSON object valid against the schema.
    #[default]
    Json,
    /// The JSON object without `field`, on one line; then each element of
    /// `field` (an array of `{path, content}` objects) as a file block:
    /// `FILE <path>`, a fence with a language, the raw text, a closing
    /// fence.
    JsonThenFiles {
        /// The schema's array of files (`files`, `test_files`).
        field: String,
    },
}

impl AnswerLayout {
    /// True for the default, plain JSON.
    pub fn is_json(&self) -> bool {
        matches!(self, AnswerLayout::Json)
    }

    /// The schema of the JSON part: `schema` itself, or, with files after
    /// it, `schema` without the files' field (neither a property nor
    /// required).
    pub fn header_schema(&self, schema: &Value) -> Value {
        let AnswerLayout::JsonThenFiles { field } = self else {
            return schema.clone();
        };
        let mut header = schema.clone();
        if let Some(properties) = header.get_mut("properties").and_then(Value::as_object_mut) {
            properties.remove(field);
        }
        if let Some(required) = header.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|name| name.as_str() != Some(field));
        }
        header
    }

    /// The fewest files the answer must hold (the field's `minItems`).
    pub fn min_files(&self, schema: &Value) -> u64 {
        let AnswerLayout::JsonThenFiles { field } = self else {
            return 0;
        };
        schema
            .pointer(&format!("/properties/{field}/minItems"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// What a model that is not held to the layout by a grammar must be
    /// told: the schema of the JSON, and where the files go.
    pub fn instructions(&self, schema: &Value) -> String {
        match self {
            AnswerLayout::Json => format!(
                "Answer with one JSON object, and nothing else, valid against this JSON schema:\n{schema}"
            ),
            AnswerLayout::JsonThenFiles { field } => format!(
                "Answer with one line of JSON valid against this JSON schema:\n{}\n\
                 then the {field}, each as a block: a line `{FILE_MARKER}<path>`, a line \
                 `{FENCE}<language>`, the file's full text as it is (no escaping), and a line \
                 `{FENCE}`. Nothing else.",
                self.header_schema(schema)
            ),
        }
    }

    /// The answer's JSON value. Plain JSON is taken as it is (a fenced
    /// ```json block or the outermost braces are found); with files after
    /// the header, the files are put back under their field. An answer
    /// whose JSON already holds the field and has no file blocks (a model
    /// or a recording that answered in plain JSON) is taken as it is.
    pub fn value(&self, content: &str) -> Result<Value, String> {
        let AnswerLayout::JsonThenFiles { field } = self else {
            return parse_object(extract_json(content));
        };
        let (head, blocks) = split_blocks(content)?;
        let mut value = parse_object(extract_json(head))?;
        let Value::Object(object) = &mut value else {
            return Err("the answer's JSON is not an object".into());
        };
        if blocks.is_empty() && object.contains_key(field) {
            return Ok(value);
        }
        let mut files = Vec::with_capacity(blocks.len());
        for (path, content) in blocks {
            let mut file = Map::new();
            file.insert("path".into(), Value::String(path));
            file.insert("content".into(), Value::String(content));
            files.push(Value::Object(file));
        }
        object.insert(field.clone(), Value::Array(files));
        Ok(value)
    }
}

fn parse_object(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("the answer is not a JSON object: {error}"))
}

/// A file block: its path and its text.
type Block = (String, String);

/// The text before the first file block, and each block's path and text,
/// read line by line. A block opens with a `FILE <path>` line; its text
/// lies between a fence line with a language and the matching bare fence
/// (a fence with a language inside it opens a nested one, as in a README).
/// Outside a block's text, a `FILE` line opens the next block; inside, it
/// is text. A block without a fence runs to the next `FILE` line. A fence
/// opened and never closed means the answer was cut short: an error, never
/// a truncated file.
fn split_blocks(content: &str) -> Result<(&str, Vec<Block>), String> {
    enum State {
        Head,
        Fence(String),
        Fenced(String, usize, String),
        Raw(String, String),
        Between,
    }
    let mut head_end = content.len();
    let mut blocks = Vec::new();
    let mut state = State::Head;
    let mut offset = 0;
    for line in content.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let bare = line.trim_end();
        state = match state {
            State::Head | State::Between | State::Raw(..) if line.starts_with(FILE_MARKER) => {
                if let State::Raw(path, text) = state {
                    blocks.push((path, ensure_newline(text.trim_end())));
                } else if head_end == content.len() {
                    head_end = at;
                }
                State::Fence(clean_path(&bare[FILE_MARKER.len()..]).to_string())
            }
            State::Head => State::Head,
            State::Between => State::Between,
            State::Raw(path, mut text) => {
                text.push_str(line);
                State::Raw(path, text)
            }
            State::Fence(path) if bare.is_empty() => State::Fence(path),
            State::Fence(path) if bare.starts_with(FENCE) => State::Fenced(path, 0, String::new()),
            State::Fence(path) => State::Raw(path, line.to_string()),
            State::Fenced(path, 0, text) if bare == FENCE => {
                blocks.push((path, ensure_newline(&text)));
                State::Between
            }
            State::Fenced(path, depth, mut text) => {
                text.push_str(line);
                let depth = if bare == FENCE {
                    depth - 1
                } else if bare.starts_with(FENCE) {
                    depth + 1
                } else {
                    depth
                };
                State::Fenced(path, depth, text)
            }
        };
    }
    match state {
        State::Fence(path) | State::Fenced(path, ..) => Err(format!(
            "the file `{path}` stops before its closing {FENCE} line: the answer was cut short; write it again, shorter"
        )),
        State::Raw(path, text) => {
            blocks.push((path, ensure_newline(text.trim_end())));
            Ok((&content[..head_end], blocks))
        }
        State::Head | State::Between => Ok((&content[..head_end], blocks)),
    }
}

/// A path as a model may dress it: in backticks or quotes, with a colon.
fn clean_path(path: &str) -> &str {
    path.trim()
        .trim_end_matches(':')
        .trim_matches(|c| c == '`' || c == '"' || c == '\'')
        .trim()
}

/// A file's text ending with a newline; blank lines only make an empty
/// file.
fn ensure_newline(text: &str) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// The JSON inside an answer: the whole text, a ```json fenced block, or
/// the outermost `{...}`.
pub fn extract_json(content: &str) -> &str {
    let trimmed = content.trim();
    if trimmed.starts_with('{') {
        return trimmed;
    }
    if let Some(start) = trimmed.find(FENCE) {
        let after = &trimmed[start + FENCE.len()..];
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
        let body = &after[body_start..];
        if let Some(end) = body.find(FENCE) {
            return body[..end].trim();
        }
        return body.trim();
    }
    match (trimmed.find('{'), trimmed.rfind('}')) {
        (Some(a), Some(b)) if a < b => &trimmed[a..=b],
        _ => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files() -> AnswerLayout {
        AnswerLayout::JsonThenFiles {
            field: "files".into(),
        }
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string"},
                "files": {"type": "array", "minItems": 1, "items": {"type": "object"}}
            },
            "required": ["summary", "files"]
        })
    }

    #[test]
    fn files_come_back_raw_under_their_field() {
        let answer = "{\"summary\": \"s\"}\nFILE pkg/a.py\n```python\nprint(\"hi\\n\")\n```\nFILE pkg/__init__.py\n```python\n\n```\n";
        let value = files().value(answer).unwrap();
        assert_eq!(
            value,
            json!({"summary": "s", "files": [
                {"path": "pkg/a.py", "content": "print(\"hi\\n\")\n"},
                {"path": "pkg/__init__.py", "content": ""},
            ]})
        );
    }

    #[test]
    fn nested_fences_and_file_lines_inside_a_file_are_its_text() {
        let answer = "{\"summary\": \"s\"}\nFILE README.md\n```markdown\nRun:\n```sh\nx\n```\n```\nFILE a.py\n```python\nFILE = 'a'\n```\n";
        let value = files().value(answer).unwrap();
        assert_eq!(value["files"][0]["content"], "Run:\n```sh\nx\n```\n");
        assert_eq!(value["files"][1]["content"], "FILE = 'a'\n");
    }

    #[test]
    fn a_file_cut_short_is_an_error_naming_it() {
        let answer = "{\"summary\": \"s\"}\nFILE pkg/a.py\n```python\ndef f():\n    return (";
        let error = files().value(answer).unwrap_err();
        assert!(error.contains("`pkg/a.py` stops before"), "{error}");
    }

    #[test]
    fn plain_json_with_the_field_is_taken_as_it_is() {
        let answer = json!({"summary": "s", "files": [{"path": "a.py", "content": "x = 1\n"}]});
        assert_eq!(files().value(&answer.to_string()).unwrap(), answer);
        assert!(AnswerLayout::Json
            .value("no json here")
            .unwrap_err()
            .contains("not a JSON object"));
    }

    #[test]
    fn dressed_paths_and_unfenced_blocks_are_understood() {
        let answer = "```json\n{\"summary\": \"s\"}\n```\nFILE `a.py`:\nx = 1\n";
        let value = files().value(answer).unwrap();
        assert_eq!(
            value["files"],
            json!([{"path": "a.py", "content": "x = 1\n"}])
        );
    }

    #[test]
    fn the_header_schema_drops_the_files_field() {
        let header = files().header_schema(&schema());
        assert_eq!(header["required"], json!(["summary"]));
        assert!(header["properties"].get("files").is_none());
        assert_eq!(files().min_files(&schema()), 1);
        assert_eq!(AnswerLayout::Json.header_schema(&schema()), schema());
        assert!(files().instructions(&schema()).contains("FILE <path>"));
    }

    #[test]
    fn the_default_layout_is_not_serialized_into_a_schema() {
        assert_eq!(
            serde_json::to_value(files()).unwrap(),
            json!({"kind": "json_then_files", "field": "files"})
        );
        assert!(AnswerLayout::default().is_json());
        // A plain schema's request key stays what it was: no `layout`.
        let plain = serde_json::to_value(crate::OutputSchema::json("A", json!({}))).unwrap();
        assert_eq!(plain, json!({"name": "A", "schema": {}}));
    }
}

//! The agents' typed outputs, their JSON schemas, and the parser that turns a
//! model's answer into one (fence-tolerant, schema-validated, deserialized,
//! then checked for the rules a schema cannot say).

use std::collections::BTreeSet;

use agentry_core::{Error, OutputSchema, RepoPath, Result};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A typed agent answer: its schema is sent with the request and the answer
/// is validated against it.
pub trait AgentOutput: DeserializeOwned + Serialize + JsonSchema + Send {
    /// Schema name sent to the provider (`BusinessAnalysis`).
    const NAME: &'static str;

    /// Rules beyond the schema (tree shape, paths); each problem is one line
    /// that goes back to the model in the repair round.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One user story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StorySpec {
    /// Short title.
    #[schemars(length(min = 1))]
    pub title: String,
    /// "As a <user>, I want <goal>, so that <benefit>."
    #[schemars(length(min = 1))]
    pub description: String,
    /// Testable acceptance criteria.
    #[schemars(length(min = 1))]
    pub acceptance_criteria: Vec<String>,
    /// Optional implementation tasks.
    #[serde(default)]
    pub tasks: Vec<String>,
}

/// One epic with its stories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EpicSpec {
    /// Short title.
    #[schemars(length(min = 1))]
    pub title: String,
    /// What the epic delivers.
    pub description: String,
    /// Its stories.
    #[schemars(length(min = 1))]
    pub stories: Vec<StorySpec>,
}

/// The business analyst's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BusinessAnalysis {
    /// The refined scope in a few sentences.
    #[schemars(length(min = 1))]
    pub summary: String,
    /// Tracker project key: 2-10 upper-case letters or digits, starting with a letter.
    #[schemars(regex(pattern = r"^[A-Z][A-Z0-9]{1,9}$"))]
    pub project_key: String,
    /// Project display name.
    #[schemars(length(min = 1))]
    pub project_name: String,
    /// Repository slug: lower-case letters, digits, `-`, `_`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub repository: String,
    /// Epics (at least one).
    #[schemars(length(min = 1))]
    pub epics: Vec<EpicSpec>,
}

impl AgentOutput for BusinessAnalysis {
    const NAME: &'static str = "BusinessAnalysis";
}

/// A file with its full content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileSpec {
    /// Path relative to the repository root (`app/main.py`).
    #[schemars(length(min = 1))]
    pub path: String,
    /// Full file content.
    pub content: String,
}

fn path_problems(files: &[FileSpec], field: &str) -> Vec<String> {
    files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            RepoPath::parse(&f.path)
                .err()
                .map(|error| format!("/{field}/{i}/path: {error}"))
        })
        .collect()
}

/// The developer's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Implementation {
    /// What was built or fixed.
    #[schemars(length(min = 1))]
    pub summary: String,
    /// Short design notes (modules, data flow).
    pub design: String,
    /// Main language (`python`).
    pub language: String,
    /// Files to commit (full content); files staged with `write_file` are
    /// committed too.
    pub files: Vec<FileSpec>,
    /// Commit message.
    #[schemars(length(min = 1))]
    pub commit_message: String,
}

impl AgentOutput for Implementation {
    const NAME: &'static str = "Implementation";
    fn problems(&self) -> Vec<String> {
        path_problems(&self.files, "files")
    }
}

/// QA's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QaReport {
    /// The test plan (Markdown).
    #[schemars(length(min = 1))]
    pub test_plan: String,
    /// Acceptance test files, added to a checkout of the branch and run.
    #[schemars(length(min = 1))]
    pub test_files: Vec<FileSpec>,
    /// What the tests focus on.
    #[serde(default)]
    pub focus: Vec<String>,
}

impl AgentOutput for QaReport {
    const NAME: &'static str = "QaReport";
    fn problems(&self) -> Vec<String> {
        path_problems(&self.test_files, "test_files")
    }
}

/// One documentation page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PageSpec {
    /// Title (unique).
    #[schemars(length(min = 1))]
    pub title: String,
    /// Title of an EARLIER page in the list; null for the one root page.
    #[serde(default)]
    pub parent: Option<String>,
    /// Body (Markdown).
    #[schemars(length(min = 1))]
    pub body: String,
}

/// The technical writer's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Documentation {
    /// Pages, parents before children (at least 3, exactly one root).
    #[schemars(length(min = 3))]
    pub pages: Vec<PageSpec>,
}

impl AgentOutput for Documentation {
    const NAME: &'static str = "Documentation";
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.pages.len() < 3 {
            out.push(format!(
                "/pages: need at least 3 pages, got {}",
                self.pages.len()
            ));
        }
        let roots = self.pages.iter().filter(|p| p.parent.is_none()).count();
        if roots != 1 {
            out.push(format!(
                "/pages: need exactly one root page (parent null), got {roots}"
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, page) in self.pages.iter().enumerate() {
            if let Some(parent) = &page.parent {
                if !seen.contains(parent.as_str()) {
                    out.push(format!(
                        "/pages/{i}/parent: `{parent}` is not the title of an earlier page"
                    ));
                }
            }
            if !seen.insert(page.title.as_str()) {
                out.push(format!("/pages/{i}/title: `{}` is used twice", page.title));
            }
        }
        out
    }
}

/// The DevOps agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pipeline {
    /// `.gitlab-ci.yml`, `Dockerfile`, `deploy/...` (full content).
    #[schemars(length(min = 1))]
    pub files: Vec<FileSpec>,
    /// Notes for the merge request.
    pub notes: String,
}

impl AgentOutput for Pipeline {
    const NAME: &'static str = "Pipeline";
    fn problems(&self) -> Vec<String> {
        let mut out = path_problems(&self.files, "files");
        if !self.files.iter().any(|f| f.path.trim() == ".gitlab-ci.yml") {
            out.push("/files: `.gitlab-ci.yml` is missing".to_string());
        }
        out
    }
}

/// A file's content without the Markdown fence a model may have wrapped
/// it in (```` ```python ... ``` ````); other content as it is.
pub fn unfenced(content: &str) -> String {
    let trimmed = content.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return content.to_string();
    };
    let Some(body) = rest.strip_suffix("```") else {
        return content.to_string();
    };
    // The opening line may name a language (`python`), nothing else.
    let (first, body) = body.split_once('\n').unwrap_or(("", body));
    if first.trim().contains(char::is_whitespace) {
        return content.to_string();
    }
    let mut text = body.trim_end().to_string();
    text.push('\n');
    text
}

/// The schema of `T` as sent in `ChatRequest::response_schema`.
pub fn output_schema<T: AgentOutput>() -> Result<OutputSchema> {
    let schema = serde_json::to_value(schemars::schema_for!(T))
        .map_err(|error| Error::permanent(format!("schema of {}: {error}", T::NAME)))?;
    Ok(OutputSchema {
        name: T::NAME.to_string(),
        schema,
    })
}

/// A compiled output schema.
pub struct OutputValidator {
    validator: jsonschema::Validator,
}

impl OutputValidator {
    /// Compiles `schema`.
    pub fn new(schema: &OutputSchema) -> Result<Self> {
        let validator = jsonschema::validator_for(&schema.schema).map_err(|error| {
            Error::permanent(format!("schema {} does not compile: {error}", schema.name))
        })?;
        Ok(OutputValidator { validator })
    }

    /// Parses an answer: extracts the JSON (tolerating a fenced block),
    /// validates it against the schema, deserializes it and checks the extra
    /// rules. On failure, the list of problems to show the model.
    pub fn parse<T: AgentOutput>(
        &self,
        content: &str,
    ) -> std::result::Result<(T, Value), Vec<String>> {
        let text = extract_json(content);
        let value: Value = serde_json::from_str(text)
            .map_err(|error| vec![format!("the answer is not a JSON object: {error}")])?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .map(|error| {
                let at = error.instance_path.to_string();
                format!("{}: {error}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        let typed: T =
            serde_json::from_value(value.clone()).map_err(|error| vec![format!("/: {error}")])?;
        let problems = typed.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok((typed, value))
    }
}

/// The JSON inside an answer: the whole text, a ```json fenced block, or
/// the outermost `{...}`.
pub fn extract_json(content: &str) -> &str {
    let trimmed = content.trim();
    if trimmed.starts_with('{') {
        return trimmed;
    }
    if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
        let body = &after[body_start..];
        if let Some(end) = body.find("```") {
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

    fn check<T: AgentOutput>(answer: Value, expected: std::result::Result<(), &[&str]>) {
        let validator = OutputValidator::new(&output_schema::<T>().unwrap()).unwrap();
        match (validator.parse::<T>(&answer.to_string()), expected) {
            (Ok(_), Ok(())) => {}
            (Err(got), Err(want)) => {
                let all = got.join("\n");
                for w in want {
                    assert!(all.contains(w), "expected `{w}` in:\n{all}");
                }
            }
            (got, want) => panic!("got {:?}, want {want:?}", got.map(|(_, v)| v)),
        }
    }

    fn page(title: &str, parent: Option<&str>) -> Value {
        json!({"title": title, "parent": parent, "body": "text"})
    }

    #[test]
    fn documentation_must_be_one_tree_of_three_pages() {
        check::<Documentation>(
            json!({"pages": [page("Overview", None), page("API", Some("Overview")), page("Ops", Some("Overview"))]}),
            Ok(()),
        );
        check::<Documentation>(
            json!({"pages": [page("Overview", None), page("API", Some("Overview"))]}),
            Err(&["/pages"]),
        );
        check::<Documentation>(
            json!({"pages": [page("Overview", None), page("API", None), page("Ops", Some("Overview"))]}),
            Err(&["exactly one root page"]),
        );
        check::<Documentation>(
            json!({"pages": [page("Overview", None), page("API", Some("Ops")), page("Ops", Some("Overview"))]}),
            Err(&["/pages/1/parent: `Ops` is not the title of an earlier page"]),
        );
    }

    #[test]
    fn analysis_fields_follow_the_schema() {
        let story =
            json!({"title": "t", "description": "As a user...", "acceptance_criteria": ["x"]});
        let ok = json!({"summary": "s", "project_key": "URL", "project_name": "n",
            "repository": "url-shortener", "epics": [{"title": "e", "description": "d", "stories": [story]}]});
        check::<BusinessAnalysis>(ok.clone(), Ok(()));
        let mut bad_key = ok.clone();
        bad_key["project_key"] = json!("url");
        check::<BusinessAnalysis>(bad_key, Err(&["/project_key"]));
        let mut missing = ok;
        missing.as_object_mut().unwrap().remove("summary");
        check::<BusinessAnalysis>(missing, Err(&["\"summary\" is a required property"]));
    }

    #[test]
    fn file_paths_must_stay_in_the_repository() {
        check::<Implementation>(
            json!({"summary": "s", "design": "", "language": "python",
                "files": [{"path": "../etc/passwd", "content": "x"}], "commit_message": "m"}),
            Err(&["/files/0/path: invalid input: path `../etc/passwd` rejected"]),
        );
        check::<Pipeline>(
            json!({"files": [{"path": "Dockerfile", "content": "FROM x"}], "notes": ""}),
            Err(&["`.gitlab-ci.yml` is missing"]),
        );
    }

    #[test]
    fn fenced_file_content_is_unwrapped() {
        assert_eq!(unfenced("```python\nprint(1)\n```"), "print(1)\n");
        assert_eq!(unfenced("```\nx = 1\n```\n"), "x = 1\n");
        assert_eq!(unfenced("print(1)\n"), "print(1)\n");
        let prose = "```not a fence line\nx\n```";
        assert_eq!(unfenced(prose), prose);
        let inner = "x = 1\n```\ny = 2\n";
        assert_eq!(unfenced(inner), inner, "a fence inside the file stays");
    }

    #[test]
    fn json_is_found_inside_fences_and_prose() {
        assert_eq!(extract_json("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(
            extract_json("Here you go:\n```\n{\"a\":1}\n```\nthanks"),
            "{\"a\":1}"
        );
        assert_eq!(extract_json("Sure! {\"a\":1} done"), "{\"a\":1}");
        assert_eq!(extract_json("  {\"a\":1}  "), "{\"a\":1}");
    }
}

//! The agents' typed outputs, their JSON schemas, and the parser that turns a
//! model's answer into one (fence-tolerant, schema-validated, deserialized,
//! then checked for the rules a schema cannot say).

use std::collections::BTreeSet;

use agentry_core::{file_size_problem, AnswerLayout, Error, OutputSchema, RepoPath, Result};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A typed agent answer: its schema is sent with the request and the answer
/// is validated against it.
pub trait AgentOutput: DeserializeOwned + Serialize + JsonSchema + Send + Sync {
    /// Schema name sent to the provider (`BusinessAnalysis`).
    const NAME: &'static str;

    /// The field holding the answer's files (`{path, content}` objects),
    /// which a compact agent has written as raw file blocks after the JSON
    /// ([`AnswerLayout::JsonThenFiles`]). None: the answer is JSON only.
    const FILES_FIELD: Option<&'static str> = None;

    /// Rules beyond the schema (tree shape, paths); each problem is one line
    /// that goes back to the model in the repair round.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// The files (path, content) this answer puts in the repository or the
    /// test checkout, checked together with what the agent staged through
    /// tools (`Toolbox::answer_problems`). None by default.
    fn files(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }
}

/// One user story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StorySpec {
    /// Short title.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// "As a <user>, I want <goal>, so that <benefit>." (at most 400
    /// characters).
    #[schemars(length(min = 1, max = 400))]
    pub description: String,
    /// Testable acceptance criteria (at most 6, each at most 300
    /// characters).
    #[schemars(length(min = 1, max = 6), inner(length(min = 1, max = 300)))]
    pub acceptance_criteria: Vec<String>,
    /// Optional implementation tasks (at most 4, each at most 200
    /// characters).
    #[serde(default)]
    #[schemars(length(max = 4), inner(length(max = 200)))]
    pub tasks: Vec<String>,
}

/// One epic with its stories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EpicSpec {
    /// Short title.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// What the epic delivers (at most 400 characters).
    #[schemars(length(max = 400))]
    pub description: String,
    /// Its stories (at most 6).
    #[schemars(length(min = 1, max = 6))]
    pub stories: Vec<StorySpec>,
}

/// The business analyst's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BusinessAnalysis {
    /// The refined scope in a few sentences (at most 800 characters).
    #[schemars(length(min = 1, max = 800))]
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
    /// Epics (at least one, at most 4). The upper bounds (here and on
    /// every list and text below) keep a small model's constrained answer
    /// from running on until its token cap: an unbounded analysis of a
    /// long requirement took 2,048 tokens and six minutes, then timed out
    /// on its repair.
    #[schemars(length(min = 1, max = 4))]
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

/// Each file's path must be one git accepts and its content within
/// [`agentry_core::MAX_FILE_BYTES`]: the code host would refuse it, so the
/// model is asked to repair it instead.
fn file_problems(files: &[FileSpec], field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if let Err(error) = RepoPath::parse(&f.path) {
            out.push(format!("/{field}/{i}/path: {error}"));
        }
        if let Some(problem) = file_size_problem(&f.path, f.content.len()) {
            out.push(format!("/{field}/{i}/content: {problem}"));
        }
    }
    out
}

fn spec_files(files: &[FileSpec]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|f| (f.path.as_str(), f.content.as_str()))
        .collect()
}

/// The developer's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Implementation {
    /// What was built or fixed (at most 600 characters). The bounds on
    /// the texts beside the files keep a small model's constrained answer
    /// from writing prose until its token cap, as QA's test plan did.
    #[schemars(length(min = 1, max = 600))]
    pub summary: String,
    /// Short design notes: modules, data flow (at most 1,000 characters).
    #[schemars(length(max = 1000))]
    pub design: String,
    /// Main language (`python`).
    #[schemars(length(max = 40))]
    pub language: String,
    /// Files to commit (full content); files staged with `write_file` are
    /// committed too.
    pub files: Vec<FileSpec>,
    /// Commit message (at most 300 characters).
    #[schemars(length(min = 1, max = 300))]
    pub commit_message: String,
}

impl AgentOutput for Implementation {
    const NAME: &'static str = "Implementation";
    const FILES_FIELD: Option<&'static str> = Some("files");
    fn problems(&self) -> Vec<String> {
        file_problems(&self.files, "files")
    }
    fn files(&self) -> Vec<(&str, &str)> {
        spec_files(&self.files)
    }
}

/// QA's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QaReport {
    /// The test plan, short Markdown (at most 1,000 characters: in a real
    /// run an unbounded plan ran on, sentence after sentence, to the token
    /// cap before the first test).
    #[schemars(length(min = 1, max = 1000))]
    pub test_plan: String,
    /// Acceptance test files, added to a checkout of the branch and run.
    #[schemars(length(min = 1))]
    pub test_files: Vec<FileSpec>,
    /// What the tests focus on (at most 8 points of 200 characters).
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(max = 200)))]
    pub focus: Vec<String>,
}

impl AgentOutput for QaReport {
    const NAME: &'static str = "QaReport";
    const FILES_FIELD: Option<&'static str> = Some("test_files");
    fn files(&self) -> Vec<(&str, &str)> {
        spec_files(&self.test_files)
    }
    fn problems(&self) -> Vec<String> {
        let mut out = file_problems(&self.test_files, "test_files");
        for (i, file) in self.test_files.iter().enumerate() {
            if !file.path.ends_with(".py") {
                continue;
            }
            let name = file.path.rsplit('/').next().unwrap_or_default();
            if name.starts_with("test") && !has_python_tests(&file.content) {
                out.push(format!(
                    "/test_files/{i}: `{}` defines no test method (`def test_...(self):`)",
                    file.path
                ));
            }
            let empty = tests_that_check_nothing(&file_text(&file.path, &file.content));
            if !empty.is_empty() {
                out.push(format!(
                    "/test_files/{i}: {} in `{}` check nothing: each test method needs an assertion (`self.assertEqual(...)`, `self.assertRaises(...)`)",
                    empty.join(", "),
                    file.path
                ));
            }
        }
        out
    }
}

impl QaReport {
    /// The rules on the whole suite: this answer's files together with
    /// those `kept` from QA's last round (an answer's file replaces a kept
    /// one of the same path). The suite must hold test code, and every data
    /// file a test reads must be in it or be written by the test.
    pub fn suite_problems(&self, kept: &[FileSpec]) -> Vec<String> {
        let (mut loud, guards) = self.suite_problems_by_kind(kept);
        loud.splice(0..0, guards);
        loud
    }

    /// [`QaReport::suite_problems`] in two kinds: those that make the suite
    /// fail loudly when it runs (a data file nobody wrote), then those that
    /// would let a weak suite pass (no test code at all).
    pub fn suite_problems_by_kind(&self, kept: &[FileSpec]) -> (Vec<String>, Vec<String>) {
        let suite = with_kept(kept, &self.test_files);
        let mut guards = Vec::new();
        let mut out = Vec::new();
        if !suite.iter().any(is_test_code) {
            let paths: Vec<&str> = suite.iter().map(|f| f.path.as_str()).collect();
            guards.push(format!(
                "/test_files: no test code, only {}: add the test file (`tests/acceptance/test_acceptance.py`) with one test method per acceptance criterion",
                paths.join(", ")
            ));
        }
        for (i, file) in self.test_files.iter().enumerate() {
            if !file.path.ends_with(".py") {
                continue;
            }
            let missing = data_files_missing(&file.content, &suite);
            if !missing.is_empty() {
                out.push(format!(
                    "/test_files/{i}: `{}` reads {}, which no test creates and test_files does not hold: add each to test_files with its content (under tests/acceptance/), or write it in the test first (tempfile)",
                    file.path,
                    missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        (out, guards)
    }
}

/// `kept` files that `files` does not replace (same path), then `files`.
pub fn with_kept(kept: &[FileSpec], files: &[FileSpec]) -> Vec<FileSpec> {
    let norm = |p: &str| p.trim_start_matches("./").to_string();
    let replaced: BTreeSet<String> = files.iter().map(|f| norm(&f.path)).collect();
    kept.iter()
        .filter(|k| !replaced.contains(&norm(&k.path)))
        .chain(files)
        .cloned()
        .collect()
}

/// Extensions of source files that can hold tests.
const CODE_EXTENSIONS: &[&str] = &[
    "py", "rs", "js", "mjs", "cjs", "jsx", "ts", "tsx", "go", "java",
];

/// Whether a file holds test code: source code other than an empty
/// `__init__.py` or a `conftest.py` (data files and package markers alone
/// test nothing).
fn is_test_code(file: &FileSpec) -> bool {
    let name = file.path.rsplit('/').next().unwrap_or_default();
    let code = name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| CODE_EXTENSIONS.contains(&ext));
    code && !matches!(name, "__init__.py" | "conftest.py") && !file.content.trim().is_empty()
}

/// Whether Python `source` defines a test function or method.
fn has_python_tests(source: &str) -> bool {
    source.lines().any(|l| {
        let t = l.trim_start();
        let t = t.strip_prefix("async ").unwrap_or(t);
        t.starts_with("def test")
    })
}

/// The Python test functions (`def test...`) whose body has no assertion
/// (`assert`, `self.assert...`, `raises`, `fail(`): a test that checks
/// nothing passes whatever the code does.
pub fn tests_that_check_nothing(source: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let text = line.trim_start();
        let text = text.strip_prefix("async ").unwrap_or(text);
        let Some(name) = text
            .strip_prefix("def ")
            .and_then(|rest| rest.split('(').next())
            .filter(|n| n.starts_with("test"))
        else {
            continue;
        };
        // The body ends at the next definition at the same or an outer
        // level (a line of a broken string literal does not end it).
        let body = lines[i + 1..].iter().take_while(|l| {
            let t = l.trim_start();
            indent(l) > indent(line)
                || !["def ", "async def ", "class ", "@", "if __name__"]
                    .iter()
                    .any(|start| t.starts_with(start))
        });
        let checks = body
            .map(|l| l.trim_start())
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.contains("assert") || l.contains("raises") || l.contains("fail("));
        if !checks {
            out.push(format!("`{}`", name.trim()));
        }
    }
    out
}

/// Extensions of the data files a test may read.
const DATA_EXTENSIONS: &[&str] = &[
    "txt", "json", "csv", "tsv", "md", "log", "dat", "yaml", "yml", "ini", "cfg", "toml", "xml",
    "html",
];

/// The data files a Python test reads by a relative path (a string literal
/// such as `'tests/acceptance/input.txt'` or `"words.csv"`) that none of
/// `files` holds, when the test shows no sign of creating, faking or
/// cleaning up files itself (`tempfile`, a write, `mock_open`, `os.remove`,
/// `tearDown`). A 1.5B model often reads an
/// `example.txt` nobody wrote; the test then fails whatever the code does.
pub fn data_files_missing(source: &str, files: &[FileSpec]) -> Vec<String> {
    let creates = [
        "tempfile",
        ".write(",
        "write_text(",
        "write_bytes(",
        "'w'",
        "\"w\"",
        "'w+'",
        "\"w+\"",
        "mock_open",
        "builtins.open",
        // Cleaning up a file means the code under test writes it (a todo
        // list's `tasks.json`).
        "os.remove",
        ".unlink(",
        "rmtree",
        "os.path.exists",
        "tearDown",
    ];
    if creates.iter().any(|c| source.contains(c)) {
        return Vec::new();
    }
    let held = |literal: &str| {
        files
            .iter()
            .any(|f| f.path == literal || f.path.ends_with(&format!("/{literal}")))
    };
    let lines: Vec<&str> = source.lines().collect();
    // A path the test expects to fail on (`assertRaises(FileNotFoundError)`
    // on this line or the one before, or a name that says so) is no data file.
    let expected_missing = |n: usize, literal: &str| {
        let lower = literal.to_ascii_lowercase();
        lines[n.saturating_sub(1)..=n]
            .iter()
            .any(|l| l.contains("aises"))
            || [
                "nonexist",
                "non_exist",
                "missing",
                "not_exist",
                "notexist",
                "no_such",
                "invalid",
                "fake",
            ]
            .iter()
            .any(|w| lower.contains(w))
    };
    let mut out: Vec<String> = Vec::new();
    for (n, literal) in string_literals(source) {
        let literal = literal.strip_prefix("./").unwrap_or(literal);
        if expected_missing(n, literal) {
            continue;
        }
        let is_data_path = literal
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && DATA_EXTENSIONS.contains(&ext))
            && literal
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            && !literal.starts_with('/');
        if is_data_path && !held(literal) && !out.iter().any(|o| o == literal) {
            out.push(literal.to_owned());
        }
    }
    out
}

/// The one-line string literals of Python `source` with their line
/// numbers (quotes `'` and `"`, without escapes; good enough for file
/// names).
fn string_literals(source: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with('#') {
            continue;
        }
        let mut rest = code;
        while let Some(start) = rest.find(['\'', '"']) {
            let quote = rest.as_bytes()[start] as char;
            let after = &rest[start + 1..];
            let Some(end) = after.find(quote) else {
                break;
            };
            out.push((n, &after[..end]));
            rest = &after[end + 1..];
        }
    }
    out
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

/// A delivery file of the DevOps agent: CI, container or deployment, with
/// its full content. The path's pattern keeps DevOps off the code and the
/// tests that passed (a small model otherwise rewrites them, untested);
/// with constrained decoding it cannot even write another path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryFile {
    /// `.gitlab-ci.yml`, `.gitlab/...`, `Dockerfile`, `Dockerfile.<name>`,
    /// `.dockerignore`, `docker-compose.yml`/`compose.yml`, or a file under
    /// `deploy/`, `k8s/`, `helm/` or `charts/`.
    #[schemars(regex(
        pattern = r"^(\.gitlab-ci\.yml|\.gitlab/[^ ]+|Dockerfile(\.[A-Za-z0-9_-]+)?|\.dockerignore|(docker-)?compose\.ya?ml|(deploy|k8s|helm|charts)/[^ ]+)$"
    ))]
    pub path: String,
    /// Full file content.
    pub content: String,
}

/// Whether DevOps may write `path` (the same rule as `DeliveryFile`'s
/// pattern, for files staged through tools).
pub fn is_delivery_path(path: &str) -> bool {
    let dockerfile_suffix_ok = |rest: &str| {
        rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
    };
    let under = |dir: &str| {
        path.strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|r| !r.is_empty() && !r.contains(' '))
    };
    matches!(
        path,
        ".gitlab-ci.yml"
            | ".dockerignore"
            | "docker-compose.yml"
            | "docker-compose.yaml"
            | "compose.yml"
            | "compose.yaml"
    ) || path
        .strip_prefix("Dockerfile")
        .is_some_and(dockerfile_suffix_ok)
        || [".gitlab", "deploy", "k8s", "helm", "charts"]
            .iter()
            .any(|d| under(d))
}

impl From<DeliveryFile> for FileSpec {
    fn from(file: DeliveryFile) -> FileSpec {
        FileSpec {
            path: file.path,
            content: file.content,
        }
    }
}

/// The DevOps agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pipeline {
    /// `.gitlab-ci.yml` first, then `Dockerfile`, `deploy/...` (full content).
    #[schemars(length(min = 1))]
    pub files: Vec<DeliveryFile>,
    /// Notes for the merge request.
    pub notes: String,
}

impl AgentOutput for Pipeline {
    const NAME: &'static str = "Pipeline";
    fn files(&self) -> Vec<(&str, &str)> {
        self.files
            .iter()
            .map(|f| (f.path.as_str(), f.content.as_str()))
            .collect()
    }
    fn problems(&self) -> Vec<String> {
        let files: Vec<FileSpec> = self.files.iter().cloned().map(FileSpec::from).collect();
        let mut out = file_problems(&files, "files");
        if !self.files.iter().any(|f| f.path.trim() == ".gitlab-ci.yml") {
            out.push("/files: `.gitlab-ci.yml` is missing".to_string());
        }
        out
    }
}

/// A file's text as a model meant it: `unfenced`, and for a Python file
/// with `python_string_newlines` too.
pub fn file_text(path: &str, content: &str) -> String {
    let text = unfenced(content);
    if path.ends_with(".py") {
        python_string_newlines(&text)
    } else {
        text
    }
}

/// A newline inside a one-line Python string literal (a syntax error) made
/// the `\n` escape it was meant to be: a model writing `'a\n'` in a JSON
/// string where it meant `'a\\n'` gets a real line break. Only where the
/// literal's closing quote is on the next line; anything else is left as
/// it is for the test run to report.
pub fn python_string_newlines(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    // Inside a string: its quote and whether it is triple-quoted.
    let mut string: Option<(char, bool)> = None;
    let mut comment = false;
    let mut i = 0;
    let triple_at = |i: usize, q: char| {
        chars.get(i) == Some(&q) && chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q)
    };
    while i < chars.len() {
        let c = chars[i];
        match string {
            None if comment => comment = c != '\n',
            None if c == '#' => comment = true,
            None if c == '\'' || c == '"' => {
                if triple_at(i, c) {
                    out.extend([c, c]);
                    i += 2;
                    string = Some((c, true));
                } else {
                    string = Some((c, false));
                }
            }
            None => {}
            Some(_) if c == '\\' && i + 1 < chars.len() => {
                out.extend([c, chars[i + 1]]);
                i += 2;
                continue;
            }
            Some((q, true)) if triple_at(i, q) => {
                out.extend([q, q]);
                i += 2;
                string = None;
            }
            Some((_, true)) => {}
            Some((q, false)) if c == q => string = None,
            Some((q, false)) if c == '\n' => {
                let mut next_line = chars[i + 1..].iter().take_while(|&&n| n != '\n');
                if next_line.any(|&n| n == q) {
                    out.push_str("\\n");
                    i += 1;
                    continue;
                }
                // Not a broken literal: leave it, as Python would report it.
                string = None;
            }
            Some(_) => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A file's content as a model meant it: without the Markdown fence it may
/// have wrapped it in (```` ```python ... ``` ````), and with a literal
/// backspace (U+0008, never meant in a source file) turned back into the
/// two characters `\b`: a model that writes the regex `\b` in a JSON string
/// as `\b` where it meant `\\b` gets a backspace. Other content as it is.
pub fn unfenced(content: &str) -> String {
    let text = strip_fence(content);
    if text.contains('\u{8}') {
        text.replace('\u{8}', "\\b")
    } else {
        text
    }
}

fn strip_fence(content: &str) -> String {
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

/// The schema of `T` as sent in `ChatRequest::response_schema`, as plain
/// JSON.
pub fn output_schema<T: AgentOutput>() -> Result<OutputSchema> {
    let schema = serde_json::to_value(schemars::schema_for!(T))
        .map_err(|error| Error::permanent(format!("schema of {}: {error}", T::NAME)))?;
    Ok(OutputSchema::json(T::NAME, schema))
}

/// The schema of `T`, with its files written raw after the JSON when
/// `raw_files` and `T` has files ([`AgentOutput::FILES_FIELD`]).
pub fn output_schema_with<T: AgentOutput>(raw_files: bool) -> Result<OutputSchema> {
    let mut schema = output_schema::<T>()?;
    if let (true, Some(field)) = (raw_files, T::FILES_FIELD) {
        schema.layout = AnswerLayout::JsonThenFiles {
            field: field.to_string(),
        };
    }
    Ok(schema)
}

/// A compiled output schema.
pub struct OutputValidator {
    validator: jsonschema::Validator,
    layout: AnswerLayout,
}

impl OutputValidator {
    /// Compiles `schema`.
    pub fn new(schema: &OutputSchema) -> Result<Self> {
        let validator = jsonschema::validator_for(&schema.schema).map_err(|error| {
            Error::permanent(format!("schema {} does not compile: {error}", schema.name))
        })?;
        Ok(OutputValidator {
            validator,
            layout: schema.layout.clone(),
        })
    }

    /// Parses an answer: reads its JSON as its layout says (tolerating a
    /// fenced block; with raw files, putting them back under their field),
    /// validates it against the schema, deserializes it and checks the
    /// extra rules. On failure, the list of problems to show the model.
    pub fn parse<T: AgentOutput>(
        &self,
        content: &str,
    ) -> std::result::Result<(T, Value), Vec<String>> {
        let value = self.layout.value(content).map_err(|error| vec![error])?;
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

pub use agentry_core::layout::extract_json;

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
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("summary");
        check::<BusinessAnalysis>(missing, Err(&["\"summary\" is a required property"]));
        // Bounded lists and texts, so a constrained answer cannot run on.
        let mut long = ok.clone();
        long["epics"][0]["stories"][0]["acceptance_criteria"] = json!(["x".repeat(301)]);
        check::<BusinessAnalysis>(long, Err(&["/epics/0/stories/0/acceptance_criteria/0"]));
        let mut many = ok;
        many["epics"] = json!(vec![many["epics"][0].clone(); 5]);
        check::<BusinessAnalysis>(many, Err(&["/epics"]));
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

    /// A compact developer's answer file at `.GIT/config`, or of 20 MiB,
    /// would be reported committed: both go back to the model instead.
    #[test]
    fn answer_files_git_would_drop_or_the_host_refuse_get_a_repair() {
        let implementation = Implementation {
            summary: "s".into(),
            design: String::new(),
            language: "python".into(),
            files: vec![
                FileSpec {
                    path: "app/main.py".into(),
                    content: "print(1)\n".into(),
                },
                FileSpec {
                    path: ".GIT/config".into(),
                    content: "[core]\n".into(),
                },
                FileSpec {
                    path: "data/dump.json".into(),
                    content: "x".repeat(20 * 1024 * 1024),
                },
            ],
            commit_message: "m".into(),
        };
        let problems = implementation.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("/files/1/path: invalid input: path `.GIT/config` rejected"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("/files/2/content: `data/dump.json` is 20 MiB"),
            "{problems:?}"
        );
        assert_eq!(implementation.files().len(), 3);
    }

    #[test]
    fn delivery_paths_follow_one_rule_in_the_schema_and_in_code() {
        let schema = output_schema::<Pipeline>().unwrap().schema;
        let validator = jsonschema::validator_for(&schema).unwrap();
        let accepts = |path: &str| {
            validator.is_valid(&json!({"files": [{"path": path, "content": ""}], "notes": ""}))
        };
        for path in [
            ".gitlab-ci.yml",
            ".gitlab/ci/test.yml",
            "Dockerfile",
            "Dockerfile.dev",
            ".dockerignore",
            "docker-compose.yml",
            "compose.yaml",
            "deploy/deployment.yaml",
            "k8s/service.yaml",
            "helm/app/values.yaml",
        ] {
            assert!(is_delivery_path(path), "{path}");
            assert!(accepts(path), "{path}");
        }
        for path in [
            "README.md",
            "app/main.py",
            "tests/test_app.py",
            "Dockerfile.",
            "deploy/",
            "src/Dockerfile",
            ".gitlab-ci.yml.bak",
        ] {
            assert!(!is_delivery_path(path), "{path}");
            assert!(!accepts(path), "{path}");
        }
    }

    #[test]
    fn data_files_a_test_reads_must_exist_or_be_written() {
        let file = |path: &str| FileSpec {
            path: path.into(),
            content: String::new(),
        };
        let reads = "import unittest\nfrom wfc import count\n\nclass T(unittest.TestCase):\n    def test_count(self):\n        # see 'notes.txt'\n        self.assertEqual(count('tests/acceptance/test.txt'), [('a', 1)])\n        self.assertEqual(count(\"words.csv\"), [])\n        with self.assertRaises(FileNotFoundError):\n            count('gone.txt')\n        self.assertRaises(OSError, count, 'other.txt')\n        count('missing_file.txt')\n        print('done. bye')\n";
        assert_eq!(
            data_files_missing(reads, &[file("tests/acceptance/test_acceptance.py")]),
            ["tests/acceptance/test.txt", "words.csv"]
        );
        assert_eq!(
            data_files_missing(
                reads,
                &[
                    file("tests/acceptance/test.txt"),
                    file("tests/acceptance/data/words.csv")
                ]
            ),
            Vec::<String>::new()
        );
        let writes = format!("import tempfile\n{reads}");
        assert!(data_files_missing(&writes, &[]).is_empty());
        // The code under test writes the file; the test cleans it up.
        let cleans = format!("{reads}\n    def tearDown(self):\n        os.remove('tasks.json')\n");
        assert!(data_files_missing(&cleans, &[]).is_empty());

        let report = QaReport {
            test_plan: "plan".into(),
            test_files: vec![FileSpec {
                path: "tests/acceptance/test_acceptance.py".into(),
                content: reads.into(),
            }],
            focus: Vec::new(),
        };
        let problems = report.suite_problems(&[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`tests/acceptance/test.txt`, `words.csv`"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_qa_report_without_test_code_is_sent_back() {
        let report = |files: &[(&str, &str)]| QaReport {
            test_plan: "plan".into(),
            test_files: files
                .iter()
                .map(|(path, content)| FileSpec {
                    path: (*path).into(),
                    content: (*content).into(),
                })
                .collect(),
            focus: Vec::new(),
        };
        let data_only = report(&[
            ("tests/acceptance/__init__.py", ""),
            ("tests/acceptance/data/sample.txt", "a b a"),
        ]);
        let problems = data_only.suite_problems(&[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("/test_files: no test code"));
        // A test kept from the last round counts, and may read the new data.
        let kept = [FileSpec {
            path: "tests/acceptance/test_x.py".into(),
            content: "def test_a():\n    assert count('tests/acceptance/data/sample.txt')\n".into(),
        }];
        assert!(data_only.suite_problems(&kept).is_empty());
        let suite = with_kept(&kept, &data_only.test_files);
        assert_eq!(suite.len(), 3);
        assert_eq!(suite[0].path, "tests/acceptance/test_x.py");
        // An answer's file replaces the kept one of the same path.
        let replaced = with_kept(
            &kept,
            &report(&[("./tests/acceptance/test_x.py", "new")]).test_files,
        );
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].content, "new");
        let no_methods = report(&[(
            "tests/acceptance/test_x.py",
            "import unittest\n\nclass T(unittest.TestCase):\n    pass\n",
        )])
        .problems();
        assert_eq!(no_methods.len(), 1, "{no_methods:?}");
        assert!(no_methods[0].contains("defines no test method"));
        let good = report(&[(
            "tests/acceptance/test_x.py",
            "class T:\n    def test_a(self):\n        self.assertTrue(1)\n",
        )]);
        assert!(good.problems().is_empty(), "{:?}", good.problems());
        assert!(good.suite_problems(&[]).is_empty());
        let rust = report(&[("tests/acceptance.rs", "#[test]\nfn a() { assert!(true) }\n")]);
        assert!(rust.problems().is_empty());
        assert!(rust.suite_problems(&[]).is_empty());
    }

    #[test]
    fn python_tests_that_check_nothing_are_found() {
        let source = "import unittest\n\nclass T(unittest.TestCase):\n    def test_read(self):\n        # Test reading: assert it\n        pass\n\n    def test_count(self):\n        result = f()\n\n        self.assertEqual(result, 3)\n\n    def helper(self):\n        pass\n\n    def test_bad(self):\n        with self.assertRaises(ValueError):\n            f(-1)\n\ndef test_plain():\n    assert f() == 3\n\nasync def test_nothing():\n    await f()\n";
        assert_eq!(
            tests_that_check_nothing(source),
            ["`test_read`", "`test_nothing`"]
        );
        // A line of a broken string literal does not end the method.
        let broken =
            "    def test_read(self):\n        f.write('a\n')\n        self.assertTrue(x)\n";
        assert!(tests_that_check_nothing(broken).is_empty());
        let report = QaReport {
            test_plan: "plan".into(),
            test_files: vec![FileSpec {
                path: "tests/acceptance/test_acceptance.py".into(),
                content: source.into(),
            }],
            focus: Vec::new(),
        };
        let problems = report.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`test_read`, `test_nothing`"),
            "{problems:?}"
        );
    }

    #[test]
    fn newlines_inside_python_one_line_strings_become_escapes() {
        let broken = "f.write('a b.\n')\nx = \"c\n\"\n";
        assert_eq!(
            python_string_newlines(broken),
            "f.write('a b.\\n')\nx = \"c\\n\"\n"
        );
        // Valid code is left as it is: triple quotes, escapes, comments,
        // quotes of the other kind, continuations, empty strings.
        let valid =
            "s = '''a\nb'''\nt = \"it's\"  # don't\nu = 'x\\n' + \"y\\\nz\"\nv = ''\nw = 1\n";
        assert_eq!(python_string_newlines(valid), valid);
        // An unclosed quote is not guessed at.
        let unclosed = "x = 'abc\ny = 1\n";
        assert_eq!(python_string_newlines(unclosed), unclosed);
        assert_eq!(file_text("a.py", "```python\np('a\n')\n```"), "p('a\\n')\n");
        assert_eq!(file_text("a.txt", "p('a\n')"), "p('a\n')");
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
        assert_eq!(
            unfenced("```python\nre.findall(r'\u{8}\\w+\u{8}', t)\n```"),
            "re.findall(r'\\b\\w+\\b', t)\n",
            "a JSON-decoded backspace is the regex escape it was meant to be"
        );
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

//! The tools agents call through the LLM's native tool calling, and the
//! per-role registry. A tool never fails the node: every error goes back to
//! the model as `error: ...` text, so it can correct itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentry_core::{AgentRole, CodeHost, Error, RepoPath, ToolCall, ToolDefinition, Tracker, Wiki};
use serde_json::{json, Value};

use crate::context::{compact, head};

/// Largest file content a `read_file` result shows.
const READ_LIMIT: usize = 48 * 1024;

/// Every tool an agent may be offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// Issues of the tracker project.
    ListIssues,
    /// Paths on the branch (plus staged changes).
    ListFiles,
    /// One file from the branch (or the staged change set).
    ReadFile,
    /// Stage a file into this node run's change set.
    WriteFile,
    /// Stage a deletion.
    DeleteFile,
    /// Pages of the wiki space.
    ListPages,
}

impl Tool {
    /// Every tool.
    pub const ALL: [Tool; 6] = [
        Tool::ListIssues,
        Tool::ListFiles,
        Tool::ReadFile,
        Tool::WriteFile,
        Tool::DeleteFile,
        Tool::ListPages,
    ];

    /// The tools offered to a role.
    pub fn for_role(role: AgentRole) -> &'static [Tool] {
        match role {
            AgentRole::BusinessAnalyst => &[Tool::ListIssues],
            AgentRole::Developer => &[
                Tool::ListFiles,
                Tool::ReadFile,
                Tool::WriteFile,
                Tool::DeleteFile,
            ],
            AgentRole::Qa => &[Tool::ListFiles, Tool::ReadFile],
            AgentRole::TechnicalWriter => &[Tool::ListFiles, Tool::ReadFile, Tool::ListPages],
            AgentRole::Devops => &[Tool::ListFiles, Tool::ReadFile, Tool::WriteFile],
        }
    }

    /// The name the model uses.
    pub fn name(self) -> &'static str {
        match self {
            Tool::ListIssues => "list_issues",
            Tool::ListFiles => "list_files",
            Tool::ReadFile => "read_file",
            Tool::WriteFile => "write_file",
            Tool::DeleteFile => "delete_file",
            Tool::ListPages => "list_pages",
        }
    }

    /// The tool with that name.
    pub fn by_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its definition for the provider.
    pub fn definition(self) -> ToolDefinition {
        let path = json!({"type": "string", "description": "path relative to the repository root, e.g. `app/main.py`"});
        let (description, parameters) = match self {
            Tool::ListIssues => (
                "List the existing issues (key, kind, title, status) of a tracker project.",
                json!({"type": "object", "properties": {
                    "project": {"type": "string", "description": "project key; defaults to the workflow's project"}}}),
            ),
            Tool::ListFiles => (
                "List the paths of all files on the working branch, including files you staged.",
                json!({"type": "object", "properties": {}}),
            ),
            Tool::ReadFile => (
                "Read one file from the working branch (or your staged version of it).",
                json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
            ),
            Tool::WriteFile => (
                "Stage a file (full content). Staged files are committed together with your final answer.",
                json!({"type": "object", "properties": {"path": path, "content": {"type": "string"}},
                    "required": ["path", "content"]}),
            ),
            Tool::DeleteFile => (
                "Stage the deletion of a file; committed with your final answer.",
                json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
            ),
            Tool::ListPages => (
                "List the pages (id, title, parent_id, version) of the project's wiki space.",
                json!({"type": "object", "properties": {}}),
            ),
        };
        ToolDefinition {
            name: self.name().to_string(),
            description: description.to_string(),
            parameters,
        }
    }
}

/// Where the tools act: the ports and the workflow's coordinates.
#[derive(Clone)]
pub struct ToolEnv {
    /// Tracker.
    pub tracker: Arc<dyn Tracker>,
    /// Wiki.
    pub wiki: Arc<dyn Wiki>,
    /// Code host.
    pub code_host: Arc<dyn CodeHost>,
    /// Repository the file tools read (None before it exists).
    pub repository: Option<String>,
    /// Branch the file tools read.
    pub branch: Option<String>,
    /// Tracker project key.
    pub project: Option<String>,
    /// Wiki space key.
    pub space: Option<String>,
}

/// A role's tools for one node run, with the change set `write_file` and
/// `delete_file` stage (`None` content = deletion).
pub struct Toolbox {
    role: AgentRole,
    env: ToolEnv,
    staged: BTreeMap<RepoPath, Option<String>>,
}

impl Toolbox {
    /// The toolbox of `role`.
    pub fn new(role: AgentRole, env: ToolEnv) -> Self {
        Toolbox {
            role,
            env,
            staged: BTreeMap::new(),
        }
    }

    /// Definitions of the role's tools.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        Tool::for_role(self.role)
            .iter()
            .map(|t| t.definition())
            .collect()
    }

    /// The staged change set.
    pub fn staged(&self) -> &BTreeMap<RepoPath, Option<String>> {
        &self.staged
    }

    /// A short description for progress reports (`tool write_file app/x.py`).
    pub fn describe(call: &ToolCall) -> String {
        match arguments(call)
            .ok()
            .and_then(|a| a.get("path").and_then(Value::as_str).map(str::to_owned))
        {
            Some(path) => format!("tool {} {path}", call.name),
            None => format!("tool {}", call.name),
        }
    }

    /// Runs one call; the result text goes back to the model.
    pub async fn call(&mut self, call: &ToolCall) -> String {
        match self.dispatch(call).await {
            Ok(text) => text,
            Err(error) => format!("error: {}", plain(&error)),
        }
    }

    async fn dispatch(&mut self, call: &ToolCall) -> Result<String, Error> {
        let offered = Tool::for_role(self.role);
        let tool = match Tool::by_name(&call.name) {
            Some(t) if offered.contains(&t) => t,
            _ => {
                let names: Vec<&str> = offered.iter().map(|t| t.name()).collect();
                return Err(Error::invalid(format!(
                    "tool `{}` is not available to the {} agent (available: {})",
                    call.name,
                    self.role,
                    names.join(", ")
                )));
            }
        };
        let args = arguments(call)?;
        match tool {
            Tool::ListIssues => self.list_issues(&args).await,
            Tool::ListFiles => self.list_files().await,
            Tool::ReadFile => self.read_file(&args).await,
            Tool::WriteFile => {
                let path = path_arg(&args)?;
                let content = str_arg(&args, "content")?.to_string();
                let size = content.len();
                self.staged.insert(path.clone(), Some(content));
                Ok(format!(
                    "staged `{path}` ({size} bytes); it is committed with your final answer"
                ))
            }
            Tool::DeleteFile => {
                let path = path_arg(&args)?;
                self.staged.insert(path.clone(), None);
                Ok(format!("staged the deletion of `{path}`"))
            }
            Tool::ListPages => {
                let space = self
                    .env
                    .space
                    .clone()
                    .ok_or_else(|| Error::invalid("no wiki space is known yet"))?;
                let pages = match self.env.wiki.list_pages(&space).await {
                    Ok(pages) => pages,
                    Err(Error::NotFound(_)) => Vec::new(),
                    Err(error) => return Err(error),
                };
                let rows: Vec<Value> = pages
                    .iter()
                    .map(|p| json!({"id": p.id, "title": p.title, "parent_id": p.parent_id, "version": p.version}))
                    .collect();
                Ok(compact(&rows))
            }
        }
    }

    async fn list_issues(&self, args: &Value) -> Result<String, Error> {
        let project = args
            .get("project")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.env.project.clone())
            .ok_or_else(|| Error::invalid("no project key is known yet; pass `project`"))?;
        let issues = match self.env.tracker.list_issues(&project).await {
            Ok(issues) => issues,
            Err(Error::NotFound(_)) => Vec::new(),
            Err(error) => return Err(error),
        };
        let rows: Vec<Value> = issues
            .iter()
            .map(|i| json!({"key": i.key, "kind": i.kind.as_str(), "title": i.title, "status": i.status}))
            .collect();
        Ok(compact(&rows))
    }

    fn location(&self) -> Result<(String, String), Error> {
        match (&self.env.repository, &self.env.branch) {
            (Some(r), Some(b)) => Ok((r.clone(), b.clone())),
            _ => Err(Error::invalid("no repository exists yet")),
        }
    }

    async fn list_files(&self) -> Result<String, Error> {
        let (repo, branch) = self.location()?;
        let mut files: std::collections::BTreeSet<String> = self
            .env
            .code_host
            .list_files(&repo, &branch)
            .await?
            .into_iter()
            .collect();
        for (path, content) in &self.staged {
            match content {
                Some(_) => files.insert(path.as_str().to_string()),
                None => files.remove(path.as_str()),
            };
        }
        Ok(compact(&files))
    }

    async fn read_file(&self, args: &Value) -> Result<String, Error> {
        let path = path_arg(args)?;
        if let Some(staged) = self.staged.get(&path) {
            return match staged {
                Some(content) => Ok(head(content, READ_LIMIT)),
                None => Err(Error::not_found(format!("`{path}` is staged for deletion"))),
            };
        }
        let (repo, branch) = self.location()?;
        match self.env.code_host.read_file(&repo, &branch, &path).await? {
            Some(content) => Ok(head(&content, READ_LIMIT)),
            None => Err(Error::not_found(format!(
                "`{path}` does not exist on branch `{branch}`"
            ))),
        }
    }
}

/// The call's arguments as an object (some providers send a JSON string).
fn arguments(call: &ToolCall) -> Result<Value, Error> {
    match &call.arguments {
        Value::Object(_) => Ok(call.arguments.clone()),
        Value::Null => Ok(json!({})),
        Value::String(s) if s.trim().is_empty() => Ok(json!({})),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| Error::invalid("arguments must be a JSON object")),
        _ => Err(Error::invalid("arguments must be a JSON object")),
    }
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, Error> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("missing string argument `{name}`")))
}

fn path_arg(args: &Value) -> Result<RepoPath, Error> {
    RepoPath::parse(str_arg(args, "path")?)
}

/// An error's message without the class prefix where the prefix adds noise.
fn plain(error: &Error) -> String {
    match error {
        Error::InvalidInput(m) | Error::NotFound(m) | Error::Permanent(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Kit;

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments,
        }
    }

    async fn check(role: AgentRole, calls: &[(&str, Value)], expected_last: &str) -> Toolbox {
        let kit = Kit::new();
        kit.code_host
            .seed("repo", "agentry/repo", "app/main.py", "print('hi')\n");
        let mut tools = Toolbox::new(role, kit.tool_env(Some("repo"), Some("agentry/repo")));
        let mut last = String::new();
        for (name, args) in calls {
            last = tools.call(&call(name, args.clone())).await;
        }
        assert!(
            last.contains(expected_last),
            "got `{last}`, want `{expected_last}`"
        );
        tools
    }

    #[tokio::test]
    async fn tools_are_limited_to_the_role() {
        check(
            AgentRole::Qa,
            &[("write_file", json!({"path": "x.py", "content": ""}))],
            "error: tool `write_file` is not available to the qa agent",
        )
        .await;
        check(AgentRole::BusinessAnalyst, &[("read_file", json!({"path": "app/main.py"}))],
            "error: tool `read_file` is not available to the business_analyst agent (available: list_issues)").await;
        check(
            AgentRole::Developer,
            &[("rm_rf", json!({}))],
            "error: tool `rm_rf` is not available to the developer agent",
        )
        .await;
        check(
            AgentRole::Qa,
            &[("read_file", json!({"path": "app/main.py"}))],
            "print('hi')",
        )
        .await;
    }

    #[tokio::test]
    async fn write_file_rejects_paths_that_escape() {
        let tools = check(
            AgentRole::Developer,
            &[(
                "write_file",
                json!({"path": "../../etc/passwd", "content": "x"}),
            )],
            "error: path `../../etc/passwd` rejected: `..` leaves the repository",
        )
        .await;
        assert!(tools.staged().is_empty());
        check(
            AgentRole::Devops,
            &[("write_file", json!({"path": "/etc/passwd", "content": "x"}))],
            "error: path `/etc/passwd` rejected: absolute paths are not allowed",
        )
        .await;
        check(
            AgentRole::Developer,
            &[(
                "write_file",
                json!({"path": ".git/hooks/pre-commit", "content": "x"}),
            )],
            "`.git` names git's own `.git` directory",
        )
        .await;
    }

    #[tokio::test]
    async fn staged_files_are_visible_to_reads_and_listings() {
        let tools = check(
            AgentRole::Developer,
            &[
                (
                    "write_file",
                    json!({"path": "./app//util.py", "content": "X = 1\n"}),
                ),
                ("delete_file", json!({"path": "app/main.py"})),
                ("list_files", json!({})),
            ],
            r#"["app/util.py"]"#,
        )
        .await;
        assert_eq!(tools.staged().len(), 2);
        check(
            AgentRole::Developer,
            &[
                (
                    "write_file",
                    json!({"path": "app/util.py", "content": "X = 1\n"}),
                ),
                ("read_file", json!({"path": "app/util.py"})),
            ],
            "X = 1",
        )
        .await;
        check(
            AgentRole::Developer,
            &[("read_file", json!({"path": "nope.py"}))],
            "error: `nope.py` does not exist on branch `agentry/repo`",
        )
        .await;
        check(
            AgentRole::Developer,
            &[("write_file", json!({"path": "a.py"}))],
            "error: missing string argument `content`",
        )
        .await;
        check(
            AgentRole::Developer,
            &[(
                "write_file",
                Value::String("{\"path\":\"a.py\",\"content\":\"1\"}".into()),
            )],
            "staged `a.py`",
        )
        .await;
    }
}

//! The tools agents call through the LLM's native tool calling, and the
//! per-role registry. A tool never fails the node: every error goes back to
//! the model as `error: ...` text, so it can correct itself.
//!
//! `write_file` and `delete_file` stage a change only when it will land:
//! the path is one git accepts (`RepoPath`), the file and the change set
//! fit the code host's size limits, the role may write the path, and the
//! change leaves a tree (no file where the branch has a directory, or the
//! reverse). Anything else is refused with the reason, and nothing is
//! staged, so "staged" is a promise the commit keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agentry_core::{
    commit_size_problem, file_size_problem, AgentRole, CodeHost, Error, RepoPath, ToolCall,
    ToolDefinition, Tracker, Wiki,
};
use serde_json::{json, Value};

use crate::context::{compact, head};
use crate::output::is_delivery_path;

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
    /// Every tool, each once: what [`Tool::by_name`] searches (a role is
    /// offered only its [`Tool::for_role`]).
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
    /// The workflow owner's tracker, which `list_issues` reads.
    pub tracker: Arc<dyn Tracker>,
    /// The workflow owner's wiki, which `list_pages` reads.
    pub wiki: Arc<dyn Wiki>,
    /// The workflow owner's code host, which the file tools read (writes
    /// are only staged; the agent commits them).
    pub code_host: Arc<dyn CodeHost>,
    /// Repository the file tools read (None before it exists).
    pub repository: Option<String>,
    /// Branch the file tools read.
    pub branch: Option<String>,
    /// Tracker project key `list_issues` reads when the model names none
    /// (None before the analyst has chosen one).
    pub project: Option<String>,
    /// Wiki space key `list_pages` reads (the project key).
    pub space: Option<String>,
}

/// A role's tools for one node run, with the change set `write_file` and
/// `delete_file` stage (`None` content = deletion).
pub struct Toolbox {
    role: AgentRole,
    env: ToolEnv,
    staged: BTreeMap<RepoPath, Option<String>>,
    /// Paths this run may read but not write, with the reason.
    read_only: BTreeMap<String, String>,
}

impl Toolbox {
    /// The toolbox of `role`.
    pub fn new(role: AgentRole, env: ToolEnv) -> Self {
        Toolbox {
            role,
            env,
            staged: BTreeMap::new(),
            read_only: BTreeMap::new(),
        }
    }

    /// This toolbox with `paths` refused to `write_file` and `delete_file`
    /// for `reason` (the developer's copies of QA's tests would not be
    /// committed, so they are not staged either).
    pub fn with_read_only<'a>(
        mut self,
        paths: impl IntoIterator<Item = &'a str>,
        reason: &str,
    ) -> Self {
        for path in paths {
            self.read_only.insert(path.to_string(), reason.to_string());
        }
        self
    }

    /// Problems of a final answer whose `files` (path, content) are
    /// committed together with what this run staged (an answer's file
    /// replaces a staged one of the same path): all of them must fit in
    /// [`agentry_core::MAX_COMMIT_BYTES`]. (Each file's own limit is the
    /// answer's rule, `AgentOutput::problems`.) One line per problem, for
    /// the repair round.
    pub fn answer_problems(&self, files: &[(&str, &str)]) -> Vec<String> {
        let mut problems = Vec::new();
        let answered: BTreeSet<&str> = files.iter().map(|(path, _)| *path).collect();
        let staged: usize = self
            .staged
            .iter()
            .filter(|(path, _)| !answered.contains(path.as_str()))
            .map(|(_, content)| content.as_ref().map_or(0, String::len))
            .sum();
        let total = staged + files.iter().map(|(_, c)| c.len()).sum::<usize>();
        if let Some(problem) = commit_size_problem(total) {
            problems.push(if staged > 0 {
                format!("{problem} (the files you staged with `write_file` count too)")
            } else {
                problem
            });
        }
        problems
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
                let content = str_arg(&args, "content")?;
                self.check_writable(&path)?;
                if let Some(problem) = file_size_problem(path.as_str(), content.len()) {
                    return Err(Error::invalid(format!("{problem}; nothing staged")));
                }
                let others: usize = self
                    .staged
                    .iter()
                    .filter(|(p, _)| **p != path)
                    .map(|(_, c)| c.as_ref().map_or(0, String::len))
                    .sum();
                if let Some(problem) = commit_size_problem(others + content.len()) {
                    return Err(Error::invalid(format!(
                        "`{path}` not staged: with it, {problem}"
                    )));
                }
                if let Some(files) = self.view().await? {
                    check_tree_shape(&path, &files)?;
                }
                let size = content.len();
                self.staged.insert(path.clone(), Some(content.to_string()));
                Ok(format!(
                    "staged `{path}` ({size} bytes); it is committed with your final answer"
                ))
            }
            Tool::DeleteFile => {
                let path = path_arg(&args)?;
                self.check_writable(&path)?;
                if let Some(files) = self.view().await? {
                    if !files.contains(path.as_str()) {
                        return Err(Error::not_found(format!(
                            "`{path}` is not a file on the branch; nothing to delete"
                        )));
                    }
                }
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
        let files = self
            .view()
            .await?
            .ok_or_else(|| Error::invalid("no repository exists yet"))?;
        Ok(compact(&files))
    }

    /// The files of the branch with the staged changes applied; None before
    /// the repository exists.
    async fn view(&self) -> Result<Option<BTreeSet<String>>, Error> {
        let Ok((repo, branch)) = self.location() else {
            return Ok(None);
        };
        let mut files: BTreeSet<String> = self
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
        Ok(Some(files))
    }

    /// Refuses a path this role, or this run, may not write.
    fn check_writable(&self, path: &RepoPath) -> Result<(), Error> {
        if let Some(reason) = self.read_only.get(path.as_str()) {
            return Err(Error::invalid(format!(
                "`{path}` is read-only here: {reason}"
            )));
        }
        if self.role == AgentRole::Devops && !is_delivery_path(path.as_str()) {
            return Err(Error::invalid(format!(
                "`{path}` is not a delivery file: DevOps writes only `.gitlab-ci.yml`, \
                 `.gitlab/...`, `Dockerfile*`, `.dockerignore`, compose files and files under \
                 `deploy/`, `k8s/`, `helm/` or `charts/`"
            )));
        }
        Ok(())
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
            // QA tests the specification, not the code: a Python file
            // outside the tests is shown as its interface (signatures and
            // docstrings), never its bodies.
            Some(content)
                if self.role == AgentRole::Qa
                    && path.as_str().ends_with(".py")
                    && !crate::triage::is_test_file(path.as_str()) =>
            {
                let files = std::collections::BTreeMap::from([(path.to_string(), content)]);
                let interface =
                    crate::pycheck::interface(&files, std::time::Duration::from_secs(20)).await?;
                Ok(head(
                    &format!("(the interface of `{path}`: signatures and docstrings; bodies are not shown to QA)\n{interface}"),
                    READ_LIMIT,
                ))
            }
            Some(content) => Ok(head(&content, READ_LIMIT)),
            None => Err(Error::not_found(format!(
                "`{path}` does not exist on branch `{branch}`"
            ))),
        }
    }
}

/// Refuses writing `path` where `files` (the branch with the staged
/// changes) would then hold a path as both a file and a directory, which
/// no git tree can: the code host would refuse the whole commit.
fn check_tree_shape(path: &RepoPath, files: &BTreeSet<String>) -> Result<(), Error> {
    let p = path.as_str();
    let below = format!("{p}/");
    if let Some(inside) = files
        .range(below.clone()..)
        .next()
        .filter(|f| f.starts_with(&below))
    {
        return Err(Error::invalid(format!(
            "`{p}` is a directory on the branch (it holds `{inside}`); write the files inside \
             it, or delete them first"
        )));
    }
    let mut prefix = String::new();
    for part in p.split('/').take(p.split('/').count().saturating_sub(1)) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if files.contains(&prefix) {
            return Err(Error::invalid(format!(
                "`{prefix}` is a file on the branch, so `{p}` cannot be created under it; \
                 delete `{prefix}` first"
            )));
        }
    }
    Ok(())
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
    use agentry_core::MAX_FILE_BYTES;

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments,
        }
    }

    /// `write_file` of `size` bytes at `path`; the tool's answer.
    async fn write(tools: &mut Toolbox, path: &str, size: usize) -> String {
        let content = "x".repeat(size);
        tools
            .call(&call(
                "write_file",
                json!({"path": path, "content": content}),
            ))
            .await
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
        // QA reads a code file as its interface only.
        check(
            AgentRole::Qa,
            &[("read_file", json!({"path": "app/main.py"}))],
            "(the interface of `app/main.py`: signatures and docstrings; bodies are not shown to QA)",
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

    /// A `write_file` to `.GIT/config` was answered "staged ... it is
    /// committed", and git then dropped it: every spelling git takes for
    /// its own directory is refused, and nothing is staged.
    #[tokio::test]
    async fn write_file_to_any_spelling_of_the_git_directory_stages_nothing() {
        for (path, component) in [
            (".GIT/config", ".GIT"),
            ("sub/.Git/hooks/x", ".Git"),
            (".git. /config", ".git. "),
            ("GIT~1/config", "GIT~1"),
        ] {
            let tools = check(
                AgentRole::Developer,
                &[("write_file", json!({"path": path, "content": "[core]"}))],
                &format!("error: path `{path}` rejected: `{component}` names git's own"),
            )
            .await;
            assert!(tools.staged().is_empty(), "{path}");
        }
    }

    /// A 20 MiB file an agent wrote was committed: `write_file` refuses a
    /// file, or a change set, over the code host's limits, saying so.
    #[tokio::test]
    async fn writes_over_the_size_limits_are_refused_so_the_model_can_repair() {
        let kit = Kit::new();
        let mut tools = Toolbox::new(
            AgentRole::Developer,
            kit.tool_env(Some("repo"), Some("agentry/repo")),
        );
        let result = write(&mut tools, "dump.json", 20 * 1024 * 1024).await;
        assert!(
            result.starts_with("error: `dump.json` is 20 MiB (20971520 bytes), over the 1 MiB")
                && result.ends_with("nothing staged"),
            "{result}"
        );
        for i in 0..4 {
            let result = write(&mut tools, &format!("part-{i}.txt"), MAX_FILE_BYTES).await;
            assert!(result.starts_with("staged"), "{result}");
        }
        // Writing a staged path again replaces it: it is not counted twice.
        let result = write(&mut tools, "part-0.txt", MAX_FILE_BYTES).await;
        assert!(result.starts_with("staged"), "{result}");
        let result = write(&mut tools, "one-more.txt", 1).await;
        assert!(
            result.starts_with(
                "error: `one-more.txt` not staged: with it, the files of one commit hold 4.0 MiB"
            ),
            "{result}"
        );
        assert_eq!(tools.staged().len(), 4);
        assert!(!tools
            .staged()
            .contains_key(&RepoPath::parse("dump.json").unwrap()));
    }

    #[tokio::test]
    async fn an_answer_is_checked_with_what_was_staged() {
        let kit = Kit::new();
        let mut tools = Toolbox::new(
            AgentRole::Developer,
            kit.tool_env(Some("repo"), Some("agentry/repo")),
        );
        let big = "x".repeat(MAX_FILE_BYTES);
        for i in 0..3 {
            let result = tools
                .call(&call(
                    "write_file",
                    json!({"path": format!("s{i}"), "content": big}),
                ))
                .await;
            assert!(result.starts_with("staged"), "{result}");
        }
        assert!(tools.answer_problems(&[("a", &big)]).is_empty());
        assert!(
            tools
                .answer_problems(&[("s0", &big), ("s1", &big)])
                .is_empty(),
            "an answered file replaces the staged one of its path"
        );
        let problems = tools.answer_problems(&[("a", &big), ("b", "y")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("4.0 MiB (4194305 bytes) in all")
                && problems[0].contains("the files you staged with `write_file` count too"),
            "{problems:?}"
        );
    }

    /// A write that git cannot put in a tree would fail the whole commit
    /// after "staged" was said: it is refused when it is made.
    #[tokio::test]
    async fn writes_that_would_not_leave_a_tree_are_refused() {
        check(
            AgentRole::Developer,
            &[("write_file", json!({"path": "app", "content": "x"}))],
            "error: `app` is a directory on the branch (it holds `app/main.py`)",
        )
        .await;
        check(
            AgentRole::Developer,
            &[(
                "write_file",
                json!({"path": "app/main.py/x.py", "content": "x"}),
            )],
            "error: `app/main.py` is a file on the branch, so `app/main.py/x.py` cannot be created",
        )
        .await;
        let tools = check(
            AgentRole::Developer,
            &[
                ("delete_file", json!({"path": "app/main.py"})),
                (
                    "write_file",
                    json!({"path": "app/main.py/x.py", "content": "x"}),
                ),
            ],
            "staged `app/main.py/x.py`",
        )
        .await;
        assert_eq!(tools.staged().len(), 2);
        check(
            AgentRole::Developer,
            &[("delete_file", json!({"path": "app/gone.py"}))],
            "error: `app/gone.py` is not a file on the branch; nothing to delete",
        )
        .await;
    }

    /// DevOps's staged files that were not delivery files were reported
    /// staged and then left out of the commit.
    #[tokio::test]
    async fn devops_stages_delivery_files_only() {
        let tools = check(
            AgentRole::Devops,
            &[("write_file", json!({"path": "app/main.py", "content": "x"}))],
            "error: `app/main.py` is not a delivery file",
        )
        .await;
        assert!(tools.staged().is_empty());
        check(
            AgentRole::Devops,
            &[(
                "write_file",
                json!({"path": "deploy/app.yaml", "content": "x"}),
            )],
            "staged `deploy/app.yaml`",
        )
        .await;
    }

    #[tokio::test]
    async fn read_only_paths_are_not_staged() {
        let kit = Kit::new();
        let mut tools = Toolbox::new(
            AgentRole::Developer,
            kit.tool_env(Some("repo"), Some("agentry/repo")),
        )
        .with_read_only(["tests/acceptance/test_a.py"], "it is QA's");
        for name in ["write_file", "delete_file"] {
            let result = tools
                .call(&call(
                    name,
                    json!({"path": "tests/acceptance/test_a.py", "content": "x"}),
                ))
                .await;
            assert_eq!(
                result,
                "error: `tests/acceptance/test_a.py` is read-only here: it is QA's"
            );
        }
        assert!(tools.staged().is_empty());
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

//! Developer: design + code -> one commit per round on the workflow's
//! branch, a merge request on the first round; on a QA failure, a fix.

use std::collections::BTreeMap;

use agentry_core::{
    CommitRequest, Error, FileChange, NewMergeRequest, Result, StateDelta, WorkflowState,
};
use serde_json::{json, Value};

use crate::agents::business::analysis_context;
use crate::agents::{change_set, comment_on_epics, move_stories, output};
use crate::context::{self, compact, head, MergeRequestRecord, ProjectContext, QaFailure};
use crate::output::{FileSpec, Implementation};
use crate::runner::AgentEnv;
use crate::triage::{self, Triage, REWRITE_TEMPERATURE};

/// Largest QA test file shown to the developer.
const TEST_FILE_LIMIT: usize = 8 * 1024;

/// Runs the developer.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let host = &env.ports.code_host;
    let repo = host
        .ensure_repository(&project.repository, &project.name)
        .await?;
    if project.target_branch != repo.default_branch {
        host.ensure_branch(&repo.name, &project.target_branch, &repo.default_branch)
            .await?;
    }
    host.ensure_branch(&repo.name, &project.branch, &project.target_branch)
        .await?;
    let files_now = if env.ctx.visit > 0 {
        host.list_files(&repo.name, &project.branch).await?
    } else {
        Vec::new()
    };
    // The branch is read once: its text is the message's code listing (in
    // compact mode) and the tree the static checks resolve imports in.
    let on_branch = if env.ctx.visit > 0 {
        env.source_files(&repo.name, &project.branch, &files_now, |p| {
            !p.starts_with(context::ACCEPTANCE_DIR)
        })
        .await?
    } else {
        BTreeMap::new()
    };
    // A failure still there, the same way, after the last fix: its code is
    // written again from scratch, more freely, with its last version not
    // shown (a third patch of it rarely does better than the second).
    let triage_now: Option<Triage> = context::shared(state, context::QA_TRIAGE)?;
    let triage_seen: Option<Triage> = context::shared(state, context::DEVELOPER_TRIAGE_SEEN)?;
    let (stuck, rewrite) = match (&triage_now, &triage_seen) {
        (Some(now), Some(seen)) if env.ctx.visit > 0 => {
            let stuck = triage::repeated(now, seen);
            let code_paths: Vec<&str> = on_branch
                .keys()
                .filter(|p| p.ends_with(".py"))
                .map(String::as_str)
                .collect();
            let rewrite = triage::files_to_rewrite(&stuck, &code_paths);
            (triage::describe(&stuck), rewrite)
        }
        _ => (String::new(), Vec::new()),
    };
    if !rewrite.is_empty() {
        env.ctx.report(
            format!(
                "failing the same way after a fix: writing {} again from scratch",
                rewrite.join(", ")
            ),
            None,
        );
    }
    let listing = if env.ctx.visit > 0 {
        let shown: BTreeMap<String, String> = on_branch
            .iter()
            .filter(|(p, _)| !rewrite.contains(p))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        env.listing_of(&shown)
    } else {
        None
    };
    let mut user = user_message(
        state,
        &project,
        env.ctx.visit,
        &files_now,
        listing.as_deref(),
    )?;
    user.push_str(&rewrite_request(&stuck, &rewrite));

    // QA's acceptance tests are QA's: the tools refuse to stage them, and
    // a copy in the answer (a small model echoes what it was shown) is not
    // committed.
    let qa_tests: Vec<FileSpec> =
        context::shared(state, context::QA_TEST_FILES)?.unwrap_or_default();
    let mut tools = env
        .toolbox(Some(&repo.name), Some(&project.branch), Some(&project.key))
        .with_read_only(
            qa_tests.iter().map(|t| t.path.as_str()),
            "it is one of QA's acceptance tests; fix the code instead",
        );
    let code: BTreeMap<String, String> = on_branch
        .into_iter()
        .filter(|(p, _)| p.ends_with(".py"))
        .collect();
    let package = project_package(&state.requirements, &project.repository);
    let mut conversation = env.conversation()?;
    if !rewrite.is_empty() {
        conversation = conversation.with_first_temperature(REWRITE_TEMPERATURE);
    }
    let (implementation, _) = conversation
        .run_checked(
            env.system_prompt()?,
            user,
            &mut tools,
            &StaticCheck {
                code: &code,
                package: &package,
                acceptance: &qa_tests,
                qa_breaks: qa_breaks(&code, &[], &qa_tests, &package).await,
            },
        )
        .await?;
    let usage = conversation.into_usage();

    let mut changes = change_set(tools.staged(), &implementation.files)?;
    let mut rewrites = arrange(&mut changes, &code, &package);
    let answered = written(&changes);
    if let Some(checked) = static_check(&code, &answered, &package).await {
        // Repaired files: those of the answer, and the package's
        // `__init__.py` when it gained exports.
        for (path, content) in &checked.files {
            if let Ok(path) = agentry_core::RepoPath::parse(path) {
                changes.insert(path, Some(content.clone()));
            }
        }
        for rewrite in &checked.rewrites {
            tracing::info!(path = %rewrite.path, rule = %rewrite.rule, detail = %rewrite.detail, "The developer's file repaired.");
        }
        rewrites.extend(checked.rewrites);
    }
    let mut left_out = Vec::new();
    for test in &qa_tests {
        if let Ok(path) = agentry_core::RepoPath::parse(&test.path) {
            if changes.remove(&path).is_some() {
                left_out.push(test.path.clone());
            }
        }
    }
    // QA's folder is QA's, whatever the file.
    changes.retain(|path, _| {
        let theirs = path.to_string().starts_with(context::ACCEPTANCE_DIR);
        if theirs {
            left_out.push(path.to_string());
        }
        !theirs
    });
    if !left_out.is_empty() {
        tracing::warn!(files = ?left_out, "the developer's changes to QA's tests are left out");
    }
    if changes.is_empty() {
        return Err(Error::permanent(if left_out.is_empty() {
            "developer returned no files and staged none; nothing to commit".to_string()
        } else {
            format!(
                "developer changed only QA's acceptance tests ({}), which it may not; nothing to commit",
                left_out.join(", ")
            )
        }));
    }
    let committed_files: Vec<FileSpec> = changes
        .iter()
        .filter_map(|(p, c)| {
            c.as_ref().map(|c| FileSpec {
                path: p.to_string(),
                content: c.clone(),
            })
        })
        .collect();
    env.ctx.report("committing", None);
    let commit = host
        .commit_files(CommitRequest {
            repository: repo.name.clone(),
            branch: project.branch.clone(),
            files: changes
                .into_iter()
                .map(|(path, content)| FileChange { path, content })
                .collect(),
            message: implementation.commit_message.clone(),
            author: "Agentry Developer".into(),
            idempotency_key: env.key().child("commit"),
        })
        .await?;

    let existing: Option<MergeRequestRecord> = context::shared(state, context::DEVELOPER_MR)?;
    let merge_request = match existing {
        Some(mr) => mr,
        None => {
            let summary = context::output(state, "business_analyst.analysis")
                .and_then(|a| a["summary"].as_str())
                .unwrap_or(&implementation.summary);
            let title = head(summary.lines().next().unwrap_or(summary), 120);
            let mr = host
                .create_merge_request(NewMergeRequest {
                    repository: repo.name.clone(),
                    source_branch: project.branch.clone(),
                    target_branch: project.target_branch.clone(),
                    title,
                    description: format!("{}\n\n{}", implementation.summary, implementation.design),
                    idempotency_key: env.key().child("merge_request"),
                })
                .await?;
            MergeRequestRecord {
                repository: mr.repository,
                id: mr.id,
                state: serde_json::to_value(mr.state)?
                    .as_str()
                    .unwrap_or("opened")
                    .to_string(),
            }
        }
    };

    let epics = context::epics(state)?;
    if env.ctx.visit == 0 {
        move_stories(env.ports.tracker.as_ref(), &epics, "In Progress", true).await?;
    }
    let short: String = commit.sha.chars().take(8).collect();
    comment_on_epics(
        env,
        &epics,
        "comment:round",
        &format!("round {}: {short} {}", env.round(), implementation.summary),
    )
    .await?;

    let mut commits: Vec<String> =
        context::shared(state, context::DEVELOPER_COMMITS)?.unwrap_or_default();
    if !commits.contains(&commit.sha) {
        commits.push(commit.sha.clone());
    }
    let mut recorded = serde_json::to_value(&implementation)?;
    recorded["files"] = serde_json::to_value(&committed_files)?;
    recorded["commit"] = json!(commit.sha);
    recorded["round"] = json!(env.round());
    recorded["rewrites"] = serde_json::to_value(&rewrites)?;
    recorded["written_from_scratch"] = json!(rewrite);
    let mut shared = BTreeMap::from([
        (context::DEVELOPER_BRANCH.to_string(), json!(project.branch)),
        (context::DEVELOPER_COMMITS.to_string(), json!(commits)),
        (
            context::DEVELOPER_MR.to_string(),
            serde_json::to_value(&merge_request)?,
        ),
    ]);
    if let Some(seen) = &triage_now {
        shared.insert(
            context::DEVELOPER_TRIAGE_SEEN.to_string(),
            serde_json::to_value(seen)?,
        );
    }
    Ok(StateDelta {
        agent_outputs: vec![output("developer", "implementation", &recorded)?],
        shared_context: shared,
        gitlab_repos: vec![repo.name],
        usage,
        ..StateDelta::default()
    })
}

/// How long one static check may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The developer's answer, checked before it is accepted: the static
/// checks' problems (a file that does not compile, an import that does
/// not resolve, a stub, a test that checks nothing) go back to it.
struct StaticCheck<'a> {
    code: &'a BTreeMap<String, String>,
    package: &'a str,
    /// QA's acceptance tests on the branch: what they import must stay.
    acceptance: &'a [FileSpec],
    /// Where those tests break against the branch as it is, checked once
    /// per node run ([`qa_breaks`]).
    qa_breaks: Option<std::collections::BTreeSet<(String, u32, String)>>,
}

#[async_trait::async_trait]
impl crate::conversation::AnswerCheck<Implementation> for StaticCheck<'_> {
    /// A file that still breaks a rule after the repair rounds is
    /// committed: the test run shows what it breaks, and the next round
    /// gets it with the output, rather than the workflow failing here.
    fn accept_after_repairs(&self) -> bool {
        true
    }

    async fn problems(
        &self,
        answer: &Implementation,
        staged: &crate::conversation::Staged,
    ) -> Vec<String> {
        let files = match change_set(staged, &answer.files) {
            Ok(mut changes) => {
                arrange(&mut changes, self.code, self.package);
                written(&changes)
            }
            Err(_) => answer.files.clone(),
        };
        let mut problems: Vec<String> = static_check(self.code, &files, self.package)
            .await
            .map(|r| {
                r.problems
                    .iter()
                    .map(|p| format!("`{}` line {}: {}", p.path, p.line, p.message))
                    .collect()
            })
            .unwrap_or_default();
        problems.extend(
            lost_imports(
                self.code,
                &files,
                self.acceptance,
                self.package,
                self.qa_breaks.as_ref(),
            )
            .await,
        );
        problems
    }
}

/// Where QA's acceptance tests would break against the branch's `code`
/// with `files` written over it (none: the branch as it is): the imports,
/// calls and methods in them that do not resolve, and the imports the
/// checker would have to point elsewhere. None when the check did not run
/// or there is no Python test.
async fn qa_breaks(
    code: &BTreeMap<String, String>,
    files: &[FileSpec],
    acceptance: &[FileSpec],
    package: &str,
) -> Option<std::collections::BTreeSet<(String, u32, String)>> {
    use crate::pycheck::rules;
    let tests: Vec<&FileSpec> = acceptance
        .iter()
        .filter(|f| f.path.ends_with(".py"))
        .collect();
    if tests.is_empty() {
        return None;
    }
    let mut tree = code.clone();
    for file in files {
        let path = file.path.trim_start_matches("./").to_string();
        if !path.starts_with(context::ACCEPTANCE_DIR) {
            tree.insert(path, crate::output::file_text(&file.path, &file.content));
        }
    }
    for test in &tests {
        tree.insert(test.path.clone(), test.content.clone());
    }
    let input = crate::pycheck::PyCheckInput {
        tree,
        check: tests.iter().map(|t| t.path.clone()).collect(),
        package: Some(package.to_string()),
        requirement: None,
    };
    let report = crate::pycheck::check_python(&input, CHECK_TIMEOUT)
        .await
        .ok()?;
    let problems = report
        .problems
        .into_iter()
        .filter(|p| {
            matches!(
                p.rule.as_str(),
                rules::UNRESOLVED_IMPORT | rules::WRONG_ARGUMENTS | rules::MISSING_METHOD
            )
        })
        .map(|p| (p.path, p.line, p.message));
    let moved = report
        .rewrites
        .into_iter()
        .filter(|r| r.rule == rules::UNRESOLVED_FROM_IMPORT)
        .map(|r| (r.path, r.line, r.detail));
    Some(problems.chain(moved).collect())
}

/// What QA's acceptance tests use of the code that `files` would take
/// away (a module, name, signature or method renamed or dropped in a
/// rewrite), against `before` (the branch's own breaks, [`qa_breaks`]
/// once per node run), as problems for the developer: the tests are QA's
/// and stay, so a test run would only fail in QA's test code, and triage
/// would send it to QA, whose tests did nothing wrong.
async fn lost_imports(
    code: &BTreeMap<String, String>,
    files: &[FileSpec],
    acceptance: &[FileSpec],
    package: &str,
    before: Option<&std::collections::BTreeSet<(String, u32, String)>>,
) -> Vec<String> {
    let Some(was) = before else {
        return Vec::new();
    };
    if files.is_empty() {
        return Vec::new();
    }
    let Some(now) = qa_breaks(code, files, acceptance, package).await else {
        return Vec::new();
    };
    now.difference(was)
        .map(|(path, line, what)| {
            format!(
                "QA's acceptance test `{path}` line {line} would no longer import or call the code as it does: {what}. Keep every module, name and signature QA's tests use (they stay as they are)"
            )
        })
        .collect()
}

/// The mechanical moves of a developer's change set, before the static
/// checks: the package into the directory its import name says
/// ([`package_where_imported`]), then the tests where the runner looks
/// ([`tests_where_they_run`]).
fn arrange(
    changes: &mut crate::conversation::Staged,
    code: &BTreeMap<String, String>,
    package: &str,
) -> Vec<crate::pycheck::Rewrite> {
    let mut rewrites = package_where_imported(changes, code, package);
    rewrites.extend(tests_where_they_run(changes));
    rewrites
}

/// The package written under a directory no `import` can name
/// (`number-theory/` for `numtheory`) moved to `<package>/`: when the
/// change writes Python files under exactly one top-level directory other
/// than `tests/`, that one is not an import name, and neither the change
/// nor the branch has anything under `<package>/`. Each move is a
/// rewrite for the history (rule [`crate::pycheck::rules::MOVED_PACKAGE`]).
fn package_where_imported(
    changes: &mut crate::conversation::Staged,
    code: &BTreeMap<String, String>,
    package: &str,
) -> Vec<crate::pycheck::Rewrite> {
    let home = format!("{package}/");
    let taken = changes.keys().any(|p| p.to_string().starts_with(&home))
        || code.keys().any(|p| p.starts_with(&home));
    if taken || package.is_empty() {
        return Vec::new();
    }
    let dirs: std::collections::BTreeSet<String> = changes
        .iter()
        .filter(|(p, c)| c.is_some() && p.to_string().ends_with(".py"))
        .filter_map(|(p, _)| {
            p.to_string()
                .split_once('/')
                .map(|(top, _)| top.to_string())
        })
        .filter(|top| !matches!(top.as_str(), "tests" | "test" | "src"))
        .collect();
    // A directory with an import name of its own is a package the
    // developer named (the demo's `shortener/`): only one no `import` can
    // name moves.
    let importable = |name: &str| {
        name.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    if dirs.iter().all(|d| importable(d)) {
        return Vec::new();
    }
    if dirs.len() != 1 {
        return Vec::new();
    }
    let Some(dir) = dirs.into_iter().next() else {
        return Vec::new();
    };
    let prefix = format!("{dir}/");
    let moving: Vec<agentry_core::RepoPath> = changes
        .keys()
        .filter(|p| p.to_string().starts_with(&prefix))
        .cloned()
        .collect();
    let mut rewrites = Vec::new();
    for old in moving {
        let rest = old.to_string()[prefix.len()..].to_string();
        let Ok(new) = agentry_core::RepoPath::parse(&format!("{home}{rest}")) else {
            continue;
        };
        if let Some(content) = changes.remove(&old) {
            rewrites.push(crate::pycheck::Rewrite {
                path: new.to_string(),
                line: 1,
                rule: crate::pycheck::rules::MOVED_PACKAGE.to_string(),
                detail: format!(
                    "moved from `{old}` to `{new}`: the package's import name is `{package}`"
                ),
            });
            changes.insert(new, content);
        }
    }
    rewrites
}

/// The developer's Python test files outside the top-level `tests/`
/// (`todo_cli/tests/test_todo.py`, `test_todo.py`) moved into it, where
/// the test runner looks once QA's `tests/acceptance/` is there: elsewhere
/// they would never run. Relative imports become absolute ones from the
/// file's old place (`from ..todo import Todo` in `todo_cli/tests/` becomes
/// `from todo_cli.todo import Todo`), and an empty `__init__.py` left alone
/// in a test directory goes with them. Each move is a rewrite for the
/// history (rule [`crate::pycheck::rules::MOVED_TEST`]).
fn tests_where_they_run(changes: &mut crate::conversation::Staged) -> Vec<crate::pycheck::Rewrite> {
    let misplaced: Vec<agentry_core::RepoPath> = changes
        .iter()
        .filter(|(path, content)| {
            let path = path.to_string();
            let name = path.rsplit('/').next().unwrap_or(&path);
            content.is_some()
                && !path.starts_with("tests/")
                && name.ends_with(".py")
                && (name.starts_with("test_") || name.ends_with("_test.py"))
        })
        .map(|(path, _)| path.clone())
        .collect();
    let mut rewrites = Vec::new();
    let mut emptied = std::collections::BTreeSet::new();
    for old in misplaced {
        let old_text = old.to_string();
        let (dir, name) = old_text.rsplit_once('/').unwrap_or(("", &old_text));
        let Ok(new) = agentry_core::RepoPath::parse(&format!("tests/{name}")) else {
            continue;
        };
        if changes.contains_key(&new) {
            continue; // the developer wrote both: keep its own choice
        }
        let Some(Some(content)) = changes.remove(&old) else {
            continue;
        };
        let package: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        let content = absolute_imports(&content, &package);
        rewrites.push(crate::pycheck::Rewrite {
            path: new.to_string(),
            line: 1,
            rule: crate::pycheck::rules::MOVED_TEST.to_string(),
            detail: format!(
                "moved from `{old_text}` to `{new}`, where the test runner discovers tests"
            ),
        });
        changes.insert(new, Some(content));
        if !dir.is_empty() {
            emptied.insert(dir.to_string());
        }
    }
    for dir in emptied {
        let init = format!("{dir}/__init__.py");
        let alone = !changes
            .keys()
            .any(|p| p.to_string().starts_with(&format!("{dir}/")) && p.to_string() != init);
        let is_tests_dir = matches!(dir.rsplit('/').next(), Some("tests" | "test"));
        if let Ok(path) = agentry_core::RepoPath::parse(&init) {
            if alone
                && is_tests_dir
                && matches!(changes.get(&path), Some(Some(c)) if c.trim().is_empty())
            {
                changes.remove(&path);
            }
        }
    }
    rewrites
}

/// `text` with each relative `from` import made absolute, as seen from a
/// module of `package` (its directory's parts): `from ..todo import Todo`
/// in `todo_cli/tests` is `from todo_cli.todo import Todo`. An import that
/// climbs above the top is left as it is (the static checks report it).
fn absolute_imports(text: &str, package: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        let rest = &line[indent..];
        let rewritten = rest.strip_prefix("from ").and_then(|after| {
            let dots = after.len() - after.trim_start_matches('.').len();
            if dots == 0 || dots > package.len() {
                return None;
            }
            let after = &after[dots..];
            let (module, tail) = after.split_once(" import ")?;
            let module = module.trim();
            let mut parts: Vec<&str> = package[..package.len() + 1 - dots].to_vec();
            if !module.is_empty() {
                parts.push(module);
            }
            Some(format!("from {} import {tail}", parts.join(".")))
        });
        out.push_str(&line[..indent]);
        out.push_str(rewritten.as_deref().unwrap_or(rest));
    }
    out
}

/// The files a change set writes, as file specs.
fn written(changes: &crate::conversation::Staged) -> Vec<FileSpec> {
    changes
        .iter()
        .filter_map(|(p, c)| {
            c.as_ref().map(|c| FileSpec {
                path: p.to_string(),
                content: c.clone(),
            })
        })
        .collect()
}

/// The static checks and mechanical repairs of the developer's Python
/// files (`files`, on top of the branch's `code`); None where they could
/// not run (no Python file, no `python3`), which the test run then shows.
async fn static_check(
    code: &BTreeMap<String, String>,
    files: &[FileSpec],
    package: &str,
) -> Option<crate::pycheck::PyCheckReport> {
    let mut tree = code.clone();
    let mut check = Vec::new();
    for file in files {
        let path = file.path.trim_start_matches("./").to_string();
        tree.insert(
            path.clone(),
            crate::output::file_text(&file.path, &file.content),
        );
        if path.ends_with(".py") && !path.starts_with(context::ACCEPTANCE_DIR) {
            check.push(path);
        }
    }
    if check.is_empty() {
        return None;
    }
    let input = crate::pycheck::PyCheckInput {
        tree,
        check,
        package: Some(package.to_string()),
        requirement: None,
    };
    match crate::pycheck::check_python(&input, CHECK_TIMEOUT).await {
        Ok(report) => Some(report),
        Err(error) => {
            tracing::warn!(%error, "The static checks of the developer's files did not run.");
            None
        }
    }
}

/// The developer's user message: requirement, scope and stories; on a later
/// visit also QA's failure output, the acceptance tests that failed, and the
/// files now on the branch (with their code in compact mode, where the
/// developer has no tools to read them).
pub(crate) fn user_message(
    state: &WorkflowState,
    project: &ProjectContext,
    visit: u32,
    files_now: &[String],
    code: Option<&str>,
) -> Result<String> {
    let mut m = format!("## Requirement\n{}\n\n", state.requirements.trim());
    m.push_str(&analysis_context(state));
    m.push_str(&format!(
        "\n## Repository\n`{}`, branch `{}`; in Python its package is `{}`\n",
        project.repository,
        project.branch,
        project_package(&state.requirements, &project.repository)
    ));
    if visit == 0 {
        m.push_str("\nImplement the stories. Include unit tests under `tests/`. Answer as the system prompt says.");
        return Ok(m);
    }
    m.push_str(&format!(
        "\n## Round {}: QA's acceptance tests FAILED on your last commit\n",
        visit + 1
    ));
    if let Some(triage) = context::shared::<crate::triage::Triage>(state, context::QA_TRIAGE)? {
        let mine = triage.for_owner(crate::triage::Owner::Developer);
        if !mine.is_empty() {
            m.push_str(&format!(
                "These tests fail on your code:\n{}\n",
                crate::triage::describe(&mine)
            ));
        }
    }
    match context::shared::<QaFailure>(state, context::QA_FAILURE)? {
        Some(f) => {
            let code = f
                .exit_code
                .map_or_else(|| "none (killed)".to_string(), |c| c.to_string());
            m.push_str(&format!(
                "Command: `{}`\nExit code: {code}\n\n### stdout (tail)\n```\n{}\n```\n\n### stderr (tail)\n```\n{}\n```\n",
                f.command, f.stdout_tail, f.stderr_tail
            ));
        }
        None => m.push_str("(QA recorded no failure output.)\n"),
    }
    let tests: Vec<FileSpec> = context::shared(state, context::QA_TEST_FILES)?.unwrap_or_default();
    if !tests.is_empty() {
        m.push_str(
            "\n### QA's acceptance tests (on the branch under `tests/acceptance/`; they are QA's, you cannot change them)\n",
        );
        for t in &tests {
            m.push_str(&format!(
                "`{}`:\n```\n{}\n```\n",
                t.path,
                head(&t.content, TEST_FILE_LIMIT)
            ));
        }
    }
    m.push_str(&format!(
        "\n## Files on the branch now\n{}\n",
        compact(&files_now)
    ));
    match code {
        Some(code) => {
            m.push_str(&format!("\n## The code now\n{code}"));
            m.push_str(
                "\nFix what the traceback points at (your code, or your own unit tests; never \
                 QA's tests in `tests/acceptance/`). Write only the files you change, each in \
                 full; the others stay as they are.",
            );
        }
        None => m.push_str(
            "\nRead the files you need with `read_file`, fix the CODE (not QA's tests), and \
             return the Implementation with the full content of every file you change; the \
             others stay as they are.",
        ),
    }
    Ok(m)
}

/// The part of the message that asks for `rewrite` to be written again
/// from scratch, for the `stuck` failures (empty when there is none).
fn rewrite_request(stuck: &str, rewrite: &[String]) -> String {
    if rewrite.is_empty() {
        return String::new();
    }
    let files: Vec<String> = rewrite.iter().map(|p| format!("`{p}`")).collect();
    format!(
        "\n\n## Write again from scratch\nThese tests failed the same way after your last fix:\n{stuck}\
         Patching did not help: write {} again from scratch, from the requirement and the \
         acceptance criteria (the last version is not shown).",
        files.join(", ")
    )
}

/// The import name of the project's Python package: the repository's name
/// made a valid identifier (`wfc-python` -> `wfc_python`), since a small
/// model otherwise names the directory after the repository, hyphen and all,
/// and nothing can import it.
pub(crate) fn python_package(repository: &str) -> String {
    let mut name: String = repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name = name.trim_matches('_').to_string();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "app_");
    }
    if PYTHON_KEYWORDS.contains(&name.as_str()) {
        name.push_str("_pkg");
    }
    name
}

/// The project's Python package: the one the requirement names
/// (``Python package `todo` ``, a pinned interface), else the one made from
/// the repository's name.
pub(crate) fn project_package(requirements: &str, repository: &str) -> String {
    let lower = requirements.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("package `") {
        let start = from + at + "package `".len();
        from = start;
        let Some(len) = requirements[start..].find('`') else {
            break;
        };
        let name = &requirements[start..start + len];
        let identifier = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if identifier && !PYTHON_KEYWORDS.contains(&name) {
            return name.to_string();
        }
    }
    python_package(repository)
}

/// Python's keywords (lower-case ones: the name is lower-cased first).
const PYTHON_KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// QA failure record for the shared context.
pub(crate) fn failure_value(
    command: &[String],
    exit_code: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> Value {
    json!(QaFailure {
        command: command.join(" "),
        exit_code,
        stdout_tail: context::tail(stdout, 4000),
        stderr_tail: context::tail(stderr, 4000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Kit;
    use agentry_core::{AgentRole, StateDelta};

    #[test]
    fn python_package_names_are_import_names() {
        assert_eq!(python_package("wfc-python"), "wfc_python");
        assert_eq!(python_package("Todo.CLI"), "todo_cli");
        assert_eq!(python_package("2048-game"), "app_2048_game");
        assert_eq!(python_package("-"), "app_");
        assert_eq!(python_package("class"), "class_pkg");
    }

    #[test]
    fn a_package_the_requirement_names_wins_over_the_repository_name() {
        let pinned = "- Repository `todo-cli`; Python package `todo` at the repository root.";
        assert_eq!(project_package(pinned, "todo-cli"), "todo");
        assert_eq!(project_package("A todo list.", "todo-cli"), "todo_cli");
        // Not an import name: the repository's is used.
        assert_eq!(project_package("the package `my-app`", "my-app"), "my_app");
        assert_eq!(project_package("a Package `x` and", "r"), "x");
    }

    #[test]
    fn a_package_written_under_another_name_moves_to_its_import_name() {
        let path = |p: &str| agentry_core::RepoPath::parse(p).unwrap();
        let staged = |files: &[(&str, &str)]| -> crate::conversation::Staged {
            files
                .iter()
                .map(|(p, c)| (path(p), Some(c.to_string())))
                .collect()
        };
        // A real run: `number-theory/` for the pinned package `numtheory`.
        let mut changes = staged(&[
            (
                "number-theory/__init__.py",
                "from .primes import is_prime\n",
            ),
            (
                "number-theory/primes.py",
                "def is_prime(n):\n    return n > 1\n",
            ),
            ("tests/test_primes.py", "import unittest\n"),
            ("README.md", "# numtheory\n"),
        ]);
        let rewrites = arrange(&mut changes, &BTreeMap::new(), "numtheory");
        let paths: Vec<String> = changes.keys().map(|p| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                "README.md",
                "numtheory/__init__.py",
                "numtheory/primes.py",
                "tests/test_primes.py"
            ]
        );
        assert_eq!(rewrites.len(), 2);
        assert!(rewrites[0]
            .detail
            .contains("from `number-theory/__init__.py` to `numtheory/__init__.py`"));
        // The package's directory already exists (on the branch, or in the
        // change), or two directories hold code: nothing is guessed.
        let untouched = |files: &[(&str, &str)], code: &[(&str, &str)]| {
            let mut changes = staged(files);
            let before = changes.clone();
            let code: BTreeMap<String, String> = code
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect();
            assert!(arrange(&mut changes, &code, "numtheory").is_empty());
            assert_eq!(changes, before);
        };
        untouched(
            &[("number-theory/primes.py", "x = 1\n")],
            &[("numtheory/__init__.py", "")],
        );
        untouched(
            &[("numtheory/a.py", "x = 1\n"), ("extra/b.py", "y = 2\n")],
            &[],
        );
        untouched(
            &[("tools/a.py", "x = 1\n"), ("extra-b/b.py", "y = 2\n")],
            &[],
        );
        // A package the developer named with an import name of its own.
        untouched(&[("shortener/core.py", "x = 1\n")], &[]);
    }

    #[test]
    fn developer_tests_outside_tests_move_where_the_runner_finds_them() {
        let path = |p: &str| agentry_core::RepoPath::parse(p).unwrap();
        let mut changes: crate::conversation::Staged = [
            ("todo_cli/__init__.py", "from .todo import Todo\n"),
            ("todo_cli/todo.py", "class Todo:\n    pass\n"),
            ("todo_cli/tests/__init__.py", ""),
            (
                "todo_cli/tests/test_todo.py",
                "import unittest\nfrom ..todo import Todo\nfrom . import helpers\n    from .helpers import make\nfrom ...up import x\n",
            ),
            ("test_main.py", "from todo_cli import Todo\n"),
            ("tests/test_kept.py", "import unittest\n"),
        ]
        .into_iter()
        .map(|(p, c)| (path(p), Some(c.to_string())))
        .collect();
        let rewrites = tests_where_they_run(&mut changes);
        let paths: Vec<String> = changes.keys().map(|p| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                "tests/test_kept.py",
                "tests/test_main.py",
                "tests/test_todo.py",
                "todo_cli/__init__.py",
                "todo_cli/todo.py"
            ]
        );
        assert_eq!(
            changes[&path("tests/test_todo.py")].as_deref(),
            Some("import unittest\nfrom todo_cli.todo import Todo\nfrom todo_cli.tests import helpers\n    from todo_cli.tests.helpers import make\nfrom ...up import x\n")
        );
        let moved: Vec<(&str, &str)> = rewrites
            .iter()
            .map(|r| (r.path.as_str(), r.rule.as_str()))
            .collect();
        assert_eq!(
            moved,
            [
                ("tests/test_main.py", crate::pycheck::rules::MOVED_TEST),
                ("tests/test_todo.py", crate::pycheck::rules::MOVED_TEST)
            ]
        );
        assert!(rewrites[1]
            .detail
            .contains("from `todo_cli/tests/test_todo.py`"));

        // A test file already in `tests/` under that name wins; a test
        // directory's `__init__.py` with other files beside it stays.
        let mut changes: crate::conversation::Staged = [
            ("pkg/tests/__init__.py", ""),
            ("pkg/tests/test_a.py", "x = 1\n"),
            ("pkg/tests/data.json", "[]"),
            ("pkg/test_b.py", "y = 2\n"),
            ("tests/test_b.py", "z = 3\n"),
        ]
        .into_iter()
        .map(|(p, c)| (path(p), Some(c.to_string())))
        .collect();
        tests_where_they_run(&mut changes);
        let paths: Vec<String> = changes.keys().map(|p| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                "pkg/test_b.py",
                "pkg/tests/__init__.py",
                "pkg/tests/data.json",
                "tests/test_a.py",
                "tests/test_b.py"
            ]
        );
    }

    fn check(visit: u32, qa_failed: bool, must: &[&str], must_not: &[&str]) {
        let kit = Kit::new();
        let mut state = kit.state_after_business();
        if qa_failed {
            state.apply(&StateDelta {
                shared_context: BTreeMap::from([
                    ("qa.failure".to_string(), failure_value(
                        &["python3".into(), "-m".into(), "unittest".into()],
                        Some(1),
                        "",
                        "FAIL: test_resolve_returns_original (tests.acceptance.test_api)\nAssertionError: 'https://b.example' != 'https://a.example'",
                    )),
                    ("qa.test_files".to_string(), json!([{"path": "tests/acceptance/test_api.py", "content": "class T: pass"}])),
                ]),
                ..StateDelta::default()
            });
        }
        let project = context::project(&state).unwrap();
        let files = vec!["shortener/core.py".to_string()];
        let msg = user_message(&state, &project, visit, &files, None).unwrap();
        for m in must {
            assert!(msg.contains(m), "missing `{m}` in:\n{msg}");
        }
        for m in must_not {
            assert!(!msg.contains(m), "unexpected `{m}` in:\n{msg}");
        }
        let _ = AgentRole::Developer;
    }

    #[test]
    fn second_visit_prompt_carries_qa_failure_and_files() {
        check(
            1,
            true,
            &[
                "Round 2: QA's acceptance tests FAILED",
                "Command: `python3 -m unittest`",
                "Exit code: 1",
                "AssertionError: 'https://b.example' != 'https://a.example'",
                "`tests/acceptance/test_api.py`",
                "[\"shortener/core.py\"]",
                "Demo requirement",
            ],
            &[],
        );
    }

    #[test]
    fn first_visit_prompt_has_no_failure_section() {
        check(
            0,
            false,
            &["Demo requirement", "Implement the stories", "story one"],
            &["FAILED", "Exit code"],
        );
    }
}

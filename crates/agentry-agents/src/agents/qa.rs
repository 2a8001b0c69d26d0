//! QA: a test plan and acceptance tests, committed to the branch and RUN
//! for real in the sandbox on a fresh checkout of it. A failing suite is a
//! normal output (`qa.passed = false`); `qa.fix` says who acts next: QA
//! itself (`tests`: its tests cannot run as written) or the developer
//! (`code`), which is how the graph routes.

use std::collections::{BTreeMap, BTreeSet};

use agentry_core::{
    CommitRequest, Error, FileChange, IssueKind, MergeRequestUpdate, NewIssue, NewIssueLink,
    RepoPath, Result, StateDelta, TestResultLink, TestRun, TestRunRequest,
};
use serde_json::{json, Value};

use crate::agents::business::analysis_context;
use crate::agents::developer::failure_value;
use crate::agents::{close_fixed_bugs, comment_on_epics, move_stories, output};
use crate::context::{self, compact, head, tail, MergeRequestRecord, ProjectContext};
use crate::dispute::{self, Disputes};
use crate::output::{FileSpec, QaReport};
use crate::runner::AgentEnv;
use crate::triage::{Finding, NextFix, Owner, Triage, REWRITE_TEMPERATURE};

/// Runs QA.
///
/// On its first visit, and when its last run found tests that cannot run
/// as written, QA writes (or fixes) its suite from the specification: the
/// requirement, the analyst's criteria and the code's public interface,
/// never the function bodies. Its files are checked and mechanically
/// repaired (`pycheck`), committed to the branch under `tests/acceptance/`,
/// and run. After a developer round it runs the same suite again without
/// asking the model: a suite that changes between rounds could pass by
/// getting weaker. The run is triaged per test (`triage`): only the
/// acceptance suite decides, and its broken tests go back to QA while
/// failed checks go to the developer.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let host = &env.ports.code_host;
    let repo = host.get_repository(&project.repository).await?;
    let files = host.list_files(&repo.name, &project.branch).await?;
    let round = env.round();
    let previous: Vec<FileSpec> =
        context::shared(state, context::QA_TEST_FILES)?.unwrap_or_default();
    let last: Option<Triage> = context::shared(state, context::QA_TRIAGE)?;
    let write = previous.is_empty()
        || last
            .as_ref()
            .is_some_and(|t| t.next_fix() == NextFix::Tests);

    let code = env
        .source_files(&repo.name, &project.branch, &files, |p| {
            p.ends_with(".py") && !p.starts_with(context::ACCEPTANCE_DIR)
        })
        .await?;
    // Read once: QA writes its tests from it, and a dispute's independent
    // implementations are written to it.
    // The interface is the code's: the developer's own tests are not
    // something to test through.
    let under_test: BTreeMap<String, String> = code
        .iter()
        .filter(|(p, _)| !crate::triage::is_test_file(p))
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect();
    let interface = match crate::pycheck::interface(&under_test, CHECK_TIMEOUT).await {
        Ok(text) => text,
        Err(error) => {
            tracing::warn!(%error, "The code's interface could not be read; QA sees the file names only.");
            String::new()
        }
    };
    let mut usage = Vec::new();
    let mut report = None;
    let mut rewrites = Vec::new();
    let mut flags = Vec::new();
    // Tests of QA's own still failing the same way after its fix: patching
    // them again rarely helps a small model (it returns the same file), so
    // the suite is written again from scratch, more freely.
    let seen: Option<Triage> = context::shared(state, context::QA_TRIAGE_SEEN)?;
    let stuck: Vec<Finding> = match (&last, &seen) {
        (Some(last), Some(seen)) if write => crate::triage::repeated_for(last, seen, Owner::Qa)
            .into_iter()
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    if !stuck.is_empty() {
        env.ctx.report(
            "QA's tests fail the same way after its fix: writing them again from scratch",
            None,
        );
    }
    let suite = if write {
        let written = write_suite(
            env,
            &project,
            &files,
            &code,
            &interface,
            &previous,
            last.as_ref(),
            &stuck,
        )
        .await?;
        usage = written.usage;
        rewrites = written.rewrites;
        flags = written.flags;
        let suite = written.suite;
        commit_suite(env, &repo.name, &project.branch, &suite, round).await?;
        report = Some(written.report);
        suite
    } else {
        previous.clone()
    };

    let overlay = suite
        .iter()
        .map(|f| Ok((RepoPath::parse(&f.path)?, f.content.clone())))
        .collect::<Result<Vec<_>>>()?;
    env.ctx.report("running tests", None);
    let run = env
        .deps
        .sandbox
        .run_tests(TestRunRequest {
            clone_from: repo.clone_url.clone(),
            branch: project.branch.clone(),
            overlay,
            command: None,
            limits: env.config.sandbox_limits.clone(),
        })
        .await
        .map_err(|error| match error {
            Error::InvalidInput(m) => Error::permanent(format!("qa cannot run the tests: {m}")),
            other => other.context("qa test run"),
        })?;
    let mut triage = crate::triage::triage(&run, &suite, &state.requirements);
    let mut disputes: Disputes = context::shared(state, context::QA_DISPUTES)?.unwrap_or_default();
    let set_aside = dispute::apply_set_aside(&mut triage, &mut disputes);
    if !set_aside.is_empty() {
        tracing::warn!(tests = ?set_aside, "Tests that lost a dispute and fail the same way again are set aside.");
    }
    let mut verdicts = Vec::new();
    // Disputes are for small models (compact mode), whose expected values
    // are the usual mistake; each costs two generations of the code.
    if env.config.compact
        && triage.next_fix() == NextFix::Code
        && dispute::disputable(&triage, &disputes)
    {
        let code_paths: Vec<String> = code
            .keys()
            .filter(|p| !crate::triage::is_test_file(p))
            .cloned()
            .collect();
        let (found, used) = dispute::hold(
            env,
            &mut triage,
            &mut disputes,
            &interface,
            &suite,
            &code_paths,
        )
        .await?;
        verdicts = found;
        usage.extend(used);
    }
    let passed = triage.acceptance_passed;
    let next = triage.next_fix();
    let summary = summarize(&run, &triage, round);
    env.ctx.report(summary.clone(), None);

    let tracker = &env.ports.tracker;
    let epics = context::epics(state)?;
    if let Some(mr) = context::shared::<MergeRequestRecord>(state, context::DEVELOPER_MR)? {
        host.update_merge_request(
            &mr.repository,
            mr.id,
            MergeRequestUpdate {
                test_result: Some(TestResultLink {
                    run_id: run.id,
                    passed,
                    commit: run.commit.clone(),
                    summary: summary.clone(),
                }),
                ..MergeRequestUpdate::default()
            },
        )
        .await?;
    }
    comment_on_epics(env, &epics, "comment:qa", &summary).await?;

    let mut tickets = Vec::new();
    let failure = if passed {
        move_stories(tracker.as_ref(), &epics, "In Review", false).await?;
        close_fixed_bugs(tracker.as_ref(), &state.jira_tickets).await?;
        Value::Null
    } else {
        if next == NextFix::Code {
            let findings = triage.for_owner(Owner::Developer);
            let bug = tracker
                .create_issue(NewIssue {
                    project: project.key.clone(),
                    kind: IssueKind::Bug,
                    title: format!("QA round {round}: acceptance tests fail"),
                    description: format!(
                        "{summary}\n\n{}\nCommand: `{}`\nIsolation: {}\n\n```\n{}\n```\n\n```\n{}\n```\n",
                        crate::triage::describe(&findings),
                        run.command.join(" "),
                        run.isolation.describe(),
                        tail(&run.stdout, 3000),
                        tail(&run.stderr, 3000)
                    ),
                    parent: None,
                    labels: vec!["agentry".into(), "qa".into()],
                    idempotency_key: env.key().child("bug"),
                })
                .await?;
            if let Some(epic) = epics.first() {
                tracker
                    .link_issues(NewIssueLink {
                        from: bug.key.clone(),
                        to: epic.key.clone(),
                        kind: "relates to".into(),
                    })
                    .await?;
            }
            tickets.push(bug.key);
        }
        failure_value(&run.command, run.exit_code, &run.stdout, &run.stderr)
    };

    let mut test_run = serde_json::to_value(&run)?;
    test_run["round"] = json!(round);
    test_run["exit_code"] = json!(run.exit_code);
    test_run["passed"] = json!(passed);
    test_run["run_passed"] = json!(run.passed);
    test_run["triage"] = serde_json::to_value(&triage)?;
    test_run["disputes"] = serde_json::to_value(&verdicts)?;
    test_run["set_aside"] = serde_json::to_value(&disputes.set_aside)?;
    let mut outputs = Vec::new();
    if let Some(report) = &report {
        let mut recorded = serde_json::to_value(report)?;
        recorded["test_files"] = serde_json::to_value(&suite)?;
        recorded["round"] = json!(round);
        recorded["rewrites"] = serde_json::to_value(&rewrites)?;
        recorded["flags"] = json!(flags);
        outputs.push(output("qa", "report", &recorded)?);
    }
    outputs.push(output("qa", "test_run", &test_run)?);
    Ok(StateDelta {
        agent_outputs: outputs,
        shared_context: BTreeMap::from([
            (context::QA_PASSED.to_string(), json!(passed)),
            (context::QA_ROUND.to_string(), json!(round)),
            (context::QA_FIX.to_string(), serde_json::to_value(next)?),
            (
                context::QA_TRIAGE.to_string(),
                serde_json::to_value(&triage)?,
            ),
            (
                context::QA_TRIAGE_SEEN.to_string(),
                // What this round fixed against, when it fixed tests.
                match (&last, write && !previous.is_empty()) {
                    (Some(last), true) => serde_json::to_value(last)?,
                    _ => serde_json::to_value(&seen)?,
                },
            ),
            (
                context::QA_DISPUTES.to_string(),
                serde_json::to_value(&disputes)?,
            ),
            (context::QA_FAILURE.to_string(), failure),
            (
                context::QA_TEST_FILES.to_string(),
                serde_json::to_value(&suite)?,
            ),
        ]),
        jira_tickets: tickets,
        usage,
        ..StateDelta::default()
    })
}

/// A suite QA wrote this round.
struct WrittenSuite {
    report: QaReport,
    suite: Vec<FileSpec>,
    rewrites: Vec<crate::pycheck::Rewrite>,
    flags: Vec<String>,
    usage: Vec<agentry_core::UsageRecord>,
}

/// Asks the model for the suite (or the fix of its broken tests), checks
/// it with the suite rules and the static checks (their problems go back
/// to the model in the same conversation), then applies the mechanical
/// repairs.
#[allow(clippy::too_many_arguments)]
async fn write_suite(
    env: &AgentEnv<'_>,
    project: &ProjectContext,
    files: &[String],
    code: &BTreeMap<String, String>,
    interface: &str,
    previous: &[FileSpec],
    last: Option<&Triage>,
    stuck: &[Finding],
) -> Result<WrittenSuite> {
    let state = &env.ctx.state;
    // From scratch, the last tests are neither shown nor kept (data files
    // stay: a new test may read them too).
    let kept: Vec<FileSpec> = if stuck.is_empty() {
        previous.to_vec()
    } else {
        previous
            .iter()
            .filter(|f| !f.path.ends_with(".py"))
            .cloned()
            .collect()
    };
    let previous = kept.as_slice();
    let mut user = format!("## Requirement\n{}\n\n", state.requirements.trim());
    user.push_str(&analysis_context(state));
    user.push_str(&format!(
        "\n## Files on branch `{}`\n{}\n",
        project.branch,
        compact(&files)
    ));
    if !interface.trim().is_empty() {
        user.push_str(&format!(
            "\n## The code's public interface (signatures and docstrings; test through it)\n```\n{}\n```\n",
            head(interface, INTERFACE_LIMIT)
        ));
    }
    if !stuck.is_empty() {
        let stuck: Vec<&Finding> = stuck.iter().collect();
        user.push_str(&format!(
            "\n## Round {}: write your tests again from scratch\nAfter your last fix, these tests still failed the same way:\n{}\nPatching did not help. Write the acceptance tests again from scratch, from the requirement, the acceptance criteria and the interface above (your last version is not shown): call only what the interface shows, with the arguments it shows.\n",
            env.round(),
            crate::triage::describe(&stuck)
        ));
    } else if !previous.is_empty() {
        let broken = last.map(|t| t.for_owner(Owner::Qa)).unwrap_or_default();
        user.push_str(&format!("\n## Round {}\n", env.round()));
        user.push_str(&previous_round(previous, &broken));
    }
    user.push_str("\nAnswer as the system prompt says.");

    let developer_tests: Vec<FileSpec> = code
        .iter()
        .filter(|(p, _)| crate::triage::is_test_file(p))
        .map(|(p, c)| FileSpec {
            path: p.clone(),
            content: c.clone(),
        })
        .collect();
    let mut tools = env.toolbox(
        Some(&project.repository),
        Some(&project.branch),
        Some(&project.key),
    );
    let mut conversation = env.conversation()?;
    if !stuck.is_empty() {
        conversation = conversation.with_first_temperature(REWRITE_TEMPERATURE);
    }
    let (mut report, _) = conversation
        .run_checked(
            env.system_prompt()?,
            user,
            &mut tools,
            &SuiteCheck {
                previous,
                on_branch: files,
                developer_tests: &developer_tests,
                code,
                requirement: &state.requirements,
                guards_broken: std::sync::atomic::AtomicUsize::new(0),
            },
        )
        .await?;
    let usage = conversation.into_usage();
    let mut suite = crate::output::with_kept(previous, &report.test_files);
    let replaced = keep_code_under_test(&mut suite, files);
    if !replaced.is_empty() {
        tracing::warn!(files = ?replaced, "QA's files would replace the code under test; left out");
    }
    suite.extend(python_test_packages(&suite, files));
    for file in &mut suite {
        file.content = crate::output::file_text(&file.path, &file.content);
    }
    let checked = check_suite(code, &suite, None).await;
    let mut flags = Vec::new();
    let mut rewrites = Vec::new();
    if let Some(checked) = checked {
        for file in &mut suite {
            if let Some(repaired) = checked.files.get(&file.path) {
                file.content = repaired.clone();
            }
        }
        for rewrite in &checked.rewrites {
            tracing::info!(path = %rewrite.path, rule = %rewrite.rule, detail = %rewrite.detail, "QA's test repaired.");
        }
        rewrites = checked.rewrites;
        if !previous.is_empty() {
            let before = check_suite(code, previous, None)
                .await
                .map(|c| c.assertions.values().sum::<u32>());
            let after: u32 = checked.assertions.values().sum();
            if let Some(before) = before.filter(|b| after < *b) {
                let flag = format!("assertion count dropped from {before} to {after}");
                tracing::warn!(%flag, "QA's suite got fewer assertions.");
                flags.push(flag);
            }
        }
    }
    report.test_files = suite.clone();
    Ok(WrittenSuite {
        report,
        suite,
        rewrites,
        flags,
        usage,
    })
}

/// QA's answer, checked before it is accepted: the suite rules, its
/// folder, no copy of the developer's tests, and the static checks.
struct SuiteCheck<'a> {
    previous: &'a [FileSpec],
    on_branch: &'a [String],
    developer_tests: &'a [FileSpec],
    code: &'a BTreeMap<String, String>,
    /// The requirement: a method it names that the code lacks is the
    /// developer's to add, not QA's to stop calling.
    requirement: &'a str,
    /// Problems of the last answer checked that would let a weak suite
    /// pass (no test code, a file outside QA's folder, a test that checks
    /// nothing, only `None`, a tautology or a swallowed failure), as
    /// opposed to those that make the suite fail loudly (a syntax error,
    /// an import that does not resolve, a data file nobody wrote) or are
    /// asked about once more (a near copy of the developer's tests).
    guards_broken: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl crate::conversation::AnswerCheck<QaReport> for SuiteCheck<'_> {
    /// A suite whose remaining problems only make it fail loudly is run
    /// after the repair rounds: its broken tests come back to QA through
    /// the triage. One that breaks a guard never is: it could pass on
    /// anything.
    fn accept_after_repairs(&self) -> bool {
        self.guards_broken
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    }

    async fn problems(&self, r: &QaReport, _: &crate::conversation::Staged) -> Vec<String> {
        let (mut loud, mut guards) = r.suite_problems_by_kind(self.previous);
        guards.extend(acceptance_path_problems(&r.test_files, self.on_branch));
        // A near copy of the developer's tests goes back once more, but is
        // not held as a guard: QA never sees those tests, so two samples
        // of one model from one requirement converging is no copying (a
        // contradictory task's workflow failed on it, three times), and
        // the copy still answers to every other guard and the mutation
        // score.
        loud.extend(copied_tests(&r.test_files, self.developer_tests));
        let suite = crate::output::with_kept(self.previous, &r.test_files);
        let (static_loud, static_guards) =
            static_problems(self.code, &suite, self.requirement).await;
        loud.extend(static_loud);
        guards.extend(static_guards);
        self.guards_broken
            .store(guards.len(), std::sync::atomic::Ordering::Relaxed);
        guards.extend(loud);
        guards
    }
}

/// How long one static check may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How much of the interface QA is shown.
const INTERFACE_LIMIT: usize = 8 * 1024;

/// The static checks of a suite against the code: the tree is the code
/// plus the suite, and the suite's files are checked (with `requirement`,
/// also what of the interface it names the suite leaves untested).
async fn check_suite(
    code: &BTreeMap<String, String>,
    suite: &[FileSpec],
    requirement: Option<&str>,
) -> Option<crate::pycheck::PyCheckReport> {
    let mut tree = code.clone();
    let mut check = Vec::new();
    for file in suite {
        let text = crate::output::file_text(&file.path, &file.content);
        tree.insert(file.path.clone(), text);
        if file.path.ends_with(".py") {
            check.push(file.path.clone());
        }
    }
    if check.is_empty() {
        return None;
    }
    let input = crate::pycheck::PyCheckInput {
        tree,
        check,
        package: None,
        requirement: requirement.map(str::to_string),
    };
    match crate::pycheck::check_python(&input, CHECK_TIMEOUT).await {
        Ok(report) => Some(report),
        Err(error) => {
            tracing::warn!(%error, "The static checks of QA's suite did not run.");
            None
        }
    }
}

/// The static checks' problems with a suite, as repair requests.
/// The problems that make a suite fail loudly, then those of its guards
/// (see [`SuiteCheck`]).
async fn static_problems(
    code: &BTreeMap<String, String>,
    suite: &[FileSpec],
    requirement: &str,
) -> (Vec<String>, Vec<String>) {
    use crate::pycheck::rules;
    let mut loud = Vec::new();
    let mut guards = Vec::new();
    if let Some(report) = check_suite(code, suite, Some(requirement)).await {
        for p in &report.problems {
            let line = format!("`{}` line {}: {}", p.path, p.line, p.message);
            // A test checking only its own values goes back for repair, but
            // is not held as a guard: once the repairs are spent it runs,
            // and a failing one is disputed and set aside, a passing one
            // shows in the mutation score.
            if matches!(
                p.rule.as_str(),
                rules::SYNTAX
                    | rules::UNRESOLVED_IMPORT
                    | rules::WRONG_ARGUMENTS
                    | rules::MISSING_METHOD
                    | rules::UNTESTED
                    | rules::DISCONNECTED
            ) {
                loud.push(line);
            } else {
                guards.push(line);
            }
        }
    }
    (loud, guards)
}

/// QA writes only under `tests/acceptance/` (and the empty `__init__.py`
/// files that make its parent folders packages).
fn acceptance_path_problems(files: &[FileSpec], on_branch: &[String]) -> Vec<String> {
    files
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let path = f.path.trim_start_matches("./");
            let marker = path == "tests/__init__.py"
                && f.content.trim().is_empty()
                && !on_branch.iter().any(|b| b == path);
            !path.starts_with(context::ACCEPTANCE_DIR) && !marker
        })
        .map(|(i, f)| {
            format!(
                "/test_files/{i}/path: `{}` is outside `{dir}`: QA's tests and their data files go under `{dir}`",
                f.path,
                dir = context::ACCEPTANCE_DIR
            )
        })
        .collect()
}

/// A QA test file that is (nearly) a copy of one of the developer's tests
/// checks what the developer already checked: QA's suite is written from
/// the specification.
fn copied_tests(files: &[FileSpec], developer_tests: &[FileSpec]) -> Vec<String> {
    let lines = |text: &str| -> BTreeSet<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("import ")
                    && !l.starts_with("from ")
                    && !l.starts_with('#')
                    && !matches!(
                        l.as_str(),
                        "unittest.main()"
                            | "if __name__ == \"__main__\":"
                            | "if __name__ == '__main__':"
                    )
            })
            .collect()
    };
    let mut out = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if !file.path.ends_with(".py") {
            continue;
        }
        let mine = lines(&file.content);
        if mine.len() < 4 {
            continue;
        }
        for theirs in developer_tests {
            let shared = mine.intersection(&lines(&theirs.content)).count();
            if shared * 10 >= mine.len() * 8 {
                out.push(format!(
                    "/test_files/{i}: `{}` copies the developer's `{}`: write the acceptance tests from the requirement's criteria, through the public interface",
                    file.path, theirs.path
                ));
                break;
            }
        }
    }
    out
}

/// Commits QA's suite to the branch, so the merge request shows the tests
/// that gate it. Only files under `tests/acceptance/` (and package
/// markers) are committed; a file whose content is already on the branch
/// is not committed again.
async fn commit_suite(
    env: &AgentEnv<'_>,
    repository: &str,
    branch: &str,
    suite: &[FileSpec],
    round: u32,
) -> Result<()> {
    let host = &env.ports.code_host;
    let mut changes = Vec::new();
    for file in suite {
        let path = RepoPath::parse(&file.path)?;
        let text = path.to_string();
        if !text.starts_with(context::ACCEPTANCE_DIR) && text != "tests/__init__.py" {
            continue;
        }
        if host.read_file(repository, branch, &path).await?.as_deref()
            == Some(file.content.as_str())
        {
            continue;
        }
        changes.push(FileChange {
            path,
            content: Some(file.content.clone()),
        });
    }
    if changes.is_empty() {
        return Ok(());
    }
    env.ctx.report("committing the acceptance tests", None);
    host.commit_files(CommitRequest {
        repository: repository.to_string(),
        branch: branch.to_string(),
        files: changes,
        message: format!("QA round {round}: acceptance tests"),
        author: "Agentry QA".into(),
        idempotency_key: env.key().child("tests"),
    })
    .await?;
    Ok(())
}

/// Leaves out the files of QA's answer that would replace a file of the
/// branch that is not a test (a small model echoes the code it was shown,
/// sometimes changed): QA adds tests and their data, it never rewrites the
/// code under test. Returns the paths left out.
fn keep_code_under_test(tests: &mut Vec<FileSpec>, on_branch: &[String]) -> Vec<String> {
    let branch: BTreeSet<&str> = on_branch.iter().map(String::as_str).collect();
    let mut left_out = Vec::new();
    tests.retain(|t| {
        let path = t.path.trim_start_matches("./");
        let keep = is_test_path(path) || !branch.contains(path);
        if !keep {
            left_out.push(path.to_string());
        }
        keep
    });
    left_out
}

/// How much of each earlier test file QA is shown again.
const PREVIOUS_FILE_LIMIT: usize = 6 * 1024;

/// What QA is told of its last round: its test files in full and the
/// tests of them that could not run as written, so it fixes those and
/// keeps the rest.
fn previous_round(previous: &[FileSpec], broken: &[&Finding]) -> String {
    let mut m = String::from(
        "\n## Your tests from the last round\nEach is kept as it is unless you return a file of the same path: return the files you change or add, each in full.\n",
    );
    for file in previous {
        if file.content.trim().is_empty() {
            m.push_str(&format!("`{}` (empty)\n", file.path));
        } else {
            m.push_str(&format!(
                "`{}`:\n```\n{}\n```\n",
                file.path,
                head(&file.content, PREVIOUS_FILE_LIMIT)
            ));
        }
    }
    if !broken.is_empty() {
        m.push_str(&format!(
            "\nThese tests could not run as written; the error is in the test, not in the code:\n{}\nFix each of these tests (an import of what does not exist, a name never defined, a file never written). Keep every other test and every check as it is.\n",
            crate::triage::describe(broken)
        ));
    }
    m
}

/// Whether a path is a test by the usual conventions: under `tests/`,
/// `test/`, `__tests__/` or `spec/`, or named `test_*`, `*_test.*`,
/// `*.test.*`, `*.spec.*` or `conftest.py`.
fn is_test_path(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    parts
        .iter()
        .any(|d| matches!(*d, "tests" | "test" | "__tests__" | "spec"))
        || name.starts_with("test_")
        || stem.ends_with("_test")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name == "conftest.py"
}

/// The empty `__init__.py` files that make the directories of Python test
/// files packages, where neither the branch nor the tests have one:
/// unittest's discovery does not descend into a directory that is not a
/// package, so `tests/acceptance/test_x.py` alone would never run.
fn python_test_packages(tests: &[FileSpec], on_branch: &[String]) -> Vec<FileSpec> {
    let mut have: BTreeSet<String> = on_branch.iter().cloned().collect();
    have.extend(
        tests
            .iter()
            .map(|t| t.path.trim_start_matches("./").to_string()),
    );
    let mut added = Vec::new();
    for test in tests.iter().filter(|t| t.path.ends_with(".py")) {
        let path = test.path.trim_start_matches("./");
        let mut dir = path.rsplit_once('/').map(|(d, _)| d);
        while let Some(d) = dir {
            let init = format!("{d}/__init__.py");
            if have.insert(init.clone()) {
                added.push(FileSpec {
                    path: init,
                    content: String::new(),
                });
            }
            dir = d.rsplit_once('/').map(|(parent, _)| parent);
        }
    }
    added
}

/// One line: `QA round 1: FAILED (acceptance 5 of 7 passed; exit 1) in 340 ms`.
fn summarize(run: &TestRun, triage: &Triage, round: u32) -> String {
    let verdict = if triage.acceptance_passed {
        "PASSED"
    } else {
        "FAILED"
    };
    let mut detail = Vec::new();
    if triage.per_test {
        let failed = u32::try_from(triage.acceptance.len()).unwrap_or(u32::MAX);
        detail.push(format!(
            "acceptance {} of {} passed",
            triage.acceptance_total.saturating_sub(failed),
            triage.acceptance_total
        ));
        if !triage.unit.is_empty() {
            detail.push(format!(
                "{} of the developer's own tests fail",
                triage.unit.len()
            ));
        }
    } else if let (Some(p), Some(f)) = (run.tests_passed, run.tests_failed) {
        detail.push(format!("{p} passed, {f} failed"));
    }
    detail.push(match (run.exit_code, run.timed_out) {
        (_, true) => "timed out".to_string(),
        (Some(c), _) => format!("exit {c}"),
        (None, _) => format!("killed by signal {}", run.signal.unwrap_or_default()),
    });
    format!(
        "QA round {round}: {verdict} ({}) in {} ms: `{}`",
        detail.join("; "),
        run.duration_ms,
        run.command.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> FileSpec {
        FileSpec {
            path: path.into(),
            content: "import unittest\n".into(),
        }
    }

    #[test]
    fn qa_sees_its_last_tests_in_full_and_how_they_failed() {
        let previous = [
            FileSpec {
                path: "tests/acceptance/test_acceptance.py".into(),
                content: "def test_count():\n    assert count('tests/acceptance/in.txt') == 3\n"
                    .into(),
            },
            FileSpec {
                path: "tests/acceptance/__init__.py".into(),
                content: String::new(),
            },
        ];
        let broken = Finding {
            test: "tests.acceptance.test_acceptance.test_count".into(),
            owner: Owner::Qa,
            reason: "the test reads a file it never wrote".into(),
            error: "FileNotFoundError: 'tests/acceptance/in.txt'".into(),
            at: Some("tests/acceptance/test_acceptance.py:2".into()),
        };
        let m = previous_round(&previous, &[&broken]);
        assert!(
            m.contains("kept as it is unless you return a file of the same path"),
            "{m}"
        );
        assert!(
            m.contains("assert count('tests/acceptance/in.txt') == 3"),
            "{m}"
        );
        assert!(m.contains("`tests/acceptance/__init__.py` (empty)"), "{m}");
        assert!(m.contains("FileNotFoundError"), "{m}");
        assert!(
            m.contains("(at tests/acceptance/test_acceptance.py:2)"),
            "{m}"
        );
        // Nothing broken: the tests are still shown, and no fix is asked.
        let m = previous_round(&previous, &[]);
        assert!(m.contains("== 3") && !m.contains("could not run"), "{m}");
    }

    #[test]
    fn qa_writes_only_under_its_acceptance_folder() {
        let files = [
            spec("tests/acceptance/test_a.py"),
            spec("tests/acceptance/data/in.txt"),
            spec("data/in.txt"),
            FileSpec {
                path: "tests/__init__.py".into(),
                content: String::new(),
            },
        ];
        let problems = acceptance_path_problems(&files, &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("/test_files/2/path: `data/in.txt`"),
            "{problems:?}"
        );
        // The branch's own `tests/__init__.py` is the developer's.
        assert_eq!(
            acceptance_path_problems(&files, &["tests/__init__.py".into()]).len(),
            2
        );
    }

    #[test]
    fn a_suite_that_copies_the_developers_tests_is_sent_back() {
        let developer = FileSpec {
            path: "tests/test_core.py".into(),
            content: "import unittest\nfrom app import add\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n    def test_neg(self):\n        self.assertEqual(add(-1, 1), 0)\n".into(),
        };
        let copy = FileSpec {
            path: "tests/acceptance/test_acceptance.py".into(),
            content: developer
                .content
                .replace("class T", "class Acceptance")
                .replace("        ", "\t\t"),
        };
        let problems = copied_tests(
            std::slice::from_ref(&copy),
            std::slice::from_ref(&developer),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        let own = FileSpec {
            path: copy.path.clone(),
            content: "import unittest\nfrom app import add\nclass A(unittest.TestCase):\n    def test_commutes(self):\n        for a, b in [(1, 2), (5, -3)]:\n            self.assertEqual(add(a, b), add(b, a))\n    def test_zero(self):\n        self.assertEqual(add(7, 0), 7)\n".into(),
        };
        assert!(copied_tests(&[own], &[developer]).is_empty());
    }

    #[test]
    fn qa_never_replaces_the_code_under_test() {
        let on_branch = ["app/core.py".to_string(), "tests/test_core.py".to_string()];
        let mut files = vec![
            spec("tests/acceptance/test_a.py"),
            spec("app/core.py"),
            spec("tests/test_core.py"),
            spec("data/sample.txt"),
        ];
        assert_eq!(
            keep_code_under_test(&mut files, &on_branch),
            ["app/core.py"]
        );
        let kept: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            kept,
            [
                "tests/acceptance/test_a.py",
                "tests/test_core.py",
                "data/sample.txt"
            ]
        );
        for path in [
            "src/app.test.js",
            "pkg/parser_test.go",
            "conftest.py",
            "spec/a.rb",
        ] {
            assert!(is_test_path(path), "{path}");
        }
        for path in ["src/app.js", "testing.py", "pkg/contest.py"] {
            assert!(!is_test_path(path), "{path}");
        }
    }

    #[test]
    fn python_test_directories_become_packages_where_they_are_not() {
        let paths = |files: Vec<FileSpec>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
        // Nothing on the branch: both levels get one, once.
        let tests = [
            spec("tests/acceptance/test_a.py"),
            spec("tests/acceptance/test_b.py"),
        ];
        assert_eq!(
            paths(python_test_packages(&tests, &[])),
            ["tests/acceptance/__init__.py", "tests/__init__.py"]
        );
        // The branch's `tests/__init__.py` and QA's own are kept as they are.
        let tests = [
            spec("tests/acceptance/test_a.py"),
            spec("tests/acceptance/__init__.py"),
        ];
        assert!(python_test_packages(&tests, &["tests/__init__.py".into()]).is_empty());
        // Top-level and non-Python tests need nothing.
        let tests = [spec("test_app.py"), spec("tests/app.test.js")];
        assert!(python_test_packages(&tests, &[]).is_empty());
    }
}

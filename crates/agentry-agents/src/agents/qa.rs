//! QA: a test plan and acceptance tests, RUN for real in the sandbox on a
//! fresh checkout of the branch. A failing suite is a normal output
//! (`qa.passed = false`), which routes the graph back to the developer.

use std::collections::{BTreeMap, BTreeSet};

use agentry_core::{
    Error, IssueKind, MergeRequestUpdate, NewIssue, NewIssueLink, RepoPath, Result, StateDelta,
    TestResultLink, TestRun, TestRunRequest,
};
use serde_json::{json, Value};

use crate::agents::business::analysis_context;
use crate::agents::developer::failure_value;
use crate::agents::{close_fixed_bugs, comment_on_epics, move_stories, output};
use crate::context::{self, compact, head, tail, MergeRequestRecord, QaFailure};
use crate::output::{FileSpec, QaReport};
use crate::runner::AgentEnv;

/// Runs QA.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let host = &env.ports.code_host;
    let repo = host.get_repository(&project.repository).await?;
    let files = host.list_files(&repo.name, &project.branch).await?;
    let round = env.round();

    let mut user = format!("## Requirement\n{}\n\n", state.requirements.trim());
    user.push_str(&analysis_context(state));
    if let Some(imp) = context::output(state, "developer.implementation") {
        user.push_str(&format!(
            "\n## Implementation (round {round})\n{}\n\nDesign: {}\n",
            imp["summary"].as_str().unwrap_or_default(),
            imp["design"].as_str().unwrap_or_default()
        ));
    }
    user.push_str(&format!(
        "\n## Files on branch `{}`\n{}\n",
        project.branch,
        compact(&files)
    ));
    let previous: Vec<FileSpec> =
        context::shared(state, context::QA_TEST_FILES)?.unwrap_or_default();
    if !previous.is_empty() {
        user.push_str(&previous_round(
            &previous,
            context::shared::<QaFailure>(state, context::QA_FAILURE)?.as_ref(),
        ));
    }
    match env
        .code_listing(&repo.name, &project.branch, &files)
        .await?
    {
        Some(code) => {
            user.push_str(&format!("\n## The code\n{code}"));
            user.push_str("\nReturn the QaReport JSON.");
        }
        None => user.push_str("\nRead the code you need, then return the QaReport JSON."),
    }

    let mut tools = env.toolbox(Some(&repo.name), Some(&project.branch), Some(&project.key));
    let mut conversation = env.conversation()?;
    let (mut report, _) = conversation
        .run_checked(env.system_prompt()?, user, &mut tools, |r: &QaReport| {
            r.suite_problems(&previous)
        })
        .await?;
    let usage = conversation.into_usage();
    let suite = crate::output::with_kept(&previous, &report.test_files);
    if suite.len() > report.test_files.len() {
        let kept: Vec<&str> = suite[..suite.len() - report.test_files.len()]
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        tracing::info!(files = ?kept, "QA's tests from its last round are kept");
    }
    report.test_files = suite;
    let replaced = keep_code_under_test(&mut report.test_files, &files);
    if !replaced.is_empty() {
        tracing::warn!(files = ?replaced, "QA's files would replace the code under test; left out");
    }
    let packages = python_test_packages(&report.test_files, &files);
    report.test_files.extend(packages);

    // The repaired text (fence unwrapped, escapes mended) is what runs,
    // what is stored, and what QA is shown in its next round.
    for file in &mut report.test_files {
        file.content = crate::output::file_text(&file.path, &file.content);
    }
    let overlay = report
        .test_files
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
    let summary = summarize(&run, round);
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
                    passed: run.passed,
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
    let failure = if run.passed {
        move_stories(tracker.as_ref(), &epics, "In Review", false).await?;
        close_fixed_bugs(tracker.as_ref(), &state.jira_tickets).await?;
        Value::Null
    } else {
        let bug = tracker
            .create_issue(NewIssue {
                project: project.key.clone(),
                kind: IssueKind::Bug,
                title: format!("QA round {round}: acceptance tests fail"),
                description: format!(
                    "{summary}\n\nCommand: `{}`\nIsolation: {}\n\n```\n{}\n```\n\n```\n{}\n```\n",
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
        failure_value(&run.command, run.exit_code, &run.stdout, &run.stderr)
    };

    let mut test_run = serde_json::to_value(&run)?;
    test_run["round"] = json!(round);
    test_run["exit_code"] = json!(run.exit_code);
    test_run["passed"] = json!(run.passed);
    Ok(StateDelta {
        agent_outputs: vec![
            output("qa", "report", &report)?,
            output("qa", "test_run", &test_run)?,
        ],
        shared_context: BTreeMap::from([
            (context::QA_PASSED.to_string(), json!(run.passed)),
            (context::QA_ROUND.to_string(), json!(round)),
            (context::QA_FAILURE.to_string(), failure),
            (
                context::QA_TEST_FILES.to_string(),
                serde_json::to_value(&report.test_files)?,
            ),
        ]),
        jira_tickets: tickets,
        usage,
        ..StateDelta::default()
    })
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

/// How much of each earlier test file and of the last run's output QA is
/// shown again.
const PREVIOUS_FILE_LIMIT: usize = 6 * 1024;
const PREVIOUS_OUTPUT_LIMIT: usize = 1500;

/// What QA is told of its last round: its test files in full and how they
/// failed, so it keeps what tests the criteria and fixes a test that
/// expects the wrong thing (its own arithmetic, a file it never wrote)
/// rather than starting again from nothing.
fn previous_round(previous: &[FileSpec], failure: Option<&QaFailure>) -> String {
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
    if let Some(f) = failure {
        let output = if f.stderr_tail.trim().is_empty() {
            &f.stdout_tail
        } else {
            &f.stderr_tail
        };
        m.push_str(&format!(
            "\nThey failed on the developer's previous commit (`{}`); the code below is the fixed one:\n```\n{}\n```\nKeep testing the same acceptance criteria. Where a test itself is wrong (an expected value that does not follow from its input, a file it never wrote), fix the test; where the code is wrong, keep the test.\n",
            f.command,
            tail(output, PREVIOUS_OUTPUT_LIMIT)
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

/// One line: `QA round 1: FAILED (exit 1; 5 passed, 2 failed) in 340 ms`.
fn summarize(run: &TestRun, round: u32) -> String {
    let verdict = if run.passed { "PASSED" } else { "FAILED" };
    let mut detail = vec![match (run.exit_code, run.timed_out) {
        (_, true) => "timed out".to_string(),
        (Some(c), _) => format!("exit {c}"),
        (None, _) => format!("killed by signal {}", run.signal.unwrap_or_default()),
    }];
    if let (Some(p), Some(f)) = (run.tests_passed, run.tests_failed) {
        detail.push(format!("{p} passed, {f} failed"));
    }
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
        let failure = QaFailure {
            command: "python3 -m unittest discover -v -s tests -t .".into(),
            exit_code: Some(1),
            stdout_tail: String::new(),
            stderr_tail: "FileNotFoundError: 'tests/acceptance/in.txt'".into(),
        };
        let m = previous_round(&previous, Some(&failure));
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
            m.contains("`python3 -m unittest discover -v -s tests -t .`"),
            "{m}"
        );
        // No failure recorded: the tests are still shown.
        let m = previous_round(&previous, None);
        assert!(m.contains("== 3") && !m.contains("failed"), "{m}");
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

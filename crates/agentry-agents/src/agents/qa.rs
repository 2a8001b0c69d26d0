//! QA: a test plan and acceptance tests, RUN for real in the sandbox on a
//! fresh checkout of the branch. A failing suite is a normal output
//! (`qa.passed = false`), which routes the graph back to the developer.

use std::collections::BTreeMap;

use agentry_core::{
    Error, IssueKind, MergeRequestUpdate, NewIssue, NewIssueLink, RepoPath, Result, StateDelta,
    TestResultLink, TestRun, TestRunRequest,
};
use serde_json::{json, Value};

use crate::agents::business::analysis_context;
use crate::agents::developer::failure_value;
use crate::agents::{close_fixed_bugs, comment_on_epics, move_stories, output};
use crate::context::{self, compact, tail, MergeRequestRecord};
use crate::output::QaReport;
use crate::runner::AgentEnv;

/// Runs QA.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let host = &env.deps.code_host;
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
    if let Some(previous) = context::shared::<Vec<Value>>(state, context::QA_TEST_FILES)? {
        let paths: Vec<&str> = previous.iter().filter_map(|f| f["path"].as_str()).collect();
        user.push_str(&format!(
            "\nYour tests from the last round: {}. Keep testing the same acceptance criteria.\n",
            paths.join(", ")
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
    let (report, _) = conversation
        .run::<QaReport>(env.system_prompt()?, user, &mut tools)
        .await?;
    let usage = conversation.into_usage();

    let overlay = report
        .test_files
        .iter()
        .map(|f| {
            Ok((
                RepoPath::parse(&f.path)?,
                crate::output::unfenced(&f.content),
            ))
        })
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

    let tracker = &env.deps.tracker;
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
                    "{summary}\n\nCommand: `{}`\n\n```\n{}\n```\n\n```\n{}\n```\n",
                    run.command.join(" "),
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

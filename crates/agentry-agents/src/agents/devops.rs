//! DevOps: CI pipeline, Dockerfile and deployment manifest, committed with
//! the QA tests that passed; the merge request gets its checklist.

use std::collections::BTreeMap;

use agentry_core::{CommitRequest, FileChange, MergeRequestUpdate, RepoPath, Result, StateDelta};
use serde_json::json;

use crate::agents::{change_set, move_stories, output, story_list};
use crate::context::{self, compact, MergeRequestRecord};
use crate::output::{FileSpec, Pipeline};
use crate::runner::AgentEnv;

/// Runs DevOps.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let host = &env.ports.code_host;
    let repo = host.get_repository(&project.repository).await?;
    let files = host.list_files(&repo.name, &project.branch).await?;
    let qa_tests: Vec<FileSpec> =
        context::shared(state, context::QA_TEST_FILES)?.unwrap_or_default();

    let mut user = format!("## Requirement\n{}\n", state.requirements.trim());
    if let Some(imp) = context::output(state, "developer.implementation") {
        user.push_str(&format!(
            "\n## Implementation\nlanguage: {}\n{}\n",
            imp["language"].as_str().unwrap_or("unknown"),
            imp["summary"].as_str().unwrap_or_default()
        ));
    }
    if let Some(run) = context::output(state, "qa.test_run") {
        user.push_str(&format!(
            "\n## Test command that passed\n`{}`\n",
            compact(&run["command"])
        ));
    }
    user.push_str(&format!(
        "\n## Files on branch `{}`\n{}\n\nReturn the Pipeline JSON.",
        project.branch,
        compact(&files)
    ));

    let mut tools = env.toolbox(Some(&repo.name), Some(&project.branch), Some(&project.key));
    let mut conversation = env.conversation()?;
    let (pipeline, _) = conversation
        .run::<Pipeline>(env.system_prompt()?, user, &mut tools)
        .await?;
    let usage = conversation.into_usage();

    let answered: Vec<FileSpec> = pipeline.files.iter().cloned().map(FileSpec::from).collect();
    // Its tools stage delivery files only (`is_delivery_path`), the rule
    // the answer's schema holds it to.
    let mut changes = change_set(tools.staged(), &answered)?;
    // The suite that ran and passed goes into the repository as it ran.
    changes.extend(change_set(&BTreeMap::new(), &qa_tests)?);
    let paths: Vec<String> = changes.keys().map(RepoPath::to_string).collect();
    env.ctx.report("committing pipeline", None);
    let commit = host
        .commit_files(CommitRequest {
            repository: repo.name.clone(),
            branch: project.branch.clone(),
            files: changes
                .into_iter()
                .map(|(path, content)| FileChange { path, content })
                .collect(),
            message: "Add CI pipeline, container image and deployment manifest\n\nAlso commits QA's acceptance tests that passed.".into(),
            author: "Agentry DevOps".into(),
            idempotency_key: env.key().child("commit"),
        })
        .await?;

    let epics = context::epics(state)?;
    if let Some(mr) = context::shared::<MergeRequestRecord>(state, context::DEVELOPER_MR)? {
        let current = host.get_merge_request(&mr.repository, mr.id).await?;
        let base = current
            .description
            .split("\n\n## Checklist")
            .next()
            .unwrap_or_default()
            .to_string();
        let has = |p: &str| paths.iter().any(|x| x == p || x.starts_with(p));
        let tick = |b: bool| if b { "x" } else { " " };
        let round = state.lookup("context.qa.round").unwrap_or(json!(0));
        let stories: Vec<&str> = story_list(&epics).iter().map(|s| s.key.as_str()).collect();
        let description = format!(
            "{base}\n\n## Checklist\n- [x] Stories: {}\n- [{}] Acceptance tests passed (QA round {round})\n- [{}] CI pipeline (`.gitlab-ci.yml`)\n- [{}] Container image (`Dockerfile`)\n- [{}] Deployment manifest (`deploy/`)\n- Documentation: wiki space `{}`\n\n{}\n",
            stories.join(", "),
            tick(state.lookup("context.qa.passed") == Some(json!(true))),
            tick(has(".gitlab-ci.yml")),
            tick(has("Dockerfile")),
            tick(has("deploy/")),
            project.space,
            pipeline.notes
        );
        host.update_merge_request(
            &mr.repository,
            mr.id,
            MergeRequestUpdate {
                description: Some(description),
                ..MergeRequestUpdate::default()
            },
        )
        .await?;
    }
    move_stories(env.ports.tracker.as_ref(), &epics, "Done", true).await?;

    let mut commits: Vec<String> =
        context::shared(state, context::DEVELOPER_COMMITS)?.unwrap_or_default();
    if !commits.contains(&commit.sha) {
        commits.push(commit.sha.clone());
    }
    Ok(StateDelta {
        agent_outputs: vec![output("devops", "pipeline", &pipeline)?],
        shared_context: BTreeMap::from([
            (context::DEVOPS_FILES.to_string(), json!(paths)),
            (context::DEVELOPER_COMMITS.to_string(), json!(commits)),
        ]),
        gitlab_repos: vec![repo.name],
        usage,
        ..StateDelta::default()
    })
}

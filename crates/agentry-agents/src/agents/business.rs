//! Business analyst: requirement -> scope, epics, stories with acceptance
//! criteria -> tracker.

use std::collections::BTreeMap;

use agentry_core::{
    IssueKind, NewAttachment, NewComment, NewIssue, NewIssueLink, Result, StateDelta,
};
use serde_json::json;

use crate::agents::output;
use crate::context::{self, EpicRecord, IssueRecord, ProjectContext};
use crate::output::BusinessAnalysis;
use crate::runner::AgentEnv;

/// Runs the analyst.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let options = &env.ctx.options;
    let fixed_key =
        AgentEnv::named(&options.project_key).or_else(|| env.config.default_project_key.clone());
    let mut user = format!("## Requirement\n{}\n", state.requirements.trim());
    if let Some(key) = &fixed_key {
        user.push_str(&format!(
            "\n## Constraints\nUse project_key `{key}` (the tracker project is fixed).\n"
        ));
    }
    if let Some(repo) = AgentEnv::named(&options.repository) {
        user.push_str(&format!("Use repository `{repo}`.\n"));
    }
    user.push_str("\nReturn the BusinessAnalysis JSON.");

    let mut tools = env.toolbox(None, None, fixed_key.as_deref());
    let mut conversation = env.conversation()?;
    let (analysis, _) = conversation
        .run::<BusinessAnalysis>(env.system_prompt()?, user, &mut tools)
        .await?;
    let usage = conversation.into_usage();

    let mut analysis = analysis;
    if let Some(key) = fixed_key {
        analysis.project_key = key;
    }
    if let Some(repo) = AgentEnv::named(&options.repository) {
        analysis.repository = repo;
    }
    let project = ProjectContext {
        key: analysis.project_key.clone(),
        name: analysis.project_name.clone(),
        repository: analysis.repository.clone(),
        space: analysis.project_key.clone(),
        branch: format!("agentry/{}", analysis.repository),
        target_branch: AgentEnv::named(&options.target_branch)
            .unwrap_or_else(|| "main".to_string()),
    };

    let tracker = &env.ports.tracker;
    let key = env.key();
    tracker.ensure_project(&project.key, &project.name).await?;
    env.ctx.report("creating tickets", None);
    let mut epics = Vec::new();
    let mut tickets = Vec::new();
    for (i, epic) in analysis.epics.iter().enumerate() {
        let created = tracker
            .create_issue(NewIssue {
                project: project.key.clone(),
                kind: IssueKind::Epic,
                title: epic.title.clone(),
                description: epic.description.clone(),
                parent: None,
                labels: vec!["agentry".into()],
                idempotency_key: key.child(format!("epic:{i}")),
            })
            .await?;
        tickets.push(created.key.clone());
        let mut stories: Vec<IssueRecord> = Vec::new();
        for (j, story) in epic.stories.iter().enumerate() {
            let criteria: String = story
                .acceptance_criteria
                .iter()
                .map(|c| format!("- {c}\n"))
                .collect();
            let made = tracker
                .create_issue(NewIssue {
                    project: project.key.clone(),
                    kind: IssueKind::Story,
                    title: story.title.clone(),
                    description: format!(
                        "{}\n\n### Acceptance criteria\n{criteria}",
                        story.description
                    ),
                    parent: Some(created.key.clone()),
                    labels: vec!["agentry".into()],
                    idempotency_key: key.child(format!("epic:{i}/story:{j}")),
                })
                .await?;
            tickets.push(made.key.clone());
            for (k, task) in story.tasks.iter().enumerate() {
                let t = tracker
                    .create_issue(NewIssue {
                        project: project.key.clone(),
                        kind: IssueKind::Task,
                        title: task.clone(),
                        description: String::new(),
                        parent: Some(made.key.clone()),
                        labels: vec!["agentry".into()],
                        idempotency_key: key.child(format!("epic:{i}/story:{j}/task:{k}")),
                    })
                    .await?;
                tickets.push(t.key);
            }
            if let Some(previous) = stories.last() {
                tracker
                    .link_issues(NewIssueLink {
                        from: made.key.clone(),
                        to: previous.key.clone(),
                        kind: "relates to".into(),
                    })
                    .await?;
            }
            stories.push(IssueRecord {
                key: made.key,
                title: story.title.clone(),
            });
        }
        let digest: String = epic
            .stories
            .iter()
            .zip(&stories)
            .map(|(s, rec)| {
                let list: Vec<&str> = s.acceptance_criteria.iter().map(String::as_str).collect();
                format!("- **{}** {}: {}\n", rec.key, s.title, list.join("; "))
            })
            .collect();
        tracker
            .add_comment(NewComment {
                issue: created.key.clone(),
                body: format!("Acceptance criteria digest\n\n{digest}"),
                idempotency_key: key.child(format!("epic:{i}/comment:criteria")),
            })
            .await?;
        epics.push(EpicRecord {
            key: created.key,
            title: epic.title.clone(),
            stories,
        });
    }
    if let Some(first) = epics.first() {
        tracker
            .add_attachment(NewAttachment {
                issue: first.key.clone(),
                filename: "analysis.json".into(),
                media_type: "application/json".into(),
                content: serde_json::to_vec_pretty(&analysis)?,
                idempotency_key: key.child("attachment:analysis.json"),
            })
            .await?;
    }

    Ok(StateDelta {
        agent_outputs: vec![output("business_analyst", "analysis", &analysis)?],
        shared_context: BTreeMap::from([
            (
                context::PROJECT.to_string(),
                serde_json::to_value(&project)?,
            ),
            (
                context::BUSINESS_EPICS.to_string(),
                serde_json::to_value(&epics)?,
            ),
        ]),
        jira_tickets: tickets,
        usage,
        ..StateDelta::default()
    })
}

/// The analysis as compact prompt context: summary and stories with criteria.
pub(crate) fn analysis_context(state: &agentry_core::WorkflowState) -> String {
    match context::output(state, "business_analyst.analysis") {
        Some(a) => {
            let stories: Vec<_> = a["epics"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["stories"].as_array().into_iter().flatten())
                .map(|s| json!({"title": s["title"], "acceptance_criteria": s["acceptance_criteria"]}))
                .collect();
            format!(
                "## Scope\n{}\n\n## Stories\n{}\n",
                a["summary"].as_str().unwrap_or_default(),
                context::compact(&stories)
            )
        }
        None => String::new(),
    }
}

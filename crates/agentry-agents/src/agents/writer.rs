//! Technical writer: documentation pages in one tree -> wiki. A title that
//! already exists in the space (an earlier workflow's page) gets a new
//! version instead of a duplicate.

use std::collections::BTreeMap;

use agentry_core::{Error, NewPage, PageUpdate, Result, StateDelta};
use serde_json::json;

use crate::agents::business::analysis_context;
use crate::agents::output;
use crate::context::{self, compact};
use crate::output::Documentation;
use crate::runner::AgentEnv;

/// Runs the writer.
pub(crate) async fn run(env: &AgentEnv<'_>) -> Result<StateDelta> {
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let wiki = &env.ports.wiki;
    wiki.ensure_space(&project.space, &project.name).await?;
    let files = match env
        .ports
        .code_host
        .list_files(&project.repository, &project.branch)
        .await
    {
        Ok(files) => files,
        Err(Error::NotFound(_)) => Vec::new(),
        Err(error) => return Err(error),
    };

    let mut user = format!("## Requirement\n{}\n\n", state.requirements.trim());
    user.push_str(&analysis_context(state));
    if let Some(imp) = context::output(state, "developer.implementation") {
        user.push_str(&format!(
            "\n## Implementation\n{}\n\nDesign: {}\n",
            imp["summary"].as_str().unwrap_or_default(),
            imp["design"].as_str().unwrap_or_default()
        ));
    }
    if let Some(run) = context::output(state, "qa.test_run") {
        user.push_str(&format!(
            "\n## Tests\nround {}, passed: {}, command: `{}`\n",
            run["round"],
            run["passed"],
            compact(&run["command"])
        ));
    }
    user.push_str(&format!(
        "\n## Files on branch `{}` of repository `{}`\n{}\n",
        project.branch,
        project.repository,
        compact(&files)
    ));
    if let Some(code) = env
        .code_listing(&project.repository, &project.branch, &files)
        .await?
    {
        user.push_str(&format!("\n## The code\n{code}"));
    }
    user.push_str("\nReturn the Documentation JSON.");

    let mut tools = env.toolbox(
        Some(&project.repository),
        Some(&project.branch),
        Some(&project.space),
    );
    let mut conversation = env.conversation()?;
    let (docs, _) = conversation
        .run::<Documentation>(env.system_prompt()?, user, &mut tools)
        .await?;
    let usage = conversation.into_usage();

    let existing = wiki.list_pages(&project.space).await?;
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut page_ids = Vec::new();
    let mut records = Vec::new();
    for (i, spec) in docs.pages.iter().enumerate() {
        env.ctx.report(format!("page {}", spec.title), None);
        let parent_id = match &spec.parent {
            Some(title) => Some(ids.get(title).cloned().ok_or_else(|| {
                Error::permanent(format!(
                    "page `{}`: parent `{title}` was not created",
                    spec.title
                ))
            })?),
            None => None,
        };
        let page = match existing.iter().find(|p| p.title == spec.title) {
            // Made by an earlier attempt of this task: nothing to do.
            Some(p) if p.body == spec.body => p.clone(),
            Some(p) => {
                wiki.update_page(PageUpdate {
                    id: p.id.clone(),
                    title: None,
                    body: spec.body.clone(),
                    expected_version: None,
                    idempotency_key: env.key().child(format!("page:{i}/update")),
                })
                .await?
            }
            None => {
                wiki.create_page(NewPage {
                    space: project.space.clone(),
                    title: spec.title.clone(),
                    parent_id: parent_id.clone(),
                    body: spec.body.clone(),
                    idempotency_key: env.key().child(format!("page:{i}")),
                })
                .await?
            }
        };
        ids.insert(spec.title.clone(), page.id.clone());
        page_ids.push(page.id.clone());
        records.push(json!({"id": page.id, "title": page.title, "parent_id": page.parent_id, "version": page.version}));
    }

    Ok(StateDelta {
        agent_outputs: vec![output("technical_writer", "documentation", &docs)?],
        shared_context: BTreeMap::from([(context::DOCS_PAGES.to_string(), json!(records))]),
        confluence_pages: page_ids,
        usage,
        ..StateDelta::default()
    })
}

//! Sends one request to the local model and prints the answer and timings:
//! `cargo run --release -p agentry-llm-local --example probe -- [--free] [--tools] "PROMPT"`.

#![allow(clippy::unwrap_used)]

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, LlmProvider, OutputSchema, RequestMeta, ToolDefinition,
};
use agentry_llm_local::{LocalConfig, LocalProvider, ModelCache, DEFAULT_MODEL};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let free = args.iter().any(|a| a == "--free");
    let tools = args.iter().any(|a| a == "--tools");
    let prompt = args
        .iter()
        .rfind(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default();
    let path = ModelCache::new(ModelCache::default_dir()).ready(DEFAULT_MODEL)?;
    let mut config = LocalConfig::new(DEFAULT_MODEL.name, path);
    config.constrained = !free;
    let llm = LocalProvider::new(config);
    let mut request = ChatRequest {
        model: None,
        messages: vec![ChatMessage::system("You are a developer. You know nothing about the repository: always call a tool first."), ChatMessage::user(prompt)],
        tools: Vec::new(),
        response_schema: Some(OutputSchema { name: "A".into(), schema: json!({"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"], "additionalProperties": false}), layout: Default::default() }),
        temperature: Some(0.0),
        max_tokens: Some(100),
        meta: RequestMeta { workflow_id: None, role: AgentRole::Developer, node: "probe".into(), step: 0, visit: 0, turn: 0, request_id: None },
    };
    if tools {
        request.tools = vec![ToolDefinition {
            name: "read_file".into(),
            description: "Reads a file of the repository.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": false}),
        }];
    }
    let response = llm.complete(&request).await?;
    println!("{response:#?}");
    Ok(())
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The scripted provider: matching, determinism, errors, latency.

use std::time::Duration;

use agentry_core::{AgentRole, ChatMessage, ChatRequest, Error, LlmProvider, RequestMeta};
use agentry_llm_scripted::ScriptedProvider;
use serde_json::json;

fn request(role: AgentRole, visit: u32, turn: u32) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![
            ChatMessage::system("You are a developer."),
            ChatMessage::user("Build a URL shortener."),
        ],
        tools: Vec::new(),
        response_schema: None,
        temperature: None,
        max_tokens: None,
        meta: RequestMeta {
            workflow_id: None,
            role,
            node: role.as_str().to_owned(),
            step: 3,
            visit,
            turn,
            request_id: Some(agentry_core::RequestId::new("req-1").unwrap()),
        },
    }
}

const PRECEDENCE: &str = r#"
name = "precedence"

[[responses]]
role = "developer"
content = "any"

[[responses]]
role = "developer"
visit = 1
content = "visit 1"

[[responses]]
role = "developer"
turn = 2
content = "turn 2"

[[responses]]
role = "developer"
visit = 1
turn = 2
content = "visit 1 turn 2"

[[responses]]
role = "developer"
visit = 1
turn = 2
content = "shadowed: same role, visit and turn, later in the file"

[[responses]]
role = "qa"
visit = 0
turn = 0
content = "qa"
"#;

async fn answer(provider: &ScriptedProvider, role: AgentRole, visit: u32, turn: u32) -> String {
    provider
        .complete(&request(role, visit, turn))
        .await
        .unwrap()
        .content
}

// ---- matching ---------------------------------------------------------------

#[tokio::test]
async fn most_specific_response_wins() {
    let p = ScriptedProvider::from_toml_str(PRECEDENCE, "inline").unwrap();
    let check = |visit, turn, want: &'static str| {
        let p = p.clone();
        async move {
            assert_eq!(
                answer(&p, AgentRole::Developer, visit, turn).await,
                want,
                "visit {visit} turn {turn}"
            );
        }
    };
    check(1, 2, "visit 1 turn 2").await; // both exact, first in file order
    check(0, 2, "turn 2").await; // turn exact beats visit omitted
    check(1, 0, "visit 1").await; // visit exact when no turn matches
    check(0, 0, "any").await; // neither
    check(7, 9, "any").await;
    assert_eq!(answer(&p, AgentRole::Qa, 0, 0).await, "qa");
}

#[tokio::test]
async fn missing_response_is_a_permanent_error_naming_the_request() {
    let p = ScriptedProvider::from_toml_str(PRECEDENCE, "inline").unwrap();
    let err = p.complete(&request(AgentRole::Qa, 1, 2)).await.unwrap_err();
    assert!(matches!(err, Error::Permanent(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "scripted session `precedence` has no response for role qa, visit 1, turn 2"
    );
    let err = p
        .complete(&request(AgentRole::Devops, 0, 0))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("role devops, visit 0, turn 0"),
        "{err}"
    );
}

#[tokio::test]
async fn answers_depend_only_on_the_request_meta() {
    // Two providers, as in a process killed and resumed, asked in a
    // different order and repeatedly, answer the same.
    let first = ScriptedProvider::from_toml_str(PRECEDENCE, "inline").unwrap();
    let second = ScriptedProvider::from_toml_str(PRECEDENCE, "inline").unwrap();
    let metas = [(0, 0), (1, 2), (0, 2), (1, 0), (1, 2)];
    let mut a = Vec::new();
    for (v, t) in metas {
        a.push(
            first
                .complete(&request(AgentRole::Developer, v, t))
                .await
                .unwrap(),
        );
    }
    for (i, (v, t)) in metas.iter().enumerate().rev() {
        let b = second
            .complete(&request(AgentRole::Developer, *v, *t))
            .await
            .unwrap();
        assert_eq!(a[i], b, "visit {v} turn {t}");
    }
}

// ---- the response -------------------------------------------------------------

#[tokio::test]
async fn tool_calls_round_trip_to_json_arguments() {
    let script = r#"
name = "tools"

[[responses]]
role = "developer"
visit = 1
turn = 2

[[responses.tool_calls]]
name = "read_file"
arguments = { path = "app/shortener.py" }

[[responses.tool_calls]]
name = "write_file"
arguments = { path = "app/x.py", content = '''
def f():
    return "quoted \n kept"
''', lines = [1, 2], options = { overwrite = true, ratio = 0.5 } }

[[responses.tool_calls]]
name = "list_files"

[[responses]]
role = "developer"
content = '''{"summary": "done"}'''
"#;
    let p = ScriptedProvider::from_toml_str(script, "inline").unwrap();
    let r = p
        .complete(&request(AgentRole::Developer, 1, 2))
        .await
        .unwrap();
    assert_eq!(r.finish_reason, "tool_calls");
    assert_eq!(r.content, "");
    let ids: Vec<&str> = r.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_1_2_0", "call_1_2_1", "call_1_2_2"]);
    assert_eq!(r.tool_calls[0].name, "read_file");
    assert_eq!(
        r.tool_calls[0].arguments,
        json!({"path": "app/shortener.py"})
    );
    assert_eq!(
        r.tool_calls[1].arguments,
        json!({
            "path": "app/x.py",
            "content": "def f():\n    return \"quoted \\n kept\"\n",
            "lines": [1, 2],
            "options": {"overwrite": true, "ratio": 0.5},
        })
    );
    assert_eq!(r.tool_calls[2].arguments, json!({}));
    // The response survives JSON serialization unchanged.
    let back: agentry_core::ChatResponse =
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);

    let done = p
        .complete(&request(AgentRole::Developer, 1, 3))
        .await
        .unwrap();
    assert_eq!(done.finish_reason, "stop");
    assert!(done.tool_calls.is_empty());
    let parsed: serde_json::Value = serde_json::from_str(&done.content).unwrap();
    assert_eq!(parsed, json!({"summary": "done"}));
}

#[tokio::test]
async fn usage_provider_and_model_are_reported() {
    let p = ScriptedProvider::from_toml_str(PRECEDENCE, "inline").unwrap();
    assert_eq!(p.name(), "scripted");
    let r = p.complete(&request(AgentRole::Qa, 0, 0)).await.unwrap();
    assert_eq!(r.provider, "scripted");
    assert_eq!(r.model, "scripted:precedence");
    // "You are a developer." (20 chars) + "Build a URL shortener." (22 chars).
    assert_eq!(r.usage.prompt_tokens, 5 + 6);
    assert_eq!(r.usage.completion_tokens, 1); // "qa"
    assert!(!r.usage.cached);
}

// ---- latency ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn latency_delays_each_answer() {
    let latency = Duration::from_millis(750);
    let p = ScriptedProvider::from_toml_str(PRECEDENCE, "inline")
        .unwrap()
        .with_latency(latency);
    let req = request(AgentRole::Qa, 0, 0);

    // Not answered before the latency has passed...
    let early = tokio::time::timeout(latency - Duration::from_millis(1), p.complete(&req)).await;
    assert!(early.is_err(), "answered before the latency");

    // ...and answered once it has (virtual time: no real waiting).
    let start = tokio::time::Instant::now();
    let task = tokio::spawn({
        let p = p.clone();
        let req = req.clone();
        async move { p.complete(&req).await }
    });
    tokio::task::yield_now().await; // let it reach its sleep
    tokio::time::advance(latency - Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "answered before the latency");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(task.await.unwrap().unwrap().content, "qa");
    assert_eq!(start.elapsed(), latency);

    let none = ScriptedProvider::from_toml_str(PRECEDENCE, "inline").unwrap();
    let start = tokio::time::Instant::now();
    none.complete(&req).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// ---- invalid scripts ------------------------------------------------------------

fn check_invalid(script: &str, expected: &[&str]) {
    let err = ScriptedProvider::from_toml_str(script, "inline").unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let text = err.to_string();
    for want in expected {
        assert!(text.contains(want), "`{text}` lacks `{want}`");
    }
}

#[test]
fn invalid_scripts_name_the_response() {
    let ok = "[[responses]]\nrole = \"qa\"\ncontent = \"x\"\n";
    check_invalid(
        &format!("{ok}[[responses]]\nrole = \"tester\"\ncontent = \"x\"\n"),
        &[
            "responses[1]",
            "unknown agent role `tester`",
            "business_analyst",
        ],
    );
    check_invalid(
        "[[responses]]\nrole = \"developer\"\nturn = 1\n",
        &["responses[0]", "neither `content` nor `tool_calls`"],
    );
    check_invalid(
        &format!(
            "{ok}{ok}[[responses]]\nrole = \"developer\"\n[[responses.tool_calls]]\nname = \"read_file\"\narguments = \"app.py\"\n"
        ),
        &["responses[2].tool_calls[0]", "`arguments` of `read_file` must be a table", "string"],
    );
    check_invalid(
        "[[responses]]\nrole = \"qa\"\nvisit = -1\ncontent = \"x\"\n",
        &["responses[0]"],
    );
    check_invalid(
        "[[responses]]\nrole = \"qa\"\nvist = 1\ncontent = \"x\"\n",
        &["responses[0]", "unknown field `vist`"],
    );
    check_invalid(
        "[[responses]]\ncontent = \"x\"\n",
        &["responses[0]", "missing field `role`"],
    );
    check_invalid(
        "name = \"empty\"\n",
        &["script `empty` has no [[responses]]"],
    );
    check_invalid("[[responses]\nrole = ", &["script `inline`"]);
}

#[test]
fn from_file_reads_and_names_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, "[[responses]]\nrole = \"qa\"\ncontent = \"x\"\n").unwrap();
    let p = ScriptedProvider::from_file(&path).unwrap();
    assert_eq!(p.session_name(), "demo");

    std::fs::write(&path, "[[responses]]\nrole = \"qa\"\n").unwrap();
    let err = ScriptedProvider::from_file(&path).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("demo.toml"), "{err}");

    let err = ScriptedProvider::from_file(dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

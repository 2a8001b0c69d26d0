//! `GET /v1/workflows/{id}/history`: the list of checkpoints, and with
//! `?step=N` the state at the end of step N, exactly what `agentry
//! workflows history ID --step N` prints (the store's `state_at`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use agentry_core::AccessRole::{Operator, Viewer};
use agentry_core::{Store as _, WorkflowId};
use serde_json::{json, Value};
use support::{get, Api};

/// A completed workflow of tenant `acme` and a viewer key of it; the
/// workflow's id and its last step.
async fn completed(api: &Api) -> (String, String, u64) {
    let operator = api.key("acme", Operator).await;
    let id = api.submit(&operator, "a todo app").await;
    api.wait_for(&operator, &id, "completed").await;
    let viewer = api.key("acme", Viewer).await;
    let h = api
        .send(get(&format!("/v1/workflows/{id}/history")).key(&viewer))
        .await;
    assert_eq!(h.status, 200, "{}", h.text);
    let last = h.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["step"].as_u64().unwrap())
        .max()
        .unwrap();
    (viewer, id, last)
}

#[tokio::test]
async fn history_at_a_step_is_the_state_the_cli_prints_for_that_step() {
    let api = Api::new().await;
    let (key, id, last) = completed(&api).await;
    assert!(last >= 2, "the bench workflow has several steps: {last}");
    let workflow: WorkflowId = id.parse().unwrap();
    let mut seen = Vec::new();
    for step in 0..=last {
        let r = api
            .send(get(&format!("/v1/workflows/{id}/history?step={step}")).key(&key))
            .await;
        assert_eq!(r.status, 200, "step {step}: {}", r.text);
        // What the CLI prints: the store's fold up to the step, with the
        // request id as the client sent it (the API never shows the
        // tenant scope).
        let state = api.store.state_at(workflow, Some(step)).await.unwrap();
        let mut expected = serde_json::to_value(&state).unwrap();
        expected["request_id"] = json!(state.request_id.as_str().strip_prefix("acme:").unwrap());
        assert_eq!(r.json, expected, "step {step}");
        assert_eq!(r.json["step"], step);
        seen.push(r.json);
    }
    // The steps really differ: outputs accumulate, the end is the end.
    let outputs = |v: &Value| v["agent_outputs"].as_object().unwrap().len();
    assert!(
        outputs(&seen[0]) < outputs(&seen[last as usize]),
        "{seen:?}"
    );
    assert_eq!(seen[last as usize]["status"], "completed");
    assert_ne!(seen[0]["status"], "completed");
}

/// Expects `GET .../history?query` to be 422 naming `param`.
async fn check_bad(api: &Api, key: &str, id: &str, query: &str, param: &str) {
    let r = api
        .send(get(&format!("/v1/workflows/{id}/history?{query}")).key(key))
        .await;
    assert_eq!(r.problem(422), [param], "?{query}");
}

#[tokio::test]
async fn history_step_must_be_a_step_the_workflow_has() {
    let api = Api::new().await;
    let (key, id, last) = completed(&api).await;
    for query in [
        "step=abc",
        "step=-1",
        "step=1.5",
        "step=",
        "step=18446744073709551616",
    ] {
        check_bad(&api, &key, &id, query, "step").await;
    }
    check_bad(&api, &key, &id, "steps=1", "steps").await;
    // Past the last step: the CLI's "no step N" refusal, as a 422.
    let r = api
        .send(get(&format!("/v1/workflows/{id}/history?step={}", last + 1)).key(&key))
        .await;
    assert_eq!(r.problem(422), ["step"]);
    let message = r.json["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("no step {}", last + 1))
            && message.contains(&format!("last step is {last}")),
        "{message}"
    );
}

#[tokio::test]
async fn history_at_a_step_of_another_tenants_workflow_is_404_like_an_unknown_one() {
    let api = Api::new().await;
    let (_, id, _) = completed(&api).await;
    let other = api.key("globex", Viewer).await;
    for path in [
        format!("/v1/workflows/{id}/history?step=1"),
        "/v1/workflows/0190e8a4-0000-7000-8000-000000000000/history?step=1".to_string(),
    ] {
        api.send(get(&path).key(&other)).await.problem(404);
    }
}

#[tokio::test]
async fn the_openapi_document_declares_the_step_parameter_and_both_answers() {
    let api = Api::new().await;
    let doc = api.send(get("/openapi.json")).await.json;
    let op = &doc["paths"]["/v1/workflows/{id}/history"]["get"];
    let step = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "step")
        .unwrap_or_else(|| panic!("no step parameter: {op}"));
    assert_eq!(step["in"], "query");
    assert_eq!(step["required"], false);
    assert_eq!(step["schema"]["minimum"], 0, "{step}");
    let answer = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    let name = answer.rsplit('/').next().unwrap();
    let one_of: Vec<&str> = doc["components"]["schemas"][name]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["$ref"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(one_of, ["History", "WorkflowStateAtStep"]);
}

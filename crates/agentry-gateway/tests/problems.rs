//! Every refusal is an RFC 9457 problem document, whoever makes it (a
//! handler, an extractor, axum's router), and repeats little of what the
//! client sent: the status, the content type, the request id, and the
//! field at fault, checked through the router without a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use agentry_core::AccessRole::{Operator, Viewer};
use agentry_gateway::GatewayConfig;
use axum::http::Method;
use serde_json::json;
use support::{get, post, post_raw, request, Api, Reply};

/// A well-formed id no workflow has.
const UNKNOWN_ID: &str = "0190e8a4-0000-7000-8000-000000000000";

// ------------------------------------------------------------ 405

#[tokio::test]
async fn a_method_the_route_lacks_is_a_405_problem_that_keeps_allow() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    for (method, path, allowed) in [
        (
            Method::DELETE,
            "/v1/workflows".to_string(),
            &["GET", "POST"][..],
        ),
        (Method::PUT, format!("/v1/workflows/{UNKNOWN_ID}"), &["GET"]),
        (
            Method::GET,
            format!("/v1/workflows/{UNKNOWN_ID}/cancel"),
            &["POST"],
        ),
        (Method::POST, "/healthz".to_string(), &["GET"]),
    ] {
        let r = api.send(request(method.clone(), &path).key(&key)).await;
        r.problem(405);
        let allow: Vec<&str> = r.header("allow").split(',').map(str::trim).collect();
        for m in allowed {
            assert!(allow.contains(m), "{method} {path}: Allow {allow:?}");
        }
        assert!(
            r.json["detail"].as_str().unwrap().contains(method.as_str()),
            "{}",
            r.text
        );
    }
}

// ------------------------------------------------------------ path and query

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_422_naming_the_parameter() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    for path in [
        "/v1/workflows/%FF%FE",
        "/v1/workflows/%C3%28/history",
        "/v1/workflows/%FF/events",
    ] {
        assert_eq!(
            api.send(get(path).key(&key)).await.problem(422),
            ["id"],
            "{path}"
        );
    }
    let admin = api.key("acme", agentry_core::AccessRole::Admin).await;
    let r = api
        .send(post("/v1/keys/%FF/revoke", json!({})).key(&admin))
        .await;
    assert_eq!(r.problem(422), ["key_id"]);
    // The docs assets answer a problem too, for a bad name and an unknown one.
    api.send(get("/docs/%FF")).await.problem(422);
    api.send(get("/docs/nothing.js")).await.problem(404);
}

// ------------------------------------------------------------ 431

#[tokio::test]
async fn too_many_or_too_large_headers_are_a_431_problem() {
    let config = GatewayConfig {
        max_headers: 20,
        max_header_bytes: 8 * 1024,
        ..GatewayConfig::default()
    };
    let api = Api::with(config, Duration::ZERO).await;
    let key = api.key("acme", Viewer).await;
    // At the limits: answered.
    let mut at_limit = get("/v1/workflows").key(&key);
    for i in 0..19 {
        at_limit = at_limit.header(&format!("x-extra-{i}"), "1");
    }
    assert_eq!(api.send(at_limit).await.status, 200);

    let mut many = get("/v1/workflows").key(&key);
    for i in 0..21 {
        many = many.header(&format!("x-extra-{i}"), "1");
    }
    let r = api.send(many).await;
    r.problem(431);
    assert!(
        r.json["detail"].as_str().unwrap().contains("20"),
        "{}",
        r.text
    );

    let large = get("/v1/workflows")
        .key(&key)
        .header("x-large", &"v".repeat(9000));
    let r = api.send(large).await;
    r.problem(431);
    assert!(!r.text.contains(&"v".repeat(50)), "{}", r.text);
}

// ------------------------------------------------------------ JSON bodies

#[tokio::test]
async fn a_duplicated_json_key_is_a_422_naming_it_by_pointer_at_any_depth() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    for (body, pointer) in [
        (
            r#"{"requirement": "a todo app", "requirement": "rm -rf /"}"#,
            "/requirement",
        ),
        (
            r#"{"requirement": "x", "options": {"budget_usd": 1, "budget_usd": 1000}}"#,
            "/options/budget_usd",
        ),
        (
            r#"{"requirement": "x", "project_key": "AB", "repository": "r", "project_key": "AB"}"#,
            "/project_key",
        ),
    ] {
        let r = api
            .send(post_raw("/v1/workflows", Some("application/json"), body).key(&key))
            .await;
        assert_eq!(r.problem(422), [pointer], "{body}");
        let key_name = pointer.rsplit('/').next().unwrap();
        assert!(
            r.json["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(key_name),
            "{}",
            r.text
        );
    }
    assert_eq!(api.list_ids(&key).await, Vec::<String>::new());
    // A control action's body too.
    let r = api
        .send(
            post_raw(
                &format!("/v1/workflows/{UNKNOWN_ID}/reject"),
                Some("application/json"),
                r#"{"reason": "no", "reason": "yes"}"#,
            )
            .key(&key),
        )
        .await;
    assert_eq!(r.problem(422), ["/reason"]);
}

// ------------------------------------------------------------ echoes

/// The longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    text.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// Expects a problem with `status` that is short and repeats at most 100
/// characters of `c`, once.
#[track_caller]
fn check_short(r: &Reply, status: u16, c: char) {
    r.problem(status);
    assert!(
        r.text.len() < 2000,
        "a {} byte problem: {}",
        r.text.len(),
        &r.text[..300]
    );
    assert!(longest_run(&r.text, c) <= 100, "{}", r.text);
    let echo: String = std::iter::repeat_n(c, 60).collect();
    assert!(
        r.text.matches(&echo).count() <= 1,
        "the value is repeated: {}",
        r.text
    );
}

#[tokio::test]
async fn a_422_for_an_over_long_requirement_does_not_echo_it() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let requirement = "x".repeat(100_001);
    let r = api
        .send(post("/v1/workflows", json!({ "requirement": requirement })).key(&key))
        .await;
    check_short(&r, 422, 'x');
    assert_eq!(r.json["errors"][0]["field"], "/requirement");
    let message = r.json["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("100001") && message.contains("100000"),
        "{message}"
    );
    assert_eq!(api.list_ids(&key).await, Vec::<String>::new());
}

#[tokio::test]
async fn no_refusal_repeats_more_than_a_hundred_characters_of_a_value() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let long = "y".repeat(5000);
    let bodies = [
        json!({ "requirement": "x", "project_key": long }),
        json!({ "requirement": "x", "workflow": long }),
        json!({ "requirement": ["y", long] }),
        json!({ "requirement": "x", (long.clone()): 1 }),
        json!({ "requirement": "x", "options": { "budget_usd": long } }),
    ];
    for body in bodies {
        let r = api.send(post("/v1/workflows", body).key(&key)).await;
        check_short(&r, 422, 'y');
    }
    for path in [
        format!("/v1/workflows?status={long}"),
        format!("/v1/workflows?{long}=1"),
        format!("/v1/workflows?before={long}"),
        format!("/v1/workflows/{long}"),
        format!("/v1/workflows/{UNKNOWN_ID}/history?step={long}"),
    ] {
        let r = api.send(get(&path).key(&key)).await;
        check_short(&r, 422, 'y');
    }
    let r = api
        .send(get("/v1/workflows").key(&key).header("x-request-id", &long))
        .await;
    check_short(&r, 422, 'y');
}

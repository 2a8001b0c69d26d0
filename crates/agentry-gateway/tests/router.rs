//! The REST API, called through the router without a socket: submission
//! and its request id, validation, authentication, roles, tenants, control
//! actions, limits, readiness, the OpenAPI document and the event stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use agentry_core::{AccessRole, ApiKeyStore as _, RateLimit, Store as _, WorkflowId};
use agentry_gateway::GatewayConfig;
use serde_json::{json, Value};
use support::{eventually, get, ids, post, post_raw, Api, Reply};

use AccessRole::{Admin, Operator, Viewer};

/// A well-formed id no workflow has.
const UNKNOWN_ID: &str = "0190e8a4-0000-7000-8000-000000000000";

// ------------------------------------------------------------ submission

#[tokio::test]
async fn a_submission_is_accepted_with_its_location_links_and_request_id_and_completes() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;

    let r = api
        .send(
            post("/v1/workflows", json!({"requirement": "a todo app"}))
                .key(&key)
                .header("x-request-id", "req-accept-1"),
        )
        .await;

    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    assert_eq!(r.header("location"), format!("/v1/workflows/{id}"));
    assert_eq!(r.header("x-request-id"), "req-accept-1");
    assert_eq!(r.json["request_id"], "req-accept-1");
    assert_eq!(r.json["status"], "pending");
    assert_eq!(
        r.json["links"],
        json!({
            "self": format!("/v1/workflows/{id}"),
            "events": format!("/v1/workflows/{id}/events"),
            "history": format!("/v1/workflows/{id}/history"),
        })
    );
    api.wait_for(&key, id, "completed").await;
}

#[tokio::test]
async fn a_completed_workflow_shows_its_outputs_usage_and_history() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;

    let w = api.wait_for(&key, &id, "completed").await;

    assert_eq!(w["id"], id.as_str());
    assert_eq!(w["workflow"], "bench");
    assert_eq!(w["requirement"], "a todo app");
    let outputs = w["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 7, "one output per bench node run");
    for o in outputs {
        for field in ["agent", "output_type", "step", "content", "created_at"] {
            assert!(!o[field].is_null(), "output without {field}: {o}");
        }
    }
    assert!(w["usage"].is_array(), "{w}");
    assert!(w["total_cost_usd"].is_number(), "{w}");
    assert_eq!(w["errors"], json!([]));
    assert!(w["artifacts"]["tickets"].is_array(), "{w}");
    assert_eq!(w["links"]["self"], format!("/v1/workflows/{id}"));

    let h = api
        .send(get(&format!("/v1/workflows/{id}/history")).key(&key))
        .await;
    assert_eq!(h.status, 200, "{}", h.text);
    let items = h.json["items"].as_array().unwrap();
    assert!(!items.is_empty());
    let seqs: Vec<u64> = items.iter().map(|i| i["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    assert_eq!(items.last().unwrap()["status"], "completed");
}

#[tokio::test]
async fn the_list_filters_by_status_and_pages_newest_first_without_gaps() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let mut submitted = Vec::new();
    for n in 0..5 {
        let id = api.submit(&key, &format!("app {n}")).await;
        api.wait_for(&key, &id, "completed").await;
        submitted.push(id);
    }

    let completed = api
        .send(get("/v1/workflows?status=completed").key(&key))
        .await;
    assert_eq!(ids(&completed.json["items"]).len(), 5, "{}", completed.text);
    let running = api
        .send(get("/v1/workflows?status=running").key(&key))
        .await;
    assert_eq!(running.json["items"], json!([]), "{}", running.text);

    let mut paged = Vec::new();
    let mut path = "/v1/workflows?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = api.send(get(&path).key(&key)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let items = ids(&page.json["items"]);
        assert!(items.len() <= 2);
        paged.extend(items);
        pages += 1;
        match page.json["next"].as_str() {
            Some(next) => path = format!("/v1/workflows?limit=2&before={next}"),
            None => break,
        }
    }
    submitted.reverse();
    assert_eq!(paged, submitted, "every workflow once, newest first");
    assert_eq!(pages, 3);
}

// ------------------------------------------------------------ request ids

#[tokio::test]
async fn a_request_id_is_echoed_and_carried_by_the_workflow_and_its_stored_events() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let r = api
        .send(
            post("/v1/workflows", json!({"requirement": "a todo app"}))
                .key(&key)
                .header("x-request-id", "order-42"),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.header("x-request-id"), "order-42");
    let id = r.json["id"].as_str().unwrap();

    let w = api.wait_for(&key, id, "completed").await;

    assert_eq!(w["request_id"], "order-42");
    let events = api
        .store
        .events(Some(id.parse::<WorkflowId>().unwrap()), 0, 0)
        .await
        .unwrap();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(
            e.event
                .request_id
                .as_ref()
                .map(agentry_core::RequestId::as_str),
            // Stored scoped by tenant; the API shows it as sent.
            Some("acme:order-42"),
            "{} event without the request id",
            e.event.kind.as_str()
        );
    }
}

#[tokio::test]
async fn without_a_request_id_one_is_made_returned_and_used_by_the_workflow() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let r = api
        .send(post("/v1/workflows", json!({"requirement": "a todo app"})).key(&key))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let made = r.header("x-request-id");
    assert!(!made.is_empty());
    assert_eq!(r.json["request_id"], made);
}

#[tokio::test]
async fn resubmitting_a_request_id_with_the_same_requirement_returns_the_same_workflow_with_200() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let submit = || {
        post("/v1/workflows", json!({"requirement": "a todo app"}))
            .key(&key)
            .header("x-request-id", "once")
    };
    let first = api.send(submit()).await;
    assert_eq!(first.status, 202, "{}", first.text);

    let again = api.send(submit()).await;

    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(api.list_ids(&key).await.len(), 1);
}

#[tokio::test]
async fn a_request_id_reused_for_another_requirement_is_409() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let send = |requirement: &str| {
        post("/v1/workflows", json!({ "requirement": requirement }))
            .key(&key)
            .header("x-request-id", "once")
    };
    assert_eq!(api.send(send("a todo app")).await.status, 202);

    api.send(send("a chat app")).await.problem(409);

    assert_eq!(api.list_ids(&key).await.len(), 1);
}

#[tokio::test]
async fn a_request_id_is_scoped_to_its_tenant() {
    // Tenant B reusing tenant A's request id neither learns that A used it
    // nor blocks A: it gets a workflow of its own.
    let api = Api::new().await;
    let a = api.key("tenant-a", Operator).await;
    let b = api.key("tenant-b", Operator).await;
    let send = |key: &str| {
        post("/v1/workflows", json!({"requirement": "a todo app"}))
            .key(key)
            .header("x-request-id", "shared")
    };
    let first = api.send(send(&a)).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let a_id = first.json["id"].as_str().unwrap().to_string();

    let r = api.send(send(&b)).await;

    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["request_id"], "shared");
    let b_id = r.json["id"].as_str().unwrap().to_string();
    assert_ne!(a_id, b_id);
    assert_eq!(api.list_ids(&b).await, vec![b_id]);
    assert_eq!(api.list_ids(&a).await, vec![a_id.clone()]);
    // And A's own retry still finds A's workflow.
    let again = api.send(send(&a)).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["id"], a_id.as_str());
}

// ------------------------------------------------------------ validation

/// Submits `body` as JSON and expects a problem with `status` whose errors
/// name `field` (a JSON pointer), or none when `field` is empty.
async fn check_submit(api: &Api, key: &str, body: Value, status: u16, field: &str) {
    let r = api.send(post("/v1/workflows", body.clone()).key(key)).await;
    let fields = r.problem(status);
    if !field.is_empty() {
        assert!(
            fields.iter().any(|f| f == field),
            "{body} should name {field}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn invalid_submissions_are_422_naming_the_field_and_store_nothing() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    for (body, field) in [
        (json!({"requirement": "x", "colour": "red"}), "/colour"),
        (json!({}), "/requirement"),
        (json!({"requirement": ""}), "/requirement"),
        (json!({"requirement": "  \n "}), "/requirement"),
        (json!({"requirement": 42}), "/requirement"),
        (
            json!({"requirement": "x", "project_key": "lower"}),
            "/project_key",
        ),
        (
            json!({"requirement": "x", "repository": "Has Spaces"}),
            "/repository",
        ),
        (
            json!({"requirement": "x", "options": {"budget_usd": "ten"}}),
            "/options/budget_usd",
        ),
        (json!({"requirement": "x", "workflow": "nope"}), "/workflow"),
        (json!(["a todo app"]), "/"),
    ] {
        check_submit(&api, &key, body, 422, field).await;
    }
    assert_eq!(api.list_ids(&key).await, Vec::<String>::new());
}

#[tokio::test]
async fn bodies_that_are_not_json_are_400_or_415_and_oversized_ones_413() {
    let config = GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    };
    let api = Api::with(config, Duration::ZERO).await;
    let key = api.key("acme", Operator).await;
    let send = |content_type: Option<&str>, body: &str| {
        post_raw("/v1/workflows", content_type, body.as_bytes().to_vec()).key(&key)
    };

    api.send(send(Some("application/json"), "{\"requirement\":"))
        .await
        .problem(400);
    api.send(send(Some("text/plain"), "a todo app"))
        .await
        .problem(415);
    api.send(send(None, "a todo app")).await.problem(415);
    let big = json!({ "requirement": "x".repeat(2000) }).to_string();
    api.send(send(Some("application/json"), &big))
        .await
        .problem(413);
    assert_eq!(api.list_ids(&key).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_malformed_workflow_id_in_the_path_is_422_naming_id() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    for path in [
        "/v1/workflows/not-a-uuid",
        "/v1/workflows/not-a-uuid/history",
        "/v1/workflows/not-a-uuid/events",
    ] {
        assert_eq!(
            api.send(get(path).key(&key)).await.problem(422),
            ["id"],
            "{path}"
        );
    }
    let r = api
        .send(post("/v1/workflows/not-a-uuid/cancel", json!({})).key(&key))
        .await;
    assert_eq!(r.problem(422), ["id"]);
}

/// Expects `GET path` to be 422 naming `param`, in a field or the detail.
async fn check_query(api: &Api, key: &str, path: &str, param: &str) {
    let r = api.send(get(path).key(key)).await;
    let fields = r.problem(422);
    assert!(
        fields.iter().any(|f| f == param),
        "{path}: the problem's errors should name `{param}`: {}",
        r.text
    );
}

#[tokio::test]
async fn bad_query_parameters_are_422_naming_the_parameter() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    check_query(&api, &key, "/v1/workflows?limit=0", "limit").await;
    check_query(&api, &key, "/v1/workflows?limit=501", "limit").await;
    check_query(&api, &key, "/v1/workflows?before=yesterday", "before").await;
    check_query(&api, &key, "/v1/workflows?limit=ten", "limit").await;
    check_query(&api, &key, "/v1/workflows?status=lost", "status").await;
    check_query(&api, &key, "/v1/workflows?colour=red", "colour").await;
    let events = format!("/v1/workflows/{UNKNOWN_ID}/events");
    check_query(&api, &key, &format!("{events}?after=-1"), "after").await;
    check_query(&api, &key, &format!("{events}?since=3"), "since").await;
}

// ------------------------------------------------------------ authentication

#[tokio::test]
async fn without_credentials_the_api_is_401_with_a_bearer_challenge() {
    let api = Api::new().await;
    let r = api.send(get("/v1/workflows")).await;
    r.problem(401);
    assert!(
        r.header("www-authenticate")
            .starts_with("Bearer realm=\"agentry\""),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn malformed_keys_and_tokens_are_401() {
    let api = Api::new().await;
    for credential in [
        "agk_short",
        "agk_abcdefghijkl_short",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    ] {
        let r = api.send(get("/v1/workflows").key(credential)).await;
        r.problem(401);
        assert!(
            !r.text.contains(credential),
            "echoes the credential: {}",
            r.text
        );
        assert!(!r.header("www-authenticate").is_empty());
    }
    api.send(get("/v1/workflows").header("authorization", "Basic dXNlcjpwYXNz"))
        .await
        .problem(401);
}

#[tokio::test]
async fn a_wrong_secret_for_an_existing_key_reads_exactly_like_an_unknown_key() {
    let api = Api::new().await;
    let real = api.issue("acme", Operator).await;
    let secret = "s".repeat(43);
    let send = |key: String| {
        get("/v1/workflows")
            .key(&key)
            .header("x-request-id", "leak-check")
    };

    let wrong_secret = api
        .send(send(format!("agk_{}_{secret}", real.record.id)))
        .await;
    let unknown_id = api.send(send(format!("agk_aaaaaaaaaaaa_{secret}"))).await;

    wrong_secret.problem(401);
    assert_eq!(wrong_secret.text, unknown_id.text);
    assert_eq!(
        wrong_secret.header("www-authenticate"),
        unknown_id.header("www-authenticate")
    );
}

/// A server whose key records are cached for `cache_s`, and a working
/// operator key revoked behind the server's back (as `agentry keys revoke`
/// does from another process).
async fn key_revoked_elsewhere(cache_s: u64) -> (Api, String) {
    let config = GatewayConfig {
        api_key_cache_s: cache_s,
        ..GatewayConfig::default()
    };
    let api = Api::with(config, Duration::ZERO).await;
    let issued = api.issue("acme", Operator).await;
    assert_eq!(
        api.send(get("/v1/workflows").key(&issued.key)).await.status,
        200
    );
    api.store
        .revoke_api_key(&issued.record.id, chrono::Utc::now())
        .await
        .unwrap();
    (api, issued.key)
}

#[tokio::test]
async fn a_revoked_key_is_401() {
    // With the key cache off, the very next request sees the revocation.
    let (api, key) = key_revoked_elsewhere(0).await;
    api.send(get("/v1/workflows").key(&key)).await.problem(401);
}

#[tokio::test]
async fn a_key_revoked_elsewhere_is_refused_once_its_cache_entry_expires() {
    let (api, key) = key_revoked_elsewhere(1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = api.send(get("/v1/workflows").key(&key)).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked key still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_in_the_x_api_key_header_is_accepted() {
    let api = Api::new().await;
    let key = api.key("acme", Viewer).await;
    let r = api
        .send(get("/v1/workflows").header("x-api-key", &key))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn public_routes_need_no_credentials() {
    let api = Api::new().await;
    for (path, content_type) in [
        ("/healthz", "application/json"),
        ("/readyz", "application/json"),
        ("/openapi.json", "application/json"),
        ("/docs", "text/html; charset=utf-8"),
        ("/docs/swagger-ui.css", "text/css; charset=utf-8"),
    ] {
        let r = api.send(get(path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.header("content-type"), content_type, "{path}");
    }
}

// ------------------------------------------------------------ roles

#[tokio::test]
async fn a_viewer_reads_but_cannot_submit_or_control() {
    let api = Api::new().await;
    let operator = api.key("acme", Operator).await;
    let viewer = api.key("acme", Viewer).await;
    let id = api.submit(&operator, "a todo app").await;
    api.wait_for(&operator, &id, "completed").await;

    api.send(post("/v1/workflows", json!({"requirement": "x"})).key(&viewer))
        .await
        .problem(403);
    for (action, body) in control_actions() {
        let path = format!("/v1/workflows/{id}/{action}");
        api.send(post(&path, body).key(&viewer)).await.problem(403);
    }
    for path in [
        "/v1/workflows".to_string(),
        format!("/v1/workflows/{id}"),
        format!("/v1/workflows/{id}/history"),
        format!("/v1/workflows/{id}/events"),
        "/v1/agents".to_string(),
        "/v1/workflow-definitions".to_string(),
    ] {
        let r = api.send(get(&path).key(&viewer)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn an_operator_cannot_manage_keys() {
    let api = Api::new().await;
    let operator = api.key("acme", Operator).await;
    let other = api.issue("acme", Viewer).await;

    api.send(get("/v1/keys").key(&operator)).await.problem(403);
    api.send(post("/v1/keys", json!({"role": "admin"})).key(&operator))
        .await
        .problem(403);
    let revoke = format!("/v1/keys/{}/revoke", other.record.id);
    api.send(post(&revoke, json!({})).key(&operator))
        .await
        .problem(403);
    assert_eq!(
        api.send(get("/v1/workflows").key(&other.key)).await.status,
        200
    );
}

#[tokio::test]
async fn an_admin_creates_a_key_that_is_shown_once_and_works_at_once() {
    let api = Api::new().await;
    let admin = api.key("acme", Admin).await;

    let created = api
        .send(post("/v1/keys", json!({"role": "viewer", "name": "ci"})).key(&admin))
        .await;

    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.json["key"].as_str().unwrap();
    let key_id = created.json["id"].as_str().unwrap();
    assert!(key.starts_with(&format!("agk_{key_id}_")), "{key}");
    assert_eq!(created.json["tenant"], "acme");
    assert_eq!(created.json["role"], "viewer");
    assert_eq!(created.json["name"], "ci");
    assert_eq!(api.send(get("/v1/workflows").key(key)).await.status, 200);
    api.send(post("/v1/workflows", json!({"requirement": "x"})).key(key))
        .await
        .problem(403);

    let list = api.send(get("/v1/keys").key(&admin)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(ids(&list.json["items"]).contains(&key_id.to_string()));
    let stored = api.store.api_key(key_id).await.unwrap().unwrap();
    // The secret is URL-safe base64, so it may hold `_` itself.
    let secret = key.strip_prefix(&format!("agk_{key_id}_")).unwrap();
    assert!(secret.len() >= 32, "{key}");
    assert!(!list.text.contains(secret), "the list shows a secret");
    assert!(
        !list.text.contains(&stored.secret_hash),
        "the list shows a hash"
    );
    assert!(list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("key").is_none() && k.get("secret_hash").is_none()));
}

#[tokio::test]
async fn an_admin_revokes_its_tenants_keys_and_only_those() {
    let api = Api::new().await;
    let admin = api.key("acme", Admin).await;
    let ours = api.issue("acme", Operator).await;
    let theirs = api.issue("globex", Operator).await;

    let r = api
        .send(post(&format!("/v1/keys/{}/revoke", ours.record.id), json!({})).key(&admin))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["revoked_at"].is_string(), "{}", r.text);
    api.send(get("/v1/workflows").key(&ours.key))
        .await
        .problem(401);

    let other = api
        .send(post(&format!("/v1/keys/{}/revoke", theirs.record.id), json!({})).key(&admin))
        .await;
    let unknown = api
        .send(post("/v1/keys/aaaaaaaaaaaa/revoke", json!({})).key(&admin))
        .await;
    other.problem(404);
    unknown.problem(404);
    assert_eq!(
        api.send(get("/v1/workflows").key(&theirs.key)).await.status,
        200
    );
    let list = api.send(get("/v1/keys").key(&admin)).await;
    assert!(!ids(&list.json["items"]).contains(&theirs.record.id));
}

// ------------------------------------------------------------ tenants

/// Every control action with a valid body.
fn control_actions() -> [(&'static str, Value); 4] {
    [
        ("approve", json!({})),
        ("reject", json!({"reason": "no"})),
        ("cancel", json!({})),
        ("resume", json!({})),
    ]
}

/// The body with the workflow id replaced, for comparing 404s.
fn without_id(r: &Reply, id: &str) -> String {
    r.text.replace(id, "{id}")
}

#[tokio::test]
async fn another_tenants_workflow_is_404_exactly_like_an_unknown_one() {
    let api = Api::new().await;
    let a = api.key("tenant-a", Operator).await;
    let b = api.key("tenant-b", Operator).await;
    let id = api.submit(&a, "a todo app").await;
    api.wait_for(&a, &id, "completed").await;

    let mut requests = Vec::new();
    for tail in ["", "/history", "/events"] {
        requests.push((format!("GET {tail}"), None, tail.to_string()));
    }
    for (action, body) in control_actions() {
        requests.push((format!("POST {action}"), Some(body), format!("/{action}")));
    }
    for (what, body, tail) in requests {
        let send = |target: &str| {
            let path = format!("/v1/workflows/{target}{tail}");
            let req = match &body {
                Some(body) => post(&path, body.clone()),
                None => get(&path),
            };
            req.key(&b).header("x-request-id", "isolation")
        };
        let theirs = api.send(send(&id)).await;
        let unknown = api.send(send(UNKNOWN_ID)).await;
        theirs.problem(404);
        assert_eq!(
            without_id(&theirs, &id),
            without_id(&unknown, UNKNOWN_ID),
            "{what}"
        );
    }
    assert_eq!(api.list_ids(&b).await, Vec::<String>::new());
    assert_eq!(api.list_ids(&a).await, vec![id.clone()]);
    api.wait_for(&a, &id, "completed").await;
}

// ------------------------------------------------------------ control

#[tokio::test]
async fn a_running_workflow_is_cancelled_then_resumed_to_completion() {
    let api = Api::with(GatewayConfig::default(), Duration::from_millis(500)).await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;
    api.wait_for(&key, &id, "running").await;

    let cancelled = api
        .send(
            post(
                &format!("/v1/workflows/{id}/cancel"),
                json!({"reason": "wrong"}),
            )
            .key(&key),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled");
    api.wait_for(&key, &id, "cancelled").await;

    // At once, as a client would: the run that the cancel ended may not have
    // wound down yet, and the resume must not be lost to it.
    let resumed = api
        .send(post(&format!("/v1/workflows/{id}/resume"), json!({})).key(&key))
        .await;
    assert_eq!(resumed.status, 202, "{}", resumed.text);
    assert_eq!(resumed.header("location"), format!("/v1/workflows/{id}"));
    api.wait_for(&key, &id, "completed").await;
}

#[tokio::test]
async fn a_workflow_cancelled_before_its_run_starts_stays_cancelled() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;

    let cancelled = api
        .send(post(&format!("/v1/workflows/{id}/cancel"), json!({})).key(&key))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);

    // Once the server drives no workflow, the cancel must still hold.
    eventually("the background run to end", async || {
        let r = api.send(get("/v1/agents").key(&key)).await;
        (r.json["running_workflows"] == 0).then_some(())
    })
    .await
    .expect("the background run ends");
    let w = api
        .send(get(&format!("/v1/workflows/{id}")).key(&key))
        .await;
    assert_eq!(w.json["status"], "cancelled", "the cancel was undone");
}

#[tokio::test]
async fn actions_that_the_status_does_not_allow_are_409() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;
    api.wait_for(&key, &id, "completed").await;

    for (action, body) in control_actions() {
        let path = format!("/v1/workflows/{id}/{action}");
        api.send(post(&path, body).key(&key)).await.problem(409);
    }
    api.wait_for(&key, &id, "completed").await;
}

// ------------------------------------------------------------ limits

#[tokio::test]
async fn past_the_burst_a_caller_is_429_with_retry_after_and_others_are_not() {
    let config = GatewayConfig {
        rate_limit: RateLimit {
            rate_per_s: 1.0,
            burst: 2,
        },
        ..GatewayConfig::default()
    };
    let api = Api::with(config, Duration::ZERO).await;
    let first = api.key("acme", Viewer).await;
    let second = api.key("acme", Viewer).await;

    for _ in 0..2 {
        let r = api.send(get("/v1/workflows").key(&first)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("ratelimit-limit"), "2");
    }
    let refused = api.send(get("/v1/workflows").key(&first)).await;

    refused.problem(429);
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!(retry_after >= 1, "retry-after {retry_after}");
    assert_eq!(
        api.send(get("/v1/workflows").key(&second)).await.status,
        200
    );
}

#[tokio::test]
async fn at_the_running_workflow_limit_a_submission_is_503_and_nothing_is_stored() {
    let config = GatewayConfig {
        max_running_workflows: 1,
        ..GatewayConfig::default()
    };
    let api = Api::with(config, Duration::from_secs(2)).await;
    let key = api.key("acme", Operator).await;
    let submit = |requirement: &str, request_id: &str| {
        post("/v1/workflows", json!({ "requirement": requirement }))
            .key(&key)
            .header("x-request-id", request_id)
    };
    let first = api.send(submit("a todo app", "first")).await;
    assert_eq!(first.status, 202, "{}", first.text);

    let refused = api.send(submit("a chat app", "second")).await;

    refused.problem(503);
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(api.list_ids(&key).await.len(), 1);
    // Answering a resubmission needs no run, so it needs no room either.
    let again = api.send(submit("a todo app", "first")).await;
    assert_eq!(again.status, 200, "{}", again.text);
}

// ------------------------------------------------------------ system

#[tokio::test]
async fn readyz_is_200_with_a_check_per_dependency() {
    let api = Api::new().await;
    let r = api.send(get("/readyz")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ready");
    let checks = r.json["checks"].as_object().unwrap();
    assert!(checks.keys().any(|k| k.starts_with("store")), "{checks:?}");
    assert!(checks.keys().any(|k| k.starts_with("bus")), "{checks:?}");
    assert!(checks.values().all(|v| v == "ok"), "{checks:?}");
}

/// The API routes of `Gateway::router` (the docs page and the document
/// itself are not API routes).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/workflows"),
    ("get", "/v1/workflows"),
    ("get", "/v1/workflows/{id}"),
    ("get", "/v1/workflows/{id}/history"),
    ("get", "/v1/workflows/{id}/events"),
    ("post", "/v1/workflows/{id}/approve"),
    ("post", "/v1/workflows/{id}/reject"),
    ("post", "/v1/workflows/{id}/cancel"),
    ("post", "/v1/workflows/{id}/resume"),
    ("get", "/v1/workflow-definitions"),
    ("get", "/v1/agents"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys"),
    ("post", "/v1/keys/{key_id}/revoke"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

#[tokio::test]
async fn the_openapi_document_is_3_1_and_documents_exactly_the_routes_served() {
    let api = Api::new().await;
    let doc = api.send(get("/openapi.json")).await.json;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);

    // Each is served: no fallback 404, no 405, whatever the caller.
    for (method, path) in ROUTES {
        let path = path
            .replace("{id}", UNKNOWN_ID)
            .replace("{key_id}", "aaaaaaaaaaaa");
        let req = match *method {
            "get" => get(&path),
            _ => post(&path, json!({})),
        };
        let r = api.send(req).await;
        assert!(
            r.status != 405 && !r.text.contains("no such route"),
            "{method} {path} is not served: {} {}",
            r.status,
            r.text
        );
    }
    api.send(get("/v1/nothing-here")).await.problem(404);
}

// ------------------------------------------------------------ events

/// One SSE message.
#[derive(Debug)]
struct Message {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// The messages of a whole event stream (comments skipped).
fn messages(stream: &str) -> Vec<Message> {
    stream
        .split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse().expect("a numeric id"));
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some(Message {
                id,
                event: event?,
                data: serde_json::from_str(&data).expect("JSON data"),
            })
        })
        .collect()
}

#[tokio::test]
async fn the_events_of_a_completed_workflow_stream_in_order_and_end_with_completion() {
    let api = Api::new().await;
    let key = api.key("acme", Viewer).await;
    let operator = api.key("acme", Operator).await;
    let id = api.submit(&operator, "a todo app").await;
    api.wait_for(&key, &id, "completed").await;

    let r = api
        .send(get(&format!("/v1/workflows/{id}/events")).key(&key))
        .await;

    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    let all = messages(&r.text);
    assert!(!all.is_empty(), "{}", r.text);
    let seqs: Vec<u64> = all.iter().map(|m| m.id.expect("an id")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for m in &all {
        assert_eq!(m.data["seq"], m.id.unwrap());
        assert_eq!(m.data["kind"], m.event.as_str());
        assert_eq!(m.data["workflow_id"], id.as_str());
    }
    assert_eq!(all.last().unwrap().event, "workflow.completed");
    let stored: Vec<u64> = api
        .store
        .events(Some(id.parse().unwrap()), 0, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, stored, "every stored event, once");
}

#[tokio::test]
async fn the_stream_of_a_cancelled_then_resumed_workflow_goes_on_past_the_cancel() {
    // Regression: one batch holding `workflow.cancelled` and then
    // `workflow.resumed` ended the stream at the cancel.
    let api = Api::with(GatewayConfig::default(), Duration::from_millis(200)).await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;
    api.wait_for(&key, &id, "running").await;
    let cancel = post(&format!("/v1/workflows/{id}/cancel"), json!({})).key(&key);
    assert_eq!(api.send(cancel).await.status, 200);
    let resume = post(&format!("/v1/workflows/{id}/resume"), json!({})).key(&key);
    assert_eq!(api.send(resume).await.status, 202);
    api.wait_for(&key, &id, "running").await;

    // Opened while it runs again: the first batch ends with the resume, not
    // with the cancel, and the stream must follow it to the end.
    let r = api
        .send(get(&format!("/v1/workflows/{id}/events")).key(&key))
        .await;

    let kinds: Vec<String> = messages(&r.text).into_iter().map(|m| m.event).collect();
    assert!(kinds.iter().any(|k| k == "workflow.cancelled"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "workflow.resumed"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("workflow.completed"));
}

#[tokio::test]
async fn an_invalid_x_request_id_is_422_naming_it() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let r = api
        .send(
            post("/v1/workflows", json!({"requirement": "a todo app"}))
                .key(&key)
                .header("x-request-id", &"x".repeat(129)),
        )
        .await;
    assert_eq!(r.problem(422), ["x-request-id"]);
    assert!(api.list_ids(&key).await.is_empty());
}

#[tokio::test]
async fn last_event_id_resumes_strictly_after_that_event() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;
    api.wait_for(&key, &id, "completed").await;
    let path = format!("/v1/workflows/{id}/events");
    let all: Vec<u64> = messages(&api.send(get(&path).key(&key)).await.text)
        .iter()
        .map(|m| m.id.unwrap())
        .collect();
    let n = all[all.len() / 2];

    let rest = api
        .send(get(&path).key(&key).header("last-event-id", &n.to_string()))
        .await;

    assert_eq!(rest.status, 200, "{}", rest.text);
    let rest: Vec<Message> = messages(&rest.text);
    let rest_ids: Vec<u64> = rest.iter().map(|m| m.id.unwrap()).collect();
    let expected: Vec<u64> = all.iter().copied().filter(|s| *s > n).collect();
    assert_eq!(rest_ids, expected);
    assert_eq!(rest.last().unwrap().event, "workflow.completed");

    let at_end = api
        .send(
            get(&path)
                .key(&key)
                .header("last-event-id", &all.last().unwrap().to_string()),
        )
        .await;
    assert_eq!(at_end.status, 200);
    assert!(messages(&at_end.text).is_empty(), "{}", at_end.text);
}

#[tokio::test]
async fn a_bad_last_event_id_is_422_naming_it() {
    let api = Api::new().await;
    let key = api.key("acme", Operator).await;
    let id = api.submit(&key, "a todo app").await;

    let r = api
        .send(
            get(&format!("/v1/workflows/{id}/events"))
                .key(&key)
                .header("last-event-id", "yesterday"),
        )
        .await;

    assert_eq!(r.problem(422), ["last-event-id"]);
}

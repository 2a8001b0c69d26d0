//! The failed-authentication limit per client address: its bucket is
//! looked at before any credential is verified, and only failures draw on
//! it, so a guesser that has used it up learns nothing from its guesses,
//! right or wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use agentry_core::AccessRole::Viewer;
use agentry_core::RateLimit;
use agentry_gateway::GatewayConfig;
use support::{get, Api, Req};

/// Failed authentications allowed per address: two, then one per 100 s.
async fn api() -> Api {
    let config = GatewayConfig {
        failed_auth_limit: RateLimit {
            rate_per_s: 0.01,
            burst: 2,
        },
        ..GatewayConfig::default()
    };
    Api::with(config, Duration::ZERO).await
}

/// A key of the right form that no one was given.
const WRONG_KEY: &str = "agk_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn list_as(key: &str, ip: &str) -> Req {
    get("/v1/workflows").key(key).sent_from(ip)
}

/// Sends each request and returns the statuses.
async fn statuses(api: &Api, requests: impl IntoIterator<Item = Req>) -> Vec<u16> {
    let mut out = Vec::new();
    for req in requests {
        out.push(api.send(req).await.status.as_u16());
    }
    out
}

#[tokio::test]
async fn an_address_out_of_failed_auth_tokens_is_429_even_with_a_correct_key() {
    let api = api().await;
    let key = api.key("acme", Viewer).await;
    let guesses = (0..3).map(|_| list_as(WRONG_KEY, "192.0.2.1"));
    assert_eq!(statuses(&api, guesses).await, [401, 401, 429]);

    // The right key is refused like a wrong one: the guesser cannot tell
    // it found a key.
    let r = api.send(list_as(&key, "192.0.2.1")).await;
    r.problem(429);
    let retry_after: u64 = r.header("retry-after").parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert!(
        r.header("www-authenticate").is_empty(),
        "nothing about the key"
    );
    // Through `x-api-key` too.
    let r = api
        .send(
            get("/v1/workflows")
                .header("x-api-key", &key)
                .sent_from("192.0.2.1"),
        )
        .await;
    r.problem(429);

    // Another address is not affected.
    assert_eq!(api.send(list_as(&key, "192.0.2.2")).await.status, 200);
}

#[tokio::test]
async fn only_failed_authentications_draw_on_an_addresss_bucket() {
    let api = api().await;
    let key = api.key("acme", Viewer).await;
    let ip = "2001:db8::7";
    // Successes and requests without credentials cost nothing...
    let ok = (0..10).map(|_| list_as(&key, ip));
    assert_eq!(statuses(&api, ok).await, [200; 10]);
    let anonymous = (0..5).map(|_| get("/v1/workflows").sent_from(ip));
    assert_eq!(statuses(&api, anonymous).await, [401; 5]);
    // ... so the whole bucket is still there for failures, and a correct
    // key works while it is not empty.
    assert_eq!(
        statuses(&api, [list_as(WRONG_KEY, ip), list_as(&key, ip)]).await,
        [401, 200]
    );
    assert_eq!(
        statuses(&api, [list_as(WRONG_KEY, ip), list_as(WRONG_KEY, ip)]).await,
        [401, 429]
    );
    assert_eq!(api.send(list_as(&key, ip)).await.status, 429);
}

#[tokio::test]
async fn malformed_credentials_are_failures_too() {
    let api = api().await;
    let ip = "198.51.100.9";
    let requests = [
        get("/v1/workflows").header("authorization", "Basic dXNlcjpwYXNz"),
        get("/v1/workflows").header("x-api-key", "not-a-key"),
        get("/v1/workflows").header("authorization", "Bearer not.a.token"),
    ]
    .map(|r| r.sent_from(ip));
    assert_eq!(statuses(&api, requests).await, [401, 401, 429]);
}

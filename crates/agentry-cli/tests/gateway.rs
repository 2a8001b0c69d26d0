//! `agentry serve` end to end: the real binary on loopback, driven over
//! HTTP. Auth matrix (API keys and JWTs), rate limits, the running limit,
//! SSE with `Last-Event-ID`, restart mid-workflow (SIGTERM and SIGKILL),
//! TLS, request ids in logs and events, and the `keys` commands.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use support::*;

/// A running `agentry serve`.
struct Server {
    child: Child,
    url: String,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    /// Starts `serve` on a free loopback port with `args` and `envs`.
    fn start(data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = agentry(data);
        cmd.args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn agentry serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the listening line");
        let line: Value = serde_json::from_str(&first).unwrap_or_else(|e| {
            let mut err = String::new();
            for l in log.try_iter() {
                err.push_str(&l);
                err.push('\n');
            }
            panic!("serve did not print its address ({e}): {first:?}\n{err}")
        });
        Server {
            child,
            url: line["url"].as_str().expect("url").to_string(),
            log,
            seen: Vec::new(),
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Log lines so far.
    fn logs(&mut self) -> &[String] {
        self.seen.extend(self.log.try_iter());
        &self.seen
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal the server");
    }

    /// SIGKILL, reaped.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits for the exit and returns whether it was clean.
    fn terminate(mut self, within: Duration) -> bool {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `agentry keys create`, returning the key.
fn create_key(data: &Path, tenant: &str, role: &str) -> String {
    let out = run(agentry(data).args([
        "--json", "keys", "create", "--tenant", tenant, "--role", role,
    ]));
    assert_ok(&out);
    stdout_json(&out)["key"]
        .as_str()
        .expect("key in the output")
        .to_string()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

async fn submit(server: &Server, key: &str, requirement: &str) -> String {
    let (status, _, body) = send(
        client()
            .post(server.at("/v1/workflows"))
            .bearer_auth(key)
            .json(&json!({ "requirement": requirement })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().expect("id").to_string()
}

/// Polls a workflow until `done(status)`; returns its detail.
async fn wait_status(
    server: &Server,
    key: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, _, body) = send(
            client()
                .get(server.at(&format!("/v1/workflows/{id}")))
                .bearer_auth(key),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if done(body["status"].as_str().unwrap_or("")) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} still {} after {within:?}",
            body["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls a workflow until it is running at a step after `step`.
async fn wait_progress(server: &Server, key: &str, id: &str, step: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = send(
            client()
                .get(server.at(&format!("/v1/workflows/{id}")))
                .bearer_auth(key),
        )
        .await;
        if body["status"] == "running" && body["step"].as_u64().unwrap_or(0) > step {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} made no progress past step {step}: {}",
            body["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ JWTs

/// An ES256 key pair made for this test run, with its JWKS.
struct Issuer {
    pkcs8: Vec<u8>,
    kid: String,
}

impl Issuer {
    fn new(kid: &str) -> Issuer {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        Issuer {
            pkcs8: pkcs8.as_ref().to_vec(),
            kid: kid.to_string(),
        }
    }

    fn jwks(&self) -> Value {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8, &rng)
            .expect("key pair");
        let public = pair.public_key().as_ref();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64.encode(&public[1..33]), "y": b64.encode(&public[33..65]),
        }]})
    }

    fn token(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .expect("sign")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const ISSUER: &str = "https://id.example.test/realms/agentry";
const AUDIENCE: &str = "agentry-api";

fn claims(tenant: &str, role: &str, exp_in: i64) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{tenant}-{role}"),
           "tenant": tenant, "roles": [role], "iat": now(), "exp": now() + exp_in})
}

// ----------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_gives_the_right_status_and_leaks_nothing() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let issuer = Issuer::new("k1");
    let stranger = Issuer::new("k2");
    let jwks = write(dir.path(), "jwks.json", &issuer.jwks().to_string());
    let config = write(
        dir.path(),
        "agentry.toml",
        &format!(
            "[gateway.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = \"{}\"\n",
            jwks.display()
        ),
    );
    let operator_a = create_key(&data, "tenant-a", "operator");
    let viewer_a = create_key(&data, "tenant-a", "viewer");
    let operator_b = create_key(&data, "tenant-b", "operator");
    let revoked = create_key(&data, "tenant-a", "admin");
    let revoked_id = revoked.split('_').nth(1).unwrap().to_string();
    assert_ok(&run(agentry(&data).args(["keys", "revoke", &revoked_id])));

    let server = Server::start(
        &data,
        &["--config", config.to_str().unwrap(), "--llm", "demo"],
        &[],
    );
    let id = submit(&server, &operator_a, "a URL shortener").await;
    let workflow = server.at(&format!("/v1/workflows/{id}"));
    let submit_url = server.at("/v1/workflows");
    let body = json!({"requirement": "a todo app"});
    let secret_of = |k: &str| k.splitn(3, '_').nth(2).unwrap().to_string();
    let bad_key = format!("{}x", &operator_a[..operator_a.len() - 1]);

    struct Case {
        name: &'static str,
        req: reqwest::RequestBuilder,
        status: StatusCode,
        secret: Option<String>,
    }
    let c = client();
    let cases = vec![
        Case {
            name: "no credentials",
            req: c.get(&workflow),
            status: StatusCode::UNAUTHORIZED,
            secret: None,
        },
        Case {
            name: "bad key",
            req: c.get(&workflow).bearer_auth(&bad_key),
            status: StatusCode::UNAUTHORIZED,
            secret: Some(secret_of(&bad_key)),
        },
        Case {
            name: "revoked key",
            req: c.get(&workflow).bearer_auth(&revoked),
            status: StatusCode::UNAUTHORIZED,
            secret: Some(secret_of(&revoked)),
        },
        Case {
            name: "expired JWT",
            req: c
                .get(&workflow)
                .bearer_auth(issuer.token(claims("tenant-a", "operator", -600))),
            status: StatusCode::UNAUTHORIZED,
            secret: None,
        },
        Case {
            name: "wrong audience",
            req: c.get(&workflow).bearer_auth(issuer.token({
                let mut c = claims("tenant-a", "operator", 600);
                c["aud"] = json!("someone-else");
                c
            })),
            status: StatusCode::UNAUTHORIZED,
            secret: None,
        },
        Case {
            name: "unknown kid",
            req: c
                .get(&workflow)
                .bearer_auth(stranger.token(claims("tenant-a", "operator", 600))),
            status: StatusCode::UNAUTHORIZED,
            secret: None,
        },
        Case {
            name: "viewer submitting",
            req: c.post(&submit_url).bearer_auth(&viewer_a).json(&body),
            status: StatusCode::FORBIDDEN,
            secret: Some(secret_of(&viewer_a)),
        },
        Case {
            name: "JWT viewer submitting",
            req: c
                .post(&submit_url)
                .bearer_auth(issuer.token(claims("tenant-a", "viewer", 600)))
                .json(&body),
            status: StatusCode::FORBIDDEN,
            secret: None,
        },
        Case {
            name: "tenant B reading tenant A's workflow",
            req: c.get(&workflow).bearer_auth(&operator_b),
            status: StatusCode::NOT_FOUND,
            secret: Some(secret_of(&operator_b)),
        },
        Case {
            name: "tenant B (JWT) reading tenant A's workflow",
            req: c
                .get(&workflow)
                .bearer_auth(issuer.token(claims("tenant-b", "admin", 600))),
            status: StatusCode::NOT_FOUND,
            secret: None,
        },
        Case {
            name: "tenant B cancelling tenant A's workflow",
            req: c
                .post(format!("{workflow}/cancel"))
                .bearer_auth(&operator_b)
                .json(&json!({})),
            status: StatusCode::NOT_FOUND,
            secret: None,
        },
        Case {
            name: "valid key",
            req: c.get(&workflow).bearer_auth(&viewer_a),
            status: StatusCode::OK,
            secret: Some(secret_of(&viewer_a)),
        },
        Case {
            name: "valid JWT",
            req: c
                .get(&workflow)
                .bearer_auth(issuer.token(claims("tenant-a", "viewer", 600))),
            status: StatusCode::OK,
            secret: None,
        },
    ];
    let unknown = server.at(&format!("/v1/workflows/{}", uuid::Uuid::now_v7()));
    let (_, _, unknown_body) = send(c.get(&unknown).bearer_auth(&operator_b)).await;
    for case in cases {
        let (status, headers, body) = send(case.req).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        let text = body.to_string();
        if let Some(secret) = &case.secret {
            assert!(
                !text.contains(secret),
                "{}: the body echoes the key",
                case.name
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                headers.contains_key("www-authenticate"),
                "{}: no WWW-Authenticate",
                case.name
            );
        }
        if status.is_client_error() {
            assert_eq!(
                headers["content-type"], "application/problem+json",
                "{}",
                case.name
            );
            assert_eq!(body["status"], status.as_u16(), "{}", case.name);
        }
        if status == StatusCode::NOT_FOUND {
            // Identical to an unknown id but for the id itself: nothing says
            // the workflow exists elsewhere.
            assert_eq!(body["type"], unknown_body["type"], "{}", case.name);
            assert_eq!(body["title"], unknown_body["title"], "{}", case.name);
            assert!(!text.contains("tenant-a"), "{}: {text}", case.name);
        }
    }
    // Tenant B's list does not show A's workflow.
    let (_, _, list) = send(c.get(&submit_url).bearer_auth(&operator_b)).await;
    assert_eq!(list["items"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after_per_key() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "viewer");
    let other = create_key(&data, "acme", "viewer");
    let server = Server::start(
        &data,
        &["--llm", "demo"],
        &[
            ("AGENTRY_GATEWAY__RATE_LIMIT__RATE_PER_S", "0.5"),
            ("AGENTRY_GATEWAY__RATE_LIMIT__BURST", "3"),
        ],
    );
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let (status, headers, body) =
            send(client().get(server.at("/v1/workflows")).bearer_auth(&key)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers["content-type"], "application/problem+json");
            assert_eq!(body["status"], 429);
            retry_after = Some(
                headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let retry_after = retry_after.expect("a Retry-After");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // Another key has its own bucket.
    let (status, _, _) = send(client().get(server.at("/v1/workflows")).bearer_auth(&other)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_limit_refuses_with_503_and_stores_nothing() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "operator");
    let server = Server::start(
        &data,
        &[
            "--llm",
            "demo",
            "--llm-latency-ms",
            "300",
            "--max-running",
            "1",
        ],
        &[],
    );
    let first = submit(&server, &key, "a URL shortener").await;
    let (status, headers, body) = send(
        client()
            .post(server.at("/v1/workflows"))
            .bearer_auth(&key)
            .json(&json!({"requirement": "another one"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body["detail"].as_str().unwrap().contains("limit of 1"),
        "{body}"
    );
    let (_, _, list) = send(client().get(server.at("/v1/workflows")).bearer_auth(&key)).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![first.as_str()]);
}

/// Reads an SSE body; returns `(id, event, data)` per message, stopping
/// after `max` messages with an id (or at the end of the stream).
async fn read_sse(resp: reqwest::Response, max: usize) -> (Vec<(u64, String, Value)>, bool) {
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>().expect("numeric id"));
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                out.push((
                    id,
                    event,
                    serde_json::from_str(&data).expect("data is JSON"),
                ));
                if out.len() >= max {
                    return (out, false);
                }
            }
        }
    }
    (out, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_follows_a_whole_workflow_and_resumes_with_last_event_id() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "operator");
    let server = Server::start(&data, &["--llm", "demo", "--llm-latency-ms", "40"], &[]);
    let id = submit(&server, &key, "a URL shortener").await;
    let events_url = server.at(&format!("/v1/workflows/{id}/events"));

    // First connection: take 7 events, then drop the connection.
    let resp = client()
        .get(&events_url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (first, ended) = read_sse(resp, 7).await;
    assert!(!ended);
    let last = first.last().unwrap().0;

    // Reconnect with Last-Event-ID and follow to the end.
    let resp = client()
        .get(&events_url)
        .bearer_auth(&key)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    let (rest, ended) = read_sse(resp, usize::MAX).await;
    assert!(ended, "the stream ends when the workflow does");
    assert_eq!(rest.last().unwrap().1, "workflow.completed");

    // Together: exactly the workflow's stored events, in order, no gap, no
    // repeat.
    let all: Vec<(u64, String, Value)> = first.into_iter().chain(rest).collect();
    let resp = client()
        .get(&events_url)
        .bearer_auth(&key)
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    let (stored, ended) = read_sse(resp, usize::MAX).await;
    assert!(ended);
    let ids = |v: &[(u64, String, Value)]| v.iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(ids(&all), ids(&stored));
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(all.iter().all(|e| e.2["workflow_id"] == json!(id)));
    let kinds: Vec<&str> = all.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds[0], "workflow.started");
    for kind in [
        "agent.task.assigned",
        "agent.task.completed",
        "context.updated",
        "workflow.step.completed",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    // A reconnect after the end gets nothing and ends at once.
    let resp = client()
        .get(&events_url)
        .bearer_auth(&key)
        .header("last-event-id", all.last().unwrap().0.to_string())
        .send()
        .await
        .unwrap();
    let (none, ended) = read_sse(resp, usize::MAX).await;
    assert!(ended && none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_returned_logged_and_carried_into_events() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "operator");
    let mut server = Server::start(&data, &["--llm", "demo"], &[]);
    let (status, headers, body) = send(
        client()
            .post(server.at("/v1/workflows"))
            .bearer_auth(&key)
            .header("x-request-id", "req-abc-123")
            .json(&json!({"requirement": "a URL shortener"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(headers["x-request-id"], "req-abc-123");
    assert_eq!(body["request_id"], "req-abc-123");
    let id = body["id"].as_str().unwrap().to_string();
    let detail = wait_status(&server, &key, &id, Duration::from_secs(60), |s| {
        s == "completed"
    })
    .await;
    // The server's LLM settings are not shown to callers.
    assert!(
        detail["options"].get("llm").is_none(),
        "{}",
        detail["options"]
    );
    let resp = client()
        .get(server.at(&format!("/v1/workflows/{id}/events")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (events, _) = read_sse(resp, usize::MAX).await;
    assert!(!events.is_empty());
    for (_, kind, data) in &events {
        assert_eq!(data["request_id"], "req-abc-123", "{kind}: {data}");
    }
    // A generated id when none is sent.
    let (_, headers, _) = send(client().get(server.at("/healthz"))).await;
    assert!(uuid::Uuid::parse_str(headers["x-request-id"].to_str().unwrap()).is_ok());

    // One JSON access-log line per request, with the route template, the
    // tenant and the key id, never the key.
    let key_id = key.split('_').nth(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let found = server
            .logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["fields"]["request_id"] == "req-abc-123" && l["target"] == "agentry::access"
            });
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no access log line");
        std::thread::sleep(Duration::from_millis(50));
    };
    let f = &line["fields"];
    assert_eq!(f["method"], "POST");
    assert_eq!(f["route"], "/v1/workflows");
    assert_eq!(f["status"], 202);
    assert_eq!(f["tenant"], "acme");
    assert_eq!(f["key_id"], key_id);
    assert!(f["latency_ms"].as_f64().is_some());
    let secret = key.splitn(3, '_').nth(2).unwrap();
    assert!(server.logs().iter().all(|l| !l.contains(secret)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_survives_sigterm_and_sigkill_of_the_server() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "operator");
    let args = ["--llm", "demo", "--llm-latency-ms", "300"];
    let status_in_store = |id: &str| {
        let out = run(agentry(&data).args(["--json", "workflows", "show", id]));
        assert_ok(&out);
        stdout_json(&out)["status"].as_str().unwrap().to_string()
    };

    // Graceful: SIGTERM mid-workflow; the server stops cleanly.
    let server = Server::start(&data, &args, &[]);
    let id = submit(&server, &key, "a URL shortener").await;
    wait_status(&server, &key, &id, Duration::from_secs(30), |s| {
        s == "running"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.terminate(Duration::from_secs(40)),
        "serve exits 0 on SIGTERM"
    );
    // Stopped mid-way: the workflow stays running in the store.
    assert_eq!(status_in_store(&id), "running");

    // Restart: it picks the workflow up; SIGKILL it as soon as it has made
    // progress (one more step), not after a fixed time, so it is surely
    // killed mid-way.
    let stopped_at = {
        let out = run(agentry(&data).args(["--json", "workflows", "show", &id]));
        stdout_json(&out)["step"].as_u64().unwrap()
    };
    let server = Server::start(&data, &args, &[]);
    wait_progress(&server, &key, &id, stopped_at).await;
    server.kill();
    assert_eq!(status_in_store(&id), "running", "killed mid-way");

    // And again: it completes.
    let server = Server::start(&data, &args, &[]);
    let detail = wait_status(&server, &key, &id, Duration::from_secs(120), |s| {
        matches!(s, "completed" | "failed" | "cancelled")
    })
    .await;
    assert_eq!(detail["status"], "completed", "{detail}");
    drop(server);

    // Its artifacts are those of an uninterrupted demo run, with no
    // duplicated commit.
    let out = run(agentry(&data).args(["--json", "workflows", "show", &id]));
    assert_ok(&out);
    let resumed = artifact_fingerprint(&stdout_json(&out)["artifacts"]);
    let clean = dir.path().join("clean");
    let out = run(agentry(&clean).args(["--json", "demo"]));
    assert_ok(&out);
    assert_eq!(resumed, artifact_fingerprint(&stdout_json(&out)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = write(dir.path(), "cert.pem", &cert_pem);
    let key_path = write(dir.path(), "key.pem", &cert.signing_key.serialize_pem());
    let server = Server::start(
        &data,
        &[
            "--llm",
            "demo",
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, _, body) = send(https.get(format!("https://localhost:{port}/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    // Plain HTTP to the TLS port does not get an answer.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[test]
fn keys_are_shown_once_stored_hashed_and_revocable() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let out = run(agentry(&data).args([
        "--json", "keys", "create", "--tenant", "acme", "--role", "operator", "--name", "ci",
    ]));
    assert_ok(&out);
    let created = stdout_json(&out);
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("agk_"), "{key}");
    let secret = key.splitn(3, '_').nth(2).unwrap();
    let out = run(agentry(&data).args(["--json", "keys", "list"]));
    assert_ok(&out);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.contains(created["id"].as_str().unwrap()));
    assert!(!list.contains(secret), "the list shows the secret");
    let db = std::fs::read(data.join("agentry.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(secret),
        "the secret is stored in clear"
    );
    let out = run(agentry(&data).args(["keys", "revoke", key]));
    assert_ok(&out);
    let out = run(agentry(&data).args(["--json", "keys", "list"]));
    assert!(!stdout_json(&out)[0]["revoked_at"].is_null());
    // Mistakes are named.
    let out = run(agentry(&data).args(["keys", "create", "--tenant", "acme", "--role", "root"]));
    assert_fails_with(&out, "root");
    let out = run(agentry(&data).args(["keys", "create", "--tenant", "a b", "--role", "viewer"]));
    assert_fails_with(&out, "tenant");
    let out = run(agentry(&data).args(["keys", "revoke", "nope"]));
    assert_fails_with(&out, "nope");
}

#[test]
fn serve_refuses_a_bad_configuration_clearly() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let out = run(agentry(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--llm", "demo"])
        .env("AGENTRY_GATEWAY__RATE_LIMIT__BURST", "0"));
    assert_fails_with(&out, "burst");
    for (variable, value, named) in [
        (
            "AGENTRY_GATEWAY__HEADER_READ_TIMEOUT_S",
            "0",
            "header_read_timeout_s",
        ),
        ("AGENTRY_GATEWAY__MAX_HEADERS", "0", "max_headers"),
        (
            "AGENTRY_GATEWAY__MAX_HEADER_BYTES",
            "100",
            "max_header_bytes",
        ),
    ] {
        let out = run(agentry(&data)
            .args(["serve", "--listen", "127.0.0.1:0", "--llm", "demo"])
            .env(variable, value));
        assert_fails_with(&out, named);
    }
    let out = run(agentry(&data).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--llm",
        "demo",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]));
    assert_fails_with(&out, "/nonexistent/cert.pem");
}

/// The Python API tools (schemathesis, openapi-spec-validator), installed
/// from PyPI by `scripts/api-tools` when missing.
fn api_tools() -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("bash")
        .arg(repo.join("scripts/api-tools"))
        .output()
        .expect("run scripts/api-tools");
    assert!(
        out.status.success(),
        "scripts/api-tools could not install schemathesis and openapi-spec-validator from PyPI:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = stdout
        .lines()
        .last()
        .expect("the tools' bin directory")
        .trim();
    std::path::PathBuf::from(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_validates_and_schemathesis_finds_no_violation() {
    let tools = api_tools();
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "admin");
    let server = Server::start(
        &data,
        &["--llm", "demo", "--max-running", "1000"],
        &[
            ("AGENTRY_GATEWAY__RATE_LIMIT__RATE_PER_S", "100000"),
            ("AGENTRY_GATEWAY__RATE_LIMIT__BURST", "100000"),
        ],
    );
    let (status, _, doc) = send(client().get(server.at("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let doc_path = write(dir.path(), "openapi.json", &doc.to_string());
    let out = std::process::Command::new(tools.join("openapi-spec-validator"))
        .args(["--schema", "3.1"])
        .arg(&doc_path)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "the OpenAPI document does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let work = dir.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let out = tokio::process::Command::new(tools.join("schemathesis"))
        .current_dir(&work)
        .arg("run")
        .arg(server.at("/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "20",
            "--seed",
            "20261124",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    // It really got in: no operation saw only 401/403, and submissions
    // were accepted.
    assert!(
        !report.contains("Authentication failed"),
        "schemathesis could not authenticate:\n{report}"
    );
    let mut server = server;
    let accepted = server
        .logs()
        .iter()
        .filter(|l| l.contains("\"route\":\"/v1/workflows\"") && l.contains("\"status\":202"))
        .count();
    assert!(
        accepted > 0,
        "schemathesis submitted no workflow:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_credentials_from_one_address_are_slowed_to_429() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "viewer");
    let server = Server::start(
        &data,
        &["--llm", "demo"],
        &[
            ("AGENTRY_GATEWAY__FAILED_AUTH_LIMIT__RATE_PER_S", "0.01"),
            ("AGENTRY_GATEWAY__FAILED_AUTH_LIMIT__BURST", "3"),
        ],
    );
    let list = |credential: Option<&str>| {
        let req = client().get(server.at("/v1/workflows"));
        match credential {
            Some(c) => req.bearer_auth(c),
            None => req,
        }
    };
    // Good credentials and none at all cost the address nothing.
    for _ in 0..5 {
        assert_eq!(send(list(Some(&key))).await.0, StatusCode::OK);
        assert_eq!(send(list(None)).await.0, StatusCode::UNAUTHORIZED);
    }
    let bad = format!("{}x", &key[..key.len() - 1]);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, headers, _) = send(list(Some(&bad))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // Once the address is out of tokens, the limit is checked before the
    // credentials: the right key is refused too, so a guesser cannot tell
    // when it found one.
    let (status, headers, body) = send(list(Some(&key))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(headers["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_at_a_step_over_http_is_what_the_cli_prints_for_that_step() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "viewer");
    let operator = create_key(&data, "acme", "operator");
    let server = Server::start(&data, &["--llm", "demo"], &[]);
    let id = submit(&server, &operator, "A URL shortener with tests").await;
    wait_status(&server, &key, &id, Duration::from_secs(120), |s| {
        s == "completed"
    })
    .await;
    let history = server.at(&format!("/v1/workflows/{id}/history"));
    let (status, _, list) = send(client().get(&history).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let last = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["step"].as_u64().unwrap())
        .max()
        .unwrap();
    for step in [0, last / 2, last] {
        let (status, _, api) = send(
            client()
                .get(format!("{history}?step={step}"))
                .bearer_auth(&key),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{api}");
        let out = run(agentry(&data).args([
            "--json",
            "workflows",
            "history",
            &id,
            "--step",
            &step.to_string(),
        ]));
        assert_ok(&out);
        let mut cli = stdout_json(&out);
        // The CLI shows the stored, tenant-scoped request id; the API the
        // one its client sent.
        let scoped = cli["request_id"].as_str().unwrap().to_string();
        cli["request_id"] = json!(scoped.strip_prefix("acme:").unwrap());
        assert_eq!(api, cli, "step {step}");
    }
    let (status, _, problem) = send(
        client()
            .get(format!("{history}?step={}", last + 1))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_a_partial_request_is_closed_after_header_read_timeout_s() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempdir();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &["--llm", "demo"],
        &[("AGENTRY_GATEWAY__HEADER_READ_TIMEOUT_S", "1")],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the connection is still open after 8 s");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_caller() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = create_key(&data, "acme", "operator");
    let server = Server::start(
        &data,
        &["--llm", "demo", "--llm-latency-ms", "300"],
        &[("AGENTRY_GATEWAY__MAX_EVENT_STREAMS_PER_CALLER", "1")],
    );
    let id = submit(&server, &key, "a URL shortener").await;
    let url = server.at(&format!("/v1/workflows/{id}/events"));
    let first = client().get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (status, headers, body) = send(client().get(&url).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key("retry-after"));
    // Closing the first frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client().get(&url).bearer_auth(&key).send().await.unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

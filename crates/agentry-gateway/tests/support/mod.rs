//! A gateway over the memory store, the in-process bus and the bench node
//! runner, called through `Router::oneshot` (no socket), with one helper to
//! send a request and read back status, headers and JSON; and the same
//! gateway served on a loopback socket ([`Served`]) where a connection
//! matters.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_bus_inproc::InprocBus;
use agentry_core::{AccessRole, ApiKeyStore};
use agentry_engine::bench::bench_runner;
use agentry_engine::{Engine, EngineConfig, WorkerHandle, WorkflowDefinition};
use agentry_gateway::auth::keys::{self, IssuedKey};
use agentry_gateway::{DefinitionSource, Gateway, GatewayConfig, GatewayDeps};
use agentry_store_memory::{MemoryRateLimiter, MemoryStore};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt as _;

/// How long anything a test waits for may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// Between two polls (well under the default rate limit of 20/s).
const POLL: Duration = Duration::from_millis(100);

/// Serves `bench` (also the default); any other name is unknown.
struct BenchOnly;

impl DefinitionSource for BenchOnly {
    fn names(&self) -> Vec<String> {
        vec!["bench".to_string()]
    }

    fn load(&self, name: Option<&str>) -> Result<WorkflowDefinition, String> {
        match name {
            None | Some("bench") => WorkflowDefinition::bench().map_err(|e| e.to_string()),
            Some(other) => Err(format!("unknown workflow `{other}`; known: bench")),
        }
    }
}

/// A gateway and what the tests look at behind it.
pub struct Api {
    router: Router,
    /// Its store (workflows, events, API keys).
    pub store: Arc<MemoryStore>,
    _workers: WorkerHandle,
}

/// A gateway over the memory store, with its workers.
async fn gateway(
    config: GatewayConfig,
    node_latency: Duration,
) -> (Gateway, Arc<MemoryStore>, WorkerHandle) {
    let store = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(InprocBus::new()),
        bench_runner(node_latency),
        EngineConfig::default(),
    );
    let workers = engine.start_workers(Engine::all_queues(), 4).await;
    let gateway = Gateway::new(GatewayDeps {
        engine,
        workers: None,
        keys: store.clone(),
        limiter: Arc::new(MemoryRateLimiter::new()),
        definitions: Arc::new(BenchOnly),
        base_options: agentry_core::RunOptions::default(),
        config,
        execution: agentry_gateway::Execution::Local,
        registry: None,
    })
    .expect("the gateway builds");
    (gateway, store, workers)
}

impl Api {
    /// Default settings; nodes take no time.
    pub async fn new() -> Api {
        Api::with(GatewayConfig::default(), Duration::ZERO).await
    }

    /// These settings; every node sleeps `node_latency`.
    pub async fn with(config: GatewayConfig, node_latency: Duration) -> Api {
        let (gateway, store, workers) = gateway(config, node_latency).await;
        Api {
            router: gateway.router(),
            store,
            _workers: workers,
        }
    }

    /// A stored API key of `tenant` with `role`.
    pub async fn issue(&self, tenant: &str, role: AccessRole) -> IssuedKey {
        let issued = keys::issue(tenant, role, "test").expect("a valid tenant");
        self.store
            .create_api_key(issued.record.clone())
            .await
            .expect("the key is stored");
        issued
    }

    /// The full key (`agk_...`) of a new stored key.
    pub async fn key(&self, tenant: &str, role: AccessRole) -> String {
        self.issue(tenant, role).await.key
    }

    /// Sends `req` through the router and reads the whole response (a
    /// stream must end within the deadline).
    pub async fn send(&self, req: Req) -> Reply {
        let mut builder = Request::builder().method(req.method).uri(&req.path);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(peer) = req.peer {
            // What `into_make_service_with_connect_info` sets on a socket.
            builder = builder.extension(ConnectInfo(peer));
        }
        let request = builder.body(Body::from(req.body)).expect("a valid request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = tokio::time::timeout(
            DEADLINE,
            axum::body::to_bytes(response.into_body(), usize::MAX),
        )
        .await
        .unwrap_or_else(|_| panic!("the body of {} {} did not end", req.method_name, req.path))
        .expect("the body reads");
        let text = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    /// Submits `requirement` as `key` and returns the new workflow's id.
    pub async fn submit(&self, key: &str, requirement: &str) -> String {
        let r = self
            .send(post("/v1/workflows", json!({ "requirement": requirement })).key(key))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        r.json["id"].as_str().expect("an id").to_string()
    }

    /// Polls `GET /v1/workflows/{id}` until its status is `status`; returns
    /// that body.
    pub async fn wait_for(&self, key: &str, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        eventually(&format!("workflow {id} to be {status}"), async || {
            let r = self
                .send(get(&format!("/v1/workflows/{id}")).key(key))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            last = r.json["status"].clone();
            (r.json["status"] == status).then_some(r.json)
        })
        .await
        .unwrap_or_else(|| panic!("workflow {id} did not become {status}; it is {last}"))
    }

    /// Ids of the caller's workflows (first page of up to 500).
    pub async fn list_ids(&self, key: &str) -> Vec<String> {
        let r = self.send(get("/v1/workflows?limit=500").key(key)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        ids(&r.json["items"])
    }
}

/// Calls `probe` every [`POLL`] until it answers Some, for at most the
/// deadline; None when it never did.
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            eprintln!("gave up waiting for {what}");
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The `id`s of a JSON array of objects.
pub fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["id"].as_str().expect("an id").to_string())
        .collect()
}

/// A request to send.
pub struct Req {
    method: Method,
    method_name: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
}

/// `GET path`.
pub fn get(path: &str) -> Req {
    Req {
        method: Method::GET,
        method_name: "GET".to_string(),
        path: path.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
        peer: None,
    }
}

/// `METHOD path` with no body.
pub fn request(method: Method, path: &str) -> Req {
    let mut req = get(path);
    req.method_name = method.to_string();
    req.method = method;
    req
}

/// `POST path` with a JSON body.
pub fn post(path: &str, body: Value) -> Req {
    post_raw(
        path,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
}

/// `POST path` with these bytes and content type (None: no header).
pub fn post_raw(path: &str, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Req {
    let mut req = get(path);
    req.method = Method::POST;
    req.method_name = "POST".to_string();
    req.body = body.into();
    if let Some(t) = content_type {
        req = req.header(header::CONTENT_TYPE.as_str(), t);
    }
    req
}

impl Req {
    /// With `Authorization: Bearer <key>`.
    pub fn key(self, key: &str) -> Req {
        self.header("authorization", &format!("Bearer {key}"))
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// As if sent from `ip` (the client address a server sees).
    pub fn sent_from(mut self, ip: &str) -> Req {
        self.peer = Some(SocketAddr::new(ip.parse().expect("an IP address"), 40000));
        self
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON (Null when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("a text header"))
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with `status`, consistent with the
    /// response, and returns the `field`s of its `errors`.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Vec<String> {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(self.json["status"], status, "{}", self.text);
        assert!(
            self.json["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:agentry:problem:")),
            "{}",
            self.text
        );
        assert!(self.json["title"].is_string() && self.json["detail"].is_string());
        assert_eq!(
            self.json["request_id"].as_str(),
            Some(self.header("x-request-id")),
            "the problem names the request id of the response"
        );
        self.json["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().expect("a field").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A gateway served on a loopback socket, for what needs a real
/// connection (hyper's deadlines and limits, TLS). Stopped when dropped.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _workers: WorkerHandle,
}

impl Served {
    /// Serves a gateway with these settings (HTTPS when `config.tls` is
    /// set) and waits until it answers.
    pub async fn start(config: GatewayConfig) -> Served {
        let tls = config.tls.is_some();
        let (gateway, _store, workers) = gateway(config, Duration::ZERO).await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("the bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        let served = Served {
            addr,
            stop: Some(stop),
            task,
            _workers: workers,
        };
        if !tls {
            eventually("the server to answer", async || {
                let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
                let answer = exchange(
                    &mut stream,
                    b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
                    POLL,
                )
                .await?;
                answer.starts_with("HTTP/1.1 200").then_some(())
            })
            .await
            .expect("the server answers /healthz");
        }
        served
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Writes `request` on `stream` and reads until the server closes the
/// connection; returns what came back as text, or None when the
/// connection was still open after `within`.
pub async fn exchange<S>(stream: &mut S, request: &[u8], within: Duration) -> Option<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(request).await.expect("send the request");
    stream.flush().await.expect("flush the request");
    let mut answer = Vec::new();
    // A read error (a reset, TLS without close_notify) is a close too.
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&answer).into_owned())
}

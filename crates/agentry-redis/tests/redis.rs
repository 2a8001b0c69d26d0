//! The Redis adapters against a real server (`AGENTRY_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379/`). Each test works under its own key
//! prefix (`AGENTRY_TEST_REDIS_PREFIX`, default `agentry_test:`, then a
//! uuid), so tests run in parallel on one server, and deletes its keys at
//! the end; every key a test writes has an expiry, so a failed test's keys
//! go away too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{
    ChatResponse, Error, ErrorClass, LlmCache, RateDecision, RateLimit, RateLimiter, ToolCall,
    Usage,
};
use agentry_redis::{
    redact_url, RedisClient, RedisLlmCache, RedisOptions, RedisRateLimiter, DEFAULT_PREFIX,
};
use serde_json::json;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";
const DEFAULT_TEST_PREFIX: &str = "agentry_test:";

fn redis_url() -> String {
    std::env::var("AGENTRY_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// One test's corner of the server: its prefix, a client of the adapters
/// and a raw connection to look at (and clean up) the keys.
struct Fixture {
    prefix: String,
    client: RedisClient,
    raw: redis::aio::MultiplexedConnection,
}

impl Fixture {
    async fn new() -> Fixture {
        let base = std::env::var("AGENTRY_TEST_REDIS_PREFIX")
            .unwrap_or_else(|_| DEFAULT_TEST_PREFIX.to_string());
        let prefix = format!("{base}{}:", uuid::Uuid::new_v4().simple());
        let client = Self::connect(&prefix).await;
        let raw = redis::Client::open(redis_url())
            .expect("test Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection to the test Redis");
        Fixture {
            prefix,
            client,
            raw,
        }
    }

    /// Another client on its own connection and the same prefix: another
    /// gateway replica.
    async fn replica(&self) -> RedisClient {
        Self::connect(&self.prefix).await
    }

    async fn connect(prefix: &str) -> RedisClient {
        let url = redis_url();
        RedisClient::connect(RedisOptions::new(&url).with_prefix(prefix))
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "no Redis at {} ({error}): start one, or point \
                     AGENTRY_TEST_REDIS_URL at another server",
                    redact_url(&url)
                )
            })
    }

    fn limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter::new(self.client.clone())
    }

    fn cache(&self) -> RedisLlmCache {
        RedisLlmCache::new(self.client.clone())
    }

    async fn raw<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut raw = self.raw.clone();
        cmd.query_async(&mut raw).await.expect("raw Redis command")
    }

    /// Milliseconds `key` has to live (-2: no such key, -1: no expiry).
    async fn pttl(&self, key: &str) -> i64 {
        self.raw(redis::cmd("PTTL").arg(key)).await
    }

    async fn exists(&self, key: &str) -> bool {
        self.raw::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    /// Every key under the test's prefix.
    async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .raw(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{}*", self.prefix))
                        .arg("COUNT")
                        .arg(500),
                )
                .await;
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// Deletes the test's keys (SCAN + DEL).
    async fn clean_up(self) {
        let keys = self.keys().await;
        if !keys.is_empty() {
            let _: i64 = self.raw(redis::cmd("DEL").arg(&keys)).await;
        }
        assert!(self.keys().await.is_empty(), "keys left behind");
    }
}

fn limit(rate_per_s: f64, burst: u32) -> RateLimit {
    RateLimit { rate_per_s, burst }
}

async fn acquire(limiter: &RedisRateLimiter, key: &str, limit: RateLimit) -> RateDecision {
    limiter.acquire(key, limit).await.expect("acquire")
}

/// Acquires once per entry of `expected` (Some(remaining) for a grant,
/// None for a refusal) and checks each decision.
async fn acquires(
    limiter: &RedisRateLimiter,
    key: &str,
    limit: RateLimit,
    expected: &[Option<u32>],
) {
    for (i, want) in expected.iter().enumerate() {
        let d = acquire(limiter, key, limit).await;
        match want {
            Some(remaining) => {
                assert!(d.allowed, "request {i} on {key} refused: {d:?}");
                assert_eq!(d.remaining, *remaining, "request {i} on {key}: {d:?}");
                assert_eq!(d.retry_after, Duration::ZERO, "request {i}: {d:?}");
            }
            None => {
                assert!(!d.allowed, "request {i} on {key} granted: {d:?}");
                assert_eq!(d.remaining, 0, "request {i}: {d:?}");
                assert!(d.retry_after > Duration::ZERO, "request {i}: {d:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------

/// Runs a behaviour of the shared rate-limit suite on a fresh prefix, and
/// deletes its keys after it.
async fn with_limiter<F, Fut>(behaviour: F)
where
    F: FnOnce(Arc<dyn RateLimiter>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let f = Fixture::new().await;
    behaviour(Arc::new(f.limiter())).await;
    f.clean_up().await;
}

agentry_store_conformance::rate_limiter_conformance_tests!(with_limiter);

#[tokio::test]
async fn the_adapter_is_named_redis() {
    let f = Fixture::new().await;
    assert_eq!(f.limiter().name(), "redis");
    f.clean_up().await;
}

#[tokio::test]
async fn two_replicas_share_one_bucket() {
    let f = Fixture::new().await;
    let a = f.limiter();
    let b = RedisRateLimiter::new(f.replica().await);
    let slow = limit(0.01, 3);
    acquires(&a, "caller", slow, &[Some(2)]).await;
    assert_eq!(b.check("caller", slow).await.expect("check").remaining, 2);
    acquires(&b, "caller", slow, &[Some(1)]).await;
    acquires(&a, "caller", slow, &[Some(0), None]).await;
    assert!(!b.check("caller", slow).await.expect("check").allowed);
    acquires(&b, "caller", slow, &[None]).await;
    f.clean_up().await;
}

#[tokio::test]
async fn another_prefix_is_another_deployments_bucket() {
    let f = Fixture::new().await;
    let slow = limit(0.01, 2);
    acquires(&f.limiter(), "a", slow, &[Some(1), Some(0), None]).await;
    let other = Fixture::new().await;
    acquires(&other.limiter(), "a", slow, &[Some(1)]).await;
    other.clean_up().await;
    f.clean_up().await;
}

#[tokio::test]
async fn a_check_or_a_refusal_writes_nothing() {
    let f = Fixture::new().await;
    let limiter = f.limiter();
    let slow = limit(0.01, 2);
    // A bucket only looked at is never stored.
    for _ in 0..3 {
        limiter.check("looked-at", slow).await.expect("check");
    }
    assert!(f.keys().await.is_empty(), "a check stored a bucket");
    // A stored bucket keeps its state and its expiry through checks and
    // refusals.
    acquires(&limiter, "k", slow, &[Some(1), Some(0)]).await;
    let key = f.client.key("rl", "k");
    let stored: Vec<String> = f
        .raw(redis::cmd("HMGET").arg(&key).arg("tokens").arg("at"))
        .await;
    let pttl = f.pttl(&key).await;
    for _ in 0..3 {
        limiter.check("k", slow).await.expect("check");
        acquires(&limiter, "k", slow, &[None]).await;
    }
    let after: Vec<String> = f
        .raw(redis::cmd("HMGET").arg(&key).arg("tokens").arg("at"))
        .await;
    assert_eq!(after, stored, "the bucket changed");
    assert!(f.pttl(&key).await <= pttl, "the expiry was pushed back");
    f.clean_up().await;
}

#[tokio::test]
async fn an_invalid_limit_touches_no_key() {
    let f = Fixture::new().await;
    let limiter = f.limiter();
    let bad = limit(0.0, 5);
    assert_eq!(
        limiter.acquire("k", bad).await.unwrap_err().class(),
        ErrorClass::InvalidInput
    );
    assert_eq!(
        limiter.check("k", bad).await.unwrap_err().class(),
        ErrorClass::InvalidInput
    );
    assert!(f.keys().await.is_empty(), "a refused limit writes nothing");
    f.clean_up().await;
}

#[tokio::test]
async fn idle_buckets_expire_when_they_would_be_full() {
    let f = Fixture::new().await;
    let limiter = f.limiter();
    let key = f.client.key("rl", "k");
    assert_eq!(key, format!("{}rl:k", f.prefix));
    // Two tokens left of three at 2/s: full again in 500 ms.
    acquires(&limiter, "k", limit(2.0, 3), &[Some(2)]).await;
    let pttl = f.pttl(&key).await;
    assert!(pttl > 400 && pttl <= 501, "PTTL {pttl}");
    // A bucket full after 10 ms disappears, and comes back full.
    let fast = limit(100.0, 1);
    acquires(&limiter, "brief", fast, &[Some(0)]).await;
    let brief = f.client.key("rl", "brief");
    let deadline = Instant::now() + Duration::from_secs(2);
    while f.exists(&brief).await {
        assert!(Instant::now() < deadline, "bucket never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acquires(&limiter, "brief", fast, &[Some(0)]).await;
    f.clean_up().await;
}

#[tokio::test]
async fn the_script_is_loaded_again_when_the_server_forgot_it() {
    // As after a restart or failover. Other tests recover the same way.
    let f = Fixture::new().await;
    let limiter = f.limiter();
    acquires(&limiter, "k", limit(0.01, 3), &[Some(2)]).await;
    let () = f.raw(redis::cmd("SCRIPT").arg("FLUSH")).await;
    assert_eq!(
        limiter
            .check("k", limit(0.01, 3))
            .await
            .expect("check")
            .remaining,
        2
    );
    let () = f.raw(redis::cmd("SCRIPT").arg("FLUSH")).await;
    acquires(&limiter, "k", limit(0.01, 3), &[Some(1)]).await;
    f.clean_up().await;
}

// ---------------------------------------------------------------------------
// LLM cache
// ---------------------------------------------------------------------------

fn full_response(content: &str) -> ChatResponse {
    ChatResponse {
        content: content.into(),
        tool_calls: vec![
            ToolCall {
                id: "call_1".into(),
                name: "write_file".into(),
                arguments: json!({"path": "src/app.py", "content": "print('hi')\n"}),
            },
            ToolCall {
                id: "call_2".into(),
                name: "run_tests".into(),
                arguments: json!({"args": ["-q"], "timeout_s": 30, "env": {}}),
            },
        ],
        usage: Usage {
            prompt_tokens: 1234,
            completion_tokens: 56,
            cached: true,
        },
        provider: "openai".into(),
        model: "gpt-4o-mini-2024-07-18".into(),
        finish_reason: "tool_calls".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_until_expiry_and_overwrites() {
    let f = Fixture::new().await;
    let cache: Arc<dyn LlmCache> = Arc::new(f.cache());
    agentry_store_conformance::cache_serves_until_expiry_and_overwrites(cache).await;
    f.clean_up().await;
}

#[tokio::test]
async fn cache_round_trips_a_full_response_with_its_ttl() {
    let f = Fixture::new().await;
    let cache = f.cache();
    let response = full_response("Done.");
    cache
        .put("req-hash", &response, Duration::from_secs(60))
        .await
        .expect("put");
    assert_eq!(
        cache.get("req-hash").await.expect("get"),
        Some(response.clone())
    );
    let key = format!("{}llm:req-hash", f.prefix);
    let pttl = f.pttl(&key).await;
    assert!(pttl > 59_000 && pttl <= 60_000, "PTTL {pttl}");
    let stored: String = f.raw(redis::cmd("GET").arg(&key)).await;
    let stored: ChatResponse = serde_json::from_str(&stored).expect("the value is the JSON");
    assert_eq!(stored, response);
    assert_eq!(cache.get("other-hash").await.expect("get"), None);
    f.clean_up().await;
}

#[tokio::test]
async fn a_zero_ttl_stores_nothing_and_drops_the_old_entry() {
    let f = Fixture::new().await;
    let cache = f.cache();
    cache
        .put("k", &full_response("old"), Duration::ZERO)
        .await
        .expect("put");
    assert!(f.keys().await.is_empty(), "nothing stored");
    cache
        .put("k", &full_response("old"), Duration::from_secs(60))
        .await
        .expect("put");
    cache
        .put("k", &full_response("new"), Duration::ZERO)
        .await
        .expect("put");
    assert_eq!(cache.get("k").await.expect("get"), None);
    f.clean_up().await;
}

#[tokio::test]
async fn an_undecodable_entry_is_a_miss_and_is_deleted() {
    let f = Fixture::new().await;
    let cache = f.cache();
    for (i, bad) in ["not json", "{\"content\": 1}", "\u{0}\u{1}binary"]
        .into_iter()
        .enumerate()
    {
        let key = format!("bad-{i}");
        let redis_key = format!("{}llm:{key}", f.prefix);
        let () = f
            .raw(
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(bad)
                    .arg("PX")
                    .arg(60_000),
            )
            .await;
        assert_eq!(cache.get(&key).await.expect("get"), None, "{bad:?}");
        assert!(!f.exists(&redis_key).await, "{bad:?} deleted");
        // The key works again afterwards.
        cache
            .put(&key, &full_response("fresh"), Duration::from_secs(60))
            .await
            .expect("put");
        assert_eq!(
            cache.get(&key).await.expect("get"),
            Some(full_response("fresh"))
        );
    }
    f.clean_up().await;
}

#[tokio::test]
async fn a_value_of_another_type_is_a_permanent_error() {
    let f = Fixture::new().await;
    let key = format!("{}llm:list", f.prefix);
    let _: i64 = f.raw(redis::cmd("RPUSH").arg(&key).arg("x")).await;
    let _: i64 = f.raw(redis::cmd("PEXPIRE").arg(&key).arg(60_000)).await;
    let error = f.cache().get("list").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    assert!(error.to_string().contains("Redis"), "{error}");
    f.clean_up().await;
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn health_pings_the_server() {
    let f = Fixture::new().await;
    f.client.health().await.expect("PING");
    assert_eq!(f.client.options().prefix, f.prefix);
    f.clean_up().await;
}

/// A local port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

#[tokio::test]
async fn unreachable_redis_fails_within_the_connect_timeout() {
    let port = closed_port().await;
    let url = format!("redis://agentry:hunter2@127.0.0.1:{port}/0");
    let started = Instant::now();
    let error =
        RedisClient::connect(RedisOptions::new(&url).with_connect_timeout(Duration::from_secs(1)))
            .await
            .unwrap_err();
    // A refusal is reported as soon as it is known, not at the timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "Redis at redis://agentry:***@127.0.0.1:{port}/0 is unreachable"
        )),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_transient() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let error = RedisClient::connect(
        RedisOptions::new(format!("redis://127.0.0.1:{port}/"))
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert!(error.to_string().contains("Redis"), "{error}");
    silent.abort();
}

/// A TCP relay to the test server that can stall (stop relaying) and cut
/// (drop every relayed connection): network faults, not a fake Redis.
struct Relay {
    port: u16,
    open: tokio::sync::watch::Sender<bool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start() -> Relay {
        let info = redis::Client::open(redis_url())
            .expect("test Redis URL")
            .get_connection_info()
            .clone();
        let upstream = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => panic!("the relay test needs a TCP Redis URL, not {other}"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (open, gate) = tokio::sync::watch::channel(true);
        let links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let links = links.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = tokio::net::TcpStream::connect(&upstream)
                        .await
                        .expect("relay to the test Redis");
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut links = links.lock().expect("links");
                    links.push(tokio::spawn(relay(client_read, server_write, gate.clone())));
                    links.push(tokio::spawn(relay(server_read, client_write, gate.clone())));
                }
            }
        });
        Relay {
            port,
            open,
            links,
            accept,
        }
    }

    /// The test server's URL, through the relay.
    fn url(&self) -> String {
        let info = redis::Client::open(redis_url())
            .expect("test Redis URL")
            .get_connection_info()
            .clone();
        let redis = info.redis_settings();
        let auth = match (redis.username(), redis.password()) {
            (user, Some(password)) => format!("{}:{password}@", user.unwrap_or_default()),
            (Some(user), None) => format!("{user}@"),
            (None, None) => String::new(),
        };
        format!("redis://{auth}127.0.0.1:{}/{}", self.port, redis.db())
    }

    /// Stops relaying (bytes are held, connections stay up) or resumes.
    fn stall(&self, stalled: bool) {
        self.open.send_replace(!stalled);
    }

    /// Drops every relayed connection (new ones are relayed again).
    fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if open.wait_for(|open| *open).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_times_out_and_a_cut_one_comes_back() {
    let f = Fixture::new().await;
    let relay = Relay::start().await;
    let client = RedisClient::connect(
        RedisOptions::new(relay.url())
            .with_prefix(&f.prefix)
            .with_timeout(Duration::from_millis(200)),
    )
    .await
    .expect("connect through the relay");
    let limiter = RedisRateLimiter::new(client.clone());
    let slow = limit(0.01, 5);
    acquires(&limiter, "k", slow, &[Some(4)]).await;

    // Stalled: each command fails at the timeout, as transient.
    relay.stall(true);
    let started = Instant::now();
    let error = limiter.acquire("k", slow).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert!(error.to_string().contains("Redis"), "{error}");
    let error = client.health().await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");

    // Cut: the client reconnects by itself; the bucket was kept by Redis
    // (the stalled script may or may not have run once).
    relay.cut();
    relay.stall(false);
    let deadline = Instant::now() + Duration::from_secs(2);
    let decision = loop {
        match limiter.acquire("k", slow).await {
            Ok(decision) => break decision,
            Err(error) => {
                assert_eq!(error.class(), ErrorClass::Transient, "{error}");
                assert!(Instant::now() < deadline, "never reconnected: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(decision.allowed && decision.remaining <= 3, "{decision:?}");
    client.health().await.expect("PING after reconnecting");
    f.clean_up().await;
}

#[tokio::test]
async fn invalid_options_are_refused_naming_the_field() {
    let url = "redis://:hunter2@127.0.0.1:6379/";
    for (options, field) in [
        (RedisOptions::new(url).with_prefix(""), "prefix"),
        (RedisOptions::new(url).with_prefix("a b:"), "prefix"),
        (
            RedisOptions::new(url).with_timeout(Duration::ZERO),
            "timeout",
        ),
        (
            RedisOptions::new(url).with_connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        (RedisOptions::new(""), "url"),
        (RedisOptions::new("http://:hunter2@127.0.0.1/"), "url"),
        (RedisOptions::new("redis://:hunter2@127.0.0.1/x"), "url"),
    ] {
        let error = options.validate().unwrap_err();
        assert!(
            matches!(error, Error::InvalidInput(_)),
            "{options:?}: {error}"
        );
        let message = error.to_string();
        assert!(message.contains(field), "{options:?}: {message}");
        assert!(!message.contains("hunter2"), "{message}");
        let connected = RedisClient::connect(options).await.unwrap_err();
        assert_eq!(connected.to_string(), message);
    }
    let defaults = RedisOptions::new(url);
    assert_eq!(defaults.prefix, DEFAULT_PREFIX);
    assert_eq!(defaults.timeout, Duration::from_secs(2));
    assert_eq!(defaults.connect_timeout, Duration::from_secs(5));
    defaults.validate().expect("defaults are valid");
}

#[test]
fn urls_are_redacted() {
    for (url, shown) in [
        ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:hunter2@host", "redis://user:***@host"),
        ("redis://user@host", "redis://user@host"),
        // Unescaped separators in the password still hide all of it.
        ("redis://u:hun/ter?2@host/1", "redis://u:***@host/1"),
        ("redis://u:a@b@host", "redis://u:***@host"),
        (
            "unix:///run/redis.sock?db=1&pass=hunter2",
            "unix:///run/redis.sock?db=1&pass=***",
        ),
        ("host:6379", "host:6379"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
    let options = RedisOptions::new("redis://:hunter2@host/");
    assert_eq!(options.redacted_url(), "redis://:***@host/");
    let debug = format!("{options:?}");
    assert!(
        debug.contains("redis://:***@host/") && !debug.contains("hunter2"),
        "{debug}"
    );
}

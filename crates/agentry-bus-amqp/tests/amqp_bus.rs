//! The RabbitMQ bus against a real broker (`AGENTRY_TEST_AMQP_URL`, by
//! default the local broker's `/` vhost). Each test works under its own
//! random prefix and deletes its exchanges and queues at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use agentry_bus_amqp::{AmqpBus, AmqpOptions, TopologyNames};
use agentry_core::{
    Bus, DeadLetter, DeadLetters, Delivery, ErrorClass, Event, EventKind, Result, TaskId, TaskKey,
    TaskMessage, WorkflowId,
};
use futures::stream::{BoxStream, StreamExt};
use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Longest wait for something the broker should do promptly.
const PROMPT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn url() -> String {
    std::env::var("AGENTRY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A test's own corner of the broker: a random prefix, whose exchanges and
/// queues (the task queues named at creation) are deleted when it drops,
/// even when the test fails.
struct Scope {
    prefix: String,
    queues: Vec<String>,
}

impl Scope {
    fn new(queues: &[&str]) -> Self {
        init_logs();
        Scope {
            prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
            queues: strings(queues),
        }
    }

    fn names(&self) -> TopologyNames {
        TopologyNames::new(self.prefix.clone())
    }

    fn options(&self) -> AmqpOptions {
        AmqpOptions::new(url())
            .with_prefix(self.prefix.clone())
            .with_connection_name(format!("agentry-test-{}", uuid::Uuid::new_v4().simple()))
            .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .with_confirm_timeout(PROMPT)
            .with_connect_timeout(PROMPT)
    }

    async fn bus(&self) -> AmqpBus {
        self.bus_with(self.options()).await
    }

    async fn bus_with(&self, options: AmqpOptions) -> AmqpBus {
        AmqpBus::connect(options)
            .await
            .expect("connect to RabbitMQ")
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let names = self.names();
        let mut queues: Vec<String> = self.queues.iter().map(|q| names.task_queue(q)).collect();
        queues.push(names.dead_letter_queue());
        let exchanges = [
            names.task_exchange(),
            names.dead_letter_exchange(),
            names.events_exchange(),
        ];
        // Its own thread and runtime: the test's may be gone or panicking.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(Ok(connection)) = tokio::time::timeout(
                    PROMPT,
                    Connection::connect(&url(), ConnectionProperties::default()),
                )
                .await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for exchange in exchanges {
                        let _ = channel
                            .exchange_delete(
                                exchange.as_str().into(),
                                ExchangeDeleteOptions::default(),
                            )
                            .await;
                    }
                }
                let _ = connection.close(200, "OK".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

fn task(node: &str, queue: &str) -> TaskMessage {
    TaskMessage {
        task: TaskId::new(TaskKey::new(WorkflowId::new(), 0, node), 1),
        queue: queue.into(),
        request_id: Some(agentry_core::RequestId::new(format!("req-{node}")).unwrap()),
        tags: vec![],
        enqueued_at: chrono::Utc::now(),
    }
}

type Deliveries = BoxStream<'static, Result<Delivery>>;

async fn next(stream: &mut Deliveries) -> Delivery {
    tokio::time::timeout(PROMPT, stream.next())
        .await
        .expect("a delivery within 5 s")
        .expect("stream open")
        .expect("delivery ok")
}

/// Asserts nothing is delivered for a while.
async fn check_empty(stream: &mut Deliveries) {
    let got = tokio::time::timeout(QUIET, stream.next()).await;
    assert!(got.is_err(), "expected no delivery, got {got:?}");
}

async fn next_event(stream: &mut BoxStream<'static, Event>) -> Event {
    tokio::time::timeout(PROMPT, stream.next())
        .await
        .expect("an event within 5 s")
        .expect("event stream open")
}

/// Polls the dead letters until `count` are listed.
async fn dead_letters(bus: &AmqpBus, count: usize) -> Vec<DeadLetter> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let dead = bus.list_dead(100).await.unwrap();
        if dead.len() >= count || Instant::now() > deadline {
            assert_eq!(dead.len(), count, "dead letters: {dead:?}");
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn dispatch_consume_and_ack_removes() {
    let scope = Scope::new(&["qa", "developer", "devops", "nobody"]);
    let bus = scope.bus().await;
    assert_eq!(bus.name(), "amqp");
    bus.health().await.unwrap();
    let mut s = bus.consume(&strings(&["qa", "developer"])).await.unwrap();
    let (a, b) = (task("a", "qa"), task("b", "developer"));
    bus.dispatch(a.clone()).await.unwrap();
    bus.dispatch(b.clone()).await.unwrap();
    bus.dispatch(task("c", "devops")).await.unwrap();
    let mut got = vec![];
    for _ in 0..2 {
        let d = next(&mut s).await;
        assert!(!d.redelivered);
        got.push(d.message.clone());
        d.ack.ack().await.unwrap();
    }
    got.sort_by(|x, y| x.task.key.node.cmp(&y.task.key.node));
    assert_eq!(got, vec![a, b], "messages arrive as dispatched");
    check_empty(&mut s).await;
    let devops = bus.queue_stats("devops").await.unwrap();
    assert_eq!((devops.ready, devops.consumers), (1, 0));
    let qa = bus.queue_stats("qa").await.unwrap();
    assert_eq!((qa.ready, qa.consumers), (0, 1));
    let missing = bus.queue_stats("nobody").await.unwrap_err();
    assert!(
        matches!(missing, agentry_core::Error::NotFound(_)),
        "{missing}"
    );
    let bad = bus.dispatch(task("d", "dead")).await.unwrap_err();
    assert_eq!(bad.class(), ErrorClass::InvalidInput, "{bad}");
}

#[tokio::test]
async fn delete_topology_removes_the_queues_and_their_messages() {
    let scope = Scope::new(&["qa", "devops"]);
    let bus = scope.bus().await;
    bus.dispatch(task("a", "qa")).await.unwrap();
    bus.dispatch(task("b", "devops")).await.unwrap();
    assert_eq!(bus.queue_stats("qa").await.unwrap().ready, 1);
    bus.delete_topology(&strings(&["qa", "devops"]))
        .await
        .unwrap();
    for q in ["qa", "devops"] {
        let err = bus.queue_stats(q).await.unwrap_err();
        assert!(
            matches!(err, agentry_core::Error::NotFound(_)),
            "{q}: {err}"
        );
    }
    let err = bus.dead_letter_stats().await.unwrap_err();
    assert!(matches!(err, agentry_core::Error::NotFound(_)), "{err}");
    let bad = bus.delete_topology(&strings(&["dead"])).await.unwrap_err();
    assert_eq!(bad.class(), ErrorClass::InvalidInput, "{bad}");
}

#[tokio::test]
async fn probing_missing_queues_keeps_the_connection() {
    let scope = Scope::new(&["qa", "nobody"]);
    let bus = scope.bus().await;
    let mut s = bus.consume(&strings(&["qa"])).await.unwrap();
    bus.dispatch(task("held", "qa")).await.unwrap();
    let held = next(&mut s).await;
    // Each probe makes the broker close a channel with 404.
    for _ in 0..20 {
        let err = bus.queue_stats("nobody").await.unwrap_err();
        assert!(matches!(err, agentry_core::Error::NotFound(_)), "{err}");
    }
    // Still the same connection: the delivery it holds can be settled.
    held.ack.ack().await.unwrap();
    check_empty(&mut s).await;
}

#[tokio::test]
async fn consumers_compete() {
    let scope = Scope::new(&["qa"]);
    let bus = scope.bus_with(scope.options().with_prefetch(1)).await;
    let mut s1 = bus.consume(&strings(&["qa"])).await.unwrap();
    let mut s2 = bus.consume(&strings(&["qa"])).await.unwrap();
    bus.dispatch(task("a", "qa")).await.unwrap();
    bus.dispatch(task("b", "qa")).await.unwrap();
    let d1 = next(&mut s1).await;
    let d2 = next(&mut s2).await;
    assert_ne!(d1.message.task.key.node, d2.message.task.key.node);
    d1.ack.ack().await.unwrap();
    d2.ack.ack().await.unwrap();
    check_empty(&mut s1).await;
    check_empty(&mut s2).await;
}

#[tokio::test]
async fn nack_requeue_and_drop_redeliver() {
    let scope = Scope::new(&["qa"]);
    let bus = scope.bus().await;
    let mut s = bus.consume(&strings(&["qa"])).await.unwrap();
    bus.dispatch(task("a", "qa")).await.unwrap();
    let d = next(&mut s).await;
    assert!(!d.redelivered);
    d.ack.nack(true).await.unwrap();
    let d = next(&mut s).await;
    assert!(d.redelivered, "nack(requeue) redelivers");
    // Dropping it unsettled gives it back too (its consumer died).
    drop(d);
    let d = next(&mut s).await;
    assert!(d.redelivered, "a dropped delivery is redelivered");
    assert_eq!(d.message.task.key.node, "a");
    d.ack.ack().await.unwrap();
    check_empty(&mut s).await;
}

#[tokio::test]
async fn rejected_tasks_are_listed_and_replayed() {
    let scope = Scope::new(&["qa"]);
    let bus = scope.bus().await;
    let mut s = bus.consume(&strings(&["qa"])).await.unwrap();
    for node in ["a", "b", "c"] {
        bus.dispatch(task(node, "qa")).await.unwrap();
    }
    let mut dispatched = vec![];
    for _ in 0..3 {
        let d = next(&mut s).await;
        dispatched.push(d.message.clone());
        d.ack.nack(false).await.unwrap();
    }
    check_empty(&mut s).await;

    let dead = dead_letters(&bus, 3).await;
    let again = bus.list_dead(100).await.unwrap();
    assert_eq!(again, dead, "listing removes nothing and keeps the order");
    assert_eq!(
        dead.iter().map(|d| d.message.clone()).collect::<Vec<_>>(),
        dispatched
    );
    for letter in &dead {
        assert_eq!(letter.reason, "rejected");
        // RabbitMQ 3.10 drops x-delivery-count when it dead-letters.
        assert_eq!(letter.deliveries, None);
        assert!(letter.dead_at.is_some());
    }
    assert_eq!(bus.list_dead(2).await.unwrap(), dead[..2].to_vec());
    assert_eq!(bus.dead_letter_stats().await.unwrap().ready, 3);

    let replayed = bus.replay_dead(&dead[1].id).await.unwrap();
    assert_eq!(replayed, dead[1].message);
    let d = next(&mut s).await;
    assert_eq!(d.message, dead[1].message);
    assert!(
        !d.redelivered,
        "a replayed task starts a fresh delivery count"
    );
    d.ack.ack().await.unwrap();
    let left = bus.list_dead(100).await.unwrap();
    assert_eq!(left, vec![dead[0].clone(), dead[2].clone()]);

    let unknown = bus.replay_dead("no-such-id").await.unwrap_err();
    assert!(
        matches!(unknown, agentry_core::Error::NotFound(_)),
        "{unknown}"
    );
    assert_eq!(
        bus.list_dead(100).await.unwrap(),
        left,
        "a failed replay loses nothing"
    );
}

#[tokio::test]
async fn a_task_returned_too_often_is_dead_lettered() {
    let scope = Scope::new(&["qa"]);
    let limit = 2;
    let bus = scope
        .bus_with(scope.options().with_delivery_limit(limit))
        .await;
    let mut s = bus.consume(&strings(&["qa"])).await.unwrap();
    bus.dispatch(task("poison", "qa")).await.unwrap();
    let mut deliveries = 0;
    while let Ok(Some(d)) = tokio::time::timeout(QUIET, s.next()).await {
        let d = d.unwrap();
        deliveries += 1;
        assert_eq!(d.redelivered, deliveries > 1);
        d.ack.nack(true).await.unwrap();
    }
    assert_eq!(
        deliveries,
        limit + 1,
        "delivered once, then returned up to the limit"
    );
    let dead = dead_letters(&bus, 1).await;
    assert_eq!(dead[0].reason, "delivery_limit");
    assert_eq!(dead[0].message.task.key.node, "poison");
    assert_eq!(dead[0].deliveries, Some(limit + 1));
}

#[tokio::test]
async fn undecodable_tasks_are_dead_lettered() {
    let scope = Scope::new(&["qa"]);
    let bus = scope.bus().await;
    let mut s = bus.consume(&strings(&["qa"])).await.unwrap();
    let raw = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    channel
        .basic_publish(
            scope.names().task_exchange().as_str().into(),
            "qa".into(),
            BasicPublishOptions::default(),
            b"not a task",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    bus.dispatch(task("fine", "qa")).await.unwrap();
    let d = next(&mut s).await;
    assert_eq!(
        d.message.task.key.node, "fine",
        "the undecodable message is skipped"
    );
    d.ack.ack().await.unwrap();
    let deadline = Instant::now() + PROMPT;
    while bus.dead_letter_stats().await.unwrap().ready != 1 {
        assert!(
            Instant::now() < deadline,
            "the undecodable message reaches the DLQ"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        bus.list_dead(10).await.unwrap().is_empty(),
        "no task to list"
    );
    let _ = raw.close(200, "OK".into()).await;
}

#[tokio::test]
async fn a_deleted_task_queue_is_declared_again() {
    let scope = Scope::new(&["qa"]);
    let bus = scope.bus().await;
    bus.dispatch(task("before", "qa")).await.unwrap();
    let raw = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    channel
        .queue_delete(
            scope.names().task_queue("qa").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    // Quorum queue deletion finishes asynchronously on RabbitMQ 3.10: a
    // queue declared again too soon can be the dying one.
    let deadline = Instant::now() + PROMPT;
    while bus.queue_stats("qa").await.is_ok() {
        assert!(Instant::now() < deadline, "the queue is deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The bus still believes the queue declared: the mandatory publish
    // comes back unroutable, and is retried after declaring it again.
    bus.dispatch(task("after", "qa")).await.unwrap();
    assert_eq!(bus.queue_stats("qa").await.unwrap().ready, 1);
    let mut s = bus.consume(&strings(&["qa"])).await.unwrap();
    let d = next(&mut s).await;
    assert_eq!(d.message.task.key.node, "after");
    d.ack.ack().await.unwrap();
    let _ = raw.close(200, "OK".into()).await;
}

#[tokio::test]
async fn events_reach_every_subscriber() {
    let scope = Scope::new(&[]);
    let bus = scope.bus().await;
    let mut a = bus.subscribe();
    let mut b = bus.subscribe();
    let started = Event::workflow(
        EventKind::WorkflowStarted,
        WorkflowId::new(),
        serde_json::json!({"n": 1}),
    );
    let done = Event::task(
        EventKind::TaskCompleted,
        &task("qa", "qa").task,
        serde_json::json!({}),
    );
    bus.publish(&[started.clone(), done.clone()]).await.unwrap();
    for stream in [&mut a, &mut b] {
        assert_eq!(next_event(stream).await, started);
        assert_eq!(next_event(stream).await, done);
    }
    bus.publish(&[]).await.unwrap();
    // Dropping the bus closes its connection: the streams end.
    drop(bus);
    for stream in [&mut a, &mut b] {
        let end = tokio::time::timeout(PROMPT, stream.next()).await.unwrap();
        assert!(end.is_none(), "the event stream ends with the bus");
    }
}

#[tokio::test]
async fn two_processes_share_tasks_and_events() {
    let scope = Scope::new(&["developer"]);
    let gateway = scope.bus().await;
    let worker = scope.bus().await;
    let mut tasks = worker.consume(&strings(&["developer"])).await.unwrap();
    let mut events = gateway.subscribe();
    // The gateway's own publish waits for its subscription to be bound.
    let probe = Event::workflow(
        EventKind::WorkflowResumed,
        WorkflowId::new(),
        serde_json::json!({}),
    );
    gateway.publish(std::slice::from_ref(&probe)).await.unwrap();
    assert_eq!(next_event(&mut events).await.id, probe.id);

    let t = task("dev", "developer");
    gateway.dispatch(t.clone()).await.unwrap();
    let d = next(&mut tasks).await;
    assert_eq!(d.message, t);
    let completed = Event::task(EventKind::TaskCompleted, &t.task, serde_json::json!({}));
    worker
        .publish(std::slice::from_ref(&completed))
        .await
        .unwrap();
    d.ack.ack().await.unwrap();
    assert_eq!(next_event(&mut events).await, completed);
}

/// The broker's process id of the connection named `name`.
async fn connection_pid(name: &str) -> String {
    let deadline = Instant::now() + PROMPT;
    loop {
        let out = tokio::process::Command::new("/usr/sbin/rabbitmqctl")
            .args(["-q", "list_connections", "pid", "client_properties"])
            .output()
            .await
            .expect("run rabbitmqctl list_connections");
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| l.contains(name)) {
            return line.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "connection {name} not listed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Closes the bus's connection on the broker's side.
async fn force_close(name: &str) {
    let pid = connection_pid(name).await;
    let out = tokio::process::Command::new("/usr/sbin/rabbitmqctl")
        .args(["-q", "close_connection", &pid, "test: forced close"])
        .output()
        .await
        .expect("run rabbitmqctl close_connection");
    assert!(
        out.status.success(),
        "close_connection failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn consumers_subscribers_and_dispatch_survive_a_lost_connection() {
    let scope = Scope::new(&["qa"]);
    let options = scope.options();
    let name = options.connection_name.clone().unwrap();
    let bus = scope.bus_with(options).await;
    let mut tasks = bus.consume(&strings(&["qa"])).await.unwrap();
    let mut events = bus.subscribe();
    bus.dispatch(task("held", "qa")).await.unwrap();
    let held = next(&mut tasks).await;

    force_close(&name).await;
    // Dispatched while the bus is (about to be) reconnecting: it waits.
    bus.dispatch(task("after", "qa")).await.unwrap();

    // The broker requeued the unacknowledged task; the stream resumes on
    // the new connection and gets it again, besides the new one.
    let mut got = vec![next(&mut tasks).await, next(&mut tasks).await];
    got.sort_by(|a, b| a.message.task.key.node.cmp(&b.message.task.key.node));
    let again = got.pop().unwrap(); // "held"
    let after = got.pop().unwrap(); // "after"
    assert_eq!(again.message, held.message);
    assert!(again.redelivered);
    assert_eq!(after.message.task.key.node, "after");
    assert!(!after.redelivered);
    let stale = held.ack.ack().await.unwrap_err();
    assert_eq!(stale.class(), ErrorClass::Transient, "{stale}");
    again.ack.ack().await.unwrap();
    after.ack.ack().await.unwrap();
    check_empty(&mut tasks).await;
    bus.health().await.unwrap();

    // Publishes wait for this bus's subscriptions to be bound again.
    let ev = Event::workflow(
        EventKind::WorkflowCompleted,
        WorkflowId::new(),
        serde_json::json!({}),
    );
    bus.publish(std::slice::from_ref(&ev)).await.unwrap();
    assert_eq!(next_event(&mut events).await.id, ev.id);
}

/// A TCP proxy to the broker that the test can cut (dropping every
/// connection and refusing new ones) and restore: an outage on demand.
struct Proxy {
    url: String,
    up: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start() -> Proxy {
        let broker = url::Url::parse(&url()).unwrap();
        let target = format!(
            "{}:{}",
            broker.host_str().unwrap(),
            broker.port().unwrap_or(5672)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxied = broker.clone();
        proxied
            .set_port(Some(listener.local_addr().unwrap().port()))
            .unwrap();
        let (up, _) = tokio::sync::watch::channel(true);
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = state.subscribe();
                if !*up.borrow() {
                    continue; // dropped: the client sees the door shut
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy {
            url: proxied.to_string(),
            up,
        }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test]
async fn an_outage_fails_publishes_in_time_and_everything_resumes_after() {
    let scope = Scope::new(&["qa"]);
    let proxy = Proxy::start().await;
    let confirm_timeout = Duration::from_millis(800);
    let bus = scope
        .bus_with(AmqpOptions {
            url: proxy.url.clone(),
            ..scope.options().with_confirm_timeout(confirm_timeout)
        })
        .await;
    let mut tasks = bus.consume(&strings(&["qa"])).await.unwrap();
    let mut events = bus.subscribe();

    proxy.cut();
    let deadline = Instant::now() + PROMPT;
    while bus.health().await.is_ok() {
        assert!(Instant::now() < deadline, "the bus notices the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let err = bus.dispatch(task("lost", "qa")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(
        started.elapsed() >= confirm_timeout,
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < confirm_timeout * 3,
        "{:?}",
        started.elapsed()
    );
    check_empty(&mut tasks).await;

    proxy.restore();
    // A dispatch now waits for the reconnection (backoff at most 500 ms).
    let mut sent = Err(err);
    let deadline = Instant::now() + PROMPT;
    while sent.is_err() && Instant::now() < deadline {
        sent = bus.dispatch(task("back", "qa")).await;
    }
    sent.unwrap();
    let d = next(&mut tasks).await;
    assert_eq!(d.message.task.key.node, "back");
    d.ack.ack().await.unwrap();
    bus.health().await.unwrap();
    let ev = Event::workflow(
        EventKind::WorkflowStarted,
        WorkflowId::new(),
        serde_json::json!({}),
    );
    bus.publish(std::slice::from_ref(&ev)).await.unwrap();
    assert_eq!(next_event(&mut events).await.id, ev.id);
}

#[tokio::test]
async fn close_ends_streams_and_returns_unsettled_tasks() {
    let scope = Scope::new(&["qa"]);
    let bus = scope.bus().await;
    let other = scope.bus().await;
    let mut tasks = bus.consume(&strings(&["qa"])).await.unwrap();
    let mut events = bus.subscribe();
    bus.dispatch(task("a", "qa")).await.unwrap();
    let held = next(&mut tasks).await;
    bus.close().await;
    let end = tokio::time::timeout(PROMPT, tasks.next()).await.unwrap();
    assert!(end.is_none(), "the task stream ends on close");
    let end = tokio::time::timeout(PROMPT, events.next()).await.unwrap();
    assert!(end.is_none(), "the event stream ends on close");
    assert!(held.ack.ack().await.is_err());
    let err = bus.dispatch(task("b", "qa")).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(bus.health().await.is_err());

    let mut s = other.consume(&strings(&["qa"])).await.unwrap();
    let d = next(&mut s).await;
    assert_eq!(d.message.task.key.node, "a");
    assert!(d.redelivered);
    d.ack.ack().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_fails_within_the_timeout() {
    init_logs();
    let started = Instant::now();
    let err = AmqpBus::connect(
        AmqpOptions::new("amqp://guest:hunter2@127.0.0.1:1/%2f")
            .with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    // A listener that never speaks AMQP: the timeout ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = AmqpBus::connect(
        AmqpOptions::new(format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f"))
            .with_connect_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("within 500 ms"), "{err}");
}

#[tokio::test]
async fn invalid_options_are_refused_before_connecting() {
    init_logs();
    let err = AmqpBus::connect(AmqpOptions::new(url()).with_prefix("Not Valid"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidInput);
    assert!(err.to_string().contains("`prefix`"), "{err}");
    let err = AmqpBus::connect(AmqpOptions::new(url()).with_delivery_limit(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`delivery_limit`"), "{err}");
}

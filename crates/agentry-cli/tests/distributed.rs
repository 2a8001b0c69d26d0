//! The distributed mode end to end, with real processes on this machine's
//! PostgreSQL, RabbitMQ and Redis: the demo through two `agentry worker`
//! processes with the embedded run's artifacts; 30 workflows while workers
//! are SIGKILLed and restarted; RabbitMQ stopped and started mid-run;
//! PostgreSQL restarted mid-run; a poison task that lands in the DLQ and
//! is replayed; `agentry agents` and `GET /v1/agents` showing live and dead
//! workers; `serve` dispatching to workers.
//!
//! Each test gets its own PostgreSQL schema, RabbitMQ name prefix and
//! Redis key prefix inside the run's database / vhost / prefix
//! (`AGENTRY_TEST_*`, set by `scripts/services`). The two `_outage` tests
//! stop a shared service and run alone (`.config/nextest.toml`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::*;

fn test_env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One test's deployment: its data directory (local tracker, wiki and
/// repositories, shared by its processes) and the environment that points
/// its processes at its own schema, queues and keys.
struct Cluster {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    workers: Vec<Worker>,
    spawned: usize,
}

/// A running `agentry worker`.
struct Worker {
    child: Child,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    fn new(extra: &[(&str, &str)]) -> Cluster {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let short = &tag[..12];
        let mut env: Vec<(String, String)> = vec![
            ("AGENTRY_MODE".into(), "distributed".into()),
            (
                "AGENTRY_DATABASE_URL".into(),
                test_env(
                    "AGENTRY_TEST_DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/test",
                ),
            ),
            (
                "AGENTRY_AMQP_URL".into(),
                test_env(
                    "AGENTRY_TEST_AMQP_URL",
                    "amqp://guest:guest@127.0.0.1:5672/%2f",
                ),
            ),
            (
                "AGENTRY_REDIS_URL".into(),
                test_env("AGENTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/"),
            ),
            (
                "AGENTRY_CLUSTER__REDIS_PREFIX".into(),
                format!(
                    "{}{short}:",
                    test_env("AGENTRY_TEST_REDIS_PREFIX", "agentry_test:")
                ),
            ),
            (
                "AGENTRY_CLUSTER__DATABASE_SCHEMA".into(),
                format!("d_{short}"),
            ),
            ("AGENTRY_CLUSTER__AMQP_PREFIX".into(), format!("t{short}")),
            ("AGENTRY_CLUSTER__HEARTBEAT_S".into(), "1".into()),
            ("AGENTRY_CLUSTER__UNHEALTHY_AFTER_S".into(), "4".into()),
            ("AGENTRY_CLUSTER__SWEEP_INTERVAL_S".into(), "2".into()),
            ("AGENTRY_CLUSTER__STALL_AFTER_S".into(), "15".into()),
            ("AGENTRY_CLUSTER__MAX_CONNECTIONS".into(), "6".into()),
            ("AGENTRY_CLUSTER__SHUTDOWN_GRACE_S".into(), "5".into()),
            (
                "AGENTRY_LOG".into(),
                "warn,agentry_cli=info,agentry_engine=info".into(),
            ),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        Cluster {
            dir: tempdir(),
            env,
            workers: Vec::new(),
            spawned: 0,
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// `agentry` with this cluster's environment.
    fn cmd(&self) -> Command {
        let mut cmd = agentry(self.data());
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Runs `agentry --json ARGS` to success and parses its stdout.
    fn json(&self, args: &[&str]) -> Value {
        let out = run(self.cmd().arg("--json").args(args));
        assert_ok(&out);
        stdout_json(&out)
    }

    /// Starts a worker and waits for its start line.
    fn start_worker(&mut self, args: &[&str]) -> usize {
        self.start_worker_with(args, &[])
    }

    /// [`Cluster::start_worker`] with extra environment.
    fn start_worker_with(&mut self, args: &[&str], env: &[(&str, &str)]) -> usize {
        self.spawned += 1;
        let log = self.data().join(format!("worker-{}.log", self.spawned));
        let mut cmd = self.cmd();
        cmd.envs(env.iter().copied());
        cmd.args(["--json", "worker", "--concurrency", "2"])
            .args(args);
        if !args.contains(&"--roles") {
            cmd.args(["--roles", "all"]);
        }
        cmd.stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("spawn agentry worker");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        if !first.contains("\"worker\"") {
            // A service just back from an outage may refuse the first
            // connection: one more try, then fail loudly.
            let _ = child.wait();
            std::thread::sleep(Duration::from_secs(1));
            let mut retry = self.cmd();
            retry.envs(env.iter().copied());
            retry
                .args(["--json", "worker", "--concurrency", "2"])
                .args(args);
            if !args.contains(&"--roles") {
                retry.args(["--roles", "all"]);
            }
            retry
                .stdout(Stdio::piped())
                .stderr(File::create(&log).unwrap());
            child = retry.spawn().expect("spawn agentry worker");
            first.clear();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
        }
        assert!(
            first.contains("\"worker\""),
            "the worker did not start: {first:?}\n{}",
            read(&log)
        );
        self.workers.push(Worker { child });
        self.workers.len() - 1
    }

    fn kill_worker(&mut self, index: usize) {
        let mut w = self.workers.remove(index);
        let _ = w.child.kill();
        let _ = w.child.wait();
    }

    /// Submits the demo requirement detached (started, for the workers),
    /// with its own project and repository; returns the workflow id.
    fn submit_demo(&self, n: usize, latency_ms: u64) -> String {
        let key = format!("P{n}");
        let repo = format!("demo-{n}");
        let latency = latency_ms.to_string();
        let v = self.json(&[
            "run",
            "--detach",
            "--llm",
            "demo",
            "--llm-latency-ms",
            &latency,
            "--project-key",
            &key,
            "--repository",
            &repo,
            agentry_agents::demo::DEMO_REQUIREMENT,
        ]);
        assert_eq!(v["status"], "running", "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// `agentry --json ARGS`, tried again for up to 30 s while it fails
    /// (a service just back from an outage may refuse a moment longer).
    fn json_eventually(&self, args: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run(self.cmd().arg("--json").args(args));
            if out.status.success() || Instant::now() > deadline {
                assert_ok(&out);
                return stdout_json(&out);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Statuses of the given workflows.
    fn statuses(&self, ids: &[String]) -> Vec<String> {
        let list = self.json_eventually(&["workflows", "list", "--limit", "500"]);
        ids.iter()
            .map(|id| {
                list.as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["id"] == id.as_str())
                    .map(|w| w["status"].as_str().unwrap().to_string())
                    .unwrap_or_else(|| "missing".into())
            })
            .collect()
    }

    /// Waits until every workflow is completed, calling `tick` between
    /// looks; panics with the statuses and the workers' logs otherwise.
    fn wait_completed(
        &mut self,
        ids: &[String],
        within: Duration,
        mut tick: impl FnMut(&mut Self),
    ) {
        let deadline = Instant::now() + within;
        loop {
            let statuses = self.statuses(ids);
            if statuses.iter().all(|s| s == "completed") {
                return;
            }
            let stopped: Vec<&String> = statuses
                .iter()
                .filter(|s| !matches!(s.as_str(), "running" | "pending" | "completed"))
                .collect();
            if !stopped.is_empty() || Instant::now() > deadline {
                panic!(
                    "workflows did not all complete: {statuses:?}\n{}",
                    self.logs()
                );
            }
            tick(self);
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every worker's whole log.
    fn full_logs(&self) -> String {
        (1..=self.spawned)
            .map(|i| read(&self.data().join(format!("worker-{i}.log"))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.spawned {
            let path = self.data().join(format!("worker-{i}.log"));
            let text = read(&path);
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- worker {i} (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Checks a finished workflow: its artifacts are the embedded demo's,
    /// and its repository has no commit twice.
    fn check_artifacts(&self, id: &str, baseline: &Value) {
        let v = self.json_eventually(&["workflows", "show", id]);
        assert_eq!(v["status"], "completed", "{id}");
        let artifacts = &v["artifacts"];
        assert_eq!(
            &artifact_fingerprint(artifacts),
            baseline,
            "workflow {id}: artifacts differ from the embedded run"
        );
        let repo = &artifacts["repository"];
        let log = git_log(
            repo["path"].as_str().unwrap(),
            repo["branch"].as_str().unwrap(),
        );
        let unique: BTreeSet<&String> = log.iter().collect();
        assert_eq!(
            unique.len(),
            log.len(),
            "workflow {id}: duplicate commits {log:?}"
        );
    }
}

impl Drop for Cluster {
    /// Kills the workers, then deletes this test's queues and exchanges
    /// (quorum queues cost the broker even when idle).
    fn drop(&mut self) {
        self.workers.clear();
        let env: std::collections::HashMap<String, String> = self.env.iter().cloned().collect();
        let options = agentry_bus_amqp::AmqpOptions::new(env["AGENTRY_AMQP_URL"].clone())
            .with_prefix(env["AGENTRY_CLUSTER__AMQP_PREFIX"].clone())
            .with_connect_timeout(Duration::from_secs(5));
        let mut queues = agentry_engine::Engine::all_queues();
        queues.extend(
            agentry_core::queues_for(&queues.clone(), &["python".to_string()]).unwrap_or_default(),
        );
        queues.sort();
        queues.dedup();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(bus) = agentry_bus_amqp::AmqpBus::connect(options).await {
                    let _ = bus.delete_topology(&queues).await;
                    bus.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn read(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// The artifacts of the demo run in the embedded mode, fingerprinted.
fn embedded_baseline() -> Value {
    let dir = tempdir();
    let out = run(agentry(dir.path()).args(["demo", "--json"]));
    assert_ok(&out);
    artifact_fingerprint(&stdout_json(&out))
}

#[test]
fn dist_demo_through_two_workers_matches_the_embedded_run() {
    let baseline = embedded_baseline();
    let mut cluster = Cluster::new(&[]);
    cluster.start_worker(&[]);
    cluster.start_worker(&[]);
    let out = run(cluster.cmd().args(["demo", "--json"]));
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(artifact_fingerprint(&summary), baseline);

    // The workers ran every task (this process ran none), and both show
    // as healthy with their roles once their next beat is in.
    let done = |a: &Value| -> u64 {
        a["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["completed"].as_u64().unwrap())
            .sum()
    };
    let agents = wait_agents(&cluster, |a| done(a) >= 7);
    let workers = agents["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{agents}");
    for w in workers {
        assert_eq!(w["health"], "healthy", "{agents}");
        assert_eq!(w["roles"].as_array().unwrap().len(), 5, "{agents}");
    }
}

#[test]
fn dist_thirty_workflows_survive_workers_killed_at_random() {
    let baseline = embedded_baseline();
    let mut cluster = Cluster::new(&[
        // Room for a task killed several times with its worker.
        ("AGENTRY_CLUSTER__DELIVERY_LIMIT", "20"),
    ]);
    for _ in 0..3 {
        cluster.start_worker(&[]);
    }
    let ids: Vec<String> = (0..30).map(|n| cluster.submit_demo(n, 60)).collect();
    let mut last_kill = Instant::now();
    let mut kills = 0;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    cluster.wait_completed(&ids, Duration::from_secs(300), |c| {
        if last_kill.elapsed() >= Duration::from_secs(2) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let victim = (seed % c.workers.len() as u64) as usize;
            c.kill_worker(victim);
            c.start_worker(&[]);
            kills += 1;
            last_kill = Instant::now();
        }
    });
    assert!(
        kills >= 3,
        "only {kills} workers were killed: the run was too short to test anything"
    );
    for id in &ids {
        cluster.check_artifacts(id, &baseline);
    }
    let dead = cluster.json(&["dlq", "list"]);
    assert_eq!(dead.as_array().unwrap().len(), 0, "dead letters: {dead}");
}

#[test]
fn dist_rabbitmq_stopped_and_started_mid_run_outage() {
    let baseline = embedded_baseline();
    let mut cluster = Cluster::new(&[]);
    cluster.start_worker(&[]);
    cluster.start_worker(&[]);
    let ids: Vec<String> = (0..6).map(|n| cluster.submit_demo(n, 100)).collect();
    // Mid-run: some progress made, not all done.
    wait_for_progress(&cluster, &ids);
    assert_some_running(&cluster, &ids);
    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(Duration::from_secs(3));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    cluster.wait_completed(&ids, Duration::from_secs(240), |_| {});
    assert!(
        cluster.full_logs().contains("connection lost"),
        "the workers never lost the broker:\n{}",
        cluster.logs()
    );
    for id in &ids {
        cluster.check_artifacts(id, &baseline);
    }
}

#[test]
fn dist_postgres_restarted_mid_run_outage() {
    let baseline = embedded_baseline();
    let mut cluster = Cluster::new(&[]);
    cluster.start_worker(&[]);
    cluster.start_worker(&[]);
    let ids: Vec<String> = (0..6).map(|n| cluster.submit_demo(n, 100)).collect();
    wait_for_progress(&cluster, &ids);
    assert_some_running(&cluster, &ids);
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL's clusters under /etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .max()
        .expect("a PostgreSQL version");
    // Down for two seconds: the workers' commits, reads and beats fail
    // meanwhile, and must be ridden out.
    let pg = |action: &str| {
        let out = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", action])
            .output()
            .expect("pg_ctlcluster runs");
        assert!(out.status.success(), "PostgreSQL did not {action}: {out:?}");
    };
    pg("stop");
    std::thread::sleep(Duration::from_secs(2));
    pg("start");
    cluster.wait_completed(&ids, Duration::from_secs(240), |_| {});
    let logs = cluster.full_logs();
    assert!(
        [
            "Unavailable; retrying",
            "Outbox relay cannot",
            "Heartbeat failed",
            "error communicating with database",
            // sqlx's pool may simply wait the outage out in `acquire`.
            "time to acquire exceeded slow threshold",
        ]
        .iter()
        .any(|needle| logs.contains(needle)),
        "the workers never lost the database:\n{}",
        cluster.logs()
    );
    for id in &ids {
        cluster.check_artifacts(id, &baseline);
    }
}

#[test]
fn dist_poison_task_lands_in_the_dlq_and_replays_after_the_fix() {
    let mut cluster = Cluster::new(&[
        ("AGENTRY_CLUSTER__DELIVERY_LIMIT", "2"),
        // Only a replay may move the workflow on.
        ("AGENTRY_CLUSTER__STALL_AFTER_S", "600"),
    ]);
    cluster.start_worker(&[]);
    // Every LLM turn takes 1.5 s, so the task is caught running.
    let id = cluster.submit_demo(0, 1500);
    // The "poison": whichever worker runs the workflow's first task dies
    // with it, until the task is dead-lettered (delivery limit 2: the
    // third return kills it for good).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    let dead = loop {
        assert!(
            Instant::now() < deadline,
            "the task never reached the DLQ after {kills} kills\n{}",
            cluster.logs()
        );
        let dead = cluster.json(&["dlq", "list"]);
        if !dead.as_array().unwrap().is_empty() {
            break dead;
        }
        // The live worker that reports the task running (a killed one
        // keeps its last beat until it turns unhealthy: skip it).
        let agents = cluster.json(&["agents"]);
        let holder = agents["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| {
                w["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t.as_str().unwrap().starts_with(id.as_str()))
            })
            .filter_map(|w| {
                let pid = w["pid"].as_u64().unwrap();
                cluster
                    .workers
                    .iter()
                    .position(|ours| u64::from(ours.child.id()) == pid)
            })
            .next();
        if let Some(index) = holder {
            cluster.kill_worker(index);
            kills += 1;
            cluster.start_worker(&[]);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let letter = &dead[0];
    assert!(
        letter["message"]["task"]["workflow_id"] == id.as_str(),
        "{dead}"
    );
    assert_eq!(letter["message"]["task"]["node"], "business", "{dead}");
    assert_eq!(letter["message"]["queue"], "business_analyst", "{dead}");
    assert_eq!(letter["reason"], "delivery_limit", "{dead}");
    assert!(kills >= 3, "{kills} kills before the DLQ: {dead}");
    // Listed, not consumed: a second look shows it again, and the workflow
    // waits. A worker whose stall sweep runs every second leaves a
    // dead-lettered task alone: it waits for a replay.
    assert_eq!(cluster.json(&["dlq", "list"]), dead);
    while !cluster.workers.is_empty() {
        cluster.kill_worker(0);
    }
    cluster.start_worker_with(
        &[],
        &[
            ("AGENTRY_CLUSTER__STALL_AFTER_S", "1"),
            ("AGENTRY_CLUSTER__SWEEP_INTERVAL_S", "1"),
        ],
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(cluster.json(&["dlq", "list"]), dead);
    assert_eq!(cluster.statuses(std::slice::from_ref(&id)), vec!["running"]);
    let v = cluster.json(&["workflows", "show", &id]);
    assert_eq!(v["current_step"], "business", "nothing moved: {v}");
    // The cause is fixed (nobody kills the worker any more): replay it.
    let replayed = cluster.json(&["dlq", "replay", letter["id"].as_str().unwrap()]);
    assert_eq!(replayed["replayed"], letter["id"]);
    cluster.wait_completed(std::slice::from_ref(&id), Duration::from_secs(180), |_| {});
    assert_eq!(cluster.json(&["dlq", "list"]).as_array().unwrap().len(), 0);
    // Unknown ids are refused by name.
    let out = run(cluster.cmd().args(["dlq", "replay", "no-such-letter"]));
    assert_fails_with(&out, "no-such-letter");
}

#[test]
fn dist_agents_show_a_killed_worker_as_unhealthy() {
    let mut cluster = Cluster::new(&[]);
    cluster.start_worker(&["--roles", "developer,qa", "--tags", "python"]);
    cluster.start_worker(&["--roles", "business_analyst"]);
    let agents = wait_agents(&cluster, |a| healthy(a) == 2);
    let dev = agents["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["roles"] == serde_json::json!(["developer", "qa"]))
        .unwrap_or_else(|| panic!("no developer worker: {agents}"));
    assert_eq!(dev["tags"], serde_json::json!(["python"]));
    assert_eq!(dev["concurrency"], 2);
    let pid = cluster.workers[0].child.id();
    cluster.kill_worker(0);
    let t0 = Instant::now();
    let agents = wait_agents(&cluster, |a| {
        a["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["pid"] == pid && w["health"] == "unhealthy")
    });
    // Unhealthy within the heartbeat timeout (4 s) plus a beat and the
    // time the polling `agentry agents` processes take.
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    assert_eq!(healthy(&agents), 1, "{agents}");
    // A clean stop shows as stopped (with --all), not as unhealthy.
    let survivor = cluster.workers[0].child.id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(survivor as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = cluster.workers[0].child.wait();
    let all = cluster.json(&["agents", "--all"]);
    let stopped = all["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == survivor)
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(stopped["health"], "stopped", "{all}");
    let live = cluster.json(&["agents"]);
    assert!(
        live["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["pid"] != survivor),
        "{live}"
    );
}

#[test]
fn dist_serve_only_dispatches_and_lists_the_registry() {
    let mut cluster = Cluster::new(&[]);
    cluster.start_worker(&[]);
    let key = {
        let v = cluster.json(&["keys", "create", "--tenant", "acme", "--role", "operator"]);
        v["key"].as_str().unwrap().to_string()
    };
    let mut cmd = cluster.cmd();
    cmd.args([
        "--json",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--llm",
        "demo",
    ])
    .stdout(Stdio::piped())
    .stderr(File::create(cluster.data().join("serve.log")).unwrap());
    let mut serve = KillOnDrop(cmd.spawn().expect("spawn serve"));
    let mut first = String::new();
    BufReader::new(serve.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = serde_json::from_str::<Value>(&first).unwrap_or_else(|e| {
        panic!(
            "{e}: {first:?}\n{}",
            read(&cluster.data().join("serve.log"))
        )
    })["url"]
        .as_str()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let call = |req: reqwest::RequestBuilder| -> Value {
        rt.block_on(async { req.send().await.unwrap().json().await.unwrap() })
    };
    let submitted = call(
        http.post(format!("{url}/v1/workflows"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"requirement": agentry_agents::demo::DEMO_REQUIREMENT})),
    );
    let id = submitted["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = call(
            http.get(format!("{url}/v1/workflows/{id}"))
                .bearer_auth(&key),
        );
        if v["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline
                && matches!(v["status"].as_str(), Some("running" | "pending")),
            "{v}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let agents = call(http.get(format!("{url}/v1/agents")).bearer_auth(&key));
    assert_eq!(agents["mode"], "distributed", "{agents}");
    let workers = agents["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{agents}");
    assert_eq!(workers[0]["health"], "healthy", "{agents}");
    let developer = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["role"] == "developer")
        .unwrap();
    assert_eq!(developer["workers"], 1, "{agents}");
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthy(agents: &Value) -> usize {
    agents["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["health"] == "healthy")
        .count()
}

fn wait_agents(cluster: &Cluster, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let agents = cluster.json(&["agents"]);
        if ok(&agents) {
            return agents;
        }
        assert!(
            Instant::now() < deadline,
            "agents never got there: {agents}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until some workflow moved past its first step while some is
/// still running.
fn wait_for_progress(cluster: &Cluster, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = cluster.json(&["workflows", "list", "--limit", "500"]);
        let moved = list.as_array().unwrap().iter().any(|w| {
            ids.iter().any(|id| w["id"] == id.as_str())
                && w["current_step"] != "business"
                && w["current_step"] != ""
        });
        if moved {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {list}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The outage must hit a run in progress.
fn assert_some_running(cluster: &Cluster, ids: &[String]) {
    let statuses = cluster.statuses(ids);
    assert!(
        statuses.iter().any(|s| s == "running"),
        "every workflow ended before the outage: {statuses:?}"
    );
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {out:?}");
}

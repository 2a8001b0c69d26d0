//! The `agentry` binary against real HTTP: OpenAI-compatible and Anthropic
//! contract servers on loopback (vendor wire formats, validated like the
//! vendors do), answered by the bundled demo session, so whole workflows run
//! over the wire and their artifacts can be compared with the demo's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use agentry_llm_contract::{ContractServer, Vendor};
use agentry_llm_scripted::ScriptedProvider;
use serde_json::Value;
use support::*;

/// A contract server answered by the demo session, with the runtime that
/// serves it.
struct Server {
    server: ContractServer,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(vendor: Vendor, key: &str) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let brain = Arc::new(
            ScriptedProvider::from_toml_str(agentry_agents::demo::DEMO_SESSION, "demo").unwrap(),
        );
        let server = rt
            .block_on(ContractServer::start(vendor, brain))
            .with_api_key(key);
        Server { server, _rt: rt }
    }
}

/// One test's world: a data directory with the demo requirement, a
/// contract server, the variable that carries its key, and optionally a
/// config file.
struct Wire {
    server: Server,
    vendor: Vendor,
    dir: tempfile::TempDir,
    requirement: PathBuf,
    key_var: &'static str,
    key: &'static str,
    config: Option<PathBuf>,
}

impl Wire {
    fn new(vendor: Vendor, key_var: &'static str, key: &'static str) -> Wire {
        let dir = tempdir();
        let requirement = write(
            dir.path(),
            "requirement.md",
            agentry_agents::demo::DEMO_REQUIREMENT,
        );
        Wire {
            server: Server::start(vendor, key),
            vendor,
            dir,
            requirement,
            key_var,
            key,
            config: None,
        }
    }

    fn url(&self) -> String {
        self.server.server.base_url()
    }

    /// A fresh server in place of the old one (a server infers agent
    /// visits from what it saw, so each workflow after the first needs one).
    fn restart(&mut self) {
        self.server = Server::start(self.vendor, self.key);
    }

    /// Writes the config file; `{url}` stands for the server's base URL.
    fn with_config(mut self, toml: &str) -> Wire {
        let text = toml.replace("{url}", &self.url());
        self.config = Some(write(self.dir.path(), "agentry.toml", &text));
        self
    }

    /// `agentry` on `data_dir` with the key and the config.
    fn cmd_at(&self, data_dir: &Path) -> Command {
        let mut cmd = agentry(data_dir);
        cmd.env(self.key_var, self.key);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd
    }

    fn cmd(&self) -> Command {
        self.cmd_at(self.dir.path())
    }

    /// `agentry run --json ARGS --file REQUIREMENT` on the data directory.
    fn run(&self, args: &[&str]) -> Output {
        self.run_at(self.dir.path(), args)
    }

    fn run_at(&self, data_dir: &Path, args: &[&str]) -> Output {
        run(self
            .cmd_at(data_dir)
            .args(["run", "--json"])
            .args(args)
            .arg("--file")
            .arg(&self.requirement))
    }

    /// A run on the `openai` preset pointed at the server, with `extra`.
    fn run_openai_at(&self, data_dir: &Path, extra: &[&str]) -> Output {
        let url = self.url();
        let mut args = vec![
            "--llm",
            "openai",
            "--model",
            "gpt-4o-mini",
            "--base-url",
            &url,
        ];
        args.extend_from_slice(extra);
        self.run_at(data_dir, &args)
    }

    fn run_openai(&self, extra: &[&str]) -> Output {
        self.run_openai_at(self.dir.path(), extra)
    }

    /// A run that must complete: its summary.
    fn completed(&self, args: &[&str]) -> Value {
        completed(self.run(args))
    }

    fn requests(&self) -> usize {
        self.server.server.request_count()
    }
}

/// The summary of a run that completed.
fn completed(out: Output) -> Value {
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed", "{summary:#}");
    summary
}

/// The demo's artifacts, the reference every run over the wire must match.
fn demo_fingerprint() -> Value {
    let dir = tempdir();
    let out = run(agentry(dir.path()).args(["demo", "--json"]));
    assert_ok(&out);
    artifact_fingerprint(&stdout_json(&out))
}

fn calls(summary: &Value) -> Vec<Value> {
    summary["llm_calls"].as_array().unwrap().clone()
}

/// Every call was answered by `provider` with `model`.
fn all_answered_by(summary: &Value, provider: &str, model: &str) -> bool {
    calls(summary)
        .iter()
        .all(|c| c["provider"] == provider && c["model"] == model)
}

#[test]
fn a_whole_workflow_runs_on_an_openai_compatible_server_from_flags_alone() {
    let w = Wire::new(Vendor::OpenAi, "OPENAI_API_KEY", "sk-test-openai-7f3a");
    let out = w.run_openai(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = completed(out);
    assert_eq!(artifact_fingerprint(&summary), demo_fingerprint());

    // Every call went over the wire, and the ledger says who answered.
    assert_eq!(calls(&summary).len(), w.requests());
    assert!(all_answered_by(&summary, "openai", "gpt-4o-mini"));
    let bearer = format!("Bearer {}", w.key);
    for request in w.server.server.requests() {
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
    }
    assert!(!stderr.contains(w.key), "the key leaked into the output");

    let out = run(w
        .cmd()
        .args(["workflows", "show", "--json"])
        .arg(summary["id"].as_str().unwrap()));
    assert_ok(&out);
    let shown = stdout_json(&out);
    let usage = shown["artifacts"]["usage"].as_object().unwrap();
    assert_eq!(usage.len(), 5, "{usage:#?}");
    assert!(usage
        .values()
        .all(|u| u["provider"] == "openai" && u["prompt_tokens"].as_u64().unwrap() > 0));
    // The stored options hold the provider, never the key.
    let db = std::fs::read(w.dir.path().join("agentry.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(w.key));
}

#[test]
fn a_whole_workflow_runs_on_an_anthropic_server_from_flags_alone_and_llm_check_reports_it() {
    let w = Wire::new(
        Vendor::Anthropic,
        "ANTHROPIC_API_KEY",
        "anthropic-flags-5d1e",
    );
    let url = w.url();
    let flags = [
        "--llm",
        "anthropic",
        "--model",
        "claude-test",
        "--base-url",
        &url,
    ];
    let summary = w.completed(&flags);
    assert_eq!(artifact_fingerprint(&summary), demo_fingerprint());
    assert!(all_answered_by(&summary, "anthropic", "claude-test"));

    let out = run(w.cmd().args(["llm", "check"]).args(flags));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("anthropic") && text.contains(" ok ") && text.contains("claude-test"),
        "{text}"
    );
    // A wrong key is reported, without the key.
    let out = run(w
        .cmd()
        .env("ANTHROPIC_API_KEY", "wrong-key-0000")
        .args(["llm", "check", "--json"])
        .args(flags));
    assert!(!out.status.success());
    let report = &stdout_json(&out)[0];
    assert_eq!(report["status"], "error", "{report}");
    assert!(!report.to_string().contains("wrong-key-0000"), "{report}");
}

#[test]
fn a_whole_workflow_streams_from_an_anthropic_server_with_a_cheaper_model_for_the_writer() {
    let w = Wire::new(Vendor::Anthropic, "TEST_CLAUDE_KEY", "anthropic-test-91c2").with_config(
        r#"
[llm]
provider = "claude"
[llm.providers.claude]
kind = "anthropic"
base_url = "{url}"
model = "claude-sonnet-test"
api_key_env = "TEST_CLAUDE_KEY"
stream = true
[llm.roles]
technical_writer = { model = "claude-haiku-test" }
[llm.prices]
"claude-sonnet-test" = { input_per_mtok = 3.0, output_per_mtok = 15.0 }
"claude-haiku-test" = { input_per_mtok = 1.0, output_per_mtok = 5.0 }
"#,
    );
    let summary = w.completed(&[]);
    assert_eq!(artifact_fingerprint(&summary), demo_fingerprint());

    assert!(w
        .server
        .server
        .requests()
        .iter()
        .all(|r| r.header("anthropic-version").is_some()
            && r.header("x-api-key") == Some(w.key)
            && r.body["stream"] == true));
    let usage = summary["usage"].as_object().unwrap();
    assert_eq!(usage["technical_writer"]["model"], "claude-haiku-test");
    assert_eq!(usage["developer"]["model"], "claude-sonnet-test");
    for (role, u) in usage {
        assert!(u["cost_usd"].as_f64().unwrap() > 0.0, "{role}: {u}");
    }
    let total = summary["total_cost_usd"].as_f64().unwrap();
    let sum: f64 = usage
        .values()
        .map(|u| u["cost_usd"].as_f64().unwrap())
        .sum();
    assert!((total - sum).abs() < 1e-9);

    let out = run(w
        .cmd()
        .args(["workflows", "show", summary["id"].as_str().unwrap()]));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("LLM calls:") && text.contains("claude-haiku-test"),
        "{text}"
    );
}

#[test]
fn a_recorded_run_replays_offline_to_the_same_artifacts() {
    let w = Wire::new(Vendor::OpenAi, "OPENAI_API_KEY", "sk-test-record");
    let cassette = w.dir.path().join("session.jsonl");
    let cassette_arg = cassette.to_str().unwrap();
    let recorded =
        completed(w.run_openai_at(&w.dir.path().join("recorded"), &["--record", cassette_arg]));
    let lines = std::fs::read_to_string(&cassette).unwrap().lines().count();
    assert_eq!(lines, w.requests(), "one cassette line per call");

    drop(w.server);
    let replayed = completed(run(agentry(&w.dir.path().join("replayed"))
        .args(["run", "--json", "--replay", cassette_arg, "--file"])
        .arg(&w.requirement)));
    assert_eq!(
        artifact_fingerprint(&replayed),
        artifact_fingerprint(&recorded)
    );
    // The replayed calls keep the recorded provider, model and usage.
    let usage = |s: &Value| {
        s["usage"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, u)| (k.clone(), u["prompt_tokens"].clone(), u["provider"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(usage(&replayed), usage(&recorded));
}

#[test]
fn a_budget_stop_names_the_role_and_figures_and_resume_with_a_raised_budget_finishes() {
    let w = Wire::new(Vendor::OpenAi, "OPENAI_API_KEY", "sk-test-budget").with_config(
        "[llm.prices]\n\"gpt-4o-mini\" = { input_per_mtok = 10.0, output_per_mtok = 30.0 }\n",
    );
    let out = w.run_openai(&["--budget-usd", "0.05"]);
    assert!(!out.status.success(), "the budget must stop the run");
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "failed");
    let error = &summary["errors"][0];
    assert_eq!(error["class"], "budget_exceeded", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("workflow budget of $0.0500 would be exceeded"),
        "{message}"
    );
    // Completions are not known in advance, so the call that crosses the
    // cap may overshoot it by its answer; the next one is refused.
    let spent = summary["total_cost_usd"].as_f64().unwrap();
    assert!(spent > 0.0, "{spent}");
    assert!(
        message.contains(&format!("spent ${spent:.4}")),
        "{message} vs {spent}"
    );
    let calls_before = w.requests();

    let id = summary["id"].as_str().unwrap();
    let resumed = completed(run(w.cmd().args([
        "resume",
        id,
        "--budget-usd",
        "10",
        "--json",
    ])));
    assert!(w.requests() > calls_before);
    assert_eq!(artifact_fingerprint(&resumed), demo_fingerprint());
}

#[test]
fn a_dead_primary_falls_back_to_the_second_provider_and_llm_check_reports_both() {
    // Nothing listens on port 9 of loopback: connections are refused.
    let w = Wire::new(Vendor::OpenAi, "SECONDARY_KEY", "sk-test-fallback").with_config(
        r#"
[llm]
provider = "primary"
fallback = ["secondary"]
[llm.retry]
max_attempts = 1
[llm.providers.primary]
base_url = "http://127.0.0.1:9/v1"
model = "big-model"
[llm.providers.secondary]
base_url = "{url}"
model = "small-model"
api_key_env = "SECONDARY_KEY"
"#,
    );
    let summary = w.completed(&[]);
    assert!(all_answered_by(&summary, "secondary", "small-model"));

    let out = run(w.cmd().args(["llm", "check", "--json"]));
    assert!(!out.status.success(), "a dead provider fails the check");
    let reports = stdout_json(&out);
    let by_name = |n: &str| {
        reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["provider"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("primary")["status"], "error");
    assert!(by_name("primary")["error"]
        .as_str()
        .unwrap()
        .contains("primary"));
    let ok = by_name("secondary");
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(ok["answered_by"], "small-model");
    assert!(ok["latency_ms"].as_u64().is_some());
}

#[test]
fn a_second_run_of_the_same_requirement_is_served_from_the_cache_in_part() {
    let mut w = Wire::new(Vendor::OpenAi, "OPENAI_API_KEY", "sk-test-cache");
    let mut run_once = |extra: &[&str]| {
        w.restart();
        (completed(w.run_openai(extra)), w.requests())
    };
    let (first, requests) = run_once(&[]);
    assert_eq!(requests, calls(&first).len());
    assert!(calls(&first).iter().all(|c| c["cached"] == false));

    let (second, requests) = run_once(&[]);
    let cached: Vec<Value> = calls(&second)
        .into_iter()
        .filter(|c| c["cached"] == true)
        .collect();
    assert!(!cached.is_empty(), "the analyst's first turn is identical");
    assert!(cached.iter().all(|c| c["cost_usd"] == 0.0));
    assert_eq!(
        requests,
        calls(&second).len() - cached.len(),
        "a cache hit makes no request"
    );
    assert_eq!(
        second["usage"]["business_analyst"]["cached_calls"].as_u64(),
        Some(
            cached
                .iter()
                .filter(|c| c["role"] == "business_analyst")
                .count() as u64
        )
    );

    let (third, requests) = run_once(&["--no-cache"]);
    assert!(calls(&third).iter().all(|c| c["cached"] == false));
    assert_eq!(requests, calls(&third).len());
}

#[test]
fn llm_configuration_mistakes_are_named() {
    let dir = tempdir();
    let check = |args: &[&str], needle: &str| {
        let out = run(agentry(dir.path()).args(args));
        assert_fails_with(&out, needle);
    };
    check(
        &["run", "--llm", "nope", "x"],
        "unknown LLM provider `nope`: configure it under [llm.providers.nope]",
    );
    check(
        &[
            "run",
            "--llm",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "x",
        ],
        "LLM provider `openai` has no model: pass --model NAME",
    );
    check(
        &["run", "--llm", "openai", "--model", "gpt-4o", "x"],
        "needs an API key: set OPENAI_API_KEY",
    );
    check(
        &["run", "--replay", "missing.jsonl", "x"],
        "cannot read cassette",
    );
    check(
        &["run", "--llm", "demo", "--budget-usd=-1", "x"],
        "--budget-usd must be a non-negative number",
    );
    // Nothing was stored by any of these.
    let out = run(agentry(dir.path()).args(["workflows", "list", "--json"]));
    assert_ok(&out);
    assert_eq!(stdout_json(&out), serde_json::json!([]));
}

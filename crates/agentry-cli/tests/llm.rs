//! The `agentry` binary against real HTTP: OpenAI-compatible and Anthropic
//! contract servers on loopback (vendor wire formats, validated like the
//! vendors do), answered by the bundled demo session, so whole workflows run
//! over the wire and their artifacts can be compared with the demo's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentry_llm_contract::{ContractServer, Vendor};
use agentry_llm_scripted::ScriptedProvider;
use serde_json::Value;
use support::*;

/// A contract server answered by the demo session, with the runtime that
/// serves it (kept alive by the caller).
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

fn requirement(dir: &Path) -> PathBuf {
    write(
        dir,
        "requirement.md",
        agentry_agents::demo::DEMO_REQUIREMENT,
    )
}

/// The demo's artifacts, the reference every run over the wire must match.
fn demo_fingerprint() -> Value {
    let dir = tempdir();
    let out = run(agentry(dir.path()).args(["demo", "--json"]));
    assert_ok(&out);
    artifact_fingerprint(&stdout_json(&out))
}

fn show(dir: &Path, id: &str) -> Value {
    let out = run(agentry(dir).args(["workflows", "show", id, "--json"]));
    assert_ok(&out);
    stdout_json(&out)
}

#[test]
fn a_whole_workflow_runs_on_an_openai_compatible_server_from_flags_alone() {
    let key = "sk-test-openai-7f3a";
    let s = Server::start(Vendor::OpenAi, key);
    let dir = tempdir();
    let req = requirement(dir.path());
    let out = run(agentry(dir.path())
        .env("OPENAI_API_KEY", key)
        .args(["run", "--llm", "openai", "--model", "gpt-4o-mini", "--json"])
        .args(["--base-url", &s.server.base_url(), "--file"])
        .arg(&req));
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed", "{summary:#}");
    assert_eq!(artifact_fingerprint(&summary), demo_fingerprint());

    // Every call went over the wire, and the ledger says who answered.
    let calls = summary["llm_calls"].as_array().unwrap();
    assert_eq!(calls.len(), s.server.request_count(), "{calls:#?}");
    assert!(calls
        .iter()
        .all(|c| c["provider"] == "openai" && c["model"] == "gpt-4o-mini"));
    for request in s.server.requests() {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(key), "the key leaked into the output");

    let shown = show(dir.path(), summary["id"].as_str().unwrap());
    let usage = shown["artifacts"]["usage"].as_object().unwrap();
    assert_eq!(usage.len(), 5, "{usage:#?}");
    assert!(usage
        .values()
        .all(|u| u["provider"] == "openai" && u["prompt_tokens"].as_u64().unwrap() > 0));
    // The stored options hold the provider, never the key.
    let db = std::fs::read(dir.path().join("agentry.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(key));
}

#[test]
fn a_whole_workflow_runs_on_an_anthropic_server_from_flags_alone_and_llm_check_reports_it() {
    let key = "anthropic-flags-key-5d1e";
    let s = Server::start(Vendor::Anthropic, key);
    let dir = tempdir();
    let req = requirement(dir.path());
    let flags = [
        "--llm",
        "anthropic",
        "--model",
        "claude-test",
        "--base-url",
        &s.server.base_url(),
    ];
    let out = run(agentry(dir.path())
        .env("ANTHROPIC_API_KEY", key)
        .args(["run", "--json"])
        .args(flags)
        .arg("--file")
        .arg(&req));
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed", "{summary:#}");
    assert_eq!(artifact_fingerprint(&summary), demo_fingerprint());
    assert!(summary["llm_calls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["provider"] == "anthropic" && c["model"] == "claude-test"));

    let out = run(agentry(dir.path())
        .env("ANTHROPIC_API_KEY", key)
        .args(["llm", "check"])
        .args(flags));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("anthropic") && text.contains(" ok ") && text.contains("claude-test"),
        "{text}"
    );
    // A wrong key is reported, without the key.
    let out = run(agentry(dir.path())
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
    let key = "anthropic-test-key-91c2";
    let s = Server::start(Vendor::Anthropic, key);
    let dir = tempdir();
    let req = requirement(dir.path());
    let config = write(
        dir.path(),
        "agentry.toml",
        &format!(
            r#"
[llm]
provider = "claude"
[llm.providers.claude]
kind = "anthropic"
base_url = "{}"
model = "claude-sonnet-test"
api_key_env = "TEST_CLAUDE_KEY"
stream = true
[llm.roles]
technical_writer = {{ model = "claude-haiku-test" }}
[llm.prices]
"claude-sonnet-test" = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}
"claude-haiku-test" = {{ input_per_mtok = 1.0, output_per_mtok = 5.0 }}
"#,
            s.server.base_url()
        ),
    );
    let out = run(agentry(dir.path())
        .env("TEST_CLAUDE_KEY", key)
        .arg("--config")
        .arg(&config)
        .args(["run", "--json", "--file"])
        .arg(&req));
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed", "{summary:#}");
    assert_eq!(artifact_fingerprint(&summary), demo_fingerprint());

    let requests = s.server.requests();
    assert!(requests
        .iter()
        .all(|r| r.header("anthropic-version").is_some()
            && r.header("x-api-key") == Some(key)
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

    let out = run(agentry(dir.path()).args(["workflows", "show", summary["id"].as_str().unwrap()]));
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("LLM calls:") && text.contains("claude-haiku-test"),
        "{text}"
    );
}

#[test]
fn a_recorded_run_replays_offline_to_the_same_artifacts() {
    let key = "sk-test-record";
    let s = Server::start(Vendor::OpenAi, key);
    let dir = tempdir();
    let req = requirement(dir.path());
    let cassette = dir.path().join("session.jsonl");
    let out = run(agentry(&dir.path().join("recorded"))
        .env("OPENAI_API_KEY", key)
        .args(["run", "--llm", "openai", "--model", "gpt-4o-mini", "--json"])
        .args(["--base-url", &s.server.base_url(), "--record"])
        .arg(&cassette)
        .arg("--file")
        .arg(&req));
    assert_ok(&out);
    let recorded = stdout_json(&out);
    let over_the_wire = s.server.request_count();
    let lines = std::fs::read_to_string(&cassette).unwrap().lines().count();
    assert_eq!(lines, over_the_wire, "one cassette line per call");

    drop(s);
    let out = run(agentry(&dir.path().join("replayed"))
        .args(["run", "--json", "--replay"])
        .arg(&cassette)
        .arg("--file")
        .arg(&req));
    assert_ok(&out);
    let replayed = stdout_json(&out);
    assert_eq!(replayed["status"], "completed", "{replayed:#}");
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
    let key = "sk-test-budget";
    let s = Server::start(Vendor::OpenAi, key);
    let dir = tempdir();
    let req = requirement(dir.path());
    let config = write(
        dir.path(),
        "agentry.toml",
        "[llm.prices]\n\"gpt-4o-mini\" = { input_per_mtok = 10.0, output_per_mtok = 30.0 }\n",
    );
    let agentry_with_key = || {
        let mut cmd = agentry(dir.path());
        cmd.env("OPENAI_API_KEY", key).arg("--config").arg(&config);
        cmd
    };
    let out = run(agentry_with_key()
        .args(["run", "--llm", "openai", "--model", "gpt-4o-mini", "--json"])
        .args(["--base-url", &s.server.base_url(), "--budget-usd", "0.05"])
        .arg("--file")
        .arg(&req));
    assert!(!out.status.success(), "the budget must stop the run");
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "failed");
    let error = &summary["errors"][0];
    assert_eq!(error["class"], "budget_exceeded", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("workflow budget of $0.0500 would be exceeded")
            && message.contains("spent $"),
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
    let calls_before = s.server.request_count();

    let id = summary["id"].as_str().unwrap();
    let out = run(agentry_with_key().args(["resume", id, "--budget-usd", "10", "--json"]));
    assert_ok(&out);
    let resumed = stdout_json(&out);
    assert_eq!(resumed["status"], "completed", "{resumed:#}");
    assert!(s.server.request_count() > calls_before);
    assert_eq!(artifact_fingerprint(&resumed), demo_fingerprint());
}

#[test]
fn a_dead_primary_falls_back_to_the_second_provider_and_llm_check_reports_both() {
    let key = "sk-test-fallback";
    let s = Server::start(Vendor::OpenAi, key);
    let dir = tempdir();
    let req = requirement(dir.path());
    // Nothing listens on port 9 of loopback: connections are refused.
    let config = write(
        dir.path(),
        "agentry.toml",
        &format!(
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
base_url = "{}"
model = "small-model"
api_key_env = "SECONDARY_KEY"
"#,
            s.server.base_url()
        ),
    );
    let out = run(agentry(dir.path())
        .env("SECONDARY_KEY", key)
        .arg("--config")
        .arg(&config)
        .args(["run", "--json", "--file"])
        .arg(&req));
    assert_ok(&out);
    let summary = stdout_json(&out);
    assert_eq!(summary["status"], "completed", "{summary:#}");
    let calls = summary["llm_calls"].as_array().unwrap();
    assert!(calls
        .iter()
        .all(|c| c["provider"] == "secondary" && c["model"] == "small-model"));

    let out = run(agentry(dir.path())
        .env("SECONDARY_KEY", key)
        .arg("--config")
        .arg(&config)
        .args(["llm", "check", "--json"]));
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
    let key = "sk-test-cache";
    let dir = tempdir();
    let req = requirement(dir.path());
    // A fresh server per run: each infers agent visits from what it saw.
    let run_once = |extra: &[&str]| {
        let s = Server::start(Vendor::OpenAi, key);
        let out = run(agentry(dir.path())
            .env("OPENAI_API_KEY", key)
            .args(["run", "--llm", "openai", "--model", "gpt-4o-mini", "--json"])
            .args(["--base-url", &s.server.base_url()])
            .args(extra)
            .arg("--file")
            .arg(&req));
        assert_ok(&out);
        let summary = stdout_json(&out);
        assert_eq!(summary["status"], "completed", "{summary:#}");
        (summary, s.server.request_count())
    };
    let calls = |s: &Value| s["llm_calls"].as_array().unwrap().clone();
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

//! End-to-end tests of the `agentry` binary on the embedded defaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn demo_json_reports_every_artifact_and_they_exist() {
    let dir = tempdir();
    let out = run(agentry(dir.path()).args(["demo", "--json"]));
    assert_ok(&out);
    let s = stdout_json(&out);

    assert_eq!(s["status"], "completed", "{s:#}");
    assert!(s["id"].as_str().is_some());

    let tickets = s["tickets"].as_array().unwrap();
    let count = |kind: &str| tickets.iter().filter(|t| t["kind"] == kind).count();
    assert!(count("epic") >= 1 && count("story") >= 3, "{tickets:#?}");
    for t in tickets {
        assert!(t["key"].as_str().unwrap().contains('-'), "{t}");
        assert!(!t["title"].as_str().unwrap().is_empty());
    }

    let pages = s["pages"].as_array().unwrap();
    assert!(pages.len() >= 3, "{pages:#?}");
    let roots: Vec<&Value> = pages.iter().filter(|p| p["parent_id"].is_null()).collect();
    assert_eq!(roots.len(), 1, "exactly one root page: {pages:#?}");
    let ids: Vec<&str> = pages.iter().map(|p| p["id"].as_str().unwrap()).collect();
    for p in pages.iter().filter(|p| !p["parent_id"].is_null()) {
        assert!(ids.contains(&p["parent_id"].as_str().unwrap()), "{p}");
    }

    let repo = &s["repository"];
    let commits = repo["commits"].as_array().unwrap();
    assert!(commits.len() >= 2, "{repo:#}");
    let mr = &repo["merge_request"];
    assert!(
        mr["id"].as_u64().is_some() && mr["state"].as_str().is_some(),
        "{mr}"
    );
    // The commits exist for real.
    let log = git_log(
        repo["path"].as_str().unwrap(),
        repo["branch"].as_str().unwrap(),
    );
    for c in commits {
        assert!(
            log.contains(&c["title"].as_str().unwrap().to_string()),
            "{log:?}"
        );
    }

    let runs = s["test_runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{runs:#?}");
    assert_eq!(runs[0]["passed"], false);
    assert_ne!(runs[0]["exit_code"], 0);
    assert_eq!(runs.last().unwrap()["passed"], true);
    assert_eq!(runs.last().unwrap()["exit_code"], 0);
    let rounds: Vec<u64> = runs.iter().map(|r| r["round"].as_u64().unwrap()).collect();
    assert!(rounds.windows(2).all(|w| w[0] < w[1]), "{rounds:?}");

    let usage = s["usage"].as_object().unwrap();
    for role in [
        "business_analyst",
        "developer",
        "qa",
        "technical_writer",
        "devops",
    ] {
        assert!(
            usage[role]["prompt_tokens"].as_u64().unwrap() > 0,
            "{usage:#?}"
        );
    }

    // The wiki pages exist as Markdown files under the data dir.
    let wiki_files: Vec<_> = walk(&dir.path().join("wiki"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    assert!(wiki_files.len() >= pages.len(), "{wiki_files:?}");

    // `workflows show` gives the seed's WorkflowState fields.
    let id = s["id"].as_str().unwrap();
    let out = run(agentry(dir.path()).args(["workflows", "show", id, "--json"]));
    assert_ok(&out);
    let state = stdout_json(&out);
    for field in [
        "request_id",
        "requirements",
        "current_step",
        "agent_outputs",
        "shared_context",
        "jira_tickets",
        "confluence_pages",
        "gitlab_repos",
        "status",
        "errors",
    ] {
        assert!(state.get(field).is_some(), "missing {field}: {state:#}");
    }
    assert_eq!(state["status"], "completed");

    // History lists every step, and the state at an early step is earlier.
    let out = run(agentry(dir.path()).args(["workflows", "history", id, "--json"]));
    assert_ok(&out);
    let history = stdout_json(&out);
    let nodes: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["node"].as_str())
        .collect();
    assert_eq!(
        nodes.iter().filter(|n| **n == "developer").count(),
        2,
        "{nodes:?}"
    );
    let out = run(agentry(dir.path()).args(["workflows", "history", id, "--step", "0"]));
    assert_ok(&out);
    let early = stdout_json(&out);
    assert!(early["confluence_pages"].as_array().unwrap().is_empty());

    let out = run(agentry(dir.path()).args(["workflows", "list", "--json"]));
    assert_ok(&out);
    assert_eq!(stdout_json(&out).as_array().unwrap().len(), 1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Kill points: a stderr line to wait for, then SIGKILL at once.
const KILL_POINTS: &[&str] = &[
    "business: LLM turn",         // mid business analyst, before any ticket
    "developer: tool write_file", // mid developer round 1, during tool calls
    "qa: running tests",          // code committed and MR open, tests running
    "step 3 developer: started",  // between QA's commit and the fix round
    "devops: LLM turn",           // during the fan-out
];

#[test]
fn killed_runs_resume_to_exactly_the_artifacts_of_an_uninterrupted_run() {
    let base_dir = tempdir();
    let out = run(agentry(base_dir.path()).args(["demo", "--json"]));
    assert_ok(&out);
    let baseline = artifact_fingerprint(&stdout_json(&out));

    for point in KILL_POINTS {
        let dir = tempdir();
        let mut cmd = agentry(dir.path());
        cmd.args(["demo", "--llm-latency-ms", "150"]);
        let mut running = Running::spawn(cmd);
        let id = running.workflow_id();
        running.wait_for(point, Duration::from_secs(120));
        running.kill();

        let out = run(agentry(dir.path()).args(["resume", &id, "--json"]));
        assert_ok(&out);
        let resumed = stdout_json(&out);
        assert_eq!(resumed["status"], "completed", "kill point `{point}`");
        assert_eq!(
            artifact_fingerprint(&resumed),
            baseline,
            "kill point `{point}`: resumed artifacts differ from an uninterrupted run"
        );
        // No duplicate commit in git itself either.
        let repo = &resumed["repository"];
        let log = git_log(
            repo["path"].as_str().unwrap(),
            repo["branch"].as_str().unwrap(),
        );
        let mut dedup = log.clone();
        dedup.dedup();
        assert_eq!(
            log, dedup,
            "kill point `{point}`: duplicate commits {log:?}"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    let dir = tempdir();
    let d = dir.path();

    let out = run(agentry(d).args(["run", "   "]));
    assert_fails_with(&out, "requirement is empty");

    let out = run(agentry(d).args(["run", "--file", "/nonexistent/req.md"]));
    assert_fails_with(&out, "cannot read requirement file /nonexistent/req.md");

    let bad_config = write(d, "bad.toml", "[sandbox\nwall_time_s = 1\n");
    let out = run(agentry(d)
        .arg("--config")
        .arg(&bad_config)
        .args(["workflows", "list"]));
    assert_fails_with(&out, "malformed config file");

    let out = run(agentry(d).args(["workflows", "show", "0191c5a0-0000-7000-8000-000000000000"]));
    assert_fails_with(&out, "not found");
    let out = run(agentry(d).args(["resume", "not-a-uuid"]));
    assert_fails_with(&out, "`not-a-uuid` is not a workflow id");

    let check_workflow = |name: &str, text: &str, needle: &str| {
        let file = write(d, name, text);
        let out = run(agentry(d)
            .args(["run", "build a thing", "--llm", "demo", "--workflow"])
            .arg(&file));
        assert_fails_with(&out, needle);
    };
    check_workflow(
        "unknown.toml",
        &agentry_default_workflow().replace("to = [\"qa\"]", "to = [\"qaa\"]"),
        "qaa",
    );
    check_workflow(
        "unreachable.toml",
        &format!(
            "{}\n[nodes.reviewer]\nagent = \"qa\"\n",
            agentry_default_workflow()
        ),
        "reviewer",
    );
    check_workflow(
        "unbounded.toml",
        &agentry_default_workflow()
            .replace("max_visits = 3\n", "")
            .replace("max_visits = 6\n", ""),
        "cycle",
    );
}

/// A zero-length `agentry.db` was silently treated as a new store. Every
/// command that opens the data directory now refuses it, naming the file
/// and what to do, and writes nothing to it.
#[test]
fn an_empty_store_file_is_refused_by_every_command_and_left_as_it_was() {
    let dir = tempdir();
    let db = dir.path().join("agentry.db");
    std::fs::write(&db, b"").unwrap();
    for args in [
        &["workflows", "list"][..],
        &["run", "build a thing", "--llm", "demo"][..],
    ] {
        let out = run(agentry(dir.path()).args(args));
        let shown = dir.path().canonicalize().unwrap().join("agentry.db");
        assert_fails_with(&out, &format!("{} is empty", shown.display()));
        assert_fails_with(&out, "move it away to start a new, empty store");
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "{args:?}");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["agentry.db"], "nothing made beside it");

    // Where nothing is, a new store is made as before.
    let fresh = tempdir();
    assert_ok(&run(agentry(fresh.path()).args(["workflows", "list"])));
    assert!(
        std::fs::metadata(fresh.path().join("agentry.db"))
            .unwrap()
            .len()
            > 0
    );
}

fn agentry_default_workflow() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agentry-engine/workflows/sdlc.toml"
    ))
    .unwrap()
}

#[test]
fn approval_gate_then_approve_completes_and_reject_records_the_reason() {
    let dir = tempdir();
    let d = dir.path();
    let gated = write(
        d,
        "gated.toml",
        &agentry_default_workflow()
            .replace("approval_before = []", "approval_before = [\"developer\"]"),
    );

    // Approve path.
    let out = run(agentry(d)
        .args(["demo", "--json", "--workflow"])
        .arg(&gated));
    assert_ok(&out);
    let s = stdout_json(&out);
    assert_eq!(s["status"], "awaiting_approval", "{s:#}");
    assert!(
        s["repository"].is_null()
            || s["repository"]["commits"]
                .as_array()
                .is_none_or(|c| c.len() <= 1)
    );
    let id = s["id"].as_str().unwrap().to_string();
    let out = run(agentry(d).args(["approve", &id, "--json"]));
    assert_ok(&out);
    assert_eq!(stdout_json(&out)["status"], "completed");

    // Reject path.
    let out = run(agentry(d)
        .args(["demo", "--json", "--workflow"])
        .arg(&gated));
    assert_ok(&out);
    let id = stdout_json(&out)["id"].as_str().unwrap().to_string();
    let out = run(agentry(d).args(["reject", &id, "--reason", "scope too large", "--json"]));
    assert_ok(&out);
    assert_eq!(stdout_json(&out)["status"], "rejected");
    let out = run(agentry(d).args(["workflows", "show", &id, "--json"]));
    let state = stdout_json(&out);
    assert!(
        state["errors"].to_string().contains("scope too large"),
        "{state:#}"
    );

    // Cancel a waiting workflow; approving it afterwards is refused clearly.
    let out = run(agentry(d)
        .args(["demo", "--json", "--workflow"])
        .arg(&gated));
    let id = stdout_json(&out)["id"].as_str().unwrap().to_string();
    let out = run(agentry(d).args(["cancel", &id, "--json"]));
    assert_ok(&out);
    assert_eq!(stdout_json(&out)["status"], "cancelled");
    let out = run(agentry(d).args(["approve", &id]));
    assert_fails_with(&out, "cancelled");
}

#[test]
fn cancel_from_another_process_stops_a_running_workflow() {
    let dir = tempdir();
    let mut cmd = agentry(dir.path());
    cmd.args(["demo", "--llm-latency-ms", "300"]);
    let mut running = Running::spawn(cmd);
    let id = running.workflow_id();
    running.wait_for("step 1 developer: started", Duration::from_secs(60));

    let out =
        run(agentry(dir.path()).args(["cancel", &id, "--reason", "changed my mind", "--json"]));
    assert_ok(&out);
    assert_eq!(stdout_json(&out)["status"], "cancelled");

    // The running process notices, stops, and reports the cancellation.
    running.wait_for("workflow cancelled", Duration::from_secs(30));
    let status = running.child.wait().unwrap();
    assert!(!status.success(), "a cancelled run exits non-zero");

    // Nothing ran past the cancellation point: no QA run, no docs.
    let out = run(agentry(dir.path()).args(["workflows", "show", &id, "--json"]));
    let state = stdout_json(&out);
    assert_eq!(state["status"], "cancelled");
    assert!(
        state["artifacts"]["test_runs"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{state:#}"
    );
    assert!(state["confluence_pages"].as_array().unwrap().is_empty());
}

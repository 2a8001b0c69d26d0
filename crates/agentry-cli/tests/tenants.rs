//! Tenant-scoped artifacts end to end: the real binary, `agentry serve
//! --llm demo` on loopback, two tenants and the command line using the same
//! repository and project key on one data directory.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::*;

/// A running `agentry serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data: &Path, args: &[&str]) -> Server {
        let mut cmd = agentry(data);
        cmd.args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn agentry serve");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read the listening line");
        let line: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("serve did not print its address ({e}): {first:?}"));
        Server {
            child,
            url: line["url"].as_str().expect("url").to_string(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn create_key(data: &Path, tenant: &str) -> String {
    let out = run(agentry(data).args([
        "--json", "keys", "create", "--tenant", tenant, "--role", "operator",
    ]));
    assert_ok(&out);
    stdout_json(&out)["key"].as_str().unwrap().to_string()
}

async fn submit(server: &Server, key: &str, body: &Value) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/workflows", server.url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status.as_u16(), 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn wait_done(server: &Server, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/v1/workflows/{id}", server.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            body["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} still {}",
            body["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `agentry workflows show ID --json`: the artifacts as the CLI reads them
/// back.
fn artifacts(data: &Path, id: &str) -> Value {
    let out = run(agentry(data).args(["--json", "workflows", "show", id]));
    assert_ok(&out);
    stdout_json(&out)["artifacts"].clone()
}

fn repo_path(artifacts: &Value) -> PathBuf {
    PathBuf::from(artifacts["repository"]["path"].as_str().unwrap())
}

/// Regression: a second tenant submitting the same `repository` and
/// `project_key` committed onto the first tenant's branch, updated its
/// merge request and listed its wiki pages and tracker project as its own.
/// Now the command line, a tenant `acme` and a tenant named `cli` each run
/// the demo with the same names, the tenants at the same time, and each
/// ends with exactly the artifacts of a lone run, in its own place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_the_same_repository_and_project_get_disjoint_artifacts() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let out = run(agentry(&data).args(["demo", "--json"]));
    assert_ok(&out);
    let lone = stdout_json(&out);
    let cli_id = lone["id"].as_str().unwrap().to_string();
    let data = data.canonicalize().unwrap();
    let cli_repo = data.join("repos/url-shortener.git");
    assert_eq!(
        repo_path(&lone),
        cli_repo,
        "the command line's layout moved"
    );
    let cli_log = git_log(cli_repo.to_str().unwrap(), "agentry/url-shortener");

    let acme = create_key(&data, "acme");
    let tenant_cli = create_key(&data, "cli");
    let server = Server::start(&data, &["--llm", "demo"]);
    let body = json!({"requirement": "A URL shortener with tests",
        "repository": "url-shortener", "project_key": "URL"});
    let acme_id = submit(&server, &acme, &body).await;
    let tenant_cli_id = submit(&server, &tenant_cli, &body).await;
    for (key, id) in [(&acme, &acme_id), (&tenant_cli, &tenant_cli_id)] {
        let detail = wait_done(&server, key, id).await;
        assert_eq!(detail["status"], "completed", "{detail}");
    }
    drop(server);

    let mut paths = vec![cli_repo.clone()];
    for (tenant, id) in [("acme", &acme_id), ("cli", &tenant_cli_id)] {
        let made = artifacts(&data, id);
        assert_eq!(made["owner"], format!("tenant:{tenant}"));
        assert_eq!(
            artifact_fingerprint(&made),
            artifact_fingerprint(&lone),
            "{tenant}: not the artifacts of a lone run"
        );
        let path = repo_path(&made);
        assert_eq!(
            path,
            data.join(format!("tenants/{tenant}/repos/url-shortener.git"))
        );
        let log = git_log(path.to_str().unwrap(), "agentry/url-shortener");
        assert_eq!(log.len(), cli_log.len(), "{tenant}: {log:?}");
        assert!(
            data.join(format!("tenants/{tenant}/wiki/URL")).is_dir(),
            "{tenant}: no wiki mirror of its own"
        );
        paths.push(path);
    }
    let distinct: std::collections::BTreeSet<&PathBuf> = paths.iter().collect();
    assert_eq!(distinct.len(), 3, "{paths:?}");

    // The command line's artifacts are as its run left them, and still its.
    assert_eq!(
        git_log(cli_repo.to_str().unwrap(), "agentry/url-shortener"),
        cli_log
    );
    let cli_now = artifacts(&data, &cli_id);
    assert_eq!(cli_now["owner"], "cli");
    assert_eq!(artifact_fingerprint(&cli_now), artifact_fingerprint(&lone));
    assert_eq!(repo_path(&cli_now), cli_repo);
}

//! The `CodeHost` behaviours.

use std::sync::Arc;

use agentry_core::{
    CodeHost, CommitInfo, CommitRequest, FileChange, MergeRequestState, MergeRequestUpdate,
    NewMergeRequest, RepoPath, TestResultLink, MAX_COMMIT_BYTES, MAX_FILE_BYTES,
};

use crate::{expect_err, fresh_key, ok, unique_repo_name, Expected};

/// Runs every code host behaviour in turn.
pub async fn code_host_suite(host: Arc<dyn CodeHost>) {
    repositories_are_created_once(host.clone()).await;
    several_files_land_in_one_commit(host.clone()).await;
    commits_are_idempotent_by_key(host.clone()).await;
    files_can_be_deleted(host.clone()).await;
    commit_rejects_bad_input(host.clone()).await;
    files_over_the_size_limits_are_refused(host.clone()).await;
    branches_are_created_from_others(host.clone()).await;
    merge_request_lifecycle(host.clone()).await;
    conflicting_merge_keeps_the_request_open(host.clone()).await;
    closed_merge_requests_do_not_merge(host.clone()).await;
    unknown_code_things_are_not_found(host).await;
}

#[track_caller]
fn path(raw: &str) -> RepoPath {
    match RepoPath::parse(raw) {
        Ok(p) => p,
        Err(error) => panic!("test path `{raw}`: {error}"),
    }
}

fn write(p: &str, content: &str) -> FileChange {
    FileChange {
        path: path(p),
        content: Some(content.to_string()),
    }
}

fn delete(p: &str) -> FileChange {
    FileChange {
        path: path(p),
        content: None,
    }
}

fn commit(repo: &str, branch: &str, message: &str, files: Vec<FileChange>) -> CommitRequest {
    CommitRequest {
        repository: repo.to_string(),
        branch: branch.to_string(),
        files,
        message: message.to_string(),
        author: "Agentry Developer".to_string(),
        idempotency_key: fresh_key(message.lines().next().unwrap_or("commit")),
    }
}

async fn repo(host: &Arc<dyn CodeHost>) -> String {
    let name = unique_repo_name();
    ok(
        host.ensure_repository(&name, "Conformance repository")
            .await,
        "ensure_repository",
    );
    name
}

async fn commit_ok(host: &Arc<dyn CodeHost>, request: CommitRequest) -> CommitInfo {
    ok(host.commit_files(request).await, "commit_files")
}

async fn read(host: &Arc<dyn CodeHost>, repo: &str, branch: &str, p: &str) -> Option<String> {
    ok(host.read_file(repo, branch, &path(p)).await, "read_file")
}

fn new_mr(repo: &str, source: &str, target: &str) -> NewMergeRequest {
    NewMergeRequest {
        repository: repo.to_string(),
        source_branch: source.to_string(),
        target_branch: target.to_string(),
        title: format!("Merge {source}"),
        description: "What and why.".to_string(),
        idempotency_key: fresh_key("mr"),
    }
}

fn to_state(state: MergeRequestState) -> MergeRequestUpdate {
    MergeRequestUpdate {
        state: Some(state),
        ..MergeRequestUpdate::default()
    }
}

/// Bad names are invalid input; a repository starts with one commit on
/// `main` holding a README with the description; ensuring twice is a no-op.
pub async fn repositories_are_created_once(host: Arc<dyn CodeHost>) {
    for bad in ["Bad Name", "UPPER", "a/b", ""] {
        expect_err(
            host.ensure_repository(bad, "x").await,
            Expected::InvalidInput,
            &[bad],
            "ensure_repository with a bad name",
        );
    }
    let name = unique_repo_name();
    let created = ok(
        host.ensure_repository(&name, "A URL shortener").await,
        "ensure_repository",
    );
    assert_eq!(created.name, name);
    assert_eq!(created.default_branch, "main");
    assert!(!created.clone_url.is_empty());
    assert_eq!(
        ok(
            host.ensure_repository(&name, "A URL shortener").await,
            "again"
        ),
        created
    );
    assert_eq!(
        ok(host.get_repository(&name).await, "get_repository"),
        created
    );
    assert_eq!(
        ok(host.list_files(&name, "main").await, "list_files"),
        vec!["README.md"]
    );
    assert_eq!(ok(host.commits(&name, "main").await, "commits").len(), 1);
    let readme = read(&host, &name, "main", "README.md")
        .await
        .unwrap_or_default();
    assert!(readme.contains("A URL shortener"), "{readme}");
}

/// Several files (new and changed) land in ONE commit on a new branch,
/// visible through read_file, list_files and commits; main is untouched.
pub async fn several_files_land_in_one_commit(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    let branch = "feature/shortener";
    let info = commit_ok(
        &host,
        commit(
            &r,
            branch,
            "Add the shortener\n\nWith tests.",
            vec![
                write("src/app.py", "print('hi')\n"),
                write("tests/test_app.py", "def test(): pass\n"),
                write("README.md", "# Shortener\n"),
            ],
        ),
    )
    .await;
    assert_eq!(info.title, "Add the shortener");
    assert_eq!(info.author, "Agentry Developer");
    assert_eq!(
        info.files,
        vec!["README.md", "src/app.py", "tests/test_app.py"]
    );
    assert_eq!(info.sha.len(), 40, "{}", info.sha);
    assert_eq!(
        read(&host, &r, branch, "src/app.py").await.as_deref(),
        Some("print('hi')\n")
    );
    assert_eq!(
        read(&host, &r, branch, "README.md").await.as_deref(),
        Some("# Shortener\n")
    );
    assert_eq!(
        ok(host.list_files(&r, branch).await, "list_files"),
        vec!["README.md", "src/app.py", "tests/test_app.py"]
    );
    let commits = ok(host.commits(&r, branch).await, "commits");
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0], info);
    assert_eq!(read(&host, &r, "main", "src/app.py").await, None);
    assert_eq!(
        ok(host.commits(&r, "main").await, "commits of main").len(),
        1
    );
    let second = commit_ok(
        &host,
        commit(&r, branch, "Tweak", vec![write("src/app.py", "v2\n")]),
    )
    .await;
    let commits = ok(host.commits(&r, branch).await, "commits");
    assert_eq!(
        commits.iter().map(|c| c.sha.as_str()).collect::<Vec<_>>()[..2],
        [second.sha.as_str(), info.sha.as_str()],
        "newest first"
    );
}

/// The same idempotency key returns the same commit, even with other
/// content, and makes no second commit.
pub async fn commits_are_idempotent_by_key(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    let call = commit(
        &r,
        "main",
        "Add config",
        vec![write("config.toml", "a = 1\n")],
    );
    let first = commit_ok(&host, call.clone()).await;
    let replay = CommitRequest {
        files: vec![write("config.toml", "a = 2\n")],
        ..call
    };
    let again = commit_ok(&host, replay).await;
    assert_eq!(again.sha, first.sha);
    assert_eq!(ok(host.commits(&r, "main").await, "commits").len(), 2);
    assert_eq!(
        read(&host, &r, "main", "config.toml").await.as_deref(),
        Some("a = 1\n")
    );
}

/// A change without content deletes the file.
pub async fn files_can_be_deleted(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    commit_ok(
        &host,
        commit(
            &r,
            "main",
            "Two files",
            vec![write("a.txt", "a\n"), write("docs/b.md", "b\n")],
        ),
    )
    .await;
    let gone = commit_ok(&host, commit(&r, "main", "Drop a", vec![delete("a.txt")])).await;
    assert_eq!(gone.files, vec!["a.txt"]);
    assert_eq!(read(&host, &r, "main", "a.txt").await, None);
    assert_eq!(
        read(&host, &r, "main", "docs/b.md").await.as_deref(),
        Some("b\n")
    );
    assert_eq!(
        ok(host.list_files(&r, "main").await, "list_files"),
        vec!["README.md", "docs/b.md"]
    );
}

/// An empty change set is invalid input; an unknown repository is not found.
pub async fn commit_rejects_bad_input(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    expect_err(
        host.commit_files(commit(&r, "main", "Nothing", vec![]))
            .await,
        Expected::InvalidInput,
        &[],
        "commit with no files",
    );
    let unknown = unique_repo_name();
    expect_err(
        host.commit_files(commit(&unknown, "main", "Lost", vec![write("a", "a")]))
            .await,
        Expected::NotFound,
        &[&unknown],
        "commit to an unknown repository",
    );
    assert_eq!(ok(host.commits(&r, "main").await, "commits").len(), 1);
}

/// Every code host refuses a file over [`MAX_FILE_BYTES`] and a commit
/// over [`MAX_COMMIT_BYTES`] (an agent once committed a 20 MiB file),
/// naming the file and the limit, and commits nothing of the request; a
/// file of exactly the limit lands whole.
pub async fn files_over_the_size_limits_are_refused(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    let big = "x".repeat(MAX_FILE_BYTES + 1);
    expect_err(
        host.commit_files(commit(
            &r,
            "main",
            "Too big a file",
            vec![write("small.txt", "fine"), write("data/dump.json", &big)],
        ))
        .await,
        Expected::InvalidInput,
        &["`data/dump.json`", "1 MiB"],
        "a file over the limit",
    );
    let files = (0..=MAX_COMMIT_BYTES / MAX_FILE_BYTES)
        .map(|i| write(&format!("part-{i}.txt"), &big[..MAX_FILE_BYTES]))
        .collect();
    expect_err(
        host.commit_files(commit(&r, "main", "Too big a commit", files))
            .await,
        Expected::InvalidInput,
        &["in all", "4 MiB"],
        "a commit over the limit",
    );
    assert_eq!(
        ok(host.commits(&r, "main").await, "commits").len(),
        1,
        "nothing of a refused commit lands"
    );
    assert_eq!(read(&host, &r, "main", "small.txt").await, None);
    commit_ok(
        &host,
        commit(
            &r,
            "main",
            "Just fits",
            vec![write("fits.txt", &big[..MAX_FILE_BYTES])],
        ),
    )
    .await;
    assert_eq!(
        read(&host, &r, "main", "fits.txt").await.map(|c| c.len()),
        Some(MAX_FILE_BYTES)
    );
}

/// ensure_branch starts a branch from another; again is a no-op; the
/// branches then move independently; an unknown start is not found.
pub async fn branches_are_created_from_others(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    ok(
        host.ensure_branch(&r, "develop", "main").await,
        "ensure_branch",
    );
    ok(
        host.ensure_branch(&r, "develop", "main").await,
        "ensure_branch again",
    );
    assert!(read(&host, &r, "develop", "README.md").await.is_some());
    commit_ok(
        &host,
        commit(&r, "develop", "Dev only", vec![write("dev.txt", "d\n")]),
    )
    .await;
    ok(
        host.ensure_branch(&r, "develop", "main").await,
        "ensure_branch on a moved branch",
    );
    assert_eq!(
        read(&host, &r, "develop", "dev.txt").await.as_deref(),
        Some("d\n")
    );
    assert_eq!(read(&host, &r, "main", "dev.txt").await, None);
    expect_err(
        host.ensure_branch(&r, "other", "no-such-branch").await,
        Expected::NotFound,
        &["no-such-branch"],
        "ensure_branch from an unknown branch",
    );
}

/// A merge request opens once (by key, and per open source/target), takes
/// a test result and description, and merging it really merges.
pub async fn merge_request_lifecycle(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    let feature = "feature/login";
    let tip = commit_ok(
        &host,
        commit(&r, feature, "Login", vec![write("login.py", "ok\n")]),
    )
    .await;
    let call = new_mr(&r, feature, "main");
    let mr = ok(
        host.create_merge_request(call.clone()).await,
        "create_merge_request",
    );
    assert_eq!(mr.id, 1);
    assert_eq!(mr.state, MergeRequestState::Opened);
    assert_eq!(
        (mr.source_branch.as_str(), mr.target_branch.as_str()),
        (feature, "main")
    );
    assert_eq!(mr.title, "Merge feature/login");
    assert_eq!(mr.test_result, None);
    assert_eq!(ok(host.create_merge_request(call).await, "replayed"), mr);
    let same_branches = ok(
        host.create_merge_request(new_mr(&r, feature, "main")).await,
        "another key, same open source and target",
    );
    assert_eq!(same_branches.id, mr.id);
    assert_eq!(ok(host.list_merge_requests(&r).await, "list").len(), 1);

    let result = TestResultLink {
        run_id: uuid::Uuid::new_v4(),
        passed: true,
        commit: Some(tip.sha.clone()),
        summary: "5 passed".to_string(),
    };
    let updated = ok(
        host.update_merge_request(
            &r,
            mr.id,
            MergeRequestUpdate {
                state: None,
                description: Some("Now with tests.".to_string()),
                test_result: Some(result.clone()),
            },
        )
        .await,
        "update_merge_request",
    );
    assert_eq!(updated.test_result.as_ref(), Some(&result));
    assert_eq!(updated.description, "Now with tests.");
    assert_eq!(updated.state, MergeRequestState::Opened);
    assert_eq!(ok(host.get_merge_request(&r, mr.id).await, "get"), updated);

    let merged = ok(
        host.update_merge_request(&r, mr.id, to_state(MergeRequestState::Merged))
            .await,
        "merge",
    );
    assert_eq!(merged.state, MergeRequestState::Merged);
    assert_eq!(
        merged.test_result.as_ref(),
        Some(&result),
        "merging keeps the test result"
    );
    assert_eq!(
        read(&host, &r, "main", "login.py").await.as_deref(),
        Some("ok\n")
    );
    assert_eq!(
        ok(host.get_merge_request(&r, mr.id).await, "get merged").state,
        MergeRequestState::Merged
    );
    expect_err(
        host.update_merge_request(&r, mr.id, to_state(MergeRequestState::Opened))
            .await,
        Expected::Conflict,
        &[],
        "reopening a merged request",
    );
}

/// When source and target changed the same lines, merging is a conflict,
/// the request stays open and the target is unchanged.
pub async fn conflicting_merge_keeps_the_request_open(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    ok(
        host.ensure_branch(&r, "feature/a", "main").await,
        "ensure_branch",
    );
    commit_ok(
        &host,
        commit(
            &r,
            "feature/a",
            "Theirs",
            vec![write("README.md", "feature\n")],
        ),
    )
    .await;
    commit_ok(
        &host,
        commit(&r, "main", "Ours", vec![write("README.md", "main\n")]),
    )
    .await;
    let mr = ok(
        host.create_merge_request(new_mr(&r, "feature/a", "main"))
            .await,
        "create",
    );
    expect_err(
        host.update_merge_request(&r, mr.id, to_state(MergeRequestState::Merged))
            .await,
        Expected::Conflict,
        &[],
        "merging a conflicting request",
    );
    assert_eq!(
        ok(host.get_merge_request(&r, mr.id).await, "get").state,
        MergeRequestState::Opened
    );
    assert_eq!(
        read(&host, &r, "main", "README.md").await.as_deref(),
        Some("main\n")
    );
}

/// A closed request does not merge; closing does not touch the target.
pub async fn closed_merge_requests_do_not_merge(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    commit_ok(
        &host,
        commit(&r, "feature/b", "B", vec![write("b.txt", "b\n")]),
    )
    .await;
    let mr = ok(
        host.create_merge_request(new_mr(&r, "feature/b", "main"))
            .await,
        "create",
    );
    let closed = ok(
        host.update_merge_request(&r, mr.id, to_state(MergeRequestState::Closed))
            .await,
        "close",
    );
    assert_eq!(closed.state, MergeRequestState::Closed);
    expect_err(
        host.update_merge_request(&r, mr.id, to_state(MergeRequestState::Merged))
            .await,
        Expected::Conflict,
        &[],
        "merging a closed request",
    );
    assert_eq!(read(&host, &r, "main", "b.txt").await, None);
    let fresh = ok(
        host.create_merge_request(new_mr(&r, "feature/b", "main"))
            .await,
        "a new request after the closed one",
    );
    assert_eq!(fresh.id, 2);
    assert_eq!(fresh.state, MergeRequestState::Opened);
}

/// Unknown repositories, branches and merge requests are not found; an
/// absent file reads as `None`.
pub async fn unknown_code_things_are_not_found(host: Arc<dyn CodeHost>) {
    let r = repo(&host).await;
    let unknown = unique_repo_name();
    expect_err(
        host.get_repository(&unknown).await,
        Expected::NotFound,
        &[&unknown],
        "get_repository",
    );
    expect_err(
        host.read_file(&unknown, "main", &path("README.md")).await,
        Expected::NotFound,
        &[&unknown],
        "read_file in an unknown repository",
    );
    expect_err(
        host.read_file(&r, "nope", &path("README.md")).await,
        Expected::NotFound,
        &["nope"],
        "read_file on an unknown branch",
    );
    expect_err(
        host.list_files(&r, "nope").await,
        Expected::NotFound,
        &["nope"],
        "list_files",
    );
    expect_err(
        host.commits(&r, "nope").await,
        Expected::NotFound,
        &["nope"],
        "commits",
    );
    assert_eq!(read(&host, &r, "main", "no/such/file.txt").await, None);
    expect_err(
        host.get_merge_request(&r, 999).await,
        Expected::NotFound,
        &["999"],
        "get_merge_request",
    );
    expect_err(
        host.update_merge_request(&r, 999, MergeRequestUpdate::default())
            .await,
        Expected::NotFound,
        &["999"],
        "update_merge_request",
    );
    expect_err(
        host.list_merge_requests(&unknown).await,
        Expected::NotFound,
        &[&unknown],
        "list_merge_requests",
    );
}

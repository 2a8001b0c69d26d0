#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What only the local adapters promise: the Markdown mirror of the wiki,
//! durability across reopening, real git history in the bare repositories,
//! symlink refusal, concurrent writers, and an idempotent schema.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agentry_core::{
    ArtifactOwner, CodeHost, CommitRequest, Error, FileChange, IdempotencyKey, IssueKind,
    MergeRequestState, MergeRequestUpdate, NewIssue, NewMergeRequest, NewPage, PageUpdate,
    RepoPath, Tracker, Wiki,
};
use agentry_integrations_local::{LocalIntegrations, IDEMPOTENCY_TRAILER};

async fn open(dir: &Path) -> LocalIntegrations {
    LocalIntegrations::open(&dir.join("agentry.db"), dir)
        .await
        .expect("open the local integrations")
}

fn key(item: &str) -> IdempotencyKey {
    IdempotencyKey(format!("wf:1:test/{item}"))
}

fn page(space: &str, title: &str, parent: Option<&str>, body: &str) -> NewPage {
    NewPage {
        space: space.into(),
        title: title.into(),
        parent_id: parent.map(str::to_string),
        body: body.into(),
        idempotency_key: key(title),
    }
}

fn commit(repo: &str, branch: &str, files: &[(&str, Option<&str>)], item: &str) -> CommitRequest {
    CommitRequest {
        repository: repo.into(),
        branch: branch.into(),
        files: files
            .iter()
            .map(|(p, c)| FileChange {
                path: RepoPath::parse(p).unwrap(),
                content: c.map(str::to_string),
            })
            .collect(),
        message: format!("Commit {item}"),
        author: "Agentry Developer".into(),
        idempotency_key: key(item),
    }
}

/// Runs git on a repository the way a user would, isolated from their config.
fn git(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Tester", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn wiki_pages_are_mirrored_as_markdown_files() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let wiki = local.wiki_for(&ArtifactOwner::Cli).await.unwrap();
    wiki.ensure_space("DOCS", "Docs").await.unwrap();
    let overview = wiki
        .create_page(page("DOCS", "Overview", None, "# Overview\n"))
        .await
        .unwrap();
    let api = wiki
        .create_page(page("DOCS", "API", Some(&overview.id), "v1 body"))
        .await
        .unwrap();
    wiki.create_page(page("DOCS", "../../Escape: attempt?", None, "x"))
        .await
        .unwrap();
    let space = dir.path().join("wiki").join("DOCS");
    assert_eq!(
        files_under(&space),
        vec!["Escape-attempt.md", "Overview.md", "Overview/API.md"]
    );
    let api_file = read(&space.join("Overview/API.md"));
    let expected_head = format!(
        "---\nid: {}\ntitle: \"API\"\nversion: 1\nparent: {}\n",
        api.id, overview.id
    );
    assert!(api_file.starts_with(&expected_head), "{api_file}");
    assert!(api_file.ends_with("---\n\nv1 body\n"), "{api_file}");
    assert!(read(&space.join("Overview.md")).contains("parent: null\n"));

    // A new version rewrites the file; a rename moves it.
    wiki.update_page(PageUpdate {
        id: api.id.clone(),
        title: None,
        body: "v2 body".into(),
        expected_version: Some(1),
        idempotency_key: key("api-v2"),
    })
    .await
    .unwrap();
    let api_file = read(&space.join("Overview/API.md"));
    assert!(
        api_file.contains("version: 2\n") && api_file.ends_with("v2 body\n"),
        "{api_file}"
    );
    wiki.update_page(PageUpdate {
        id: overview.id.clone(),
        title: Some("Project Overview".into()),
        body: "# Overview\n".into(),
        expected_version: None,
        idempotency_key: key("overview-rename"),
    })
    .await
    .unwrap();
    assert_eq!(
        files_under(&space),
        vec![
            "Escape-attempt.md",
            "Project-Overview.md",
            "Project-Overview/API.md"
        ]
    );
    assert_eq!(
        wiki.mirror_path(&api.id).await.unwrap(),
        PathBuf::from("Project-Overview/API.md")
    );
}

#[tokio::test]
async fn reopening_finds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (issue, page_id, sha) = {
        let local = open(dir.path()).await;
        let tracker = local.tracker_for(&ArtifactOwner::Cli);
        tracker.ensure_project("SHOP", "Shop").await.unwrap();
        let issue = tracker
            .create_issue(NewIssue {
                project: "SHOP".into(),
                kind: IssueKind::Epic,
                title: "Checkout".into(),
                description: String::new(),
                parent: None,
                labels: vec![],
                idempotency_key: key("epic"),
            })
            .await
            .unwrap();
        let wiki = local.wiki_for(&ArtifactOwner::Cli).await.unwrap();
        wiki.ensure_space("SHOP", "Shop").await.unwrap();
        let page = wiki
            .create_page(page("SHOP", "Home", None, "hello"))
            .await
            .unwrap();
        let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
        host.ensure_repository("shop", "The shop").await.unwrap();
        let info = host
            .commit_files(commit("shop", "feature/x", &[("x.txt", Some("x"))], "x"))
            .await
            .unwrap();
        host.create_merge_request(NewMergeRequest {
            repository: "shop".into(),
            source_branch: "feature/x".into(),
            target_branch: "main".into(),
            title: "X".into(),
            description: String::new(),
            idempotency_key: key("mr"),
        })
        .await
        .unwrap();
        local.close().await;
        (issue, page.id, info.sha)
    };
    let local = open(dir.path()).await;
    assert_eq!(
        local
            .tracker_for(&ArtifactOwner::Cli)
            .get_issue("SHOP-1")
            .await
            .unwrap(),
        issue
    );
    let next = local
        .tracker_for(&ArtifactOwner::Cli)
        .create_issue(NewIssue {
            project: "SHOP".into(),
            kind: IssueKind::Story,
            title: "Pay".into(),
            description: String::new(),
            parent: Some("SHOP-1".into()),
            labels: vec![],
            idempotency_key: key("story"),
        })
        .await
        .unwrap();
    assert_eq!(next.key, "SHOP-2");
    assert_eq!(
        local
            .wiki_for(&ArtifactOwner::Cli)
            .await
            .unwrap()
            .get_page(&page_id)
            .await
            .unwrap()
            .body,
        "hello"
    );
    let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    assert_eq!(host.commits("shop", "feature/x").await.unwrap()[0].sha, sha);
    let mr = host.get_merge_request("shop", 1).await.unwrap();
    assert_eq!(mr.state, MergeRequestState::Opened);
}

#[tokio::test]
async fn bare_repository_history_carries_the_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    let repo = host
        .ensure_repository("url-shortener", "Shortens URLs")
        .await
        .unwrap();
    assert_eq!(
        PathBuf::from(&repo.clone_url),
        dir.path()
            .canonicalize()
            .unwrap()
            .join("repos/url-shortener.git")
    );
    let info = host
        .commit_files(commit(
            "url-shortener",
            "main",
            &[("src/app.py", Some("app")), ("README.md", Some("# Hi\n"))],
            "first",
        ))
        .await
        .unwrap();
    let bare = PathBuf::from(&repo.clone_url);
    let log = git(&["log", "--format=%H|%an|%ae|%cn|%B%x00", "main"], &bare);
    let newest = log.split('\0').next().unwrap();
    assert!(
        newest.starts_with(&format!(
            "{}|Agentry Developer|developer@agentry.local|Agentry Developer|Commit first\n",
            info.sha
        )),
        "{newest}"
    );
    assert!(
        newest.contains(&format!("{IDEMPOTENCY_TRAILER}: wf:1:test/first")),
        "{newest}"
    );
    let trailers = git(
        &[
            "log",
            "-1",
            "--format=%(trailers:key=Agentry-Idempotency-Key,valueonly)",
            "main",
        ],
        &bare,
    );
    assert_eq!(trailers.trim(), "wf:1:test/first");
    assert_eq!(git(&["rev-list", "--count", "main"], &bare).trim(), "2");
    // It clones like any repository.
    let clone = dir.path().join("clone");
    git(
        &["clone", "--quiet", &repo.clone_url, clone.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(read(&clone.join("src/app.py")), "app");
}

#[tokio::test]
async fn writing_through_a_committed_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    let repo = host.ensure_repository("linky", "").await.unwrap();
    let work = dir.path().join("work");
    git(
        &["clone", "--quiet", &repo.clone_url, work.to_str().unwrap()],
        dir.path(),
    );
    std::os::unix::fs::symlink("/etc", work.join("etc-link")).unwrap();
    std::fs::create_dir(work.join("docs")).unwrap();
    std::os::unix::fs::symlink("../..", work.join("docs/up")).unwrap();
    git(&["add", "-A"], &work);
    git(&["commit", "--quiet", "-m", "Add symlinks"], &work);
    git(&["push", "--quiet", "origin", "main"], &work);

    for (path, content) in [
        ("etc-link/passwd", Some("pwned")),
        ("docs/up/escape.txt", Some("pwned")),
        ("etc-link", Some("now a file")),
        ("etc-link/passwd", None),
    ] {
        let err = host
            .commit_files(commit("linky", "main", &[(path, content)], path))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("symlink") && m.contains(path)),
            "{path}: {err}"
        );
    }
    assert_eq!(host.commits("linky", "main").await.unwrap().len(), 2);
    // Deleting the link itself is fine.
    let info = host
        .commit_files(commit("linky", "main", &[("etc-link", None)], "unlink"))
        .await
        .unwrap();
    assert_eq!(info.files, vec!["etc-link"]);
}

#[tokio::test]
async fn files_and_directories_cannot_swap_silently() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    host.ensure_repository("tree", "").await.unwrap();
    host.commit_files(commit("tree", "main", &[("src/a.py", Some("a"))], "a"))
        .await
        .unwrap();
    for (files, item, mention) in [
        (
            vec![("src", Some("file over dir"))],
            "f-over-d",
            "directory",
        ),
        (
            vec![("src/a.py/b", Some("dir over file"))],
            "d-over-f",
            "src/a.py",
        ),
        (
            vec![("x", Some("1")), ("x", Some("2"))],
            "twice",
            "more than once",
        ),
    ] {
        let err = host
            .commit_files(commit("tree", "main", &files, item))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains(mention)),
            "{item}: {err}"
        );
    }
    // Replacing a file by a directory works when the file is deleted too.
    host.commit_files(commit(
        "tree",
        "main",
        &[("src/a.py", None), ("src/a.py/b", Some("b"))],
        "swap",
    ))
    .await
    .unwrap();
    assert_eq!(
        host.list_files("tree", "main").await.unwrap(),
        vec!["README.md", "src/a.py/b"]
    );
    // A change that changes nothing returns the head.
    let head = host.commits("tree", "main").await.unwrap()[0].clone();
    let same = host
        .commit_files(commit("tree", "main", &[("src/a.py/b", Some("b"))], "noop"))
        .await
        .unwrap();
    assert_eq!(same, head);
    // And back: a file replaces a directory whose files are deleted too
    // (the deletion sorts after the write; it is applied first).
    host.commit_files(commit(
        "tree",
        "main",
        &[("src/a.py", Some("a again")), ("src/a.py/b", None)],
        "swap back",
    ))
    .await
    .unwrap();
    assert_eq!(
        host.list_files("tree", "main").await.unwrap(),
        vec!["README.md", "src/a.py"]
    );
}

/// The store's file is the local integrations' too: an empty one is a
/// lost store, refused here as by the store, and left as it was.
#[tokio::test]
async fn an_empty_database_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentry.db");
    std::fs::write(&db, b"").unwrap();
    let error = LocalIntegrations::open(&db, dir.path())
        .await
        .expect_err("an empty file is a lost store, not a new one");
    let message = error.to_string();
    assert!(matches!(error, Error::Permanent(_)), "{message}");
    for needle in [
        db.display().to_string().as_str(),
        "is empty",
        "Restore it",
        "move it away",
    ] {
        assert!(message.contains(needle), "`{needle}` in: {message}");
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing written");
    assert_eq!(files_under(dir.path()), ["agentry.db"]);
}

/// `update-index` skips a path it refuses and exits 0, so a commit was
/// reported made while a file of the tree was silently gone. Here the
/// branch already holds `.GIT/config` (written with `mktree`, which checks
/// nothing, as another client could push it): rebuilding the tree for an
/// unrelated change would drop it, so the commit is refused, naming it.
#[tokio::test]
async fn a_file_git_would_drop_fails_the_commit_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    let repo = host.ensure_repository("dotgit", "").await.unwrap();
    let bare = Path::new(&repo.clone_url);
    let blob = run_git_stdin(bare, &["hash-object", "-w", "--stdin"], "[core]\n");
    let inner = run_git_stdin(bare, &["mktree"], &format!("100644 blob {blob}\tconfig\n"));
    let readme = git(&["rev-parse", "main:README.md"], bare);
    let root = run_git_stdin(
        bare,
        &["mktree"],
        &format!(
            "040000 tree {inner}\t.GIT\n100644 blob {}\tREADME.md\n",
            readme.trim()
        ),
    );
    let head = git(&["rev-parse", "main"], bare);
    let commit_sha = run_git_stdin(
        bare,
        &["commit-tree", &root, "-p", head.trim(), "-F", "-"],
        "Pushed from elsewhere\n",
    );
    git(&["update-ref", "refs/heads/main", &commit_sha], bare);

    let error = host
        .commit_files(commit(
            "dotgit",
            "main",
            &[("app.py", Some("x = 1\n"))],
            "app",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput(m)
            if m.contains("`.GIT/config`") && m.contains("nothing was committed")),
        "{error}"
    );
    assert_eq!(
        git(&["rev-parse", "main"], bare).trim(),
        commit_sha,
        "the branch is left as it was"
    );
}

/// Runs git in `cwd` with `input` on standard input; its trimmed output.
fn run_git_stdin(cwd: &Path, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .args(["-c", "user.name=Tester", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run git");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let host: Arc<dyn CodeHost> = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    let tracker: Arc<dyn Tracker> = local.tracker_for(&ArtifactOwner::Cli);
    host.ensure_repository("busy", "").await.unwrap();
    tracker.ensure_project("BUSY", "Busy").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let host = host.clone();
        let tracker = tracker.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("file-{i}.txt");
            let info = host
                .commit_files(commit("busy", "main", &[(&name, Some("x"))], &name))
                .await
                .unwrap();
            let issue = tracker
                .create_issue(NewIssue {
                    project: "BUSY".into(),
                    kind: IssueKind::Task,
                    title: name.clone(),
                    description: String::new(),
                    parent: None,
                    labels: vec![],
                    idempotency_key: key(&name),
                })
                .await
                .unwrap();
            (info.sha, issue.key)
        }));
    }
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(task.await.unwrap().1);
    }
    assert_eq!(host.commits("busy", "main").await.unwrap().len(), 9);
    assert_eq!(host.list_files("busy", "main").await.unwrap().len(), 9);
    keys.sort_by_key(|k| k[5..].parse::<u32>().unwrap());
    let want: Vec<String> = (1..=8).map(|n| format!("BUSY-{n}")).collect();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn diverged_branches_merge_with_a_merge_commit() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let host = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    let repo = host.ensure_repository("merge", "").await.unwrap();
    host.ensure_branch("merge", "feature", "main")
        .await
        .unwrap();
    host.commit_files(commit("merge", "feature", &[("f.txt", Some("f"))], "f"))
        .await
        .unwrap();
    host.commit_files(commit("merge", "main", &[("m.txt", Some("m"))], "m"))
        .await
        .unwrap();
    let mr = host
        .create_merge_request(NewMergeRequest {
            repository: "merge".into(),
            source_branch: "feature".into(),
            target_branch: "main".into(),
            title: "Feature".into(),
            description: String::new(),
            idempotency_key: key("mr"),
        })
        .await
        .unwrap();
    let merged = host
        .update_merge_request(
            "merge",
            mr.id,
            MergeRequestUpdate {
                state: Some(MergeRequestState::Merged),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(merged.state, MergeRequestState::Merged);
    let parents = git(
        &["log", "-1", "--format=%P", "main"],
        Path::new(&repo.clone_url),
    );
    assert_eq!(parents.split_whitespace().count(), 2, "{parents}");
    let mut files = host.list_files("merge", "main").await.unwrap();
    files.sort();
    assert_eq!(files, vec!["README.md", "f.txt", "m.txt"]);
    let newest = &host.commits("merge", "main").await.unwrap()[0];
    assert!(newest
        .title
        .starts_with("Merge branch 'feature' into 'main'"));
    assert_eq!(newest.files, vec!["f.txt"]);
}

#[tokio::test]
async fn schema_is_applied_once_and_leaves_other_tables_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentry.db");
    // The store gets there first with its own migrator's table.
    {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    // Two openers at once, then a third later.
    let (a, b) = tokio::join!(open(dir.path()), open(dir.path()));
    a.close().await;
    b.close().await;
    let local = open(dir.path()).await;
    local.close().await;

    let pool =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
            .await
            .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM local_integrations_schema")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        versions,
        (1..=agentry_integrations_local::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    for table in [
        "_sqlx_migrations",
        "code_merge_requests",
        "code_repositories",
        "tracker_attachments",
        "tracker_comments",
        "tracker_idempotency",
        "tracker_issues",
        "tracker_links",
        "tracker_projects",
        "wiki_page_versions",
        "wiki_pages",
        "wiki_spaces",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "missing {table}: {tables:?}"
        );
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn attachment_bytes_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let local = open(dir.path()).await;
    let tracker = local.tracker_for(&ArtifactOwner::Cli);
    tracker.ensure_project("ATT", "Att").await.unwrap();
    tracker
        .create_issue(NewIssue {
            project: "ATT".into(),
            kind: IssueKind::Bug,
            title: "Bug".into(),
            description: String::new(),
            parent: None,
            labels: vec![],
            idempotency_key: key("bug"),
        })
        .await
        .unwrap();
    let att = tracker
        .add_attachment(agentry_core::NewAttachment {
            issue: "ATT-1".into(),
            filename: "log.bin".into(),
            media_type: "application/octet-stream".into(),
            content: vec![0, 159, 146, 150],
            idempotency_key: key("att"),
        })
        .await
        .unwrap();
    assert_eq!(
        tracker.attachment_content(&att.id).await.unwrap(),
        vec![0, 159, 146, 150]
    );
    let _: &dyn Wiki = local.wiki_for(&ArtifactOwner::Cli).await.unwrap().as_ref();
}

/// The tables as version 1 of this crate (the last one before tenants)
/// made them, verbatim.
const V1_TABLES: &[&str] = &[
    "CREATE TABLE local_integrations_schema (version INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL)",
    "CREATE TABLE tracker_projects (key TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL)",
    "CREATE TABLE tracker_issues (key TEXT PRIMARY KEY NOT NULL, project TEXT NOT NULL,
        seq INTEGER NOT NULL, kind TEXT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL,
        status TEXT NOT NULL, parent TEXT, labels TEXT NOT NULL, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, UNIQUE (project, seq))",
    "CREATE TABLE tracker_links (id INTEGER PRIMARY KEY AUTOINCREMENT, from_key TEXT NOT NULL,
        to_key TEXT NOT NULL, kind TEXT NOT NULL, created_at TEXT NOT NULL,
        UNIQUE (from_key, to_key, kind))",
    "CREATE INDEX tracker_links_to ON tracker_links (to_key)",
    "CREATE TABLE tracker_comments (id INTEGER PRIMARY KEY AUTOINCREMENT, issue TEXT NOT NULL,
        body TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE INDEX tracker_comments_issue ON tracker_comments (issue, id)",
    "CREATE TABLE tracker_attachments (id INTEGER PRIMARY KEY AUTOINCREMENT, issue TEXT NOT NULL,
        filename TEXT NOT NULL, media_type TEXT NOT NULL, content BLOB NOT NULL,
        size INTEGER NOT NULL, created_at TEXT NOT NULL)",
    "CREATE INDEX tracker_attachments_issue ON tracker_attachments (issue, id)",
    "CREATE TABLE tracker_idempotency (entity TEXT NOT NULL, key TEXT NOT NULL,
        entity_id TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (entity, key))",
    "CREATE TABLE wiki_spaces (key TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
        created_at TEXT NOT NULL)",
    "CREATE TABLE wiki_pages (id INTEGER PRIMARY KEY AUTOINCREMENT, space TEXT NOT NULL,
        title TEXT NOT NULL COLLATE NOCASE, parent_id INTEGER, body TEXT NOT NULL,
        version INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        UNIQUE (space, title))",
    "CREATE TABLE wiki_page_versions (page_id INTEGER NOT NULL, version INTEGER NOT NULL,
        title TEXT NOT NULL, body TEXT NOT NULL, idempotency_key TEXT NOT NULL,
        created_at TEXT NOT NULL, PRIMARY KEY (page_id, version))",
    "CREATE TABLE wiki_idempotency (key TEXT PRIMARY KEY NOT NULL, page_id INTEGER NOT NULL,
        version INTEGER NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE code_repositories (name TEXT PRIMARY KEY NOT NULL, description TEXT NOT NULL,
        default_branch TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE code_merge_requests (repository TEXT NOT NULL, id INTEGER NOT NULL,
        source_branch TEXT NOT NULL, target_branch TEXT NOT NULL, title TEXT NOT NULL,
        description TEXT NOT NULL, state TEXT NOT NULL, test_result TEXT, merge_commit TEXT,
        idempotency_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (repository, id))",
    "CREATE UNIQUE INDEX code_merge_requests_one_open
        ON code_merge_requests (repository, source_branch, target_branch) WHERE state = 'opened'",
    "CREATE TABLE code_idempotency (key TEXT PRIMARY KEY NOT NULL, repository TEXT NOT NULL,
        merge_request_id INTEGER NOT NULL, created_at TEXT NOT NULL)",
];

/// What a workflow of version 1 left: two issues (a link, a comment, an
/// attachment), a page, a repository with a branch and a merge request,
/// and the idempotency keys of each.
const V1_ROWS: &[&str] = &[
    "INSERT INTO local_integrations_schema VALUES (1, '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_projects VALUES ('SHOP', 'Shop', 3, '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_issues VALUES ('SHOP-1', 'SHOP', 1, 'epic', 'Checkout', '', 'To Do',
        NULL, '[]', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_issues VALUES ('SHOP-2', 'SHOP', 2, 'story', 'Pay', '', 'Done',
        'SHOP-1', '[\"agentry\"]', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_links (from_key, to_key, kind, created_at)
        VALUES ('SHOP-2', 'SHOP-1', 'relates to', '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_comments (issue, body, created_at)
        VALUES ('SHOP-1', 'old comment', '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_attachments (issue, filename, media_type, content, size, created_at)
        VALUES ('SHOP-1', 'a.json', 'application/json', X'7B7D', 2, '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_idempotency VALUES ('issue', 'wf:1:test/epic', 'SHOP-1', '2025-01-01T00:00:00Z')",
    "INSERT INTO tracker_idempotency VALUES ('comment', 'wf:1:test/comment', '1', '2025-01-01T00:00:00Z')",
    "INSERT INTO wiki_spaces VALUES ('SHOP', 'Shop', '2025-01-01T00:00:00Z')",
    "INSERT INTO wiki_pages (space, title, parent_id, body, version, created_at, updated_at)
        VALUES ('SHOP', 'Home', NULL, 'old page', 1, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')",
    "INSERT INTO wiki_page_versions VALUES (1, 1, 'Home', 'old page', 'wf:1:test/Home', '2025-01-01T00:00:00Z')",
    "INSERT INTO wiki_idempotency VALUES ('wf:1:test/Home', 1, 1, '2025-01-01T00:00:00Z')",
    "INSERT INTO code_repositories VALUES ('shop', 'The shop', 'main', '2025-01-01T00:00:00Z')",
    "INSERT INTO code_merge_requests VALUES ('shop', 1, 'feature/x', 'main', 'X', 'old MR', 'opened',
        NULL, NULL, 'wf:1:test/mr', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z')",
    "INSERT INTO code_idempotency VALUES ('wf:1:test/mr', 'shop', 1, '2025-01-01T00:00:00Z')",
];

/// Regression for the tenancy migration: a data directory made before
/// tenants (version 1 tables, `<data>/repos/shop.git`, `<data>/wiki/SHOP/`)
/// opens, its artifacts are the command line's, its idempotency keys and
/// sequences carry on, and no tenant sees any of it.
#[tokio::test]
async fn a_data_directory_made_before_tenants_keeps_its_artifacts_for_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentry.db");
    {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        for statement in V1_TABLES.iter().chain(V1_ROWS) {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&["init", "--quiet"], &work);
    std::fs::write(work.join("x.txt"), "x").unwrap();
    git(&["add", "x.txt"], &work);
    git(&["commit", "--quiet", "-m", "Add x"], &work);
    git(&["branch", "feature/x"], &work);
    let bare = dir.path().join("repos/shop.git");
    git(
        &["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()],
        &work,
    );
    std::fs::create_dir_all(dir.path().join("wiki/SHOP")).unwrap();
    std::fs::write(dir.path().join("wiki/SHOP/Home.md"), "old page\n").unwrap();

    let local = open(dir.path()).await;
    let cli = ArtifactOwner::Cli;
    let tracker = local.tracker_for(&cli);
    let issues = tracker.list_issues("SHOP").await.unwrap();
    assert_eq!(
        issues.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["SHOP-1", "SHOP-2"]
    );
    assert_eq!(issues[1].labels, ["agentry"]);
    assert_eq!(tracker.links("SHOP-1").await.unwrap().len(), 1);
    assert_eq!(
        tracker.comments("SHOP-1").await.unwrap()[0].body,
        "old comment"
    );
    let attachment = &tracker.attachments("SHOP-1").await.unwrap()[0];
    assert_eq!(
        tracker.attachment_content(&attachment.id).await.unwrap(),
        b"{}"
    );
    let again = tracker
        .create_issue(NewIssue {
            project: "SHOP".into(),
            kind: IssueKind::Epic,
            title: "Retried".into(),
            description: String::new(),
            parent: None,
            labels: vec![],
            idempotency_key: key("epic"),
        })
        .await
        .unwrap();
    assert_eq!(again.key, "SHOP-1", "an old idempotency key is forgotten");
    let next = tracker
        .create_issue(NewIssue {
            project: "SHOP".into(),
            kind: IssueKind::Bug,
            title: "New".into(),
            description: String::new(),
            parent: None,
            labels: vec![],
            idempotency_key: key("bug"),
        })
        .await
        .unwrap();
    assert_eq!(next.key, "SHOP-3");

    let wiki = local.wiki_for(&cli).await.unwrap();
    assert_eq!(wiki.get_page("1").await.unwrap().body, "old page");
    let same = wiki
        .create_page(page("SHOP", "Home", None, "retried"))
        .await
        .unwrap();
    assert_eq!((same.id.as_str(), same.body.as_str()), ("1", "old page"));
    let fresh = wiki
        .create_page(page("SHOP", "Guide", None, "new"))
        .await
        .unwrap();
    assert_eq!(fresh.id, "2", "page ids start over");
    assert_eq!(wiki.space_dir("SHOP"), dir.path().join("wiki/SHOP"));
    assert!(read(&dir.path().join("wiki/SHOP/Guide.md")).contains("new"));

    let host = local.code_host_for(&cli).await.unwrap();
    let repo = host.get_repository("shop").await.unwrap();
    assert_eq!(
        Path::new(&repo.clone_url),
        bare.canonicalize().unwrap(),
        "the repository moved"
    );
    assert_eq!(
        host.commits("shop", "feature/x").await.unwrap()[0].title,
        "Add x"
    );
    let mr = host
        .create_merge_request(NewMergeRequest {
            repository: "shop".into(),
            source_branch: "feature/x".into(),
            target_branch: "main".into(),
            title: "Retried".into(),
            description: String::new(),
            idempotency_key: key("mr"),
        })
        .await
        .unwrap();
    assert_eq!((mr.id, mr.description.as_str()), (1, "old MR"));

    let tenant = ArtifactOwner::tenant("acme").unwrap();
    let theirs = local.tracker_for(&tenant);
    assert!(matches!(
        theirs.list_issues("SHOP").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        theirs.get_issue("SHOP-1").await,
        Err(Error::NotFound(_))
    ));
    let their_wiki = local.wiki_for(&tenant).await.unwrap();
    assert!(matches!(
        their_wiki.get_page("1").await,
        Err(Error::NotFound(_))
    ));
    let their_host = local.code_host_for(&tenant).await.unwrap();
    assert!(matches!(
        their_host.get_repository("shop").await,
        Err(Error::NotFound(_))
    ));
}

/// Tenant names that look like paths stay inside `<data>/tenants/`, each
/// in a directory of its own; nothing lands in the command line's
/// `repos/` or `wiki/`.
#[tokio::test]
async fn tenant_names_cannot_escape_the_data_directory() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let local = open(&data).await;
    let names = ["..", "../escape", "a/b", "/abs", "%2e%2e", ".", "cli"];
    for name in names {
        let owner = ArtifactOwner::tenant(name).unwrap();
        let host = local.code_host_for(&owner).await.unwrap();
        let repo = host.ensure_repository("probe", name).await.unwrap();
        let wiki = local.wiki_for(&owner).await.unwrap();
        wiki.ensure_space("PROBE", name).await.unwrap();
        wiki.create_page(page("PROBE", "Home", None, name))
            .await
            .unwrap();
        let path = Path::new(&repo.clone_url).to_path_buf();
        let tenants = data.canonicalize().unwrap().join("tenants");
        assert_eq!(
            path.parent().and_then(Path::parent).and_then(Path::parent),
            Some(tenants.as_path()),
            "{name:?}: {}",
            path.display()
        );
        assert!(wiki.space_dir("PROBE").starts_with(data.join("tenants")));
    }
    let dirs = std::fs::read_dir(data.join("tenants")).unwrap().count();
    assert_eq!(dirs, names.len(), "two tenants share a directory");
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "something was written next to the data directory"
    );
    assert!(files_under(&data.join("repos")).is_empty());
    assert!(files_under(&data.join("wiki")).is_empty());
}

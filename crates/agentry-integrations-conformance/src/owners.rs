//! The `IntegrationResolver` behaviours: two owners that choose the same
//! project key, space key, repository name, branch and idempotency keys get
//! disjoint artifacts, and the command line's namespace is no tenant's.
//!
//! The resolver under test must accept any tenant the suite names (fresh
//! `conf-…` tenants and the tenant `cli`) and the command line's owner; a
//! vendor adapter's fixture maps them to namespaces of its contract server.
//! Every test resolves an owner's adapters again before reading, so a
//! resolver that handed out a fresh, empty namespace on every call fails.

use std::sync::Arc;

use agentry_core::{
    ArtifactOwner, CommitRequest, FileChange, IdempotencyKey, IntegrationResolver, IssueKind,
    MergeRequestUpdate, NewAttachment, NewComment, NewIssue, NewIssueLink, NewMergeRequest,
    NewPage, PageUpdate, RepoPath,
};

use crate::{expect_err, ok, unique_key, unique_repo_name, Expected};

/// Runs every owner behaviour in turn.
pub async fn owners_suite(resolver: Arc<dyn IntegrationResolver>) {
    owners_with_the_same_project_key_get_disjoint_trackers(resolver.clone()).await;
    owners_with_the_same_space_key_get_disjoint_wikis(resolver.clone()).await;
    owners_with_the_same_repository_name_get_disjoint_code_hosts(resolver.clone()).await;
    no_tenant_reaches_the_command_lines_namespace(resolver).await;
}

/// A fresh tenant.
pub fn unique_tenant() -> ArtifactOwner {
    let name = format!("conf-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    ok(ArtifactOwner::tenant(name), "a fresh tenant")
}

/// Idempotency keys both owners of one test use: the same text, on
/// purpose, and fresh for every test, so a shared backend keeps runs apart.
struct SharedKeys(String);

impl SharedKeys {
    fn new() -> SharedKeys {
        SharedKeys(format!("conformance:owners:{}", uuid::Uuid::new_v4()))
    }

    fn key(&self, item: &str) -> IdempotencyKey {
        IdempotencyKey(format!("{}/{item}", self.0))
    }
}

fn new_issue(keys: &SharedKeys, project: &str, title: &str, key: &str) -> NewIssue {
    NewIssue {
        project: project.to_string(),
        kind: IssueKind::Epic,
        title: title.to_string(),
        description: format!("Made by {title}."),
        parent: None,
        labels: Vec::new(),
        idempotency_key: keys.key(key),
    }
}

/// Same project key, same idempotency keys: each owner gets its own
/// project, issues, links, comments and attachments, and cannot read,
/// change or find by key what the other made.
pub async fn owners_with_the_same_project_key_get_disjoint_trackers(
    resolver: Arc<dyn IntegrationResolver>,
) {
    let keys = SharedKeys::new();
    let (a, b) = (unique_tenant(), unique_tenant());
    let key = unique_key("O");
    let only_a = unique_key("A");
    let ta = ok(resolver.tracker(&a).await, "tracker of A");
    let tb = ok(resolver.tracker(&b).await, "tracker of B");
    ok(ta.ensure_project(&key, "Project of A").await, "A's project");
    ok(
        ta.ensure_project(&only_a, "Only A").await,
        "A's own project",
    );
    let pb = ok(tb.ensure_project(&key, "Project of B").await, "B's project");
    assert_eq!(pb.name, "Project of B", "B's project is not A's");

    let a1 = ok(
        ta.create_issue(new_issue(&keys, &key, "A one", "1")).await,
        "A's issue",
    );
    let b1 = ok(
        tb.create_issue(new_issue(&keys, &key, "B one", "1")).await,
        "B's issue",
    );
    assert_eq!(b1.title, "B one", "B's idempotency key found A's issue");
    let a2 = ok(
        ta.create_issue(new_issue(&keys, &key, "A two", "2")).await,
        "A's 2nd",
    );

    let tb = ok(resolver.tracker(&b).await, "tracker of B again");
    let listed: Vec<String> = ok(tb.list_issues(&key).await, "B lists")
        .into_iter()
        .map(|i| i.title)
        .collect();
    assert_eq!(listed, ["B one"], "B lists only its own issues");
    expect_err(
        tb.get_issue(&a2.key).await,
        Expected::NotFound,
        &[&a2.key],
        "B reads A's",
    );
    expect_err(
        tb.transition_issue(&a2.key, "Done").await,
        Expected::NotFound,
        &[&a2.key],
        "B moves A's issue",
    );
    expect_err(
        tb.links(&a2.key).await,
        Expected::NotFound,
        &[],
        "B reads A's links",
    );
    expect_err(
        tb.link_issues(NewIssueLink {
            from: b1.key.clone(),
            to: a2.key.clone(),
            kind: "relates to".into(),
        })
        .await,
        Expected::NotFound,
        &[&a2.key],
        "B links to A's issue",
    );
    expect_err(
        tb.add_comment(NewComment {
            issue: a2.key.clone(),
            body: "B was here".into(),
            idempotency_key: keys.key("comment-on-a2"),
        })
        .await,
        Expected::NotFound,
        &[&a2.key],
        "B comments on A's issue",
    );
    expect_err(
        tb.list_issues(&only_a).await,
        Expected::NotFound,
        &[&only_a],
        "B lists A's",
    );
    expect_err(
        tb.create_issue(new_issue(&keys, &only_a, "B in A's", "3"))
            .await,
        Expected::InvalidInput,
        &[&only_a],
        "B files into A's project",
    );

    let ca = NewComment {
        issue: a1.key.clone(),
        body: "from A".into(),
        idempotency_key: keys.key("comment"),
    };
    ok(ta.add_comment(ca).await, "A comments");
    let cb = ok(
        tb.add_comment(NewComment {
            issue: b1.key.clone(),
            body: "from B".into(),
            idempotency_key: keys.key("comment"),
        })
        .await,
        "B comments with A's key",
    );
    assert_eq!(cb.body, "from B", "B's comment key found A's comment");
    let attach = |issue: &str, content: &str| NewAttachment {
        issue: issue.to_string(),
        filename: "notes.txt".into(),
        media_type: "text/plain".into(),
        content: content.as_bytes().to_vec(),
        idempotency_key: keys.key("attachment"),
    };
    ok(ta.add_attachment(attach(&a1.key, "A")).await, "A attaches");
    let sb = ok(tb.add_attachment(attach(&b1.key, "BB")).await, "B attaches");
    assert_eq!(sb.size, 2, "B's attachment key found A's attachment");
    ok(
        ta.link_issues(NewIssueLink {
            from: a1.key.clone(),
            to: a2.key.clone(),
            kind: "relates to".into(),
        })
        .await,
        "A links",
    );

    let ta = ok(resolver.tracker(&a).await, "tracker of A again");
    let a1_now = ok(ta.get_issue(&a1.key).await, "A reads its issue");
    assert_eq!(a1_now.title, "A one");
    let comments: Vec<String> = ok(ta.comments(&a1.key).await, "A's comments")
        .into_iter()
        .map(|c| c.body)
        .collect();
    assert_eq!(comments, ["from A"]);
    assert_eq!(
        ok(ta.attachments(&a1.key).await, "A's attachments").len(),
        1
    );
    assert_eq!(ok(tb.comments(&b1.key).await, "B's comments").len(), 1);
    assert!(
        ok(tb.links(&b1.key).await, "B's links").is_empty(),
        "B sees A's link"
    );
    assert_eq!(ok(ta.list_issues(&key).await, "A lists").len(), 2);
}

/// Same space key, same page title, same idempotency keys: each owner gets
/// its own space and pages; another owner's page id is not found.
pub async fn owners_with_the_same_space_key_get_disjoint_wikis(
    resolver: Arc<dyn IntegrationResolver>,
) {
    let keys = SharedKeys::new();
    let (a, b) = (unique_tenant(), unique_tenant());
    let space = unique_key("W");
    let wa = ok(resolver.wiki(&a).await, "wiki of A");
    let wb = ok(resolver.wiki(&b).await, "wiki of B");
    ok(wa.ensure_space(&space, "Space of A").await, "A's space");
    let sb = ok(wb.ensure_space(&space, "Space of B").await, "B's space");
    assert_eq!(sb.name, "Space of B", "B's space is not A's");
    let page = |body: &str| NewPage {
        space: space.clone(),
        title: "Overview".into(),
        parent_id: None,
        body: body.to_string(),
        idempotency_key: keys.key("page"),
    };
    let pa = ok(wa.create_page(page("by A")).await, "A's page");
    let pb = ok(wb.create_page(page("by B")).await, "B's page, same title");
    assert_eq!(pb.body, "by B", "B's page key found A's page");
    assert_ne!(pa.id, pb.id);

    let wb = ok(resolver.wiki(&b).await, "wiki of B again");
    expect_err(
        wb.get_page(&pa.id).await,
        Expected::NotFound,
        &[&pa.id],
        "B reads A's page",
    );
    expect_err(
        wb.page_versions(&pa.id).await,
        Expected::NotFound,
        &[&pa.id],
        "B reads A's versions",
    );
    expect_err(
        wb.update_page(PageUpdate {
            id: pa.id.clone(),
            title: None,
            body: "B overwrites".into(),
            expected_version: None,
            idempotency_key: keys.key("update"),
        })
        .await,
        Expected::NotFound,
        &[&pa.id],
        "B updates A's page",
    );
    expect_err(
        wb.create_page(NewPage {
            parent_id: Some(pa.id.clone()),
            title: "Child".into(),
            idempotency_key: keys.key("child"),
            ..page("under A's")
        })
        .await,
        Expected::InvalidInput,
        &[&pa.id],
        "B nests under A's page",
    );
    let listed: Vec<String> = ok(wb.list_pages(&space).await, "B lists")
        .into_iter()
        .map(|p| p.body)
        .collect();
    assert_eq!(listed, ["by B"], "B lists only its own pages");

    let wa = ok(resolver.wiki(&a).await, "wiki of A again");
    let pa_now = ok(wa.get_page(&pa.id).await, "A reads its page");
    assert_eq!((pa_now.body.as_str(), pa_now.version), ("by A", 1));
    expect_err(
        wa.get_page(&pb.id).await,
        Expected::NotFound,
        &[&pb.id],
        "A reads B's page",
    );
}

fn commit(keys: &SharedKeys, repo: &str, path: &str, content: &str) -> CommitRequest {
    CommitRequest {
        repository: repo.to_string(),
        branch: "agentry/shared".into(),
        files: vec![FileChange {
            path: ok(RepoPath::parse(path), "a test path"),
            content: Some(content.to_string()),
        }],
        message: format!("Write {path}"),
        author: "Agentry Developer".into(),
        idempotency_key: keys.key("commit"),
    }
}

fn merge_request(keys: &SharedKeys, repo: &str, title: &str) -> NewMergeRequest {
    NewMergeRequest {
        repository: repo.to_string(),
        source_branch: "agentry/shared".into(),
        target_branch: "main".into(),
        title: title.to_string(),
        description: format!("{title}'s description"),
        idempotency_key: keys.key("merge-request"),
    }
}

/// Same repository name, branch and idempotency keys: each owner gets its
/// own repository, commits and merge request (the finding this suite was
/// written for: a second tenant committed onto the first's branch and
/// updated its merge request).
pub async fn owners_with_the_same_repository_name_get_disjoint_code_hosts(
    resolver: Arc<dyn IntegrationResolver>,
) {
    let keys = SharedKeys::new();
    let (a, b) = (unique_tenant(), unique_tenant());
    let repo = unique_repo_name();
    let only_a = unique_repo_name();
    let ha = ok(resolver.code_host(&a).await, "code host of A");
    let hb = ok(resolver.code_host(&b).await, "code host of B");
    let ra = ok(ha.ensure_repository(&repo, "A's").await, "A's repository");
    ok(ha.ensure_repository(&only_a, "Only A's").await, "A's own");
    let a_commit = ok(
        ha.commit_files(commit(&keys, &repo, "a.txt", "A")).await,
        "A commits",
    );
    let a_mr = ok(
        ha.create_merge_request(merge_request(&keys, &repo, "A's change"))
            .await,
        "A opens",
    );

    let rb = ok(hb.ensure_repository(&repo, "B's").await, "B's repository");
    assert_ne!(ra.clone_url, rb.clone_url, "both clone the same repository");
    expect_err(
        hb.commits(&repo, "agentry/shared").await,
        Expected::NotFound,
        &["agentry/shared"],
        "B sees A's branch",
    );
    let b_commit = ok(
        hb.commit_files(commit(&keys, &repo, "b.txt", "B")).await,
        "B commits",
    );
    assert_ne!(
        b_commit.sha, a_commit.sha,
        "B's commit key found A's commit"
    );
    assert_eq!(b_commit.files, ["b.txt"]);
    let b_mr = ok(
        hb.create_merge_request(merge_request(&keys, &repo, "B's change"))
            .await,
        "B opens with A's key, source and target",
    );
    assert_eq!(b_mr.title, "B's change", "B's merge request is A's");
    ok(
        hb.update_merge_request(
            &repo,
            b_mr.id,
            MergeRequestUpdate {
                description: Some("edited by B".into()),
                ..MergeRequestUpdate::default()
            },
        )
        .await,
        "B edits its merge request",
    );
    expect_err(
        hb.get_repository(&only_a).await,
        Expected::NotFound,
        &[&only_a],
        "B reads A's repository",
    );

    let hb = ok(resolver.code_host(&b).await, "code host of B again");
    assert_eq!(
        ok(hb.list_files(&repo, "agentry/shared").await, "B's files"),
        ["README.md", "b.txt"]
    );
    assert_eq!(ok(hb.list_merge_requests(&repo).await, "B's MRs").len(), 1);

    let ha = ok(resolver.code_host(&a).await, "code host of A again");
    let a_log = ok(ha.commits(&repo, "agentry/shared").await, "A's branch");
    assert_eq!(a_log[0].sha, a_commit.sha, "B committed onto A's branch");
    assert_eq!(
        ok(ha.list_files(&repo, "agentry/shared").await, "A's files"),
        ["README.md", "a.txt"]
    );
    let a_mrs = ok(ha.list_merge_requests(&repo).await, "A's MRs");
    assert_eq!(a_mrs.len(), 1);
    assert_eq!(a_mrs[0].id, a_mr.id);
    assert_eq!(a_mrs[0].title, "A's change");
    assert_eq!(
        a_mrs[0].description, "A's change's description",
        "B's update reached A's merge request"
    );
}

/// The command line's owner and a tenant named `cli` use the same names
/// and see nothing of each other.
pub async fn no_tenant_reaches_the_command_lines_namespace(resolver: Arc<dyn IntegrationResolver>) {
    let keys = SharedKeys::new();
    let cli = ArtifactOwner::Cli;
    let tenant = ok(ArtifactOwner::tenant("cli"), "the tenant `cli`");
    assert_ne!(cli, tenant);
    let key = unique_key("C");
    let repo = unique_repo_name();
    for (owner, who) in [(&cli, "command line"), (&tenant, "tenant cli")] {
        let tracker = ok(resolver.tracker(owner).await, "tracker");
        ok(tracker.ensure_project(&key, who).await, "project");
        ok(
            tracker
                .create_issue(new_issue(&keys, &key, who, "cli-issue"))
                .await,
            "issue",
        );
        let wiki = ok(resolver.wiki(owner).await, "wiki");
        ok(wiki.ensure_space(&key, who).await, "space");
        ok(
            wiki.create_page(NewPage {
                space: key.clone(),
                title: "Home".into(),
                parent_id: None,
                body: who.to_string(),
                idempotency_key: keys.key("cli-page"),
            })
            .await,
            "page",
        );
        let host = ok(resolver.code_host(owner).await, "code host");
        ok(host.ensure_repository(&repo, who).await, "repository");
        ok(
            host.commit_files(commit(&keys, &repo, "who.txt", who))
                .await,
            "commit",
        );
    }
    for (owner, who) in [(&cli, "command line"), (&tenant, "tenant cli")] {
        let tracker = ok(resolver.tracker(owner).await, "tracker again");
        let titles: Vec<String> = ok(tracker.list_issues(&key).await, "issues")
            .into_iter()
            .map(|i| i.title)
            .collect();
        assert_eq!(titles, [who], "{owner}: issues");
        let wiki = ok(resolver.wiki(owner).await, "wiki again");
        let bodies: Vec<String> = ok(wiki.list_pages(&key).await, "pages")
            .into_iter()
            .map(|p| p.body)
            .collect();
        assert_eq!(bodies, [who], "{owner}: pages");
        let host = ok(resolver.code_host(owner).await, "code host again");
        let path = ok(RepoPath::parse("who.txt"), "path");
        assert_eq!(
            ok(host.read_file(&repo, "agentry/shared", &path).await, "read").as_deref(),
            Some(who),
            "{owner}: files"
        );
        assert_eq!(
            ok(host.commits(&repo, "agentry/shared").await, "commits").len(),
            2,
            "{owner}: one commit of its own after the first"
        );
    }
}

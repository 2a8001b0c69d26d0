//! The `Tracker` behaviours.

use std::sync::Arc;

use agentry_core::{
    Issue, IssueKind, IssueLink, NewAttachment, NewComment, NewIssue, NewIssueLink, Tracker,
};

use crate::{expect_err, fresh_key, ok, unique_key, Expected};

const STATUSES: [&str; 4] = ["To Do", "In Progress", "In Review", "Done"];

/// Runs every tracker behaviour in turn.
pub async fn tracker_suite(tracker: Arc<dyn Tracker>) {
    project_keys_are_validated(tracker.clone()).await;
    issue_keys_are_sequential_per_project(tracker.clone()).await;
    create_issue_is_idempotent(tracker.clone()).await;
    create_issue_rejects_bad_input(tracker.clone()).await;
    parents_follow_the_hierarchy(tracker.clone()).await;
    issues_move_between_statuses(tracker.clone()).await;
    links_show_from_both_ends(tracker.clone()).await;
    comments_are_idempotent_and_ordered(tracker.clone()).await;
    attachments_are_idempotent(tracker.clone()).await;
    unknown_issues_are_not_found(tracker).await;
}

fn new_issue(project: &str, kind: IssueKind, title: &str, parent: Option<&Issue>) -> NewIssue {
    NewIssue {
        project: project.to_string(),
        kind,
        title: title.to_string(),
        description: format!("Description of {title}."),
        parent: parent.map(|p| p.key.clone()),
        labels: vec!["agentry".to_string()],
        idempotency_key: fresh_key(title),
    }
}

async fn project(tracker: &Arc<dyn Tracker>) -> String {
    let key = unique_key("T");
    ok(
        tracker.ensure_project(&key, "Conformance").await,
        "ensure_project",
    );
    key
}

async fn issue(tracker: &Arc<dyn Tracker>, project: &str, kind: IssueKind, title: &str) -> Issue {
    ok(
        tracker
            .create_issue(new_issue(project, kind, title, None))
            .await,
        "create_issue",
    )
}

/// Project keys are 2-10 characters `A-Z0-9` starting with a letter; a bad
/// key is invalid input naming it; ensuring twice returns the project.
pub async fn project_keys_are_validated(tracker: Arc<dyn Tracker>) {
    for bad in ["S", "1SHOP", "SH-OP", "shop", "TOOLONGKEY1"] {
        expect_err(
            tracker.ensure_project(bad, "Bad").await,
            Expected::InvalidInput,
            &[bad],
            "ensure_project with a bad key",
        );
    }
    let key = unique_key("T");
    let project = ok(tracker.ensure_project(&key, "Shop").await, "ensure_project");
    assert_eq!(project.key, key);
    assert_eq!(project.name, "Shop");
    let again = ok(
        tracker.ensure_project(&key, "Shop").await,
        "ensure_project again",
    );
    assert_eq!(again, project);
}

/// Keys are `<PROJECT>-<n>`, counted per project from 1; list_issues
/// returns them in creation order with what was asked for.
pub async fn issue_keys_are_sequential_per_project(tracker: Arc<dyn Tracker>) {
    let a = project(&tracker).await;
    let b = project(&tracker).await;
    let a1 = issue(&tracker, &a, IssueKind::Epic, "Checkout").await;
    let b1 = issue(&tracker, &b, IssueKind::Task, "Elsewhere").await;
    let a2 = issue(&tracker, &a, IssueKind::Bug, "Crash on pay").await;
    let a3 = issue(&tracker, &a, IssueKind::Task, "Wire payments").await;
    assert_eq!(
        [a1.key.as_str(), a2.key.as_str(), a3.key.as_str()],
        [format!("{a}-1"), format!("{a}-2"), format!("{a}-3")]
    );
    assert_eq!(b1.key, format!("{b}-1"));
    assert_eq!(a2.project, a);
    assert_eq!(a2.kind, IssueKind::Bug);
    assert_eq!(a2.title, "Crash on pay");
    assert_eq!(a2.description, "Description of Crash on pay.");
    assert_eq!(a2.status, "To Do");
    assert_eq!(a2.labels, vec!["agentry".to_string()]);
    assert_eq!(a2.parent, None);
    let listed = ok(tracker.list_issues(&a).await, "list_issues");
    assert_eq!(listed, vec![a1, a2.clone(), a3]);
    assert_eq!(ok(tracker.get_issue(&a2.key).await, "get_issue"), a2);
}

/// A create with a key seen before returns the original issue, even when
/// the other fields differ, and creates nothing.
pub async fn create_issue_is_idempotent(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let first_call = new_issue(&p, IssueKind::Story, "Original", None);
    let first = ok(
        tracker.create_issue(first_call.clone()).await,
        "create_issue",
    );
    let replay = NewIssue {
        title: "Different".to_string(),
        kind: IssueKind::Bug,
        ..first_call
    };
    let again = ok(tracker.create_issue(replay).await, "create_issue replayed");
    assert_eq!(again, first);
    assert_eq!(ok(tracker.list_issues(&p).await, "list_issues").len(), 1);
    let next = issue(&tracker, &p, IssueKind::Task, "Next").await;
    assert_eq!(next.key, format!("{p}-2"), "a replay must not use up a key");
}

/// Empty titles and unknown projects are invalid input.
pub async fn create_issue_rejects_bad_input(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    expect_err(
        tracker
            .create_issue(new_issue(&p, IssueKind::Task, "  ", None))
            .await,
        Expected::InvalidInput,
        &["title"],
        "create_issue with an empty title",
    );
    let unknown = unique_key("U");
    expect_err(
        tracker
            .create_issue(new_issue(&unknown, IssueKind::Task, "Lost", None))
            .await,
        Expected::InvalidInput,
        &[&unknown],
        "create_issue in an unknown project",
    );
    assert!(ok(tracker.list_issues(&p).await, "list_issues").is_empty());
}

/// Stories hang under epics and tasks under stories; the parent must exist
/// in the same project; an epic has no parent, a story no story parent.
pub async fn parents_follow_the_hierarchy(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let other = project(&tracker).await;
    let epic = issue(&tracker, &p, IssueKind::Epic, "Epic").await;
    let story = ok(
        tracker
            .create_issue(new_issue(&p, IssueKind::Story, "Story", Some(&epic)))
            .await,
        "story under epic",
    );
    assert_eq!(story.parent.as_deref(), Some(epic.key.as_str()));
    let task = ok(
        tracker
            .create_issue(new_issue(&p, IssueKind::Task, "Task", Some(&story)))
            .await,
        "task under story",
    );
    assert_eq!(task.parent.as_deref(), Some(story.key.as_str()));
    assert_eq!(
        ok(tracker.get_issue(&task.key).await, "get_issue").parent,
        task.parent
    );

    let cases: Vec<(NewIssue, &str)> = vec![
        (
            new_issue(&p, IssueKind::Story, "Story under story", Some(&story)),
            "story under a story",
        ),
        (
            new_issue(&p, IssueKind::Epic, "Epic under epic", Some(&epic)),
            "epic with a parent",
        ),
        (
            NewIssue {
                parent: Some(format!("{p}-999")),
                ..new_issue(&p, IssueKind::Story, "Orphan", None)
            },
            "unknown parent",
        ),
        (
            new_issue(&other, IssueKind::Story, "Cross-project", Some(&epic)),
            "parent in another project",
        ),
    ];
    for (new, step) in cases {
        expect_err(
            tracker.create_issue(new).await,
            Expected::InvalidInput,
            &[],
            step,
        );
    }
    assert!(ok(tracker.list_issues(&other).await, "list_issues").is_empty());
    assert_eq!(ok(tracker.list_issues(&p).await, "list_issues").len(), 3);
}

/// Issues start in `To Do` and may move among the four statuses freely;
/// the same status is a no-op; an unknown status is invalid input listing
/// the allowed ones and changes nothing.
pub async fn issues_move_between_statuses(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let it = issue(&tracker, &p, IssueKind::Story, "Move me").await;
    assert_eq!(it.status, "To Do");
    for status in ["In Progress", "In Review", "Done", "To Do", "Done"] {
        let moved = ok(tracker.transition_issue(&it.key, status).await, status);
        assert_eq!(moved.status, status);
        assert_eq!(
            ok(tracker.get_issue(&it.key).await, "get_issue").status,
            status
        );
    }
    let same = ok(
        tracker.transition_issue(&it.key, "Done").await,
        "same status",
    );
    assert_eq!(same.status, "Done");
    expect_err(
        tracker.transition_issue(&it.key, "Blocked").await,
        Expected::InvalidInput,
        &[
            "Blocked",
            STATUSES[0],
            STATUSES[1],
            STATUSES[2],
            STATUSES[3],
        ],
        "unknown status",
    );
    assert_eq!(
        ok(tracker.get_issue(&it.key).await, "get_issue").status,
        "Done"
    );
}

/// A link shows on both issues; linking again changes nothing; linking an
/// unknown issue is not found.
pub async fn links_show_from_both_ends(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let a = issue(&tracker, &p, IssueKind::Task, "Tests").await;
    let b = issue(&tracker, &p, IssueKind::Story, "Feature").await;
    let c = issue(&tracker, &p, IssueKind::Task, "Later").await;
    let link = |from: &Issue, to: &Issue, kind: &str| NewIssueLink {
        from: from.key.clone(),
        to: to.key.clone(),
        kind: kind.to_string(),
    };
    let tests = IssueLink {
        from: a.key.clone(),
        to: b.key.clone(),
        kind: "tests".to_string(),
    };
    assert_eq!(
        ok(tracker.link_issues(link(&a, &b, "tests")).await, "link"),
        tests
    );
    assert_eq!(
        ok(
            tracker.link_issues(link(&a, &b, "tests")).await,
            "link again"
        ),
        tests
    );
    let blocks = ok(
        tracker.link_issues(link(&b, &c, "blocks")).await,
        "link blocks",
    );
    assert_eq!(
        ok(tracker.links(&a.key).await, "links of a"),
        vec![tests.clone()]
    );
    let of_b = ok(tracker.links(&b.key).await, "links of b");
    assert_eq!(of_b.len(), 2, "{of_b:?}");
    assert!(of_b.contains(&tests) && of_b.contains(&blocks), "{of_b:?}");
    assert_eq!(ok(tracker.links(&c.key).await, "links of c"), vec![blocks]);
    let ghost = Issue {
        key: format!("{p}-999"),
        ..a.clone()
    };
    expect_err(
        tracker.link_issues(link(&a, &ghost, "relates to")).await,
        Expected::NotFound,
        &[&ghost.key],
        "link to an unknown issue",
    );
}

/// Comments come back oldest first; a replayed key returns the original
/// comment and adds nothing.
pub async fn comments_are_idempotent_and_ordered(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let it = issue(&tracker, &p, IssueKind::Bug, "Talk about me").await;
    assert!(ok(tracker.comments(&it.key).await, "no comments yet").is_empty());
    let comment = |body: &str| NewComment {
        issue: it.key.clone(),
        body: body.to_string(),
        idempotency_key: fresh_key(body),
    };
    let first_call = comment("First!");
    let first = ok(
        tracker.add_comment(first_call.clone()).await,
        "first comment",
    );
    assert_eq!(
        (first.issue.as_str(), first.body.as_str()),
        (it.key.as_str(), "First!")
    );
    let second = ok(
        tracker.add_comment(comment("Second.")).await,
        "second comment",
    );
    let replay = NewComment {
        body: "Edited?".to_string(),
        ..first_call
    };
    assert_eq!(
        ok(tracker.add_comment(replay).await, "replayed comment"),
        first
    );
    assert_ne!(first.id, second.id);
    assert_eq!(
        ok(tracker.comments(&it.key).await, "comments"),
        vec![first, second]
    );
}

/// Attachments keep name, type and size; a replayed key returns the
/// original; a file name with a path is invalid input.
pub async fn attachments_are_idempotent(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let it = issue(&tracker, &p, IssueKind::Task, "Attach here").await;
    let call = NewAttachment {
        issue: it.key.clone(),
        filename: "report.txt".to_string(),
        media_type: "text/plain".to_string(),
        content: b"5 passed".to_vec(),
        idempotency_key: fresh_key("report"),
    };
    let added = ok(tracker.add_attachment(call.clone()).await, "add_attachment");
    assert_eq!(added.issue, it.key);
    assert_eq!(added.filename, "report.txt");
    assert_eq!(added.media_type, "text/plain");
    assert_eq!(added.size, 8);
    let replay = NewAttachment {
        content: b"something else".to_vec(),
        ..call.clone()
    };
    assert_eq!(
        ok(tracker.add_attachment(replay).await, "replayed attachment"),
        added
    );
    assert_eq!(
        ok(tracker.attachments(&it.key).await, "attachments"),
        vec![added]
    );
    expect_err(
        tracker
            .add_attachment(NewAttachment {
                filename: "../escape.txt".to_string(),
                idempotency_key: fresh_key("escape"),
                ..call
            })
            .await,
        Expected::InvalidInput,
        &["escape.txt"],
        "attachment named with a path",
    );
}

/// Unknown issues and projects are not found, whatever the call.
pub async fn unknown_issues_are_not_found(tracker: Arc<dyn Tracker>) {
    let p = project(&tracker).await;
    let missing = format!("{p}-999");
    expect_err(
        tracker.get_issue(&missing).await,
        Expected::NotFound,
        &[&missing],
        "get_issue",
    );
    expect_err(
        tracker.transition_issue(&missing, "Done").await,
        Expected::NotFound,
        &[&missing],
        "transition_issue",
    );
    expect_err(
        tracker.links(&missing).await,
        Expected::NotFound,
        &[&missing],
        "links",
    );
    expect_err(
        tracker.comments(&missing).await,
        Expected::NotFound,
        &[&missing],
        "comments",
    );
    expect_err(
        tracker.attachments(&missing).await,
        Expected::NotFound,
        &[&missing],
        "attachments",
    );
    expect_err(
        tracker
            .add_comment(NewComment {
                issue: missing.clone(),
                body: "Hello?".to_string(),
                idempotency_key: fresh_key("ghost"),
            })
            .await,
        Expected::NotFound,
        &[&missing],
        "add_comment",
    );
    let unknown_project = unique_key("U");
    expect_err(
        tracker.list_issues(&unknown_project).await,
        Expected::NotFound,
        &[&unknown_project],
        "list_issues",
    );
    let in_unknown = format!("{unknown_project}-1");
    expect_err(
        tracker.get_issue(&in_unknown).await,
        Expected::NotFound,
        &[],
        "get_issue",
    );
}

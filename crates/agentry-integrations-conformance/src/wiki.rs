//! The `Wiki` behaviours.

use std::sync::Arc;

use agentry_core::{NewPage, Page, PageUpdate, Wiki};

use crate::{expect_err, fresh_key, ok, unique_key, Expected};

/// Runs every wiki behaviour in turn.
pub async fn wiki_suite(wiki: Arc<dyn Wiki>) {
    spaces_are_ensured_once(wiki.clone()).await;
    pages_list_parents_before_children(wiki.clone()).await;
    create_page_is_idempotent(wiki.clone()).await;
    create_page_rejects_bad_input(wiki.clone()).await;
    pages_keep_their_versions(wiki.clone()).await;
    unknown_pages_are_not_found(wiki).await;
}

async fn space(wiki: &Arc<dyn Wiki>) -> String {
    let key = unique_key("W");
    ok(wiki.ensure_space(&key, "Conformance").await, "ensure_space");
    key
}

fn new_page(space: &str, title: &str, parent: Option<&Page>) -> NewPage {
    NewPage {
        space: space.to_string(),
        title: title.to_string(),
        parent_id: parent.map(|p| p.id.clone()),
        body: format!("# {title}\n\nAbout {title}.\n"),
        idempotency_key: fresh_key(title),
    }
}

async fn page(wiki: &Arc<dyn Wiki>, space: &str, title: &str, parent: Option<&Page>) -> Page {
    ok(
        wiki.create_page(new_page(space, title, parent)).await,
        title,
    )
}

fn update(page: &Page, body: &str, expected: Option<u32>) -> PageUpdate {
    PageUpdate {
        id: page.id.clone(),
        title: None,
        body: body.to_string(),
        expected_version: expected,
        idempotency_key: fresh_key(body),
    }
}

/// Ensuring a space twice returns it both times.
pub async fn spaces_are_ensured_once(wiki: Arc<dyn Wiki>) {
    let key = unique_key("W");
    let first = ok(wiki.ensure_space(&key, "Docs").await, "ensure_space");
    assert_eq!(first.key, key);
    assert_eq!(first.name, "Docs");
    assert_eq!(
        ok(wiki.ensure_space(&key, "Docs").await, "ensure_space again"),
        first
    );
    assert!(ok(wiki.list_pages(&key).await, "list_pages").is_empty());
}

/// Pages form a tree; list_pages returns every page, each after its parent.
pub async fn pages_list_parents_before_children(wiki: Arc<dyn Wiki>) {
    let s = space(&wiki).await;
    let overview = page(&wiki, &s, "Overview", None).await;
    let guide = page(&wiki, &s, "Guide", None).await;
    let api = page(&wiki, &s, "API", Some(&overview)).await;
    let endpoints = page(&wiki, &s, "Endpoints", Some(&api)).await;
    let faq = page(&wiki, &s, "FAQ", Some(&guide)).await;
    let errors = page(&wiki, &s, "Errors", Some(&overview)).await;
    assert_eq!(api.parent_id.as_deref(), Some(overview.id.as_str()));
    assert_eq!(endpoints.parent_id.as_deref(), Some(api.id.as_str()));
    assert_eq!(overview.version, 1);
    assert_eq!(api.space, s);
    assert_eq!(api.body, "# API\n\nAbout API.\n");
    let listed = ok(wiki.list_pages(&s).await, "list_pages");
    let mut ids: Vec<&str> = listed.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = [&overview, &guide, &api, &endpoints, &faq, &errors]
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    for (i, p) in listed.iter().enumerate() {
        if let Some(parent) = &p.parent_id {
            let at = listed.iter().position(|q| &q.id == parent);
            assert!(
                at.is_some_and(|at| at < i),
                "`{}` is listed before its parent: {:?}",
                p.title,
                listed.iter().map(|q| &q.title).collect::<Vec<_>>()
            );
        }
    }
    assert_eq!(
        ok(wiki.get_page(&endpoints.id).await, "get_page"),
        endpoints
    );
}

/// A create with a key seen before returns the original page, even when
/// the other fields differ, and creates nothing.
pub async fn create_page_is_idempotent(wiki: Arc<dyn Wiki>) {
    let s = space(&wiki).await;
    let call = new_page(&s, "Once", None);
    let first = ok(wiki.create_page(call.clone()).await, "create_page");
    let replay = NewPage {
        title: "Twice".to_string(),
        body: "other".to_string(),
        ..call
    };
    assert_eq!(
        ok(wiki.create_page(replay).await, "create_page replayed"),
        first
    );
    assert_eq!(ok(wiki.list_pages(&s).await, "list_pages"), vec![first]);
}

/// Duplicate titles, unknown spaces or parents, parents in another space
/// and empty titles are invalid input.
pub async fn create_page_rejects_bad_input(wiki: Arc<dyn Wiki>) {
    let s = space(&wiki).await;
    let other = space(&wiki).await;
    let home = page(&wiki, &s, "Home", None).await;
    let elsewhere = page(&wiki, &other, "Elsewhere", None).await;
    let unknown_space = unique_key("U");
    let cases = [
        (new_page(&s, "Home", None), "duplicate title", vec!["Home"]),
        (
            new_page(&unknown_space, "Lost", None),
            "unknown space",
            vec![unknown_space.as_str()],
        ),
        (
            NewPage {
                parent_id: Some("999999999".to_string()),
                ..new_page(&s, "Orphan", None)
            },
            "unknown parent",
            vec!["999999999"],
        ),
        (
            new_page(&s, "Cross", Some(&elsewhere)),
            "parent in another space",
            vec![],
        ),
        (new_page(&s, " ", None), "empty title", vec!["title"]),
    ];
    for (new, step, mentions) in cases {
        expect_err(
            wiki.create_page(new).await,
            Expected::InvalidInput,
            &mentions,
            step,
        );
    }
    assert_eq!(ok(wiki.list_pages(&s).await, "list_pages"), vec![home]);
}

/// Create is version 1, each update the next; old versions stay readable;
/// a stale `expected_version` is a conflict; a replayed update key is a
/// no-op; renaming onto another page's title is invalid input.
pub async fn pages_keep_their_versions(wiki: Arc<dyn Wiki>) {
    let s = space(&wiki).await;
    let neighbour = page(&wiki, &s, "Neighbour", None).await;
    let created = ok(
        wiki.create_page(NewPage {
            body: "one".to_string(),
            ..new_page(&s, "Design", None)
        })
        .await,
        "create_page",
    );
    assert_eq!(created.version, 1);
    let v2_call = PageUpdate {
        title: Some("Design v2".to_string()),
        ..update(&created, "two", Some(1))
    };
    let v2 = ok(wiki.update_page(v2_call.clone()).await, "update to v2");
    assert_eq!(
        (v2.version, v2.title.as_str(), v2.body.as_str()),
        (2, "Design v2", "two")
    );
    assert_eq!(v2.id, created.id);
    expect_err(
        wiki.update_page(update(&created, "stale", Some(1))).await,
        Expected::Conflict,
        &[],
        "update with a stale expected_version",
    );
    let replay = PageUpdate {
        body: "replayed".to_string(),
        ..v2_call
    };
    assert_eq!(ok(wiki.update_page(replay).await, "replayed update"), v2);
    let v3 = ok(
        wiki.update_page(update(&v2, "three", None)).await,
        "update to v3",
    );
    assert_eq!(v3.version, 3);
    assert_eq!(ok(wiki.get_page(&created.id).await, "get_page"), v3);
    let versions = ok(wiki.page_versions(&created.id).await, "page_versions");
    let summary: Vec<(u32, &str, &str)> = versions
        .iter()
        .map(|v| (v.version, v.title.as_str(), v.body.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "Design", "one"),
            (2, "Design v2", "two"),
            (3, "Design v2", "three")
        ]
    );
    assert!(versions.iter().all(|v| v.page_id == created.id));
    expect_err(
        wiki.update_page(PageUpdate {
            title: Some(neighbour.title.clone()),
            ..update(&v3, "four", None)
        })
        .await,
        Expected::InvalidInput,
        &["Neighbour"],
        "rename onto another page's title",
    );
    assert_eq!(ok(wiki.get_page(&created.id).await, "get_page").version, 3);
}

/// Unknown pages and spaces are not found.
pub async fn unknown_pages_are_not_found(wiki: Arc<dyn Wiki>) {
    let missing = "999999999";
    expect_err(
        wiki.get_page(missing).await,
        Expected::NotFound,
        &[missing],
        "get_page",
    );
    expect_err(
        wiki.page_versions(missing).await,
        Expected::NotFound,
        &[missing],
        "page_versions",
    );
    expect_err(
        wiki.update_page(PageUpdate {
            id: missing.to_string(),
            title: None,
            body: "x".to_string(),
            expected_version: None,
            idempotency_key: fresh_key("ghost"),
        })
        .await,
        Expected::NotFound,
        &[missing],
        "update_page",
    );
    let unknown_space = unique_key("U");
    expect_err(
        wiki.list_pages(&unknown_space).await,
        Expected::NotFound,
        &[&unknown_space],
        "list_pages",
    );
}

//! Behavioural suites for the `Tracker`, `Wiki` and `CodeHost` ports and
//! for the `IntegrationResolver` that hands them out per owner: one public
//! async function per behaviour, plus macros that expand them into named
//! `#[tokio::test]`s.
//!
//! Every adapter of these ports runs the same suites: the local adapters
//! against a temporary directory, and the Jira, Confluence and GitLab
//! clients, when they come, against their contract servers. Key design
//! decision: the suites talk to the port ONLY (no peeking at tables, files
//! or HTTP), and every test makes its own uniquely named project, space or
//! repository, so they can run in parallel against one shared backend
//! without colliding.
//!
//! ```text
//! async fn make_tracker() -> Fixture<dyn Tracker> { /* ... */ }
//! agentry_integrations_conformance::tracker_conformance!(make_tracker);
//! ```
//!
//! The test crate needs `tokio` (with the `macros` and `rt` features).

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use agentry_core::{Error, IdempotencyKey, Result};

pub mod code_host;
pub mod owners;
pub mod tracker;
pub mod wiki;

pub use code_host::code_host_suite;
pub use owners::{owners_suite, unique_tenant};
pub use tracker::tracker_suite;
pub use wiki::wiki_suite;

/// A port under test plus whatever must live as long as it (a temporary
/// directory, a contract server handle).
pub struct Fixture<P: ?Sized> {
    port: Arc<P>,
    _guard: Option<Box<dyn Any + Send>>,
}

impl<P: ?Sized> Fixture<P> {
    /// A fixture with nothing else to keep alive.
    pub fn new(port: Arc<P>) -> Self {
        Fixture { port, _guard: None }
    }

    /// A fixture that keeps `guard` alive until the test ends.
    pub fn with_guard(port: Arc<P>, guard: impl Any + Send) -> Self {
        Fixture {
            port,
            _guard: Some(Box::new(guard)),
        }
    }

    /// The port under test, shared with each behaviour the suite runs.
    pub fn port(&self) -> Arc<P> {
        self.port.clone()
    }
}

/// A fresh key for a project or space: `prefix` plus random upper-case hex,
/// 10 characters at most, so it satisfies Jira and Confluence key rules.
pub fn unique_key(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let mut key = prefix.to_string();
    key.push_str(&hex[..10usize.saturating_sub(prefix.len()).min(hex.len())]);
    key
}

/// A fresh repository name: `conf-` plus random lower-case hex.
pub fn unique_repo_name() -> String {
    format!("conf-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh idempotency key.
pub fn fresh_key(item: &str) -> IdempotencyKey {
    IdempotencyKey(format!("conformance:{}/{item}", uuid::Uuid::new_v4()))
}

/// The success value, or a panic naming the step and the error.
#[track_caller]
pub fn ok<T>(result: Result<T>, step: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{step}: unexpected error: {error}"),
    }
}

/// Which error a step must fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// [`Error::InvalidInput`].
    InvalidInput,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::Conflict`].
    Conflict,
}

/// Asserts that `result` failed with `expected`, its message containing
/// every one of `mentions`.
#[track_caller]
pub fn expect_err<T: Debug>(result: Result<T>, expected: Expected, mentions: &[&str], step: &str) {
    let error = match result {
        Ok(value) => panic!("{step}: expected {expected:?}, got Ok({value:?})"),
        Err(error) => error,
    };
    let matches = matches!(
        (&error, expected),
        (Error::InvalidInput(_), Expected::InvalidInput)
            | (Error::NotFound(_), Expected::NotFound)
            | (Error::Conflict(_), Expected::Conflict)
    );
    assert!(matches, "{step}: expected {expected:?}, got {error:?}");
    let text = error.to_string();
    for mention in mentions {
        assert!(
            text.contains(mention),
            "{step}: the error `{text}` should mention `{mention}`"
        );
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($module:ident, $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = ($factory)().await;
                $crate::$module::$name(fixture.port()).await;
            }
        )*
    };
}

/// Expands to a `mod tracker_conformance` with one `#[tokio::test]` per
/// tracker behaviour. `$factory` is an async fn (or closure returning a
/// future) producing a fresh [`Fixture<dyn Tracker>`](Fixture).
#[macro_export]
macro_rules! tracker_conformance {
    ($factory:expr) => {
        mod tracker_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_tests!(tracker, $factory;
                project_keys_are_validated,
                issue_keys_are_sequential_per_project,
                create_issue_is_idempotent,
                create_issue_rejects_bad_input,
                parents_follow_the_hierarchy,
                issues_move_between_statuses,
                links_show_from_both_ends,
                comments_are_idempotent_and_ordered,
                attachments_are_idempotent,
                unknown_issues_are_not_found,
            );
        }
    };
}

/// Expands to a `mod wiki_conformance` with one `#[tokio::test]` per wiki
/// behaviour; `$factory` produces a fresh [`Fixture<dyn Wiki>`](Fixture).
#[macro_export]
macro_rules! wiki_conformance {
    ($factory:expr) => {
        mod wiki_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_tests!(wiki, $factory;
                spaces_are_ensured_once,
                pages_list_parents_before_children,
                create_page_is_idempotent,
                create_page_rejects_bad_input,
                pages_keep_their_versions,
                unknown_pages_are_not_found,
            );
        }
    };
}

/// Expands to a `mod code_host_conformance` with one `#[tokio::test]` per
/// code host behaviour; `$factory` produces a fresh
/// [`Fixture<dyn CodeHost>`](Fixture).
#[macro_export]
macro_rules! code_host_conformance {
    ($factory:expr) => {
        mod code_host_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_tests!(code_host, $factory;
                repositories_are_created_once,
                several_files_land_in_one_commit,
                commits_are_idempotent_by_key,
                files_can_be_deleted,
                commit_rejects_bad_input,
                files_over_the_size_limits_are_refused,
                branches_are_created_from_others,
                merge_request_lifecycle,
                conflicting_merge_keeps_the_request_open,
                closed_merge_requests_do_not_merge,
                unknown_code_things_are_not_found,
            );
        }
    };
}

/// Expands to a `mod owners_conformance` with one `#[tokio::test]` per
/// owner behaviour (two owners with the same names get disjoint
/// artifacts); `$factory` produces a fresh
/// [`Fixture<dyn IntegrationResolver>`](Fixture).
#[macro_export]
macro_rules! owners_conformance {
    ($factory:expr) => {
        mod owners_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_tests!(owners, $factory;
                owners_with_the_same_project_key_get_disjoint_trackers,
                owners_with_the_same_space_key_get_disjoint_wikis,
                owners_with_the_same_repository_name_get_disjoint_code_hosts,
                no_tenant_reaches_the_command_lines_namespace,
            );
        }
    };
}

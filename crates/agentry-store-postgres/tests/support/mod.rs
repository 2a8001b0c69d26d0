//! Test fixtures: the test database's URL and fresh, isolated stores on it.
//!
//! Every store is [`PostgresStore::connect_temporary`]: a new schema
//! `t_<uuid>` in the database at `AGENTRY_TEST_DATABASE_URL`, dropped when the
//! store is dropped. A database that cannot be reached FAILS the test, with
//! the URL and how to start the local server: these tests never skip.

#![allow(dead_code)]

use agentry_store_postgres::{PostgresOptions, PostgresStore};

/// The default test database (PostgreSQL 15 on this machine, trust auth).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `AGENTRY_TEST_DATABASE_URL`, or [`DEFAULT_URL`].
pub fn database_url() -> String {
    std::env::var("AGENTRY_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// `url` with its password, if any, replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// Panics with a message naming the URL and how to start the server.
pub fn unreachable(url: &str, error: impl std::fmt::Display) -> ! {
    let url = redacted(url);
    panic!(
        "cannot open a PostgreSQL store at {url}: {error}\n\
         These tests need a running PostgreSQL server. Start the local one with\n\
         `pg_ctlcluster --skip-systemctl-redirect 15 main start` (and create the \
         database with `createdb -h 127.0.0.1 -U postgres test`), or point \
         AGENTRY_TEST_DATABASE_URL at another server."
    )
}

/// A fresh, empty store in a schema of its own.
pub async fn fresh_store_with(options: PostgresOptions) -> PostgresStore {
    let url = database_url();
    match PostgresStore::connect_temporary(&url, options).await {
        Ok(store) => store,
        Err(error) => unreachable(&url, error),
    }
}

/// [`fresh_store_with`] the default options.
pub async fn fresh_store() -> PostgresStore {
    fresh_store_with(PostgresOptions::default()).await
}

//! Connection options of the PostgreSQL store.

use std::time::Duration;

/// How [`crate::PostgresStore::connect`] sets up its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Schema to keep the store's tables in. When set, it is created if
    /// missing, every pooled connection sets its `search_path` to it (and to
    /// it only), and the migrations run in it; several stores can then share
    /// one database. None: the server's default `search_path` (`public`).
    pub schema: Option<String>,
    /// Most connections the pool opens (default 10).
    pub max_connections: u32,
    /// How long an operation waits for a pooled connection before failing
    /// with a transient error (default 10 s).
    pub acquire_timeout: Duration,
    /// `statement_timeout` of every connection (default 30 s; zero disables
    /// it). Lock waits count against it.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresOptions {
    /// Keeps the store's tables in `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets the pool's size.
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets how long an operation waits for a connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets every connection's `statement_timeout`.
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The whole-operation bound: waiting for a connection plus one
    /// statement's worth of work. None when statements are unbounded.
    pub(crate) fn operation_timeout(&self) -> Option<Duration> {
        (!self.statement_timeout.is_zero()).then(|| self.acquire_timeout + self.statement_timeout)
    }
}

/// `name` quoted as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements every pooled connection runs once, when it opens.
pub(crate) fn session_sql(options: &PostgresOptions) -> String {
    let mut sql = String::new();
    if let Some(schema) = &options.schema {
        sql.push_str(&format!("SET search_path TO {};\n", quote_ident(schema)));
    }
    sql.push_str(&format!(
        "SET statement_timeout = {};\n",
        options.statement_timeout.as_millis()
    ));
    // The commit protocol relies on READ COMMITTED's re-read of a locked
    // row (see the crate docs), whatever the server's default is.
    sql.push_str("SET default_transaction_isolation = 'read committed';\n");
    // Every statement of the store is short and touches few rows; JIT
    // compiling one costs milliseconds of CPU and saves nothing. The
    // planner's estimates for the churning outbox tables cross
    // `jit_above_cost` now and then (measured: an eighth of the server's
    // CPU under the engine benchmark).
    sql.push_str("SET jit = off;\n");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("t_1"), "\"t_1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn session_sets_the_schema_and_timeouts() {
        let sql = session_sql(&PostgresOptions::default().with_schema("t_x"));
        assert!(sql.contains("search_path TO \"t_x\""), "{sql}");
        assert!(sql.contains("statement_timeout = 30000"), "{sql}");
        let sql = session_sql(&PostgresOptions::default());
        assert!(!sql.contains("search_path"), "{sql}");
    }
}

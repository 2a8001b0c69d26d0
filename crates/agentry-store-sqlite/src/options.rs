//! How a [`crate::SqliteStore`] opens its file and batches its writes.

use std::time::Duration;

use agentry_core::Error;

/// SQLite's `synchronous` setting for the store's connections.
///
/// In WAL mode, `Full` syncs the WAL on every commit (a committed task
/// survives a power cut; LangGraph's `SqliteSaver` runs WAL with this
/// default), while `Normal` syncs only at checkpoints (a commit survives a
/// process crash but may be lost on power failure; faster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `PRAGMA synchronous = FULL` (default).
    #[default]
    Full,
    /// `PRAGMA synchronous = NORMAL`.
    Normal,
}

impl Synchronous {
    /// The pragma value (`full`, `normal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }

    pub(crate) fn to_sqlx(self) -> sqlx::sqlite::SqliteSynchronous {
        match self {
            Synchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
            Synchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
        }
    }
}

impl std::fmt::Display for Synchronous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Synchronous {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            _ => Err(Error::invalid(format!(
                "unknown SQLite synchronous setting `{s}` (expected `full` or `normal`)"
            ))),
        }
    }
}

/// Options of [`crate::SqliteStore::open`]. `Default` is what production uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStoreOptions {
    /// Durability of each commit (default `Full`).
    pub synchronous: Synchronous,
    /// How long a connection waits for SQLite's write lock (held by another
    /// process sharing the file) before failing with a transient error
    /// (default 5 s). Also bounds opening the file.
    pub busy_timeout: Duration,
    /// The most queued write requests committed in one transaction (default 256).
    pub max_batch: usize,
    /// Write requests that may wait for the writer before callers wait to
    /// enqueue (default 4096).
    pub queue_capacity: usize,
    /// Connections in the read pool (default 4).
    pub read_connections: u32,
    /// The longest a caller waits for one read or write before getting
    /// [`Error::Timeout`] (default 30 s).
    pub operation_timeout: Duration,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        SqliteStoreOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
            queue_capacity: 4096,
            read_connections: 4,
            operation_timeout: Duration::from_secs(30),
        }
    }
}

impl SqliteStoreOptions {
    /// These options with `synchronous` set.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// These options with `max_batch` set (at least 1).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_parses_case_insensitively_and_names_choices() {
        assert_eq!("FULL".parse::<Synchronous>().unwrap(), Synchronous::Full);
        assert_eq!(
            " normal ".parse::<Synchronous>().unwrap(),
            Synchronous::Normal
        );
        let error = "off".parse::<Synchronous>().unwrap_err().to_string();
        assert!(
            error.contains("`off`") && error.contains("normal"),
            "{error}"
        );
    }
}

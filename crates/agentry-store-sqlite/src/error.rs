//! Classifies sqlx/SQLite failures into Agentry's error classes.

use agentry_core::Error;

/// SQLite primary result codes we classify (`code & 0xff`).
mod code {
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const NOMEM: i64 = 7;
    pub const INTERRUPT: i64 = 9;
    pub const IOERR: i64 = 10;
    pub const CORRUPT: i64 = 11;
    pub const FULL: i64 = 13;
    pub const CANTOPEN: i64 = 14;
    pub const PROTOCOL: i64 = 15;
    pub const CONSTRAINT: i64 = 19;
    pub const NOTADB: i64 = 26;
    /// `SQLITE_CONSTRAINT_PRIMARYKEY` (extended).
    pub const CONSTRAINT_PRIMARYKEY: i64 = 1555;
}

/// The SQLite extended result code of a database error, if it is one.
pub(crate) fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i64>().ok()),
        _ => None,
    }
}

/// True for `SQLITE_CONSTRAINT_PRIMARYKEY`.
pub(crate) fn is_primary_key_violation(error: &sqlx::Error) -> bool {
    sqlite_code(error) == Some(code::CONSTRAINT_PRIMARYKEY)
}

/// True when SQLite gave up waiting for a lock (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes).
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    matches!(
        sqlite_code(error).map(|c| c & 0xff),
        Some(code::BUSY) | Some(code::LOCKED)
    )
}

/// True when the file is not a SQLite database or is corrupt.
pub(crate) fn is_not_a_database(error: &sqlx::Error) -> bool {
    matches!(
        sqlite_code(error).map(|c| c & 0xff),
        Some(code::NOTADB) | Some(code::CORRUPT)
    )
}

/// Maps a sqlx error to Agentry's classified error, prefixed with `what`.
///
/// Busy/locked databases, I/O errors, pool timeouts and a crashed connection
/// worker are transient (retrying may succeed); constraint and schema
/// violations, corrupt files and decode failures are permanent; a missing row
/// is not found.
pub(crate) fn db_error(what: &str, error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::RowNotFound => Error::not_found(format!("{what}: no such row")),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::transient(format!("{what}: {error}")),
        sqlx::Error::Database(_) => {
            let primary = sqlite_code(&error).map(|c| c & 0xff);
            match primary {
                Some(
                    code::BUSY
                    | code::LOCKED
                    | code::NOMEM
                    | code::INTERRUPT
                    | code::IOERR
                    | code::FULL
                    | code::CANTOPEN
                    | code::PROTOCOL,
                ) => Error::transient(format!("{what}: {error}")),
                Some(code::CONSTRAINT) => {
                    Error::permanent(format!("{what}: constraint violated: {error}"))
                }
                _ => Error::permanent(format!("{what}: {error}")),
            }
        }
        _ => Error::permanent(format!("{what}: {error}")),
    }
}

/// A stored value that does not decode: the row is corrupt or was written by
/// something else.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::permanent(format!("corrupt row in {what}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentry_core::ErrorClass;

    #[test]
    fn pool_and_io_failures_are_transient() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::other("disk hiccup")),
            sqlx::Error::WorkerCrashed,
        ] {
            assert_eq!(db_error("x", error).class(), ErrorClass::Transient);
        }
    }

    #[test]
    fn missing_row_is_not_found() {
        assert!(matches!(
            db_error("workflow 1", sqlx::Error::RowNotFound),
            Error::NotFound(m) if m.contains("workflow 1")
        ));
    }
}

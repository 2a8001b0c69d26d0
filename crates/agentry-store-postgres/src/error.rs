//! Classifies sqlx/PostgreSQL failures into Agentry's error classes, by
//! SQLSTATE (never by message).

use agentry_core::Error;

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// True for `unique_violation` (23505).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    sqlstate(error).as_deref() == Some("23505")
}

/// True when the SQLSTATE means "try again": serialization failures and
/// deadlocks (40001, 40P01), lock and statement timeouts (55P03, 57014),
/// the server shutting down or starting (57P01-57P03), lost connections
/// (class 08), exhausted resources (class 53) and system errors (class 58).
fn is_transient_state(state: &str) -> bool {
    matches!(
        state,
        "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
    ) || state.starts_with("08")
        || state.starts_with("53")
        || state.starts_with("58")
}

/// Maps a sqlx error to Agentry's classified error, prefixed with `what`.
///
/// Unreachable servers, pool timeouts, lost connections, serialization
/// failures, deadlocks and statement timeouts are transient; a unique
/// violation is a conflict; a value PostgreSQL refuses (class 22: too long
/// for its column, a NUL character, ...) is invalid input; other constraint
/// and schema violations, and decode failures, are permanent; a missing row
/// is not found.
pub(crate) fn db_error(what: &str, error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::RowNotFound => Error::not_found(format!("{what}: no such row")),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::transient(format!("{what}: {error}")),
        sqlx::Error::Database(_) => {
            let state = sqlstate(&error).unwrap_or_default();
            if is_transient_state(&state) {
                Error::transient(format!("{what}: {error} (SQLSTATE {state})"))
            } else if state == "23505" {
                Error::Conflict(format!("{what}: {error}"))
            } else if state.starts_with("22") {
                Error::invalid(format!("{what}: {error} (SQLSTATE {state})"))
            } else {
                Error::permanent(format!("{what}: {error} (SQLSTATE {state})"))
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
            sqlx::Error::Io(std::io::Error::other("connection reset")),
            sqlx::Error::WorkerCrashed,
        ] {
            assert_eq!(db_error("x", error).class(), ErrorClass::Transient);
        }
    }

    #[test]
    fn retryable_states_are_transient() {
        for state in ["40001", "40P01", "57014", "08006", "53300", "57P03"] {
            assert!(is_transient_state(state), "{state}");
        }
        for state in ["23505", "23503", "42P01", "22001"] {
            assert!(!is_transient_state(state), "{state}");
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

//! The one error type every port returns, classified where it arises.
//!
//! The engine's retry policy reads [`Error::class`]; it never parses messages.

use std::time::Duration;

/// Result with Agentry's classified [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the engine (and the gateway) must treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// May succeed if tried again (connection reset, timeout, 5xx, busy database).
    Transient,
    /// The callee asked us to slow down; retry after the given delay.
    RateLimited,
    /// Will fail the same way again; fail the node.
    Permanent,
    /// The caller's input is wrong (4xx); do not retry, report what is wrong.
    InvalidInput,
    /// A cost or token budget would be exceeded; stop until a human raises
    /// the budget and resumes.
    BudgetExceeded,
}

impl ErrorClass {
    /// Whether the engine may retry a node that failed with this class.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::RateLimited)
    }

    /// Stable lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Permanent => "permanent",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::BudgetExceeded => "budget_exceeded",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors returned by every port and by the engine.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A failure that may pass if retried (I/O hiccup, busy database, 5xx).
    #[error("transient failure: {0}")]
    Transient(String),
    /// The callee rate-limited us.
    #[error("rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {} ms)", d.as_millis())).unwrap_or_default())]
    RateLimited {
        /// What the callee said.
        message: String,
        /// How long the callee asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// A failure that will repeat: fail the node.
    #[error("{0}")]
    Permanent(String),
    /// The input is wrong; the message names what is wrong.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation conflicts with the current state (e.g. approving a
    /// workflow that is not awaiting approval).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation ran longer than its limit.
    #[error("timed out after {} ms: {what}", after.as_millis())]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit that was hit.
        after: Duration,
    },
    /// The workflow or task was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A budget would be exceeded; the message names the role and figures.
    #[error("budget_exceeded: {0}")]
    BudgetExceeded(String),
}

impl Error {
    /// The class that drives retries and HTTP status codes.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Transient(_) | Error::Timeout { .. } => ErrorClass::Transient,
            Error::RateLimited { .. } => ErrorClass::RateLimited,
            Error::Permanent(_) | Error::Conflict(_) | Error::Cancelled(_) => ErrorClass::Permanent,
            Error::InvalidInput(_) | Error::NotFound(_) => ErrorClass::InvalidInput,
            Error::BudgetExceeded(_) => ErrorClass::BudgetExceeded,
        }
    }

    /// The delay the callee asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Shorthand for [`Error::Transient`].
    pub fn transient(msg: impl std::fmt::Display) -> Self {
        Error::Transient(msg.to_string())
    }

    /// Shorthand for [`Error::Permanent`].
    pub fn permanent(msg: impl std::fmt::Display) -> Self {
        Error::Permanent(msg.to_string())
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(msg: impl std::fmt::Display) -> Self {
        Error::InvalidInput(msg.to_string())
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(msg: impl std::fmt::Display) -> Self {
        Error::NotFound(msg.to_string())
    }

    /// Prefix the message with context, keeping the class.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            Error::Transient(m) => Error::Transient(format!("{ctx}: {m}")),
            Error::RateLimited {
                message,
                retry_after,
            } => Error::RateLimited {
                message: format!("{ctx}: {message}"),
                retry_after,
            },
            Error::Permanent(m) => Error::Permanent(format!("{ctx}: {m}")),
            Error::InvalidInput(m) => Error::InvalidInput(format!("{ctx}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{ctx}: {m}")),
            Error::Conflict(m) => Error::Conflict(format!("{ctx}: {m}")),
            Error::Timeout { what, after } => Error::Timeout {
                what: format!("{ctx}: {what}"),
                after,
            },
            Error::Cancelled(m) => Error::Cancelled(format!("{ctx}: {m}")),
            Error::BudgetExceeded(m) => Error::BudgetExceeded(format!("{ctx}: {m}")),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::Permanent(format!("JSON: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_drive_retry() {
        assert!(Error::transient("x").class().is_retryable());
        assert!(Error::Timeout {
            what: "node".into(),
            after: Duration::from_secs(1)
        }
        .class()
        .is_retryable());
        assert!(!Error::permanent("x").class().is_retryable());
        assert!(!Error::invalid("x").class().is_retryable());
        assert_eq!(
            Error::transient("boom").context("store").to_string(),
            "transient failure: store: boom"
        );
    }
}

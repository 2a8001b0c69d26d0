//! Access ports for the API gateway: stored API keys ([`ApiKeyStore`]) and
//! shared rate-limit buckets ([`RateLimiter`]).
//!
//! Key design decision: a key's secret is never stored. The gateway hands
//! the caller `agk_<id>_<secret>` once and keeps only the id and a hash of
//! the secret; a lookup is by id, so verification is one row read and one
//! constant-time comparison. The SQLite, PostgreSQL and memory stores
//! implement [`ApiKeyStore`]; the in-process limiter of
//! `agentry-store-memory` and the Redis one (buckets shared by gateway
//! replicas) implement [`RateLimiter`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a caller may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// Read workflows, their history, events and agents.
    Viewer,
    /// Also submit, approve, reject, cancel and resume workflows.
    Operator,
    /// Also manage API keys of its tenant.
    Admin,
}

impl AccessRole {
    /// Every role, lowest first.
    pub const ALL: [AccessRole; 3] = [AccessRole::Viewer, AccessRole::Operator, AccessRole::Admin];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Operator => "operator",
            AccessRole::Admin => "admin",
        }
    }

    /// Whether this role includes `needed`.
    pub fn allows(self, needed: AccessRole) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for AccessRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccessRole {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(AccessRole::Viewer),
            "operator" => Ok(AccessRole::Operator),
            "admin" => Ok(AccessRole::Admin),
            other => Err(Error::invalid(format!(
                "unknown access role `{other}`: use viewer, operator or admin"
            ))),
        }
    }
}

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id (the `<id>` of `agk_<id>_<secret>`), unique.
    pub id: String,
    /// Tenant whose workflows the key reaches.
    pub tenant: String,
    /// What the key may do.
    pub role: AccessRole,
    /// Free-form label.
    pub name: String,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// When the key was issued (UTC); keys are listed oldest first.
    pub created_at: DateTime<Utc>,
    /// When it was first revoked (UTC); `None` while it is valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// Whether the key is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// Stored API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Stores a new key. A key with the same id is [`Error::Conflict`].
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()>;

    /// A key by id (revoked ones included), or None.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>>;

    /// Keys, oldest first; of one tenant or of all.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>>;

    /// Marks a key revoked (idempotent: a second revoke keeps the first
    /// time) and returns it; an unknown id is [`Error::NotFound`].
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord>;
}

/// One rate-limit decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDecision {
    /// Whether the request may go ahead: [`RateLimiter::acquire`] took a
    /// token, or [`RateLimiter::check`] found one there.
    pub allowed: bool,
    /// Whole tokens left in the bucket after this decision.
    pub remaining: u32,
    /// When refused: how long until a token is available.
    pub retry_after: Duration,
}

/// A token-bucket limit: `rate_per_s` tokens refill every second, up to
/// `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub rate_per_s: f64,
    /// Bucket size (requests allowed at once after a quiet period).
    pub burst: u32,
}

impl Default for RateLimit {
    /// 20 requests per second, bursts of 40.
    fn default() -> Self {
        RateLimit {
            rate_per_s: 20.0,
            burst: 40,
        }
    }
}

impl RateLimit {
    /// Checks the limit makes sense.
    pub fn validate(&self) -> Result<()> {
        if !(self.rate_per_s.is_finite() && (0.001..=1e9).contains(&self.rate_per_s)) {
            return Err(Error::invalid(format!(
                "rate limit: rate_per_s must be between 0.001 and 1e9, not {}",
                self.rate_per_s
            )));
        }
        if self.burst == 0 {
            return Err(Error::invalid("rate limit: burst must be at least 1"));
        }
        Ok(())
    }
}

/// Token buckets by key (an API key id or a token subject).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// The adapter's name (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// Takes one token from `key`'s bucket under `limit`, or says how long
    /// to wait. An invalid `limit` is [`Error::InvalidInput`] naming the
    /// field.
    async fn acquire(&self, key: &str, limit: RateLimit) -> Result<RateDecision>;

    /// Whether `key`'s bucket under `limit` holds a token now, without
    /// taking it: the decision [`RateLimiter::acquire`] would make, with
    /// nothing consumed or written (`remaining` counts the token that
    /// would be taken). A bucket never used is full. For limits that cost
    /// only on failure: check first, act, and acquire only when the act
    /// failed (the gateway's failed-authentication limit).
    async fn check(&self, key: &str, limit: RateLimit) -> Result<RateDecision>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_lower_roles() {
        assert!(AccessRole::Admin.allows(AccessRole::Operator));
        assert!(AccessRole::Operator.allows(AccessRole::Viewer));
        assert!(!AccessRole::Viewer.allows(AccessRole::Operator));
        assert!(!AccessRole::Operator.allows(AccessRole::Admin));
    }

    #[test]
    fn roles_parse_and_name_the_culprit() {
        for role in AccessRole::ALL {
            assert_eq!(role.as_str().parse::<AccessRole>().ok(), Some(role));
        }
        let err = "root".parse::<AccessRole>().unwrap_err().to_string();
        assert!(err.contains("root"), "{err}");
    }

    #[test]
    fn rate_limit_validation() {
        assert!(RateLimit {
            rate_per_s: 10.0,
            burst: 5
        }
        .validate()
        .is_ok());
        assert!(RateLimit {
            rate_per_s: 0.0,
            burst: 5
        }
        .validate()
        .is_err());
        assert!(RateLimit {
            rate_per_s: 1.0,
            burst: 0
        }
        .validate()
        .is_err());
    }
}

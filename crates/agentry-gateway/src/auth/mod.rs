//! Authentication: who is calling ([`Principal`]), from an API key or an
//! OAuth 2.0 bearer JWT.
//!
//! Key design decision: every failure is an [`AuthFailure`] whose public
//! text never echoes the credential and never says whether a key id exists
//! (an unknown id and a wrong secret read the same).

pub mod jwt;
pub mod keys;

use agentry_core::AccessRole;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An API key (`agk_<id>_<secret>`).
    ApiKey,
    /// A bearer JWT from the configured issuer.
    Jwt,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Tenant whose workflows the caller reaches.
    pub tenant: String,
    /// What the caller may do.
    pub role: AccessRole,
    /// Stable id for logs and rate limits: the key id, or `jwt:<sub>`.
    pub subject: String,
    /// How it authenticated.
    pub kind: CredentialKind,
}

/// Why a request is not authenticated (401) or not allowed (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// Neither an `Authorization` nor an `x-api-key` header (401).
    #[error("credentials are required: send `Authorization: Bearer <API key or token>`")]
    Missing,
    /// The API key is malformed, unknown, or its secret is wrong.
    #[error("invalid API key")]
    InvalidKey,
    /// The API key was revoked.
    #[error("the API key was revoked")]
    RevokedKey,
    /// The token cannot be decoded or its signature does not verify.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet (`nbf`).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token's `aud` is not the configured audience.
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// The token's `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// The token's `kid` is in no key set, even after refetching it.
    #[error("the token's signing key is unknown")]
    UnknownKeyId,
    /// Bearer tokens are not configured on this server.
    #[error("bearer tokens are not accepted by this server; use an API key")]
    TokensDisabled,
    /// Authenticated, but the token grants no Agentry role or names no
    /// tenant (403).
    #[error("{0}")]
    NotEntitled(String),
    /// The key set or key store could not be reached (503). The detail is
    /// for the log; callers get a generic text.
    #[error("authentication is temporarily unavailable; retry shortly")]
    Unavailable(String),
}

impl AuthFailure {
    /// Whether this is 403 rather than 401 (or 503).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthFailure::NotEntitled(_))
    }

    /// Whether the server, not the caller, is at fault (503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthFailure::Unavailable(_))
    }
}

/// Checks a request's credentials: `Authorization: Bearer <key or JWT>`,
/// or `x-api-key: <key>`.
///
/// Stored key records are cached for `key_cache` (a revocation through
/// this server's API applies at once; one made elsewhere, e.g. by `agentry
/// keys revoke`, within that time), so a request costs no store read.
pub struct Authenticator {
    keys: std::sync::Arc<dyn agentry_core::ApiKeyStore>,
    api_keys: bool,
    jwt: Option<std::sync::Arc<jwt::JwtValidator>>,
    key_cache: std::time::Duration,
    cached: parking_lot::Mutex<
        std::collections::HashMap<String, (agentry_core::ApiKeyRecord, std::time::Instant)>,
    >,
}

/// Most key records cached at once.
const KEY_CACHE_CAP: usize = 10_000;

impl Authenticator {
    /// Accepts API keys from `keys` when `api_keys`, and JWTs when `jwt` is
    /// set.
    pub fn new(
        keys: std::sync::Arc<dyn agentry_core::ApiKeyStore>,
        api_keys: bool,
        jwt: Option<jwt::JwtValidator>,
        key_cache: std::time::Duration,
    ) -> Self {
        Authenticator {
            keys,
            api_keys,
            jwt: jwt.map(std::sync::Arc::new),
            key_cache,
            cached: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Drops a key's cached record (after a revocation).
    pub fn forget_key(&self, id: &str) {
        self.cached.lock().remove(id);
    }

    /// The caller of a request with these headers.
    pub async fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, AuthFailure> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| {
                let text = v.to_str().map_err(|_| AuthFailure::InvalidKey)?;
                let (scheme, credential) = text.trim().split_once(' ').unwrap_or((text, ""));
                if scheme.eq_ignore_ascii_case("bearer") && !credential.trim().is_empty() {
                    Ok(credential.trim().to_string())
                } else {
                    Err(AuthFailure::InvalidToken(
                        "use the Bearer scheme: `Authorization: Bearer <API key or token>`"
                            .to_string(),
                    ))
                }
            })
            .transpose()?;
        let header_key = headers
            .get("x-api-key")
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| AuthFailure::InvalidKey)
            })
            .transpose()?;
        match (bearer, header_key) {
            (Some(credential), _) if keys::looks_like_key(&credential) => {
                self.key(&credential).await
            }
            (Some(token), _) => match &self.jwt {
                Some(jwt) => jwt.authenticate(&token).await,
                None if self.api_keys => Err(AuthFailure::InvalidKey),
                None => Err(AuthFailure::TokensDisabled),
            },
            (None, Some(key)) => self.key(&key).await,
            (None, None) => Err(AuthFailure::Missing),
        }
    }

    async fn key(&self, key: &str) -> Result<Principal, AuthFailure> {
        if !self.api_keys {
            return Err(AuthFailure::InvalidToken(
                "API keys are not accepted by this server".to_string(),
            ));
        }
        let Some((id, secret)) = keys::parse(key) else {
            return Err(AuthFailure::InvalidKey);
        };
        let now = std::time::Instant::now();
        let hit = self
            .cached
            .lock()
            .get(id)
            .filter(|(_, at)| now.duration_since(*at) < self.key_cache)
            .map(|(record, _)| record.clone());
        let record = match hit {
            Some(record) => Some(record),
            None => {
                let record =
                    self.keys.api_key(id).await.map_err(|e| {
                        AuthFailure::Unavailable(format!("the key store failed: {e}"))
                    })?;
                // Only keys that exist are cached: unknown ids cannot fill it.
                if let Some(r) = &record {
                    if !self.key_cache.is_zero() {
                        let mut cached = self.cached.lock();
                        if cached.len() >= KEY_CACHE_CAP {
                            cached.clear();
                        }
                        cached.insert(id.to_string(), (r.clone(), now));
                    }
                }
                record
            }
        };
        keys::verify(record.as_ref(), secret)
    }
}

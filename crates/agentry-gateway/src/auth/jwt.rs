//! OAuth 2.0 bearer JWTs: [`JwtValidator`] checks a compact JWS against the
//! issuer's key set (JWKS) and turns its claims into a [`Principal`].
//!
//! Key design decision: the validator decides everything about a token
//! itself, from the raw header and claims, and uses `jsonwebtoken` only to
//! verify the signature. The accepted algorithms (RS256, ES256), the match
//! between the token's `alg` and the key's type, the leeway and the order of
//! the checks are therefore written here once, and every failure maps to one
//! precise [`AuthFailure`] without the token's text in it.
//!
//! Keys come from a JWKS file read at start-up or from a JWKS URL fetched on
//! first use. A fetched set is fresh for `jwks_cache_s`; a stale one is
//! refetched, and kept when the refetch fails. A token whose `kid` is not in
//! the set triggers one refetch (key rotation), at most one per
//! `jwks_refetch_min_s`; concurrent requests share one fetch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentry_core::AccessRole;
use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::{AuthFailure, CredentialKind, Principal};

/// Longest token accepted, in bytes; anything longer is rejected unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest tenant name.
const MAX_TENANT_CHARS: usize = 64;

/// `[gateway.jwt]`: how bearer JWTs are validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required; the token's `iss` must equal it exactly.
    pub issuer: String,
    /// Required; the token's `aud` (a string or an array) must contain it.
    pub audience: String,
    /// The issuer's JWKS over HTTP(S). Exactly one of `jwks_url` and
    /// `jwks_file` is set.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS JSON file, read once at start-up.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The claim naming the tenant (a string). A dotted path reaches into
    /// objects (`org.id`); a top-level claim whose name is the whole text
    /// (`https://example.com/tenant`) wins over the path.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The claim holding the roles: an array of strings, or one string of
    /// space-separated values like `scope`. Dotted paths as for
    /// `tenant_claim` (Keycloak: `realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Prefix of the role values meant for Agentry: with `agentry-`,
    /// `agentry-operator` grants operator; values without it are ignored.
    #[serde(default)]
    pub role_prefix: String,
    /// Tenant of tokens that have no tenant claim.
    #[serde(default)]
    pub default_tenant: Option<String>,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// How long a fetched JWKS is used before it is refetched, in seconds.
    #[serde(default = "default_jwks_cache_s")]
    pub jwks_cache_s: u64,
    /// Least time between two fetches triggered by an unknown `kid` (or
    /// retrying a failed fetch), in seconds.
    #[serde(default = "default_jwks_refetch_min_s")]
    pub jwks_refetch_min_s: u64,
    /// Time limit of one JWKS fetch, in seconds.
    #[serde(default = "default_http_timeout_s")]
    pub http_timeout_s: u64,
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_leeway_s() -> u64 {
    30
}

fn default_jwks_cache_s() -> u64 {
    300
}

fn default_jwks_refetch_min_s() -> u64 {
    10
}

fn default_http_timeout_s() -> u64 {
    5
}

/// Empty `issuer` and `audience` and no key source (so it does not pass
/// [`JwtConfig::validate`] as is); every other field at its default.
impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: None,
            jwks_file: None,
            tenant_claim: default_tenant_claim(),
            roles_claim: default_roles_claim(),
            role_prefix: String::new(),
            default_tenant: None,
            leeway_s: default_leeway_s(),
            jwks_cache_s: default_jwks_cache_s(),
            jwks_refetch_min_s: default_jwks_refetch_min_s(),
            http_timeout_s: default_http_timeout_s(),
        }
    }
}

impl JwtConfig {
    /// Checks the settings; the error names the wrong field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.issuer.trim().is_empty() {
            bail!("`gateway.jwt.issuer` is empty: set it to the `iss` of the accepted tokens");
        }
        if self.audience.trim().is_empty() {
            bail!("`gateway.jwt.audience` is empty: set it to the `aud` the tokens must carry");
        }
        match (&self.jwks_url, &self.jwks_file) {
            (None, None) => bail!(
                "`gateway.jwt.jwks_url` and `gateway.jwt.jwks_file` are both unset: set one of them"
            ),
            (Some(_), Some(_)) => bail!(
                "`gateway.jwt.jwks_url` and `gateway.jwt.jwks_file` are both set: set only one"
            ),
            (Some(url), None) => {
                parse_jwks_url(url)?;
            }
            (None, Some(path)) => {
                if path.as_os_str().is_empty() {
                    bail!("`gateway.jwt.jwks_file` is empty");
                }
            }
        }
        if self.tenant_claim.trim().is_empty() {
            bail!("`gateway.jwt.tenant_claim` is empty");
        }
        if self.roles_claim.trim().is_empty() {
            bail!("`gateway.jwt.roles_claim` is empty");
        }
        if let Some(tenant) = &self.default_tenant {
            if let Err(why) = check_tenant(tenant) {
                bail!("`gateway.jwt.default_tenant` {why}");
            }
        }
        if self.http_timeout_s == 0 {
            bail!("`gateway.jwt.http_timeout_s` is 0: give the JWKS fetch at least 1 second");
        }
        Ok(())
    }
}

fn parse_jwks_url(url: &str) -> anyhow::Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url)
        .with_context(|| format!("`gateway.jwt.jwks_url` is not a URL: `{url}`"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!(
            "`gateway.jwt.jwks_url` must be an http or https URL, not `{}:`",
            parsed.scheme()
        );
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("`gateway.jwt.jwks_url` has no host");
    }
    Ok(parsed)
}

/// Validates bearer JWTs. Cheap to clone (the clones share one key cache and
/// one HTTP client); `Send + Sync`.
#[derive(Clone)]
pub struct JwtValidator {
    inner: Arc<Inner>,
}

struct Inner {
    config: JwtConfig,
    source: KeySource,
}

enum KeySource {
    /// Read once from a file at start-up.
    File { path: PathBuf, set: Arc<KeySet> },
    /// Fetched from a URL and cached.
    Remote(Box<RemoteKeys>),
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = &self.inner.config;
        let mut out = f.debug_struct("JwtValidator");
        out.field("issuer", &config.issuer);
        out.field("audience", &config.audience);
        match &self.inner.source {
            KeySource::File { path, set } => {
                out.field("jwks_file", path).field("keys", &set.keys.len())
            }
            KeySource::Remote(remote) => out.field("jwks_url", &remote.shown_url),
        };
        out.finish_non_exhaustive()
    }
}

impl JwtValidator {
    /// Validates the config; with `jwks_file`, reads and parses the key set
    /// now (the error names the file); with `jwks_url`, builds the HTTP
    /// client and fetches the set on first use.
    pub fn new(config: JwtConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let source = match (&config.jwks_url, &config.jwks_file) {
            (_, Some(path)) => {
                let text = std::fs::read(path).with_context(|| {
                    format!(
                        "cannot read the JWKS file `{}` (gateway.jwt.jwks_file)",
                        path.display()
                    )
                })?;
                let set = KeySet::parse(&text).map_err(|why| {
                    anyhow::anyhow!(
                        "the JWKS file `{}` (gateway.jwt.jwks_file) {why}",
                        path.display()
                    )
                })?;
                KeySource::File {
                    path: path.clone(),
                    set: Arc::new(set),
                }
            }
            (Some(url), None) => {
                KeySource::Remote(Box::new(RemoteKeys::new(parse_jwks_url(url)?, &config)?))
            }
            (None, None) => {
                bail!("`gateway.jwt.jwks_url` and `gateway.jwt.jwks_file` are both unset")
            }
        };
        Ok(JwtValidator {
            inner: Arc::new(Inner { config, source }),
        })
    }

    /// The settings it validates with.
    pub fn config(&self) -> &JwtConfig {
        &self.inner.config
    }

    /// Validates a compact JWS (the text after `Bearer `) and returns the
    /// caller. Checks, in order: the header (`alg` RS256 or ES256), the key
    /// (by `kid`, refetching the set once when unknown), the signature,
    /// `exp`, `nbf`, `iss`, `aud`, `sub`, the tenant and the role.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthFailure> {
        let header = TokenHeader::parse(token)?;
        let key = self.signing_key(&header).await?;

        let mut validation = Validation::new(header.alg.algorithm());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| verification_failure(error.kind()))?;

        self.principal(&data.claims)
    }

    /// The key that must have signed the token.
    async fn signing_key(&self, header: &TokenHeader) -> Result<DecodingKey, AuthFailure> {
        match &self.inner.source {
            KeySource::File { set, .. } => set.select(header)?.ok_or(AuthFailure::UnknownKeyId),
            KeySource::Remote(remote) => {
                let (set, generation) = remote.current().await?;
                if let Some(key) = set.select(header)? {
                    return Ok(key);
                }
                match remote.refetch_for_unknown_kid(generation).await {
                    Some(newer) => newer.select(header)?.ok_or(AuthFailure::UnknownKeyId),
                    None => Err(AuthFailure::UnknownKeyId),
                }
            }
        }
    }

    /// Checks the verified claims and reads the caller from them.
    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthFailure> {
        let config = &self.inner.config;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        let leeway = config.leeway_s as f64;

        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(invalid("token has no exp")),
            Some(value) => value
                .as_f64()
                .ok_or_else(|| invalid("exp is not a number"))?,
        };
        if now >= exp + leeway {
            return Err(AuthFailure::Expired);
        }
        match claims.get("nbf") {
            None | Some(Value::Null) => {}
            Some(value) => {
                let nbf = value
                    .as_f64()
                    .ok_or_else(|| invalid("nbf is not a number"))?;
                if now + leeway < nbf {
                    return Err(AuthFailure::NotYetValid);
                }
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
            return Err(AuthFailure::WrongIssuer);
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == config.audience,
            Some(Value::Array(auds)) => auds
                .iter()
                .any(|aud| aud.as_str() == Some(&config.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthFailure::WrongAudience);
        }
        let subject = match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => sub,
            _ => return Err(invalid("token has no sub")),
        };

        let tenant = match claim_at(claims, &config.tenant_claim) {
            Some(Value::String(tenant)) => tenant.clone(),
            None | Some(Value::Null) => match &config.default_tenant {
                Some(tenant) => tenant.clone(),
                None => {
                    return Err(AuthFailure::NotEntitled(format!(
                        "the token names no tenant (claim `{}`)",
                        config.tenant_claim
                    )))
                }
            },
            Some(_) => {
                return Err(AuthFailure::NotEntitled(format!(
                    "the token's tenant (claim `{}`) is not a string",
                    config.tenant_claim
                )))
            }
        };
        check_tenant(&tenant).map_err(|why| {
            AuthFailure::NotEntitled(format!(
                "the token's tenant (claim `{}`) {why}",
                config.tenant_claim
            ))
        })?;

        let role = granted_role(claim_at(claims, &config.roles_claim), &config.role_prefix)
            .ok_or_else(|| {
                let prefix = &config.role_prefix;
                AuthFailure::NotEntitled(format!(
                    "the token grants no Agentry role (claim `{}`: {prefix}viewer, {prefix}operator or {prefix}admin)",
                    config.roles_claim
                ))
            })?;

        Ok(Principal {
            tenant,
            role,
            subject: format!("jwt:{subject}"),
            kind: CredentialKind::Jwt,
        })
    }
}

fn invalid(why: &str) -> AuthFailure {
    AuthFailure::InvalidToken(why.to_owned())
}

/// Maps a `jsonwebtoken` failure to a fixed text (its own may quote input).
fn verification_failure(kind: &JwtErrorKind) -> AuthFailure {
    match kind {
        JwtErrorKind::InvalidSignature => invalid("the signature does not verify"),
        JwtErrorKind::InvalidAlgorithm => invalid("the token's algorithm does not match its key"),
        JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidKeyFormat => invalid("the signing key in the key set is not usable"),
        _ => invalid("the token is not a well-formed JWS"),
    }
}

/// A claim by name, else by dotted path through nested objects.
fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The highest role among the claim's values that carry `prefix`.
fn granted_role(value: Option<&Value>, prefix: &str) -> Option<AccessRole> {
    let names: Vec<&str> = match value {
        Some(Value::String(text)) => text.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    names
        .into_iter()
        .filter_map(|name| name.strip_prefix(prefix))
        .filter(|name| !name.is_empty() && name.trim() == *name)
        .filter_map(|name| name.parse::<AccessRole>().ok())
        .max()
}

/// Why `tenant` is not a tenant name, as the end of a sentence.
fn check_tenant(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() {
        return Err("is empty".to_owned());
    }
    if tenant.chars().count() > MAX_TENANT_CHARS {
        return Err(format!("is longer than {MAX_TENANT_CHARS} characters"));
    }
    if !tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may hold only letters A-Z and a-z, digits, `.`, `_` and `-`".to_owned());
    }
    Ok(())
}

/// The accepted signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigningAlg {
    Rs256,
    Es256,
}

impl SigningAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Es256 => Algorithm::ES256,
        }
    }

    fn family(self) -> KeyFamily {
        match self {
            SigningAlg::Rs256 => KeyFamily::Rsa,
            SigningAlg::Es256 => KeyFamily::EcP256,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }
}

/// What the token's header says, read before anything is trusted.
struct TokenHeader {
    alg: SigningAlg,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<Self, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::InvalidToken(format!(
                "the token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let parts: Vec<&str> = token.split('.').collect();
        match parts.len() {
            3 => {}
            5 => return Err(invalid("encrypted tokens (JWE) are not accepted")),
            _ => {
                return Err(invalid(
                    "the token is not a compact JWS (three base64url parts separated by dots)",
                ))
            }
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(parts[0])
            .map_err(|_| invalid("the token's header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| invalid("the token's header is not a JSON object"))?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => match alg.as_str() {
                "RS256" => SigningAlg::Rs256,
                "ES256" => SigningAlg::Es256,
                other => {
                    let shown =
                        if other.len() <= 16 && other.chars().all(|c| c.is_ascii_alphanumeric()) {
                            format!("`{other}`")
                        } else {
                            "in the header".to_owned()
                        };
                    return Err(AuthFailure::InvalidToken(format!(
                        "the algorithm {shown} is not accepted: use RS256 or ES256"
                    )));
                }
            },
            _ => return Err(invalid("the token's header has no alg")),
        };
        if header.contains_key("crit") {
            return Err(invalid(
                "critical header extensions (`crit`) are not supported",
            ));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(invalid("the token's kid is not a string")),
        };
        Ok(TokenHeader { alg, kid })
    }
}

/// The type of a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    EcP256,
}

impl KeyFamily {
    fn describe(self) -> &'static str {
        match self {
            KeyFamily::Rsa => "an RSA key",
            KeyFamily::EcP256 => "a P-256 key",
        }
    }
}

/// One signature-verification key from the JWKS.
struct VerifyingKey {
    kid: Option<String>,
    family: KeyFamily,
    /// The JWK's `alg`, when it names one (RS256 or ES256).
    alg: Option<SigningAlg>,
    key: DecodingKey,
}

impl VerifyingKey {
    fn accepts(&self, alg: SigningAlg) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|own| own == alg)
    }
}

/// The usable keys of a JWKS: RSA and P-256 signature keys; others (JWE
/// keys, other curves and algorithms) are skipped.
struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// One JWK, as far as it matters here.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document; the error ends a sentence ("... is not JSON").
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document = serde_json::from_slice(bytes)
            .map_err(|error| format!("is not a JWKS (a JSON object with `keys`): {error}"))?;
        let total = document.keys.len();
        let keys: Vec<VerifyingKey> = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<RawJwk>(value).ok())
            .filter_map(VerifyingKey::from_jwk)
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "has no usable signing key (RS256 or ES256) among its {total} keys"
            ));
        }
        Ok(KeySet { keys })
    }

    /// The key for the token; `Ok(None)` when its `kid` is not in the set.
    fn select(&self, header: &TokenHeader) -> Result<Option<DecodingKey>, AuthFailure> {
        let candidates: Vec<&VerifyingKey> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None if self.keys.len() == 1 => self.keys.iter().collect(),
            None => {
                return Err(AuthFailure::InvalidToken(format!(
                    "the token has no kid and the key set has {} keys",
                    self.keys.len()
                )))
            }
        };
        let Some(first) = candidates.first() else {
            return Ok(None);
        };
        match candidates.iter().find(|key| key.accepts(header.alg)) {
            Some(key) => Ok(Some(key.key.clone())),
            None => Err(AuthFailure::InvalidToken(format!(
                "the token is signed with {} but its key is {}{}",
                header.alg.name(),
                first.family.describe(),
                match first.alg {
                    Some(alg) if first.family == header.alg.family() =>
                        format!(" for {}", alg.name()),
                    _ => String::new(),
                }
            ))),
        }
    }
}

impl VerifyingKey {
    fn from_jwk(jwk: RawJwk) -> Option<Self> {
        if jwk
            .key_use
            .as_deref()
            .is_some_and(|key_use| key_use != "sig")
        {
            return None;
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some("RS256") => Some(SigningAlg::Rs256),
            Some("ES256") => Some(SigningAlg::Es256),
            Some(_) => return None,
        };
        let (family, key) = match jwk.kty.as_str() {
            "RSA" => {
                let key =
                    DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?;
                (KeyFamily::Rsa, key)
            }
            "EC" if jwk.crv.as_deref() == Some("P-256") => {
                let (x, y) = (jwk.x.as_deref()?, jwk.y.as_deref()?);
                let coordinate_ok = |c: &str| {
                    URL_SAFE_NO_PAD
                        .decode(c)
                        .is_ok_and(|bytes| bytes.len() == 32)
                };
                if !coordinate_ok(x) || !coordinate_ok(y) {
                    return None;
                }
                (
                    KeyFamily::EcP256,
                    DecodingKey::from_ec_components(x, y).ok()?,
                )
            }
            _ => return None,
        };
        if alg.is_some_and(|alg| alg.family() != family) {
            return None;
        }
        Some(VerifyingKey {
            kid: jwk.kid,
            family,
            alg,
            key,
        })
    }
}

/// A JWKS fetched over HTTP(S) and cached.
struct RemoteKeys {
    url: reqwest::Url,
    /// The URL without credentials or query, for messages and logs.
    shown_url: String,
    client: reqwest::Client,
    fresh_for: Duration,
    refetch_min: Duration,
    state: parking_lot::Mutex<CacheState>,
    /// Held while fetching, so concurrent requests share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct CacheState {
    set: Option<Arc<KeySet>>,
    /// When `set` was fetched.
    fetched_at: Option<Instant>,
    /// When the last fetch, successful or not, ended.
    attempted_at: Option<Instant>,
    /// Why the last fetch failed; `None` when it succeeded.
    last_error: Option<String>,
    /// Bumped at the end of every fetch.
    generation: u64,
}

impl RemoteKeys {
    fn new(url: reqwest::Url, config: &JwtConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.http_timeout_s))
            .build()
            .context("cannot build the HTTP client for the JWKS")?;
        let mut shown = url.clone();
        // Both only fail for URLs that cannot have credentials at all.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        Ok(RemoteKeys {
            url,
            shown_url: shown.to_string(),
            client,
            fresh_for: Duration::from_secs(config.jwks_cache_s),
            refetch_min: Duration::from_secs(config.jwks_refetch_min_s),
            state: parking_lot::Mutex::new(CacheState::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The set to use now and its generation: the cached one while fresh,
    /// else a refetched one, else (refetch failed) the cached one.
    async fn current(&self) -> Result<(Arc<KeySet>, u64), AuthFailure> {
        let seen = {
            let state = self.state.lock();
            if let Some(set) = &state.set {
                if state
                    .fetched_at
                    .is_some_and(|at| at.elapsed() < self.fresh_for)
                {
                    return Ok((set.clone(), state.generation));
                }
            }
            if state.last_error.is_some() && self.recently_attempted(&state) {
                return self.cached_or_unavailable(&state);
            }
            state.generation
        };
        let _fetching = self.fetching.lock().await;
        {
            let state = self.state.lock();
            if state.generation != seen {
                // Another request fetched while this one waited.
                return self.cached_or_unavailable(&state);
            }
        }
        self.fetch_and_store().await;
        let state = self.state.lock();
        self.cached_or_unavailable(&state)
    }

    /// A newer set after an unknown `kid`, fetching one unless another
    /// request did since generation `seen` or the last fetch was less than
    /// `jwks_refetch_min_s` ago. `None` when there is no newer set to try.
    async fn refetch_for_unknown_kid(&self, seen: u64) -> Option<Arc<KeySet>> {
        let _fetching = self.fetching.lock().await;
        {
            let state = self.state.lock();
            if state.generation != seen {
                return state.set.clone();
            }
            if self.recently_attempted(&state) {
                return None;
            }
        }
        debug!(url = %self.shown_url, "The token's kid is not in the JWKS; refetching it.");
        if self.fetch_and_store().await {
            self.state.lock().set.clone()
        } else {
            None
        }
    }

    fn recently_attempted(&self, state: &CacheState) -> bool {
        state
            .attempted_at
            .is_some_and(|at| at.elapsed() < self.refetch_min)
    }

    fn cached_or_unavailable(&self, state: &CacheState) -> Result<(Arc<KeySet>, u64), AuthFailure> {
        match &state.set {
            Some(set) => Ok((set.clone(), state.generation)),
            None => Err(AuthFailure::Unavailable(format!(
                "cannot fetch the JWKS from {}: {}",
                self.shown_url,
                state.last_error.as_deref().unwrap_or("no key set yet")
            ))),
        }
    }

    /// Fetches the set and records the outcome; whether it succeeded. The
    /// caller holds `fetching`.
    async fn fetch_and_store(&self) -> bool {
        let outcome = self.fetch().await;
        let mut state = self.state.lock();
        let now = Instant::now();
        state.attempted_at = Some(now);
        state.generation += 1;
        match outcome {
            Ok(set) => {
                debug!(url = %self.shown_url, keys = set.keys.len(), "Fetched the JWKS.");
                state.set = Some(Arc::new(set));
                state.fetched_at = Some(now);
                state.last_error = None;
                true
            }
            Err(error) => {
                if state.set.is_some() {
                    warn!(url = %self.shown_url, %error, "Cannot refresh the JWKS; keeping the cached key set.");
                } else {
                    warn!(url = %self.shown_url, %error, "Cannot fetch the JWKS.");
                }
                state.last_error = Some(error);
                false
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .send()
            .await
            .map_err(|error| error_chain(&error.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| error_chain(&error.without_url()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        KeySet::parse(&body).map_err(|why| format!("the document {why}"))
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

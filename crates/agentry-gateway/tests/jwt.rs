//! Bearer JWT validation against a JWKS served over loopback (or read from a
//! file). Keys are generated at run time; none are committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentry_core::AccessRole;
use agentry_gateway::auth::jwt::{JwtConfig, JwtValidator};
use agentry_gateway::auth::{AuthFailure, CredentialKind, Principal};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.example.test/realms/agentry";
const AUDIENCE: &str = "agentry-api";

// ---------------------------------------------------------------- keys

/// A signing key and its public JWK.
struct TestKey {
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK without `kid`.
    jwk: Value,
}

impl TestKey {
    fn rsa() -> TestKey {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        TestKey {
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA",
                "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
            }),
        }
    }

    fn p256() -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 65);
        TestKey {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            }),
        }
    }

    /// The public JWK under `kid`.
    fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// Signs `claims` with this key's algorithm.
    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Two RSA keys (generation is slow in debug builds: once per binary, in
/// parallel) and one P-256 key.
static RSA_KEYS: LazyLock<[TestKey; 2]> = LazyLock::new(|| {
    std::thread::scope(|scope| {
        let second = scope.spawn(TestKey::rsa);
        let first = TestKey::rsa();
        [first, second.join().unwrap()]
    })
});
static EC_KEY: LazyLock<TestKey> = LazyLock::new(TestKey::p256);

fn rsa_a() -> &'static TestKey {
    &RSA_KEYS[0]
}

fn rsa_b() -> &'static TestKey {
    &RSA_KEYS[1]
}

fn ec() -> &'static TestKey {
    &EC_KEY
}

/// The usual key set: `rsa-a` and `ec-1`.
fn usual_keys() -> Vec<Value> {
    vec![rsa_a().jwk("rsa-a"), ec().jwk("ec-1")]
}

// ---------------------------------------------------------------- claims

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims (tenant `acme`, role operator) with `changes` applied; a
/// `null` removes the claim.
fn claims(changes: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now(),
        "exp": now() + 600,
        "tenant": "acme",
        "roles": ["operator"],
    });
    for (name, value) in changes.as_object().unwrap() {
        let map = claims.as_object_mut().unwrap();
        if value.is_null() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    claims
}

fn principal(tenant: &str, role: AccessRole, subject: &str) -> Principal {
    Principal {
        tenant: tenant.to_owned(),
        role,
        subject: subject.to_owned(),
        kind: CredentialKind::Jwt,
    }
}

fn alice_operator() -> Principal {
    principal("acme", AccessRole::Operator, "jwt:alice")
}

// ---------------------------------------------------------------- JWKS server

/// A JWKS endpoint on loopback that counts its fetches.
struct JwksServer {
    url: String,
    state: ServerState,
}

#[derive(Clone)]
struct ServerState {
    jwks: Arc<parking_lot::Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

async fn serve_jwks(State(state): State<ServerState>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    if status != StatusCode::OK {
        return (status, "the key service is down").into_response();
    }
    let jwks = state.jwks.lock().clone();
    Json(jwks).into_response()
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> JwksServer {
        let state = ServerState {
            jwks: Arc::new(parking_lot::Mutex::new(json!({ "keys": keys }))),
            fetches: Arc::new(AtomicUsize::new(0)),
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer {
            url: format!("http://{addr}/jwks"),
            state,
        }
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.state.jwks.lock() = json!({ "keys": keys });
    }

    fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// A validator of this server's keys: refetch allowed at once, other
    /// settings at their defaults, then `edit`.
    fn validator(&self, edit: impl FnOnce(&mut JwtConfig)) -> JwtValidator {
        let mut config = config_for_url(&self.url);
        edit(&mut config);
        JwtValidator::new(config).unwrap()
    }
}

fn config_for_url(url: &str) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_url: Some(url.to_owned()),
        jwks_refetch_min_s: 0,
        ..JwtConfig::default()
    }
}

/// A server with the usual keys and a validator with default settings.
async fn usual() -> (JwksServer, JwtValidator) {
    let server = JwksServer::start(usual_keys()).await;
    let validator = server.validator(|_| {});
    (server, validator)
}

/// Asserts that `token` fails with `expected`, and that the failure does
/// not echo the token or its signature.
async fn assert_rejected(validator: &JwtValidator, token: &str, expected: AuthFailure) {
    let failure = validator.authenticate(token).await.unwrap_err();
    assert_eq!(failure, expected);
    let text = format!("{failure} {failure:?}");
    for part in token.split('.').filter(|part| part.len() > 8) {
        assert!(
            !text.contains(part),
            "the failure `{text}` echoes the token"
        );
    }
}

fn invalid(why: &str) -> AuthFailure {
    AuthFailure::InvalidToken(why.to_owned())
}

/// A loopback URL on which nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A file under the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("agentry-gateway-jwt-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------- valid tokens

#[tokio::test]
async fn rs256_token_yields_the_principal() {
    let (_server, validator) = usual().await;
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
}

#[tokio::test]
async fn es256_token_yields_the_principal() {
    let (_server, validator) = usual().await;
    let token = ec().sign(
        Some("ec-1"),
        &claims(json!({"sub": "svc-ci", "roles": ["admin"]})),
    );
    assert_eq!(
        validator.authenticate(&token).await,
        Ok(principal("acme", AccessRole::Admin, "jwt:svc-ci"))
    );
}

#[tokio::test]
async fn audience_may_be_an_array_containing_ours() {
    let (_server, validator) = usual().await;
    let token = rsa_a().sign(
        Some("rsa-a"),
        &claims(json!({"aud": ["account", AUDIENCE]})),
    );
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
}

#[tokio::test]
async fn token_without_kid_uses_the_only_key_but_not_one_of_several() {
    let server = JwksServer::start(vec![rsa_a().jwk("rsa-a")]).await;
    let token = rsa_a().sign(None, &claims(json!({})));
    assert_eq!(
        server.validator(|_| {}).authenticate(&token).await,
        Ok(alice_operator())
    );

    let (_server, validator) = usual().await;
    assert_rejected(
        &validator,
        &token,
        invalid("the token has no kid and the key set has 2 keys"),
    )
    .await;
}

// ---------------------------------------------------------------- time and claims

#[tokio::test]
async fn expiry_is_checked_with_leeway() {
    let (_server, validator) = usual().await;
    let within = rsa_a().sign(Some("rsa-a"), &claims(json!({"exp": now() - 10})));
    assert_eq!(validator.authenticate(&within).await, Ok(alice_operator()));

    let beyond = rsa_a().sign(Some("rsa-a"), &claims(json!({"exp": now() - 120})));
    assert_rejected(&validator, &beyond, AuthFailure::Expired).await;
}

#[tokio::test]
async fn not_before_is_checked_with_leeway() {
    let (_server, validator) = usual().await;
    let within = rsa_a().sign(Some("rsa-a"), &claims(json!({"nbf": now() + 10})));
    assert_eq!(validator.authenticate(&within).await, Ok(alice_operator()));

    let beyond = rsa_a().sign(Some("rsa-a"), &claims(json!({"nbf": now() + 120})));
    assert_rejected(&validator, &beyond, AuthFailure::NotYetValid).await;
}

#[tokio::test]
async fn required_claims_are_checked() {
    let (_server, validator) = usual().await;
    let cases = [
        (json!({"exp": null}), invalid("token has no exp")),
        (json!({"exp": "tomorrow"}), invalid("exp is not a number")),
        (json!({"sub": null}), invalid("token has no sub")),
        (json!({"sub": ""}), invalid("token has no sub")),
        (json!({"aud": "another-api"}), AuthFailure::WrongAudience),
        (
            json!({"aud": ["account", "another-api"]}),
            AuthFailure::WrongAudience,
        ),
        (json!({"aud": null}), AuthFailure::WrongAudience),
        (
            json!({"iss": "https://evil.example.test/"}),
            AuthFailure::WrongIssuer,
        ),
        (json!({"iss": null}), AuthFailure::WrongIssuer),
    ];
    for (changes, expected) in cases {
        let token = rsa_a().sign(Some("rsa-a"), &claims(changes.clone()));
        let got = validator.authenticate(&token).await;
        assert_eq!(got, Err(expected), "claims changed by {changes}");
    }
}

// ---------------------------------------------------------------- algorithms and signatures

#[tokio::test]
async fn alg_none_and_symmetric_and_other_algorithms_are_rejected() {
    let (_server, validator) = usual().await;
    let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());

    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-a","typ":"JWT"}"#);
    assert_rejected(
        &validator,
        &format!("{none_header}.{payload}."),
        invalid("the algorithm `none` is not accepted: use RS256 or ES256"),
    )
    .await;

    // Key confusion: HMAC keyed with the public RSA modulus.
    let modulus = rsa_a().jwk["n"].as_str().unwrap().as_bytes().to_vec();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-a".to_owned());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims(json!({})),
        &EncodingKey::from_secret(&modulus),
    )
    .unwrap();
    assert_rejected(
        &validator,
        &hs256,
        invalid("the algorithm `HS256` is not accepted: use RS256 or ES256"),
    )
    .await;

    let mut header = Header::new(Algorithm::RS384);
    header.kid = Some("rsa-a".to_owned());
    let rs384 = jsonwebtoken::encode(&header, &claims(json!({})), &rsa_a().encoding).unwrap();
    assert_rejected(
        &validator,
        &rs384,
        invalid("the algorithm `RS384` is not accepted: use RS256 or ES256"),
    )
    .await;
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let (_server, validator) = usual().await;
    let cases = [
        (
            "",
            "the token is not a compact JWS (three base64url parts separated by dots)",
        ),
        (
            "abc.def",
            "the token is not a compact JWS (three base64url parts separated by dots)",
        ),
        ("a.b.c.d.e", "encrypted tokens (JWE) are not accepted"),
        ("!!!.e30.sig", "the token's header is not base64url"),
    ];
    for (token, why) in cases {
        assert_eq!(
            validator.authenticate(token).await,
            Err(invalid(why)),
            "{token:?}"
        );
    }
    let long = "a".repeat(20_000);
    assert!(matches!(
        validator.authenticate(&long).await,
        Err(AuthFailure::InvalidToken(_))
    ));
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let (_server, validator) = usual().await;
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({"roles": ["viewer"]})));
    let forged_payload = URL_SAFE_NO_PAD.encode(claims(json!({"roles": ["admin"]})).to_string());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_rejected(
        &validator,
        &forged,
        invalid("the signature does not verify"),
    )
    .await;

    // And a signature by another key of the same type.
    let other = rsa_b().sign(Some("rsa-a"), &claims(json!({})));
    assert_rejected(&validator, &other, invalid("the signature does not verify")).await;
}

#[tokio::test]
async fn token_alg_must_match_its_key_type() {
    let (_server, validator) = usual().await;
    let es_on_rsa = ec().sign(Some("rsa-a"), &claims(json!({})));
    assert_rejected(
        &validator,
        &es_on_rsa,
        invalid("the token is signed with ES256 but its key is an RSA key"),
    )
    .await;

    let rs_on_ec = rsa_a().sign(Some("ec-1"), &claims(json!({})));
    assert_rejected(
        &validator,
        &rs_on_ec,
        invalid("the token is signed with RS256 but its key is a P-256 key"),
    )
    .await;
}

// ---------------------------------------------------------------- roles and tenants

/// What a token with `changes` to its claims gets from a validator of the
/// usual keys with `edit` applied to its settings.
async fn check(
    server: &JwksServer,
    edit: impl FnOnce(&mut JwtConfig),
    changes: Value,
) -> Result<Principal, AuthFailure> {
    let token = rsa_a().sign(Some("rsa-a"), &claims(changes));
    server.validator(edit).authenticate(&token).await
}

#[tokio::test]
async fn the_highest_role_named_in_the_roles_claim_is_granted() {
    let server = JwksServer::start(usual_keys()).await;
    let role = |result: Result<Principal, AuthFailure>| result.map(|principal| principal.role);

    let all = json!({"roles": ["viewer", "admin", "operator"]});
    assert_eq!(
        role(check(&server, |_| {}, all).await),
        Ok(AccessRole::Admin)
    );

    let keycloak = json!({
        "roles": null,
        "realm_access": {"roles": ["offline_access", "agentry-operator", "viewer", "agentry-bogus"]},
    });
    let keycloak_config = |config: &mut JwtConfig| {
        config.roles_claim = "realm_access.roles".to_owned();
        config.role_prefix = "agentry-".to_owned();
    };
    assert_eq!(
        role(check(&server, keycloak_config, keycloak).await),
        Ok(AccessRole::Operator)
    );

    let scope = json!({"roles": null, "scope": "openid agentry:viewer profile"});
    let scope_config = |config: &mut JwtConfig| {
        config.roles_claim = "scope".to_owned();
        config.role_prefix = "agentry:".to_owned();
    };
    assert_eq!(
        role(check(&server, scope_config, scope).await),
        Ok(AccessRole::Viewer)
    );

    let namespaced = json!({"roles": null, "https://agentry.example/roles": ["admin"]});
    let namespaced_config = |config: &mut JwtConfig| {
        config.roles_claim = "https://agentry.example/roles".to_owned();
    };
    assert_eq!(
        role(check(&server, namespaced_config, namespaced).await),
        Ok(AccessRole::Admin)
    );
}

#[tokio::test]
async fn a_token_without_an_agentry_role_is_not_entitled() {
    let server = JwksServer::start(usual_keys()).await;
    let cases = [
        json!({"roles": null}),
        json!({"roles": []}),
        json!({"roles": ["superuser", "view"]}),
        json!({"roles": 3}),
    ];
    for changes in cases {
        assert_eq!(
            check(&server, |_| {}, changes.clone()).await,
            Err(AuthFailure::NotEntitled(
                "the token grants no Agentry role (claim `roles`: viewer, operator or admin)"
                    .to_owned()
            )),
            "{changes}"
        );
    }
    // With a prefix, unprefixed values are ignored and the message says so.
    let prefixed = |config: &mut JwtConfig| config.role_prefix = "agentry-".to_owned();
    assert_eq!(
        check(&server, prefixed, json!({"roles": ["admin"]})).await,
        Err(AuthFailure::NotEntitled(
            "the token grants no Agentry role (claim `roles`: agentry-viewer, agentry-operator or agentry-admin)"
                .to_owned()
        ))
    );
}

#[tokio::test]
async fn the_tenant_comes_from_the_claim_or_the_default() {
    let server = JwksServer::start(usual_keys()).await;
    let tenant = |result: Result<Principal, AuthFailure>| result.map(|principal| principal.tenant);

    assert_eq!(
        tenant(check(&server, |_| {}, json!({"tenant": "globex.eu_1-a"})).await),
        Ok("globex.eu_1-a".to_owned())
    );
    let dotted = |config: &mut JwtConfig| config.tenant_claim = "org.id".to_owned();
    assert_eq!(
        tenant(
            check(
                &server,
                dotted,
                json!({"tenant": null, "org": {"id": "initech"}})
            )
            .await
        ),
        Ok("initech".to_owned())
    );
    let with_default = |config: &mut JwtConfig| config.default_tenant = Some("main".to_owned());
    assert_eq!(
        tenant(check(&server, with_default, json!({"tenant": null})).await),
        Ok("main".to_owned())
    );
    assert_eq!(
        check(&server, |_| {}, json!({"tenant": null})).await,
        Err(AuthFailure::NotEntitled(
            "the token names no tenant (claim `tenant`)".to_owned()
        ))
    );
}

#[tokio::test]
async fn a_malformed_tenant_is_not_entitled() {
    let server = JwksServer::start(usual_keys()).await;
    let cases = [
        (
            json!("acme corp"),
            "may hold only letters A-Z and a-z, digits, `.`, `_` and `-`",
        ),
        (
            json!("../etc"),
            "may hold only letters A-Z and a-z, digits, `.`, `_` and `-`",
        ),
        (json!(""), "is empty"),
        (json!("a".repeat(65)), "is longer than 64 characters"),
        (json!(42), "is not a string"),
    ];
    for (value, why) in cases {
        assert_eq!(
            check(&server, |_| {}, json!({"tenant": value})).await,
            Err(AuthFailure::NotEntitled(format!(
                "the token's tenant (claim `tenant`) {why}"
            ))),
            "tenant {value}"
        );
    }
    assert_eq!(
        check(&server, |_| {}, json!({"tenant": "a".repeat(64)}))
            .await
            .map(|p| p.tenant.len()),
        Ok(64)
    );
}

// ---------------------------------------------------------------- key set caching and rotation

#[tokio::test]
async fn a_fresh_key_set_is_reused() {
    let (server, validator) = usual().await;
    for _ in 0..3 {
        let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
        assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
    }
    assert_eq!(server.fetches(), 1);

    // Clones share the cache.
    let token = ec().sign(Some("ec-1"), &claims(json!({})));
    assert_eq!(
        validator.clone().authenticate(&token).await,
        Ok(alice_operator())
    );
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_stale_key_set_is_refetched() {
    let server = JwksServer::start(usual_keys()).await;
    let validator = server.validator(|config| config.jwks_cache_s = 0);
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cached_key_set() {
    let server = JwksServer::start(usual_keys()).await;
    let validator = server.validator(|config| config.jwks_cache_s = 0);
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));

    server.set_status(500);
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_once() {
    let (server, validator) = usual().await;
    let known = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(validator.authenticate(&known).await, Ok(alice_operator()));
    assert_eq!(server.fetches(), 1);

    let unknown = rsa_a().sign(Some("rsa-zzz"), &claims(json!({})));
    assert_rejected(&validator, &unknown, AuthFailure::UnknownKeyId).await;
    assert_eq!(server.fetches(), 2);
    assert_rejected(&validator, &unknown, AuthFailure::UnknownKeyId).await;
    assert_eq!(server.fetches(), 3);
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_refetch_min() {
    let server = JwksServer::start(usual_keys()).await;
    let validator = server.validator(|config| config.jwks_refetch_min_s = 3600);
    let known = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(validator.authenticate(&known).await, Ok(alice_operator()));

    for n in 0..5 {
        let unknown = rsa_a().sign(Some(&format!("rsa-{n}")), &claims(json!({})));
        assert_rejected(&validator, &unknown, AuthFailure::UnknownKeyId).await;
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_found_after_a_refetch() {
    let server = JwksServer::start(vec![rsa_a().jwk("key-a")]).await;
    let validator = server.validator(|_| {});
    let old = rsa_a().sign(Some("key-a"), &claims(json!({})));
    assert_eq!(validator.authenticate(&old).await, Ok(alice_operator()));
    assert_eq!(server.fetches(), 1);

    server.set_keys(vec![rsa_a().jwk("key-a"), rsa_b().jwk("key-b")]);
    let new = rsa_b().sign(Some("key-b"), &claims(json!({})));
    assert_eq!(validator.authenticate(&new).await, Ok(alice_operator()));
    assert_eq!(validator.authenticate(&new).await, Ok(alice_operator()));
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let server = JwksServer::start(usual_keys()).await;
    server.set_delay(Duration::from_millis(200));
    let validator = server.validator(|_| {});
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    let results = futures::future::join_all((0..8).map(|_| validator.authenticate(&token))).await;
    for result in results {
        assert_eq!(result, Ok(alice_operator()));
    }
    assert_eq!(server.fetches(), 1);
}

// ---------------------------------------------------------------- unreachable key sets

#[tokio::test]
async fn an_unreachable_jwks_url_is_unavailable() {
    let addr = closed_port().await;
    let validator = JwtValidator::new(config_for_url(&format!(
        "http://jwks-user:s3cret@{addr}/jwks?token=abc"
    )))
    .unwrap();
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    let failure = validator.authenticate(&token).await.unwrap_err();
    let AuthFailure::Unavailable(detail) = &failure else {
        panic!("not unavailable: {failure:?}");
    };
    // The detail, for the server log, names the key set without its
    // credentials; the caller's text names nothing.
    assert!(detail.contains(&format!("http://{addr}/jwks")), "{detail}");
    assert!(
        !detail.contains("s3cret") && !detail.contains("abc"),
        "{detail}"
    );
    let text = failure.to_string();
    assert!(!text.contains(&addr.to_string()), "{text}");
}

#[tokio::test]
async fn a_jwks_http_error_is_unavailable() {
    let server = JwksServer::start(usual_keys()).await;
    server.set_status(500);
    let validator = server.validator(|_| {});
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(
        validator.authenticate(&token).await,
        Err(AuthFailure::Unavailable(format!(
            "cannot fetch the JWKS from {}: HTTP 500 Internal Server Error",
            server.url
        )))
    );

    // It recovers once the key service does.
    server.set_status(200);
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
}

#[tokio::test]
async fn a_jwks_fetch_times_out() {
    let server = JwksServer::start(usual_keys()).await;
    server.set_delay(Duration::from_secs(30));
    let validator = server.validator(|config| config.http_timeout_s = 1);
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    let started = Instant::now();
    let failure = validator.authenticate(&token).await.unwrap_err();
    assert!(failure.is_unavailable(), "{failure:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_key_set_without_usable_keys_is_unavailable() {
    let server = JwksServer::start(vec![
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}),
    ])
    .await;
    let validator = server.validator(|_| {});
    let token = rsa_a().sign(Some("rsa-a"), &claims(json!({})));
    assert_eq!(
        validator.authenticate(&token).await,
        Err(AuthFailure::Unavailable(format!(
            "cannot fetch the JWKS from {}: the document has no usable signing key (RS256 or ES256) among its 2 keys",
            server.url
        )))
    );
}

// ---------------------------------------------------------------- JWKS file

#[tokio::test]
async fn a_jwks_file_is_read_at_start() {
    let file = TempFile::with("good.json", &json!({ "keys": usual_keys() }).to_string());
    let validator = JwtValidator::new(JwtConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_file: Some(file.0.clone()),
        ..JwtConfig::default()
    })
    .unwrap();
    let token = ec().sign(Some("ec-1"), &claims(json!({})));
    assert_eq!(validator.authenticate(&token).await, Ok(alice_operator()));
    let unknown = rsa_b().sign(Some("rsa-b"), &claims(json!({})));
    assert_rejected(&validator, &unknown, AuthFailure::UnknownKeyId).await;
}

#[test]
fn a_bad_jwks_file_is_an_error_naming_it() {
    let config = |path: PathBuf| JwtConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_file: Some(path),
        ..JwtConfig::default()
    };
    let missing = std::env::temp_dir().join("agentry-gateway-jwt-no-such-file.json");
    let error = JwtValidator::new(config(missing.clone())).unwrap_err();
    assert!(
        format!("{error:#}").contains(&missing.display().to_string()),
        "{error:#}"
    );

    let garbage = TempFile::with("garbage.json", "not json");
    let error = JwtValidator::new(config(garbage.0.clone())).unwrap_err();
    assert!(
        format!("{error:#}").contains(&garbage.0.display().to_string()),
        "{error:#}"
    );

    let empty = TempFile::with("empty.json", r#"{"keys": []}"#);
    let error = JwtValidator::new(config(empty.0.clone()))
        .unwrap_err()
        .to_string();
    assert!(error.contains(&empty.0.display().to_string()), "{error}");
    assert!(error.contains("no usable signing key"), "{error}");
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_validation_names_the_wrong_field() {
    let good = config_for_url("https://idp.example.test/jwks");
    good.validate().unwrap();

    type Edit = fn(&mut JwtConfig);
    let cases: [(Edit, &str); 9] = [
        (|c| c.issuer = String::new(), "gateway.jwt.issuer"),
        (|c| c.audience = " ".to_owned(), "gateway.jwt.audience"),
        (
            |c| c.jwks_url = None,
            "gateway.jwt.jwks_url` and `gateway.jwt.jwks_file` are both unset",
        ),
        (
            |c| c.jwks_file = Some("/etc/jwks.json".into()),
            "gateway.jwt.jwks_url` and `gateway.jwt.jwks_file` are both set",
        ),
        (
            |c| c.jwks_url = Some("ftp://idp.example.test/jwks".to_owned()),
            "gateway.jwt.jwks_url",
        ),
        (
            |c| c.jwks_url = Some("not a url".to_owned()),
            "gateway.jwt.jwks_url",
        ),
        (|c| c.roles_claim = String::new(), "gateway.jwt.roles_claim"),
        (
            |c| c.default_tenant = Some("no spaces".to_owned()),
            "gateway.jwt.default_tenant",
        ),
        (|c| c.http_timeout_s = 0, "gateway.jwt.http_timeout_s"),
    ];
    for (edit, field) in cases {
        let mut config = good.clone();
        edit(&mut config);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(field), "`{error}` does not name `{field}`");
        let error = JwtValidator::new(config).unwrap_err().to_string();
        assert!(error.contains(field), "`{error}` does not name `{field}`");
    }
}

#[test]
fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
    let config: JwtConfig = serde_json::from_value(json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": "https://idp.example.test/jwks",
    }))
    .unwrap();
    assert_eq!(
        config,
        JwtConfig {
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            jwks_url: Some("https://idp.example.test/jwks".to_owned()),
            jwks_file: None,
            tenant_claim: "tenant".to_owned(),
            roles_claim: "roles".to_owned(),
            role_prefix: String::new(),
            default_tenant: None,
            leeway_s: 30,
            jwks_cache_s: 300,
            jwks_refetch_min_s: 10,
            http_timeout_s: 5,
        }
    );

    let unknown = serde_json::from_value::<JwtConfig>(json!({
        "issuer": ISSUER, "audience": AUDIENCE, "jwks_uri": "https://idp.example.test/jwks",
    }));
    assert!(unknown.unwrap_err().to_string().contains("jwks_uri"));
    let missing = serde_json::from_value::<JwtConfig>(json!({"audience": AUDIENCE}));
    assert!(missing.unwrap_err().to_string().contains("issuer"));
}

#[test]
fn the_validator_can_be_shared_by_request_handlers() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    shareable::<JwtValidator>();
    let validator = JwtValidator::new(config_for_url("https://idp.example.test/jwks")).unwrap();
    send(&validator.authenticate("a.b.c"));
}

//! API keys: `agk_<id>_<secret>`, shown once, stored as id + SHA-256 of the
//! secret.
//!
//! The secret is 256 random bits, so a plain SHA-256 is as strong as a slow
//! password hash here and costs microseconds per request.

use agentry_core::{AccessRole, ApiKeyRecord, Error};
use base64::Engine as _;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthFailure, CredentialKind, Principal};

/// Prefix of every key.
pub const KEY_PREFIX: &str = "agk_";
const ID_LEN: usize = 12;
const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A key just made: the record to store and the full key to show once.
#[derive(Clone)]
pub struct IssuedKey {
    /// What the store keeps.
    pub record: ApiKeyRecord,
    /// `agk_<id>_<secret>`; never stored or logged.
    pub key: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("record", &self.record)
            .field("key", &"***")
            .finish()
    }
}

/// Makes a new key for `tenant` with `role`.
pub fn issue(tenant: &str, role: AccessRole, name: &str) -> Result<IssuedKey, Error> {
    validate_tenant(tenant)?;
    let mut rng = rand::thread_rng();
    let id: String = (0..ID_LEN)
        .map(|_| ID_ALPHABET[(rng.next_u32() % ID_ALPHABET.len() as u32) as usize] as char)
        .collect();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    Ok(IssuedKey {
        record: ApiKeyRecord {
            id: id.clone(),
            tenant: tenant.to_string(),
            role,
            name: name.to_string(),
            secret_hash: hash_secret(&secret),
            created_at: Utc::now(),
            revoked_at: None,
        },
        key: format!("{KEY_PREFIX}{id}_{secret}"),
    })
}

/// A tenant name: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn validate_tenant(tenant: &str) -> Result<(), Error> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "tenant `{}` is not valid: use 1 to 64 letters, digits, `.`, `_` or `-`",
            tenant.chars().take(80).collect::<String>()
        )))
    }
}

/// Splits a presented key into id and secret; None when it is not shaped
/// like one of ours.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b));
    let secret_ok = (32..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    (id_ok && secret_ok).then_some((id, secret))
}

/// Whether a bearer credential looks like an API key (rather than a JWT).
pub fn looks_like_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}

fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a presented secret against the stored record of its key id
/// (None: no such key).
pub fn verify(record: Option<&ApiKeyRecord>, secret: &str) -> Result<Principal, AuthFailure> {
    // An unknown id still hashes, so both failures take about as long.
    let expected = record.map_or("0".repeat(64), |r| r.secret_hash.clone());
    let matches: bool = hash_secret(secret)
        .as_bytes()
        .ct_eq(expected.as_bytes())
        .into();
    match record {
        Some(r) if matches && r.is_revoked() => Err(AuthFailure::RevokedKey),
        Some(r) if matches => Ok(Principal {
            tenant: r.tenant.clone(),
            role: r.role,
            subject: r.id.clone(),
            kind: CredentialKind::ApiKey,
        }),
        _ => Err(AuthFailure::InvalidKey),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn issued_keys_parse_back_and_hash_to_the_record() {
        let issued = issue("acme", AccessRole::Operator, "ci").unwrap();
        let (id, secret) = parse(&issued.key).unwrap();
        assert_eq!(id, issued.record.id);
        assert_eq!(hash_secret(secret), issued.record.secret_hash);
        assert!(!issued.record.secret_hash.contains(secret));
        assert!(looks_like_key(&issued.key));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "agk_",
            "agk_short_secretsecretsecretsecretsecretsecret",
            "xyz_abcdefghijkl_secretsecretsecretsecretsecretsecret",
            "agk_abcdefghijkl_short",
            "agk_ABCDEFGHIJKL_secretsecretsecretsecretsecretsecret",
            "agk_abcdefghijkl_secret secretsecretsecretsecretsecret",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn tenants_are_checked() {
        assert!(validate_tenant("acme-corp.eu_1").is_ok());
        for bad in ["", "a b", "ten/ant", &"x".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
    }
}

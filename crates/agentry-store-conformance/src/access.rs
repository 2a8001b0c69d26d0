//! The API-key suite: the [`ApiKeyStore`] port, kept by the store too.
//!
//! Each behaviour takes a fresh, empty store and, besides what it tests,
//! checks that nothing else changed: every key it did not touch reads back
//! as it was written, and no key appeared (a rejected create or revoke that
//! wrote anyway fails here).

use std::sync::Arc;

use agentry_core::{AccessRole, ApiKeyRecord, ApiKeyStore, Error};
use chrono::{DateTime, Duration, Utc};

/// Expands to one `#[tokio::test]` per behaviour of the API-key suite (the
/// [`agentry_core::ApiKeyStore`] port), named after the behaviour. The
/// argument evaluates to a future of a fresh, empty store implementing it;
/// it is evaluated once per test.
#[macro_export]
macro_rules! api_key_conformance_tests {
    ($make:expr) => {
        $crate::__api_key_tests!(
            $make;
            api_key_create_then_get_round_trips,
            api_key_unknown_id_is_none,
            api_key_duplicate_id_is_conflict_and_keeps_the_first,
            api_key_concurrent_creates_of_one_id_one_wins,
            api_keys_list_oldest_first_and_by_tenant,
            api_key_revoke_sets_the_time_and_keeps_the_first,
            api_key_revoke_unknown_is_not_found,
            api_key_revoked_is_still_found_and_listed,
            api_key_secret_hash_round_trips_exactly
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __api_key_tests {
    ($make:expr; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::$name($make.await).await;
            }
        )*
    };
}

/// A fixed instant with nanoseconds, so a store that truncates time fails.
pub fn key_time(offset_s: i64) -> DateTime<Utc> {
    let base = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456789Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc);
    base + Duration::seconds(offset_s)
}

/// An unrevoked key created at `key_time(offset_s)`, with a name and a
/// hash derived from its id.
pub fn api_key_record(id: &str, tenant: &str, role: AccessRole, offset_s: i64) -> ApiKeyRecord {
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    ApiKeyRecord {
        id: id.to_string(),
        tenant: tenant.to_string(),
        role,
        name: format!("{id} for {tenant}"),
        secret_hash: format!("{hex:0>64}"),
        created_at: key_time(offset_s),
        revoked_at: None,
    }
}

async fn create<S: ApiKeyStore + ?Sized>(store: &Arc<S>, key: &ApiKeyRecord) {
    store
        .create_api_key(key.clone())
        .await
        .unwrap_or_else(|error| panic!("create API key {}: {error}", key.id));
}

async fn all_keys<S: ApiKeyStore + ?Sized>(store: &Arc<S>) -> Vec<ApiKeyRecord> {
    store.list_api_keys(None).await.expect("list API keys")
}

async fn get<S: ApiKeyStore + ?Sized>(store: &Arc<S>, id: &str) -> Option<ApiKeyRecord> {
    store
        .api_key(id)
        .await
        .unwrap_or_else(|error| panic!("read API key {id}: {error}"))
}

/// A created key reads back field for field (time to the nanosecond,
/// `revoked_at` None), whatever its role; a key created already revoked
/// keeps its time.
pub async fn api_key_create_then_get_round_trips<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    assert!(
        all_keys(&store).await.is_empty(),
        "a fresh store has no keys"
    );
    let viewer = api_key_record("k-viewer", "acme", AccessRole::Viewer, 0);
    let operator = api_key_record("k-operator", "acme", AccessRole::Operator, 1);
    let admin = api_key_record("k-admin", "globex", AccessRole::Admin, 2);
    let revoked = ApiKeyRecord {
        revoked_at: Some(key_time(10)),
        ..api_key_record("k-revoked", "acme", AccessRole::Operator, 3)
    };
    let keys = [viewer, operator, admin, revoked];
    for key in &keys {
        create(&store, key).await;
    }
    for key in &keys {
        assert_eq!(get(&store, &key.id).await.as_ref(), Some(key), "{}", key.id);
    }
    let first = get(&store, "k-viewer").await.expect("k-viewer");
    assert_eq!(first.revoked_at, None);
    assert!(!first.is_revoked());
    assert_eq!(
        all_keys(&store).await,
        keys.to_vec(),
        "exactly the keys created"
    );
}

/// An id that was never created is None, not an error: ids match exactly
/// (no prefix, no case folding), and nothing appears.
pub async fn api_key_unknown_id_is_none<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    assert_eq!(get(&store, "nope").await, None, "empty store");
    let key = api_key_record("k1", "acme", AccessRole::Admin, 0);
    create(&store, &key).await;
    for other in ["nope", "K1", "k", "k1 ", ""] {
        assert_eq!(get(&store, other).await, None, "id `{other}`");
    }
    assert_eq!(all_keys(&store).await, vec![key]);
}

/// A second key with an existing id is a conflict naming the id, and the
/// first key stays exactly as it was.
pub async fn api_key_duplicate_id_is_conflict_and_keeps_the_first<S: ApiKeyStore + ?Sized>(
    store: Arc<S>,
) {
    let first = api_key_record("k1", "acme", AccessRole::Viewer, 0);
    let other = api_key_record("k2", "acme", AccessRole::Viewer, 1);
    create(&store, &first).await;
    create(&store, &other).await;
    let impostor = ApiKeyRecord {
        tenant: "globex".into(),
        role: AccessRole::Admin,
        name: "impostor".into(),
        secret_hash: "f".repeat(64),
        created_at: key_time(-5),
        ..first.clone()
    };
    let error = store
        .create_api_key(impostor)
        .await
        .expect_err("a duplicate id is refused");
    assert!(
        matches!(&error, Error::Conflict(message) if message.contains("k1")),
        "a conflict naming the id, got {error:?}"
    );
    assert_eq!(
        get(&store, "k1").await,
        Some(first.clone()),
        "first unchanged"
    );
    assert_eq!(all_keys(&store).await, vec![first, other]);
}

/// Simultaneous creates of one id: exactly one succeeds, the others are
/// conflicts, and the stored key is the winner's.
pub async fn api_key_concurrent_creates_of_one_id_one_wins<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    let candidates: Vec<ApiKeyRecord> = (0..8)
        .map(|i| ApiKeyRecord {
            tenant: format!("tenant-{i}"),
            ..api_key_record("k-race", "x", AccessRole::Operator, 0)
        })
        .collect();
    let results = futures::future::join_all(candidates.iter().map(|key| {
        let store = store.clone();
        let key = key.clone();
        async move { store.create_api_key(key).await }
    }))
    .await;
    let winners: Vec<&ApiKeyRecord> = candidates
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|(key, _)| key)
        .collect();
    assert_eq!(winners.len(), 1, "one create wins: {results:?}");
    for result in &results {
        if let Err(error) = result {
            assert!(
                matches!(error, Error::Conflict(_)),
                "the losers are conflicts, got {error:?}"
            );
        }
    }
    assert_eq!(all_keys(&store).await, vec![winners[0].clone()]);
}

/// Listings are oldest first, ties by id, whatever the creation order;
/// a tenant filter keeps that tenant's keys only, matching exactly.
pub async fn api_keys_list_oldest_first_and_by_tenant<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    let a_old = api_key_record("k-a-old", "acme", AccessRole::Admin, -60);
    let b_mid = api_key_record("k-b-mid", "acme-eu", AccessRole::Viewer, 0);
    // Same instant: the id decides (created in reverse, so neither insertion
    // order nor chance passes for it).
    let ties: Vec<ApiKeyRecord> = (1..=5)
        .map(|i| api_key_record(&format!("k-a-tie-{i}"), "acme", AccessRole::Operator, 30))
        .collect();
    let b_new = api_key_record("k-b-new", "acme-eu", AccessRole::Admin, 3600);
    create(&store, &b_new).await;
    for key in ties.iter().rev() {
        create(&store, key).await;
    }
    create(&store, &a_old).await;
    create(&store, &b_mid).await;

    let mut everything = vec![a_old.clone(), b_mid.clone()];
    everything.extend(ties.iter().cloned());
    everything.push(b_new.clone());
    assert_eq!(
        all_keys(&store).await,
        everything,
        "every key, oldest first"
    );
    let of = |tenant: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_api_keys(Some(tenant))
                .await
                .unwrap_or_else(|error| panic!("list keys of {tenant}: {error}"))
        }
    };
    let mut acme = vec![a_old.clone()];
    acme.extend(ties.iter().cloned());
    assert_eq!(of("acme").await, acme);
    assert_eq!(of("acme-eu").await, vec![b_mid, b_new]);
    assert!(of("nobody").await.is_empty(), "unknown tenant");
    assert!(of("ACME").await.is_empty(), "tenants match exactly");
    assert!(of("acm").await.is_empty(), "no prefix match");
    for key in &everything {
        assert_eq!(
            get(&store, &key.id).await.as_ref(),
            Some(key),
            "listing wrote nothing"
        );
    }
}

/// A revoke sets `revoked_at` and returns the key; a second revoke keeps
/// the first time. Other keys are untouched.
pub async fn api_key_revoke_sets_the_time_and_keeps_the_first<S: ApiKeyStore + ?Sized>(
    store: Arc<S>,
) {
    let key = api_key_record("k1", "acme", AccessRole::Operator, 0);
    let other = api_key_record("k2", "acme", AccessRole::Operator, 1);
    create(&store, &key).await;
    create(&store, &other).await;
    let revoked = ApiKeyRecord {
        revoked_at: Some(key_time(100)),
        ..key.clone()
    };
    let back = store
        .revoke_api_key("k1", key_time(100))
        .await
        .expect("revoke");
    assert_eq!(back, revoked, "revoke returns the revoked key");
    assert_eq!(get(&store, "k1").await, Some(revoked.clone()));

    let again = store
        .revoke_api_key("k1", key_time(200))
        .await
        .expect("revoke again is not an error");
    assert_eq!(again, revoked, "a second revoke keeps the first time");
    assert_eq!(get(&store, "k1").await, Some(revoked.clone()));
    assert_eq!(all_keys(&store).await, vec![revoked, other], "k2 untouched");
}

/// Revoking an id that was never created is not found, naming the id, and
/// creates nothing.
pub async fn api_key_revoke_unknown_is_not_found<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    let key = api_key_record("k1", "acme", AccessRole::Admin, 0);
    create(&store, &key).await;
    let error = store
        .revoke_api_key("k-missing", key_time(5))
        .await
        .expect_err("an unknown key");
    assert!(
        matches!(&error, Error::NotFound(message) if message.contains("k-missing")),
        "not found naming the id, got {error:?}"
    );
    assert_eq!(get(&store, "k-missing").await, None, "nothing created");
    assert_eq!(all_keys(&store).await, vec![key], "k1 untouched");
}

/// A revoked key is still a key: `api_key` and both listings return it,
/// with `revoked_at` set and every other field as created.
pub async fn api_key_revoked_is_still_found_and_listed<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    let key = api_key_record("k1", "acme", AccessRole::Admin, 0);
    let other = api_key_record("k2", "globex", AccessRole::Viewer, 1);
    create(&store, &key).await;
    create(&store, &other).await;
    store
        .revoke_api_key("k1", key_time(50))
        .await
        .expect("revoke");
    let revoked = ApiKeyRecord {
        revoked_at: Some(key_time(50)),
        ..key
    };
    let found = get(&store, "k1").await.expect("a revoked key is found");
    assert!(found.is_revoked());
    assert_eq!(found, revoked);
    assert_eq!(
        store.list_api_keys(Some("acme")).await.expect("list acme"),
        vec![revoked.clone()]
    );
    assert_eq!(all_keys(&store).await, vec![revoked, other]);
}

/// The store keeps `secret_hash` byte for byte: no case folding, trimming
/// or truncation, whatever the characters.
pub async fn api_key_secret_hash_round_trips_exactly<S: ApiKeyStore + ?Sized>(store: Arc<S>) {
    let hashes = [
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
        "2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B",
        "0000000000000000000000000000000000000000000000000000000000000000",
        " padded\t",
        "quote ' and \" and ; -- é ✓",
        "",
    ];
    let keys: Vec<ApiKeyRecord> = hashes
        .iter()
        .enumerate()
        .map(|(i, hash)| ApiKeyRecord {
            secret_hash: (*hash).to_string(),
            name: format!("name {hash}"),
            ..api_key_record(&format!("k{i}"), "acme", AccessRole::Viewer, i as i64)
        })
        .collect();
    for key in &keys {
        create(&store, key).await;
    }
    for key in &keys {
        let back = get(&store, &key.id).await.expect("stored");
        assert_eq!(back.secret_hash, key.secret_hash, "{}", key.id);
        assert_eq!(back, *key);
    }
    assert_eq!(all_keys(&store).await, keys);
}

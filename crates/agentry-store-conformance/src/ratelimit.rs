//! The rate-limit suite: the [`RateLimiter`] port (token buckets), run by
//! the in-process limiter (`agentry-store-memory`) and by the Redis one.
//!
//! Each behaviour takes a limiter on which no key has been used and works
//! through the port only. Most use a rate so slow (a token per 100 s) that
//! nothing refills while the test runs, so the expected counts are exact
//! whatever the machine's speed; the behaviours about refilling poll with
//! a deadline. Besides what it tests, each checks that a look
//! ([`RateLimiter::check`]) or a refusal took nothing: an adapter that
//! consumes on a check fails here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_core::{Error, RateDecision, RateLimit, RateLimiter};

/// Expands to one `#[tokio::test]` per behaviour of the rate-limit suite
/// (the [`agentry_core::RateLimiter`] port), named after the behaviour.
///
/// The argument is a generic async function that makes a fresh limiter,
/// runs the behaviour it is given on it, and cleans up after it (the Redis
/// tests delete their keys there):
///
/// ```text
/// async fn with_limiter<F, Fut>(behaviour: F)
/// where
///     F: FnOnce(Arc<dyn RateLimiter>) -> Fut,
///     Fut: Future<Output = ()>,
/// {
///     behaviour(Arc::new(MemoryRateLimiter::new())).await;
/// }
/// agentry_store_conformance::rate_limiter_conformance_tests!(with_limiter);
/// ```
#[macro_export]
macro_rules! rate_limiter_conformance_tests {
    ($run:path) => {
        $crate::__rate_limiter_tests!(
            $run;
            rate_limit_grants_the_burst_then_refuses_with_retry_after,
            rate_limit_tokens_come_back_at_the_rate,
            rate_limit_refills_only_to_the_burst,
            rate_limit_check_consumes_nothing,
            rate_limit_check_says_when_a_token_is_back,
            rate_limit_callers_have_their_own_buckets,
            rate_limit_concurrent_acquires_never_grant_more_than_the_burst,
            rate_limit_follows_a_changed_limit,
            rate_limit_invalid_limit_is_refused_naming_the_field
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rate_limiter_tests {
    ($run:path; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $run($crate::$name).await;
            }
        )*
    };
}

/// A token per 100 s: nothing refills during a test.
const SLOW: f64 = 0.01;

/// How long a behaviour waits for a token that should come back.
const DEADLINE: Duration = Duration::from_secs(5);

fn limit(rate_per_s: f64, burst: u32) -> RateLimit {
    RateLimit { rate_per_s, burst }
}

async fn acquire(limiter: &Arc<dyn RateLimiter>, key: &str, limit: RateLimit) -> RateDecision {
    limiter
        .acquire(key, limit)
        .await
        .unwrap_or_else(|error| panic!("{}: acquire {key}: {error}", limiter.name()))
}

async fn check(limiter: &Arc<dyn RateLimiter>, key: &str, limit: RateLimit) -> RateDecision {
    limiter
        .check(key, limit)
        .await
        .unwrap_or_else(|error| panic!("{}: check {key}: {error}", limiter.name()))
}

#[track_caller]
fn assert_granted(d: RateDecision, remaining: u32, what: &str) {
    assert!(d.allowed, "{what}: refused: {d:?}");
    assert_eq!(d.remaining, remaining, "{what}: {d:?}");
    assert_eq!(d.retry_after, Duration::ZERO, "{what}: {d:?}");
}

#[track_caller]
fn assert_refused(d: RateDecision, what: &str) {
    assert!(!d.allowed, "{what}: granted: {d:?}");
    assert_eq!(d.remaining, 0, "{what}: {d:?}");
    assert!(d.retry_after > Duration::ZERO, "{what}: {d:?}");
}

/// Acquires once per entry of `expected` (Some(remaining) for a grant,
/// None for a refusal) and checks each decision.
async fn acquires(
    limiter: &Arc<dyn RateLimiter>,
    key: &str,
    limit: RateLimit,
    expected: &[Option<u32>],
) {
    for (i, want) in expected.iter().enumerate() {
        let d = acquire(limiter, key, limit).await;
        let what = format!("acquire {i} on {key}");
        match want {
            Some(remaining) => assert_granted(d, *remaining, &what),
            None => assert_refused(d, &what),
        }
    }
}

/// Checks until a token is there; panics after [`DEADLINE`]. Returns how
/// long it took.
async fn until_a_token_is_back(
    limiter: &Arc<dyn RateLimiter>,
    key: &str,
    limit: RateLimit,
) -> Duration {
    let started = Instant::now();
    loop {
        if check(limiter, key, limit).await.allowed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{}: no token came back to {key} within {DEADLINE:?} at {} per s",
            limiter.name(),
            limit.rate_per_s
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A bucket starts full: `burst` grants, each saying how many tokens are
/// left, then a refusal that says how long until a token is back (at most
/// one token's time).
pub async fn rate_limit_grants_the_burst_then_refuses_with_retry_after(
    limiter: Arc<dyn RateLimiter>,
) {
    assert!(!limiter.name().is_empty(), "the adapter has a name");
    let one_per_s = limit(1.0, 3);
    acquires(&limiter, "k", one_per_s, &[Some(2), Some(1), Some(0)]).await;
    let refused = acquire(&limiter, "k", one_per_s).await;
    assert_refused(refused, "past the burst");
    assert!(
        refused.retry_after <= Duration::from_secs(1)
            && refused.retry_after > Duration::from_millis(500),
        "a token takes a second, and little of it has passed: {refused:?}"
    );
}

/// Tokens come back at the rate: not at once, and one per `1/rate`.
pub async fn rate_limit_tokens_come_back_at_the_rate(limiter: Arc<dyn RateLimiter>) {
    let ten_per_s = limit(10.0, 1);
    let granted_at = Instant::now();
    acquires(&limiter, "k", ten_per_s, &[Some(0)]).await;
    assert_refused(acquire(&limiter, "k", ten_per_s).await, "at once");
    until_a_token_is_back(&limiter, "k", ten_per_s).await;
    assert!(
        granted_at.elapsed() >= Duration::from_millis(90),
        "a token came back after {:?}; it takes 100 ms",
        granted_at.elapsed()
    );
    acquires(&limiter, "k", ten_per_s, &[Some(0), None]).await;
}

/// However long a bucket rests, it holds at most `burst` tokens.
pub async fn rate_limit_refills_only_to_the_burst(limiter: Arc<dyn RateLimiter>) {
    let fifty_per_s = limit(50.0, 2);
    acquires(&limiter, "k", fifty_per_s, &[Some(1), Some(0), None]).await;
    // Full again after 40 ms; then rest ten times that long.
    let started = Instant::now();
    loop {
        if check(&limiter, "k", fifty_per_s).await.remaining == 2 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the bucket never refilled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_granted(check(&limiter, "k", fifty_per_s).await, 2, "after a rest");
    acquires(&limiter, "k", fifty_per_s, &[Some(1), Some(0), None]).await;
}

/// A check takes nothing: a bucket only ever checked stays full, checks
/// between grants change no count, and a check of an empty bucket is a
/// refusal that does not delay the next token.
pub async fn rate_limit_check_consumes_nothing(limiter: Arc<dyn RateLimiter>) {
    let slow = limit(SLOW, 3);
    for i in 0..10 {
        assert_granted(check(&limiter, "k", slow).await, 3, &format!("check {i}"));
    }
    acquires(&limiter, "k", slow, &[Some(2)]).await;
    for i in 0..10 {
        assert_granted(check(&limiter, "k", slow).await, 2, &format!("check {i}"));
    }
    acquires(&limiter, "k", slow, &[Some(1), Some(0)]).await;
    let refused = check(&limiter, "k", slow).await;
    assert_refused(refused, "check of an empty bucket");
    assert!(
        refused.retry_after <= Duration::from_secs(100),
        "{refused:?}"
    );
    acquires(&limiter, "k", slow, &[None]).await;

    for _ in 0..10 {
        check(&limiter, "only-checked", slow).await;
    }
    acquires(
        &limiter,
        "only-checked",
        slow,
        &[Some(2), Some(1), Some(0), None],
    )
    .await;
}

/// A check of an empty bucket says how long until a token is back, and
/// the token is there (for a check and a take) once that time has passed.
pub async fn rate_limit_check_says_when_a_token_is_back(limiter: Arc<dyn RateLimiter>) {
    let ten_per_s = limit(10.0, 1);
    acquires(&limiter, "k", ten_per_s, &[Some(0)]).await;
    let refused = check(&limiter, "k", ten_per_s).await;
    assert_refused(refused, "check after the last token");
    assert!(
        refused.retry_after <= Duration::from_millis(100),
        "{refused:?}"
    );
    until_a_token_is_back(&limiter, "k", ten_per_s).await;
    acquires(&limiter, "k", ten_per_s, &[Some(0)]).await;
}

/// Each key has its own bucket: emptying one leaves the others full.
pub async fn rate_limit_callers_have_their_own_buckets(limiter: Arc<dyn RateLimiter>) {
    let slow = limit(SLOW, 2);
    acquires(&limiter, "a", slow, &[Some(1), Some(0), None]).await;
    assert_granted(check(&limiter, "b", slow).await, 2, "another key");
    acquires(&limiter, "b", slow, &[Some(1), Some(0), None]).await;
    acquires(&limiter, "a:b", slow, &[Some(1)]).await;
}

/// Takes racing on one bucket never grant more than `burst`, one grant per
/// token, and checks racing with them take nothing.
pub async fn rate_limit_concurrent_acquires_never_grant_more_than_the_burst(
    limiter: Arc<dyn RateLimiter>,
) {
    let slow = limit(SLOW, 10);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    Some(acquire(&limiter, "hot", slow).await)
                } else {
                    check(&limiter, "hot", slow).await;
                    None
                }
            })
        })
        .collect();
    let mut remaining = Vec::new();
    for task in futures::future::join_all(tasks).await {
        if let Some(d) = task.expect("the task ran") {
            if d.allowed {
                remaining.push(d.remaining);
            }
        }
    }
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..10).collect::<Vec<u32>>(),
        "exactly the burst, one grant per token"
    );
    assert_refused(check(&limiter, "hot", slow).await, "after the race");
}

/// The limit is the caller's to change (a configuration reload): a bigger
/// burst does not fill a bucket, a smaller one caps it at once.
pub async fn rate_limit_follows_a_changed_limit(limiter: Arc<dyn RateLimiter>) {
    acquires(&limiter, "k", limit(SLOW, 5), &[Some(4), Some(3)]).await;
    assert_granted(check(&limiter, "k", limit(SLOW, 10)).await, 3, "bigger");
    acquires(&limiter, "k", limit(SLOW, 10), &[Some(2)]).await;
    assert_granted(check(&limiter, "k", limit(SLOW, 1)).await, 1, "smaller");
    acquires(&limiter, "k", limit(SLOW, 1), &[Some(0), None]).await;
}

/// A limit that makes no sense is invalid input naming the field, for a
/// take and a check alike, and touches no bucket.
pub async fn rate_limit_invalid_limit_is_refused_naming_the_field(limiter: Arc<dyn RateLimiter>) {
    for (bad, field) in [
        (limit(0.0, 5), "rate_per_s"),
        (limit(f64::NAN, 5), "rate_per_s"),
        (limit(f64::INFINITY, 5), "rate_per_s"),
        (limit(-1.0, 5), "rate_per_s"),
        (limit(1.0, 0), "burst"),
    ] {
        for (how, result) in [
            ("acquire", limiter.acquire("k", bad).await),
            ("check", limiter.check("k", bad).await),
        ] {
            match result {
                Err(Error::InvalidInput(message)) => {
                    assert!(message.contains(field), "{how} {bad:?}: {message}")
                }
                other => panic!("{how} {bad:?}: expected invalid input, got {other:?}"),
            }
        }
    }
    acquires(&limiter, "k", limit(SLOW, 2), &[Some(1), Some(0)]).await;
}

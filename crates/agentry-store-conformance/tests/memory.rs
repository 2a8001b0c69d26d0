//! The suites against the in-memory adapters (`agentry-store-memory`): the
//! store and the rate limiter.

use std::future::Future;
use std::sync::Arc;

use agentry_core::RateLimiter;
use agentry_store_memory::{MemoryRateLimiter, MemoryStore};

agentry_store_conformance::store_conformance_tests!(async { Arc::new(MemoryStore::new()) });

agentry_store_conformance::llm_data_conformance_tests!(async { Arc::new(MemoryStore::new()) });

agentry_store_conformance::api_key_conformance_tests!(async { Arc::new(MemoryStore::new()) });

agentry_store_conformance::worker_registry_conformance_tests!(async {
    Arc::new(MemoryStore::new())
});

async fn with_limiter<F, Fut>(behaviour: F)
where
    F: FnOnce(Arc<dyn RateLimiter>) -> Fut,
    Fut: Future<Output = ()>,
{
    behaviour(Arc::new(MemoryRateLimiter::new())).await;
}

agentry_store_conformance::rate_limiter_conformance_tests!(with_limiter);

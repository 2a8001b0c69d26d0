//! The suite against the in-memory store (`agentry-store-memory`).

use std::sync::Arc;

use agentry_store_memory::MemoryStore;

agentry_store_conformance::store_conformance_tests!(async { Arc::new(MemoryStore::new()) });

agentry_store_conformance::llm_data_conformance_tests!(async { Arc::new(MemoryStore::new()) });

agentry_store_conformance::api_key_conformance_tests!(async { Arc::new(MemoryStore::new()) });

agentry_store_conformance::worker_registry_conformance_tests!(async {
    Arc::new(MemoryStore::new())
});

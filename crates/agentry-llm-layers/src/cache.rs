//! [`Cached`]: answers repeated requests from an [`LlmCache`], and
//! [`MemoryCache`], an in-process [`LlmCache`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, LlmCache, LlmProfile, LlmProvider, Result};
use async_trait::async_trait;
use tokio::time::Instant;

use crate::request_key::cache_key;
use crate::trace::llm_event;

/// Answers a request seen before from the cache without calling the
/// provider.
///
/// The key is [`cache_key`] of the inner provider's name, the request's
/// model (or the provider's), and the request without its `meta`. A hit is
/// the stored response with `usage.cached = true`; its token counts are
/// kept so hits show in usage (the ledger books them at no cost). A miss
/// calls the provider and stores the response when it succeeded and was
/// not cut off (`finish_reason == "length"`); errors are never stored. A
/// failing cache is logged and bypassed: it never fails a call.
pub struct Cached {
    inner: Arc<dyn LlmProvider>,
    cache: Arc<dyn LlmCache>,
    ttl: Duration,
}

impl Cached {
    /// Wraps `inner`; responses are kept for `ttl`.
    pub fn new(inner: Arc<dyn LlmProvider>, cache: Arc<dyn LlmCache>, ttl: Duration) -> Self {
        Cached { inner, cache, ttl }
    }
}

#[async_trait]
impl LlmProvider for Cached {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn profile(&self) -> LlmProfile {
        self.inner.profile()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let key = cache_key(self.inner.name(), self.inner.model(), request);
        match self.cache.get(&key).await {
            Ok(Some(mut response)) => {
                llm_event!(debug, self.inner.name(), request, cache_key = %key, "LLM response cache hit.");
                response.usage.cached = true;
                return Ok(response);
            }
            Ok(None) => {}
            Err(error) => {
                llm_event!(warn, self.inner.name(), request, cache_key = %key, %error,
                    "LLM response cache read failed; calling the provider.");
            }
        }
        let mut response = self.inner.complete(request).await?;
        response.usage.cached = false;
        if response.finish_reason != "length" {
            if let Err(error) = self.cache.put(&key, &response, self.ttl).await {
                llm_event!(warn, self.inner.name(), request, cache_key = %key, %error,
                    "LLM response cache write failed; the response is not cached.");
            }
        }
        Ok(response)
    }
}

/// An [`LlmCache`] in process memory, with expiry on tokio time. For tests
/// and for embedded runs without a store; entries do not outlive the
/// process. Expired entries are dropped when read and swept on writes.
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, (ChatResponse, Instant)>>,
}

impl MemoryCache {
    /// A cache with no entry.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many unexpired entries it holds.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|(_, until)| *until > now)
            .count()
    }

    /// True when it holds no unexpired entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ChatResponse, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl LlmCache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<ChatResponse>> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some((response, until)) if *until > Instant::now() => Ok(Some(response.clone())),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, response: &ChatResponse, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (_, until)| *until > now);
        if let Some(until) = now.checked_add(ttl) {
            entries.insert(key.to_string(), (response.clone(), until));
        } else {
            // A TTL beyond the clock's range: keep it as long as possible.
            let far = now + Duration::from_secs(100 * 365 * 24 * 3600);
            entries.insert(key.to_string(), (response.clone(), far));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, request, response, transient, FakeProvider};
    use agentry_core::{Error, ToolDefinition};

    const TTL: Duration = Duration::from_secs(60);

    fn cached(fake: &Arc<FakeProvider>) -> (Cached, Arc<MemoryCache>) {
        let cache = Arc::new(MemoryCache::new());
        (Cached::new(fake.clone(), cache.clone(), TTL), cache)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_does_not_call_the_provider_and_is_marked_cached() {
        let fake = FakeProvider::answering("p", [ok("p", "answer")]);
        let (cached, _) = cached(&fake);
        let first = cached.complete(&request("hi")).await.unwrap();
        assert!(!first.usage.cached);
        let second = cached.complete(&request("hi")).await.unwrap();
        assert_eq!(fake.calls(), 1);
        assert_eq!(second.content, "answer");
        assert!(second.usage.cached);
        assert_eq!(second.usage.prompt_tokens, first.usage.prompt_tokens);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_cut_off_answers_are_never_cached() {
        let mut cut_off = response("p", "half an ans");
        cut_off.finish_reason = "length".into();
        let fake = FakeProvider::answering("p", [Err(transient()), Ok(cut_off), ok("p", "whole")]);
        let (cached, cache) = cached(&fake);
        cached.complete(&request("hi")).await.unwrap_err();
        assert!(cache.is_empty());
        cached.complete(&request("hi")).await.unwrap();
        assert!(cache.is_empty());
        assert_eq!(
            cached.complete(&request("hi")).await.unwrap().content,
            "whole"
        );
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let fake = FakeProvider::new("p");
        let (cached, _) = cached(&fake);
        cached.complete(&request("hi")).await.unwrap();
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert!(cached.complete(&request("hi")).await.unwrap().usage.cached);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!cached.complete(&request("hi")).await.unwrap().usage.cached);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_asked_splits_the_cache_but_meta_does_not() {
        let fake = FakeProvider::new("p");
        let (cached, _) = cached(&fake);
        let base = request("hi");
        cached.complete(&base).await.unwrap();

        let mut elsewhere = base.clone();
        elsewhere.meta.workflow_id = None;
        elsewhere.meta.node = "qa".into();
        elsewhere.meta.request_id = Some(agentry_core::RequestId::new("req-2").unwrap());
        assert!(cached.complete(&elsewhere).await.unwrap().usage.cached);

        let mut warmer = base.clone();
        warmer.temperature = Some(0.9);
        let mut with_tools = base.clone();
        with_tools.tools.push(ToolDefinition {
            name: "write_file".into(),
            description: "Writes a file.".into(),
            parameters: serde_json::json!({"type": "object"}),
        });
        for request in [warmer, with_tools] {
            assert!(!cached.complete(&request).await.unwrap().usage.cached);
        }
        assert_eq!(fake.calls(), 3);
    }

    struct BrokenCache;

    #[async_trait]
    impl LlmCache for BrokenCache {
        async fn get(&self, _key: &str) -> Result<Option<ChatResponse>> {
            Err(Error::transient("redis down"))
        }
        async fn put(&self, _: &str, _: &ChatResponse, _: Duration) -> Result<()> {
            Err(Error::transient("redis down"))
        }
    }

    #[tokio::test]
    async fn a_broken_cache_never_fails_a_call() {
        let fake = FakeProvider::new("p");
        let cached = Cached::new(fake.clone(), Arc::new(BrokenCache), TTL);
        for _ in 0..2 {
            assert_eq!(
                cached.complete(&request("hi")).await.unwrap().content,
                "default"
            );
        }
        assert_eq!(fake.calls(), 2);
    }
}

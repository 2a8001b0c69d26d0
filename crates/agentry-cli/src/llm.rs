//! LLM wiring: which provider a run uses (flags, then the workflow's stored
//! choice, then the config), how a named provider is resolved (presets,
//! `[llm.providers]`, flags), and how each is wrapped in the resilience
//! layers, the response cache, the fallback chain, per-role routing and the
//! recorder.
//!
//! Layer order, outermost first: `Recorder` -> `RoleRouter` -> per role:
//! `Fallback` over the chain -> per provider: `Cached` ->
//! `CircuitBreaker` -> `Retry` -> `Timeout` -> the HTTP client. Offline
//! providers (`scripted`, `demo`, `replay`) get no retry or cache: they
//! cannot fail transiently and must answer deterministically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use serde::Serialize;

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, ChatResponse, LlmCache, LlmProfile, LlmProvider,
    LlmSelection, RequestMeta,
};
use agentry_llm_http::{
    AnthropicConfig, AnthropicProvider, OpenAiConfig, OpenAiProvider, Secret, StructuredOutput,
};
use agentry_llm_layers::{
    BreakerConfig, Cached, Fallback, LayerConfig, Recorder, ReplayProvider, RetryPolicy,
};
use agentry_llm_scripted::ScriptedProvider;

use crate::cli::LlmArgs;
use crate::config::{Config, ProviderConfig, ProviderKind, RoleLlm};

/// Providers that need no configuration: their defaults.
const PRESETS: &[(&str, ProviderKind, &str, Option<&str>)] = &[
    (
        "openai",
        ProviderKind::Openai,
        "https://api.openai.com/v1",
        Some("OPENAI_API_KEY"),
    ),
    (
        "anthropic",
        ProviderKind::Anthropic,
        AnthropicConfig::DEFAULT_BASE_URL,
        Some("ANTHROPIC_API_KEY"),
    ),
    (
        "ollama",
        ProviderKind::Openai,
        "http://localhost:11434/v1",
        None,
    ),
    (
        "vllm",
        ProviderKind::Openai,
        "http://localhost:8000/v1",
        Some("VLLM_API_KEY"),
    ),
];

/// Offline providers, built in (`local` runs a model in-process).
const OFFLINE: &[&str] = &["local", "scripted", "demo", "replay"];

/// Hosts that always need a key.
const HOSTED: &[&str] = &["api.openai.com", "api.anthropic.com"];

/// The LLM choice of a run, stored in the workflow's options (never a key)
/// so that `resume` uses the same provider.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmChoice {
    /// What answers: `local`, `demo`, `scripted`, `replay`, a preset or a
    /// name under `[llm.providers]`.
    pub provider: String,
    /// The script a `scripted` run replays, made absolute so a resume from
    /// another directory finds it.
    pub script: Option<PathBuf>,
    /// The cassette a `replay` run answers from, made absolute.
    pub replay: Option<PathBuf>,
    /// Simulated latency (scripted and demo only).
    pub latency_ms: u64,
    /// Base URL given on the command line.
    pub base_url: Option<String>,
    /// Model given on the command line.
    pub model: Option<String>,
    /// Cassette every answer is appended to (absolute); a worker does not
    /// record: recording is the submitting process's business.
    pub record: Option<PathBuf>,
    /// Skip the response cache (this process only; not stored).
    pub no_cache: bool,
}

impl LlmChoice {
    /// Resolves flags, then the workflow's stored choice, then the config.
    pub fn resolve(
        args: &LlmArgs,
        stored: Option<&LlmSelection>,
        config: &Config,
    ) -> Result<LlmChoice> {
        if config.llm.providers.contains_key("local") {
            bail!(
                "[llm.providers.local]: `local` is the built-in local model ([llm.local]); \
                 give that provider another name"
            );
        }
        let script = args
            .llm_script
            .clone()
            .or_else(|| stored.and_then(|s| s.script.clone()))
            .or_else(|| config.llm.script.clone());
        let replay = args
            .replay
            .clone()
            .or_else(|| stored.and_then(|s| s.replay.clone()))
            .or_else(|| config.llm.replay.clone());
        let flagged = args
            .llm
            .clone()
            .or_else(|| args.replay.as_ref().map(|_| "replay".to_string()))
            .or_else(|| args.llm_script.as_ref().map(|_| "scripted".to_string()));
        let provider = flagged
            .clone()
            .or_else(|| stored.map(|s| s.provider.clone()).filter(|p| !p.is_empty()))
            .or_else(|| config.llm.provider.clone())
            .or_else(|| script.as_ref().map(|_| "scripted".to_string()))
            // No hosted provider configured: the local model.
            .unwrap_or_else(|| "local".to_string());
        // Stored URL and model belong to the stored provider only.
        let same_provider = stored.filter(|s| s.provider == provider);
        let latency_ms = args
            .llm_latency_ms
            .or_else(|| stored.map(|s| s.latency_ms))
            .or(config.llm.latency_ms)
            .unwrap_or(0);
        let mut choice = LlmChoice {
            base_url: args
                .base_url
                .clone()
                .or_else(|| same_provider.and_then(|s| s.base_url.clone())),
            model: args
                .model
                .clone()
                .or_else(|| same_provider.and_then(|s| s.model.clone())),
            record: args
                .record
                .clone()
                .or_else(|| stored.and_then(|s| s.record.clone())),
            no_cache: args.no_cache,
            latency_ms,
            provider,
            ..LlmChoice::default()
        };
        match choice.provider.as_str() {
            "demo" => {}
            // Fails now, naming `agentry models pull`, when the model is missing.
            "local" => {
                config.llm.local.provider_config()?;
            }
            "scripted" => {
                let script = script.ok_or_else(|| {
                    anyhow!("the scripted LLM provider needs a script: pass --llm-script FILE")
                })?;
                choice.script = Some(
                    script
                        .canonicalize()
                        .with_context(|| format!("cannot read LLM script {}", script.display()))?,
                );
            }
            "replay" => {
                let replay = replay.ok_or_else(|| {
                    anyhow!("the replay LLM provider needs a cassette: pass --replay FILE")
                })?;
                choice.replay = Some(
                    replay
                        .canonicalize()
                        .with_context(|| format!("cannot read cassette {}", replay.display()))?,
                );
            }
            name => {
                // Fails now, naming what is missing, rather than mid-run.
                resolve_provider(name, config, choice.overrides())?;
            }
        }
        if let Some(record) = &choice.record {
            choice.record = Some(absolute(record)?);
        }
        Ok(choice)
    }

    fn overrides(&self) -> Overrides {
        Overrides {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
        }
    }

    /// What the workflow's options keep of this choice, so a resume and a
    /// worker build the same provider (the cache switch is this process's
    /// own).
    pub fn selection(&self) -> LlmSelection {
        LlmSelection {
            provider: self.provider.clone(),
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            script: self.script.clone(),
            replay: self.replay.clone(),
            record: self.record.clone(),
            latency_ms: self.latency_ms,
        }
    }

    /// Builds the provider the agents call: per-role routing over the
    /// layered stacks, recording when asked.
    pub fn provider(
        &self,
        config: &Config,
        cache: Arc<dyn LlmCache>,
    ) -> Result<Arc<dyn LlmProvider>> {
        let factory = Factory {
            config,
            cache: (config.llm.cache.enabled && !self.no_cache).then_some(cache),
            local: std::cell::OnceCell::new(),
        };
        let main = factory.stack(self, &self.provider, self.overrides())?;
        let mut by_role = HashMap::new();
        for (role, entry) in &config.llm.roles {
            let role: AgentRole = role.parse().context("llm.roles")?;
            let (name, model) = match entry {
                RoleLlm::Provider(name) => (Some(name.clone()), None),
                RoleLlm::Detailed { provider, model } => (provider.clone(), model.clone()),
            };
            let name = name.unwrap_or_else(|| self.provider.clone());
            let mut overrides = if name == self.provider {
                self.overrides()
            } else {
                Overrides::default()
            };
            if model.is_some() {
                overrides.model = model;
            }
            by_role.insert(role, factory.stack(self, &name, overrides)?);
        }
        let routed: Arc<dyn LlmProvider> = if by_role.is_empty() {
            main
        } else {
            Arc::new(RoleRouter {
                default: main,
                by_role,
            })
        };
        match &self.record {
            Some(path) => Ok(Arc::new(
                Recorder::create(routed, path)
                    .with_context(|| format!("cannot record to {}", path.display()))?,
            )),
            None => Ok(routed),
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(path))
}

/// Command-line overrides of a provider's settings.
#[derive(Debug, Clone, Default)]
struct Overrides {
    base_url: Option<String>,
    model: Option<String>,
}

/// A provider with every setting decided.
#[derive(Debug, Clone)]
pub struct ResolvedProvider {
    /// The name it was asked for by, as logs and the ledger show it.
    pub name: String,
    /// Which client speaks to it.
    pub kind: ProviderKind,
    /// From the flag, else its table, else its preset.
    pub base_url: String,
    /// The model a request without one goes to.
    pub model: String,
    api_key: Option<Secret>,
    settings: ProviderConfig,
}

/// Resolves a named provider: preset defaults, then `[llm.providers.NAME]`,
/// then command-line overrides; reads its key from the file or variable.
fn resolve_provider(name: &str, config: &Config, overrides: Overrides) -> Result<ResolvedProvider> {
    let preset = PRESETS.iter().find(|p| p.0 == name);
    let table = config.llm.providers.get(name);
    if preset.is_none() && table.is_none() {
        let mut known: Vec<&str> = PRESETS
            .iter()
            .map(|p| p.0)
            .chain(OFFLINE.iter().copied())
            .collect();
        known.extend(config.llm.providers.keys().map(String::as_str));
        bail!(
            "unknown LLM provider `{name}`: configure it under [llm.providers.{name}] \
             or use one of: {}",
            known.join(", ")
        );
    }
    let settings = table.cloned().unwrap_or_default();
    let kind = settings
        .kind
        .or(preset.map(|p| p.1))
        .unwrap_or(ProviderKind::Openai);
    let base_url = overrides
        .base_url
        .or_else(|| settings.base_url.clone())
        .or_else(|| preset.filter(|p| p.1 == kind).map(|p| p.2.to_string()))
        .ok_or_else(|| {
            anyhow!("LLM provider `{name}` has no base URL: pass --base-url URL or set llm.providers.{name}.base_url")
        })?;
    let model = overrides
        .model
        .or_else(|| settings.model.clone())
        .ok_or_else(|| {
            anyhow!("LLM provider `{name}` has no model: pass --model NAME or set llm.providers.{name}.model")
        })?;
    let api_key = read_key(name, &settings, preset.and_then(|p| p.3))?;
    if api_key.is_none() && HOSTED.iter().any(|h| base_url.contains(h)) {
        let var = settings
            .api_key_env
            .as_deref()
            .or(preset.and_then(|p| p.3))
            .unwrap_or("the key variable");
        bail!(
            "LLM provider `{name}` ({base_url}) needs an API key: set {var}, \
             or llm.providers.{name}.api_key_env / api_key_file"
        );
    }
    Ok(ResolvedProvider {
        name: name.to_string(),
        kind,
        base_url,
        model,
        api_key,
        settings,
    })
}

/// The key from `api_key_file`, else `api_key_env`, else the preset's
/// variable. A configured source that is missing is an error naming it; an
/// unset preset variable means no key.
fn read_key(
    name: &str,
    settings: &ProviderConfig,
    preset_env: Option<&str>,
) -> Result<Option<Secret>> {
    if let Some(file) = &settings.api_key_file {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!(
                "cannot read the API key file of LLM provider `{name}` ({})",
                file.display()
            )
        })?;
        let key = text.lines().next().unwrap_or("").trim().to_string();
        if key.is_empty() {
            bail!(
                "the API key file of LLM provider `{name}` ({}) is empty",
                file.display()
            );
        }
        return Ok(Some(Secret::new(key)));
    }
    if let Some(var) = &settings.api_key_env {
        return match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(Secret::new(key.trim()))),
            _ => bail!("LLM provider `{name}` reads its API key from {var}, which is not set"),
        };
    }
    Ok(preset_env
        .and_then(|var| std::env::var(var).ok())
        .filter(|k| !k.trim().is_empty())
        .map(|k| Secret::new(k.trim())))
}

/// The raw HTTP client of a resolved provider.
fn http_provider(p: &ResolvedProvider) -> Result<Arc<dyn LlmProvider>> {
    let s = &p.settings;
    let timeout = Duration::from_secs(s.timeout_s.unwrap_or(300));
    let connect = Duration::from_secs(s.connect_timeout_s.unwrap_or(10));
    let stream = s.stream.unwrap_or(false);
    let headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let provider: Arc<dyn LlmProvider> = match p.kind {
        ProviderKind::Openai => {
            let mut c = OpenAiConfig::new(&p.name, &p.base_url, &p.model)
                .with_timeout(timeout)
                .with_stream(stream)
                .with_structured_output(match s.structured_output.as_deref() {
                    Some("json_schema") => StructuredOutput::JsonSchema,
                    Some("instructions") => StructuredOutput::Instructions,
                    _ => StructuredOutput::Auto,
                });
            c.connect_timeout = connect;
            c.headers = headers;
            c.api_key = p.api_key.clone();
            Arc::new(OpenAiProvider::new(c).with_context(|| format!("LLM provider `{}`", p.name))?)
        }
        ProviderKind::Anthropic => {
            let mut c = AnthropicConfig::new(&p.name, &p.model)
                .with_base_url(&p.base_url)
                .with_timeout(timeout)
                .with_stream(stream);
            c.connect_timeout = connect;
            c.headers = headers;
            c.api_key = p.api_key.clone();
            if let Some(max) = s.max_tokens {
                c.max_tokens = max;
            }
            if let Some(version) = &s.anthropic_version {
                c.version = version.clone();
            }
            Arc::new(
                AnthropicProvider::new(c).with_context(|| format!("LLM provider `{}`", p.name))?,
            )
        }
    };
    Ok(provider)
}

/// Builds the layered stack of each provider a run names, sharing one
/// response cache and one local model among them.
struct Factory<'a> {
    config: &'a Config,
    cache: Option<Arc<dyn LlmCache>>,
    /// The local model, loaded once however many roles route to it.
    local: std::cell::OnceCell<Arc<dyn LlmProvider>>,
}

impl Factory<'_> {
    fn layers(&self, timeout: Duration) -> LayerConfig {
        let r = &self.config.llm.retry;
        let b = &self.config.llm.breaker;
        LayerConfig {
            retry: RetryPolicy {
                max_attempts: r.max_attempts,
                base_delay: Duration::from_millis(r.base_delay_ms),
                max_delay: Duration::from_millis(r.max_delay_ms),
                ..RetryPolicy::default()
            },
            breaker: BreakerConfig {
                failure_threshold: b.failure_threshold,
                open_for: Duration::from_secs(b.open_for_s),
            },
            timeout,
        }
    }

    /// One named provider with its layers and cache.
    fn layered(&self, name: &str, overrides: Overrides) -> Result<Arc<dyn LlmProvider>> {
        let resolved = resolve_provider(name, self.config, overrides)?;
        let timeout = Duration::from_secs(resolved.settings.timeout_s.unwrap_or(300));
        let raw = http_provider(&resolved)?;
        let resilient = agentry_llm_layers::resilient(raw, &self.layers(timeout));
        Ok(match &self.cache {
            Some(cache) => Arc::new(Cached::new(
                resilient,
                cache.clone(),
                Duration::from_secs(self.config.llm.cache.ttl_s),
            )),
            None => resilient,
        })
    }

    /// The local model behind its timeout and the response cache (no
    /// retry: a failed generation fails the same way again).
    fn local(&self) -> Result<Arc<dyn LlmProvider>> {
        if let Some(provider) = self.local.get() {
            return Ok(provider.clone());
        }
        let settings = &self.config.llm.local;
        let raw = agentry_llm_local::LocalProvider::new(settings.provider_config()?)
            .with_observer(crate::progress::meter());
        let timed: Arc<dyn LlmProvider> = Arc::new(agentry_llm_layers::Timeout::new(
            Arc::new(raw),
            Duration::from_secs(settings.timeout_s.max(1)),
        ));
        let provider: Arc<dyn LlmProvider> = match &self.cache {
            Some(cache) => Arc::new(Cached::new(
                timed,
                cache.clone(),
                Duration::from_secs(self.config.llm.cache.ttl_s),
            )),
            None => timed,
        };
        Ok(self.local.get_or_init(|| provider).clone())
    }

    /// The stack of a role (or the default): an offline provider as it is,
    /// or the named provider followed by the configured fallbacks.
    fn stack(
        &self,
        choice: &LlmChoice,
        name: &str,
        overrides: Overrides,
    ) -> Result<Arc<dyn LlmProvider>> {
        match name {
            "local" => return self.local(),
            "demo" => {
                let p = ScriptedProvider::from_toml_str(agentry_agents::demo::DEMO_SESSION, "demo")
                    .context("bundled demo session")?;
                return Ok(Arc::new(
                    p.with_latency(Duration::from_millis(choice.latency_ms)),
                ));
            }
            "scripted" => {
                let path = choice
                    .script
                    .as_ref()
                    .ok_or_else(|| anyhow!("the scripted LLM provider needs a script"))?;
                let p = ScriptedProvider::from_file(path)
                    .with_context(|| format!("LLM script {}", path.display()))?;
                return Ok(Arc::new(
                    p.with_latency(Duration::from_millis(choice.latency_ms)),
                ));
            }
            "replay" => {
                let path = choice
                    .replay
                    .as_ref()
                    .ok_or_else(|| anyhow!("the replay LLM provider needs a cassette"))?;
                return Ok(Arc::new(
                    ReplayProvider::open(path)
                        .with_context(|| format!("cassette {}", path.display()))?,
                ));
            }
            _ => {}
        }
        let mut chain = vec![self.layered(name, overrides)?];
        for fallback in &self.config.llm.fallback {
            if fallback == "local" {
                chain.push(self.local()?);
            } else if fallback != name {
                chain.push(self.layered(fallback, Overrides::default())?);
            }
        }
        if chain.len() == 1 {
            return Ok(chain.remove(0));
        }
        Ok(Arc::new(Fallback::new(name, chain)))
    }
}

/// Sends each request to its role's stack (a cheaper model for the
/// technical writer, say), else to the default one.
struct RoleRouter {
    default: Arc<dyn LlmProvider>,
    by_role: HashMap<AgentRole, Arc<dyn LlmProvider>>,
}

#[async_trait]
impl LlmProvider for RoleRouter {
    fn name(&self) -> &str {
        self.default.name()
    }

    fn model(&self) -> &str {
        self.default.model()
    }

    /// The default stack's: the agents shape one set of prompts for every
    /// role, so where roles route to models of different kinds the
    /// configuration's `compact_prompts` decides.
    fn profile(&self) -> LlmProfile {
        self.default.profile()
    }

    async fn complete(&self, request: &ChatRequest) -> agentry_core::Result<ChatResponse> {
        self.by_role
            .get(&request.meta.role)
            .unwrap_or(&self.default)
            .complete(request)
            .await
    }
}

/// One provider's health check result.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The name checked, as configured.
    pub provider: String,
    /// `openai`, `anthropic`, `local` or `offline`.
    pub kind: String,
    /// The endpoint reached (the model file, for `local`).
    pub base_url: Option<String>,
    /// The model the configuration names.
    pub model: Option<String>,
    /// `ok` or `error`.
    pub status: &'static str,
    /// The model the answer says it came from (a server may map names).
    pub answered_by: Option<String>,
    /// Request to answer, milliseconds, also when it failed.
    pub latency_ms: Option<u64>,
    /// Why the check failed (the error's whole chain).
    pub error: Option<String>,
}

/// Sends one tiny request to each provider `args` and the config name
/// (the flagged one only, when `--llm` is given) and reports each.
pub async fn check(args: &LlmArgs, config: &Config) -> Vec<CheckReport> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: &str| {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    };
    if let Some(name) = &args.llm {
        push(name);
    } else {
        // No provider configured: the local model is the default.
        push(config.llm.provider.as_deref().unwrap_or("local"));
        for name in &config.llm.fallback {
            push(name);
        }
        for name in config.llm.providers.keys() {
            push(name);
        }
        for entry in config.llm.roles.values() {
            match entry {
                RoleLlm::Provider(name)
                | RoleLlm::Detailed {
                    provider: Some(name),
                    ..
                } => push(name),
                RoleLlm::Detailed { provider: None, .. } => {}
            }
        }
    }
    let mut reports = Vec::new();
    for name in names {
        let overrides = if args.llm.as_deref() == Some(name.as_str()) {
            Overrides {
                base_url: args.base_url.clone(),
                model: args.model.clone(),
            }
        } else {
            Overrides::default()
        };
        reports.push(check_one(&name, config, overrides).await);
    }
    reports
}

async fn check_one(name: &str, config: &Config, overrides: Overrides) -> CheckReport {
    let mut report = CheckReport {
        provider: name.to_string(),
        kind: "offline".into(),
        base_url: None,
        model: None,
        status: "error",
        answered_by: None,
        latency_ms: None,
        error: None,
    };
    if name == "local" {
        report.kind = "local".into();
        report.model = Some(config.llm.local.model.clone());
        return match config.llm.local.provider_config() {
            Ok(local) => {
                report.base_url = Some(local.path.display().to_string());
                let provider = Arc::new(agentry_llm_local::LocalProvider::new(local));
                probe(report, provider, Duration::from_secs(120)).await
            }
            Err(error) => {
                report.error = Some(format!("{error:#}"));
                report
            }
        };
    }
    if OFFLINE.contains(&name) {
        report.status = "ok";
        report.error = Some("offline provider: nothing to reach".into());
        return report;
    }
    let resolved = match resolve_provider(name, config, overrides) {
        Ok(r) => r,
        Err(error) => {
            report.error = Some(format!("{error:#}"));
            return report;
        }
    };
    report.kind = match resolved.kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
    }
    .into();
    report.base_url = Some(resolved.base_url.clone());
    report.model = Some(resolved.model.clone());
    let provider = match http_provider(&resolved) {
        Ok(p) => p,
        Err(error) => {
            report.error = Some(format!("{error:#}"));
            return report;
        }
    };
    let limit = Duration::from_secs(resolved.settings.timeout_s.unwrap_or(60).min(60));
    probe(report, provider, limit).await
}

/// Sends the tiny request to `provider` within `limit` and fills `report`.
async fn probe(
    mut report: CheckReport,
    provider: Arc<dyn LlmProvider>,
    limit: Duration,
) -> CheckReport {
    let provider = agentry_llm_layers::Timeout::new(provider, limit);
    let request = ChatRequest {
        model: None,
        messages: vec![
            ChatMessage::system("You are a health check. Answer with one word."),
            ChatMessage::user("Reply with the single word: ok"),
        ],
        tools: Vec::new(),
        response_schema: None,
        temperature: Some(0.0),
        max_tokens: Some(16),
        meta: RequestMeta {
            workflow_id: None,
            role: AgentRole::BusinessAnalyst,
            node: "llm-check".into(),
            step: 0,
            visit: 0,
            turn: 0,
            request_id: None,
        },
    };
    let started = Instant::now();
    let result = provider.complete(&request).await;
    report.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match result {
        Ok(response) => {
            report.status = "ok";
            report.answered_by = Some(response.model);
        }
        Err(error) => report.error = Some(error.to_string()),
    }
    report
}

/// Renders check reports as text lines.
pub fn render_check(reports: &[CheckReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let line = match r.status {
            "ok" => format!(
                "{:<12} ok     {:<9} {:<40} {}{}",
                r.provider,
                r.kind,
                r.base_url.as_deref().unwrap_or("-"),
                r.answered_by
                    .as_deref()
                    .or(r.model.as_deref())
                    .unwrap_or("-"),
                r.latency_ms
                    .map(|ms| format!("  {ms} ms"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "{:<12} ERROR  {:<9} {:<40} {}",
                r.provider,
                r.kind,
                r.base_url.as_deref().unwrap_or("-"),
                r.error.as_deref().unwrap_or("")
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if reports.is_empty() {
        out.push_str("no LLM provider configured: pass --llm NAME or set llm.provider\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    /// A configuration with the local model (an empty file: the model
    /// loads on the first call, which these tests never make), a hosted
    /// provider `box`, and `extra` TOML.
    fn config(dir: &Path, extra: &str) -> Config {
        let model = dir.join("model.gguf");
        std::fs::write(&model, b"").unwrap();
        let file = dir.join("agentry.toml");
        let text = format!(
            "[llm.local]\nmodel_path = {:?}\n\
             [llm.providers.box]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\
             {extra}",
            model.display().to_string()
        );
        std::fs::write(&file, text).unwrap();
        Config::load(Some(&file), &BTreeMap::new()).unwrap()
    }

    /// The profile of the whole stack a run with `--llm provider` gets.
    fn profile_of(config: &Config, provider: &str, record: Option<PathBuf>) -> LlmProfile {
        let args = LlmArgs {
            llm: Some(provider.to_string()),
            record,
            ..LlmArgs::default()
        };
        let choice = LlmChoice::resolve(&args, None, config).unwrap();
        let cache = Arc::new(agentry_llm_layers::MemoryCache::new());
        choice.provider(config, cache).unwrap().profile()
    }

    #[test]
    fn the_local_model_is_small_through_every_layer_the_cli_stacks() {
        let dir = tempfile::tempdir().unwrap();
        let plain = config(dir.path(), "");
        assert_eq!(profile_of(&plain, "local", None), LlmProfile::Small);
        let recorded = Some(dir.path().join("run.jsonl"));
        assert_eq!(profile_of(&plain, "local", recorded), LlmProfile::Small);
        let routed = config(dir.path(), "[llm.roles]\ntechnical_writer = \"box\"\n");
        assert_eq!(
            profile_of(&routed, "local", None),
            LlmProfile::Small,
            "the role router reports its default stack's"
        );
    }

    #[test]
    fn a_chain_has_the_profile_of_the_provider_it_starts_with() {
        let dir = tempfile::tempdir().unwrap();
        let chain = config(dir.path(), "[llm]\nfallback = [\"local\"]\n");
        assert_eq!(profile_of(&chain, "box", None), LlmProfile::Standard);
        assert_eq!(profile_of(&chain, "demo", None), LlmProfile::Standard);
    }
}

//! `LocalProvider`: the [`LlmProvider`] port on a local GGUF model.
//!
//! One model per provider, loaded on the first call (3 to 4 s) and kept;
//! calls take turns on it (a second copy would double the memory). Each
//! call runs on a blocking thread; dropping the call's future (a timeout,
//! a shutdown) stops its generation at the next token.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{info, warn};

use agentry_core::{
    ChatRequest, ChatResponse, Error, LlmObserver, LlmProfile, LlmProgress, LlmProvider, Result,
    Usage,
};

use crate::chat;
use crate::constraint;
use crate::generator::{Event, Finish, Generation, Generator, Sampling};

/// Settings of the local provider.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Provider name (`local`), as logs, prices and the ledger show it.
    pub name: String,
    /// Model name, as answers report it.
    pub model: String,
    /// The GGUF file the model and its tokenizer are read from.
    pub path: PathBuf,
    /// Compute threads (None: one per physical core). Set once per
    /// process, by the first model loaded.
    pub threads: Option<usize>,
    /// Completion token cap (a request's own cap may only lower it).
    pub max_tokens: u32,
    /// Prompt plus answer, at most (and at most the model's own context).
    pub context_tokens: usize,
    /// Sampling (a request's temperature wins over this one).
    pub sampling: Sampling,
    /// Constrain answers with a schema (and tool calls) by grammar.
    pub constrained: bool,
}

impl LocalConfig {
    /// The defaults for the model file at `path`.
    pub fn new(model: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        LocalConfig {
            name: "local".into(),
            model: model.into(),
            path: path.into(),
            threads: None,
            max_tokens: 2048,
            context_tokens: 8192,
            sampling: Sampling::default(),
            constrained: true,
        }
    }
}

#[derive(Default)]
struct State {
    generator: Option<Generator>,
    /// The last answer's text and tokens, reused token for token when the
    /// next prompt repeats it (the repair round, a follow-up turn).
    last_answer: Option<(String, Vec<u32>)>,
}

/// The local provider: the model in this process, loaded on the first
/// call and kept; calls take turns on it.
pub struct LocalProvider {
    config: Arc<LocalConfig>,
    state: Arc<Mutex<State>>,
    observer: Option<Arc<dyn LlmObserver>>,
}

impl LocalProvider {
    /// A provider for `config`; the model loads on the first call.
    pub fn new(config: LocalConfig) -> Self {
        LocalProvider {
            config: Arc::new(config),
            state: Arc::default(),
            observer: None,
        }
    }

    /// Reports prompt progress and every generated token to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn LlmObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Loads the model now; returns how long that took (zero when it was
    /// loaded already).
    pub async fn load(&self) -> Result<Duration> {
        let config = self.config.clone();
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let started = Instant::now();
            ensure_loaded(&mut state, &config)?;
            Ok(started.elapsed())
        })
        .await
        .map_err(|e| Error::permanent(format!("local model thread failed: {e}")))?
    }
}

/// Dropped with the call's future: tells the generation to stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl LlmProvider for LocalProvider {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    /// Small: a 1.5-billion-parameter model on the CPU, whatever name the
    /// configuration gave it.
    fn profile(&self) -> LlmProfile {
        LlmProfile::Small
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let config = self.config.clone();
        let state = self.state.clone();
        let observer = self.observer.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            complete_blocking(&mut state, &config, &request, &cancel, observer.as_deref())
        })
        .await
        .map_err(|e| Error::permanent(format!("local model thread failed: {e}")))?
    }
}

/// The conversation with the answer's schema and layout appended to the
/// system prompt (what an unconstrained model needs to know to answer
/// validly).
fn with_schema_instructions(
    messages: &[agentry_core::ChatMessage],
    schema: &agentry_core::OutputSchema,
) -> Vec<agentry_core::ChatMessage> {
    let instructions = format!("\n\n{}", schema.instructions());
    let mut messages = messages.to_vec();
    match messages.first_mut() {
        Some(first) if first.role == agentry_core::ChatRole::System => {
            first.content.push_str(&instructions)
        }
        _ => messages.insert(
            0,
            agentry_core::ChatMessage::system(instructions.trim_start()),
        ),
    }
    messages
}

/// Sets the compute thread count once per process, before the first model
/// runs (candle sizes its pool from `CANDLE_NUM_THREADS` at first use). A
/// count already set in the environment wins.
fn configure_threads(threads: Option<usize>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Some(n) = threads.filter(|n| *n > 0) {
            for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
                if std::env::var_os(var).is_none() {
                    std::env::set_var(var, n.to_string());
                }
            }
        }
    });
}

fn ensure_loaded<'a>(state: &'a mut State, config: &LocalConfig) -> Result<&'a mut Generator> {
    if state.generator.is_none() {
        configure_threads(config.threads);
        let started = Instant::now();
        let generator =
            Generator::load(&config.path).map_err(|e| Error::permanent(format!("{e:#}")))?;
        info!(model = %config.model, path = %config.path.display(),
            load_ms = started.elapsed().as_millis() as u64,
            threads = candle_core::utils::get_num_threads(), "Local model loaded.");
        state.generator = Some(generator);
        state.last_answer = None;
    }
    state
        .generator
        .as_mut()
        .ok_or_else(|| Error::permanent("local model not loaded"))
}

fn complete_blocking(
    state: &mut State,
    config: &LocalConfig,
    request: &ChatRequest,
    cancel: &AtomicBool,
    observer: Option<&dyn LlmObserver>,
) -> Result<ChatResponse> {
    let known = state.last_answer.take();
    let generator = ensure_loaded(state, config)?;
    let schema = request.response_schema.as_ref();
    let mut grammar = if config.constrained {
        constraint::grammar(schema, &request.tools)
    } else {
        None
    };
    if let Some(g) = &grammar {
        if let Err(error) = generator.check_grammar(g.clone()) {
            warn!(node = %request.meta.node, error = %error,
                "The answer's schema cannot be turned into a grammar; generating unconstrained.");
            grammar = None;
        }
    }
    // Unconstrained, the model is told the schema instead.
    let messages = match (schema, &grammar) {
        (Some(schema), None) => with_schema_instructions(&request.messages, schema),
        _ => request.messages.clone(),
    };
    let segments = chat::render(
        &messages,
        &request.tools,
        known.as_ref().map(|(t, k)| (t.as_str(), k.as_slice())),
    );
    let prompt = generator
        .tokenize(&segments)
        .map_err(|e| Error::invalid(format!("{e:#}")))?;
    let context = config.context_tokens.min(generator.context_length());
    if prompt.len() + 16 > context {
        return Err(Error::invalid(format!(
            "the prompt has {} tokens and the local model's context is {context} \
             (llm.local.context_tokens): shorten the input",
            prompt.len()
        )));
    }
    let max_tokens = request
        .max_tokens
        .map_or(config.max_tokens, |m| m.min(config.max_tokens)) as usize;
    let max_tokens = max_tokens.min(context - prompt.len());
    let mut sampling = config.sampling;
    if let Some(t) = request.temperature {
        sampling.temperature = t;
    }
    let constrained = grammar.is_some();
    let meta = &request.meta;
    let mut first_token: Option<Instant> = None;
    let mut on_event = |event: Event<'_>| {
        let Some(observer) = observer else { return };
        match event {
            Event::Prompt { done, total } => observer.on_progress(
                meta,
                LlmProgress::Prompt {
                    done: done as u64,
                    total: total as u64,
                },
            ),
            Event::Token { text, generated } => {
                let since = *first_token.get_or_insert_with(Instant::now);
                let secs = since.elapsed().as_secs_f64();
                let tokens_per_s = if secs > 0.0 {
                    (generated.saturating_sub(1)) as f64 / secs
                } else {
                    0.0
                };
                observer.on_progress(
                    meta,
                    LlmProgress::Tokens {
                        text,
                        generated: generated as u64,
                        tokens_per_s,
                    },
                );
            }
        }
    };
    let generation: Generation = generator
        .generate(
            &prompt,
            grammar,
            &sampling,
            max_tokens,
            cancel,
            &mut on_event,
        )
        .map_err(|e| Error::permanent(format!("local model: {e:#}")))?;
    info!(workflow_id = ?meta.workflow_id, role = %meta.role, node = %meta.node,
        step = meta.step, turn = meta.turn, request_id = ?meta.request_id,
        prompt_tokens = generation.prompt_tokens, reused_tokens = generation.reused_tokens,
        completion_tokens = generation.tokens.len(),
        prompt_tok_s = format!("{:.1}", generation.prompt_rate()),
        tok_s = format!("{:.1}", generation.generation_rate()),
        finish = ?generation.finish, constrained, "Local generation.");
    let finish = match generation.finish {
        Finish::Cancelled => return Err(Error::transient("local generation cancelled")),
        Finish::Length => "length",
        Finish::Stop => "stop",
        Finish::Repetition => "repetition",
    };
    let (content, tool_calls) = if request.tools.is_empty() {
        (generation.text.trim().to_string(), Vec::new())
    } else {
        chat::parse_tool_calls(&generation.text, meta.turn, &request.tools)
    };
    if tool_calls.is_empty() && content == generation.text {
        state.last_answer = Some((content.clone(), generation.tokens.clone()));
    }
    let finish_reason = if !tool_calls.is_empty() && finish == "stop" {
        "tool_calls"
    } else {
        finish
    };
    Ok(ChatResponse {
        content,
        tool_calls,
        usage: Usage {
            prompt_tokens: generation.prompt_tokens as u64,
            completion_tokens: generation.tokens.len() as u64,
            cached: false,
        },
        provider: config.name.clone(),
        model: config.model.clone(),
        finish_reason: finish_reason.to_string(),
    })
}

//! The model in memory and the decoding loop: prompt processing in chunks
//! (reusing the key-value cache when a prompt extends the last one),
//! then token by token: the grammar's mask, a repetition penalty,
//! temperature and top-p sampling, stop tokens, a token cap and
//! cancellation.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::chat::Segment;
use crate::qwen2::Qwen2;
use crate::tokenizer::Vocabulary;

/// Prompt tokens processed per forward pass (bounds the attention
/// matrix's memory).
const PROMPT_CHUNK: usize = 256;

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 (or below 0.01): greedy.
    pub temperature: f32,
    /// Nucleus: the smallest set of tokens holding this much probability.
    pub top_p: f32,
    /// Penalty (> 1) on tokens among the last `repeat_last_n` generated.
    pub repetition_penalty: f32,
    /// Window of the repetition penalty.
    pub repeat_last_n: usize,
    /// Random seed: the same prompt and seed give the same answer.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.2,
            top_p: 0.9,
            repetition_penalty: 1.05,
            repeat_last_n: 64,
            seed: 299_792_458,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn (or the grammar was complete).
    Stop,
    /// The token cap.
    Length,
    /// The caller gave up (timeout, shutdown).
    Cancelled,
    /// Cut: the text fell into a loop ([`crate::repetition`]); the caller
    /// samples again rather than wait for the token cap.
    Repetition,
}

/// Something the decoding loop reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Prompt tokens processed so far, of the total to process.
    Prompt {
        /// Tokens processed so far, in chunks of 256.
        done: usize,
        /// Tokens this prompt needs processed: those past the part already
        /// in the key-value cache.
        total: usize,
    },
    /// A token was generated: its text (possibly empty while a multi-byte
    /// character is incomplete) and the count so far.
    Token {
        /// Text this token completes: empty while a multi-byte character is
        /// still incomplete, then the whole character.
        text: &'a str,
        /// Tokens generated so far.
        generated: usize,
    },
}

/// What one call of the decoding loop produced, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated tokens (without the stop token).
    pub tokens: Vec<u32>,
    /// Their text, decoded from the bytes of all the tokens (invalid UTF-8
    /// replaced).
    pub text: String,
    /// Why it stopped.
    pub finish: Finish,
    /// Tokens in the whole prompt, reused ones included.
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were already cached.
    pub reused_tokens: usize,
    /// Time to process the prompt.
    pub prompt_time: Duration,
    /// Time to generate.
    pub generation_time: Duration,
}

impl Generation {
    /// Prompt tokens processed per second (reused ones not counted).
    pub fn prompt_rate(&self) -> f64 {
        rate(self.prompt_tokens - self.reused_tokens, self.prompt_time)
    }

    /// Tokens generated per second.
    pub fn generation_rate(&self) -> f64 {
        rate(self.tokens.len(), self.generation_time)
    }
}

fn rate(count: usize, time: Duration) -> f64 {
    if time.is_zero() {
        0.0
    } else {
        count as f64 / time.as_secs_f64()
    }
}

/// A loaded model.
pub struct Generator {
    model: Qwen2,
    vocab: Vocabulary,
    factory: ParserFactory,
    device: Device,
    /// Tokens whose keys and values the model holds, in order.
    in_cache: Vec<u32>,
}

impl Generator {
    /// Loads a GGUF Qwen2 model on the CPU.
    pub fn load(path: &Path) -> Result<Generator> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| anyhow!("{} is not a GGUF model file: {e}", path.display()))?;
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if architecture != "qwen2" {
            bail!(
                "{} holds a `{architecture}` model; the local provider runs qwen2 models",
                path.display()
            );
        }
        let vocab = Vocabulary::from_gguf(&content)?;
        let device = Device::Cpu;
        let model = Qwen2::from_gguf(content, &mut file, &device)
            .map_err(|e| anyhow!("cannot load the weights of {}: {e}", path.display()))?;
        let mut factory = ParserFactory::new_simple(&vocab.env)
            .map_err(|e| anyhow!("cannot prepare the grammar engine: {e}"))?;
        factory.set_stderr_log_level(0);
        Ok(Generator {
            model,
            vocab,
            factory,
            device,
            in_cache: Vec::new(),
        })
    }

    /// The tokenizer, token trie and special tokens read from the model's
    /// own GGUF file.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// The model's context length (prompt plus answer).
    pub fn context_length(&self) -> usize {
        self.model.context_length()
    }

    /// Tokens of a rendered prompt.
    pub fn tokenize(&self, segments: &[Segment]) -> Result<Vec<u32>> {
        let mut tokens = Vec::new();
        for segment in segments {
            match segment {
                Segment::Text(text) => tokens.extend(self.vocab.encode(text)?),
                Segment::Tokens(known) => tokens.extend_from_slice(known),
            }
        }
        Ok(tokens)
    }

    /// Checks that a grammar compiles, without generating.
    pub fn check_grammar(&self, grammar: TopLevelGrammar) -> Result<()> {
        self.factory
            .create_parser(grammar)
            .map(|_| ())
            .map_err(|e| anyhow!("{e}"))
    }

    /// Generates an answer to `prompt`, constrained by `grammar` when
    /// given, until a stop token, the grammar's end, `max_tokens`, or
    /// `cancel`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        grammar: Option<TopLevelGrammar>,
        sampling: &Sampling,
        max_tokens: usize,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Generation> {
        if prompt.is_empty() {
            bail!("empty prompt");
        }
        let mut matcher = match grammar {
            Some(grammar) => Some(Matcher::new(Ok(self
                .factory
                .create_parser(grammar)
                .map_err(|e| anyhow!("the answer's grammar does not compile: {e}"))?))),
            None => None,
        };
        let started = Instant::now();
        let reused = if !self.in_cache.is_empty()
            && prompt.len() > self.in_cache.len()
            && prompt.starts_with(&self.in_cache)
        {
            self.in_cache.len()
        } else {
            self.reset();
            0
        };
        let mut logits = self.feed_prompt(&prompt[reused..], cancel, on_event)?;
        let prompt_time = started.elapsed();
        let started = Instant::now();

        let eos: HashSet<u32> =
            [self.vocab.specials.im_end, self.vocab.specials.end_of_text].into();
        let mut rng = StdRng::seed_from_u64(sampling.seed);
        let mut tokens: Vec<u32> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut emitted = 0usize;
        let finish = loop {
            let Some(current) = logits.as_mut() else {
                break Finish::Cancelled;
            };
            if cancel.load(Ordering::Relaxed) {
                break Finish::Cancelled;
            }
            if tokens.len() >= max_tokens {
                break Finish::Length;
            }
            match matcher.as_mut() {
                Some(m) => {
                    let mask = m
                        .compute_mask()
                        .map_err(|e| anyhow!("grammar constraint failed: {e}"))?;
                    for (i, logit) in current.iter_mut().enumerate() {
                        if !mask.is_allowed(i as u32) {
                            *logit = f32::NEG_INFINITY;
                        }
                    }
                }
                None => {
                    for &t in &self.vocab.unused {
                        if let Some(l) = current.get_mut(t as usize) {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            penalize(current, &tokens, sampling);
            let token = sample(current, sampling, &mut rng)
                .ok_or_else(|| anyhow!("no token is allowed here (the grammar is stuck)"))?;
            if eos.contains(&token) {
                break Finish::Stop;
            }
            if let Some(m) = matcher.as_mut() {
                m.consume_token(token)
                    .map_err(|e| anyhow!("grammar constraint failed: {e}"))?;
            }
            tokens.push(token);
            bytes.extend_from_slice(self.vocab.bytes(token));
            let valid = valid_utf8_prefix(&bytes[emitted..]);
            let text = std::str::from_utf8(&bytes[emitted..emitted + valid]).unwrap_or("");
            on_event(Event::Token {
                text,
                generated: tokens.len(),
            });
            emitted += valid;
            if matcher.as_ref().is_some_and(Matcher::is_stopped) {
                break Finish::Stop;
            }
            // After each line (a newline, or its `\n` escape inside a JSON
            // string) and every 64 tokens for a line that never ends.
            let piece = self.vocab.bytes(token);
            let line_end = piece.contains(&b'\n')
                || piece.ends_with(b"\\n")
                || (piece == b"n" && bytes.len() >= 2 && bytes[bytes.len() - 2] == b'\\');
            if (line_end || tokens.len().is_multiple_of(64)) && crate::repetition::looping(&bytes) {
                break Finish::Repetition;
            }
            if tokens.len() >= max_tokens {
                break Finish::Length;
            }
            logits = Some(self.forward(&[token])?);
        };
        Ok(Generation {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            tokens,
            finish,
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prompt_time,
            generation_time: started.elapsed(),
        })
    }

    fn reset(&mut self) {
        self.model.clear_kv_cache();
        self.in_cache.clear();
    }

    /// Processes prompt tokens in chunks; the logits after the last one
    /// (None when cancelled).
    fn feed_prompt(
        &mut self,
        tokens: &[u32],
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Option<Vec<f32>>> {
        let mut logits = None;
        let mut done = 0;
        for chunk in tokens.chunks(PROMPT_CHUNK) {
            if cancel.load(Ordering::Relaxed) {
                self.reset();
                return Ok(None);
            }
            logits = Some(self.forward(chunk)?);
            done += chunk.len();
            on_event(Event::Prompt {
                done,
                total: tokens.len(),
            });
        }
        Ok(logits)
    }

    /// One forward pass over `tokens` after those in the cache.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let position = self.in_cache.len();
        if position + tokens.len() > self.context_length() {
            self.reset();
            bail!(
                "the conversation needs more than the model's {} tokens of context",
                self.context_length()
            );
        }
        let result = (|| -> candle_core::Result<Vec<f32>> {
            let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
            let logits = self.model.forward(&input, position)?;
            logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()
        })();
        match result {
            Ok(logits) => {
                self.in_cache.extend_from_slice(tokens);
                Ok(logits)
            }
            Err(error) => {
                self.reset();
                Err(anyhow!("model forward pass failed: {error}"))
            }
        }
    }
}

/// The CTRL repetition penalty over the last `repeat_last_n` tokens.
fn penalize(logits: &mut [f32], tokens: &[u32], sampling: &Sampling) {
    if sampling.repetition_penalty <= 1.0 || sampling.repeat_last_n == 0 {
        return;
    }
    let start = tokens.len().saturating_sub(sampling.repeat_last_n);
    let recent: HashSet<u32> = tokens[start..].iter().copied().collect();
    for token in recent {
        if let Some(l) = logits.get_mut(token as usize) {
            if l.is_finite() {
                *l = if *l > 0.0 {
                    *l / sampling.repetition_penalty
                } else {
                    *l * sampling.repetition_penalty
                };
            }
        }
    }
}

/// Picks a token: greedy at (near) zero temperature, else top-p sampling
/// of the tempered distribution. None when every token is masked.
fn sample(logits: &[f32], sampling: &Sampling, rng: &mut impl Rng) -> Option<u32> {
    let (best, max) = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, l)| (i as u32, *l))?;
    if sampling.temperature < 0.01 {
        return Some(best);
    }
    // Probabilities below 1e-7 of the best token's never matter for top-p.
    let floor = max + sampling.temperature * (1e-7f32).ln();
    let mut candidates: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite() && **l >= floor)
        .map(|(i, l)| (i as u32, ((l - max) / sampling.temperature).exp()))
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f32 = candidates.iter().map(|c| c.1).sum();
    let mut kept = 0.0;
    let mut cut = candidates.len();
    for (i, c) in candidates.iter().enumerate() {
        kept += c.1;
        if kept >= sampling.top_p * total {
            cut = i + 1;
            break;
        }
    }
    candidates.truncate(cut);
    let mut pick = rng.gen::<f32>() * kept;
    for (token, p) in &candidates {
        pick -= p;
        if pick <= 0.0 {
            return Some(*token);
        }
    }
    candidates.last().map(|c| c.0)
}

/// Length of the longest prefix of `bytes` that is complete UTF-8
/// (invalid bytes count as complete: they are shown as replacement
/// characters in the final text anyway).
fn valid_utf8_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => match e.error_len() {
            None => e.valid_up_to(),
            Some(_) => bytes.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_best_allowed_token() {
        let logits = [1.0, f32::NEG_INFINITY, 3.0, 2.0];
        let mut rng = StdRng::seed_from_u64(1);
        let greedy = Sampling {
            temperature: 0.0,
            ..Sampling::default()
        };
        assert_eq!(sample(&logits, &greedy, &mut rng), Some(2));
        assert_eq!(
            sample(&[f32::NEG_INFINITY; 3], &greedy, &mut rng),
            None,
            "nothing allowed"
        );
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds almost all the mass: top-p 0.5 always picks it.
        let logits = [10.0, 0.0, 0.0, 0.0];
        let mut rng = StdRng::seed_from_u64(7);
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            ..Sampling::default()
        };
        for _ in 0..100 {
            assert_eq!(sample(&logits, &s, &mut rng), Some(0));
        }
        // A flat distribution with top-p 1 reaches every token.
        let s = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            ..Sampling::default()
        };
        let seen: HashSet<u32> = (0..200)
            .filter_map(|_| sample(&[0.0; 4], &s, &mut rng))
            .collect();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn repetition_penalty_lowers_recent_tokens() {
        let mut logits = vec![2.0, -2.0, 2.0];
        let s = Sampling {
            repetition_penalty: 2.0,
            repeat_last_n: 2,
            ..Sampling::default()
        };
        penalize(&mut logits, &[2, 0, 1], &s);
        assert_eq!(
            logits,
            vec![1.0, -4.0, 2.0],
            "token 2 is outside the window"
        );
    }

    #[test]
    fn utf8_prefix_waits_for_whole_characters() {
        let text = "é".as_bytes();
        assert_eq!(valid_utf8_prefix(&text[..1]), 0);
        assert_eq!(valid_utf8_prefix(text), 2);
        assert_eq!(valid_utf8_prefix(b"ab"), 2);
    }
}

//! The tokenizer, built from the GGUF file's own metadata (vocabulary,
//! merges, token types), so the model file is all a run needs: a
//! byte-level BPE `tokenizers::Tokenizer` for prompts, and a token trie
//! (`toktrie`) for the grammar constraint and for decoding.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde_json::{json, Value};
use tokenizers::Tokenizer;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// The pre-tokenizer split of Qwen2 (`tokenizer.ggml.pre = qwen2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types.
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// The special tokens generation needs.
#[derive(Debug, Clone, Copy)]
pub struct Specials {
    /// `<|im_start|>`.
    pub im_start: TokenId,
    /// `<|im_end|>`: the end of a turn.
    pub im_end: TokenId,
    /// `<|endoftext|>`.
    pub end_of_text: TokenId,
}

/// Tokenizer, trie and special tokens of one model.
#[derive(Clone)]
pub struct Vocabulary {
    /// The byte-level BPE tokenizer that turns prompt text into tokens.
    pub tokenizer: Arc<Tokenizer>,
    /// The grammar constraint's view (tokens as bytes).
    pub env: TokEnv,
    /// The chat template's markers: turn start, turn end, end of text.
    pub specials: Specials,
    /// Tokens never to generate (padding slots).
    pub unused: Vec<TokenId>,
}

impl Vocabulary {
    /// Builds everything from the GGUF metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Vocabulary> {
        let md = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| anyhow!("the model file has no {key}"))
        };
        let model = md("tokenizer.ggml.model")?.to_string()?;
        if model != "gpt2" {
            bail!("unsupported tokenizer `{model}` (expected a byte-level BPE, gpt2)");
        }
        let tokens: Vec<String> = md("tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<_>>()?;
        let types: Vec<i32> = md("tokenizer.ggml.token_type")?
            .to_vec()?
            .iter()
            .map(|v| v.to_i32())
            .collect::<candle_core::Result<_>>()?;
        let merges: Vec<String> = md("tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<_>>()?;
        if tokens.len() != types.len() {
            bail!("the model file's token list and token types differ in length");
        }
        let find = |text: &str| -> Result<TokenId> {
            tokens
                .iter()
                .position(|t| t == text)
                .map(|i| i as TokenId)
                .ok_or_else(|| anyhow!("the model's vocabulary has no {text}"))
        };
        let specials = Specials {
            im_start: find("<|im_start|>")?,
            im_end: find("<|im_end|>")?,
            end_of_text: find("<|endoftext|>")?,
        };
        let tokenizer = build_tokenizer(&tokens, &types, &merges)?;
        let trie = build_trie(&tokens, &types, specials)?;
        let unused = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TYPE_UNUSED)
            .map(|(i, _)| i as TokenId)
            .collect();
        let tokenizer = Arc::new(tokenizer);
        let env: TokEnv = Arc::new(QwenEnv {
            trie,
            tokenizer: tokenizer.clone(),
        });
        Ok(Vocabulary {
            tokenizer,
            env,
            specials,
            unused,
        })
    }

    /// Tokens of `text`; special tokens written in it (`<|im_start|>`)
    /// become their single token.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// The bytes of `token` (empty for control tokens).
    pub fn bytes(&self, token: TokenId) -> &[u8] {
        let trie = self.env.tok_trie();
        if trie.is_special_token(token) {
            &[]
        } else {
            trie.token(token)
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.env.tok_trie().vocab_size()
    }

    /// True for an empty vocabulary (never, for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct QwenEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for QwenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// The `tokenizer.json` equivalent of the GGUF metadata, loaded by the
/// `tokenizers` crate: NFC, the Qwen2 split, byte-level BPE.
fn build_tokenizer(tokens: &[String], types: &[i32], merges: &[String]) -> Result<Tokenizer> {
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, t))| **t == TYPE_CONTROL || **t == TYPE_USER_DEFINED)
        .map(|(i, (content, t))| {
            json!({
                "id": i, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *t == TYPE_CONTROL,
            })
        })
        .collect();
    let byte_level = json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
    });
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]},
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    let text = serde_json::to_string(&spec)?;
    text.parse::<Tokenizer>()
        .map_err(|e| anyhow!("cannot build the tokenizer from the model file: {e}"))
}

/// GPT-2's byte-to-character table, inverted: the byte each character of
/// a byte-level token stands for.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0u32;
    for b in 0u32..256 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    bytes
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

/// The token trie: normal tokens as their bytes, user-defined tokens
/// (`<tool_call>`) as their text, control and unused tokens marked
/// special; the end of a turn and the end of text end generation.
fn build_trie(tokens: &[String], types: &[i32], specials: Specials) -> Result<TokTrie> {
    let table = unicode_to_byte();
    let mut words: Vec<Vec<u8>> = Vec::with_capacity(tokens.len());
    for (token, kind) in tokens.iter().zip(types) {
        let word = match *kind {
            TYPE_CONTROL | TYPE_UNUSED => {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(token.as_bytes());
                w
            }
            TYPE_USER_DEFINED => token.as_bytes().to_vec(),
            _ => token
                .chars()
                .map(|c| table.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .with_context(|| format!("token {token:?} is not byte-level"))?,
        };
        words.push(word);
    }
    let mut info = TokRxInfo::new(tokens.len() as u32, specials.im_end);
    info.tok_end_of_turn = Some(specials.im_end);
    let trie = TokTrie::from(&info, &words);
    Ok(trie.with_eos_tokens(&[specials.im_end, specials.end_of_text]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_covers_every_byte() {
        let table = unicode_to_byte();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'Ġ'], b' ');
        assert_eq!(table[&'Ċ'], b'\n');
        assert_eq!(table[&'a'], b'a');
    }
}

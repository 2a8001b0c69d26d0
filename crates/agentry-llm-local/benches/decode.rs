//! Decoding speed of our Qwen2 forward pass against candle's
//! `quantized_qwen2`, at a short and a long context:
//! `cargo bench -p agentry-llm-local --bench decode [-- CONTEXT...]`.
//! Needs the model in the cache (`agentry models pull`). Each model is
//! measured twice, alternately, so neither gets the warm machine alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use agentry_llm_local::qwen2::Qwen2;
use agentry_llm_local::{ModelCache, DEFAULT_MODEL};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;

/// Tokens decoded one by one after the prompt.
const DECODED: u32 = 40;

enum Model {
    Ours(Qwen2),
    Candle(ModelWeights),
}

impl Model {
    fn forward(&mut self, tokens: &[u32], position: usize) {
        let input = Tensor::new(tokens, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        match self {
            Model::Ours(m) => m.forward(&input, position).unwrap(),
            Model::Candle(m) => m.forward(&input, position).unwrap(),
        };
    }
}

fn main() {
    let contexts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let contexts = if contexts.is_empty() {
        vec![200, 2_900]
    } else {
        contexts
    };
    let path = ModelCache::new(ModelCache::default_dir())
        .ready(DEFAULT_MODEL)
        .expect("the model must be in the cache: run `agentry models pull`");
    let load = |ours: bool| {
        let mut file = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        if ours {
            Model::Ours(Qwen2::from_gguf(content, &mut file, &Device::Cpu).unwrap())
        } else {
            Model::Candle(ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap())
        }
    };
    println!(
        "threads: {} (RAYON_NUM_THREADS)",
        candle_core::utils::get_num_threads()
    );
    for context in contexts {
        let prompt: Vec<u32> = (0..context as u32)
            .map(|i| (i * 7_919 + 13) % 150_000)
            .collect();
        for ours in [false, true, false, true] {
            let mut model = load(ours);
            let started = Instant::now();
            let mut position = 0;
            for chunk in prompt.chunks(256) {
                model.forward(chunk, position);
                position += chunk.len();
            }
            let prompt_s = started.elapsed().as_secs_f64();
            let started = Instant::now();
            for i in 0..DECODED {
                model.forward(&[1_000 + i], position);
                position += 1;
            }
            let decode_s = started.elapsed().as_secs_f64();
            println!(
                "{:<21} context {context:>5}: prompt {:>6.1} tok/s, decoding {:>5.2} tok/s",
                if ours {
                    "agentry qwen2"
                } else {
                    "candle quantized_qwen2"
                },
                context as f64 / prompt_s,
                f64::from(DECODED) / decode_s,
            );
        }
    }
}

//! The Qwen2 forward pass over GGUF-quantized weights, written for long
//! conversations on a CPU.
//!
//! candle's `quantized_qwen2` (which this follows layer for layer, and
//! whose output it matches: see the test) does two things per generated
//! token that grow with the context:
//!
//! - it concatenates the whole key-value cache with the new token's keys
//!   and values (a copy of the cache per layer per token);
//! - it expands the two key-value heads to the twelve query heads
//!   (`repeat_kv`: six more copies), then multiplies.
//!
//! At 3,000 tokens of context that is over a gigabyte of memory traffic
//! per token, and decoding fell from 11 to 2–3 tokens/s. Here the cache is
//! a buffer that grows by doubling and is written in place, and each
//! key-value head is multiplied with its group of query heads at once
//! (grouped-query attention without copies).

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::build_causal_mask;

/// Smallest key-value buffer, in tokens.
const MIN_CACHE: usize = 512;

/// The keys and values of the tokens seen so far, for one layer: buffers
/// of `capacity` positions of which the first `len` hold data.
#[derive(Default)]
struct KvCache {
    buffers: Option<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// Appends `k` and `v` (`[batch, kv_heads, tokens, head_dim]`,
    /// contiguous) and returns every cached key and value (views into the
    /// buffers, no copy). `max` caps the capacity (the model's context).
    fn append(&mut self, k: &Tensor, v: &Tensor, max: usize) -> Result<(Tensor, Tensor)> {
        let (b, heads, added, dim) = k.dims4()?;
        let (len, needed) = (self.len, self.len + added);
        let (buf_k, buf_v) = match self.buffers.take() {
            Some((buf_k, buf_v)) if buf_k.dim(2)? >= needed => (buf_k, buf_v),
            old => {
                let capacity = old.as_ref().map_or(Ok(0), |(k, _)| k.dim(2))?;
                let grown = (capacity * 2).max(MIN_CACHE).min(max).max(needed);
                // A buffer of `grown` positions holding `old`'s first `len`.
                let regrow = |old: Option<&Tensor>, like: &Tensor| -> Result<Tensor> {
                    let new = Tensor::zeros((b, heads, grown, dim), like.dtype(), like.device())?;
                    if let Some(old) = old.filter(|_| len > 0) {
                        new.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                    }
                    Ok(new)
                };
                let (old_k, old_v) = old.map_or((None, None), |(k, v)| (Some(k), Some(v)));
                (regrow(old_k.as_ref(), k)?, regrow(old_v.as_ref(), v)?)
            }
        };
        buf_k.slice_set(k, 2, len)?;
        buf_v.slice_set(v, 2, len)?;
        let cached = (buf_k.narrow(2, 0, needed)?, buf_v.narrow(2, 0, needed)?);
        self.buffers = Some((buf_k, buf_v));
        self.len = needed;
        Ok(cached)
    }

    fn clear(&mut self) {
        self.buffers = None;
        self.len = 0;
    }
}

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    bq: Tensor,
    bk: Tensor,
    bv: Tensor,
    wo: QMatMul,
    attention_norm: RmsNorm,
    gate: QMatMul,
    down: QMatMul,
    up: QMatMul,
    ffn_norm: RmsNorm,
    cache: KvCache,
}

/// Shapes shared by every layer.
struct Dims {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
}

/// A Qwen2 model loaded from a GGUF file, with its key-value cache.
pub struct Qwen2 {
    embeddings: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    dims: Dims,
    cos: Tensor,
    sin: Tensor,
    neg_inf: Tensor,
}

/// Cosines and sines of the rotary embedding for every position.
fn rotary_tables(
    head_dim: usize,
    base: f32,
    positions: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inverse: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let inverse = Tensor::new(inverse.as_slice(), device)?;
    let angles = Tensor::arange(0, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?
        .matmul(&inverse.reshape((1, inverse.elem_count()))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Qwen2 {
    /// Loads the weights that `content` describes from `reader`.
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        content: gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Qwen2> {
        let meta = |key: &str| match content.metadata.get(key) {
            Some(v) => Ok(v),
            None => candle_core::bail!("cannot find {key} in the model's metadata"),
        };
        let heads = meta("qwen2.attention.head_count")?.to_u32()? as usize;
        let kv_heads = meta("qwen2.attention.head_count_kv")?.to_u32()? as usize;
        let embedding = meta("qwen2.embedding_length")?.to_u32()? as usize;
        let context = meta("qwen2.context_length")?.to_u32()? as usize;
        let blocks = meta("qwen2.block_count")?.to_u32()? as usize;
        let eps = meta("qwen2.attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let rope_base = meta("qwen2.rope.freq_base")
            .and_then(|m| m.to_f32())
            .unwrap_or(10_000.0);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            candle_core::bail!("{heads} attention heads cannot share {kv_heads} key-value heads");
        }
        let head_dim = embedding / heads;
        let mut tensor = |name: &str| content.tensor(reader, name, device);

        let token_embd = tensor("token_embd.weight")?;
        let embeddings = Embedding::new(token_embd.dequantize(device)?, embedding);
        let norm = RmsNorm::from_qtensor(tensor("output_norm.weight")?, eps)?;
        let output = match tensor("output.weight") {
            Ok(w) => QMatMul::from_qtensor(w)?,
            // Tied embeddings.
            Err(_) => QMatMul::from_qtensor(tensor("token_embd.weight")?)?,
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut weight = |part: &str| tensor(&format!("blk.{i}.{part}"));
            layers.push(Layer {
                wq: QMatMul::from_qtensor(weight("attn_q.weight")?)?,
                wk: QMatMul::from_qtensor(weight("attn_k.weight")?)?,
                wv: QMatMul::from_qtensor(weight("attn_v.weight")?)?,
                bq: weight("attn_q.bias")?.dequantize(device)?,
                bk: weight("attn_k.bias")?.dequantize(device)?,
                bv: weight("attn_v.bias")?.dequantize(device)?,
                wo: QMatMul::from_qtensor(weight("attn_output.weight")?)?,
                attention_norm: RmsNorm::from_qtensor(weight("attn_norm.weight")?, eps)?,
                gate: QMatMul::from_qtensor(weight("ffn_gate.weight")?)?,
                down: QMatMul::from_qtensor(weight("ffn_down.weight")?)?,
                up: QMatMul::from_qtensor(weight("ffn_up.weight")?)?,
                ffn_norm: RmsNorm::from_qtensor(weight("ffn_norm.weight")?, eps)?,
                cache: KvCache::default(),
            });
        }
        let (cos, sin) = rotary_tables(head_dim, rope_base, context, device)?;
        Ok(Qwen2 {
            embeddings,
            layers,
            norm,
            output,
            dims: Dims {
                heads,
                kv_heads,
                head_dim,
                context,
            },
            cos,
            sin,
            neg_inf: Tensor::new(f32::NEG_INFINITY, device)?,
        })
    }

    /// Positions the model was trained for (prompt plus answer).
    pub fn context_length(&self) -> usize {
        self.dims.context
    }

    /// Forgets every cached key and value.
    pub fn clear_kv_cache(&mut self) {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
    }

    /// The logits after the last of `tokens` (`[batch, tokens]`), which
    /// follow `position` tokens already in the cache.
    pub fn forward(&mut self, tokens: &Tensor, position: usize) -> Result<Tensor> {
        let (_, count) = tokens.dims2()?;
        // Built per pass (a chunk's position rarely repeats; it costs
        // nothing beside the pass itself).
        let mask = match count {
            1 => None,
            _ => Some(build_causal_mask(count, position, tokens.device())?),
        };
        let cos = self.cos.narrow(0, position, count)?;
        let sin = self.sin.narrow(0, position, count)?;
        let mut hidden = self.embeddings.forward(tokens)?;
        for layer in &mut self.layers {
            let normed = layer.attention_norm.forward(&hidden)?;
            let attended = attention(
                layer,
                &self.dims,
                &normed,
                mask.as_ref(),
                (&cos, &sin),
                &self.neg_inf,
            )?;
            let hidden_mid = (attended + &hidden)?;
            let normed = layer.ffn_norm.forward(&hidden_mid)?;
            let gated = candle_nn::ops::silu(&layer.gate.forward(&normed)?)?;
            let mlp = layer.down.forward(&(gated * layer.up.forward(&normed)?)?)?;
            hidden = (mlp + hidden_mid)?;
        }
        let last = self.norm.forward(&hidden)?.i((.., count - 1, ..))?;
        self.output.forward(&last)
    }
}

/// One layer's self-attention over `x` (`[batch, tokens, embedding]`).
fn attention(
    layer: &mut Layer,
    dims: &Dims,
    x: &Tensor,
    mask: Option<&Tensor>,
    (cos, sin): (&Tensor, &Tensor),
    neg_inf: &Tensor,
) -> Result<Tensor> {
    let (b, count, embedding) = x.dims3()?;
    let Dims {
        heads,
        kv_heads,
        head_dim,
        context,
    } = *dims;
    let project = |w: &QMatMul, bias: &Tensor, n: usize| -> Result<Tensor> {
        w.forward(x)?
            .broadcast_add(bias)?
            .reshape((b, count, n, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let q = candle_nn::rotary_emb::rope(&project(&layer.wq, &layer.bq, heads)?, cos, sin)?;
    let k = candle_nn::rotary_emb::rope(&project(&layer.wk, &layer.bk, kv_heads)?, cos, sin)?;
    let v = project(&layer.wv, &layer.bv, kv_heads)?;
    let (keys, values) = layer.cache.append(&k, &v, context)?;
    let seen = keys.dim(2)?;

    // Query heads h = g * group + r share key-value head g: as rows of one
    // matrix per key-value head, they are multiplied in one go.
    let group = heads / kv_heads;
    let q = q.reshape((b, kv_heads, group * count, head_dim))?;
    let scores = (q.matmul(&keys.t()?)? / (head_dim as f64).sqrt())?;
    let scores = match mask {
        None => scores,
        Some(mask) => {
            let scores = scores.reshape((b, heads, count, seen))?;
            let mask = mask.broadcast_as(scores.shape())?;
            mask.where_cond(&neg_inf.broadcast_as(scores.shape())?, &scores)?
                .reshape((b, kv_heads, group * count, seen))?
        }
    };
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = weights
        .matmul(&values)?
        .reshape((b, heads, count, head_dim))?
        .transpose(1, 2)?
        .reshape((b, count, embedding))?;
    layer.wo.forward(&out)
}

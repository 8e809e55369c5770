//! Hyper-parameters of a decoder-only transformer, read from GGUF metadata (`{arch}.*` keys as
//! written by llama.cpp's convert_hf_to_gguf.py).

use crate::error::Result;
use crate::model::gguf::GgufFile;
use serde::Serialize;

/// How RoPE pairs dimensions: llama GGUFs use adjacent pairs (ggml ROPE_TYPE_NORM, q/k weights
/// permuted by the converter); qwen2/gemma use halves (ROPE_TYPE_NEOX).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    Adjacent,
    Halves,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    pub arch: String,
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn_hidden: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// Linear position scaling (positions are divided by this), 1.0 when absent.
    pub rope_linear_factor: f32,
    pub n_ctx_train: usize,
}

impl ModelConfig {
    /// Read a llama-family config; `vocab` comes from the embedding tensor.
    pub fn from_gguf(g: &GgufFile, arch: &str, vocab: usize) -> Result<Self> {
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = g.usize(&key("embedding_length"))?;
        let n_head = g.usize(&key("attention.head_count"))?;
        let n_kv_head = g.usize_or(&key("attention.head_count_kv"), n_head)?;
        let head_dim = g.usize_or(&key("attention.key_length"), hidden / n_head.max(1))?;
        let rope_linear_factor = match g.str(&key("rope.scaling.type")) {
            Ok("linear") => g.f32_or(&key("rope.scaling.factor"), 1.0)?,
            _ => 1.0,
        };
        Ok(ModelConfig {
            arch: arch.to_string(),
            n_layer: g.usize(&key("block_count"))?,
            hidden,
            n_head,
            n_kv_head,
            head_dim,
            ffn_hidden: g.usize(&key("feed_forward_length"))?,
            vocab,
            rms_eps: g.f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)?,
            rope_base: g.f32_or(&key("rope.freq_base"), 10_000.0)?,
            rope_dim: g.usize_or(&key("rope.dimension_count"), head_dim)?,
            // llama.cpp `llama_model_rope_type`: NORM for llama, NEOX for qwen2/qwen3/gemma3.
            rope_style: match arch {
                "llama" | "mistral" => RopeStyle::Adjacent,
                _ => RopeStyle::Halves,
            },
            rope_linear_factor,
            n_ctx_train: g.usize_or(&key("context_length"), 2048)?,
        })
    }

    /// f32 values of K (or V) per token per layer.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

//! The hyper-parameters the device forward needs, filled by the caller (the `ares` crate reads
//! them from GGUF metadata with its own loader, so both engines see the same numbers).

/// Which block variant runs (mistral is llama).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    /// llama + biases on q, k, v.
    Qwen2,
    /// llama + per-head RMSNorm on q and k before RoPE.
    Qwen3,
    /// q/k norms, pre- and post-norms around attention and MLP, GeGLU, scaled embedding, sliding
    /// window layers.
    Gemma3,
}

/// How RoPE pairs dimensions: adjacent pairs (llama GGUFs, ggml ROPE_TYPE_NORM) or halves (NEOX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    Adjacent,
    Halves,
}

/// One RoPE table: θ_i = pos · base^(-2i/rope_dim) / linear_factor / factors[i].
#[derive(Clone, Debug)]
pub struct RopeSpec {
    pub base: f32,
    pub linear_factor: f32,
    /// Per-pair divisors (Llama 3.1 `rope_freqs.weight`); empty when absent.
    pub factors: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    /// Rotated dimensions of each head (≤ head_dim, even).
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// RoPE of global layers.
    pub rope: RopeSpec,
    /// RoPE of sliding-window layers (Gemma 3's local base); `rope` when None.
    pub rope_local: Option<RopeSpec>,
    /// (n_layer,) sliding window of each layer, None for global attention.
    pub windows: Vec<Option<usize>>,
    /// Softmax scale of the scores (1/sqrt(head_dim) unless the architecture says otherwise).
    pub attn_scale: f32,
    /// Positions the RoPE tables cover (the context length).
    pub max_positions: usize,
}

impl Config {
    /// n_kv_head * head_dim: values of K (or V) per token per layer.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

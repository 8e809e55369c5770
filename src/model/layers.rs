//! Per-row building blocks shared by the architectures: RMSNorm, RoPE, activations, softmax, and
//! paged attention over the block KV cache. Every function computes each row independently of the
//! others, which is what makes batched results equal one-by-one results.

use crate::engine::batch::Batch;
use crate::engine::kv_cache::KvStorage;
use crate::model::config::{ModelConfig, RopeStyle};

/// x (n_rows, dim) -> RMSNorm(x) * w, in place. Rounds as llama.cpp's `ggml_rms_norm` + `ggml_mul`:
/// squares in f32 summed in f64, the scale in f32, then (x * scale) * w.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let dim = w.len();
    for row in x.chunks_mut(dim) {
        let sum: f64 = row.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / dim as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = (*v * scale) * g;
        }
    }
}

/// out (n_rows, dim) = RMSNorm(x) * w without touching x.
pub fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    out.copy_from_slice(x);
    rms_norm(out, w, eps);
}

/// RoPE frequency ratio per dimension pair: θ_i = pos · base^(-2i/rope_dim) / linear_factor / factor_i.
pub struct RopeFreqs {
    /// base^(-2/rope_dim), in f32 as ggml computes it.
    theta_scale: f32,
    half: usize,
    linear: f32,
    /// Per-pair divisors (Llama 3.1 `rope_freqs.weight`), empty when absent.
    factors: Vec<f32>,
}

pub fn rope_freqs(cfg: &ModelConfig, factors: Vec<f32>) -> RopeFreqs {
    RopeFreqs {
        theta_scale: cfg.rope_base.powf(-2.0 / cfg.rope_dim as f32),
        half: cfg.rope_dim / 2,
        linear: 1.0 / cfg.rope_linear_factor,
        factors,
    }
}

/// cos/sin per token: (n_tokens, rope_dim/2) each. Angles are accumulated in f32 exactly as
/// llama.cpp's `ggml_rope_cache_init` does (θ *= theta_scale per pair), so positions far into the
/// context round the same way in both engines.
pub fn rope_tables(positions: &[u32], f: &RopeFreqs) -> (Vec<f32>, Vec<f32>) {
    let half = f.half;
    let mut cos = vec![0f32; positions.len() * half];
    let mut sin = vec![0f32; positions.len() * half];
    for (t, &p) in positions.iter().enumerate() {
        let mut theta = p as f32;
        for i in 0..half {
            let ff = f.factors.get(i).copied().unwrap_or(1.0);
            let angle = f.linear * (theta / ff);
            cos[t * half + i] = angle.cos();
            sin[t * half + i] = angle.sin();
            theta *= f.theta_scale;
        }
    }
    (cos, sin)
}

/// Rotate x (n_tokens, n_heads, head_dim) in place; only the first rope_dim dims of each head.
pub fn apply_rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    style: RopeStyle,
    cos: &[f32],
    sin: &[f32],
) {
    let half = cos.len() / (x.len() / (n_heads * head_dim)).max(1);
    for (t, tok) in x.chunks_mut(n_heads * head_dim).enumerate() {
        let c = &cos[t * half..(t + 1) * half];
        let s = &sin[t * half..(t + 1) * half];
        for head in tok.chunks_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                    RopeStyle::Halves => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c[i] - x1 * s[i];
                head[b] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

/// SiLU(gate) * up, in place in `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    // Rows are independent; split them over the pool for long prefills.
    let chunk = 16 * 1024;
    if gate.len() <= chunk {
        ares_kernels::silu_mul(gate, up);
    } else {
        ares_kernels::parallel_chunks_mut(gate, chunk, |i, g| {
            ares_kernels::silu_mul(g, &up[i * chunk..i * chunk + g.len()]);
        });
    }
}

/// Write the batch's new K and V rows (n_tokens, kv_dim) into their slots of layer `layer`.
pub fn store_kv(kv: &mut KvStorage, layer: usize, batch: &Batch, k: &[f32], v: &[f32]) {
    let d = kv.kv_dim;
    for t in 0..batch.n_tokens() {
        let table = &batch.block_tables[batch.seq_index[t] as usize];
        let at = kv.slot_of(table, batch.positions[t] as usize);
        let l = &mut kv.layers[layer];
        l.k[at..at + d].copy_from_slice(&k[t * d..(t + 1) * d]);
        l.v[at..at + d].copy_from_slice(&v[t * d..(t + 1) * d]);
    }
}

/// Softmax scale and optional sliding window (the last `window` positions) of an attention layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub scale: f32,
    pub window: Option<usize>,
}

/// Block tables of a batch as the kernels take them (plain u32 ids); built once per forward.
pub fn raw_block_tables(batch: &Batch) -> Vec<Vec<u32>> {
    batch
        .block_tables
        .iter()
        .map(|t| t.iter().map(|b| b.0).collect())
        .collect()
}

/// Causal attention of every token over its own sequence's cached positions (all up to its own,
/// or the last `window`), GQA by index, reading K/V in place from the blocks, with shared prefix
/// blocks read once for all sequences that share them (see `ares_kernels::paged`).
/// q: (n_tokens, n_head, head_dim); out: same shape.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    kv: &KvStorage,
    layer: usize,
    batch: &Batch,
    tables: &[Vec<u32>],
    q: &[f32],
    out: &mut [f32],
    cfg: &ModelConfig,
    params: AttnParams,
) {
    let l = &kv.layers[layer];
    let p = ares_kernels::PagedAttention {
        q,
        k: &l.k,
        v: &l.v,
        block_size: kv.block_size,
        n_head: cfg.n_head,
        n_kv_head: cfg.n_kv_head,
        head_dim: cfg.head_dim,
        scale: params.scale,
        window: params.window,
        positions: &batch.positions,
        seq_of_token: &batch.seq_index,
        block_tables: tables,
    };
    ares_kernels::paged_attention(&p, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let mut x = vec![3.0f32; 8];
        rms_norm(&mut x, &[2.0; 8], 0.0);
        for v in x {
            assert!((v - 2.0).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let f = RopeFreqs {
            theta_scale: 0.1,
            half: 2,
            linear: 1.0,
            factors: vec![],
        };
        let (c, s) = rope_tables(&[0, 5], &f);
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        apply_rope(&mut x, 1, 4, RopeStyle::Adjacent, &c, &s);
        assert_eq!(&x[..4], &[1.0, 2.0, 3.0, 4.0]);
        let n0: f32 = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| v * v).sum();
        let n1: f32 = x[4..].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }
}

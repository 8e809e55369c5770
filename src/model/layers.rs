//! Per-row building blocks shared by the architectures: RMSNorm, RoPE, activations, softmax, and
//! paged attention over the block KV cache. Every function computes each row independently of the
//! others, which is what makes batched results equal one-by-one results.

use crate::error::{Error, Result};
use crate::model::batch::Batch;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::gguf::{GgufFile, Weight};
use crate::model::kv::KvStorage;

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
    rope_freqs_with_base(cfg, cfg.rope_base, cfg.rope_linear_factor, factors)
}

/// As [`rope_freqs`] with another base and linear factor (Gemma 3's local layers use base 10 000
/// and no scaling while its global layers use the config's).
pub fn rope_freqs_with_base(
    cfg: &ModelConfig,
    base: f32,
    linear_factor: f32,
    factors: Vec<f32>,
) -> RopeFreqs {
    RopeFreqs {
        theta_scale: base.powf(-2.0 / cfg.rope_dim as f32),
        half: cfg.rope_dim / 2,
        linear: 1.0 / linear_factor,
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

/// GELU (tanh approximation, HF `gelu_pytorch_tanh`)(gate) * up, in place in `gate` (GeGLU).
/// libm's tanhf: Gemma's greedy choices sit on near-ties often enough that a cheaper σ-based
/// rewrite (equal within 1e-6) flipped a golden step-0 token, so the exact formula stays.
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    fn run(g: &mut [f32], u: &[f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        for (x, u) in g.iter_mut().zip(u) {
            let v = *x;
            *x = 0.5 * v * (1.0 + (C * (v + 0.044_715 * v * v * v)).tanh()) * u;
        }
    }
    let chunk = 16 * 1024;
    if gate.len() <= chunk {
        run(gate, up);
    } else {
        ares_kernels::parallel_chunks_mut(gate, chunk, |i, g| {
            run(g, &up[i * chunk..i * chunk + g.len()]);
        });
    }
}

/// x (n_rows, dim) += bias (dim,) on every row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
    }
}

/// y = x · Wᵀ into a fresh buffer; x: (n_tokens, w.k) -> (n_tokens, w.n).
pub fn linear(w: &Weight, x: &[f32]) -> Vec<f32> {
    let mut y = Vec::new();
    linear_into(w, x, &mut y);
    y
}

/// y = x · Wᵀ into `y`, resized to (n_tokens, w.n) (see [`linear_many_into`]).
pub fn linear_into(w: &Weight, x: &[f32], y: &mut Vec<f32>) {
    linear_many_into([w], x, [y]);
}

/// Several projections of the same input in one parallel region, each into its buffer resized to
/// (n_tokens, w.n). A matmul writes every element of its output, so a reused buffer is zeroed
/// only where it grows (see [`Scratch`]).
pub fn linear_many_into<const N: usize>(ws: [&Weight; N], x: &[f32], ys: [&mut Vec<f32>; N]) {
    let m = x.len() / ws[0].k;
    let mats: Vec<_> = ws.iter().map(|w| w.mat()).collect();
    let mut outs: Vec<&mut [f32]> = ys
        .into_iter()
        .zip(&ws)
        .map(|(y, w)| {
            y.resize(m * w.n, 0.0);
            y.as_mut_slice()
        })
        .collect();
    ares_kernels::matmul_many(&mats, x, &mut outs);
}

/// The matmul outputs of one forward, reused layer after layer. Every layer's products have the
/// same shapes (fewer rows from the last layer's attention on), and a matmul overwrites its whole
/// output, so each buffer is allocated and zeroed once per forward, not once per layer (with
/// fresh buffers, zeroing about 90 KB per token and layer on the 1.5B model ran on the engine
/// thread while the pool's other threads waited).
#[derive(Default)]
pub struct Scratch {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub o: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
}

/// Repack every matrix into the kernels' streaming layout (in parallel), then let the mapped pages
/// go when anything was packed (only embedding rows are read from the mapping afterwards).
/// Returns the bytes of weights held in memory.
pub fn pack_weights(g: &GgufFile, mut mats: Vec<&mut Weight>) -> usize {
    ares_kernels::parallel_chunks_mut(&mut mats, 1, |_, w| w[0].pack());
    let packed: usize = mats.iter().map(|w| w.owned_bytes()).sum();
    if packed > 0 {
        g.release_pages();
        packed + g.owned_bytes()
    } else {
        g.file_size()
    }
}

/// The seven matrices of a pre-norm decoder block with a gated MLP, under their GGUF names
/// (`blk.{i}.attn_q` .. `blk.{i}.ffn_down`), shaped from the config.
pub struct BlockMats {
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub w_gate: Weight,
    pub w_up: Weight,
    pub w_down: Weight,
}

impl BlockMats {
    pub fn load(g: &GgufFile, layer: usize, cfg: &ModelConfig) -> Result<Self> {
        let (h, qd, kvd, f) = (
            cfg.hidden,
            cfg.n_head * cfg.head_dim,
            cfg.kv_dim(),
            cfg.ffn_hidden,
        );
        let w =
            |s: &str, rows, cols| g.weight_shaped(&format!("blk.{layer}.{s}.weight"), rows, cols);
        Ok(BlockMats {
            wq: w("attn_q", qd, h)?,
            wk: w("attn_k", kvd, h)?,
            wv: w("attn_v", kvd, h)?,
            wo: w("attn_output", h, qd)?,
            w_gate: w("ffn_gate", f, h)?,
            w_up: w("ffn_up", f, h)?,
            w_down: w("ffn_down", h, f)?,
        })
    }

    fn all_mut(&mut self) -> [&mut Weight; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

/// The output projection: `output.weight`, or the token embedding when the GGUF ties them.
pub fn output_or_tied(g: &GgufFile, tok_embd: &Weight, cfg: &ModelConfig) -> Result<Weight> {
    if g.has_tensor("output.weight") {
        g.weight_shaped("output.weight", cfg.vocab, cfg.hidden)
    } else {
        Ok(tok_embd.clone())
    }
}

/// [`pack_weights`] over the output projection and every block's matrices.
pub fn pack_model<'a>(
    g: &GgufFile,
    output: &'a mut Weight,
    blocks: impl Iterator<Item = &'a mut BlockMats>,
) -> usize {
    let mut mats: Vec<&mut Weight> = vec![output];
    for b in blocks {
        mats.extend(b.all_mut());
    }
    pack_weights(g, mats)
}

/// The part of an attention sublayer every architecture shares, after its own q/k adjustments:
/// rotary positions on q and k, the batch's K/V into layer `layer` of the cache, then attention of
/// q over the cache into `out`. q: (n, n_head, head_dim); k, v: (n, n_kv_head, head_dim).
#[allow(clippy::too_many_arguments)]
pub fn rope_store_attend(
    kv: &mut KvStorage,
    layer: usize,
    batch: &Batch,
    tables: &[Vec<u32>],
    cfg: &ModelConfig,
    (cos, sin): (&[f32], &[f32]),
    (q, k, v): (&mut [f32], &mut [f32], &[f32]),
    params: AttnParams,
    out: &mut [f32],
) {
    apply_rope(q, cfg.n_head, cfg.head_dim, cfg.rope_style, cos, sin);
    apply_rope(k, cfg.n_kv_head, cfg.head_dim, cfg.rope_style, cos, sin);
    store_kv(kv, layer, batch, k, v);
    paged_attention(kv, layer, batch, tables, q, out, cfg, params);
}

/// The token embedding and the model config of `arch`, checked against each other: heads divide
/// into KV heads, and the embedding's rows are `hidden` wide. Every architecture starts here.
pub fn embedding_and_config(g: &GgufFile, arch: &str) -> Result<(Weight, ModelConfig)> {
    let tok_embd = g.weight("token_embd.weight")?;
    let cfg = ModelConfig::from_gguf(g, arch, tok_embd.n)?;
    if cfg.n_head == 0 || cfg.n_kv_head == 0 || cfg.n_head % cfg.n_kv_head != 0 {
        return Err(Error::InvalidGguf {
            path: g.path.clone(),
            reason: format!(
                "head_count {} is not a multiple of head_count_kv {}",
                cfg.n_head, cfg.n_kv_head
            ),
        });
    }
    if tok_embd.k != cfg.hidden {
        return Err(Error::BadTensorShape {
            path: g.path.clone(),
            name: "token_embd.weight".into(),
            actual: vec![tok_embd.n, tok_embd.k],
            expected: vec![tok_embd.n, cfg.hidden],
        });
    }
    Ok((tok_embd, cfg))
}

/// The batch's token embeddings: (n_tokens, hidden) rows of `tok_embd`.
pub fn embed(tok_embd: &Weight, batch: &Batch) -> Vec<f32> {
    let h = tok_embd.k;
    let mut x = vec![0f32; batch.n_tokens() * h];
    for (row, &t) in x.chunks_mut(h).zip(&batch.tokens) {
        tok_embd.dequantize_row(t as usize, row);
    }
    x
}

/// The SwiGLU feed-forward with its pre-norm and residual: x += down(SiLU(gate(n)) · up(n)) with
/// n = RMSNorm(x) (written into `hbuf`, the caller's reusable buffer).
pub fn swiglu_residual(
    x: &mut [f32],
    norm: &[f32],
    eps: f32,
    [gate, up, down]: [&Weight; 3],
    hbuf: &mut [f32],
    s: &mut Scratch,
) {
    rms_norm_into(x, norm, eps, hbuf);
    linear_many_into([gate, up], hbuf, [&mut s.gate, &mut s.up]);
    silu_mul(&mut s.gate, &s.up);
    linear_into(down, &s.gate, &mut s.down);
    x.iter_mut().zip(&s.down).for_each(|(a, b)| *a += b);
}

/// The batch's `logit_rows` of `x` (rows of `width` values), in `logit_rows` order. After the
/// last layer's attention has stored every row's K/V, only these rows are read, so the forwards
/// run that layer's output projection and FFN on them alone (a row's values do not depend on the
/// other rows of a matmul, so the logits are the same).
pub fn gather_logit_rows(batch: &Batch, width: usize, x: &[f32]) -> Vec<f32> {
    let mut rows = Vec::with_capacity(batch.logit_rows.len() * width);
    for &r in &batch.logit_rows {
        rows.extend_from_slice(&x[r * width..(r + 1) * width]);
    }
    rows
}

/// At the last layer, right after its attention: keep only the logit rows of the residual `x`
/// (width `h`) and of the attention output `attn` (width `attn_w`), and shrink `hbuf` to match.
pub fn keep_logit_rows(
    batch: &Batch,
    (h, attn_w): (usize, usize),
    x: &mut Vec<f32>,
    attn: &mut Vec<f32>,
    hbuf: &mut Vec<f32>,
) {
    *x = gather_logit_rows(batch, h, x);
    *attn = gather_logit_rows(batch, attn_w, attn);
    hbuf.truncate(x.len());
}

/// Logits of hidden rows already gathered (see [`gather_logit_rows`]): final RMSNorm, output
/// projection.
pub fn logits_of(mut rows: Vec<f32>, norm: &[f32], eps: f32, output: &Weight) -> Vec<f32> {
    rms_norm(&mut rows, norm, eps);
    linear(output, &rows)
}

/// Write the batch's new K and V rows (n_tokens, kv_dim) into their slots of layer `layer` (K
/// transposed per block, see `KvStorage`).
pub fn store_kv(kv: &mut KvStorage, layer: usize, batch: &Batch, k: &[f32], v: &[f32]) {
    let d = kv.kv_dim;
    for t in 0..batch.n_tokens() {
        let table = &batch.block_tables[batch.seq_index[t] as usize];
        let pos = batch.positions[t] as usize;
        let at = kv.slot_of(table, pos);
        let (kat, kstride) = kv.k_slot_of(table, pos);
        let l = &mut kv.layers[layer];
        for (c, x) in k[t * d..(t + 1) * d].iter().enumerate() {
            l.k[kat + c * kstride] = *x;
        }
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
    fn gelu_tanh_mul_matches_the_tanh_formula() {
        let xs: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) / 97.0).collect();
        let up: Vec<f32> = (0..2000).map(|i| 1.0 + (i % 7) as f32 / 10.0).collect();
        let mut g = xs.clone();
        gelu_tanh_mul(&mut g, &up);
        for ((x, u), got) in xs.iter().zip(&up).zip(&g) {
            let c = (2.0f64 / std::f64::consts::PI).sqrt();
            let x64 = *x as f64;
            let want = 0.5 * x64 * (1.0 + (c * (x64 + 0.044715 * x64.powi(3))).tanh()) * *u as f64;
            assert!(
                (*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "x {x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn rms_norm_of_constant_row_is_weight() {
        let mut x = vec![3.0f32; 8];
        rms_norm(&mut x, &[2.0; 8], 0.0);
        for v in x {
            assert!((v - 2.0).abs() < 1e-6);
        }
    }

    /// Llama 3.1 `rope_freqs` divide each pair's angle by its factor, and linear scaling divides
    /// every angle (positions / factor).
    #[test]
    fn rope_factors_and_linear_scaling_divide_angles() {
        let plain = RopeFreqs {
            theta_scale: 0.1,
            half: 2,
            linear: 1.0,
            factors: vec![],
        };
        let scaled = RopeFreqs {
            factors: vec![1.0, 4.0],
            ..plain
        };
        let (c0, s0) = rope_tables(&[7], &plain);
        let (c1, s1) = rope_tables(&[7], &scaled);
        assert_eq!((c0[0], s0[0]), (c1[0], s1[0]));
        let angle = s0[1].atan2(c0[1]) / 4.0;
        assert!((c1[1] - angle.cos()).abs() < 1e-6 && (s1[1] - angle.sin()).abs() < 1e-6);
        let linear = RopeFreqs {
            theta_scale: 0.1,
            half: 2,
            linear: 0.5,
            factors: vec![],
        };
        let (c2, _) = rope_tables(&[8], &linear);
        let (c3, _) = rope_tables(&[4], &plain);
        assert!(c2.iter().zip(&c3).all(|(a, b)| (a - b).abs() < 1e-6));
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

//! Gemma 3 (text) from GGUF: HF `modeling_gemma3.py`, llama.cpp `llm_build_gemma3_iswa`.
//!
//! What differs from llama: the embedding is scaled by sqrt(hidden); every block has pre- and
//! post-norms around both attention and the MLP; q and k get a per-head RMSNorm before RoPE; the
//! MLP is GeGLU (GELU-tanh); RoPE pairs halves (NEOX); layers alternate `pattern - 1` sliding-window
//! layers (window `attention.sliding_window`, rope base 10 000, no scaling) with one global layer
//! (rope base and scaling from metadata); scores are scaled by 1/sqrt(query_pre_attn_scalar), which
//! llama.cpp takes as head_dim (all sizes but 27B); BOS is required (the tokenizer adds it).
//!
//! Norm weights: HF computes `x * (1 + w)`; llama.cpp's converter (`Gemma3Model.modify_tensors`,
//! `norm_shift`) stores `w + 1` in the GGUF, so GGUF norms multiply as they are, like llama's. The
//! golden test against llama.cpp is what confirms it (a missing or doubled +1 costs whole nats).
//!
//! Like every model here it holds no per-sequence state; every row is computed independently.

use crate::error::Result;
use crate::model::batch::Batch;
use crate::model::config::ModelConfig;
use crate::model::gguf::{GgufFile, Weight};
use crate::model::kv::KvStorage;
use crate::model::layers::{self, linear_into, linear_many_into, Scratch};
use crate::model::Model;

/// Every `SWA_PATTERN`-th layer is global (Gemma 3: 5 local : 1 global; llama.cpp
/// `hparams.set_swa_pattern(6)`), unless the GGUF says otherwise.
const SWA_PATTERN: usize = 6;
/// Rope base of the local layers (llama.cpp `rope_freq_base_train_swa` for gemma3).
const LOCAL_ROPE_BASE: f32 = 10_000.0;

/// Gemma 3's attention layout from GGUF metadata: which layers slide (and how far), the local
/// layers' rope base, and the score scale. Shared by this forward and the candle one.
pub struct AttnLayout {
    /// (n_layer,) sliding window of each layer, None for the global ones.
    pub windows: Vec<Option<usize>>,
    pub local_rope_base: f32,
    /// 1/sqrt(query_pre_attn_scalar).
    pub attn_scale: f32,
}

impl AttnLayout {
    pub fn from_gguf(g: &GgufFile, cfg: &ModelConfig) -> Result<Self> {
        let arch = "gemma3";
        let window = g.usize(&format!("{arch}.attention.sliding_window"))?;
        let pattern = g.usize_or(
            &format!("{arch}.attention.sliding_window_pattern"),
            SWA_PATTERN,
        )?;
        let local_rope_base = g.f32_or(&format!("{arch}.rope.freq_base_swa"), LOCAL_ROPE_BASE)?;
        // llama.cpp: 1/sqrt(head_dim), except 27B (62 layers): 1/sqrt(hidden / n_head). The key is
        // written only by our safetensors loader (HF `query_pre_attn_scalar`).
        let default_scalar = if cfg.n_layer == 62 {
            cfg.hidden / cfg.n_head
        } else {
            cfg.head_dim
        };
        let query_pre_attn_scalar = g.usize_or(
            &format!("{arch}.attention.query_pre_attn_scalar"),
            default_scalar,
        )?;
        let windows = (0..cfg.n_layer)
            .map(|i| {
                let global = pattern > 0 && (i + 1) % pattern == 0;
                (!global).then_some(window)
            })
            .collect();
        Ok(AttnLayout {
            windows,
            local_rope_base,
            attn_scale: 1.0 / (query_pre_attn_scalar as f32).sqrt(),
        })
    }
}

struct Block {
    attn_norm: Vec<f32>,
    /// q, k, v, output, gate, up, down.
    m: layers::BlockMats,
    /// (head_dim,) per-head RMSNorm weights of q and k.
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    post_ffn_norm: Vec<f32>,
    /// Sliding window of this layer (None: global).
    window: Option<usize>,
}

pub struct Gemma3 {
    cfg: ModelConfig,
    tok_embd: Weight,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Weight,
    rope_global: layers::RopeFreqs,
    rope_local: layers::RopeFreqs,
    attn_scale: f32,
    embd_scale: f32,
    weight_bytes: usize,
}

impl Gemma3 {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = "gemma3";
        let (tok_embd, cfg) = layers::embedding_and_config(g, arch)?;
        let layout = AttnLayout::from_gguf(g, &cfg)?;
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            Ok(g.weight_shaped(name, 1, len)?.to_f32())
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vector(&p("attn_norm"), h)?,
                m: layers::BlockMats::load(g, i, &cfg)?,
                q_norm: vector(&p("attn_q_norm"), hd)?,
                k_norm: vector(&p("attn_k_norm"), hd)?,
                post_attn_norm: vector(&p("post_attention_norm"), h)?,
                ffn_norm: vector(&p("ffn_norm"), h)?,
                post_ffn_norm: vector(&p("post_ffw_norm"), h)?,
                window: layout.windows[i],
            });
        }
        let mut output = layers::output_or_tied(g, &tok_embd, &cfg)?;
        let rope_global = layers::rope_freqs(&cfg, Vec::new());
        let rope_local =
            layers::rope_freqs_with_base(&cfg, layout.local_rope_base, 1.0, Vec::new());
        let norm = vector("output_norm.weight", h)?;
        let weight_bytes = layers::pack_model(g, &mut output, blocks.iter_mut().map(|b| &mut b.m));
        Ok(Gemma3 {
            attn_scale: layout.attn_scale,
            embd_scale: (cfg.hidden as f32).sqrt(),
            cfg,
            tok_embd,
            blocks,
            norm,
            output,
            rope_global,
            rope_local,
            weight_bytes,
        })
    }

    /// Sliding window of each layer (None: global attention).
    pub fn windows(&self) -> Vec<Option<usize>> {
        self.blocks.iter().map(|b| b.window).collect()
    }
}

impl Model for Gemma3 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn forward(&self, batch: &Batch, kv: &mut KvStorage) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (n, h, hd) = (batch.n_tokens(), cfg.hidden, cfg.head_dim);
        // x: (n_tokens, hidden), the embedding times sqrt(hidden) (llama.cpp `ggml_scale`).
        let mut x = layers::embed(&self.tok_embd, batch);
        x.iter_mut().for_each(|v| *v *= self.embd_scale);
        let global = layers::rope_tables(&batch.positions, &self.rope_global);
        let local = layers::rope_tables(&batch.positions, &self.rope_local);
        let tables = layers::raw_block_tables(batch);
        let mut hbuf = vec![0f32; n * h];
        let mut attn = vec![0f32; n * cfg.n_head * hd];
        let mut s = Scratch::default();
        let last = self.blocks.len().saturating_sub(1);
        for (l, b) in self.blocks.iter().enumerate() {
            let (cos, sin) = if b.window.is_some() { &local } else { &global };
            layers::rms_norm_into(&x, &b.attn_norm, cfg.rms_eps, &mut hbuf);
            // q: (n, n_head, head_dim); k, v: (n, n_kv_head, head_dim)
            let qkv = [&mut s.q, &mut s.k, &mut s.v];
            linear_many_into([&b.m.wq, &b.m.wk, &b.m.wv], &hbuf, qkv);
            let (q, k, v) = (&mut s.q, &mut s.k, &s.v);
            layers::rms_norm(q, &b.q_norm, cfg.rms_eps);
            layers::rms_norm(k, &b.k_norm, cfg.rms_eps);
            let params = layers::AttnParams {
                scale: self.attn_scale,
                window: b.window,
            };
            let qkv = (&mut q[..], &mut k[..], &v[..]);
            let rope = (&cos[..], &sin[..]);
            layers::rope_store_attend(kv, l, batch, &tables, cfg, rope, qkv, params, &mut attn);
            if l == last {
                // Every row's K/V is stored; past this point only the logit rows are read.
                let widths = (h, cfg.n_head * hd);
                layers::keep_logit_rows(batch, widths, &mut x, &mut attn, &mut hbuf);
            }
            linear_into(&b.m.wo, &attn, &mut s.o);
            layers::rms_norm(&mut s.o, &b.post_attn_norm, cfg.rms_eps);
            x.iter_mut().zip(&s.o).for_each(|(a, b)| *a += b);
            layers::rms_norm_into(&x, &b.ffn_norm, cfg.rms_eps, &mut hbuf);
            linear_many_into([&b.m.w_gate, &b.m.w_up], &hbuf, [&mut s.gate, &mut s.up]);
            layers::gelu_tanh_mul(&mut s.gate, &s.up);
            linear_into(&b.m.w_down, &s.gate, &mut s.down);
            layers::rms_norm(&mut s.down, &b.post_ffn_norm, cfg.rms_eps);
            x.iter_mut().zip(&s.down).for_each(|(a, b)| *a += b);
        }
        if self.blocks.is_empty() {
            x = layers::gather_logit_rows(batch, h, &x);
        }
        Ok(layers::logits_of(x, &self.norm, cfg.rms_eps, &self.output))
    }
}

//! The llama block family from GGUF: Llama 2/3, Mistral, SmolLM2 (HF `modeling_llama.py`,
//! llama.cpp `llm_build_llama`) and Qwen2 / Qwen2.5 / Qwen3 dense (`modeling_qwen2.py` /
//! `modeling_qwen3.py`, `llm_build_qwen2` / `llm_build_qwen3`): pre-norm decoder blocks with
//! RMSNorm, GQA attention with RoPE, SwiGLU MLP. The Qwen variants are the llama block with one
//! difference each, held as data in the block rather than as another copy of the forward:
//! - qwen2: biases on the q, k and v projections;
//! - qwen3: a per-head RMSNorm on q and k (weights of length head_dim) before RoPE, no biases, and a
//!   head_dim that need not be hidden / n_head (`attention.key_length`).
//!
//! The output matrix is tied to the embedding when the GGUF has no `output.weight` (SmolLM2);
//! Llama 3.1-style rope scaling reads its per-dimension factors from `rope_freqs.weight`. Weights
//! stay quantized in the mapped file; the forward runs over a packed batch and the paged KV cache
//! passed in, so this type holds no per-sequence state and rows are computed independently.

use crate::error::Result;
use crate::model::batch::Batch;
use crate::model::config::ModelConfig;
use crate::model::gguf::{GgufFile, Weight};
use crate::model::kv::KvStorage;
use crate::model::layers::{self, linear_into, linear_many_into, Scratch};
use crate::model::Model;

struct Block {
    attn_norm: Vec<f32>,
    /// q, k, v, output, gate, up, down.
    m: layers::BlockMats,
    /// qwen2: (q_dim,), (kv_dim,), (kv_dim,) biases; none for llama.
    bias: Option<[Vec<f32>; 3]>,
    /// qwen3: (head_dim,) per-head norms of q and k; none for llama and qwen2.
    qk_norm: Option<[Vec<f32>; 2]>,
    ffn_norm: Vec<f32>,
}

pub struct Llama {
    cfg: ModelConfig,
    tok_embd: Weight,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Weight,
    rope: layers::RopeFreqs,
    weight_bytes: usize,
}

impl Llama {
    /// `arch` is `llama`, `mistral`, `qwen2` or `qwen3`.
    pub fn from_gguf(g: &GgufFile, arch: &str) -> Result<Self> {
        let (tok_embd, cfg) = layers::embedding_and_config(g, arch)?;
        let (qwen2, qwen3) = (arch == "qwen2", arch == "qwen3");
        let (h, hd, qd, kvd) = (
            cfg.hidden,
            cfg.head_dim,
            cfg.n_head * cfg.head_dim,
            cfg.kv_dim(),
        );
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            Ok(g.weight_shaped(name, 1, len)?.to_f32())
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let b = |s: &str| format!("blk.{i}.{s}.bias");
            // Qwen2 always has q/k/v biases; accept their absence (some fine-tunes drop them).
            let bias = if qwen2 && g.has_tensor(&b("attn_q")) {
                Some([
                    vector(&b("attn_q"), qd)?,
                    vector(&b("attn_k"), kvd)?,
                    vector(&b("attn_v"), kvd)?,
                ])
            } else {
                None
            };
            let qk_norm = if qwen3 {
                Some([
                    vector(&p("attn_q_norm"), hd)?,
                    vector(&p("attn_k_norm"), hd)?,
                ])
            } else {
                None
            };
            blocks.push(Block {
                attn_norm: vector(&p("attn_norm"), h)?,
                m: layers::BlockMats::load(g, i, &cfg)?,
                bias,
                qk_norm,
                ffn_norm: vector(&p("ffn_norm"), h)?,
            });
        }
        let mut output = layers::output_or_tied(g, &tok_embd, &cfg)?;
        // Llama 3.1-style rope scaling ships per-dimension factors as a tensor.
        let factors = if g.has_tensor("rope_freqs.weight") {
            g.weight("rope_freqs.weight")?.to_f32()
        } else {
            Vec::new()
        };
        let rope = layers::rope_freqs(&cfg, factors);
        let norm = vector("output_norm.weight", h)?;
        let weight_bytes = layers::pack_model(g, &mut output, blocks.iter_mut().map(|b| &mut b.m));
        Ok(Llama {
            cfg,
            tok_embd,
            blocks,
            norm,
            output,
            rope,
            weight_bytes,
        })
    }
}

impl Model for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn forward(&self, batch: &Batch, kv: &mut KvStorage) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (n, h, hd) = (batch.n_tokens(), cfg.hidden, cfg.head_dim);
        // x: (n_tokens, hidden)
        let mut x = layers::embed(&self.tok_embd, batch);
        let (cos, sin) = layers::rope_tables(&batch.positions, &self.rope);
        let scale = 1.0 / (hd as f32).sqrt();
        let tables = layers::raw_block_tables(batch);
        let mut hbuf = vec![0f32; n * h];
        let mut attn = vec![0f32; n * cfg.n_head * hd];
        let mut s = Scratch::default();
        let last = self.blocks.len().saturating_sub(1);
        for (l, b) in self.blocks.iter().enumerate() {
            layers::rms_norm_into(&x, &b.attn_norm, cfg.rms_eps, &mut hbuf);
            // q: (n, n_head, head_dim); k, v: (n, n_kv_head, head_dim)
            let qkv = [&mut s.q, &mut s.k, &mut s.v];
            linear_many_into([&b.m.wq, &b.m.wk, &b.m.wv], &hbuf, qkv);
            let (q, k, v) = (&mut s.q, &mut s.k, &mut s.v);
            if let Some([bq, bk, bv]) = &b.bias {
                layers::add_bias(q, bq);
                layers::add_bias(k, bk);
                layers::add_bias(v, bv);
            }
            if let Some([qn, kn]) = &b.qk_norm {
                layers::rms_norm(q, qn, cfg.rms_eps);
                layers::rms_norm(k, kn, cfg.rms_eps);
            }
            let params = layers::AttnParams {
                scale,
                window: None,
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
            x.iter_mut().zip(&s.o).for_each(|(a, b)| *a += b);
            layers::swiglu_residual(
                &mut x,
                &b.ffn_norm,
                cfg.rms_eps,
                [&b.m.w_gate, &b.m.w_up, &b.m.w_down],
                &mut hbuf,
                &mut s,
            );
        }
        if self.blocks.is_empty() {
            x = layers::gather_logit_rows(batch, h, &x);
        }
        Ok(layers::logits_of(x, &self.norm, cfg.rms_eps, &self.output))
    }
}

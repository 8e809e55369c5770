//! Qwen2 / Qwen2.5 and Qwen3 (dense) from GGUF: HF `modeling_qwen2.py` / `modeling_qwen3.py`,
//! llama.cpp `llm_build_qwen2` / `llm_build_qwen3`. One file for both because they are the llama
//! block with exactly one difference each, and a flag per difference reads better than two copies:
//! - qwen2: biases on the q, k and v projections;
//! - qwen3: a per-head RMSNorm on q and k (weights of length head_dim) before RoPE, no biases, and a
//!   head_dim that need not be hidden / n_head (`attention.key_length`).
//!
//! Both pair RoPE dimensions by halves (NEOX); the output matrix is tied to the embedding when the
//! GGUF has no `output.weight`. No per-sequence state; rows are computed independently.

use crate::error::Result;
use crate::model::batch::Batch;
use crate::model::config::ModelConfig;
use crate::model::gguf::{GgufFile, Weight};
use crate::model::kv::KvStorage;
use crate::model::layers::{self, linear, linear_many};
use crate::model::Model;

struct Block {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    /// qwen2: (q_dim,), (kv_dim,), (kv_dim,) biases.
    bias: Option<[Vec<f32>; 3]>,
    /// qwen3: (head_dim,) per-head norms of q and k.
    qk_norm: Option<[Vec<f32>; 2]>,
    wo: Weight,
    ffn_norm: Vec<f32>,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
}

pub struct Qwen {
    cfg: ModelConfig,
    tok_embd: Weight,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    output: Weight,
    rope: layers::RopeFreqs,
    weight_bytes: usize,
}

impl Qwen {
    /// `arch` is `qwen2` or `qwen3`.
    pub fn from_gguf(g: &GgufFile, arch: &str) -> Result<Self> {
        let (tok_embd, cfg) = layers::embedding_and_config(g, arch)?;
        let qwen3 = arch == "qwen3";
        let (h, hd, qd, kvd, f) = (
            cfg.hidden,
            cfg.head_dim,
            cfg.n_head * cfg.head_dim,
            cfg.kv_dim(),
            cfg.ffn_hidden,
        );
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            Ok(g.weight_shaped(name, 1, len)?.to_f32())
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let b = |s: &str| format!("blk.{i}.{s}.bias");
            // Qwen2 always has q/k/v biases; accept their absence (some fine-tunes drop them).
            let bias = if !qwen3 && g.has_tensor(&b("attn_q")) {
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
                wq: g.weight_shaped(&p("attn_q"), qd, h)?,
                wk: g.weight_shaped(&p("attn_k"), kvd, h)?,
                wv: g.weight_shaped(&p("attn_v"), kvd, h)?,
                bias,
                qk_norm,
                wo: g.weight_shaped(&p("attn_output"), h, qd)?,
                ffn_norm: vector(&p("ffn_norm"), h)?,
                w_gate: g.weight_shaped(&p("ffn_gate"), f, h)?,
                w_up: g.weight_shaped(&p("ffn_up"), f, h)?,
                w_down: g.weight_shaped(&p("ffn_down"), h, f)?,
            });
        }
        let mut output = if g.has_tensor("output.weight") {
            g.weight_shaped("output.weight", cfg.vocab, h)?
        } else {
            tok_embd.clone()
        };
        let rope = layers::rope_freqs(&cfg, Vec::new());
        let norm = vector("output_norm.weight", h)?;
        let mut mats: Vec<&mut Weight> = vec![&mut output];
        for b in blocks.iter_mut() {
            mats.extend([
                &mut b.wq,
                &mut b.wk,
                &mut b.wv,
                &mut b.wo,
                &mut b.w_gate,
                &mut b.w_up,
                &mut b.w_down,
            ]);
        }
        let weight_bytes = layers::pack_weights(g, mats);
        Ok(Qwen {
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

impl Model for Qwen {
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
        for (l, b) in self.blocks.iter().enumerate() {
            layers::rms_norm_into(&x, &b.attn_norm, cfg.rms_eps, &mut hbuf);
            // q: (n, n_head, head_dim); k, v: (n, n_kv_head, head_dim)
            let [mut q, mut k, mut v] = linear_many([&b.wq, &b.wk, &b.wv], &hbuf);
            if let Some([bq, bk, bv]) = &b.bias {
                layers::add_bias(&mut q, bq);
                layers::add_bias(&mut k, bk);
                layers::add_bias(&mut v, bv);
            }
            if let Some([qn, kn]) = &b.qk_norm {
                layers::rms_norm(&mut q, qn, cfg.rms_eps);
                layers::rms_norm(&mut k, kn, cfg.rms_eps);
            }
            layers::apply_rope(&mut q, cfg.n_head, hd, cfg.rope_style, &cos, &sin);
            layers::apply_rope(&mut k, cfg.n_kv_head, hd, cfg.rope_style, &cos, &sin);
            layers::store_kv(kv, l, batch, &k, &v);
            layers::paged_attention(
                kv,
                l,
                batch,
                &tables,
                &q,
                &mut attn,
                cfg,
                layers::AttnParams {
                    scale,
                    window: None,
                },
            );
            let o = linear(&b.wo, &attn);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            layers::swiglu_residual(
                &mut x,
                &b.ffn_norm,
                cfg.rms_eps,
                [&b.w_gate, &b.w_up, &b.w_down],
                &mut hbuf,
            );
        }
        Ok(layers::logits(
            &x,
            batch,
            &self.norm,
            cfg.rms_eps,
            &self.output,
        ))
    }
}

//! The llama family (Llama 2/3, Mistral, SmolLM2 and friends) from GGUF: pre-norm decoder blocks
//! with RMSNorm, GQA attention with RoPE, SwiGLU MLP (HF `modeling_llama.py`, llama.cpp
//! `llm_build_llama`). Weights stay quantized in the mapped file; the forward runs over a packed
//! batch and the paged KV cache passed in, so this type holds no per-sequence state.

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
    wo: Weight,
    ffn_norm: Vec<f32>,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
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
    pub fn from_gguf(g: &GgufFile, arch: &str) -> Result<Self> {
        let (tok_embd, cfg) = layers::embedding_and_config(g, arch)?;
        let (h, qd, kvd, f) = (
            cfg.hidden,
            cfg.n_head * cfg.head_dim,
            cfg.kv_dim(),
            cfg.ffn_hidden,
        );
        let vector = |name: &str| -> Result<Vec<f32>> { Ok(g.weight_shaped(name, 1, h)?.to_f32()) };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: vector(&p("attn_norm"))?,
                wq: g.weight_shaped(&p("attn_q"), qd, h)?,
                wk: g.weight_shaped(&p("attn_k"), kvd, h)?,
                wv: g.weight_shaped(&p("attn_v"), kvd, h)?,
                wo: g.weight_shaped(&p("attn_output"), h, qd)?,
                ffn_norm: vector(&p("ffn_norm"))?,
                w_gate: g.weight_shaped(&p("ffn_gate"), f, h)?,
                w_up: g.weight_shaped(&p("ffn_up"), f, h)?,
                w_down: g.weight_shaped(&p("ffn_down"), h, f)?,
            });
        }
        // Tied embeddings (SmolLM2): no output tensor, the embedding matrix projects back.
        let output = if g.has_tensor("output.weight") {
            g.weight_shaped("output.weight", cfg.vocab, h)?
        } else {
            tok_embd.clone()
        };
        // Llama 3.1-style rope scaling ships per-dimension factors as a tensor.
        let factors = if g.has_tensor("rope_freqs.weight") {
            g.weight("rope_freqs.weight")?.to_f32()
        } else {
            Vec::new()
        };
        let rope = layers::rope_freqs(&cfg, factors);
        let norm = vector("output_norm.weight")?;
        let mut output = output;
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
        let (n, h) = (batch.n_tokens(), cfg.hidden);
        // x: (n_tokens, hidden)
        let mut x = layers::embed(&self.tok_embd, batch);
        let (cos, sin) = layers::rope_tables(&batch.positions, &self.rope);
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let tables = layers::raw_block_tables(batch);
        let mut hbuf = vec![0f32; n * h];
        let mut attn = vec![0f32; n * cfg.n_head * cfg.head_dim];
        for (l, b) in self.blocks.iter().enumerate() {
            layers::rms_norm_into(&x, &b.attn_norm, cfg.rms_eps, &mut hbuf);
            // q: (n, n_head, head_dim); k, v: (n, n_kv_head, head_dim)
            let [mut q, mut k, v] = linear_many([&b.wq, &b.wk, &b.wv], &hbuf);
            layers::apply_rope(&mut q, cfg.n_head, cfg.head_dim, cfg.rope_style, &cos, &sin);
            layers::apply_rope(
                &mut k,
                cfg.n_kv_head,
                cfg.head_dim,
                cfg.rope_style,
                &cos,
                &sin,
            );
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

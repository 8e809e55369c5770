//! The decoder forward over candle tensors, one code path for every device and every supported
//! architecture (HF `modeling_llama.py` / `modeling_qwen2.py` / `modeling_qwen3.py` /
//! `modeling_gemma3.py`; llama.cpp `llm_build_llama` / `llm_build_qwen2` / `llm_build_qwen3` /
//! `llm_build_gemma3_iswa`; candle-transformers' `quantized_llama` for the candle idioms). The
//! variants are data in the block (biases, q/k norms, post-norms, activation), not copies of the
//! forward.
//!
//! The model holds no per-sequence state: positions, block tables and K/V come in with each step.
//! Attention (v1, portable): the step's new K/V are scattered into their slots, each group of
//! sequences gathers its keys with `index_select` through its block tables, and a mask built on
//! the device from absolute positions (causal, plus the sliding window of Gemma 3's local layers)
//! hides the future, the padding and what slid out of the window.

use crate::config::{Arch, Config, RopeSpec, RopeStyle};
use crate::kv::DeviceKv;
use crate::step::{Step, StepTensors};
use crate::{Error, Result};
use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor, D};
use std::path::{Path, PathBuf};

struct Block {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
    /// qwen2: q, k, v biases.
    bias: Option<[Tensor; 3]>,
    /// qwen3, gemma3: (head_dim,) per-head RMSNorm of q and k.
    qk_norm: Option<[Tensor; 2]>,
    /// gemma3: post-attention and post-FFN norms.
    post_norms: Option<[Tensor; 2]>,
    ffn_norm: Tensor,
    window: Option<usize>,
}

/// RoPE cos/sin tables: (max_positions, rope_dim / 2) each.
struct RopeTable {
    cos: Tensor,
    sin: Tensor,
}

pub struct DeviceModel {
    cfg: Config,
    device: Device,
    /// (vocab, hidden) f32, dequantized once.
    tok_embd: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    output: QMatMul,
    rope: RopeTable,
    rope_local: Option<RopeTable>,
    weight_bytes: usize,
}

/// GGUF tensors read on demand.
struct Reader<'a> {
    path: &'a Path,
    file: std::fs::File,
    content: gguf_file::Content,
    device: &'a Device,
    bytes: usize,
}

impl Reader<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<candle_core::quantized::QTensor> {
        if !self.has(name) {
            return Err(Error::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.into(),
            });
        }
        let q = self
            .content
            .tensor(&mut self.file, name, self.device)
            .map_err(|source| self.gguf_err(source))?;
        if q.shape().dims() != shape {
            return Err(Error::BadTensorShape {
                path: self.path.to_path_buf(),
                name: name.into(),
                actual: q.shape().dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        self.bytes += q.storage_size_in_bytes();
        Ok(q)
    }

    fn gguf_err(&self, source: candle_core::Error) -> Error {
        Error::Gguf {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// A matrix (rows, cols), kept quantized.
    fn mat(&mut self, name: &str, rows: usize, cols: usize) -> Result<QMatMul> {
        let q = self.qtensor(name, &[rows, cols])?;
        Ok(QMatMul::from_qtensor(q)?)
    }

    /// A vector (len,), as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        let q = self.qtensor(name, &[len])?;
        Ok(q.dequantize(self.device)?)
    }
}

impl DeviceModel {
    /// Load the GGUF at `path` onto `device` with the hyper-parameters `cfg` (read by the caller
    /// from the same file's metadata).
    pub fn load(path: &Path, cfg: Config, device: &Device) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::Gguf {
            path: path.to_path_buf(),
            source: candle_core::Error::Io(e),
        })?;
        let content = gguf_file::Content::read(&mut file).map_err(|source| Error::Gguf {
            path: PathBuf::from(path),
            source,
        })?;
        let mut r = Reader {
            path,
            file,
            content,
            device,
            bytes: 0,
        };
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (qd, kvd) = (cfg.n_head * hd, cfg.kv_dim());
        let embd_q = r.qtensor("token_embd.weight", &[cfg.vocab, h])?;
        let tok_embd = embd_q.dequantize(device)?;
        let output = if r.has("output.weight") {
            r.mat("output.weight", cfg.vocab, h)?
        } else {
            QMatMul::from_qtensor(embd_q)?
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let b = |s: &str| format!("blk.{i}.{s}.bias");
            // llama.cpp: ffn_hidden from the gate's shape.
            let ffn = r
                .content
                .tensor_infos
                .get(&p("ffn_gate"))
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| Error::MissingTensor {
                    path: path.to_path_buf(),
                    name: p("ffn_gate"),
                })?;
            let bias = if cfg.arch == Arch::Qwen2 && r.has(&b("attn_q")) {
                Some([
                    r.vector(&b("attn_q"), qd)?,
                    r.vector(&b("attn_k"), kvd)?,
                    r.vector(&b("attn_v"), kvd)?,
                ])
            } else {
                None
            };
            let qk_norm = if matches!(cfg.arch, Arch::Qwen3 | Arch::Gemma3) {
                Some([
                    r.vector(&p("attn_q_norm"), hd)?,
                    r.vector(&p("attn_k_norm"), hd)?,
                ])
            } else {
                None
            };
            let post_norms = if cfg.arch == Arch::Gemma3 {
                Some([
                    r.vector(&p("post_attention_norm"), h)?,
                    r.vector(&p("post_ffw_norm"), h)?,
                ])
            } else {
                None
            };
            blocks.push(Block {
                attn_norm: r.vector(&p("attn_norm"), h)?,
                wq: r.mat(&p("attn_q"), qd, h)?,
                wk: r.mat(&p("attn_k"), kvd, h)?,
                wv: r.mat(&p("attn_v"), kvd, h)?,
                wo: r.mat(&p("attn_output"), h, qd)?,
                w_gate: r.mat(&p("ffn_gate"), ffn, h)?,
                w_up: r.mat(&p("ffn_up"), ffn, h)?,
                w_down: r.mat(&p("ffn_down"), h, ffn)?,
                bias,
                qk_norm,
                post_norms,
                ffn_norm: r.vector(&p("ffn_norm"), h)?,
                window: cfg.windows.get(i).copied().flatten(),
            });
        }
        let norm = r.vector("output_norm.weight", h)?;
        let rope = rope_table(&cfg, &cfg.rope, device)?;
        let rope_local = match &cfg.rope_local {
            Some(spec) => Some(rope_table(&cfg, spec, device)?),
            None => None,
        };
        Ok(DeviceModel {
            weight_bytes: r.bytes,
            cfg,
            device: device.clone(),
            tok_embd,
            blocks,
            norm,
            output,
            rope,
            rope_local,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of weights as stored in the file (quantized), excluding the f32 embedding copy.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// K/V blocks on this model's device.
    pub fn new_kv(&self, block_size: usize, n_blocks: usize) -> Result<DeviceKv> {
        DeviceKv::new(
            self.cfg.n_layer,
            self.cfg.kv_dim(),
            block_size,
            n_blocks,
            &self.device,
        )
    }

    /// Run one step: write each token's K/V into its slot, attend over its own sequence, and
    /// return the logits of the step's logit rows: (n_logits * vocab,) row-major, on the host.
    pub fn forward(&self, step: &Step, kv: &mut DeviceKv) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        if kv.layers.len() != cfg.n_layer || kv.kv_dim != cfg.kv_dim() {
            return Err(Error::InvalidStep(format!(
                "K/V storage of {} layers x {} values does not fit the model's {} x {}",
                kv.layers.len(),
                kv.kv_dim,
                cfg.n_layer,
                cfg.kv_dim()
            )));
        }
        if step.n_tokens() > 0 && step.max_slot >= kv.n_blocks * kv.block_size {
            return Err(Error::InvalidStep(format!(
                "slot {} past the {} blocks of the K/V storage",
                step.max_slot, kv.n_blocks
            )));
        }
        if step.max_pos >= cfg.max_positions {
            return Err(Error::InvalidStep(format!(
                "position {} past the model's {} positions",
                step.max_pos, cfg.max_positions
            )));
        }
        // A step without logit rows (a prefill chunk that is not a prompt's last) still writes
        // its K/V: only an empty step has nothing to do.
        if step.n_tokens() == 0 {
            return Ok(Vec::new());
        }
        let st = step.upload(&self.device)?;
        let n = step.n_tokens();
        let mut x = self.tok_embd.index_select(&st.tokens, 0)?;
        if cfg.arch == Arch::Gemma3 {
            // llama.cpp `ggml_scale` by sqrt(hidden), in f32.
            x = (x * (cfg.hidden as f32).sqrt() as f64)?;
        }
        let half = cfg.rope_dim / 2;
        let rope_rows = |t: &RopeTable| -> Result<(Tensor, Tensor)> {
            Ok((
                t.cos
                    .index_select(&st.positions, 0)?
                    .reshape((n, 1, half))?,
                t.sin
                    .index_select(&st.positions, 0)?
                    .reshape((n, 1, half))?,
            ))
        };
        let global = rope_rows(&self.rope)?;
        let local = match &self.rope_local {
            Some(t) => Some(rope_rows(t)?),
            None => None,
        };
        // Masks per distinct window (None: causal only), built once per step.
        let mut masks: Vec<(Option<usize>, Vec<Tensor>)> = Vec::new();
        for b in &self.blocks {
            if !masks.iter().any(|(w, _)| *w == b.window) {
                masks.push((b.window, group_masks(&st, b.window)?));
            }
        }
        let bcast_slots = st
            .write_slots
            .unsqueeze(1)?
            .broadcast_as((n, cfg.kv_dim()))?
            .contiguous()?;
        for (l, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, cfg.rms_eps)?;
            let mut q = b.wq.forward(&h)?;
            let mut k = b.wk.forward(&h)?;
            let mut v = b.wv.forward(&h)?;
            if let Some([bq, bk, bv]) = &b.bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            // q: (n, n_head, 1, head_dim); k: (n, n_kv_head, 1, head_dim)
            let mut q = q.reshape((n, cfg.n_head, 1, cfg.head_dim))?;
            let mut k = k.reshape((n, cfg.n_kv_head, 1, cfg.head_dim))?;
            if let Some([qn, kn]) = &b.qk_norm {
                q = candle_nn::ops::rms_norm(&q, qn, cfg.rms_eps)?;
                k = candle_nn::ops::rms_norm(&k, kn, cfg.rms_eps)?;
            }
            let (cos, sin) = match (&local, b.window) {
                (Some(lr), Some(_)) => lr,
                _ => &global,
            };
            let q = self.apply_rope(&q, cos, sin)?;
            let k = self.apply_rope(&k, cos, sin)?;
            let [kc, vc] = &kv.layers[l];
            kc.scatter_set(&bcast_slots, &k.reshape((n, cfg.kv_dim()))?, 0)?;
            vc.scatter_set(&bcast_slots, &v.contiguous()?, 0)?;
            let q = q.reshape((n, cfg.n_head * cfg.head_dim))?;
            let mask = &masks
                .iter()
                .find(|(w, _)| *w == b.window)
                .expect("a mask was built for every layer's window")
                .1;
            let attn = self.attention(&st, &q, kc, vc, mask)?;
            let mut o = b.wo.forward(&attn)?;
            if let Some([post_attn, _]) = &b.post_norms {
                o = candle_nn::ops::rms_norm(&o, post_attn, cfg.rms_eps)?;
            }
            x = (x + o)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, cfg.rms_eps)?;
            let g = b.w_gate.forward(&h)?;
            let u = b.w_up.forward(&h)?;
            let act = if cfg.arch == Arch::Gemma3 {
                // GeGLU with GELU-tanh (HF `gelu_pytorch_tanh`).
                (g.gelu()? * u)?
            } else {
                (g.silu()? * u)?
            };
            let mut d = b.w_down.forward(&act)?;
            if let Some([_, post_ffn]) = &b.post_norms {
                d = candle_nn::ops::rms_norm(&d, post_ffn, cfg.rms_eps)?;
            }
            x = (x + d)?;
        }
        if step.n_logits() == 0 {
            return Ok(Vec::new());
        }
        let rows = x.index_select(&st.logit_rows, 0)?;
        let rows = candle_nn::ops::rms_norm(&rows, &self.norm, cfg.rms_eps)?;
        let logits = self.output.forward(&rows)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// RoPE on x (n, heads, 1, head_dim) with per-token cos/sin (n, 1, rope_dim/2); only the
    /// first rope_dim dimensions of each head rotate.
    fn apply_rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let x = x.contiguous()?;
        let rot = |t: &Tensor| match cfg.rope_style {
            RopeStyle::Adjacent => candle_nn::rotary_emb::rope_i(t, cos, sin),
            RopeStyle::Halves => candle_nn::rotary_emb::rope(t, cos, sin),
        };
        if cfg.rope_dim == cfg.head_dim {
            return Ok(rot(&x)?);
        }
        let head = x.narrow(D::Minus1, 0, cfg.rope_dim)?.contiguous()?;
        let tail = x.narrow(D::Minus1, cfg.rope_dim, cfg.head_dim - cfg.rope_dim)?;
        Ok(Tensor::cat(&[&rot(&head)?, &tail], D::Minus1)?)
    }

    /// Attention of q (n, n_head * head_dim) over each token's own sequence in the K/V cache
    /// (kc, vc: (n_slots, kv_dim)), GQA by head groups; returns (n, n_head * head_dim).
    fn attention(
        &self,
        st: &StepTensors,
        q: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        masks: &[Tensor],
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (nkv, hd) = (cfg.n_kv_head, cfg.head_dim);
        let grp = cfg.n_head / nkv;
        let mut outs = Vec::with_capacity(st.groups.len());
        for (g, mask) in st.groups.iter().zip(masks) {
            let (s, qn, l) = (g.n_seqs, g.q, g.l);
            // (s, q, n_kv, grp, hd) -> (s, n_kv, grp * q, hd): query heads of one KV head together.
            let qg = q
                .index_select(&g.q_index, 0)?
                .reshape((s, qn, nkv, grp, hd))?
                .permute((0, 2, 3, 1, 4))?
                .reshape((s, nkv, grp * qn, hd))?
                .contiguous()?;
            // (s, l, n_kv, hd) -> (s, n_kv, l, hd)
            let gather = |c: &Tensor| -> Result<Tensor> {
                Ok(c.index_select(&g.kv_slot, 0)?
                    .reshape((s, l, nkv, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (kg, vg) = (gather(kc)?, gather(vc)?);
            let scores = (qg.matmul(&kg.t()?)? * cfg.attn_scale as f64)?;
            let scores = scores.reshape((s, nkv, grp, qn, l))?.broadcast_add(mask)?;
            let p = candle_nn::ops::softmax_last_dim(&scores.reshape((s, nkv, grp * qn, l))?)?;
            // (s, n_kv, grp * q, hd) -> (s, q, n_kv, grp, hd) -> (s * q, n_head * hd)
            let o = p
                .matmul(&vg)?
                .reshape((s, nkv, grp, qn, hd))?
                .permute((0, 3, 1, 2, 4))?
                .reshape((s * qn, cfg.n_head * hd))?;
            outs.push(o);
        }
        let all = Tensor::cat(&outs, 0)?;
        Ok(all.index_select(&st.out_rows, 0)?)
    }
}

/// Additive masks (s, 1, 1, q, l) per group: 0 where key position ≤ query position (and within
/// the window when there is one), -inf elsewhere (the future, padding, slid out of the window).
fn group_masks(st: &StepTensors, window: Option<usize>) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(st.groups.len());
    for g in &st.groups {
        let future = g.kv_pos.broadcast_gt(&g.q_pos)?;
        let hidden = match window {
            // A key is out of the window when q_pos - k_pos >= window.
            Some(w) => {
                let old = g.kv_pos.broadcast_le(&(&g.q_pos - w as f64)?)?;
                future.maximum(&old)?
            }
            None => future,
        };
        let zeros = Tensor::zeros(hidden.shape(), DType::F32, hidden.device())?;
        let ninf = Tensor::full(f32::NEG_INFINITY, hidden.shape(), hidden.device())?;
        let m = hidden.where_cond(&ninf, &zeros)?;
        out.push(m.reshape((g.n_seqs, 1, 1, g.q, g.l))?);
    }
    Ok(out)
}

/// cos/sin (max_positions, rope_dim / 2), angles accumulated in f32 as llama.cpp's
/// `ggml_rope_cache_init` does (θ *= base^(-2/rope_dim) per pair), so both engines round alike.
fn rope_table(cfg: &Config, spec: &RopeSpec, device: &Device) -> Result<RopeTable> {
    let half = cfg.rope_dim / 2;
    let theta_scale = spec.base.powf(-2.0 / cfg.rope_dim as f32);
    let linear = 1.0 / spec.linear_factor;
    let n = cfg.max_positions;
    let mut cos = vec![0f32; n * half];
    let mut sin = vec![0f32; n * half];
    for p in 0..n {
        let mut theta = p as f32;
        for i in 0..half {
            let ff = spec.factors.get(i).copied().unwrap_or(1.0);
            let angle = linear * (theta / ff);
            cos[p * half + i] = angle.cos();
            sin[p * half + i] = angle.sin();
            theta *= theta_scale;
        }
    }
    Ok(RopeTable {
        cos: Tensor::from_vec(cos, (n, half), device)?,
        sin: Tensor::from_vec(sin, (n, half), device)?,
    })
}

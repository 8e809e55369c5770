//! Random-weight models of real dimensions for `ares bench --synthetic ARCH:SIZE:QUANT`, so
//! throughput can be measured where no model file can be brought (a GPU machine without network).
//! The model is written as a GGUF file (into a directory the caller owns) and then loaded like any
//! other, so both `--device cpu` and the candle devices run it. Shapes are those of the published
//! configs (HF `config.json`); weights are uniform random, scaled so activations stay finite; the
//! vocabulary is placeholder pieces (`t0`, `t1`, ...) since benches feed token ids.
//!
//! A matrix whose rows do not divide into the format's blocks (K-quants need 256) is stored as
//! Q8_0, as llama.cpp's quantizer falls back.

use crate::error::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::str::FromStr;

/// Dimensions of one architecture at one size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub tied: bool,
}

/// (arch, size, shape) of every synthetic model ares can build.
pub const SHAPES: &[(&str, &str, Shape)] = &[
    (
        "llama",
        "135m",
        shape(30, 576, 9, 3, 64, 1536, 49152, 100_000.0, true),
    ),
    (
        "llama",
        "1b",
        shape(16, 2048, 32, 8, 64, 8192, 128_256, 500_000.0, true),
    ),
    (
        "llama",
        "8b",
        shape(32, 4096, 32, 8, 128, 14336, 128_256, 500_000.0, false),
    ),
    (
        "qwen2",
        "0.5b",
        shape(24, 896, 14, 2, 64, 4864, 151_936, 1e6, true),
    ),
    (
        "qwen2",
        "1.5b",
        shape(28, 1536, 12, 2, 128, 8960, 151_936, 1e6, true),
    ),
    (
        "qwen2",
        "7b",
        shape(28, 3584, 28, 4, 128, 18944, 152_064, 1e6, false),
    ),
    (
        "qwen3",
        "0.6b",
        shape(28, 1024, 16, 8, 128, 3072, 151_936, 1e6, true),
    ),
    (
        "qwen3",
        "8b",
        shape(36, 4096, 32, 8, 128, 12288, 151_936, 1e6, false),
    ),
    (
        "gemma3",
        "270m",
        shape(18, 640, 4, 1, 256, 2048, 262_144, 1e6, true),
    ),
    (
        "gemma3",
        "1b",
        shape(26, 1152, 4, 1, 256, 6912, 262_144, 1e6, true),
    ),
    // A small model for tests and smoke runs.
    (
        "llama",
        "tiny",
        shape(2, 256, 4, 2, 64, 512, 512, 10_000.0, true),
    ),
];

#[allow(clippy::too_many_arguments)]
const fn shape(
    n_layer: usize,
    hidden: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    rope_base: f32,
    tied: bool,
) -> Shape {
    Shape {
        n_layer,
        hidden,
        n_head,
        n_kv_head,
        head_dim,
        ffn,
        vocab,
        rope_base,
        tied,
    }
}

/// `ARCH:SIZE:QUANT`, e.g. `qwen2:1.5b:q4_k`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    pub arch: String,
    pub size: String,
    pub quant: GgmlDType,
    pub shape: Shape,
}

impl FromStr for SyntheticSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let known = || {
            SHAPES
                .iter()
                .map(|(a, z, _)| format!("{a}:{z}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [arch, size, quant] = parts[..] else {
            return Err(format!("synthetic model `{s}`: expected ARCH:SIZE:QUANT"));
        };
        let shape = SHAPES
            .iter()
            .find(|(a, z, _)| *a == arch && z.eq_ignore_ascii_case(size))
            .map(|(_, _, sh)| *sh)
            .ok_or_else(|| {
                format!(
                    "synthetic model `{s}`: unknown ARCH:SIZE (known: {})",
                    known()
                )
            })?;
        let quant = match quant.to_ascii_lowercase().as_str() {
            "f16" => GgmlDType::F16,
            "q4_0" => GgmlDType::Q4_0,
            "q4_1" => GgmlDType::Q4_1,
            "q5_0" => GgmlDType::Q5_0,
            "q8_0" => GgmlDType::Q8_0,
            "q4_k" => GgmlDType::Q4K,
            "q6_k" => GgmlDType::Q6K,
            other => {
                return Err(format!(
                    "synthetic model `{s}`: unknown format `{other}` (f16, q4_0, q4_1, q5_0, q8_0, q4_k, q6_k)"
                ))
            }
        };
        Ok(SyntheticSpec {
            arch: arch.to_string(),
            size: size.to_ascii_lowercase(),
            quant,
            shape,
        })
    }
}

impl std::fmt::Display for SyntheticSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{:?}", self.arch, self.size, self.quant)
    }
}

/// Write the model of `spec` with weights from `seed` to `path` (GGUF). Holds every quantized
/// tensor in memory until written (about the file's size).
pub fn write_gguf(spec: &SyntheticSpec, path: &Path, seed: u64) -> Result<()> {
    let sh = &spec.shape;
    let a = spec.arch.as_str();
    let (h, qd, kvd) = (
        sh.hidden,
        sh.n_head * sh.head_dim,
        sh.n_kv_head * sh.head_dim,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let err = |e: candle_core::Error| Error::Config(format!("synthetic model {spec}: {e}"));
    let mat = |name: String, n: usize, k: usize, ty: GgmlDType, rng: &mut rand::rngs::StdRng| {
        let scale = 1.7 / (k as f32).sqrt();
        let data: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-scale..scale)).collect();
        let t = Tensor::from_vec(data, (n, k), &Device::Cpu).map_err(err)?;
        let ty = if k.is_multiple_of(ty.block_size()) {
            ty
        } else {
            GgmlDType::Q8_0
        };
        let q = QTensor::quantize(&t, ty).map_err(err)?;
        Ok::<_, Error>((name, q))
    };
    let vector = |name: String, len: usize, lo: f32, hi: f32, rng: &mut rand::rngs::StdRng| {
        let d: Vec<f32> = (0..len).map(|_| rng.gen_range(lo..hi)).collect();
        let t = Tensor::from_vec(d, len, &Device::Cpu).map_err(err)?;
        Ok::<_, Error>((name, QTensor::quantize(&t, GgmlDType::F32).map_err(err)?))
    };
    let ty = spec.quant;
    tensors.push(mat("token_embd.weight".into(), sh.vocab, h, ty, &mut rng)?);
    for l in 0..sh.n_layer {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        let r = &mut rng;
        tensors.push(mat(p("attn_q"), qd, h, ty, r)?);
        tensors.push(mat(p("attn_k"), kvd, h, ty, r)?);
        tensors.push(mat(p("attn_v"), kvd, h, ty, r)?);
        tensors.push(mat(p("attn_output"), h, qd, ty, r)?);
        tensors.push(mat(p("ffn_gate"), sh.ffn, h, ty, r)?);
        tensors.push(mat(p("ffn_up"), sh.ffn, h, ty, r)?);
        tensors.push(mat(p("ffn_down"), h, sh.ffn, ty, r)?);
        tensors.push(vector(p("attn_norm"), h, 0.8, 1.2, r)?);
        tensors.push(vector(p("ffn_norm"), h, 0.8, 1.2, r)?);
        if a == "qwen2" {
            for (n, len) in [("attn_q", qd), ("attn_k", kvd), ("attn_v", kvd)] {
                tensors.push(vector(format!("blk.{l}.{n}.bias"), len, -0.5, 0.5, r)?);
            }
        }
        if a == "qwen3" || a == "gemma3" {
            tensors.push(vector(p("attn_q_norm"), sh.head_dim, 0.8, 1.2, r)?);
            tensors.push(vector(p("attn_k_norm"), sh.head_dim, 0.8, 1.2, r)?);
        }
        if a == "gemma3" {
            tensors.push(vector(p("post_attention_norm"), h, 0.8, 1.2, r)?);
            tensors.push(vector(p("post_ffw_norm"), h, 0.8, 1.2, r)?);
        }
    }
    tensors.push(vector("output_norm.weight".into(), h, 0.8, 1.2, &mut rng)?);
    if !sh.tied {
        tensors.push(mat("output.weight".into(), sh.vocab, h, ty, &mut rng)?);
    }

    use gguf_file::Value as V;
    let u = |x: usize| V::U32(x as u32);
    let tokens: Vec<V> = (0..sh.vocab).map(|i| V::String(format!("t{i}"))).collect();
    let mut meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(a.into())),
        (
            "general.name".into(),
            V::String(format!("synthetic {spec}")),
        ),
        (format!("{a}.block_count"), u(sh.n_layer)),
        (format!("{a}.context_length"), u(32_768)),
        (format!("{a}.embedding_length"), u(h)),
        (format!("{a}.feed_forward_length"), u(sh.ffn)),
        (format!("{a}.attention.head_count"), u(sh.n_head)),
        (format!("{a}.attention.head_count_kv"), u(sh.n_kv_head)),
        (format!("{a}.attention.key_length"), u(sh.head_dim)),
        (format!("{a}.attention.value_length"), u(sh.head_dim)),
        (format!("{a}.rope.freq_base"), V::F32(sh.rope_base)),
        (format!("{a}.rope.dimension_count"), u(sh.head_dim)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            V::F32(1e-6),
        ),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.merges".into(), V::Array(vec![])),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(0)),
    ];
    if a == "gemma3" {
        meta.push((format!("{a}.attention.sliding_window"), u(512)));
        meta.push(("tokenizer.ggml.bos_token_id".into(), V::U32(2)));
    }
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tmp = path.with_extension("gguf.partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_name_what_is_known() {
        let s: SyntheticSpec = "qwen2:1.5B:q4_k".parse().expect("known");
        assert_eq!((s.shape.hidden, s.quant), (1536, GgmlDType::Q4K));
        let e = "qwen2:3b:q4_k".parse::<SyntheticSpec>().unwrap_err();
        assert!(
            e.contains("unknown ARCH:SIZE") && e.contains("qwen2:7b"),
            "{e}"
        );
        assert!("llama:1b".parse::<SyntheticSpec>().is_err());
        assert!("llama:1b:q3_k"
            .parse::<SyntheticSpec>()
            .unwrap_err()
            .contains("q3_k"));
    }

    /// The tiny synthetic model loads and runs one forward on the hand-written engine (its
    /// 256-wide rows take Q4_K; nothing falls back).
    #[test]
    fn tiny_synthetic_model_loads_and_runs() -> Result<()> {
        let spec: SyntheticSpec = "llama:tiny:q4_k".parse().expect("known");
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tempdir"), e))?;
        let path = dir.path().join("m.gguf");
        write_gguf(&spec, &path, 1)?;
        let m = crate::model::load(&path)?;
        assert_eq!(m.model.config().hidden, 256);
        let mut kv = crate::engine::kv_cache::KvCache::for_model(m.model.as_ref(), 16, 2)?;
        let mut table = Vec::new();
        assert!(kv.grow(&mut table, 4));
        let mut b = crate::model::batch::Batch::default();
        b.push_seq(&[1, 2, 3, 4], 0, table, true);
        let logits = m.model.forward(&b, kv.values_for_forward())?;
        assert_eq!(logits.len(), 512);
        assert!(logits.iter().all(|v| v.is_finite()));
        Ok(())
    }
}

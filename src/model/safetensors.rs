//! Hugging Face checkpoints: `config.json`, `tokenizer.json`, `tokenizer_config.json` (chat
//! template, BOS) and `model.safetensors` or shards listed in `model.safetensors.index.json`,
//! memory-mapped. The checkpoint is presented as a [`GgufFile`]: config keys become the GGUF
//! metadata keys llama.cpp's `convert_hf_to_gguf.py` writes, tensor names become GGUF names, and the
//! converter's value changes are made at load (llama q/k rows permuted for its adjacent-pair RoPE,
//! Gemma norms stored as 1 + w, llama 3 rope factors as `rope_freqs.weight`), so every
//! architecture file loads both formats through one description and computes the same thing.
//!
//! Storage: f32 and f16 matrices are used in place from the mapping; bf16 ones are converted to f16
//! (exact for |x| within f16's range; to f32 when a value is outside it); 1-D tensors (norms,
//! biases) become f32. `--quantize q8_0|q4_k` quantizes every matrix at load (q4_k falls back to
//! q8_0 for rows that are not a multiple of 256, as llama.cpp falls back from k-quants).

use crate::error::{Error, Result};
use crate::model::gguf::{Backing, GgufFile, TensorEntry};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Quantization applied to every matrix at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Quantize {
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k")]
    Q4K,
}

/// Whether `path` names a safetensors checkpoint (its directory, `config.json` or a
/// `.safetensors` file) rather than a GGUF file.
pub fn is_checkpoint(path: &Path) -> bool {
    path.is_dir()
        || path.file_name().is_some_and(|n| n == "config.json")
        || path.extension().is_some_and(|e| e == "safetensors")
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidSafetensors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

/// A source tensor in a mapped shard.
struct Source {
    dtype: Dtype,
    shape: Vec<usize>,
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl Source {
    fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    fn to_f32(&self) -> Vec<f32> {
        let b = self.bytes();
        match self.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

/// Architecture name as GGUF spells it, from `architectures` / `model_type`.
fn arch_of(cfg: &Json) -> Option<&'static str> {
    let names: Vec<&str> = cfg["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let model_type = cfg["model_type"].as_str().unwrap_or("");
    let any = |p: &str| names.iter().any(|n| n.starts_with(p)) || model_type == p.to_lowercase();
    Some(if any("Llama") || any("Mistral") {
        "llama"
    } else if any("Qwen3") {
        "qwen3"
    } else if any("Qwen2") {
        "qwen2"
    } else if any("Gemma3") || model_type == "gemma3_text" {
        "gemma3"
    } else {
        return None;
    })
}

/// HF tensor name -> GGUF tensor name (None: not part of the text model, e.g. a vision tower).
fn gguf_name(arch: &str, hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("language_model.").unwrap_or(hf);
    let hf = hf
        .strip_prefix("model.language_model.")
        .map_or(hf.to_string(), |s| format!("model.{s}"));
    match hf.as_str() {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let to = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" if arch == "gemma3" => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{to}.{kind}"))
}

/// GGUF metadata for `arch` from config.json (the keys `convert_hf_to_gguf.py` writes).
fn metadata(path: &Path, arch: &str, cfg: &Json) -> Result<HashMap<String, Value>> {
    let need = |k: &str| -> Result<u32> {
        cfg[k].as_u64().map(|v| v as u32).ok_or_else(|| {
            invalid(
                path,
                format!("config.json: `{k}` missing or not an integer"),
            )
        })
    };
    let mut m = HashMap::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    let key = |k: &str| format!("{arch}.{k}");
    put("general.architecture", Value::String(arch.into()));
    let n_head = need("num_attention_heads")?;
    put(&key("block_count"), Value::U32(need("num_hidden_layers")?));
    put(&key("embedding_length"), Value::U32(need("hidden_size")?));
    put(
        &key("feed_forward_length"),
        Value::U32(need("intermediate_size")?),
    );
    put(&key("attention.head_count"), Value::U32(n_head));
    let n_kv = cfg["num_key_value_heads"]
        .as_u64()
        .map_or(n_head, |v| v as u32);
    put(&key("attention.head_count_kv"), Value::U32(n_kv));
    if let Some(hd) = cfg["head_dim"].as_u64() {
        put(&key("attention.key_length"), Value::U32(hd as u32));
        put(&key("attention.value_length"), Value::U32(hd as u32));
    }
    let f = |k: &str| cfg[k].as_f64().map(|v| v as f32);
    put(
        &key("attention.layer_norm_rms_epsilon"),
        Value::F32(f("rms_norm_eps").unwrap_or(1e-6)),
    );
    put(
        &key("rope.freq_base"),
        Value::F32(f("rope_theta").unwrap_or(10_000.0)),
    );
    if let Some(c) = cfg["max_position_embeddings"].as_u64() {
        put(&key("context_length"), Value::U32(c as u32));
    }
    let scaling = &cfg["rope_scaling"];
    let rope_type = scaling["rope_type"].as_str().or(scaling["type"].as_str());
    if rope_type == Some("linear") {
        put(&key("rope.scaling.type"), Value::String("linear".into()));
        put(
            &key("rope.scaling.factor"),
            Value::F32(scaling["factor"].as_f64().unwrap_or(1.0) as f32),
        );
    }
    if arch == "gemma3" {
        put(
            &key("attention.sliding_window"),
            Value::U32(cfg["sliding_window"].as_u64().unwrap_or(512) as u32),
        );
        // The period of local:global layers: `sliding_window_pattern` (older configs,
        // `_sliding_window_pattern` in newer ones) or the first full layer of `layer_types`.
        let from_types = cfg["layer_types"].as_array().and_then(|ts| {
            let first = ts.iter().position(|t| t == "full_attention")? + 1;
            let periodic = ts
                .iter()
                .enumerate()
                .all(|(i, t)| (t == "full_attention") == ((i + 1) % first == 0));
            periodic.then_some(first as u64)
        });
        if cfg["layer_types"].is_array() && from_types.is_none() {
            return Err(invalid(
                path,
                "config.json: layer_types is not a repeating local/global pattern",
            ));
        }
        let pattern = from_types
            .or(cfg["sliding_window_pattern"].as_u64())
            .or(cfg["_sliding_window_pattern"].as_u64());
        if let Some(p) = pattern {
            put(
                &key("attention.sliding_window_pattern"),
                Value::U32(p as u32),
            );
        }
        if let Some(b) = f("rope_local_base_freq") {
            put(&key("rope.freq_base_swa"), Value::F32(b));
        }
        if let Some(s) = cfg["query_pre_attn_scalar"].as_u64() {
            put(
                &key("attention.query_pre_attn_scalar"),
                Value::U32(s as u32),
            );
        }
    }
    Ok(m)
}

/// Llama 3 `rope_scaling` (rope_type llama3) as per-pair divisors, as the converter computes them
/// (`LlamaModel.generate_extra_tensors`).
fn llama3_rope_factors(cfg: &Json, head_dim: usize) -> Option<Vec<f32>> {
    let s = &cfg["rope_scaling"];
    if s["rope_type"].as_str() != Some("llama3") {
        return None;
    }
    let base = cfg["rope_theta"].as_f64().unwrap_or(10_000.0);
    let factor = s["factor"].as_f64().unwrap_or(8.0);
    let low = s["low_freq_factor"].as_f64().unwrap_or(1.0);
    let high = s["high_freq_factor"].as_f64().unwrap_or(4.0);
    let old = s["original_max_position_embeddings"]
        .as_f64()
        .unwrap_or(8192.0);
    let (low_wl, high_wl) = (old / low, old / high);
    Some(
        (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / base.powf((2 * i) as f64 / head_dim as f64);
                let wl = 2.0 * std::f64::consts::PI / freq;
                (if wl < high_wl {
                    1.0
                } else if wl > low_wl {
                    factor
                } else {
                    let smooth = (old / wl - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }) as f32
            })
            .collect(),
    )
}

/// The converter's row permutation of llama q/k weights (HF halves -> GGUF adjacent pairs):
/// GGUF row h·d + 2i + j is HF row h·d + j·d/2 + i.
fn permute_rows(bytes: &[u8], n_rows: usize, n_heads: usize) -> Vec<u8> {
    let row = bytes.len() / n_rows;
    let d = n_rows / n_heads;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let dst = h * d + 2 * i + j;
                let src = h * d + j * d / 2 + i;
                out[dst * row..(dst + 1) * row].copy_from_slice(&bytes[src * row..(src + 1) * row]);
            }
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn owned(dtype: GgmlDType, dims: Vec<usize>, bytes: Vec<u8>) -> TensorEntry {
    let len = bytes.len();
    let data: Backing = Arc::new(bytes);
    TensorEntry {
        dtype,
        dims,
        data,
        start: 0,
        len,
    }
}

/// Open a checkpoint directory (or its `config.json` / a `.safetensors` file in it).
pub fn open(path: &Path, quantize: Option<Quantize>) -> Result<GgufFile> {
    let dir: PathBuf = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(Error::ModelNotFound { path: config_path });
    }
    let mut cfg = read_json(&config_path)?;
    // Multimodal Gemma 3 nests the text model's config.
    if cfg.get("text_config").is_some_and(|t| t.is_object()) {
        let mut text = cfg["text_config"].clone();
        if text.get("architectures").is_none() {
            text["architectures"] = cfg["architectures"].clone();
        }
        cfg = text;
    }
    let arch = arch_of(&cfg).ok_or_else(|| Error::UnsupportedArchitecture {
        path: config_path.clone(),
        arch: format!("{} / {}", cfg["architectures"], cfg["model_type"]),
        supported: "Llama/Mistral, Qwen2, Qwen3, Gemma3 (*ForCausalLM)".into(),
    })?;
    let mut meta = metadata(&config_path, arch, &cfg)?;

    // Shards: the index's files, else model.safetensors, else every *.safetensors here.
    let index = dir.join("model.safetensors.index.json");
    let shards: Vec<PathBuf> = if index.exists() {
        let ix = read_json(&index)?;
        let map = ix["weight_map"]
            .as_object()
            .ok_or_else(|| invalid(&index, "no weight_map object"))?;
        let mut files: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else if dir.join("model.safetensors").exists() {
        vec![dir.join("model.safetensors")]
    } else {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        v.sort();
        v
    };
    if shards.is_empty() {
        return Err(invalid(&dir, "no .safetensors files"));
    }
    let mut maps = Vec::new();
    let mut sources: HashMap<String, Source> = HashMap::new();
    for shard in &shards {
        let file = std::fs::File::open(shard).map_err(|e| Error::io(shard, e))?;
        // SAFETY: read-only mapping; like every mmap loader we rely on the checkpoint not being
        // modified while ares runs.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(shard, e))?);
        let (header, st_meta) =
            SafeTensors::read_metadata(&map).map_err(|e| invalid(shard, e.to_string()))?;
        let base = 8 + header;
        for (name, info) in st_meta.tensors() {
            let Some(gname) = gguf_name(arch, &name) else {
                continue;
            };
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(invalid(
                    shard,
                    format!(
                        "tensor {name} has dtype {:?} (supported: F32, F16, BF16)",
                        info.dtype
                    ),
                ));
            }
            let (s, e) = info.data_offsets;
            if base + e > map.len() {
                return Err(invalid(
                    shard,
                    format!("tensor {name} lies past the end of the file (truncated?)"),
                ));
            }
            sources.insert(
                gname,
                Source {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    map: map.clone(),
                    start: base + s,
                    len: e - s,
                },
            );
        }
        maps.push(map);
    }
    if !sources.contains_key("token_embd.weight") {
        return Err(Error::MissingTensor {
            path: dir.clone(),
            name: "model.embed_tokens.weight".into(),
        });
    }
    let n_head = meta[&format!("{arch}.attention.head_count")]
        .to_u32()
        .unwrap_or(1) as usize;
    let n_kv = meta[&format!("{arch}.attention.head_count_kv")]
        .to_u32()
        .unwrap_or(1) as usize;
    let hidden = meta[&format!("{arch}.embedding_length")]
        .to_u32()
        .unwrap_or(0) as usize;
    let head_dim = cfg["head_dim"]
        .as_u64()
        .map_or(hidden / n_head.max(1), |v| v as usize);

    let entries: Vec<(String, TensorEntry)> = sources
        .into_par_iter()
        .map(|(name, src)| -> Result<(String, TensorEntry)> {
            let entry = convert(arch, &name, &src, quantize, n_head, n_kv, &dir)?;
            Ok((name, entry))
        })
        .collect::<Result<_>>()?;
    let mut tensors: HashMap<String, TensorEntry> = entries.into_iter().collect();
    if arch == "llama" {
        if let Some(factors) = llama3_rope_factors(&cfg, head_dim) {
            let n = factors.len();
            tensors.insert(
                "rope_freqs.weight".into(),
                owned(GgmlDType::F32, vec![n], f32_bytes(&factors)),
            );
        }
    }
    tokenizer_metadata(&dir, &cfg, &mut meta)?;
    Ok(GgufFile::from_parts(config_path, meta, tensors, maps))
}

/// One tensor in the form the architectures read (see the module docs).
fn convert(
    arch: &str,
    name: &str,
    src: &Source,
    quantize: Option<Quantize>,
    n_head: usize,
    n_kv: usize,
    dir: &Path,
) -> Result<TensorEntry> {
    let dims = src.shape.clone();
    if dims.len() == 1 {
        let mut v = src.to_f32();
        // HF Gemma norms compute x·(1 + w); GGUF stores 1 + w (converter `norm_shift`).
        if arch == "gemma3" && name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        return Ok(owned(GgmlDType::F32, dims, f32_bytes(&v)));
    }
    if dims.len() != 2 {
        return Err(Error::BadTensorShape {
            path: dir.to_path_buf(),
            name: name.to_string(),
            actual: dims,
            expected: vec![],
        });
    }
    let (n, k) = (dims[0], dims[1]);
    let permute =
        arch == "llama" && (name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight"));
    let heads = if name.ends_with("attn_q.weight") {
        n_head
    } else {
        n_kv
    };
    if let Some(q) = quantize {
        let ty = match q {
            Quantize::Q4K if k % 256 == 0 => Some(GgmlDType::Q4K),
            _ if k % 32 == 0 => Some(GgmlDType::Q8_0),
            _ => None,
        };
        if let Some(ty) = ty {
            let mut v = src.to_f32();
            if permute {
                v = permute_f32(&v, n, heads);
            }
            let t = candle_core::Tensor::from_vec(v, (n, k), &candle_core::Device::Cpu)
                .and_then(|t| QTensor::quantize(&t, ty))
                .and_then(|q| q.data().map(|d| d.into_owned()))
                .map_err(|e| invalid(dir, format!("quantizing {name}: {e}")))?;
            return Ok(owned(ty, dims, t));
        }
    }
    match src.dtype {
        Dtype::F32 | Dtype::F16 => {
            let ty = if src.dtype == Dtype::F32 {
                GgmlDType::F32
            } else {
                GgmlDType::F16
            };
            if permute {
                return Ok(owned(ty, dims, permute_rows(src.bytes(), n, heads)));
            }
            Ok(TensorEntry {
                dtype: ty,
                dims,
                data: src.map.clone(),
                start: src.start,
                len: src.len,
            })
        }
        _ => {
            let v = src.to_f32();
            let fits = v.iter().all(|x| x.abs() <= 65504.0);
            let (ty, bytes) = if fits {
                let b: Vec<u8> = v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect();
                (GgmlDType::F16, b)
            } else {
                (GgmlDType::F32, f32_bytes(&v))
            };
            let bytes = if permute {
                permute_rows(&bytes, n, heads)
            } else {
                bytes
            };
            Ok(owned(ty, dims, bytes))
        }
    }
}

fn permute_f32(v: &[f32], n: usize, heads: usize) -> Vec<f32> {
    let b = permute_rows(&f32_bytes(v), n, heads);
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// BOS/EOS ids, whether prompts start with BOS, and the chat template, as GGUF tokenizer keys.
/// The vocabulary itself is `tokenizer.json`, which the tokenizer loads from the same directory.
fn tokenizer_metadata(dir: &Path, cfg: &Json, meta: &mut HashMap<String, Value>) -> Result<()> {
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.exists() {
        read_json(&tc_path)?
    } else {
        Json::Null
    };
    if !dir.join("tokenizer.json").exists() {
        return Err(Error::Tokenizer(format!(
            "{}: tokenizer.json missing (needed for safetensors checkpoints)",
            dir.display()
        )));
    }
    let id = |v: &Json| v.as_u64().or_else(|| v.as_array()?.first()?.as_u64());
    if let Some(b) = id(&cfg["bos_token_id"]) {
        meta.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(b as u32));
    }
    if let Some(e) = id(&cfg["eos_token_id"]) {
        meta.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(e as u32));
    }
    if let Some(e) = cfg["eos_token_id"]
        .as_array()
        .and_then(|a| a.get(1)?.as_u64())
    {
        meta.insert("tokenizer.ggml.eot_token_id".into(), Value::U32(e as u32));
    }
    // add_bos_token when stated; else whether tokenizer.json's post-processor prepends a token
    // (Llama 3 states nothing and relies on its TemplateProcessing).
    let add_bos = match tc["add_bos_token"].as_bool() {
        Some(b) => b,
        None => {
            let tj = read_json(&dir.join("tokenizer.json"))?;
            let single = &tj["post_processor"]["single"];
            let pp = if single.is_array() {
                single
            } else {
                // A Sequence of processors: the first TemplateProcessing's.
                tj["post_processor"]["processors"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["single"].is_array()))
                    .map_or(&Json::Null, |p| &p["single"])
            };
            pp.as_array()
                .and_then(|a| a.first())
                .is_some_and(|first| first.get("SpecialToken").is_some())
        }
    };
    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos));
    let jinja = dir.join("chat_template.jinja");
    let template = if jinja.exists() {
        Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
    } else {
        match &tc["chat_template"] {
            Json::String(s) => Some(s.clone()),
            Json::Array(ts) => ts
                .iter()
                .find(|t| t["name"] == "default")
                .or(ts.first())
                .and_then(|t| t["template"].as_str().map(|s| s.to_string())),
            _ => None,
        }
    };
    if let Some(t) = template {
        meta.insert("tokenizer.chat_template".into(), Value::String(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_gguf_names() {
        let g = |a, n| gguf_name(a, n);
        assert_eq!(
            g("llama", "model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            g("qwen2", "model.layers.3.self_attn.q_proj.bias").as_deref(),
            Some("blk.3.attn_q.bias")
        );
        assert_eq!(
            g("llama", "model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            g(
                "gemma3",
                "language_model.model.layers.0.post_attention_layernorm.weight"
            )
            .as_deref(),
            Some("blk.0.post_attention_norm.weight")
        );
        assert_eq!(
            g("gemma3", "model.layers.1.pre_feedforward_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(
            g("gemma3", "vision_tower.encoder.layers.0.mlp.fc1.weight"),
            None
        );
    }

    #[test]
    fn permutation_pairs_halves_into_adjacent_rows() {
        // One head of 4 rows of 1 byte: HF rows [a0 a1 b0 b1] (halves) -> [a0 b0 a1 b1].
        assert_eq!(permute_rows(&[0, 1, 2, 3], 4, 1), vec![0, 2, 1, 3]);
        // Two heads, rows of 2 bytes.
        let src: Vec<u8> = (0..16).collect();
        let out = permute_rows(&src, 8, 2);
        assert_eq!(
            out,
            vec![0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
        );
    }

    /// A mapped f32 source of `v` (n, k).
    fn source(v: &[f32], n: usize, k: usize) -> (tempfile::NamedTempFile, Source) {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(&f32_bytes(v)).expect("write");
        // SAFETY: the test's own temp file, not modified while mapped.
        let map = Arc::new(unsafe { Mmap::map(f.as_file()) }.expect("map"));
        let src = Source {
            dtype: Dtype::F32,
            shape: vec![n, k],
            map,
            start: 0,
            len: v.len() * 4,
        };
        (f, src)
    }

    #[test]
    fn quantize_at_load_makes_q4_k_and_q8_0_blocks_that_dequantize_back() {
        let (n, k) = (3usize, 512usize);
        let v: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let (_f, src) = source(&v, n, k);
        let dir = Path::new(".");
        for (q, ty, wt, tol) in [
            (
                Quantize::Q4K,
                GgmlDType::Q4K,
                ares_kernels::WeightType::Q4_K,
                0.1,
            ),
            (
                Quantize::Q8_0,
                GgmlDType::Q8_0,
                ares_kernels::WeightType::Q8_0,
                0.01,
            ),
        ] {
            let e =
                convert("qwen2", "blk.0.ffn_up.weight", &src, Some(q), 1, 1, dir).expect("convert");
            assert_eq!(e.dtype, ty);
            let bytes = &(*e.data).as_ref()[e.start..e.start + e.len];
            let rb = wt.row_bytes(k);
            assert_eq!(bytes.len(), n * rb);
            let mut row = vec![0f32; k];
            for r in 0..n {
                ares_kernels::formats::dequantize_row(wt, &bytes[r * rb..(r + 1) * rb], &mut row);
                for (a, b) in row.iter().zip(&v[r * k..(r + 1) * k]) {
                    assert!((a - b).abs() <= tol, "{q:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn gemma3_local_global_pattern_comes_from_layer_types() {
        let base = serde_json::json!({"num_attention_heads": 4, "num_hidden_layers": 6,
            "hidden_size": 64, "intermediate_size": 128});
        let mut cfg = base.clone();
        cfg["layer_types"] = serde_json::json!([
            "sliding_attention",
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "sliding_attention",
            "full_attention"
        ]);
        let m = metadata(Path::new("c.json"), "gemma3", &cfg).expect("metadata");
        assert_eq!(
            m["gemma3.attention.sliding_window_pattern"].to_u32().ok(),
            Some(3)
        );
        cfg["layer_types"][4] = "full_attention".into();
        assert!(metadata(Path::new("c.json"), "gemma3", &cfg).is_err());
        let mut cfg = base;
        cfg["_sliding_window_pattern"] = 6.into();
        let m = metadata(Path::new("c.json"), "gemma3", &cfg).expect("metadata");
        assert_eq!(
            m["gemma3.attention.sliding_window_pattern"].to_u32().ok(),
            Some(6)
        );
    }

    #[test]
    fn llama3_factors_follow_the_converter() {
        let cfg: Json = serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let f = llama3_rope_factors(&cfg, 128).expect("llama3");
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0, "high frequencies unscaled");
        assert_eq!(f[63], 8.0, "low frequencies scaled by the factor");
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "monotone in between");
    }
}

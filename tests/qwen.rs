//! Qwen2 and Qwen3 on tiny seeded random models written as GGUF by the test (no small real weights
//! are at hand): our logits against candle-transformers' own `quantized_qwen2` / `quantized_qwen3`
//! forward at batch 1 (prefill, then decode steps), and the engine's batched path against its
//! one-sequence path. The llama file goes through the same harness against `quantized_llama`.

use crate::common::{tiny_model, OneSequence, TinySpec, TINY_VOCAB};
use crate::invariants::{batched_equals_alone, random_prompts};
use ares::model::load;
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, Tensor};
use std::path::Path;

/// candle's logits for `prompt` (last position) and then each of `cont` fed one at a time.
pub fn candle_logits(arch: &str, path: &Path, prompt: &[u32], cont: &[u32]) -> Vec<Vec<f32>> {
    use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
    let dev = Device::Cpu;
    let mut f = std::fs::File::open(path).expect("open");
    let ct = gguf_file::Content::read(&mut f).expect("gguf");
    enum M {
        L(quantized_llama::ModelWeights),
        Q2(quantized_qwen2::ModelWeights),
        Q3(quantized_qwen3::ModelWeights),
    }
    let mut m = match arch {
        "llama" => M::L(quantized_llama::ModelWeights::from_gguf(ct, &mut f, &dev).expect("llama")),
        "qwen2" => {
            M::Q2(quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, &dev).expect("qwen2"))
        }
        _ => M::Q3(quantized_qwen3::ModelWeights::from_gguf(ct, &mut f, &dev).expect("qwen3")),
    };
    let mut run = |ids: &[u32], pos: usize| -> Vec<f32> {
        let x = Tensor::new(ids, &dev).expect("t").unsqueeze(0).expect("b");
        let y = match &mut m {
            M::L(m) => m.forward(&x, pos),
            M::Q2(m) => m.forward(&x, pos),
            M::Q3(m) => m.forward(&x, pos),
        }
        .expect("candle forward");
        y.flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("f32")
    };
    let mut out = vec![run(prompt, 0)];
    for (i, &t) in cont.iter().enumerate() {
        out.push(run(&[t], prompt.len() + i));
    }
    out
}

/// Max |Δ| of two logit rows, and the spread of the reference row (max - min) for scale.
fn max_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    let d = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let lo = b.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (d, hi - lo)
}

fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .expect("non-empty")
}

/// Prefill a 21-token prompt, then decode 6 greedy steps; every step's logits within `tol`
/// (absolute, on logits spanning several units) of candle's, and the same argmax.
fn matches_candle(spec: &TinySpec, seed: u64, tol: f32) {
    let (_d, path) = tiny_model(spec, seed);
    let m = load(&path).expect("tiny loads");
    let prompt = random_prompts(1, seed + 100, TINY_VOCAB)[0]
        .iter()
        .cycle()
        .take(21)
        .copied()
        .collect::<Vec<u32>>();
    let mut seq = OneSequence::new(&m, 64);
    let mut ours = vec![seq.feed(&m, &prompt).pop().expect("row")];
    let mut cont = Vec::new();
    for _ in 0..6 {
        let t = argmax(ours.last().expect("row"));
        cont.push(t);
        ours.push(seq.feed(&m, &[t]).pop().expect("row"));
    }
    let theirs = candle_logits(spec.arch, &path, &prompt, &cont);
    let mut worst = 0f32;
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let (d, spread) = max_diff(a, b);
        worst = worst.max(d);
        assert!(
            spread > 1.0,
            "step {step}: logits span only {spread} (degenerate model)"
        );
        assert!(
            d <= tol,
            "{} {:?} step {step}: max |Δlogit| {d} > {tol} (logits span {spread})",
            spec.arch,
            spec.matrix_type
        );
        assert_eq!(argmax(a), argmax(b), "step {step}: argmax differs");
    }
    println!(
        "{} {:?}: max |Δlogit| vs candle over 7 steps {worst:.2e}",
        spec.arch, spec.matrix_type
    );
}

fn spec(arch: &'static str, matrix_type: GgmlDType) -> TinySpec {
    TinySpec {
        arch,
        matrix_type,
        embd_type: GgmlDType::Q8_0,
        // qwen3 decouples head_dim from hidden / n_head; qwen2 in candle derives it from them.
        head_dim: if arch == "qwen3" { 32 } else { 16 },
        untied_output: arch == "qwen2",
        ..TinySpec::default()
    }
}

// Tolerance: both engines compute in f32 and, for Q8_0 matrices, quantize activations to 8 bits
// per block of 32 the same way (ggml's scheme), so they differ only by summation order: measured
// max |Δlogit| 2e-6 on logits spanning several units; 1e-4 leaves room for other SIMD paths while
// a wrong bias, norm or rope shows as whole units.
const TOL: f32 = 1e-4;

#[test]
fn qwen2_f32_logits_match_candle() {
    matches_candle(&spec("qwen2", GgmlDType::F32), 11, TOL);
}

#[test]
fn qwen2_q8_0_logits_match_candle() {
    matches_candle(&spec("qwen2", GgmlDType::Q8_0), 12, TOL);
}

#[test]
fn qwen3_f32_logits_match_candle() {
    matches_candle(&spec("qwen3", GgmlDType::F32), 13, TOL);
}

#[test]
fn qwen3_q8_0_logits_match_candle() {
    matches_candle(&spec("qwen3", GgmlDType::Q8_0), 14, TOL);
}

#[test]
fn qwen2_batched_equals_alone() {
    let (_d, p) = tiny_model(&spec("qwen2", GgmlDType::Q8_0), 21);
    let m = load(&p).expect("tiny loads");
    batched_equals_alone(&m, &random_prompts(6, 22, TINY_VOCAB), 10);
}

#[test]
fn qwen3_batched_equals_alone() {
    let (_d, p) = tiny_model(&spec("qwen3", GgmlDType::Q8_0), 23);
    let m = load(&p).expect("tiny loads");
    batched_equals_alone(&m, &random_prompts(6, 24, TINY_VOCAB), 10);
}

#[test]
fn llama_f32_logits_match_candle() {
    matches_candle(&spec("llama", GgmlDType::F32), 15, TOL);
}

#[test]
fn llama_q8_0_logits_match_candle() {
    matches_candle(&spec("llama", GgmlDType::Q8_0), 16, TOL);
}

/// Mistral GGUFs name their architecture `mistral` and run through the llama file.
#[test]
fn mistral_batched_equals_alone() {
    let (_d, p) = tiny_model(&spec("mistral", GgmlDType::Q8_0), 25);
    let m = load(&p).expect("tiny loads");
    assert_eq!(m.model.config().arch, "mistral");
    batched_equals_alone(&m, &random_prompts(6, 26, TINY_VOCAB), 10);
}

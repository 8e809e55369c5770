//! Engine invariants, on a tiny seeded random model (fast, exact) and on the real default model:
//! batched == one by one, chunked prefill == one-shot prefill, prefix-shared == from scratch,
//! finished sequences' blocks are reused with nothing leaked.

use crate::common::{default_model, engine, tiny_model, TinySpec, TINY_VOCAB};
use ares::engine::{
    Completion, EngineConfig, EngineHandle, Generator, Prompt, Request, SamplingParams,
};
use ares::model::{load, LoadedModel};
use rand::{Rng, SeedableRng};

pub fn req(id: usize, prompt: Vec<u32>, max_tokens: usize) -> Request {
    Request {
        max_tokens,
        ignore_eos: true,
        logprobs: Some(8),
        sampling: SamplingParams::greedy(),
        ..Request::new(format!("r{id}"), Prompt::Tokens(prompt))
    }
}

pub fn ids(c: &Completion) -> Vec<u32> {
    c.tokens.iter().map(|t| t.id).collect()
}

/// Max |Δ| between the per-step top-8 log-probs of two completions of the same tokens.
pub fn max_logprob_diff(a: &Completion, b: &Completion) -> f32 {
    let mut m = 0f32;
    for (x, y) in a.tokens.iter().zip(&b.tokens) {
        for ((ia, la), (ib, lb)) in x.top.iter().zip(&y.top) {
            if ia != ib {
                return f32::INFINITY;
            }
            m = m.max((la - lb).abs());
        }
    }
    m
}

pub fn random_prompts(n: usize, seed: u64, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.gen_range(3..70);
            (0..len).map(|_| rng.gen_range(0..vocab as u32)).collect()
        })
        .collect()
}

pub fn batched_equals_alone(m: &LoadedModel, prompts: &[Vec<u32>], max_tokens: usize) {
    let together = engine(m, EngineConfig::default());
    let outs: Vec<Completion> = together
        .generate_many(
            prompts
                .iter()
                .enumerate()
                .map(|(i, p)| req(i, p.clone(), max_tokens))
                .collect(),
        )
        .into_iter()
        .map(|r| r.expect("ok"))
        .collect();
    assert!(
        together.stats().max_batch_seqs >= prompts.len(),
        "the prompts really ran in one batch"
    );
    for (i, p) in prompts.iter().enumerate() {
        let alone = engine(m, EngineConfig::default());
        let one = alone.generate(req(i, p.clone(), max_tokens)).expect("ok");
        assert_eq!(
            ids(&one),
            ids(&outs[i]),
            "prompt {i}: batched tokens differ from alone"
        );
        assert_eq!(
            max_logprob_diff(&one, &outs[i]),
            0.0,
            "prompt {i}: batched log-probs differ from alone"
        );
    }
}

pub fn chunked_equals_one_shot(m: &LoadedModel, prompt: Vec<u32>) {
    let whole = engine(m, EngineConfig::default())
        .generate(req(0, prompt.clone(), 4))
        .expect("ok");
    let chunked_engine = engine(
        m,
        EngineConfig {
            max_batch_tokens: 5,
            ..EngineConfig::default()
        },
    );
    let chunked = chunked_engine.generate(req(0, prompt, 4)).expect("ok");
    assert!(
        chunked_engine.stats().steps >= 4,
        "the prompt was prefilled in several chunks"
    );
    assert_eq!(ids(&whole), ids(&chunked));
    // Rows are computed independently, so the tolerance could be 0; 1e-5 states the contract.
    assert!(
        max_logprob_diff(&whole, &chunked) <= 1e-5,
        "chunked prefill changed log-probs"
    );
}

pub fn prefix_shared_equals_scratch(m: &LoadedModel, prefix: Vec<u32>, tail: Vec<u32>) {
    let mut full = prefix.clone();
    full.extend(&tail);
    let scratch = engine(m, EngineConfig::default())
        .generate(req(1, full.clone(), 6))
        .expect("ok");
    let shared = engine(m, EngineConfig::default());
    // A first prompt that differs right after the prefix and fills the block the prefix ends in,
    // so the prefix is reused to the token: its full blocks shared, the rest copied.
    let mut first = prefix.clone();
    first.extend(std::iter::repeat_n(tail[0] ^ 1, 16));
    shared.generate(req(0, first, 2)).expect("ok");
    let reused = shared.generate(req(1, full, 6)).expect("ok");
    assert_eq!(
        reused.usage.cached_tokens,
        prefix.len(),
        "the whole prefix came from the cache"
    );
    assert_eq!(ids(&scratch), ids(&reused));
    assert!(
        max_logprob_diff(&scratch, &reused) <= 1e-5,
        "prefix-shared log-probs differ"
    );
}

fn no_block_leak(m: &LoadedModel, vocab: usize) {
    // Room for about two sequences at once: twenty requests only finish if blocks are reused.
    let per_token = 2 * m.model.config().n_layer * m.model.config().kv_dim() * 4;
    let eng: EngineHandle = engine(
        m,
        EngineConfig {
            kv_mem_bytes: per_token * 16 * 12,
            ..EngineConfig::default()
        },
    );
    let prompts = random_prompts(20, 99, vocab);
    let outs = eng.generate_many(
        prompts
            .into_iter()
            .enumerate()
            .map(|(i, p)| req(i, p[..p.len().min(60)].to_vec(), 20))
            .collect(),
    );
    for o in outs {
        o.expect("every request completes");
    }
    let st = eng.stats();
    assert_eq!(
        st.kv_used_blocks, 0,
        "blocks still held after every sequence finished"
    );
    assert!(st.kv_cached_blocks * 16 <= st.kv_capacity_tokens);
}

#[test]
fn tiny_batched_equals_alone() {
    let (_d, p) = tiny_model(&TinySpec::default(), 1);
    let m = load(&p).expect("tiny loads");
    batched_equals_alone(&m, &random_prompts(8, 2, TINY_VOCAB), 12);
}

#[test]
fn tiny_chunked_prefill_equals_one_shot() {
    let (_d, p) = tiny_model(&TinySpec::default(), 3);
    let m = load(&p).expect("tiny loads");
    chunked_equals_one_shot(
        &m,
        random_prompts(1, 4, TINY_VOCAB)[0]
            .iter()
            .cycle()
            .take(47)
            .copied()
            .collect(),
    );
}

#[test]
fn tiny_prefix_shared_equals_scratch() {
    let (_d, p) = tiny_model(&TinySpec::default(), 5);
    let m = load(&p).expect("tiny loads");
    let pr = random_prompts(2, 6, TINY_VOCAB);
    let prefix: Vec<u32> = pr[0].iter().cycle().take(40).copied().collect();
    prefix_shared_equals_scratch(&m, prefix, pr[1].clone());
}

#[test]
fn tiny_blocks_of_finished_sequences_are_reused_without_leak() {
    let (_d, p) = tiny_model(&TinySpec::default(), 7);
    let m = load(&p).expect("tiny loads");
    no_block_leak(&m, TINY_VOCAB);
}

fn real_prompts() -> Vec<Vec<u32>> {
    let m = default_model();
    [
        "The quick brown fox",
        "Photosynthesis is the process by which",
        "def fibonacci(n):",
        "<|im_start|>user\nName three rivers in Europe.<|im_end|>\n<|im_start|>assistant\n",
        "In 1969, the first humans",
        "A rubric for grading an essay should",
        "The capital of Japan is",
        "Water boils at",
    ]
    .iter()
    .map(|t| m.tokenizer.encode(t).expect("encode"))
    .collect()
}

#[test]
fn real_eight_prompts_batched_equal_alone() {
    batched_equals_alone(default_model(), &real_prompts(), 16);
}

#[test]
fn real_chunked_prefill_equals_one_shot() {
    let m = default_model();
    let p = m
        .tokenizer
        .encode("Rubrics make rewards explicit: each criterion is checked on its own, weighted, and summed into a score between zero and one.")
        .expect("encode");
    chunked_equals_one_shot(m, p);
}

#[test]
fn real_prefix_shared_equals_scratch() {
    let m = default_model();
    let prefix = m
        .tokenizer
        .encode("<|im_start|>system\nYou grade answers against a rubric criterion. Reply with Yes or No.<|im_end|>\n<|im_start|>user\nQuestion: What is the boiling point of water at sea level?\nResponse: 100 degrees Celsius.\nCriterion:")
        .expect("encode");
    let tail = m
        .tokenizer
        .encode(
            " The response states the temperature in Celsius.<|im_end|>\n<|im_start|>assistant\n",
        )
        .expect("encode");
    prefix_shared_equals_scratch(m, prefix, tail);
}

#[test]
fn real_blocks_of_finished_sequences_are_reused_without_leak() {
    no_block_leak(default_model(), 49152);
}

/// `score_last` prompt log-probs: each equals the log-prob of that token from a request that
/// stops just before it (`logprob_ids`), whether the prompt is computed in one step, in chunks,
/// or after its prefix is already in the prefix cache.
pub fn prompt_logprobs_equal_next_token_logprobs(m: &LoadedModel, prompt: Vec<u32>, k: usize) {
    let n = prompt.len();
    let score = |cfg: EngineConfig, repeat: bool| -> Vec<f32> {
        let eng = engine(m, cfg);
        let request = || Request {
            max_tokens: 0,
            score_last: k,
            ..Request::new("score", Prompt::Tokens(prompt.clone()))
        };
        if repeat {
            eng.generate(request()).expect("first scoring");
        }
        let c = eng.generate(request()).expect("scoring");
        assert_eq!(c.prompt_logprobs.len(), k);
        if repeat {
            assert!(
                c.usage.cached_tokens < n - k,
                "a scored token's row came from the cache ({} cached)",
                c.usage.cached_tokens
            );
        }
        c.prompt_logprobs
    };
    let one_shot = score(EngineConfig::default(), false);
    let chunked = score(
        EngineConfig {
            max_batch_tokens: 5,
            ..EngineConfig::default()
        },
        false,
    );
    let cached = score(EngineConfig::default(), true);
    let eng = engine(m, EngineConfig::default());
    let reference: Vec<f32> = eng
        .generate_many(
            (n - k..n)
                .map(|j| Request {
                    max_tokens: 1,
                    logprob_ids: vec![prompt[j]],
                    sampling: SamplingParams::greedy(),
                    ..Request::new(format!("next{j}"), Prompt::Tokens(prompt[..j].to_vec()))
                })
                .collect(),
        )
        .into_iter()
        .map(|c| c.expect("ok").tokens[0].requested[0].1)
        .collect();
    for (name, got) in [
        ("one shot", &one_shot),
        ("chunked", &chunked),
        ("cached", &cached),
    ] {
        for (j, (a, b)) in got.iter().zip(&reference).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4,
                "{name}: scored token {j}: {a} vs next-token log-prob {b}"
            );
        }
    }
}

#[test]
fn tiny_prompt_logprobs_equal_next_token_logprobs() {
    let (_d, p) = tiny_model(&TinySpec::default(), 11);
    let m = load(&p).expect("tiny loads");
    let prompt: Vec<u32> = random_prompts(1, 12, TINY_VOCAB)[0]
        .iter()
        .cycle()
        .take(45)
        .copied()
        .collect();
    prompt_logprobs_equal_next_token_logprobs(&m, prompt, 9);
}

#[test]
fn real_prompt_logprobs_equal_next_token_logprobs() {
    let m = default_model();
    let prompt = m
        .tokenizer
        .encode("The capital of France is Paris, and the capital of Italy is Rome. Both are old.")
        .expect("encodes");
    prompt_logprobs_equal_next_token_logprobs(m, prompt, 8);
}

#[test]
fn score_last_must_leave_a_token_before_it() {
    let (_d, p) = tiny_model(&TinySpec::default(), 13);
    let m = load(&p).expect("tiny loads");
    let eng = engine(&m, EngineConfig::default());
    let err = eng
        .generate(Request {
            max_tokens: 0,
            score_last: 3,
            ..Request::new("too-many", Prompt::Tokens(vec![1, 2, 3]))
        })
        .expect_err("3 scored tokens of a 3-token prompt");
    let text = err.to_string();
    assert!(
        text.contains("too-many") && text.contains("score_last 3"),
        "{text}"
    );
}

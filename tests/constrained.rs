//! Constrained generation on the real default model: JSON-schema outputs parse and satisfy the
//! schema (greedy and sampled), a regex pins a one-token answer, log-probs stay those of the
//! unmasked model, forced tokens are streamed like sampled ones, and a constraint that does not
//! compile is an error from submit that names the request.

use crate::common::{default_model, engine};
use ares::engine::constraint::ConstraintCompiler;
use ares::engine::{
    Completion, Constraint, EngineConfig, EngineHandle, FinishReason, Generator, Prompt, Request,
    SamplingParams,
};
use ares::error::Error;
use ares::model::chat_template::Message;
use serde_json::{json, Value};
use std::time::Instant;

fn eng() -> EngineHandle {
    engine(default_model(), EngineConfig::default())
}

fn chat(e: &EngineHandle, user: &str) -> Prompt {
    let m = [Message {
        role: "user".into(),
        content: user.into(),
    }];
    Prompt::Text(e.chat_prompt(&m).expect("chat template renders"))
}

fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "verdict": {"enum": ["yes", "no"]},
            "reason": {"type": "string", "maxLength": 60}
        },
        "required": ["verdict", "reason"],
        "additionalProperties": false
    })
}

fn rubric_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "criteria": {
                "type": "array",
                "minItems": 3,
                "maxItems": 5,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "maxLength": 80},
                        "weight": {"type": "integer", "minimum": 1, "maximum": 10}
                    },
                    "required": ["text", "weight"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["criteria"],
        "additionalProperties": false
    })
}

/// Greedy plus three seeded samplers (temperature 1), all constrained by `schema`.
fn requests(name: &str, prompt: &Prompt, schema: &Value, max_tokens: usize) -> Vec<Request> {
    let mut samplings = vec![SamplingParams::greedy()];
    for seed in 1..=3 {
        samplings.push(SamplingParams {
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        });
    }
    samplings
        .into_iter()
        .enumerate()
        .map(|(i, sampling)| Request {
            max_tokens,
            sampling,
            constraint: Some(Constraint::JsonSchema(schema.clone())),
            ..Request::new(format!("{name}-{i}"), prompt.clone())
        })
        .collect()
}

/// The completion ended because the grammar did, and its text is JSON.
fn parsed(c: &Completion) -> Value {
    assert_eq!(
        c.finish_reason,
        FinishReason::Stop,
        "{}: grammar did not complete: {:?}",
        c.id,
        c.text
    );
    serde_json::from_str(&c.text).unwrap_or_else(|e| panic!("{}: {e}: {:?}", c.id, c.text))
}

/// The streamed token texts add up to the output, and the token ids decode to it.
fn check_stream(e: &EngineHandle, c: &Completion) {
    let streamed: String = c.tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(streamed, c.text, "{}", c.id);
    let ids: Vec<u32> = c.tokens.iter().map(|t| t.id).collect();
    assert_eq!(
        e.tokenizer().decode(&ids).expect("decode"),
        c.text,
        "{}",
        c.id
    );
    assert_eq!(c.usage.completion_tokens, c.tokens.len(), "{}", c.id);
}

#[test]
fn json_verdicts_match_their_schema_greedy_and_sampled() {
    let e = eng();
    let prompt = chat(
        &e,
        "Is Paris the capital of France? Reply in JSON with a verdict (yes or no) and a short reason.",
    );
    let outs = e.generate_many(requests("verdict", &prompt, &verdict_schema(), 400));
    for c in outs {
        let c = c.expect("generation succeeds");
        check_stream(&e, &c);
        let v = parsed(&c);
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.len(), 2, "{}: {v}", c.id);
        let verdict = obj["verdict"].as_str().expect("verdict is a string");
        assert!(matches!(verdict, "yes" | "no"), "{}: {v}", c.id);
        let reason = obj["reason"].as_str().expect("reason is a string");
        assert!(reason.chars().count() <= 60, "{}: {v}", c.id);
    }
}

#[test]
fn json_rubrics_match_their_schema_greedy_and_sampled() {
    let e = eng();
    let prompt = chat(
        &e,
        "Write a grading rubric for answers to: How do vaccines work? Give 3 to 5 criteria as JSON, \
         each with a text and an integer weight from 1 to 10.",
    );
    let outs = e.generate_many(requests("rubric", &prompt, &rubric_schema(), 1200));
    for c in outs {
        let c = c.expect("generation succeeds");
        check_stream(&e, &c);
        let v = parsed(&c);
        let obj = v.as_object().expect("an object");
        assert_eq!(obj.len(), 1, "{}: {v}", c.id);
        let criteria = obj["criteria"].as_array().expect("criteria is an array");
        assert!((3..=5).contains(&criteria.len()), "{}: {v}", c.id);
        for cr in criteria {
            let cr = cr.as_object().expect("a criterion is an object");
            assert_eq!(cr.len(), 2, "{}: {v}", c.id);
            let text = cr["text"].as_str().expect("text is a string");
            assert!(text.chars().count() <= 80, "{}: {v}", c.id);
            let w = cr["weight"].as_i64().expect("weight is an integer");
            assert!((1..=10).contains(&w), "{}: {v}", c.id);
        }
    }
}

#[test]
fn regex_pins_a_one_token_answer_and_logprobs_stay_unmasked() {
    let e = eng();
    let prompt = chat(&e, "Is the sky green? Answer Yes or No.");
    let constrained = Request {
        max_tokens: 8,
        logprobs: Some(10),
        constraint: Some(Constraint::Regex("(Yes|No)".into())),
        ..Request::new("yes-no", prompt.clone())
    };
    let free = Request {
        max_tokens: 1,
        logprobs: Some(10),
        ..Request::new("yes-no-free", prompt)
    };
    let c = e.generate(constrained).expect("constrained generation");
    let f = e.generate(free).expect("free generation");
    assert!(matches!(c.text.as_str(), "Yes" | "No"), "{:?}", c.text);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.tokens.len(), 1, "one token: {:?}", c.tokens);
    // The first step's distribution is the model's, not the mask's: same top-10 as unconstrained.
    let (ct, ft) = (&c.tokens[0].top, &f.tokens[0].top);
    assert_eq!(ct.len(), ft.len());
    for ((ci, cl), (fi, fl)) in ct.iter().zip(ft) {
        assert_eq!(ci, fi);
        assert!((cl - fl).abs() < 1e-3, "{cl} vs {fl}");
    }
    let chosen = c.tokens[0].logprob.expect("logprob requested");
    assert!(chosen.is_finite() && chosen <= 0.0);
}

#[test]
fn lark_grammar_constrains_the_output() {
    let e = eng();
    let prompt = chat(&e, "Rate this answer from 1 to 5: 'The earth is flat.'");
    let grammar = r#"start: "Score: " /[1-5]/ "." "#;
    let c = e
        .generate(Request {
            max_tokens: 16,
            sampling: SamplingParams {
                temperature: 1.0,
                seed: 7,
                ..SamplingParams::default()
            },
            constraint: Some(Constraint::Lark(grammar.into())),
            ..Request::new("lark", prompt)
        })
        .expect("generation succeeds");
    check_stream(&e, &c);
    let digit = c
        .text
        .strip_prefix("Score: ")
        .and_then(|r| r.strip_suffix('.'))
        .unwrap_or_else(|| panic!("{:?}", c.text));
    assert!(matches!(digit, "1" | "2" | "3" | "4" | "5"), "{:?}", c.text);
    assert_eq!(c.finish_reason, FinishReason::Stop);
}

#[test]
fn forced_tokens_are_skipped_when_logprobs_are_requested() {
    // With log-probs every token is sampled (under the mask) so each one has its log-prob; the
    // output still matches the schema.
    let e = eng();
    let prompt = chat(&e, "Is water wet? Answer in JSON.");
    let c = e
        .generate(Request {
            max_tokens: 400,
            logprobs: Some(1),
            constraint: Some(Constraint::JsonSchema(verdict_schema())),
            ..Request::new("verdict-logprobs", prompt)
        })
        .expect("generation succeeds");
    check_stream(&e, &c);
    let v = parsed(&c);
    assert!(matches!(v["verdict"].as_str(), Some("yes" | "no")), "{v}");
    assert!(c.tokens.iter().all(|t| t.logprob.is_some()));
}

#[test]
fn constrained_and_free_requests_share_a_batch() {
    let e = eng();
    let prompt = chat(&e, "Is Paris the capital of France? Reply in JSON.");
    let mut reqs = requests("mixed", &prompt, &verdict_schema(), 400);
    reqs.push(Request {
        max_tokens: 24,
        ignore_eos: true,
        ..Request::new("mixed-free", prompt.clone())
    });
    let outs = e.generate_many(reqs);
    let n = outs.len();
    for (i, c) in outs.into_iter().enumerate() {
        let c = c.expect("generation succeeds");
        if i + 1 == n {
            assert_eq!(c.tokens.len(), 24);
            assert_eq!(c.finish_reason, FinishReason::Length);
        } else {
            parsed(&c);
        }
    }
}

#[test]
fn invalid_constraints_are_errors_from_submit_naming_the_request() {
    let e = eng();
    let bad = [
        Constraint::JsonSchema(json!({"type": "no-such-type"})),
        Constraint::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        Constraint::Regex("(unclosed".into()),
        Constraint::Lark("start: undefined_rule".into()),
    ];
    for (i, c) in bad.into_iter().enumerate() {
        let id = format!("bad-constraint-{i}");
        let r = Request {
            constraint: Some(c.clone()),
            ..Request::new(id.clone(), Prompt::Text("hello".into()))
        };
        match e.submit(r) {
            Err(err @ Error::InvalidConstraint { .. }) => {
                assert!(err.to_string().contains(&id), "{err}");
            }
            Err(other) => panic!("{c:?}: unexpected error {other}"),
            Ok(_) => panic!("{c:?}: accepted"),
        }
    }
    // The engine still serves good requests afterwards.
    let ok = e
        .generate(Request {
            constraint: Some(Constraint::Regex("(Yes|No)".into())),
            ..Request::new("after-bad", chat(&e, "Yes or No?"))
        })
        .expect("generation succeeds");
    assert!(matches!(ok.text.as_str(), "Yes" | "No"), "{:?}", ok.text);
}

/// Cost of constraints on the default model (run with `--ignored --nocapture`): the token trie
/// build, the mask per token replayed alone, and end-to-end ms per token with and without a schema.
#[test]
#[ignore = "measurement, not a check"]
fn constrained_decoding_cost() {
    let m = default_model();
    let t0 = Instant::now();
    let compiler = ConstraintCompiler::new(&m.tokenizer, m.model.config().vocab).expect("trie");
    eprintln!(
        "token trie + parser factory: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let e = eng();
    let prompt = chat(
        &e,
        "Write a grading rubric for answers to: How do vaccines work? Give 5 criteria as JSON.",
    );
    let schema = rubric_schema();
    // Warm up (prompt in the prefix cache, trie built).
    let warm = Request {
        max_tokens: 4,
        constraint: Some(Constraint::JsonSchema(schema.clone())),
        ..Request::new("warm", prompt.clone())
    };
    e.generate(warm).expect("warm-up");
    for (label, logprobs) in [("fast-forward", None), ("every token sampled", Some(1))] {
        // Best of three runs each (the machine may be shared).
        let run = |constrained: bool, max_tokens: usize| {
            (0..3)
                .map(|_| {
                    e.generate(Request {
                        max_tokens,
                        logprobs,
                        ignore_eos: !constrained,
                        constraint: constrained.then(|| Constraint::JsonSchema(schema.clone())),
                        ..Request::new("timed", prompt.clone())
                    })
                    .expect("generation succeeds")
                })
                .min_by(|a, b| a.decode_seconds.total_cmp(&b.decode_seconds))
                .expect("three runs")
        };
        let steps0 = e.stats().steps;
        let c = run(true, 1200);
        let steps = (e.stats().steps - steps0) / 3;
        let n = c.tokens.len();
        let free = run(false, n);
        eprintln!("{label}: {}", c.text);
        eprintln!(
            "  constrained {n} tokens ({steps} forwards) in {:.3} s = {:.2} ms/token; free {:.2} ms/token",
            c.decode_seconds,
            c.decode_seconds * 1e3 / (n - 1) as f64,
            free.decode_seconds * 1e3 / (n - 1) as f64
        );
        // The mask alone, replayed over the same tokens (sampled tokens only when fast-forward).
        let mut state = compiler
            .compile(&Constraint::JsonSchema(schema.clone()), "replay")
            .expect("compile");
        let mut logits = vec![0f32; m.model.config().vocab];
        let t = Instant::now();
        for tok in &c.tokens {
            state.mask_logits(&mut logits).expect("mask");
            if state.commit(tok.id).expect("commit") {
                break;
            }
        }
        eprintln!(
            "  mask + commit alone: {:.3} ms/token",
            t.elapsed().as_secs_f64() * 1e3 / n as f64
        );
    }
}

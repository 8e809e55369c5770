//! The binary on bad input: one line naming the file or request and the reason, exit code 2 for
//! fatal errors, 1 when some items of a batch failed, never a panic.

use crate::common::ares;
use crate::common::{default_model_path, tiny_model, TinySpec};
use candle_core::quantized::GgmlDType;
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn assert_fatal(o: &Output, must_contain: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code, stderr: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    for s in must_contain {
        assert!(e.contains(s), "stderr lacks {s:?}: {e}");
    }
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let o = ares(&["generate", "-m", "/nonexistent/model.gguf", "hi"]);
    assert_fatal(&o, &["/nonexistent/model.gguf", "not found"]);
}

#[test]
fn non_gguf_file_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("notes.gguf");
    std::fs::write(&p, "this is not a model\n").expect("write");
    let o = ares(&["generate", "-m", p.to_str().expect("utf8"), "hi"]);
    assert_fatal(&o, &["notes.gguf", "not a valid GGUF"]);
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("half.gguf");
    let bytes = std::fs::read(default_model_path()).expect("read model");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    let o = ares(&["generate", "-m", p.to_str().expect("utf8"), "hi"]);
    assert_fatal(&o, &["half.gguf", "truncated"]);
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    let (_d, p) = tiny_model(
        &TinySpec {
            arch: "rwkv9",
            ..TinySpec::default()
        },
        1,
    );
    let o = ares(&["generate", "-m", p.to_str().expect("utf8"), "hi"]);
    assert_fatal(&o, &["tiny.gguf", "unsupported architecture `rwkv9`"]);
}

#[test]
fn unsupported_quantization_is_a_clear_error() {
    let (_d, p) = tiny_model(
        &TinySpec {
            matrix_type: GgmlDType::Q5_1,
            ..TinySpec::default()
        },
        1,
    );
    let o = ares(&["generate", "-m", p.to_str().expect("utf8"), "hi"]);
    assert_fatal(&o, &["tiny.gguf", "unsupported type Q5_1"]);
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let model = default_model_path();
    let long = "word ".repeat(200);
    let o = ares(&[
        "generate",
        "-m",
        model.to_str().expect("utf8"),
        "--ctx",
        "64",
        "-n",
        "8",
        &long,
    ]);
    assert_fatal(&o, &["request prompt", "exceeds the context of 64"]);
}

#[test]
fn empty_prompt_file_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tmp");
    let p = d.path().join("empty.jsonl");
    std::fs::write(&p, "\n\n").expect("write");
    let model = default_model_path();
    let o = ares(&[
        "generate",
        "-m",
        model.to_str().expect("utf8"),
        "--input",
        p.to_str().expect("utf8"),
    ]);
    assert_fatal(&o, &["empty.jsonl", "no prompts"]);
}

#[test]
fn malformed_jsonl_line_is_reported_with_its_line_number_and_the_rest_still_run() {
    let d = tempfile::tempdir().expect("tmp");
    let input = d.path().join("prompts.jsonl");
    let out = d.path().join("out.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"prompt\": \"The sky is\"}\n{\"id\": \"b\", \"prompt\": \n{\"id\": \"c\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n{\"id\": \"d\", \"prompt\": \"\"}\n",
    )
    .expect("write");
    let model = default_model_path();
    let o = ares(&[
        "generate",
        "-m",
        model.to_str().expect("utf8"),
        "-n",
        "4",
        "--input",
        input.to_str().expect("utf8"),
        "--output",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "some items failed: {}",
        stderr(&o)
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("output written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(records.len(), 4);
    assert!(records[0]["completion"]["usage"]["completion_tokens"].as_u64() == Some(4));
    let e1 = records[1]["error"].as_str().expect("line 2 failed");
    assert!(e1.contains("prompts.jsonl:2"), "{e1}");
    assert!(records[2]["completion"].is_object(), "line 3 ran");
    let e3 = records[3]["error"].as_str().expect("empty prompt failed");
    assert!(
        e3.contains("request d") && e3.contains("empty prompt"),
        "{e3}"
    );
}

#[test]
fn generate_streams_text_and_reports_speed() {
    let model = default_model_path();
    let o = ares(&[
        "generate",
        "-m",
        model.to_str().expect("utf8"),
        "--chat",
        "-n",
        "8",
        "What is the capital of France?",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty());
    assert!(stderr(&o).contains("tok/s"));
}

/// `ares bench --write-token-workload` tokenizes the judge workload with a real model, and a
/// random-weight model of the same vocabulary (`--synthetic`, as on a GPU machine with no model
/// file) runs it with exactly those prompt tokens; a text workload on a synthetic model is a
/// clear error, before any work.
#[test]
fn synthetic_models_run_the_judge_workload_as_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_round =
        std::fs::read_to_string(crate::common::shared_dir().join("bench/judge_workload.jsonl"))
            .expect("judge workload")
            .lines()
            .next()
            .expect("a round")
            .to_string();
    let text = dir.path().join("round0.jsonl");
    std::fs::write(&text, format!("{first_round}\n")).expect("write");
    let model = default_model_path();
    let tokens = dir.path().join("round0-tokens.jsonl");
    let o = ares(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--judge",
        text.to_str().unwrap(),
        "--write-token-workload",
        tokens.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rounds = crate::common::read_jsonl(&tokens);
    assert_eq!(rounds.len(), 1);
    let ids = rounds[0]["prompt_ids"].as_array().expect("prompt_ids");
    assert_eq!(ids.len(), 32, "one id list per prompt");
    let n_tokens: u64 = ids.iter().map(|p| p.as_array().unwrap().len() as u64).sum();
    assert!(rounds[0].get("prompts").is_none(), "texts dropped");

    let o = ares(&[
        "bench",
        "--synthetic",
        "llama:135m:q8_0",
        "--judge",
        text.to_str().unwrap(),
    ]);
    assert_fatal(&o, &["round0.jsonl", "token workload"]);

    let o = ares(&[
        "bench",
        "--synthetic",
        "llama:135m:q8_0",
        "--judge",
        tokens.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let round = &report["judge"]["runs"][0]["rounds"][0];
    assert_eq!(round["prompts"], 32);
    assert_eq!(round["failed"], 0);
    assert_eq!(round["prompt_tokens"].as_u64(), Some(n_tokens));
    assert!(
        round["cached_tokens"].as_u64().unwrap() > 0,
        "the shared prefix is reused"
    );
}

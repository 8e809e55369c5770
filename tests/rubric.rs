//! `ares rubric` and `ares judge --mode generate` on the real default model: generated rubrics
//! are valid ares items with 3-12 criteria, ids c1..cn and the template hash; bad input lines get
//! a status record and exit code 1; generate-mode judging gives `ok` records with hard verdicts
//! and reasons. The default model is a 135M model, so these check validity and structure, not
//! quality.

use crate::common::ares;
use crate::common::default_model_path;
use ares::judge::formats::{parse_line, Format};
use ares::judge::template::{template_hash, GENERATE_SOURCE, RUBRIC_SOURCE};
use ares::judge::{Category, Criterion, RubricItem};
use serde_json::{json, Value};
use std::path::Path;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("output line is JSON"))
        .collect()
}

fn model_arg() -> String {
    default_model_path().to_string_lossy().into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn rubric_for_two_questions_writes_valid_items_with_template_hash() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("questions.jsonl");
    let questions = [
        // With a reference answer: without one the 135M test model repeats itself (two distinct
        // criteria of three under the verb-led criterion pattern).
        json!({"id": "sky", "question": "Why is the sky blue?",
               "reference_answer": "Sunlight is scattered by the molecules of the air, and blue light is scattered much more than red light (Rayleigh scattering), so blue light reaches our eyes from every direction of the sky."}),
        json!({"id": "paris", "question": "What is the capital of France?",
               "reference_answer": "Paris."}),
    ];
    let text: Vec<String> = questions.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n") + "\n").expect("write input");
    let out = dir.path().join("rubrics.jsonl");
    let t0 = std::time::Instant::now();
    let o = ares(&[
        "rubric",
        "-m",
        &model_arg(),
        "--input",
        s(&input),
        "--out",
        s(&out),
    ]);
    let seconds = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("ares rubric, 2 questions: {seconds:.2} s (model load included)");
    assert_eq!(o.status.code(), Some(0), "stderr: {stderr}");
    let hash = template_hash(RUBRIC_SOURCE);
    let written = lines(&out);
    assert_eq!(written.len(), 2, "{written:?}");
    let items: Vec<RubricItem> = written
        .iter()
        .map(|l| parse_line(Format::Ares, l).expect("a valid ares rubric record"))
        .collect();
    assert_eq!(items[0].id, "sky");
    assert_eq!(items[1].id, "paris");
    assert_eq!(items[1].reference_answer.as_deref(), Some("Paris."));
    for item in &items {
        item.validate().expect("valid item");
        let n = item.criteria.len();
        assert!((3..=12).contains(&n), "{n} criteria: {item:?}");
        for (i, c) in item.criteria.iter().enumerate() {
            assert_eq!(c.id, format!("c{}", i + 1));
            assert!(!c.text.trim().is_empty() && c.text.chars().count() <= 200);
            let w = c.weight.abs();
            assert!((1.0..=10.0).contains(&w) && w.fract() == 0.0, "{c:?}");
            assert_eq!(c.weight < 0.0, c.category == Category::Pitfall, "{c:?}");
        }
        assert_eq!(item.extra["template_hash"], hash.as_str());
        assert_eq!(item.extra["model_sha256"].as_str().map(str::len), Some(64));
    }
    let status = records(Path::new(&format!("{}.status.jsonl", out.display())));
    assert_eq!(status.len(), 2);
    for (r, id) in status.iter().zip(["sky", "paris"]) {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["id"], id);
        assert_eq!(r["template_hash"], hash.as_str());
        assert!(r["completion_tokens"].as_u64().unwrap_or(0) > 0, "{r}");
    }
    // The generated file is a rubric file `ares judge` reads, and exports to RaR.
    let rar = dir.path().join("rar.jsonl");
    let o = ares(&[
        "rubric",
        "-m",
        &model_arg(),
        "--input",
        s(&input),
        "--out",
        s(&rar),
        "--format",
        "rar",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for r in records(&rar) {
        assert!(
            r["rubric"].as_array().map(Vec::len).unwrap_or(0) >= 3,
            "{r}"
        );
        assert_eq!(r["template_hash"], hash.as_str());
    }
}

#[test]
fn rubric_bad_lines_get_a_status_record_and_exit_code_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("questions.jsonl");
    std::fs::write(
        &input,
        "{\"question\": \n{\"id\": \"e\", \"question\": \"  \"}\n{\"id\": \"x\", \"prompt\": \"q\"}\n",
    )
    .expect("write input");
    let out = dir.path().join("rubrics.jsonl");
    let status = dir.path().join("status.jsonl");
    let o = ares(&[
        "rubric",
        "-m",
        &model_arg(),
        "--input",
        s(&input),
        "--out",
        s(&out),
        "--status-out",
        s(&status),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(lines(&out).is_empty());
    let status = records(&status);
    assert_eq!(status.len(), 3);
    for (r, line) in status.iter().zip([1, 2, 3]) {
        assert_eq!(r["status"], "error", "{r}");
        assert_eq!(r["line"], line);
        assert!(
            r["error"]
                .as_str()
                .unwrap_or("")
                .contains(&format!(":{line}:")),
            "{r}"
        );
    }
}

#[test]
fn judge_generate_mode_gives_ok_records_with_verdicts_and_reasons() {
    let dir = tempfile::tempdir().expect("tmp");
    let rubrics = dir.path().join("rubrics.jsonl");
    let item = RubricItem::new(
        "paris",
        "What is the capital of France?",
        vec![
            Criterion::new("c1", "Says the capital is Paris.", 5.0, Category::Essential),
            Criterion::new("c2", "Claims the capital is Lyon.", -2.0, Category::Pitfall),
        ],
    );
    std::fs::write(&rubrics, serde_json::to_string(&item).expect("json")).expect("write");
    let responses = dir.path().join("responses.jsonl");
    let lines_in = [
        json!({"item_id": "paris", "response_id": "r1", "response": "The capital of France is Paris."}),
        json!({"item_id": "paris", "response_id": "r2", "response": "It is Lyon."}),
    ];
    let text: Vec<String> = lines_in.iter().map(Value::to_string).collect();
    std::fs::write(&responses, text.join("\n") + "\n").expect("write responses");
    let out = dir.path().join("out.jsonl");
    let o = ares(&[
        "judge",
        "-m",
        &model_arg(),
        "--mode",
        "generate",
        "--rubrics",
        s(&rubrics),
        "--responses",
        s(&responses),
        "--out",
        s(&out),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["mode"], "generate");
        assert_eq!(r["template_hash"], template_hash(GENERATE_SOURCE).as_str());
        let reward = r["reward"].as_f64().expect("reward");
        assert!((0.0..=1.0).contains(&reward), "{r}");
        let criteria = r["criteria"].as_array().expect("criteria");
        assert_eq!(criteria.len(), 2);
        for c in criteria {
            assert!(c["verdict"].is_boolean(), "hard verdict: {c}");
            let p = c["p_yes"].as_f64().expect("p_yes");
            assert_eq!(p == 1.0, c["verdict"] == true, "{c}");
            let reason = c["reason"].as_str().expect("reason");
            assert!(reason.chars().count() <= 200, "{c}");
        }
    }
}

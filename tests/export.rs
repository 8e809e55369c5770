//! Trainer exports, the dataset card and decontamination (issue #15): `ares export` in every
//! format read back (parquet with the `parquet` crate, and with pyarrow where Python has it), and
//! the synth pipeline (scripted generator, real tokenizer) dropping an item whose question is
//! copied from `../shared/eval` while keeping one that is not.

use std::path::{Path, PathBuf};

use ares::engine::fake::{prompt_text, FakeAnswer, FakeGenerator};
use ares::engine::Constraint;
use ares::judge::formats::{parse_line, Format};
use ares::judge::{Category, Criterion, RubricItem};
use ares::synth::SynthConfig;
use serde_json::{json, Value};

use crate::common::{ares, default_model, shared_dir};

fn item(id: &str, question: &str, domain: &str) -> RubricItem {
    let mut it = RubricItem::new(
        id,
        question,
        vec![
            Criterion::new(
                "c1",
                "States that the Danube flows through Vienna",
                5.0,
                Category::Essential,
            ),
            Criterion::new("c2", "Names Budapest as well", 2.0, Category::Important),
            Criterion::new(
                "c3",
                "Claims that the Rhine flows through Vienna",
                -4.0,
                Category::Pitfall,
            ),
        ],
    );
    it.reference_answer = Some("The Danube.".into());
    it.extra.insert(
        "synth".into(),
        json!({"domain": domain, "source": "rivers.txt", "doc_id": "rivers", "model_sha256": "feed"}),
    );
    it
}

fn write_dataset(dir: &Path) -> (PathBuf, Vec<RubricItem>) {
    let items = vec![
        item(
            "s-1",
            "Which river flows through Vienna?",
            "Travel & Lifestyle",
        ),
        item("s-2", "Which river flows through Budapest?", "Other"),
    ];
    let path = dir.join("dataset.jsonl");
    ares::judge::write_jsonl(&path, Format::Ares, &items).expect("write dataset");
    (path, items)
}

/// A Python with pyarrow: `$ARES_TEST_PYTHON` or `python3`; `None` (with a message) otherwise.
fn python_with_pyarrow() -> Option<String> {
    let py = std::env::var("ARES_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import pyarrow.parquet"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping the pyarrow read-back: {py} has no pyarrow (set ARES_TEST_PYTHON to a Python that has it)");
    }
    ok.then_some(py)
}

fn export(format: &str, input: &Path, out: &Path) {
    let o = ares(&[
        "export",
        "--format",
        format,
        input.to_str().expect("utf-8 path"),
        out.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "ares export --format {format}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("2 rows"), "{stdout}");
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("export written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn verl_export_reads_back_with_the_parquet_crate_and_pyarrow() {
    let d = tempfile::tempdir().expect("tempdir");
    let (input, items) = write_dataset(d.path());
    let out = d.path().join("verl").join("train.parquet");
    export("verl", &input, &out);
    let rows = ares::export::verl::read(&out).expect("parquet reads back");
    assert_eq!(rows.len(), 2);
    for (r, it) in rows.iter().zip(&items) {
        assert_eq!(r.data_source, "ares");
        assert_eq!(r.prompt, vec![("user".to_string(), it.question.clone())]);
        assert_eq!(r.item_id, it.id);
        let rubric = parse_line(Format::Ares, &r.ground_truth).expect("inline rubric");
        assert_eq!(
            (rubric.id.as_str(), rubric.criteria.len()),
            (it.id.as_str(), 3)
        );
    }
    assert_eq!(rows[0].ability, "Travel & Lifestyle");
    let Some(py) = python_with_pyarrow() else {
        return;
    };
    let script = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
rows = t.to_pylist()
print(json.dumps({"columns": t.column_names, "rows": rows}))
"#;
    let o = std::process::Command::new(&py)
        .args(["-c", script, out.to_str().expect("utf-8 path")])
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON from python");
    assert_eq!(
        v["columns"],
        json!([
            "data_source",
            "prompt",
            "ability",
            "reward_model",
            "extra_info"
        ])
    );
    let r0 = &v["rows"][0];
    assert_eq!(r0["prompt"][0]["role"], "user");
    assert_eq!(r0["prompt"][0]["content"], items[0].question.as_str());
    assert_eq!(r0["reward_model"]["style"], "model");
    assert_eq!(r0["extra_info"]["index"], 0);
    assert_eq!(r0["extra_info"]["item_id"], "s-1");
    let truth: Value =
        serde_json::from_str(r0["reward_model"]["ground_truth"].as_str().unwrap_or(""))
            .expect("ground_truth is a JSON string");
    assert_eq!(truth["id"], "s-1");
    eprintln!(
        "pyarrow read {} rows of {}",
        v["rows"].as_array().map_or(0, Vec::len),
        out.display()
    );
}

#[test]
fn openrlhf_trl_and_hf_exports_read_back() {
    let d = tempfile::tempdir().expect("tempdir");
    let (input, items) = write_dataset(d.path());
    for (format, prompt_key, label_key) in
        [("openrlhf", "input", "label"), ("trl", "prompt", "rubric")]
    {
        let out = d.path().join(format!("{format}.jsonl"));
        export(format, &input, &out);
        let rows = jsonl(&out);
        assert_eq!(rows.len(), 2);
        for (r, it) in rows.iter().zip(&items) {
            assert_eq!(
                r[prompt_key],
                json!([{"role": "user", "content": it.question}])
            );
            assert_eq!(r["item_id"], it.id.as_str());
            let rubric = parse_line(Format::Ares, r[label_key].as_str().expect("string label"))
                .expect("inline rubric");
            assert_eq!(rubric.criteria, it.criteria);
            assert!(rubric.extra.is_empty(), "provenance stays out of the label");
        }
    }
    let hf = d.path().join("hf");
    export("hf", &input, &hf);
    let back: Vec<RubricItem> = jsonl(&hf.join("train.jsonl"))
        .into_iter()
        .map(|v| parse_line(Format::Ares, &v.to_string()).expect("ares item"))
        .collect();
    assert_eq!(back, items);
    let card = std::fs::read_to_string(hf.join("README.md")).expect("card");
    assert!(card.starts_with("---\nlicense: "), "{card}");
    assert!(card.contains("path: \"train.jsonl\""), "{card}");
    assert!(
        card.contains("`feed`"),
        "model sha256 from the provenance: {card}"
    );
    // A bad input line is an error naming the file and line.
    std::fs::write(d.path().join("bad.jsonl"), "{\"question\": \"x\"}\n").expect("write");
    let o = ares(&[
        "export",
        "--format",
        "trl",
        d.path().join("bad.jsonl").to_str().expect("utf-8"),
        d.path().join("o.jsonl").to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.jsonl:1") && err.contains("criteria"),
        "{err}"
    );
}

/// The first xquad question of 15+ words, and its file.
fn long_eval_question() -> (PathBuf, usize, String) {
    let path = shared_dir().join("eval/xquad_en/xquad_en_flat.jsonl");
    let text = std::fs::read_to_string(&path).expect("../shared/eval/xquad_en is there");
    for (i, l) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(l).expect("xquad line is JSON");
        let q = v["question"].as_str().unwrap_or("");
        if q.split_whitespace().count() >= 15 {
            return (path, i + 1, q.to_string());
        }
    }
    panic!("no long question in {}", path.display());
}

/// A generator that answers every stage: labels, one item per chunk (the question chosen by a
/// marker word in the chunk), and Yes/No log-probs (all equal) for the checks and the judge.
fn scripted(copied: String) -> FakeGenerator {
    FakeGenerator::new(move |req| {
        if !req.logprob_ids.is_empty() {
            return FakeAnswer::logprobs(req.logprob_ids.iter().map(|&id| (id, -1.0)).collect());
        }
        let prompt = prompt_text(req);
        if req.id.starts_with("label/") {
            return FakeAnswer::text(
                r#"{"subject": "rivers", "domain": "Other", "personas": ["a sports fan"]}"#,
            );
        }
        assert!(
            matches!(req.constraint, Some(Constraint::JsonSchema(_))),
            "{}",
            req.id
        );
        let question = if prompt.contains("Zanzibarian") {
            copied.clone()
        } else {
            "Why does a metal spoon feel colder than a wooden spoon in the same room?".to_string()
        };
        FakeAnswer::text(
            json!({
                "question": question,
                "answer": "Metal conducts heat away from the hand much faster than wood does, so it feels colder although both are at room temperature.",
                "criteria": [
                    {"text": "States that metal conducts heat faster than wood", "category": "essential", "weight": 8},
                    {"text": "Explains that both spoons have the same temperature", "category": "important", "weight": 5},
                    {"text": "Mentions the skin's sensation of heat flow", "category": "optional", "weight": 2},
                    {"text": "Claims that the metal spoon is colder than the wooden one", "category": "pitfall", "weight": 6}
                ]
            })
            .to_string(),
        )
    })
}

#[test]
fn decontamination_drops_an_item_copied_from_an_eval_question_and_keeps_the_other() {
    let (bench, line, question) = long_eval_question();
    let d = tempfile::tempdir().expect("tempdir");
    let docs = d.path().join("docs");
    std::fs::create_dir(&docs).expect("mkdir");
    let filler = "Heat moves from warmer bodies to cooler ones, and materials differ a great deal in how quickly they carry it. Metals carry heat quickly because their free electrons move energy along, while wood and plastics carry it slowly. This is why the handle of a metal pan gets hot, and why a wooden spoon left in a pot stays comfortable to hold for a long time. ";
    std::fs::write(docs.join("a.txt"), format!("Zanzibarian notes. {filler}")).expect("write");
    std::fs::write(
        docs.join("b.txt"),
        format!("Kitchen notes. {filler}Cooks rely on this every day."),
    )
    .expect("write");
    let out = d.path().join("run");
    let config = SynthConfig {
        inputs: vec![docs],
        out: out.clone(),
        personas: 1,
        min_reference_reward: 0.0,
        min_margin: 0.0,
        // The scripted judge answers every criterion alike; this test is about decontamination.
        reference_check: false,
        decontaminate: vec![bench.clone()],
        near_duplicate: 1.1,
        workers: 1,
        ..SynthConfig::default()
    };
    let g = scripted(format!("Quick question: {question}"));
    let m = default_model();
    let report = ares::synth::run(&config, &g, &m.tokenizer, "sha", &|_| {}).expect("synth runs");
    let stage = report
        .stages
        .iter()
        .find(|s| s.stage == "decontamination")
        .expect("a decontamination stage");
    assert_eq!((stage.input, stage.output), (2, 1), "{report:#?}");
    assert_eq!(stage.reasons.values().sum::<usize>(), 1);
    let rejected: Vec<Value> = std::fs::read_to_string(out.join("rejected.jsonl"))
        .expect("rejected.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let dropped: Vec<&Value> = rejected
        .iter()
        .filter(|r| r["stage"] == "decontamination")
        .collect();
    assert_eq!(dropped.len(), 1, "{rejected:?}");
    let reason = dropped[0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("xquad_en_flat.jsonl") && reason.contains(&format!("line {line}")),
        "{reason}"
    );
    assert!(dropped[0]["question"]
        .as_str()
        .unwrap_or("")
        .ends_with(&question));
    // The other item went on through the filters; accepted here (the thresholds are open), with
    // the decontamination verdict in its provenance.
    let accepted: Vec<Value> = std::fs::read_to_string(out.join("dataset.jsonl"))
        .expect("dataset.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(accepted.len(), 1, "{report:#?}\n{rejected:?}");
    assert!(accepted[0]["question"]
        .as_str()
        .unwrap_or("")
        .contains("metal spoon"));
    let filters = accepted[0]["extra"]["synth"]["filters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        filters
            .iter()
            .any(|f| f["filter"] == "decontamination" && f["passed"] == true),
        "{filters:?}"
    );
    assert_eq!(
        report.thresholds.decontaminate,
        vec![bench.display().to_string()]
    );
}

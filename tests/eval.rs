//! `ares eval` and the verdict cache it relies on (`ares judge --cache`), on the real default
//! model: a small eval run writes its report, table, rubrics and records, and a rerun reuses the
//! rubrics and verdicts and reproduces the figures exactly; `ares judge --cache` replays
//! identical records without the engine, and a corrupt cache file is a clear error.

use crate::common::{ares, default_model_path, shared_dir};
use serde_json::{json, Value};
use std::path::Path;

fn model_arg() -> String {
    default_model_path().to_string_lossy().into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// The figures of a report: per data set and method, (scored, failed, statistics).
fn figures(r: &Value) -> Vec<Value> {
    r["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .flat_map(|d| d["methods"].as_array().expect("methods").iter())
        .map(|m| {
            json!([
                m["method"],
                m["scored"],
                m["failed"],
                m["spearman"],
                m["kendall_tau_b"],
                m["pairwise_accuracy"],
                m["mean_reward"],
                m["vs_plain"]
            ])
        })
        .collect()
}

#[test]
fn eval_on_a_small_sample_reports_every_method_and_a_rerun_reuses_rubrics_and_verdicts() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("eval");
    let data = shared_dir().join("eval");
    let args = [
        "eval",
        "-m",
        &model_arg(),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--limit",
        "3",
        "--resamples",
        "200",
        "--seed",
        "5",
    ];
    let first = ares(&args);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "stderr: {stderr}");
    let table = String::from_utf8_lossy(&first.stdout);
    for row in [
        "| medquad | rubric, logprob per criterion |",
        "| medquad | rubric, logprob per criterion, topic gate |",
        "| medquad | rubric, logprob per criterion, relevance gate |",
        "| llmbar | rubric, logprob per criterion, relevance gate |",
        "| medquad | rubric, support (likelihood) per criterion |",
        "| medquad | rubric, holistic 0-9 |",
        "| medquad | no rubric, holistic 0-9 |",
        "| llmbar | rubric, logprob per criterion |",
        "| llmbar | rubric, support (likelihood) per criterion |",
        "| llmbar | no rubric, holistic 0-9 |",
        "| llmbar | rubric, pairwise, both orders |",
    ] {
        assert!(table.contains(row), "{row} missing from:\n{table}");
    }
    let r = report(&out);
    assert_eq!(r["limit"], 3);
    assert_eq!(r["seed"], 5);
    assert_eq!(r["resamples"], 200);
    let datasets = r["datasets"].as_array().expect("datasets");
    assert_eq!(datasets.len(), 2);
    let model_sha = ares::model::sha256_file(&default_model_path()).expect("hash model");
    assert_eq!(r["model_sha256"], model_sha.as_str());
    for d in datasets {
        assert_eq!(d["samples"], 3, "{d}");
        let rubrics = &d["rubrics"];
        assert_eq!(rubrics["reused"], 0);
        // The reference check ran on medquad's rubrics (llmbar has no reference answers); with
        // the 135M test model's near-random judge it may leave a rubric without a positive
        // criterion, whose answers then count as `no_rubric`.
        let check = &rubrics["reference_check"];
        let emptied = check["emptied"].as_u64().unwrap_or(0);
        if d["dataset"] == "medquad" {
            let checked = check["checked"].as_u64().expect("reference_check.checked")
                + check["unchecked"]
                    .as_u64()
                    .expect("reference_check.unchecked");
            assert!(checked > 0, "{d}");
            let lines = std::fs::read_to_string(check["file"].as_str().expect("file"))
                .expect("reference-check file");
            assert_eq!(lines.lines().count() as u64, checked, "{lines}");
            for l in lines.lines() {
                let v: Value = serde_json::from_str(l).expect("JSON");
                for dropped in v["dropped"].as_array().expect("dropped") {
                    assert!(dropped["reason"].is_string(), "{dropped}");
                }
            }
        } else {
            assert!(check.is_null(), "{d}");
        }
        let methods = d["methods"].as_array().expect("methods");
        assert_eq!(methods.len(), 8);
        for m in methods {
            // Every sample is scored or counted as failed with a reason, never dropped.
            let failed: u64 = m["failed"]
                .as_object()
                .expect("failed")
                .values()
                .map(|v| v.as_u64().expect("count"))
                .sum();
            assert_eq!(m["scored"].as_u64().expect("scored") + failed, 3, "{m}");
            // Rubric methods are compared with plain judging on the samples both scored.
            if m["method"] == "plain_holistic" || m["method"] == "reference_holistic" {
                assert!(m.get("vs_plain").is_none(), "{m}");
            } else {
                let common = m["vs_plain"]["common"].as_u64().expect("vs_plain.common");
                assert!(common <= m["scored"].as_u64().expect("scored"), "{m}");
            }
            let records = std::fs::read_to_string(m["records"].as_str().expect("records path"))
                .expect("records file");
            // llmbar has no reference answers: the reference-guided judge scores nothing there.
            let no_reference = m["method"] == "reference_holistic" && d["dataset"] == "llmbar";
            // Medquad has no pairs for the pairwise judge.
            let no_pairs = m["method"] == "rubric_pairwise" && d["dataset"] == "medquad";
            // Llmbar has no topic gate statement.
            let no_gate = m["method"] == "rubric_logprob_gated" && d["dataset"] == "llmbar";
            if no_gate {
                assert_eq!(m["failed"]["no_gate"], 3, "{m}");
            }
            let all_emptied = m["failed"]["no_rubric"].as_u64() == Some(3) && emptied > 0;
            assert!(
                records.lines().count() > 0 || no_reference || no_pairs || no_gate || all_emptied,
                "{m}"
            );
            if m["method"] == "rubric_pairwise" && d["dataset"] == "llmbar" {
                assert!(m["order_disagreement_rate"].is_number(), "{m}");
            }
            for line in records.lines() {
                let rec: Value = serde_json::from_str(line).expect("record JSON");
                assert_eq!(rec["model_sha256"], model_sha.as_str());
                assert_eq!(rec["template_hash"], m["template_hash"]);
                // A gated reward carries its gate; the reward is the gated one.
                let gated = ["rubric_logprob_gated", "rubric_logprob_relevance"];
                if gated.contains(&m["method"].as_str().unwrap_or("")) && rec["status"] == "ok" {
                    let p = rec["gate"]["p_yes"].as_f64().expect("gate p_yes");
                    assert!((0.0..=1.0).contains(&p), "{rec}");
                    assert!(rec["gate"]["statement"].is_string(), "{rec}");
                }
                // The relevance gate records the PMI its factor came from.
                if m["method"] == "rubric_logprob_relevance" && rec["status"] == "ok" {
                    let pmi = rec["gate"]["pmi"].as_f64().expect("gate pmi");
                    let p = rec["gate"]["p_yes"].as_f64().expect("gate p_yes");
                    assert!(
                        (p - 1.0 / (1.0 + (-4.0 * pmi).exp())).abs() < 1e-12,
                        "{rec}"
                    );
                }
            }
        }
        // A gated reward is the rubric reward times the gate's factor, response by response
        // (the topic gate on medquad, the relevance gate on both).
        for gated_method in ["rubric_logprob_gated", "rubric_logprob_relevance"] {
            if gated_method == "rubric_logprob_gated" && d["dataset"] != "medquad" {
                continue;
            }
            let records = |method: &str| -> Vec<Value> {
                let m = methods
                    .iter()
                    .find(|m| m["method"] == method)
                    .expect("method");
                std::fs::read_to_string(m["records"].as_str().expect("records path"))
                    .expect("records file")
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("record JSON"))
                    .collect()
            };
            let plain = records("rubric_logprob");
            let gated = records(gated_method);
            assert_eq!(plain.len(), gated.len());
            for (p, g) in plain.iter().zip(&gated) {
                assert_eq!(p["line"], g["line"]);
                if g["status"] == "ok" {
                    let want = p["reward"].as_f64().expect("reward")
                        * g["gate"]["p_yes"].as_f64().expect("p_yes");
                    let got = g["reward"].as_f64().expect("gated reward");
                    assert!((got - want).abs() < 1e-12, "{p} {g}");
                }
            }
        }
        let stat = if d["dataset"] == "medquad" {
            "spearman"
        } else {
            "pairwise_accuracy"
        };
        // With three samples a statistic can be undefined (for example, equal grades); when
        // it is defined its interval brackets it.
        for m in methods {
            if let Some(e) = m.get(stat).filter(|e| !e.is_null()) {
                let (v, lo, hi) = (
                    e["value"].as_f64().expect("value"),
                    e["low"].as_f64().expect("low"),
                    e["high"].as_f64().expect("high"),
                );
                assert!(lo <= hi && (-1.0..=1.0).contains(&v), "{e}");
            }
        }
    }
    let rubric_file = out.join("rubrics-medquad.jsonl");
    let generated = std::fs::read_to_string(&rubric_file).expect("rubric file");
    // The stored rubrics are the ares rubric format `ares judge` reads.
    let items = ares::judge::read_jsonl(&rubric_file, ares::judge::Format::Ares).expect("read");
    assert!(items.iter().all(|i| i.is_ok()), "{items:?}");
    assert!(out.join("verdicts.redb").exists());
    // samples-<set>.jsonl gives report.html each response's human label, by judged `line`.
    for d in datasets {
        let set = d["dataset"].as_str().expect("dataset");
        let samples: Vec<Value> = std::fs::read_to_string(out.join(format!("samples-{set}.jsonl")))
            .expect("samples file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("sample JSON"))
            .collect();
        let lines: Vec<u64> = samples
            .iter()
            .map(|x| x["line"].as_u64().expect("line"))
            .collect();
        let labels: Vec<f64> = samples
            .iter()
            .map(|x| x["label"].as_f64().expect("label"))
            .collect();
        if set == "medquad" {
            assert_eq!(lines, vec![1, 2, 3]);
            // Answers per grade, as the report counts them.
            let per_grade: Vec<u64> = (1..=4)
                .map(|g| labels.iter().filter(|l| **l == f64::from(g)).count() as u64)
                .collect();
            assert_eq!(serde_json::json!(per_grade), d["labels"]);
        } else {
            assert_eq!(lines, (1..=6).collect::<Vec<u64>>());
            // Each pair: exactly one preferred output, the one its label names.
            for (pair, l) in labels.chunks(2).enumerate() {
                assert_eq!(l[0] + l[1], 1.0, "pair {pair}");
            }
            let prefers_2 = labels.chunks(2).filter(|l| l[1] == 1.0).count() as u64;
            assert_eq!(d["labels"][1], prefers_2);
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("eval writes report.html");
    assert!(html.contains("data-chart=\"eval-llmbar-agreement\""));

    // Rerun: rubrics reused, every verdict from the cache, the same figures.
    let second = ares(&args);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "stderr: {stderr}");
    let r2 = report(&out);
    for d in r2["datasets"].as_array().expect("datasets") {
        let rubrics = &d["rubrics"];
        assert_eq!(rubrics["generated"], 0, "{rubrics}");
        assert_eq!(
            rubrics["reused"],
            rubrics["questions"].as_u64().expect("n") - rubrics["failed"].as_u64().expect("n")
        );
        for m in d["methods"].as_array().expect("methods") {
            // Support mode and the relevance gate keep no verdict cache: their rerun scores
            // again (same figures below).
            if m["method"] != "rubric_support" && m["method"] != "rubric_logprob_relevance" {
                assert_eq!(m["requests"], 0, "engine was not needed: {m}");
            }
        }
    }
    assert_eq!(figures(&r2), figures(&r), "a rerun reproduces the figures");
    assert_eq!(
        std::fs::read_to_string(&rubric_file).expect("rubric file"),
        generated
    );

    // --methods runs a subset: only that row, the same figure, nothing to compare with.
    let mut subset = args.to_vec();
    subset.extend(["--methods", "rubric-logprob"]);
    let third = ares(&subset);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert_eq!(third.status.code(), Some(0), "stderr: {stderr}");
    let r3 = report(&out);
    for (d3, d) in r3["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .zip(r["datasets"].as_array().expect("datasets"))
    {
        let methods = d3["methods"].as_array().expect("methods");
        assert_eq!(methods.len(), 1, "{d3}");
        assert_eq!(methods[0]["method"], "rubric_logprob");
        assert!(methods[0].get("vs_plain").is_none(), "{}", methods[0]);
        assert_eq!(methods[0]["spearman"], d["methods"][0]["spearman"]);
        assert_eq!(
            methods[0]["pairwise_accuracy"],
            d["methods"][0]["pairwise_accuracy"]
        );
    }
}

fn paris_rubric() -> String {
    json!({"schema_version": 1, "id": "paris", "question": "What is the capital of France?",
    "criteria": [
        {"id": "c1", "text": "Says the capital is Paris.", "weight": 5, "category": "essential"},
        {"id": "c2", "text": "Claims the capital is Lyon.", "weight": -3, "category": "pitfall"}
    ]})
    .to_string()
}

fn responses(texts: &[&str]) -> String {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"item_id": "paris", "response_id": format!("r{i}"), "response": t}).to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn judge_cache_replays_identical_records_and_misses_on_a_changed_response() {
    let dir = tempfile::tempdir().expect("tmp");
    let rubrics = dir.path().join("rubrics.jsonl");
    std::fs::write(&rubrics, paris_rubric()).expect("write");
    let resp = dir.path().join("responses.jsonl");
    let cache = dir.path().join("cache");
    let run = |texts: &[&str], out: &Path, mode: &str| {
        std::fs::write(&resp, responses(texts)).expect("write");
        let model = model_arg();
        let o = ares(&[
            "judge",
            "-m",
            &model,
            "--rubrics",
            s(&rubrics),
            "--responses",
            s(&resp),
            "--out",
            s(out),
            "--mode",
            mode,
            "--cache",
            s(&cache),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "stderr: {stderr}");
        stderr
    };
    let texts = ["The capital of France is Paris.", "It is Lyon."];
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    let first = run(&texts, &a, "logprob");
    assert!(first.contains("0 hits, 4 misses"), "{first}");
    let second = run(&texts, &b, "logprob");
    assert!(second.contains("4 hits, 0 misses"), "{second}");
    assert!(
        second.contains("0 criteria in"),
        "the engine judged nothing: {second}"
    );
    assert_eq!(
        std::fs::read(&a).expect("a"),
        std::fs::read(&b).expect("b"),
        "a record from the cache is byte-identical to the computed one"
    );
    let changed = run(&[texts[0], "Lyon, surely."], &c, "logprob");
    assert!(changed.contains("2 hits, 2 misses"), "{changed}");
    let holistic = run(&texts, &c, "holistic");
    assert!(
        holistic.contains("0 hits, 2 misses"),
        "mode is in the key: {holistic}"
    );
}

#[test]
fn a_corrupt_cache_file_is_a_clear_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    let rubrics = dir.path().join("rubrics.jsonl");
    std::fs::write(&rubrics, paris_rubric()).expect("write");
    let resp = dir.path().join("responses.jsonl");
    std::fs::write(&resp, responses(&["Paris."])).expect("write");
    let bad = dir.path().join("bad.redb");
    std::fs::write(&bad, b"not a redb file at all\n".repeat(100)).expect("write");
    let out = dir.path().join("out.jsonl");
    let o = ares(&[
        "judge",
        "-m",
        &model_arg(),
        "--rubrics",
        s(&rubrics),
        "--responses",
        s(&resp),
        "--out",
        s(&out),
        "--cache-file",
        s(&bad),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "fatal: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("bad.redb") && stderr.contains("verdict cache"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing judged, nothing written");
}

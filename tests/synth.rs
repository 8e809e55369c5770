//! `ares synth` end to end on the real default model (samples/ shipped with the repository), a run
//! killed mid-way and resumed (no duplicates, nothing lost, a half-written line repaired), bad
//! input (empty, binary, unreadable, invalid UTF-8, a bad JSONL line), a huge document streamed,
//! and the dataset records readable by `ares judge` in every export format.
//!
//! The default model is a 135M model: these tests check structure, bookkeeping and consistency,
//! not the quality of the questions. Its judge rewards cluster around 0.4-0.5, so the end-to-end
//! run relaxes the rubric-validity thresholds (flags) to get accepted items to check.

use crate::common::{ares, default_model_path};
use ares::judge::formats::{parse_line, to_line, Format};
use ares::judge::{Category, Criterion, RubricItem};
use ares::synth::chunk::{ChunkConfig, ChunkEvent, Chunker};
use ares::synth::ingest::{Document, Paragraphs, SourceKind};
use ares::synth::record::unit_of;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn model_arg() -> String {
    default_model_path().to_string_lossy().into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

fn report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report is JSON")
}

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stage"] == name))
        .unwrap_or_else(|| panic!("stage {name} in {report}"))
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// The flags that make a small run on the default model: two personas, short generations,
/// rubric-validity thresholds relaxed (see the module docs).
/// Two personas, short generations, and rubric validity relaxed for the 135M test model, whose
/// judge is close to random: thresholds off, and the criteria its reference answer "fails" kept
/// (`the_reference_check_records_what_it_drops` covers that check).
const SMALL: [&str; 14] = [
    "-t",
    "2",
    "--personas",
    "2",
    "--max-tokens",
    "384",
    "--max-chunks-per-doc",
    "1",
    "--min-reference-reward",
    "0",
    "--min-margin=-1",
    "--keep-failed-criteria",
    "--seed",
    "7",
];

#[test]
fn synth_on_the_samples_writes_accepted_items_with_provenance_that_judge_reads() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("run");
    let responses = dir.path().join("responses.jsonl");
    let model = model_arg();
    let mut args = vec![
        "synth",
        "-m",
        &model,
        "-i",
        s(&samples()).to_owned().leak(),
        "--out",
        s(&out),
        "--id-field",
        "doc_id",
        "--responses-out",
        s(&responses),
    ];
    args.extend(SMALL);
    let t0 = Instant::now();
    let o = ares(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!(
        "ares synth on samples/: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {stderr}\nstdout: {stdout}"
    );
    assert!(
        stdout.contains("stage") && stdout.contains("accepted"),
        "{stdout}"
    );

    let r = report(&out);
    // The run draws its page beside report.json (tests/report.rs checks pages in depth).
    let html = std::fs::read_to_string(out.join("report.html")).expect("synth writes report.html");
    assert!(html.contains("data-chart=\"synth-funnel\""));
    assert!(stderr.contains("charts: "), "{stderr}");
    // The funnel: every stage's output is at most its input, and each stage feeds the next.
    let order = [
        "decontamination",
        "self_containment",
        "leakage",
        "faithfulness",
        "rubric_validity",
        "accepted",
    ];
    for st in r["stages"].as_array().expect("stages") {
        assert!(count(&st["output"]) <= count(&st["input"]), "{st}");
    }
    for w in order.windows(2) {
        assert_eq!(
            count(&stage(&r, w[0])["output"]),
            count(&stage(&r, w[1])["input"]),
            "{} -> {}",
            w[0],
            w[1]
        );
    }
    assert_eq!(count(&stage(&r, "ingest")["output"]), 5, "{r}");
    assert_eq!(
        count(&stage(&r, "generate")["output"]),
        count(&stage(&r, "decontamination")["input"])
    );
    assert!(r["completion_tokens"].as_u64().unwrap_or(0) > 0);
    assert!(r["tokens_per_second"].as_f64().unwrap_or(0.0) > 0.0);

    let dataset = lines(&out.join("dataset.jsonl"));
    let rejected = lines(&out.join("rejected.jsonl"));
    let accepted = count(&stage(&r, "accepted")["output"]) as usize;
    assert_eq!(dataset.len(), accepted);
    assert!(accepted >= 1, "no item accepted: {r}");
    // The dataset card beside the data (issue #15): Hub header, counts, the run's pass rates.
    let card = std::fs::read_to_string(out.join("README.md")).expect("README.md card");
    assert!(card.starts_with("---\nlicense: "), "{card}");
    assert!(
        card.contains(&format!("\n{accepted} questions with reference answers")),
        "{card}"
    );
    assert!(
        card.contains("| rubric_validity |") && card.contains("### 1 `"),
        "{card}"
    );
    for line in &dataset {
        let item = parse_line(Format::Ares, &line.to_string()).expect("an ares rubric item");
        item.validate().expect("valid");
        assert!((3..=12).contains(&item.criteria.len()));
        assert!(item.reference_answer.is_some());
        let p = &item.extra["synth"];
        for key in [
            "unit",
            "doc_id",
            "span",
            "subject",
            "domain",
            "persona",
            "model_sha256",
            "prompt_hashes",
            "filters",
        ] {
            assert!(!p[key].is_null(), "provenance lacks {key}: {p}");
        }
        assert_eq!(p["model_sha256"].as_str().map(str::len), Some(64));
        let filters: Vec<&str> = p["filters"]
            .as_array()
            .expect("filters")
            .iter()
            .map(|f| {
                assert_eq!(f["passed"], true, "{f}");
                f["filter"].as_str().expect("name")
            })
            .collect();
        assert_eq!(
            filters,
            [
                "self_containment_rules",
                "self_containment_model",
                "leakage",
                "faithfulness",
                "rubric_structure",
                "rubric_reference_reward",
                "rubric_discrimination"
            ]
        );
        // Criteria the reference answer failed are listed with their P(yes), not in the rubric.
        for d in p["dropped_criteria"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().expect("dropped id");
            assert!(item.criteria.iter().all(|c| c.id != id), "{d}");
            assert!(!d["reason"].as_str().unwrap_or("").is_empty(), "{d}");
        }
        // The span points into the document's normalised text, and the chunk id is its hash.
        let span = p["span"].as_array().expect("span");
        assert!(span[0].as_u64() < span[1].as_u64());
    }
    for line in &rejected {
        assert!(
            line["stage"].is_string() && line["reason"].is_string(),
            "{line}"
        );
        assert!(!line["reason"].as_str().unwrap_or("").is_empty());
    }
    // One journal line per unit, every record's unit journaled.
    let journal: BTreeSet<String> = lines(&out.join("journal.jsonl"))
        .iter()
        .map(|l| l["unit"].as_str().expect("unit").to_string())
        .collect();
    for l in dataset.iter().chain(&rejected) {
        assert!(journal.contains(unit_of(l).expect("unit")), "{l}");
    }

    // `ares judge` reads the dataset and the responses file, and gives the reference answer the
    // reward synth recorded (the judge is batch-invariant).
    let judged = dir.path().join("judged.jsonl");
    let o = ares(&[
        "judge",
        "-m",
        &model,
        "-t",
        "2",
        "--rubrics",
        s(&out.join("dataset.jsonl")),
        "--responses",
        s(&responses),
        "--out",
        s(&judged),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records = lines(&judged);
    assert_eq!(records.len(), 2 * accepted);
    let recorded: BTreeMap<String, (f64, f64)> = dataset
        .iter()
        .map(|d| {
            let p = &d["extra"]["synth"];
            (
                d["id"].as_str().expect("id").to_string(),
                (
                    p["reference_reward"].as_f64().expect("reward"),
                    p["degraded_reward"].as_f64().expect("reward"),
                ),
            )
        })
        .collect();
    for rec in &records {
        assert_eq!(rec["status"], "ok", "{rec}");
        let (reference, degraded) = recorded[rec["item_id"].as_str().expect("item")];
        let want = if rec["response_id"] == "reference" {
            reference
        } else {
            degraded
        };
        assert_eq!(rec["reward"].as_f64(), Some(want), "{rec}");
    }
}

/// With the reference check on (the default), every item that reached it records what it did:
/// the `rubric_reference_check` filter names the dropped criteria, which are criteria of the
/// generated rubric; an accepted item no longer has them and lists them with the reference
/// answer's P(yes); a rejected one says why in its reason.
#[test]
fn the_reference_check_records_what_it_drops() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("run");
    let model = model_arg();
    let args: Vec<String> = [
        "synth",
        "-m",
        &model,
        "-i",
        s(&samples()),
        "--out",
        s(&out),
        "--id-field",
        "doc_id",
        "-t",
        "2",
        "--personas",
        "3",
        "--max-tokens",
        "384",
        "--max-chunks-per-doc",
        "1",
        "--min-reference-reward",
        "0",
        "--min-margin=-1",
        "--seed",
        "7",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let o = ares(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = report(&out);
    assert_eq!(r["thresholds"]["reference_check"], true, "{r}");
    // "kept 4 of 6 criteria; dropped c2 (the reference answer fails them); dropped c5
    // (pitfalls the source passage states)", either part optional.
    let dropped_ids = |reason: &str| -> Vec<String> {
        reason
            .split("dropped ")
            .skip(1)
            .flat_map(|rest| {
                rest.split(" (")
                    .next()
                    .unwrap_or("")
                    .split(", ")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    // Every record that went through the check: the dropped criteria are listed (with the
    // reference answer's P(yes)) under the ids its filter reason names, and are no longer in
    // the record's criteria.
    let check = |line: &Value, p: &Value| {
        let f = p["filters"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["filter"] == "rubric_reference_check"))?;
        let want = dropped_ids(f["reason"].as_str().expect("reason"));
        // A repaired item was judged twice: the first check's drops carry this suffix.
        let before_repair = |d: &&Value| {
            d["id"]
                .as_str()
                .is_some_and(|id| id.ends_with("-before-repair"))
        };
        let got: Vec<String> = p["dropped_criteria"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| !before_repair(d))
            .map(|d| {
                let no_verdict = d["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no usable verdict");
                assert!(d["p_yes_reference"].is_number() || no_verdict, "{d}");
                // A pitfall the source passage states: dropped at the met bar (0.7 default).
                if let Some(p) = d["p_yes_source"].as_f64() {
                    assert!(p >= 0.7, "{d}");
                    assert!(d["weight"].as_f64() < Some(0.0), "{d}");
                    assert!(d["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("source passage"));
                }
                assert!(!d["text"].as_str().unwrap_or("").is_empty(), "{d}");
                d["id"].as_str().expect("id").to_string()
            })
            .collect();
        assert_eq!(got, want, "{line}");
        for c in line["criteria"].as_array().into_iter().flatten() {
            assert!(!got.iter().any(|g| c["id"] == g.as_str()), "{line}");
        }
        // The pitfall stage ran on every item that reached the check; each pitfall it added is
        // a "Claims that" pitfall that the check either kept or dropped, never lost.
        let stage = p["pitfall_stage"]
            .as_object()
            .expect("pitfall_stage recorded");
        let repair = stage.get("repair");
        if p["dropped_criteria"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| before_repair(&d))
        {
            let why = repair.and_then(|r| r["reason"].as_str()).unwrap_or("");
            assert!(why.starts_with("after the reference check"), "{line}");
        }
        let first = stage.get("added").and_then(Value::as_array);
        // A repair's additions were judged only when the item was judged again.
        let second = repair
            .filter(|r| r["judged_again"] == true)
            .and_then(|r| r["added"].as_array());
        for added in first.into_iter().chain(second).flatten() {
            let text = added.as_str().expect("text");
            assert!(text.starts_with("Claims that "), "{line}");
            let kept = line["criteria"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["text"] == text && c["category"] == "pitfall");
            let dropped = p["dropped_criteria"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["text"] == text);
            assert!(
                kept != dropped,
                "{text}: kept {kept}, dropped {dropped}: {line}"
            );
        }
        Some(f["passed"] == true)
    };
    let mut checked = 0;
    for line in lines(&out.join("rejected.jsonl")) {
        if let Some(passed) = check(&line, &line) {
            checked += 1;
            if !passed {
                assert_eq!(line["stage"], "rubric_validity", "{line}");
                let reason = line["reason"].as_str().unwrap_or("");
                assert!(reason.starts_with("after the reference check"), "{line}");
            }
        }
    }
    for line in lines(&out.join("dataset.jsonl")) {
        let passed = check(&line, &line["extra"]["synth"]);
        assert_eq!(
            passed,
            Some(true),
            "an accepted item passed the check: {line}"
        );
        checked += 1;
    }
    assert!(checked > 0, "no item reached the reference check: {r}");
    let pit = &r["pitfalls"];
    assert_eq!(r["thresholds"]["pitfall_stage"], true, "{r}");
    assert!(pit["items"].as_u64() >= Some(checked as u64), "{r}");
    assert!(pit["kept"].as_u64() <= pit["checked"].as_u64(), "{r}");
    // Every pitfall the source check dropped is counted, in accepted and rejected records alike.
    let by_source = lines(&out.join("dataset.jsonl"))
        .iter()
        .map(|l| l["extra"]["synth"].clone())
        .chain(lines(&out.join("rejected.jsonl")))
        .flat_map(|p| {
            p["dropped_criteria"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|d| d["p_yes_source"].is_number())
        .count();
    assert_eq!(
        pit["true_in_source"].as_u64(),
        Some(by_source as u64),
        "{r}"
    );
}

/// `ares synth` over `input` into `out` with small chunks, one persona and short generations,
/// plus `extra`.
fn small_chunk_args(model: &str, input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "synth",
        "-m",
        model,
        "-i",
        s(input),
        "--out",
        s(out),
        "--id-field",
        "doc_id",
        "--chunk-tokens",
        "96",
        "--min-chunk-tokens",
        "20",
        "--personas",
        "1",
        "--max-tokens",
        "256",
        "-t",
        "2",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Units, and the multiset of (unit, record) lines, of a run directory.
fn records_by_unit(out: &Path) -> (Vec<String>, BTreeMap<String, usize>) {
    let journal: Vec<String> = lines(&out.join("journal.jsonl"))
        .iter()
        .map(|l| l["unit"].as_str().expect("unit").to_string())
        .collect();
    let mut recs = BTreeMap::new();
    for f in ["dataset.jsonl", "rejected.jsonl"] {
        for l in std::fs::read_to_string(out.join(f)).expect("read").lines() {
            *recs.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    (journal, recs)
}

#[test]
fn a_killed_run_resumes_without_duplicates_or_losses_and_repairs_a_half_written_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = samples().join("medquad_nih_pages.jsonl");
    let model = model_arg();
    let run_args = |out: &Path| -> Vec<String> {
        small_chunk_args(
            &model,
            &input,
            out,
            &["--batch-chunks", "1", "--workers", "1", "--seed", "3"],
        )
    };
    // The whole run, uninterrupted: what the resumed run must end up with.
    let full = dir.path().join("full");
    let o = Command::new(env!("CARGO_BIN_EXE_ares"))
        .args(run_args(&full))
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (full_units, full_records) = records_by_unit(&full);
    assert!(full_units.len() >= 4, "want several units: {full_units:?}");

    // The same run, killed once at least one unit is journaled.
    let part = dir.path().join("part");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ares"))
        .args(run_args(&part))
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let journal = part.join("journal.jsonl");
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(&journal)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 1 || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().expect("reap");
    let (killed_units, _) = records_by_unit(&part);
    eprintln!(
        "killed after {} of {} units",
        killed_units.len(),
        full_units.len()
    );
    assert!(
        killed_units.len() < full_units.len(),
        "the run finished before it could be killed"
    );
    // As if the kill had cut a write: half a record at the end of both data files.
    for f in ["dataset.jsonl", "rejected.jsonl"] {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(part.join(f))
            .expect("open");
        std::io::Write::write_all(&mut file, b"{\"schema_version\":1,\"unit\":\"half").expect("w");
    }

    // Without --resume the directory is refused; with it the run completes.
    let o = Command::new(env!("CARGO_BIN_EXE_ares"))
        .args(run_args(&part))
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let mut args = run_args(&part);
    args.push("--resume".into());
    let o = Command::new(env!("CARGO_BIN_EXE_ares"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = report(&part);
    assert_eq!(r["resumed"], true);
    assert!(
        r["resume"]["partial_lines_removed"].as_u64().unwrap_or(0) >= 2,
        "{r}"
    );
    assert_eq!(
        r["skipped_finished_units"].as_u64(),
        Some(killed_units.len() as u64),
        "{r}"
    );

    let (units, records) = records_by_unit(&part);
    let unique: BTreeSet<&String> = units.iter().collect();
    assert_eq!(unique.len(), units.len(), "a unit journaled twice");
    let mut a = units.clone();
    let mut b = full_units.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "units lost or added");
    // Same records, each once: generation is seeded per item and batch-invariant.
    assert!(records.values().all(|&n| n == 1), "duplicate records");
    assert_eq!(records, full_records);
}

#[test]
fn bad_inputs_are_reported_and_skipped_and_invalid_utf8_is_decoded_with_a_warning() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("docs");
    std::fs::create_dir(&input).expect("mkdir");
    std::fs::write(input.join("empty.txt"), "").expect("w");
    std::fs::write(input.join("blank.md"), "\n  \n\t\n").expect("w");
    std::fs::write(input.join("image.txt"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").expect("w");
    std::fs::write(input.join("latin1.txt"), b"Caf\xe9 au lait.\n").expect("w");
    std::fs::write(
        input.join("records.jsonl"),
        "{\"text\": \"Short one.\"}\n{\"body\": \"no text field\"}\n{broken\n",
    )
    .expect("w");
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("nowhere"), input.join("gone.txt")).expect("ln");
    let out = dir.path().join("run");
    let o = ares(&[
        "synth",
        "-m",
        &model_arg(),
        "-i",
        s(&input),
        "--out",
        s(&out),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Binary and unreadable inputs count as failed items: exit code 1, the run completes.
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let rejected = lines(&out.join("rejected.jsonl"));
    let find = |source: &str, line: Option<u64>| -> &Value {
        rejected
            .iter()
            .find(|r| r["source"] == source && r["line"].as_u64() == line)
            .unwrap_or_else(|| panic!("no record for {source}:{line:?} in {rejected:#?}"))
    };
    let reason = |source: &str, line: Option<u64>| {
        let r = find(source, line);
        format!(
            "{} {}",
            r["stage"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        )
    };
    assert!(reason("empty.txt", None).starts_with("ingest empty file"));
    assert!(reason("blank.md", None).starts_with("ingest empty document"));
    assert!(reason("image.txt", None).starts_with("ingest binary file"));
    if cfg!(unix) {
        assert!(
            reason("gone.txt", None).contains("cannot"),
            "{}",
            reason("gone.txt", None)
        );
    }
    assert!(reason("records.jsonl", Some(2)).contains("no field `text`"));
    assert!(reason("records.jsonl", Some(3)).contains("not valid JSON"));
    // Short documents reach the label rules (and stop there, without a model call).
    assert!(reason("latin1.txt", None).starts_with("label too short"));
    assert!(rejected
        .iter()
        .any(|r| r["doc_id"] == "records.jsonl:1" && r["stage"] == "label"));
    let r = report(&out);
    assert_eq!(r["ingest"]["lossy_documents"], 1, "{r}");
    assert_eq!(r["ingest"]["skipped"]["binary"], 1, "{r}");
    assert_eq!(r["ingest"]["skipped"]["empty"], 2, "{r}");
    assert_eq!(r["ingest"]["skipped"]["bad_record"], 2, "{r}");
    let ingest = stage(&r, "ingest");
    assert_eq!(ingest["reasons"]["binary file"], 1, "{ingest}");
    assert_eq!(ingest["reasons"]["empty file"], 1, "{ingest}");
    let latin1 = find("latin1.txt", None);
    assert!(
        latin1["warning"]
            .as_str()
            .unwrap_or("")
            .starts_with("invalid UTF-8: 1 bytes"),
        "{latin1}"
    );
    // Resuming a finished run writes nothing again, ingest rejections included.
    let before = std::fs::read_to_string(out.join("rejected.jsonl")).expect("read");
    let o = ares(&[
        "synth",
        "-m",
        &model_arg(),
        "-i",
        s(&input),
        "--out",
        s(&out),
        "--resume",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let after = std::fs::read_to_string(out.join("rejected.jsonl")).expect("read");
    assert_eq!(before, after);
    assert_eq!(
        report(&out)["skipped_finished_units"].as_u64(),
        Some(rejected.len() as u64)
    );
    // A path that does not exist at all is fatal, naming it.
    let o = ares(&[
        "synth",
        "-m",
        &model_arg(),
        "-i",
        "/nonexistent/docs",
        "--out",
        s(&dir.path().join("x")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/docs"));
}

/// A reader of `total` bytes of generated prose that counts what it hands out.
struct Prose {
    total: usize,
    served: Arc<AtomicUsize>,
    line: Vec<u8>,
    pos: usize,
}

impl Read for Prose {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let done = self.served.load(Ordering::Relaxed);
        if done >= self.total {
            return Ok(0);
        }
        let mut n = 0;
        while n < buf.len() && done + n < self.total {
            buf[n] = self.line[self.pos % self.line.len()];
            self.pos += 1;
            n += 1;
        }
        self.served.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn a_huge_document_is_streamed_not_loaded() {
    let served = Arc::new(AtomicUsize::new(0));
    let reader = Prose {
        total: 4 << 30,
        served: served.clone(),
        line: b"The river floods every spring and the farmers plant rice after it.\n\n".to_vec(),
        pos: 0,
    };
    let doc = Document {
        id: "huge".into(),
        source: "huge.txt".into(),
        kind: SourceKind::Text,
        paragraphs: Paragraphs::from_reader(
            Box::new(std::io::BufReader::new(reader)),
            "huge.txt".into(),
        ),
    };
    let words = |t: &str| t.split_whitespace().count();
    let chunks: Vec<_> = Chunker::new(
        doc,
        ChunkConfig {
            target_tokens: 200,
            overlap_tokens: 20,
        },
        &words,
    )
    .take(5)
    .map(|e| match e {
        ChunkEvent::Chunk(c) => c,
        ChunkEvent::ReadError(e) => panic!("{e}"),
    })
    .collect();
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c.tokens <= 200));
    // Five chunks of a 4 GiB document read well under a megabyte of it.
    let read = served.load(Ordering::Relaxed);
    assert!(read < 1 << 20, "read {read} bytes");
}

#[test]
fn provenance_survives_every_export_format_and_names_its_unit() {
    let mut item = RubricItem::new(
        "s-1",
        "What is 2+2?",
        vec![
            Criterion::new("c1", "States 4.", 10.0, Category::Essential),
            Criterion::new("c2", "Shows the sum.", 3.0, Category::Optional),
            Criterion::new("c3", "States 5.", -5.0, Category::Pitfall),
        ],
    );
    item.reference_answer = Some("4.".into());
    item.extra.insert(
        "synth".into(),
        serde_json::json!({"unit": "abc", "domain": "Math"}),
    );
    for format in [Format::Ares, Format::Rar, Format::HealthBench] {
        let line = to_line(format, &item).expect("export");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(unit_of(&v), Some("abc"), "{format}: {line}");
        let back = parse_line(format, &line).expect("import");
        assert_eq!(back.extra["synth"]["domain"], "Math", "{format}");
        assert_eq!(back.reference_answer.as_deref(), Some("4."), "{format}");
    }
}

/// `--shard 0/2` and `--shard 1/2` split the chunks between two runs whose records together are
/// exactly the single run's (every shard dedups all chunks, each keeps its own chunk ids).
#[test]
fn two_shards_together_equal_the_whole_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = samples().join("medquad_nih_pages.jsonl");
    let model = model_arg();
    let run = |out: &Path, shard: Option<&str>| {
        let mut a = small_chunk_args(&model, &input, out, &["--max-docs", "3", "--seed", "5"]);
        if let Some(sh) = shard {
            a.extend(["--shard".to_string(), sh.to_string()]);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_ares"))
            .args(&a)
            .env("RUST_LOG", "off")
            .output()
            .expect("run");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        records_by_unit(out)
    };
    let (all_units, all_records) = run(&dir.path().join("all"), None);
    let (u0, r0) = run(&dir.path().join("s0"), Some("0/2"));
    let (u1, r1) = run(&dir.path().join("s1"), Some("1/2"));
    assert!(all_units.len() >= 3, "want several units: {all_units:?}");
    assert!(!u0.is_empty() && !u1.is_empty(), "both shards get work");
    let mut units: Vec<String> = u0.iter().chain(&u1).cloned().collect();
    units.sort();
    let mut want = all_units.clone();
    want.sort();
    assert_eq!(
        units, want,
        "the shards' units are the run's units, each once"
    );
    let mut merged = r0.clone();
    for (line, n) in r1 {
        *merged.entry(line).or_insert(0) += n;
    }
    assert_eq!(merged, all_records);
}

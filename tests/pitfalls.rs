//! Pitfalls that behave (issue 12, point 4): the judge's logprob mode on a fixed set of
//! hand-written cases with Qwen2.5-Coder-1.5B-Instruct (the quality model). Each case has one
//! essential criterion and one pitfall, a good response (meets the essential, avoids the mistake,
//! sometimes naming it only to reject it) and a bad one (misses the essential, makes the mistake).
//! A pitfall's p_yes is P(the response makes the mistake), so it must be low for the good response
//! and high for the bad one; an essential criterion the other way round.
//!
//! The bounds are what the shipped `templates/judge_criterion.txt` achieves with margin
//! (measured: essential 0.83 good / 0.43 bad, pitfall 0.43 avoided / 0.84 made, means over the
//! eight cases); the 1.5B model cannot do the arithmetic case, so the pairwise order is required in
//! all but one case for pitfalls. The test runs `ares judge` on the cached model and never fetches
//! it: without it, it says `SKIPPED` and why on stderr (past the harness's capture), so it is never
//! a silent pass. `ARES_TEST_QWEN=0` skips it too.

use crate::common::ares;
use serde_json::{json, Value};
use std::io::Write;

const NAME: &str = "qwen2.5-coder-1.5b-instruct";

struct Case {
    id: &'static str,
    question: &'static str,
    essential: &'static str,
    pitfall: &'static str,
    good: &'static str,
    bad: &'static str,
}

const CASES: [Case; 8] = [
    Case {
        id: "sorted",
        question: "In Python, does sorted() change the list it is given?",
        essential: "States that sorted() returns a new list.",
        pitfall: "Claims that sorted() sorts the original list in place.",
        good: "No. sorted() builds and returns a new sorted list and leaves the original list unchanged; list.sort() is the method that sorts in place.",
        bad: "Yes. sorted() sorts the original list in place and returns None, so the list you pass in is changed.",
    },
    Case {
        id: "cold",
        question: "Should I take antibiotics for a common cold?",
        essential: "States that antibiotics do not work against viruses.",
        pitfall: "Recommends taking antibiotics to treat a cold.",
        good: "No. Colds are caused by viruses, and antibiotics only act on bacteria, so they will not help. Rest, fluids and paracetamol for aches are the usual advice.",
        bad: "Yes, take a course of amoxicillin as soon as symptoms start; it will clear the cold in a few days.",
    },
    Case {
        id: "boil",
        question: "At what temperature does water boil at sea level?",
        essential: "States that water boils at 100 degrees Celsius.",
        pitfall: "Claims that water boils at 90 degrees Celsius at sea level.",
        good: "At sea level water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
        bad: "At sea level water boils at 90 degrees Celsius.",
    },
    Case {
        id: "bleach",
        question: "Can I mix bleach and ammonia to make a stronger bathroom cleaner?",
        essential: "Warns that mixing bleach and ammonia releases toxic gas.",
        pitfall: "Recommends mixing bleach and ammonia for cleaning.",
        good: "No, never mix them. Bleach and ammonia react to release toxic chloramine gas. Use one product at a time and keep the room ventilated.",
        bad: "Yes. Pour one cup of bleach and one cup of ammonia into a bucket of water; together they clean much better than either alone.",
    },
    Case {
        id: "interest",
        question: "How much is $100 worth after 2 years at 10% annual interest, compounded yearly?",
        essential: "States that the amount is $121.",
        pitfall: "Claims that the amount is $120.",
        good: "After one year it is $110, after two years $110 x 1.1 = $121.",
        bad: "Each year adds $10, so after two years it is $120.",
    },
    Case {
        id: "seasons",
        question: "What causes the seasons on Earth?",
        essential: "States that the tilt of Earth's axis causes the seasons.",
        pitfall: "Claims that the seasons are caused by Earth's changing distance from the Sun.",
        good: "The seasons come from the 23.4 degree tilt of Earth's axis, which changes how directly sunlight hits each hemisphere during the year. They are not caused by the distance to the Sun: Earth is actually closest to the Sun in January.",
        bad: "The seasons happen because Earth's orbit brings it closer to the Sun in summer and farther away in winter.",
    },
    Case {
        id: "gitpull",
        question: "What does the command git pull do?",
        essential: "States that git pull fetches changes from a remote repository and merges them.",
        pitfall: "Claims that git pull uploads local commits to the remote repository.",
        good: "git pull downloads new commits from the remote repository (git fetch) and then merges them into your current branch. It does not upload anything; git push does that.",
        bad: "git pull uploads your local commits to the remote repository so others can see them.",
    },
    Case {
        id: "canberra",
        question: "What is the capital city of Australia?",
        essential: "Names Canberra as the capital.",
        pitfall: "Names Sydney as the capital of Australia.",
        good: "The capital of Australia is Canberra, not Sydney, which is the largest city.",
        bad: "The capital of Australia is Sydney.",
    },
];

fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED pitfalls_are_low_when_avoided_and_high_when_made: {why}"
    );
}

/// The cached model file, or `None` after saying why the test does not run.
fn cached_model() -> Option<std::path::PathBuf> {
    if std::env::var("ARES_TEST_QWEN").as_deref() == Ok("0") {
        skip("ARES_TEST_QWEN=0; unset it to run");
        return None;
    }
    let registry = ares::model::registry::Registry::builtin().expect("builtin registry");
    let entry = registry
        .find(NAME)
        .expect("the quality model is in the registry");
    let path = ares::model::source::cached_path(entry, &ares::model::source::ares_home());
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!(
            "{NAME} is not cached at {}; run `ares fetch {NAME}` to run it",
            path.display()
        ));
        None
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn pitfalls_are_low_when_avoided_and_high_when_made() {
    let Some(model) = cached_model() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let rubrics = dir.path().join("rubrics.jsonl");
    let responses = dir.path().join("responses.jsonl");
    let mut r_lines = Vec::new();
    let mut s_lines = Vec::new();
    for c in &CASES {
        r_lines.push(
            json!({"schema_version": 1, "id": c.id, "question": c.question, "criteria": [
                {"id": "essential", "text": c.essential, "weight": 5, "category": "essential"},
                {"id": "pitfall", "text": c.pitfall, "weight": -5, "category": "pitfall"}]})
            .to_string(),
        );
        for (rid, text) in [("good", c.good), ("bad", c.bad)] {
            s_lines
                .push(json!({"item_id": c.id, "response_id": rid, "response": text}).to_string());
        }
    }
    std::fs::write(&rubrics, r_lines.join("\n") + "\n").expect("write rubrics");
    std::fs::write(&responses, s_lines.join("\n") + "\n").expect("write responses");
    let out = dir.path().join("judged.jsonl");
    let o = ares(&[
        "judge",
        "-m",
        &model.to_string_lossy(),
        "--rubrics",
        &rubrics.to_string_lossy(),
        "--responses",
        &responses.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ]);
    assert!(
        o.status.success(),
        "ares judge failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records: Vec<Value> = std::fs::read_to_string(&out)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(records.len(), 2 * CASES.len());
    // p[case][response: 0 good, 1 bad][criterion: 0 essential, 1 pitfall]
    let p: Vec<[[f64; 2]; 2]> = records
        .chunks(2)
        .map(|pair| {
            let get = |r: &Value, k: usize| {
                assert_eq!(r["status"], "ok", "{r}");
                r["criteria"][k]["p_yes"].as_f64().expect("p_yes")
            };
            [
                [get(&pair[0], 0), get(&pair[0], 1)],
                [get(&pair[1], 0), get(&pair[1], 1)],
            ]
        })
        .collect();
    let table: Vec<String> = CASES
        .iter()
        .zip(&p)
        .map(|(c, p)| format!("{}: {:.2?}", c.id, p))
        .collect();
    let col = |resp: usize, crit: usize| p.iter().map(|x| x[resp][crit]).collect::<Vec<_>>();
    let (ess_good, ess_bad) = (col(0, 0), col(1, 0));
    let (pit_avoided, pit_made) = (col(0, 1), col(1, 1));
    assert!(mean(&pit_avoided) <= 0.5, "avoided pitfalls: {table:?}");
    assert!(mean(&pit_made) >= 0.7, "made pitfalls: {table:?}");
    assert!(mean(&ess_good) >= 0.7, "essentials met: {table:?}");
    assert!(mean(&ess_bad) <= 0.55, "essentials missed: {table:?}");
    let ordered = |hi: &[f64], lo: &[f64]| hi.iter().zip(lo).filter(|(h, l)| h > l).count();
    assert!(
        ordered(&pit_made, &pit_avoided) >= CASES.len() - 1,
        "pitfall made > avoided: {table:?}"
    );
    assert_eq!(
        ordered(&ess_good, &ess_bad),
        CASES.len(),
        "essential met > missed: {table:?}"
    );
}

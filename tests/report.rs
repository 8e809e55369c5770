//! `report.html` (issue #17): for real synth, eval and bench runs kept as fixtures
//! (`tests/fixtures/report/`, made with the default 135M model), the page parses as HTML, every
//! chart's SVG is well-formed XML, and the numbers each chart plots (its `data-values`) equal
//! what the run's JSON files say, recomputed here from the files; runs with nothing to draw still
//! get a page that says so; run text is escaped. `ares report DIR` is driven through the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{ares, read_jsonl};

fn fixture(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(kind)
}

/// A copy of a fixture run in a temporary folder (reports are written beside the JSON).
fn copy_run(kind: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for e in std::fs::read_dir(fixture(kind)).expect("fixture folder") {
        let e = e.expect("fixture entry");
        std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy fixture");
    }
    dir
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("json")
}

/// Parses the page, checks it and every chart, and returns each chart's data by id.
fn check_page(html: &str) -> BTreeMap<String, Value> {
    let doc = scraper::Html::parse_document(html);
    assert!(doc.errors.is_empty(), "HTML parse errors: {:?}", doc.errors);
    // Self-contained: nothing is loaded from elsewhere.
    for sel in ["script", "link", "img", "iframe"] {
        let s = scraper::Selector::parse(sel).expect("selector");
        assert_eq!(doc.select(&s).count(), 0, "the page has a <{sel}>");
    }
    let linked = scraper::Selector::parse("[src], [href]").expect("selector");
    assert_eq!(
        doc.select(&linked).count(),
        0,
        "the page links to something"
    );
    let style = scraper::Selector::parse("style").expect("selector");
    for st in doc.select(&style) {
        let css: String = st.text().collect();
        assert!(
            !css.contains("url(") && !css.contains("@import"),
            "CSS loads something"
        );
    }
    let figure = scraper::Selector::parse("figure.chart").expect("selector");
    let svg_in = scraper::Selector::parse("svg").expect("selector");
    let mut charts = BTreeMap::new();
    for f in doc.select(&figure) {
        let id = f
            .value()
            .attr("data-chart")
            .expect("data-chart")
            .to_string();
        let data: Value = serde_json::from_str(f.value().attr("data-values").expect("data-values"))
            .expect("data-values is JSON");
        assert_eq!(f.select(&svg_in).count(), 1, "{id}: one svg");
        assert!(charts.insert(id.clone(), data).is_none(), "{id} twice");
    }
    // Every chart's SVG, as written in the file, is well-formed XML.
    let mut n_svg = 0;
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("svg closes") + start + "</svg>".len();
        let svg = &rest[start..end];
        let mut reader = quick_xml::Reader::from_str(svg);
        let mut depth = 0i32;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Start(_)) => depth += 1,
                Ok(quick_xml::events::Event::End(_)) => depth -= 1,
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("SVG {n_svg} is not well-formed: {e}\n{svg}"),
            }
        }
        assert_eq!(depth, 0, "SVG {n_svg}: unbalanced");
        n_svg += 1;
        rest = &rest[end..];
    }
    assert_eq!(n_svg, charts.len(), "one SVG per chart");
    charts
}

fn render(dir: &Path, baseline: Option<&Path>) -> String {
    let path = ares::report::render_dir(dir, baseline).expect("report renders");
    assert_eq!(path, dir.join("report.html"));
    std::fs::read_to_string(path).expect("read report.html")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Counts per value of a histogram's data: bin centre -> count.
fn bins_by_centre(data: &Value) -> BTreeMap<i64, u64> {
    data["bins"]
        .as_array()
        .expect("bins")
        .iter()
        .filter(|b| b[2].as_u64() != Some(0))
        .map(|b| {
            let centre = (b[0].as_f64().expect("lo") + b[1].as_f64().expect("hi")) / 2.0;
            (centre.round() as i64, b[2].as_u64().expect("count"))
        })
        .collect()
}

#[test]
fn synth_report_plots_the_run_files() {
    let run = copy_run("synth");
    let charts = check_page(&render(run.path(), None));
    let report = json(&run.path().join("report.json"));
    let stages = report["stages"].as_array().expect("stages");
    let funnel = &charts["synth-funnel"];
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"].as_str().expect("stage"))
        .collect();
    assert_eq!(funnel["categories"], serde_json::json!(names));
    let col = |k: &str| -> Vec<f64> {
        stages
            .iter()
            .map(|s| s[k].as_f64().expect("count"))
            .collect()
    };
    assert_eq!(f64s(&funnel["series"]["in"]), col("input"));
    assert_eq!(f64s(&funnel["series"]["out"]), col("output"));

    let domains = report["domains"].as_object().expect("domains");
    let d = &charts["synth-domains"];
    assert_eq!(
        d["categories"],
        serde_json::json!(domains.keys().collect::<Vec<_>>())
    );
    for (series, key) in [
        ("chunks", "chunks"),
        ("items", "items"),
        ("accepted", "accepted"),
    ] {
        let want: Vec<f64> = domains
            .values()
            .map(|c| c[key].as_f64().expect("n"))
            .collect();
        assert_eq!(f64s(&d["series"][series]), want, "{series}");
    }

    // Rejection reasons: every drawn count is that stage's count for that reason.
    let r = &charts["synth-reasons"];
    for (cat, n) in r["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .zip(f64s(&r["series"]["rejected"]))
    {
        let (stage, reason) = cat
            .as_str()
            .expect("str")
            .split_once(": ")
            .expect("stage: reason");
        let s = stages.iter().find(|s| s["stage"] == stage).expect("stage");
        assert_eq!(s["reasons"][reason].as_f64(), Some(n), "{cat}");
    }

    // Rubric sizes, weights and personas, recomputed from dataset.jsonl and rejected.jsonl.
    let accepted = read_jsonl(&run.path().join("dataset.jsonl"));
    let rejected = read_jsonl(&run.path().join("rejected.jsonl"));
    assert!(!accepted.is_empty(), "the fixture has accepted items");
    let mut sizes: BTreeMap<i64, u64> = BTreeMap::new();
    let mut weights: BTreeMap<i64, u64> = BTreeMap::new();
    for a in &accepted {
        let criteria = a["criteria"].as_array().expect("criteria");
        *sizes.entry(criteria.len() as i64).or_default() += 1;
        for c in criteria {
            *weights
                .entry(c["weight"].as_f64().expect("weight").round() as i64)
                .or_default() += 1;
        }
    }
    assert_eq!(bins_by_centre(&charts["synth-rubric-size"]), sizes);
    assert_eq!(bins_by_centre(&charts["synth-weights"]), weights);
    let p = &charts["synth-personas"];
    for (i, persona) in p["categories"]
        .as_array()
        .expect("personas")
        .iter()
        .enumerate()
    {
        let acc = accepted
            .iter()
            .filter(|a| &a["extra"]["synth"]["persona"] == persona)
            .count() as f64;
        let rej = rejected.iter().filter(|r| &r["persona"] == persona).count() as f64;
        assert_eq!(f64s(&p["series"]["accepted"])[i], acc, "{persona}");
        assert_eq!(f64s(&p["series"]["rejected"])[i], rej, "{persona}");
    }
}

#[test]
fn synth_item_text_is_escaped() {
    let run = copy_run("synth");
    let path = run.path().join("dataset.jsonl");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    lines[0]["question"] = Value::from("<script>alert('x')</script> & <b>bold</b>?");
    let out: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&path, out.join("\n") + "\n").expect("write");
    let html = render(run.path(), None);
    check_page(&html);
    assert!(
        !html.contains("<script>") && !html.contains("<b>bold"),
        "unescaped item text"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold"));
}

#[test]
fn synth_run_with_no_accepted_items_says_so() {
    let run = copy_run("synth");
    std::fs::write(run.path().join("dataset.jsonl"), "").expect("empty dataset");
    let mut report = json(&run.path().join("report.json"));
    for s in report["stages"].as_array_mut().expect("stages") {
        if s["stage"] == "accepted" {
            s["input"] = 0.into();
            s["output"] = 0.into();
        }
    }
    report["totals"]["accepted"] = 0.into();
    std::fs::write(run.path().join("report.json"), report.to_string()).expect("write");
    let html = render(run.path(), None);
    let charts = check_page(&html);
    assert!(html.contains("This run accepted no items"), "{html}");
    assert!(!charts.contains_key("synth-rubric-size") && !charts.contains_key("synth-weights"));
    assert!(charts.contains_key("synth-funnel"));
}

/// (sample label, reward) of the scored responses of one method, from the run's files.
fn scored(dir: &Path, set: &str, method: &str) -> Vec<(f64, f64)> {
    let labels: BTreeMap<u64, f64> = read_jsonl(&dir.join(format!("samples-{set}.jsonl")))
        .iter()
        .map(|s| {
            (
                s["line"].as_u64().expect("line"),
                s["label"].as_f64().expect("label"),
            )
        })
        .collect();
    read_jsonl(&dir.join(format!("judged-{set}-{method}.jsonl")))
        .iter()
        .filter(|r| r["status"] == "ok")
        .map(|r| {
            (
                labels[&r["line"].as_u64().expect("line")],
                r["reward"].as_f64().expect("reward"),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * 0.5;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

#[test]
fn eval_report_plots_the_run_files() {
    let run = copy_run("eval");
    let charts = check_page(&render(run.path(), None));
    let report = json(&run.path().join("report.json"));
    for d in report["datasets"].as_array().expect("datasets") {
        let set = d["dataset"].as_str().expect("dataset");
        // Agreement: each drawn estimate is the report's.
        let a = &charts[&format!("eval-{set}-agreement")];
        let panels = [
            ("Spearman ρ", "spearman"),
            ("Kendall τ-b", "kendall_tau_b"),
            ("pairwise accuracy", "pairwise_accuracy"),
        ];
        let mut drawn = 0;
        for (panel, key) in panels {
            let Some(rows) = a["panels"][panel].as_array() else {
                continue;
            };
            let want: Vec<&Value> = d["methods"]
                .as_array()
                .expect("methods")
                .iter()
                .filter_map(|m| m.get(key))
                .collect();
            assert_eq!(rows.len(), want.len(), "{set} {panel}");
            for (row, est) in rows.iter().zip(want) {
                for k in ["value", "low", "high"] {
                    assert_eq!(row[k], est[k], "{set} {panel} {k}");
                }
                drawn += 1;
            }
        }
        assert!(drawn > 0, "{set}: no estimate drawn");
        // Box plots: n and median per human label, recomputed from judged + samples files.
        for m in d["methods"].as_array().expect("methods") {
            let method = m["method"].as_str().expect("method");
            let pairs = scored(run.path(), set, method);
            let id = format!("eval-{set}-{method}-box");
            if pairs.is_empty() {
                assert!(!charts.contains_key(&id), "{id} drawn with no data");
                continue;
            }
            let groups = charts[&id]["groups"].as_array().expect("groups");
            let labels: Vec<f64> = if set == "medquad" {
                vec![1.0, 2.0, 3.0, 4.0]
            } else {
                vec![1.0, 0.0]
            };
            assert_eq!(groups.len(), labels.len());
            for (g, l) in groups.iter().zip(labels) {
                let v: Vec<f64> = pairs.iter().filter(|p| p.0 == l).map(|p| p.1).collect();
                if v.is_empty() {
                    assert!(g["box"].is_null(), "{id} {l}");
                    continue;
                }
                assert_eq!(g["box"]["n"].as_u64(), Some(v.len() as u64), "{id} {l}");
                let got = g["box"]["median"].as_f64().expect("median");
                assert!((got - median(v)).abs() < 1e-12, "{id} {l}");
            }
            // Calibration (llmbar, verdict-based method): every scored response is in a bin,
            // and each bin's observed share is within [0, 1].
            let cal = format!("eval-{set}-{method}-calibration");
            if let Some(c) = charts.get(&cal) {
                let bins = c["bins"].as_array().expect("bins");
                let n: u64 = bins.iter().map(|b| b["n"].as_u64().expect("n")).sum();
                assert_eq!(n, pairs.len() as u64, "{cal}");
                let preferred: f64 = bins
                    .iter()
                    .map(|b| b["n"].as_f64().expect("n") * b["observed"].as_f64().expect("o"))
                    .sum();
                let want = pairs.iter().filter(|p| p.0 == 1.0).count() as f64;
                assert!((preferred - want).abs() < 1e-9, "{cal}");
            }
        }
    }
    assert!(
        charts.contains_key("eval-llmbar-rubric_logprob-calibration"),
        "llmbar's hard labels get a reliability curve"
    );
}

#[test]
fn eval_run_with_an_empty_data_set_says_so() {
    let run = copy_run("eval");
    let path = run.path().join("report.json");
    let mut report = json(&path);
    for d in report["datasets"].as_array_mut().expect("datasets") {
        d["samples"] = 0.into();
        for m in d["methods"].as_array_mut().expect("methods") {
            m["scored"] = 0.into();
            let m = m.as_object_mut().expect("method");
            for k in ["spearman", "kendall_tau_b", "pairwise_accuracy"] {
                m.remove(k);
            }
        }
    }
    std::fs::write(&path, report.to_string()).expect("write");
    for e in std::fs::read_dir(run.path()).expect("dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("samples-") || name.starts_with("judged-") {
            std::fs::write(&p, "").expect("empty file");
        }
    }
    let html = render(run.path(), None);
    let charts = check_page(&html);
    assert!(charts.is_empty(), "charts drawn for no data: {charts:?}");
    assert!(
        html.contains("The medquad sample is empty") && html.contains("The llmbar sample is empty")
    );
}

/// llama-batched-bench rows of a baseline file: (B, S_PP, S_TG) for (PP, TG).
fn baseline_rows(path: &Path, pp: u64, tg: u64) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(path)
        .expect("baseline")
        .lines()
        .filter_map(|l| {
            let c: Vec<f64> = l
                .trim_matches('|')
                .split('|')
                .map(|x| x.trim().parse().ok())
                .collect::<Option<Vec<f64>>>()?;
            (c.len() == 10 && c[0] == pp as f64 && c[1] == tg as f64).then(|| (c[2], c[5], c[7]))
        })
        .collect()
}

#[test]
fn bench_report_plots_rows_and_baseline() {
    let run = copy_run("bench");
    let charts = check_page(&render(run.path(), None));
    let report = json(&run.path().join("report.json"));
    let rows = report["batched"]["rows"].as_array().expect("rows");
    let (pp, tg) = (
        rows[0]["pp"].as_u64().expect("pp"),
        rows[0]["tg"].as_u64().expect("tg"),
    );
    let base = baseline_rows(&run.path().join("llama-baseline.txt"), pp, tg);
    assert!(!base.is_empty());
    for (key, col, bcol) in [("s_pp", "s_pp", 1), ("s_tg", "s_tg", 2)] {
        let c = &charts[&format!("bench-{key}-pp{pp}-tg{tg}")];
        let ares: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r["b"].as_f64().expect("b"), r[col].as_f64().expect("s")))
            .collect();
        assert_eq!(c["lines"]["ares"], serde_json::json!(ares), "{key}");
        let llama: Vec<(f64, f64)> = base
            .iter()
            .map(|r| (r.0, if bcol == 1 { r.1 } else { r.2 }))
            .collect();
        assert_eq!(c["lines"]["llama.cpp"], serde_json::json!(llama), "{key}");
    }
    // Without the kept baseline only ares is drawn.
    std::fs::remove_file(run.path().join("llama-baseline.txt")).expect("remove");
    let charts = check_page(&render(run.path(), None));
    let c = &charts[&format!("bench-s_tg-pp{pp}-tg{tg}")];
    assert!(c["lines"].get("llama.cpp").is_none());
}

#[test]
fn ares_report_rebuilds_the_page_and_rejects_other_folders() {
    let run = copy_run("bench");
    std::fs::remove_file(run.path().join("llama-baseline.txt")).expect("remove");
    let dir = run.path().to_str().expect("utf-8 path");
    let baseline = fixture("bench").join("llama-baseline.txt");
    let out = ares(&[
        "report",
        dir,
        "--baseline",
        baseline.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(run.path().join("report.html")).expect("page");
    assert!(check_page(&html)
        .values()
        .any(|c| c["lines"].get("llama.cpp").is_some()));

    let empty = tempfile::tempdir().expect("temp dir");
    let out = ares(&["report", empty.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("report.json"));
    std::fs::write(empty.path().join("report.json"), "{\"x\": 1}").expect("write");
    let out = ares(&["report", empty.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the report.json"));
}

#[test]
fn bench_out_writes_json_and_page_and_a_bad_baseline_stops_before_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bench");
    let model = crate::common::default_model_path();
    let baseline = fixture("bench").join("llama-baseline.txt");
    let args = |base: &Path| {
        vec![
            "bench".to_string(),
            "-m".into(),
            model.display().to_string(),
            "-t".into(),
            "2".into(),
            "--npp".into(),
            "8".into(),
            "--ntg".into(),
            "2".into(),
            "--npl".into(),
            "1,2".into(),
            "--out".into(),
            out.display().to_string(),
            "--baseline".into(),
            base.display().to_string(),
        ]
    };
    let a = args(&baseline);
    let o = ares(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = json(&out.join("report.json"));
    assert_eq!(report["batched"]["rows"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        std::fs::read_to_string(out.join("llama-baseline.txt")).expect("kept baseline"),
        std::fs::read_to_string(&baseline).expect("baseline")
    );
    let html = std::fs::read_to_string(out.join("report.html")).expect("page");
    let charts = check_page(&html);
    let c = &charts["bench-s_tg-pp8-tg2"];
    let want: Vec<(f64, f64)> = report["batched"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["b"].as_f64().expect("b"), r["s_tg"].as_f64().expect("s")))
        .collect();
    assert_eq!(c["lines"]["ares"], serde_json::json!(want));
    // The baseline has no PP 8 / TG 2 rows: the page says only ares is drawn.
    assert!(c["lines"].get("llama.cpp").is_none());
    assert!(html.contains("only ares is drawn"));

    let bad = dir.path().join("not-a-baseline.txt");
    std::fs::write(&bad, "hello\n").expect("write");
    let a = args(&bad);
    let o = ares(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no llama-batched-bench table"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn an_eval_run_from_before_reports_gets_its_statistics_drawn() {
    let run = copy_run("eval");
    for set in ["medquad", "llmbar"] {
        std::fs::remove_file(run.path().join(format!("samples-{set}.jsonl"))).expect("remove");
    }
    let html = render(run.path(), None);
    let charts = check_page(&html);
    let ids: Vec<&String> = charts.keys().collect();
    assert_eq!(ids, ["eval-llmbar-agreement", "eval-medquad-agreement"]);
    assert_eq!(html.matches("it was made before reports").count(), 2);
}

//! The synth page: the stage funnel with its top rejection reasons, items per domain and persona,
//! rubric size and weight histograms, and five accepted and five rejected items with reasons.
//!
//! Reads `report.json` ([`SynthReport`]) and the run's `dataset.jsonl` (accepted items in any
//! synth format: the rubric via `judge::formats`, the provenance from `extra.synth` or `synth`)
//! and `rejected.jsonl` ([`RejectedRecord`]). Counts from the JSONL files cover every session
//! of a resumed run; the funnel covers the last session, as `report.json` does.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::judge::formats::{import, Format};
use crate::judge::RubricItem;
use crate::report::chart::{shorten, Bars, Figure, Histogram};
use crate::report::html::{escape, Page};
use crate::report::ReportError;
use crate::synth::output::{DATASET_FILE, REJECTED_FILE};
use crate::synth::record::{Provenance, RejectedRecord};
use crate::synth::SynthReport;

/// Items shown in full, accepted and rejected each.
pub const SHOWN_ITEMS: usize = 5;
/// Personas drawn (the most frequent ones).
const MAX_PERSONAS: usize = 20;
/// Rejection reasons drawn.
const MAX_REASONS: usize = 12;

/// An accepted item as read back: its rubric and, when present, its provenance.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub item: RubricItem,
    pub provenance: Option<Provenance>,
}

/// What the run's JSONL files hold.
#[derive(Debug, Clone, Default)]
pub struct RunFiles {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<RejectedRecord>,
    /// Lines that could not be read back, per file.
    pub unreadable: BTreeMap<String, usize>,
}

/// One accepted line in whichever synth format it was written.
fn accepted_line(text: &str) -> Option<Accepted> {
    let value: Value = serde_json::from_str(text).ok()?;
    let provenance = value
        .get("extra")
        .and_then(|e| e.get("synth"))
        .or_else(|| value.get("synth"))
        .and_then(|p| serde_json::from_value::<Provenance>(p.clone()).ok());
    let item = [Format::Ares, Format::Rar, Format::HealthBench]
        .into_iter()
        .find_map(|f| import(f, value.clone()).ok())?;
    Some(Accepted { item, provenance })
}

/// Reads `dataset.jsonl` and `rejected.jsonl` of `dir` (a missing file is an empty one).
pub fn read_files(dir: &Path) -> Result<RunFiles, ReportError> {
    let mut files = RunFiles::default();
    let lines = |name: &str| -> Result<Vec<crate::jsonl::Line>, ReportError> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(Vec::new());
        }
        crate::jsonl::read_lines(&path).map_err(|source| ReportError::Io { path, source })
    };
    for line in lines(DATASET_FILE)? {
        match line.text.ok().as_deref().and_then(accepted_line) {
            Some(a) => files.accepted.push(a),
            None => *files.unreadable.entry(DATASET_FILE.into()).or_default() += 1,
        }
    }
    for line in lines(REJECTED_FILE)? {
        match line
            .text
            .ok()
            .and_then(|t| serde_json::from_str::<RejectedRecord>(&t).ok())
        {
            Some(r) => files.rejected.push(r),
            None => *files.unreadable.entry(REJECTED_FILE.into()).or_default() += 1,
        }
    }
    Ok(files)
}

/// The stage funnel: units in and out of each stage.
pub fn funnel(report: &SynthReport) -> Bars {
    Bars {
        categories: report.stages.iter().map(|s| s.stage.clone()).collect(),
        series: vec![
            (
                "in".into(),
                report.stages.iter().map(|s| s.input as f64).collect(),
            ),
            (
                "out".into(),
                report.stages.iter().map(|s| s.output as f64).collect(),
            ),
        ],
        value_axis: "units (inputs, chunks, or items from generate on)".into(),
        category_axis: "stage".into(),
    }
}

/// The most frequent rejection reasons over all stages, as `stage: reason`.
pub fn top_reasons(report: &SynthReport, n: usize) -> Vec<(String, usize)> {
    let mut all: Vec<(String, usize)> = report
        .stages
        .iter()
        .flat_map(|s| {
            s.reasons
                .iter()
                .map(move |(r, c)| (format!("{}: {r}", s.stage), *c))
        })
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

/// Accepted and rejected items per persona (all sessions), the `n` most frequent personas.
pub fn personas(files: &RunFiles, n: usize) -> Bars {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for a in &files.accepted {
        if let Some(p) = &a.provenance {
            counts.entry(p.persona.clone()).or_default().0 += 1;
        }
    }
    for r in &files.rejected {
        if let Some(p) = &r.persona {
            counts.entry(p.clone()).or_default().1 += 1;
        }
    }
    let mut rows: Vec<(String, (usize, usize))> = counts.into_iter().collect();
    rows.sort_by(|a, b| {
        (b.1 .0 + b.1 .1)
            .cmp(&(a.1 .0 + a.1 .1))
            .then(a.0.cmp(&b.0))
    });
    rows.truncate(n);
    Bars {
        categories: rows.iter().map(|r| r.0.clone()).collect(),
        series: vec![
            (
                "accepted".into(),
                rows.iter().map(|r| r.1 .0 as f64).collect(),
            ),
            (
                "rejected".into(),
                rows.iter().map(|r| r.1 .1 as f64).collect(),
            ),
        ],
        value_axis: "items (all sessions)".into(),
        category_axis: "persona".into(),
    }
}

/// Criterion weights of the accepted items, all criteria together.
pub fn weights(files: &RunFiles) -> Vec<f64> {
    files
        .accepted
        .iter()
        .flat_map(|a| a.item.criteria.iter().map(|c| c.weight))
        .collect()
}

/// Criteria per accepted item.
pub fn rubric_sizes(files: &RunFiles) -> Vec<f64> {
    files
        .accepted
        .iter()
        .map(|a| a.item.criteria.len() as f64)
        .collect()
}

/// Up to `n` rejected records, one per stage first (funnel order), then in file order.
pub fn pick_rejected(rejected: &[RejectedRecord], n: usize) -> Vec<&RejectedRecord> {
    let mut picked: Vec<usize> = Vec::new();
    for stage in crate::synth::record::STAGES {
        if let Some(i) = rejected.iter().position(|r| r.stage == stage) {
            picked.push(i);
        }
    }
    picked.truncate(n);
    for i in 0..rejected.len() {
        if picked.len() >= n {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    picked.iter().map(|&i| &rejected[i]).collect()
}

/// Bin width of a weight histogram: 1 for whole weights, else about a twentieth of the range.
fn weight_bin(weights: &[f64]) -> (f64, bool) {
    if weights.iter().all(|w| w.fract() == 0.0) {
        return (1.0, true);
    }
    let (lo, hi) = weights
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &w| {
            (a.min(w), b.max(w))
        });
    let raw = ((hi - lo) / 20.0).max(1e-3);
    let step = 10f64.powf(raw.log10().floor());
    let width = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * step)
        .find(|w| *w >= raw)
        .unwrap_or(raw);
    (width, false)
}

/// The figures of a synth page, in page order (the ones that have data).
pub fn figures(report: &SynthReport, files: &RunFiles) -> Result<Vec<Figure>, ReportError> {
    let mut out = Vec::new();
    out.push(funnel(report).draw(
        "synth-funnel",
        "Stage funnel",
        "Units entering (in) and leaving (out) each stage of this session, top to bottom in pipeline order.",
    )?);
    let reasons = top_reasons(report, MAX_REASONS);
    if !reasons.is_empty() {
        out.push(
            Bars {
                categories: reasons.iter().map(|r| r.0.clone()).collect(),
                series: vec![(
                    "rejected".into(),
                    reasons.iter().map(|r| r.1 as f64).collect(),
                )],
                value_axis: "units rejected".into(),
                category_axis: "stage: reason".into(),
            }
            .draw(
                "synth-reasons",
                "Top rejection reasons",
                "The most frequent reasons units were rejected, over all stages (numbers in reasons grouped as N).",
            )?,
        );
    }
    if !report.domains.is_empty() {
        let d = &report.domains;
        out.push(
            Bars {
                categories: d.keys().cloned().collect(),
                series: vec![
                    ("chunks".into(), d.values().map(|c| c.chunks as f64).collect()),
                    ("items".into(), d.values().map(|c| c.items as f64).collect()),
                    (
                        "accepted".into(),
                        d.values().map(|c| c.accepted as f64).collect(),
                    ),
                ],
                value_axis: "count".into(),
                category_axis: "domain".into(),
            }
            .draw(
                "synth-domains",
                "Items per domain",
                "Chunks labelled with each domain, items generated from them (one per persona) and items accepted, this session.",
            )?,
        );
    }
    let p = personas(files, MAX_PERSONAS);
    if !p.categories.is_empty() {
        out.push(p.draw(
            "synth-personas",
            "Items per persona",
            "Accepted (dataset.jsonl) and rejected (rejected.jsonl) items per persona, all sessions; the most frequent personas.",
        )?);
    }
    let sizes = rubric_sizes(files);
    if !sizes.is_empty() {
        out.push(
            Histogram::of(&sizes, 1.0, true, "criteria per rubric", "accepted items").draw(
                "synth-rubric-size",
                "Rubric size",
                "Number of criteria in each accepted item's rubric.",
            )?,
        );
    }
    let w = weights(files);
    if !w.is_empty() {
        let (width, centered) = weight_bin(&w);
        out.push(
            Histogram::of(
                &w,
                width,
                centered,
                "criterion weight (signed; negative = pitfall)",
                "criteria",
            )
            .draw(
                "synth-weights",
                "Criterion weights",
                "Weights of all criteria of the accepted items.",
            )?,
        );
    }
    Ok(out)
}

/// What the pitfall stage did this session, in one line.
fn pitfall_line(report: &SynthReport) -> String {
    let p = &report.pitfalls;
    let source = format!(
        "{} pitfalls dropped because the source passage states them",
        p.true_in_source
    );
    if !report.thresholds.pitfall_stage {
        return if report.thresholds.reference_check {
            format!("off; {source}")
        } else {
            "off".to_string()
        };
    }
    format!(
        "{} items, {} requests: {} mistakes added as pitfalls, {} skipped, {} items without output; the reference check kept {} of the {} it judged. {} copied facts added as criteria, {} skipped; the reference check kept {} of the {} it judged",
        p.items, p.requests, p.added, p.skipped, p.errors, p.kept, p.checked,
        p.facts, p.facts_skipped, p.facts_kept, p.facts_checked
    ) + &if report.thresholds.pitfall_repair {
        format!(
            ". Repair round: {} items, {} requests, {} judged again, {} passed the reference check, {} accepted",
            p.repair_items, p.repair_requests, p.repair_judged, p.repair_passed_check, p.repair_accepted
        )
    } else {
        ". Repair round: off".to_string()
    } + &format!(". Of every origin, {source}")
}

/// The whole synth page for the run in `dir`.
pub fn render(dir: &Path, report: &SynthReport) -> Result<String, ReportError> {
    let files = read_files(dir)?;
    let figs = figures(report, &files)?;
    let fig = |id: &str| figs.iter().find(|f| f.id == id);
    let accepted_total = files.accepted.len();
    let mut page = Page::new(&format!("ares synth: {}", dir.display()));
    page.meta(&[
        ("run folder", dir.display().to_string()),
        ("model sha256", report.model_sha256.clone()),
        ("seed", report.seed.to_string()),
        ("domains configured", report.domains_configured.join(", ")),
        ("personas per chunk", report.personas.to_string()),
        (
            "this session",
            format!(
                "{} documents, {} chunks, {} model requests ({} engine errors), {:.1} s, {:.1} tokens/s, {:.2} accepted items/min{}",
                report.ingest.documents,
                report.ingest.chunks,
                report.requests,
                report.engine_errors,
                report.seconds,
                report.tokens_per_second,
                report.items_per_minute,
                if report.resumed { " (resumed run)" } else { "" }
            ),
        ),
        (
            "files (all sessions)",
            format!(
                "{} accepted, {} rejected",
                report.totals.accepted, report.totals.rejected
            ),
        ),
        ("pitfall stage", pitfall_line(report)),
    ]);
    if accepted_total == 0 {
        page.empty("This run accepted no items: there are no rubrics to draw and no accepted items to show. The funnel and the rejection reasons below say where the items stopped.");
    }
    for (file, n) in &files.unreadable {
        page.p(&format!(
            "{n} lines of {file} could not be read back and are left out of the charts."
        ));
    }

    page.h2("Stage funnel", "funnel");
    if let Some(f) = fig("synth-funnel") {
        page.figure(f);
    }
    let rows: Vec<Vec<String>> = report
        .stages
        .iter()
        .map(|s| {
            let mut reasons: Vec<(&String, &usize)> = s.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            vec![
                s.stage.clone(),
                s.input.to_string(),
                s.output.to_string(),
                s.pass_rate
                    .map_or("-".into(), |r| format!("{:.1}%", 100.0 * r)),
                reasons
                    .iter()
                    .take(3)
                    .map(|(r, n)| format!("{r} ({n})"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    page.table(
        &["stage", "in", "out", "pass", "top rejection reasons"],
        &rows,
    );
    match fig("synth-reasons") {
        Some(f) => page.figure(f),
        None => page.p("No unit was rejected."),
    }

    page.h2("Domains and personas", "domains");
    match fig("synth-domains") {
        Some(f) => page.figure(f),
        None => page.empty("No chunk was labelled with a domain."),
    }
    if !report.domains.is_empty() {
        let rows: Vec<Vec<String>> = report
            .domains
            .iter()
            .map(|(d, c)| {
                vec![
                    d.clone(),
                    c.chunks.to_string(),
                    c.accepted.to_string(),
                    c.per_source(),
                ]
            })
            .collect();
        page.table(
            &["domain", "chunks", "accepted items", "chunks per source"],
            &rows,
        );
    }
    match fig("synth-personas") {
        Some(f) => page.figure(f),
        None => page.empty("No item names a persona."),
    }

    page.h2("Rubrics", "rubrics");
    let hist: Vec<Figure> = ["synth-rubric-size", "synth-weights"]
        .iter()
        .filter_map(|id| fig(id).cloned())
        .collect();
    if hist.is_empty() {
        page.empty("No accepted items: no rubric sizes or weights to draw.");
    } else {
        page.grid(&hist);
    }

    page.h2(
        &format!("Accepted items (first {SHOWN_ITEMS} of {accepted_total})"),
        "accepted",
    );
    if files.accepted.is_empty() {
        page.empty("No accepted items.");
    }
    for a in files.accepted.iter().take(SHOWN_ITEMS) {
        page.raw(&accepted_html(a));
    }
    page.h2(
        &format!(
            "Rejected items ({} of {}, one per stage first)",
            SHOWN_ITEMS.min(files.rejected.len()),
            files.rejected.len()
        ),
        "rejected",
    );
    if files.rejected.is_empty() {
        page.empty("No rejected items.");
    }
    for r in pick_rejected(&files.rejected, SHOWN_ITEMS) {
        page.raw(&rejected_html(r));
    }
    Ok(page.finish())
}

fn tag(class: &str, text: &str) -> String {
    format!("<span class=\"tag {class}\">{}</span>", escape(text))
}

fn accepted_html(a: &Accepted) -> String {
    let mut s = String::from("<div class=\"item accepted\">\n<div>");
    s.push_str(&tag("id", &a.item.id));
    if let Some(p) = &a.provenance {
        s.push_str(&tag("domain", &p.domain));
        s.push_str(&tag("persona", &p.persona));
        s.push_str(&tag("source", &p.source));
        if let (Some(r), Some(d)) = (p.reference_reward, p.degraded_reward) {
            s.push_str(&tag(
                "reward",
                &format!("reference reward {r:.2}, degraded {d:.2}"),
            ));
        }
    }
    s.push_str("</div>\n");
    s.push_str(&format!(
        "<p><strong>Question.</strong></p><pre>{}</pre>\n",
        escape(&a.item.question)
    ));
    if let Some(ans) = &a.item.reference_answer {
        s.push_str(&format!(
            "<p><strong>Reference answer.</strong></p><pre>{}</pre>\n",
            escape(&shorten(ans, 800))
        ));
    }
    s.push_str("<table><thead><tr><th>weight</th><th>category</th><th>criterion</th></tr></thead><tbody>\n");
    for c in &a.item.criteria {
        s.push_str(&format!(
            "<tr><td class=\"num\">{:+.1}</td><td>{}</td><td>{}</td></tr>\n",
            c.weight,
            escape(c.category.as_str()),
            escape(&c.text)
        ));
    }
    s.push_str("</tbody></table>\n");
    if let Some(p) = &a.provenance {
        let verdicts: Vec<String> = p
            .filters
            .iter()
            .map(|f| {
                let score = f.score.map_or(String::new(), |v| format!(" {v:.2}"));
                format!("{}{score}: {}", f.filter, f.reason)
            })
            .collect();
        if !verdicts.is_empty() {
            s.push_str(&format!(
                "<p class=\"note\">Filters passed: {}</p>\n",
                escape(&verdicts.join("; "))
            ));
        }
    }
    s.push_str("</div>\n");
    s
}

fn rejected_html(r: &RejectedRecord) -> String {
    let mut s = String::from("<div class=\"item rejected\">\n<div>");
    s.push_str(&tag("stage", &r.stage));
    s.push_str(&tag("source", &r.source));
    for v in [&r.domain, &r.persona].into_iter().flatten() {
        s.push_str(&tag("label", v));
    }
    s.push_str("</div>\n");
    s.push_str(&format!(
        "<p><strong>Reason.</strong> {}</p>\n",
        escape(&r.reason)
    ));
    if let Some(q) = &r.question {
        s.push_str(&format!(
            "<p><strong>Question.</strong></p><pre>{}</pre>\n",
            escape(q)
        ));
    }
    if let Some(a) = &r.answer {
        s.push_str(&format!(
            "<p><strong>Answer.</strong></p><pre>{}</pre>\n",
            escape(&shorten(a, 600))
        ));
    }
    if let Some(o) = &r.output {
        s.push_str(&format!(
            "<p><strong>Model output.</strong></p><pre>{}</pre>\n",
            escape(o)
        ));
    }
    if let Some(w) = &r.warning {
        s.push_str(&format!("<p class=\"note\">{}</p>\n", escape(w)));
    }
    s.push_str("</div>\n");
    s
}

//! The eval page, per data set and method: the reward distribution per human label (box plots:
//! per expert grade for medquad, preferred vs other output for llmbar), the agreement statistics
//! with their bootstrap intervals as error bars, a reliability (calibration) curve of the
//! verdict-based reward where people gave hard labels (llmbar: which output is better), and the
//! ten largest disagreements.
//!
//! Reads `report.json` ([`EvalReport`]), each method's `judged-<set>-<method>.jsonl`
//! ([`JudgeRecord`]) and `samples-<set>.jsonl` ([`SampleLabel`]), joined on the record's `line`.
//! A run made before `samples-*.jsonl` existed gets the statistics chart and a sentence in place
//! of the per-response charts.

use std::collections::BTreeMap;
use std::path::Path;

use crate::eval::runner::{samples_file, Dataset, DatasetResult, EvalReport, Method, SampleLabel};
use crate::judge::{JudgeRecord, Mode, Status};
use crate::report::chart::{shorten, BoxPlot, Figure, Interval, Intervals, Line, Lines};
use crate::report::html::{escape, Page};
use crate::report::ReportError;

/// Disagreements listed per data set and method.
pub const DISAGREEMENTS: usize = 10;
/// Bins of the reliability curve (equal width on [0, 1]).
pub const CALIBRATION_BINS: usize = 10;

/// Medquad's expert grades.
const GRADES: [&str; 4] = ["1 Incorrect", "2 Related", "3 Incomplete", "4 Excellent"];

/// Reads a JSONL file of `T`, skipping lines that do not parse (counted); `None` when the file
/// does not exist.
fn read_records<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<(Vec<T>, usize)>, ReportError> {
    if !path.exists() {
        return Ok(None);
    }
    let lines = crate::jsonl::read_lines(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    let mut bad = 0;
    for l in lines {
        match l.text.ok().and_then(|t| serde_json::from_str(&t).ok()) {
            Some(r) => out.push(r),
            None => bad += 1,
        }
    }
    Ok(Some((out, bad)))
}

/// One method's rewards joined with the human labels.
#[derive(Debug, Clone)]
pub struct Joined {
    pub method: Method,
    /// Judged with per-criterion verdicts (the reward aggregates verdict P(yes)).
    pub verdict_based: bool,
    /// (sample, reward) for every response the method scored.
    pub scored: Vec<(SampleLabel, f64)>,
}

/// The samples of a data set and each method's scored rewards, from `dir`. `None` when the run
/// has no samples file.
pub fn join(dir: &Path, d: &DatasetResult) -> Result<Option<Vec<Joined>>, ReportError> {
    let Some((samples, _)) = read_records::<SampleLabel>(&dir.join(samples_file(d.dataset)))?
    else {
        return Ok(None);
    };
    let by_line: BTreeMap<usize, &SampleLabel> = samples.iter().map(|s| (s.line, s)).collect();
    let mut out = Vec::new();
    for m in &d.methods {
        // The records sit beside report.json; `records` may name another folder if it moved.
        let name = m
            .records
            .file_name()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| m.records.clone());
        let records: Vec<JudgeRecord> = read_records(&dir.join(name))?
            .map(|(r, _)| r)
            .unwrap_or_default();
        let verdict_based = records
            .iter()
            .any(|r| r.mode == Mode::Logprob && !r.criteria.is_empty());
        let scored = records
            .iter()
            .filter(|r| r.status == Status::Ok)
            .filter_map(|r| Some(((*by_line.get(&r.line)?).clone(), r.reward?)))
            .collect();
        out.push(Joined {
            method: m.method,
            verdict_based,
            scored,
        });
    }
    Ok(Some(out))
}

/// Rewards per human label: medquad's four grades, or llmbar's preferred / other output.
pub fn box_groups(dataset: Dataset, j: &Joined) -> Vec<(String, Vec<f64>)> {
    match dataset {
        Dataset::Medquad => GRADES
            .iter()
            .enumerate()
            .map(|(g, name)| {
                let v = j
                    .scored
                    .iter()
                    .filter(|(s, _)| s.label == (g + 1) as f64)
                    .map(|(_, r)| *r)
                    .collect();
                (name.to_string(), v)
            })
            .collect(),
        Dataset::Llmbar => [(1.0, "preferred"), (0.0, "other")]
            .iter()
            .map(|(l, name)| {
                let v = j
                    .scored
                    .iter()
                    .filter(|(s, _)| s.label == *l)
                    .map(|(_, r)| *r)
                    .collect();
                (name.to_string(), v)
            })
            .collect(),
    }
}

/// One bin of a reliability curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    pub n: usize,
    /// Mean reward of the bin's responses.
    pub predicted: f64,
    /// Fraction with hard label 1.
    pub observed: f64,
}

/// The reliability curve of `(reward, hard label)` pairs over [`CALIBRATION_BINS`] equal bins of
/// [0, 1] (empty bins left out), and the expected calibration error (bin-size weighted mean of
/// |observed - predicted|).
pub fn calibration(points: &[(f64, f64)]) -> (Vec<CalibrationBin>, Option<f64>) {
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); CALIBRATION_BINS];
    for &(p, y) in points {
        let k = ((p.clamp(0.0, 1.0) * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
        sums[k].0 += 1;
        sums[k].1 += p;
        sums[k].2 += y;
    }
    let bins: Vec<CalibrationBin> = sums
        .into_iter()
        .filter(|s| s.0 > 0)
        .map(|(n, p, y)| CalibrationBin {
            n,
            predicted: p / n as f64,
            observed: y / n as f64,
        })
        .collect();
    let total: usize = bins.iter().map(|b| b.n).sum();
    let ece = (total > 0).then(|| {
        bins.iter()
            .map(|b| b.n as f64 * (b.observed - b.predicted).abs())
            .sum::<f64>()
            / total as f64
    });
    (bins, ece)
}

/// One disagreement between the judge and people.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// How far apart: medquad |reward - (grade - 1) / 3|; llmbar reward(other) - reward(preferred).
    pub gap: f64,
    pub item_id: String,
    pub question: String,
    /// (response id, human label, reward, response text) of the response(s) concerned.
    pub responses: Vec<(String, f64, f64, String)>,
}

/// The `n` largest disagreements of a method (largest first; llmbar: only pairs the judge got
/// the wrong way round or tied).
pub fn disagreements(dataset: Dataset, j: &Joined, n: usize) -> Vec<Disagreement> {
    let mut out: Vec<Disagreement> = match dataset {
        Dataset::Medquad => j
            .scored
            .iter()
            .map(|(s, r)| Disagreement {
                gap: (r - (s.label - 1.0) / 3.0).abs(),
                item_id: s.item_id.clone(),
                question: s.question.clone(),
                responses: vec![(s.response_id.clone(), s.label, *r, s.response.clone())],
            })
            .collect(),
        Dataset::Llmbar => {
            let mut pairs: BTreeMap<&str, Vec<&(SampleLabel, f64)>> = BTreeMap::new();
            for x in &j.scored {
                pairs.entry(x.0.item_id.as_str()).or_default().push(x);
            }
            pairs
                .into_values()
                .filter(|v| v.len() == 2)
                .filter_map(|v| {
                    let preferred = v.iter().find(|x| x.0.label == 1.0)?;
                    let other = v.iter().find(|x| x.0.label == 0.0)?;
                    let gap = other.1 - preferred.1;
                    (gap >= 0.0).then(|| Disagreement {
                        gap,
                        item_id: preferred.0.item_id.clone(),
                        question: preferred.0.question.clone(),
                        responses: [preferred, other]
                            .iter()
                            .map(|x| {
                                (
                                    x.0.response_id.clone(),
                                    x.0.label,
                                    x.1,
                                    x.0.response.clone(),
                                )
                            })
                            .collect(),
                    })
                })
                .collect()
        }
    };
    out.sort_by(|a, b| b.gap.total_cmp(&a.gap).then(a.item_id.cmp(&b.item_id)));
    out.truncate(n);
    out
}

/// The agreement statistics of a data set as interval panels (one per statistic).
pub fn agreement(d: &DatasetResult) -> Intervals {
    let rows =
        |f: &dyn Fn(&crate::eval::runner::MethodResult) -> Option<crate::eval::stats::Estimate>| {
            d.methods
                .iter()
                .filter_map(|m| {
                    f(m).map(|e| Interval {
                        label: m.method.label().to_string(),
                        value: e.value,
                        low: e.low,
                        high: e.high,
                    })
                })
                .collect::<Vec<_>>()
        };
    match d.dataset {
        Dataset::Medquad => {
            let panels = vec![
                ("Spearman ρ".to_string(), rows(&|m| m.spearman)),
                ("Kendall τ-b".to_string(), rows(&|m| m.kendall_tau_b)),
            ];
            let lo = panels
                .iter()
                .flat_map(|p| p.1.iter().map(|e| e.low))
                .fold(0.0, f64::min);
            Intervals {
                panels,
                value_axis: "rank correlation of reward with expert grade (95% bootstrap interval)"
                    .into(),
                range: ((lo - 0.1).max(-1.0), 1.0),
                reference: Some((0.0, "no agreement".into())),
            }
        }
        Dataset::Llmbar => Intervals {
            panels: vec![(
                "pairwise accuracy".to_string(),
                rows(&|m| m.pairwise_accuracy),
            )],
            value_axis: "fraction of pairs where the preferred output got the higher reward (95% bootstrap interval)"
                .into(),
            range: (0.0, 1.0),
            reference: Some((0.5, "chance".into())),
        },
    }
}

fn dataset_title(d: Dataset) -> &'static str {
    match d {
        Dataset::Medquad => "medquad (expert grades 1-4)",
        Dataset::Llmbar => "llmbar (pairwise preferences)",
    }
}

/// The figures of one data set: agreement, box plots per method, calibration per verdict-based
/// method (llmbar).
pub fn figures(d: &DatasetResult, joined: Option<&[Joined]>) -> Result<Vec<Figure>, ReportError> {
    let set = d.dataset.as_str();
    let mut out = Vec::new();
    let a = agreement(d);
    if a.panels.iter().any(|p| !p.1.is_empty()) {
        out.push(a.draw(
            &format!("eval-{set}-agreement"),
            "Agreement with people",
            "Each method's statistic (dot) with its percentile bootstrap 95% interval (bar); the dashed line marks no agreement (correlations) or chance (pairwise accuracy).",
        )?);
    }
    for j in joined.unwrap_or_default() {
        let m = j.method.as_str();
        if j.scored.is_empty() {
            continue;
        }
        let x_axis = match d.dataset {
            Dataset::Medquad => "expert grade",
            Dataset::Llmbar => "output (as people judged it)",
        };
        out.push(
            BoxPlot {
                groups: box_groups(d.dataset, j),
                x_axis: x_axis.into(),
                y_axis: "reward (0-1)".into(),
                y_range: (0.0, 1.0),
            }
            .draw(
                &format!("eval-{set}-{m}-box"),
                j.method.label(),
                match d.dataset {
                    Dataset::Medquad => "Reward per expert grade (n = answers).",
                    Dataset::Llmbar => {
                        "Reward of the output people preferred and of the other one (n = outputs)."
                    }
                },
            )?,
        );
        if d.dataset == Dataset::Llmbar && j.verdict_based {
            let points: Vec<(f64, f64)> = j.scored.iter().map(|(s, r)| (*r, s.label)).collect();
            let (bins, ece) = calibration(&points);
            let mut fig = Lines {
                lines: vec![Line {
                    name: j.method.label().into(),
                    points: bins.iter().map(|b| (b.predicted, b.observed)).collect(),
                    dashed: false,
                    color: 0,
                    labels: bins.iter().map(|b| format!("n={}", b.n)).collect(),
                }],
                x_axis: "reward from verdict P(yes), bin mean".into(),
                y_axis: "fraction of outputs people preferred".into(),
                log2_x: false,
                x_range: Some((0.0, 1.0)),
                y_range: Some((0.0, 1.0)),
                diagonal: true,
            }
            .draw(
                &format!("eval-{set}-{m}-calibration"),
                &format!("Reliability: {}", j.method.label()),
                &format!(
                    "Responses binned by reward ({CALIBRATION_BINS} equal bins of [0, 1]; n = responses in the bin); y = share of them that were the preferred output of their pair; dashed: perfect calibration. Expected calibration error {}.",
                    ece.map_or("n/a".into(), |e| format!("{e:.3}"))
                ),
            )?;
            fig.data["bins"] = serde_json::json!(bins
                .iter()
                .map(|b| serde_json::json!({"n": b.n, "predicted": b.predicted, "observed": b.observed}))
                .collect::<Vec<_>>());
            fig.data["ece"] = serde_json::json!(ece);
            out.push(fig);
        }
    }
    Ok(out)
}

fn fmt_est(e: &Option<crate::eval::stats::Estimate>) -> String {
    e.map_or("n/a".into(), |e| {
        format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high)
    })
}

/// The whole eval page for the run in `dir`.
pub fn render(dir: &Path, report: &EvalReport) -> Result<String, ReportError> {
    let mut page = Page::new(&format!("ares eval: {}", dir.display()));
    page.meta(&[
        ("run folder", dir.display().to_string()),
        ("command", report.command.clone()),
        ("model sha256", report.model_sha256.clone()),
        (
            "sample",
            format!(
                "limit {}, seed {}, {} bootstrap resamples, {:.0}% intervals",
                report.limit.map_or("none".into(), |l| l.to_string()),
                report.seed,
                report.resamples,
                100.0 * report.confidence
            ),
        ),
        ("seconds", format!("{:.1}", report.seconds)),
    ]);
    if report.datasets.is_empty() {
        page.empty("This run has no data set: nothing to draw.");
    }
    for d in &report.datasets {
        let set = d.dataset.as_str();
        page.h2(dataset_title(d.dataset), &format!("eval-{set}"));
        page.p(&format!(
            "{} samples of {} available; labels {:?}; rubrics: {} questions, {} failed, mean {} criteria.",
            d.samples,
            d.available,
            d.labels,
            d.rubrics.questions,
            d.rubrics.failed,
            d.rubrics.mean_criteria.map_or("n/a".into(), |m| format!("{m:.1}"))
        ));
        if d.samples == 0 {
            page.empty(&format!(
                "The {set} sample is empty: no responses were judged, so there is nothing to draw."
            ));
        }
        let rows: Vec<Vec<String>> = d
            .methods
            .iter()
            .filter(|m| m.applies())
            .map(|m| {
                vec![
                    m.method.label().to_string(),
                    m.scored.to_string(),
                    m.failed_total().to_string(),
                    fmt_est(&m.spearman),
                    fmt_est(&m.kendall_tau_b),
                    fmt_est(&m.pairwise_accuracy),
                    m.mean_reward.map_or("n/a".into(), |r| format!("{r:.3}")),
                ]
            })
            .collect();
        page.table(
            &[
                "method",
                "scored",
                "failed",
                "Spearman ρ [95% CI]",
                "Kendall τ-b [95% CI]",
                "pairwise accuracy [95% CI]",
                "mean reward",
            ],
            &rows,
        );
        let joined = join(dir, d)?;
        let figs = figures(d, joined.as_deref())?;
        let agreement_id = format!("eval-{set}-agreement");
        match figs.iter().find(|f| f.id == agreement_id) {
            Some(f) => page.figure(f),
            None if d.samples > 0 => {
                page.empty("No method had a defined statistic (too few scored samples).")
            }
            None => {}
        }
        let Some(joined) = joined else {
            page.empty(&format!(
                "This run has no {}: it was made before reports, so rewards per label, calibration and disagreements cannot be drawn. Rerun ares eval (the verdict cache makes it quick) to get them.",
                samples_file(d.dataset)
            ));
            continue;
        };
        let boxes: Vec<Figure> = figs
            .iter()
            .filter(|f| f.id.ends_with("-box"))
            .cloned()
            .collect();
        page.h3("Reward per human label");
        page.p("Box = quartiles, thick line = median, whiskers = furthest points within 1.5 IQR, red cross = mean, grey dots = single responses (spread sideways to be seen).");
        if boxes.is_empty() {
            page.empty("No method scored any response.");
        } else {
            page.grid(&boxes);
        }
        page.h3("Calibration");
        let cal: Vec<Figure> = figs
            .iter()
            .filter(|f| f.id.ends_with("-calibration"))
            .cloned()
            .collect();
        if cal.is_empty() {
            page.p(match d.dataset {
                Dataset::Medquad => "Medquad's grades are ordinal, not hard labels: see the box plots. Reliability curves are drawn for llmbar, whose preferences are hard labels.",
                Dataset::Llmbar => "No method with per-criterion verdicts scored any response.",
            });
        } else {
            for f in &cal {
                page.figure(f);
            }
        }
        page.h3(&format!(
            "The {DISAGREEMENTS} largest disagreements per method"
        ));
        page.p(match d.dataset {
            Dataset::Medquad => "Gap = |reward − (grade − 1) / 3|: the reward against the expert grade mapped onto [0, 1].",
            Dataset::Llmbar => "Pairs the judge ranked the wrong way round (or tied): gap = reward of the other output − reward of the preferred one.",
        });
        for (k, j) in joined.iter().enumerate() {
            let list = disagreements(d.dataset, j, DISAGREEMENTS);
            let open = if k == 0 { " open" } else { "" };
            page.raw(&format!(
                "<details{open}><summary>{} ({} listed)</summary>\n",
                escape(j.method.label()),
                list.len()
            ));
            if list.is_empty() {
                page.p("No disagreement to list.");
            } else {
                page.raw(&disagreement_table(d.dataset, &list));
            }
            page.raw("</details>\n");
        }
    }
    Ok(page.finish())
}

fn disagreement_table(dataset: Dataset, list: &[Disagreement]) -> String {
    let label = |l: f64| match dataset {
        Dataset::Medquad => GRADES
            .get((l as usize).saturating_sub(1))
            .map_or(l.to_string(), |g| g.to_string()),
        Dataset::Llmbar => if l == 1.0 { "preferred" } else { "other" }.to_string(),
    };
    let mut s = String::from(
        "<table><thead><tr><th>gap</th><th>item</th><th>question</th><th>response</th><th>people</th><th>reward</th><th>response text (start)</th></tr></thead><tbody>\n",
    );
    for d in list {
        let span = d.responses.len();
        for (i, (id, l, r, text)) in d.responses.iter().enumerate() {
            s.push_str("<tr>");
            if i == 0 {
                s.push_str(&format!(
                    "<td class=\"num\" rowspan=\"{span}\">{:.3}</td><td rowspan=\"{span}\">{}</td><td rowspan=\"{span}\"><pre>{}</pre></td>",
                    d.gap,
                    escape(&d.item_id),
                    escape(&shorten(&d.question, 300))
                ));
            }
            s.push_str(&format!(
                "<td>{}</td><td>{}</td><td class=\"num\">{r:.3}</td><td><pre>{}</pre></td></tr>\n",
                escape(id),
                escape(&label(*l)),
                escape(&shorten(text, 400))
            ));
        }
    }
    s.push_str("</tbody></table>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_bins_and_ece() {
        // Bin [0.1, 0.2): predicted 0.15, observed 0; bin [0.9, 1]: predicted 0.95, observed 1.
        let (bins, ece) = calibration(&[(0.1, 0.0), (0.2 - 1e-9, 0.0), (0.9, 1.0), (1.0, 1.0)]);
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[0].n, 2);
        assert!((bins[0].predicted - 0.15).abs() < 1e-6 && bins[0].observed == 0.0);
        assert!((bins[1].predicted - 0.95).abs() < 1e-9 && bins[1].observed == 1.0);
        assert!((ece.unwrap_or(f64::NAN) - 0.1).abs() < 1e-6);
        assert_eq!(calibration(&[]), (vec![], None));
    }
}

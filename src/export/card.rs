//! The dataset card: a `README.md` whose YAML header is the Hugging Face Hub's dataset-card
//! metadata (`license`, `task_categories`, `tags`, `size_categories`, and `configs` pointing at
//! the data file as the train split), followed by what the data is and how it was made: sources
//! and their licences, document counts, model sha256, prompt hashes, thresholds, per-stage pass
//! rates, per-domain counts, histograms of rubric sizes and criterion weights, and three example
//! items.
//!
//! Everything comes from the items themselves (their `extra.synth` provenance) and, when there
//! is one, the run's `report.json`; a card built from items alone says so and leaves the run
//! sections out. The card states only what those files hold: nothing is invented. Rendering is
//! deterministic (sorted maps), so the same run gives the same card.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::export::licence::{self, SourceLicence};
use crate::export::{domain, io_err, read_items, ExportError};
use crate::judge::formats::Format;
use crate::judge::{Category, RubricItem};
use crate::synth::output::{DATASET_FILE, REPORT_FILE};
use crate::synth::SynthReport;

/// The card's file name.
pub const CARD_FILE: &str = "README.md";

/// What a card is built from.
#[derive(Debug, Clone)]
pub struct DatasetCard<'a> {
    items: &'a [RubricItem],
    /// The data file, relative to the card (the `configs` path), and its record format.
    data_file: String,
    format: Format,
    report: Option<SynthReport>,
    licences: Vec<SourceLicence>,
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn size_category(n: usize) -> &'static str {
    match n {
        0..=999 => "n<1K",
        1_000..=9_999 => "1K<n<10K",
        10_000..=99_999 => "10K<n<100K",
        100_000..=999_999 => "100K<n<1M",
        _ => "1M<n<10M",
    }
}

fn clip(s: &str, n: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut c: String = one_line.chars().take(n).collect();
        c.push('…');
        c
    }
}

/// Markdown table cell: no pipes or newlines.
fn cell(s: &str) -> String {
    clip(s, 120).replace('|', "\\|")
}

fn synth_field<'a>(item: &'a RubricItem, key: &str) -> Option<&'a Value> {
    item.extra.get("synth").and_then(|s| s.get(key))
}

impl<'a> DatasetCard<'a> {
    /// A card for `items` (stored in `data_file`), without a run report.
    pub fn from_items(items: &'a [RubricItem], data_file: &str) -> Self {
        DatasetCard {
            items,
            data_file: data_file.to_string(),
            format: Format::Ares,
            report: None,
            licences: Vec::new(),
        }
    }

    /// The data file holds records of `format` (ares by default).
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Adds the run's report; the licences of its inputs are looked up beside them.
    pub fn with_report(mut self, report: SynthReport) -> Self {
        self.licences = report
            .inputs
            .iter()
            .map(|i| licence::detect(Path::new(i)))
            .collect();
        self.report = Some(report);
        self
    }

    /// The Hub licence ids in the YAML header: `--license` if given, else those detected (one
    /// per kind), else `unknown`.
    fn licence_ids(&self) -> Vec<String> {
        if let Some(l) = self.report.as_ref().and_then(|r| r.license.clone()) {
            return vec![l];
        }
        let ids: BTreeSet<String> = self
            .licences
            .iter()
            .filter_map(|l| l.licence.clone())
            .collect();
        let unknown = self.licences.iter().any(|l| l.licence.is_none());
        let mut ids: Vec<String> = ids.into_iter().collect();
        if ids.is_empty() || unknown {
            ids.push("unknown".into());
        }
        ids
    }

    fn header(&self, out: &mut String) {
        let ids = self.licence_ids();
        out.push_str("---\n");
        if ids.len() == 1 {
            let _ = writeln!(out, "license: {}", ids[0]);
        } else {
            out.push_str("license:\n");
            for id in &ids {
                let _ = writeln!(out, "- {id}");
            }
        }
        let other: Vec<&str> = self
            .licences
            .iter()
            .filter_map(|l| l.name.as_deref())
            .collect();
        if let Some(name) = other.first() {
            let _ = writeln!(out, "license_name: {}", yaml_str(&name.to_lowercase()));
        }
        out.push_str("pretty_name: \"ares rubric dataset\"\n");
        out.push_str("task_categories:\n- text-generation\n- question-answering\n");
        out.push_str("tags:\n- rubrics\n- rlhf\n- reinforcement-learning\n- synthetic\n- ares\n");
        let _ = writeln!(
            out,
            "size_categories:\n- {}",
            size_category(self.items.len())
        );
        let _ = writeln!(
            out,
            "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {}",
            yaml_str(&self.data_file)
        );
        out.push_str("---\n\n");
    }

    fn sources(&self, out: &mut String) {
        // Documents and items per source file, from the items' provenance.
        let mut per_source: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
        for item in self.items {
            let source = synth_field(item, "source")
                .and_then(Value::as_str)
                .unwrap_or("(not recorded)")
                .to_string();
            let doc = synth_field(item, "doc_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let e = per_source.entry(source).or_default();
            e.0.insert(doc);
            e.1 += 1;
        }
        let docs: BTreeSet<&str> = self
            .items
            .iter()
            .filter_map(|i| synth_field(i, "doc_id").and_then(Value::as_str))
            .collect();
        out.push_str("## Sources\n\n");
        if let Some(r) = &self.report {
            let _ = writeln!(
                out,
                "Inputs: {}. {} documents read ({} chunks); {} of them gave accepted items.\n",
                r.inputs
                    .iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.ingest.documents,
                r.ingest.chunks,
                docs.len()
            );
            out.push_str("| input | licence | from |\n|---|---|---|\n");
            for l in &self.licences {
                let lic = match (&l.licence, &l.name) {
                    (Some(_), Some(name)) => name.clone(),
                    (Some(id), None) => id.clone(),
                    (None, _) => "unknown".into(),
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} |",
                    cell(&l.input),
                    lic,
                    l.evidence
                        .as_deref()
                        .map(cell)
                        .unwrap_or_else(|| "-".into())
                );
            }
            if let Some(l) = &r.license {
                let _ = writeln!(out, "\nLicence stated with `--license`: {l}.");
            }
            out.push('\n');
        } else {
            let _ = writeln!(
                out,
                "Built from the items alone (no `report.json` beside them): {} documents gave accepted items.\n",
                docs.len()
            );
        }
        out.push_str("| source | documents | items |\n|---|---:|---:|\n");
        for (s, (d, n)) in &per_source {
            let _ = writeln!(out, "| `{}` | {} | {} |", cell(s), d.len(), n);
        }
        out.push('\n');
    }

    fn generation(&self, out: &mut String) {
        out.push_str("## Generation\n\n");
        let models: BTreeSet<&str> = self
            .items
            .iter()
            .filter_map(|i| synth_field(i, "model_sha256").and_then(Value::as_str))
            .chain(self.report.as_ref().map(|r| r.model_sha256.as_str()))
            .filter(|s| !s.is_empty())
            .collect();
        let _ = writeln!(
            out,
            "Made with `ares synth` (ARES, arXiv 2605.23454). Model sha256: {}.",
            if models.is_empty() {
                "not recorded".to_string()
            } else {
                models
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if let Some(r) = &self.report {
            let _ = writeln!(
                out,
                "Seed {}, up to {} personas per chunk, domains: {}.",
                r.seed,
                r.personas,
                r.domains_configured.join(", ")
            );
        }
        // Prompt hashes: every distinct value per prompt file.
        let mut hashes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in self.items {
            if let Some(Value::Object(m)) = synth_field(item, "prompt_hashes") {
                for (k, v) in m {
                    if let Some(h) = v.as_str() {
                        hashes.entry(k.clone()).or_default().insert(h.to_string());
                    }
                }
            }
        }
        if !hashes.is_empty() {
            out.push_str("\n| prompt | sha256 (first 16 hex) |\n|---|---|\n");
            for (k, v) in &hashes {
                let _ = writeln!(
                    out,
                    "| {k} | {} |",
                    v.iter()
                        .map(|h| format!("`{h}`"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        out.push('\n');
    }

    fn run_sections(&self, out: &mut String) {
        let Some(r) = &self.report else { return };
        let t = &r.thresholds;
        out.push_str("## Filters and thresholds\n\n| setting | value |\n|---|---|\n");
        for (k, v) in [
            (
                "near_duplicate (MinHash Jaccard)",
                t.near_duplicate.to_string(),
            ),
            (
                "min_self_contained (P(yes))",
                t.min_self_contained.to_string(),
            ),
            ("max_leakage", t.max_leakage.to_string()),
            ("min_faithful (P(yes))", t.min_faithful.to_string()),
            ("max_criterion_words", t.max_criterion_words.to_string()),
            ("min_reference_reward", t.min_reference_reward.to_string()),
            (
                "min_criterion_met (reference check)",
                t.min_criterion_met.to_string(),
            ),
            (
                "min_margin (reference - degraded)",
                t.min_margin.to_string(),
            ),
            (
                "criteria the reference answer fails",
                if t.reference_check { "dropped" } else { "kept" }.to_string(),
            ),
            (
                "pitfalls the source passage states (P(yes) >= min_criterion_met)",
                if t.reference_check { "dropped" } else { "kept" }.to_string(),
            ),
            (
                "pitfall stage (copied facts and written false statements)",
                if t.pitfall_stage { "on" } else { "off" }.to_string(),
            ),
            (
                "decontamination",
                if t.decontaminate.is_empty() {
                    "off".to_string()
                } else {
                    format!(
                        "{}-grams against {}",
                        t.decontaminate_ngram,
                        t.decontaminate.join(", ")
                    )
                },
            ),
        ] {
            let _ = writeln!(out, "| {k} | {} |", cell(&v));
        }
        out.push_str("\n## Pass rates\n\n| stage | in | out | pass | top rejection reasons |\n|---|---:|---:|---:|---|\n");
        for s in &r.stages {
            let rate = s
                .pass_rate
                .map(|p| format!("{:.1}%", 100.0 * p))
                .unwrap_or_else(|| "-".into());
            let mut reasons: Vec<(&String, &usize)> = s.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let top: Vec<String> = reasons
                .iter()
                .take(3)
                .map(|(k, n)| format!("{} ({n})", cell(k)))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                s.stage,
                s.input,
                s.output,
                rate,
                top.join("; ")
            );
        }
        out.push_str(
            "\n## Domains\n\n| domain | chunks | items | accepted |\n|---|---:|---:|---:|\n",
        );
        for (d, c) in &r.domains {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(d),
                c.chunks,
                c.items,
                c.accepted
            );
        }
        out.push('\n');
    }

    fn item_domains(&self, out: &mut String) {
        if self.report.is_some() {
            return;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in self.items {
            *counts.entry(domain(i).unwrap_or("(none)")).or_default() += 1;
        }
        out.push_str("## Domains\n\n| domain | items |\n|---|---:|\n");
        for (d, n) in counts {
            let _ = writeln!(out, "| {} | {n} |", cell(d));
        }
        out.push('\n');
    }

    fn rubrics(&self, out: &mut String) {
        let bar = |n: usize, max: usize| "#".repeat((n * 40).div_ceil(max.max(1)));
        let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
        let mut weights: BTreeMap<(i64, &'static str), usize> = BTreeMap::new();
        for i in self.items {
            *sizes.entry(i.criteria.len()).or_default() += 1;
            for c in &i.criteria {
                let cat = match c.category {
                    Category::Essential => "essential",
                    Category::Important => "important",
                    Category::Optional => "optional",
                    Category::Pitfall => "pitfall",
                };
                *weights.entry((c.weight.round() as i64, cat)).or_default() += 1;
            }
        }
        out.push_str("## Rubrics\n\nCriteria per item:\n\n```text\n");
        let max = sizes.values().copied().max().unwrap_or(1);
        for (k, n) in &sizes {
            let _ = writeln!(out, "{k:>3} criteria {n:>6}  {}", bar(*n, max));
        }
        out.push_str("```\n\nCriterion weights (negative: pitfalls, whose text names the mistake):\n\n```text\n");
        let max = weights.values().copied().max().unwrap_or(1);
        for ((w, cat), n) in &weights {
            let _ = writeln!(out, "{w:>4} {cat:<10} {n:>6}  {}", bar(*n, max));
        }
        out.push_str("```\n\n");
    }

    fn examples(&self, out: &mut String) {
        out.push_str("## Examples\n\n");
        for (k, i) in self.items.iter().take(3).enumerate() {
            let _ = writeln!(out, "### {} `{}`\n", k + 1, i.id);
            let _ = writeln!(out, "**Question.** {}\n", clip(&i.question, 600));
            if let Some(a) = &i.reference_answer {
                let _ = writeln!(out, "**Reference answer.** {}\n", clip(a, 600));
            }
            out.push_str("**Rubric.**\n\n");
            for c in &i.criteria {
                let _ = writeln!(
                    out,
                    "- `{}` ({:?}, weight {}) {}",
                    c.id,
                    c.category,
                    c.weight,
                    clip(&c.text, 300)
                );
            }
            out.push('\n');
        }
    }

    /// The card's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let _ = writeln!(
            out,
            "# ares rubric dataset\n\n{} questions with reference answers and weighted rubrics (criteria a judge checks in a response; pitfalls have negative weight), for RL with rubric rewards. Data file: `{}` ({} rubric records, one JSON object per line; provenance of each item in {}).\n",
            self.items.len(),
            self.data_file,
            self.format.as_str(),
            if self.format == Format::Ares {
                "`extra.synth`"
            } else {
                "a top-level `synth` field"
            }
        );
        self.sources(&mut out);
        self.generation(&mut out);
        self.run_sections(&mut out);
        self.item_domains(&mut out);
        self.rubrics(&mut out);
        self.examples(&mut out);
        out.push_str("## Scoring\n\nRewards come from `ares serve --rubrics <data file>` (`POST /get_reward` with the item id or the inline rubric as the label); the trainer exports (`ares export --format verl|openrlhf|trl|hf`) carry each rubric inline.\n");
        out
    }
}

/// Reads `report.json` of a run directory, if there is one.
pub fn read_report(dir: &Path) -> Result<Option<SynthReport>, ExportError> {
    let path = dir.join(REPORT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ExportError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes `README.md` beside a synth run's `dataset.jsonl` (items in `format`) from the data and
/// the report. Returns its path.
pub fn write_for_run(dir: &Path, format: Format) -> Result<PathBuf, ExportError> {
    let items = read_items(&dir.join(DATASET_FILE), format)?;
    let mut card = DatasetCard::from_items(&items, DATASET_FILE).with_format(format);
    if let Some(r) = read_report(dir)? {
        card = card.with_report(r);
    }
    let path = dir.join(CARD_FILE);
    crate::export::write_atomic(&path, card.render().as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::item;

    #[test]
    fn card_has_the_hub_header_and_every_section() {
        let items = vec![
            item("s-1", "Why is the sky blue?", "Natural Science"),
            item("s-2", "What is 2+2?", "Math"),
            item("s-3", "What is a prime?", "Math"),
            item("s-4", "What is a set?", "Math"),
        ];
        let mut report = SynthReport::new();
        report.model_sha256 = "abc123".into();
        report.license = Some("cc-by-4.0".into());
        report.thresholds.min_reference_reward = 0.7;
        report.enter("generate", 8);
        report.pass("generate", 6);
        report.reject("generate", "output is not item JSON");
        report.domain_mut("Math").accepted = 3;
        report.finish(1.0);
        let text = DatasetCard::from_items(&items, "dataset.jsonl")
            .with_report(report)
            .render();
        let header = text.split("---\n").nth(1).unwrap_or_default();
        for needle in [
            "license: cc-by-4.0",
            "size_categories:\n- n<1K",
            "path: \"dataset.jsonl\"",
        ] {
            assert!(header.contains(needle), "{needle} in {header}");
        }
        for needle in [
            "`abc123`",
            "| min_reference_reward | 0.7 |",
            "| generate | 8 | 6 | 75.0% |",
            "| Math | 0 | 0 | 3 |",
            "  3 criteria      4",
            "  -3 pitfall",
            "### 3 `s-3`",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(!text.contains("### 4"), "three examples only");
    }
}

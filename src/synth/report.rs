//! The run report: per-stage counts in and out with pass rates and rejection reasons, per-domain
//! counts (with labelled chunks per source group), tokens and speed. Returned to the caller, written to `report.json`, and rendered as a
//! plain-text table ([`SynthReport::to_table`]) that the binary prints.
//!
//! Counts cover this session (a resumed run does not recount finished units); `totals` gives
//! the line counts of the output files across sessions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::synth::output::ResumeState;
use crate::synth::pitfall::PitfallOutcome;
use crate::synth::record::STAGES;

/// Version of [`SynthReport`].
pub const REPORT_VERSION: u32 = 1;

/// In and out of one stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageCount {
    pub stage: String,
    /// Units that reached the stage: inputs for `ingest`, chunks for `dedup` and `label`,
    /// (chunk, persona) items from `generate` on.
    pub input: usize,
    pub output: usize,
    pub pass_rate: Option<f64>,
    /// Rejections by reason (the reason's text up to its first `:` or `(`).
    pub reasons: BTreeMap<String, usize>,
}

/// Per domain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainCount {
    pub chunks: usize,
    pub items: usize,
    pub accepted: usize,
    /// Labelled chunks per source group ([`source_group`]: the first folder or file of the
    /// source path), so a label that does not fit its documents shows ("legal": Medicine).
    pub sources: BTreeMap<String, usize>,
}

/// The group of a chunk's `source` in the per-domain counts: its first path component, without
/// a JSONL line suffix (`python-docs/copy.rst.txt` -> `python-docs`, `pages.jsonl:7` ->
/// `pages.jsonl`).
pub fn source_group(source: &str) -> String {
    let first = source.split(['/', '\\']).next().unwrap_or(source);
    match first.rsplit_once(':') {
        Some((file, line)) if !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) => {
            file.to_string()
        }
        _ => first.to_string(),
    }
}

impl DomainCount {
    /// `"python-docs 10, README.md 1"`: chunks per source group, most first.
    pub fn per_source(&self) -> String {
        let mut v: Vec<(&String, &usize)> = self.sources.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Ingest counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestCount {
    pub documents: usize,
    pub chunks: usize,
    /// Skipped inputs by kind (empty, binary, unreadable, bad_record).
    pub skipped: BTreeMap<String, usize>,
    /// Files a directory walk left out for their extension.
    pub unsupported_files: usize,
    /// Documents decoded with invalid UTF-8 replaced.
    pub lossy_documents: usize,
    /// Chunks not read because of `--max-chunks-per-doc`.
    pub chunks_capped: usize,
    /// Documents that could not be read to the end.
    pub read_errors: usize,
}

/// Line counts of the output files, all sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub accepted: usize,
    pub rejected: usize,
}

/// The thresholds and settings the filters ran with (for the dataset card).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    pub near_duplicate: f64,
    pub min_self_contained: f64,
    pub min_faithful: f64,
    pub max_leakage: f64,
    pub min_reference_reward: f64,
    pub min_margin: f64,
    /// Criteria the reference answer fails were dropped before the rubric rewards.
    pub reference_check: bool,
    /// P(yes) the reference needed on a positive criterion for the check to keep it.
    #[serde(default)]
    pub min_criterion_met: f64,
    /// The pitfall stage added "Claims that" criteria before the reference check.
    #[serde(default)]
    pub pitfall_stage: bool,
    /// Items the reference check left without a pitfall or with too few criteria got the
    /// stage's repair round.
    #[serde(default)]
    pub pitfall_repair: bool,
    pub max_criterion_words: usize,
    /// Decontamination: n-gram length and the benchmark files (empty: off).
    pub decontaminate_ngram: usize,
    pub decontaminate: Vec<String>,
}

/// What the pitfall stage wrote and what of it survived the reference check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PitfallCounts {
    /// Items the stage ran on.
    pub items: usize,
    /// Items it gave nothing (engine error, output not of the schema).
    pub errors: usize,
    /// Requests made (an item gets another only when the earlier gave no mistake).
    pub requests: usize,
    /// Statements added as pitfall criteria.
    pub added: usize,
    /// Statements not added (copied the answer, duplicates, no room).
    pub skipped: usize,
    /// Added pitfalls that the reference check judged (their item reached it).
    pub checked: usize,
    /// Of those, the ones the reference answer does not make (kept in the rubric).
    pub kept: usize,
    /// Copied facts added as positive criteria ("States that <fact>").
    pub facts: usize,
    /// Facts not added (not in the answer, already checked by a criterion, too long, no room).
    pub facts_skipped: usize,
    /// Added facts that the reference check judged.
    pub facts_checked: usize,
    /// Of those, the ones the reference answer meets (kept in the rubric).
    pub facts_kept: usize,
    /// Pitfalls of any origin (the one-pass generation, this stage, its repair) that the
    /// reference check dropped because the source passage states them: true statements.
    pub true_in_source: usize,
    /// Items the repair round ran on (the reference check left them without a pitfall or with
    /// too few criteria); their requests and additions are also in the counts above.
    pub repair_items: usize,
    /// Repair requests made.
    pub repair_requests: usize,
    /// Repaired items judged again: with what the repair added, the rubric has a pitfall, an
    /// essential or important criterion and enough criteria (the others stay rejected).
    pub repair_judged: usize,
    /// Of those, the ones that passed the reference check this time.
    pub repair_passed_check: usize,
    /// Of those, the ones accepted (every rubric-validity filter passed).
    pub repair_accepted: usize,
}

impl PitfallCounts {
    /// Adds one item's outcome of the stage's first round.
    pub fn count(&mut self, o: &PitfallOutcome) {
        self.items += 1;
        self.errors += usize::from(o.error.is_some());
        self.add_requests(o);
    }

    /// Adds one item's outcome of the repair round (`judged`: the item is judged again).
    pub fn count_repair(&mut self, o: &PitfallOutcome, judged: bool) {
        self.repair_items += 1;
        self.repair_requests += o.attempts;
        self.repair_judged += usize::from(judged);
        self.add_requests(o);
    }

    fn add_requests(&mut self, o: &PitfallOutcome) {
        self.added += o.added.len();
        self.skipped += o.skipped.len();
        self.facts += o.facts.len();
        self.facts_skipped += o.skipped_facts.len();
        self.requests += o.attempts;
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthReport {
    pub schema_version: u32,
    pub model_sha256: String,
    /// The `--input` paths.
    pub inputs: Vec<String>,
    /// `--license`: the sources' licence as stated by the user (Hub id), if given.
    pub license: Option<String>,
    pub thresholds: Thresholds,
    pub seed: u64,
    pub domains_configured: Vec<String>,
    pub personas: usize,
    pub resumed: bool,
    pub resume: ResumeState,
    /// Units skipped because an earlier session finished them.
    pub skipped_finished_units: usize,
    pub ingest: IngestCount,
    pub stages: Vec<StageCount>,
    pub domains: BTreeMap<String, DomainCount>,
    pub requests: usize,
    pub engine_errors: usize,
    pub prompt_tokens: usize,
    pub cached_prompt_tokens: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
    /// (prompt + completion tokens) / seconds, all model calls of the session.
    pub tokens_per_second: f64,
    /// Generated tokens / seconds.
    pub completion_tokens_per_second: f64,
    /// Accepted items per minute of wall time.
    pub items_per_minute: f64,
    /// Generated (chunk, persona) items per minute of wall time.
    pub generated_per_minute: f64,
    pub totals: Totals,
    /// The pitfall stage (zero when it did not run).
    pub pitfalls: PitfallCounts,
    pub dataset: String,
    pub rejected: String,
}

/// Short key of a reason for grouping: up to the first `": "` or `" ("`, numbers replaced by
/// `N` (so "P(yes) 0.31 < 0.5" and "P(yes) 0.12 < 0.5" group together).
pub fn reason_key(reason: &str) -> String {
    let end = [reason.find(": "), reason.find(" (")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(reason.len());
    let mut key = String::new();
    let mut in_number = false;
    for c in reason[..end].trim().chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                key.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            key.push(c);
        }
    }
    key.chars().take(80).collect()
}

impl SynthReport {
    pub fn new() -> Self {
        SynthReport {
            schema_version: REPORT_VERSION,
            stages: STAGES
                .iter()
                .map(|s| StageCount {
                    stage: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn stage_mut(&mut self, stage: &str) -> &mut StageCount {
        let i = self
            .stages
            .iter()
            .position(|s| s.stage == stage)
            .expect("stage names come from STAGES");
        &mut self.stages[i]
    }

    /// `n` units entered `stage`.
    pub fn enter(&mut self, stage: &str, n: usize) {
        self.stage_mut(stage).input += n;
    }

    /// `n` units left `stage` successfully.
    pub fn pass(&mut self, stage: &str, n: usize) {
        self.stage_mut(stage).output += n;
    }

    /// One unit was rejected at `stage`.
    pub fn reject(&mut self, stage: &str, reason: &str) {
        *self
            .stage_mut(stage)
            .reasons
            .entry(reason_key(reason))
            .or_default() += 1;
    }

    pub fn domain_mut(&mut self, domain: &str) -> &mut DomainCount {
        self.domains.entry(domain.to_string()).or_default()
    }

    /// Fills the derived fields (pass rates, speeds).
    pub fn finish(&mut self, seconds: f64) {
        self.seconds = seconds;
        for s in &mut self.stages {
            s.pass_rate = (s.input > 0).then(|| s.output as f64 / s.input as f64);
        }
        let t = seconds.max(1e-9);
        self.tokens_per_second = (self.prompt_tokens + self.completion_tokens) as f64 / t;
        self.completion_tokens_per_second = self.completion_tokens as f64 / t;
        let accepted = self
            .stages
            .iter()
            .find(|s| s.stage == "accepted")
            .map(|s| s.output)
            .unwrap_or(0);
        self.items_per_minute = accepted as f64 * 60.0 / t;
        let generated = self
            .stages
            .iter()
            .find(|s| s.stage == "generate")
            .map(|s| s.output)
            .unwrap_or(0);
        self.generated_per_minute = generated as f64 * 60.0 / t;
    }

    /// The human-readable summary: stages, domains, speed.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<18} {:>8} {:>8} {:>7}  top rejection reasons\n",
            "stage", "in", "out", "pass"
        ));
        for s in &self.stages {
            let rate = s
                .pass_rate
                .map(|r| format!("{:.1}%", 100.0 * r))
                .unwrap_or_else(|| "-".into());
            let mut reasons: Vec<(&String, &usize)> = s.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let top: Vec<String> = reasons
                .iter()
                .take(3)
                .map(|(r, n)| format!("{r} ({n})"))
                .collect();
            out.push_str(&format!(
                "{:<18} {:>8} {:>8} {:>7}  {}\n",
                s.stage,
                s.input,
                s.output,
                rate,
                top.join("; ")
            ));
        }
        out.push_str(&format!(
            "\n{:<26} {:>7} {:>7} {:>9}  chunks per source\n",
            "domain", "chunks", "items", "accepted"
        ));
        for (d, c) in &self.domains {
            out.push_str(&format!(
                "{:<26} {:>7} {:>7} {:>9}  {}\n",
                d,
                c.chunks,
                c.items,
                c.accepted,
                c.per_source()
            ));
        }
        out.push_str(&format!(
            "\n{} documents, {} chunks ({} capped), skipped inputs {:?}, {} lossy UTF-8 documents\n",
            self.ingest.documents,
            self.ingest.chunks,
            self.ingest.chunks_capped,
            self.ingest.skipped,
            self.ingest.lossy_documents
        ));
        out.push_str(&format!(
            "{} model requests ({} engine errors): {} prompt tokens ({} cached) + {} generated in {:.1} s = {:.1} tokens/s ({:.1} generated tokens/s); {:.2} accepted items/min, {:.2} generated items/min\n",
            self.requests,
            self.engine_errors,
            self.prompt_tokens,
            self.cached_prompt_tokens,
            self.completion_tokens,
            self.seconds,
            self.tokens_per_second,
            self.completion_tokens_per_second,
            self.items_per_minute,
            self.generated_per_minute
        ));
        if self.resumed {
            out.push_str(&format!(
                "resumed: {} units finished earlier were skipped; {} half-written lines and {} records of unfinished units removed\n",
                self.skipped_finished_units,
                self.resume.partial_lines_removed,
                self.resume.unfinished_records_removed
            ));
        }
        out.push_str(&format!(
            "files (all sessions): {} accepted in {}, {} rejected in {}\n",
            self.totals.accepted, self.dataset, self.totals.rejected, self.rejected
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_per_domain_are_grouped_by_the_first_folder_or_file_of_their_source() {
        assert_eq!(
            source_group("python-docs/library_copy.rst.txt"),
            "python-docs"
        );
        assert_eq!(source_group("pages.sample.jsonl:17"), "pages.sample.jsonl");
        assert_eq!(source_group("README.md"), "README.md");
        assert_eq!(source_group("notes:draft.txt"), "notes:draft.txt");
        let mut r = SynthReport::default();
        for s in ["legal/a.txt", "legal/b.txt", "wiki.jsonl:3"] {
            *r.domain_mut("Social Science")
                .sources
                .entry(source_group(s))
                .or_default() += 1;
        }
        assert_eq!(
            r.domains["Social Science"].per_source(),
            "legal 2, wiki.jsonl 1"
        );
        assert!(r.to_table().contains("legal 2, wiki.jsonl 1"));
    }

    #[test]
    fn a_repair_round_adds_to_the_totals_and_to_its_own_counts() {
        let first = PitfallOutcome {
            added: vec!["Claims that x.".into()],
            facts: vec!["States that y.".into()],
            attempts: 1,
            ..PitfallOutcome::default()
        };
        let repair = PitfallOutcome {
            added: vec!["Claims that z.".into(), "Claims that w.".into()],
            attempts: 2,
            ..PitfallOutcome::default()
        };
        let mut p = PitfallCounts::default();
        p.count(&first);
        p.count_repair(&repair, true);
        p.count_repair(&PitfallOutcome::default(), false);
        assert_eq!((p.items, p.requests, p.added, p.facts), (1, 3, 3, 1));
        assert_eq!(
            (p.repair_items, p.repair_requests, p.repair_judged),
            (2, 2, 1)
        );
    }

    #[test]
    fn pass_rates_speeds_and_table() {
        let mut r = SynthReport::new();
        r.enter("generate", 4);
        r.pass("generate", 3);
        r.reject("generate", "output is not item JSON (EOF while parsing)");
        r.enter("accepted", 2);
        r.pass("accepted", 2);
        r.completion_tokens = 300;
        r.prompt_tokens = 700;
        r.domain_mut("Math").accepted += 2;
        r.finish(60.0);
        let g = r
            .stages
            .iter()
            .find(|s| s.stage == "generate")
            .cloned()
            .unwrap_or_default();
        assert_eq!(g.pass_rate, Some(0.75));
        assert_eq!(g.reasons.get("output is not item JSON"), Some(&1));
        assert!((r.items_per_minute - 2.0).abs() < 1e-9);
        assert!((r.tokens_per_second - 1000.0 / 60.0).abs() < 1e-9);
        let t = r.to_table();
        assert!(
            t.contains("generate") && t.contains("75.0%") && t.contains("Math"),
            "{t}"
        );
    }
}

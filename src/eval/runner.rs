//! The `ares eval` job: sample the data sets, make (or reuse) a rubric per question, judge every
//! response with each [`Method`], measure agreement with people, and write the report.
//!
//! Output folder (`--out`):
//! - `report.json` ([`EvalReport`]) and `table.md` (the table the binary prints);
//! - `rubrics-<dataset>.jsonl`: generated rubrics in the ares rubric format (what `ares rubric`
//!   writes), reused by the next run for the same question, reference answer, rubric template,
//!   model and generation settings; `rubrics-<dataset>.failed.jsonl`: questions that got none;
//! - `judged-<dataset>-<method>.jsonl`: the judge records (`line` is the response's position
//!   in the eval sample);
//! - `samples-<dataset>.jsonl` ([`SampleLabel`]): each response's human label and the start of
//!   its text, by the same `line`, so `ares report` can draw rewards against people;
//! - `verdicts.redb`: the verdict cache (unless disabled), so a rerun, or a larger `--limit`,
//!   judges only what is new.
//!
//! Invariants: see the module docs of `eval`. Every output file is written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::counting::Counting;
use crate::engine::Generator;
use crate::eval::datasets::{self, LlmBarPair, MedQuadAnswer};
use crate::eval::stats::{self, Estimate};
use crate::eval::EvalError;
use crate::judge::cache::VerdictCache;
use crate::judge::criterion_check::check_criterion_as;
use crate::judge::gate::{self, MEDICAL_GATE};
use crate::judge::pairwise::{Comparison, PairwiseJudge};
use crate::judge::reference_check::{check_against_reference, DroppedCriterion};
use crate::judge::relevance::{self, RelevanceScorer};
use crate::judge::rubric_gen::{
    rubric_schema, Question, RubricGenConfig, RubricGenerator, RubricStatus,
};
use crate::judge::support::{ResponseJudge, SupportJudge};
use crate::judge::template::{self, PromptTemplate};
use crate::judge::Aggregator;
use crate::judge::{formats, Category, Criterion, Format, RubricItem};
use crate::judge::{Judge, JudgeConfig, JudgeProgress, JudgeRecord, Mode, RubricSet, Status};
use crate::model::tokenizer::Tokenizer;

/// Version of the [`EvalReport`] this build writes.
pub const EVAL_REPORT_VERSION: u32 = 1;

/// Source of the plain holistic template (no rubric).
pub const PLAIN_SOURCE: &str = include_str!("../../templates/judge_plain.txt");

/// Source of the reference-guided holistic template (no rubric, the reference answer shown).
pub const REFERENCE_SOURCE: &str = include_str!("../../templates/judge_reference.txt");

/// Confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// The plain holistic template: placeholders question, response (last).
pub fn plain_template() -> Result<PromptTemplate, template::TemplateError> {
    PromptTemplate::parse("judge_plain.txt", PLAIN_SOURCE, &["question"], "response")
}

/// The reference-guided holistic template: placeholders question (with the reference answer
/// appended by [`reference_item`]), response (last).
pub fn reference_template() -> Result<PromptTemplate, template::TemplateError> {
    PromptTemplate::parse(
        "judge_reference.txt",
        REFERENCE_SOURCE,
        &["question"],
        "response",
    )
}

/// A data set of `../shared/eval/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// `medquad_expert_judged`: Spearman and Kendall of reward vs expert grade.
    Medquad,
    /// `llmbar`: pairwise accuracy.
    Llmbar,
}

impl Dataset {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Medquad => "medquad",
            Dataset::Llmbar => "llmbar",
        }
    }
}

/// How a response is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The generated rubric, one logprob verdict per criterion, RaR explicit aggregation (the
    /// `ares judge` default).
    RubricLogprob,
    /// As [`Method::RubricLogprob`], times the P(yes) of a topic gate (`judge::gate`,
    /// [`MEDICAL_GATE`] on medquad). Llmbar has no gate statement: its outputs count as failed
    /// `no_gate`.
    RubricLogprobGated,
    /// As [`Method::RubricLogprob`], times the relevance gate (`judge::relevance`): σ(4·PMI) of
    /// the question's likelihood given the response against given no text. Any data set.
    RubricLogprobRelevance,
    /// The generated rubric, each criterion's support by the response read off its likelihood
    /// as a summary of the response against after no answer (`judge::support`), RaR explicit
    /// aggregation.
    RubricSupport,
    /// The generated rubric shown whole, one 0-9 score (`ares judge --mode holistic`).
    RubricHolistic,
    /// No rubric: one 0-9 score for the question and response (`templates/judge_plain.txt`).
    PlainHolistic,
    /// No rubric, the reference answer shown: one 0-9 score (`templates/judge_reference.txt`),
    /// the strongest simple baseline (issue 12). Questions without a reference (llmbar) are
    /// counted as failed `no_reference`.
    ReferenceHolistic,
    /// The generated rubric, the two outputs of a pair compared in one prompt, asked in both
    /// orders (`ares judge --pairwise`): the preferred output gets P(it is better), the other
    /// the rest. Pairs only (llmbar); medquad's answers count as failed `pairs_only`.
    RubricPairwise,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::RubricLogprob,
        Method::RubricLogprobGated,
        Method::RubricLogprobRelevance,
        Method::RubricSupport,
        Method::RubricHolistic,
        Method::PlainHolistic,
        Method::ReferenceHolistic,
        Method::RubricPairwise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::RubricLogprob => "rubric_logprob",
            Method::RubricLogprobGated => "rubric_logprob_gated",
            Method::RubricLogprobRelevance => "rubric_logprob_relevance",
            Method::RubricSupport => "rubric_support",
            Method::RubricHolistic => "rubric_holistic",
            Method::PlainHolistic => "plain_holistic",
            Method::ReferenceHolistic => "reference_holistic",
            Method::RubricPairwise => "rubric_pairwise",
        }
    }

    /// How the table names it.
    pub fn label(self) -> &'static str {
        match self {
            Method::RubricLogprob => "rubric, logprob per criterion",
            Method::RubricLogprobGated => "rubric, logprob per criterion, topic gate",
            Method::RubricLogprobRelevance => "rubric, logprob per criterion, relevance gate",
            Method::RubricSupport => "rubric, support (likelihood) per criterion",
            Method::RubricHolistic => "rubric, holistic 0-9",
            Method::PlainHolistic => "no rubric, holistic 0-9",
            Method::ReferenceHolistic => "no rubric, reference answer, holistic 0-9",
            Method::RubricPairwise => "rubric, pairwise, both orders",
        }
    }

    fn uses_rubric(self) -> bool {
        !matches!(self, Method::PlainHolistic | Method::ReferenceHolistic)
    }
}

/// What a job does; `ares eval`'s flags map onto it.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The `../shared/eval` folder.
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub datasets: Vec<Dataset>,
    /// Items per data set (answers for medquad, pairs for llmbar), a seeded sample.
    pub limit: Option<usize>,
    pub seed: u64,
    /// Bootstrap resamples.
    pub resamples: usize,
    pub rubric: RubricGenConfig,
    /// Judge requests in flight at most.
    pub max_in_flight: usize,
    /// Keep a verdict cache in the output folder.
    pub cache: bool,
    /// Drop the generated criteria a question's reference answer fails before judging
    /// (`judge::reference_check`, as in `ares synth`); questions without a reference keep theirs.
    pub reference_check: bool,
    /// The methods to run, a non-empty subset of [`Method::ALL`] (in that order in the report).
    pub methods: Vec<Method>,
}

/// Progress of a running job.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalProgress {
    /// `<dataset>: rubrics` or `<dataset>: <method>`.
    pub stage: String,
    /// Rubrics or responses done / in this stage.
    pub done: usize,
    pub total: usize,
    /// Judge stages: verdict requests (criteria or prompts) done / planned.
    pub requests_done: usize,
    pub requests_total: usize,
    /// Since the stage started.
    pub seconds: f64,
}

/// A question that got no rubric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricFailure {
    pub id: String,
    pub status: RubricStatus,
    pub error: String,
    /// [`rubric_fingerprint`] of what was tried: the same fingerprint fails the same way
    /// (generation is greedy and batch-invariant), so a rerun does not try again.
    pub fingerprint: String,
}

/// sha256 (hex) of a length-prefixed encoding of everything a generated rubric depends on: the
/// question, the reference answer, the rubric template, the model and the generation settings.
pub fn rubric_fingerprint(
    q: &Question,
    template_hash: &str,
    model_sha256: &str,
    settings: &Value,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let settings = settings.to_string();
    let fields = [
        q.question.as_str(),
        q.reference_answer.as_deref().unwrap_or("\u{0}none"),
        template_hash,
        model_sha256,
        settings.as_str(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rubrics of one data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricSummary {
    /// Distinct questions in the sample.
    pub questions: usize,
    /// Taken from the rubric file of an earlier run.
    pub reused: usize,
    /// Generated by this run.
    pub generated: usize,
    /// Questions without a rubric (this run's failures and earlier ones it did not retry).
    pub failed: usize,
    /// Of `failed`: failures recorded by an earlier run for the same fingerprint, not retried.
    pub failures_reused: usize,
    pub mean_criteria: Option<f64>,
    /// Criteria of the sample's rubrics that the model labelled pitfall but wrote as advice, kept
    /// as important criteria (`extra.recategorized_criteria`, see `rubric_gen::to_item`).
    #[serde(default)]
    pub recategorized: usize,
    pub seconds: f64,
    pub file: PathBuf,
    /// What the reference check did (absent when it was off or no question had a reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_check: Option<ReferenceCheckSummary>,
}

/// The reference check of one data set's rubrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceCheckSummary {
    /// Rubrics whose reference answer was judged.
    pub checked: usize,
    /// Criteria of those rubrics before the check, and dropped by it.
    pub criteria: usize,
    pub dropped: usize,
    /// Rubrics left without a positive criterion (their responses count as `no_rubric`), or
    /// whose reference answer could not be judged (kept whole).
    pub emptied: usize,
    pub unchecked: usize,
    /// Per question: the kept criterion ids and the dropped criteria with their P(yes).
    pub file: PathBuf,
}

/// One method on one data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: Method,
    /// Samples (answers, or pairs) in the statistics.
    pub scored: usize,
    /// Samples left out: why, and how many (`no_rubric`, or a judge status).
    pub failed: BTreeMap<String, usize>,
    /// Medquad: Spearman's rho and Kendall's tau-b of reward vs expert grade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spearman: Option<Estimate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kendall_tau_b: Option<Estimate>,
    /// Llmbar: fraction of pairs whose preferred output got the higher reward (ties count 1/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairwise_accuracy: Option<Estimate>,
    /// Llmbar: pairs whose two rewards were equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ties: Option<usize>,
    /// Pairwise method: share of judged pairs whose two orders picked different winners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_disagreement_rate: Option<f64>,
    /// Mean reward of the scored responses.
    pub mean_reward: Option<f64>,
    /// Rubric methods: the difference to plain holistic judging on the samples both scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_plain: Option<VsPlain>,
    /// Verdict requests answered by the engine / by the verdict cache.
    pub requests: usize,
    pub cache_hits: usize,
    pub seconds: f64,
    pub template_hash: String,
    pub records: PathBuf,
}

/// A rubric method against plain holistic judging, paired: the same samples, the same resamples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VsPlain {
    /// Samples both methods scored.
    pub common: usize,
    /// Main statistic of the method minus that of plain judging (medquad: Spearman's rho;
    /// llmbar: pairwise accuracy), with its paired percentile bootstrap interval.
    pub delta: Option<Estimate>,
}

/// For each of `methods` that uses a rubric, `stat` of its samples minus `stat` of plain
/// judging's, on the samples both have (`samples[k][i]`: sample i of `methods[k]`, `None` when
/// not scored), bootstrapped over those samples; all `None` when plain judging was not run.
fn compare_with_plain<T: Copy>(
    methods: &[Method],
    samples: &[Vec<Option<T>>],
    stat: &dyn Fn(&[T]) -> Option<f64>,
    resamples: usize,
    seed: u64,
) -> Vec<Option<VsPlain>> {
    let Some(plain) = methods.iter().position(|&m| m == Method::PlainHolistic) else {
        return vec![None; methods.len()];
    };
    methods
        .iter()
        .enumerate()
        .map(|(k, m)| {
            if !m.uses_rubric() {
                return None;
            }
            let both: Vec<(T, T)> = samples[k]
                .iter()
                .zip(&samples[plain])
                .filter_map(|(a, p)| Some(((*a)?, (*p)?)))
                .collect();
            let delta = |idx: &[usize]| {
                let a: Vec<T> = idx.iter().map(|&i| both[i].0).collect();
                let p: Vec<T> = idx.iter().map(|&i| both[i].1).collect();
                Some(stat(&a)? - stat(&p)?)
            };
            Some(VsPlain {
                common: both.len(),
                delta: stats::bootstrap(both.len(), delta, resamples, CONFIDENCE, seed),
            })
        })
        .collect()
}

impl MethodResult {
    /// False for a method that does not apply to its data set (pairwise on medquad, which has no
    /// pairs: every answer failed `pairs_only`); tables and pages give it no row.
    /// False for a method that cannot apply to the data set at all (pairwise on medquad, the
    /// topic gate where the data set has no gate statement): the table leaves its row out.
    pub fn applies(&self) -> bool {
        !(self.scored == 0
            && (self.failed.keys().eq(["pairs_only"]) || self.failed.keys().eq(["no_gate"])))
    }

    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }
}

/// One data set's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetResult {
    pub dataset: Dataset,
    /// Samples drawn (answers or pairs) and available in the file.
    pub samples: usize,
    pub available: usize,
    /// Medquad: answers per expert grade 1..=4 in the sample; llmbar: pairs preferring 1, 2.
    pub labels: Vec<usize>,
    pub rubrics: RubricSummary,
    pub methods: Vec<MethodResult>,
}

/// One line of `samples-<dataset>.jsonl`: what people said about one judged response, with the
/// start of its text, so that a report can be drawn from the output folder alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleLabel {
    /// Position of the response in the eval sample (1-based): the `line` of its judged records.
    pub line: usize,
    pub item_id: String,
    pub response_id: String,
    /// Medquad: the expert grade 1-4; llmbar: 1 for the preferred output of its pair, 0 for the
    /// other one.
    pub label: f64,
    /// The first [`SAMPLE_TEXT_CHARS`] characters of the question and of the response.
    pub question: String,
    pub response: String,
}

/// Characters of question and response text kept in `samples-<dataset>.jsonl`.
pub const SAMPLE_TEXT_CHARS: usize = 400;

/// The `samples-<dataset>.jsonl` file name.
pub fn samples_file(dataset: Dataset) -> String {
    format!("samples-{}.jsonl", dataset.as_str())
}

fn sample_labels(d: &Prepared) -> Vec<SampleLabel> {
    let cut = |s: &str| s.chars().take(SAMPLE_TEXT_CHARS).collect::<String>();
    d.responses
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let label = match &d.agreement {
                Agreement::Grades(g) => g[i],
                Agreement::Preferences(p) => f64::from(u8::from(p[i / 2] as usize == i % 2 + 1)),
            };
            let question = d
                .questions
                .iter()
                .find(|q| q.id == r.item_id)
                .map_or(String::new(), |q| cut(&q.question));
            SampleLabel {
                line: i + 1,
                item_id: r.item_id.clone(),
                response_id: r.response_id.clone(),
                label,
                question,
                response: cut(&r.text),
            }
        })
        .collect()
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub schema_version: u32,
    /// The command line, as the binary saw it.
    pub command: String,
    pub model_sha256: String,
    /// Template hashes: rubric, judge_criterion, judge_holistic, judge_plain, judge_reference,
    /// judge_pairwise, judge_support, judge_relevance.
    pub templates: BTreeMap<String, String>,
    pub limit: Option<usize>,
    pub seed: u64,
    pub resamples: usize,
    pub confidence: f64,
    pub datasets: Vec<DatasetResult>,
    pub seconds: f64,
}

fn fmt_estimate(e: &Option<Estimate>) -> String {
    match e {
        Some(e) => format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high),
        None => "n/a".into(),
    }
}

impl EvalReport {
    /// The results as one markdown table (what `ares eval` prints).
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "model {} · seed {} · {} bootstrap resamples · {:.0}% percentile intervals · limit {}\n\n",
            &self.model_sha256[..self.model_sha256.len().min(12)],
            self.seed,
            self.resamples,
            self.confidence * 100.0,
            self.limit
                .map(|l| format!("{l} per data set"))
                .unwrap_or_else(|| "none".into()),
        ));
        out.push_str("| data set | method | n | failed | Spearman ρ [95% CI] | Kendall τ-b [95% CI] | pairwise acc. [95% CI] | Δ vs no rubric, same samples [95% CI] | mean reward |\n");
        out.push_str("|---|---|---:|---:|---|---|---|---|---:|\n");
        for d in &self.datasets {
            // A method that does not apply to the data set (pairwise on medquad) gets no row.
            for m in d.methods.iter().filter(|m| m.applies()) {
                let acc = match (&m.pairwise_accuracy, m.ties) {
                    (Some(_), Some(t)) => {
                        format!("{} ({t} ties)", fmt_estimate(&m.pairwise_accuracy))
                    }
                    _ => "—".into(),
                };
                let acc = match m.order_disagreement_rate {
                    Some(r) if d.dataset == Dataset::Llmbar => {
                        format!("{acc}; orders disagree {:.0}%", 100.0 * r)
                    }
                    _ => acc,
                };
                let dash = |e: &Option<Estimate>| {
                    if d.dataset == Dataset::Medquad {
                        fmt_estimate(e)
                    } else {
                        "—".into()
                    }
                };
                let delta = match &m.vs_plain {
                    Some(v) => format!("{} (n {})", fmt_estimate(&v.delta), v.common),
                    None => "—".into(),
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    d.dataset.as_str(),
                    m.method.label(),
                    m.scored,
                    m.failed_total(),
                    dash(&m.spearman),
                    dash(&m.kendall_tau_b),
                    acc,
                    delta,
                    m.mean_reward
                        .map(|r| format!("{r:.3}"))
                        .unwrap_or_else(|| "n/a".into()),
                ));
            }
        }
        out.push('\n');
        for d in &self.datasets {
            let r = &d.rubrics;
            out.push_str(&format!(
                "{}: {} of {} samples; {} questions, rubrics {} generated + {} reused, {} failed ({} known from an earlier run){}{}\n",
                d.dataset.as_str(),
                d.samples,
                d.available,
                r.questions,
                r.generated,
                r.reused,
                r.failed,
                r.failures_reused,
                r.mean_criteria
                    .map(|c| format!(", {c:.1} criteria on average"))
                    .unwrap_or_default(),
                match r.recategorized {
                    0 => String::new(),
                    n => format!(", {n} pitfalls written as advice kept as important criteria"),
                },
            ));
            if let Some(c) = &r.reference_check {
                out.push_str(&format!(
                    "{}: reference check of {} rubrics: {} of {} criteria dropped (the reference answer fails them), {} rubrics left without a positive criterion, {} not checked\n",
                    d.dataset.as_str(),
                    c.checked,
                    c.dropped,
                    c.criteria,
                    c.emptied,
                    c.unchecked,
                ));
            }
        }
        out
    }
}

/// Everything a run shares.
struct Context<'a> {
    config: &'a EvalConfig,
    generator: &'a dyn Generator,
    tokenizer: &'a Tokenizer,
    model_sha256: &'a str,
    cache: Option<VerdictCache>,
    progress: &'a (dyn Fn(&EvalProgress) + Sync),
}

impl Context<'_> {
    /// A judge in `mode` over the run's model, with the verdict cache when the run keeps one.
    fn judge(&self, mode: Mode) -> Result<Judge<'_>, EvalError> {
        let config = JudgeConfig {
            mode,
            max_in_flight: self.config.max_in_flight.max(1),
            ..JudgeConfig::default()
        };
        let judge = Judge::new(self.generator, self.tokenizer, self.model_sha256, config)?;
        Ok(match &self.cache {
            Some(cache) => judge.with_cache(cache),
            None => judge,
        })
    }

    /// A judge job's progress reported as this run's progress in `stage`.
    fn judge_progress(&self, stage: String) -> impl Fn(&JudgeProgress) + Sync + '_ {
        move |p: &JudgeProgress| {
            (self.progress)(&EvalProgress {
                stage: stage.clone(),
                done: p.responses_done,
                total: p.responses_total,
                requests_done: p.requests_done,
                requests_total: p.requests_total,
                seconds: p.seconds,
            })
        }
    }
}

/// One response to judge: its item (question id) and text.
struct EvalResponse {
    item_id: String,
    response_id: String,
    text: String,
}

/// Runs the whole job and writes the output folder.
pub fn run(
    config: &EvalConfig,
    command: &str,
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    model_sha256: &str,
    progress: &(dyn Fn(&EvalProgress) + Sync),
) -> Result<EvalReport, EvalError> {
    let t0 = Instant::now();
    if config.datasets.is_empty() {
        return Err(EvalError::NoDatasets);
    }
    if config.methods.is_empty() {
        return Err(EvalError::NoMethods);
    }
    std::fs::create_dir_all(&config.out_dir).map_err(|source| EvalError::Io {
        path: config.out_dir.clone(),
        source,
    })?;
    let cache = if config.cache {
        Some(VerdictCache::open_dir(&config.out_dir)?)
    } else {
        None
    };
    let ctx = Context {
        config,
        generator,
        tokenizer,
        model_sha256,
        cache,
        progress,
    };
    let mut templates = BTreeMap::new();
    for (name, t) in [
        ("rubric", PromptTemplate::rubric()?),
        ("judge_criterion", PromptTemplate::criterion()?),
        ("judge_holistic", PromptTemplate::holistic()?),
        ("judge_plain", plain_template()?),
        ("judge_reference", reference_template()?),
        ("judge_pairwise", PromptTemplate::pairwise()?),
        ("judge_support", crate::judge::support::support_template()?),
        (
            "judge_relevance",
            crate::judge::relevance::relevance_template()?,
        ),
    ] {
        templates.insert(name.to_string(), t.hash().to_string());
    }
    let mut results = Vec::new();
    for &dataset in &config.datasets {
        results.push(match dataset {
            Dataset::Medquad => medquad(&ctx)?,
            Dataset::Llmbar => llmbar(&ctx)?,
        });
    }
    let report = EvalReport {
        schema_version: EVAL_REPORT_VERSION,
        command: command.to_string(),
        model_sha256: model_sha256.to_string(),
        templates,
        limit: config.limit,
        seed: config.seed,
        resamples: config.resamples,
        confidence: CONFIDENCE,
        datasets: results,
        seconds: t0.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&report).expect("the report is plain data");
    write_text(&config.out_dir.join("report.json"), json)?;
    write_text(&config.out_dir.join("table.md"), report.to_markdown())?;
    Ok(report)
}

fn write_text(path: &Path, text: String) -> Result<(), EvalError> {
    let text = text.strip_suffix('\n').map(str::to_string).unwrap_or(text);
    crate::jsonl::write_lines(path, [text]).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A data set ready to score: its questions, the responses to judge (each naming its question),
/// and how agreement with people is measured on them.
struct Prepared {
    dataset: Dataset,
    samples: usize,
    available: usize,
    labels: Vec<usize>,
    questions: Vec<Question>,
    responses: Vec<EvalResponse>,
    agreement: Agreement,
}

/// What people said about the responses.
enum Agreement {
    /// An expert grade per response (medquad, 1-4): rank correlation of reward with grade.
    Grades(Vec<f64>),
    /// Responses come in consecutive pairs, with the preferred one (1 or 2) of each (llmbar):
    /// how often the preferred output gets the higher reward.
    Preferences(Vec<u8>),
}

impl Agreement {
    /// One sample per scored unit (a response, or a pair), `None` when it was not scored, and
    /// the failure reasons counted into `result`; fills `result`'s agreement figures.
    fn measure(
        &self,
        rewards: &[Result<f64, String>],
        result: &mut MethodResult,
        config: &EvalConfig,
    ) -> Vec<Option<(f64, f64)>> {
        let per_unit: Vec<Option<(f64, f64)>> = match self {
            Agreement::Grades(grades) => {
                for why in rewards.iter().filter_map(|r| r.as_ref().err()) {
                    *result.failed.entry(why.clone()).or_default() += 1;
                }
                rewards
                    .iter()
                    .zip(grades)
                    .map(|(r, g)| r.as_ref().ok().map(|r| (*r, *g)))
                    .collect()
            }
            Agreement::Preferences(labels) => labels
                .iter()
                .zip(rewards.chunks(2))
                .map(|(label, r)| match (&r[0], &r[1]) {
                    (Ok(a), Ok(b)) => Some(if *label == 1 { (*a, *b) } else { (*b, *a) }),
                    // A pair counts once, under the reason of its first unscored output.
                    (Err(why), _) | (_, Err(why)) => {
                        *result.failed.entry(why.clone()).or_default() += 1;
                        None
                    }
                })
                .collect(),
        };
        let scored: Vec<(f64, f64)> = per_unit.iter().flatten().copied().collect();
        let n = scored.len();
        result.scored = n;
        let boot = |f: &dyn Fn(&[usize]) -> Option<f64>| {
            stats::bootstrap(n, f, config.resamples, CONFIDENCE, config.seed)
        };
        match self {
            Agreement::Grades(_) => {
                let (x, y): (Vec<f64>, Vec<f64>) = scored.iter().copied().unzip();
                result.spearman =
                    boot(&|idx| stats::spearman(&stats::pick(&x, idx), &stats::pick(&y, idx)));
                result.kendall_tau_b =
                    boot(&|idx| stats::kendall_tau_b(&stats::pick(&x, idx), &stats::pick(&y, idx)));
                result.mean_reward = mean(&x);
            }
            Agreement::Preferences(_) => {
                let all: Vec<f64> = rewards.iter().flatten().copied().collect();
                result.mean_reward = mean(&all);
                result.ties = Some(scored.iter().filter(|(a, b)| a == b).count());
                result.pairwise_accuracy = boot(&|idx| {
                    let picked: Vec<(f64, f64)> = idx.iter().map(|&i| scored[i]).collect();
                    stats::pairwise_accuracy(&picked)
                });
            }
        }
        per_unit
    }

    /// The statistic compared between a method and the plain judge on common samples.
    fn statistic(&self, samples: &[(f64, f64)]) -> Option<f64> {
        match self {
            Agreement::Grades(_) => {
                let (x, y): (Vec<f64>, Vec<f64>) = samples.iter().copied().unzip();
                stats::spearman(&x, &y)
            }
            Agreement::Preferences(_) => stats::pairwise_accuracy(samples),
        }
    }
}

/// The one scoring path of every data set: a rubric per question, every method's rewards, their
/// agreement with people, and each method against the plain judge.
fn score(ctx: &Context<'_>, d: Prepared) -> Result<DatasetResult, EvalError> {
    let config = ctx.config;
    let samples_path = config.out_dir.join(samples_file(d.dataset));
    crate::jsonl::write_records(&samples_path, &sample_labels(&d)).map_err(|source| {
        EvalError::Io {
            path: samples_path.clone(),
            source,
        }
    })?;
    let (rubrics, rubric_summary) = rubrics(
        config,
        ctx.generator,
        ctx.model_sha256,
        ctx.progress,
        d.dataset,
        &d.questions,
    )?;
    let (rubrics, rubric_summary) = if config.reference_check {
        reference_check(ctx, d.dataset, &d.questions, rubrics, rubric_summary)?
    } else {
        (rubrics, rubric_summary)
    };
    let mut methods = Vec::new();
    // Per method, per scored unit: (reward, grade) or (preferred, other) when scored.
    let mut samples: Vec<Vec<Option<(f64, f64)>>> = Vec::new();
    let chosen: Vec<Method> = Method::ALL
        .into_iter()
        .filter(|m| config.methods.contains(m))
        .collect();
    for &method in &chosen {
        let (rewards, mut result) =
            judge(ctx, d.dataset, method, &d.questions, &rubrics, &d.responses)?;
        samples.push(d.agreement.measure(&rewards, &mut result, config));
        methods.push(result);
    }
    let statistic = |s: &[(f64, f64)]| d.agreement.statistic(s);
    let vs = compare_with_plain(&chosen, &samples, &statistic, config.resamples, config.seed);
    for (m, v) in methods.iter_mut().zip(vs) {
        m.vs_plain = v;
    }
    Ok(DatasetResult {
        dataset: d.dataset,
        samples: d.samples,
        available: d.available,
        labels: d.labels,
        rubrics: rubric_summary,
        methods,
    })
}

fn medquad(ctx: &Context<'_>) -> Result<DatasetResult, EvalError> {
    let config = ctx.config;
    let all = datasets::read_medquad(&config.data_dir.join(datasets::MEDQUAD_FILE))?;
    let available = all.len();
    let rows: Vec<MedQuadAnswer> = datasets::sample(all, config.limit, config.seed);
    let mut questions: Vec<Question> = Vec::new();
    for r in &rows {
        let id = format!("medquad-{}", r.qid);
        if !questions.iter().any(|q| q.id == id) {
            questions.push(Question {
                id,
                // The curators' paraphrase states what the consumer asked; the judge and the
                // rubric writer see the same question text.
                question: r.question_paraphrase.clone(),
                reference_answer: Some(r.reference_answers.join("\n\n"))
                    .filter(|s| !s.trim().is_empty()),
            });
        }
    }
    let responses: Vec<EvalResponse> = rows
        .iter()
        .map(|r| EvalResponse {
            item_id: format!("medquad-{}", r.qid),
            response_id: format!("line{}", r.line),
            text: r.answer.clone(),
        })
        .collect();
    let mut labels = vec![0; 4];
    for r in &rows {
        labels[usize::from(r.score) - 1] += 1;
    }
    let prepared = Prepared {
        dataset: Dataset::Medquad,
        samples: rows.len(),
        available,
        labels,
        questions,
        responses,
        agreement: Agreement::Grades(rows.iter().map(|r| f64::from(r.score)).collect()),
    };
    score(ctx, prepared)
}

fn llmbar(ctx: &Context<'_>) -> Result<DatasetResult, EvalError> {
    let config = ctx.config;
    let all = datasets::read_llmbar(&config.data_dir.join(datasets::LLMBAR_DIR))?;
    let available = all.len();
    let pairs: Vec<LlmBarPair> = datasets::sample(all, config.limit, config.seed);
    let questions: Vec<Question> = pairs
        .iter()
        .map(|p| Question {
            id: format!("llmbar-{}", p.id),
            question: p.input.clone(),
            reference_answer: None,
        })
        .collect();
    let responses: Vec<EvalResponse> = pairs
        .iter()
        .flat_map(|p| {
            [("output_1", &p.output_1), ("output_2", &p.output_2)].map(|(id, text)| EvalResponse {
                item_id: format!("llmbar-{}", p.id),
                response_id: id.to_string(),
                text: text.clone(),
            })
        })
        .collect();
    let labels = vec![
        pairs.iter().filter(|p| p.label == 1).count(),
        pairs.iter().filter(|p| p.label == 2).count(),
    ];
    let prepared = Prepared {
        dataset: Dataset::Llmbar,
        samples: pairs.len(),
        available,
        labels,
        questions,
        responses,
        agreement: Agreement::Preferences(pairs.iter().map(|p| p.label).collect()),
    };
    score(ctx, prepared)
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The generation settings a stored rubric must have been made with to be reused.
/// The output schema is part of them: a rubric made under an older schema (before the criterion
/// pattern, for example) is made again.
fn generation_settings(config: &RubricGenConfig) -> Value {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(rubric_schema().to_string().as_bytes());
    let schema: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"max_tokens": config.max_tokens, "sampling": config.sampling, "schema": schema})
}

/// A rubric per question: reused from `rubrics-<dataset>.jsonl` when it was made for the same
/// question, reference answer, template, model and settings and every criterion passes today's
/// criterion check; generated (all missing ones in one
/// batch) otherwise. The file is rewritten with every usable rubric it held plus the new ones.
fn rubrics(
    config: &EvalConfig,
    generator: &dyn Generator,
    model_sha256: &str,
    progress: &(dyn Fn(&EvalProgress) + Sync),
    dataset: Dataset,
    questions: &[Question],
) -> Result<(HashMap<String, RubricItem>, RubricSummary), EvalError> {
    let t0 = Instant::now();
    let path = config
        .out_dir
        .join(format!("rubrics-{}.jsonl", dataset.as_str()));
    let failed_path = config
        .out_dir
        .join(format!("rubrics-{}.failed.jsonl", dataset.as_str()));
    let gen = RubricGenerator::new(generator, model_sha256, config.rubric.clone())?;
    let settings = generation_settings(&config.rubric);
    let mut stored: BTreeMap<String, RubricItem> = BTreeMap::new();
    if path.exists() {
        for result in formats::read_jsonl(&path, Format::Ares)? {
            match result {
                Ok(item) => {
                    stored.insert(item.id.clone(), item);
                }
                Err(e) => tracing::warn!("{e}; that rubric will be generated again"),
            }
        }
    }
    let fresh = |item: &RubricItem, q: &Question| {
        let extra = |k: &str| item.extra.get(k);
        item.question == q.question
            && item.reference_answer == q.reference_answer
            && extra("template_hash").and_then(Value::as_str) == Some(gen.template_hash())
            && extra("model_sha256").and_then(Value::as_str) == Some(model_sha256)
            && extra("eval_generation") == Some(&settings)
            // Made under an older criterion check: generated again, as a fresh run would.
            && item
                .criteria
                .iter()
                .all(|c| check_criterion_as(&c.text, c.category).is_ok())
    };
    let mut stored_failures: BTreeMap<String, RubricFailure> = BTreeMap::new();
    if failed_path.exists() {
        let lines = crate::jsonl::read_lines(&failed_path).map_err(|source| EvalError::Io {
            path: failed_path.clone(),
            source,
        })?;
        for line in lines {
            let n = line.number;
            match line
                .text
                .and_then(|t| serde_json::from_str::<RubricFailure>(&t).map_err(|e| e.to_string()))
            {
                Ok(f) => {
                    stored_failures.insert(f.id.clone(), f);
                }
                Err(e) => tracing::warn!(
                    "{}:{n}: {e}; that question will be tried again",
                    failed_path.display(),
                ),
            }
        }
    }
    let fingerprint =
        |q: &Question| rubric_fingerprint(q, gen.template_hash(), model_sha256, &settings);
    let mut out: HashMap<String, RubricItem> = HashMap::new();
    let mut missing: Vec<Question> = Vec::new();
    let mut failures_reused = 0;
    for q in questions {
        match (stored.get(&q.id), stored_failures.get(&q.id)) {
            (Some(item), _) if fresh(item, q) => {
                out.insert(q.id.clone(), item.clone());
            }
            (_, Some(f)) if f.fingerprint == fingerprint(q) => failures_reused += 1,
            _ => missing.push(q.clone()),
        }
    }
    let reused = out.len();
    let stage = format!("{}: rubrics", dataset.as_str());
    let total = missing.len();
    let report = |done: usize| {
        (progress)(&EvalProgress {
            stage: stage.clone(),
            done,
            total,
            requests_done: done,
            requests_total: total,
            seconds: t0.elapsed().as_secs_f64(),
        })
    };
    report(0);
    let counting = Counting::new(generator, &report);
    let gen = RubricGenerator::new(&counting, model_sha256, config.rubric.clone())?;
    let outcomes = gen.generate(&missing);
    let mut failures = 0;
    for (q, outcome) in missing.iter().zip(outcomes) {
        stored.remove(&q.id);
        stored_failures.remove(&q.id);
        match outcome.item {
            Ok(mut item) => {
                item.extra
                    .insert("eval_generation".into(), settings.clone());
                stored.insert(q.id.clone(), item.clone());
                out.insert(q.id.clone(), item);
            }
            Err(e) => {
                failures += 1;
                let failure = RubricFailure {
                    id: q.id.clone(),
                    status: e.status(),
                    error: e.to_string(),
                    fingerprint: fingerprint(q),
                };
                stored_failures.insert(q.id.clone(), failure);
            }
        }
    }
    let items: Vec<RubricItem> = stored.into_values().collect();
    formats::write_jsonl(&path, Format::Ares, &items)?;
    let failures_kept: Vec<RubricFailure> = stored_failures.into_values().collect();
    crate::jsonl::write_records(&failed_path, &failures_kept).map_err(|source| EvalError::Io {
        path: failed_path.clone(),
        source,
    })?;
    let criteria: Vec<f64> = out.values().map(|i| i.criteria.len() as f64).collect();
    let recategorized = out
        .values()
        .filter_map(|i| i.extra.get("recategorized_criteria"))
        .filter_map(Value::as_array)
        .map(Vec::len)
        .sum();
    let summary = RubricSummary {
        questions: questions.len(),
        reused,
        generated: out.len() - reused,
        failed: failures + failures_reused,
        failures_reused,
        mean_criteria: mean(&criteria),
        recategorized,
        seconds: t0.elapsed().as_secs_f64(),
        file: path,
        reference_check: None,
    };
    Ok((out, summary))
}

/// One line of `reference-check-<dataset>.jsonl`.
#[derive(Debug, Serialize)]
struct ReferenceCheckLine {
    id: String,
    kept: Vec<String>,
    /// The reference answer's P(yes) on each kept criterion, in the order of `kept` (null where
    /// the judge gave none): what a stricter bar would have dropped can be read off it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kept_p_yes_reference: Vec<Option<f64>>,
    dropped: Vec<DroppedCriterion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The reference check of every rubric whose question has a reference answer: the reference is
/// judged against the rubric in logprob mode (through the verdict cache), and the criteria it
/// fails are dropped. A rubric left without a positive criterion is removed (its responses count
/// as `no_rubric`); one whose reference could not be judged is kept whole and counted.
fn reference_check(
    ctx: &Context<'_>,
    dataset: Dataset,
    questions: &[Question],
    mut rubrics: HashMap<String, RubricItem>,
    mut summary: RubricSummary,
) -> Result<(HashMap<String, RubricItem>, RubricSummary), EvalError> {
    let judge = ctx.judge(Mode::Logprob)?;
    let with_reference: Vec<(&Question, &str)> = questions
        .iter()
        .filter(|q| rubrics.contains_key(&q.id))
        .filter_map(|q| q.reference_answer.as_deref().map(|r| (q, r)))
        .collect();
    if with_reference.is_empty() {
        return Ok((rubrics, summary));
    }
    let inputs: Vec<(&RubricItem, &str, &str)> = with_reference
        .iter()
        .map(|(q, r)| (&rubrics[&q.id], "reference", *r))
        .collect();
    let progress = ctx.judge_progress(format!("{}: reference check", dataset.as_str()));
    let (records, _) = judge.score_each(&inputs, &progress);
    let mut out = ReferenceCheckSummary {
        checked: 0,
        criteria: 0,
        dropped: 0,
        emptied: 0,
        unchecked: 0,
        file: ctx
            .config
            .out_dir
            .join(format!("reference-check-{}.jsonl", dataset.as_str())),
    };
    let mut rows = Vec::new();
    for ((q, _), record) in with_reference.iter().zip(&records) {
        let item = &rubrics[&q.id];
        match check_against_reference(item, record) {
            Ok(checked) => {
                out.checked += 1;
                out.criteria += item.criteria.len();
                out.dropped += checked.dropped.len();
                let p_yes = |id: &str| {
                    record
                        .criteria
                        .iter()
                        .find(|v| v.id == id)
                        .and_then(|v| v.p_yes)
                };
                rows.push(ReferenceCheckLine {
                    id: q.id.clone(),
                    kept: checked.item.criteria.iter().map(|c| c.id.clone()).collect(),
                    kept_p_yes_reference: checked
                        .item
                        .criteria
                        .iter()
                        .map(|c| p_yes(&c.id))
                        .collect(),
                    dropped: checked.dropped,
                    error: None,
                });
                if checked.item.criteria.iter().any(|c| c.weight > 0.0) {
                    rubrics.insert(q.id.clone(), checked.item);
                } else {
                    out.emptied += 1;
                    rubrics.remove(&q.id);
                }
            }
            Err(e) => {
                out.unchecked += 1;
                rows.push(ReferenceCheckLine {
                    id: q.id.clone(),
                    kept: Vec::new(),
                    kept_p_yes_reference: Vec::new(),
                    dropped: Vec::new(),
                    error: Some(e.to_string()),
                });
            }
        }
    }
    crate::jsonl::write_records(&out.file, &rows).map_err(|source| EvalError::Io {
        path: out.file.clone(),
        source,
    })?;
    let criteria: Vec<f64> = rubrics.values().map(|i| i.criteria.len() as f64).collect();
    summary.mean_criteria = mean(&criteria);
    summary.reference_check = Some(out);
    Ok((rubrics, summary))
}

/// The item the plain holistic judge gets: the question, and a placeholder criterion that only
/// satisfies the rubric model's validation. The plain template has no `{{rubric}}`, so the
/// model never sees it.
fn plain_item(q: &Question) -> RubricItem {
    RubricItem::new(
        q.id.clone(),
        q.question.clone(),
        vec![Criterion::new(
            "none",
            "(plain holistic judging: no rubric is shown)",
            1.0,
            Category::Essential,
        )],
    )
}

/// The item the reference-guided judge gets: the question with its reference answer appended
/// (the judge renders only `{{question}}` and `{{response}}`), and the same placeholder criterion
/// as [`plain_item`]; `None` without a reference answer.
fn reference_item(q: &Question) -> Option<RubricItem> {
    let reference = q.reference_answer.as_deref()?;
    let mut item = plain_item(q);
    item.question = format!(
        "Question:\n{}\n\nReference answer:\n{reference}",
        q.question
    );
    Some(item)
}

/// Judges every response with `method`: the reward of each (or why it has none: `no_rubric` or
/// the judge status) and the method's result without its statistics and failure counts.
/// Writes the records.
fn judge(
    ctx: &Context<'_>,
    dataset: Dataset,
    method: Method,
    questions: &[Question],
    rubrics: &HashMap<String, RubricItem>,
    responses: &[EvalResponse],
) -> Result<(Vec<Result<f64, String>>, MethodResult), EvalError> {
    let t0 = Instant::now();
    let mode = match method {
        Method::RubricLogprob | Method::RubricLogprobGated | Method::RubricLogprobRelevance => {
            Mode::Logprob
        }
        Method::RubricSupport => Mode::Support,
        Method::RubricHolistic | Method::PlainHolistic | Method::ReferenceHolistic => {
            Mode::Holistic
        }
        Method::RubricPairwise => {
            return judge_pairwise(ctx, dataset, questions, rubrics, responses);
        }
    };
    let judge = if mode == Mode::Support {
        ResponseJudge::Support(SupportJudge::new(
            ctx.generator,
            ctx.tokenizer,
            ctx.model_sha256,
            Aggregator::RarExplicit,
            ctx.config.max_in_flight,
        )?)
    } else {
        let mut judge = ctx.judge(mode)?;
        if method == Method::PlainHolistic {
            judge = judge.with_template(plain_template()?);
        }
        if method == Method::ReferenceHolistic {
            judge = judge.with_template(reference_template()?);
        }
        ResponseJudge::Verdicts(judge)
    };
    let items: Vec<RubricItem> = if method.uses_rubric() {
        questions
            .iter()
            .filter_map(|q| rubrics.get(&q.id).cloned())
            .collect()
    } else if method == Method::ReferenceHolistic {
        questions.iter().filter_map(reference_item).collect()
    } else {
        questions.iter().map(plain_item).collect()
    };
    let gate = match (method, dataset) {
        (Method::RubricLogprobGated, Dataset::Medquad) => Some(MEDICAL_GATE),
        _ => None,
    };
    let set = if method == Method::RubricLogprobGated && gate.is_none() {
        RubricSet::default()
    } else {
        RubricSet::from_items(items)
    };
    let missing = match method {
        Method::ReferenceHolistic => "no_reference",
        Method::RubricLogprobGated if gate.is_none() => "no_gate",
        _ => "no_rubric",
    };
    let mut rewards: Vec<Result<f64, String>> = vec![Err(missing.into()); responses.len()];
    // Responses with an item to judge against, and where each one sits in `responses`.
    let mut inputs = Vec::new();
    let mut positions = Vec::new();
    for (i, r) in responses.iter().enumerate() {
        if let Some(item) = set.get(&r.item_id) {
            positions.push(i);
            inputs.push((item, r.response_id.as_str(), r.text.as_str()));
        }
    }
    let progress = ctx.judge_progress(format!("{}: {}", dataset.as_str(), method.as_str()));
    let (mut records, mut summary) = judge.score_each(&inputs, &progress);
    if let Some(statement) = gate {
        let gate_items: Vec<RubricItem> = inputs
            .iter()
            .map(|(item, _, _)| gate::gate_item(item, statement))
            .collect();
        let gate_inputs: Vec<(&RubricItem, &str, &str)> = gate_items
            .iter()
            .zip(&inputs)
            .map(|(g, (_, id, text))| (g, *id, *text))
            .collect();
        let gate_progress =
            ctx.judge_progress(format!("{}: {} (gate)", dataset.as_str(), method.as_str()));
        let (gates, gate_summary) = ctx
            .judge(Mode::Logprob)?
            .score_each(&gate_inputs, &gate_progress);
        gate::apply(&mut records, &gates, statement);
        summary.gate(&records, &gate_summary);
    }
    if method == Method::RubricLogprobRelevance {
        let t1 = Instant::now();
        let scorer = RelevanceScorer::new(ctx.generator, ctx.tokenizer, ctx.config.max_in_flight)?;
        let pairs: Vec<Option<(&str, &str)>> = inputs
            .iter()
            .map(|(item, _, text)| Some((item.question.as_str(), *text)))
            .collect();
        let stage_progress = ctx.judge_progress(format!(
            "{}: {} (relevance)",
            dataset.as_str(),
            method.as_str()
        ));
        relevance::gate_records(
            &scorer,
            &mut records,
            &pairs,
            &mut summary,
            &|done, total| {
                stage_progress(&JudgeProgress {
                    responses_done: done,
                    responses_total: total,
                    requests_done: done,
                    requests_total: total,
                    seconds: t1.elapsed().as_secs_f64(),
                })
            },
        );
    }
    for (record, &i) in records.iter_mut().zip(&positions) {
        // `line` is the response's position in the eval sample.
        record.line = i + 1;
        rewards[i] = match (record.status, record.reward) {
            (Status::Ok, Some(r)) => Ok(r),
            (status, _) => Err(status.as_str().to_string()),
        };
    }
    let path = ctx.config.out_dir.join(format!(
        "judged-{}-{}.jsonl",
        dataset.as_str(),
        method.as_str()
    ));
    write_records(&path, &records)?;
    Ok((
        rewards,
        MethodResult {
            method,
            scored: 0,
            failed: BTreeMap::new(),
            spearman: None,
            kendall_tau_b: None,
            pairwise_accuracy: None,
            ties: None,
            order_disagreement_rate: None,
            mean_reward: None,
            vs_plain: None,
            requests: summary.requests,
            cache_hits: summary.cache_hits,
            seconds: t0.elapsed().as_secs_f64(),
            template_hash: judge.template_hash().to_string(),
            records: path,
        },
    ))
}

/// The pairwise method: each pair of consecutive responses of one question (llmbar's output_1,
/// output_2) compared against its rubric in both orders. Output 1 gets the pair's preference
/// P(output 1 is better) as its "reward" and output 2 the rest, so the pairwise accuracy of
/// [`Agreement::Preferences`] counts the pairs the judge preferred rightly (0.5 is a tie).
/// Medquad has no pairs: every answer counts as failed `pairs_only`.
fn judge_pairwise(
    ctx: &Context<'_>,
    dataset: Dataset,
    questions: &[Question],
    rubrics: &HashMap<String, RubricItem>,
    responses: &[EvalResponse],
) -> Result<(Vec<Result<f64, String>>, MethodResult), EvalError> {
    let t0 = Instant::now();
    let mut judge = PairwiseJudge::new(ctx.generator, ctx.tokenizer, ctx.model_sha256)?;
    if let Some(cache) = &ctx.cache {
        judge = judge.with_cache(cache);
    }
    let mut rewards: Vec<Result<f64, String>> = vec![Err("pairs_only".into()); responses.len()];
    let mut comparisons = Vec::new();
    let mut positions = Vec::new();
    if dataset == Dataset::Llmbar {
        let known: std::collections::HashSet<&str> =
            questions.iter().map(|q| q.id.as_str()).collect();
        for (k, pair) in responses.chunks(2).enumerate() {
            let [a, b] = pair else { continue };
            let item = rubrics
                .get(&a.item_id)
                .filter(|_| a.item_id == b.item_id && known.contains(a.item_id.as_str()));
            match item {
                Some(item) => {
                    positions.push(2 * k);
                    comparisons.push(Comparison {
                        item,
                        a_id: &a.response_id,
                        a: &a.text,
                        b_id: &b.response_id,
                        b: &b.text,
                    });
                }
                None => {
                    rewards[2 * k] = Err("no_rubric".into());
                    rewards[2 * k + 1] = Err("no_rubric".into());
                }
            }
        }
    }
    let stage = format!("{}: {}", dataset.as_str(), Method::RubricPairwise.as_str());
    let report = |done: usize| {
        (ctx.progress)(&EvalProgress {
            stage: stage.clone(),
            done,
            total: comparisons.len(),
            requests_done: 2 * done,
            requests_total: 2 * comparisons.len(),
            seconds: t0.elapsed().as_secs_f64(),
        })
    };
    report(0);
    let (records, summary) = judge.compare(&comparisons);
    report(comparisons.len());
    for (r, &i) in records.iter().zip(&positions) {
        match (r.status, r.preference) {
            (Status::Ok, Some(p)) => {
                rewards[i] = Ok(p);
                rewards[i + 1] = Ok(1.0 - p);
            }
            (status, _) => {
                rewards[i] = Err(status.as_str().to_string());
                rewards[i + 1] = Err(status.as_str().to_string());
            }
        }
    }
    let path = ctx.config.out_dir.join(format!(
        "judged-{}-{}.jsonl",
        dataset.as_str(),
        Method::RubricPairwise.as_str()
    ));
    crate::jsonl::write_records(&path, &records).map_err(|source| EvalError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((
        rewards,
        MethodResult {
            method: Method::RubricPairwise,
            scored: 0,
            failed: BTreeMap::new(),
            spearman: None,
            kendall_tau_b: None,
            pairwise_accuracy: None,
            ties: None,
            order_disagreement_rate: summary.order_disagreement_rate,
            mean_reward: None,
            vs_plain: None,
            requests: summary.requests,
            cache_hits: summary.cache_hits,
            seconds: t0.elapsed().as_secs_f64(),
            template_hash: judge.template_hash().to_string(),
            records: path,
        },
    ))
}

fn write_records(path: &Path, records: &[JudgeRecord]) -> Result<(), EvalError> {
    crate::jsonl::write_records(path, records).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{prompt_text, FakeAnswer, FakeGenerator};

    #[test]
    fn plain_template_parses_and_shows_no_rubric() -> Result<(), Box<dyn std::error::Error>> {
        let t = plain_template()?;
        assert_eq!(t.hash().len(), 16);
        let messages = t.render(&[
            ("question", "Q?"),
            ("rubric", "- (+5) secret criterion"),
            ("response", "R."),
        ])?;
        let text: String = messages.iter().map(|m| m.content.as_str()).collect();
        assert!(text.contains("Q?") && text.contains("R."));
        assert!(!text.contains("secret criterion"), "{text}");
        assert_ne!(t.hash(), PromptTemplate::holistic()?.hash());
        Ok(())
    }

    #[test]
    fn table_has_one_row_per_dataset_and_method() {
        let est = |v: f64| {
            Some(Estimate {
                value: v,
                low: v - 0.1,
                high: v + 0.1,
                resamples: 1000,
            })
        };
        let result = |method, dataset: Dataset| MethodResult {
            method,
            scored: 10,
            failed: BTreeMap::from([("no_rubric".to_string(), 2)]),
            spearman: (dataset == Dataset::Medquad).then_some(est(0.25)).flatten(),
            kendall_tau_b: (dataset == Dataset::Medquad).then_some(est(0.2)).flatten(),
            pairwise_accuracy: (dataset == Dataset::Llmbar).then_some(est(0.6)).flatten(),
            ties: (dataset == Dataset::Llmbar).then_some(1),
            order_disagreement_rate: (method == Method::RubricPairwise).then_some(0.25),
            mean_reward: Some(0.5),
            vs_plain: method.uses_rubric().then_some(VsPlain {
                common: 9,
                delta: est(0.05).map(|e| Estimate { low: -0.2, ..e }),
            }),
            requests: 0,
            cache_hits: 0,
            seconds: 0.0,
            template_hash: "0".repeat(16),
            records: PathBuf::from("x"),
        };
        let rubrics = RubricSummary {
            questions: 3,
            reused: 1,
            generated: 2,
            failed: 0,
            failures_reused: 0,
            mean_criteria: Some(6.0),
            recategorized: 2,
            seconds: 0.0,
            file: PathBuf::from("r"),
            reference_check: None,
        };
        let report = EvalReport {
            schema_version: EVAL_REPORT_VERSION,
            command: "ares eval".into(),
            model_sha256: "ab".repeat(32),
            templates: BTreeMap::new(),
            limit: Some(10),
            seed: 0,
            resamples: 1000,
            confidence: CONFIDENCE,
            datasets: [Dataset::Medquad, Dataset::Llmbar]
                .map(|d| DatasetResult {
                    dataset: d,
                    samples: 12,
                    available: 100,
                    labels: vec![],
                    rubrics: rubrics.clone(),
                    methods: Method::ALL.map(|m| result(m, d)).to_vec(),
                })
                .to_vec(),
            seconds: 0.0,
        };
        // Medquad has no pairs: its pairwise method gets no row.
        let mut report = report;
        let m = report.datasets[0]
            .methods
            .iter_mut()
            .find(|m| m.method == Method::RubricPairwise)
            .expect("pairwise");
        m.scored = 0;
        m.failed = BTreeMap::from([("pairs_only".to_string(), 12)]);
        let table = report.to_markdown();
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("| medquad") || l.starts_with("| llmbar"))
            .collect();
        assert_eq!(rows.len(), 15, "{table}");
        assert!(
            table.contains(
                "6.0 criteria on average, 2 pitfalls written as advice kept as important criteria"
            ),
            "{table}"
        );
        assert!(
            rows[0].contains("0.250 [0.150, 0.350]") && rows[0].contains("| 10 | 2 |"),
            "{}",
            rows[0]
        );
        assert!(
            rows[7].contains("0.600 [0.500, 0.700] (1 ties)"),
            "{}",
            rows[7]
        );
        assert!(rows[1].contains("topic gate"), "{}", rows[1]);
        assert!(rows[2].contains("relevance gate"), "{}", rows[2]);
        assert!(rows[9].contains("relevance gate"), "{}", rows[9]);
        assert!(rows[10].contains("support"), "{}", rows[10]);
        assert!(rows[12].contains("no rubric"), "{}", rows[12]);
        assert!(rows[13].contains("reference answer"), "{}", rows[13]);
        assert!(
            rows[14].contains("pairwise") && rows[14].contains("(1 ties); orders disagree 25%"),
            "{}",
            rows[14]
        );
        assert!(rows[6].contains("| — |"), "no delta: {}", rows[6]);
        assert!(
            rows[0].contains("| 0.050 [-0.200, 0.150] (n 9) |"),
            "{}",
            rows[0]
        );
        assert!(rows[5].contains("| — |"), "plain has no delta: {}", rows[5]);
    }

    #[test]
    fn comparison_with_plain_uses_the_samples_both_scored() {
        // Methods: rubric_logprob, rubric_support, rubric_holistic, plain_holistic, ...
        // Pairwise accuracy: logprob gets pairs 0, 1, 3 right and 2 wrong; plain gets 0 right, 1
        // and 2 wrong, and did not score pair 3. Common pairs: 0, 1, 2 -> 2/3 - 1/3 = 1/3.
        let right = Some((0.9, 0.1));
        let wrong = Some((0.1, 0.9));
        let samples = vec![
            vec![right, right, wrong, right],
            // rubric_support: pairs 0 and 1 right, 2 right: 3/3 - 1/3 = 2/3.
            vec![right, right, right, None],
            vec![None, None, None, None],
            vec![right, wrong, wrong, None],
            // reference_holistic (not compared), rubric_pairwise: pairs 1, 2 right of 0..=2.
            vec![None, None, None, None],
            vec![wrong, right, right, None],
        ];
        let methods = [
            Method::RubricLogprob,
            Method::RubricSupport,
            Method::RubricHolistic,
            Method::PlainHolistic,
            Method::ReferenceHolistic,
            Method::RubricPairwise,
        ];
        let vs = compare_with_plain(&methods, &samples, &stats::pairwise_accuracy, 500, 3);
        let logprob = vs[0].expect("a rubric method is compared");
        assert_eq!(logprob.common, 3);
        let delta = logprob.delta.expect("defined");
        assert!((delta.value - 1.0 / 3.0).abs() < 1e-12, "{delta:?}");
        assert!(delta.low <= delta.value && delta.value <= delta.high);
        let support = vs[1].and_then(|v| v.delta).expect("support is compared");
        assert!((support.value - 2.0 / 3.0).abs() < 1e-12, "{support:?}");
        // Nothing in common: no estimate, but the count is there.
        assert_eq!(
            vs[2],
            Some(VsPlain {
                common: 0,
                delta: None
            })
        );
        assert_eq!(vs[3], None, "plain is not compared with itself");
        assert_eq!(vs[4], None, "the reference judge uses no rubric");
        let pairwise = vs[5].and_then(|v| v.delta).expect("pairwise is compared");
        assert!((pairwise.value - 1.0 / 3.0).abs() < 1e-12, "{pairwise:?}");
        // A run without the plain judge (--methods) compares nothing.
        let only = [Method::RubricLogprob, Method::RubricSupport];
        let vs = compare_with_plain(&only, &samples[..2], &stats::pairwise_accuracy, 500, 3);
        assert_eq!(vs, vec![None, None]);
    }

    /// Answers rubric requests: valid rubric JSON, or a cut-off output when the prompt contains
    /// "BAD".
    fn rubric_writer() -> FakeGenerator {
        FakeGenerator::new(|req| {
            if prompt_text(req).contains("BAD") {
                FakeAnswer::text(r#"{"criteria":[{"text":"cut"#)
            } else {
                FakeAnswer::text(
                    serde_json::json!({"criteria": [
                        {"text": "Names the cause.", "category": "essential", "weight": 9},
                        {"text": "Gives a source.", "category": "optional", "weight": 2},
                        {"text": "Invents a cure.", "category": "pitfall", "weight": 5},
                        {"text": "Warns about side effects.", "category": "pitfall", "weight": 3}
                    ]})
                    .to_string(),
                )
            }
        })
    }

    #[test]
    fn rubrics_and_failures_are_reused_until_an_input_changes(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut config = EvalConfig {
            data_dir: PathBuf::new(),
            out_dir: dir.path().to_path_buf(),
            datasets: vec![Dataset::Medquad],
            limit: None,
            seed: 0,
            resamples: 10,
            rubric: RubricGenConfig::default(),
            max_in_flight: 8,
            cache: false,
            reference_check: true,
            methods: Method::ALL.to_vec(),
        };
        let q = |id: &str, text: &str| Question {
            id: id.into(),
            question: text.into(),
            reference_answer: Some("ref".into()),
        };
        let mut questions = vec![q("a", "Why?"), q("b", "BAD question"), q("c", "How?")];
        let g = rubric_writer();
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |p: &EvalProgress| {
            seen.lock().expect("not poisoned").push((p.done, p.total));
        };
        let run = |config: &EvalConfig, questions: &[Question]| {
            let (items, summary) =
                rubrics(config, &g, "m", &progress, Dataset::Medquad, questions)?;
            Ok::<_, EvalError>((items, summary, g.take_submits()))
        };

        let (items, s, submits) = run(&config, &questions)?;
        assert_eq!(submits, 3);
        assert_eq!(
            (s.generated, s.reused, s.failed, s.failures_reused),
            (2, 0, 1, 0)
        );
        assert_eq!(items.len(), 2);
        assert_eq!(items["a"].criteria.len(), 4);
        assert_eq!(items["a"].criteria[2].weight, -5.0, "pitfall sign");
        // The advice "pitfall" is kept as an important criterion, and counted.
        assert_eq!(items["a"].criteria[3].category, Category::Important);
        assert_eq!(items["a"].criteria[3].weight, 4.0);
        assert_eq!(s.recategorized, 2);
        // The stored file is the ares rubric format.
        let stored = formats::read_jsonl(&dir.path().join("rubrics-medquad.jsonl"), Format::Ares)?;
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(Result::is_ok));
        // Progress reached 3 of 3.
        assert!(seen.lock().map_err(|e| e.to_string())?.contains(&(3, 3)));

        // Rerun: nothing generated, the failure not retried.
        let (again, s, submits) = run(&config, &questions)?;
        assert_eq!(submits, 0);
        assert_eq!(
            (s.generated, s.reused, s.failed, s.failures_reused),
            (0, 2, 1, 1)
        );
        assert_eq!(s.recategorized, 2, "counted on reused rubrics too");
        assert_eq!(again, items);

        // A stored rubric that today's criterion check would refuse (a pitfall written as
        // advice, as an older build kept) is generated again, alone.
        let path = dir.path().join("rubrics-medquad.jsonl");
        let edited: Vec<String> = std::fs::read_to_string(&path)?
            .lines()
            .enumerate()
            .map(|(i, l)| match i {
                0 => l.replace("Invents a cure.", "Warns about a cure."),
                _ => l.to_string(),
            })
            .collect();
        assert!(edited[0].contains("Warns about a cure."));
        std::fs::write(&path, edited.join("\n") + "\n")?;
        let (_, s, submits) = run(&config, &questions)?;
        assert_eq!((submits, s.generated, s.reused), (1, 1, 1));
        let (again, _, submits) = run(&config, &questions)?;
        assert_eq!(submits, 0);
        assert_eq!(again, items);

        // A changed question is generated again, alone.
        questions[2].question = "How exactly?".into();
        let (_, s, submits) = run(&config, &questions)?;
        assert_eq!((submits, s.generated, s.reused), (1, 1, 1));
        // A changed reference answer too (the failing one: tried again, fails again).
        questions[1].reference_answer = Some("another ref".into());
        let (_, s, submits) = run(&config, &questions)?;
        assert_eq!((submits, s.failed, s.failures_reused), (1, 1, 0));
        // Other generation settings: everything again.
        config.rubric.max_tokens = 512;
        let (_, s, submits) = run(&config, &questions)?;
        assert_eq!((submits, s.generated), (3, 2));
        Ok(())
    }
}

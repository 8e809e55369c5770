//! The synth run: documents in, records out, through the [`Generator`] trait only.
//!
//! Work is cut into batches of `batch_chunks` chunks. A batch goes through the model stages one
//! after the other, and within a stage every request of the batch is submitted before any is
//! collected (`generate_many`), so the engine batches them and shares their prefixes (the
//! personas of one chunk share the whole generate prompt up to the persona; the checks of one
//! chunk share the chunk). `workers` batches run at once on their own threads, so while one
//! batch waits for its slowest generation, another keeps the engine busy.
//!
//! Reproducibility: label and checks are greedy; each generation samples with a seed derived
//! from `--seed`, the chunk id and the persona, and the engine computes every row independently
//! of the batch, so a chunk gets the same items whatever ran beside it. Documents and chunks come
//! in a fixed order (see `ingest.rs`).
//!
//! Bookkeeping: every chunk (and every input that produced no document) is one unit; its records
//! are written and journaled together when the batch finishes (see `output.rs`), so a killed run
//! loses at most the batches in flight and `--resume` skips finished units.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::engine::{Completion, Constraint, Generator, Prompt, Request, SamplingParams};
use crate::error::Error as EngineError;
use crate::judge::formats::{self, Format};
use crate::judge::reference_check::{
    check_against_reference_at, drop_pitfalls_the_source_states, reward_with, DroppedCriterion,
};
use crate::judge::rubric_gen::GeneratedCriterion;
use crate::judge::template::TemplateError;
use crate::judge::{
    Aggregator, AnswerTokens, Judge, JudgeConfig, JudgeError, ResponseLine, RubricSet, Status,
};
use crate::judge::{Category, FormatError, RubricItem};
use crate::model::tokenizer::Tokenizer;
use crate::shard::Shard;
use crate::synth::chunk::{Chunk, ChunkConfig, ChunkEvent, Chunker};
use crate::synth::decontam::{DecontamError, Decontaminator, DEFAULT_NGRAM};
use crate::synth::dedup::Deduper;
use crate::synth::filters::{self, degrade, FilterVerdict, SelfContainmentRules};
use crate::synth::generate::{
    item_schema, parse_generated, rubric_item, GeneratedItem, MIN_SYNTH_CRITERIA,
};
use crate::synth::ingest::{DocItem, DocumentStream, IngestConfig, SkipKind};
use crate::synth::label::{
    label_max_tokens, label_schema, parse_label, Label, WorthConfig, WorthRules,
};
use crate::synth::output::{count_lines, OutputError, RunFiles};
use crate::synth::pitfall::{
    pitfall_schema, repair_from, PitfallOutcome, Repair, PITFALL_ATTEMPTS, PITFALL_MAX_TOKENS,
    REPAIR_ATTEMPTS,
};
use crate::synth::prompts::{describe_domains, SynthPrompts, DEFAULT_DOMAINS};
use crate::synth::record::{
    KeptVerdicts, Provenance, RejectedRecord, SamplingRecord, SYNTH_RECORD_VERSION,
};
use crate::synth::report::{source_group, SynthReport, Thresholds};
use crate::synth::short_hash;

/// Everything a run needs; the CLI flags map onto it.
/// Default of [`SynthConfig::min_criterion_met`]: stricter than the reference check's 0.5 (used
/// by `ares eval`), because a generated criterion the judge sees in the reference answer with
/// P(yes) 0.5-0.7 is one it is unsure of on the ideal response, and such criteria kept the
/// reference reward under 0.7 (issue 12: 14 of 74 items at rubric validity on 50 documents).
pub const DEFAULT_MIN_CRITERION_MET: f64 = 0.7;

#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Files and directories to read.
    pub inputs: Vec<PathBuf>,
    /// Run directory (dataset.jsonl, rejected.jsonl, journal.jsonl, report.json).
    pub out: PathBuf,
    pub ingest: IngestConfig,
    pub chunk: ChunkConfig,
    pub worth: WorthConfig,
    /// Estimated Jaccard at or above which a chunk is a near duplicate.
    pub near_duplicate: f64,
    pub domains: Vec<String>,
    /// Personas per chunk, at most.
    pub personas: usize,
    /// Documents read, at most (skipped inputs do not count).
    pub max_docs: Option<usize>,
    /// Chunks taken from one document, at most (the rest of it is not read).
    pub max_chunks_per_doc: Option<usize>,
    pub seed: u64,
    /// Sampling of the generate stage (label and checks are greedy).
    pub temperature: f32,
    pub top_p: f32,
    pub repeat_penalty: f32,
    /// Token budget of one generated item.
    pub max_tokens: usize,
    /// Format of the accepted items in `dataset.jsonl`.
    pub format: Format,
    pub resume: bool,
    /// Model self-containment: P(yes) at least this.
    pub min_self_contained: f64,
    /// Model faithfulness: P(yes) at least this.
    pub min_faithful: f64,
    /// Leakage: share of the answer's n-grams in the question at most this.
    pub max_leakage: f64,
    /// Judge reward of the reference answer at least this.
    pub min_reference_reward: f64,
    /// Reference reward minus degraded reward at least this.
    pub min_margin: f64,
    /// Drop the criteria the reference answer fails before the two rewards above
    /// (`judge::reference_check`); the rest must still pass `rubric_structure`.
    pub reference_check: bool,
    /// The reference check keeps a positive criterion only when the reference answer meets it
    /// with P(yes) at least this (pitfalls: P(yes) below 0.5).
    pub min_criterion_met: f64,
    /// The pitfall stage (`pitfall.rs`): a second short generation per item writes false
    /// statements that become "Claims that" pitfall criteria. Runs only with `reference_check`,
    /// which drops the ones the reference answer makes (an unchecked model-written "false"
    /// statement may be true).
    pub pitfall_stage: bool,
    /// The pitfall stage's repair round (`Run::repair`): an item the reference check leaves
    /// without a pitfall or with too few criteria gets more pitfall requests and is judged
    /// again. Runs only with `pitfall_stage`.
    pub pitfall_repair: bool,
    /// A criterion with more words is not atomic.
    pub max_criterion_words: usize,
    /// Chunks per batch.
    pub batch_chunks: usize,
    /// Batches in flight at once.
    pub workers: usize,
    /// This machine's part of the job (`--shard i/n`): every shard reads, chunks and dedups all
    /// documents the same way, then keeps the chunks whose id falls in it, so the outputs of the n
    /// shards concatenate into the single-machine run without duplicates.
    pub shard: Shard,
    /// Benchmark files (`--decontaminate`): items sharing a `decontaminate_ngram`-token n-gram
    /// with any of their texts are rejected at the `decontamination` stage.
    pub decontaminate: Vec<PathBuf>,
    pub decontaminate_ngram: usize,
    /// `--license`: the sources' licence (a Hub id), for the dataset card.
    pub license: Option<String>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            inputs: Vec::new(),
            out: PathBuf::from("synth-out"),
            ingest: IngestConfig::default(),
            chunk: ChunkConfig::default(),
            worth: WorthConfig::default(),
            near_duplicate: 0.8,
            domains: DEFAULT_DOMAINS.iter().map(|d| d.to_string()).collect(),
            personas: 3,
            shard: Shard::ALL,
            max_docs: None,
            max_chunks_per_doc: None,
            seed: 0,
            temperature: 0.7,
            top_p: 0.95,
            repeat_penalty: 1.2,
            max_tokens: 640,
            format: Format::Ares,
            resume: false,
            min_self_contained: 0.15,
            min_faithful: 0.3,
            max_leakage: 0.5,
            min_reference_reward: 0.7,
            min_margin: 0.1,
            reference_check: true,
            min_criterion_met: DEFAULT_MIN_CRITERION_MET,
            pitfall_stage: true,
            pitfall_repair: true,
            max_criterion_words: 30,
            batch_chunks: 8,
            workers: 2,
            decontaminate: Vec::new(),
            decontaminate_ngram: DEFAULT_NGRAM,
            license: None,
        }
    }
}

/// Errors that stop the run (everything per item is a rejected record instead).
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Input(std::io::Error),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Judge(#[from] JudgeError),
    #[error(transparent)]
    Decontam(#[from] DecontamError),
    #[error("{path}: {source}")]
    Dataset {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A snapshot of the counters, for progress bars.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SynthProgress {
    pub documents: usize,
    pub chunks: usize,
    /// Chunks through the label stage.
    pub labelled: usize,
    /// (chunk, persona) items generated (parsed or not).
    pub generated: usize,
    /// Items through every filter.
    pub filtered: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub seconds: f64,
}

/// Token and request counts of model calls.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    requests: usize,
    errors: usize,
    prompt: usize,
    cached: usize,
    completion: usize,
}

impl Usage {
    fn add(&mut self, r: &Result<Completion, EngineError>) {
        self.requests += 1;
        match r {
            Ok(c) => {
                self.prompt += c.usage.prompt_tokens;
                self.cached += c.usage.cached_tokens;
                self.completion += c.usage.completion_tokens;
            }
            Err(_) => self.errors += 1,
        }
    }
}

/// The records of one unit, written together.
#[derive(Default)]
struct UnitLines {
    accepted: Vec<String>,
    rejected: Vec<String>,
}

/// Reads documents and hands out batches of new chunks (under a lock).
struct Feeder<'a> {
    docs: DocumentStream,
    current: Option<Chunker<'a>>,
    current_chunks: usize,
    docs_taken: usize,
    dedup: Deduper,
    finished: bool,
}

/// State the workers share.
struct Run<'a> {
    config: &'a SynthConfig,
    generator: &'a dyn Generator,
    judge: Judge<'a>,
    verdicts: AnswerTokens,
    prompts: SynthPrompts,
    /// The guidance files' example questions (copies are rejected).
    examples: Vec<String>,
    rules: WorthRules,
    self_rules: SelfContainmentRules,
    /// The benchmark n-gram index (empty: decontamination off).
    decontam: Decontaminator,
    model_sha256: &'a str,
    feeder: Mutex<Feeder<'a>>,
    files: Mutex<RunFiles>,
    report: Mutex<SynthReport>,
    progress: Mutex<SynthProgress>,
    t0: Instant,
    callback: &'a (dyn Fn(&SynthProgress) + Sync),
    /// Tokens of a text (the model tokenizer's count), for chunking.
    counter: &'a (dyn Fn(&str) -> usize + Sync),
}

fn line<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialize: plain data, string keys")
}

fn clip(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// P(yes) of a model check, or why there is none.
type Check = Result<f64, String>;

/// A candidate item between generate and the end of the filters.
struct Candidate {
    chunk: usize,
    persona: String,
    item_id: String,
    seed: u64,
    generated: GeneratedItem,
    rubric: Result<RubricItem, String>,
    filters: Vec<FilterVerdict>,
    prompt_tokens: usize,
    completion_tokens: usize,
    /// The funnel stage that rejected it, and why.
    rejected: Option<(&'static str, String)>,
    reference_reward: Option<f64>,
    degraded_reward: Option<f64>,
    degraded: (String, filters::Degradation),
    /// Criteria the reference check took out of `rubric`.
    dropped: Vec<DroppedCriterion>,
    /// P(yes) on the criteria it kept (the latest check).
    kept_p_yes: KeptVerdicts,
    /// What the pitfall stage did (None: it did not run on this item).
    pitfalls: Option<PitfallOutcome>,
}

/// The warning for a chunk of a document that was decoded lossily.
fn lossy_warning(chunk: &Chunk) -> Option<String> {
    (chunk.invalid_utf8_bytes > 0).then(|| {
        format!(
            "invalid UTF-8: {} bytes of the document replaced with U+FFFD",
            chunk.invalid_utf8_bytes
        )
    })
}

/// Whether a rubric of `criteria` can pass the reference check's structure test if the check
/// keeps every one: a pitfall, an essential or important criterion, and
/// [`MIN_SYNTH_CRITERIA`] criteria in all (the repair round judges only such items again).
fn could_pass_check(criteria: &[GeneratedCriterion]) -> bool {
    criteria.iter().any(|c| c.category == Category::Pitfall)
        && criteria
            .iter()
            .any(|c| matches!(c.category, Category::Essential | Category::Important))
        && criteria.len() >= MIN_SYNTH_CRITERIA
}

/// A seed for one item: from the run seed, the chunk and the persona.
fn item_seed(seed: u64, chunk_id: &str, persona: usize) -> u64 {
    let h = short_hash(&["seed", &seed.to_string(), chunk_id, &persona.to_string()]);
    u64::from_str_radix(&h, 16).unwrap_or(seed)
}

impl<'a> Feeder<'a> {
    /// Up to `n` new chunks; rejections met on the way (skipped inputs, duplicates) are written
    /// at once. Empty when the input is exhausted.
    fn next_batch(&mut self, run: &Run<'a>, n: usize) -> Result<Vec<Chunk>, SynthError> {
        let mut batch = Vec::new();
        while batch.len() < n && !self.finished {
            let Some(chunker) = self.current.as_mut() else {
                if run.config.max_docs.is_some_and(|m| self.docs_taken >= m) {
                    self.finished = true;
                    break;
                }
                match self.docs.next() {
                    None => self.finished = true,
                    Some(DocItem::Skipped(s)) => {
                        let unit = s.unit_id();
                        let mut report = lock(&run.report);
                        report.enter("ingest", 1);
                        report.reject("ingest", &s.reason);
                        *report
                            .ingest
                            .skipped
                            .entry(s.kind.as_str().to_string())
                            .or_default() += 1;
                        drop(report);
                        tracing::warn!(
                            "synth: {}{}: skipped: {}",
                            s.source,
                            s.line.map(|l| format!(":{l}")).unwrap_or_default(),
                            s.reason
                        );
                        let mut r = RejectedRecord::new("ingest", &s.reason, &unit, &s.source);
                        r.line = s.line;
                        run.write_unit(
                            &unit,
                            UnitLines {
                                accepted: Vec::new(),
                                rejected: vec![line(&r)],
                            },
                        )?;
                    }
                    Some(DocItem::Doc(d)) => {
                        self.docs_taken += 1;
                        self.current_chunks = 0;
                        lock(&run.report).enter("ingest", 1);
                        lock(&run.progress).documents += 1;
                        self.current = Some(Chunker::new(d, run.config.chunk, run.count()));
                    }
                }
                continue;
            };
            let capped = run
                .config
                .max_chunks_per_doc
                .is_some_and(|m| self.current_chunks >= m);
            let event = if capped { None } else { chunker.next() };
            match event {
                None => {
                    let (doc_id, source) =
                        (chunker.doc_id().to_string(), chunker.source().to_string());
                    let empty = chunker.paragraphs_read() == 0;
                    let invalid = chunker.invalid_utf8_bytes();
                    self.current = None;
                    let mut report = lock(&run.report);
                    if capped {
                        report.ingest.chunks_capped += 1;
                    }
                    if invalid > 0 {
                        report.ingest.lossy_documents += 1;
                        tracing::warn!(
                            "synth: {doc_id}: {invalid} bytes of invalid UTF-8 replaced with U+FFFD"
                        );
                    }
                    if empty {
                        let reason = "empty document: no text after normalisation";
                        report.reject("ingest", reason);
                        *report
                            .ingest
                            .skipped
                            .entry(SkipKind::Empty.as_str().to_string())
                            .or_default() += 1;
                        drop(report);
                        let unit = short_hash(&["empty", &doc_id]);
                        let mut r = RejectedRecord::new("ingest", reason, &unit, &source);
                        r.doc_id = Some(doc_id);
                        run.write_unit(
                            &unit,
                            UnitLines {
                                accepted: Vec::new(),
                                rejected: vec![line(&r)],
                            },
                        )?;
                    } else {
                        report.ingest.documents += 1;
                        report.pass("ingest", 1);
                    }
                }
                Some(ChunkEvent::ReadError(e)) => {
                    tracing::warn!("synth: {e}");
                    lock(&run.report).ingest.read_errors += 1;
                }
                Some(ChunkEvent::Chunk(c)) => {
                    self.current_chunks += 1;
                    lock(&run.report).ingest.chunks += 1;
                    lock(&run.progress).chunks += 1;
                    let dup = self.dedup.check(&c.id, &c.text);
                    if !run.config.shard.contains(&c.id) {
                        continue;
                    }
                    let files = lock(&run.files);
                    let done = files.is_finished(&c.id);
                    drop(files);
                    if done {
                        lock(&run.report).skipped_finished_units += 1;
                        continue;
                    }
                    let mut report = lock(&run.report);
                    report.enter("dedup", 1);
                    match dup {
                        Some(d) => {
                            let reason = d.to_string();
                            report.reject("dedup", &reason);
                            drop(report);
                            let mut r = RejectedRecord::new("dedup", reason, &c.id, &c.source);
                            r.doc_id = Some(c.doc_id.clone());
                            r.chunk_id = Some(c.id.clone());
                            r.span = Some(c.span);
                            run.write_unit(
                                &c.id,
                                UnitLines {
                                    accepted: Vec::new(),
                                    rejected: vec![line(&r)],
                                },
                            )?;
                        }
                        None => {
                            report.pass("dedup", 1);
                            batch.push(c);
                        }
                    }
                }
            }
        }
        Ok(batch)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker that panicked holding the lock leaves data that is still consistent per field.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Run<'a> {
    fn count(&self) -> &'a (dyn Fn(&str) -> usize + Sync) {
        self.counter
    }

    /// Writes a unit's records and journals it; a unit an earlier session finished (an input
    /// rejected at ingest, met again on resume) is not written twice.
    fn write_unit(&self, unit: &str, lines: UnitLines) -> Result<(), SynthError> {
        let mut files = lock(&self.files);
        if files.is_finished(unit) {
            lock(&self.report).skipped_finished_units += 1;
            return Ok(());
        }
        files.finish_unit(unit, &lines.accepted, &lines.rejected)?;
        let mut p = lock(&self.progress);
        p.accepted += lines.accepted.len();
        p.rejected += lines.rejected.len();
        p.seconds = self.t0.elapsed().as_secs_f64();
        (self.callback)(&p);
        Ok(())
    }

    fn tick(&self, f: impl FnOnce(&mut SynthProgress)) {
        let mut p = lock(&self.progress);
        f(&mut p);
        p.seconds = self.t0.elapsed().as_secs_f64();
        (self.callback)(&p);
    }

    fn chat(
        &self,
        template: &crate::judge::template::PromptTemplate,
        values: &[(&str, &str)],
    ) -> Result<String, String> {
        let messages = template.render(values).map_err(|e| e.to_string())?;
        self.generator
            .chat_prompt(&messages)
            .map_err(|e| format!("rendering the prompt: {e}"))
    }

    /// Runs requests (all submitted at once), counting usage.
    fn run_requests(
        &self,
        reqs: Vec<Request>,
        usage: &mut Usage,
    ) -> Vec<Result<Completion, EngineError>> {
        let results = self.generator.generate_many(reqs);
        for r in &results {
            usage.add(r);
        }
        results
    }

    /// P(yes) of each yes/no prompt (one forward each, see the module docs of `filters.rs`).
    fn yes_no(
        &self,
        prompts: Vec<(String, String)>,
        usage: &mut Usage,
    ) -> Vec<Result<f64, String>> {
        let reqs = prompts
            .into_iter()
            .map(|(id, p)| Request {
                max_tokens: 1,
                logprob_ids: self.verdicts.ids(),
                ..Request::new(id, Prompt::Text(p))
            })
            .collect();
        self.run_requests(reqs, usage)
            .into_iter()
            .map(|r| {
                let c = r.map_err(|e| format!("engine: {e}"))?;
                let requested = c
                    .tokens
                    .first()
                    .map(|t| t.requested.clone())
                    .unwrap_or_default();
                self.verdicts
                    .distribution(&requested)
                    .map(|d| d.probs[0])
                    .ok_or_else(|| "no probability on the Yes/No tokens".to_string())
            })
            .collect()
    }

    fn rejected_for(&self, chunk: &Chunk, stage: &str, reason: &str) -> RejectedRecord {
        let mut r = RejectedRecord::new(stage, reason, &chunk.id, &chunk.source);
        r.doc_id = Some(chunk.doc_id.clone());
        r.chunk_id = Some(chunk.id.clone());
        r.span = Some(chunk.span);
        r.warning = lossy_warning(chunk);
        r
    }

    /// [`Self::rejected_for`] for a labelled chunk's (chunk, persona) item: with its subject,
    /// domain and persona.
    fn rejected_item(
        &self,
        chunk: &Chunk,
        stage: &str,
        reason: &str,
        label: &Label,
        persona: &str,
    ) -> RejectedRecord {
        let mut r = self.rejected_for(chunk, stage, reason);
        r.subject = Some(label.subject.clone());
        r.domain = Some(label.domain.clone());
        r.persona = Some(persona.to_string());
        r
    }

    /// One batch through label, generate and the filters; writes its units.
    /// One batch of chunks through every stage: label, generate, filter, rubric validity, write.
    fn process(&self, chunks: Vec<Chunk>) -> Result<(), SynthError> {
        let mut w = Work {
            chunks: &chunks,
            units: chunks.iter().map(|_| UnitLines::default()).collect(),
            labels: vec![None; chunks.len()],
            candidates: Vec::new(),
            usage: Usage::default(),
            rejections: Vec::new(),
        };
        self.label(&mut w);
        self.generate(&mut w);
        self.decontaminate(&mut w);
        if self.pitfall_stage() {
            self.pitfalls(&mut w);
        }
        let to_judge = self.filter(&mut w);
        self.validity(&mut w, &to_judge);
        if self.pitfall_repair() {
            let again = self.repair(&mut w);
            if !again.is_empty() {
                self.validity(&mut w, &again);
                let mut report = lock(&self.report);
                for &k in &again {
                    let c = &w.candidates[k];
                    let passed_check = c
                        .filters
                        .iter()
                        .rev()
                        .any(|v| v.filter == filters::RUBRIC_REFERENCE_CHECK && v.passed);
                    report.pitfalls.repair_passed_check += usize::from(passed_check);
                    report.pitfalls.repair_accepted += usize::from(c.rejected.is_none());
                }
            }
        }
        self.write(w)
    }

    /// The one place a stage's counts reach the report: `entered` in, `passed` out, and the
    /// reasons of the rejections it collected (drained).
    fn close_stage(
        &self,
        stage: &str,
        entered: usize,
        passed: usize,
        rejections: &mut Vec<(&'static str, String)>,
    ) {
        let mut report = lock(&self.report);
        report.enter(stage, entered);
        report.pass(stage, passed);
        for (at, reason) in rejections.drain(..) {
            report.reject(at, &reason);
        }
    }

    /// Label: rules, then the model (domain and personas per chunk).
    fn label(&self, w: &mut Work<'_>) {
        let cfg = self.config;
        let chunks = w.chunks;
        let domains_list = describe_domains(&cfg.domains);
        let personas = cfg.personas.to_string();
        let mut reqs = Vec::new();
        let mut which = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let prompt = self.rules.check(c).and_then(|()| {
                self.chat(
                    &self.prompts.label,
                    &[
                        ("domains", &domains_list),
                        ("personas", &personas),
                        ("chunk", &c.text),
                    ],
                )
            });
            match prompt {
                Err(reason) => {
                    w.units[i]
                        .rejected
                        .push(line(&self.rejected_for(c, "label", &reason)));
                    w.rejections.push(("label", reason));
                }
                Ok(p) => {
                    reqs.push(Request {
                        max_tokens: label_max_tokens(cfg.personas),
                        sampling: SamplingParams::greedy(),
                        constraint: Some(Constraint::JsonSchema(label_schema(
                            &cfg.domains,
                            cfg.personas,
                        ))),
                        ..Request::new(format!("label/{}", c.id), Prompt::Text(p))
                    });
                    which.push(i);
                }
            }
        }
        for (i, r) in which.into_iter().zip(self.run_requests(reqs, &mut w.usage)) {
            let parsed = r.map_err(|e| format!("engine: {e}")).and_then(|c| {
                parse_label(&c.text, &cfg.domains, cfg.personas)
                    .map_err(|e| format!("{e} (finish {:?})", c.finish_reason))
            });
            match parsed {
                Ok(l) => w.labels[i] = Some(l),
                Err(reason) => {
                    w.units[i]
                        .rejected
                        .push(line(&self.rejected_for(&chunks[i], "label", &reason)));
                    w.rejections.push(("label", reason));
                }
            }
        }
        let ok = w.labels.iter().filter(|l| l.is_some()).count();
        self.close_stage("label", chunks.len(), ok, &mut w.rejections);
        {
            let mut report = lock(&self.report);
            for (c, l) in chunks.iter().zip(&w.labels) {
                let Some(l) = l else { continue };
                let d = report.domain_mut(&l.domain);
                d.chunks += 1;
                d.items += l.personas.len();
                *d.sources.entry(source_group(&c.source)).or_default() += 1;
            }
        }
        self.tick(|p| p.labelled += chunks.len());
    }

    /// Generate: one constrained pass per (chunk, persona), parsed into candidates.
    fn generate(&self, w: &mut Work<'_>) {
        let cfg = self.config;
        let chunks = w.chunks;
        let mut reqs = Vec::new();
        let mut slots: Vec<(usize, String, String, u64)> = Vec::new();
        for (i, (c, l)) in chunks.iter().zip(&w.labels).enumerate() {
            let Some(l) = l else { continue };
            for (k, persona) in l.personas.iter().enumerate() {
                let item_id = format!("s-{}", short_hash(&["item", &c.id, persona]));
                let seed = item_seed(cfg.seed, &c.id, k);
                let prompt = self.chat(
                    &self.prompts.generate,
                    &[
                        ("domain", &l.domain),
                        ("guidance", self.prompts.guidance(&l.domain)),
                        ("chunk", &c.text),
                        ("persona", persona),
                    ],
                );
                match prompt {
                    Ok(p) => {
                        reqs.push(Request {
                            max_tokens: cfg.max_tokens,
                            sampling: SamplingParams {
                                temperature: cfg.temperature,
                                top_p: cfg.top_p,
                                repeat_penalty: cfg.repeat_penalty,
                                seed,
                                ..SamplingParams::default()
                            },
                            constraint: Some(Constraint::JsonSchema(item_schema())),
                            ..Request::new(format!("generate/{item_id}"), Prompt::Text(p))
                        });
                        slots.push((i, persona.clone(), item_id, seed));
                    }
                    Err(reason) => {
                        let r = self.rejected_item(c, "generate", &reason, l, persona);
                        w.units[i].rejected.push(line(&r));
                        w.rejections.push(("generate", reason));
                    }
                }
            }
        }
        let n_items = slots.len() + w.rejections.len();
        for ((i, persona, item_id, seed), r) in
            slots.into_iter().zip(self.run_requests(reqs, &mut w.usage))
        {
            let label = w.labels[i].as_ref().expect("only labelled chunks generate");
            let result = r.map_err(|e| (format!("engine: {e}"), None)).and_then(|c| {
                let g = parse_generated(&c.text).map_err(|e| {
                    (
                        format!(
                            "{e}; finish {:?} after {} tokens",
                            c.finish_reason, c.usage.completion_tokens
                        ),
                        Some(clip(&c.text, 400)),
                    )
                })?;
                let copied = self
                    .examples
                    .iter()
                    .map(|q| filters::word_jaccard(q, &g.question))
                    .fold(0.0, f64::max);
                filters::well_formed("question", &g.question, 3)
                    .and_then(|()| filters::well_formed("answer", &g.answer, 1))
                    .and_then(|()| {
                        if copied >= 0.6 {
                            Err(format!(
                                "question copies a prompt example (word Jaccard {copied:.2})"
                            ))
                        } else {
                            Ok(())
                        }
                    })
                    .map_err(|e| (e, Some(clip(&c.text, 400))))?;
                Ok((g, c.usage))
            });
            match result {
                Ok((g, u)) => {
                    let rubric = rubric_item(
                        &item_id,
                        &g,
                        self.prompts.generate.hash(),
                        self.model_sha256,
                    )
                    .map_err(|e| e.to_string());
                    let degraded = degrade(&g.answer);
                    w.candidates.push(Candidate {
                        chunk: i,
                        persona,
                        item_id,
                        seed,
                        generated: g,
                        rubric,
                        filters: Vec::new(),
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                        rejected: None,
                        reference_reward: None,
                        degraded_reward: None,
                        degraded,
                        dropped: Vec::new(),
                        kept_p_yes: KeptVerdicts::default(),
                        pitfalls: None,
                    });
                }
                Err((reason, output)) => {
                    let mut r =
                        self.rejected_item(&chunks[i], "generate", &reason, label, &persona);
                    r.output = output;
                    w.units[i].rejected.push(line(&r));
                    w.rejections.push(("generate", reason));
                }
            }
        }
        self.close_stage("generate", n_items, w.candidates.len(), &mut w.rejections);
        self.tick(|p| p.generated += n_items);
    }

    /// Decontamination: a candidate whose question or reference answer shares a long n-gram
    /// with a benchmark text is rejected (no model call; its counts reach the report with the
    /// funnel in [`Run::write`]).
    fn decontaminate(&self, w: &mut Work<'_>) {
        if self.decontam.is_empty() {
            return;
        }
        for c in &mut w.candidates {
            match self
                .decontam
                .check(&c.generated.question, &c.generated.answer)
            {
                Some(hit) => {
                    let reason = hit.to_string();
                    c.filters.push(FilterVerdict::fail(
                        filters::DECONTAMINATION,
                        reason.clone(),
                    ));
                    c.rejected = Some(("decontamination", reason));
                }
                None => c.filters.push(FilterVerdict::pass(
                    filters::DECONTAMINATION,
                    format!(
                        "no {}-gram shared with the benchmarks",
                        self.decontam.ngram()
                    ),
                )),
            }
        }
    }

    /// Whether the pitfall stage runs (see [`SynthConfig::pitfall_stage`]).
    fn pitfall_stage(&self) -> bool {
        self.config.pitfall_stage && self.config.reference_check
    }

    /// Pitfall stage: for every candidate not yet rejected, a constrained request for mistakes
    /// (greedy first; up to [`PITFALL_ATTEMPTS`] in all, the later ones sampled with the run's
    /// temperature and a seed from the item's, for items the earlier attempts gave nothing). The
    /// mistakes `pitfall::pitfalls_from` accepts are appended to the generated criteria and the
    /// rubric is rebuilt. An item left without any keeps its generated rubric, and its outcome
    /// says why (never silently).
    fn pitfalls(&self, w: &mut Work<'_>) {
        let open: Vec<usize> = (0..w.candidates.len())
            .filter(|&k| w.candidates[k].rejected.is_none())
            .collect();
        self.request_pitfalls(w, open, 0..PITFALL_ATTEMPTS);
        let mut report = lock(&self.report);
        for o in w.candidates.iter().filter_map(|c| c.pitfalls.as_ref()) {
            report.pitfalls.count(o);
        }
    }

    /// The pitfall stage's requests for the candidates `open` (attempt numbers `attempts`: the
    /// first of the stage is greedy, every other one sampled with a seed of its own). Each
    /// request's statements are checked against the candidate's criteria and the ones the
    /// reference check dropped (`pitfall::repair_from`); what it adds is appended to the
    /// criteria, the rubric is rebuilt, and the corrupted answer (if any) replaces the degraded
    /// one. A candidate gets its next attempt only when the earlier ones gave it no pitfall.
    fn request_pitfalls(
        &self,
        w: &mut Work<'_>,
        mut open: Vec<usize>,
        attempts: std::ops::Range<usize>,
    ) {
        let cfg = self.config;
        for attempt in attempts {
            let mut reqs = Vec::new();
            let mut which = Vec::new();
            for &k in &open {
                let c = &mut w.candidates[k];
                let prompt = self.chat(
                    &self.prompts.pitfall,
                    &[
                        ("question", &c.generated.question),
                        ("answer", &c.generated.answer),
                    ],
                );
                let outcome = c.pitfalls.get_or_insert_with(PitfallOutcome::default);
                match prompt {
                    Ok(p) => {
                        let sampling = if attempt == 0 {
                            SamplingParams::greedy()
                        } else {
                            SamplingParams {
                                temperature: cfg.temperature,
                                top_p: cfg.top_p,
                                seed: item_seed(c.seed, &c.item_id, attempt),
                                ..SamplingParams::default()
                            }
                        };
                        outcome.attempts += 1;
                        reqs.push(Request {
                            max_tokens: PITFALL_MAX_TOKENS,
                            sampling,
                            constraint: Some(Constraint::JsonSchema(pitfall_schema())),
                            ..Request::new(
                                format!("pitfall/{}/{attempt}", c.item_id),
                                Prompt::Text(p),
                            )
                        });
                        which.push(k);
                    }
                    Err(e) => outcome.error = Some(e),
                }
            }
            open.clear();
            for (k, r) in which.into_iter().zip(self.run_requests(reqs, &mut w.usage)) {
                let c = &mut w.candidates[k];
                let dropped: Vec<String> = c.dropped.iter().map(|d| d.text.clone()).collect();
                let parsed = r.map_err(|e| format!("engine: {e}")).and_then(|out| {
                    repair_from(
                        &out.text,
                        &c.generated.answer,
                        &c.generated.criteria,
                        &dropped,
                    )
                    .map_err(|e| format!("{e}; finish {:?}", out.finish_reason))
                });
                let outcome = c.pitfalls.get_or_insert_with(PitfallOutcome::default);
                match parsed {
                    Ok((added, o)) => {
                        outcome.skipped.extend(o.skipped);
                        outcome.skipped_facts.extend(o.skipped_facts);
                        outcome.error = None;
                        // Another attempt only for a pitfall; facts added now stay (a later
                        // attempt sees them as existing criteria and does not repeat them).
                        if o.added.is_empty() {
                            open.push(k);
                        }
                        if added.is_empty() {
                            continue;
                        }
                        outcome.added.extend(o.added);
                        outcome.facts.extend(o.facts);
                        if let Some(wrong) = o.corrupted {
                            c.degraded = (wrong.clone(), filters::Degradation::Corrupted);
                            outcome.corrupted = Some(wrong);
                        }
                        c.generated.criteria.extend(added);
                        c.rubric = rubric_item(
                            &c.item_id,
                            &c.generated,
                            self.prompts.generate.hash(),
                            self.model_sha256,
                        )
                        .map_err(|e| e.to_string());
                    }
                    Err(e) => {
                        outcome.error = Some(e);
                        open.push(k);
                    }
                }
            }
        }
    }

    /// Whether the repair round runs (see [`SynthConfig::pitfall_repair`]).
    fn pitfall_repair(&self) -> bool {
        self.pitfall_stage() && self.config.pitfall_repair
    }

    /// Repair round: every candidate the reference check rejected as no longer a rubric (no
    /// pitfall left, too few criteria, no essential or important one) gets more pitfall
    /// requests ([`REPAIR_ATTEMPTS`], sampled) on the criteria the check kept; the statements
    /// the check dropped may not come back. Returns the candidates that gained a criterion, to be
    /// judged again; the others stay rejected for the first verdict. Either way the outcome's
    /// `repair` records the verdict and what the requests did.
    fn repair(&self, w: &mut Work<'_>) -> Vec<usize> {
        let mut open = Vec::new();
        let mut held = Vec::new();
        for (k, c) in w.candidates.iter_mut().enumerate() {
            let failed_check = matches!(
                c.filters.last(),
                Some(v) if v.filter == filters::RUBRIC_REFERENCE_CHECK && !v.passed
            );
            if !failed_check || c.rejected.is_none() || c.pitfalls.is_none() {
                continue;
            }
            let Ok(kept) = &c.rubric else {
                continue;
            };
            let first = c.pitfalls.take().expect("checked above");
            let kept: HashSet<&str> = kept.criteria.iter().map(|k| k.text.as_str()).collect();
            c.generated
                .criteria
                .retain(|g| kept.contains(g.text.as_str()));
            let verdict = c.filters.pop().expect("failed_check: there is a verdict");
            c.rejected = None;
            held.push((k, first, verdict, c.rubric.clone()));
            open.push(k);
        }
        if open.is_empty() {
            return open;
        }
        self.request_pitfalls(
            w,
            open,
            PITFALL_ATTEMPTS..PITFALL_ATTEMPTS + REPAIR_ATTEMPTS,
        );
        let mut again = Vec::new();
        let mut report = lock(&self.report);
        for (k, mut first, verdict, checked) in held {
            let c = &mut w.candidates[k];
            let outcome = c.pitfalls.take().unwrap_or_default();
            let judged = could_pass_check(&c.generated.criteria);
            if judged {
                // The ids of the criteria dropped so far name the rubric the first check
                // judged, not the one judged next.
                for d in &mut c.dropped {
                    d.id = format!("{}-before-repair", d.id);
                }
                again.push(k);
            } else {
                // Rejected for the first verdict, with the rubric that verdict is about.
                c.rejected = Some(("rubric_validity", verdict.reason.clone()));
                c.rubric = checked;
            }
            report.pitfalls.count_repair(&outcome, judged);
            first.repair = Some(Box::new(Repair {
                reason: verdict.reason.clone(),
                judged_again: judged,
                outcome,
            }));
            c.pitfalls = Some(first);
            if c.rejected.is_some() {
                c.filters.push(verdict);
            }
        }
        again
    }

    /// Filters: rules and structure for every candidate not yet rejected, the two model checks
    /// for every item whose question passed the rules. Returns the candidates that passed, for
    /// the judge.
    fn filter(&self, w: &mut Work<'_>) -> Vec<usize> {
        let cfg = self.config;
        let chunks = w.chunks;
        // Where each live candidate's self-containment rule verdict is in its `filters`.
        let mut rule_at: Vec<Option<usize>> = vec![None; w.candidates.len()];
        for (k, c) in w.candidates.iter_mut().enumerate() {
            if c.rejected.is_some() {
                continue;
            }
            let v = self
                .self_rules
                .check_item(&c.generated.question, &c.generated.answer);
            rule_at[k] = Some(c.filters.len());
            c.filters.push(v);
        }
        let rules_passed =
            |k: usize, c: &Candidate| rule_at[k].is_some_and(|i| c.filters[i].passed);
        let mut check_prompts = Vec::new();
        let mut check_of = Vec::new();
        for (k, c) in w.candidates.iter().enumerate() {
            if !rules_passed(k, c) {
                continue;
            }
            let chunk = &chunks[c.chunk];
            let sc = self.chat(
                &self.prompts.self_contained,
                &[("question", &c.generated.question)],
            );
            let fa = self.chat(
                &self.prompts.faithful,
                &[
                    ("chunk", &chunk.text),
                    ("question", &c.generated.question),
                    ("answer", &c.generated.answer),
                ],
            );
            if let (Ok(sc), Ok(fa)) = (sc, fa) {
                check_prompts.push((format!("self_contained/{}", c.item_id), sc));
                check_prompts.push((format!("faithful/{}", c.item_id), fa));
                check_of.push(k);
            }
        }
        let mut answers = self.yes_no(check_prompts, &mut w.usage).into_iter();
        let mut model_checks: BTreeMap<usize, (Check, Check)> = BTreeMap::new();
        for k in check_of {
            let sc = answers.next().unwrap_or_else(|| Err("missing".into()));
            let fa = answers.next().unwrap_or_else(|| Err("missing".into()));
            model_checks.insert(k, (sc, fa));
        }
        let mut to_judge: Vec<usize> = Vec::new();
        for (k, c) in w.candidates.iter_mut().enumerate() {
            let Some(rule) = rule_at[k] else { continue };
            let checks = model_checks.remove(&k);
            let model_verdict = |name: &str, r: &Result<f64, String>, min: f64, what: &str| match r
            {
                Ok(p) => FilterVerdict::scored(name, *p, min, false, what),
                Err(e) => FilterVerdict::fail(name, e.clone()),
            };
            // self_containment: rules, then the model.
            if !c.filters[rule].passed {
                c.rejected = Some(("self_containment", c.filters[rule].reason.clone()));
            } else {
                let (sc, fa) = checks.unwrap_or_else(|| {
                    (
                        Err("prompt could not be rendered".into()),
                        Err("prompt could not be rendered".into()),
                    )
                });
                let v = model_verdict(
                    filters::SELF_CONTAINMENT_MODEL,
                    &sc,
                    cfg.min_self_contained,
                    "P(self-contained)",
                );
                let sc_ok = v.passed;
                let sc_reason = v.reason.clone();
                c.filters.push(v);
                let leak =
                    filters::leakage(&c.generated.question, &c.generated.answer, cfg.max_leakage);
                let leak_ok = leak.passed;
                let leak_reason = leak.reason.clone();
                c.filters.push(leak);
                let fv = model_verdict(filters::FAITHFULNESS, &fa, cfg.min_faithful, "P(faithful)");
                let fa_ok = fv.passed;
                let fa_reason = fv.reason.clone();
                c.filters.push(fv);
                let structure = match &c.rubric {
                    Ok(item) => filters::rubric_structure(item, cfg.max_criterion_words),
                    Err(e) => FilterVerdict::fail(filters::RUBRIC_STRUCTURE, e.clone()),
                };
                let st_ok = structure.passed;
                let st_reason = structure.reason.clone();
                c.filters.push(structure);
                c.rejected = if !sc_ok {
                    Some(("self_containment", sc_reason))
                } else if !leak_ok {
                    Some(("leakage", leak_reason))
                } else if !fa_ok {
                    Some(("faithfulness", fa_reason))
                } else if !st_ok {
                    Some(("rubric_validity", st_reason))
                } else {
                    None
                };
            }
            if c.rejected.is_none() {
                to_judge.push(k);
            }
        }
        to_judge
    }

    /// Rubric validity through the judge: the reference answer and a degraded one.
    fn validity(&self, w: &mut Work<'_>, to_judge: &[usize]) {
        let cfg = self.config;
        if !to_judge.is_empty() {
            let items: Vec<RubricItem> = to_judge
                .iter()
                .filter_map(|&k| w.candidates[k].rubric.as_ref().ok().cloned())
                .collect();
            let set = RubricSet::from_items(items);
            let mut inputs = Vec::new();
            for &k in to_judge {
                let c = &w.candidates[k];
                let Some(item) = set.get(&c.item_id) else {
                    continue;
                };
                // With the reference check, the source passage too: a pitfall it states is a
                // true statement.
                let source = cfg
                    .reference_check
                    .then(|| ("source", w.chunks[c.chunk].text.as_str()));
                for (rid, text) in [
                    Some(("reference", c.generated.answer.as_str())),
                    Some(("degraded", c.degraded.0.as_str())),
                    source,
                ]
                .into_iter()
                .flatten()
                {
                    inputs.push((item, rid, text));
                }
            }
            let (records, summary) = self.judge.score_each(&inputs, &|_| {});
            w.usage.requests += summary.requests;
            w.usage.prompt += summary.prompt_tokens;
            w.usage.cached += summary.cached_tokens;
            // Per candidate: reference, degraded and, with the reference check, source.
            let stride = if cfg.reference_check { 3 } else { 2 };
            for (j, &k) in to_judge.iter().enumerate() {
                let c = &mut w.candidates[k];
                let (rr, dr) = (&records[stride * j], &records[stride * j + 1]);
                let status_reason = |r: &crate::judge::JudgeRecord| {
                    format!(
                        "judge: {} response: status {}: {}",
                        r.response_id.as_deref().unwrap_or("?"),
                        r.status,
                        r.error.as_deref().unwrap_or("")
                    )
                };
                let verdict = match (rr.status, rr.reward, dr.status, dr.reward) {
                    (Status::Ok, Some(r), Status::Ok, Some(d)) => {
                        let (r, d) = if cfg.reference_check {
                            match self.reference_check(
                                c,
                                set.get(&c.item_id),
                                rr,
                                dr,
                                &records[stride * j + 2],
                            ) {
                                Ok(rd) => rd,
                                Err(reason) => {
                                    c.rejected = Some(("rubric_validity", reason));
                                    continue;
                                }
                            }
                        } else {
                            (r, d)
                        };
                        c.reference_reward = Some(r);
                        c.degraded_reward = Some(d);
                        let rv = FilterVerdict::scored(
                            filters::RUBRIC_REFERENCE,
                            r,
                            cfg.min_reference_reward,
                            false,
                            "judge reward of the reference answer",
                        );
                        let dv = FilterVerdict::scored(
                            filters::RUBRIC_DISCRIMINATION,
                            r - d,
                            cfg.min_margin,
                            false,
                            match c.degraded.1 {
                                filters::Degradation::Corrupted => {
                                    "reward margin of the reference over the corrupted answer"
                                }
                                _ => "reward margin of the reference over the degraded answer",
                            },
                        );
                        let out = if !rv.passed {
                            Some(rv.reason.clone())
                        } else if !dv.passed {
                            Some(dv.reason.clone())
                        } else {
                            None
                        };
                        c.filters.push(rv);
                        c.filters.push(dv);
                        out
                    }
                    (Status::Ok, _, _, _) => {
                        let reason = status_reason(dr);
                        c.filters.push(FilterVerdict::fail(
                            filters::RUBRIC_DISCRIMINATION,
                            reason.clone(),
                        ));
                        Some(reason)
                    }
                    _ => {
                        let reason = status_reason(rr);
                        c.filters.push(FilterVerdict::fail(
                            filters::RUBRIC_REFERENCE,
                            reason.clone(),
                        ));
                        Some(reason)
                    }
                };
                if let Some(reason) = verdict {
                    c.rejected = Some(("rubric_validity", reason));
                }
            }
        }
    }

    /// The criterion-level reference check (`judge::reference_check`): drops from the candidate's
    /// rubric the criteria its reference answer fails and the pitfalls its source passage states
    /// (`source`; at the bar a positive criterion needs), records them, checks that the rest is
    /// still a rubric (`rubric_structure`: enough criteria, a pitfall), and returns the reference
    /// and degraded rewards over the kept criteria. `Err` is the rejection reason; a source record
    /// that is not `ok` is one too (the check never passes a pitfall it could not look at).
    fn reference_check(
        &self,
        c: &mut Candidate,
        item: Option<&RubricItem>,
        reference: &crate::judge::JudgeRecord,
        degraded: &crate::judge::JudgeRecord,
        source: &crate::judge::JudgeRecord,
    ) -> Result<(f64, f64), String> {
        let item = item.ok_or_else(|| format!("item {} is not in the judged set", c.item_id))?;
        let min_met = self.config.min_criterion_met;
        let checked = check_against_reference_at(item, reference, min_met)
            .map_err(|e| format!("reference check: {e}"))?;
        let failed = checked.dropped.len();
        let checked = drop_pitfalls_the_source_states(checked, reference, source, min_met)
            .map_err(|e| format!("source check of the pitfalls: {e}"))?;
        let n = item.criteria.len();
        let kept = checked.item.criteria.len();
        let ids = |d: &[DroppedCriterion]| -> String {
            d.iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (by_reference, by_source) = checked.dropped.split_at(failed);
        let summary = match (by_reference.is_empty(), by_source.is_empty()) {
            (true, true) => format!(
                "the reference answer meets all {n} criteria; the source passage states none of the pitfalls"
            ),
            _ => {
                let mut s = format!("kept {kept} of {n} criteria");
                if !by_reference.is_empty() {
                    s += &format!(
                        "; dropped {} (the reference answer fails them)",
                        ids(by_reference)
                    );
                }
                if !by_source.is_empty() {
                    s += &format!(
                        "; dropped {} (pitfalls the source passage states)",
                        ids(by_source)
                    );
                }
                s
            }
        };
        lock(&self.report).pitfalls.true_in_source += by_source.len();
        // The latest round's additions are the ones this check judges for the first time.
        let latest = c
            .pitfalls
            .as_ref()
            .map(|o| o.repair.as_ref().map_or(o, |r| &r.outcome));
        if let Some(o) = latest {
            let kept = |added: &[String]| {
                added
                    .iter()
                    .filter(|t| checked.item.criteria.iter().any(|k| &k.text == *t))
                    .count()
            };
            let mut report = lock(&self.report);
            report.pitfalls.checked += o.added.len();
            report.pitfalls.kept += kept(&o.added);
            report.pitfalls.facts_checked += o.facts.len();
            report.pitfalls.facts_kept += kept(&o.facts);
        }
        c.dropped.extend(checked.dropped);
        let p_yes = |r: &crate::judge::JudgeRecord| -> BTreeMap<String, f64> {
            checked
                .item
                .criteria
                .iter()
                .filter_map(|k| {
                    let v = r.criteria.iter().find(|v| v.id == k.id)?;
                    Some((k.id.clone(), v.p_yes?))
                })
                .collect()
        };
        c.kept_p_yes = KeptVerdicts {
            reference: p_yes(reference),
            degraded: p_yes(degraded),
        };
        c.rubric = Ok(checked.item.clone());
        let mut structure =
            filters::rubric_structure(&checked.item, self.config.max_criterion_words);
        if structure.passed && kept < MIN_SYNTH_CRITERIA {
            structure = FilterVerdict::fail(
                filters::RUBRIC_STRUCTURE,
                format!("{kept} criteria (an accepted item has {MIN_SYNTH_CRITERIA} or more)"),
            );
        }
        if !structure.passed {
            let reason = format!("after the reference check, {}: {summary}", structure.reason);
            c.filters.push(FilterVerdict::fail(
                filters::RUBRIC_REFERENCE_CHECK,
                reason.clone(),
            ));
            return Err(reason);
        }
        c.filters.push(FilterVerdict::pass(
            filters::RUBRIC_REFERENCE_CHECK,
            summary,
        ));
        let aggregator = reference.aggregator.unwrap_or(Aggregator::RarExplicit);
        let reward = |r| reward_with(r, &checked.item, aggregator).map_err(|e| e.to_string());
        Ok((reward(reference)?, reward(degraded)?))
    }

    /// Records and the funnel: accepted items and rejections per unit, the funnel counts, and
    /// the units written.
    fn write(&self, mut w: Work<'_>) -> Result<(), SynthError> {
        let cfg = self.config;
        let chunks = w.chunks;
        let funnel = [
            "decontamination",
            "self_containment",
            "leakage",
            "faithfulness",
            "rubric_validity",
            "accepted",
        ];
        let mut accepted_domains: Vec<String> = Vec::new();
        for c in &mut w.candidates {
            let chunk = &chunks[c.chunk];
            let label = w.labels[c.chunk]
                .as_ref()
                .expect("w.candidates come from labelled chunks");
            if c.rejected.is_none() {
                let Ok(mut item) = c.rubric.clone() else {
                    continue;
                };
                let prov = Provenance {
                    schema_version: SYNTH_RECORD_VERSION,
                    unit: chunk.id.clone(),
                    doc_id: chunk.doc_id.clone(),
                    source: chunk.source.clone(),
                    span: chunk.span,
                    chunk_index: chunk.index,
                    subject: label.subject.clone(),
                    domain: label.domain.clone(),
                    persona: c.persona.clone(),
                    model_sha256: self.model_sha256.to_string(),
                    prompt_hashes: self.prompts.hashes(
                        &label.domain,
                        self.judge.template_hash(),
                        c.pitfalls.is_some(),
                    ),
                    sampling: SamplingRecord {
                        temperature: cfg.temperature,
                        top_p: cfg.top_p,
                        repeat_penalty: cfg.repeat_penalty,
                        seed: c.seed,
                    },
                    filters: c.filters.clone(),
                    reference_reward: c.reference_reward,
                    degraded_reward: c.degraded_reward,
                    degraded_answer: c.degraded.0.clone(),
                    degradation: c.degraded.1,
                    dropped_criteria: c.dropped.clone(),
                    kept_p_yes: c.kept_p_yes.clone(),
                    pitfall_stage: c.pitfalls.clone(),
                    warnings: lossy_warning(chunk).into_iter().collect(),
                    prompt_tokens: c.prompt_tokens,
                    completion_tokens: c.completion_tokens,
                };
                item.extra.insert(
                    "synth".into(),
                    serde_json::to_value(&prov).expect("provenance serializes"),
                );
                match formats::to_line(cfg.format, &item) {
                    Ok(l) => {
                        w.units[c.chunk].accepted.push(l);
                        accepted_domains.push(label.domain.clone());
                        continue;
                    }
                    Err(e) => {
                        let reason = format!("cannot export to {}: {e}", cfg.format);
                        c.rejected = Some(("rubric_validity", reason));
                    }
                }
            }
            let (stage, reason) = c.rejected.clone().expect("rejected or exported above");
            let mut r = self.rejected_item(chunk, stage, &reason, label, &c.persona);
            r.question = Some(c.generated.question.clone());
            r.answer = Some(c.generated.answer.clone());
            r.criteria = c
                .rubric
                .as_ref()
                .map(|i| i.criteria.clone())
                .unwrap_or_default();
            r.dropped_criteria = c.dropped.clone();
            r.kept_p_yes = c.kept_p_yes.clone();
            r.pitfall_stage = c.pitfalls.clone();
            r.filters = c.filters.clone();
            w.units[c.chunk].rejected.push(line(&r));
        }
        // Each candidate went through the funnel's stages up to the one that rejected it.
        for (s, stage) in funnel.iter().enumerate() {
            let mut entered = 0;
            let mut passed = 0;
            for c in &w.candidates {
                let end = match &c.rejected {
                    Some((stage, _)) => funnel.iter().position(|f| f == stage).unwrap_or(0),
                    None => funnel.len() - 1,
                };
                if s <= end {
                    entered += 1;
                    if s < end || c.rejected.is_none() {
                        passed += 1;
                    }
                }
                if let Some((at, reason)) = &c.rejected {
                    if at == stage {
                        w.rejections.push((at, reason.clone()));
                    }
                }
            }
            self.close_stage(stage, entered, passed, &mut w.rejections);
        }
        {
            let mut report = lock(&self.report);
            for d in &accepted_domains {
                report.domain_mut(d).accepted += 1;
            }
            report.requests += w.usage.requests;
            report.engine_errors += w.usage.errors;
            report.prompt_tokens += w.usage.prompt;
            report.cached_prompt_tokens += w.usage.cached;
            report.completion_tokens += w.usage.completion;
        }
        self.tick(|p| p.filtered += w.candidates.len());
        for (c, lines) in chunks.iter().zip(w.units) {
            self.write_unit(&c.id, lines)?;
        }
        Ok(())
    }
}

/// What one batch of chunks carries from stage to stage.
struct Work<'c> {
    chunks: &'c [Chunk],
    /// Output lines per chunk (a chunk is a unit of the journal).
    units: Vec<UnitLines>,
    labels: Vec<Option<Label>>,
    candidates: Vec<Candidate>,
    usage: Usage,
    /// Rejections of the running stage, until [`Run::close_stage`] drains them.
    rejections: Vec<(&'static str, String)>,
}

/// Runs synth. Returns the report (also written to `OUT/report.json`).
pub fn run(
    config: &SynthConfig,
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    model_sha256: &str,
    progress: &(dyn Fn(&SynthProgress) + Sync),
) -> Result<SynthReport, SynthError> {
    let t0 = Instant::now();
    if config.inputs.is_empty() {
        return Err(SynthError::Config("no input given (--input PATH)".into()));
    }
    if config.domains.is_empty() {
        return Err(SynthError::Config("the domain list is empty".into()));
    }
    if config.personas == 0 {
        return Err(SynthError::Config("--personas must be at least 1".into()));
    }
    let counter = |s: &str| tokenizer.encode(s).map(|t| t.len()).unwrap_or(s.len() / 4);
    let prompts = SynthPrompts::new(&config.domains)?;
    let judge = Judge::new(generator, tokenizer, model_sha256, JudgeConfig::default())?;
    let verdicts = AnswerTokens::verdicts(|s| tokenizer.encode(s)).map_err(JudgeError::from)?;
    let decontam = Decontaminator::load(&config.decontaminate, config.decontaminate_ngram)?;
    if !decontam.is_empty() {
        tracing::info!(
            "synth: decontamination index: {} distinct {}-grams from {} files",
            decontam.len(),
            config.decontaminate_ngram,
            config.decontaminate.len()
        );
    }
    let files = RunFiles::open(&config.out, config.resume)?;
    let docs =
        DocumentStream::open(&config.inputs, config.ingest.clone()).map_err(SynthError::Input)?;
    let mut report = SynthReport::new();
    report.model_sha256 = model_sha256.to_string();
    report.seed = config.seed;
    report.domains_configured = config.domains.clone();
    report.personas = config.personas;
    report.inputs = config
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    report.license = config.license.clone();
    report.thresholds = Thresholds {
        near_duplicate: config.near_duplicate,
        min_self_contained: config.min_self_contained,
        min_faithful: config.min_faithful,
        max_leakage: config.max_leakage,
        min_reference_reward: config.min_reference_reward,
        min_margin: config.min_margin,
        reference_check: config.reference_check,
        min_criterion_met: config.min_criterion_met,
        pitfall_stage: config.pitfall_stage && config.reference_check,
        pitfall_repair: config.pitfall_repair && config.pitfall_stage && config.reference_check,
        max_criterion_words: config.max_criterion_words,
        decontaminate_ngram: config.decontaminate_ngram,
        decontaminate: config
            .decontaminate
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    };
    report.resumed = config.resume;
    report.resume = files.resume.clone();
    report.ingest.unsupported_files = docs.unsupported_files;
    report.dataset = files.dataset_path().display().to_string();
    report.rejected = files.rejected_path().display().to_string();
    let report_path = files.report_path();
    let run = Run {
        config,
        generator,
        judge,
        verdicts,
        examples: prompts.example_questions(),
        prompts,
        rules: WorthRules::new(config.worth),
        self_rules: SelfContainmentRules::new(),
        decontam,
        model_sha256,
        feeder: Mutex::new(Feeder {
            docs,
            current: None,
            current_chunks: 0,
            docs_taken: 0,
            dedup: Deduper::new(config.near_duplicate),
            finished: false,
        }),
        files: Mutex::new(files),
        report: Mutex::new(report),
        progress: Mutex::new(SynthProgress::default()),
        t0,
        callback: progress,
        counter: &counter,
    };
    let abort = AtomicBool::new(false);
    let errors: Mutex<Vec<SynthError>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..config.workers.max(1) {
            s.spawn(|| {
                while !abort.load(Ordering::Relaxed) {
                    let batch = {
                        let mut feeder = lock(&run.feeder);
                        feeder.next_batch(&run, config.batch_chunks.max(1))
                    };
                    let result = match batch {
                        Ok(b) if b.is_empty() => break,
                        Ok(b) => run.process(b),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        abort.store(true, Ordering::Relaxed);
                        lock(&errors).push(e);
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .next()
    {
        return Err(e);
    }
    let mut report = run.report.into_inner().unwrap_or_else(|e| e.into_inner());
    let files = run.files.into_inner().unwrap_or_else(|e| e.into_inner());
    report.totals.accepted = count_lines(&files.dataset_path());
    report.totals.rejected = count_lines(&files.rejected_path());
    report.finish(t0.elapsed().as_secs_f64());
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    crate::jsonl::write_lines(&report_path, [json]).map_err(|source| SynthError::Write {
        path: report_path.clone(),
        source,
    })?;
    Ok(report)
}

/// Writes a responses file for `ares judge` from the run's dataset: for every accepted item, its
/// reference answer (`response_id` "reference") and its degraded answer ("degraded"). Returns the
/// number of items.
pub fn write_responses(
    dataset: &std::path::Path,
    format: Format,
    out: &std::path::Path,
) -> Result<usize, SynthError> {
    let results = formats::read_jsonl(dataset, format).map_err(|source| SynthError::Dataset {
        path: dataset.to_path_buf(),
        source,
    })?;
    let mut lines = Vec::new();
    let mut items = 0;
    for r in results {
        let item = r.map_err(|source| SynthError::Dataset {
            path: dataset.to_path_buf(),
            source,
        })?;
        let degraded = item
            .extra
            .get("synth")
            .and_then(|s| s.get("degraded_answer"))
            .and_then(Value::as_str)
            .unwrap_or(filters::NON_ANSWER)
            .to_string();
        let reference = item.reference_answer.clone().unwrap_or_default();
        for (rid, text) in [("reference", reference), ("degraded", degraded)] {
            lines.push(line(&ResponseLine {
                item_id: item.id.clone(),
                response_id: rid.to_string(),
                response: text,
            }));
        }
        items += 1;
    }
    crate::jsonl::write_lines(out, lines).map_err(|source| SynthError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crit(category: Category) -> GeneratedCriterion {
        GeneratedCriterion {
            text: format!("{category:?}"),
            category,
            weight: 5,
        }
    }

    #[test]
    fn only_a_rubric_the_check_could_pass_is_judged_again() {
        use Category::*;
        let four = |last| vec![crit(Essential), crit(Optional), crit(Optional), crit(last)];
        assert!(could_pass_check(&four(Pitfall)));
        // No pitfall, or no essential or important criterion, or too few criteria.
        assert!(!could_pass_check(&four(Optional)));
        assert!(!could_pass_check(&[
            crit(Optional),
            crit(Optional),
            crit(Optional),
            crit(Pitfall)
        ]));
        assert!(!could_pass_check(&[crit(Important), crit(Pitfall)]));
    }
}

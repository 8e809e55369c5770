//! `ares synth`: arguments, mapped one to one onto [`SynthConfig`], and the job wrapper that runs
//! the pipeline and (with `--responses-out`) writes a responses file for `ares judge`.
//!
//! Nothing here prints: the binary gets the [`SynthReport`] back and prints its table.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::Generator;
use crate::export::card::DatasetCard;
use crate::export::{ExportError, ExportFormat, ExportSummary};
use crate::judge::Format;
use crate::model::tokenizer::Tokenizer;
use crate::synth::chunk::ChunkConfig;
use crate::synth::ingest::IngestConfig;
use crate::synth::label::WorthConfig;
use crate::synth::pipeline::write_responses;
use crate::synth::prompts::DEFAULT_DOMAINS;
use crate::synth::{SynthConfig, SynthError, SynthProgress, SynthReport};

/// `--format` values: the format of `dataset.jsonl` (ares, rar, healthbench; one at most) and
/// trainer exports written beside it (verl, openrlhf, trl, hf; any number).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthFormatArg {
    Ares,
    Rar,
    Healthbench,
    Verl,
    Openrlhf,
    Trl,
    Hf,
}

impl SynthFormatArg {
    /// The trainer export this value asks for, if it is one.
    pub fn export(self) -> Option<ExportFormat> {
        match self {
            Self::Verl => Some(ExportFormat::Verl),
            Self::Openrlhf => Some(ExportFormat::Openrlhf),
            Self::Trl => Some(ExportFormat::Trl),
            Self::Hf => Some(ExportFormat::Hf),
            Self::Ares | Self::Rar | Self::Healthbench => None,
        }
    }
}

/// Why the synth job failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthJobError {
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error("{0}")]
    Args(String),
    #[error("writing the dataset card or an export: {0}")]
    Export(#[from] ExportError),
}

#[derive(Args, Clone, Debug)]
pub struct SynthArgs {
    /// Documents: files or directories (recursively: .txt, .md, .rst, .html; .jsonl with one
    /// document per line). Repeatable.
    #[arg(long, short = 'i', required = true)]
    pub input: Vec<PathBuf>,
    /// Run directory: dataset.jsonl, rejected.jsonl, journal.jsonl, report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out: keep finished chunks, repair a half-written last line, redo
    /// the rest.
    #[arg(long)]
    pub resume: bool,
    /// Format of the accepted items in dataset.jsonl (ares, rar, healthbench), and trainer
    /// exports written beside it (verl -> verl/train.parquet, openrlhf and trl ->
    /// NAME/train.jsonl, hf -> hf/ with train.jsonl + README.md). Comma-separated or repeated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SynthFormatArg::Ares])]
    pub format: Vec<SynthFormatArg>,
    /// Benchmark files (JSONL, JSON or plain text of questions/answers): items whose question or
    /// reference answer shares a --decontaminate-ngram word n-gram with them are rejected.
    #[arg(long, num_args = 1..)]
    pub decontaminate: Vec<PathBuf>,
    /// Decontamination n-gram length in word tokens (lowercased alphanumeric runs).
    #[arg(long, default_value_t = crate::synth::decontam::DEFAULT_NGRAM)]
    pub decontaminate_ngram: usize,
    /// The sources' licence as a Hugging Face licence id (e.g. cc-by-4.0), for the dataset card
    /// (otherwise looked up in licence files beside the inputs).
    #[arg(long)]
    pub license: Option<String>,
    /// JSONL inputs: field with the document text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// JSONL inputs: field with the document id (missing: the line number).
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// Documents to read, at most (taken round-robin across input files).
    #[arg(long)]
    pub max_docs: Option<usize>,
    /// Chunks per document, at most (the rest of a long document is not read).
    #[arg(long)]
    pub max_chunks_per_doc: Option<usize>,
    /// Domain list, comma-separated (default: the ten ARES domains).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_DOMAINS.map(String::from))]
    pub domains: Vec<String>,
    /// Personas (intended readers) per chunk, at most; one item per persona.
    #[arg(long, default_value_t = 3)]
    pub personas: usize,
    /// Seed of the generation sampling (each item's seed derives from it, its chunk and persona).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per chunk, at most.
    #[arg(long, default_value_t = 384)]
    pub chunk_tokens: usize,
    /// Tokens of sentences shared by consecutive chunks, at most.
    #[arg(long, default_value_t = 48)]
    pub chunk_overlap: usize,
    /// Chunks with fewer tokens are rejected as too short.
    #[arg(long, default_value_t = 48)]
    pub min_chunk_tokens: usize,
    /// Estimated Jaccard similarity (word 5-shingles) at which a chunk is a near duplicate.
    #[arg(long, default_value_t = 0.8)]
    pub near_duplicate: f64,
    /// Token budget of one generated item (question, answer and criteria).
    #[arg(long, default_value_t = 640)]
    pub max_tokens: usize,
    /// Generation temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Generation nucleus sampling.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Generation repetition penalty (1: off).
    #[arg(long, default_value_t = 1.2)]
    pub repeat_penalty: f32,
    /// Self-containment check: P(yes) at least this. The default suits the 135M default model,
    /// whose P(yes) runs low (about 0.2 on plain questions); raise it for a larger model.
    #[arg(long, default_value_t = 0.15)]
    pub min_self_contained: f64,
    /// Faithfulness check: P(yes) at least this (default set for the 135M model, as above).
    #[arg(long, default_value_t = 0.3)]
    pub min_faithful: f64,
    /// Leakage: share of the answer's word n-grams found in the question, at most.
    #[arg(long, default_value_t = 0.5)]
    pub max_leakage: f64,
    /// Rubric validity: judge reward of the reference answer, at least.
    #[arg(long, default_value_t = 0.7)]
    pub min_reference_reward: f64,
    /// Rubric validity: reference reward minus degraded-answer reward, at least.
    #[arg(long, default_value_t = 0.1)]
    pub min_margin: f64,
    /// Rubric validity: the reference check keeps a positive criterion only when the item's
    /// reference answer meets it with at least this P(yes) (pitfalls: below 0.5). The same bar
    /// drops a pitfall that the source passage, judged as a response, states: a true statement.
    #[arg(long, default_value_t = crate::synth::pipeline::DEFAULT_MIN_CRITERION_MET)]
    pub min_criterion_met: f64,
    /// Rubric validity: keep every generated criterion, even those the item's own reference
    /// answer fails (by default they are dropped and listed in `synth.dropped_criteria`).
    #[arg(long)]
    pub keep_failed_criteria: bool,
    /// Do not run the pitfall stage (a second short generation per item that copies facts of the
    /// reference answer, each added as a "States that" criterion, and writes each changed into a
    /// false statement, a "Claims that" pitfall; the reference check keeps only the facts the
    /// reference meets and the pitfalls it does not make). It runs only with the reference check, so --keep-failed-criteria turns it off too.
    #[arg(long)]
    pub no_pitfall_stage: bool,
    /// Do not run the pitfall stage's repair round: by default an item the reference check
    /// leaves without a pitfall or with too few criteria gets up to two more (sampled) pitfall
    /// requests, whose new statements may not repeat the dropped ones, and is judged again.
    #[arg(long)]
    pub no_pitfall_repair: bool,
    /// Rubric validity: a criterion with more words is not atomic.
    #[arg(long, default_value_t = 30)]
    pub max_criterion_words: usize,
    /// Chunks per batch (every request of a batch's stage is in flight at once).
    #[arg(long, default_value_t = 8)]
    pub batch_chunks: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Run the model calls on an OpenAI-compatible server and/or do one shard of the job.
    #[command(flatten)]
    pub backend: crate::cli::backend::BackendArgs,
    /// Print this many accepted items (of all sessions of the run) after the report.
    #[arg(long, default_value_t = 0)]
    pub show: usize,
    /// Also write a responses JSONL for `ares judge`: each accepted item's reference answer and
    /// degraded answer (all sessions of the run).
    #[arg(long)]
    pub responses_out: Option<PathBuf>,
}

impl SynthArgs {
    /// The format of `dataset.jsonl`: the rubric format among `--format` (ares by default).
    pub fn format(&self) -> Format {
        self.format
            .iter()
            .find_map(|f| match f {
                SynthFormatArg::Ares => Some(Format::Ares),
                SynthFormatArg::Rar => Some(Format::Rar),
                SynthFormatArg::Healthbench => Some(Format::HealthBench),
                _ => None,
            })
            .unwrap_or(Format::Ares)
    }

    /// The trainer exports among `--format`, each once, in the order given.
    pub fn exports(&self) -> Vec<ExportFormat> {
        let mut out = Vec::new();
        for f in self.format.iter().filter_map(|f| f.export()) {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// Checks what clap cannot: at most one dataset format.
    pub fn check(&self) -> Result<(), SynthJobError> {
        let rubric: Vec<_> = self
            .format
            .iter()
            .filter(|f| f.export().is_none())
            .collect();
        if rubric.windows(2).any(|w| w[0] != w[1]) {
            return Err(SynthJobError::Args(format!(
                "--format names two formats for dataset.jsonl ({:?}); give one of ares, rar, healthbench",
                rubric
            )));
        }
        Ok(())
    }

    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            inputs: self.input.clone(),
            out: self.out.clone(),
            ingest: IngestConfig {
                text_field: self.text_field.clone(),
                id_field: self.id_field.clone(),
            },
            chunk: ChunkConfig {
                target_tokens: self.chunk_tokens,
                overlap_tokens: self.chunk_overlap,
            },
            worth: WorthConfig {
                min_tokens: self.min_chunk_tokens,
            },
            near_duplicate: self.near_duplicate,
            domains: self
                .domains
                .iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
            personas: self.personas,
            max_docs: self.max_docs,
            max_chunks_per_doc: self.max_chunks_per_doc,
            seed: self.seed,
            temperature: self.temperature,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            max_tokens: self.max_tokens.max(1),
            format: self.format(),
            resume: self.resume,
            min_self_contained: self.min_self_contained,
            min_faithful: self.min_faithful,
            max_leakage: self.max_leakage,
            min_reference_reward: self.min_reference_reward,
            min_margin: self.min_margin,
            reference_check: !self.keep_failed_criteria,
            min_criterion_met: self.min_criterion_met,
            pitfall_stage: !self.no_pitfall_stage,
            pitfall_repair: !self.no_pitfall_repair,
            max_criterion_words: self.max_criterion_words,
            batch_chunks: self.batch_chunks.max(1),
            workers: self.workers.max(1),
            shard: self.backend.shard(),
            decontaminate: self.decontaminate.clone(),
            decontaminate_ngram: self.decontaminate_ngram,
            license: self.license.clone(),
        }
    }
}

/// What the binary gets back.
#[derive(Debug)]
pub struct SynthOutcome {
    pub report: SynthReport,
    /// `--responses-out`: items written.
    pub responses: Option<usize>,
    /// `--show N`: the first N accepted items of `dataset.jsonl`.
    pub shown: Vec<crate::judge::RubricItem>,
    /// `report.html` in the run folder, drawn from its files after the run.
    pub html: Result<PathBuf, crate::report::ReportError>,
    /// The dataset card written beside `dataset.jsonl`.
    pub card: PathBuf,
    /// Trainer exports written (`--format verl,...`).
    pub exports: Vec<ExportSummary>,
}

/// Runs the job: the pipeline, then the dataset card, the trainer exports and the responses
/// file if asked for, then `report.html`.
pub fn run(
    args: &SynthArgs,
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    model_sha256: &str,
    progress: &(dyn Fn(&SynthProgress) + Sync),
) -> Result<SynthOutcome, SynthJobError> {
    args.check()?;
    let config = args.config();
    let report = crate::synth::run(&config, generator, tokenizer, model_sha256, progress)?;
    let responses = match &args.responses_out {
        Some(path) => Some(write_responses(
            &config.out.join(crate::synth::output::DATASET_FILE),
            config.format,
            path,
        )?),
        None => None,
    };
    let dataset = config.out.join(crate::synth::output::DATASET_FILE);
    let mut shown = Vec::new();
    if args.show > 0 {
        let read =
            crate::judge::formats::read_jsonl(&dataset, config.format).map_err(|source| {
                SynthError::Dataset {
                    path: dataset.clone(),
                    source,
                }
            })?;
        shown = read.into_iter().flatten().take(args.show).collect();
    }
    let card = crate::export::card::write_for_run(&config.out, config.format)?;
    let mut exports = Vec::new();
    let wanted = args.exports();
    if !wanted.is_empty() {
        let items = crate::export::read_items(&dataset, config.format)?;
        if items.is_empty() {
            tracing::warn!("synth: no accepted items: trainer exports not written");
        } else {
            for f in wanted {
                let path = f.path_in_run(&config.out);
                let text = (f == ExportFormat::Hf).then(|| {
                    let mut c = DatasetCard::from_items(&items, crate::export::hf::DATA_FILE);
                    if let Some(r) = crate::export::card::read_report(&config.out).ok().flatten() {
                        c = c.with_report(r);
                    }
                    c.render()
                });
                exports.push(crate::export::export(f, &items, &path, text.as_deref())?);
            }
        }
    }
    let html = crate::cli::report::after_run(&config.out);
    Ok(SynthOutcome {
        report,
        responses,
        shown,
        html,
        card,
        exports,
    })
}

//! `ares eval`: arguments, mapped onto [`EvalConfig`], and the job. Nothing here prints: the
//! binary draws the progress it is called back with and prints the report's table.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::Generator;
use crate::eval::runner::{self, Dataset, EvalConfig, EvalProgress, EvalReport, Method};
use crate::eval::EvalError;
use crate::judge::rubric_gen::{RubricGenConfig, DEFAULT_MAX_TOKENS};
use crate::judge::DEFAULT_MAX_IN_FLIGHT;
use crate::model::tokenizer::Tokenizer;

/// `--datasets`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetArg {
    /// medquad_expert_judged: Spearman and Kendall tau-b of reward vs expert grade.
    Medquad,
    /// llmbar: pairwise accuracy (the preferred output gets the higher reward).
    Llmbar,
}

/// `--methods`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    /// The generated rubric, one yes/no log-prob verdict per criterion.
    RubricLogprob,
    /// As rubric-logprob, times the P(yes) of a topic gate (medquad: "Is about the same
    /// condition, medicine or test that the question asks about.").
    RubricLogprobGated,
    /// As rubric-logprob, times the relevance gate: σ(4·PMI) of the question's likelihood given
    /// the response against given no text (any data set, no statement to write).
    RubricLogprobRelevance,
    /// The generated rubric, each criterion's likelihood as a summary of the response.
    RubricSupport,
    /// The generated rubric shown whole, one 0-9 score.
    RubricHolistic,
    /// No rubric, one 0-9 score.
    PlainHolistic,
    /// No rubric, the reference answer shown, one 0-9 score.
    ReferenceHolistic,
    /// The generated rubric, the two outputs of a pair compared (llmbar only).
    RubricPairwise,
}

impl MethodArg {
    pub const ALL: [MethodArg; 8] = [
        MethodArg::RubricLogprob,
        MethodArg::RubricLogprobGated,
        MethodArg::RubricLogprobRelevance,
        MethodArg::RubricSupport,
        MethodArg::RubricHolistic,
        MethodArg::PlainHolistic,
        MethodArg::ReferenceHolistic,
        MethodArg::RubricPairwise,
    ];

    fn method(self) -> Method {
        match self {
            MethodArg::RubricLogprob => Method::RubricLogprob,
            MethodArg::RubricLogprobGated => Method::RubricLogprobGated,
            MethodArg::RubricLogprobRelevance => Method::RubricLogprobRelevance,
            MethodArg::RubricSupport => Method::RubricSupport,
            MethodArg::RubricHolistic => Method::RubricHolistic,
            MethodArg::PlainHolistic => Method::PlainHolistic,
            MethodArg::ReferenceHolistic => Method::ReferenceHolistic,
            MethodArg::RubricPairwise => Method::RubricPairwise,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// The eval data folder (medquad_expert_judged/, llmbar/).
    #[arg(long, default_value = "../shared/eval")]
    pub data: PathBuf,
    /// Output folder: report.json, table.md, the generated rubrics (reused by a rerun), the
    /// judge records, and the verdict cache.
    #[arg(long)]
    pub out: PathBuf,
    /// Data sets to evaluate, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [DatasetArg::Medquad, DatasetArg::Llmbar])]
    pub datasets: Vec<DatasetArg>,
    /// Methods to run, comma-separated (all by default). The comparison with the plain judge
    /// needs plain-holistic among them.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = MethodArg::ALL)]
    pub methods: Vec<MethodArg>,
    /// Items per data set (medquad answers, llmbar pairs): a seeded random sample. All when
    /// left out.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the --limit sample and of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Bootstrap resamples of each interval.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Token budget of one generated rubric.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub rubric_max_tokens: usize,
    /// Judge requests submitted and not yet collected, at most.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Do not keep a verdict cache (OUT/verdicts.redb).
    #[arg(long)]
    pub no_cache: bool,
    /// Keep every generated criterion, even those the question's reference answer fails (by
    /// default they are dropped before judging, as in `ares synth`; see
    /// OUT/reference-check-<dataset>.jsonl).
    #[arg(long)]
    pub keep_failed_criteria: bool,
}

impl EvalArgs {
    pub fn config(&self) -> EvalConfig {
        let mut datasets: Vec<Dataset> = Vec::new();
        for d in &self.datasets {
            let d = match d {
                DatasetArg::Medquad => Dataset::Medquad,
                DatasetArg::Llmbar => Dataset::Llmbar,
            };
            if !datasets.contains(&d) {
                datasets.push(d);
            }
        }
        EvalConfig {
            data_dir: self.data.clone(),
            out_dir: self.out.clone(),
            datasets,
            limit: self.limit,
            seed: self.seed,
            resamples: self.resamples,
            rubric: RubricGenConfig {
                max_tokens: self.rubric_max_tokens,
                ..RubricGenConfig::default()
            },
            max_in_flight: self.max_in_flight.max(1),
            cache: !self.no_cache,
            reference_check: !self.keep_failed_criteria,
            methods: self.methods.iter().map(|m| m.method()).collect(),
        }
    }
}

/// What the binary gets back: the report, and the page drawn from the output folder.
#[derive(Debug)]
pub struct EvalOutcome {
    pub report: EvalReport,
    pub html: Result<std::path::PathBuf, crate::report::ReportError>,
}

/// Runs the job, then draws `report.html` in the output folder; `command` is the command line
/// recorded in the report.
pub fn run(
    args: &EvalArgs,
    command: &str,
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    model_sha256: &str,
    progress: &(dyn Fn(&EvalProgress) + Sync),
) -> Result<EvalOutcome, EvalError> {
    let report = runner::run(
        &args.config(),
        command,
        generator,
        tokenizer,
        model_sha256,
        progress,
    )?;
    let html = crate::cli::report::after_run(&args.out);
    Ok(EvalOutcome { report, html })
}

//! `ares eval`: arguments, mapped onto [`EvalConfig`], and the job. Nothing here prints: the
//! binary draws the progress it is called back with and prints the report's table.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::Generator;
use crate::eval::runner::{self, Dataset, EvalConfig, EvalProgress, EvalReport};
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

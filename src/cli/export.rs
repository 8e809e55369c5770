//! `ares export --format verl|openrlhf|trl|hf IN OUT`: a dataset of rubric items (a synth run's
//! `dataset.jsonl`, or any ares/RaR/HealthBench/RLCF JSONL) in a trainer's shape. IN may also be
//! a synth run directory: its `dataset.jsonl` is read, and its `report.json` feeds the `hf` card.
//!
//! Nothing here prints: the binary prints the returned summary.

use std::path::PathBuf;

use clap::Args;

use crate::cli::judge::RubricFormatArg;
use crate::export::card::{read_report, DatasetCard};
use crate::export::{export, read_items, ExportError, ExportFormat, ExportSummary};
use crate::synth::output::DATASET_FILE;

#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// Trainer shape: verl (parquet), openrlhf (JSONL: input, label), trl (JSONL: prompt,
    /// item_id, rubric), hf (folder: train.jsonl + README.md).
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Format of the input items.
    #[arg(long, value_enum, default_value_t = RubricFormatArg::Ares)]
    pub rubric_format: RubricFormatArg,
    /// Rubric items (JSONL), or a synth run directory.
    pub input: PathBuf,
    /// Output file (verl: .parquet; openrlhf, trl: .jsonl) or folder (hf).
    pub out: PathBuf,
}

/// Runs the export.
pub fn run(args: &ExportArgs) -> Result<ExportSummary, ExportError> {
    let (data, run_dir) = if args.input.is_dir() {
        (args.input.join(DATASET_FILE), Some(args.input.clone()))
    } else {
        (args.input.clone(), args.input.parent().map(PathBuf::from))
    };
    let items = read_items(&data, args.rubric_format.format())?;
    let card = if args.format == ExportFormat::Hf {
        let mut c = DatasetCard::from_items(&items, crate::export::hf::DATA_FILE);
        // The report of the run the items came from, when they sit in its directory.
        let is_run = data.file_name().is_some_and(|n| n == DATASET_FILE);
        if let Some(Some(r)) = run_dir
            .filter(|_| is_run)
            .map(|d| read_report(&d))
            .transpose()?
        {
            c = c.with_report(r);
        }
        Some(c.render())
    } else {
        None
    };
    export(args.format, &items, &args.out, card.as_deref())
}

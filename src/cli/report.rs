//! `ares report DIR`: rebuild `DIR/report.html` from the JSON files a synth, eval or bench run
//! wrote (so runs made before reports existed get one too), and the call every run command makes
//! after writing its JSON.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::report::ReportError;

#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// Run folder: the --out of ares synth, eval or bench (holds report.json).
    pub dir: PathBuf,
    /// Bench runs: llama.cpp's figures to draw as a baseline (the output of
    /// ../shared/bench/llama-cpp-baseline); default: DIR/llama-baseline.txt when present.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
}

/// Builds the page; returns its path.
pub fn run(args: &ReportArgs) -> Result<PathBuf, ReportError> {
    crate::report::render_dir(&args.dir, args.baseline.as_deref())
}

/// The page of a run whose JSON was just written to `dir`.
pub fn after_run(dir: &Path) -> Result<PathBuf, ReportError> {
    crate::report::render_dir(dir, None)
}

//! `ares eval`: meta-evaluation of the judge against people, on the data under `../shared/eval/`.
//!
//! ```text
//! medquad answers (expert grade 1-4) --question + reference answers--> rubric (rubric_gen)
//! llmbar pairs (preferred output 1/2) --instruction--> rubric (rubric_gen)
//!   -> Judge: rubric + logprob (default mode) | rubric + holistic | plain holistic (no rubric)
//!   | reference-guided holistic (no rubric, the reference answer shown; medquad only)
//!   -> medquad: Spearman, Kendall tau-b (reward vs grade); llmbar: pairwise accuracy
//!   -> percentile bootstrap 95% intervals -> report.json + table
//! ```
//!
//! What this module owns: the dataset readers (`datasets`), the statistics as pure functions
//! (`stats`) and the job (`runner`). It prints nothing; the binary draws progress and prints the
//! table.
//!
//! Invariants:
//! - the same model judges every method, and the rubric methods use the rubrics this model
//!   generated (stored in the output folder and reused by a rerun while the question, reference,
//!   template, model and generation settings are unchanged);
//! - a response that could not be scored (no rubric, a judge status other than `ok`) is counted
//!   as failed in its method and left out of that method's statistics, never scored 0;
//! - everything random (the `--limit` sample, the bootstrap) is seeded.

pub mod datasets;
pub mod runner;
pub mod stats;

use std::path::PathBuf;

use crate::judge::cache::CacheError;
use crate::judge::formats::FormatError;
use crate::judge::rubric_gen::RubricGenError;
use crate::judge::template::TemplateError;
use crate::judge::JudgeError;

/// Errors that stop an eval run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, {at}: {reason}")]
    Data {
        path: PathBuf,
        at: String,
        reason: String,
    },
    #[error(transparent)]
    Judge(#[from] JudgeError),
    #[error(transparent)]
    RubricGen(#[from] RubricGenError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("no data set chosen")]
    NoDatasets,
    #[error("no method chosen")]
    NoMethods,
}

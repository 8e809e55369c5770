//! Errors of the judge module, one enum per concern: a rubric that breaks an invariant
//! ([`RubricError`]), a record that cannot be read or written in a format ([`FormatError`]), and
//! scores that cannot be aggregated ([`AggregateError`]).
//!
//! Context lives in fields (which item, which criterion, which file and line), never only in a
//! message string, so callers can record a per-item outcome and carry on.

use std::path::PathBuf;

use crate::judge::formats::Format;
use crate::judge::rubric::Category;

/// A rubric item that breaks one of the invariants of [`crate::judge::rubric::RubricItem`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RubricError {
    #[error(
        "item `{item}`: schema_version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedVersion {
        item: String,
        found: u64,
        supported: u32,
    },
    #[error("item with question {question:?}: empty id")]
    EmptyItemId { question: String },
    #[error("item `{item}`: empty question")]
    EmptyQuestion { item: String },
    #[error("item `{item}`: rubric has no criteria")]
    NoCriteria { item: String },
    #[error("item `{item}`: criterion #{index} has an empty id")]
    EmptyCriterionId { item: String, index: usize },
    #[error("item `{item}`: criterion `{criterion}` has empty text")]
    EmptyText { item: String, criterion: String },
    #[error("item `{item}`: criterion `{criterion}` has weight {weight}; weights must be finite and non-zero")]
    BadWeight {
        item: String,
        criterion: String,
        weight: f64,
    },
    #[error("item `{item}`: criterion `{criterion}` has negative weight {weight} but category {category}; only pitfalls may be negative")]
    NegativeWeightNotPitfall {
        item: String,
        criterion: String,
        weight: f64,
        category: Category,
    },
    #[error("item `{item}`: criterion id `{criterion}` appears more than once")]
    DuplicateCriterion { item: String, criterion: String },
}

/// A record that cannot be read from, or written to, one of the supported formats.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not valid JSON: {source}")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    #[error("not a valid {format} record: {source}")]
    Shape {
        format: Format,
        #[source]
        source: serde_json::Error,
    },
    #[error("ares record has no schema_version field")]
    MissingSchemaVersion,
    #[error("{format} record: weight {label:?} is neither a number nor a category label")]
    BadWeightLabel { format: Format, label: String },
    #[error(
        "{format} record: requirement #{index} is neither [text, weight] nor {{question, weight}}"
    )]
    BadRequirement { format: Format, index: usize },
    #[error("item `{item}`: criterion `{criterion}` has weight {weight}, which {format} cannot represent")]
    Unrepresentable {
        format: Format,
        item: String,
        criterion: String,
        weight: f64,
    },
    #[error(transparent)]
    Rubric(#[from] RubricError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: Box<FormatError>,
    },
}

/// Scores that cannot be turned into a reward. Indices are positions in the slice passed in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    #[error("nothing to aggregate: no scored criteria")]
    Empty,
    #[error("{criteria} criteria but {verdicts} verdicts")]
    LengthMismatch { criteria: usize, verdicts: usize },
    #[error("criterion #{index}: weight {weight} is not finite and non-zero")]
    BadWeight { index: usize, weight: f64 },
    #[error("criterion #{index}: verdict {value} is not a probability in [0, 1]")]
    BadVerdict { index: usize, value: f64 },
    #[error("criterion #{index}: weight {weight} is negative; RLCF checklists have no pitfalls (use rar_explicit)")]
    NegativeWeight { index: usize, weight: f64 },
    #[error("no criterion has positive points; the HealthBench score is undefined")]
    NoPositivePoints,
    #[error("holistic score {score} is outside 1..=10")]
    BadHolisticScore { score: f64 },
    #[error("holistic distribution has {len} entries, expected 10 (scores 1..=10)")]
    BadHolisticLength { len: usize },
    #[error(
        "holistic distribution: entry for score {score} is {p}, not a finite non-negative number"
    )]
    BadHolisticProbability { score: usize, p: f64 },
    #[error("holistic distribution sums to zero")]
    ZeroHolisticMass,
}

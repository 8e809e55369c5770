//! (rubric, response) -> verdicts -> aggregate -> reward; rubric formats (RaR, HealthBench, RLCF,
//! ares JSONL).
//!
//! What this module owns:
//! - `rubric`: the versioned rubric data model ([`RubricItem`], [`Criterion`], [`Category`]) and
//!   its validation ([`RubricError`]);
//! - `formats`: import/export between that model and RaR, HealthBench, RLCF checklists and ares'
//!   own JSONL, with per-line error reporting when reading files;
//! - `aggregate`: pure aggregators from per-criterion verdicts to one reward (RaR explicit,
//!   HealthBench, RLCF weighted mean, holistic);
//! - `rubric_gen`: question -> weighted criteria in one constrained generation (`ares rubric`);
//! - `criterion_check`: the deterministic check of a generated criterion (checkable in the
//!   response alone, not copied from a prompt example);
//! - `reference_check`: criterion-level rubric validity, keeping the criteria a reference answer
//!   meets (or, for pitfalls, avoids) according to the judge's record of it;
//! - `cache`: the on-disk verdict cache of `ares judge --cache` (redb);
//! - `input`: a job's inputs and their checks (responses file, rubric items by id, checked
//!   (item, response) [`Pair`]s);
//! - `verdict`: answer tokens and the verdict read from the model's output;
//! - `record`: what a job writes (records, statuses) and reports (progress, summary);
//! - `judge`: the [`Judge`] itself, which talks to a `Generator`;
//! - `gate`: the topic gate, one extra statement whose P(yes) multiplies a rubric reward;
//! - `relevance`: the relevance gate, the question's likelihood given the response against given
//!   nothing, whose logistic multiplies a rubric reward;
//! - `pairwise`: two responses compared against one rubric in both orders (`--pairwise`);
//! - `template`: the judge and rubric prompt templates.
//!
//! Each error enum lives next to its owner. Module imports inside `judge/` form no cycle:
//! rubric <- formats <- input <- judge; aggregate, record <- verdict, cache <- judge.
//!
//! Invariants:
//! - A weight's sign is its direction: positive rewards meeting the criterion, negative marks a
//!   pitfall (its text names the mistake; meeting it costs). Only pitfalls may be negative; no
//!   weight is zero, NaN or infinite.
//! - Import -> export is lossless for a format's fields: what ares does not model travels in
//!   `extra` maps.
//! - Nothing here scores a bad input as 0: invalid rubrics, unreadable lines and unusable verdicts
//!   are typed errors that name the item, criterion, or file and line.
//! - Everything here is model-free and does no printing; judging with a model talks to the
//!   `Generator` trait, not to engine internals.

pub mod aggregate;
pub mod cache;
pub mod criterion_check;
pub mod formats;
pub mod gate;
pub mod input;
pub mod judge;
pub mod pairwise;
pub mod record;
pub mod reference_check;
pub mod relevance;
pub mod rubric;
pub mod rubric_gen;
pub mod support;
pub mod template;
pub mod verdict;

pub use aggregate::AggregateError;
pub use aggregate::{
    healthbench, healthbench_unclipped, holistic, holistic_expected, rar_explicit,
    rlcf_weighted_mean, Aggregator, Scored, Verdict,
};
pub use formats::{read_jsonl, write_jsonl, Format, FormatError};
pub use input::{
    check, read_responses, Checked, InputError, Pair, ResponseEntry, ResponseLine,
    ResponseLineError, RubricSet,
};
pub use judge::{
    defuse, render_rubric, Judge, JudgeConfig, JudgeError, DEFAULT_MAX_IN_FLIGHT,
    GENERATE_MAX_TOKENS, GENERATE_RETRIES,
};
pub use record::{
    CriterionVerdict, HolisticScore, JudgeProgress, JudgeRecord, JudgeSummary, Mode, Status,
    VerdictSource, JUDGE_RECORD_VERSION,
};
pub use rubric::{Category, Criterion, Message, RubricError, RubricItem, RUBRIC_SCHEMA_VERSION};
pub use verdict::{
    parse_generated_verdict, verdict_schema, AnswerDistribution, AnswerTokenError, AnswerTokens,
    NO_SPELLINGS, REASON_MAX_CHARS, YES_SPELLINGS,
};

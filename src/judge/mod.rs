//! (rubric, response) -> verdicts -> aggregate -> reward; rubric formats (RaR, HealthBench, RLCF,
//! ares JSONL).
//!
//! What this module owns:
//! - `rubric`: the versioned rubric data model ([`RubricItem`], [`Criterion`], [`Category`]) and
//!   its validation;
//! - `formats`: import/export between that model and RaR, HealthBench, RLCF checklists and ares'
//!   own JSONL, with per-line error reporting when reading files;
//! - `aggregate`: pure aggregators from per-criterion verdicts to one reward (RaR explicit,
//!   HealthBench, RLCF weighted mean, holistic);
//! - `rubric_gen`: question -> weighted criteria in one constrained generation (`ares rubric`);
//! - `criterion_check`: the deterministic check of a generated criterion (checkable in the
//!   response alone, not copied from a prompt example);
//! - `cache`: the on-disk verdict cache of `ares judge --cache` (redb);
//! - `error`: the module's error enums.
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
pub mod error;
pub mod formats;
pub mod judge;
pub mod rubric;
pub mod rubric_gen;
pub mod template;

pub use aggregate::{
    healthbench, healthbench_unclipped, holistic, holistic_expected, rar_explicit,
    rlcf_weighted_mean, Aggregator, Scored, Verdict,
};
pub use error::{AggregateError, FormatError, RubricError};
pub use formats::{read_jsonl, write_jsonl, Format};
pub use rubric::{Category, Criterion, Message, RubricItem, RUBRIC_SCHEMA_VERSION};

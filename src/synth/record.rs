//! The records `ares synth` writes: the provenance of an accepted item (stored under
//! `extra.synth` of its rubric item, which every export format writes as a top-level `synth`
//! field) and the rejected record (`rejected.jsonl`).
//!
//! Both name their unit (the chunk id, or for an input that produced no document, a hash of its
//! source and line): resume keeps a record only when its unit is in the journal of finished
//! units (see `output.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::judge::reference_check::DroppedCriterion;
use crate::judge::Criterion;
use crate::synth::filters::{Degradation, FilterVerdict};
use crate::synth::pitfall::PitfallOutcome;
use crate::synth::prompts::PromptHashes;

/// Version of [`Provenance`] and [`RejectedRecord`].
pub const SYNTH_RECORD_VERSION: u32 = 1;

/// Pipeline stages, in funnel order (`report.json` and `rejected.jsonl` use these names).
pub const STAGES: [&str; 10] = [
    "ingest",
    "dedup",
    "label",
    "generate",
    "decontamination",
    "self_containment",
    "leakage",
    "faithfulness",
    "rubric_validity",
    "accepted",
];

/// Sampling settings of a generation, recorded for reproduction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingRecord {
    pub temperature: f32,
    pub top_p: f32,
    pub repeat_penalty: f32,
    /// The seed of this item's request (derived from `--seed`, the chunk id and the persona).
    pub seed: u64,
}

/// Where an accepted item came from and what every filter said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub schema_version: u32,
    /// The chunk id (resume unit).
    pub unit: String,
    pub doc_id: String,
    pub source: String,
    /// Character offsets in the document's normalised text.
    pub span: (usize, usize),
    pub chunk_index: usize,
    /// What the chunk is about, in the label stage's words (empty in records written before it).
    #[serde(default)]
    pub subject: String,
    pub domain: String,
    pub persona: String,
    pub model_sha256: String,
    pub prompt_hashes: PromptHashes,
    pub sampling: SamplingRecord,
    /// Every filter's verdict, in the order they ran.
    pub filters: Vec<FilterVerdict>,
    pub reference_reward: Option<f64>,
    pub degraded_reward: Option<f64>,
    pub degraded_answer: String,
    pub degradation: Degradation,
    /// Generated criteria the reference answer failed (an unmet criterion or a committed
    /// pitfall), taken out of the rubric before the rewards above were computed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_criteria: Vec<DroppedCriterion>,
    /// The judge's P(yes) on each kept criterion (by id) for the reference and the degraded
    /// answer (the verdicts behind the two rewards), so other bars can be studied offline.
    #[serde(default, skip_serializing_if = "KeptVerdicts::is_empty")]
    pub kept_p_yes: KeptVerdicts,
    /// What the pitfall stage added or skipped (absent: the stage did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitfall_stage: Option<PitfallOutcome>,
    /// Problems with the input that did not stop the item (invalid UTF-8 replaced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Tokens of this item's generation request.
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// The judge's P(yes) per kept criterion id, on the reference and on the degraded answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptVerdicts {
    #[serde(default)]
    pub reference: BTreeMap<String, f64>,
    #[serde(default)]
    pub degraded: BTreeMap<String, f64>,
}

impl KeptVerdicts {
    pub fn is_empty(&self) -> bool {
        self.reference.is_empty() && self.degraded.is_empty()
    }
}

/// One line of `rejected.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub schema_version: u32,
    /// Where it stopped (one of [`STAGES`]).
    pub stage: String,
    pub reason: String,
    pub unit: String,
    /// The input file (path relative to its input) and, for JSONL, the line.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<(usize, usize)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The rubric as it stood when the item was rejected (after the reference check, when it ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<Criterion>,
    /// Criteria the reference check took out, with the reference answer's P(yes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_criteria: Vec<DroppedCriterion>,
    /// P(yes) on the kept criteria, as in [`Provenance::kept_p_yes`] (empty before the check).
    #[serde(default, skip_serializing_if = "KeptVerdicts::is_empty")]
    pub kept_p_yes: KeptVerdicts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitfall_stage: Option<PitfallOutcome>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterVerdict>,
    /// Raw model output when it could not be used (first 400 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl RejectedRecord {
    /// A rejection at `stage` with nothing but the unit and the source.
    pub fn new(stage: &str, reason: impl Into<String>, unit: &str, source: &str) -> Self {
        RejectedRecord {
            schema_version: SYNTH_RECORD_VERSION,
            stage: stage.into(),
            reason: reason.into(),
            unit: unit.into(),
            source: source.into(),
            line: None,
            doc_id: None,
            chunk_id: None,
            span: None,
            subject: None,
            domain: None,
            persona: None,
            question: None,
            answer: None,
            criteria: Vec::new(),
            dropped_criteria: Vec::new(),
            kept_p_yes: KeptVerdicts::default(),
            pitfall_stage: None,
            filters: Vec::new(),
            output: None,
            warning: None,
        }
    }
}

/// The unit of a written line: `unit` of a rejected record, `extra.synth.unit` of an ares item,
/// `synth.unit` of a RaR or HealthBench row.
pub fn unit_of(line: &Value) -> Option<&str> {
    line.get("unit")
        .or_else(|| line.get("extra").and_then(|e| e.get("synth")?.get("unit")))
        .or_else(|| line.get("synth").and_then(|s| s.get("unit")))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_are_found_in_every_record_shape() {
        assert_eq!(unit_of(&json!({"unit": "a"})), Some("a"));
        assert_eq!(
            unit_of(&json!({"extra": {"synth": {"unit": "b"}}})),
            Some("b")
        );
        assert_eq!(unit_of(&json!({"synth": {"unit": "c"}})), Some("c"));
        assert_eq!(unit_of(&json!({"id": "x"})), None);
    }
}

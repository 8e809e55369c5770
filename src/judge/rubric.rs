//! The rubric data model: one [`RubricItem`] per question, with weighted [`Criterion`]s. This is
//! ares' own on-disk record (one JSON object per line, `schema_version` first) and the common
//! currency every import/export in `formats.rs` converts through.
//!
//! Invariants that [`RubricItem::validate`] enforces (issue 4, "bad input"):
//! - the item has a non-empty id and question and at least one criterion;
//! - every criterion has a non-empty id, unique within the item, and non-empty text;
//! - every weight is finite and non-zero;
//! - the sign of the weight is the direction of the criterion: positive weights reward a response
//!   that meets the criterion, negative weights mark a pitfall whose text describes the undesirable
//!   behaviour, so meeting it costs (HealthBench negative points; RaR-Medicine pitfalls, weight -1
//!   or -2, "Pitfall Criteria: Does not mention ..."). A negative weight therefore requires category
//!   `pitfall`. A pitfall with a positive weight is allowed: RaR-Explicit phrases pitfalls
//!   positively ("avoids ...") with weight 0.8 (RaR §4.4), and then meeting it adds.
//!
//! The category is a label (RaR's Essential / Important / Optional / Pitfall taxonomy); rewards
//! are computed from the signed weight only (see `aggregate.rs`). This file does no I/O.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// Version of the ares rubric record written by this build. Readers reject other versions
/// instead of guessing what changed.
pub const RUBRIC_SCHEMA_VERSION: u32 = 1;

/// How much a criterion matters, in the RaR taxonomy (RaR §3: Essential = 5, Important = 3-4,
/// Optional = 1-2, Pitfall = -1 or -2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Essential,
    Important,
    Optional,
    Pitfall,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Essential,
        Category::Important,
        Category::Optional,
        Category::Pitfall,
    ];

    /// The lowercase name used in ares records.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Essential => "essential",
            Category::Important => "important",
            Category::Optional => "optional",
            Category::Pitfall => "pitfall",
        }
    }

    /// The capitalised name RaR puts in front of a description ("Essential Criteria: ...").
    pub fn rar_label(self) -> &'static str {
        match self {
            Category::Essential => "Essential",
            Category::Important => "Important",
            Category::Optional => "Optional",
            Category::Pitfall => "Pitfall",
        }
    }

    /// Infers a category for a format that has weights but no categories (HealthBench points,
    /// RLCF 0-100 importance, bare RaR numbers). `scale` is the format's largest positive weight;
    /// the cut points reproduce RaR's anchors on its 1-5 scale (5 essential; 3-4 important; 1-2
    /// optional) and map RLCF's anchors (100 critical -> essential; 75, 50 -> important; 25 ->
    /// optional) and HealthBench's (9-10 essential; 5-8 important; 1-4 optional) the same way.
    /// Negative weights are pitfalls.
    pub fn from_weight(weight: f64, scale: f64) -> Category {
        if weight < 0.0 {
            return Category::Pitfall;
        }
        let relative = weight / scale;
        if relative >= 0.9 {
            Category::Essential
        } else if relative >= 0.5 {
            Category::Important
        } else {
            Category::Optional
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the four category names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {0:?} (expected essential, important, optional or pitfall)")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    /// Accepts the ares names and RaR's spellings, case-insensitively: "essential",
    /// "Essential", "Essential Criteria".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let word = lower.strip_suffix("criteria").unwrap_or(&lower).trim();
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == word)
            .ok_or_else(|| UnknownCategory(s.to_string()))
    }
}

/// One turn of a conversation (HealthBench prompts are multi-turn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// Fields of the source format that ares does not model, kept verbatim.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            extra: Map::new(),
        }
    }
}

/// One checkable criterion of a rubric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    /// Unique within its item; verdicts and cache keys refer to it.
    pub id: String,
    /// What the judge checks, as a statement about the response.
    pub text: String,
    /// Signed importance: positive rewards meeting the criterion, negative (pitfalls) penalises it.
    pub weight: f64,
    pub category: Category,
    /// Free-form labels (HealthBench `axis:*`, `level:*`, `cluster:*`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Short name (RaR's 2-4 word `title`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Fields of the source format that ares does not model, kept verbatim for a lossless export.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Criterion {
    pub fn new(
        id: impl Into<String>,
        text: impl Into<String>,
        weight: f64,
        category: Category,
    ) -> Self {
        Criterion {
            id: id.into(),
            text: text.into(),
            weight,
            category,
            tags: Vec::new(),
            title: None,
            extra: Map::new(),
        }
    }
}

/// A question with its rubric: the unit `ares rubric` writes and `ares judge` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RubricItem {
    /// Always [`RUBRIC_SCHEMA_VERSION`] for records this build writes.
    pub schema_version: u32,
    pub id: String,
    /// The question as one string. For a multi-turn prompt it is the transcript rendered by
    /// [`render_transcript`], and `messages` holds the turns.
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_answer: Option<String>,
    /// The conversation, when the prompt is one (HealthBench); empty for a plain question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    pub criteria: Vec<Criterion>,
    /// Fields of the source format that ares does not model (HealthBench `example_tags`,
    /// `canary`; RaR `question_source`), kept verbatim so that exporting back is lossless.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl RubricItem {
    pub fn new(
        id: impl Into<String>,
        question: impl Into<String>,
        criteria: Vec<Criterion>,
    ) -> Self {
        RubricItem {
            schema_version: RUBRIC_SCHEMA_VERSION,
            id: id.into(),
            question: question.into(),
            reference_answer: None,
            messages: Vec::new(),
            criteria,
            extra: Map::new(),
        }
    }

    /// The first broken invariant (see the module docs), or `Ok`.
    pub fn validate(&self) -> Result<(), RubricError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every broken invariant, in item order, so a user can fix a record in one pass.
    pub fn problems(&self) -> Vec<RubricError> {
        let mut out = Vec::new();
        let item = self.id.clone();
        if self.schema_version != RUBRIC_SCHEMA_VERSION {
            out.push(RubricError::UnsupportedVersion {
                item: item.clone(),
                found: u64::from(self.schema_version),
                supported: RUBRIC_SCHEMA_VERSION,
            });
        }
        if self.id.trim().is_empty() {
            out.push(RubricError::EmptyItemId {
                question: self.question.chars().take(80).collect(),
            });
        }
        if self.question.trim().is_empty() {
            out.push(RubricError::EmptyQuestion { item: item.clone() });
        }
        if self.criteria.is_empty() {
            out.push(RubricError::NoCriteria { item: item.clone() });
        }
        let mut seen = HashSet::new();
        for (index, c) in self.criteria.iter().enumerate() {
            if c.id.trim().is_empty() {
                out.push(RubricError::EmptyCriterionId {
                    item: item.clone(),
                    index,
                });
            } else if !seen.insert(c.id.as_str()) {
                out.push(RubricError::DuplicateCriterion {
                    item: item.clone(),
                    criterion: c.id.clone(),
                });
            }
            if c.text.trim().is_empty() {
                out.push(RubricError::EmptyText {
                    item: item.clone(),
                    criterion: c.id.clone(),
                });
            }
            if !c.weight.is_finite() || c.weight == 0.0 {
                out.push(RubricError::BadWeight {
                    item: item.clone(),
                    criterion: c.id.clone(),
                    weight: c.weight,
                });
            } else if c.weight < 0.0 && c.category != Category::Pitfall {
                out.push(RubricError::NegativeWeightNotPitfall {
                    item: item.clone(),
                    criterion: c.id.clone(),
                    weight: c.weight,
                    category: c.category,
                });
            }
        }
        out
    }
}

/// One string for a conversation: a single turn is its content as is; several turns are
/// `role: content` blocks separated by blank lines, so a judge that takes one question string
/// still sees the whole context.
pub fn render_transcript(messages: &[Message]) -> String {
    match messages {
        [only] => only.content.clone(),
        _ => messages
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> RubricItem {
        RubricItem::new(
            "q1",
            "Why is the sky blue?",
            vec![
                Criterion::new(
                    "c1",
                    "Mentions Rayleigh scattering",
                    5.0,
                    Category::Essential,
                ),
                Criterion::new(
                    "c2",
                    "Claims the sky reflects the ocean",
                    -2.0,
                    Category::Pitfall,
                ),
            ],
        )
    }

    #[test]
    fn valid_item_passes() -> Result<(), RubricError> {
        item().validate()
    }

    #[test]
    fn rubric_with_no_criteria_is_an_error() {
        let mut it = item();
        it.criteria.clear();
        assert_eq!(
            it.validate(),
            Err(RubricError::NoCriteria { item: "q1".into() })
        );
    }

    #[test]
    fn zero_nan_and_infinite_weights_are_errors_naming_item_and_criterion() {
        for w in [0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut it = item();
            it.criteria[0].weight = w;
            match it.validate() {
                Err(RubricError::BadWeight {
                    item, criterion, ..
                }) => {
                    assert_eq!(item, "q1");
                    assert_eq!(criterion, "c1");
                }
                other => panic!("weight {w}: expected BadWeight, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_criterion_ids_are_an_error() {
        let mut it = item();
        it.criteria[1].id = "c1".into();
        assert_eq!(
            it.validate(),
            Err(RubricError::DuplicateCriterion {
                item: "q1".into(),
                criterion: "c1".into()
            })
        );
    }

    #[test]
    fn empty_text_id_and_question_are_errors() {
        let mut it = item();
        it.criteria[0].text = "  ".into();
        it.criteria[1].id = String::new();
        it.question = "\n".into();
        let problems = it.problems();
        assert_eq!(
            problems,
            vec![
                RubricError::EmptyQuestion { item: "q1".into() },
                RubricError::EmptyText {
                    item: "q1".into(),
                    criterion: "c1".into()
                },
                RubricError::EmptyCriterionId {
                    item: "q1".into(),
                    index: 1
                },
            ]
        );
    }

    #[test]
    fn negative_weight_must_be_a_pitfall_but_positive_pitfalls_are_allowed() {
        let mut it = item();
        it.criteria[0].weight = -1.0;
        assert!(matches!(
            it.validate(),
            Err(RubricError::NegativeWeightNotPitfall { .. })
        ));
        let mut it = item();
        it.criteria[1].weight = 0.8; // RaR-Explicit's positively phrased pitfall
        assert_eq!(it.validate(), Ok(()));
    }

    #[test]
    fn other_schema_versions_are_rejected() {
        let mut it = item();
        it.schema_version = 2;
        assert!(matches!(
            it.validate(),
            Err(RubricError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn error_messages_name_item_and_criterion() {
        let e = RubricError::BadWeight {
            item: "q7".into(),
            criterion: "c3".into(),
            weight: f64::NAN,
        };
        let msg = e.to_string();
        assert!(msg.contains("q7") && msg.contains("c3"), "{msg}");
    }

    #[test]
    fn serde_round_trip_and_field_names() -> Result<(), serde_json::Error> {
        let it = item();
        let v = serde_json::to_value(&it)?;
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["criteria"][1]["category"], "pitfall");
        assert_eq!(v["criteria"][0]["tags"], serde_json::json!([]));
        assert!(v.get("reference_answer").is_none());
        let back: RubricItem = serde_json::from_value(v)?;
        assert_eq!(back, it);
        Ok(())
    }

    #[test]
    fn unknown_fields_in_ares_records_are_rejected() {
        let mut v = serde_json::to_value(item()).expect("item serializes");
        v["refrence_answer"] = "typo".into();
        assert!(serde_json::from_value::<RubricItem>(v).is_err());
    }

    #[test]
    fn category_parses_rar_spellings_and_infers_from_weight() {
        assert_eq!("Essential Criteria".parse(), Ok(Category::Essential));
        assert_eq!(" pitfall ".parse(), Ok(Category::Pitfall));
        assert!("critical".parse::<Category>().is_err());
        // RaR 1-5 anchors.
        let rar: Vec<_> = [5.0, 4.0, 3.0, 2.0, 1.0, -1.0]
            .map(|w| Category::from_weight(w, 5.0))
            .to_vec();
        use Category::*;
        assert_eq!(
            rar,
            vec![Essential, Important, Important, Optional, Optional, Pitfall]
        );
        // RLCF 0-100 anchors.
        let rlcf = [100.0, 75.0, 50.0, 25.0].map(|w| Category::from_weight(w, 100.0));
        assert_eq!(rlcf, [Essential, Important, Important, Optional]);
    }

    #[test]
    fn transcript_of_one_turn_is_its_content() {
        let one = [Message::new("user", "hi")];
        assert_eq!(render_transcript(&one), "hi");
        let two = [
            Message::new("user", "hi"),
            Message::new("assistant", "hello"),
        ];
        assert_eq!(render_transcript(&two), "user: hi\n\nassistant: hello");
    }
}

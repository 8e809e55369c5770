//! Rubric generation (`ares rubric`, and `ares synth` later): a question, with an optional
//! reference answer, becomes 3-12 weighted criteria in ONE constrained generation through the
//! `Generator` trait, mapped onto the ares rubric model ([`RubricItem`]).
//!
//! What it owns: the prompt (`templates/rubric.txt`, through [`PromptTemplate::rubric`]), the JSON
//! schema of the output ([`rubric_schema`]), the mapping of the generated criteria to
//! [`Criterion`]s ([`to_item`]), and the per-question outcome ([`RubricOutcome`]). It does no
//! file writing and no printing; the CLI (`cli/rubric.rs`) does that.
//!
//! Invariants:
//! - every request carries [`rubric_schema`] as its constraint, so the output is JSON of that
//!   shape unless it was cut off at `max_tokens` (then the question's status is `unparseable`,
//!   never an empty rubric);
//! - every item returned is valid ([`RubricItem::validate`]) and has 3-12 criteria with ids
//!   `c1..cn` in generated order; exact duplicate texts (case and surrounding space ignored) and
//!   criteria failing [`check_criterion_as`] (about the reference answer or the document, or
//!   copied from a prompt example) are dropped before counting, the latter recorded with their
//!   reason in `extra.rejected_criteria` (`[{text, reason}]`, absent when none);
//! - a pitfall written as advice ("Warns that …", see `criterion_check::ADVICE_VERBS`) names no
//!   mistake but what a good response does: it is kept as an important criterion with its weight
//!   clamped to [`IMPORTANT_WEIGHTS`], recorded in `extra.recategorized_criteria` (same shape);
//! - the sign convention of `rubric.rs`: a pitfall's text names the mistake and its weight is
//!   stored negative (`-weight`); other categories keep the generated weight (1-10);
//! - every item carries `template_hash` (16 hex digits of the template's sha256) and
//!   `model_sha256` in its `extra` map, which every export format writes as top-level fields.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::engine::{Constraint, FinishReason, Generator, Prompt, Request, SamplingParams};
use crate::error::Error as EngineError;
pub use crate::judge::criterion_check::CRITERION_VERBS;
use crate::judge::criterion_check::{check_criterion_as, CriterionProblem, RejectedCriterion};
use crate::judge::formats::derived_id;
use crate::judge::formats::FormatError;
use crate::judge::rubric::RubricError;
use crate::judge::rubric::{Category, Criterion, RubricItem};
use crate::judge::template::{PromptTemplate, TemplateError};

/// Fewest criteria a generated rubric may have.
pub const MIN_CRITERIA: usize = 3;
/// Most criteria a generated rubric may have.
pub const MAX_CRITERIA: usize = 12;
/// Longest criterion text the schema allows, in characters.
pub const CRITERION_MAX_CHARS: usize = 200;

/// Criteria are one sentence that opens with one of [`CRITERION_VERBS`] and has at least two
/// words after it (so never "Says that." or "States that", which the 135M and 1.5B models both
/// wrote): no `;`, no braces, brackets, `<>`, `|` or `#` (template debris), `!` and `?` only at
/// the end, and `.` only at the end or inside a word or number (`copy.deepcopy`, `0.5`), so
/// never between two sentences (atomic by construction; the rubric-structure filter still
/// checks).
pub fn criterion_pattern() -> String {
    // One character of a word (a `.` only when a non-space follows), and of the text (a space too).
    let word = r"[^{}\[\]<>|#;.!? ]|\.[^ {}\[\]<>|#;.!?]";
    let text = r"[^{}\[\]<>|#;.!?]|\.[^ {}\[\]<>|#;.!?]";
    format!(
        r"^({}) ({word})+ ({word})({text})*[.]?$",
        CRITERION_VERBS.join("|")
    )
}

/// Generated weights are integers in `1..=MAX_WEIGHT`.
pub const MAX_WEIGHT: i64 = 10;
/// The weights of an important criterion (the rubric prompt's 4-7), which a pitfall written as
/// advice gets when it is kept as one.
pub const IMPORTANT_WEIGHTS: (i64, i64) = (4, 7);
/// Default token budget of one rubric (12 criteria of about 40 tokens each, with room to spare).
pub const DEFAULT_MAX_TOKENS: usize = 1024;
/// Default repetition penalty: with greedy decoding (1.0) the 135M default model writes the same
/// criterion over and over (measured: 1-2 distinct criteria of 3+); 1.2 gives distinct ones.
pub const DEFAULT_REPEAT_PENALTY: f32 = 1.2;
/// Version of the [`RubricStatusRecord`] this build writes.
pub const RUBRIC_STATUS_VERSION: u32 = 1;

/// The JSON schema every rubric generation is constrained to.
pub fn rubric_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "criteria": {
                "type": "array",
                "minItems": MIN_CRITERIA,
                "maxItems": MAX_CRITERIA,
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string", "minLength": 1, "maxLength": CRITERION_MAX_CHARS, "pattern": criterion_pattern()},
                        "category": {
                            "type": "string",
                            "enum": ["essential", "important", "optional", "pitfall"]
                        },
                        "weight": {"type": "integer", "minimum": 1, "maximum": MAX_WEIGHT}
                    },
                    "required": ["text", "category", "weight"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["criteria"],
        "additionalProperties": false
    })
}

/// One criterion as the model writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedCriterion {
    pub text: String,
    pub category: Category,
    pub weight: i64,
}

/// The model's whole output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedRubric {
    pub criteria: Vec<GeneratedCriterion>,
}

/// One line of the input file: `{"id"?, "question", "reference_answer"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionLine {
    /// A string or a number; missing: `q-` + 16 hex digits of the question's sha256.
    #[serde(default)]
    pub id: Option<Value>,
    pub question: String,
    #[serde(default)]
    pub reference_answer: Option<String>,
}

/// A question ready to be turned into a rubric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub reference_answer: Option<String>,
}

impl QuestionLine {
    /// The question with its id resolved (see [`QuestionLine::id`]).
    pub fn resolve(self) -> Result<Question, String> {
        let id = match self.id {
            None | Some(Value::Null) => derived_id("q", &self.question),
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("id must be a string or a number, not {other}")),
        };
        if id.trim().is_empty() {
            return Err("empty id".into());
        }
        if self.question.trim().is_empty() {
            return Err("empty question".into());
        }
        Ok(Question {
            id,
            question: self.question,
            reference_answer: self.reference_answer.filter(|r| !r.trim().is_empty()),
        })
    }
}

/// One non-blank line of the input file, read or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionEntry {
    /// 1-based line number.
    pub line: usize,
    pub parsed: Result<Question, String>,
}

/// Why a question got no rubric.
#[derive(Debug, thiserror::Error)]
pub enum RubricGenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("rendering the prompt: {0}")]
    Prompt(#[source] EngineError),
    #[error("engine: {0}")]
    Engine(#[source] EngineError),
    #[error("output is not rubric JSON ({reason}; finish {finish:?}): {text:?}")]
    Unparseable {
        reason: String,
        finish: FinishReason,
        text: String,
    },
    #[error(
        "{found} distinct criteria {texts:?}; a rubric needs {MIN_CRITERIA} to {MAX_CRITERIA}{}",
        rejected_note(rejected)
    )]
    CriteriaCount {
        found: usize,
        texts: Vec<String>,
        /// Criteria dropped by the criterion check before counting.
        rejected: Vec<RejectedCriterion>,
    },
    #[error("criterion #{index}: weight {weight} is outside 1..={MAX_WEIGHT}")]
    Weight { index: usize, weight: i64 },
    #[error(transparent)]
    Rubric(#[from] RubricError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// `" (N more rejected: text: reason; ...)"` or nothing.
fn rejected_note(rejected: &[RejectedCriterion]) -> String {
    if rejected.is_empty() {
        return String::new();
    }
    let list: Vec<String> = rejected
        .iter()
        .map(|r| format!("{:?}: {}", r.text, r.reason))
        .collect();
    format!(" ({} more rejected: {})", rejected.len(), list.join("; "))
}

/// Outcome of one question, as recorded per input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RubricStatus {
    /// A valid rubric was written.
    Ok,
    /// The output was not rubric JSON (cut off at `max_tokens`).
    Unparseable,
    /// The JSON parsed but the rubric broke an invariant (too few distinct criteria, ...).
    Invalid,
    /// Bad input line, duplicate id, prompt too long, engine or export error.
    Error,
}

impl RubricGenError {
    pub fn status(&self) -> RubricStatus {
        match self {
            RubricGenError::Unparseable { .. } => RubricStatus::Unparseable,
            RubricGenError::CriteriaCount { .. }
            | RubricGenError::Weight { .. }
            | RubricGenError::Rubric(_) => RubricStatus::Invalid,
            _ => RubricStatus::Error,
        }
    }
}

/// One line of the status file: what happened to one input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricStatusRecord {
    pub line: usize,
    pub id: Option<String>,
    pub status: RubricStatus,
    /// Criteria in the written rubric (status `ok` only).
    pub criteria: Option<usize>,
    /// Why the status is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub template_hash: String,
    pub model_sha256: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Submit to done of this question's generation (it ran batched with the others).
    pub seconds: f64,
    pub schema_version: u32,
}

/// Reads a questions JSONL file: one entry per non-blank line, in order; a bad line is that
/// line's error and reading goes on. Only a file that cannot be read is an error.
pub fn read_questions(path: &Path) -> Result<Vec<QuestionEntry>, RubricGenError> {
    let io = |source| RubricGenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for l in crate::jsonl::read_lines(path).map_err(io)? {
        let line = l.number;
        let parsed = l.text.and_then(|text| {
            serde_json::from_str::<QuestionLine>(&text)
                .map_err(|e| {
                    format!("not a question record {{id?, question, reference_answer?}}: {e}")
                })
                .and_then(QuestionLine::resolve)
        });
        let parsed = parsed.map_err(|e| format!("{}:{line}: {e}", path.display()));
        out.push(QuestionEntry { line, parsed });
    }
    Ok(out)
}

/// Maps a generated rubric onto a validated [`RubricItem`] (see the module invariants).
pub fn to_item(
    question: &Question,
    generated: GeneratedRubric,
    template_hash: &str,
    model_sha256: &str,
) -> Result<RubricItem, RubricGenError> {
    let mut seen = HashSet::new();
    let mut criteria = Vec::new();
    let mut rejected = Vec::new();
    let mut recategorized = Vec::new();
    for (index, g) in generated.criteria.into_iter().enumerate() {
        if !(1..=MAX_WEIGHT).contains(&g.weight) {
            return Err(RubricGenError::Weight {
                index,
                weight: g.weight,
            });
        }
        let text = g.text.trim().to_string();
        if !seen.insert(text.to_lowercase()) {
            continue;
        }
        // A criterion must be checkable in the response alone and not a prompt example. A
        // pitfall must name a mistake: one written as advice ("Warns that ...") states what a
        // good response does, so it is kept as that, an important criterion.
        let mut category = g.category;
        let mut weight = g.weight;
        match check_criterion_as(&text, g.category) {
            Ok(()) => {}
            Err(problem @ CriterionProblem::PitfallNotAMistake { .. }) => {
                recategorized.push(RejectedCriterion {
                    text: text.clone(),
                    reason: format!("{problem}; kept as an important criterion"),
                });
                category = Category::Important;
                weight = weight.clamp(IMPORTANT_WEIGHTS.0, IMPORTANT_WEIGHTS.1);
            }
            Err(problem) => {
                rejected.push(RejectedCriterion {
                    text,
                    reason: problem.to_string(),
                });
                continue;
            }
        }
        // Pitfall texts name the mistake: meeting one costs (rubric.rs sign convention).
        let weight = match category {
            Category::Pitfall => -(weight as f64),
            _ => weight as f64,
        };
        let id = format!("c{}", criteria.len() + 1);
        criteria.push(Criterion::new(id, text, weight, category));
    }
    if !(MIN_CRITERIA..=MAX_CRITERIA).contains(&criteria.len()) {
        return Err(RubricGenError::CriteriaCount {
            found: criteria.len(),
            texts: criteria.into_iter().map(|c| c.text).collect(),
            rejected,
        });
    }
    let mut item = RubricItem::new(question.id.clone(), question.question.clone(), criteria);
    item.reference_answer = question.reference_answer.clone();
    let mut extra = Map::new();
    extra.insert("template_hash".into(), template_hash.into());
    extra.insert("model_sha256".into(), model_sha256.into());
    if !rejected.is_empty() {
        extra.insert(
            "rejected_criteria".into(),
            serde_json::to_value(&rejected).expect("plain data"),
        );
    }
    if !recategorized.is_empty() {
        extra.insert(
            "recategorized_criteria".into(),
            serde_json::to_value(&recategorized).expect("plain data"),
        );
    }
    item.extra = extra;
    item.validate()?;
    Ok(item)
}

/// Parses the model's output and maps it (see [`to_item`]).
pub fn parse_output(
    question: &Question,
    text: &str,
    finish: FinishReason,
    template_hash: &str,
    model_sha256: &str,
) -> Result<RubricItem, RubricGenError> {
    let generated: GeneratedRubric =
        serde_json::from_str(text.trim()).map_err(|e| RubricGenError::Unparseable {
            reason: e.to_string(),
            finish,
            text: text.chars().take(400).collect(),
        })?;
    to_item(question, generated, template_hash, model_sha256)
}

/// What one question produced.
#[derive(Debug)]
pub struct RubricOutcome {
    pub item: Result<RubricItem, RubricGenError>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
}

/// Settings of a generation job.
#[derive(Debug, Clone, PartialEq)]
pub struct RubricGenConfig {
    /// Token budget of one rubric.
    pub max_tokens: usize,
    /// Greedy by default, so a rubric is reproducible, with [`DEFAULT_REPEAT_PENALTY`].
    pub sampling: SamplingParams,
}

impl Default for RubricGenConfig {
    fn default() -> Self {
        RubricGenConfig {
            max_tokens: DEFAULT_MAX_TOKENS,
            sampling: SamplingParams {
                repeat_penalty: DEFAULT_REPEAT_PENALTY,
                ..SamplingParams::default()
            },
        }
    }
}

/// Turns questions into rubric items through a [`Generator`].
pub struct RubricGenerator<'g> {
    generator: &'g dyn Generator,
    template: PromptTemplate,
    model_sha256: String,
    config: RubricGenConfig,
}

impl<'g> RubricGenerator<'g> {
    pub fn new(
        generator: &'g dyn Generator,
        model_sha256: impl Into<String>,
        config: RubricGenConfig,
    ) -> Result<Self, RubricGenError> {
        Ok(RubricGenerator {
            generator,
            template: PromptTemplate::rubric()?,
            model_sha256: model_sha256.into(),
            config,
        })
    }

    /// 16 hex digits of the sha256 of `templates/rubric.txt`.
    pub fn template_hash(&self) -> &str {
        self.template.hash()
    }

    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// The chat prompt for one question.
    pub fn prompt(&self, q: &Question) -> Result<String, RubricGenError> {
        let reference = match &q.reference_answer {
            Some(r) => {
                format!("Reference answer (for you only: the grader will not see it):\n{r}\n")
            }
            None => String::new(),
        };
        let messages = self
            .template
            .render(&[("question", &q.question), ("reference", &reference)])?;
        self.generator
            .chat_prompt(&messages)
            .map_err(RubricGenError::Prompt)
    }

    fn request(&self, q: &Question, prompt: String) -> Request {
        Request {
            max_tokens: self.config.max_tokens,
            sampling: self.config.sampling.clone(),
            constraint: Some(Constraint::JsonSchema(rubric_schema())),
            ..Request::new(q.id.clone(), Prompt::Text(prompt))
        }
    }

    /// One outcome per question, in order. All requests go to the engine at once
    /// (`generate_many`), so questions are batched together.
    pub fn generate(&self, questions: &[Question]) -> Vec<RubricOutcome> {
        let t0 = Instant::now();
        let mut outcomes: Vec<Option<RubricOutcome>> = Vec::with_capacity(questions.len());
        let mut requests = Vec::new();
        let mut which = Vec::new();
        for (i, q) in questions.iter().enumerate() {
            match self.prompt(q) {
                Ok(p) => {
                    requests.push(self.request(q, p));
                    which.push(i);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(RubricOutcome {
                    item: Err(e),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    seconds: 0.0,
                })),
            }
        }
        let results = self.generator.generate_many(requests);
        for (i, result) in which.into_iter().zip(results) {
            let q = &questions[i];
            outcomes[i] = Some(match result {
                Ok(c) => RubricOutcome {
                    item: parse_output(
                        q,
                        &c.text,
                        c.finish_reason,
                        self.template.hash(),
                        &self.model_sha256,
                    ),
                    prompt_tokens: c.usage.prompt_tokens,
                    completion_tokens: c.usage.completion_tokens,
                    seconds: c.prompt_seconds + c.decode_seconds,
                },
                Err(e) => RubricOutcome {
                    item: Err(RubricGenError::Engine(e)),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    seconds: t0.elapsed().as_secs_f64(),
                },
            });
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| RubricOutcome {
                    item: Err(RubricGenError::Engine(EngineError::EngineStopped)),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    seconds: 0.0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn question() -> Question {
        Question {
            id: "sky".into(),
            question: "Why is the sky blue?".into(),
            reference_answer: Some("Rayleigh scattering.".into()),
        }
    }

    fn gc(text: &str, category: Category, weight: i64) -> GeneratedCriterion {
        GeneratedCriterion {
            text: text.into(),
            category,
            weight,
        }
    }

    #[test]
    fn generated_criteria_map_to_ids_signed_weights_and_provenance() -> TestResult {
        let g = GeneratedRubric {
            criteria: vec![
                gc(" Mentions Rayleigh scattering. ", Category::Essential, 9),
                gc("Explains why blue scatters more.", Category::Important, 5),
                gc("Claims the sky reflects the ocean.", Category::Pitfall, 4),
            ],
        };
        let item = to_item(&question(), g, "0123456789abcdef", "abc")?;
        assert_eq!(item.id, "sky");
        assert_eq!(
            item.reference_answer.as_deref(),
            Some("Rayleigh scattering.")
        );
        let ids: Vec<&str> = item.criteria.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c1", "c2", "c3"]);
        assert_eq!(item.criteria[0].text, "Mentions Rayleigh scattering.");
        assert_eq!(item.criteria[0].weight, 9.0);
        assert_eq!(item.criteria[2].weight, -4.0);
        assert_eq!(item.criteria[2].category, Category::Pitfall);
        assert_eq!(item.extra["template_hash"], "0123456789abcdef");
        assert_eq!(item.extra["model_sha256"], "abc");
        item.validate()?;
        Ok(())
    }

    #[test]
    fn a_pitfall_written_as_advice_is_kept_as_an_important_criterion_and_recorded() -> TestResult {
        let g = GeneratedRubric {
            criteria: vec![
                gc(
                    "States that blue light scatters most.",
                    Category::Essential,
                    9,
                ),
                gc(
                    "Warns about the risk of looking at the sun.",
                    Category::Pitfall,
                    10,
                ),
                gc("Explains the risk of sunburn.", Category::Pitfall, 2),
                gc(
                    "Claims that the sky reflects the ocean.",
                    Category::Pitfall,
                    5,
                ),
            ],
        };
        let item = to_item(&question(), g, "h", "m")?;
        let got: Vec<(&str, f64, Category)> = item
            .criteria
            .iter()
            .map(|c| (c.text.as_str(), c.weight, c.category))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "States that blue light scatters most.",
                    9.0,
                    Category::Essential
                ),
                (
                    "Warns about the risk of looking at the sun.",
                    7.0,
                    Category::Important
                ),
                ("Explains the risk of sunburn.", 4.0, Category::Important),
                (
                    "Claims that the sky reflects the ocean.",
                    -5.0,
                    Category::Pitfall
                ),
            ]
        );
        assert!(item.extra.get("rejected_criteria").is_none());
        let moved: Vec<RejectedCriterion> =
            serde_json::from_value(item.extra["recategorized_criteria"].clone())?;
        assert_eq!(moved.len(), 2);
        assert_eq!(moved[0].text, "Warns about the risk of looking at the sun.");
        assert!(
            moved[0].reason.contains("names no mistake")
                && moved[0].reason.contains("kept as an important criterion"),
            "{}",
            moved[0].reason
        );
        item.validate()?;
        Ok(())
    }

    #[test]
    fn duplicates_are_dropped_before_counting() {
        let g = GeneratedRubric {
            criteria: vec![
                gc("Mentions scattering.", Category::Essential, 9),
                gc("mentions scattering. ", Category::Essential, 9),
                gc("Is short.", Category::Optional, 1),
            ],
        };
        assert!(matches!(
            to_item(&question(), g, "h", "m"),
            Err(RubricGenError::CriteriaCount { found: 2, .. })
        ));
    }

    #[test]
    fn criteria_about_the_reference_or_copied_from_a_prompt_are_dropped_with_the_reason() {
        // An example of a shipped template, copied word for word (rubric.txt's own examples
        // are <slot> skeletons, too short to count as a copy).
        let copied = crate::judge::criterion_check::TEMPLATE_SOURCES
            .iter()
            .flat_map(|(_, source)| crate::judge::criterion_check::template_examples(source))
            .find(|e| crate::judge::criterion_check::content_words(e).len() >= 4)
            .expect("some template has an example criterion");
        let g = GeneratedRubric {
            criteria: vec![
                gc(
                    "Mentions scattering by air molecules.",
                    Category::Essential,
                    9,
                ),
                gc(
                    "The reference answer mentions Rayleigh scattering.",
                    Category::Important,
                    5,
                ),
                gc(
                    "States that blue light scatters most.",
                    Category::Important,
                    6,
                ),
                gc(&copied, Category::Pitfall, 5),
                gc(
                    "Claims that the sky reflects the ocean.",
                    Category::Pitfall,
                    5,
                ),
            ],
        };
        let item = to_item(&question(), g.clone(), "h", "m")
            .map_err(|e| format!("{e}"))
            .expect("three criteria are left");
        assert_eq!(item.criteria.len(), 3);
        let rejected: Vec<RejectedCriterion> =
            serde_json::from_value(item.extra["rejected_criteria"].clone()).expect("recorded");
        assert_eq!(rejected.len(), 2);
        assert!(
            rejected[0].reason.contains("reference answer"),
            "{rejected:?}"
        );
        assert!(
            rejected[1].reason.contains("copies the example"),
            "{rejected:?}"
        );
        // Too few left: the count error names the rejected ones and why.
        let mut short = g;
        short.criteria.truncate(2);
        let e = to_item(&question(), short, "h", "m")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("1 more rejected")),
            "{e:?}"
        );
    }

    #[test]
    fn too_many_criteria_and_bad_weights_are_invalid() {
        let many = GeneratedRubric {
            criteria: (0..13)
                .map(|i| gc(&format!("Point {i}."), Category::Optional, 1))
                .collect(),
        };
        let e = to_item(&question(), many, "h", "m");
        assert!(matches!(
            e,
            Err(RubricGenError::CriteriaCount { found: 13, .. })
        ));
        let zero = GeneratedRubric {
            criteria: vec![
                gc("A.", Category::Essential, 0),
                gc("B.", Category::Essential, 9),
                gc("C.", Category::Essential, 9),
            ],
        };
        let e = to_item(&question(), zero, "h", "m");
        assert!(matches!(
            &e,
            Err(RubricGenError::Weight {
                index: 0,
                weight: 0
            })
        ));
        assert_eq!(e.err().map(|e| e.status()), Some(RubricStatus::Invalid));
    }

    #[test]
    fn cut_off_output_is_unparseable_not_an_empty_rubric() {
        let e = parse_output(
            &question(),
            r#"{"criteria":[{"text":"Mentions"#,
            FinishReason::Length,
            "h",
            "m",
        );
        assert!(matches!(&e, Err(RubricGenError::Unparseable { .. })));
        assert_eq!(e.err().map(|e| e.status()), Some(RubricStatus::Unparseable));
    }

    #[test]
    fn output_json_parses() -> TestResult {
        let text = r#"{"criteria":[{"text":"States the dose.","category":"essential","weight":10},{"text":"Names the drug.","category":"optional","weight":1},{"text":"Claims that it is safe.","category":"pitfall","weight":2}]}"#;
        let item = parse_output(&question(), text, FinishReason::Stop, "h", "m")?;
        assert_eq!(item.criteria.len(), 3);
        assert_eq!(item.criteria[2].weight, -2.0);
        Ok(())
    }

    #[test]
    fn criterion_pattern_wants_one_sentence_about_the_response() {
        let re = regex::Regex::new(&criterion_pattern()).expect("pattern compiles");
        for ok in [
            "States that copy.deepcopy copies nested objects.",
            "Claims that the dose is 0.5 mg per day",
            "Names zoneinfo.ZoneInfo as the class.",
            "Recommends seeing a doctor when the fever lasts over 3 days.",
            "Fails to mention the risk of bleeding.",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in [
            "States one thing. Then another.",
            "States a fact; adds one.",
            "lower case start.",
            "Ends with a dot then space. ",
            "The reference answer mentions irrigation.",
            "Chronic myelogenous leukemia (CML)",
            "Stated that the past tense is not a check.",
            "States",
            "Says that.",
            "States that",
            "Explains that .",
            "Mentions aspirin.",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn schema_bounds_match_the_constants() {
        let s = rubric_schema();
        let arr = &s["properties"]["criteria"];
        assert_eq!(arr["minItems"], MIN_CRITERIA);
        assert_eq!(arr["maxItems"], MAX_CRITERIA);
        let item = &arr["items"]["properties"];
        assert_eq!(item["text"]["maxLength"], CRITERION_MAX_CHARS);
        assert_eq!(item["text"]["pattern"], criterion_pattern());
        assert_eq!(item["weight"]["maximum"], MAX_WEIGHT);
        assert_eq!(item["category"]["enum"].as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn question_lines_resolve_ids_and_reject_bad_lines() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("q.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"id\": \"a\", \"question\": \"Q1?\"}\n",
                "\n",
                "{\"id\": 7, \"question\": \"Q2?\", \"reference_answer\": \"R\"}\n",
                "{\"question\": \"Q3?\"}\n",
                "{\"question\": \n",
                "{\"id\": \"b\", \"question\": \"  \"}\n",
            ),
        )?;
        let entries = read_questions(&path)?;
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 3, 4, 5, 6]
        );
        assert_eq!(entries[0].parsed.as_ref().map(|q| q.id.as_str()), Ok("a"));
        let q2 = entries[1].parsed.as_ref().map_err(|e| e.clone())?;
        assert_eq!(q2.id, "7");
        assert_eq!(q2.reference_answer.as_deref(), Some("R"));
        let q3 = entries[2].parsed.as_ref().map_err(|e| e.clone())?;
        assert!(q3.id.starts_with("q-") && q3.id.len() == 18, "{}", q3.id);
        let e = entries[3].parsed.as_ref().err().ok_or("line 5 is bad")?;
        assert!(e.contains(":5:"), "{e}");
        assert!(entries[4].parsed.is_err());
        Ok(())
    }
}

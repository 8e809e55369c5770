//! Pitfall stage: per generated item, a second short constrained generation copies two or three
//! facts of the reference answer and writes each changed into a mistake; each mistake becomes a
//! pitfall criterion "Claims that <mistake>" appended to the item's criteria.
//!
//! Why a stage of its own (issue 12): asked for pitfalls inside the one-pass generation, the 1.5B
//! model wrote true statements from the passage as pitfalls (51 of 87 items lost their only
//! pitfall to the reference check). Given only the question and the answer, asked to copy a fact
//! and then change it, it writes a real change (a number, a negation, another name) in about
//! half of the cases (read on 30 items); the rest copy the answer.
//!
//! What this module guarantees (pure functions, no model): a mistake is not added, and is recorded
//! as skipped with the reason, when its content words all occur in the reference answer or are
//! exactly those of its fact (nothing changed), when it reaches the schema's length limit (cut off
//! mid-sentence), when it fails `ares rubric`'s criterion check (copies a template example), or
//! when it is a near duplicate (the rubric-structure filter's word Jaccard) of a criterion already
//! there or added before it (two mistakes that differ in one word would get the item rejected).
//! At most [`MAX_CRITERIA`] criteria in all. Whether an added pitfall is actually false is not
//! decided here: the reference check (`judge::reference_check`) drops every pitfall the reference
//! answer makes, so the stage only runs with the check on.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::judge::criterion_check::{check_criterion, content_words};
use crate::judge::rubric_gen::{GeneratedCriterion, MAX_CRITERIA};
use crate::judge::Category;
use crate::synth::filters::{word_jaccard, NEAR_DUPLICATE_CRITERIA};

/// Fewest and most statements the schema asks for.
pub const MIN_STATEMENTS: usize = 2;
pub const MAX_STATEMENTS: usize = 3;
/// Longest mistake, in characters (one short sentence; longer ones were copies of the answer).
pub const STATEMENT_MAX_CHARS: usize = 150;
/// Longest copied fact, in characters.
pub const FACT_MAX_CHARS: usize = 200;
/// Weight of an added pitfall (the pitfall range is 5-10; a changed fact is a clear mistake).
pub const PITFALL_WEIGHT: i64 = 7;
/// Requests per item at most: the first greedy, the others sampled, each only for an item the
/// earlier ones gave no mistake (on 50 documents with the 1.5B model, one greedy request left 20
/// of 35 "no pitfall" items without any: every mistake copied the answer).
pub const PITFALL_ATTEMPTS: usize = 3;
/// Token budget of one request (three facts and mistakes of up to about 45 tokens each, and the
/// JSON around them).
pub const PITFALL_MAX_TOKENS: usize = 320;
/// One sentence, starting with a letter, digit or quote-like mark, without template debris;
/// `.` only at the end or inside a word or number (as in `rubric_gen::criterion_pattern`).
pub const STATEMENT_PATTERN: &str =
    r"^[A-Za-z0-9`$(]([^{}\[\]<>|#;.!?]|\.[^ {}\[\]<>|#;.!?])*[.]?$";

/// The JSON schema of the stage's output.
pub fn pitfall_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "mistakes": {
                "type": "array",
                "minItems": MIN_STATEMENTS,
                "maxItems": MAX_STATEMENTS,
                "items": {
                    "type": "object",
                    "properties": {
                        "fact": {
                            "type": "string",
                            "minLength": 10,
                            "maxLength": FACT_MAX_CHARS,
                            "pattern": STATEMENT_PATTERN
                        },
                        "mistake": {
                            "type": "string",
                            "minLength": 10,
                            "maxLength": STATEMENT_MAX_CHARS,
                            "pattern": STATEMENT_PATTERN
                        }
                    },
                    "required": ["fact", "mistake"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["mistakes"],
        "additionalProperties": false
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    mistakes: Vec<Mistake>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mistake {
    fact: String,
    mistake: String,
}

/// What the stage did for one item (recorded in its provenance or rejected record).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PitfallOutcome {
    /// Criterion texts appended to the item's criteria.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Statements not added, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedStatement>,
    /// Why the last attempt gave the item nothing (engine error, output not of the schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests made for the item (see [`PITFALL_ATTEMPTS`]).
    #[serde(default)]
    pub attempts: usize,
}

/// A statement the stage did not add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedStatement {
    pub text: String,
    pub reason: String,
}

/// `"The sky is green."` -> `"Claims that the sky is green."`: a leading article or pronoun is
/// lowercased, anything else (a name, `sorted()`, a number) is kept as written.
pub fn as_claim(statement: &str) -> String {
    let s = statement.trim().trim_end_matches('.').trim_end();
    const LOWER: [&str; 24] = [
        "The", "A", "An", "This", "These", "That", "Those", "It", "Its", "They", "Their", "Some",
        "Each", "Every", "All", "Most", "Many", "Both", "No", "There", "When", "If", "In", "Only",
    ];
    let first = s.split_whitespace().next().unwrap_or_default();
    let body = if LOWER.contains(&first) {
        let mut c = s.chars();
        let head: String = c
            .next()
            .map(|h| h.to_lowercase().collect())
            .unwrap_or_default();
        format!("{head}{}", c.as_str())
    } else {
        s.to_string()
    };
    format!("Claims that {body}.")
}

/// Parses the stage's output and decides which statements become criteria of an item with
/// `existing` criteria and reference answer `answer`. `Err` when the output is not of the schema.
pub fn pitfalls_from(
    text: &str,
    answer: &str,
    existing: &[GeneratedCriterion],
) -> Result<(Vec<GeneratedCriterion>, PitfallOutcome), String> {
    let out: Output = serde_json::from_str(text.trim())
        .map_err(|e| format!("pitfall output is not JSON of the schema ({e})"))?;
    let answer_words: HashSet<String> = content_words(answer).into_iter().collect();
    let mut there: Vec<String> = existing.iter().map(|c| c.text.clone()).collect();
    let mut room = MAX_CRITERIA.saturating_sub(existing.len());
    let mut outcome = PitfallOutcome::default();
    let mut criteria = Vec::new();
    for m in out.mistakes {
        let s = m.mistake.trim().to_string();
        let words = content_words(&s);
        let claim = as_claim(&s);
        let fact_words: HashSet<String> = content_words(&m.fact).into_iter().collect();
        let mistake_words: HashSet<&String> = words.iter().collect();
        let near = there
            .iter()
            .map(|t| word_jaccard(t, &claim))
            .fold(0.0, f64::max);
        let skip = if words.is_empty() {
            Some("no content words".to_string())
        } else if m.mistake.chars().count() >= STATEMENT_MAX_CHARS {
            Some(format!(
                "cut off at the {STATEMENT_MAX_CHARS}-character limit"
            ))
        } else if words.iter().all(|w| answer_words.contains(w))
            || mistake_words == fact_words.iter().collect()
        {
            Some("every content word is in the reference answer: no fact was changed".to_string())
        } else if let Err(problem) = check_criterion(&claim) {
            Some(problem.to_string())
        } else if near >= NEAR_DUPLICATE_CRITERIA {
            Some(format!(
                "near duplicate of a criterion already there (word Jaccard {near:.2})"
            ))
        } else if room == 0 {
            Some(format!("the item already has {MAX_CRITERIA} criteria"))
        } else {
            None
        };
        match skip {
            Some(reason) => outcome.skipped.push(SkippedStatement { text: s, reason }),
            None => {
                room -= 1;
                there.push(claim.clone());
                outcome.added.push(claim.clone());
                criteria.push(GeneratedCriterion {
                    text: claim,
                    category: Category::Pitfall,
                    weight: PITFALL_WEIGHT,
                });
            }
        }
    }
    Ok((criteria, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crit(text: &str) -> GeneratedCriterion {
        GeneratedCriterion {
            text: text.into(),
            category: Category::Essential,
            weight: 9,
        }
    }

    #[test]
    fn claims_lowercase_only_articles_and_pronouns() {
        assert_eq!(
            as_claim("The sky is green."),
            "Claims that the sky is green."
        );
        assert_eq!(
            as_claim("Python strings use ASCII"),
            "Claims that Python strings use ASCII."
        );
        assert_eq!(
            as_claim("`sorted()` sorts in place."),
            "Claims that `sorted()` sorts in place."
        );
        assert_eq!(as_claim("It is 64-bit."), "Claims that it is 64-bit.");
        assert_eq!(
            as_claim("Each UUID has 256 bits."),
            "Claims that each UUID has 256 bits."
        );
    }

    #[test]
    fn mistakes_that_change_nothing_or_repeat_are_skipped_with_a_reason() -> Result<(), String> {
        let answer = "A UUID is a 128-bit number used to identify objects.";
        let m = |mistake: &str| {
            format!(r#"{{"fact": "A UUID is a 128-bit number.", "mistake": "{mistake}"}}"#)
        };
        let text = format!(
            r#"{{"mistakes": [{}, {}, {}]}}"#,
            m("A UUID is a 64-bit number used to identify objects."),
            m("A UUID is a 128-bit number used to identify objects."),
            m("A UUID is a 64-bit number used to identify objects.")
        );
        let (added, outcome) = pitfalls_from(&text, answer, &[crit("States that it is 128-bit.")])?;
        assert_eq!(added.len(), 1);
        assert_eq!(
            added[0].text,
            "Claims that a UUID is a 64-bit number used to identify objects."
        );
        assert_eq!(added[0].category, Category::Pitfall);
        assert_eq!(added[0].weight, PITFALL_WEIGHT);
        assert_eq!(outcome.added, vec![added[0].text.clone()]);
        let reasons: Vec<&str> = outcome.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].contains("no fact was changed"), "{reasons:?}");
        assert!(reasons[1].starts_with("near duplicate"), "{reasons:?}");
        Ok(())
    }

    #[test]
    fn additions_stop_at_the_criteria_cap_and_bad_output_is_an_error() -> Result<(), String> {
        let existing: Vec<_> = (0..MAX_CRITERIA - 1)
            .map(|i| crit(&format!("States fact {i}.")))
            .collect();
        let text = r#"{"mistakes": [{"fact": "Ethanol boils at 78 degrees.", "mistake": "Ethanol boils at 50 degrees."}, {"fact": "Ice melts at 0 degrees.", "mistake": "Ice melts at 30 degrees."}]}"#;
        let (added, outcome) = pitfalls_from(text, "Ethanol boils at 78 degrees.", &existing)?;
        assert_eq!(added.len(), 1);
        assert!(outcome.skipped[0].reason.contains("already has"));
        // A mistake closed at the length limit is cut mid-sentence.
        let long = format!("Ethanol boils at 50 degrees {}", "and more ".repeat(20));
        let long = &long[..STATEMENT_MAX_CHARS];
        let text = format!(
            r#"{{"mistakes": [{{"fact": "Ethanol boils at 78 degrees.", "mistake": "{long}"}}]}}"#
        );
        let (added, outcome) = pitfalls_from(&text, "Ethanol boils at 78 degrees.", &[])?;
        assert!(added.is_empty());
        assert!(
            outcome.skipped[0].reason.starts_with("cut off"),
            "{outcome:?}"
        );
        assert!(pitfalls_from(r#"{"mistakes": ["#, "x", &[]).is_err());
        // The template's own worked example is not a pitfall of anything else.
        let (added, outcome) = pitfalls_from(
            r#"{"mistakes": [{"fact": "Water boils at 100 degrees.", "mistake": "Water boils at 50 degrees Celsius at sea level."}, {"fact": "Rust 1.0 was released in 2015.", "mistake": "Rust was first released in 1999."}]}"#,
            "Rust 1.0 was released in 2015.",
            &[],
        )?;
        assert_eq!(added.len(), 1, "{outcome:?}");
        assert!(
            outcome.skipped[0].reason.contains("copies the example"),
            "{outcome:?}"
        );
        Ok(())
    }

    #[test]
    fn the_schema_bounds_the_statements() {
        let s = pitfall_schema();
        let items = &s["properties"]["mistakes"];
        assert_eq!(items["minItems"], MIN_STATEMENTS);
        assert_eq!(items["maxItems"], MAX_STATEMENTS);
        let one = &items["items"]["properties"];
        assert_eq!(one["mistake"]["maxLength"], STATEMENT_MAX_CHARS);
        assert_eq!(one["fact"]["maxLength"], FACT_MAX_CHARS);
        let re = regex::Regex::new(STATEMENT_PATTERN).expect("valid pattern");
        assert!(re.is_match("Python strings use ASCII 7.0 only."));
        assert!(!re.is_match("It is. Then more."));
        assert!(!re.is_match("{{question}}"));
    }
}

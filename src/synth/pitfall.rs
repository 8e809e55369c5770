//! Pitfall stage: per generated item, a second short constrained generation copies three or four
//! facts of the reference answer and writes each changed into a mistake; each mistake becomes a
//! pitfall criterion "Claims that <mistake>" and each copied fact a positive criterion "States
//! that <fact>" (important), appended to the item's criteria. The facts spread the rubric over
//! the whole answer, where the one-pass generation often wrote three vague criteria about its
//! first sentence (issue 12: 8 of 27 rubric-validity rejections on 20 documents were "fewer than
//! 4 criteria left", 7 a margin under 0.1 over the answer's first sentence).
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
//! A fact is added, or skipped with the reason, by the same rules plus: at least
//! [`FACT_MIN_SUPPORT`] of its content words occur in the reference answer (it was copied, not
//! made up), [`FACT_MIN_WORDS`] to [`STATEMENT_MAX_WORDS`] words, and not within [`FACT_NEAR_DUPLICATE`] of a
//! criterion already there. Mistakes are added before facts.
//! A repair request (`repair_from`, for an item the reference check left without a pitfall or
//! with too few criteria) also skips a statement within those bars of a criterion the check
//! dropped.
//! At most [`MAX_CRITERIA`] criteria in all. Whether an added pitfall is actually false is not
//! decided here: the reference check (`judge::reference_check`) drops every pitfall the reference
//! answer makes, so the stage only runs with the check on.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use unicode_segmentation::UnicodeSegmentation;

use crate::judge::criterion_check::{check_criterion_as, content_words};
use crate::judge::rubric_gen::{GeneratedCriterion, MAX_CRITERIA};
use crate::judge::Category;
use crate::synth::filters::{word_jaccard, NEAR_DUPLICATE_CRITERIA};

/// Fewest and most statements the schema asks for.
/// (Three or four since issue 12's rerun: with two or three, 11 of 15 items rejected for "no
/// pitfall" on 20 documents had had one or two added, all of which the reference check dropped.)
pub const MIN_STATEMENTS: usize = 3;
pub const MAX_STATEMENTS: usize = 4;
/// Longest mistake, in characters: as long as a fact, so that a long fact's changed copy is not
/// cut off (at 150, 23 of 92 skipped mistakes were cut); [`STATEMENT_MAX_WORDS`] bounds the
/// criterion.
pub const STATEMENT_MAX_CHARS: usize = 200;
/// Longest copied fact, in characters.
pub const FACT_MAX_CHARS: usize = 200;
/// Weight of an added pitfall (the pitfall range is 5-10; a changed fact is a clear mistake).
pub const PITFALL_WEIGHT: i64 = 7;
/// Weight of an added fact criterion (an important point: the model picked it as a fact of the
/// answer; the one-pass generation's essentials keep the top weights).
pub const FACT_WEIGHT: i64 = 6;
/// Longest added criterion, in words ("States that" / "Claims that" included; the
/// rubric-structure filter rejects criteria over 30 words as compound).
pub const STATEMENT_MAX_WORDS: usize = 28;
/// Fewest words of a copied fact ("reStructuredText syntax." became a criterion once).
pub const FACT_MIN_WORDS: usize = 4;
/// Share of a fact's content words that must occur in the reference answer (it was copied, not
/// invented).
pub const FACT_MIN_SUPPORT: f64 = 0.8;
/// A fact this close (word Jaccard) to a criterion already there is not added: stricter than the
/// rubric's near-duplicate rule, so that one point is not counted twice in other words.
pub const FACT_NEAR_DUPLICATE: f64 = 0.6;
/// Requests per item at most: the first greedy, the others sampled, each only for an item the
/// earlier ones gave no mistake (on 50 documents with the 1.5B model, one greedy request left 20
/// of 35 "no pitfall" items without any: every mistake copied the answer).
pub const PITFALL_ATTEMPTS: usize = 3;
/// Requests of the repair round at most (sampled; the second only when the first gave no
/// pitfall), for an item the reference check left without a pitfall or with too few criteria.
pub const REPAIR_ATTEMPTS: usize = 2;
/// Token budget of one request (four facts and mistakes of up to about 50 tokens each, and the
/// JSON around them).
pub const PITFALL_MAX_TOKENS: usize = 480;
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
    /// Copied facts appended as positive criteria ("States that <fact>").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<String>,
    /// Facts not added, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_facts: Vec<SkippedStatement>,
    /// The reference answer with the added mistakes in place of their facts ([`corrupt`]):
    /// the degraded answer of the rubric-discrimination filter when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupted: Option<String>,
    /// Why the last attempt gave the item nothing (engine error, output not of the schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests made for the item (see [`PITFALL_ATTEMPTS`]).
    #[serde(default)]
    pub attempts: usize,
    /// The repair round, when the reference check left the item without a pitfall or with too
    /// few criteria: why it ran (the check's verdict) and what its requests did. Its `added` and
    /// `facts` went into the rubric that the check then judged again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Box<Repair>>,
}

/// One repair round of the pitfall stage (see [`PitfallOutcome::repair`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    /// The reference check's verdict that started it.
    pub reason: String,
    /// Whether the item was judged again: with what the repair added, the rubric could pass
    /// the check (a pitfall, an essential or important criterion, enough criteria). When not,
    /// the item stays rejected for `reason` and the additions were never judged.
    pub judged_again: bool,
    #[serde(flatten)]
    pub outcome: PitfallOutcome,
}

/// A statement the stage did not add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedStatement {
    pub text: String,
    pub reason: String,
}

/// `"The sky is green."` -> `"Claims that the sky is green."`: a leading article or pronoun is
/// lowercased, and so is a capitalised first word that `context` (the reference answer) writes in
/// lower case and never capitalises inside a sentence ("High school students" when the answer
/// says "high school"); anything else (a name, `sorted()`, a number) is kept as written.
pub fn as_claim(statement: &str, context: &str) -> String {
    with_verb("Claims that", statement, context)
}

/// `"The sky is blue."` -> `"States that the sky is blue."`: a copied fact as a positive
/// criterion, lowercased as in [`as_claim`].
pub fn as_fact(statement: &str, context: &str) -> String {
    with_verb("States that", statement, context)
}

/// Whether `context` writes `word` (capitalised) in lower case somewhere and never capitalised
/// after the first word of a sentence: then it is a common word, not a name.
fn common_in(word: &str, context: &str) -> bool {
    let mut chars = word.chars();
    let capitalised = chars.next().is_some_and(char::is_uppercase)
        && chars.clone().next().is_some()
        && chars.all(|c| c.is_lowercase());
    if !capitalised {
        return false;
    }
    let lower = word.to_lowercase();
    let mut seen_lower = false;
    let mut sentence_start = true;
    for token in context.split_whitespace() {
        let w = token.trim_matches(|c: char| !c.is_alphanumeric());
        if w == lower {
            seen_lower = true;
        } else if w == word && !sentence_start {
            return false;
        }
        sentence_start = token.ends_with(['.', '!', '?', ':']);
    }
    seen_lower
}

/// Words that open a clause, not a sentence: a statement starting with one was cut out of a
/// longer sentence ("while also forcing three fumbles" became a criterion once).
const FRAGMENT_OPENERS: [&str; 13] = [
    "while", "and", "but", "or", "which", "whereas", "although", "though", "because", "so",
    "whose", "who", "whom",
];

/// Why `statement` is a fragment of a sentence rather than one, if it is: it opens with a
/// clause word, or with a word in lower case ("makes reports private.", cut out of a list in
/// the answer, became "Claims that makes reports private."; a sentence starts with a capital,
/// a number or code, and mixed-case words such as "iPhone" are left alone).
fn fragment(statement: &str) -> Option<String> {
    let first = statement.split_whitespace().next()?;
    let bare = first.trim_matches(|c: char| !c.is_alphanumeric());
    let word = bare.to_lowercase();
    if FRAGMENT_OPENERS.contains(&word.as_str()) {
        return Some(format!(
            "starts with '{word}': a fragment of a sentence, not a statement"
        ));
    }
    let plain_word = first.chars().next().is_some_and(char::is_alphabetic);
    (plain_word && !bare.is_empty() && bare.chars().all(char::is_lowercase)).then(|| {
        format!("starts with '{bare}' in lower case: a piece of a sentence, not a statement")
    })
}

/// `verb` and `statement`, its leading article or pronoun (or a common word of `context`, see
/// [`as_claim`]) lowercased, ending in one period.
fn with_verb(verb: &str, statement: &str, context: &str) -> String {
    let s = statement.trim().trim_end_matches('.').trim_end();
    const LOWER: [&str; 34] = [
        "The", "A", "An", "This", "These", "That", "Those", "It", "Its", "They", "Their", "Some",
        "Each", "Every", "All", "Most", "Many", "Both", "No", "There", "When", "If", "In", "Only",
        "You", "Your", "We", "It's", "There's", "That's", "He", "She", "His", "Her",
    ];
    let first = s.split_whitespace().next().unwrap_or_default();
    let body = if LOWER.contains(&first)
        || common_in(
            first.trim_end_matches(|c: char| !c.is_alphanumeric()),
            context,
        ) {
        let mut c = s.chars();
        let head: String = c
            .next()
            .map(|h| h.to_lowercase().collect())
            .unwrap_or_default();
        format!("{head}{}", c.as_str())
    } else {
        s.to_string()
    };
    format!("{verb} {body}.")
}

/// The reference `answer` with each `(fact, mistake)` pair's sentence replaced by its mistake:
/// the sentence of the answer that contains the fact word for word (a final period aside) gives
/// way to the mistake, which the prompt asks to be that sentence with the fact changed (replacing
/// only the fact's words doubled the rest of the sentence when the fact was its first half: 5 of
/// 62 corrupted answers on 50 documents). `None` when no fact is in the answer.
pub fn corrupt(answer: &str, pairs: &[(String, String)]) -> Option<String> {
    let mut out = answer.to_string();
    let mut changed = false;
    for (fact, mistake) in pairs {
        let fact = fact.trim().trim_end_matches('.').trim_end();
        let mistake = mistake.trim().trim_end_matches('.').trim_end();
        if fact.is_empty() || mistake.is_empty() || fact == mistake {
            continue;
        }
        let Some(at) = out.find(fact) else { continue };
        let mut start = 0;
        let mut span = None;
        for sentence in out.split_sentence_bounds() {
            let end = start + sentence.len();
            if at < end {
                let body = sentence.trim_end();
                span = Some((start, end, sentence[body.len()..].to_string()));
                break;
            }
            start = end;
        }
        if let Some((start, end, tail)) = span {
            out.replace_range(start..end, &format!("{mistake}.{tail}"));
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The criteria an item has and the ones this stage adds to it, with the checks every added
/// statement shares (after its own): the criterion check, no near duplicate, room left.
struct Additions<'r> {
    there: Vec<String>,
    /// Criteria the reference check dropped earlier (a repair request must not bring them back).
    dropped: &'r [String],
    room: usize,
    criteria: Vec<GeneratedCriterion>,
}

impl<'r> Additions<'r> {
    fn new(existing: &[GeneratedCriterion], dropped: &'r [String]) -> Self {
        Additions {
            there: existing.iter().map(|c| c.text.clone()).collect(),
            dropped,
            room: MAX_CRITERIA.saturating_sub(existing.len()),
            criteria: Vec::new(),
        }
    }

    /// Why `text` cannot be added, if it cannot: it fails the criterion check for `category`,
    /// it is within `near_limit` (word Jaccard) of a criterion already there (`duplicate` says
    /// how) or of one the reference check dropped, or the item is full.
    fn refusal(
        &self,
        text: &str,
        category: Category,
        near_limit: f64,
        duplicate: &str,
    ) -> Option<String> {
        let nearest = |list: &[String]| {
            list.iter()
                .map(|t| word_jaccard(t, text))
                .fold(0.0, f64::max)
        };
        let near = nearest(&self.there);
        let near_dropped = nearest(self.dropped);
        if let Err(problem) = check_criterion_as(text, category) {
            Some(problem.to_string())
        } else if near >= near_limit {
            Some(format!("{duplicate} (word Jaccard {near:.2})"))
        } else if near_dropped >= near_limit {
            Some(format!(
                "the reference check dropped it before (word Jaccard {near_dropped:.2})"
            ))
        } else if self.room == 0 {
            Some(format!("the item already has {MAX_CRITERIA} criteria"))
        } else {
            None
        }
    }

    fn add(&mut self, text: &str, category: Category, weight: i64) {
        self.room -= 1;
        self.there.push(text.to_string());
        self.criteria.push(GeneratedCriterion {
            text: text.to_string(),
            category,
            weight,
        });
    }
}

/// Parses the stage's output and decides which statements become criteria of an item with
/// `existing` criteria and reference answer `answer`. `Err` when the output is not of the schema.
pub fn pitfalls_from(
    text: &str,
    answer: &str,
    existing: &[GeneratedCriterion],
) -> Result<(Vec<GeneratedCriterion>, PitfallOutcome), String> {
    repair_from(text, answer, existing, &[])
}

/// [`pitfalls_from`] for a repair request: also skips a statement within the same word-Jaccard
/// bars of a criterion in `dropped` (the texts the reference check took out of the item).
pub fn repair_from(
    text: &str,
    answer: &str,
    existing: &[GeneratedCriterion],
    dropped: &[String],
) -> Result<(Vec<GeneratedCriterion>, PitfallOutcome), String> {
    let out: Output = serde_json::from_str(text.trim())
        .map_err(|e| format!("pitfall output is not JSON of the schema ({e})"))?;
    let answer_words: HashSet<String> = content_words(answer).into_iter().collect();
    let mut adds = Additions::new(existing, dropped);
    let mut outcome = PitfallOutcome::default();
    let mut changes = Vec::new();
    for m in &out.mistakes {
        let s = m.mistake.trim().to_string();
        let words = content_words(&s);
        let claim = as_claim(&s, answer);
        let fact_words: HashSet<String> = content_words(&m.fact).into_iter().collect();
        let mistake_words: HashSet<&String> = words.iter().collect();
        let skip = if words.is_empty() {
            Some("no content words".to_string())
        } else if m.mistake.chars().count() >= STATEMENT_MAX_CHARS {
            Some(format!(
                "cut off at the {STATEMENT_MAX_CHARS}-character limit"
            ))
        } else if claim.split_whitespace().count() > STATEMENT_MAX_WORDS {
            Some(format!("longer than {STATEMENT_MAX_WORDS} words"))
        } else if let Some(why) = fragment(&s) {
            Some(why)
        } else if words.iter().all(|w| answer_words.contains(w))
            || mistake_words == fact_words.iter().collect()
        {
            Some("every content word is in the reference answer: no fact was changed".to_string())
        } else {
            adds.refusal(
                &claim,
                Category::Pitfall,
                NEAR_DUPLICATE_CRITERIA,
                "near duplicate of a criterion already there",
            )
        };
        match skip {
            Some(reason) => outcome.skipped.push(SkippedStatement { text: s, reason }),
            None => {
                adds.add(&claim, Category::Pitfall, PITFALL_WEIGHT);
                outcome.added.push(claim);
                changes.push((m.fact.clone(), m.mistake.clone()));
            }
        }
    }
    // The copied facts, as positive criteria: the reference answer's own points, one sentence
    // each, so the rubric checks what a correct response states across the whole answer.
    for m in &out.mistakes {
        let fact = m.fact.trim();
        let text = as_fact(fact, answer);
        let words = content_words(fact);
        let supported = words.iter().filter(|w| answer_words.contains(*w)).count();
        let skip = if words.is_empty() {
            Some("no content words".to_string())
        } else if fact.split_whitespace().count() < FACT_MIN_WORDS {
            Some(format!(
                "fewer than {FACT_MIN_WORDS} words: not a statement"
            ))
        } else if fact.chars().count() >= FACT_MAX_CHARS {
            Some(format!("cut off at the {FACT_MAX_CHARS}-character limit"))
        } else if text.split_whitespace().count() > STATEMENT_MAX_WORDS {
            Some(format!("longer than {STATEMENT_MAX_WORDS} words"))
        } else if let Some(why) = fragment(fact) {
            Some(why)
        } else if (supported as f64) < FACT_MIN_SUPPORT * words.len() as f64 {
            Some(format!(
                "{supported} of its {} content words are in the reference answer: not a copied fact",
                words.len()
            ))
        } else {
            adds.refusal(
                &text,
                Category::Important,
                FACT_NEAR_DUPLICATE,
                "a criterion already checks it",
            )
        };
        match skip {
            Some(reason) => outcome.skipped_facts.push(SkippedStatement {
                text: fact.to_string(),
                reason,
            }),
            None => {
                adds.add(&text, Category::Important, FACT_WEIGHT);
                outcome.facts.push(text);
            }
        }
    }
    outcome.corrupted = corrupt(answer, &changes);
    Ok((adds.criteria, outcome))
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
            as_claim("The sky is green.", ""),
            "Claims that the sky is green."
        );
        assert_eq!(
            as_claim("Python strings use ASCII", ""),
            "Claims that Python strings use ASCII."
        );
        assert_eq!(
            as_claim("`sorted()` sorts in place.", ""),
            "Claims that `sorted()` sorts in place."
        );
        assert_eq!(as_claim("It is 64-bit.", ""), "Claims that it is 64-bit.");
        assert_eq!(
            as_claim("Each UUID has 256 bits.", ""),
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
        let (added, outcome) =
            pitfalls_from(&text, answer, &[crit("Names the RFC that defines it.")])?;
        // One pitfall, then the copied fact once (the same fact again is a duplicate).
        assert_eq!(added.len(), 2, "{outcome:?}");
        assert_eq!(added[1].text, "States that a UUID is a 128-bit number.");
        assert_eq!(outcome.facts, vec![added[1].text.clone()]);
        assert_eq!(outcome.skipped_facts.len(), 2, "{outcome:?}");
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
    fn a_repair_does_not_bring_back_what_the_reference_check_dropped() -> Result<(), String> {
        let answer = "A UUID is a 128-bit number used to identify objects.";
        let text = r#"{"mistakes": [
            {"fact": "A UUID is a 128-bit number.", "mistake": "A UUID is a 64-bit number."},
            {"fact": "A UUID is used to identify objects.", "mistake": "A UUID is used to encrypt objects."}]}"#;
        let dropped = ["Claims that a UUID is a 64-bit number.".to_string()];
        let (added, outcome) = repair_from(
            text,
            answer,
            &[crit("Names the RFC that defines it.")],
            &dropped,
        )?;
        assert_eq!(
            outcome.added,
            vec!["Claims that a UUID is used to encrypt objects.".to_string()]
        );
        assert_eq!(outcome.skipped.len(), 1, "{outcome:?}");
        assert!(
            outcome.skipped[0]
                .reason
                .starts_with("the reference check dropped it before"),
            "{outcome:?}"
        );
        // Without the dropped list, the same output adds both pitfalls.
        let (all, _) = pitfalls_from(text, answer, &[crit("Names the RFC that defines it.")])?;
        assert_eq!(all.len(), added.len() + 1);
        Ok(())
    }

    #[test]
    fn additions_stop_at_the_criteria_cap_and_bad_output_is_an_error() -> Result<(), String> {
        let existing: Vec<_> = (0..MAX_CRITERIA - 1)
            .map(|i| crit(&format!("States fact {i}.")))
            .collect();
        // (Not "boils at 50 degrees": that is 3 of 4 words of the template's own example.)
        let text = r#"{"mistakes": [{"fact": "Ethanol boils at 78 degrees.", "mistake": "Ethanol boils at 90 degrees."}, {"fact": "Ice melts at 0 degrees.", "mistake": "Ice melts at 30 degrees."}]}"#;
        let (added, outcome) = pitfalls_from(text, "Ethanol boils at 78 degrees.", &existing)?;
        assert_eq!(added.len(), 1);
        assert!(outcome.skipped[0].reason.contains("already has"));
        // A mistake closed at the length limit is cut mid-sentence.
        let long = format!("Ethanol boils at 50 degrees {}", "and more ".repeat(20));
        let long = &long[..STATEMENT_MAX_CHARS];
        let text = format!(
            r#"{{"mistakes": [{{"fact": "Ethanol boils at 78 degrees.", "mistake": "{long}"}}]}}"#
        );
        let pitfalls = |added: &[GeneratedCriterion]| {
            added
                .iter()
                .filter(|c| c.category == Category::Pitfall)
                .count()
        };
        let (added, outcome) = pitfalls_from(&text, "Ethanol boils at 78 degrees.", &[])?;
        assert_eq!(pitfalls(&added), 0, "{outcome:?}");
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
        assert_eq!(pitfalls(&added), 1, "{outcome:?}");
        assert!(
            outcome.skipped[0].reason.contains("copies the example"),
            "{outcome:?}"
        );
        Ok(())
    }

    #[test]
    fn copied_facts_become_positive_criteria_and_others_are_skipped_with_a_reason(
    ) -> Result<(), String> {
        let answer = "Aspirin thins the blood by blocking platelets. It should not be given to \
                      children with a viral illness because of Reye syndrome.";
        let text = r#"{"mistakes": [
            {"fact": "Aspirin thins the blood by blocking platelets.", "mistake": "Aspirin thickens the blood by activating platelets."},
            {"fact": "It should not be given to children with a viral illness.", "mistake": "It is the best choice for children with a viral illness."},
            {"fact": "Aspirin cures migraines in every patient within an hour.", "mistake": "Aspirin never helps migraines."}]}"#;
        let existing = [crit(
            "States that aspirin should not be given to children with a viral illness.",
        )];
        let (added, outcome) = pitfalls_from(text, answer, &existing)?;
        let facts: Vec<&GeneratedCriterion> = added
            .iter()
            .filter(|c| c.category == Category::Important)
            .collect();
        // Only an article or pronoun is lowercased: a word that may be a name stays as written.
        assert_eq!(facts.len(), 1, "{outcome:?}");
        assert_eq!(
            facts[0].text,
            "States that Aspirin thins the blood by blocking platelets."
        );
        assert_eq!(facts[0].weight, FACT_WEIGHT);
        assert_eq!(outcome.facts, vec![facts[0].text.clone()]);
        // Facts come after the mistakes, which are pitfalls.
        assert_eq!(added[0].category, Category::Pitfall);
        let reasons: Vec<&str> = outcome
            .skipped_facts
            .iter()
            .map(|s| s.reason.as_str())
            .collect();
        assert!(
            reasons[0].starts_with("a criterion already checks it"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("not a copied fact"), "{reasons:?}");
        Ok(())
    }

    #[test]
    fn mistakes_are_spliced_into_the_answer_in_place_of_their_facts() -> Result<(), String> {
        let answer = "A UUID is a 128-bit number. It is written as 32 hexadecimal digits.";
        let pair = |f: &str, m: &str| (f.to_string(), m.to_string());
        assert_eq!(
            corrupt(
                answer,
                &[
                    pair("A UUID is a 128-bit number.", "A UUID is a 64-bit number."),
                    pair(
                        "It is written as 32 hexadecimal",
                        "It is written as 16 letters."
                    ),
                ]
            )
            .as_deref(),
            Some("A UUID is a 64-bit number. It is written as 16 letters.")
        );
        // A fact that is the first half of its sentence: the whole sentence gives way.
        assert_eq!(
            corrupt(
                "A UUID is a 128-bit number used to identify objects. It is unique.",
                &[pair(
                    "A UUID is a 128-bit number.",
                    "A UUID is a 64-bit number used to identify objects."
                )]
            )
            .as_deref(),
            Some("A UUID is a 64-bit number used to identify objects. It is unique.")
        );
        // A fact not in the answer word for word changes nothing.
        assert_eq!(
            corrupt(
                answer,
                &[pair("UUIDs have 128 bits.", "UUIDs have 64 bits.")]
            ),
            None
        );
        // Through the stage: only added mistakes are spliced in.
        let text = r#"{"mistakes": [
            {"fact": "A UUID is a 128-bit number.", "mistake": "A UUID is a 64-bit number."},
            {"fact": "It is written as 32 hexadecimal digits.", "mistake": "It is written as 32 hexadecimal digits."}]}"#;
        let (_, outcome) = pitfalls_from(text, answer, &[])?;
        assert_eq!(
            outcome.corrupted.as_deref(),
            Some("A UUID is a 64-bit number. It is written as 32 hexadecimal digits.")
        );
        Ok(())
    }

    #[test]
    fn fragments_of_sentences_are_skipped_as_facts_and_as_mistakes() -> Result<(), String> {
        let answer = "He led the team with 11 sacks, while also forcing three fumbles. \
            It gives back, makes its reports public every single year and uses `sorted()`.";
        let text = r#"{"mistakes": [
            {"fact": "while also forcing three fumbles.", "mistake": "while also forcing four fumbles."},
            {"fact": "He led the team with 11 sacks.", "mistake": "He led the team with 10 sacks."},
            {"fact": "makes its reports public every single year", "mistake": "makes its reports private every single year"}]}"#;
        let (added, outcome) = pitfalls_from(text, answer, &[])?;
        let texts: Vec<&str> = added.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Claims that he led the team with 10 sacks.",
                "States that he led the team with 11 sacks."
            ]
        );
        assert!(outcome.skipped[0].reason.starts_with("starts with 'while'"));
        assert!(outcome.skipped_facts[0]
            .reason
            .starts_with("starts with 'while'"));
        let lower = "starts with 'makes' in lower case";
        assert!(outcome.skipped[1].reason.starts_with(lower), "{outcome:?}");
        assert!(outcome.skipped_facts[1].reason.starts_with(lower));
        assert_eq!(fragment("`sorted()` sorts in place."), None);
        assert_eq!(fragment("iPhone sales rose."), None);
        assert_eq!(fragment("3 of 4 cases."), None);
        assert_eq!(as_fact("It's a module.", ""), "States that it's a module.");
        Ok(())
    }

    #[test]
    fn a_first_word_the_answer_writes_in_lower_case_is_lowercased() {
        let answer = "Most high school students take algebra. Python is taught in high school.";
        assert_eq!(
            as_fact("High school students take algebra.", answer),
            "States that high school students take algebra."
        );
        // A name: capitalised inside a sentence of the answer, so it stays.
        assert_eq!(
            as_fact(
                "Python is taught in schools.",
                "It is python code, and Python is taught."
            ),
            "States that Python is taught in schools."
        );
        // A word the answer never writes in lower case stays as written.
        assert_eq!(
            as_claim("Two classes exist.", "Exceptions come in 2 kinds."),
            "Claims that Two classes exist."
        );
        assert_eq!(
            as_claim("Two classes exist.", "There are two classes."),
            "Claims that two classes exist."
        );
        // All capitals (an acronym) is never lowercased.
        assert_eq!(
            as_claim("UUID is 64-bit.", "a uuid is 128-bit"),
            "Claims that UUID is 64-bit."
        );
    }

    #[test]
    fn facts_read_as_statements() {
        assert_eq!(
            as_fact("The sky is blue.", ""),
            "States that the sky is blue."
        );
        assert_eq!(
            as_fact("Python strings are Unicode", ""),
            "States that Python strings are Unicode."
        );
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

//! The filters every generated item goes through, each recording a [`FilterVerdict`]:
//!
//! - self-containment, rules ([`SelfContainmentRules`]): no reference to material the reader
//!   cannot see ("according to the text/passage/document/article", "this study", "the author",
//!   "the table above", "mentioned above", ...); no open-choice question ("What is a common
//!   format …", "What is one of the methods …": many answers are right, and a rubric written
//!   from one passage grades only the one it names); no placeholder in place of the subject
//!   ("XYZ Corporation");
//! - self-containment, model: P(yes) that the question is understood without a document;
//! - leakage ([`leakage`]): the answer is not given away in the question, by normalised n-gram
//!   overlap (lowercased words, stopwords removed; trigrams, or single words for answers of fewer
//!   than three content words);
//! - faithfulness, model: P(yes) that the reference answer is supported by the chunk;
//! - rubric validity, structure ([`rubric_structure`]): count, weights, atomic criteria, no
//!   near-duplicate criteria, at least one positive criterion; then, through the judge, the
//!   reference answer scores at least a threshold and a worse answer scores lower by a margin
//!   (discriminativeness): the reference with the pitfall stage's mistakes in place of their
//!   facts ([`Degradation::Corrupted`]) where there is one, else the reference cut short
//!   ([`degrade`]). The cut answer was the only one until issue 12's rerun showed it is often as
//!   good as the reference (a first sentence that holds the whole answer), so rubrics were
//!   rejected for scoring it nearly as high, which they should.
//!
//! Model checks read P(yes) from the next-token log-probabilities of the verdict tokens, exactly
//! as the judge's logprob mode ([`AnswerTokens`]): one forward each, no decoding, nothing to
//! parse.

use std::collections::HashSet;

use regex::Regex;
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::judge::rubric_gen::{MAX_CRITERIA, MAX_WEIGHT, MIN_CRITERIA};
use crate::judge::{Category, RubricItem};

/// Names of the filters, in the order of the funnel.
pub const DECONTAMINATION: &str = "decontamination";
pub const SELF_CONTAINMENT_RULES: &str = "self_containment_rules";
pub const SELF_CONTAINMENT_MODEL: &str = "self_containment_model";
pub const LEAKAGE: &str = "leakage";
pub const FAITHFULNESS: &str = "faithfulness";
pub const RUBRIC_STRUCTURE: &str = "rubric_structure";
pub const RUBRIC_REFERENCE_CHECK: &str = "rubric_reference_check";
pub const RUBRIC_REFERENCE: &str = "rubric_reference_reward";
pub const RUBRIC_DISCRIMINATION: &str = "rubric_discrimination";

/// One filter's outcome on one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterVerdict {
    pub filter: String,
    pub passed: bool,
    /// The measured value (P(yes), overlap, reward, reward margin), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The threshold the score was held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub reason: String,
}

impl FilterVerdict {
    pub fn pass(filter: &str, reason: impl Into<String>) -> Self {
        FilterVerdict {
            filter: filter.into(),
            passed: true,
            score: None,
            threshold: None,
            reason: reason.into(),
        }
    }

    pub fn fail(filter: &str, reason: impl Into<String>) -> Self {
        FilterVerdict {
            passed: false,
            ..Self::pass(filter, reason)
        }
    }

    /// Passed when `score >= threshold` (or `<=` when `at_most`).
    pub fn scored(filter: &str, score: f64, threshold: f64, at_most: bool, what: &str) -> Self {
        let passed = if at_most {
            score <= threshold
        } else {
            score >= threshold
        };
        let cmp = match (passed, at_most) {
            (true, false) => ">=",
            (false, false) => "<",
            (true, true) => "<=",
            (false, true) => ">",
        };
        FilterVerdict {
            filter: filter.into(),
            passed,
            score: Some(score),
            threshold: Some(threshold),
            reason: format!("{what} {score:.3} {cmp} {threshold}"),
        }
    }
}

/// Phrases that point at material the reader of the question cannot see.
const DEICTIC_PATTERNS: [&str; 10] = [
    r"\b(according to|based on|as (stated|described|mentioned|shown|discussed|explained|noted) in|in light of|from|in|per) (the|this|that|these|above|given|provided) (text|passage|document|article|excerpt|paragraph|material|context|reading|source|report|section|chapter|table|figure|study|abstract|paper|snippet|page|content|information|data)\b",
    r"\b(this|the present|the above|the given|the provided|the current) (study|article|passage|text|document|excerpt|paper|report|paragraph|table|figure|abstract|section|material|snippet)\b",
    r"\bthe (author|authors|writer|researchers|investigators)\b",
    r"\b(mentioned|described|stated|shown|given|listed|discussed|cited|provided) (above|below|earlier|previously)\b",
    r"\b(above|following|preceding|previous) (text|passage|paragraph|section|table|figure|example|excerpt|list)\b",
    r"\b(in|from) the (given|provided|above|following) (information|context|text|passage|data)\b",
    r"\bthe (text|passage|document|article|excerpt|paragraph)(\s*[?,.]|\s*$| (says?|states?|describes?|mentions?|suggests?|discusses|explains?|argues?|provides?|gives?|lists?|contains?|shows?|notes?|outlines?|presents?)\b)",
    r"\b(we|our) (study|results|findings|data|analysis)\b",
    // "the primary objective of the study", "the participants of the trial": a study the reader
    // was never told about ("the study of fungi" is a field, not a reference, and stays).
    r"\b(of|by|for|during|after|within|throughout) the (study|trial|survey|experiment|investigation|analysis|research)\b",
    r"\bthe (study|trial|survey|experiment|investigation)('s|\s*[?,.]|\s*$| (find|found|finds|show|showed|shows|suggests?|suggested|concludes?|concluded|reports?|reported|aims?|aimed|uses?|used|includes?|included|examines?|examined|investigates?|investigated|measures?|measured|compares?|compared)\b)",
];

/// Questions that ask for any one member of a class: "What is a common format …", "What is one
/// of the methods …", "Give an example of …". Many answers are right, but the rubric is written
/// from one passage and names one of them, so a correct response can fail it (issue 12: "What is
/// a common format used to organize documentation?" from the corpus README, answerable only with
/// that file in view). Only the question's opening is read: "What is fluorodeoxyglucose, a
/// commonly used tracer?" names its subject and stays.
const OPEN_CHOICE_PATTERN: &str = r"^\W*(((what|which)(\s+\w+)?\s+(is|was)|name|give|describe|mention)\s+((a|an)\s+(common|typical|popular|well[- ]known|widely[- ]used|commonly[- ]used|frequently[- ]used|standard|possible|notable)\b|(a|an|one)\s+example\s+of\b|one\s+of\s+(the|its|their|his|her)\b|one\s+(common|typical|popular|well[- ]known)\b))";

/// A placeholder where the subject should be named: the writer did not know (or hid) which
/// company it was, so the reader cannot know either.
const PLACEHOLDER_PATTERN: &str = r"\bXYZ\b(\s+(Corp(oration)?|Inc|Ltd|Co|Company|Group|Holdings|plc|LLC)\b)?|\b(ABC|Acme)\s+(Corp(oration)?|Inc|Ltd|Co|Company|Group|Holdings|plc|LLC)\b|\bCompany\s+[A-Z]\b";

/// The self-containment rules, compiled.
pub struct SelfContainmentRules {
    patterns: Vec<Regex>,
    open_choice: Regex,
    placeholder: Regex,
}

impl Default for SelfContainmentRules {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfContainmentRules {
    pub fn new() -> Self {
        SelfContainmentRules {
            patterns: DEICTIC_PATTERNS
                .iter()
                .map(|p| Regex::new(&format!("(?i){p}")).expect("static regex"))
                .collect(),
            open_choice: Regex::new(&format!("(?i){OPEN_CHOICE_PATTERN}")).expect("static regex"),
            // Case matters: "abc" or "company x" in running text is no placeholder.
            placeholder: Regex::new(PLACEHOLDER_PATTERN).expect("static regex"),
        }
    }

    /// The question: no reference to unseen material, no open choice, no placeholder.
    pub fn check(&self, question: &str) -> FilterVerdict {
        let v = self.check_references(question);
        if !v.passed {
            return v;
        }
        if let Some(m) = self.open_choice.find(question) {
            return FilterVerdict::fail(
                SELF_CONTAINMENT_RULES,
                format!(
                    "open choice: {:?} has many right answers, the rubric grades one",
                    m.as_str().trim()
                ),
            );
        }
        if let Some(m) = self.placeholder.find(question) {
            return FilterVerdict::fail(
                SELF_CONTAINMENT_RULES,
                format!("placeholder in place of the subject: {:?}", m.as_str()),
            );
        }
        v
    }

    /// Any text: no reference to material the reader cannot see.
    fn check_references(&self, text: &str) -> FilterVerdict {
        for p in &self.patterns {
            if let Some(m) = p.find(text) {
                return FilterVerdict::fail(
                    SELF_CONTAINMENT_RULES,
                    format!("refers to unseen material: {:?}", m.as_str()),
                );
            }
        }
        FilterVerdict::pass(SELF_CONTAINMENT_RULES, "no reference to unseen material")
    }

    /// The question, then the reference answer: an answer that cites "the passage" is no
    /// reference a reader of the question can use (issue 12: "The passage provides a detailed
    /// description of the `list` data type …" was accepted).
    pub fn check_item(&self, question: &str, answer: &str) -> FilterVerdict {
        let q = self.check(question);
        if !q.passed {
            return q;
        }
        // The answer may well say "a common format is …": only references count against it.
        let a = self.check_references(answer);
        if !a.passed {
            return FilterVerdict::fail(
                SELF_CONTAINMENT_RULES,
                format!("the reference answer {}", a.reason),
            );
        }
        FilterVerdict::pass(
            SELF_CONTAINMENT_RULES,
            "no reference to unseen material in the question or the answer",
        )
    }
}

/// Lowercased content words (the judge's list of stopwords dropped), shared with the criterion
/// check.
pub use crate::judge::criterion_check::content_words;

/// The share of the answer's n-grams that appear in the question (see the module docs), in
/// [0, 1]. 0 for an answer without content words.
pub fn answer_overlap(question: &str, answer: &str) -> f64 {
    let a = content_words(answer);
    let q = content_words(question);
    if a.is_empty() {
        return 0.0;
    }
    let n = if a.len() < 3 { 1 } else { 3 };
    let grams = |w: &[String]| -> Vec<String> { w.windows(n).map(|g| g.join(" ")).collect() };
    let qg: HashSet<String> = grams(&q).into_iter().collect();
    let ag = grams(&a);
    if ag.is_empty() {
        return 0.0;
    }
    ag.iter().filter(|g| qg.contains(*g)).count() as f64 / ag.len() as f64
}

/// Leakage verdict: overlap at most `max_overlap`.
pub fn leakage(question: &str, answer: &str, max_overlap: f64) -> FilterVerdict {
    FilterVerdict::scored(
        LEAKAGE,
        answer_overlap(question, answer),
        max_overlap,
        true,
        "share of the answer's n-grams found in the question",
    )
}

/// Structure checks of a generated rubric (beyond what the schema and `to_item` enforce): 3-12
/// criteria (the schema asks for 4 or more; `to_item` may have dropped one), weights, atomic
/// and distinct criteria, at least one essential or important criterion and one pitfall.
pub fn rubric_structure(item: &RubricItem, max_criterion_words: usize) -> FilterVerdict {
    let n = item.criteria.len();
    if !(MIN_CRITERIA..=MAX_CRITERIA).contains(&n) {
        return FilterVerdict::fail(
            RUBRIC_STRUCTURE,
            format!("{n} criteria (need {MIN_CRITERIA}-{MAX_CRITERIA})"),
        );
    }
    let sentence_join = Regex::new(r"[.!?]\s+\p{Lu}").expect("static regex");
    for c in &item.criteria {
        let w = c.weight.abs();
        if !c.weight.is_finite() || !(1.0..=MAX_WEIGHT as f64).contains(&w) {
            return FilterVerdict::fail(
                RUBRIC_STRUCTURE,
                format!(
                    "criterion {}: weight {} outside 1-{MAX_WEIGHT}",
                    c.id, c.weight
                ),
            );
        }
        let words = c.text.split_whitespace().count();
        let real_words = c
            .text
            .split_whitespace()
            .filter(|w| w.chars().filter(|ch| ch.is_alphabetic()).count() >= 2)
            .count();
        let visible: Vec<char> = c.text.chars().filter(|ch| !ch.is_whitespace()).collect();
        let letters = visible.iter().filter(|ch| ch.is_alphanumeric()).count();
        if real_words < 2 || (letters as f64) < 0.7 * visible.len() as f64 {
            return FilterVerdict::fail(
                RUBRIC_STRUCTURE,
                format!(
                    "criterion {} is not a checkable statement: {:?}",
                    c.id, c.text
                ),
            );
        }
        if words > max_criterion_words || sentence_join.is_match(&c.text) || c.text.contains(';') {
            return FilterVerdict::fail(
                RUBRIC_STRUCTURE,
                format!(
                    "criterion {} is not atomic ({words} words, several statements): {:?}",
                    c.id, c.text
                ),
            );
        }
    }
    for (i, a) in item.criteria.iter().enumerate() {
        for b in &item.criteria[i + 1..] {
            let jaccard = word_jaccard(&a.text, &b.text);
            if jaccard >= NEAR_DUPLICATE_CRITERIA {
                return FilterVerdict::fail(
                    RUBRIC_STRUCTURE,
                    format!(
                        "criteria {} and {} are near duplicates (word Jaccard {jaccard:.2})",
                        a.id, b.id
                    ),
                );
            }
        }
    }
    if !item
        .criteria
        .iter()
        .any(|c| matches!(c.category, Category::Essential | Category::Important))
    {
        return FilterVerdict::fail(RUBRIC_STRUCTURE, "no essential or important criterion");
    }
    // A rubric without a pitfall cannot penalise a confidently wrong response (issue 12).
    if !item
        .criteria
        .iter()
        .any(|c| c.category == Category::Pitfall)
    {
        return FilterVerdict::fail(RUBRIC_STRUCTURE, "no pitfall criterion");
    }
    FilterVerdict::pass(
        RUBRIC_STRUCTURE,
        format!("{n} atomic, distinct criteria with weights in 1-{MAX_WEIGHT}"),
    )
}

/// `Err(reason)` when a generated text is not prose a reader could use: fewer than `min_words`
/// words of two or more letters, letters and digits under 70% of the visible characters, or
/// template braces (`{{`, `}}`) that a small model copies from the prompt.
pub fn well_formed(what: &str, text: &str, min_words: usize) -> Result<(), String> {
    let words = text
        .split_whitespace()
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count();
    let visible: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let alnum = visible.iter().filter(|c| c.is_alphanumeric()).count();
    if text.contains("{{") || text.contains("}}") {
        return Err(format!(
            "{what} is not well-formed: template braces in {text:?}"
        ));
    }
    if words < min_words || (alnum as f64) < 0.7 * visible.len() as f64 {
        return Err(format!(
            "{what} is not well-formed: {words} words, {alnum} of {} characters letters or digits",
            visible.len()
        ));
    }
    Ok(())
}

/// Word Jaccard (content words) at or above which two criteria of one rubric are near duplicates.
pub const NEAR_DUPLICATE_CRITERIA: f64 = 0.8;

/// Word Jaccard similarity of two texts' content words.
pub fn word_jaccard(a: &str, b: &str) -> f64 {
    let wa: HashSet<String> = content_words(a).into_iter().collect();
    let wb: HashSet<String> = content_words(b).into_iter().collect();
    let union = wa.union(&wb).count();
    if union == 0 {
        return 0.0;
    }
    wa.intersection(&wb).count() as f64 / union as f64
}

/// How a degraded answer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    /// Only the first sentence kept (the rest, and the facts in it, removed).
    FirstSentence,
    /// A one-sentence answer cut to its first half.
    Truncated,
    /// An answer too short to cut: replaced by a non-answer.
    NonAnswer,
    /// The reference answer with the pitfall stage's mistakes in place of the facts they change
    /// (`synth::pitfall::corrupt`): as long and fluent as the reference, but wrong, the answer
    /// a rubric for RL must score lower. Used instead of a cut answer whenever the stage wrote a
    /// mistake whose fact is in the answer word for word.
    Corrupted,
}

/// The non-answer used when the reference is too short to cut.
pub const NON_ANSWER: &str = "I am not sure.";

/// A worse version of `answer`, which a discriminative rubric scores lower.
pub fn degrade(answer: &str) -> (String, Degradation) {
    let sentences: Vec<&str> = answer
        .unicode_sentences()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if sentences.len() >= 2 {
        return (sentences[0].to_string(), Degradation::FirstSentence);
    }
    let words: Vec<&str> = answer.split_whitespace().collect();
    if words.len() >= 6 {
        return (
            format!("{} ...", words[..words.len() / 2].join(" ")),
            Degradation::Truncated,
        );
    }
    (NON_ANSWER.to_string(), Degradation::NonAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Criterion;

    #[test]
    fn deictic_questions_fail_the_rules_and_plain_ones_pass() {
        let r = SelfContainmentRules::new();
        for q in [
            "According to the text, what causes anemia?",
            "What did this study find about dogs and autism?",
            "What does the author recommend?",
            "Which method is described above?",
            "Based on the passage, why is the sky blue?",
            "What do our results show?",
            "What is the main point of the article?",
            "What is the primary objective of the study?",
            "What did the trial find about statins?",
            "How many patients took part in the survey's second phase, and what did the study show?",
        ] {
            let v = r.check(q);
            assert!(!v.passed, "{q}");
            assert!(
                v.reason.starts_with("refers to unseen material"),
                "{}",
                v.reason
            );
        }
        for q in [
            "What are the symptoms of iron-deficiency anemia?",
            "Why does the Debian constitution give developers the final say on General Resolutions?",
            "How does Python's sorted() differ from list.sort()?",
            "What is the study of fungi called?",
            "Why do randomised trials use a control group?",
        ] {
            assert!(r.check(q).passed, "{q}");
        }
    }

    #[test]
    fn open_choice_questions_and_placeholders_fail_the_rules() {
        let r = SelfContainmentRules::new();
        for q in [
            "What is a common format used to organize documentation?",
            "What is one of the methods available in list objects?",
            "What is a well-known statement type in Python and how does it work?",
            "What is an example of a syntax error in Python?",
            "Name one of the causes of immunodeficiency.",
            "Give an example of a prime number.",
            "Which statement is a typical loop construct?",
        ] {
            let v = r.check(q);
            assert!(!v.passed, "{q}");
            assert!(v.reason.starts_with("open choice: "), "{}", v.reason);
        }
        for q in ["What did Acme Corp earn?", "What does Company B sell?"] {
            assert!(!r.check(q).passed, "{q}");
        }
        let v = r.check("What was the net income of XYZ Corporation in fiscal 2019?");
        assert!(!v.passed);
        assert_eq!(
            v.reason,
            "placeholder in place of the subject: \"XYZ Corporation\""
        );
        for q in [
            // A subject named first, then described: no choice is asked for.
            "What is fluorodeoxyglucose, a commonly used tracer in PET imaging?",
            "What is a Python module used to compile source files into byte-code?",
            "What are some common characteristics of Fine-Lubinsky syndrome?",
            "Which of the two sorts is stable, sorted() or list.sort()?",
            "How do ABC transporters move substrates across membranes?",
        ] {
            let v = r.check(q);
            assert!(v.passed, "{q}: {}", v.reason);
        }
        // The answer is read for references only: naming one common format is what it should do.
        assert!(
            r.check_item(
                "Which markup language does Python's documentation use?",
                "A common format for it is reStructuredText."
            )
            .passed
        );
    }

    #[test]
    fn answers_that_cite_unseen_material_fail_too() {
        let r = SelfContainmentRules::new();
        let q = "Which methods do Python lists have?";
        assert!(r.check_item(q, "Lists have append, pop and sort.").passed);
        let v = r.check_item(
            q,
            "The passage provides a detailed description of append, pop and sort.",
        );
        assert!(!v.passed);
        assert!(
            v.reason
                .starts_with("the reference answer refers to unseen material"),
            "{}",
            v.reason
        );
        let v = r.check_item(
            "What does the passage say about lists?",
            "They have append.",
        );
        assert!(
            v.reason.starts_with("refers to unseen material"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn leakage_measures_answer_ngrams_in_the_question() {
        let q = "What is the capital of France?";
        assert!(leakage(q, "Paris is the capital.", 0.5).passed);
        assert!(!leakage("Is Paris the capital of France?", "Paris.", 0.5).passed);
        let long_q = "Given that iron supplements treat iron deficiency anemia by restoring hemoglobin, how is it treated?";
        let v = leakage(
            long_q,
            "Iron supplements treat iron deficiency anemia.",
            0.5,
        );
        assert!(!v.passed && v.score.unwrap_or(0.0) > 0.5, "{v:?}");
        assert_eq!(answer_overlap("Anything?", "the of a"), 0.0);
    }

    fn item(criteria: Vec<(&str, f64, Category)>) -> RubricItem {
        RubricItem::new(
            "i",
            "Q?",
            criteria
                .into_iter()
                .enumerate()
                .map(|(i, (t, w, c))| Criterion::new(format!("c{}", i + 1), t, w, c))
                .collect(),
        )
    }

    #[test]
    fn rubric_structure_rejects_compound_duplicate_and_all_optional_rubrics() {
        let good = item(vec![
            (
                "States that the sum is 900 degrees.",
                10.0,
                Category::Essential,
            ),
            (
                "Uses the formula for interior angles.",
                5.0,
                Category::Important,
            ),
            (
                "Claims that the sum is 1260 degrees.",
                -8.0,
                Category::Pitfall,
            ),
        ]);
        assert!(rubric_structure(&good, 30).passed);
        let compound = item(vec![
            (
                "States the sum. Explains the formula.",
                10.0,
                Category::Essential,
            ),
            ("Uses the formula.", 5.0, Category::Important),
            ("Is short.", 1.0, Category::Optional),
        ]);
        assert!(rubric_structure(&compound, 30)
            .reason
            .contains("not atomic"));
        let dup = item(vec![
            (
                "States that the sum is 900 degrees.",
                10.0,
                Category::Essential,
            ),
            ("States the sum is 900 degrees.", 8.0, Category::Essential),
            ("Is short and clear.", 1.0, Category::Optional),
        ]);
        assert!(rubric_structure(&dup, 30)
            .reason
            .contains("near duplicates"));
        let optional = item(vec![
            ("Is short and clear.", 1.0, Category::Optional),
            ("Uses plain words.", 2.0, Category::Optional),
            ("Claims a wrong sum.", -3.0, Category::Pitfall),
        ]);
        assert!(!rubric_structure(&optional, 30).passed);
        let no_pitfall = item(vec![
            (
                "States that the sum is 900 degrees.",
                10.0,
                Category::Essential,
            ),
            (
                "Uses the formula for interior angles.",
                5.0,
                Category::Important,
            ),
            ("Shows the subtraction.", 2.0, Category::Optional),
        ]);
        assert_eq!(
            rubric_structure(&no_pitfall, 30).reason,
            "no pitfall criterion"
        );
    }

    #[test]
    fn malformed_text_and_copied_examples_are_recognised() {
        assert!(well_formed("question", "What is Debian Linux?", 3).is_ok());
        assert!(well_formed("question", "{{Question}}", 3).is_err());
        assert!(well_formed("question", "#6a3b #dbee, {No}", 3).is_err());
        assert!(well_formed("answer", "Paris.", 1).is_ok());
        let j = word_jaccard(
            "How is the President of the United States elected?",
            "how is the president of the united states elected",
        );
        assert!((j - 1.0).abs() < 1e-9);
        assert!(word_jaccard("What is Debian?", "Why is the sky blue?") < 0.2);
    }

    #[test]
    fn degraded_answers_lose_content() {
        assert_eq!(
            degrade("Paris is the capital. It lies on the Seine."),
            (
                "Paris is the capital.".to_string(),
                Degradation::FirstSentence
            )
        );
        let (t, d) = degrade("Rayleigh scattering of sunlight by air molecules makes it blue");
        assert_eq!(d, Degradation::Truncated);
        assert_eq!(t, "Rayleigh scattering of sunlight by ...");
        assert_eq!(
            degrade("Paris."),
            (NON_ANSWER.to_string(), Degradation::NonAnswer)
        );
    }

    #[test]
    fn scored_verdicts_compare_both_ways() {
        let v = FilterVerdict::scored("f", 0.8, 0.7, false, "reward");
        assert!(v.passed && v.reason == "reward 0.800 >= 0.7");
        assert!(!FilterVerdict::scored("f", 0.8, 0.5, true, "overlap").passed);
    }
}

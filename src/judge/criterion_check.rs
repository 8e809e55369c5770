//! The deterministic check every model-written criterion goes through (issue 12, point 1): a
//! criterion is a statement a grader verifies in the response alone, so it is rejected when it
//! - refers to material the grader does not see: the reference answer, the document, passage,
//!   source or context it was written from, the author, or "the response above"
//!   ([`CriterionProblem::RefersToUnseen`]); or
//! - copies an example of a prompt template ([`CriterionProblem::CopiesExample`]): it shares a
//!   run of [`COPY_NGRAM`] consecutive content words (lowercased, stopwords dropped, so about five
//!   to eight words of text) with an example, or it is an example of fewer content words, or at
//!   least [`NEAR_COPY_SHARE`] of its content words after the lead verbs (three or more) are
//!   words of one example: a corrupted or reworded example ("Claims that the air pressure is
//!   higher on a mountain." from the pitfall template's "… on a mountain because the air pressure
//!   is lower.", accepted in the thirteenth session's synthesis run); or
//! - names nothing to check ([`CriterionProblem::NoContent`]): no content word after its lead
//!   verbs ([`CRITERION_VERBS`]: "States that.", "Explains why."; a judge says yes to an empty
//!   statement, and "States that." passed the reference check of a synthesized item); or
//! - is cut off or garbled ([`CriterionProblem::CutOff`], [`CriterionProblem::MixedScript`]): it
//!   ends on a comma, semicolon, colon, open bracket or dangling "and" / "or" / "the" ("Mentions
//!   that body asymmetry may be present at birth (congenital),"), or a Latin letter runs straight
//!   into a CJK, kana or Hangul character, directly or through a comma or full stop with no space
//!   ("... are key for診", "deafness,眼": 1.5B-model glitches): a grader cannot tell what such a
//!   criterion asks; or
//! - is a pitfall that does not name a mistake ([`CriterionProblem::PitfallNotAMistake`], only
//!   through [`check_pitfall`]): a pitfall opening with one of [`ADVICE_VERBS`] ("Warns that …",
//!   "Explains …") describes what a good response does, so its negative weight would charge a
//!   response for doing it, and an off-topic response "avoids" it and earns its weight (issue 12:
//!   about a third of the 1.5B model's medquad pitfalls were "Warns about the risk of …").
//!   `rubric_gen::to_item` keeps such a text as an important criterion, which is what it states.
//!
//! An example is any double-quoted text of three or more words in the body of a template file
//! under `templates/` (every file is compiled in, [`TEMPLATE_SOURCES`]; a unit test fails when a
//! file there is missing from the list). Comment lines (`#` before the first section) are not
//! examples.
//!
//! One function, [`check_criterion_as`] ([`check_criterion`], plus [`check_pitfall`] for a
//! pitfall), used by `ares rubric`, `ares synth` and `ares eval` through `rubric_gen::to_item`,
//! which drops a failing criterion and records it with its reason (a pitfall written as advice
//! is kept as an important criterion instead).
//! Pure and model-free; it does no I/O beyond the compiled-in templates.

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::judge::rubric::Category;

/// Every prompt template ares ships, by path under `templates/`.
pub const TEMPLATE_SOURCES: [(&str, &str); 24] = [
    (
        "judge_criterion.txt",
        include_str!("../../templates/judge_criterion.txt"),
    ),
    (
        "judge_generate.txt",
        include_str!("../../templates/judge_generate.txt"),
    ),
    (
        "judge_holistic.txt",
        include_str!("../../templates/judge_holistic.txt"),
    ),
    (
        "judge_pairwise.txt",
        include_str!("../../templates/judge_pairwise.txt"),
    ),
    (
        "judge_support.txt",
        include_str!("../../templates/judge_support.txt"),
    ),
    (
        "judge_relevance.txt",
        include_str!("../../templates/judge_relevance.txt"),
    ),
    (
        "judge_plain.txt",
        include_str!("../../templates/judge_plain.txt"),
    ),
    (
        "judge_reference.txt",
        include_str!("../../templates/judge_reference.txt"),
    ),
    ("rubric.txt", include_str!("../../templates/rubric.txt")),
    (
        "synth/check_faithful.txt",
        include_str!("../../templates/synth/check_faithful.txt"),
    ),
    (
        "synth/check_self_contained.txt",
        include_str!("../../templates/synth/check_self_contained.txt"),
    ),
    (
        "synth/generate.txt",
        include_str!("../../templates/synth/generate.txt"),
    ),
    (
        "synth/label.txt",
        include_str!("../../templates/synth/label.txt"),
    ),
    (
        "synth/pitfall.txt",
        include_str!("../../templates/synth/pitfall.txt"),
    ),
    (
        "synth/domains/coding.txt",
        include_str!("../../templates/synth/domains/coding.txt"),
    ),
    (
        "synth/domains/commerce_economics.txt",
        include_str!("../../templates/synth/domains/commerce_economics.txt"),
    ),
    (
        "synth/domains/education.txt",
        include_str!("../../templates/synth/domains/education.txt"),
    ),
    (
        "synth/domains/math.txt",
        include_str!("../../templates/synth/domains/math.txt"),
    ),
    (
        "synth/domains/medicine_health.txt",
        include_str!("../../templates/synth/domains/medicine_health.txt"),
    ),
    (
        "synth/domains/natural_science.txt",
        include_str!("../../templates/synth/domains/natural_science.txt"),
    ),
    (
        "synth/domains/other.txt",
        include_str!("../../templates/synth/domains/other.txt"),
    ),
    (
        "synth/domains/social_science.txt",
        include_str!("../../templates/synth/domains/social_science.txt"),
    ),
    (
        "synth/domains/technology_engineering.txt",
        include_str!("../../templates/synth/domains/technology_engineering.txt"),
    ),
    (
        "synth/domains/travel_lifestyle.txt",
        include_str!("../../templates/synth/domains/travel_lifestyle.txt"),
    ),
];

/// Consecutive content words a criterion may share with a template example.
pub const COPY_NGRAM: usize = 4;

/// Share of a criterion's content words (after its lead verbs) that, all found in one template
/// example, make it a near copy of that example (see the module docs): 3 of 4, 4 of 5, 5 of 6.
pub const NEAR_COPY_SHARE: f64 = 0.75;

/// Common English function words, left out of word overlaps (the leakage filter of `ares synth`
/// uses the same list).
pub const STOPWORDS: [&str; 60] = [
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that",
    "these", "those", "which", "who", "whom", "what", "when", "where", "why", "how", "do", "does",
    "did", "can", "could", "should", "would", "will", "may", "might", "has", "have", "had", "not",
    "no", "so", "such", "than", "then", "there", "their", "they", "if",
];

/// Lowercased alphanumeric words without stopwords.
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Why a criterion was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriterionProblem {
    #[error("refers to {what:?}, which the grader does not see: a criterion must be checkable in the response alone")]
    RefersToUnseen { what: String },
    #[error("copies the example {example:?} of template {template} (shares {shared:?})")]
    CopiesExample {
        template: String,
        example: String,
        shared: String,
    },
    #[error("names nothing to check: no content word after {lead:?}")]
    NoContent { lead: String },
    #[error("is cut off: it ends on {end:?}")]
    CutOff { end: String },
    #[error("is garbled: a Latin letter runs into another script at {at:?}")]
    MixedScript { at: String },
    #[error("is a pitfall that names no mistake: \"{verb} …\" describes what a good response does; a pitfall is written as the mistake (\"Claims that …\", \"Recommends …\")")]
    PitfallNotAMistake { verb: String },
}

/// A dangling last word that marks a cut-off criterion (lower case only: "Side A" is a name).
const DANGLING: [&str; 5] = ["and", "or", "the", "a", "an"];

/// CJK ideographs, kana and Hangul: scripts the models slip into mid-word.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// [`CriterionProblem::CutOff`] or [`CriterionProblem::MixedScript`] for `text`, if either.
fn garbled(text: &str) -> Option<CriterionProblem> {
    let t = text.trim();
    let chars: Vec<char> = t.chars().collect();
    // Where a joint starting at i ends, if one does: a Latin letter straight into CJK ("for診"),
    // or through a comma or full stop with no space ("deafness,眼"); a quoted or spaced term
    // ("東京", "(ラーメン)") is fine.
    let joint = |i: usize| {
        let (a, b) = (chars[i], chars[i + 1]);
        if (a.is_ascii_alphabetic() && is_cjk(b)) || (is_cjk(a) && b.is_ascii_alphabetic()) {
            Some(i + 2)
        } else if a.is_ascii_alphabetic()
            && matches!(b, ',' | ';' | ':' | '.')
            && chars.get(i + 2).is_some_and(|&c| is_cjk(c))
        {
            Some(i + 3)
        } else {
            None
        }
    };
    if let Some((i, end)) =
        (0..chars.len().saturating_sub(1)).find_map(|i| joint(i).map(|e| (i, e)))
    {
        return Some(CriterionProblem::MixedScript {
            at: chars[i.saturating_sub(8)..end].iter().collect(),
        });
    }
    let last = *chars.last()?;
    if matches!(last, ',' | ';' | ':' | '(' | '[' | '{') {
        return Some(CriterionProblem::CutOff {
            end: last.to_string(),
        });
    }
    let word = t.rsplit(char::is_whitespace).next().unwrap_or("");
    DANGLING.contains(&word).then(|| CriterionProblem::CutOff {
        end: word.to_string(),
    })
}

/// The verbs a criterion may open with: a criterion is a statement about what the response does
/// ("States that ...", "Recommends ...", a pitfall "Claims that ..."), never about the reference
/// answer, the document or a bare noun phrase copied from a reference (issue 12: the 1.5B model
/// wrote "The reference answer mentions ..." and "Chronic myelogenous leukemia (CML)" as
/// criteria). The generation schema's pattern (`rubric_gen::criterion_pattern`) makes anything
/// else impossible to generate; the check below reads them as a criterion's lead verbs.
pub const CRITERION_VERBS: &[&str] = &[
    "States",
    "Explains",
    "Mentions",
    "Names",
    "Lists",
    "Describes",
    "Identifies",
    "Defines",
    "Gives",
    "Notes",
    "Recommends",
    "Advises",
    "Warns",
    "Suggests",
    "Says",
    "Includes",
    "Specifies",
    "Provides",
    "Shows",
    "Uses",
    "Calculates",
    "Computes",
    "Compares",
    "Distinguishes",
    "Clarifies",
    "Emphasizes",
    "Acknowledges",
    "Answers",
    "Addresses",
    "Cites",
    "Concludes",
    "Reports",
    "Refers",
    "Writes",
    "Avoids",
    "Claims",
    "Confuses",
    "Omits",
    "Fails",
    "Ignores",
    "Misstates",
    "Overstates",
    "Understates",
    "Attributes",
    "Assumes",
    "Implies",
    "Contradicts",
    "Asserts",
    "Presents",
    "Treats",
    "Encourages",
    "Discourages",
    "Proposes",
];

/// Lead verbs (of [`CRITERION_VERBS`]) that describe what a good response does; a pitfall that
/// opens with one of them names no mistake ([`CriterionProblem::PitfallNotAMistake`]). Verbs
/// that can name a wrong claim or a harmful action ("Claims", "States", "Recommends", "Advises",
/// "Suggests", "Encourages", "Confuses", "Omits", …) stay allowed.
pub const ADVICE_VERBS: &[&str] = &[
    "Warns",
    "Explains",
    "Mentions",
    "Lists",
    "Describes",
    "Identifies",
    "Defines",
    "Notes",
    "Includes",
    "Specifies",
    "Provides",
    "Shows",
    "Compares",
    "Distinguishes",
    "Clarifies",
    "Emphasizes",
    "Acknowledges",
    "Answers",
    "Addresses",
    "Avoids",
];

/// A criterion dropped by the check, as recorded in the item's `extra.rejected_criteria`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedCriterion {
    pub text: String,
    pub reason: String,
}

/// Phrases that point at material the grader does not see (case-insensitive).
const UNSEEN_PATTERNS: [&str; 9] = [
    r"\breference (answer|response|solution|text)s?\b",
    r"\b(the|this|that|given|provided|model|ideal|expected|sample|gold|correct) (reference|model answer|ideal answer|expected answer|gold answer|sample answer)\b",
    r"\b(the|this|that|given|provided|original|source|above|following) (passage|excerpt|document|article|snippet|chunk|source text|source document|source material)s?\b",
    r"\b(the|this|given|provided|original|above) (text|source|material|context)(\s*[?,.;:)]|\s*$| (says|states|describes|mentions|suggests|discusses|explains|argues|provides|gives|lists|notes|shows)\b)",
    r"\b(according to|based on|in|from|per|as (stated|described|mentioned|shown|given) in) the (text|source|material|context|passage|document|article|excerpt|reference)\b",
    r"\bthe (author|authors|writer)\b",
    r"\b(the )?(response|answer|question|text) (above|below)\b",
    r"\b(mentioned|described|stated|shown|given|listed|discussed|cited|provided) (above|below|earlier|previously)\b",
    r"\b(the|this) (given|provided|above|following) (code|example|program|table|data|figure|snippet|function|list|equation|values?)\b",
];

/// One template example, with its content words.
#[derive(Debug, Clone)]
struct Example {
    template: String,
    text: String,
    words: Vec<String>,
}

/// The compiled check: the patterns and the examples of every template.
#[derive(Debug, Clone)]
pub struct CriterionCheck {
    patterns: Vec<Regex>,
    examples: Vec<Example>,
}

/// The double-quoted texts of three or more words in a template's body (see the module docs).
pub fn template_examples(source: &str) -> Vec<String> {
    let mut body = Vec::new();
    let mut in_body = false;
    for line in source.lines() {
        let t = line.trim_end();
        if t == "[system]" || t == "[user]" {
            in_body = true;
            continue;
        }
        // Files without sections (domain guidance) are all body, except `#` comments.
        if in_body || !line.starts_with('#') {
            body.push(line);
        }
    }
    let body = body.join("\n");
    let quoted = Regex::new(r#""((?:[^"\\\n]|\\.)*)""#).expect("static regex");
    quoted
        .captures_iter(&body)
        .map(|c| c[1].to_string())
        .filter(|s| s.split_whitespace().count() >= 3)
        .collect()
}

impl CriterionCheck {
    /// The check against the examples of `sources` (`(name, template text)`).
    pub fn new(sources: &[(&str, &str)]) -> Self {
        let patterns = UNSEEN_PATTERNS
            .iter()
            .map(|p| Regex::new(&format!("(?i){p}")).expect("static regex"))
            .collect();
        let mut seen = HashSet::new();
        let examples = sources
            .iter()
            .flat_map(|(name, source)| {
                template_examples(source)
                    .into_iter()
                    .map(move |text| (name.to_string(), text))
            })
            .filter_map(|(template, text)| {
                let words = content_words(&text);
                (words.len() >= 2 && seen.insert(words.clone())).then_some(Example {
                    template,
                    text,
                    words,
                })
            })
            .collect();
        CriterionCheck { patterns, examples }
    }

    /// The check against every template ares ships, built once.
    pub fn shipped() -> &'static CriterionCheck {
        static CHECK: OnceLock<CriterionCheck> = OnceLock::new();
        CHECK.get_or_init(|| CriterionCheck::new(&TEMPLATE_SOURCES))
    }

    /// The number of examples the check compares with.
    pub fn n_examples(&self) -> usize {
        self.examples.len()
    }

    /// `Err` with the first problem of `text` (see the module docs).
    pub fn check(&self, text: &str) -> Result<(), CriterionProblem> {
        for p in &self.patterns {
            if let Some(m) = p.find(text) {
                return Err(CriterionProblem::RefersToUnseen {
                    what: m.as_str().trim().to_string(),
                });
            }
        }
        let words = content_words(text);
        let lead = words
            .iter()
            .take_while(|w| CRITERION_VERBS.iter().any(|v| v.eq_ignore_ascii_case(w)))
            .count();
        if lead == words.len() {
            return Err(CriterionProblem::NoContent {
                lead: text.trim().to_string(),
            });
        }
        if let Some(problem) = garbled(text) {
            return Err(problem);
        }
        let grams: HashSet<&[String]> = words.windows(COPY_NGRAM).collect();
        // What the criterion says, without its lead verbs, each word once.
        let mut said: Vec<&String> = words[lead..].iter().collect();
        said.sort();
        said.dedup();
        for e in &self.examples {
            let shared = if words.len() < COPY_NGRAM || e.words.len() < COPY_NGRAM {
                (words == e.words).then(|| words.join(" "))
            } else {
                e.words
                    .windows(COPY_NGRAM)
                    .find(|g| grams.contains(g))
                    .map(|g| g.join(" "))
            };
            let shared = shared.or_else(|| {
                let common: Vec<&str> = said
                    .iter()
                    .filter(|w| e.words.contains(w))
                    .map(|w| w.as_str())
                    .collect();
                (said.len() >= 3 && common.len() as f64 >= NEAR_COPY_SHARE * said.len() as f64)
                    .then(|| common.join(" "))
            });
            if let Some(shared) = shared {
                return Err(CriterionProblem::CopiesExample {
                    template: e.template.clone(),
                    example: e.text.clone(),
                    shared,
                });
            }
        }
        Ok(())
    }
}

/// [`CriterionCheck::check`] against the shipped templates: the one check `ares rubric`,
/// `ares synth` and `ares eval` apply to every generated criterion.
pub fn check_criterion(text: &str) -> Result<(), CriterionProblem> {
    CriterionCheck::shipped().check(text)
}

/// [`check_criterion`] for a pitfall: also refused when it opens with one of [`ADVICE_VERBS`].
pub fn check_pitfall(text: &str) -> Result<(), CriterionProblem> {
    check_criterion(text)?;
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| !c.is_alphanumeric());
    match ADVICE_VERBS.iter().find(|v| v.eq_ignore_ascii_case(first)) {
        Some(verb) => Err(CriterionProblem::PitfallNotAMistake {
            verb: verb.to_string(),
        }),
        None => Ok(()),
    }
}

/// The check a criterion of `category` goes through: [`check_pitfall`] for a pitfall,
/// [`check_criterion`] otherwise.
pub fn check_criterion_as(text: &str, category: Category) -> Result<(), CriterionProblem> {
    match category {
        Category::Pitfall => check_pitfall(text),
        _ => check_criterion(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_file_is_in_the_list() -> Result<(), std::io::Error> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut stack = vec![root.clone()];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "txt") {
                    let rel = path.strip_prefix(&root).expect("under root");
                    found.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        for f in &found {
            assert!(
                TEMPLATE_SOURCES.iter().any(|(n, _)| n == f),
                "templates/{f} is not in TEMPLATE_SOURCES"
            );
        }
        assert_eq!(found.len(), TEMPLATE_SOURCES.len());
        Ok(())
    }

    #[test]
    fn a_pitfall_must_name_a_mistake_not_advice() {
        for t in [
            "Warns about the risk of renal dysplasia.",
            "Explains the risk of taking too much iron.",
            "identifies the conditions it is contraindicated in.",
            "Warns, without cause, that the vaccine is unsafe.",
        ] {
            let r = check_pitfall(t);
            assert!(
                matches!(r, Err(CriterionProblem::PitfallNotAMistake { .. })),
                "{t}: {r:?}"
            );
            // The same text is a fine positive criterion.
            assert_eq!(check_criterion_as(t, Category::Important), Ok(()), "{t}");
        }
        for t in [
            "Claims that antibiotics cure viral infections.",
            "Recommends stopping insulin when blood sugar is normal.",
            "States that peroxide drops dissolve the eardrum.",
            "Confuses shingles with chickenpox.",
            "Advises doubling the dose after a missed one.",
        ] {
            assert_eq!(check_pitfall(t), Ok(()), "{t}");
        }
        // The other rules still apply to a pitfall.
        assert!(matches!(
            check_pitfall("Claims that the reference answer is wrong."),
            Err(CriterionProblem::RefersToUnseen { .. })
        ));
        // Every advice verb is a lead verb the generation schema allows.
        for v in ADVICE_VERBS {
            assert!(CRITERION_VERBS.contains(v), "{v}");
        }
    }

    #[test]
    fn criteria_about_the_reference_or_the_document_are_rejected() {
        let c = CriterionCheck::new(&[]);
        for t in [
            "The reference answer mentions that irrigation is commonly used.",
            "Matches the reference on the dose.",
            "Provides a comprehensive list of symptoms as in the passage.",
            "States what the document says about Debian.",
            "Repeats the main point of the source text.",
            "Uses the facts given in the text.",
            "Claims that there are no syntax errors in the given code.",
            "Quotes the author's definition.",
            "Agrees with the response above.",
            "Lists the steps mentioned above.",
            "According to the context, names the drug.",
        ] {
            let r = c.check(t);
            assert!(
                matches!(r, Err(CriterionProblem::RefersToUnseen { .. })),
                "{t}: {r:?}"
            );
        }
        for t in [
            "States that ear syringing removes impacted wax.",
            "Recommends seeing a doctor if the pain lasts more than a week.",
            "Warns that the source of the infection must be treated.",
            "Explains that a text editor saves files as plain text.",
            "Claims that the response time of the server is unlimited.",
            "Names the Debian Project Leader as the elected officer.",
        ] {
            assert_eq!(c.check(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn criteria_copying_a_template_example_are_rejected_with_the_example() {
        let template = "[system]\nWrite criteria such as \"Names Rayleigh scattering or scattering by air molecules.\" or \"Mentions pale skin.\"\n[user]\n{{question}}";
        let c = CriterionCheck::new(&[("t.txt", template)]);
        assert_eq!(c.n_examples(), 2);
        let r = c.check("Name Rayleigh scattering or scattering by air molecules");
        let Err(CriterionProblem::CopiesExample {
            template, shared, ..
        }) = r
        else {
            panic!("not caught: {r:?}");
        };
        assert_eq!(template, "t.txt");
        assert_eq!(shared, "rayleigh scattering scattering air");
        // A short example is caught only when copied whole.
        assert!(c.check("Mentions pale skin.").is_err());
        assert_eq!(c.check("Mentions pale skin and cold hands."), Ok(()));
        // Sharing the frame of an example but not its content is not a copy.
        assert_eq!(
            c.check("Names the vector that transmits dengue fever."),
            Ok(())
        );
        // A reworded or corrupted example is a near copy: 3 of its 4 content words come from
        // one example (no run of four in common).
        let pitfall = "[system]\nOutput: {\"mistake\": \"Water boils at a lower temperature on a mountain because the air pressure is lower.\"}\n[user]\n{{answer}}";
        let c = CriterionCheck::new(&[("pitfall.txt", pitfall)]);
        let r = c.check("Claims that the air pressure is higher on a mountain.");
        let Err(CriterionProblem::CopiesExample { shared, .. }) = r else {
            panic!("near copy not caught: {r:?}");
        };
        assert_eq!(shared, "air mountain pressure");
        // Two of four is a shared subject, not a copy.
        assert_eq!(
            c.check("States that water boils faster in a pressure cooker."),
            Ok(())
        );
    }

    #[test]
    fn comments_are_not_examples_and_short_quotes_are_not_either() {
        let t = "# \"A commented example is not one.\"\n[system]\nReply \"Yes\" or \"No\"; write \"States that the capital of France is Paris.\"\n[user]\n{{q}}";
        assert_eq!(
            template_examples(t),
            vec!["States that the capital of France is Paris.".to_string()]
        );
    }

    #[test]
    fn cut_off_and_garbled_criteria_are_rejected() {
        for (text, end) in [
            (
                "Mentions that body asymmetry may also be present at birth (congenital),",
                ",",
            ),
            ("States that the key signs include:", ":"),
            ("Explains how the dose is adjusted for weight and", "and"),
            ("States that the drug is taken with the", "the"),
            ("Lists the side effects (", "("),
        ] {
            assert_eq!(
                check_criterion(text),
                Err(CriterionProblem::CutOff { end: end.into() }),
                "{text:?}"
            );
        }
        let r = check_criterion("Explains that distinctive facial features are key for診");
        assert_eq!(
            r,
            Err(CriterionProblem::MixedScript {
                at: "e key for診".into()
            })
        );
        // Seen in a tenth-session synth item: a list running into another script after a comma.
        let r = check_criterion("Mentions intellectual disability, deafness,眼");
        assert_eq!(
            r,
            Err(CriterionProblem::MixedScript {
                at: " deafness,眼".into()
            })
        );
        for text in [
            "States that the chain rule gives f'(g(x))·g'(x).",
            "Names the Japanese term 東京 for Tokyo.",
            "States that 'ramen' (ラーメン) is a noodle soup.",
            "Recommends rest or fluids",
            "States that the band released Side A",
            "Claims that Shallow copying constructs a new object.",
        ] {
            assert_eq!(check_criterion(text), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn criteria_with_nothing_after_the_lead_verb_are_rejected() {
        for text in [
            "States that",
            "Explains that.",
            "Mentions that",
            "States that it.",
            "",
        ] {
            assert!(
                matches!(
                    check_criterion(text),
                    Err(CriterionProblem::NoContent { .. })
                ),
                "{text:?}"
            );
        }
        assert_eq!(check_criterion("Is concise."), Ok(()));
        assert_eq!(check_criterion("States that the sky is blue."), Ok(()));
        let e = check_criterion("Explains why.")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("names nothing to check: no content word after \"Explains why.\"")
        );
    }

    #[test]
    fn shipped_templates_give_examples_and_plain_criteria_pass() {
        let c = CriterionCheck::shipped();
        assert!(c.n_examples() >= 5, "{}", c.n_examples());
        assert_eq!(
            check_criterion("States that dengue fever is spread by Aedes mosquitoes."),
            Ok(())
        );
        // Every example of every shipped template is caught as a copy of itself.
        for (name, source) in TEMPLATE_SOURCES {
            for e in template_examples(source) {
                if content_words(&e).len() >= 2 {
                    assert!(check_criterion(&e).is_err(), "{name}: {e}");
                }
            }
        }
    }
}

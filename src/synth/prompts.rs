//! The prompt files of `ares synth` (`templates/synth/`, compiled in) and their hashes.
//!
//! - `label.txt`: domain + personas of a chunk; `{{chunk}}` last.
//! - `generate.txt`: question + reference answer + criteria; `{{persona}}` last, so the
//!   generations for the personas of one chunk share their whole prefix in the KV cache.
//! - `check_self_contained.txt`, `check_faithful.txt`: yes/no checks read from log-probs.
//! - `domains/<slug>.txt`: per-domain guidance (what to ask, what the checks and pitfalls look
//!   like), inserted into `generate.txt`; a configured domain without a file gets `other.txt`.
//!   No concrete example items (issue 12: the blue-sky example leaked into other subjects);
//!   `generate.txt` shows the shape of an item as a skeleton with `<slots>`.
//!
//! Every record names the 16-hex-digit sha256 of each file that shaped it
//! ([`PromptHashes`]), so a dataset built with other prompts is told apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::judge::criterion_check::template_examples;
use crate::judge::template::{template_hash, PromptTemplate, TemplateError};

pub const LABEL_SOURCE: &str = include_str!("../../templates/synth/label.txt");
pub const GENERATE_SOURCE: &str = include_str!("../../templates/synth/generate.txt");
pub const SELF_CONTAINED_SOURCE: &str =
    include_str!("../../templates/synth/check_self_contained.txt");
pub const FAITHFUL_SOURCE: &str = include_str!("../../templates/synth/check_faithful.txt");

/// Per-domain guidance files, by slug ([`domain_slug`]).
pub const DOMAIN_FILES: [(&str, &str); 10] = [
    (
        "math",
        include_str!("../../templates/synth/domains/math.txt"),
    ),
    (
        "technology_engineering",
        include_str!("../../templates/synth/domains/technology_engineering.txt"),
    ),
    (
        "coding",
        include_str!("../../templates/synth/domains/coding.txt"),
    ),
    (
        "social_science",
        include_str!("../../templates/synth/domains/social_science.txt"),
    ),
    (
        "natural_science",
        include_str!("../../templates/synth/domains/natural_science.txt"),
    ),
    (
        "travel_lifestyle",
        include_str!("../../templates/synth/domains/travel_lifestyle.txt"),
    ),
    (
        "commerce_economics",
        include_str!("../../templates/synth/domains/commerce_economics.txt"),
    ),
    (
        "medicine_health",
        include_str!("../../templates/synth/domains/medicine_health.txt"),
    ),
    (
        "education",
        include_str!("../../templates/synth/domains/education.txt"),
    ),
    (
        "other",
        include_str!("../../templates/synth/domains/other.txt"),
    ),
];

/// The default domain list (ARES's ten, after Webscale-RL's identifier).
pub const DEFAULT_DOMAINS: [&str; 10] = [
    "Math",
    "Technology & Engineering",
    "Coding",
    "Social Science",
    "Natural Science",
    "Travel & Lifestyle",
    "Commerce & Economics",
    "Medicine & Health",
    "Education",
    "Other",
];

/// `"Technology & Engineering"` -> `"technology_engineering"`.
pub fn domain_slug(domain: &str) -> String {
    domain
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// Hashes of the prompt files behind one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptHashes {
    pub label: String,
    pub generate: String,
    /// The domain guidance file used (`domains/<slug>.txt`).
    pub domain_guidance: String,
    pub check_self_contained: String,
    pub check_faithful: String,
    /// The judge's logprob template (rubric-validity filter).
    pub judge: String,
}

/// The parsed templates and domain guidance.
#[derive(Debug, Clone)]
pub struct SynthPrompts {
    pub label: PromptTemplate,
    pub generate: PromptTemplate,
    pub self_contained: PromptTemplate,
    pub faithful: PromptTemplate,
    /// Guidance text and hash per domain name.
    guidance: BTreeMap<String, (String, String)>,
}

impl SynthPrompts {
    /// The shipped templates, with guidance for each of `domains`.
    pub fn new(domains: &[String]) -> Result<Self, TemplateError> {
        let label = PromptTemplate::parse(
            "synth/label.txt",
            LABEL_SOURCE,
            &["domains", "personas"],
            "chunk",
        )?;
        let generate = PromptTemplate::parse(
            "synth/generate.txt",
            GENERATE_SOURCE,
            &["domain", "guidance", "chunk"],
            "persona",
        )?;
        let self_contained = PromptTemplate::parse(
            "synth/check_self_contained.txt",
            SELF_CONTAINED_SOURCE,
            &[],
            "question",
        )?;
        let faithful = PromptTemplate::parse(
            "synth/check_faithful.txt",
            FAITHFUL_SOURCE,
            &["chunk", "question"],
            "answer",
        )?;
        let other = DOMAIN_FILES
            .iter()
            .find(|(s, _)| *s == "other")
            .map(|(_, t)| *t)
            .unwrap_or_default();
        let guidance = domains
            .iter()
            .map(|d| {
                let slug = domain_slug(d);
                let text = DOMAIN_FILES
                    .iter()
                    .find(|(s, _)| *s == slug)
                    .map(|(_, t)| *t)
                    .unwrap_or(other);
                (d.clone(), (text.trim().to_string(), template_hash(text)))
            })
            .collect();
        Ok(SynthPrompts {
            label,
            generate,
            self_contained,
            faithful,
            guidance,
        })
    }

    /// Guidance text of `domain` (the `other` file for a domain without one).
    pub fn guidance(&self, domain: &str) -> &str {
        self.guidance
            .get(domain)
            .map(|(t, _)| t.as_str())
            .unwrap_or_default()
    }

    /// The quoted examples (three or more words) of the generate prompt and every guidance
    /// file: a generated question that copies one is rejected (small models copy few-shot
    /// examples). Criteria are checked against every template by `rubric_gen::to_item`.
    pub fn example_questions(&self) -> Vec<String> {
        std::iter::once(GENERATE_SOURCE)
            .chain(DOMAIN_FILES.iter().map(|(_, t)| *t))
            .flat_map(template_examples)
            .collect()
    }

    /// The hashes for a record of `domain`.
    pub fn hashes(&self, domain: &str, judge_template: &str) -> PromptHashes {
        PromptHashes {
            label: self.label.hash().to_string(),
            generate: self.generate.hash().to_string(),
            domain_guidance: self
                .guidance
                .get(domain)
                .map(|(_, h)| h.clone())
                .unwrap_or_default(),
            check_self_contained: self.self_contained.hash().to_string(),
            check_faithful: self.faithful.hash().to_string(),
            judge: judge_template.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_prompts_parse_and_every_default_domain_has_its_own_file() -> Result<(), TemplateError>
    {
        let domains: Vec<String> = DEFAULT_DOMAINS.iter().map(|d| d.to_string()).collect();
        let p = SynthPrompts::new(&domains)?;
        for d in &domains {
            let slug = domain_slug(d);
            assert!(
                DOMAIN_FILES.iter().any(|(s, _)| *s == slug),
                "no guidance file for {d} ({slug})"
            );
            assert!(p.guidance(d).starts_with("Ask "), "{d}");
            // No concrete example item to leak (issue 12).
            assert!(!p.guidance(d).contains("Example:"), "{d}");
        }
        assert!(!p.example_questions().is_empty());
        let h = p.hashes("Math", "j");
        assert_eq!(h.generate.len(), 16);
        assert_ne!(h.domain_guidance, p.hashes("Coding", "j").domain_guidance);
        // A domain without a file falls back to `other`.
        let custom = SynthPrompts::new(&["Law".to_string()])?;
        assert_eq!(custom.guidance("Law"), p.guidance("Other"));
        Ok(())
    }

    #[test]
    fn personas_of_one_chunk_share_the_prompt_up_to_the_persona() -> Result<(), TemplateError> {
        let p = SynthPrompts::new(&["Math".to_string()])?;
        let v = |persona| {
            p.generate.render(&[
                ("domain", "Math"),
                ("guidance", p.guidance("Math")),
                ("chunk", "Two plus two is four."),
                ("persona", persona),
            ])
        };
        let a = v("teacher")?;
        let b = v("student")?;
        assert_eq!(a[0].content, b[0].content);
        let common = a[1]
            .content
            .bytes()
            .zip(b[1].content.bytes())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(a[1].content[..common].contains("Two plus two is four."));
        Ok(())
    }
}

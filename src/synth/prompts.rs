//! The prompt files of `ares synth` (`templates/synth/`, compiled in) and their hashes.
//!
//! - `label.txt`: subject, domain and personas of a chunk; the chunk comes before the domain
//!   list (measured, see the file), so only its system message is a shared prefix.
//! - `generate.txt`: question + reference answer + criteria; `{{persona}}` last, so the
//!   generations for the personas of one chunk share their whole prefix in the KV cache.
//! - `check_self_contained.txt`, `check_faithful.txt`: yes/no checks read from log-probs.
//! - `pitfall.txt`: false statements about an item's subject (the pitfall stage, `pitfall.rs`);
//!   `{{answer}}` last.
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
pub const PITFALL_SOURCE: &str = include_str!("../../templates/synth/pitfall.txt");

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

/// What each default domain covers, shown to the label stage (a domain without an entry is
/// listed by name only). Without them the 1.5B model put Python's library documentation under
/// Other or Math and the Debian manifesto under Medicine & Health.
pub const DOMAIN_DESCRIPTIONS: [(&str, &str); 10] = [
    ("Math", "mathematics, statistics, proofs and calculations"),
    (
        "Technology & Engineering",
        "hardware, engineering, operating systems, networks and IT",
    ),
    (
        "Coding",
        "programming, source code, coding standards, software libraries and their documentation",
    ),
    (
        "Social Science",
        "history, politics, law, contracts, sociology and psychology",
    ),
    (
        "Natural Science",
        "physics, chemistry, biology, astronomy and earth science",
    ),
    (
        "Travel & Lifestyle",
        "travel, sports, food, hobbies and entertainment",
    ),
    (
        "Commerce & Economics",
        "business, finance, company reports and economics",
    ),
    (
        "Medicine & Health",
        "diseases, symptoms, treatments, drugs, clinical studies and health care",
    ),
    ("Education", "teaching, schools and learning"),
    ("Other", "anything that fits none of the above"),
];

/// The domain list of the label prompt, one per line: `"- Math: mathematics, ..."`, with the
/// description of each default domain ([`DOMAIN_DESCRIPTIONS`]) and custom ones by name.
pub fn describe_domains(domains: &[String]) -> String {
    domains
        .iter()
        .map(
            |d| match DOMAIN_DESCRIPTIONS.iter().find(|(name, _)| name == d) {
                Some((_, what)) => format!("- {d}: {what}"),
                None => format!("- {d}"),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

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
    /// The pitfall stage's template (empty: the stage did not run, or a record written before it
    /// existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pitfall: String,
}

/// The parsed templates and domain guidance.
#[derive(Debug, Clone)]
pub struct SynthPrompts {
    pub label: PromptTemplate,
    pub generate: PromptTemplate,
    pub self_contained: PromptTemplate,
    pub faithful: PromptTemplate,
    pub pitfall: PromptTemplate,
    /// Guidance text and hash per domain name.
    guidance: BTreeMap<String, (String, String)>,
}

impl SynthPrompts {
    /// The shipped templates, with guidance for each of `domains`.
    pub fn new(domains: &[String]) -> Result<Self, TemplateError> {
        let label = PromptTemplate::parse_any_order(
            "synth/label.txt",
            LABEL_SOURCE,
            &["chunk", "domains", "personas"],
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
        let pitfall =
            PromptTemplate::parse("synth/pitfall.txt", PITFALL_SOURCE, &["question"], "answer")?;
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
            pitfall,
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

    /// The hashes for a record of `domain` (`pitfall_stage`: whether the pitfall stage ran).
    pub fn hashes(&self, domain: &str, judge_template: &str, pitfall_stage: bool) -> PromptHashes {
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
            pitfall: if pitfall_stage {
                self.pitfall.hash().to_string()
            } else {
                String::new()
            },
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
        let h = p.hashes("Math", "j", true);
        assert_eq!(h.generate.len(), 16);
        assert_ne!(
            h.domain_guidance,
            p.hashes("Coding", "j", true).domain_guidance
        );
        // A domain without a file falls back to `other`.
        let custom = SynthPrompts::new(&["Law".to_string()])?;
        assert_eq!(custom.guidance("Law"), p.guidance("Other"));
        Ok(())
    }

    #[test]
    fn the_label_prompt_describes_default_domains_and_names_custom_ones() {
        let domains: Vec<String> = DEFAULT_DOMAINS.iter().map(|d| d.to_string()).collect();
        for d in &domains {
            assert!(DOMAIN_DESCRIPTIONS.iter().any(|(n, _)| n == d), "{d}");
        }
        let list = describe_domains(&["Coding".to_string(), "Law".to_string()]);
        assert!(list.starts_with("- Coding: programming"), "{list}");
        assert!(list.ends_with("\n- Law"), "{list}");
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

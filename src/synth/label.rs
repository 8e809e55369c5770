//! Label stage: is a chunk worth a question (rules), and which domain and personas (the model,
//! constrained JSON).
//!
//! Rules first, so no model time goes to chunks that cannot make a question: too few tokens,
//! mostly digits and symbols (flattened tables, listings), a table of contents (dot leaders or
//! runs of section numbers), licence boilerplate, or highly repetitive text. Each rejection says
//! which rule and the measured value.
//!
//! The model then answers `{"subject": a few words, "domain": one of the configured domains,
//! "personas": [1..N strings]}` under a JSON-schema constraint ([`label_schema`]), greedy, so
//! labels are reproducible. The subject comes first so that the domain follows from it (the
//! 1.5B model put football and cities under "Technology & Engineering" when it picked the
//! domain first). Personas are trimmed and deduplicated (case-insensitive), names of domains are
//! dropped, and with none left the persona is "<domain> instructor" (Webscale-RL's fallback).

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::synth::chunk::Chunk;

/// Longest persona the schema allows, in characters.
pub const PERSONA_MAX_CHARS: usize = 60;

/// Longest subject the schema allows, in characters.
pub const SUBJECT_MAX_CHARS: usize = 60;

/// Rule settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorthConfig {
    /// Fewer tokens than this: too short.
    pub min_tokens: usize,
}

impl Default for WorthConfig {
    fn default() -> Self {
        WorthConfig { min_tokens: 48 }
    }
}

/// The compiled rules.
pub struct WorthRules {
    config: WorthConfig,
    dot_leaders: Regex,
    section_numbers: Regex,
    licence: Regex,
}

impl WorthRules {
    pub fn new(config: WorthConfig) -> Self {
        WorthRules {
            config,
            dot_leaders: Regex::new(r"(\.\s?){4,}\s*\d+").expect("static regex"),
            section_numbers: Regex::new(r"(^|\s)\d+(\.\d+)*\.?\s+\p{Lu}\p{Ll}").expect("static regex"),
            licence: Regex::new(
                r"(?i)(all rights reserved|permission is (hereby )?granted|without warranty|copyright \(c\)|gnu (free documentation|general public|lesser general public) license|licensed under|redistribution and use)",
            )
            .expect("static regex"),
        }
    }

    /// `Err(reason)` when the chunk is not worth a question.
    pub fn check(&self, chunk: &Chunk) -> Result<(), String> {
        let text = &chunk.text;
        if chunk.tokens < self.config.min_tokens {
            return Err(format!(
                "too short: {} tokens (minimum {})",
                chunk.tokens, self.config.min_tokens
            ));
        }
        let words = text.split_whitespace().count().max(1);
        let leaders = self.dot_leaders.find_iter(text).count();
        let numbers = self.section_numbers.find_iter(text).count();
        if leaders >= 3 || numbers * 12 >= words && numbers >= 4 {
            return Err(format!(
                "table of contents ({leaders} dot leaders, {numbers} section numbers in {words} words)"
            ));
        }
        let licence = self.licence.find_iter(text).count();
        if licence >= 2 {
            return Err(format!("licence boilerplate ({licence} licence phrases)"));
        }
        let visible: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let letters = visible.iter().filter(|c| c.is_alphabetic()).count();
        let letter_share = letters as f64 / visible.len().max(1) as f64;
        if letter_share < 0.4 {
            return Err(format!(
                "mostly digits and symbols ({:.0}% letters): a table or listing",
                100.0 * letter_share
            ));
        }
        let lower: Vec<String> = text.split_whitespace().map(|w| w.to_lowercase()).collect();
        let distinct: std::collections::HashSet<&str> = lower.iter().map(String::as_str).collect();
        if lower.len() >= 40 && (distinct.len() as f64) < 0.25 * lower.len() as f64 {
            return Err(format!(
                "repetitive: {} distinct words of {}",
                distinct.len(),
                lower.len()
            ));
        }
        Ok(())
    }
}

/// The JSON schema of a label.
pub fn label_schema(domains: &[String], max_personas: usize) -> Value {
    json!({
        "type": "object",
        "properties": {
            "subject": {"type": "string", "minLength": 2, "maxLength": SUBJECT_MAX_CHARS},
            "domain": {"type": "string", "enum": domains},
            "personas": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_personas.max(1),
                "items": {"type": "string", "minLength": 2, "maxLength": PERSONA_MAX_CHARS}
            }
        },
        "required": ["subject", "domain", "personas"],
        "additionalProperties": false
    })
}

/// Token budget of a label: the subject, the domain name and the personas, with room to spare.
pub fn label_max_tokens(max_personas: usize) -> usize {
    56 + 24 * max_personas.max(1)
}

/// A chunk's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// What the chunk is about, in the model's words (provenance; the domain follows from it).
    pub subject: String,
    pub domain: String,
    pub personas: Vec<String>,
}

#[derive(Deserialize)]
struct RawLabel {
    subject: String,
    domain: String,
    personas: Vec<String>,
}

/// Parses the model's label; `Err(reason)` when it is unusable.
pub fn parse_label(text: &str, domains: &[String], max_personas: usize) -> Result<Label, String> {
    let raw: RawLabel = serde_json::from_str(text.trim())
        .map_err(|e| format!("label is not JSON of the schema ({e}): {text:?}"))?;
    let domain = domains
        .iter()
        .find(|d| d.eq_ignore_ascii_case(raw.domain.trim()))
        .ok_or_else(|| format!("domain {:?} is not in the list", raw.domain))?
        .clone();
    let mut personas: Vec<String> = Vec::new();
    for p in raw.personas {
        let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
        let p = p.trim_matches(|c: char| !c.is_alphanumeric()).to_string();
        // A small model sometimes repeats a domain name as the reader: not a persona.
        if p.chars().filter(|c| c.is_alphabetic()).count() < 2
            || domains.iter().any(|d| d.eq_ignore_ascii_case(&p))
        {
            continue;
        }
        if !personas.iter().any(|q| q.eq_ignore_ascii_case(&p)) {
            personas.push(p);
        }
    }
    personas.truncate(max_personas.max(1));
    if personas.is_empty() {
        // Webscale-RL's identifier falls back to "<domain> instructor" without personas.
        personas.push(format!("{domain} instructor"));
    }
    let subject = raw.subject.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(Label {
        subject,
        domain,
        personas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str, tokens: usize) -> Chunk {
        Chunk {
            id: "c".into(),
            doc_id: "d".into(),
            source: "d".into(),
            index: 0,
            span: (0, text.chars().count()),
            text: text.into(),
            tokens,
            invalid_utf8_bytes: 0,
        }
    }

    #[test]
    fn rules_reject_short_tables_contents_and_licences_with_reasons() {
        let r = WorthRules::new(WorthConfig { min_tokens: 10 });
        let prose = "Iron deficiency anemia happens when the body lacks iron to make hemoglobin. \
            People feel tired and weak, and their skin may look pale. Doctors treat it with iron \
            supplements and by finding the cause of the blood loss.";
        assert_eq!(r.check(&chunk(prose, 50)), Ok(()));
        let e = r.check(&chunk("Hello there.", 3)).err().unwrap_or_default();
        assert!(e.starts_with("too short: 3 tokens"), "{e}");
        let table = "2019 | 2018 | 875.8 | 557.8 | 6.8 | 8.1 | 882.6 | 565.9 | 2.0 | 2.2 | 880.6 | 563.7 Total";
        let e = r.check(&chunk(table, 60)).err().unwrap_or_default();
        assert!(e.starts_with("mostly digits"), "{e}");
        let toc = "Contents 1 Preface .......... 1 2 Legal Issues .......... 3 3 Design Advice .......... 9 4 Program Behavior .......... 15";
        let e = r.check(&chunk(toc, 60)).err().unwrap_or_default();
        assert!(e.starts_with("table of contents"), "{e}");
        let licence =
            "Copyright (C) 2000 Free Software Foundation. Permission is granted to copy, \
            distribute and/or modify this document under the terms of the GNU Free Documentation \
            License, Version 1.3 or any later version published by the Free Software Foundation.";
        let e = r.check(&chunk(licence, 60)).err().unwrap_or_default();
        assert!(e.starts_with("licence boilerplate"), "{e}");
    }

    #[test]
    fn labels_parse_dedupe_personas_and_check_the_domain() {
        let domains = vec!["Math".to_string(), "Other".to_string()];
        let l = parse_label(
            r#"{"subject":" prime\nnumbers ","domain":"math","personas":["Teacher"," teacher ","student!","-","Other"]}"#,
            &domains,
            3,
        );
        assert_eq!(
            l,
            Ok(Label {
                subject: "prime numbers".into(),
                domain: "Math".into(),
                personas: vec!["Teacher".into(), "student".into()]
            })
        );
        assert!(parse_label(
            r#"{"subject":"x","domain":"Law","personas":["x y"]}"#,
            &domains,
            3
        )
        .is_err());
        assert_eq!(
            parse_label(
                r#"{"subject":"x","domain":"Math","personas":["--"]}"#,
                &domains,
                3
            )
            .map(|l| l.personas),
            Ok(vec!["Math instructor".to_string()])
        );
        assert!(parse_label(r#"{"subject":"x","domain":"Math","pers"#, &domains, 3).is_err());
        // The subject is part of the schema: a label without one is not a label.
        assert!(parse_label(r#"{"domain":"Math","personas":["x y"]}"#, &domains, 3).is_err());
        let s = label_schema(&domains, 2);
        assert_eq!(s["properties"]["personas"]["maxItems"], 2);
        assert_eq!(s["properties"]["domain"]["enum"][1], "Other");
        // Subject first, so the domain is chosen after the model has named what the text is about.
        let keys: Vec<&String> = s["properties"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.first().map(|k| k.as_str()), Some("subject"));
    }
}

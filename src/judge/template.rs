//! Judge prompt templates: the files under `templates/` (compiled in with `include_str!`, so the
//! binary is self-contained), parsed into a system and a user message and rendered with
//! `{{placeholder}}` substitution. The chat template of the model is applied afterwards by the
//! caller (`Generator::chat_prompt`), not here.
//!
//! File format: optional `#` comment lines, then a line `[system]`, its text, a line `[user]`, its
//! text. Blank lines around a section's text are dropped.
//!
//! Invariants (checked by [`PromptTemplate::parse`]):
//! - every placeholder is one the template kind allows, and every allowed one is used;
//! - the `last` placeholder (the criterion in logprob mode, the response in holistic mode) does not
//!   appear in the system message and comes after every other placeholder of the user message, so
//!   prompts that differ only in it share everything before it (the prefix the KV cache reuses);
//! - substitution is one pass: text put into a placeholder is never scanned again, so a response
//!   containing `{{criterion}}` stays as written.
//!
//! The template hash is the sha256 of the file's bytes (comments included), hex, first 16 digits:
//! changing a single byte of a template changes the hash written into every record.

use sha2::{Digest, Sha256};

use crate::model::chat_template::Message;

/// Source of the logprob-mode template (one prompt per criterion).
pub const CRITERION_SOURCE: &str = include_str!("../../templates/judge_criterion.txt");
/// Source of the holistic-mode template (one prompt per response).
pub const HOLISTIC_SOURCE: &str = include_str!("../../templates/judge_holistic.txt");
/// Source of the generate-mode template (one prompt per criterion, constrained JSON verdict).
pub const GENERATE_SOURCE: &str = include_str!("../../templates/judge_generate.txt");
/// Source of the pairwise template (one prompt per pair and order).
pub const PAIRWISE_SOURCE: &str = include_str!("../../templates/judge_pairwise.txt");
/// Source of the `ares rubric` template (one prompt per question, constrained JSON criteria).
pub const RUBRIC_SOURCE: &str = include_str!("../../templates/rubric.txt");

/// A template that cannot be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name}: missing [{section}] section")]
    MissingSection { name: String, section: &'static str },
    #[error("template {name}: line {line} is outside any section and not a # comment")]
    StrayText { name: String, line: usize },
    #[error("template {name}: placeholder `{{{{` at byte {at} is never closed")]
    Unclosed { name: String, at: usize },
    #[error("template {name}: unknown placeholder {{{{{placeholder}}}}}")]
    UnknownPlaceholder { name: String, placeholder: String },
    #[error("template {name}: placeholder {{{{{placeholder}}}}} is never used")]
    UnusedPlaceholder { name: String, placeholder: String },
    #[error("template {name}: {{{{{placeholder}}}}} must come after every other placeholder and not appear in [system], so that prompts share their prefix")]
    NotLast { name: String, placeholder: String },
    #[error("template {name}: no value given for {{{{{placeholder}}}}}")]
    MissingValue { name: String, placeholder: String },
}

/// A parsed judge template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    name: String,
    system: String,
    user: String,
    hash: String,
}

/// One piece of a section: literal text or a placeholder name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Slot(&'a str),
}

/// Splits `text` into literal text and `{{name}}` placeholders.
fn pieces<'a>(name: &str, text: &'a str) -> Result<Vec<Piece<'a>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| TemplateError::Unclosed {
            name: name.to_string(),
            at: offset + open,
        })?;
        out.push(Piece::Slot(after[..close].trim()));
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// sha256 of `source`, hex, first 16 digits.
pub fn template_hash(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl PromptTemplate {
    /// The logprob-mode template: placeholders question, response, criterion (last).
    pub fn criterion() -> Result<Self, TemplateError> {
        Self::parse(
            "judge_criterion.txt",
            CRITERION_SOURCE,
            &["question", "response"],
            "criterion",
        )
    }

    /// The holistic-mode template: placeholders question, rubric, response (last).
    pub fn holistic() -> Result<Self, TemplateError> {
        Self::parse(
            "judge_holistic.txt",
            HOLISTIC_SOURCE,
            &["question", "rubric"],
            "response",
        )
    }

    /// The generate-mode template: placeholders question, response, criterion (last).
    pub fn generate() -> Result<Self, TemplateError> {
        Self::parse(
            "judge_generate.txt",
            GENERATE_SOURCE,
            &["question", "response"],
            "criterion",
        )
    }

    /// The pairwise template: placeholders question, rubric, first, second (last).
    pub fn pairwise() -> Result<Self, TemplateError> {
        Self::parse(
            "judge_pairwise.txt",
            PAIRWISE_SOURCE,
            &["question", "rubric", "first"],
            "second",
        )
    }

    /// The `ares rubric` template: placeholders question, reference (last; empty or the
    /// reference answer with its label).
    pub fn rubric() -> Result<Self, TemplateError> {
        Self::parse("rubric.txt", RUBRIC_SOURCE, &["question"], "reference")
    }

    /// Parses `source` (see the module docs for the format). `shared` are the placeholders that
    /// may appear anywhere; `last` must follow all of them (see the module invariants).
    pub fn parse(
        name: &str,
        source: &str,
        shared: &[&str],
        last: &str,
    ) -> Result<Self, TemplateError> {
        Self::parse_checked(name, source, shared, Some(last))
    }

    /// Parses `source` with `placeholders` in any order and place: for a prompt whose wording
    /// matters more than a shared prefix (synth's label prompt puts the passage before the
    /// domain list; only its system message is shared). Unknown or unused placeholders are
    /// still errors.
    pub fn parse_any_order(
        name: &str,
        source: &str,
        placeholders: &[&str],
    ) -> Result<Self, TemplateError> {
        Self::parse_checked(name, source, placeholders, None)
    }

    fn parse_checked(
        name: &str,
        source: &str,
        shared: &[&str],
        last: Option<&str>,
    ) -> Result<Self, TemplateError> {
        let mut system: Option<Vec<&str>> = None;
        let mut user: Option<Vec<&str>> = None;
        let mut current: Option<&mut Vec<&str>> = None;
        for (index, line) in source.lines().enumerate() {
            match line.trim_end() {
                "[system]" => current = Some(system.insert(Vec::new())),
                "[user]" => current = Some(user.insert(Vec::new())),
                _ => match current.as_mut() {
                    Some(section) => section.push(line),
                    None if line.starts_with('#') || line.trim().is_empty() => {}
                    None => {
                        return Err(TemplateError::StrayText {
                            name: name.to_string(),
                            line: index + 1,
                        })
                    }
                },
            }
        }
        let join = |lines: Option<Vec<&str>>, section: &'static str| {
            lines
                .map(|l| l.join("\n").trim_matches('\n').to_string())
                .ok_or(TemplateError::MissingSection {
                    name: name.to_string(),
                    section,
                })
        };
        let system = join(system, "system")?;
        let user = join(user, "user")?;

        let err_name = || name.to_string();
        let slots = |text: &str| -> Result<Vec<String>, TemplateError> {
            Ok(pieces(name, text)?
                .into_iter()
                .filter_map(|p| match p {
                    Piece::Slot(s) => Some(s.to_string()),
                    Piece::Text(_) => None,
                })
                .collect())
        };
        let system_slots = slots(&system)?;
        let user_slots = slots(&user)?;
        for s in system_slots.iter().chain(&user_slots) {
            if Some(s.as_str()) != last && !shared.contains(&s.as_str()) {
                return Err(TemplateError::UnknownPlaceholder {
                    name: err_name(),
                    placeholder: s.clone(),
                });
            }
        }
        for want in shared.iter().chain(last.as_ref()) {
            if !system_slots.iter().chain(&user_slots).any(|s| s == want) {
                return Err(TemplateError::UnusedPlaceholder {
                    name: err_name(),
                    placeholder: want.to_string(),
                });
            }
        }
        if let Some(last) = last {
            let first_last = user_slots.iter().position(|s| s == last);
            let last_other = user_slots.iter().rposition(|s| s != last);
            let in_order = match (first_last, last_other) {
                (Some(f), Some(o)) => f > o,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if system_slots.iter().any(|s| s == last) || !in_order {
                return Err(TemplateError::NotLast {
                    name: err_name(),
                    placeholder: last.to_string(),
                });
            }
        }
        Ok(PromptTemplate {
            name: name.to_string(),
            system,
            user,
            hash: template_hash(source),
        })
    }

    /// The file name the template came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// sha256 of the template file, hex, first 16 digits (see [`template_hash`]).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The system and user messages with every placeholder replaced by its value, in one pass.
    pub fn render(&self, values: &[(&str, &str)]) -> Result<Vec<Message>, TemplateError> {
        Ok(vec![
            Message {
                role: "system".into(),
                content: self.fill(&self.system, values)?,
            },
            Message {
                role: "user".into(),
                content: self.fill(&self.user, values)?,
            },
        ])
    }

    fn fill(&self, text: &str, values: &[(&str, &str)]) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        for piece in pieces(&self.name, text)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(s) => {
                    let value = values
                        .iter()
                        .find(|(k, _)| *k == s)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| TemplateError::MissingValue {
                            name: self.name.clone(),
                            placeholder: s.to_string(),
                        })?;
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn render_user(t: &PromptTemplate, values: &[(&str, &str)]) -> Result<String, TemplateError> {
        Ok(t.render(values)?[1].content.clone())
    }

    #[test]
    fn shipped_templates_parse_and_have_distinct_hashes() -> TestResult {
        let c = PromptTemplate::criterion()?;
        let h = PromptTemplate::holistic()?;
        assert_eq!(c.hash().len(), 16);
        assert!(c.hash().chars().all(|ch| ch.is_ascii_hexdigit()));
        assert_ne!(c.hash(), h.hash());
        let g = PromptTemplate::generate()?;
        let r = PromptTemplate::rubric()?;
        assert_eq!(r.hash(), template_hash(RUBRIC_SOURCE));
        let hashes = [c.hash(), h.hash(), g.hash(), r.hash()];
        for (i, a) in hashes.iter().enumerate() {
            assert!(hashes[i + 1..].iter().all(|b| b != a), "{hashes:?}");
        }
        assert_eq!(c.hash(), template_hash(CRITERION_SOURCE));
        // Comments are not sent to the model.
        let m = c.render(&[("question", "q"), ("response", "r"), ("criterion", "c")])?;
        assert!(!m[0].content.contains('#') && !m[1].content.contains("Placeholders"));
        assert_eq!(m[0].role, "system");
        assert_eq!(m[1].role, "user");
        Ok(())
    }

    #[test]
    fn criterion_prompts_of_one_response_differ_only_after_the_response() -> TestResult {
        let t = PromptTemplate::criterion()?;
        let base = [
            ("question", "Why is the sky blue?"),
            ("response", "Rayleigh."),
        ];
        let a = render_user(
            &t,
            &[base[0], base[1], ("criterion", "Mentions scattering")],
        )?;
        let b = render_user(&t, &[base[0], base[1], ("criterion", "Is short")])?;
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let shared = &a[..common];
        assert!(shared.contains("Why is the sky blue?") && shared.contains("Rayleigh."));
        // The distinct part is the criterion and the fixed closing question only.
        assert!(a.len() - common < "Mentions scattering".len() + 80, "{a}");
        // The prompt ends asking for the verdict, so the next token is Yes or No.
        assert!(a.trim_end().ends_with("Answer Yes or No."));
        Ok(())
    }

    #[test]
    fn holistic_prompt_puts_question_and_rubric_before_the_response() -> TestResult {
        let t = PromptTemplate::holistic()?;
        let u = render_user(
            &t,
            &[("question", "QQ"), ("rubric", "RR"), ("response", "SS")],
        )?;
        let (q, r, s) = (u.find("QQ"), u.find("RR"), u.find("SS"));
        assert!(q < r && r < s, "{u}");
        Ok(())
    }

    #[test]
    fn substitution_is_one_pass() -> TestResult {
        let t = PromptTemplate::criterion()?;
        let u = render_user(
            &t,
            &[
                ("question", "{{response}}"),
                ("response", "I say {{criterion}}"),
                ("criterion", "X"),
            ],
        )?;
        assert!(u.contains("Question:\n{{response}}"));
        assert!(u.contains("I say {{criterion}}"));
        Ok(())
    }

    #[test]
    fn missing_value_is_an_error() -> TestResult {
        let t = PromptTemplate::criterion()?;
        assert!(matches!(
            t.render(&[("question", "q"), ("response", "r")]),
            Err(TemplateError::MissingValue { placeholder, .. }) if placeholder == "criterion"
        ));
        Ok(())
    }

    #[test]
    fn any_order_templates_still_check_their_placeholders() {
        let parse = |src: &str| PromptTemplate::parse_any_order("t", src, &["chunk", "domains"]);
        assert!(parse("[system]\ns\n[user]\n{{chunk}} {{domains}}").is_ok());
        assert!(parse("[system]\n{{domains}}\n[user]\n{{chunk}}").is_ok());
        assert!(matches!(
            parse("[system]\ns\n[user]\n{{chunk}} {{domains}} {{persona}}"),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            parse("[system]\ns\n[user]\n{{chunk}}"),
            Err(TemplateError::UnusedPlaceholder { placeholder, .. }) if placeholder == "domains"
        ));
    }

    #[test]
    fn templates_that_break_prefix_sharing_are_rejected() {
        let parse = |src: &str| PromptTemplate::parse("t", src, &["question"], "criterion");
        assert!(parse("[system]\ns\n[user]\n{{question}} {{criterion}}").is_ok());
        assert!(matches!(
            parse("[system]\ns\n[user]\n{{criterion}} {{question}}"),
            Err(TemplateError::NotLast { .. })
        ));
        assert!(matches!(
            parse("[system]\n{{criterion}}\n[user]\n{{question}}"),
            Err(TemplateError::NotLast { .. })
        ));
        assert!(matches!(
            parse("[system]\ns\n[user]\n{{question}} {{answer}} {{criterion}}"),
            Err(TemplateError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            parse("[system]\ns\n[user]\n{{criterion}}"),
            Err(TemplateError::UnusedPlaceholder { .. })
        ));
        assert!(matches!(
            parse("[user]\n{{question}} {{criterion}}"),
            Err(TemplateError::MissingSection {
                section: "system",
                ..
            })
        ));
        assert!(matches!(
            parse("hello\n[system]\ns\n[user]\n{{question}} {{criterion}}"),
            Err(TemplateError::StrayText { line: 1, .. })
        ));
        assert!(matches!(
            parse("[system]\ns\n[user]\n{{question}} {{criterion"),
            Err(TemplateError::Unclosed { .. })
        ));
    }

    #[test]
    fn any_byte_changes_the_hash() {
        let edited = CRITERION_SOURCE.replacen("Yes", "yes", 1);
        assert_ne!(template_hash(&edited), template_hash(CRITERION_SOURCE));
    }
}

//! Reading a verdict out of the judge model's output: the answer tokens ([`AnswerTokens`]: the
//! single-token spellings of Yes/No, or of the digits 0-9) and the renormalised
//! [`AnswerDistribution`] over them (logprob and holistic modes); the JSON schema and parser of a
//! generate-mode verdict.
//!
//! Invariants: the probabilities of all spellings of one answer are summed; a token shared by two
//! answers counts for the first only; no mass or a NaN log-prob is "no distribution", never 0.

use serde::Deserialize;
use serde_json::Value;

use crate::error::Error as EngineError;
use crate::judge::record::Mode;
use crate::TokenId;

/// The tokenizer cannot spell an answer the judge must read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerTokenError {
    #[error("the tokenizer has no single-token spelling of {answer} (tried {tried:?}); this model cannot be judged in {mode} mode")]
    NoVerdictToken {
        answer: String,
        tried: Vec<String>,
        mode: Mode,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(#[source] EngineError),
}

/// Spellings of the two verdicts the judge reads (see the module docs).
pub const YES_SPELLINGS: [&str; 4] = ["Yes", " Yes", "yes", " yes"];
pub const NO_SPELLINGS: [&str; 4] = ["No", " No", "no", " no"];

/// Generate mode: the longest `reason` the schema allows, in characters.
pub const REASON_MAX_CHARS: usize = 200;

/// The JSON schema of a generate-mode verdict: `{"reason": string, "verdict": "yes" | "no"}`,
/// reason first.
pub fn verdict_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
            "verdict": {"type": "string", "enum": ["yes", "no"]}
        },
        "required": ["reason", "verdict"],
        "additionalProperties": false
    })
}

/// A parsed generate-mode verdict.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct GeneratedVerdict {
    reason: String,
    verdict: String,
}

/// The verdict and reason of a generate-mode output, or why it is unusable.
pub fn parse_generated_verdict(text: &str) -> Result<(bool, String), String> {
    let v: GeneratedVerdict = serde_json::from_str(text.trim())
        .map_err(|e| format!("verdict JSON does not parse ({e}): {text:?}"))?;
    match v.verdict.trim().to_ascii_lowercase().as_str() {
        "yes" => Ok((true, v.reason)),
        "no" => Ok((false, v.reason)),
        other => Err(format!("verdict {other:?} is neither yes nor no")),
    }
}

/// Token ids of the answers the judge reads, grouped by answer: `[yes, no]` in logprob mode,
/// the digits `0..=9` in holistic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerTokens {
    pub answers: Vec<Vec<TokenId>>,
}

/// log(Σ exp(x)); -inf for no finite input mass.
fn log_sum_exp(xs: impl IntoIterator<Item = f64>) -> f64 {
    let xs: Vec<f64> = xs.into_iter().collect();
    // f64::max ignores NaN: check for it first, a NaN log-prob must not read as "no mass".
    if xs.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// How the judge's next-token distribution split over the answers.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerDistribution {
    /// Probability of each answer, renormalised over the answers (sums to 1).
    pub probs: Vec<f64>,
    /// Total probability the model put on all answer tokens before renormalising.
    pub mass: f64,
}

impl AnswerTokens {
    /// Verdict tokens: every spelling of "Yes" and of "No" that `encode` turns into one token.
    pub fn verdicts(
        encode: impl Fn(&str) -> crate::error::Result<Vec<TokenId>>,
    ) -> Result<Self, AnswerTokenError> {
        Self::from_spellings(
            &[&YES_SPELLINGS[..], &NO_SPELLINGS[..]],
            &["Yes", "No"],
            Mode::Logprob,
            encode,
        )
    }

    /// Pairwise choice tokens: `[A, B]`, with and without a leading space.
    pub fn letters(
        encode: impl Fn(&str) -> crate::error::Result<Vec<TokenId>>,
    ) -> Result<Self, AnswerTokenError> {
        Self::from_spellings(
            &[&["A", " A"], &["B", " B"]],
            &["A", "B"],
            Mode::Holistic,
            encode,
        )
    }

    /// Score tokens: the digits 0..=9 with and without a leading space.
    pub fn digits(
        encode: impl Fn(&str) -> crate::error::Result<Vec<TokenId>>,
    ) -> Result<Self, AnswerTokenError> {
        let spellings: Vec<[String; 2]> =
            (0..10).map(|d| [format!("{d}"), format!(" {d}")]).collect();
        let refs: Vec<Vec<&str>> = spellings
            .iter()
            .map(|s| s.iter().map(String::as_str).collect())
            .collect();
        let groups: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        let names: Vec<String> = (0..10).map(|d| format!("the digit {d}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::from_spellings(&groups, &names, Mode::Holistic, encode)
    }

    fn from_spellings(
        groups: &[&[&str]],
        names: &[&str],
        mode: Mode,
        encode: impl Fn(&str) -> crate::error::Result<Vec<TokenId>>,
    ) -> Result<Self, AnswerTokenError> {
        let mut answers: Vec<Vec<TokenId>> = Vec::new();
        let mut seen: Vec<TokenId> = Vec::new();
        for (group, name) in groups.iter().zip(names) {
            let mut ids = Vec::new();
            for spelling in group.iter() {
                let tokens = encode(spelling).map_err(AnswerTokenError::Tokenizer)?;
                if let [id] = tokens[..] {
                    // A token shared by two answers would count for both: keep the first.
                    if !seen.contains(&id) {
                        seen.push(id);
                        ids.push(id);
                    }
                }
            }
            if ids.is_empty() {
                return Err(AnswerTokenError::NoVerdictToken {
                    answer: name.to_string(),
                    tried: group.iter().map(|s| s.to_string()).collect(),
                    mode,
                });
            }
            answers.push(ids);
        }
        Ok(AnswerTokens { answers })
    }

    /// Every token id, in answer order: what goes into `Request::logprob_ids`.
    pub fn ids(&self) -> Vec<TokenId> {
        self.answers.iter().flatten().copied().collect()
    }

    /// The answer distribution from the log-probs the engine reported for [`Self::ids`]. `None`
    /// when the answer tokens have no probability at all (or a log-prob is NaN).
    pub fn distribution(&self, requested: &[(TokenId, f32)]) -> Option<AnswerDistribution> {
        let per_answer: Vec<f64> = self
            .answers
            .iter()
            .map(|ids| {
                log_sum_exp(
                    requested
                        .iter()
                        .filter(|(t, _)| ids.contains(t))
                        .map(|&(_, lp)| f64::from(lp)),
                )
            })
            .collect();
        if per_answer.iter().any(|l| l.is_nan()) {
            return None;
        }
        let total = log_sum_exp(per_answer.iter().copied());
        if !total.is_finite() {
            return None;
        }
        Some(AnswerDistribution {
            probs: per_answer.iter().map(|l| (l - total).exp()).collect(),
            mass: total.exp(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A fake tokenizer: each listed spelling is one token, anything else is two.
    pub(crate) fn fake_encode(s: &str) -> crate::error::Result<Vec<TokenId>> {
        let vocab = [
            "Yes", " Yes", "No", " No", "yes", "no", "0", "1", "2", "3", "4", "5", "6", "7", "8",
            "9",
        ];
        Ok(match vocab.iter().position(|v| *v == s) {
            Some(i) => vec![100 + i as TokenId],
            None => vec![1, 2],
        })
    }

    #[test]
    fn verdict_tokens_keep_single_token_spellings_only() -> TestResult {
        let t = AnswerTokens::verdicts(fake_encode)?;
        // " yes" and " no" are two tokens in the fake vocabulary: left out.
        assert_eq!(t.answers, vec![vec![100, 101, 104], vec![102, 103, 105]]);
        assert_eq!(t.ids(), vec![100, 101, 104, 102, 103, 105]);
        let none = AnswerTokens::verdicts(|_| Ok(vec![1, 2]));
        assert!(matches!(none, Err(AnswerTokenError::NoVerdictToken { .. })));
        Ok(())
    }

    #[test]
    fn p_yes_sums_spellings_and_renormalises_over_yes_and_no() -> TestResult {
        let t = AnswerTokens::verdicts(fake_encode)?;
        // P("Yes") = 0.3, P(" Yes") = 0.1, P("No") = 0.05, P(" No") = 0.05; "yes"/"no" absent.
        let requested = [
            (100, 0.3f32.ln()),
            (101, 0.1f32.ln()),
            (102, 0.05f32.ln()),
            (103, 0.05f32.ln()),
            (104, f32::NEG_INFINITY),
        ];
        let d = t.distribution(&requested).ok_or("distribution")?;
        // yes = 0.4, no = 0.1: p_yes = 0.4 / 0.5 = 0.8, mass 0.5.
        assert!((d.probs[0] - 0.8).abs() < 1e-6, "{d:?}");
        assert!((d.probs[1] - 0.2).abs() < 1e-6);
        assert!((d.mass - 0.5).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn tiny_verdict_mass_is_still_renormalised_exactly() -> TestResult {
        let t = AnswerTokens::verdicts(fake_encode)?;
        // log-probs far below exp's range in f32: -200 and -201 -> p_yes = 1 / (1 + e^-1).
        let d = t
            .distribution(&[(100, -200.0), (102, -201.0)])
            .ok_or("distribution")?;
        let want = 1.0 / (1.0 + (-1.0f64).exp());
        assert!((d.probs[0] - want).abs() < 1e-12, "{d:?}");
        assert!(d.mass > 0.0 && d.mass < 1e-80);
        Ok(())
    }

    #[test]
    fn no_mass_or_nan_is_unparseable_not_zero() -> TestResult {
        let t = AnswerTokens::verdicts(fake_encode)?;
        assert_eq!(t.distribution(&[]), None);
        assert_eq!(
            t.distribution(&[(100, f32::NEG_INFINITY), (102, f32::NEG_INFINITY)]),
            None
        );
        assert_eq!(t.distribution(&[(100, f32::NAN), (102, -1.0)]), None);
        // Only "No" has mass: p_yes = 0, a real answer.
        let d = t.distribution(&[(102, -0.5)]).ok_or("distribution")?;
        assert_eq!(d.probs[0], 0.0);
        Ok(())
    }

    #[test]
    fn digit_tokens_are_ten_answers() -> TestResult {
        let t = AnswerTokens::digits(fake_encode)?;
        assert_eq!(t.answers.len(), 10);
        assert_eq!(t.answers[7], vec![113]);
        // Half the mass on 3, half on 7: renormalised 0.5 each.
        let d = t
            .distribution(&[(109, 0.2f32.ln()), (113, 0.2f32.ln())])
            .ok_or("distribution")?;
        assert!((d.probs[3] - 0.5).abs() < 1e-6 && (d.probs[7] - 0.5).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn generated_verdicts_parse_or_say_why() {
        assert_eq!(
            parse_generated_verdict(r#"{"reason":"It says Paris.","verdict":"yes"}"#),
            Ok((true, "It says Paris.".to_string()))
        );
        assert_eq!(
            parse_generated_verdict(r#" {"reason":"","verdict":"No"} "#),
            Ok((false, String::new()))
        );
        // Cut off at the token limit: unparseable, not a silent "no".
        let cut = parse_generated_verdict(r#"{"reason":"It says Par"#);
        assert!(
            matches!(&cut, Err(e) if e.contains("does not parse")),
            "{cut:?}"
        );
        let odd = parse_generated_verdict(r#"{"reason":"x","verdict":"maybe"}"#);
        assert!(odd.is_err());
    }

    #[test]
    fn verdict_schema_puts_reason_first_and_bounds_it() {
        let s = verdict_schema();
        let keys: Vec<&String> = s["properties"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["reason", "verdict"]);
        assert_eq!(s["properties"]["reason"]["maxLength"], REASON_MAX_CHARS);
        assert_eq!(
            s["properties"]["verdict"]["enum"],
            serde_json::json!(["yes", "no"])
        );
    }
}

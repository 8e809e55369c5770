//! What a judge job writes and reports: the verdict mode, the per-response [`Status`], the
//! [`JudgeRecord`] (one output line per response, versioned by [`JUDGE_RECORD_VERSION`]) with its
//! per-criterion entries, and the job's progress and [`JudgeSummary`].
//!
//! Invariant: a record has a reward only with status `ok`; otherwise `reward` is null and `error`
//! says why (never a silent 0).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::request::MatchedBy;
use crate::judge::aggregate::{Aggregator, Verdict};
use crate::judge::rubric::Criterion;

/// Version of the [`JudgeRecord`] this build writes.
pub const JUDGE_RECORD_VERSION: u32 = 1;

/// How verdicts are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Logprob,
    Holistic,
    Generate,
    /// The likelihood of each criterion as a summary of the response (`judge::support`).
    Support,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Logprob => "logprob",
            Mode::Holistic => "holistic",
            Mode::Generate => "generate",
            Mode::Support => "support",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Judged; `reward` is set.
    Ok,
    /// The judge's output could not be turned into a verdict (no probability on the verdict
    /// tokens, or less than `min_verdict_mass`; generate mode: JSON that did not parse after the
    /// retry).
    JudgeUnparseable,
    /// The prompt with this response does not fit the model's context (`--ctx`).
    ResponseTooLong,
    /// Anything else: malformed line, unknown or rejected item, empty response, engine error,
    /// aggregation error. `error` says which.
    Error,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Ok,
        Status::JudgeUnparseable,
        Status::ResponseTooLong,
        Status::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::JudgeUnparseable => "judge_unparseable",
            Status::ResponseTooLong => "response_too_long",
            Status::Error => "error",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One criterion's verdict in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionVerdict {
    pub id: String,
    /// `p_yes` (soft) or `p_yes >= 0.5` (hard); null when the criterion was unparseable.
    pub verdict: Option<Verdict>,
    /// P(yes) renormalised over the yes/no tokens; for a pitfall, P(the mistake was made).
    pub p_yes: Option<f64>,
    pub weight: f64,
    /// P(yes tokens) + P(no tokens) before renormalising: how much the judge wanted to answer
    /// with a verdict at all.
    pub verdict_mass: Option<f64>,
    /// Generate mode: the judge's rationale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Logprob mode: where the verdict tokens' probabilities came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<VerdictSource>,
    /// Support mode: mean log-prob per token of the criterion after the response minus after no
    /// answer; the verdict is its logistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmi: Option<f64>,
}

/// A topic gate's verdict on one response (`judge::gate`), as a record carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateVerdict {
    pub statement: String,
    /// The factor the reward was multiplied by: the statement's P(yes), renormalised over the
    /// yes/no tokens as in logprob mode, or the relevance gate's σ(4·pmi) (`judge::relevance`).
    pub p_yes: f64,
    /// The relevance gate's per-token PMI of the question given the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmi: Option<f64>,
}

/// Where a verdict's answer-token probabilities came from: exactly the requested ids (the local
/// engine, `ares serve`), or found by id or by text among a remote server's top alternatives. A
/// verdict cache hit keeps the source of the run that computed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    Exact,
    Id,
    Text,
}

impl From<MatchedBy> for VerdictSource {
    fn from(m: MatchedBy) -> Self {
        match m {
            MatchedBy::Exact => VerdictSource::Exact,
            MatchedBy::Id => VerdictSource::Id,
            MatchedBy::Text => VerdictSource::Text,
        }
    }
}

impl CriterionVerdict {
    /// The entry of a criterion that got no usable verdict.
    pub(crate) fn unusable(c: &Criterion) -> Self {
        CriterionVerdict {
            id: c.id.clone(),
            verdict: None,
            p_yes: None,
            weight: c.weight,
            verdict_mass: None,
            reason: None,
            matched_by: None,
            pmi: None,
        }
    }
}

/// Holistic mode's score distribution in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolisticScore {
    /// P(digit d), d = 0..=9, renormalised over the digits.
    pub probs: Vec<f64>,
    /// Σ d P(d), on the 0-9 scale.
    pub expected_score: f64,
    /// P(any digit token) before renormalising.
    pub verdict_mass: f64,
    /// Where the digit tokens' probabilities came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<VerdictSource>,
}

/// One output line: the judgement of one response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeRecord {
    pub item_id: Option<String>,
    pub response_id: Option<String>,
    /// In [0, 1]; set only when `status` is `ok`.
    pub reward: Option<f64>,
    pub status: Status,
    /// One entry per criterion, in rubric order (empty in holistic mode and for responses that
    /// were never judged).
    pub criteria: Vec<CriterionVerdict>,
    pub mode: Mode,
    pub model_sha256: String,
    pub template_hash: String,
    /// Logprob mode: the aggregator that made `reward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<Aggregator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holistic: Option<HolisticScore>,
    /// With a topic gate (`judge::gate`): its statement and P(yes); `reward` is then the rubric
    /// reward times that P(yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateVerdict>,
    /// Why the status is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Line of the responses file.
    pub line: usize,
    pub schema_version: u32,
}

/// Progress of a running job, reported after every collected request and finished response.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JudgeProgress {
    pub responses_done: usize,
    pub responses_total: usize,
    /// Verdict requests (criteria, or holistic prompts) collected so far / planned.
    pub requests_done: usize,
    pub requests_total: usize,
    pub seconds: f64,
}

/// Totals of a finished job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JudgeSummary {
    pub responses: usize,
    pub ok: usize,
    pub judge_unparseable: usize,
    pub response_too_long: usize,
    pub error: usize,
    /// Verdict requests that completed (criteria in logprob mode, prompts in holistic mode).
    pub requests: usize,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    pub seconds: f64,
    /// Verdict cache: requests answered from the cache / looked up and not found (both 0
    /// without a cache).
    pub cache_hits: usize,
    pub cache_misses: usize,
    /// Verdict cache: why new verdicts could not be stored (the records are unaffected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<String>,
}

impl JudgeSummary {
    pub fn failed(&self) -> usize {
        self.responses - self.ok
    }

    /// Verdict requests per second of wall time.
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// Folds in a topic gate's pass (`judge::gate`): its requests, tokens, time and cache
    /// counts, and the statuses recounted from the gated `records`.
    pub fn gate(&mut self, records: &[JudgeRecord], gate: &JudgeSummary) {
        self.responses = 0;
        self.ok = 0;
        self.judge_unparseable = 0;
        self.response_too_long = 0;
        self.error = 0;
        for r in records {
            self.count(r.status);
        }
        self.requests += gate.requests;
        self.prompt_tokens += gate.prompt_tokens;
        self.cached_tokens += gate.cached_tokens;
        self.seconds += gate.seconds;
        self.cache_hits += gate.cache_hits;
        self.cache_misses += gate.cache_misses;
        if self.cache_error.is_none() {
            self.cache_error = gate.cache_error.clone();
        }
    }

    pub(crate) fn count(&mut self, status: Status) {
        self.responses += 1;
        match status {
            Status::Ok => self.ok += 1,
            Status::JudgeUnparseable => self.judge_unparseable += 1,
            Status::ResponseTooLong => self.response_too_long += 1,
            Status::Error => self.error += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn records_serialize_with_the_documented_fields() -> TestResult {
        let record = JudgeRecord {
            item_id: Some("q1".into()),
            response_id: Some("r1".into()),
            reward: None,
            status: Status::ResponseTooLong,
            criteria: vec![CriterionVerdict {
                id: "c1".into(),
                verdict: Some(Verdict::Soft(0.25)),
                p_yes: Some(0.25),
                weight: 5.0,
                verdict_mass: Some(0.9),
                reason: None,
                matched_by: Some(VerdictSource::Id),
                pmi: None,
            }],
            mode: Mode::Logprob,
            model_sha256: "abc".into(),
            template_hash: "0123456789abcdef".into(),
            aggregator: Some(Aggregator::RarExplicit),
            holistic: None,
            gate: None,
            error: Some("too long".into()),
            line: 3,
            schema_version: JUDGE_RECORD_VERSION,
        };
        let v = serde_json::to_value(&record)?;
        assert_eq!(v["status"], "response_too_long");
        assert!(
            v["reward"].is_null(),
            "reward is written as null, not left out"
        );
        assert_eq!(v["criteria"][0]["verdict"], 0.25);
        assert_eq!(v["mode"], "logprob");
        assert_eq!(v["aggregator"], "rar_explicit");
        assert!(v.get("holistic").is_none());
        let back: JudgeRecord = serde_json::from_value(v)?;
        assert_eq!(back, record);
        Ok(())
    }
}

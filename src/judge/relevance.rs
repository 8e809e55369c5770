//! Relevance gate: how much more likely the judge model finds the question after reading the
//! response than after reading nothing (query likelihood, as in LLM rerankers), turned into a
//! factor in (0, 1) that multiplies a rubric reward. Nothing is decoded and nothing is parsed.
//!
//! For a question Q and response R, the prompt is `templates/judge_relevance.txt` filled with R,
//! rendered with the chat template; the assistant's turn is Q, whose tokens the engine scores
//! (`Request::score_last`). `lp(R)` is their mean log-prob; the same with R replaced by
//! [`NO_TEXT`] gives `lp(∅)`, once per question in a job. `pmi = lp(R) − lp(∅)` per token, and the
//! gate is σ([`RELEVANCE_SLOPE`] · pmi): about 1 for a response on the question's subject, about
//! 0.5 for one that tells the model nothing about it, lower for one that points elsewhere.
//!
//! Why (issue 12): rubric criteria check facts, and the 1.5B judge says "Yes" to a true fact on a
//! page about another subject; on medquad, where 53-63% of the answers of a sample are such pages
//! (expert grade 1, Incorrect), the rubric reward ranked them high. Measured with `ares eval`
//! (benches/RESULTS.md, 100 answers per seeded sample): Spearman 0.350 → 0.561 on the seed-1
//! development sample (the slope and the template's system line were chosen there), 0.436 →
//! 0.659 and 0.371 → 0.588 on the held-out seeds 0 and 2. Unlike the statement gate
//! (`judge::gate`) it needs no wording per domain.
//!
//! Invariants:
//! - one outcome per input, in order: the per-token PMI, or why there is none (never a silent 0);
//! - a PMI depends only on the question, the response, the model and the template (the engine
//!   computes rows independently of the batch);
//! - [`apply`] changes only `ok` records: reward × gate (still in [0, 1]) with the gate recorded,
//!   or, when the PMI is missing, status `error` and an error naming the relevance gate;
//! - needs the local engine: remote servers do not report prompt log-probs (those inputs fail with
//!   a clear error).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use crate::engine::generator::collect;
use crate::engine::{Event, Generator};
use crate::judge::judge::{defuse, JudgeError};
use crate::judge::record::{GateVerdict, JudgeRecord, JudgeSummary, Status};
use crate::judge::support::{mean_prompt_logprob, scoring_context, scoring_request};
use crate::judge::template::PromptTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;
use crossbeam_channel::Receiver;

/// Source of the relevance template.
pub const RELEVANCE_SOURCE: &str = include_str!("../../templates/judge_relevance.txt");

/// What stands in for the response in a question's baseline prompt.
pub const NO_TEXT: &str = "(no text)";

/// Slope of the gate's logistic in PMI per token (chosen on the development sample, where
/// slopes 2-8 were within 0.01 Spearman of each other).
pub const RELEVANCE_SLOPE: f64 = 4.0;

/// What a gated record's `gate.statement` says.
pub const RELEVANCE_STATEMENT: &str = "relevance: likelihood of the question given the response";

/// The gate factor of a per-token PMI: σ(RELEVANCE_SLOPE · pmi).
pub fn gate_value(pmi: f64) -> f64 {
    1.0 / (1.0 + (-RELEVANCE_SLOPE * pmi).exp())
}

/// The relevance template: one placeholder, response.
pub fn relevance_template() -> Result<PromptTemplate, crate::judge::template::TemplateError> {
    PromptTemplate::parse("judge_relevance.txt", RELEVANCE_SOURCE, &[], "response")
}

/// A question's tokens and its baseline mean log-prob (after no text).
type Question = (Rc<Vec<TokenId>>, f64);

/// A submitted request and the baseline its mean log-prob is compared with.
type Pending = (Receiver<Event>, f64);

/// Scores (question, response) pairs through a generator.
pub struct RelevanceScorer<'g> {
    generator: &'g dyn Generator,
    tokenizer: &'g Tokenizer,
    template: PromptTemplate,
    control_texts: Vec<String>,
    max_in_flight: usize,
}

impl<'g> RelevanceScorer<'g> {
    pub fn new(
        generator: &'g dyn Generator,
        tokenizer: &'g Tokenizer,
        max_in_flight: usize,
    ) -> Result<Self, JudgeError> {
        Ok(RelevanceScorer {
            generator,
            tokenizer,
            template: relevance_template()?,
            control_texts: tokenizer.control_token_texts(),
            max_in_flight: max_in_flight.max(1),
        })
    }

    pub fn template_hash(&self) -> &str {
        self.template.hash()
    }

    /// The prompt for `response`, up to the question, as tokens.
    fn context(&self, response: &str) -> Result<Vec<TokenId>, String> {
        scoring_context(
            &self.template,
            &[("response", response)],
            self.generator,
            self.tokenizer,
            "",
        )
    }

    /// Submits `scored` after `context` for its prompt log-probs.
    fn submit(
        &self,
        id: &str,
        context: &[TokenId],
        scored: &[TokenId],
    ) -> Result<Receiver<Event>, String> {
        self.generator
            .submit(scoring_request(id, context, scored))
            .map_err(|e| e.to_string())
    }

    /// The mean log-prob per token of a submitted request's scored tokens.
    fn mean_logprob(id: &str, rx: Receiver<Event>) -> Result<f64, String> {
        collect(id.to_string(), rx)
            .and_then(|c| mean_prompt_logprob(&c))
            .map_err(|e| e.to_string())
    }

    /// The per-token PMI of each (question, response), in order; `progress(done, total)` after
    /// each batch of `max_in_flight` requests.
    pub fn score(
        &self,
        pairs: &[(&str, &str)],
        progress: &dyn Fn(usize, usize),
    ) -> Vec<Result<f64, String>> {
        // The no-text prompt is the same for every question: rendered once.
        let no_text = self.context(NO_TEXT);
        // Each distinct question's tokens and baseline, computed once.
        let mut questions: HashMap<&str, Result<Question, String>> = HashMap::new();
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(self.max_in_flight) {
            for (q, _) in chunk {
                if questions.contains_key(q) {
                    continue;
                }
                let id = format!("relevance-base-{}", questions.len());
                let base = self.question_tokens(q).and_then(|qt| {
                    let rx = self.submit(&id, no_text.as_ref().map_err(|e| e.clone())?, &qt)?;
                    Ok((Rc::new(qt), Self::mean_logprob(&id, rx)?))
                });
                questions.insert(q, base);
            }
            let submitted: Vec<(String, Result<Pending, String>)> = chunk
                .iter()
                .enumerate()
                .map(|(k, (q, r))| {
                    let id = format!("relevance-{}", out.len() + k);
                    let job = questions[q].clone().and_then(|(qt, base)| {
                        let ctx = self.context(&defuse(r, &self.control_texts))?;
                        Ok((self.submit(&id, &ctx, &qt)?, base))
                    });
                    (id, job)
                })
                .collect();
            for (id, job) in submitted {
                out.push(job.and_then(|(rx, base)| Ok(Self::mean_logprob(&id, rx)? - base)));
            }
            progress(out.len(), pairs.len());
        }
        out
    }

    fn question_tokens(&self, question: &str) -> Result<Vec<TokenId>, String> {
        let t = self
            .tokenizer
            .encode(question.trim())
            .map_err(|e| e.to_string())?;
        if t.is_empty() {
            return Err("the question has no tokens".into());
        }
        Ok(t)
    }
}

/// Multiplies each `ok` record's reward by the gate of its PMI (`pmis[i]` scored the same
/// response as `records[i]`); a missing PMI fails the record with an error saying why.
pub fn apply(records: &mut [JudgeRecord], pmis: &[Result<f64, String>]) {
    debug_assert_eq!(records.len(), pmis.len());
    for (record, pmi) in records.iter_mut().zip(pmis) {
        if record.status != Status::Ok {
            continue;
        }
        match (pmi, record.reward) {
            (Ok(pmi), Some(reward)) => {
                let g = gate_value(*pmi);
                record.reward = Some((reward * g).clamp(0.0, 1.0));
                record.gate = Some(GateVerdict {
                    statement: RELEVANCE_STATEMENT.to_string(),
                    p_yes: g,
                    pmi: Some(*pmi),
                });
            }
            (pmi, _) => {
                record.status = Status::Error;
                record.reward = None;
                record.error = Some(format!(
                    "relevance gate: {}",
                    pmi.as_ref()
                        .err()
                        .map_or("no reward to gate", |e| e.as_str())
                ));
            }
        }
    }
}

/// The relevance stage of a job: scores the (question, response) of every `ok` record that has
/// one (`pairs[i]` belongs to `records[i]`), gates those records ([`apply`]; the others are left
/// as they are) and adds the stage's requests and time to `summary`.
pub fn gate_records(
    scorer: &RelevanceScorer<'_>,
    records: &mut [JudgeRecord],
    pairs: &[Option<(&str, &str)>],
    summary: &mut JudgeSummary,
    progress: &dyn Fn(usize, usize),
) {
    debug_assert_eq!(records.len(), pairs.len());
    let t0 = Instant::now();
    let wanted: Vec<Option<(&str, &str)>> = records
        .iter()
        .zip(pairs)
        .map(|(r, p)| p.filter(|_| r.status == Status::Ok))
        .collect();
    let todo: Vec<(&str, &str)> = wanted.iter().flatten().copied().collect();
    let mut scored = scorer.score(&todo, progress).into_iter();
    let pmis: Vec<Result<f64, String>> = wanted
        .iter()
        .map(|p| match p {
            Some(_) => scored.next().expect("one PMI per scored pair"),
            None => Err("no question and response to score".into()),
        })
        .collect();
    apply(records, &pmis);
    let stage = JudgeSummary {
        requests: todo.len(),
        seconds: t0.elapsed().as_secs_f64(),
        ..JudgeSummary::default()
    };
    summary.gate(records, &stage);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::record::Mode;

    fn record(status: Status, reward: Option<f64>) -> JudgeRecord {
        JudgeRecord {
            item_id: Some("q".into()),
            response_id: Some("r".into()),
            reward,
            status,
            criteria: Vec::new(),
            mode: Mode::Logprob,
            model_sha256: String::new(),
            template_hash: String::new(),
            aggregator: None,
            holistic: None,
            gate: None,
            error: None,
            line: 1,
            schema_version: 1,
        }
    }

    #[test]
    fn the_gate_is_a_logistic_of_the_pmi() {
        assert_eq!(gate_value(0.0), 0.5);
        assert!(gate_value(1.0) > 0.98 && gate_value(-1.0) < 0.02);
        let xs = [-2.0, -0.5, -0.1, 0.0, 0.1, 0.5, 2.0];
        assert!(xs.windows(2).all(|w| gate_value(w[0]) < gate_value(w[1])));
        assert!((gate_value(0.3) + gate_value(-0.3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_template_has_only_the_response() {
        let t = relevance_template().expect("parses");
        let msgs = t.render(&[("response", "Some text.")]).expect("renders");
        let user = msgs
            .iter()
            .find(|m| m.content.contains("Some text."))
            .expect("user turn");
        assert!(user
            .content
            .contains("Write the question that this text answers."));
        assert!(!user.content.contains("{{"));
    }

    #[test]
    fn apply_gates_ok_records_and_fails_the_ones_without_a_pmi() {
        let mut records = vec![
            record(Status::Ok, Some(0.8)),
            record(Status::Ok, Some(0.8)),
            record(Status::ResponseTooLong, None),
        ];
        let pmis = vec![Ok(0.25), Err("engine stopped".to_string()), Ok(1.0)];
        apply(&mut records, &pmis);
        let g = records[0].gate.as_ref().expect("gate recorded");
        assert_eq!(g.pmi, Some(0.25));
        assert_eq!(g.p_yes, gate_value(0.25));
        assert_eq!(g.statement, RELEVANCE_STATEMENT);
        assert!((records[0].reward.expect("gated") - 0.8 * gate_value(0.25)).abs() < 1e-12);
        assert_eq!(records[1].status, Status::Error);
        assert_eq!(records[1].reward, None);
        assert!(records[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("relevance gate") && e.contains("engine stopped")));
        assert_eq!(records[2].status, Status::ResponseTooLong);
        assert!(records[2].gate.is_none());
    }
}

//! Support mode: how much a response supports each rubric criterion, read off the model's
//! likelihood of the criterion as a one-sentence summary of the response. Nothing is decoded and
//! nothing is parsed.
//!
//! For a criterion c ("States that X") of an item with question Q, the prompt is
//! `templates/judge_support.txt` filled with Q and the response R, rendered with the chat
//! template, followed by [`SUMMARY_LEAD`] and then c with its first letter lower-cased
//! (" states that X"). The engine reports the log-prob of each of c's tokens
//! (`Request::score_last`); `lp(R)` is their mean. The same with R replaced by [`NO_ANSWER`]
//! gives the criterion's baseline `lp(∅)`, computed once per (question, criterion) in a job.
//! `pmi = lp(R) − lp(∅)` (pointwise mutual information per token): how much more likely the
//! response makes the statement than no answer does. The verdict is σ(pmi) in (0, 1), and the
//! reward aggregates verdicts with the job's aggregator exactly as in logprob mode (a pitfall's
//! verdict is how strongly the response states the mistake).
//!
//! Why (issue 12): the 1.5B judge's P(yes) reflects whether a statement is true in general, not
//! whether the response makes it (0.75 for "States that Coenzyme is a vital component of
//! cellular metabolism" on a page about medicines in pregnancy). Measured with `ares eval
//! --limit 100` on medquad (benches/RESULTS.md), the rubric reward's Spearman with expert grades
//! was 0.609 with this mode against 0.332 with P(yes) on the seed-1 sample, where it was tuned,
//! but 0.167 against 0.388 on the seed-0 sample: an option, not the default.
//!
//! Invariants:
//! - one record per input, in order; a record has a reward only with status `ok`, otherwise
//!   `error` says why (never a silent 0);
//! - a reward depends only on the item, the response, the model and the template (the engine
//!   computes rows independently of the batch; the baseline is a function of the question and
//!   the criterion only);
//! - needs the local engine: remote servers do not report prompt log-probs (their requests fail
//!   with a clear error, recorded per response).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::engine::generator::collect;
use crate::engine::{Completion, Event, Generator, Prompt, Request};
use crate::error::Error as EngineError;
use crate::judge::aggregate::{Aggregator, Scored, Verdict};
use crate::judge::input::{
    check, check_each, number_by_file_line, Checked, Pair, ResponseEntry, RubricSet,
};
use crate::judge::judge::{defuse, Judge, JudgeError};
use crate::judge::record::{
    CriterionVerdict, JudgeProgress, JudgeRecord, JudgeSummary, Mode, Status, JUDGE_RECORD_VERSION,
};
use crate::judge::rubric::RubricItem;
use crate::judge::template::PromptTemplate;
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;

/// Source of the support-mode template.
pub const SUPPORT_SOURCE: &str = include_str!("../../templates/judge_support.txt");

/// Start of the assistant's summary; the criterion follows it.
pub const SUMMARY_LEAD: &str = "The answer";

/// What stands in for the response in a criterion's baseline prompt.
pub const NO_ANSWER: &str = "(no answer)";

/// The support-mode template: placeholders question, response (last).
pub fn support_template() -> Result<PromptTemplate, crate::judge::template::TemplateError> {
    PromptTemplate::parse(
        "judge_support.txt",
        SUPPORT_SOURCE,
        &["question"],
        "response",
    )
}

/// σ(pmi): the verdict of a criterion whose per-token PMI is `pmi`.
pub fn support_verdict(pmi: f64) -> f64 {
    1.0 / (1.0 + (-pmi).exp())
}

/// `text` with its first letter lower-cased and a space before it (the criterion as the rest of
/// "The answer ..."). A leading acronym ("HIV is ...", two capitals) keeps its case.
pub fn continuation(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let first = chars.next();
    let second = chars.next();
    let keep = matches!(second, Some(c) if c.is_uppercase());
    match first {
        Some(f) if !keep => format!(" {}{}", f.to_lowercase(), &text[f.len_utf8()..]),
        _ => format!(" {text}"),
    }
}

/// `template` filled with `values`, empty messages dropped, rendered with the generator's chat
/// template, followed by `lead`, as prompt tokens: the context a scored continuation follows
/// (support mode and the relevance gate).
pub(crate) fn scoring_context(
    template: &PromptTemplate,
    values: &[(&str, &str)],
    generator: &dyn Generator,
    tokenizer: &Tokenizer,
    lead: &str,
) -> Result<Vec<TokenId>, String> {
    let messages: Vec<_> = template
        .render(values)
        .map_err(|e| EngineError::ChatTemplate(e.to_string()).to_string())?
        .into_iter()
        .filter(|m| !m.content.is_empty())
        .collect();
    let text = generator
        .chat_prompt(&messages)
        .map_err(|e| e.to_string())?
        + lead;
    tokenizer.encode_prompt(&text).map_err(|e| e.to_string())
}

/// A request that decodes nothing and reports the log-prob of each of `scored`'s tokens after
/// `context`.
pub(crate) fn scoring_request(id: &str, context: &[TokenId], scored: &[TokenId]) -> Request {
    let mut tokens = Vec::with_capacity(context.len() + scored.len());
    tokens.extend_from_slice(context);
    tokens.extend_from_slice(scored);
    let mut req = Request::new(id.to_string(), Prompt::Tokens(tokens));
    req.max_tokens = 0;
    req.score_last = scored.len();
    req
}

/// The mean of a scoring request's prompt log-probs; none, or one not finite, is an error.
pub(crate) fn mean_prompt_logprob(c: &Completion) -> Result<f64, EngineError> {
    let n = c.prompt_logprobs.len();
    if n == 0 || c.prompt_logprobs.iter().any(|x| !x.is_finite()) {
        return Err(EngineError::InvalidRequest {
            request: c.id.clone(),
            reason: format!("the engine reported {n} prompt log-probs, not all finite"),
        });
    }
    Ok(c.prompt_logprobs.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64)
}

/// A configured support-mode judge over a generator.
pub struct SupportJudge<'g> {
    generator: &'g dyn Generator,
    tokenizer: &'g Tokenizer,
    template: PromptTemplate,
    aggregator: Aggregator,
    model_sha256: String,
    control_texts: Vec<String>,
    max_in_flight: usize,
}

/// One scoring request: the shared context (question and response, rendered and tokenized once
/// per response) and the criterion tokens scored after it.
struct Scoring {
    context: Rc<Vec<TokenId>>,
    scored: Vec<TokenId>,
}

/// A scoring request's outcome: the mean log-prob per token, or the record status and error.
type Outcome = Result<f64, (Status, String)>;

/// Where a request's result goes.
#[derive(Clone, Copy)]
enum Slot {
    /// (input index, criterion index)
    Response(usize, usize),
    /// index into the baselines
    Baseline(usize),
}

impl<'g> SupportJudge<'g> {
    pub fn new(
        generator: &'g dyn Generator,
        tokenizer: &'g Tokenizer,
        model_sha256: &str,
        aggregator: Aggregator,
        max_in_flight: usize,
    ) -> Result<Self, JudgeError> {
        Ok(SupportJudge {
            generator,
            tokenizer,
            template: support_template()?,
            aggregator,
            model_sha256: model_sha256.to_string(),
            control_texts: tokenizer.control_token_texts(),
            max_in_flight: max_in_flight.max(1),
        })
    }

    pub fn template_hash(&self) -> &str {
        self.template.hash()
    }

    /// The prompt for `question` and `response` up to the criterion, as tokens.
    fn context(&self, question: &str, response: &str) -> Result<Rc<Vec<TokenId>>, String> {
        scoring_context(
            &self.template,
            &[("question", question), ("response", response)],
            self.generator,
            self.tokenizer,
            SUMMARY_LEAD,
        )
        .map(Rc::new)
    }

    /// The criterion's tokens as the rest of the summary.
    fn criterion_tokens(&self, criterion: &str) -> Result<Vec<TokenId>, String> {
        let scored = self
            .tokenizer
            .encode(&continuation(criterion))
            .map_err(|e| e.to_string())?;
        if scored.is_empty() {
            return Err(EngineError::InvalidRequest {
                request: criterion.to_string(),
                reason: "the criterion has no tokens".into(),
            }
            .to_string());
        }
        Ok(scored)
    }

    fn blank_record(
        &self,
        line: usize,
        item_id: Option<String>,
        response_id: Option<String>,
    ) -> JudgeRecord {
        JudgeRecord {
            item_id,
            response_id,
            reward: None,
            status: Status::Error,
            criteria: Vec::new(),
            mode: Mode::Support,
            model_sha256: self.model_sha256.clone(),
            template_hash: self.template.hash().to_string(),
            aggregator: Some(self.aggregator),
            holistic: None,
            gate: None,
            error: None,
            line,
            schema_version: JUDGE_RECORD_VERSION,
        }
    }

    /// Judges a responses file's entries: the file-level checks ([`check`]) first, then the usable
    /// pairs; one record per entry, `line` being the entry's line in the file.
    pub fn run(
        &self,
        rubrics: &RubricSet,
        responses: &[ResponseEntry],
        progress: &dyn Fn(&JudgeProgress),
    ) -> (Vec<JudgeRecord>, JudgeSummary) {
        let (mut records, summary) = self.score_checked(check(rubrics, responses), progress);
        number_by_file_line(&mut records, responses);
        (records, summary)
    }

    /// Scores each (item, response id, response); one record per input, in order (`line` is the
    /// input's 1-based position).
    pub fn score_each(
        &self,
        inputs: &[(&RubricItem, &str, &str)],
        progress: &dyn Fn(&JudgeProgress),
    ) -> (Vec<JudgeRecord>, JudgeSummary) {
        self.score_checked(check_each(inputs), progress)
    }

    /// Scores the ready entries; the rejected ones get their error records. One record per
    /// entry, in order.
    fn score_checked(
        &self,
        checked: Vec<Checked<'_>>,
        progress: &dyn Fn(&JudgeProgress),
    ) -> (Vec<JudgeRecord>, JudgeSummary) {
        let t0 = Instant::now();
        let mut records: Vec<JudgeRecord> = Vec::with_capacity(checked.len());
        let mut pairs: Vec<Option<Pair<'_>>> = Vec::with_capacity(checked.len());
        for (i, c) in checked.into_iter().enumerate() {
            match c {
                Checked::Ready(p) => {
                    records.push(self.blank_record(
                        i + 1,
                        Some(p.item().id.clone()),
                        Some(p.response_id().to_string()),
                    ));
                    pairs.push(Some(p));
                }
                Checked::Rejected {
                    item_id,
                    response_id,
                    error,
                } => {
                    let mut r = self.blank_record(i + 1, item_id, response_id);
                    r.error = Some(error);
                    records.push(r);
                    pairs.push(None);
                }
            }
        }
        // Per entry: the mean log-prob per token of each criterion, once known.
        let mut lp: Vec<Vec<Option<Outcome>>> = pairs
            .iter()
            .map(|p| match p {
                Some(p) => p.item().criteria.iter().map(|_| None).collect(),
                None => Vec::new(),
            })
            .collect();
        let mut baseline_index: HashMap<(String, String), usize> = HashMap::new();
        let mut baselines: Vec<Option<Outcome>> = Vec::new();
        let mut base_of: Vec<Vec<usize>> = vec![Vec::new(); pairs.len()];
        // The no-answer context of each question, rendered and tokenized once.
        let mut no_answer: HashMap<&str, Result<Rc<Vec<TokenId>>, String>> = HashMap::new();
        let mut jobs: Vec<(Slot, Result<Scoring, String>)> = Vec::new();
        let job = |context: &Result<Rc<Vec<TokenId>>, String>, criterion: &str| {
            let context = context.clone()?;
            Ok(Scoring {
                context,
                scored: self.criterion_tokens(criterion)?,
            })
        };
        for (i, p) in pairs.iter().enumerate() {
            let Some(p) = p else { continue };
            let item = p.item();
            let context = self.context(&item.question, &defuse(p.response(), &self.control_texts));
            let base_context = no_answer
                .entry(item.question.as_str())
                .or_insert_with(|| self.context(&item.question, NO_ANSWER));
            for (k, c) in item.criteria.iter().enumerate() {
                let key = (item.question.clone(), c.text.clone());
                let b = *baseline_index.entry(key).or_insert_with(|| {
                    baselines.push(None);
                    jobs.push((
                        Slot::Baseline(baselines.len() - 1),
                        job(base_context, &c.text),
                    ));
                    baselines.len() - 1
                });
                base_of[i].push(b);
                jobs.push((Slot::Response(i, k), job(&context, &c.text)));
            }
        }
        let mut summary = JudgeSummary::default();
        let n_entries = records.len();
        let total = jobs.len();
        // A job whose prompt could not be built carries its error instead of a receiver.
        type Submitted = Result<Result<Receiver<Event>, EngineError>, String>;
        let mut in_flight: VecDeque<(Slot, String, Submitted)> = VecDeque::new();
        let mut jobs = jobs.into_iter().enumerate();
        let mut done = 0usize;
        loop {
            while in_flight.len() < self.max_in_flight {
                let Some((n, (slot, scoring))) = jobs.next() else {
                    break;
                };
                let id = format!("support-{n}");
                let rx = scoring.map(|s| {
                    self.generator
                        .submit(scoring_request(&id, &s.context, &s.scored))
                });
                in_flight.push_back((slot, id, rx));
            }
            let Some((slot, id, rx)) = in_flight.pop_front() else {
                break;
            };
            let result = match rx {
                Err(e) => Err((Status::Error, e)),
                Ok(rx) => rx
                    .and_then(|rx| collect(id, rx))
                    .and_then(|c| {
                        summary.prompt_tokens += c.usage.prompt_tokens;
                        summary.cached_tokens += c.usage.cached_tokens;
                        mean_prompt_logprob(&c)
                    })
                    .map_err(|e| {
                        let status = match e {
                            EngineError::PromptTooLong { .. } => Status::ResponseTooLong,
                            _ => Status::Error,
                        };
                        (status, e.to_string())
                    }),
            };
            done += 1;
            summary.requests += 1;
            match slot {
                Slot::Response(i, k) => lp[i][k] = Some(result),
                Slot::Baseline(b) => baselines[b] = Some(result),
            }
            progress(&JudgeProgress {
                responses_done: 0,
                responses_total: n_entries,
                requests_done: done,
                requests_total: total,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        for (i, p) in pairs.iter().enumerate() {
            let Some(p) = p else {
                summary.count(records[i].status);
                continue;
            };
            let item = p.item();
            let rec = &mut records[i];
            let mut scored = Vec::new();
            let mut failure: Option<(Status, String)> = None;
            for (k, c) in item.criteria.iter().enumerate() {
                let pair = match (&lp[i][k], &baselines[base_of[i][k]]) {
                    (Some(Ok(r)), Some(Ok(b))) => Some((*r, *b)),
                    (Some(Err((status, e))), _) | (_, Some(Err((status, e)))) => {
                        failure.get_or_insert((*status, format!("criterion {}: {e}", c.id)));
                        None
                    }
                    _ => None,
                };
                let (verdict, pmi) = match pair {
                    Some((r, b)) => (Some(support_verdict(r - b)), Some(r - b)),
                    None => (None, None),
                };
                if let Some(v) = verdict {
                    scored.push(Scored::new(c.weight, Verdict::Soft(v)));
                }
                rec.criteria.push(CriterionVerdict {
                    id: c.id.clone(),
                    verdict: verdict.map(Verdict::Soft),
                    p_yes: None,
                    weight: c.weight,
                    verdict_mass: None,
                    reason: None,
                    matched_by: None,
                    pmi,
                });
            }
            match failure {
                Some((status, error)) => {
                    rec.status = status;
                    rec.error = Some(error);
                }
                None => match self.aggregator.aggregate(&scored) {
                    Ok(r) => {
                        rec.status = Status::Ok;
                        rec.reward = Some(r);
                    }
                    Err(e) => rec.error = Some(e.to_string()),
                },
            }
            summary.count(rec.status);
        }
        summary.seconds = t0.elapsed().as_secs_f64();
        progress(&JudgeProgress {
            responses_done: n_entries,
            responses_total: n_entries,
            requests_done: done,
            requests_total: total,
            seconds: summary.seconds,
        });
        (records, summary)
    }
}

/// Either judge behind one interface, for the jobs that pick the mode at run time (`ares judge`,
/// `ares eval`).
pub enum ResponseJudge<'g> {
    /// Logprob, holistic or generate mode.
    Verdicts(Judge<'g>),
    /// Support mode.
    Support(SupportJudge<'g>),
}

impl ResponseJudge<'_> {
    /// See [`Judge::run`].
    pub fn run(
        &self,
        rubrics: &RubricSet,
        responses: &[ResponseEntry],
        progress: &dyn Fn(&JudgeProgress),
    ) -> (Vec<JudgeRecord>, JudgeSummary) {
        match self {
            ResponseJudge::Verdicts(j) => j.run(rubrics, responses, progress),
            ResponseJudge::Support(j) => j.run(rubrics, responses, progress),
        }
    }

    /// See [`Judge::score_each`].
    pub fn score_each(
        &self,
        inputs: &[(&RubricItem, &str, &str)],
        progress: &dyn Fn(&JudgeProgress),
    ) -> (Vec<JudgeRecord>, JudgeSummary) {
        match self {
            ResponseJudge::Verdicts(j) => j.score_each(inputs, progress),
            ResponseJudge::Support(j) => j.score_each(inputs, progress),
        }
    }

    pub fn template_hash(&self) -> &str {
        match self {
            ResponseJudge::Verdicts(j) => j.template_hash(),
            ResponseJudge::Support(j) => j.template_hash(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lowers_the_lead_verb_but_not_an_acronym() {
        assert_eq!(continuation("States that X."), " states that X.");
        assert_eq!(continuation("  Warns that Y"), " warns that Y");
        assert_eq!(continuation("HIV is a virus."), " HIV is a virus.");
        assert_eq!(continuation("Écrit"), " écrit");
    }

    #[test]
    fn the_verdict_is_the_logistic_of_the_pmi() {
        assert_eq!(support_verdict(0.0), 0.5);
        assert!(support_verdict(2.0) > 0.88 && support_verdict(-2.0) < 0.12);
    }

    #[test]
    fn the_template_has_the_response_last() {
        let t = support_template().unwrap();
        let m = t.render(&[("question", "Q?"), ("response", "R.")]).unwrap();
        assert!(m[0].content.is_empty(), "no system message");
        assert!(m[1].content.contains("Question: Q?") && m[1].content.contains("R."));
    }
}

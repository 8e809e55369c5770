//! Topic gate (issue 12): one extra yes/no statement checked on every response, in logprob mode,
//! whose P(yes) multiplies the rubric reward. A rubric checks facts; with the 1.5B judge an
//! off-topic answer that shares words with the question still gets "yes" on many of them (a page
//! on "blockage of upper airway" for a question on bundle branch block, medquad). A gate such as
//! [`MEDICAL_GATE`] asks the one thing such pages fail, so their reward is scaled down by the
//! judge's doubt (with the 1.5B judge that doubt is mild: P(yes) 0.51-0.66 on clearly off-topic
//! medquad pages).
//!
//! Measured (benches/RESULTS.md, `ares eval` on medquad, Qwen2.5-Coder-1.5B, 100 answers per
//! seeded sample), Spearman of the reward with expert grades, rubric logprob without / with
//! [`MEDICAL_GATE`]: 0.332 / 0.386 on the seed-1 sample the statement was chosen on, 0.388 /
//! 0.433 and 0.320 / 0.331 on the held-out seed-0 and seed-2 samples (paired gain on those two,
//! +0.025 [-0.016, 0.063]: small, not significant; an option). General wordings ("Is about the same topic as the
//! question.") gained nothing on either sample: the gate works when it names the kind of thing
//! to match, so it is the user's statement (`ares judge --gate`), not a built-in default.
//!
//! How: [`gate_item`] turns each rubric item into a one-criterion item (same id and question,
//! the criterion [`GATE_ID`] with the statement); the caller judges those in logprob mode (same
//! model, template, verdict cache) and [`apply`] multiplies. Pure functions, no model and no
//! I/O here.
//!
//! Invariants: a gated record keeps its criteria and aggregator, gets `gate` ({statement, p_yes})
//! and reward = rubric reward × gate P(yes), still in [0, 1]; a record whose gate verdict failed
//! is not `ok` (reward null, error naming the gate), never an ungated reward passed off as
//! gated; records that were not `ok` stay as they are.

use crate::judge::record::{GateVerdict, JudgeRecord, Status};
use crate::judge::rubric::{Category, Criterion, RubricItem};

/// Id of the gate's criterion in the one-criterion items of [`gate_item`].
pub const GATE_ID: &str = "gate";

/// The gate `ares eval` uses on medquad (consumer-health questions): the answer must be about
/// the condition, drug or test asked about.
pub const MEDICAL_GATE: &str =
    "Is about the same condition, medicine or test that the question asks about.";

/// Why a gate statement is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("the gate statement is empty")]
    Empty,
}

/// The statement, trimmed; an empty one is an error.
pub fn check_statement(statement: &str) -> Result<&str, GateError> {
    let s = statement.trim();
    if s.is_empty() {
        return Err(GateError::Empty);
    }
    Ok(s)
}

/// `item` with its criteria replaced by the one gate criterion (weight 1, essential); id,
/// question, messages and reference are kept, so the gate prompt shows what the rubric's
/// prompts show.
pub fn gate_item(item: &RubricItem, statement: &str) -> RubricItem {
    let mut gated = item.clone();
    gated.criteria = vec![Criterion::new(GATE_ID, statement, 1.0, Category::Essential)];
    gated
}

/// Multiplies each `ok` record's reward by its gate record's P(yes) (`gates[i]` judged the same
/// response as `records[i]` against [`gate_item`]). A gate record that is not `ok`, or has no
/// P(yes), makes its record fail with the gate's status and an error saying so.
pub fn apply(records: &mut [JudgeRecord], gates: &[JudgeRecord], statement: &str) {
    debug_assert_eq!(records.len(), gates.len());
    for (record, gate) in records.iter_mut().zip(gates) {
        if record.status != Status::Ok {
            continue;
        }
        let p = gate
            .criteria
            .iter()
            .find(|c| c.id == GATE_ID)
            .and_then(|c| c.p_yes);
        match (gate.status, p, record.reward) {
            (Status::Ok, Some(p), Some(reward)) => {
                record.reward = Some((reward * p).clamp(0.0, 1.0));
                record.gate = Some(GateVerdict {
                    statement: statement.to_string(),
                    p_yes: p,
                    pmi: None,
                });
            }
            (status, _, _) => {
                record.status = if status == Status::Ok {
                    Status::JudgeUnparseable
                } else {
                    status
                };
                record.reward = None;
                record.error = Some(format!(
                    "topic gate: {}",
                    gate.error.as_deref().unwrap_or("no usable verdict")
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::record::{CriterionVerdict, Mode};
    use crate::judge::Verdict;

    fn record(status: Status, reward: Option<f64>, p_gate: Option<f64>) -> JudgeRecord {
        JudgeRecord {
            item_id: Some("q".into()),
            response_id: Some("r".into()),
            reward,
            status,
            criteria: p_gate
                .map(|p| {
                    vec![CriterionVerdict {
                        id: GATE_ID.into(),
                        verdict: Some(Verdict::Soft(p)),
                        p_yes: Some(p),
                        weight: 1.0,
                        verdict_mass: Some(0.99),
                        reason: None,
                        matched_by: None,
                        pmi: None,
                    }]
                })
                .unwrap_or_default(),
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
    fn the_gate_item_keeps_the_question_and_has_one_criterion() {
        let item = RubricItem::new("q", "What is X?", vec![]);
        let g = gate_item(&item, MEDICAL_GATE);
        assert_eq!((g.id.as_str(), g.question.as_str()), ("q", "What is X?"));
        assert_eq!(g.criteria.len(), 1);
        assert_eq!(g.criteria[0].id, GATE_ID);
        assert_eq!(g.criteria[0].text, MEDICAL_GATE);
        assert!(g.criteria[0].weight > 0.0);
        assert_eq!(check_statement("  "), Err(GateError::Empty));
        assert_eq!(check_statement(" Is about X. "), Ok("Is about X."));
    }

    #[test]
    fn the_reward_is_multiplied_and_a_failed_gate_fails_the_record() {
        let mut records = vec![
            record(Status::Ok, Some(0.8), None),
            record(Status::Ok, Some(0.8), None),
            record(Status::ResponseTooLong, None, None),
            record(Status::Ok, Some(0.6), None),
        ];
        let mut failed = record(Status::Error, None, None);
        failed.error = Some("engine stopped".into());
        let gates = vec![
            record(Status::Ok, None, Some(0.25)),
            failed,
            record(Status::Ok, None, Some(0.9)),
            record(Status::Ok, None, None),
        ];
        apply(&mut records, &gates, "Is about X.");
        assert!((records[0].reward.expect("gated") - 0.2).abs() < 1e-12);
        let g = records[0].gate.as_ref().expect("gate recorded");
        assert_eq!((g.statement.as_str(), g.p_yes), ("Is about X.", 0.25));
        assert_eq!(records[1].status, Status::Error);
        assert_eq!(records[1].reward, None);
        assert!(records[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("topic gate") && e.contains("engine stopped")));
        // Not ok before: left alone.
        assert_eq!(records[2].status, Status::ResponseTooLong);
        assert!(records[2].gate.is_none());
        // An ok gate record without a P(yes): never an ungated reward.
        assert_eq!(records[3].status, Status::JudgeUnparseable);
        assert_eq!(records[3].reward, None);
    }
}

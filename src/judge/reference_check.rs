//! Criterion-level rubric validity against a reference answer (issue 12): a rubric written beside
//! a reference answer should be met by it. Given the judge's logprob record of that reference
//! under the rubric, [`check_against_reference`] keeps each positive criterion the reference meets
//! (P(yes) ≥ [`REFERENCE_THRESHOLD`]) and each pitfall it avoids (P(yes) < the threshold), and
//! drops the rest with the measured P(yes) and the reason, so a criterion the grader reads
//! differently from its writer (vague, about something the answer does not say, or a "pitfall"
//! the reference itself commits) never reaches a reward. [`reward_with`] re-aggregates any
//! record of the same rubric over the kept criteria, without judging again.
//! [`check_against_reference_at`] raises the bar for positive criteria only (`ares synth` keeps
//! a positive criterion at P(yes) ≥ 0.7; `ares eval` uses the plain check).
//! [`drop_pitfalls_the_source_states`] is `ares synth`'s second look at the pitfalls: the source
//! passage judged as a response; a pitfall the passage itself states (P(yes) at the bar a
//! positive criterion needs to count as met) is a true statement, not a mistake, and is dropped.
//!
//! Pure functions: no model, no I/O. Invariants: the kept rubric is the input rubric minus the
//! dropped criteria, in the input order, ids unchanged; a criterion without a verdict is dropped
//! (never counted as met or avoided); a record that is not `ok` or does not cover the rubric
//! criterion by criterion is an error, never a silently unpruned rubric.

use serde::{Deserialize, Serialize};

use crate::judge::aggregate::{AggregateError, Aggregator, Scored};
use crate::judge::record::{JudgeRecord, Status};
use crate::judge::rubric::RubricItem;

/// A positive criterion counts as met, a pitfall as committed, at this P(yes) or above.
pub const REFERENCE_THRESHOLD: f64 = 0.5;

/// A criterion taken out of a rubric because its reference answer fails it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedCriterion {
    pub id: String,
    pub text: String,
    pub weight: f64,
    /// The judge's P(yes) for the reference answer; null when it gave no usable verdict.
    pub p_yes_reference: Option<f64>,
    /// The judge's P(yes) for the source passage, where that is why it was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_yes_source: Option<f64>,
    pub reason: String,
}

/// A rubric after the reference check.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceChecked {
    pub item: RubricItem,
    pub dropped: Vec<DroppedCriterion>,
}

/// Why a rubric could not be checked against its reference answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceCheckError {
    #[error("the reference answer was not judged: status {status}: {error}")]
    NotJudged { status: Status, error: String },
    #[error("the reference answer's record has {got} criteria, the rubric {want}")]
    Mismatch { got: usize, want: usize },
    #[error("the reference answer's record names criterion `{got}` where the rubric has `{want}`")]
    WrongCriterion { got: String, want: String },
}

/// Keeps the criteria the reference answer meets (positive weight) or avoids (pitfall), given
/// `reference`, the logprob-mode record of the reference answer judged against `item`.
pub fn check_against_reference(
    item: &RubricItem,
    reference: &JudgeRecord,
) -> Result<ReferenceChecked, ReferenceCheckError> {
    check_against_reference_at(item, reference, REFERENCE_THRESHOLD)
}

/// [`check_against_reference`] with a stricter bar for positive criteria: one is kept only when
/// the reference meets it with P(yes) >= `min_met` (pitfalls still need P(yes) < 0.5). `ares
/// synth` uses 0.7: a criterion the judge is unsure of even on the ideal answer is noise in a
/// reward.
pub fn check_against_reference_at(
    item: &RubricItem,
    reference: &JudgeRecord,
    min_met: f64,
) -> Result<ReferenceChecked, ReferenceCheckError> {
    if reference.status != Status::Ok {
        return Err(ReferenceCheckError::NotJudged {
            status: reference.status,
            error: reference.error.clone().unwrap_or_default(),
        });
    }
    if reference.criteria.len() != item.criteria.len() {
        return Err(ReferenceCheckError::Mismatch {
            got: reference.criteria.len(),
            want: item.criteria.len(),
        });
    }
    let mut kept = Vec::with_capacity(item.criteria.len());
    let mut dropped = Vec::new();
    for (c, v) in item.criteria.iter().zip(&reference.criteria) {
        if v.id != c.id {
            return Err(ReferenceCheckError::WrongCriterion {
                got: v.id.clone(),
                want: c.id.clone(),
            });
        }
        let pitfall = c.weight < 0.0;
        let reason = match v.p_yes {
            None => Some("no usable verdict for the reference answer".to_string()),
            Some(p) if pitfall && p >= REFERENCE_THRESHOLD => Some(format!(
                "the reference answer commits this pitfall (P(yes) {p:.3} >= {REFERENCE_THRESHOLD})"
            )),
            Some(p) if !pitfall && p < min_met => Some(format!(
                "the reference answer does not meet it (P(yes) {p:.3} < {min_met})"
            )),
            Some(_) => None,
        };
        match reason {
            Some(reason) => dropped.push(DroppedCriterion {
                id: c.id.clone(),
                text: c.text.clone(),
                weight: c.weight,
                p_yes_reference: v.p_yes,
                p_yes_source: None,
                reason,
            }),
            None => kept.push(c.clone()),
        }
    }
    let mut out = item.clone();
    out.criteria = kept;
    Ok(ReferenceChecked { item: out, dropped })
}

/// Drops from `checked` (a rubric after [`check_against_reference_at`]) every pitfall that
/// `source`, the logprob-mode record of the source passage judged against the same rubric, meets
/// with P(yes) >= `min_true`: the passage states it, so it is a true statement rather than a
/// mistake (the models write such "pitfalls" from the passage: "Claims that pop() can remove the
/// last element"). Positive criteria are left alone (a reference answer may go beyond the
/// passage's wording). `reference` gives the dropped criteria's `p_yes_reference`. A pitfall
/// without a verdict on the source is kept: this check only removes what it has evidence
/// against. Errors as [`check_against_reference_at`] when `source` is not `ok` or lacks a kept
/// criterion.
pub fn drop_pitfalls_the_source_states(
    checked: ReferenceChecked,
    reference: &JudgeRecord,
    source: &JudgeRecord,
    min_true: f64,
) -> Result<ReferenceChecked, ReferenceCheckError> {
    if source.status != Status::Ok {
        return Err(ReferenceCheckError::NotJudged {
            status: source.status,
            error: source.error.clone().unwrap_or_default(),
        });
    }
    let p_of = |r: &JudgeRecord, id: &str| r.criteria.iter().find(|v| v.id == id).map(|v| v.p_yes);
    let ReferenceChecked {
        mut item,
        mut dropped,
    } = checked;
    let mut kept = Vec::with_capacity(item.criteria.len());
    for c in item.criteria {
        let p = p_of(source, &c.id).ok_or_else(|| ReferenceCheckError::WrongCriterion {
            got: "(none)".into(),
            want: c.id.clone(),
        })?;
        match p {
            Some(p) if c.weight < 0.0 && p >= min_true => dropped.push(DroppedCriterion {
                id: c.id.clone(),
                text: c.text.clone(),
                weight: c.weight,
                p_yes_reference: p_of(reference, &c.id).flatten(),
                p_yes_source: Some(p),
                reason: format!(
                    "the source passage states it (P(yes) {p:.3} >= {min_true}): a true statement is not a pitfall"
                ),
            }),
            _ => kept.push(c),
        }
    }
    item.criteria = kept;
    Ok(ReferenceChecked { item, dropped })
}

/// The reward of `record` (any response judged against the full rubric) over the criteria of
/// `kept` only, with `aggregator`. Errors when a kept criterion has no verdict in the record.
pub fn reward_with(
    record: &JudgeRecord,
    kept: &RubricItem,
    aggregator: Aggregator,
) -> Result<f64, AggregateError> {
    let mut scored = Vec::with_capacity(kept.criteria.len());
    for c in &kept.criteria {
        let verdict = record
            .criteria
            .iter()
            .find(|v| v.id == c.id)
            .and_then(|v| v.verdict)
            .ok_or(AggregateError::Empty)?;
        scored.push(Scored::new(c.weight, verdict));
    }
    aggregator.aggregate(&scored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::aggregate::Verdict;
    use crate::judge::record::{CriterionVerdict, Mode};
    use crate::judge::rubric::{Category, Criterion};

    fn item() -> RubricItem {
        let c = |id: &str, w: f64, cat| Criterion::new(id, format!("States fact {id}."), w, cat);
        RubricItem::new(
            "q1",
            "Why is the sky blue?",
            vec![
                c("a", 9.0, Category::Essential),
                c("b", 5.0, Category::Important),
                c("c", -7.0, Category::Pitfall),
                c("d", -4.0, Category::Pitfall),
            ],
        )
    }

    fn record(p: &[Option<f64>]) -> JudgeRecord {
        let it = item();
        JudgeRecord {
            item_id: Some("q1".into()),
            response_id: Some("reference".into()),
            reward: Some(0.5),
            status: Status::Ok,
            criteria: it
                .criteria
                .iter()
                .zip(p)
                .map(|(c, p)| CriterionVerdict {
                    id: c.id.clone(),
                    verdict: p.map(Verdict::Soft),
                    p_yes: *p,
                    weight: c.weight,
                    verdict_mass: p.map(|_| 0.99),
                    reason: None,
                    matched_by: None,
                    pmi: None,
                })
                .collect(),
            mode: Mode::Logprob,
            model_sha256: "m".into(),
            template_hash: "t".into(),
            aggregator: Some(Aggregator::RarExplicit),
            holistic: None,
            gate: None,
            error: None,
            line: 1,
            schema_version: 1,
        }
    }

    fn kept_ids(checked: &ReferenceChecked) -> Vec<&str> {
        checked
            .item
            .criteria
            .iter()
            .map(|c| c.id.as_str())
            .collect()
    }

    #[test]
    fn unmet_criteria_and_committed_pitfalls_are_dropped_with_their_p_yes() {
        let r = record(&[Some(0.9), Some(0.3), Some(0.6), None]);
        let checked = check_against_reference(&item(), &r).expect("checked");
        assert_eq!(kept_ids(&checked), ["a"]);
        let dropped: Vec<(&str, Option<f64>)> = checked
            .dropped
            .iter()
            .map(|d| (d.id.as_str(), d.p_yes_reference))
            .collect();
        assert_eq!(dropped, [("b", Some(0.3)), ("c", Some(0.6)), ("d", None)]);
        assert!(checked.dropped[0].reason.contains("does not meet"));
        assert!(checked.dropped[1].reason.contains("commits this pitfall"));
        assert!(checked.dropped[2].reason.contains("no usable verdict"));
    }

    #[test]
    fn a_reference_that_meets_everything_keeps_the_rubric_whole() {
        let r = record(&[Some(0.5), Some(0.99), Some(0.49), Some(0.0)]);
        let checked = check_against_reference(&item(), &r).expect("checked");
        assert_eq!(checked.item, item());
        assert!(checked.dropped.is_empty());
    }

    #[test]
    fn a_stricter_bar_drops_unsure_positives_and_leaves_pitfalls_alone() {
        // a, b positive; c, d pitfalls (see `item`).
        let r = record(&[Some(0.69), Some(0.7), Some(0.49), Some(0.2)]);
        let checked = check_against_reference_at(&item(), &r, 0.7).expect("checked");
        assert_eq!(kept_ids(&checked), ["b", "c", "d"]);
        assert!(
            checked.dropped[0].reason.contains("0.690 < 0.7"),
            "{}",
            checked.dropped[0].reason
        );
        // At the default bar the same verdicts keep everything.
        let checked = check_against_reference(&item(), &r).expect("checked");
        assert!(checked.dropped.is_empty());
    }

    #[test]
    fn rewards_are_recomputed_over_the_kept_criteria() {
        let reference = record(&[Some(0.9), Some(0.2), Some(0.1), Some(0.3)]);
        let checked = check_against_reference(&item(), &reference).expect("checked");
        // Kept: a (+9, 0.9), c (-7, 0.1), d (-4, 0.3). RaR explicit: (9·0.9 + 7·0.9 + 4·0.7) / 20.
        let r = reward_with(&reference, &checked.item, Aggregator::RarExplicit).expect("reward");
        assert!(
            (r - (9.0 * 0.9 + 7.0 * 0.9 + 4.0 * 0.7) / 20.0).abs() < 1e-12,
            "{r}"
        );
        let other = record(&[Some(0.1), Some(0.9), Some(0.9), Some(0.9)]);
        let r = reward_with(&other, &checked.item, Aggregator::RarExplicit).expect("reward");
        assert!(
            (r - (9.0 * 0.1 + 7.0 * 0.1 + 4.0 * 0.1) / 20.0).abs() < 1e-12,
            "{r}"
        );
    }

    #[test]
    fn pitfalls_the_source_states_are_dropped_and_positives_are_not() {
        // a, b positive; c, d pitfalls. The reference avoids both pitfalls; the source passage
        // states c (0.8) and not d (0.69), and "meets" a and b.
        let reference = record(&[Some(0.9), Some(0.9), Some(0.2), Some(0.1)]);
        let checked = check_against_reference_at(&item(), &reference, 0.7).expect("checked");
        assert_eq!(kept_ids(&checked), ["a", "b", "c", "d"]);
        let source = record(&[Some(0.95), Some(0.9), Some(0.8), Some(0.69)]);
        let out = drop_pitfalls_the_source_states(checked.clone(), &reference, &source, 0.7)
            .expect("checked");
        assert_eq!(kept_ids(&out), ["a", "b", "d"]);
        assert_eq!(out.dropped.len(), 1);
        let d = &out.dropped[0];
        assert_eq!(
            (d.id.as_str(), d.p_yes_reference, d.p_yes_source),
            ("c", Some(0.2), Some(0.8))
        );
        assert!(
            d.reason.contains("source passage states it"),
            "{}",
            d.reason
        );
        // Earlier drops stay, in order, before the new ones.
        let r2 = record(&[Some(0.9), Some(0.5), Some(0.2), Some(0.1)]);
        let checked = check_against_reference_at(&item(), &r2, 0.7).expect("checked");
        let out = drop_pitfalls_the_source_states(checked, &r2, &source, 0.7).expect("checked");
        let ids: Vec<&str> = out.dropped.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        // A pitfall with no verdict on the source is kept.
        let source = record(&[Some(0.95), Some(0.9), None, Some(0.1)]);
        let checked = check_against_reference_at(&item(), &reference, 0.7).expect("checked");
        let out = drop_pitfalls_the_source_states(checked, &reference, &source, 0.7).expect("ok");
        assert!(out.dropped.is_empty());
    }

    #[test]
    fn a_source_record_that_is_not_ok_or_lacks_a_criterion_is_an_error() {
        let reference = record(&[Some(0.9), Some(0.9), Some(0.2), Some(0.1)]);
        let checked = check_against_reference(&item(), &reference).expect("checked");
        let mut source = record(&[Some(0.9), Some(0.9), Some(0.9), Some(0.9)]);
        source.status = Status::ResponseTooLong;
        assert!(matches!(
            drop_pitfalls_the_source_states(checked.clone(), &reference, &source, 0.7),
            Err(ReferenceCheckError::NotJudged { .. })
        ));
        let mut source = record(&[Some(0.9), Some(0.9), Some(0.9), Some(0.9)]);
        source.criteria.remove(2);
        assert!(matches!(
            drop_pitfalls_the_source_states(checked, &reference, &source, 0.7),
            Err(ReferenceCheckError::WrongCriterion { .. })
        ));
    }

    #[test]
    fn records_that_do_not_cover_the_rubric_are_errors() {
        let mut r = record(&[Some(0.9), Some(0.9), Some(0.1), Some(0.1)]);
        r.criteria.pop();
        assert!(matches!(
            check_against_reference(&item(), &r),
            Err(ReferenceCheckError::Mismatch { got: 3, want: 4 })
        ));
        let mut r = record(&[Some(0.9), Some(0.9), Some(0.1), Some(0.1)]);
        r.criteria[1].id = "x".into();
        assert!(matches!(
            check_against_reference(&item(), &r),
            Err(ReferenceCheckError::WrongCriterion { .. })
        ));
        let mut r = record(&[Some(0.9), Some(0.9), Some(0.1), Some(0.1)]);
        r.status = Status::JudgeUnparseable;
        r.error = Some("mass".into());
        assert!(matches!(
            check_against_reference(&item(), &r),
            Err(ReferenceCheckError::NotJudged { .. })
        ));
    }
}

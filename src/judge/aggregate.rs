//! Aggregators: per-criterion verdicts and signed weights -> one reward. Pure functions: no model,
//! no I/O, no state, so a reward depends only on its inputs (never on batch composition).
//!
//! Conventions shared by every aggregator:
//! - a verdict is the judge's answer to "does the response meet this criterion's text?": hard
//!   (`true`/`false`, i.e. 1/0) or soft (`p_yes` in [0, 1]). For a pitfall (negative weight) the
//!   text describes the undesirable behaviour, so `true` means the pitfall was committed
//!   (HealthBench's grader asks the same for negative criteria, `simple-evals` healthbench_eval.py);
//! - soft verdicts go through the same formula as hard ones. Every formula is linear in the
//!   verdicts before clipping, so with soft verdicts the result is the expected reward under
//!   independent Bernoulli verdicts (clipping applies to that expectation);
//! - bad inputs (no criteria, weight zero/NaN/infinite, verdict outside [0, 1]) are errors, never
//!   a silent 0.
//!
//! Formulas (notes `rubric-landscape.md` §2.1, §2.3, §2.5):
//! - RaR explicit (Eq. 1) `Σ w_j c_j / Σ w_j`, with pitfalls included the way RaR-Explicit phrases
//!   them: a pitfall of weight -p counts as the positive criterion "avoids it" with weight p, i.e.
//!   `r = (Σ_{w>0} w c + Σ_{w<0} |w| (1 - c)) / Σ |w|`. It reduces to Eq. 1 when no weight is
//!   negative and always lies in [0, 1].
//! - HealthBench `Σ_{met} points / Σ_{points>0} points`: a met negative item subtracts; clipped to
//!   [0, 1] (simple-evals clips the benchmark mean; [`healthbench_unclipped`] gives the raw score
//!   for that use).
//! - RLCF `clip(Σ s_i w_i / Σ w_i / 100, 0, 1)` with s_i in 0..100, here s_i/100 = the verdict;
//!   weights 0-100, no pitfalls.
//! - Holistic: one 1-10 score for the whole rubric (RaR-Implicit, Eq. 2) -> `(s - 1) / 9`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::judge::rubric::Criterion;

/// Scores that cannot be turned into a reward. Indices are positions in the slice passed in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    #[error("nothing to aggregate: no scored criteria")]
    Empty,
    #[error("{criteria} criteria but {verdicts} verdicts")]
    LengthMismatch { criteria: usize, verdicts: usize },
    #[error("criterion #{index}: weight {weight} is not finite and non-zero")]
    BadWeight { index: usize, weight: f64 },
    #[error("criterion #{index}: verdict {value} is not a probability in [0, 1]")]
    BadVerdict { index: usize, value: f64 },
    #[error("criterion #{index}: weight {weight} is negative; RLCF checklists have no pitfalls (use rar_explicit)")]
    NegativeWeight { index: usize, weight: f64 },
    #[error("no criterion has positive points; the HealthBench score is undefined")]
    NoPositivePoints,
    #[error("holistic score {score} is outside 1..=10")]
    BadHolisticScore { score: f64 },
    #[error("holistic distribution has {len} entries, expected 10 (scores 1..=10)")]
    BadHolisticLength { len: usize },
    #[error(
        "holistic distribution: entry for score {score} is {p}, not a finite non-negative number"
    )]
    BadHolisticProbability { score: usize, p: f64 },
    #[error("holistic distribution sums to zero")]
    ZeroHolisticMass,
}

/// The judge's answer for one criterion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Verdict {
    /// A decided yes/no (generate mode, or a thresholded probability).
    Hard(bool),
    /// P(yes), renormalised over the yes/no verdict tokens (logprob mode).
    Soft(f64),
}

impl Verdict {
    /// 1.0 / 0.0 for a hard verdict, p_yes for a soft one (unchecked).
    pub fn value(self) -> f64 {
        match self {
            Verdict::Hard(true) => 1.0,
            Verdict::Hard(false) => 0.0,
            Verdict::Soft(p) => p,
        }
    }
}

/// One criterion's signed weight and its verdict: the whole input of an aggregator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub weight: f64,
    pub verdict: Verdict,
}

impl Scored {
    pub fn new(weight: f64, verdict: Verdict) -> Self {
        Scored { weight, verdict }
    }

    /// Pairs a rubric's criteria with verdicts given in the same order.
    pub fn zip(
        criteria: &[Criterion],
        verdicts: &[Verdict],
    ) -> Result<Vec<Scored>, AggregateError> {
        if criteria.len() != verdicts.len() {
            return Err(AggregateError::LengthMismatch {
                criteria: criteria.len(),
                verdicts: verdicts.len(),
            });
        }
        Ok(criteria
            .iter()
            .zip(verdicts)
            .map(|(c, &v)| Scored::new(c.weight, v))
            .collect())
    }
}

/// The per-criterion aggregators, by the names used on the command line and in output records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregator {
    RarExplicit,
    HealthBench,
    RlcfWeightedMean,
}

impl Aggregator {
    pub const ALL: [Aggregator; 3] = [
        Aggregator::RarExplicit,
        Aggregator::HealthBench,
        Aggregator::RlcfWeightedMean,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregator::RarExplicit => "rar_explicit",
            Aggregator::HealthBench => "health_bench",
            Aggregator::RlcfWeightedMean => "rlcf_weighted_mean",
        }
    }

    pub fn aggregate(self, scored: &[Scored]) -> Result<f64, AggregateError> {
        match self {
            Aggregator::RarExplicit => rar_explicit(scored),
            Aggregator::HealthBench => healthbench(scored),
            Aggregator::RlcfWeightedMean => rlcf_weighted_mean(scored),
        }
    }
}

impl fmt::Display for Aggregator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name was not one of [`Aggregator::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregator {0:?} (expected rar_explicit, health_bench or rlcf_weighted_mean)")]
pub struct UnknownAggregator(pub String);

impl FromStr for Aggregator {
    type Err = UnknownAggregator;

    /// Accepts snake_case or kebab-case names; `healthbench` as one word too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        if norm == "healthbench" {
            return Ok(Aggregator::HealthBench);
        }
        Aggregator::ALL
            .into_iter()
            .find(|a| a.as_str() == norm)
            .ok_or_else(|| UnknownAggregator(s.to_string()))
    }
}

/// Checks every weight and verdict; returns the verdict values in order.
fn checked(scored: &[Scored]) -> Result<Vec<f64>, AggregateError> {
    if scored.is_empty() {
        return Err(AggregateError::Empty);
    }
    scored
        .iter()
        .enumerate()
        .map(|(index, s)| {
            if !s.weight.is_finite() || s.weight == 0.0 {
                return Err(AggregateError::BadWeight {
                    index,
                    weight: s.weight,
                });
            }
            let value = s.verdict.value();
            if !(0.0..=1.0).contains(&value) {
                // NaN fails `contains` too.
                return Err(AggregateError::BadVerdict { index, value });
            }
            Ok(value)
        })
        .collect()
}

/// RaR explicit aggregation (RaR Eq. 1) with pitfalls included; see the module docs.
/// Result in [0, 1].
pub fn rar_explicit(scored: &[Scored]) -> Result<f64, AggregateError> {
    let values = checked(scored)?;
    let mut numerator = 0.0;
    let mut denominator = 0.0;
    for (s, c) in scored.iter().zip(values) {
        let w = s.weight;
        if w > 0.0 {
            numerator += w * c;
        } else {
            // A pitfall scores as "avoided it": weight |w|, met when the pitfall was not committed.
            numerator += -w * (1.0 - c);
        }
        denominator += w.abs();
    }
    Ok((numerator / denominator).clamp(0.0, 1.0))
}

/// HealthBench score before clipping: met points over positive points; below 0 when met
/// pitfalls outweigh met positives. Use it to average over a benchmark and clip the mean, as
/// simple-evals does.
pub fn healthbench_unclipped(scored: &[Scored]) -> Result<f64, AggregateError> {
    let values = checked(scored)?;
    let positive: f64 = scored.iter().map(|s| s.weight).filter(|&w| w > 0.0).sum();
    if positive <= 0.0 {
        // simple-evals gives no score when there are no positive points.
        return Err(AggregateError::NoPositivePoints);
    }
    let met: f64 = scored.iter().zip(values).map(|(s, c)| s.weight * c).sum();
    Ok(met / positive)
}

/// HealthBench score clipped to [0, 1]: the per-response reward.
pub fn healthbench(scored: &[Scored]) -> Result<f64, AggregateError> {
    Ok(healthbench_unclipped(scored)?.clamp(0.0, 1.0))
}

/// RLCF weighted mean: Σ w v / Σ w with weights 0-100 (any positive scale works) and verdicts
/// standing for the 0-100 judge score divided by 100. Negative weights are an error: RLCF
/// checklists are positively phrased and have no pitfalls.
pub fn rlcf_weighted_mean(scored: &[Scored]) -> Result<f64, AggregateError> {
    let values = checked(scored)?;
    if let Some((index, s)) = scored.iter().enumerate().find(|(_, s)| s.weight < 0.0) {
        return Err(AggregateError::NegativeWeight {
            index,
            weight: s.weight,
        });
    }
    let total: f64 = scored.iter().map(|s| s.weight).sum();
    let met: f64 = scored.iter().zip(values).map(|(s, v)| s.weight * v).sum();
    Ok((met / total).clamp(0.0, 1.0))
}

/// Holistic 1-10 score (RaR-Implicit) normalised to [0, 1]: `(score - 1) / 9`, so 1 -> 0 and
/// 10 -> 1. Non-integer scores (an averaged or expected score) are fine.
pub fn holistic(score: f64) -> Result<f64, AggregateError> {
    if !(1.0..=10.0).contains(&score) {
        return Err(AggregateError::BadHolisticScore { score });
    }
    Ok((score - 1.0) / 9.0)
}

/// Holistic score from a distribution over the ten scores (soft verdict): `probs[i]` is the
/// (unnormalised) probability of score `i + 1`, e.g. the logits of the tokens "1".."10"
/// exponentiated. Renormalised, then the expected score goes through [`holistic`].
pub fn holistic_expected(probs: &[f64]) -> Result<f64, AggregateError> {
    if probs.len() != 10 {
        return Err(AggregateError::BadHolisticLength { len: probs.len() });
    }
    if let Some((i, &p)) = probs
        .iter()
        .enumerate()
        .find(|(_, p)| !p.is_finite() || **p < 0.0)
    {
        return Err(AggregateError::BadHolisticProbability { score: i + 1, p });
    }
    let mass: f64 = probs.iter().sum();
    if mass <= 0.0 {
        return Err(AggregateError::ZeroHolisticMass);
    }
    let expected: f64 = probs
        .iter()
        .enumerate()
        .map(|(i, p)| (i + 1) as f64 * p)
        .sum::<f64>()
        / mass;
    holistic(expected.clamp(1.0, 10.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::rubric::Category;

    const EPS: f64 = 1e-12;

    fn hard(weights: &[f64], met: &[bool]) -> Vec<Scored> {
        weights
            .iter()
            .zip(met)
            .map(|(&w, &m)| Scored::new(w, Verdict::Hard(m)))
            .collect()
    }

    fn soft(weights: &[f64], p: &[f64]) -> Vec<Scored> {
        weights
            .iter()
            .zip(p)
            .map(|(&w, &p)| Scored::new(w, Verdict::Soft(p)))
            .collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < EPS, "{a} != {b}");
    }

    // RaR rubric: essential 5, important 3, optional 1, pitfall -2 ("Does not mention ...").
    const RAR: [f64; 4] = [5.0, 3.0, 1.0, -2.0];

    #[test]
    fn rar_explicit_worked_example_hard() -> Result<(), AggregateError> {
        // Σ|w| = 5 + 3 + 1 + 2 = 11.
        // Met essential and optional, missed important, pitfall not committed (c = 0, so it
        // counts as avoided with weight 2): (5 + 0 + 1 + 2) / 11 = 8/11.
        close(
            rar_explicit(&hard(&RAR, &[true, false, true, false]))?,
            8.0 / 11.0,
        );
        // Same but the pitfall committed: (5 + 0 + 1 + 0) / 11 = 6/11.
        close(
            rar_explicit(&hard(&RAR, &[true, false, true, true]))?,
            6.0 / 11.0,
        );
        // Everything good: (5 + 3 + 1 + 2) / 11 = 1; everything bad: 0 / 11 = 0.
        close(rar_explicit(&hard(&RAR, &[true, true, true, false]))?, 1.0);
        close(
            rar_explicit(&hard(&RAR, &[false, false, false, true]))?,
            0.0,
        );
        Ok(())
    }

    #[test]
    fn rar_explicit_worked_example_soft() -> Result<(), AggregateError> {
        // p_yes = 0.9, 0.5, 0.2, 0.25:
        // 5*0.9 + 3*0.5 + 1*0.2 + 2*(1 - 0.25) = 4.5 + 1.5 + 0.2 + 1.5 = 7.7; 7.7 / 11 = 0.7.
        close(rar_explicit(&soft(&RAR, &[0.9, 0.5, 0.2, 0.25]))?, 0.7);
        Ok(())
    }

    #[test]
    fn rar_explicit_without_pitfalls_is_eq1_and_matches_rlcf() -> Result<(), AggregateError> {
        // Eq. 1: (5*1 + 3*0 + 1*1) / (5 + 3 + 1) = 6/9.
        let s = hard(&[5.0, 3.0, 1.0], &[true, false, true]);
        close(rar_explicit(&s)?, 6.0 / 9.0);
        close(rlcf_weighted_mean(&s)?, 6.0 / 9.0);
        Ok(())
    }

    #[test]
    fn rar_explicit_is_in_unit_interval_for_every_hard_assignment() -> Result<(), AggregateError> {
        for mask in 0..16u32 {
            let met: Vec<bool> = (0..4).map(|i| mask & (1 << i) != 0).collect();
            let r = rar_explicit(&hard(&RAR, &met))?;
            assert!((0.0..=1.0).contains(&r), "{met:?} -> {r}");
        }
        Ok(())
    }

    // HealthBench rubric: +10, +7, -8 (undesirable behaviour), +5. Positive points = 22.
    const HB: [f64; 4] = [10.0, 7.0, -8.0, 5.0];

    #[test]
    fn healthbench_worked_example_hard() -> Result<(), AggregateError> {
        // Met +10, +7 and the -8 pitfall, missed +5: (10 + 7 - 8) / 22 = 9/22.
        close(
            healthbench(&hard(&HB, &[true, true, true, false]))?,
            9.0 / 22.0,
        );
        // All positives met, pitfall avoided: 22/22 = 1.
        close(healthbench(&hard(&HB, &[true, true, false, true]))?, 1.0);
        // Only the pitfall met: -8/22 raw, clipped to 0.
        let only_pitfall = hard(&HB, &[false, false, true, false]);
        close(healthbench_unclipped(&only_pitfall)?, -8.0 / 22.0);
        close(healthbench(&only_pitfall)?, 0.0);
        Ok(())
    }

    #[test]
    fn healthbench_worked_example_soft() -> Result<(), AggregateError> {
        // p_yes = 0.5, 1.0, 0.25, 0.2: 10*0.5 + 7*1 - 8*0.25 + 5*0.2 = 5 + 7 - 2 + 1 = 11;
        // 11 / 22 = 0.5.
        close(healthbench(&soft(&HB, &[0.5, 1.0, 0.25, 0.2]))?, 0.5);
        Ok(())
    }

    #[test]
    fn healthbench_with_only_negative_points_has_no_score() {
        assert_eq!(
            healthbench(&hard(&[-3.0, -1.0], &[false, false])),
            Err(AggregateError::NoPositivePoints)
        );
    }

    #[test]
    fn rlcf_worked_example() -> Result<(), AggregateError> {
        // Weights 100 (critical), 75, 25; Σw = 200.
        let w = [100.0, 75.0, 25.0];
        // Judge scores 100, 50, 0 (out of 100) -> verdicts 1.0, 0.5, 0.0:
        // (100*1 + 75*0.5 + 25*0) / 200 = 137.5 / 200 = 0.6875.
        close(rlcf_weighted_mean(&soft(&w, &[1.0, 0.5, 0.0]))?, 0.6875);
        // Hard: met, missed, met -> (100 + 25) / 200 = 0.625.
        close(rlcf_weighted_mean(&hard(&w, &[true, false, true]))?, 0.625);
        Ok(())
    }

    #[test]
    fn rlcf_rejects_pitfalls() {
        assert_eq!(
            rlcf_weighted_mean(&hard(&[50.0, -10.0], &[true, false])),
            Err(AggregateError::NegativeWeight {
                index: 1,
                weight: -10.0
            })
        );
    }

    #[test]
    fn holistic_worked_example() -> Result<(), AggregateError> {
        // (7 - 1) / 9 = 2/3; the ends map to 0 and 1.
        close(holistic(7.0)?, 2.0 / 3.0);
        close(holistic(1.0)?, 0.0);
        close(holistic(10.0)?, 1.0);
        // Soft: half the mass on 7, half on 9 -> expected 8 -> 7/9. Unnormalised (1, 1) is the
        // same distribution.
        let mut probs = [0.0; 10];
        probs[6] = 1.0;
        probs[8] = 1.0;
        close(holistic_expected(&probs)?, 7.0 / 9.0);
        Ok(())
    }

    #[test]
    fn holistic_rejects_out_of_range_input() {
        assert!(holistic(0.0).is_err());
        assert!(holistic(11.0).is_err());
        assert!(holistic(f64::NAN).is_err());
        assert_eq!(
            holistic_expected(&[0.0; 10]),
            Err(AggregateError::ZeroHolisticMass)
        );
        assert_eq!(
            holistic_expected(&[1.0; 5]),
            Err(AggregateError::BadHolisticLength { len: 5 })
        );
        let mut probs = [0.1; 10];
        probs[2] = -0.1;
        assert!(matches!(
            holistic_expected(&probs),
            Err(AggregateError::BadHolisticProbability { score: 3, .. })
        ));
    }

    #[test]
    fn bad_inputs_are_errors_never_zero() {
        for agg in Aggregator::ALL {
            assert_eq!(agg.aggregate(&[]), Err(AggregateError::Empty));
            for w in [0.0, f64::NAN, f64::INFINITY] {
                // Matched, not compared: NaN != NaN.
                assert!(matches!(
                    agg.aggregate(&hard(&[1.0, w], &[true, true])),
                    Err(AggregateError::BadWeight { index: 1, .. })
                ));
            }
            for p in [-0.1, 1.5, f64::NAN] {
                assert!(matches!(
                    agg.aggregate(&soft(&[1.0], &[p])),
                    Err(AggregateError::BadVerdict { index: 0, .. })
                ));
            }
        }
    }

    #[test]
    fn zip_pairs_criteria_and_checks_lengths() -> Result<(), AggregateError> {
        let criteria = vec![
            Criterion::new("a", "x", 5.0, Category::Essential),
            Criterion::new("b", "y", -2.0, Category::Pitfall),
        ];
        let s = Scored::zip(&criteria, &[Verdict::Hard(true), Verdict::Soft(0.5)])?;
        // (5 + 2 * 0.5) / 7 = 6/7.
        close(rar_explicit(&s)?, 6.0 / 7.0);
        assert_eq!(
            Scored::zip(&criteria, &[Verdict::Hard(true)]),
            Err(AggregateError::LengthMismatch {
                criteria: 2,
                verdicts: 1
            })
        );
        Ok(())
    }

    #[test]
    fn aggregator_names_parse_and_display() {
        for agg in Aggregator::ALL {
            assert_eq!(agg.to_string().parse(), Ok(agg));
        }
        assert_eq!("healthbench".parse(), Ok(Aggregator::HealthBench));
        assert_eq!(
            "rlcf-weighted-mean".parse(),
            Ok(Aggregator::RlcfWeightedMean)
        );
        assert!("mean".parse::<Aggregator>().is_err());
    }

    #[test]
    fn verdict_serde_is_bool_or_number() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::from_str::<Verdict>("true")?,
            Verdict::Hard(true)
        );
        assert_eq!(
            serde_json::from_str::<Verdict>("0.25")?,
            Verdict::Soft(0.25)
        );
        Ok(())
    }
}

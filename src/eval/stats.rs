//! Agreement statistics of `ares eval`, as pure functions: average ranks, Pearson, Spearman
//! (Pearson on average ranks, so ties are handled), Kendall's tau-b, pairwise accuracy, and the
//! percentile bootstrap interval of any of them.
//!
//! Invariants:
//! - every function is deterministic: the bootstrap takes its seed as an argument;
//! - a statistic that is undefined on its input (fewer than two points, a constant variable)
//!   is `None`, never 0 or NaN;
//! - inputs are paired slices of equal length (checked with `assert_eq!`: a length mismatch is
//!   a bug in the caller, not a data problem).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// 1-based ranks of `xs`, ties sharing the mean of the ranks they span (the "fractional" or
/// average ranking Spearman's rho with ties is defined on).
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) hold ranks i+1..=j+1: their mean.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson's correlation; `None` for fewer than two points or a constant variable.
pub fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    assert_eq!(xs.len(), ys.len(), "paired samples");
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(xs), mean(ys));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        let (dx, dy) = (x - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rho: Pearson's correlation of the average ranks (exact with ties).
pub fn spearman(xs: &[f64], ys: &[f64]) -> Option<f64> {
    assert_eq!(xs.len(), ys.len(), "paired samples");
    pearson(&average_ranks(xs), &average_ranks(ys))
}

/// Kendall's tau-b: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)), where n0 = n(n-1)/2
/// and n1, n2 are the pairs tied in x and in y. A pair tied in both counts in n1 and n2 and is
/// neither concordant nor discordant. O(n²), which is plenty for meta-evaluation sizes.
pub fn kendall_tau_b(xs: &[f64], ys: &[f64]) -> Option<f64> {
    assert_eq!(xs.len(), ys.len(), "paired samples");
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let (mut concordant, mut discordant, mut tied_x, mut tied_y) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = xs[i].total_cmp(&xs[j]);
            let dy = ys[i].total_cmp(&ys[j]);
            use std::cmp::Ordering::Equal;
            match (dx, dy) {
                (Equal, Equal) => {
                    tied_x += 1;
                    tied_y += 1;
                }
                (Equal, _) => tied_x += 1,
                (_, Equal) => tied_y += 1,
                (a, b) if a == b => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let n0 = (n * (n - 1) / 2) as u64;
    let denominator = ((n0 - tied_x) as f64 * (n0 - tied_y) as f64).sqrt();
    if denominator == 0.0 {
        return None;
    }
    Some(((concordant as f64 - discordant as f64) / denominator).clamp(-1.0, 1.0))
}

/// Pairwise accuracy: the fraction of pairs in which the output people preferred got the higher
/// reward; a tie in reward counts one half (the judge could not tell them apart: a coin flip).
/// `pairs` are (reward of the preferred output, reward of the other one).
pub fn pairwise_accuracy(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let score: f64 = pairs
        .iter()
        .map(|(preferred, other)| match preferred.total_cmp(other) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        })
        .sum();
    Some(score / pairs.len() as f64)
}

/// A statistic with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The statistic on the whole sample.
    pub value: f64,
    /// Bounds of the central `level` interval of the bootstrap distribution.
    pub low: f64,
    pub high: f64,
    /// Resamples on which the statistic was defined (a resample can be constant, for example).
    pub resamples: usize,
}

/// The `q` quantile (0..=1) of sorted `values`, interpolating linearly between order
/// statistics (numpy's default "linear" method, R type 7).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// The percentile bootstrap: `statistic` on the whole sample, and the central `level` interval
/// (0.95: the 2.5% and 97.5% quantiles) of `statistic` over `resamples` resamples of
/// `n` indices drawn with replacement, with a seeded generator. `statistic` gets the drawn
/// indices (it reads its own paired data). `None` when the statistic is undefined on the
/// sample or on every resample.
pub fn bootstrap(
    n: usize,
    statistic: impl Fn(&[usize]) -> Option<f64>,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Estimate> {
    let all: Vec<usize> = (0..n).collect();
    let value = statistic(&all)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut draws = Vec::with_capacity(resamples);
    let mut idx = vec![0usize; n];
    for _ in 0..resamples {
        for slot in idx.iter_mut() {
            *slot = rng.gen_range(0..n);
        }
        if let Some(s) = statistic(&idx) {
            draws.push(s);
        }
    }
    draws.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Some(Estimate {
        value,
        low: quantile(&draws, alpha)?,
        high: quantile(&draws, 1.0 - alpha)?,
        resamples: draws.len(),
    })
}

/// Picks `idx` out of `values`.
pub fn pick(values: &[f64], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| values[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn average_ranks_share_ties() {
        // 10, 20, 20, 30, 20 -> 10 is rank 1, the three 20s share ranks 2-4 (mean 3), 30 is 5.
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 30.0, 20.0]),
            [1.0, 3.0, 3.0, 5.0, 3.0]
        );
        assert_eq!(average_ranks(&[3.0, 1.0, 2.0]), [3.0, 1.0, 2.0]);
        assert!(average_ranks(&[]).is_empty());
    }

    #[test]
    fn pearson_worked_example() {
        // x = 1..5, y = 2, 4, 5, 4, 5: mx = 3, my = 4; Σdxdy = 6, Σdx² = 10, Σdy² = 6;
        // r = 6 / sqrt(60) = 0.7745966692414834.
        let r = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 5.0, 4.0, 5.0]);
        assert!(close(r, 6.0 / 60f64.sqrt()), "{r:?}");
        assert_eq!(pearson(&[1.0, 2.0], &[3.0, 3.0]), None, "constant y");
        assert_eq!(pearson(&[1.0], &[1.0]), None);
    }

    #[test]
    fn spearman_without_ties_is_the_textbook_formula() {
        // No ties: rho = 1 - 6 Σd² / (n (n² - 1)). x = 1..5 (ranks 1..5), y = 20, 10, 40, 50, 30
        // (ranks 2, 1, 4, 5, 3): d = -1, 1, -1, -1, 2, Σd² = 8, rho = 1 - 48/120 = 0.6.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[20.0, 10.0, 40.0, 50.0, 30.0]);
        assert!(close(rho, 0.6), "{rho:?}");
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]), -1.0));
    }

    #[test]
    fn spearman_with_ties_is_pearson_on_average_ranks() {
        // x = 1, 2, 2, 3 -> ranks 1, 2.5, 2.5, 4; y = 1, 1, 2, 2 -> ranks 1.5, 1.5, 3.5, 3.5.
        // Centred (mean 2.5): x' = -1.5, 0, 0, 1.5; y' = -1, -1, 1, 1.
        // Σx'y' = 1.5 + 1.5 = 3; Σx'² = 4.5; Σy'² = 4; rho = 3 / sqrt(18) = 0.7071067811865475.
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 1.0, 2.0, 2.0]);
        assert!(close(rho, 3.0 / 18f64.sqrt()), "{rho:?}");
        // The textbook formula without the tie correction would give 1 - 6*Σd²/(n(n²-1)) =
        // 1 - 6*(0.25+1+1+0.25)/60 = 0.75: not what we compute.
        assert!(!close(rho, 0.75));
    }

    #[test]
    fn kendall_tau_b_worked_examples() {
        // No ties: x = 1..5, y = 3, 1, 2, 5, 4. Pairs (10): discordant are (1,2), (1,3), (4,5)
        // -> C = 7, D = 3, tau = 4/10 = 0.4.
        let t = kendall_tau_b(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 1.0, 2.0, 5.0, 4.0]);
        assert!(close(t, 0.4), "{t:?}");
        // With ties: x = 1, 2, 2, 3; y = 1, 1, 2, 2. Pairs: (1,2) tie in y; (1,3) C; (1,4) C;
        // (2,3) tie in x; (2,4) C; (3,4) tie in y. C = 3, D = 0, n0 = 6, n1 = 1 (x ties),
        // n2 = 2 (y ties): tau_b = 3 / sqrt(5 * 4) = 0.6708203932499369.
        let t = kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 1.0, 2.0, 2.0]);
        assert!(close(t, 3.0 / 20f64.sqrt()), "{t:?}");
        // A pair tied in both counts in n1 and n2: x = 1, 1, 2; y = 5, 5, 6:
        // (1,2) both tied; (1,3) C; (2,3) C. n0 = 3, n1 = n2 = 1: tau_b = 2 / sqrt(2*2) = 1.
        assert!(close(
            kendall_tau_b(&[1.0, 1.0, 2.0], &[5.0, 5.0, 6.0]),
            1.0
        ));
        assert_eq!(kendall_tau_b(&[1.0, 1.0], &[1.0, 2.0]), None, "x constant");
    }

    #[test]
    fn kendall_tau_b_on_a_likert_example() {
        // x = expert grades 1,1,2,2,3,3,4,4 (4 pairs tied in x), y = rewards without ties; n0 = 28.
        // Discordant pairs, by hand: (0.3 vs 0.2), (0.5 vs 0.4), (0.9 vs 0.6), (0.9 vs 0.8);
        // concordant: the other 28 - 4 - 4 = 20. tau_b = (20 - 4) / sqrt((28 - 4) * 28).
        let x = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        let y = [0.1, 0.3, 0.2, 0.5, 0.4, 0.9, 0.6, 0.8];
        let t = kendall_tau_b(&x, &y);
        assert!(close(t, 16.0 / (24.0f64 * 28.0).sqrt()), "{t:?}");
    }

    #[test]
    fn pairwise_accuracy_counts_ties_as_half() {
        let pairs = [(0.9, 0.1), (0.2, 0.8), (0.5, 0.5), (0.7, 0.6)];
        // 1 + 0 + 0.5 + 1 = 2.5 of 4.
        assert_eq!(pairwise_accuracy(&pairs), Some(0.625));
        assert_eq!(pairwise_accuracy(&[]), None);
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.quantile([1,2,3,4], 0.25) = 1.75; 0.975 -> 3.925.
        assert!(close(quantile(&v, 0.25), 1.75));
        assert!(close(quantile(&v, 0.975), 3.925));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        // The mean of 0..100: the interval of a percentile bootstrap of n = 100 with sd 28.9 is
        // about mean ± 1.96 * 2.89 = 49.5 ± 5.7.
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let mean = |idx: &[usize]| Some(pick(&values, idx).iter().sum::<f64>() / idx.len() as f64);
        let a = bootstrap(values.len(), mean, 2000, 0.95, 7).expect("defined");
        let b = bootstrap(values.len(), mean, 2000, 0.95, 7).expect("defined");
        assert_eq!(a, b, "same seed, same interval");
        assert_eq!(a.value, 49.5);
        assert_eq!(a.resamples, 2000);
        assert!(a.low < a.value && a.value < a.high);
        assert!(
            (a.low - 43.8).abs() < 1.0 && (a.high - 55.2).abs() < 1.0,
            "{a:?}"
        );
        let c = bootstrap(values.len(), mean, 2000, 0.95, 8).expect("defined");
        assert_ne!(a, c, "another seed, another draw");
    }

    #[test]
    fn bootstrap_skips_undefined_resamples_and_is_none_when_undefined() {
        // Spearman of two points is ±1 or undefined (both drawn indices equal): undefined
        // resamples are left out of the interval.
        let (x, y) = ([1.0, 2.0], [1.0, 2.0]);
        let rho = |idx: &[usize]| spearman(&pick(&x, idx), &pick(&y, idx));
        let e = bootstrap(2, rho, 1000, 0.95, 1).expect("defined");
        assert_eq!((e.value, e.low, e.high), (1.0, 1.0, 1.0));
        assert!(e.resamples < 1000 && e.resamples > 300, "{e:?}");
        let constant = |idx: &[usize]| spearman(&pick(&[1.0, 1.0], idx), &pick(&y, idx));
        assert_eq!(bootstrap(2, constant, 100, 0.95, 1), None);
    }
}

//! Reward monitors: what a trainer needs to know about the rewards it is getting (issue #15).
//!
//! Each judged batch of `/get_reward` or `/v1/rubric/score` is cut into groups: responses of one
//! request that share a group key (OpenRLHF/verl `metas[i].group_id` / `group` / `uid`, else the
//! shared prompt, else the rubric item; a `/v1/rubric/score` request is one group), i.e. the
//! responses of one GRPO group. From a window of the last groups and records it reports:
//! reward mean and standard deviation per group, the share of zero-variance groups (GRPO gets no
//! gradient from them), the Pearson correlation of reward with response length (characters),
//! per-criterion met rates (a criterion is met when P(yes) >= 0.5) with the saturated (met
//! almost always) and never-met ones, verdict mass (how much the judge's next-token probability
//! fell on Yes/No at all), and statuses. Served as JSON (`GET /v1/stats`) and as gauges appended
//! to `/metrics`.
//!
//! Invariant: memory is bounded: at most `max_groups` groups and `max_records` records are kept
//! (oldest dropped first), and everything but the since-start totals is computed from them at
//! read time; criterion rates are keyed by (item, criterion) of records in the window only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// A criterion is saturated when met in at least this share of its observations.
pub const SATURATED: f64 = 0.95;
/// A criterion is never met when met in at most this share.
pub const NEVER_MET: f64 = 0.05;
/// Observations a criterion needs before it is called saturated or never met.
pub const MIN_OBSERVATIONS: usize = 8;
/// A group's rewards are constant when their standard deviation is below this.
pub const ZERO_VARIANCE: f64 = 1e-6;
/// Verdict mass below this is low (the judge hardly answered Yes or No).
pub const LOW_VERDICT_MASS: f64 = 0.5;
/// Criteria listed per kind in the JSON, at most.
const LISTED: usize = 20;
/// Groups listed in the JSON (the most recent), at most.
const RECENT_GROUPS: usize = 20;

/// Window sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    pub max_groups: usize,
    pub max_records: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            max_groups: 512,
            max_records: 8192,
        }
    }
}

/// One criterion verdict of a judged response.
#[derive(Debug, Clone, PartialEq)]
pub struct CriterionObservation {
    /// `item_id/criterion_id`.
    pub key: String,
    pub p_yes: Option<f64>,
    pub verdict_mass: Option<f64>,
}

/// One judged response.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Responses of one request with the same key form a group.
    pub group: String,
    pub reward: Option<f64>,
    pub status: String,
    pub response_chars: usize,
    pub criteria: Vec<CriterionObservation>,
}

#[derive(Debug, Clone)]
struct Group {
    key: String,
    route: &'static str,
    rewards: Vec<f64>,
    failed: usize,
}

#[derive(Debug, Default)]
struct State {
    groups: VecDeque<Group>,
    records: VecDeque<Observation>,
    total_records: u64,
    total_groups: u64,
    total_statuses: BTreeMap<String, u64>,
}

/// The monitors of one server.
#[derive(Debug, Default)]
pub struct RewardMonitor {
    config: MonitorConfig,
    state: Mutex<State>,
}

/// Mean and standard deviation (population) of `xs`.
fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    Some((m, v.sqrt()))
}

/// Pearson correlation; `None` with fewer than 3 points or a constant side.
pub fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() != ys.len() || xs.len() < 3 {
        return None;
    }
    let (mx, sx) = mean_std(xs)?;
    let (my, sy) = mean_std(ys)?;
    if sx < 1e-12 || sy < 1e-12 {
        return None;
    }
    let cov = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>()
        / xs.len() as f64;
    Some(cov / (sx * sy))
}

/// One group in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub key: String,
    pub route: String,
    /// Responses with an `ok` reward / all.
    pub ok: usize,
    pub responses: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
}

/// A criterion's met rate in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionRate {
    pub criterion: String,
    pub observations: usize,
    pub met_rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardSummary {
    pub n: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Groups in the window.
    pub groups: usize,
    /// Groups with at least two `ok` rewards (the ones variance is defined for).
    pub scored: usize,
    pub zero_variance: usize,
    pub zero_variance_share: Option<f64>,
    /// Mean over scored groups of the group's reward std.
    pub mean_std: Option<f64>,
    /// The most recent groups, newest last.
    pub recent: Vec<GroupStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CriteriaSummary {
    /// Distinct (item, criterion) pairs in the window.
    pub tracked: usize,
    pub saturated_count: usize,
    pub never_met_count: usize,
    /// Up to 20 each, most observed first.
    pub saturated: Vec<CriterionRate>,
    pub never_met: Vec<CriterionRate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictMassSummary {
    pub n: usize,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    /// Share of verdicts with mass below 0.5.
    pub low_share: Option<f64>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorStats {
    pub window_groups: usize,
    pub window_records: usize,
    pub max_groups: usize,
    pub max_records: usize,
    /// Since the server started.
    pub total_groups: u64,
    pub total_records: u64,
    pub total_statuses: BTreeMap<String, u64>,
    /// Over `ok` records of the window.
    pub reward: RewardSummary,
    pub groups: GroupSummary,
    /// Pearson correlation of reward with response length in characters (`ok` records).
    pub length_correlation: Option<f64>,
    pub criteria: CriteriaSummary,
    pub verdict_mass: VerdictMassSummary,
    /// Records of the window by status.
    pub statuses: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

impl RewardMonitor {
    pub fn new(config: MonitorConfig) -> Self {
        RewardMonitor {
            config: MonitorConfig {
                max_groups: config.max_groups.max(1),
                max_records: config.max_records.max(1),
            },
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every field stays consistent on its own if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one judged request's responses, grouped by their keys (in order of appearance).
    pub fn observe(&self, route: &'static str, batch: Vec<Observation>) {
        let mut groups: Vec<Group> = Vec::new();
        for o in &batch {
            let g = match groups.iter().position(|g| g.key == o.group) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group {
                        key: o.group.clone(),
                        route,
                        rewards: Vec::new(),
                        failed: 0,
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            match (o.status.as_str(), o.reward) {
                ("ok", Some(r)) => g.rewards.push(r),
                _ => g.failed += 1,
            }
        }
        let mut s = self.lock();
        s.total_groups += groups.len() as u64;
        s.total_records += batch.len() as u64;
        for o in &batch {
            *s.total_statuses.entry(o.status.clone()).or_default() += 1;
        }
        s.groups.extend(groups);
        while s.groups.len() > self.config.max_groups {
            s.groups.pop_front();
        }
        s.records.extend(batch);
        while s.records.len() > self.config.max_records {
            s.records.pop_front();
        }
    }

    /// The statistics of the window.
    pub fn stats(&self) -> MonitorStats {
        let s = self.lock();
        let mut out = MonitorStats {
            window_groups: s.groups.len(),
            window_records: s.records.len(),
            max_groups: self.config.max_groups,
            max_records: self.config.max_records,
            total_groups: s.total_groups,
            total_records: s.total_records,
            total_statuses: s.total_statuses.clone(),
            ..Default::default()
        };
        let ok: Vec<&Observation> = s
            .records
            .iter()
            .filter(|o| o.status == "ok" && o.reward.is_some())
            .collect();
        let rewards: Vec<f64> = ok.iter().filter_map(|o| o.reward).collect();
        let ms = mean_std(&rewards);
        out.reward = RewardSummary {
            n: rewards.len(),
            mean: ms.map(|m| m.0),
            std: ms.map(|m| m.1),
        };
        let lengths: Vec<f64> = ok.iter().map(|o| o.response_chars as f64).collect();
        out.length_correlation = pearson(&lengths, &rewards);
        // Groups.
        let mut stds = Vec::new();
        for g in &s.groups {
            if g.rewards.len() >= 2 {
                if let Some((_, sd)) = mean_std(&g.rewards) {
                    stds.push(sd);
                }
            }
        }
        out.groups.groups = s.groups.len();
        out.groups.scored = stds.len();
        out.groups.zero_variance = stds.iter().filter(|&&sd| sd < ZERO_VARIANCE).count();
        out.groups.zero_variance_share =
            (!stds.is_empty()).then(|| out.groups.zero_variance as f64 / stds.len() as f64);
        out.groups.mean_std = mean_std(&stds).map(|m| m.0);
        out.groups.recent = s
            .groups
            .iter()
            .rev()
            .take(RECENT_GROUPS)
            .rev()
            .map(|g| {
                let ms = mean_std(&g.rewards);
                GroupStats {
                    key: g.key.chars().take(120).collect(),
                    route: g.route.to_string(),
                    ok: g.rewards.len(),
                    responses: g.rewards.len() + g.failed,
                    mean: ms.map(|m| m.0),
                    std: ms.map(|m| m.1),
                }
            })
            .collect();
        // Criteria and verdict mass.
        let mut met: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut masses = Vec::new();
        for o in &s.records {
            for c in &o.criteria {
                if let Some(p) = c.p_yes {
                    let e = met.entry(c.key.as_str()).or_default();
                    e.0 += 1;
                    e.1 += usize::from(p >= 0.5);
                }
                if let Some(m) = c.verdict_mass {
                    masses.push(m);
                }
            }
            *out.statuses.entry(o.status.clone()).or_default() += 1;
        }
        out.criteria.tracked = met.len();
        let mut saturated = Vec::new();
        let mut never = Vec::new();
        for (k, (n, m)) in &met {
            if *n < MIN_OBSERVATIONS {
                continue;
            }
            let rate = *m as f64 / *n as f64;
            let r = CriterionRate {
                criterion: k.to_string(),
                observations: *n,
                met_rate: rate,
            };
            if rate >= SATURATED {
                saturated.push(r);
            } else if rate <= NEVER_MET {
                never.push(r);
            }
        }
        for v in [&mut saturated, &mut never] {
            v.sort_by(|a, b| {
                b.observations
                    .cmp(&a.observations)
                    .then(a.criterion.cmp(&b.criterion))
            });
        }
        out.criteria.saturated_count = saturated.len();
        out.criteria.never_met_count = never.len();
        saturated.truncate(LISTED);
        never.truncate(LISTED);
        out.criteria.saturated = saturated;
        out.criteria.never_met = never;
        let mm = mean_std(&masses);
        out.verdict_mass = VerdictMassSummary {
            n: masses.len(),
            mean: mm.map(|m| m.0),
            min: masses.iter().copied().reduce(f64::min),
            low_share: (!masses.is_empty()).then(|| {
                masses.iter().filter(|&&m| m < LOW_VERDICT_MASS).count() as f64
                    / masses.len() as f64
            }),
        };
        out
    }
}

impl MonitorStats {
    /// The gauges for `/metrics` (NaN where a value is undefined, as Prometheus writes it).
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let gauges: [(&str, &str, f64); 12] = [
            ("ares_monitor_window_groups", "Groups (responses of one request sharing a group id, prompt or item) in the monitor window", self.window_groups as f64),
            ("ares_monitor_window_records", "Judged responses in the monitor window", self.window_records as f64),
            ("ares_monitor_reward_mean", "Mean reward of ok responses in the window", nan(self.reward.mean)),
            ("ares_monitor_reward_std", "Standard deviation of rewards of ok responses in the window", nan(self.reward.std)),
            ("ares_monitor_group_reward_std_mean", "Mean over groups (2+ ok rewards) of the group's reward standard deviation", nan(self.groups.mean_std)),
            ("ares_monitor_zero_variance_group_share", "Share of groups (2+ ok rewards) whose rewards are all equal", nan(self.groups.zero_variance_share)),
            ("ares_monitor_reward_length_correlation", "Pearson correlation of reward with response length in characters", nan(self.length_correlation)),
            ("ares_monitor_criteria_tracked", "Distinct (item, criterion) pairs in the window", self.criteria.tracked as f64),
            ("ares_monitor_criteria_saturated", "Criteria met in at least 95% of 8+ observations", self.criteria.saturated_count as f64),
            ("ares_monitor_criteria_never_met", "Criteria met in at most 5% of 8+ observations", self.criteria.never_met_count as f64),
            ("ares_monitor_verdict_mass_mean", "Mean probability mass on the Yes/No verdict tokens", nan(self.verdict_mass.mean)),
            ("ares_monitor_verdict_mass_low_share", "Share of verdicts with mass on Yes/No below 0.5", nan(self.verdict_mass.low_share)),
        ];
        for (name, help, v) in gauges {
            r.register(name, help, ConstGauge::new(v));
        }
        let statuses = Family::<StatusLabels, Gauge>::default();
        for (k, n) in &self.statuses {
            statuses
                .get_or_create(&StatusLabels { status: k.clone() })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        r.register(
            "ares_monitor_window_status",
            "Judged responses in the monitor window by status",
            statuses,
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(group: &str, reward: Option<f64>, chars: usize, met: &[(&str, f64)]) -> Observation {
        Observation {
            group: group.into(),
            reward,
            status: if reward.is_some() {
                "ok"
            } else {
                "response_too_long"
            }
            .into(),
            response_chars: chars,
            criteria: met
                .iter()
                .map(|(k, p)| CriterionObservation {
                    key: k.to_string(),
                    p_yes: Some(*p),
                    verdict_mass: Some(0.9),
                })
                .collect(),
        }
    }

    #[test]
    fn groups_variance_length_and_criteria() {
        let m = RewardMonitor::new(MonitorConfig::default());
        // Group a varies and rewards length; group b is constant; one failure.
        let mut batch = Vec::new();
        for (k, r) in [0.2, 0.5, 0.8].iter().enumerate() {
            batch.push(obs(
                "a",
                Some(*r),
                100 * (k + 1),
                &[("i1/c1", 0.9), ("i1/c2", 0.1)],
            ));
        }
        batch.push(obs("b", Some(0.5), 50, &[("i1/c1", 0.9), ("i1/c2", 0.1)]));
        batch.push(obs("b", Some(0.5), 60, &[("i1/c1", 0.9), ("i1/c2", 0.1)]));
        batch.push(obs("b", None, 70, &[]));
        m.observe("/get_reward", batch);
        let s = m.stats();
        assert_eq!((s.window_groups, s.window_records), (2, 6));
        assert_eq!(s.groups.scored, 2);
        assert_eq!(s.groups.zero_variance, 1);
        assert_eq!(s.groups.zero_variance_share, Some(0.5));
        let a = &s.groups.recent[0];
        assert_eq!((a.key.as_str(), a.ok, a.responses), ("a", 3, 3));
        assert!((a.mean.unwrap_or(0.0) - 0.5).abs() < 1e-12);
        assert!((a.std.unwrap_or(0.0) - (0.06f64).sqrt()).abs() < 1e-12);
        assert_eq!(s.groups.recent[1].responses, 3);
        assert!(s.length_correlation.is_some_and(|c| c > 0.0), "{s:?}");
        assert_eq!(s.statuses.get("response_too_long"), Some(&1));
        // 5 observations per criterion: not yet enough to call either way.
        assert_eq!(s.criteria.saturated_count + s.criteria.never_met_count, 0);
        m.observe(
            "/v1/rubric/score",
            (0..4)
                .map(|_| obs("i1", Some(0.6), 80, &[("i1/c1", 0.9), ("i1/c2", 0.1)]))
                .collect(),
        );
        let s = m.stats();
        assert_eq!(s.criteria.saturated_count, 1);
        assert_eq!(s.criteria.saturated[0].criterion, "i1/c1");
        assert_eq!(s.criteria.never_met[0].criterion, "i1/c2");
        assert_eq!(s.criteria.never_met[0].observations, 9);
        assert!((s.verdict_mass.mean.unwrap_or(0.0) - 0.9).abs() < 1e-12);
        let text = {
            let mut t = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut t, &s.registry()).map(|()| t)
        }
        .unwrap_or_default();
        assert!(
            text.contains("ares_monitor_zero_variance_group_share"),
            "{text}"
        );
        assert!(
            text.contains("ares_monitor_window_status{status=\"ok\"} 9"),
            "{text}"
        );
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let m = RewardMonitor::new(MonitorConfig {
            max_groups: 4,
            max_records: 10,
        });
        for i in 0..100 {
            m.observe(
                "/get_reward",
                vec![
                    obs(
                        &format!("g{i}"),
                        Some(0.1),
                        10,
                        &[(&format!("i{i}/c1"), 0.5)],
                    ),
                    obs(
                        &format!("g{i}"),
                        Some(0.9),
                        20,
                        &[(&format!("i{i}/c1"), 0.5)],
                    ),
                ],
            );
        }
        let s = m.stats();
        assert_eq!((s.window_groups, s.window_records), (4, 10));
        assert_eq!((s.total_groups, s.total_records), (100, 200));
        assert_eq!(
            s.criteria.tracked, 5,
            "only criteria of records in the window"
        );
        assert_eq!(s.groups.recent.last().map(|g| g.key.as_str()), Some("g99"));
        assert_eq!(s.groups.zero_variance, 0);
    }

    #[test]
    fn pearson_is_undefined_for_constant_or_short_series() {
        assert_eq!(pearson(&[1.0, 2.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        let r = pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap_or(0.0);
        assert!((r + 1.0).abs() < 1e-12);
    }
}

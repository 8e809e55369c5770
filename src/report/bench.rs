//! The bench page: prompt-processing (S_PP) and generation (S_TG) throughput against batch size,
//! one chart pair per (PP, TG), with llama.cpp's figures as a dashed baseline series when a
//! llama-cpp-baseline output is given; the judge workload's criteria/s per round.
//!
//! The baseline is the text `../shared/bench/llama-cpp-baseline` prints (also `llama.txt` or
//! `llama-b16.txt` of `benches/compare-llama.sh`): `## ...` section lines, and under
//! `## llama-batched-bench (...)` the markdown rows of llama-batched-bench (PP, TG, B, N_KV,
//! T_PP s, S_PP t/s, T_TG s, S_TG t/s, T s, S t/s). A section naming `-pps` or "shared prompt"
//! holds shared-prompt rows; only rows of the same kind as the ares run are drawn against it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::bench::{BatchedRow, BenchReport};
use crate::report::chart::{Bars, Figure, Line, Lines};
use crate::report::html::Page;
use crate::report::ReportError;

/// Where `ares bench --out DIR --baseline FILE` keeps a copy of FILE, for `ares report DIR`.
pub const BASELINE_FILE: &str = "llama-baseline.txt";

/// llama.cpp's batched-bench rows, read from a llama-cpp-baseline output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// The first `# ` line (what ran, on what).
    pub description: String,
    /// (shared prompt?, row).
    pub rows: Vec<(bool, BatchedRow)>,
}

impl Baseline {
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let b = Self::parse(&crate::report::read(path)?);
        if b.rows.is_empty() {
            return Err(ReportError::Baseline {
                path: path.to_path_buf(),
            });
        }
        Ok(b)
    }

    /// Every llama-batched-bench row of `text` (see the module docs); other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut b = Baseline::default();
        let mut pps = false;
        for line in text.lines() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix("## ") {
                pps = h.contains("-pps") || h.contains("shared prompt");
                continue;
            }
            if let Some(d) = t.strip_prefix("# ") {
                if b.description.is_empty() {
                    b.description = d.to_string();
                }
                continue;
            }
            if !t.starts_with('|') {
                continue;
            }
            let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() != 10 {
                continue;
            }
            let ints: Option<Vec<usize>> = cells[..4].iter().map(|c| c.parse().ok()).collect();
            let floats: Option<Vec<f64>> = cells[4..].iter().map(|c| c.parse().ok()).collect();
            if let (Some(i), Some(f)) = (ints, floats) {
                b.rows.push((
                    pps,
                    BatchedRow {
                        pp: i[0],
                        tg: i[1],
                        b: i[2],
                        n_kv: i[3],
                        t_pp: f[0],
                        s_pp: f[1],
                        t_tg: f[2],
                        s_tg: f[3],
                        t: f[4],
                        s: f[5],
                    },
                ));
            }
        }
        b
    }

    /// Rows for (PP, TG) of the given kind, by batch size (the last one wins on repeats).
    pub fn series(&self, pps: bool, pp: usize, tg: usize) -> BTreeMap<usize, BatchedRow> {
        self.rows
            .iter()
            .filter(|(k, r)| *k == pps && r.pp == pp && r.tg == tg)
            .map(|(_, r)| (r.b, *r))
            .collect()
    }
}

/// Rows of the run grouped by (PP, TG), each by batch size.
fn groups(rows: &[BatchedRow]) -> BTreeMap<(usize, usize), BTreeMap<usize, BatchedRow>> {
    let mut g: BTreeMap<(usize, usize), BTreeMap<usize, BatchedRow>> = BTreeMap::new();
    for r in rows {
        g.entry((r.pp, r.tg)).or_default().insert(r.b, *r);
    }
    g
}

/// The throughput charts: for each (PP, TG), S_PP and S_TG against B.
pub fn figures(
    report: &BenchReport,
    baseline: Option<&Baseline>,
) -> Result<Vec<Figure>, ReportError> {
    let mut out = Vec::new();
    if let Some(b) = &report.batched {
        for ((pp, tg), rows) in groups(&b.rows) {
            let base = baseline
                .map(|x| x.series(b.pps, pp, tg))
                .unwrap_or_default();
            for (key, name, unit, get) in [
                (
                    "s_pp",
                    "S_PP",
                    "prompt processing",
                    (|r: &BatchedRow| r.s_pp) as fn(&BatchedRow) -> f64,
                ),
                ("s_tg", "S_TG", "generation", |r: &BatchedRow| r.s_tg),
            ] {
                let mut lines = vec![Line {
                    name: "ares".into(),
                    points: rows.values().map(|r| (r.b as f64, get(r))).collect(),
                    dashed: false,
                    color: 0,
                    labels: Vec::new(),
                }];
                if !base.is_empty() {
                    lines.push(Line {
                        name: "llama.cpp".into(),
                        points: base.values().map(|r| (r.b as f64, get(r))).collect(),
                        dashed: true,
                        color: 1,
                        labels: Vec::new(),
                    });
                }
                out.push(
                    Lines {
                        lines,
                        x_axis: "batch size B (parallel sequences, log scale)".into(),
                        y_axis: format!("{name}, {unit} (tokens/s)"),
                        log2_x: true,
                        x_range: None,
                        y_range: None,
                        diagonal: false,
                    }
                    .draw(
                        &format!("bench-{key}-pp{pp}-tg{tg}"),
                        &format!("{name} against batch size, PP {pp}, TG {tg}"),
                        &format!(
                            "{name} = {} (llama-batched-bench's definition){}.",
                            if key == "s_pp" {
                                if b.pps {
                                    "PP / T_PP, one shared prompt"
                                } else {
                                    "B·PP / T_PP"
                                }
                            } else {
                                "B·TG / T_TG"
                            },
                            if base.is_empty() {
                                ""
                            } else {
                                "; dashed: llama.cpp on the baseline's machine and threads"
                            }
                        ),
                    )?,
                );
            }
        }
    }
    if let Some(j) = &report.judge {
        let rounds: Vec<usize> = j
            .runs
            .iter()
            .flat_map(|r| r.rounds.iter().map(|x| x.round))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !rounds.is_empty() {
            let series = j
                .runs
                .iter()
                .map(|run| {
                    let name = if run.prefix_sharing {
                        "prefix sharing on"
                    } else {
                        "prefix sharing off"
                    };
                    let v = rounds
                        .iter()
                        .map(|k| {
                            run.rounds
                                .iter()
                                .find(|x| x.round == *k)
                                .map_or(0.0, |x| x.criteria_per_s)
                        })
                        .collect();
                    (name.to_string(), v)
                })
                .collect();
            out.push(
                Bars {
                    categories: rounds
                        .iter()
                        .map(|k| {
                            if *k == 0 {
                                "round 0 (cold)".to_string()
                            } else {
                                format!("round {k}")
                            }
                        })
                        .collect(),
                    series,
                    value_axis: "criteria judged per second".into(),
                    category_axis: "workload round".into(),
                }
                .draw(
                    "bench-judge",
                    "Judge workload throughput",
                    "Criteria (one verdict each) judged per second in each round of the workload.",
                )?,
            );
        }
    }
    Ok(out)
}

/// The whole bench page.
pub fn render(report: &BenchReport, baseline: Option<&Baseline>) -> Result<String, ReportError> {
    let h = &report.header;
    let mut page = Page::new(&format!(
        "ares bench: {}",
        h.model_path
            .file_name()
            .map_or(h.model_path.display().to_string(), |n| n
                .to_string_lossy()
                .into_owned())
    ));
    let mut meta = vec![
        (
            "ares",
            format!("{} (rev {})", h.ares_version, h.git_revision),
        ),
        ("date", h.date.clone()),
        ("model", h.model_path.display().to_string()),
        ("model sha256", h.model_sha256.clone()),
        ("architecture", h.model_arch.clone()),
        ("threads", h.threads.to_string()),
        ("CPU features", h.cpu_features.clone()),
    ];
    if let Some(rss) = report.peak_rss_mb {
        meta.push(("peak RSS", format!("{rss:.1} MB")));
    }
    if let Some(b) = baseline {
        meta.push(("baseline", b.description.clone()));
    }
    page.meta(&meta);
    let figs = figures(report, baseline)?;
    if report.batched.is_none() && report.judge.is_none() {
        page.empty(
            "This bench report has neither batched rows nor a judge workload: nothing to draw.",
        );
    }
    if let Some(b) = &report.batched {
        page.h2(
            &format!(
                "Batched throughput ({}; ubatch {}, block {}, seed {})",
                if b.pps {
                    "shared prompt, --pps"
                } else {
                    "separate prompts"
                },
                b.ubatch,
                b.block_size,
                b.seed
            ),
            "batched",
        );
        if b.rows.is_empty() {
            page.empty("No batched rows were measured.");
        }
        if let Some(base) = baseline {
            if !b
                .rows
                .iter()
                .any(|r| !base.series(b.pps, r.pp, r.tg).is_empty())
            {
                page.p("The baseline has no llama-batched-bench rows with this run's PP, TG and prompt sharing: only ares is drawn.");
            }
        }
        for f in figs.iter().filter(|f| f.id.starts_with("bench-s_")) {
            page.figure(f);
        }
        let rows: Vec<Vec<String>> = b
            .rows
            .iter()
            .map(|r| {
                let base = baseline.and_then(|x| x.series(b.pps, r.pp, r.tg).get(&r.b).copied());
                let ratio = |a: f64, l: Option<f64>| {
                    l.filter(|l| *l > 0.0)
                        .map_or("-".into(), |l| format!("{:.2}", a / l))
                };
                vec![
                    r.pp.to_string(),
                    r.tg.to_string(),
                    r.b.to_string(),
                    r.n_kv.to_string(),
                    format!("{:.3}", r.t_pp),
                    format!("{:.2}", r.s_pp),
                    format!("{:.3}", r.t_tg),
                    format!("{:.2}", r.s_tg),
                    ratio(r.s_pp, base.map(|x| x.s_pp)),
                    ratio(r.s_tg, base.map(|x| x.s_tg)),
                ]
            })
            .collect();
        page.table(
            &[
                "PP",
                "TG",
                "B",
                "N_KV",
                "T_PP s",
                "S_PP t/s",
                "T_TG s",
                "S_TG t/s",
                "S_PP ares/llama.cpp",
                "S_TG ares/llama.cpp",
            ],
            &rows,
        );
    }
    if let Some(j) = &report.judge {
        page.h2(
            &format!(
                "Judge workload {} (KV cache {} tokens)",
                j.file.display(),
                j.kv_capacity_tokens
            ),
            "judge",
        );
        match figs.iter().find(|f| f.id == "bench-judge") {
            Some(f) => page.figure(f),
            None => page.empty("The judge workload ran no rounds."),
        }
        for r in &j.runs {
            page.p(&r.summary_line());
        }
        if let Some(x) = j.sharing_speedup {
            page.p(&format!(
                "Sharing speedup (steady criteria/s, on / off): {x:.2}x"
            ));
        }
    }
    Ok(page.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# llama.cpp (llama-cpp-python 0.3.36 sources), model m.gguf sha256 abc, threads 2, 2026-01-01T00:00:00Z
## llama-bench
| model | size | params | backend | threads | test | t/s |
| --- | ---: | ---: | --- | ---: | ---: | ---: |
| llama 135M Q4_1 | 85 MiB | 134.52 M | CPU | 2 | pp512 | 1000.00 ± 1.00 |
## llama-batched-bench (separate prompts)
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|   128 |     32 |    1 |    160 |    0.100 |  1280.00 |    0.400 |    80.00 |    0.500 |   320.00 |
|   128 |     32 |    4 |    640 |    0.400 |  1280.00 |    0.800 |   160.00 |    1.200 |   533.33 |
## llama-batched-bench (shared prompt, -pps)
|   512 |     32 |   16 |   1024 |    0.500 |  1024.00 |    1.000 |   512.00 |    1.500 |   682.67 |
";

    #[test]
    fn baseline_rows_are_read_by_section() {
        let b = Baseline::parse(SAMPLE);
        assert!(b.description.starts_with("llama.cpp"));
        assert_eq!(b.rows.len(), 3);
        let sep = b.series(false, 128, 32);
        assert_eq!(sep.keys().copied().collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(sep[&4].s_tg, 160.0);
        assert!(b.series(true, 128, 32).is_empty());
        assert_eq!(b.series(true, 512, 32)[&16].s_pp, 1024.0);
    }
}

//! The bench report: one versioned serde type for `--json` and its human rendering (markdown
//! tables laid out exactly like llama.cpp's `llama-batched-bench`, so both tools' numbers sit side
//! by side). Also the run header (model, sha256, threads, CPU features, git revision, date).
//!
//! Must not print: the binary prints what [`BenchReport::to_markdown`] returns.

use crate::bench::batched::BatchedRow;
use crate::bench::judge::JudgeRun;
use crate::error::Result;
use crate::model::LoadedModel;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Version of the JSON layout; bump when a field changes meaning or goes away.
pub const BENCH_REPORT_VERSION: u32 = 1;

/// What ran, where, and on what.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub ares_version: String,
    /// `git rev-parse --short HEAD` of the source tree, `-dirty` when tracked files differ;
    /// "unknown" outside a checkout.
    pub git_revision: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub model_path: PathBuf,
    pub model_sha256: String,
    pub model_arch: String,
    /// Where the forward ran (`--device`); reports older than this field read as cpu.
    #[serde(default = "cpu_device")]
    pub device: String,
    /// Kernel thread pool size.
    pub threads: usize,
    pub cpu_features: String,
}

impl Header {
    /// Collect the header for `loaded` (hashes the model file once); `threads` is the size of the
    /// kernel thread pool the run uses.
    pub fn collect(loaded: &LoadedModel, threads: usize) -> Result<Self> {
        Ok(Header {
            ares_version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: git_revision(),
            date: utc_rfc3339(std::time::SystemTime::now()),
            model_path: loaded.path.clone(),
            model_sha256: loaded.sha256()?,
            model_arch: loaded.model.config().arch.clone(),
            device: loaded.model.device(),
            threads,
            cpu_features: ares_kernels::cpu_features(),
        })
    }
}

fn cpu_device() -> String {
    "cpu".into()
}

/// The batched (llama-batched-bench) part of a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchedReport {
    /// One shared prompt per batch (`--pps`).
    pub pps: bool,
    /// Tokens per prefill forward (llama.cpp's `-ub`).
    pub ubatch: usize,
    pub block_size: usize,
    /// Seed of the random prompt tokens.
    pub seed: u64,
    pub rows: Vec<BatchedRow>,
}

/// The judge-workload part of a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JudgeReport {
    pub file: PathBuf,
    /// KV cache of the engine, tokens.
    pub kv_capacity_tokens: usize,
    /// One run per sharing setting measured (on first).
    pub runs: Vec<JudgeRun>,
    /// Steady criteria/s with sharing on over sharing off, when both ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing_speedup: Option<f64>,
}

/// Everything `ares bench` measured in one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub version: u32,
    pub header: Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batched: Option<BatchedReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeReport>,
    /// Peak resident set size of the process at the end of the run (Linux VmHWM), MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
}

impl BenchReport {
    /// Human output: a header line, then llama-batched-bench's table and/or the judge summary.
    pub fn to_markdown(&self) -> String {
        let h = &self.header;
        let name = h
            .model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| h.model_path.display().to_string());
        let mut s = String::new();
        // Same shape as the first line of ../shared/bench/llama-cpp-baseline.
        let _ = writeln!(
            s,
            "# ares {} (rev {}), model {} sha256 {}, device {}, threads {}, cpu {}, {}",
            h.ares_version,
            h.git_revision,
            name,
            h.model_sha256.get(..12).unwrap_or(&h.model_sha256),
            h.device,
            h.threads,
            h.cpu_features,
            h.date
        );
        if let Some(b) = &self.batched {
            let kind = if b.pps {
                "shared prompt, --pps"
            } else {
                "separate prompts"
            };
            let _ = writeln!(
                s,
                "## ares bench ({kind}; ubatch {}, block {}, seed {})",
                b.ubatch, b.block_size, b.seed
            );
            s.push_str(&batched_table(&b.rows));
        }
        if let Some(j) = &self.judge {
            let _ = writeln!(
                s,
                "## judge workload {} (KV cache {} tokens)",
                j.file.display(),
                j.kv_capacity_tokens
            );
            s.push_str(&judge_table(&j.runs));
            for r in &j.runs {
                let _ = writeln!(s, "{}", r.summary_line());
            }
            if let Some(x) = j.sharing_speedup {
                let _ = writeln!(s, "sharing speedup (steady criteria/s, on / off): {x:.2}x");
            }
        }
        if let Some(rss) = self.peak_rss_mb {
            let _ = writeln!(s, "peak RSS {rss:.1} MB");
        }
        s
    }
}

/// llama-batched-bench's table, column for column (its `LOG` format strings in
/// tools/batched-bench/batched-bench.cpp).
pub fn batched_table(rows: &[BatchedRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "|{:>6} | {:>6} | {:>4} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} |",
        "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s"
    );
    let _ = writeln!(
        s,
        "|{:>6}-|-{:>6}-|-{:>4}-|-{:>6}-|-{:>8}-|-{:>8}-|-{:>8}-|-{:>8}-|-{:>8}-|-{:>8}-|",
        "------",
        "------",
        "----",
        "------",
        "--------",
        "--------",
        "--------",
        "--------",
        "--------",
        "--------"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "|{:>6} | {:>6} | {:>4} | {:>6} | {:>8.3} | {:>8.2} | {:>8.3} | {:>8.2} | {:>8.3} | {:>8.2} |",
            r.pp, r.tg, r.b, r.n_kv, r.t_pp, r.s_pp, r.t_tg, r.s_tg, r.t, r.s
        );
    }
    s
}

fn judge_table(runs: &[JudgeRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| sharing | round | prompts | prompt tok | cached tok | wall s | criteria/s | answers |"
    );
    let _ = writeln!(
        s,
        "|---------|-------|---------|------------|------------|--------|------------|---------|"
    );
    for run in runs {
        let on = if run.prefix_sharing { "on" } else { "off" };
        for r in &run.rounds {
            let answers = r
                .answers
                .iter()
                .map(|(a, n)| format!("{a:?}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "| {on:>7} | {:>5} | {:>7} | {:>10} | {:>10} | {:>6.3} | {:>10.2} | {answers} |",
                r.round, r.prompts, r.prompt_tokens, r.cached_tokens, r.seconds, r.criteria_per_s
            );
        }
    }
    s
}

/// Short revision of the source tree this binary was built from, or of the current directory.
fn git_revision() -> String {
    let dir = option_env!("CARGO_MANIFEST_DIR").unwrap_or(".");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            // Read-only: never take the index lock to refresh stat information.
            .arg("--no-optional-locks")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".into(),
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC), via the days-to-civil algorithm of H. Hinnant's
/// "chrono-Compatible Low-Level Date Algorithms".
pub fn utc_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Peak resident set size (VmHWM) in MB, Linux only.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates_are_utc_rfc3339() {
        let at = |s: u64| utc_rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn batched_table_has_llama_batched_bench_columns() {
        let row = BatchedRow::new(128, 32, 4, false, 1.0, 2.0);
        let t = batched_table(&[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |"
        );
        assert_eq!(
            lines[2],
            "|   128 |     32 |    4 |    640 |    1.000 |   512.00 |    2.000 |    64.00 |    3.000 |   213.33 |"
        );
    }
}

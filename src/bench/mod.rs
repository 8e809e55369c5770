//! The `bench` subcommand: throughput harness and report (llama-batched-bench table, judge workload).
//!
//! Two modes: [`batched`] drives `Model::forward` directly, like llama.cpp's `llama-batched-bench`;
//! [`judge`] times `../shared/bench/judge_workload.jsonl` through the engine (`EngineHandle`), the
//! way a judge uses it. Both end in one [`BenchReport`] (versioned JSON, or markdown tables laid out
//! like llama.cpp's). Benchmarks measure; they assert nothing about time. This module never prints:
//! progress goes through a callback and the binary prints the report.

pub mod batched;
pub mod judge;
pub mod report;
pub mod synthetic;

pub use batched::{BatchedConfig, BatchedRow};
pub use judge::{JudgeRound, JudgeRun};
pub use report::{BatchedReport, BenchReport, Header, JudgeReport, BENCH_REPORT_VERSION};

use crate::engine::kv_cache::KvCache;
use crate::engine::{EngineConfig, EngineHandle};
use crate::error::{Error, Result};
use crate::model::LoadedModel;
use std::path::PathBuf;

/// The judge-workload run.
#[derive(Clone, Debug)]
pub struct JudgeConfig {
    pub file: PathBuf,
    /// Use the first N rounds (all when None).
    pub rounds: Option<usize>,
    /// Sharing settings to run, in order (`[true]`, `[false]`, or `[true, false]` to compare).
    pub sharing: Vec<bool>,
    /// Engine settings; the KV budget is raised, when needed, to hold one whole round.
    pub engine: EngineConfig,
    /// The model's tokenizer is not real (a `--synthetic` model): only token workloads
    /// (`prompt_ids`) can run.
    pub tokens_only: bool,
}

/// What `ares bench` runs.
#[derive(Clone, Debug)]
pub enum BenchMode {
    Batched(BatchedConfig),
    Judge(JudgeConfig),
}

/// Progress callback: (what, done, total).
pub type Progress<'a> = &'a dyn Fn(&str, usize, usize);

/// Run `mode` on `loaded` and collect the report (header included; hashes the model file).
/// `threads` is the kernel pool size the caller set up, recorded in the header.
pub fn run(
    loaded: &LoadedModel,
    mode: &BenchMode,
    threads: usize,
    progress: Progress<'_>,
) -> Result<BenchReport> {
    let header = Header::collect(loaded, threads)?;
    let (mut batched, mut judge) = (None, None);
    match mode {
        BenchMode::Batched(cfg) => {
            let rows = batched::run(loaded.model.as_ref(), cfg, &|d, n| {
                progress("batched", d, n)
            })?;
            batched = Some(BatchedReport {
                pps: cfg.pps,
                ubatch: cfg.ubatch,
                block_size: cfg.block_size,
                seed: cfg.seed,
                rows,
            });
        }
        BenchMode::Judge(cfg) => judge = Some(run_judge(loaded, cfg, progress)?),
    }
    Ok(BenchReport {
        version: BENCH_REPORT_VERSION,
        header,
        batched,
        judge,
        peak_rss_mb: report::peak_rss_mb(),
    })
}

fn run_judge(
    loaded: &LoadedModel,
    cfg: &JudgeConfig,
    progress: Progress<'_>,
) -> Result<JudgeReport> {
    let mut rounds = judge::load_workload(&cfg.file)?;
    if let Some(n) = cfg.rounds {
        rounds.truncate(n.max(1));
    }
    if cfg.tokens_only && judge::has_text_rounds(&rounds) {
        return Err(Error::InvalidRequest {
            request: format!("judge workload {}", cfg.file.display()),
            reason: "a synthetic model has placeholder tokens, so it needs a token workload (prompt_ids): write one with `ares bench -m MODEL --judge FILE --write-token-workload OUT` using a real model of the same vocabulary".into(),
        });
    }
    judge::check_ids(&rounds, loaded.model.config().vocab)?;
    let mut ecfg = cfg.engine.clone();
    let need_tokens = judge::kv_tokens_for_a_round(&loaded.tokenizer, &rounds, ecfg.block_size)?;
    let mc = loaded.model.config();
    let need_bytes = need_tokens * KvCache::bytes_per_token(mc.n_layer, mc.kv_dim());
    if ecfg.kv_mem_bytes < need_bytes {
        tracing::info!(
            need_tokens,
            "raising the KV cache to {} MiB to hold one round",
            need_bytes.div_ceil(1 << 20)
        );
        ecfg.kv_mem_bytes = need_bytes;
    }
    let engine = EngineHandle::start(loaded, ecfg)?;
    let mut runs = Vec::new();
    for (i, &sharing) in cfg.sharing.iter().enumerate() {
        if i > 0 {
            engine.clear_prefix_cache()?;
        }
        let label = if sharing {
            "judge (sharing on)"
        } else {
            "judge (sharing off)"
        };
        runs.push(judge::run(&engine, &rounds, sharing, &|d, n| {
            progress(label, d, n)
        })?);
    }
    let steady = |on: bool| {
        runs.iter()
            .find(|r| r.prefix_sharing == on)
            .map(|r| r.steady_criteria_per_s)
    };
    let sharing_speedup = match (steady(true), steady(false)) {
        (Some(on), Some(off)) if off > 0.0 => Some(on / off),
        _ => None,
    };
    Ok(JudgeReport {
        file: cfg.file.clone(),
        kv_capacity_tokens: engine.stats().kv_capacity_tokens,
        runs,
        sharing_speedup,
    })
}

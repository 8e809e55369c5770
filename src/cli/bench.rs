//! `ares bench` arguments: llama-batched-bench's lists (`--npp`, `--ntg`, `--npl`, `--pps`) or the
//! judge workload (`--judge FILE`), turned into a [`BenchMode`]. Defaults match the batched run of
//! `../shared/bench/llama-cpp-baseline` (`-npp 128 -ntg 32 -npl 1,4,16,32`).

use crate::bench::{BatchedConfig, BenchMode, BenchReport, JudgeConfig};
use crate::cli::ModelArgs;
use crate::report::bench::{Baseline, BASELINE_FILE};
use crate::report::ReportError;
use clap::Args;
use std::path::PathBuf;

/// Flags of `ares bench` besides the model flags. Batched mode sizes its own KV cache for the
/// largest combination (like llama-batched-bench's `-c`) and ignores `--kv-mem`;
/// `--max-batch-tokens` is its prefill ubatch (llama.cpp's `-ub`). Judge mode runs the engine with
/// the model flags, raising `--kv-mem` when one round would not fit at once.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Prompt lengths (PP), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128", conflicts_with = "judge",
          value_parser = at_least_one)]
    pub npp: Vec<usize>,
    /// Generated tokens per sequence (TG), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "32",
        conflicts_with = "judge"
    )]
    pub ntg: Vec<usize>,
    /// Parallel sequences (B), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32", conflicts_with = "judge",
          value_parser = at_least_one)]
    pub npl: Vec<usize>,
    /// One prompt shared by all B sequences: computed once, its KV blocks shared.
    #[arg(long, conflicts_with = "judge")]
    pub pps: bool,
    /// Seed of the random prompt tokens.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Time the judge workload in FILE (JSONL rounds `{round, prefix, prompts}`, e.g.
    /// ../shared/bench/judge_workload.jsonl) instead of the batched table.
    #[arg(long, value_name = "FILE")]
    pub judge: Option<PathBuf>,
    /// Tokenize the judge workload with the model's tokenizer, write it to OUT as a token
    /// workload (`prompt_ids`), and exit; `--synthetic` models of the same vocabulary run it.
    #[arg(
        long,
        value_name = "OUT",
        requires = "judge",
        conflicts_with = "synthetic"
    )]
    pub write_token_workload: Option<PathBuf>,
    /// Use only the first N rounds of the workload (round 0 is the cold one).
    #[arg(long, requires = "judge", value_parser = at_least_one)]
    pub rounds: Option<usize>,
    /// Judge with prefix sharing off: every prompt computed in full (see `ares::bench::judge`).
    #[arg(long, requires = "judge", conflicts_with = "compare_sharing")]
    pub no_prefix_cache: bool,
    /// Judge with prefix sharing on, then off, and print the speedup.
    #[arg(long, requires = "judge")]
    pub compare_sharing: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write DIR/report.json (the --json object) and DIR/report.html (charts of S_PP and
    /// S_TG against batch size, the judge workload's rounds).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// llama.cpp's figures for the report's baseline series: the output of
    /// ../shared/bench/llama-cpp-baseline (kept as DIR/llama-baseline.txt).
    #[arg(long, value_name = "FILE", requires = "out")]
    pub baseline: Option<PathBuf>,
    /// Bench a random-weight model of real dimensions instead of `-m`: ARCH:SIZE:QUANT, e.g.
    /// qwen2:1.5b:q4_k (see `ares::bench::synthetic::SHAPES`); written to a temporary GGUF first.
    #[arg(long, value_name = "ARCH:SIZE:QUANT")]
    pub synthetic: Option<crate::bench::synthetic::SyntheticSpec>,
}

impl BenchArgs {
    /// The run these flags describe.
    pub fn mode(&self, model: &ModelArgs) -> BenchMode {
        match &self.judge {
            Some(file) => BenchMode::Judge(JudgeConfig {
                file: file.clone(),
                rounds: self.rounds,
                sharing: if self.compare_sharing {
                    vec![true, false]
                } else {
                    vec![!self.no_prefix_cache]
                },
                engine: model.engine_config(),
                tokens_only: self.synthetic.is_some(),
            }),
            None => BenchMode::Batched(BatchedConfig {
                npp: self.npp.clone(),
                ntg: self.ntg.clone(),
                npl: self.npl.clone(),
                pps: self.pps,
                ubatch: model.max_batch_tokens.max(1),
                block_size: model.block_size.max(1),
                seed: self.seed,
            }),
        }
    }
}

impl BenchArgs {
    /// Checks `--baseline` before any work: it must hold llama-batched-bench rows.
    pub fn check_baseline(&self) -> Result<(), ReportError> {
        match &self.baseline {
            Some(path) => Baseline::read(path).map(|_| ()),
            None => Ok(()),
        }
    }

    /// With `--out DIR`: writes DIR/report.json, keeps the baseline as DIR/llama-baseline.txt,
    /// and draws DIR/report.html; returns the page's path.
    pub fn write_outputs(&self, report: &BenchReport) -> Result<Option<PathBuf>, ReportError> {
        let Some(dir) = &self.out else {
            return Ok(None);
        };
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = serde_json::to_string_pretty(report).expect("the report is plain data");
        crate::report::write_atomic(&dir.join(crate::report::JSON_FILE), &json)?;
        if let Some(b) = &self.baseline {
            let text = std::fs::read_to_string(b).map_err(io(b))?;
            crate::report::write_atomic(&dir.join(BASELINE_FILE), &text)?;
        }
        crate::report::render_dir(dir, None).map(Some)
    }
}

/// A count of at least one (PP, B, rounds).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn defaults_are_llama_batched_bench_s_and_judge_flags_pick_runs() -> Result<(), clap::Error> {
        let c = Cli::try_parse_from(["bench"])?;
        match c.bench.mode(&c.model) {
            BenchMode::Batched(b) => {
                assert_eq!(
                    (b.npp, b.ntg, b.npl),
                    (vec![128], vec![32], vec![1, 4, 16, 32])
                );
                assert!(!b.pps);
            }
            other => panic!("expected batched, got {other:?}"),
        }
        let c = Cli::try_parse_from(["bench", "--judge", "w.jsonl", "--compare-sharing"])?;
        match c.bench.mode(&c.model) {
            BenchMode::Judge(j) => assert_eq!(j.sharing, vec![true, false]),
            other => panic!("expected judge, got {other:?}"),
        }
        assert!(Cli::try_parse_from(["bench", "--npl", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--judge", "w", "--pps"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--no-prefix-cache"]).is_err());
        Ok(())
    }
}

//! Command-line arguments (clap), one module per subcommand, turned into validated config structs
//! and jobs the binary runs. Nothing here prints to the terminal directly: output goes to the
//! writers the binary passes in.

pub mod backend;
pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod judge;
pub mod report;
pub mod rubric;
pub mod serve;
pub mod synth;

use crate::engine::EngineConfig;
use clap::Args;

/// Model and engine flags shared by every subcommand that runs a model.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a GGUF path, a registry name (see models/registry.toml), or a Hugging Face repo id
    /// (`owner/repo[:file.gguf]`).
    #[arg(short, long, default_value = "default", env = "ARES_MODEL")]
    pub model: String,
    /// KV cache memory budget in MiB.
    #[arg(long, default_value_t = 512)]
    pub kv_mem: usize,
    /// Tokens per KV cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Token budget of one engine step (prefill chunk size).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Context length per sequence (0: the model's).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Worker threads (0: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Quantize the matrices of a safetensors checkpoint at load (q8_0 or q4_k).
    #[arg(long)]
    pub quantize: Option<crate::model::safetensors::Quantize>,
    /// Where the model runs: cpu (the hand-written engine), candle-cpu (the candle path on the
    /// CPU), cuda[:N] or metal[:N] (builds with `--features cuda` / `metal`).
    #[arg(long, default_value = "cpu", env = "ARES_DEVICE")]
    pub device: crate::model::device::Device,
}

impl ModelArgs {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            kv_mem_bytes: self.kv_mem << 20,
            block_size: self.block_size.max(1),
            max_batch_tokens: self.max_batch_tokens.max(1),
            n_ctx: self.ctx,
            ..EngineConfig::default()
        }
    }
}

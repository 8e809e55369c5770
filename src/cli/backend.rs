//! `--backend URL` and `--shard i/n`, shared by the batch subcommands (judge, rubric, synth):
//! where requests run (the local engine, or a remote OpenAI-compatible server through
//! [`RemoteGenerator`]) and which part of a job this machine does.
//! The shard itself is [`crate::shard::Shard`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::cli::ModelArgs;
use crate::engine::remote::{load_vocab, RemoteConfig, RemoteGenerator, RemoteStats};
use crate::engine::{EngineHandle, Generator};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::model::LoadedModel;
use crate::shard::Shard;

#[derive(Args, Clone, Debug, Default)]
pub struct BackendArgs {
    /// Run requests on this OpenAI-compatible server (vLLM, SGLang, llama.cpp server, `ares
    /// serve`) instead of the local engine; -m still names the same model, whose tokenizer and
    /// chat template are read locally (its weights are not loaded).
    #[arg(long, env = "ARES_BACKEND")]
    pub backend: Option<String>,
    /// Bearer token for --backend.
    #[arg(long, env = "ARES_BACKEND_API_KEY", hide_env_values = true)]
    pub backend_api_key: Option<String>,
    /// Model name to request from --backend (default: the first it lists).
    #[arg(long)]
    pub backend_model: Option<String>,
    /// Requests in flight to --backend at most.
    #[arg(long, default_value_t = 8)]
    pub backend_concurrency: usize,
    /// Retries of a --backend request after connection errors, 429 or 5xx (exponential backoff).
    #[arg(long, default_value_t = 4)]
    pub backend_retries: usize,
    /// Seconds one --backend request may take.
    #[arg(long, default_value_t = 600)]
    pub backend_timeout: u64,
    /// Do part i of n (0-based) of the job: items whose id hashes to i mod n. The outputs of
    /// 0/n .. n-1/n concatenate to the whole job without duplicates.
    #[arg(long)]
    pub shard: Option<Shard>,
}

impl BackendArgs {
    pub fn shard(&self) -> Shard {
        self.shard.unwrap_or(Shard::ALL)
    }

    pub fn remote_config(&self, url: &str) -> RemoteConfig {
        RemoteConfig {
            url: url.to_string(),
            api_key: self.backend_api_key.clone(),
            model: self.backend_model.clone(),
            concurrency: self.backend_concurrency.max(1),
            retries: self.backend_retries,
            timeout: Duration::from_secs(self.backend_timeout.max(1)),
            ..RemoteConfig::default()
        }
    }
}

/// Where a job's requests run.
pub struct Backend {
    pub generator: Box<dyn Generator>,
    pub tokenizer: Arc<Tokenizer>,
    pub model_sha256: String,
    /// The local engine (for its statistics), when there is one.
    pub engine: Option<EngineHandle>,
    /// The remote server's URL, when there is one.
    pub remote: Option<String>,
    /// What the remote server reported (cached prompt tokens, verdict matching).
    pub remote_stats: Option<Arc<RemoteStats>>,
}

impl Backend {
    /// The summary's prefix-cache clause: the local engine's hit rate, or what the remote server
    /// reported as cached (or that it reported nothing) and how verdict tokens were matched.
    /// `cached` and `prompt` are the job's own token counts (used for the local engine).
    pub fn cache_line(&self, cached: usize, prompt: usize) -> String {
        if let Some(stats) = &self.remote_stats {
            let s = stats.snapshot();
            return match s.match_line() {
                Some(m) => format!("{}; {m}", s.cache_line()),
                None => s.cache_line(),
            };
        }
        let hit_rate = self
            .engine
            .as_ref()
            .map(|e| e.stats().prefix.hit_rate())
            .unwrap_or_default();
        format!(
            "prefix-cache hit rate {:.1}% ({cached} of {prompt} prompt tokens cached)",
            100.0 * hit_rate
        )
    }
}

/// `--backend URL` for the GGUF model file `path` (the same model the server runs): only its
/// tokenizer and chat template are read, and its sha256 must match an `ares serve` backend's.
pub fn remote(path: &Path, args: &BackendArgs) -> Result<Backend> {
    let url = args
        .backend
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| Error::Config("--backend is empty".into()))?;
    let sha = crate::model::sha256_file(path)?;
    let (tokenizer, template) = load_vocab(path)?;
    let remote = RemoteGenerator::connect(
        args.remote_config(url),
        tokenizer.clone(),
        template,
        Some(&sha),
    )?;
    let remote_stats = Some(remote.stats());
    Ok(Backend {
        generator: Box::new(remote),
        tokenizer,
        model_sha256: sha,
        engine: None,
        remote: Some(url.to_string()),
        remote_stats,
    })
}

/// The local engine over a loaded model.
pub fn local(loaded: &LoadedModel, margs: &ModelArgs) -> Result<Backend> {
    let sha = loaded.sha256()?;
    let engine = EngineHandle::start(loaded, margs.engine_config())?;
    Ok(Backend {
        generator: Box::new(engine.clone()),
        tokenizer: loaded.tokenizer.clone(),
        model_sha256: sha,
        engine: Some(engine),
        remote: None,
        remote_stats: None,
    })
}

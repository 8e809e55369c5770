//! `--backend URL` and `--shard i/n`, shared by the batch subcommands (judge, rubric, synth):
//! where requests run (the local engine, or a remote OpenAI-compatible server through
//! [`RemoteGenerator`]) and which part of a job this machine does.
//!
//! [`Shard`] splits a job by a stable hash of each item's id (sha256, not the process-seeded
//! std hasher), so n machines given `0/n` .. `n-1/n` over the same input each take a disjoint
//! part and together take all of it: their outputs concatenate without duplicates or gaps,
//! whatever the order or count of lines. Keying by item id keeps all responses of one item (a
//! GRPO group) on one machine, where they share the cached question prefix.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sha2::{Digest, Sha256};

use crate::cli::ModelArgs;
use crate::engine::remote::{load_vocab, RemoteConfig, RemoteGenerator};
use crate::engine::{EngineHandle, Generator};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::model::LoadedModel;

/// Part `index` of `count` (0-based): `--shard 2/8` is the third of eight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the item `key` (its id) belongs to this shard.
    pub fn contains(&self, key: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let digest = Sha256::digest(key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not i/n (e.g. 0/4)"))?;
        let index: u64 = i
            .trim()
            .parse()
            .map_err(|e| format!("shard index `{i}`: {e}"))?;
        let count: u64 = n
            .trim()
            .parse()
            .map_err(|e| format!("shard count `{n}`: {e}"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: need 0 <= i < n (shards are numbered from 0)"
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

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
    Ok(Backend {
        generator: Box::new(remote),
        tokenizer,
        model_sha256: sha,
        engine: None,
        remote: Some(url.to_string()),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_keys() {
        let keys: Vec<String> = (0..1000).map(|i| format!("item-{i}")).collect();
        let n = 7;
        let mut counts = vec![0usize; n as usize];
        for k in &keys {
            let owners: Vec<u64> = (0..n)
                .filter(|&i| Shard { index: i, count: n }.contains(k))
                .collect();
            assert_eq!(owners.len(), 1, "{k} is in shards {owners:?}");
            counts[owners[0] as usize] += 1;
        }
        // Roughly balanced: every shard gets at least half its share.
        assert!(counts.iter().all(|&c| c > 1000 / 7 / 2), "{counts:?}");
        assert!(keys.iter().all(|k| Shard::ALL.contains(k)));
    }

    #[test]
    fn shard_hash_is_stable_across_builds() {
        // sha256("a") starts with ca978112ca1bbdca: 0xca978112ca1bbdca % 4 == 2.
        assert!(Shard { index: 2, count: 4 }.contains("a"));
    }

    #[test]
    fn shard_parsing() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert!("4/4".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert!("1/b".parse::<Shard>().is_err());
    }
}

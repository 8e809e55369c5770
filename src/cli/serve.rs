//! `ares serve`: arguments, and the blocking job that loads the rubric file, binds the address
//! and serves until SIGTERM or Ctrl-C (in-flight requests finish first).
//!
//! Nothing here prints: the binary gets the bound address through a callback and reports it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::judge::{AggregatorArg, ModeArg, RubricFormatArg};
use crate::engine::EngineHandle;
use crate::judge::{Aggregator, Format};
use crate::judge::{JudgeConfig, JudgeError, Mode, RubricSet};
use crate::server::{needs_api_key, serve, shutdown_signal, AppState, Limits, ServeConfig};

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to bind. Anything but loopback requires --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0: any free port; the bound address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Bearer token required on every route but /health.
    #[arg(long, env = "ARES_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Name of the model in /v1/models and responses (default: the file name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Rubric items that /get_reward labels and /v1/rubric/score `item_id` refer to.
    #[arg(long)]
    pub rubrics: Option<PathBuf>,
    /// Format of --rubrics.
    #[arg(long, value_enum, default_value_t = RubricFormatArg::Ares)]
    pub rubric_format: RubricFormatArg,
    /// Verdict mode of the reward endpoints (/v1/rubric/score may override it).
    #[arg(long, value_enum, default_value_t = ModeArg::Logprob)]
    pub mode: ModeArg,
    /// Aggregator of the reward endpoints.
    #[arg(long, value_enum, default_value_t = AggregatorArg::Rar)]
    pub aggregator: AggregatorArg,
    /// Hard 0/1 verdicts.
    #[arg(long)]
    pub hard: bool,
    /// Reward /get_reward reports for a response that could not be judged (default: null; its
    /// status and error say why).
    #[arg(long)]
    pub failed_reward: Option<f64>,
    /// Multiply every reward by the relevance gate, as `ares judge --relevance-gate`: σ(4·PMI)
    /// of the question's likelihood given the response against given no text (a response about
    /// something else gets a reward near 0). One more scoring request per response.
    #[arg(long)]
    pub relevance_gate: bool,
    /// Request body bytes at most (413 beyond).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// New tokens per completion at most (422 beyond).
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Verdict requests (criteria x responses) per reward request at most (422 beyond).
    #[arg(long, default_value_t = 1024)]
    pub max_criteria: usize,
    /// Responses, prompts or choices per request at most (422 beyond).
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    /// Requests running at once.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: usize,
    /// Requests waiting for a slot at most (429 beyond).
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Seconds a client has to send its request body (408 after).
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,
    /// Seconds a client has to send its request line and headers, and an idle keep-alive
    /// connection is kept; the connection is closed after.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Async worker threads for HTTP (the engine has its own threads).
    #[arg(long, default_value_t = 2)]
    pub http_threads: usize,
    /// Reward monitors (`/v1/stats`, `/metrics`): groups kept in the window.
    #[arg(long, default_value_t = 512)]
    pub monitor_groups: usize,
    /// Reward monitors: judged responses kept in the window.
    #[arg(long, default_value_t = 8192)]
    pub monitor_records: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr} (not loopback) needs --api-key (or ARES_API_KEY)")]
    ApiKeyRequired { addr: SocketAddr },
    #[error("--api-key is empty")]
    EmptyApiKey,
    #[error("--mode support is not served yet (use `ares judge --mode support` or `ares eval`)")]
    SupportMode,
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Rubrics(#[from] JudgeError),
}

impl ServeArgs {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_tokens: self.max_tokens,
            max_criteria: self.max_criteria.max(1),
            max_batch: self.max_batch.max(1),
            max_concurrent: self.max_concurrent.max(1),
            max_queue: self.max_queue,
            body_timeout: Duration::from_secs(self.body_timeout.max(1)),
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
        }
    }

    pub fn judge_config(&self) -> JudgeConfig {
        JudgeConfig {
            mode: match self.mode {
                ModeArg::Logprob => Mode::Logprob,
                ModeArg::Holistic => Mode::Holistic,
                ModeArg::Generate => Mode::Generate,
                ModeArg::Support => Mode::Support,
            },
            aggregator: match self.aggregator {
                AggregatorArg::Rar => Aggregator::RarExplicit,
                AggregatorArg::Healthbench => Aggregator::HealthBench,
                AggregatorArg::Rlcf => Aggregator::RlcfWeightedMean,
            },
            hard: self.hard,
            ..JudgeConfig::default()
        }
    }

    pub fn config(&self, model_id: String, model_sha256: String) -> ServeConfig {
        ServeConfig {
            model_id: self.model_id.clone().unwrap_or(model_id),
            model_sha256,
            limits: self.limits(),
            api_key: self.api_key.clone(),
            judge: self.judge_config(),
            failed_reward: self.failed_reward,
            relevance_gate: self.relevance_gate,
            monitor: crate::server::MonitorConfig {
                max_groups: self.monitor_groups,
                max_records: self.monitor_records,
            },
        }
    }

    /// The rubric items of --rubrics (none without it).
    pub fn rubric_set(&self) -> Result<RubricSet, JudgeError> {
        let format = match self.rubric_format {
            RubricFormatArg::Ares => Format::Ares,
            RubricFormatArg::Rar => Format::Rar,
            RubricFormatArg::Healthbench => Format::HealthBench,
            RubricFormatArg::Rlcf => Format::Rlcf,
        };
        match &self.rubrics {
            Some(p) => Ok(RubricSet::read(p, format)?),
            None => Ok(RubricSet::default()),
        }
    }

    /// Refuses a mode the reward server does not run.
    pub fn check_mode(&self) -> Result<(), ServeError> {
        match self.mode {
            ModeArg::Support => Err(ServeError::SupportMode),
            _ => Ok(()),
        }
    }

    /// Refuses a non-loopback bind without an API key.
    pub fn check_auth(&self) -> Result<(), ServeError> {
        match &self.api_key {
            Some(k) if k.is_empty() => Err(ServeError::EmptyApiKey),
            None if needs_api_key(&self.addr()) => {
                Err(ServeError::ApiKeyRequired { addr: self.addr() })
            }
            _ => Ok(()),
        }
    }
}

/// Serves until SIGTERM or Ctrl-C; `on_listening` gets the bound address once accepting.
pub fn run(
    args: &ServeArgs,
    engine: EngineHandle,
    config: ServeConfig,
    rubrics: RubricSet,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    args.check_auth()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.http_threads.max(1))
        .enable_all()
        .thread_name("ares-http")
        .build()?;
    rt.block_on(async {
        let addr = args.addr();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        on_listening(listener.local_addr()?);
        let state = AppState::new(engine, config, rubrics);
        serve(listener, state, shutdown_signal()).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn non_loopback_bind_needs_a_key() {
        let parse =
            |a: &[&str]| Cli::parse_from(std::iter::once("x").chain(a.iter().copied())).args;
        assert!(parse(&[]).check_auth().is_ok());
        assert!(matches!(
            parse(&["--host", "0.0.0.0"]).check_auth(),
            Err(ServeError::ApiKeyRequired { .. })
        ));
        assert!(parse(&["--host", "0.0.0.0", "--api-key", "k"])
            .check_auth()
            .is_ok());
        assert!(parse(&["--host", "::1"]).check_auth().is_ok());
        assert!(matches!(
            parse(&["--api-key", ""]).check_auth(),
            Err(ServeError::EmptyApiKey)
        ));
    }

    #[test]
    fn header_timeout_flag_sets_the_limit() {
        let parse =
            |a: &[&str]| Cli::parse_from(std::iter::once("x").chain(a.iter().copied())).args;
        assert_eq!(parse(&[]).limits().header_timeout, Duration::from_secs(10));
        assert_eq!(
            parse(&["--header-timeout", "3"]).limits().header_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            Limits::default().header_timeout,
            parse(&[]).limits().header_timeout
        );
    }
}

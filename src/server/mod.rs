//! `ares serve`: a reward service and OpenAI-compatible API over one shared engine (issue #6).
//!
//! What this module owns: the axum router ([`router`]), the handlers (`reward`: OpenRLHF's
//! `/get_reward` and `/v1/rubric/score`; `openai`: `/v1/completions`, `/v1/chat/completions`,
//! `/v1/models`), the one error -> status mapping (`error`), limits, admission and auth
//! (`limits`), `/metrics` (`metrics`), reward monitors and `/v1/stats` (`monitor`), and the bridge from the blocking engine API to async
//! handlers with cancellation on disconnect (`bridge`).
//!
//! Invariants:
//! - one [`EngineHandle`] serves every connection, so concurrent requests are batched together
//!   and share cached prefixes;
//! - every failure is an `ApiError` answered with a JSON body `{error, type}`; bad input never
//!   takes the server down (no `unwrap` on request data, engine calls run off the async threads);
//! - a client that goes away cancels its engine sequences (`bridge`);
//! - shutdown (SIGTERM, Ctrl-C or the caller's signal) stops accepting, lets in-flight requests
//!   finish, then returns;
//! - a connection whose request headers do not arrive within `Limits::header_timeout` is
//!   closed ([`serve`]), so slow or idle clients cannot pile up connections.
//!
//! Nothing here prints: logs go through `tracing`.

pub mod bridge;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod monitor;
pub mod openai;
pub mod reward;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::engine::EngineHandle;
use crate::judge::{JudgeConfig, RubricSet};
use error::{ApiError, ErrorKind};
pub use limits::Limits;
use metrics::{Gauges, Metrics};
pub use monitor::{MonitorConfig, RewardMonitor};

/// What a server runs with; `ares serve`'s flags map onto it.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model's name in `/v1/models` and responses.
    pub model_id: String,
    /// sha256 of the model file (in reward records and `/v1/models`).
    pub model_sha256: String,
    pub limits: Limits,
    /// Bearer token every route but `/health` requires, when set.
    pub api_key: Option<String>,
    /// Default judge settings of the reward endpoints (`/v1/rubric/score` may override mode,
    /// aggregator and hard per request).
    pub judge: JudgeConfig,
    /// Reward `/get_reward` reports for a response that could not be judged (its status says
    /// why). `None`: null, so a trainer cannot mistake a failure for a score.
    pub failed_reward: Option<f64>,
    /// Window of the reward monitors.
    pub monitor: MonitorConfig,
    /// Multiply every reward by the relevance gate (`judge::relevance`): σ(4·PMI) of the
    /// question's likelihood given the response; records get `gate` with the PMI.
    pub relevance_gate: bool,
}

pub(crate) struct Inner {
    pub engine: EngineHandle,
    pub config: ServeConfig,
    pub rubrics: RubricSet,
    pub metrics: Metrics,
    /// Reward statistics over a window of recent groups (`/v1/stats`, `/metrics`).
    pub monitor: RewardMonitor,
    /// Requests admitted (running + queued).
    pub admitted: AtomicUsize,
    /// One permit per running request.
    pub slots: Arc<Semaphore>,
}

/// Shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("model_id", &self.inner.config.model_id)
            .finish()
    }
}

impl AppState {
    pub fn new(engine: EngineHandle, config: ServeConfig, rubrics: RubricSet) -> Self {
        let slots = Arc::new(Semaphore::new(config.limits.max_concurrent.max(1)));
        AppState {
            inner: Arc::new(Inner {
                engine,
                monitor: RewardMonitor::new(config.monitor),
                config,
                rubrics,
                metrics: Metrics::default(),
                admitted: AtomicUsize::new(0),
                slots,
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    pub fn engine(&self) -> &EngineHandle {
        &self.inner.engine
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn gauges(&self) -> Gauges {
        let limits = self.limits();
        let running = limits
            .max_concurrent
            .max(1)
            .saturating_sub(self.inner.slots.available_permits());
        let admitted = self
            .inner
            .admitted
            .load(std::sync::atomic::Ordering::Acquire);
        Gauges {
            in_flight: running,
            queued: admitted.saturating_sub(running),
        }
    }
}

/// The whole API. Layers, outermost first: metrics (sees every status), auth (all but
/// `/health`), admission (the API routes only), body limit.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/get_reward", post(reward::get_reward))
        .route("/v1/rubric/score", post(reward::rubric_score))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::admission,
        ))
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes));
    let protected = Router::new()
        .merge(api)
        .route("/v1/models", get(openai::models))
        .route("/metrics", get(metrics_text))
        .route("/v1/stats", get(stats))
        .layer(middleware::from_fn_with_state(state.clone(), limits::auth));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::observe,
        ))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let g = state.gauges();
    Json(serde_json::json!({
        "status": "ok",
        "model": state.inner.config.model_id,
        "in_flight": g.in_flight,
        "queued": g.queued,
    }))
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state
        .inner
        .metrics
        .render(&state.inner.engine.stats(), state.gauges());
    prometheus_client::encoding::prometheus_text::encode(
        &mut text,
        &state.inner.monitor.stats().registry(),
    )
    .expect("encoding into a String cannot fail");
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text)
}

/// `GET /v1/stats`: the reward monitors (see `monitor`).
async fn stats(State(state): State<AppState>) -> Json<monitor::MonitorStats> {
    Json(state.inner.monitor.stats())
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "no such route")
}

/// Whether binding `addr` needs an API key (anything but loopback).
pub fn needs_api_key(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Serve `state` on `listener` until `shutdown` resolves; in-flight requests finish first.
///
/// An accept loop over hyper's HTTP/1 connection builder rather than `axum::serve`, which has
/// no header read timeout: each connection gets `Limits::header_timeout` (hyper's
/// `header_read_timeout`, on hyper-util's Tokio timer) and is watched by hyper-util's
/// `GracefulShutdown`. On `shutdown` the listener closes, idle connections close, busy ones
/// finish their response first, and this returns once every connection has ended.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.limits().header_timeout);
    let app = router(state);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A header timeout, a reset or a client that went away: the connection's own end,
            // never the server's.
            if let Err(e) = conn.await {
                tracing::debug!(%peer, timeout = e.is_timeout(), "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::debug!("waiting for open connections to finish");
    graceful.shutdown().await;
    Ok(())
}

/// After a failed accept: go on at once when only that connection failed; otherwise (out of
/// file descriptors and the like) log and pause so the loop does not spin (as `axum::serve`).
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept failed: {e}; retrying in 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// A server running on its own thread and runtime (tests, the load test, embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Bind `addr` (port 0: any free port) and serve on a background thread.
    pub fn start(
        addr: SocketAddr,
        state: AppState,
        worker_threads: usize,
    ) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .enable_all()
            .thread_name("ares-http")
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("ares-serve".into())
            .spawn(move || {
                rt.block_on(serve(listener, st, async {
                    let _ = stopped.await;
                }))
            })?;
        Ok(RunningServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stop accepting, finish in-flight requests, and wait for the server thread.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

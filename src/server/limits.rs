//! Request limits and the layers that enforce them, each failure an [`ApiError`]:
//! - [`ApiJson`]: the JSON body extractor: body size (413, through axum's `DefaultBodyLimit`),
//!   body read timeout (408, so a slow client cannot hold a connection forever), syntax and
//!   encoding (400), shape (422);
//! - the header read timeout ([`Limits::header_timeout`]) is not a layer: the connection loop in
//!   `server::serve` hands it to hyper, which closes a connection whose headers are late;
//! - [`admission`]: at most `max_concurrent` requests run and `max_queue` wait; beyond that 429
//!   at once (no unbounded queue);
//! - [`auth`]: `Authorization: Bearer KEY` when the server has an API key;
//! - [`observe`]: request counts by route and status and latency histograms for `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use crate::server::error::{ApiError, ErrorKind};
use crate::server::AppState;

/// Caps on what one request may ask for; every one is a server flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request body bytes at most (413 beyond).
    pub max_body_bytes: usize,
    /// New tokens one completion may ask for (`max_tokens`), at most (422 beyond).
    pub max_tokens: usize,
    /// Verdict requests one reward request may cause (criteria x responses), at most (422).
    pub max_criteria: usize,
    /// Responses (or prompts, or choices `n`) in one request, at most (422).
    pub max_batch: usize,
    /// Requests running at once; more wait in the queue.
    pub max_concurrent: usize,
    /// Requests waiting for a slot at most; more get 429.
    pub max_queue: usize,
    /// Time a client has to send its whole body (408 after).
    pub body_timeout: Duration,
    /// Time a client has to send its request line and headers, counted from the connection's
    /// start or the end of its previous response; the connection is closed after it (hyper's
    /// `header_read_timeout`), so a slow client cannot hold a connection without a request, and
    /// an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 20,
            max_tokens: 4096,
            max_criteria: 1024,
            max_batch: 256,
            max_concurrent: 64,
            max_queue: 256,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// A JSON body, read under the server's limits; every failure is an [`ApiError`] with a JSON
/// body (axum's own `Json` answers some of them in plain text).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let timeout = state.limits().body_timeout;
        let limit = state.limits().max_body_bytes;
        let bytes = match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorKind::Timeout,
                    format!("the request body did not arrive within {timeout:?}"),
                ))
            }
            Ok(Err(rejection)) => {
                let status = rejection.status();
                let kind = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorKind::PayloadTooLarge
                } else {
                    ErrorKind::InvalidJson
                };
                let message = if kind == ErrorKind::PayloadTooLarge {
                    format!("request body over the limit of {limit} bytes (--max-body-bytes)")
                } else {
                    format!("could not read the request body: {}", rejection.body_text())
                };
                return Err(ApiError::new(kind, message));
            }
            Ok(Ok(b)) => b,
        };
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body: 400 for bytes that are not JSON (syntax, truncation, invalid UTF-8), 422
/// for JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorKind::InvalidJson,
            "empty request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid(format!("invalid request: {e}")),
            Category::Syntax | Category::Eof | Category::Io => {
                let utf8 = std::str::from_utf8(bytes).is_err();
                let why = if utf8 { " (the body is not UTF-8)" } else { "" };
                ApiError::new(
                    ErrorKind::InvalidJson,
                    format!("body is not JSON{why}: {e}"),
                )
            }
        }
    })
}

/// Counts admitted requests; its drop releases the queue place.
#[derive(Debug)]
pub struct Admitted {
    state: AppState,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.inner.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running request's slot, as a request extension: a streaming handler moves a clone into its
/// stream so the slot is held until the last event is sent, not just until the response head.
#[derive(Clone, Debug)]
pub struct Slot(#[allow(dead_code)] pub Arc<Admitted>);

/// Admission: run now when a slot is free, wait in the queue when the queue has room, 429
/// otherwise.
pub async fn admission(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limits = state.limits();
    let cap = limits.max_concurrent + limits.max_queue;
    let before = state.inner.admitted.fetch_add(1, Ordering::AcqRel);
    if before >= cap {
        state.inner.admitted.fetch_sub(1, Ordering::AcqRel);
        return ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "server busy: {} requests running and {} queued (--max-concurrent, --max-queue); retry later",
                limits.max_concurrent, limits.max_queue
            ),
        )
        .into_response();
    }
    let permit = match state.inner.slots.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => {
            state.inner.admitted.fetch_sub(1, Ordering::AcqRel);
            return ApiError::new(ErrorKind::Unavailable, "server shutting down").into_response();
        }
    };
    let slot = Slot(Arc::new(Admitted {
        state: state.clone(),
        _permit: permit,
    }));
    req.extensions_mut().insert(slot);
    next.run(req).await
}

/// Bearer-token check (constant time in the key's length).
pub async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.inner.config.api_key {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return ApiError::new(
                ErrorKind::Unauthorized,
                "missing or wrong API key: send `Authorization: Bearer KEY`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Status recorded for a request whose client went away before the response head (nginx's
/// "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// Records a request on drop: with its status once known, as [`CLIENT_CLOSED`] if the handler
/// future was dropped first.
struct Observation {
    state: AppState,
    route: String,
    t0: Instant,
    status: Option<u16>,
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.state.inner.metrics.observe_request(
            &self.route,
            self.status.unwrap_or(CLIENT_CLOSED),
            self.t0.elapsed().as_secs_f64(),
        );
    }
}

/// Records every request's route, status and time to the response head.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let mut obs = Observation {
        state,
        route,
        t0: Instant::now(),
        status: None,
    };
    let resp = next.run(req).await;
    obs.status = Some(resp.status().as_u16());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_400_for_bytes_and_422_for_shape() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let kind = |b: &[u8]| parse_json::<T>(b).map(|_| ()).unwrap_err().kind;
        assert_eq!(kind(b"{\"a\": "), ErrorKind::InvalidJson);
        assert_eq!(kind(b"   "), ErrorKind::InvalidJson);
        assert_eq!(kind(b"{\"a\": \"\xff\xfe\"}"), ErrorKind::InvalidJson);
        assert_eq!(kind(b"{\"a\": \"x\"}"), ErrorKind::InvalidRequest);
        assert_eq!(kind(b"[\"x\"]"), ErrorKind::InvalidRequest);
        assert!(parse_json::<T>(b"{\"a\": 3}").is_ok());
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

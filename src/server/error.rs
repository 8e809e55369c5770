//! The server's one error type and its one mapping to HTTP: every handler, extractor and
//! middleware failure becomes an [`ApiError`], answered as `{"error": message, "type": kind}` with
//! the status of its [`ErrorKind`] (TGI's shape). Nothing else in `server/` builds an error
//! response.
//!
//! Invariant: the engine error -> kind mapping names every engine error variant (no catch-all),
//! so adding one to `crate::error::Error` does not compile until it has a status here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::Error as EngineError;

/// What went wrong, from the client's point of view; each kind has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: the body is not JSON (syntax, truncated, not UTF-8).
    InvalidJson,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404: an unknown rubric item id or route.
    NotFound,
    /// 408: the client did not send its body in time.
    Timeout,
    /// 413: body over `--max-body-bytes`.
    PayloadTooLarge,
    /// 422: JSON of the wrong shape or values outside the limits.
    InvalidRequest,
    /// 422: the prompt plus `max_tokens` does not fit the context.
    PromptTooLong,
    /// 429: too many requests running and queued.
    Overloaded,
    /// 500: a bug or an engine failure.
    Internal,
    /// 503: the engine stopped or the server is shutting down.
    Unavailable,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidJson => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::InvalidRequest | ErrorKind::PromptTooLong => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::PromptTooLong => "prompt_too_long",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        // Exhaustive on purpose: a new engine error must be given a status here.
        let kind = match &e {
            EngineError::PromptTooLong { .. } => ErrorKind::PromptTooLong,
            // What the client sent cannot be run: its fields, its constraint, its text under
            // the tokenizer or chat template, or its size against the whole KV cache.
            EngineError::InvalidRequest { .. }
            | EngineError::KvCacheTooSmall { .. }
            | EngineError::InvalidConstraint { .. }
            | EngineError::Tokenizer(_)
            | EngineError::ChatTemplate(_) => ErrorKind::InvalidRequest,
            EngineError::EngineStopped => ErrorKind::Unavailable,
            // A valid constraint the engine could not follow: the server's failure.
            EngineError::ConstraintFailed { .. } => ErrorKind::Internal,
            // Model loading, files and configuration: the server's side, never the request's.
            EngineError::ModelNotFound { .. }
            | EngineError::InvalidGguf { .. }
            | EngineError::InvalidSafetensors { .. }
            | EngineError::UnsupportedArchitecture { .. }
            | EngineError::UnsupportedQuantization { .. }
            | EngineError::MissingTensor { .. }
            | EngineError::BadTensorShape { .. }
            | EngineError::MissingMetadata { .. }
            | EngineError::ModelResolve { .. }
            | EngineError::Download { .. }
            | EngineError::Checksum { .. }
            | EngineError::FetchPart { .. }
            | EngineError::Wheel(_)
            | EngineError::Config(_)
            | EngineError::Device(_)
            | EngineError::Io { .. }
            | EngineError::Jsonl { .. } => ErrorKind::Internal,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            kind: self.kind.as_str(),
        };
        (self.kind.status(), Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_client_statuses() {
        let too_long = EngineError::PromptTooLong {
            request: "r".into(),
            n_tokens: 10,
            max_tokens: 5,
            n_ctx: 8,
        };
        assert_eq!(
            ApiError::from(too_long).kind.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::from(EngineError::EngineStopped).kind.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let io = EngineError::Config("x".into());
        assert_eq!(
            ApiError::from(io).kind.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

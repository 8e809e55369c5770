//! ares's device backend: the decoder forward of each supported architecture (llama/mistral,
//! qwen2, qwen3, gemma3) written once over candle tensors and ops, generic over
//! `candle_core::Device` (CPU, CUDA, Metal), with GGUF weights kept quantized as `QMatMul`s on the
//! device.
//!
//! What it owns: the device-side weights ([`DeviceModel`]), the device-side K/V blocks
//! ([`DeviceKv`]) and the packing of one step's batch into a single upload ([`Step`]).
//! What it must not do: decide which KV blocks exist, who shares them or when they are reused
//! (that is the host-side block cache of the `ares` crate, the one source of truth), tokenize,
//! sample, or pull in C code (so `--features metal` checks from any host).
//!
//! Invariants: a forward reads and writes only the K/V slots its step names; rows are computed
//! independently of the other sequences in the step; logits leave the device only for the
//! requested rows.

pub mod config;
pub mod kv;
pub mod model;
pub mod step;

pub use candle_core::Device;
pub use config::{Arch, Config, RopeSpec, RopeStyle};
pub use kv::DeviceKv;
pub use model::DeviceModel;
pub use step::Step;

/// Errors of the device backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Gguf {
        path: std::path::PathBuf,
        source: candle_core::Error,
    },
    #[error("{path}: tensor {name} missing")]
    MissingTensor {
        path: std::path::PathBuf,
        name: String,
    },
    #[error("{path}: tensor {name} has shape {actual:?}, expected {expected:?}")]
    BadTensorShape {
        path: std::path::PathBuf,
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("invalid step: {0}")]
    InvalidStep(String),
    #[error("device {device}: {source}")]
    Open {
        device: String,
        source: candle_core::Error,
    },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which device the candle path runs on: `cpu`, `cuda` / `cuda:N`, `metal` / `metal:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl DeviceKind {
    /// Open the device. A build without the `cuda` / `metal` feature says so here.
    pub fn open(self) -> Result<Device> {
        let r = match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(n) => Device::new_cuda(n),
            DeviceKind::Metal(n) => Device::new_metal(n),
        };
        r.map_err(|source| Error::Open {
            device: self.to_string(),
            source,
        })
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Cpu => write!(f, "candle-cpu"),
            DeviceKind::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceKind::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

/// Whether this build carries the CUDA / Metal backends.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");
pub const METAL_BUILT: bool = cfg!(feature = "metal");

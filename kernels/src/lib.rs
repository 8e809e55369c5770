//! `ares-kernels`: the hot CPU kernels of ares.
//!
//! Owns: ggml block formats (layout and scalar dequantization), activation quantization, the
//! quantized dot products and the threaded matrix multiplication built on them, plus runtime ISA
//! dispatch. It must not know about models, tensors or candle: its API is slices and plain structs,
//! so every kernel is testable and benchable on its own.
//!
//! Invariant: every SIMD path has a scalar reference in `scalar` (or next to it) and a test that
//! compares the two on random data of awkward sizes. For a given machine the path chosen for one
//! output element never depends on how many rows are in the call, so results are batch-invariant.

pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod dispatch;
pub mod formats;
pub mod matmul;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod packed;
pub mod paged;
pub mod pool;
pub mod quantize;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use attention::silu_mul;
pub use dispatch::{cpu_features, Isa};
pub use formats::{BlockQ8, WeightType};
pub use matmul::{axpy, dot, matmul, matmul_many, Mat, PackedMatrix, WeightMatrix};
pub use paged::{paged_attention, PagedAttention};
pub use pool::{parallel_chunks_mut, parallel_for, set_num_threads};
pub use quantize::{quantize_for, quantize_row_q8};

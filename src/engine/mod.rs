//! HOW the model runs: requests, sequences, the block KV cache with prefix sharing, packed batches,
//! the scheduler (pure logic), the sampler chain and the engine loop behind the `Generator` trait.

pub mod constraint;
pub mod counting;
pub mod fake;
pub mod generator;
pub mod handle;
pub mod kv_cache;
pub mod remote;
pub mod request;
pub mod sampler;
pub mod scheduler;
pub mod sequence;

pub use constraint::Constraint;
pub use generator::Generator;
pub use handle::{EngineConfig, EngineHandle, EngineStats};
pub use request::{Completion, Event, FinishReason, Prompt, Request, TokenOutput, Usage};
pub use sampler::SamplingParams;

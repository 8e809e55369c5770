//! ares: Automated Rubric synthEsis for Scalable RL.
//!
//! Turns raw documents into rubric-annotated RL training data and scores responses against those
//! rubrics with a local LLM judge, on our own batched, KV-cached engine over GGUF models.
//!
//! ```text
//! engine:  Request -> Scheduler -> Batch{tokens, positions, seq ids, logit rows} -> Model::forward
//!          -> logits -> Sampler/verdict -> Sequence -> done -> KV blocks released (prefix kept)
//! app:     Document -> Chunk -> (domain, personas) -> Item{question, answer, rubric} -> Filters
//!          -> dataset.jsonl + rejected.jsonl + report;  (item, response) -> Judge -> Reward
//! ```
//!
//! Layout: `model` (what the network computes), `engine` (how it runs, behind [`engine::Generator`]),
//! `synth`, `judge`, `server`, `eval`, `export` (trainer datasets and the dataset card),
//! `report` (`report.html` from the JSON files of a synth, eval or bench run), `cli` (argument
//! types of the binary). Hot CPU kernels live in the `ares-kernels` crate.

pub mod bench;
pub mod cli;
pub mod engine;
pub mod error;
pub mod eval;
pub mod export;
pub mod jsonl;
pub mod judge;
pub mod model;
pub mod report;
pub mod server;
pub mod shard;
pub mod synth;

pub use error::{Error, Result};

/// A token id.
pub type TokenId = u32;

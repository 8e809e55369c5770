//! Integration tests, one binary: golden comparisons with llama.cpp on the real default model,
//! engine invariants (tiny seeded model and real model), and the CLI's handling of bad input.

mod cli;
mod common;
mod constrained;
mod device;
mod eval;
mod export;
mod gemma;
mod golden;
mod hf_checkpoint;
mod invariants;
mod judge;
mod pitfalls;
mod qwen;
mod qwen_coder;
mod remote;
mod report;
mod rubric;
mod serve;
mod synth;

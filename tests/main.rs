//! Integration tests, one binary: golden comparisons with llama.cpp on the real default model,
//! engine invariants (tiny seeded model and real model), and the CLI's handling of bad input.

mod cli;
mod common;
mod constrained;
mod gemma;
mod golden;
mod invariants;
mod judge;
mod rubric;

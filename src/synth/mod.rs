//! `ares synth`: raw documents -> chunks -> (domain, personas) -> question + reference answer +
//! weighted rubric in one constrained pass -> filters -> `dataset.jsonl` + `rejected.jsonl` +
//! `report.json` (the ARES method, arXiv 2605.23454; upstream stages after Webscale-RL).
//!
//! ```text
//! ingest (files, JSONL records; streamed) -> chunk (tokens, sentence bounds, overlap)
//!   -> dedup (exact + MinHash) -> label (rules, then model: domain + personas)
//!   -> generate (per persona: question, answer, criteria) -> decontamination (benchmark
//!   n-grams, with --decontaminate) -> pitfall (false statements -> "Claims that" criteria)
//!   -> filters (self-containment rules
//!   and model, leakage, faithfulness, rubric structure, judge: reference >= tau, degraded lower)
//!   -> accepted item (ares rubric item + provenance) | rejected record (stage + reason)
//! ```
//!
//! One file per responsibility: `ingest` (+ `html`), `chunk`, `dedup`, `label`, `generate`,
//! `decontam` (the benchmark n-gram index), `pitfall` (the pitfall stage's schema and checks),
//! `filters`, `prompts` (template files and hashes), `record` (output record types), `output`
//! (run files, crash safety, resume), `report`, `pipeline` (the run: batching through the
//! `Generator` trait, workers, bookkeeping). Nothing here prints; the binary does.

pub mod chunk;
pub mod decontam;
pub mod dedup;
pub mod filters;
pub mod generate;
pub mod html;
pub mod ingest;
pub mod label;
pub mod output;
pub mod pipeline;
pub mod pitfall;
pub mod prompts;
pub mod record;
pub mod report;

pub use pipeline::{run, SynthConfig, SynthError, SynthProgress};
pub use report::SynthReport;

use sha2::{Digest, Sha256};

/// 16 hex digits of the sha256 of `parts` joined with NUL bytes: the ids of chunks, items and
/// skipped inputs.
pub fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_hash_separates_parts() {
        let a = super::short_hash(&["ab", "c"]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, super::short_hash(&["a", "bc"]));
        assert_eq!(a, super::short_hash(&["ab", "c"]));
    }
}

//! The judge workload (`../shared/bench/judge_workload.jsonl`, written by `judge_workload.py
//! --dump`): per round, 32 prompts that share a ~350-token prefix (system, question, response) and
//! differ in a ~50-token criterion; the result of each is the next-token distribution (one token,
//! with log-probs). Each round's prompts go through the engine at once (`Generator::
//! generate_many`), as a judge submits them, and the round is timed from the first submit to the
//! last result (tokenization included), like the script's 32 concurrent clients.
//!
//! Sharing off: the engine has no switch for its prefix cache, and clearing it is not enough
//! (prompts of one round would still reuse blocks that an earlier prompt of the same round has
//! computed). So with sharing off every prompt is tokenized here and its first token replaced by
//! a token id unique to that prompt in the run: no KV block of one prompt can then match another's
//! (block keys chain from the first block), while the number of tokens, their positions and so the
//! computed work stay the same. The answers of that run are not the model's real verdicts. The
//! cache is also cleared before each round. Measured hits are reported either way, from each
//! request's `usage.cached_tokens`.
//!
//! Token workloads: a round may carry `prompt_ids` (each prompt already tokenized) instead of, or
//! beside, its texts; the ids are then sent as they are. [`tokenize_workload`] writes them with a
//! real model's tokenizer (`ares bench -m MODEL --judge FILE --write-token-workload OUT`), so a
//! random-weight model of the same vocabulary (`--synthetic`, whose pieces are placeholders) runs
//! exactly the real workload's token counts and prefix structure, e.g. on a GPU machine with no
//! model file. Invariant: when both are given, `prompt_ids` has one entry per prompt text.

use crate::engine::{EngineHandle, Generator, Prompt, Request};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::TokenId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// First token id used to make prompts unshareable with sharing off.
const SALT_BASE: TokenId = 1000;

/// One round of the workload file.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct JudgeRound {
    pub round: usize,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// The prompts as token ids (a token workload); used instead of the texts when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_ids: Vec<Vec<TokenId>>,
    /// The model whose tokenizer wrote `prompt_ids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

impl JudgeRound {
    /// Number of prompts (criteria) in the round.
    pub fn len(&self) -> usize {
        if self.prompt_ids.is_empty() {
            self.prompts.len()
        } else {
            self.prompt_ids.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_tokens(&self) -> bool {
        !self.prompt_ids.is_empty()
    }

    /// Prompt `i` as token ids.
    fn tokens(&self, tokenizer: &Tokenizer, i: usize) -> Result<Vec<TokenId>> {
        if self.is_tokens() {
            Ok(self.prompt_ids[i].clone())
        } else {
            tokenizer.encode_prompt(&self.prompts[i])
        }
    }
}

/// The rounds with every prompt tokenized by `tokenizer` (texts dropped, `tokenizer` recorded as
/// `model`): a token workload for `--synthetic` models of the same vocabulary.
pub fn tokenize_workload(
    tokenizer: &Tokenizer,
    model: &str,
    rounds: &[JudgeRound],
) -> Result<Vec<JudgeRound>> {
    rounds
        .iter()
        .map(|r| {
            Ok(JudgeRound {
                round: r.round,
                prefix: String::new(),
                prompts: Vec::new(),
                prompt_ids: (0..r.len())
                    .map(|i| r.tokens(tokenizer, i))
                    .collect::<Result<_>>()?,
                tokenizer: Some(model.to_string()),
            })
        })
        .collect()
}

/// Errors unless every prompt of a token workload is a valid id of a vocabulary of `vocab`
/// (checked before any work reaches the engine).
pub fn check_ids(rounds: &[JudgeRound], vocab: usize) -> Result<()> {
    for r in rounds {
        for (i, ids) in r.prompt_ids.iter().enumerate() {
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::InvalidRequest {
                    request: format!("judge workload round {} prompt {i}", r.round),
                    reason: format!(
                        "token id {bad} is outside the model's vocabulary of {vocab} (ids written by {})",
                        r.tokenizer.as_deref().unwrap_or("an unnamed tokenizer")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// True when some round has only texts (needs the model's real tokenizer).
pub fn has_text_rounds(rounds: &[JudgeRound]) -> bool {
    rounds.iter().any(|r| !r.is_tokens())
}

/// Read the workload: one JSON object `{round, prefix, prompts}` per line.
pub fn load_workload(path: &Path) -> Result<Vec<JudgeRound>> {
    let mut rounds = Vec::new();
    for l in crate::jsonl::read_lines(path).map_err(|e| Error::io(path, e))? {
        let bad = |reason: String| Error::Jsonl {
            path: path.to_path_buf(),
            line: l.number,
            reason,
        };
        let text = l.text.as_deref().map_err(|e| bad(e.clone()))?;
        let r: JudgeRound = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if r.is_empty() {
            return Err(bad("round has no prompts".into()));
        }
        if r.is_tokens() && !r.prompts.is_empty() && r.prompts.len() != r.prompt_ids.len() {
            return Err(bad(format!(
                "{} prompts but {} prompt_ids",
                r.prompts.len(),
                r.prompt_ids.len()
            )));
        }
        if r.prompt_ids.iter().any(Vec::is_empty) {
            return Err(bad("a prompt in prompt_ids has no tokens".into()));
        }
        rounds.push(r);
    }
    if rounds.is_empty() {
        return Err(Error::Jsonl {
            path: path.to_path_buf(),
            line: 0,
            reason: "no rounds".into(),
        });
    }
    Ok(rounds)
}

/// KV tokens the engine needs to hold the largest round at once (each prompt plus its one
/// generated token, in whole blocks), so admission never waits for memory.
pub fn kv_tokens_for_a_round(
    tokenizer: &Tokenizer,
    rounds: &[JudgeRound],
    block_size: usize,
) -> Result<usize> {
    let mut most = 0;
    for r in rounds {
        let mut n = 0;
        for i in 0..r.len() {
            let len = r.tokens(tokenizer, i)?.len() + 1;
            n += len.div_ceil(block_size) * block_size;
        }
        most = most.max(n);
    }
    Ok(most)
}

/// One timed round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JudgeRoundResult {
    pub round: usize,
    pub prompts: usize,
    /// Requests that failed (not counted as criteria judged).
    pub failed: usize,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    pub seconds: f64,
    /// Successful prompts / seconds.
    pub criteria_per_s: f64,
    /// Verdict text (trimmed) -> count.
    pub answers: BTreeMap<String, usize>,
}

/// All rounds with one sharing setting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JudgeRun {
    pub prefix_sharing: bool,
    /// How sharing was switched off (see the module docs), empty when on.
    pub method: String,
    pub rounds: Vec<JudgeRoundResult>,
    /// Round 0.
    pub cold_criteria_per_s: f64,
    /// Prompts per round / median wall time of rounds 1.. (round 0 when it is the only one), as
    /// judge_workload.py reports it.
    pub steady_criteria_per_s: f64,
    /// Cached / total prompt tokens over all rounds.
    pub prefix_hit_rate: f64,
}

impl JudgeRun {
    /// One line like judge_workload.py's SUMMARY.
    pub fn summary_line(&self) -> String {
        let on = if self.prefix_sharing { "on" } else { "off" };
        let cold = self.rounds.first().map(|r| r.seconds).unwrap_or(0.0);
        let n = self.rounds.len();
        format!(
            "SUMMARY [ares, prefix sharing {on}] round0 (cold) {cold:.3}s = {:.2} criteria/s; median rounds 1..{}: {:.2} criteria/s; prefix hit rate {:.1}%",
            self.cold_criteria_per_s,
            n.saturating_sub(1),
            self.steady_criteria_per_s,
            100.0 * self.prefix_hit_rate
        )
    }

    pub fn failed(&self) -> usize {
        self.rounds.iter().map(|r| r.failed).sum()
    }
}

/// Time every round through `engine`; `progress(done, total)` after each round.
pub fn run(
    engine: &EngineHandle,
    rounds: &[JudgeRound],
    prefix_sharing: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<JudgeRun> {
    let vocab = engine.model_config().vocab as TokenId;
    let mut results = Vec::with_capacity(rounds.len());
    let mut salt = 0;
    for (ri, round) in rounds.iter().enumerate() {
        if !prefix_sharing {
            engine.clear_prefix_cache()?;
        }
        let t0 = Instant::now();
        let mut reqs = Vec::with_capacity(round.len());
        for i in 0..round.len() {
            let prompt = if prefix_sharing && !round.is_tokens() {
                Prompt::Text(round.prompts[i].clone())
            } else if prefix_sharing {
                Prompt::Tokens(round.prompt_ids[i].clone())
            } else {
                let mut t = round.tokens(engine.tokenizer(), i)?;
                if let Some(first) = t.first_mut() {
                    *first = (SALT_BASE + salt) % vocab;
                }
                salt += 1;
                Prompt::Tokens(t)
            };
            reqs.push(Request {
                max_tokens: 1,
                logprobs: Some(2),
                ..Request::new(format!("round{}-criterion{i}", round.round), prompt)
            });
        }
        let done = engine.generate_many(reqs);
        let seconds = t0.elapsed().as_secs_f64();
        let mut r = JudgeRoundResult {
            round: round.round,
            prompts: round.len(),
            failed: 0,
            prompt_tokens: 0,
            cached_tokens: 0,
            seconds,
            criteria_per_s: 0.0,
            answers: BTreeMap::new(),
        };
        for c in done {
            match c {
                Ok(c) => {
                    r.prompt_tokens += c.usage.prompt_tokens;
                    r.cached_tokens += c.usage.cached_tokens;
                    *r.answers.entry(c.text.trim().to_string()).or_default() += 1;
                }
                Err(e) => {
                    tracing::warn!("judge bench round {}: {e}", round.round);
                    r.failed += 1;
                }
            }
        }
        r.criteria_per_s = (r.prompts - r.failed) as f64 / seconds.max(1e-9);
        tracing::info!(
            round = r.round,
            seconds = r.seconds,
            cached = r.cached_tokens,
            prompt = r.prompt_tokens,
            "judge bench round"
        );
        results.push(r);
        progress(ri + 1, rounds.len());
    }
    Ok(summarize(results, prefix_sharing))
}

fn summarize(rounds: Vec<JudgeRoundResult>, prefix_sharing: bool) -> JudgeRun {
    let steady = if rounds.len() > 1 {
        &rounds[1..]
    } else {
        &rounds[..]
    };
    let walls: Vec<f64> = steady.iter().map(|r| r.seconds).collect();
    let per_round = steady.iter().map(|r| r.prompts - r.failed).sum::<usize>() as f64
        / steady.len().max(1) as f64;
    let (prompt, cached) = rounds.iter().fold((0, 0), |(p, c), r| {
        (p + r.prompt_tokens, c + r.cached_tokens)
    });
    JudgeRun {
        prefix_sharing,
        method: if prefix_sharing {
            String::new()
        } else {
            "prefix cache cleared before each round; first token of each prompt made unique".into()
        },
        cold_criteria_per_s: rounds.first().map(|r| r.criteria_per_s).unwrap_or(0.0),
        steady_criteria_per_s: per_round / median(&walls).max(1e-9),
        prefix_hit_rate: if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        },
        rounds,
    }
}

/// Median (mean of the middle two for an even count), as Python's `statistics.median`.
fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(i: usize, seconds: f64) -> JudgeRoundResult {
        JudgeRoundResult {
            round: i,
            prompts: 32,
            failed: 0,
            prompt_tokens: 400,
            cached_tokens: 100,
            seconds,
            criteria_per_s: 32.0 / seconds,
            answers: BTreeMap::new(),
        }
    }

    #[test]
    fn cold_is_round_zero_and_steady_is_the_median_of_the_rest() {
        let run = summarize(
            vec![
                round(0, 4.0),
                round(1, 1.0),
                round(2, 3.0),
                round(3, 2.0),
                round(4, 2.0),
            ],
            true,
        );
        assert_eq!(run.cold_criteria_per_s, 8.0);
        assert_eq!(run.steady_criteria_per_s, 16.0);
        assert_eq!(run.prefix_hit_rate, 0.25);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
    }

    #[test]
    fn token_workloads_parse_and_are_checked_against_the_vocabulary() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let p = dir.path().join("w.jsonl");
        std::fs::write(
            &p,
            "{\"round\": 0, \"prompt_ids\": [[1, 2, 3], [1, 2, 9]], \"tokenizer\": \"m\"}\n",
        )
        .map_err(|e| Error::io(&p, e))?;
        let rounds = load_workload(&p)?;
        assert_eq!(rounds[0].len(), 2);
        assert!(!has_text_rounds(&rounds));
        check_ids(&rounds, 10)?;
        let e = check_ids(&rounds, 9).unwrap_err().to_string();
        assert!(
            e.contains("round 0 prompt 1") && e.contains("token id 9"),
            "{e}"
        );

        for (line, want) in [
            (
                "{\"round\": 0, \"prompts\": [\"a\"], \"prompt_ids\": [[1], [2]]}",
                "1 prompts but 2 prompt_ids",
            ),
            ("{\"round\": 0, \"prompt_ids\": [[]]}", "has no tokens"),
            ("{\"round\": 0}", "round has no prompts"),
        ] {
            std::fs::write(&p, format!("{line}\n")).map_err(|e| Error::io(&p, e))?;
            let e = load_workload(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("w.jsonl"), "{e}");
        }
        Ok(())
    }

    #[test]
    fn workload_lines_parse_and_bad_lines_name_their_line() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let p = dir.path().join("w.jsonl");
        std::fs::write(
            &p,
            "{\"round\":0,\"prefix\":\"a\",\"prompts\":[\"ab\",\"ac\"]}\n\n",
        )
        .map_err(|e| Error::io(&p, e))?;
        let w = load_workload(&p)?;
        assert_eq!((w.len(), w[0].prompts.len()), (1, 2));
        std::fs::write(
            &p,
            "{\"round\":0,\"prefix\":\"a\",\"prompts\":[\"ab\"]}\n{oops\n",
        )
        .map_err(|e| Error::io(&p, e))?;
        match load_workload(&p) {
            Err(Error::Jsonl { line: 2, .. }) => Ok(()),
            other => panic!("expected a line-2 error, got {other:?}"),
        }
    }
}

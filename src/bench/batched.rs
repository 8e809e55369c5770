//! Batched throughput, mirroring llama.cpp's `llama-batched-bench`
//! (tools/batched-bench/batched-bench.cpp): for every (PP, TG, B) it prefills B sequences of PP
//! tokens, then runs TG decode steps of B tokens each, timing the two phases separately.
//!
//! It drives `Model::forward` directly on batches it builds (as llama-batched-bench drives
//! `llama_decode`), on its own KV cache sized for the largest combination and pre-faulted before
//! timing (llama.cpp clears its KV buffer at creation, which touches every page too). Prompts are
//! random tokens from a seeded generator; the next token is the greedy argmax of the returned
//! logits. Prefill runs in forwards of at most `ubatch` tokens (llama.cpp's `-ub`), sequences
//! packed back to back; only each sequence's last prompt position asks for logits.
//!
//! With `pps` (one shared prompt), sequence 0 prefills the prompt once and the others read its
//! full blocks in place through their block tables (prefix sharing, llama.cpp's `seq_cp`). A
//! partly filled last prompt block cannot be shared, because every sequence writes its first
//! generated token into it; it is copied into each sequence's own block (copy on write), inside
//! T_PP (llama.cpp's `seq_cp` runs between its two timers; the copy is tiny, and none at all when
//! PP is a multiple of the block size). N_KV counts the shared prompt once, as llama.cpp does with
//! a unified KV cache (`-pps -kvu`, the baseline script's flags). Those aliased tables take no reference counts: the bench owns this cache and releases
//! each block exactly once, through the table that allocated it.

use crate::engine::kv_cache::KvCache;
use crate::engine::sampler::argmax;
use crate::error::{Error, Result};
use crate::model::batch::Batch;
use crate::model::kv::BlockId;
use crate::model::Model;
use crate::TokenId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Tokens of the untimed warm-up forward (llama-batched-bench warms up with 16).
const WARMUP_TOKENS: usize = 16;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BatchedConfig {
    /// Prompt lengths (PP), each at least 1.
    pub npp: Vec<usize>,
    /// Generated tokens (TG).
    pub ntg: Vec<usize>,
    /// Parallel sequences (B), each at least 1.
    pub npl: Vec<usize>,
    /// One prompt shared by all B sequences, computed once.
    pub pps: bool,
    /// Tokens per prefill forward at most.
    pub ubatch: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Seed of the random prompt tokens.
    pub seed: u64,
}

impl BatchedConfig {
    /// Every (PP, TG, B) in llama-batched-bench's loop order.
    pub fn combinations(&self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for &pp in &self.npp {
            for &tg in &self.ntg {
                for &b in &self.npl {
                    out.push((pp, tg, b));
                }
            }
        }
        out
    }

    /// KV blocks one combination needs.
    fn blocks_needed(&self, pp: usize, tg: usize, b: usize) -> usize {
        let bs = self.block_size;
        let per_seq = (pp + tg).div_ceil(bs);
        if self.pps {
            // Sequence 0 owns the prompt blocks; the others own all but the full prompt blocks.
            per_seq + (b - 1) * (per_seq - pp / bs)
        } else {
            b * per_seq
        }
    }

    fn check(&self, n_ctx: usize) -> Result<()> {
        let bad = |reason: String| Error::InvalidRequest {
            request: "bench".into(),
            reason,
        };
        if self.npp.is_empty() || self.ntg.is_empty() || self.npl.is_empty() {
            return Err(bad("--npp, --ntg and --npl each need a value".into()));
        }
        if self.npp.contains(&0) || self.npl.contains(&0) {
            return Err(bad("PP and B must be at least 1".into()));
        }
        if self.ubatch == 0 || self.block_size == 0 {
            return Err(bad("ubatch and block size must be at least 1".into()));
        }
        for (pp, tg, _) in self.combinations() {
            if pp + tg > n_ctx {
                return Err(bad(format!(
                    "PP {pp} + TG {tg} exceeds the model's context of {n_ctx}"
                )));
            }
        }
        Ok(())
    }
}

/// One line of llama-batched-bench's table.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchedRow {
    pub pp: usize,
    pub tg: usize,
    pub b: usize,
    /// KV cells used: B·(PP+TG), or PP + B·TG with a shared prompt.
    pub n_kv: usize,
    pub t_pp: f64,
    /// B·PP / T_PP (PP / T_PP with a shared prompt).
    pub s_pp: f64,
    pub t_tg: f64,
    /// B·TG / T_TG.
    pub s_tg: f64,
    /// T_PP + T_TG.
    pub t: f64,
    /// N_KV / T.
    pub s: f64,
}

impl BatchedRow {
    /// The row for measured times, with llama-batched-bench's definitions.
    pub fn new(pp: usize, tg: usize, b: usize, pps: bool, t_pp: f64, t_tg: f64) -> Self {
        let rate = |n: usize, t: f64| if t > 0.0 { n as f64 / t } else { 0.0 };
        let pp_tokens = if pps { pp } else { b * pp };
        let n_kv = pp_tokens + b * tg;
        let t = t_pp + t_tg;
        BatchedRow {
            pp,
            tg,
            b,
            n_kv,
            t_pp,
            s_pp: rate(pp_tokens, t_pp),
            t_tg,
            s_tg: rate(b * tg, t_tg),
            t,
            s: rate(n_kv, t),
        }
    }
}

/// Measure every combination of `cfg`; `progress(done, total)` after each.
pub fn run(
    model: &dyn Model,
    cfg: &BatchedConfig,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<BatchedRow>> {
    let mc = model.config();
    cfg.check(mc.n_ctx_train)?;
    let combos = cfg.combinations();
    let n_blocks = combos
        .iter()
        .map(|&(pp, tg, b)| cfg.blocks_needed(pp, tg, b))
        .chain([WARMUP_TOKENS.div_ceil(cfg.block_size)])
        .max()
        .unwrap_or(1);
    let mut kv = KvCache::for_model(model, cfg.block_size, n_blocks)?;
    kv.zero_values();
    std::hint::black_box(kv.storage());
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let vocab = mc.vocab;

    let warm = random_tokens(&mut rng, WARMUP_TOKENS, vocab);
    let table = allocate(&mut kv, &[], WARMUP_TOKENS);
    prefill(
        model,
        &mut kv,
        &[warm],
        std::slice::from_ref(&table),
        cfg.ubatch,
    )?;
    kv.release(&table);

    let mut rows = Vec::with_capacity(combos.len());
    for (i, &(pp, tg, b)) in combos.iter().enumerate() {
        let (row, _) = if cfg.pps {
            let prompt = random_tokens(&mut rng, pp, vocab);
            run_shared(model, &mut kv, &prompt, tg, b, cfg.ubatch)?
        } else {
            let prompts: Vec<Vec<TokenId>> =
                (0..b).map(|_| random_tokens(&mut rng, pp, vocab)).collect();
            run_separate(model, &mut kv, &prompts, tg, cfg.ubatch)?
        };
        tracing::info!(
            pp,
            tg,
            b,
            s_pp = row.s_pp,
            s_tg = row.s_tg,
            "batched bench row"
        );
        rows.push(row);
        progress(i + 1, combos.len());
    }
    Ok(rows)
}

/// Separate prompts (B = `prompts.len()`, PP = their length), then TG steps. Returns the row and
/// each sequence's next token after the last step.
fn run_separate(
    model: &dyn Model,
    kv: &mut KvCache,
    prompts: &[Vec<TokenId>],
    tg: usize,
    ubatch: usize,
) -> Result<(BatchedRow, Vec<TokenId>)> {
    let (pp, b) = (prompts[0].len(), prompts.len());
    let tables: Vec<Vec<BlockId>> = (0..b).map(|_| allocate(kv, &[], pp + tg)).collect();
    let t0 = Instant::now();
    let result = prefill(model, kv, prompts, &tables, ubatch).and_then(|mut next| {
        let t_pp = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        decode(model, kv, &tables, &mut next, pp, tg)?;
        let t_tg = t1.elapsed().as_secs_f64();
        Ok((BatchedRow::new(pp, tg, b, false, t_pp, t_tg), next))
    });
    for t in &tables {
        kv.release(t);
    }
    result
}

/// One prompt computed once and shared by `b` sequences, then TG steps. Returns the row and each
/// sequence's next token after the last step.
fn run_shared(
    model: &dyn Model,
    kv: &mut KvCache,
    prompt: &[TokenId],
    tg: usize,
    b: usize,
    ubatch: usize,
) -> Result<(BatchedRow, Vec<TokenId>)> {
    let pp = prompt.len();
    let bs = kv.block_size();
    let n_full = pp / bs;
    let tail = pp % bs;
    // Sequence 0 owns every block it uses; the others alias its full prompt blocks and own the rest.
    let mut tables = vec![allocate(kv, &[], pp + tg)];
    for _ in 1..b {
        let shared = tables[0][..n_full].to_vec();
        tables.push(allocate(kv, &shared, pp + tg));
    }
    let t0 = Instant::now();
    let result = prefill(model, kv, &[prompt.to_vec()], &tables[..1], ubatch).and_then(|first| {
        if tail > 0 {
            for t in &tables[1..] {
                kv.copy_block_prefix(tables[0][n_full], t[n_full], tail)?;
            }
        }
        let t_pp = t0.elapsed().as_secs_f64();
        let mut next = vec![first[0]; b];
        let t1 = Instant::now();
        decode(model, kv, &tables, &mut next, pp, tg)?;
        let t_tg = t1.elapsed().as_secs_f64();
        Ok((BatchedRow::new(pp, tg, b, true, t_pp, t_tg), next))
    });
    kv.release(&tables[0]);
    for t in &tables[1..] {
        kv.release(&t[n_full..]);
    }
    result
}

/// `prefix` followed by newly allocated blocks up to `n_tokens` tokens.
fn allocate(kv: &mut KvCache, prefix: &[BlockId], n_tokens: usize) -> Vec<BlockId> {
    let mut own = Vec::new();
    let need = n_tokens - prefix.len() * kv.block_size();
    let ok = kv.grow(&mut own, need);
    assert!(
        ok,
        "the bench cache is sized for the largest combination and emptied between runs"
    );
    let mut table = prefix.to_vec();
    table.extend(own);
    table
}

/// Prefill `prompts[j]` into `tables[j]` from position 0, in forwards of at most `ubatch` tokens;
/// returns the argmax of each sequence's last-position logits.
fn prefill(
    model: &dyn Model,
    kv: &mut KvCache,
    prompts: &[Vec<TokenId>],
    tables: &[Vec<BlockId>],
    ubatch: usize,
) -> Result<Vec<TokenId>> {
    let vocab = model.config().vocab;
    let mut next = vec![0; prompts.len()];
    let (mut j, mut from) = (0, 0);
    while j < prompts.len() {
        let mut batch = Batch::default();
        let mut owners = Vec::new();
        while j < prompts.len() && batch.n_tokens() < ubatch {
            let n = (prompts[j].len() - from).min(ubatch - batch.n_tokens());
            let done = from + n == prompts[j].len();
            batch.push_seq(&prompts[j][from..from + n], from, tables[j].clone(), done);
            if done {
                owners.push(j);
                (j, from) = (j + 1, 0);
            } else {
                from += n;
            }
        }
        let logits = model.forward(&batch, kv.values_for_forward())?;
        for (row, &o) in owners.iter().enumerate() {
            next[o] = argmax(&logits[row * vocab..(row + 1) * vocab]);
        }
    }
    Ok(next)
}

/// `tg` decode steps of one token per sequence from position `pos0`; `next` holds each sequence's
/// next input token and is updated with the greedy choice.
fn decode(
    model: &dyn Model,
    kv: &mut KvCache,
    tables: &[Vec<BlockId>],
    next: &mut [TokenId],
    pos0: usize,
    tg: usize,
) -> Result<()> {
    let vocab = model.config().vocab;
    for i in 0..tg {
        let mut batch = Batch::default();
        for (t, &tok) in tables.iter().zip(next.iter()) {
            batch.push_seq(&[tok], pos0 + i, t.clone(), true);
        }
        let logits = model.forward(&batch, kv.values_for_forward())?;
        for (j, n) in next.iter_mut().enumerate() {
            *n = argmax(&logits[j * vocab..(j + 1) * vocab]);
        }
    }
    Ok(())
}

fn random_tokens(rng: &mut StdRng, n: usize, vocab: usize) -> Vec<TokenId> {
    (0..n).map(|_| rng.gen_range(0..vocab as TokenId)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::RopeStyle;
    use crate::model::kv::KvStorage;
    use crate::model::ModelConfig;

    const VOCAB: usize = 97;

    /// A model whose next token depends on every cached K value of the sequence at every position
    /// (K = the token id), so a missing, misplaced or misshared KV entry changes the output.
    struct Echo(ModelConfig);

    impl Model for Echo {
        fn config(&self) -> &ModelConfig {
            &self.0
        }

        fn forward(&self, batch: &Batch, kv: &mut KvStorage) -> Result<Vec<f32>> {
            let table = |i: usize| &batch.block_tables[batch.seq_index[i] as usize];
            for i in 0..batch.n_tokens() {
                let s = kv.slot_of(table(i), batch.positions[i] as usize);
                for l in &mut kv.layers {
                    l.k[s] = batch.tokens[i] as f32;
                }
            }
            let mut out = vec![0.0; batch.logit_rows.len() * VOCAB];
            for (r, &row) in batch.logit_rows.iter().enumerate() {
                let pos = batch.positions[row] as usize;
                let sum: f32 = (0..=pos)
                    .map(|p| kv.layers[1].k[kv.slot_of(table(row), p)] * (p + 1) as f32)
                    .sum();
                out[r * VOCAB + sum as usize % VOCAB] = 1.0;
            }
            Ok(out)
        }

        fn weight_bytes(&self) -> usize {
            0
        }
    }

    fn echo() -> Echo {
        Echo(ModelConfig {
            arch: "echo".into(),
            n_layer: 2,
            hidden: 1,
            n_head: 1,
            n_kv_head: 1,
            head_dim: 1,
            ffn_hidden: 1,
            vocab: VOCAB,
            rms_eps: 1e-5,
            rope_base: 10_000.0,
            rope_dim: 1,
            rope_style: RopeStyle::Adjacent,
            rope_linear_factor: 1.0,
            n_ctx_train: 4096,
        })
    }

    #[test]
    fn shared_prompt_decodes_like_separate_copies() -> Result<()> {
        let m = echo();
        let mut rng = StdRng::seed_from_u64(9);
        // 37 tokens: two full shared blocks and a partial one that must be copied; ubatch 8 splits
        // the prefill mid-sequence.
        for pp in [37, 32] {
            let prompt = random_tokens(&mut rng, pp, VOCAB);
            let mut kv = KvCache::new(2, 1, 16, 64);
            let (_, shared) = run_shared(&m, &mut kv, &prompt, 6, 3, 8)?;
            assert_eq!(kv.used_blocks(), 0, "every block released");
            let (_, separate) = run_separate(&m, &mut kv, &vec![prompt; 3], 6, 8)?;
            assert_eq!(kv.used_blocks(), 0);
            assert_eq!(shared, separate, "pp {pp}");
        }
        Ok(())
    }

    fn cfg(pps: bool) -> BatchedConfig {
        BatchedConfig {
            npp: vec![128, 100],
            ntg: vec![32],
            npl: vec![1, 4],
            pps,
            ubatch: 512,
            block_size: 16,
            seed: 1,
        }
    }

    #[test]
    fn rows_follow_llama_batched_bench_definitions() {
        let r = BatchedRow::new(128, 32, 4, false, 2.0, 4.0);
        assert_eq!(r.n_kv, 4 * 160);
        assert_eq!((r.s_pp, r.s_tg, r.t), (256.0, 32.0, 6.0));
        assert!((r.s - 640.0 / 6.0).abs() < 1e-9);
        let r = BatchedRow::new(128, 32, 4, true, 2.0, 4.0);
        assert_eq!(r.n_kv, 128 + 4 * 32);
        assert_eq!(r.s_pp, 64.0);
        let r = BatchedRow::new(8, 0, 1, false, 1.0, 0.0);
        assert_eq!(r.s_tg, 0.0);
    }

    #[test]
    fn combinations_loop_pp_then_tg_then_b() {
        let c = cfg(false).combinations();
        assert_eq!(
            c,
            vec![(128, 32, 1), (128, 32, 4), (100, 32, 1), (100, 32, 4)]
        );
    }

    #[test]
    fn shared_prompt_needs_fewer_blocks() {
        // 160 tokens = 10 blocks per sequence; 128 prompt tokens = 8 shared full blocks.
        assert_eq!(cfg(false).blocks_needed(128, 32, 4), 40);
        assert_eq!(cfg(true).blocks_needed(128, 32, 4), 10 + 3 * 2);
        // 100 prompt tokens: 6 full blocks shared, the partial seventh copied per sequence.
        assert_eq!(cfg(true).blocks_needed(100, 32, 4), 9 + 3 * 3);
    }
}

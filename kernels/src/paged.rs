//! Causal attention for a packed batch over a block (paged) KV cache, GQA-aware, reading each
//! sequence's blocks in place, with a shared-prefix ("cascade" / Hydragen) pass: sequences whose
//! block tables start with the same blocks are grouped, and every KV block of the common prefix is
//! read once per step for all queries of the group instead of once per query.
//!
//! Every query visits its positions as the same runs (block by block, in position order) whether it
//! is grouped or not, so its result is bit-identical in either case (batch invariance).

use crate::attention::{attend_heads, OnlineSoftmax, MAX_RUN};
use crate::pool::parallel_for;

/// One layer's attention input.
pub struct PagedAttention<'a> {
    /// (n_tokens, n_head, head_dim)
    pub q: &'a [f32],
    /// K of the layer, transposed per block: (n_blocks, n_kv_head, head_dim, block_size), i.e.
    /// element c of the block's position o at `block * block_size * kv_dim + c * block_size + o`.
    pub k: &'a [f32],
    /// V of the layer: (n_blocks, block_size, n_kv_head, head_dim).
    pub v: &'a [f32],
    pub block_size: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Attend only to the last `window` positions (sliding-window layers).
    pub window: Option<usize>,
    /// (n_tokens,) position of each token.
    pub positions: &'a [u32],
    /// (n_tokens,) index of each token's sequence in `block_tables`.
    pub seq_of_token: &'a [u32],
    /// Blocks of each sequence, in position order.
    pub block_tables: &'a [Vec<u32>],
}

/// Queries of one task: a group's tokens (a slice of them) for one KV head.
struct Task {
    group: usize,
    kv_head: usize,
    tokens: std::ops::Range<usize>,
}

struct Group {
    /// Tokens of the group's sequences.
    tokens: Vec<usize>,
    /// Leading blocks common to every sequence of the group.
    shared: Vec<u32>,
}

/// Group sequences by their common leading blocks (sequences that share nothing form their own
/// group, whose "shared" part is simply their own table).
fn plan(p: &PagedAttention<'_>) -> Vec<Group> {
    let n_seqs = p.block_tables.len();
    let mut by_first: Vec<(u32, usize)> = (0..n_seqs)
        .map(|s| (p.block_tables[s].first().copied().unwrap_or(u32::MAX), s))
        .collect();
    by_first.sort_unstable();
    let mut groups = Vec::new();
    let mut seq_group = vec![0usize; n_seqs];
    let mut i = 0;
    while i < by_first.len() {
        let mut j = i;
        while j < by_first.len() && by_first[j].0 == by_first[i].0 {
            j += 1;
        }
        let members: Vec<usize> = by_first[i..j].iter().map(|x| x.1).collect();
        let first = &p.block_tables[members[0]];
        let mut lcp = first.len();
        for &s in &members[1..] {
            let t = &p.block_tables[s];
            lcp = lcp.min(first.iter().zip(t).take_while(|(a, b)| a == b).count());
        }
        for &s in &members {
            seq_group[s] = groups.len();
        }
        groups.push(Group {
            tokens: Vec::new(),
            shared: first[..lcp].to_vec(),
        });
        i = j;
    }
    for (t, &s) in p.seq_of_token.iter().enumerate() {
        groups[seq_group[s as usize]].tokens.push(t);
    }
    groups
}

/// Tokens per task: enough queries to amortise each shared block read, few enough to balance.
const TOKENS_PER_TASK: usize = 8;

/// out (n_tokens, n_head, head_dim) = softmax(q Kᵀ · scale) V, causal per sequence.
pub fn paged_attention(p: &PagedAttention<'_>, out: &mut [f32]) {
    let (hd, bs) = (p.head_dim, p.block_size);
    assert!(bs <= MAX_RUN, "block size {bs} above {MAX_RUN}");
    assert_eq!(out.len(), p.positions.len() * p.n_head * hd);
    let group_size = p.n_head / p.n_kv_head;
    let kv_dim = p.n_kv_head * hd;
    let groups = plan(p);
    let mut tasks = Vec::new();
    for (g, grp) in groups.iter().enumerate() {
        for kv_head in 0..p.n_kv_head {
            let mut t = 0;
            while t < grp.tokens.len() {
                let e = (t + TOKENS_PER_TASK).min(grp.tokens.len());
                tasks.push(Task {
                    group: g,
                    kv_head,
                    tokens: t..e,
                });
                t = e;
            }
        }
    }
    // Every task writes the output rows of distinct (token, head) pairs.
    let outp = crate::pool::SendPtr(out.as_mut_ptr());
    parallel_for(tasks.len(), |ti| {
        let task = &tasks[ti];
        let grp = &groups[task.group];
        let toks = &grp.tokens[task.tokens.clone()];
        let mut states: Vec<OnlineSoftmax> = (0..toks.len() * group_size)
            .map(|_| OnlineSoftmax::new(hd))
            .collect();
        // The query of each (token, head of this KV group), in the order of `states`.
        let queries: Vec<&[f32]> = toks
            .iter()
            .flat_map(|&t| {
                (0..group_size).map(move |h| {
                    let head = task.kv_head * group_size + h;
                    &p.q[(t * p.n_head + head) * hd..][..hd]
                })
            })
            .collect();
        // [first, end) positions of each token.
        let range = |t: usize| {
            let end = p.positions[t] as usize + 1;
            (p.window.map_or(0, |w| end.saturating_sub(w)), end)
        };
        let head_off = task.kv_head * hd;
        let visit = |block: u32, b: usize, ti: usize, st: &mut [OnlineSoftmax]| {
            let t = toks[ti];
            let (first, end) = range(t);
            let lo = (b * bs).max(first);
            let hi = ((b + 1) * bs).min(end);
            if lo >= hi {
                return;
            }
            let off = lo - b * bs;
            let vbase = (block as usize * bs + off) * kv_dim + head_off;
            let kbase = block as usize * bs * kv_dim + head_off * bs + off;
            attend_heads(
                &queries[ti * group_size..(ti + 1) * group_size],
                &p.k[kbase..],
                bs,
                &p.v[vbase..],
                kv_dim,
                hi - lo,
                p.scale,
                st,
            );
        };
        // Shared prefix: each block once, all queries of the task.
        for (b, &block) in grp.shared.iter().enumerate() {
            for ti in 0..toks.len() {
                visit(
                    block,
                    b,
                    ti,
                    &mut states[ti * group_size..(ti + 1) * group_size],
                );
            }
        }
        // The rest of each sequence's own blocks.
        for ti in 0..toks.len() {
            let t = toks[ti];
            let table = &p.block_tables[p.seq_of_token[t] as usize];
            let (_, end) = range(t);
            for (b, &block) in table
                .iter()
                .enumerate()
                .take(end.div_ceil(bs))
                .skip(grp.shared.len())
            {
                visit(
                    block,
                    b,
                    ti,
                    &mut states[ti * group_size..(ti + 1) * group_size],
                );
            }
            for h in 0..group_size {
                let qh = task.kv_head * group_size + h;
                // SAFETY: (t, qh) is written by this task only; the row lies within `out`.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(outp.at((t * p.n_head + qh) * hd), hd)
                };
                states[ti * group_size + h].finish(o);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Reference: per (token, head), plain softmax over the token's positions in f64.
    fn reference(p: &PagedAttention<'_>) -> Vec<f32> {
        let (hd, bs) = (p.head_dim, p.block_size);
        let kv_dim = p.n_kv_head * hd;
        let mut out = vec![0f32; p.positions.len() * p.n_head * hd];
        for t in 0..p.positions.len() {
            let table = &p.block_tables[p.seq_of_token[t] as usize];
            let end = p.positions[t] as usize + 1;
            let first = p.window.map_or(0, |w| end.saturating_sub(w));
            for h in 0..p.n_head {
                let kvh = h / (p.n_head / p.n_kv_head);
                let q = &p.q[(t * p.n_head + h) * hd..][..hd];
                let at =
                    |pos: usize| (table[pos / bs] as usize * bs + pos % bs) * kv_dim + kvh * hd;
                let kat = |pos: usize, d: usize| {
                    table[pos / bs] as usize * bs * kv_dim + (kvh * hd + d) * bs + pos % bs
                };
                let s: Vec<f64> = (first..end)
                    .map(|pos| {
                        (0..hd)
                            .map(|d| q[d] as f64 * p.k[kat(pos, d)] as f64)
                            .sum::<f64>()
                            * p.scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for d in 0..hd {
                    let v: f64 = (first..end)
                        .zip(&w)
                        .map(|(pos, wi)| wi * p.v[at(pos) + d] as f64)
                        .sum();
                    out[(t * p.n_head + h) * hd + d] = (v / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn shared_prefix_and_windows_match_reference_and_grouping_is_invisible() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (bs, n_head, n_kv, hd, n_blocks) = (16usize, 6usize, 2usize, 32usize, 40usize);
        let kv_dim = n_kv * hd;
        let k: Vec<f32> = (0..n_blocks * bs * kv_dim)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let v: Vec<f32> = (0..n_blocks * bs * kv_dim)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        // Three sequences share blocks 0..3; one is alone. Positions: a prefill chunk and decodes.
        let tables = vec![
            vec![0u32, 1, 2, 3, 10],
            vec![0, 1, 2, 3, 11, 12],
            vec![0, 1, 2, 20],
            vec![30, 31],
        ];
        let mut positions = Vec::new();
        let mut seqs = Vec::new();
        for (s, len) in [(0u32, 70usize), (1, 90), (2, 55), (3, 20)] {
            for pos in len - 5..len {
                positions.push(pos as u32);
                seqs.push(s);
            }
        }
        let q: Vec<f32> = (0..positions.len() * n_head * hd)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        // Windows: none, one position, exactly a block, a block and one, mid-block, and longer
        // than every sequence (must equal no window).
        for window in [None, Some(1), Some(16), Some(17), Some(24), Some(1000)] {
            let p = PagedAttention {
                q: &q,
                k: &k,
                v: &v,
                block_size: bs,
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                scale: 0.2,
                window,
                positions: &positions,
                seq_of_token: &seqs,
                block_tables: &tables,
            };
            let mut out = vec![0f32; q.len()];
            paged_attention(&p, &mut out);
            let want = reference(&p);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "window {window:?} element {i}: {a} vs {b}"
                );
            }
            // Each sequence alone (no sharing) gives bit-identical rows.
            for s in 0..tables.len() as u32 {
                let idx: Vec<usize> = (0..seqs.len()).filter(|&t| seqs[t] == s).collect();
                let q1: Vec<f32> = idx
                    .iter()
                    .flat_map(|&t| q[t * n_head * hd..(t + 1) * n_head * hd].to_vec())
                    .collect();
                let pos1: Vec<u32> = idx.iter().map(|&t| positions[t]).collect();
                let tab1 = vec![tables[s as usize].clone()];
                let p1 = PagedAttention {
                    q: &q1,
                    positions: &pos1,
                    seq_of_token: &vec![0; idx.len()],
                    block_tables: &tab1,
                    ..p
                };
                let mut o1 = vec![0f32; q1.len()];
                paged_attention(&p1, &mut o1);
                for (j, &t) in idx.iter().enumerate() {
                    assert_eq!(
                        &o1[j * n_head * hd..(j + 1) * n_head * hd],
                        &out[t * n_head * hd..(t + 1) * n_head * hd]
                    );
                }
            }
        }
    }
}

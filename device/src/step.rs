//! One forward step's batch packed for the device: every index the forward needs (tokens,
//! positions, the K/V slots to write, the K/V slots each sequence attends over, the rows to
//! un-pad, the logit rows) in one u32 buffer, uploaded in one transfer and cut into views there.
//!
//! Attention runs per group of sequences with the same number of query tokens in the step (all
//! decoding sequences form one group; each prefill chunk length its own), padded to the group's
//! longest context. Padded keys carry position [`PAD_POS`], which the causal mask hides, so a
//! padded slot's value is never read into a result.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;

/// Position given to padded keys: beyond any real position, exact in f32.
pub const PAD_POS: u32 = 1 << 24;

/// Shape of one attention group and where its indices sit in the buffer.
#[derive(Clone, Copy, Debug)]
struct GroupShape {
    n_seqs: usize,
    /// Query tokens per sequence.
    q: usize,
    /// Keys per sequence (the group's longest context).
    l: usize,
    off: usize,
}

/// A step's indices on the host, ready for one upload.
#[derive(Clone, Debug)]
pub struct Step {
    data: Vec<u32>,
    n_tokens: usize,
    n_logits: usize,
    groups: Vec<GroupShape>,
    /// Largest K/V slot named (reads and writes), to check against the cache.
    pub(crate) max_slot: usize,
    pub(crate) max_pos: usize,
}

/// The step's indices on the device (views into one uploaded buffer).
pub(crate) struct StepTensors {
    /// (n_tokens,)
    pub tokens: Tensor,
    /// (n_tokens,)
    pub positions: Tensor,
    /// (n_tokens,) slot each token's K/V is written to.
    pub write_slots: Tensor,
    /// (n_tokens,) row of each token in the concatenated padded group outputs.
    pub out_rows: Tensor,
    /// (n_logits,)
    pub logit_rows: Tensor,
    pub groups: Vec<GroupTensors>,
}

pub(crate) struct GroupTensors {
    pub n_seqs: usize,
    pub q: usize,
    pub l: usize,
    /// (n_seqs * q,) token row of each padded query.
    pub q_index: Tensor,
    /// (n_seqs, q, 1) f32 positions of the queries.
    pub q_pos: Tensor,
    /// (n_seqs * l,) K/V slot of each key (0 for padding).
    pub kv_slot: Tensor,
    /// (n_seqs, 1, l) f32 positions of the keys ([`PAD_POS`] for padding).
    pub kv_pos: Tensor,
}

impl Step {
    /// Pack a batch: `seq_index[t]` indexes `block_tables`; each sequence attends over positions
    /// 0..=its token's position through its block table (blocks of `block_size` slots).
    pub fn new(
        tokens: &[u32],
        positions: &[u32],
        seq_index: &[u32],
        block_tables: &[Vec<u32>],
        logit_rows: &[usize],
        block_size: usize,
    ) -> Result<Self> {
        let n = tokens.len();
        if positions.len() != n || seq_index.len() != n {
            return Err(Error::InvalidStep(format!(
                "{n} tokens but {} positions and {} sequence indices",
                positions.len(),
                seq_index.len()
            )));
        }
        if let Some(&r) = logit_rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidStep(format!(
                "logit row {r} of a batch of {n} tokens"
            )));
        }
        let n_seqs = block_tables.len();
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); n_seqs];
        for (t, &s) in seq_index.iter().enumerate() {
            let s = s as usize;
            if s >= n_seqs {
                return Err(Error::InvalidStep(format!(
                    "token {t} names sequence {s} of {n_seqs}"
                )));
            }
            rows[s].push(t);
        }
        let mut max_pos = 0usize;
        let mut max_slot = 0usize;
        let mut slot = |s: usize, p: usize| -> Result<u32> {
            let table = &block_tables[s];
            let b = table.get(p / block_size).ok_or_else(|| {
                Error::InvalidStep(format!(
                    "position {p} of sequence {s} is past its {} blocks",
                    table.len()
                ))
            })?;
            let v = *b as usize * block_size + p % block_size;
            max_slot = max_slot.max(v);
            Ok(v as u32)
        };
        let mut data = Vec::new();
        data.extend_from_slice(tokens);
        data.extend_from_slice(positions);
        for t in 0..n {
            let (s, p) = (seq_index[t] as usize, positions[t] as usize);
            max_pos = max_pos.max(p);
            data.push(slot(s, p)?);
        }
        if max_pos >= PAD_POS as usize {
            return Err(Error::InvalidStep(format!("position {max_pos} too large")));
        }
        let out_rows_at = data.len();
        data.resize(out_rows_at + n, 0);
        data.extend(logit_rows.iter().map(|&r| r as u32));
        // Group sequences by their number of query tokens.
        let mut by_q: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (s, r) in rows.iter().enumerate() {
            if !r.is_empty() {
                by_q.entry(r.len()).or_default().push(s);
            }
        }
        let mut groups = Vec::with_capacity(by_q.len());
        let mut padded_row = 0usize;
        for (q, seqs) in by_q {
            let ctx = |s: usize| rows[s].iter().map(|&t| positions[t] as usize + 1).max();
            let l = seqs.iter().filter_map(|&s| ctx(s)).max().unwrap_or(1);
            let off = data.len();
            for (gi, &s) in seqs.iter().enumerate() {
                for (qi, &t) in rows[s].iter().enumerate() {
                    data.push(t as u32);
                    data[out_rows_at + t] = (padded_row + gi * q + qi) as u32;
                }
            }
            for &s in &seqs {
                data.extend(rows[s].iter().map(|&t| positions[t]));
            }
            for &s in &seqs {
                let len = ctx(s).unwrap_or(0);
                for p in 0..l {
                    let v = if p < len { slot(s, p)? } else { 0 };
                    data.push(v);
                }
            }
            for &s in &seqs {
                let len = ctx(s).unwrap_or(0);
                data.extend((0..l).map(|p| if p < len { p as u32 } else { PAD_POS }));
            }
            groups.push(GroupShape {
                n_seqs: seqs.len(),
                q,
                l,
                off,
            });
            padded_row += seqs.len() * q;
        }
        Ok(Step {
            data,
            n_tokens: n,
            n_logits: logit_rows.len(),
            groups,
            max_slot,
            max_pos,
        })
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub fn n_logits(&self) -> usize {
        self.n_logits
    }

    /// Bytes this step uploads.
    pub fn upload_bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// One upload, then views of it (positions as f32 for the mask).
    pub(crate) fn upload(&self, device: &Device) -> Result<StepTensors> {
        let all = Tensor::from_slice(&self.data, self.data.len(), device)?;
        let n = self.n_tokens;
        let cut = |off: usize, len: usize| all.narrow(0, off, len);
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let (sq, sl) = (g.n_seqs * g.q, g.n_seqs * g.l);
            let f = |t: Tensor, shape: (usize, usize, usize)| -> Result<Tensor> {
                Ok(t.to_dtype(DType::F32)?.reshape(shape)?)
            };
            groups.push(GroupTensors {
                n_seqs: g.n_seqs,
                q: g.q,
                l: g.l,
                q_index: cut(g.off, sq)?,
                q_pos: f(cut(g.off + sq, sq)?, (g.n_seqs, g.q, 1))?,
                kv_slot: cut(g.off + 2 * sq, sl)?,
                kv_pos: f(cut(g.off + 2 * sq + sl, sl)?, (g.n_seqs, 1, g.l))?,
            });
        }
        Ok(StepTensors {
            tokens: cut(0, n)?,
            positions: cut(n, n)?,
            write_slots: cut(2 * n, n)?,
            out_rows: cut(3 * n, n)?,
            logit_rows: cut(4 * n, self.n_logits)?,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences decoding (one group, padded to the longer context) and one prefilling (its
    /// own group): every token's padded row, write slot and key slots follow its block table.
    #[test]
    fn ragged_step_groups_by_query_count() -> Result<()> {
        // seq 0: decode at position 5 (blocks 3, 1); seq 1: decode at 2 (block 2);
        // seq 2: prefill positions 0..3 (block 0). Block size 4.
        let tokens = [10, 11, 12, 13, 14];
        let positions = [5, 2, 0, 1, 2];
        let seq_index = [0, 1, 2, 2, 2];
        let tables = vec![vec![3, 1], vec![2], vec![0]];
        let step = Step::new(&tokens, &positions, &seq_index, &tables, &[0, 4], 4)?;
        assert_eq!(step.groups.len(), 2);
        let t = step.upload(&Device::Cpu)?;
        assert_eq!(t.write_slots.to_vec1::<u32>()?, vec![5, 10, 0, 1, 2]);
        // Group q=1: seqs 0 and 1 (rows 0, 1); group q=3: seq 2 (rows 2..5).
        assert_eq!(t.out_rows.to_vec1::<u32>()?, vec![0, 1, 2, 3, 4]);
        let g0 = &t.groups[0];
        assert_eq!((g0.n_seqs, g0.q, g0.l), (2, 1, 6));
        assert_eq!(
            g0.kv_slot.to_vec1::<u32>()?,
            vec![12, 13, 14, 15, 4, 5, 8, 9, 10, 0, 0, 0]
        );
        let pad = PAD_POS as f32;
        assert_eq!(
            g0.kv_pos.flatten_all()?.to_vec1::<f32>()?,
            vec![0., 1., 2., 3., 4., 5., 0., 1., 2., pad, pad, pad]
        );
        assert_eq!(t.logit_rows.to_vec1::<u32>()?, vec![0, 4]);
        Ok(())
    }

    #[test]
    fn position_past_the_block_table_is_an_error() {
        let e = Step::new(&[1], &[4], &[0], &[vec![0]], &[0], 4).unwrap_err();
        assert!(e.to_string().contains("past its 1 blocks"), "{e}");
    }
}

//! A packed batch: the tokens of many sequences in one flat list (llama.cpp's `llama_batch`), each
//! with its own position and sequence, no padding, and the rows whose logits are wanted.

use crate::model::kv::BlockId;
use crate::TokenId;

/// One forward step's input.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// (n_tokens,)
    pub tokens: Vec<TokenId>,
    /// (n_tokens,) position of each token in its sequence.
    pub positions: Vec<u32>,
    /// (n_tokens,) index into `block_tables` of each token's sequence.
    pub seq_index: Vec<u32>,
    /// (n_seqs,) the KV blocks of each sequence in this batch, in position order.
    pub block_tables: Vec<Vec<BlockId>>,
    /// Rows (indices into `tokens`) whose logits the forward must return, in this order.
    pub logit_rows: Vec<usize>,
}

impl Batch {
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Append a run of consecutive tokens of one sequence starting at `start_pos`.
    pub fn push_seq(
        &mut self,
        tokens: &[TokenId],
        start_pos: usize,
        blocks: Vec<BlockId>,
        want_last_logits: bool,
    ) {
        let last: &[usize] = if want_last_logits && !tokens.is_empty() {
            &[tokens.len() - 1]
        } else {
            &[]
        };
        self.push_seq_rows(tokens, start_pos, blocks, last.iter().copied());
    }

    /// Like [`push_seq`](Self::push_seq), asking for the logits of the rows at these offsets into
    /// `tokens` (ascending).
    pub fn push_seq_rows(
        &mut self,
        tokens: &[TokenId],
        start_pos: usize,
        blocks: Vec<BlockId>,
        rows: impl IntoIterator<Item = usize>,
    ) {
        let base = self.tokens.len();
        let si = self.block_tables.len() as u32;
        self.block_tables.push(blocks);
        for (i, &t) in tokens.iter().enumerate() {
            self.tokens.push(t);
            self.positions.push((start_pos + i) as u32);
            self.seq_index.push(si);
        }
        for r in rows {
            debug_assert!(r < tokens.len());
            self.logit_rows.push(base + r);
        }
    }
}

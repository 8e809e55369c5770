//! The KV cache: fixed-size blocks of K/V storage, reference-counted so sequences can share a
//! prefix, and a prefix index from (previous block, tokens of this block) to a cached block
//! (vLLM's automatic prefix caching: a chained hash per full block).
//!
//! Only this module changes cache metadata (reference counts, the index, the free lists). The model
//! writes K/V values into the slots a batch names and reads them back; it never allocates.
//! Invariants: a block is in exactly one of {referenced (ref_count > 0), evictable (ref 0, indexed,
//! content kept for reuse), free}; only full, computed blocks are indexed; a sequence never writes
//! into a block it shares (prefix matches stop before the last prompt token).

use crate::error::Result;
use crate::model::kv::{BlockId, KvStorage, LayerKv};
use crate::model::Model;
use crate::TokenId;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Prefix-cache counters.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PrefixStats {
    /// Prompt tokens looked up.
    pub queried_tokens: u64,
    /// Prompt tokens found in cached blocks (not recomputed).
    pub hit_tokens: u64,
}

impl PrefixStats {
    pub fn hit_rate(&self) -> f64 {
        if self.queried_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.queried_tokens as f64
        }
    }
}

pub struct KvCache {
    storage: KvStorage,
    ref_count: Vec<u32>,
    free: Vec<BlockId>,
    /// Evictable cached blocks by last use (LRU first).
    evictable: BTreeMap<u64, BlockId>,
    last_use: Vec<u64>,
    /// Chained content key of each block, when its content is known and complete.
    block_key: Vec<Option<u64>>,
    /// Tokens of each keyed block and its parent key, to verify index hits exactly.
    block_tokens: Vec<Vec<TokenId>>,
    block_parent: Vec<u64>,
    index: HashMap<u64, BlockId>,
    tick: u64,
    stats: PrefixStats,
}

const ROOT_KEY: u64 = 0x9e37_79b9_7f4a_7c15;

fn chain_key(parent: u64, tokens: &[TokenId]) -> u64 {
    // SipHash with fixed keys: deterministic across runs; hits are verified against stored tokens.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x5ee, 0xa7e5);
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl KvCache {
    /// A cache of `n_blocks` blocks of `block_size` tokens.
    pub fn new(n_layer: usize, kv_dim: usize, block_size: usize, n_blocks: usize) -> Self {
        Self::with_storage(n_layer, kv_dim, block_size, n_blocks, None)
    }

    /// A cache of `n_blocks` blocks for `model`: host K/V for the hand-written engine, K/V blocks
    /// on the model's device when it runs on one (then no host K/V is allocated).
    pub fn for_model(model: &dyn Model, block_size: usize, n_blocks: usize) -> Result<Self> {
        let c = model.config();
        let device = model.device_kv(block_size, n_blocks)?;
        Ok(Self::with_storage(
            c.n_layer,
            c.kv_dim(),
            block_size,
            n_blocks,
            device,
        ))
    }

    /// [`KvCache::for_model`] with as many blocks as fit in `budget_bytes` (at least one).
    pub fn for_model_with_budget(
        model: &dyn Model,
        block_size: usize,
        budget_bytes: usize,
    ) -> Result<Self> {
        let c = model.config();
        let per_block = Self::bytes_per_token(c.n_layer, c.kv_dim()) * block_size;
        Self::for_model(model, block_size, (budget_bytes / per_block.max(1)).max(1))
    }

    fn with_storage(
        n_layer: usize,
        kv_dim: usize,
        block_size: usize,
        n_blocks: usize,
        device: Option<ares_device::DeviceKv>,
    ) -> Self {
        let per_layer = n_blocks * block_size * kv_dim;
        let host_layers = if device.is_some() { 0 } else { n_layer };
        let layers = (0..host_layers)
            .map(|_| LayerKv {
                k: vec![0.0; per_layer],
                v: vec![0.0; per_layer],
            })
            .collect();
        KvCache {
            storage: KvStorage {
                block_size,
                n_blocks,
                kv_dim,
                layers,
                device,
            },
            ref_count: vec![0; n_blocks],
            free: (0..n_blocks as u32).rev().map(BlockId).collect(),
            evictable: BTreeMap::new(),
            last_use: vec![0; n_blocks],
            block_key: vec![None; n_blocks],
            block_tokens: vec![Vec::new(); n_blocks],
            block_parent: vec![0; n_blocks],
            index: HashMap::new(),
            tick: 0,
            stats: PrefixStats::default(),
        }
    }

    /// The K/V values, to read.
    pub fn storage(&self) -> &KvStorage {
        &self.storage
    }

    /// The K/V values for one forward to write into the slots its batch names (blocks this cache
    /// handed out through [`KvCache::grow`] or [`KvCache::match_prefix`]). Metadata (reference
    /// counts, the prefix index, the free lists) is not reachable through it.
    pub fn values_for_forward(&mut self) -> &mut KvStorage {
        &mut self.storage
    }

    /// Copy K and V of the first `n` positions of block `from` into block `to`, in every layer
    /// (llama.cpp's `seq_cp` for a partial block): `to` must be a block the caller owns alone.
    pub fn copy_block_prefix(&mut self, from: BlockId, to: BlockId, n: usize) -> Result<()> {
        debug_assert!(n <= self.storage.block_size);
        debug_assert!(
            self.ref_count[to.0 as usize] <= 1,
            "copy into a shared block"
        );
        let s = &mut self.storage;
        if let Some(d) = &mut s.device {
            d.copy_block_prefix(from.0, to.0, n)?;
            return Ok(());
        }
        let (src, dst, len) = (s.slot(from, 0), s.slot(to, 0), n * s.kv_dim);
        // K is transposed per block: its first n positions are not contiguous, so copy all of it.
        let block_len = s.block_size * s.kv_dim;
        for layer in &mut s.layers {
            layer.k.copy_within(src..src + block_len, dst);
            layer.v.copy_within(src..src + len, dst);
        }
        Ok(())
    }

    /// Set every K/V value to 0 (touches all pages, so a benchmark does not time page faults).
    pub fn zero_values(&mut self) {
        for layer in &mut self.storage.layers {
            layer.k.fill(0.0);
            layer.v.fill(0.0);
        }
    }

    /// Bytes of K/V storage per token.
    pub fn bytes_per_token(n_layer: usize, kv_dim: usize) -> usize {
        2 * n_layer * kv_dim * std::mem::size_of::<f32>()
    }

    /// As many blocks as fit in `budget_bytes` (at least one).
    pub fn with_budget(
        n_layer: usize,
        kv_dim: usize,
        block_size: usize,
        budget_bytes: usize,
    ) -> Self {
        let per_block = Self::bytes_per_token(n_layer, kv_dim) * block_size;
        let n_blocks = (budget_bytes / per_block.max(1)).max(1);
        Self::new(n_layer, kv_dim, block_size, n_blocks)
    }

    pub fn block_size(&self) -> usize {
        self.storage.block_size
    }

    pub fn capacity_tokens(&self) -> usize {
        self.storage.n_blocks * self.storage.block_size
    }

    /// Blocks that can be handed out now (free or evictable).
    pub fn available_blocks(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks held by sequences.
    pub fn used_blocks(&self) -> usize {
        self.storage.n_blocks - self.available_blocks()
    }

    /// Blocks whose content is kept for prefix reuse but no sequence holds.
    pub fn cached_blocks(&self) -> usize {
        self.evictable.len()
    }

    pub fn prefix_stats(&self) -> PrefixStats {
        self.stats
    }

    /// Blocks needed for `n_tokens` tokens.
    pub fn blocks_for(&self, n_tokens: usize) -> usize {
        n_tokens.div_ceil(self.storage.block_size)
    }

    fn touch(&mut self, b: BlockId) {
        self.tick += 1;
        self.last_use[b.0 as usize] = self.tick;
    }

    fn acquire(&mut self, b: BlockId) {
        let i = b.0 as usize;
        if self.ref_count[i] == 0 {
            self.evictable.remove(&self.last_use[i]);
        }
        self.ref_count[i] += 1;
        self.touch(b);
    }

    /// Longest cached run of full blocks at the start of `tokens`, leaving at least one token to
    /// compute (its logits are needed). The returned blocks are now held by the caller.
    pub fn match_prefix(&mut self, tokens: &[TokenId]) -> Vec<BlockId> {
        let out = self.lookup(tokens);
        for &b in &out {
            self.acquire(b);
        }
        let bs = self.storage.block_size;
        self.stats.queried_tokens += tokens.len() as u64;
        self.stats.hit_tokens += (out.len() * bs) as u64;
        out
    }

    /// How many leading full blocks of `tokens` [`match_prefix`](Self::match_prefix) would reuse,
    /// without holding them or counting a lookup.
    pub fn peek_prefix(&self, tokens: &[TokenId]) -> usize {
        self.lookup(tokens).len()
    }

    fn lookup(&self, tokens: &[TokenId]) -> Vec<BlockId> {
        let bs = self.storage.block_size;
        let mut out = Vec::new();
        let mut parent = ROOT_KEY;
        while (out.len() + 1) * bs < tokens.len() {
            let chunk = &tokens[out.len() * bs..(out.len() + 1) * bs];
            let key = chain_key(parent, chunk);
            let Some(&b) = self.index.get(&key) else {
                break;
            };
            let i = b.0 as usize;
            if self.block_parent[i] != parent || self.block_tokens[i] != chunk {
                break; // hash collision: treat as a miss
            }
            out.push(b);
            parent = key;
        }
        out
    }

    /// One block for new content, evicting the least recently used cached block if needed.
    fn allocate(&mut self) -> Option<BlockId> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                self.forget(b);
                b
            }
        };
        self.ref_count[b.0 as usize] = 1;
        self.touch(b);
        Some(b)
    }

    fn forget(&mut self, b: BlockId) {
        let i = b.0 as usize;
        if let Some(key) = self.block_key[i].take() {
            if self.index.get(&key) == Some(&b) {
                self.index.remove(&key);
            }
        }
        self.block_tokens[i].clear();
    }

    /// Extend `table` with new blocks until it holds `n_tokens`. On failure nothing is allocated.
    pub fn grow(&mut self, table: &mut Vec<BlockId>, n_tokens: usize) -> bool {
        let need = self.blocks_for(n_tokens).saturating_sub(table.len());
        if need > self.available_blocks() {
            return false;
        }
        for _ in 0..need {
            let b = self.allocate().expect("availability checked above");
            table.push(b);
        }
        true
    }

    /// Register the full blocks of `table` among the first `n_computed` positions of `tokens` in
    /// the prefix index, starting at block `from` (blocks before it are already registered).
    /// Returns the number of full computed blocks (the next `from`).
    pub fn commit(
        &mut self,
        table: &[BlockId],
        tokens: &[TokenId],
        n_computed: usize,
        from: usize,
    ) -> usize {
        let bs = self.storage.block_size;
        let full = (n_computed / bs).min(table.len());
        let mut parent = if from == 0 {
            ROOT_KEY
        } else {
            self.block_key[table[from - 1].0 as usize].unwrap_or_else(|| {
                // The parent was keyed when it was committed; recompute the chain if it was not.
                (0..from).fold(ROOT_KEY, |p, j| chain_key(p, &tokens[j * bs..(j + 1) * bs]))
            })
        };
        for j in from..full {
            let chunk = &tokens[j * bs..(j + 1) * bs];
            let key = chain_key(parent, chunk);
            let b = table[j];
            let i = b.0 as usize;
            if self.block_key[i].is_none() {
                self.block_key[i] = Some(key);
                self.block_parent[i] = parent;
                self.block_tokens[i] = chunk.to_vec();
                self.index.entry(key).or_insert(b);
            }
            parent = key;
        }
        full.max(from)
    }

    /// Drop a sequence's hold on its blocks. Indexed blocks stay cached (evictable); others are freed.
    pub fn release(&mut self, table: &[BlockId]) {
        for &b in table {
            let i = b.0 as usize;
            debug_assert!(self.ref_count[i] > 0, "double release of {b:?}");
            self.ref_count[i] = self.ref_count[i].saturating_sub(1);
            if self.ref_count[i] == 0 {
                let indexed = self.block_key[i].is_some_and(|k| self.index.get(&k) == Some(&b));
                if indexed {
                    self.touch(b);
                    self.evictable.insert(self.last_use[i], b);
                } else {
                    self.forget(b);
                    self.free.push(b);
                }
            }
        }
    }

    /// Drop every cached prefix (blocks held by sequences are untouched).
    pub fn clear_prefix_cache(&mut self) {
        while let Some((_, b)) = self.evictable.pop_first() {
            self.forget(b);
            self.free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: usize, salt: u32) -> Vec<TokenId> {
        (0..n as u32).map(|i| i * 7 + salt).collect()
    }

    #[test]
    fn blocks_of_finished_sequences_are_reused_without_leak() {
        let mut kv = KvCache::new(1, 4, 4, 8);
        for round in 0..50 {
            let mut t = Vec::new();
            assert!(kv.grow(&mut t, 13), "round {round}");
            assert_eq!(t.len(), 4);
            let tokens = toks(13, round);
            kv.commit(&t, &tokens, 13, 0);
            kv.release(&t);
            assert_eq!(kv.used_blocks(), 0);
            assert_eq!(kv.available_blocks(), 8);
        }
    }

    #[test]
    fn prefix_is_shared_and_refcounted() {
        let mut kv = KvCache::new(1, 4, 4, 16);
        let a = toks(10, 1);
        let mut ta = kv.match_prefix(&a);
        assert!(ta.is_empty());
        assert!(kv.grow(&mut ta, a.len()));
        kv.commit(&ta, &a, a.len(), 0);
        // Same first 8 tokens, different tail: the two full blocks are shared.
        let mut b = a[..8].to_vec();
        b.extend([999, 998, 997]);
        let tb = kv.match_prefix(&b);
        assert_eq!(tb, ta[..2].to_vec());
        kv.release(&ta);
        // Still held by b: not evictable, not free.
        assert_eq!(kv.used_blocks(), 2);
        kv.release(&tb);
        assert_eq!(kv.used_blocks(), 0);
        assert_eq!(kv.cached_blocks(), 2);
        // A fully cached prompt leaves its last block to compute.
        let tc = kv.match_prefix(&a[..8]);
        assert_eq!(tc.len(), 1);
        kv.release(&tc);
        assert!(kv.prefix_stats().hit_tokens >= 12);
    }

    #[test]
    fn cached_blocks_are_evicted_lru_when_memory_is_needed() {
        let mut kv = KvCache::new(1, 4, 4, 4);
        let a = toks(8, 3);
        let mut ta = Vec::new();
        assert!(kv.grow(&mut ta, 8));
        kv.commit(&ta, &a, 8, 0);
        kv.release(&ta);
        assert_eq!(kv.cached_blocks(), 2);
        let mut t = Vec::new();
        assert!(kv.grow(&mut t, 16));
        assert_eq!(kv.cached_blocks(), 0);
        assert!(!kv.grow(&mut t, 20), "over capacity must fail");
        kv.release(&t);
        assert!(
            kv.match_prefix(&toks(9, 3)).is_empty(),
            "evicted content must not be matched"
        );
    }
}

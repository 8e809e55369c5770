//! The KV cache: fixed-size blocks of K/V storage, reference-counted so sequences can share a
//! prefix, and a prefix index from (previous block, tokens of this block) to a cached block
//! (vLLM's automatic prefix caching: a chained hash per full block), plus token-granular reuse of
//! the block after the last full match: the leading tokens a cached child block shares with the
//! prompt are copied into the sequence's own block (llama.cpp reuses the common prefix to the
//! token; SGLang's radix cache too), so prompts that share a prefix ending mid-block (32 criteria
//! of one response) recompute only what differs.
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
    /// Indexed blocks by their parent's key (the candidates for a partial match after it).
    children: HashMap<u64, Vec<BlockId>>,
    tick: u64,
    stats: PrefixStats,
}

const ROOT_KEY: u64 = 0x9e37_79b9_7f4a_7c15;

/// Cached children of one block compared for a partial match (the most recently indexed first):
/// bounds the lookup where many distinct prompts follow one prefix (or none, at the root).
const MAX_PARTIAL_CANDIDATES: usize = 64;

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
            children: HashMap::new(),
            tick: 0,
            stats: PrefixStats::default(),
        }
    }

    /// The K/V values, to read.
    pub fn storage(&self) -> &KvStorage {
        &self.storage
    }

    /// The K/V values for one forward to write into the slots its batch names (blocks this cache
    /// handed out through [`KvCache::grow`] or [`KvCache::reserve`]). Metadata (reference
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

    /// Blocks for a sequence of `n_total` tokens whose prompt (the cacheable part) is `tokens`:
    /// the longest cached run of full blocks at its start, held by the caller, then new blocks, the
    /// first of which already holds the tokens it shares with a cached block (copied). Returns the
    /// table and the number of leading tokens whose K/V it already holds (at most
    /// `tokens.len() - 1`: the last prompt token is always computed, its logits are needed), or
    /// `None`, with nothing held, when the blocks do not fit.
    pub fn reserve(&mut self, tokens: &[TokenId], n_total: usize) -> Option<(Vec<BlockId>, usize)> {
        let bs = self.storage.block_size;
        let (mut table, partial) = self.lookup(tokens);
        for &b in &table {
            self.acquire(b);
        }
        // Hold the copy source so allocating the sequence's blocks cannot evict it.
        if let Some((src, _)) = partial {
            self.acquire(src);
        }
        let n_full = table.len();
        let fits = self.grow(&mut table, n_total.max(tokens.len()));
        let mut n_cached = n_full * bs;
        if let (true, Some((src, n))) = (fits, partial) {
            match self.copy_block_prefix(src, table[n_full], n) {
                Ok(()) => n_cached += n,
                // The tokens are computed instead: slower, never wrong.
                Err(e) => tracing::warn!("partial prefix copy failed, recomputing: {e}"),
            }
        }
        if let Some((src, _)) = partial {
            self.release(&[src]);
        }
        if !fits {
            self.release(&table);
            return None;
        }
        self.stats.queried_tokens += tokens.len() as u64;
        self.stats.hit_tokens += n_cached as u64;
        Some((table, n_cached))
    }

    /// How many leading tokens of `tokens` [`reserve`](Self::reserve) would reuse, without
    /// holding anything or counting a lookup.
    pub fn peek_prefix(&self, tokens: &[TokenId]) -> usize {
        let (full, partial) = self.lookup(tokens);
        full.len() * self.storage.block_size + partial.map_or(0, |(_, n)| n)
    }

    /// The cached full blocks at the start of `tokens`, then the cached block (child of the last
    /// one) sharing the most leading tokens with the rest, and how many, leaving at least one
    /// token of `tokens` unmatched.
    fn lookup(&self, tokens: &[TokenId]) -> (Vec<BlockId>, Option<(BlockId, usize)>) {
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
        let start = out.len() * bs;
        let limit = (tokens.len().saturating_sub(1).saturating_sub(start)).min(bs - 1);
        let rest = &tokens[start..start + limit];
        let partial = self.children.get(&parent).and_then(|kids| {
            kids.iter()
                .rev()
                .take(MAX_PARTIAL_CANDIDATES)
                .map(|&c| {
                    let shared = self.block_tokens[c.0 as usize]
                        .iter()
                        .zip(rest)
                        .take_while(|(a, b)| a == b)
                        .count();
                    (c, shared)
                })
                .filter(|&(_, n)| n > 0)
                .max_by_key(|&(_, n)| n)
        });
        (out, partial)
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
                let parent = self.block_parent[i];
                if let Some(kids) = self.children.get_mut(&parent) {
                    kids.retain(|&c| c != b);
                    if kids.is_empty() {
                        self.children.remove(&parent);
                    }
                }
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
                if let std::collections::hash_map::Entry::Vacant(e) = self.index.entry(key) {
                    e.insert(b);
                    self.children.entry(parent).or_default().push(b);
                }
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
        let (ta, hit) = kv.reserve(&a, a.len()).expect("fits");
        assert_eq!((ta.len(), hit), (3, 0));
        kv.commit(&ta, &a, a.len(), 0);
        // Same first 8 tokens, different tail: the two full blocks are shared.
        let mut b = a[..8].to_vec();
        b.extend([999, 998, 997]);
        let (tb, hit) = kv.reserve(&b, b.len()).expect("fits");
        assert_eq!(tb[..2], ta[..2]);
        assert_ne!(tb[2], ta[2], "the tail block is the sequence's own");
        assert_eq!(hit, 8);
        kv.release(&ta);
        // Still held by b: not evictable, not free.
        assert_eq!(kv.used_blocks(), 3);
        kv.release(&tb);
        assert_eq!(kv.used_blocks(), 0);
        assert_eq!(kv.cached_blocks(), 2);
        // A fully cached prompt leaves its last token to compute: one full block, then 3 of the
        // next block's 4 tokens copied.
        let (tc, hit) = kv.reserve(&a[..8], 8).expect("fits");
        assert_eq!((tc.len(), hit), (2, 7));
        assert_eq!(tc[0], ta[0]);
        kv.release(&tc);
        assert_eq!(kv.prefix_stats().hit_tokens, 15);
        assert_eq!(kv.prefix_stats().queried_tokens, 10 + 11 + 8);
    }

    /// Fill the K/V of `table`'s positions with values unique to (layer, block, position, dim).
    fn fill(kv: &mut KvCache, table: &[BlockId]) {
        let (bs, dim) = (kv.block_size(), kv.storage().kv_dim);
        let s = kv.values_for_forward();
        for (l, layer) in s.layers.iter_mut().enumerate() {
            for &b in table {
                for off in 0..bs {
                    for d in 0..dim {
                        let x = (l * 100_000 + b.0 as usize * 1000 + off * 10 + d) as f32;
                        layer.v[(b.0 as usize * bs + off) * dim + d] = x;
                        layer.k[(b.0 as usize * dim + d) * bs + off] = -x;
                    }
                }
            }
        }
    }

    #[test]
    fn a_prefix_ending_mid_block_is_copied_to_the_token() {
        let mut kv = KvCache::new(2, 3, 4, 16);
        let a = toks(12, 1);
        let (ta, _) = kv.reserve(&a, 12).expect("fits");
        fill(&mut kv, &ta);
        kv.commit(&ta, &a, 12, 0);
        kv.release(&ta);
        // Shares a's first 6 tokens: block 0 whole, then 2 tokens of a's block 1.
        let mut b = a[..6].to_vec();
        b.extend([500, 501, 502]);
        assert_eq!(kv.peek_prefix(&b), 6);
        let (tb, hit) = kv.reserve(&b, 9).expect("fits");
        assert_eq!(hit, 6);
        assert_eq!(tb[0], ta[0]);
        assert!(!ta.contains(&tb[1]), "copied into the sequence's own block");
        let (bs, dim) = (4, 3);
        let s = kv.storage();
        for layer in &s.layers {
            for off in 0..2 {
                for d in 0..dim {
                    let (src, dst) = (ta[1].0 as usize, tb[1].0 as usize);
                    assert_eq!(
                        layer.v[(dst * bs + off) * dim + d],
                        layer.v[(src * bs + off) * dim + d]
                    );
                    assert_eq!(
                        layer.k[(dst * dim + d) * bs + off],
                        layer.k[(src * dim + d) * bs + off]
                    );
                }
            }
        }
        kv.release(&tb);
        // Nothing in common beyond the cached blocks' first token: no partial match on 0 tokens.
        let c = [a[0] + 1, a[1], a[2]];
        assert_eq!(kv.peek_prefix(&c), 0);
    }

    #[test]
    fn the_copy_source_is_not_evicted_by_the_sequences_own_blocks() {
        let mut kv = KvCache::new(1, 4, 4, 3);
        let a = toks(8, 3);
        let (ta, _) = kv.reserve(&a, 8).expect("fits");
        kv.commit(&ta, &a, 8, 0);
        kv.release(&ta);
        assert_eq!(kv.cached_blocks(), 2);
        // Needs 3 blocks while its copy source (a's first block) is held: does not fit, and
        // nothing stays held.
        let mut b = a[..2].to_vec();
        b.extend(900..907);
        assert!(kv.reserve(&b, b.len()).is_none());
        assert_eq!(kv.used_blocks(), 0);
        // Two blocks fit: the free one and a's second block, evicted; a's first is copied from.
        b.truncate(8);
        let (tb, hit) = kv.reserve(&b, 8).expect("fits");
        assert_eq!(hit, 2);
        assert!(!tb.contains(&ta[0]));
        kv.release(&tb);
        assert_eq!(kv.peek_prefix(&a[..3]), 2, "the source is still cached");
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
        assert_eq!(
            kv.reserve(&toks(9, 3), 9).map(|(_, hit)| hit),
            Some(0),
            "evicted content must not be matched, whole or in part"
        );
    }
}

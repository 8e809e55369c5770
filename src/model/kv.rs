//! The K/V tensors a forward reads and writes: fixed-size blocks of f32 values per layer, K
//! transposed per block, addressed through a sequence's block table.
//!
//! A device model keeps its values in device blocks instead (`KvStorage::device`), addressed by
//! the same block ids. Owns the layout only; which blocks exist, who shares them and when they are reused is the
//! engine's KV cache (`engine::kv_cache`), the one place that allocates or copies blocks.

/// Index of a KV block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// K and V values of one layer: (n_blocks, block_size, n_kv_head, head_dim) each, f32.
pub struct LayerKv {
    /// Transposed per block: (n_blocks, kv_dim, block_size), so the attention kernels load 8 or 16
    /// positions of one dimension as a vector (see `ares_kernels::paged`).
    pub k: Vec<f32>,
    /// (n_blocks, block_size, kv_dim)
    pub v: Vec<f32>,
}

/// The K/V tensors: what the model reads and writes.
pub struct KvStorage {
    pub block_size: usize,
    pub n_blocks: usize,
    /// n_kv_head * head_dim
    pub kv_dim: usize,
    /// Empty when the values live on a device (`device`).
    pub layers: Vec<LayerKv>,
    /// K/V blocks on the device of a candle model (same block ids and slots as the host layout);
    /// None for the hand-written engine.
    pub device: Option<ares_device::DeviceKv>,
}

impl KvStorage {
    /// Offset of (block, offset-in-block) in a layer's `k` or `v`.
    #[inline]
    pub fn slot(&self, block: BlockId, off: usize) -> usize {
        (block.0 as usize * self.block_size + off) * self.kv_dim
    }

    /// Where K element 0 of position `pos` lives in a layer's `k`, and the distance between its
    /// elements (K is stored transposed per block).
    #[inline]
    pub fn k_slot_of(&self, table: &[BlockId], pos: usize) -> (usize, usize) {
        let (block, off) = (table[pos / self.block_size], pos % self.block_size);
        (
            block.0 as usize * self.block_size * self.kv_dim + off,
            self.block_size,
        )
    }

    /// Offset of position `pos` of a sequence whose blocks are `table` (in `v`; in `k` for data
    /// that does not go through attention, such as test models).
    #[inline]
    pub fn slot_of(&self, table: &[BlockId], pos: usize) -> usize {
        self.slot(table[pos / self.block_size], pos % self.block_size)
    }
}

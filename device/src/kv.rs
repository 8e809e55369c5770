//! The K/V values on the device: per layer, K and V as (n_blocks * block_size, kv_dim) f32
//! tensors, addressed by slot = block * block_size + offset. Owns the values only; which blocks
//! exist and who shares them is the host-side block cache of the caller (a shared prefix is two
//! block tables naming the same blocks, so nothing here copies for sharing).

use crate::Result;
use candle_core::{DType, Device, Tensor};

pub struct DeviceKv {
    pub block_size: usize,
    pub n_blocks: usize,
    pub kv_dim: usize,
    /// (n_layer,) of [K, V], each (n_blocks * block_size, kv_dim).
    pub(crate) layers: Vec<[Tensor; 2]>,
}

impl DeviceKv {
    /// Zeroed K/V blocks on `device`.
    pub fn new(
        n_layer: usize,
        kv_dim: usize,
        block_size: usize,
        n_blocks: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            let z = || Tensor::zeros((n_blocks * block_size, kv_dim), DType::F32, device);
            layers.push([z()?, z()?]);
        }
        Ok(DeviceKv {
            block_size,
            n_blocks,
            kv_dim,
            layers,
        })
    }

    /// Copy K and V of the first `n` positions of block `from` into block `to`, every layer
    /// (llama.cpp's `seq_cp` for a partial block).
    pub fn copy_block_prefix(&mut self, from: u32, to: u32, n: usize) -> Result<()> {
        let bs = self.block_size;
        for kv in &self.layers {
            for t in kv {
                // A fresh copy: slice_set refuses a source that shares the destination's storage.
                let src = t.narrow(0, from as usize * bs, n)?.copy()?;
                t.slice_set(&src, 0, to as usize * bs)?;
            }
        }
        Ok(())
    }

    /// Bytes of K/V values held on the device.
    pub fn bytes(&self) -> usize {
        2 * self.layers.len() * self.n_blocks * self.block_size * self.kv_dim * 4
    }

    /// K or V of one layer as host values (tests): (n_blocks * block_size * kv_dim,).
    pub fn layer_to_vec(&self, layer: usize, which: usize) -> Result<Vec<f32>> {
        Ok(self.layers[layer][which].flatten_all()?.to_vec1()?)
    }
}

//! The candle forward of `ares-device` as a [`Model`]: hyper-parameters read from GGUF metadata by
//! this crate's own loader (so both engines see the same numbers), weights loaded by candle onto
//! the device, K/V in device blocks ([`KvStorage::device`]) addressed through the engine's block
//! tables. The engine drives it exactly as it drives the hand-written models: the host-side block
//! cache stays the one source of truth; one packed batch per step goes to the device in one
//! upload; logits come back only for the requested rows.

use crate::error::{Error, Result};
use crate::model::batch::Batch;
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::gguf::GgufFile;
use crate::model::kv::KvStorage;
use crate::model::{gemma3, layers, Model};
use ares_device::{Arch, Config, DeviceKind, DeviceKv, DeviceModel, RopeSpec, Step};
use std::path::Path;

pub struct CandleModel {
    cfg: ModelConfig,
    kind: DeviceKind,
    inner: DeviceModel,
}

impl CandleModel {
    /// Load the GGUF `g` (opened from `path`) onto `kind`.
    pub fn load(g: &GgufFile, path: &Path, arch: &str, kind: DeviceKind) -> Result<Self> {
        let (_, cfg) = layers::embedding_and_config(g, arch)?;
        let rope = |base: f32, linear_factor: f32, factors: Vec<f32>| RopeSpec {
            base,
            linear_factor,
            factors,
        };
        let global = rope(cfg.rope_base, cfg.rope_linear_factor, Vec::new());
        let (device_arch, windows, attn_scale, rope_global, rope_local) = match arch {
            "gemma3" => {
                let p = gemma3::AttnLayout::from_gguf(g, &cfg)?;
                let local = rope(p.local_rope_base, 1.0, Vec::new());
                (Arch::Gemma3, p.windows, p.attn_scale, global, Some(local))
            }
            _ => {
                // Llama 3.1-style rope scaling ships per-dimension factors as a tensor.
                let factors = if g.has_tensor("rope_freqs.weight") {
                    g.weight("rope_freqs.weight")?.to_f32()
                } else {
                    Vec::new()
                };
                let a = match arch {
                    "qwen2" => Arch::Qwen2,
                    "qwen3" => Arch::Qwen3,
                    _ => Arch::Llama,
                };
                let scale = 1.0 / (cfg.head_dim as f32).sqrt();
                let global = rope(cfg.rope_base, cfg.rope_linear_factor, factors);
                (a, vec![None; cfg.n_layer], scale, global, None)
            }
        };
        let dcfg = Config {
            arch: device_arch,
            n_layer: cfg.n_layer,
            hidden: cfg.hidden,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim,
            vocab: cfg.vocab,
            rms_eps: cfg.rms_eps,
            rope_dim: cfg.rope_dim,
            rope_style: match cfg.rope_style {
                RopeStyle::Adjacent => ares_device::RopeStyle::Adjacent,
                RopeStyle::Halves => ares_device::RopeStyle::Halves,
            },
            rope: rope_global,
            rope_local,
            windows,
            attn_scale,
            max_positions: cfg.n_ctx_train.max(1),
        };
        let device = kind.open()?;
        let inner = DeviceModel::load(path, dcfg, &device)?;
        tracing::info!(device = %kind, arch, "candle model loaded");
        Ok(CandleModel { cfg, kind, inner })
    }
}

impl Model for CandleModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward(&self, batch: &Batch, kv: &mut KvStorage) -> Result<Vec<f32>> {
        let dev = kv.device.as_mut().ok_or_else(|| {
            Error::Config(format!(
                "the {} model needs K/V blocks on its device (make the cache with KvCache::for_model)",
                self.kind
            ))
        })?;
        let tables = layers::raw_block_tables(batch);
        let step = Step::new(
            &batch.tokens,
            &batch.positions,
            &batch.seq_index,
            &tables,
            &batch.logit_rows,
            dev.block_size,
        )?;
        Ok(self.inner.forward(&step, dev)?)
    }

    fn weight_bytes(&self) -> usize {
        self.inner.weight_bytes()
    }

    fn device_kv(&self, block_size: usize, n_blocks: usize) -> Result<Option<DeviceKv>> {
        Ok(Some(self.inner.new_kv(block_size, n_blocks)?))
    }

    fn device(&self) -> String {
        self.kind.to_string()
    }
}

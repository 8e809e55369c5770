//! WHAT the network computes: config, GGUF loading, tokenizer, chat template, shared layers and one
//! file per architecture. Models take `&self`; all per-sequence state (positions, KV) comes in
//! through the batch and the KV storage.

pub mod batch;
pub mod candle;
pub mod chat_template;
pub mod config;
pub mod device;
pub mod gemma3;
pub mod gguf;
pub mod kv;
pub mod layers;
pub mod llama;
pub mod registry;
pub mod safetensors;
pub mod source;
pub mod spm;
pub mod tokenizer;
pub mod wheel;

use crate::error::{Error, Result};
use crate::model::batch::Batch;
use crate::model::kv::KvStorage;
use chat_template::ChatTemplate;
pub use config::ModelConfig;
use gguf::GgufFile;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokenizer::Tokenizer;

/// A network the engine can run.
pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// Run the packed batch: write each token's K/V into its slot, attend over its own sequence,
    /// and return logits for `batch.logit_rows`: (logit_rows.len(), vocab), row-major.
    fn forward(&self, batch: &Batch, kv: &mut KvStorage) -> Result<Vec<f32>>;

    /// Bytes of weights held in memory (packed copies, or the mapped file when not packed).
    fn weight_bytes(&self) -> usize;

    /// K/V blocks on the model's device for a cache of `n_blocks` blocks of `block_size` tokens;
    /// None (the default) when the model reads and writes the host K/V of [`KvStorage`].
    fn device_kv(
        &self,
        _block_size: usize,
        _n_blocks: usize,
    ) -> Result<Option<ares_device::DeviceKv>> {
        Ok(None)
    }

    /// Where the forward runs, as `--device` spells it.
    fn device(&self) -> String {
        "cpu".into()
    }
}

/// Architectures this build can run from GGUF.
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "mistral", "gemma3", "qwen2", "qwen3"];

/// What `load` returns: the network, its tokenizer and template, and facts for reports.
pub struct LoadedModel {
    pub model: Arc<dyn Model>,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Option<Arc<ChatTemplate>>,
    pub path: PathBuf,
    pub load_seconds: f64,
}

impl LoadedModel {
    /// sha256 of the model file, hex (reads the whole file; call once per job). For a safetensors
    /// checkpoint: of its config.json, tokenizer.json and every .safetensors file, in name order.
    pub fn sha256(&self) -> Result<String> {
        if !safetensors::is_checkpoint(&self.path) {
            return sha256_file(&self.path);
        }
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).to_path_buf()
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "safetensors")
                    || p.file_name()
                        .is_some_and(|n| n == "config.json" || n == "tokenizer.json")
            })
            .collect();
        files.sort();
        let mut h = Sha256::new();
        for f in &files {
            hash_into(f, &mut h)?;
        }
        Ok(format!("{:x}", h.finalize()))
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    hash_into(path, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

fn hash_into(path: &Path, h: &mut Sha256) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

/// How to load a model.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Quantize every matrix at load (safetensors checkpoints; GGUF files load as they are).
    pub quantize: Option<safetensors::Quantize>,
    /// Where the forward runs: the hand-written CPU engine or the candle path on a device.
    pub device: device::Device,
}

/// Load a GGUF model file or a safetensors checkpoint (its directory, `config.json` or a
/// `.safetensors` file).
pub fn load(path: &Path) -> Result<LoadedModel> {
    load_with(path, &LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let t0 = Instant::now();
    let g = if safetensors::is_checkpoint(path) {
        safetensors::open(path, opts.quantize)?
    } else {
        if opts.quantize.is_some() {
            tracing::warn!(
                "--quantize applies to safetensors checkpoints; {} loads as stored",
                path.display()
            );
        }
        GgufFile::open(path)?
    };
    let arch = g.str("general.architecture")?.to_string();
    let model: Arc<dyn Model> = match (arch.as_str(), opts.device) {
        (a, device::Device::Candle(_)) if !SUPPORTED_ARCHS.contains(&a) => {
            return Err(Error::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: a.to_string(),
                supported: SUPPORTED_ARCHS.join(", "),
            })
        }
        (_, device::Device::Candle(_)) if safetensors::is_checkpoint(path) => {
            return Err(Error::Config(format!(
                "--device {}: the candle path loads GGUF files; {} is a safetensors checkpoint",
                opts.device,
                path.display()
            )))
        }
        (a, device::Device::Candle(kind)) => {
            Arc::new(candle::CandleModel::load(&g, path, a, kind)?)
        }
        ("llama" | "mistral" | "qwen2" | "qwen3", _) => {
            Arc::new(llama::Llama::from_gguf(&g, &arch)?)
        }
        ("gemma3", _) => Arc::new(gemma3::Gemma3::from_gguf(&g)?),
        (other, _) => {
            return Err(Error::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: other.to_string(),
                supported: SUPPORTED_ARCHS.join(", "),
            })
        }
    };
    let tokenizer = Tokenizer::load(&g)?;
    let piece = |id: Option<u32>| {
        id.and_then(|i| match g.str_array("tokenizer.ggml.tokens") {
            Ok(tokens) => tokens.get(i as usize).map(|s| s.to_string()),
            // safetensors: the vocabulary lives in tokenizer.json.
            Err(_) => Some(tokenizer.token_text(i)),
        })
    };
    let chat_template = match g.str("tokenizer.chat_template") {
        Ok(src) => Some(Arc::new(ChatTemplate::new(
            src,
            &piece(tokenizer.bos).unwrap_or_default(),
            &piece(tokenizer.eos).unwrap_or_default(),
        )?)),
        Err(_) => None,
    };
    Ok(LoadedModel {
        model,
        tokenizer: Arc::new(tokenizer),
        chat_template,
        path: path.to_path_buf(),
        load_seconds: t0.elapsed().as_secs_f64(),
    })
}

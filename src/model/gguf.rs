//! GGUF files: metadata parsed by candle's `gguf_file`, tensor data memory-mapped so quantized
//! weights stay quantized and are never copied at load.
//!
//! Owns the mapping from a file to typed metadata accessors and borrowed weight matrices; checks
//! every tensor lies within the file (a truncated download is a clear error, not a fault later).

use crate::error::{Error, Result};
use ares_kernels::{WeightMatrix, WeightType};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes a tensor lives in: a mapped file, or memory owned after a conversion at load
/// (safetensors bf16, `--quantize`).
pub type Backing = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// An open GGUF file, or a safetensors checkpoint presented with GGUF metadata keys and tensor
/// names (see `safetensors.rs`), so every architecture loads from one description.
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: HashMap<String, Value>,
    tensors: HashMap<String, TensorEntry>,
    /// The mapped files (one for GGUF, one per shard for safetensors).
    maps: Vec<Arc<Mmap>>,
}

/// One tensor's location.
pub struct TensorEntry {
    pub dtype: GgmlDType,
    /// Row-major dims (candle reverses ggml's ne order): a matrix is (n, k).
    pub dims: Vec<usize>,
    pub data: Backing,
    pub start: usize,
    pub len: usize,
}

/// A weight tensor living in the mapped file.
#[derive(Clone)]
pub struct Weight {
    pub name: String,
    pub ty: WeightType,
    /// Rows (output features).
    pub n: usize,
    /// Columns (input features).
    pub k: usize,
    data: Backing,
    start: usize,
    len: usize,
    /// The same matrix in the kernels' packed layout, when packed at load.
    packed: Option<Arc<Vec<u8>>>,
}

impl Weight {
    /// Repack into the layout the SIMD kernels stream (when this machine has them and the type
    /// has one); the original bytes stay mapped for row lookups (embeddings).
    pub fn pack(&mut self) {
        if ares_kernels::dispatch::isa() == ares_kernels::Isa::Avx2
            && ares_kernels::packed::packable(self.ty)
        {
            self.packed = Some(Arc::new(ares_kernels::packed::pack(
                self.ty,
                self.n,
                self.k,
                self.bytes(),
            )));
        }
    }

    /// The kernels' view: packed when available, else the mapped rows.
    pub fn mat(&self) -> ares_kernels::Mat<'_> {
        match &self.packed {
            Some(p) => ares_kernels::Mat::Packed(ares_kernels::PackedMatrix {
                ty: self.ty,
                n: self.n,
                k: self.k,
                data: p,
            }),
            None => ares_kernels::Mat::Rows(self.matrix()),
        }
    }

    /// Bytes held in memory besides the mapping (packed copies).
    pub fn owned_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.len())
    }

    /// Raw bytes in ggml layout.
    pub fn bytes(&self) -> &[u8] {
        &(*self.data).as_ref()[self.start..self.start + self.len]
    }

    /// The kernels' view of this weight.
    pub fn matrix(&self) -> WeightMatrix<'_> {
        WeightMatrix {
            ty: self.ty,
            n: self.n,
            k: self.k,
            data: self.bytes(),
        }
    }

    /// Row `j` dequantized into `out` (length k): the embedding lookup.
    pub fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let rb = self.ty.row_bytes(self.k);
        ares_kernels::formats::dequantize_row(self.ty, &self.bytes()[j * rb..(j + 1) * rb], out);
    }

    /// The whole tensor as f32 (for norms and biases, which are small).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (j, row) in out.chunks_mut(self.k).enumerate() {
            self.dequantize_row(j, row);
        }
        out
    }
}

fn weight_type(dtype: GgmlDType) -> Option<WeightType> {
    Some(match dtype {
        GgmlDType::F32 => WeightType::F32,
        GgmlDType::F16 => WeightType::F16,
        GgmlDType::Q4_0 => WeightType::Q4_0,
        GgmlDType::Q4_1 => WeightType::Q4_1,
        GgmlDType::Q5_0 => WeightType::Q5_0,
        GgmlDType::Q8_0 => WeightType::Q8_0,
        GgmlDType::Q4K => WeightType::Q4_K,
        GgmlDType::Q6K => WeightType::Q6_K,
        _ => return None,
    })
}

impl GgufFile {
    /// Open and validate a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::ModelNotFound {
                path: path.to_path_buf(),
            });
        }
        let invalid = |reason: String| Error::InvalidGguf {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut file).map_err(|e| invalid(e.to_string()))?;
        // SAFETY: the file is opened read-only; like every mmap-based loader we rely on the model
        // file not being modified while ares runs.
        let mmap = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
        let file_len = mmap.len();
        let mut tensors = HashMap::new();
        for (name, info) in content.tensor_infos.iter() {
            let elems = info.shape.elem_count();
            let bs = info.ggml_dtype.block_size();
            if elems % bs != 0 {
                return Err(invalid(format!(
                    "tensor {name}: {elems} elements not a multiple of block size {bs}"
                )));
            }
            let len = elems / bs * info.ggml_dtype.type_size();
            let start = content.tensor_data_offset as usize + info.offset as usize;
            if start.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(invalid(format!(
                    "tensor {name} needs bytes {start}..{} but the file has {file_len} (truncated?)",
                    start + len
                )));
            }
            tensors.insert(
                name.clone(),
                TensorEntry {
                    dtype: info.ggml_dtype,
                    dims: info.shape.dims().to_vec(),
                    data: mmap.clone(),
                    start,
                    len,
                },
            );
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            metadata: content.metadata,
            tensors,
            maps: vec![mmap],
        })
    }

    /// A model described by GGUF-style metadata and tensors from elsewhere (safetensors).
    pub fn from_parts(
        path: PathBuf,
        metadata: HashMap<String, Value>,
        tensors: HashMap<String, TensorEntry>,
        maps: Vec<Arc<Mmap>>,
    ) -> Self {
        GgufFile {
            path,
            metadata,
            tensors,
            maps,
        }
    }

    /// Bytes of tensors held in owned memory rather than in a mapping (converted at load).
    pub fn owned_bytes(&self) -> usize {
        self.tensors
            .values()
            .filter(|e| {
                !self
                    .maps
                    .iter()
                    .any(|m| std::ptr::addr_eq(Arc::as_ptr(m), Arc::as_ptr(&e.data)))
            })
            .map(|e| e.len)
            .sum()
    }

    /// Tell the OS the mapped pages are not needed now (after weights were packed into owned
    /// memory): they leave this process's resident set and are read back from the page cache if a
    /// row is looked up again.
    pub fn release_pages(&self) {
        // SAFETY: DontNeed on a private read-only file mapping only drops resident pages; later
        // reads fault them back in from the file, so every slice into the mapping stays valid.
        for m in &self.maps {
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Size of the mapped files in bytes.
    pub fn file_size(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor as a weight matrix; 1-D tensors are (1, len).
    pub fn weight(&self, name: &str) -> Result<Weight> {
        let e = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        let ty = weight_type(e.dtype).ok_or_else(|| Error::UnsupportedQuantization {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", e.dtype),
        })?;
        let (n, k) = match e.dims.as_slice() {
            [k] => (1, *k),
            [n, k] => (*n, *k),
            dims => {
                return Err(Error::BadTensorShape {
                    path: self.path.clone(),
                    name: name.to_string(),
                    actual: dims.to_vec(),
                    expected: vec![],
                })
            }
        };
        Ok(Weight {
            name: name.to_string(),
            ty,
            n,
            k,
            data: e.data.clone(),
            start: e.start,
            len: e.len,
            packed: None,
        })
    }

    /// A weight that must have shape (n, k).
    pub fn weight_shaped(&self, name: &str, n: usize, k: usize) -> Result<Weight> {
        let w = self.weight(name)?;
        if (w.n, w.k) != (n, k) {
            return Err(Error::BadTensorShape {
                path: self.path.clone(),
                name: name.to_string(),
                actual: vec![w.n, w.k],
                expected: vec![n, k],
            });
        }
        Ok(w)
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingMetadata {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// An unsigned integer of any width.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        Ok(match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            _ => return Err(self.missing(key)),
        })
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.u64(key).map(|v| v as usize)
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.get(key).is_some() {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.get(key) {
            Some(Value::F32(x)) => Ok(*x),
            Some(Value::F64(x)) => Ok(*x as f32),
            _ => Err(self.missing(key)),
        }
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        if self.get(key).is_some() {
            self.f32(key)
        } else {
            Ok(default)
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            _ => default,
        }
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s.as_str()),
            _ => Err(self.missing(key)),
        }
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.get(key) {
            Some(Value::Array(vs)) => vs
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.missing(key)),
                })
                .collect(),
            _ => Err(self.missing(key)),
        }
    }

    /// An array of floats (`tokenizer.ggml.scores`).
    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        match self.get(key) {
            Some(Value::Array(vs)) => vs
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Ok(*x),
                    Value::F64(x) => Ok(*x as f32),
                    _ => Err(self.missing(key)),
                })
                .collect(),
            _ => Err(self.missing(key)),
        }
    }

    pub fn i64_array(&self, key: &str) -> Result<Vec<i64>> {
        match self.get(key) {
            Some(Value::Array(vs)) => vs
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x as i64),
                    Value::U32(x) => Ok(*x as i64),
                    Value::I8(x) => Ok(*x as i64),
                    Value::U8(x) => Ok(*x as i64),
                    Value::I64(x) => Ok(*x),
                    Value::U64(x) => Ok(*x as i64),
                    _ => Err(self.missing(key)),
                })
                .collect(),
            _ => Err(self.missing(key)),
        }
    }
}

//! ggml block formats (byte layouts exactly as in ggml-common.h) and the activation block.

/// Weight storage types the kernels can multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl WeightType {
    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 => 1,
            WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q8_0 => QK,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::F16 => 2,
            WeightType::Q4_0 => 18,
            WeightType::Q4_1 => 20,
            WeightType::Q8_0 => 34,
        }
    }

    /// Bytes of one row of `k` elements (`k` must be a multiple of the block size).
    pub fn row_bytes(self, k: usize) -> usize {
        k / self.block_size() * self.type_size()
    }

    /// Whether activations are quantized to [`BlockQ8`] before the dot product.
    pub fn quantizes_activations(self) -> bool {
        !matches!(self, WeightType::F32 | WeightType::F16)
    }
}

/// Elements per block of the 32-wide formats.
pub const QK: usize = 32;

/// A quantized activation block: 32 int8 values with an f32 scale `d` and `s = d * Σq`
/// (ggml's Q8_1 with f32 instead of f16 scales, so one format serves Q4_0, Q4_1 and Q8_0).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

#[inline]
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Dequantize one row of `k` elements stored as `ty` into `out` (scalar reference; also the
/// embedding lookup path, which touches one row per token).
pub fn dequantize_row(ty: WeightType, row: &[u8], out: &mut [f32]) {
    let k = out.len();
    match ty {
        WeightType::F32 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f32::from_le_bytes([
                    row[4 * i],
                    row[4 * i + 1],
                    row[4 * i + 2],
                    row[4 * i + 3],
                ]);
            }
        }
        WeightType::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(row, 2 * i);
            }
        }
        WeightType::Q4_0 => {
            for b in 0..k / QK {
                let blk = &row[b * 18..(b + 1) * 18];
                let d = f16_at(blk, 0);
                for j in 0..16 {
                    let q = blk[2 + j];
                    out[b * QK + j] = ((q & 0xF) as i32 - 8) as f32 * d;
                    out[b * QK + j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        WeightType::Q4_1 => {
            for b in 0..k / QK {
                let blk = &row[b * 20..(b + 1) * 20];
                let d = f16_at(blk, 0);
                let m = f16_at(blk, 2);
                for j in 0..16 {
                    let q = blk[4 + j];
                    out[b * QK + j] = (q & 0xF) as f32 * d + m;
                    out[b * QK + j + 16] = (q >> 4) as f32 * d + m;
                }
            }
        }
        WeightType::Q8_0 => {
            for b in 0..k / QK {
                let blk = &row[b * 34..(b + 1) * 34];
                let d = f16_at(blk, 0);
                for j in 0..QK {
                    out[b * QK + j] = blk[2 + j] as i8 as f32 * d;
                }
            }
        }
    }
}

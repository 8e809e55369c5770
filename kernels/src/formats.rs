//! ggml block formats (byte layouts exactly as in ggml-common.h) and the activation block.

/// Weight storage types the kernels can multiply. Names follow ggml's `GGML_TYPE_*` (hence
/// `Q4_K`, which rustc's camel-case lint would otherwise reject).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    /// 256-element super-blocks of 8 × 32 4-bit values with 6-bit scales and mins.
    Q4_K,
    /// 256-element super-blocks of 16 × 16 6-bit values with i8 scales.
    Q6_K,
}

impl WeightType {
    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            WeightType::F32 | WeightType::F16 => 1,
            WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q5_0 | WeightType::Q8_0 => QK,
            WeightType::Q4_K | WeightType::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::F16 => 2,
            WeightType::Q4_0 => 18,
            WeightType::Q4_1 => 20,
            WeightType::Q5_0 => 22,
            WeightType::Q8_0 => 34,
            WeightType::Q4_K => 144,
            WeightType::Q6_K => 210,
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

/// Elements per super-block of the k-quant formats (ggml-common.h `QK_K`).
pub const QK_K: usize = 256;

/// Scale and min of 32-element sub-block `j` (0..8) of a Q4_K super-block from its 12 packed
/// bytes: 6 bits each (ggml-quants.c `get_scale_min_k4`).
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A quantized activation block: 32 int8 values with an f32 scale `d` and `s = d * Σq`
/// (ggml's Q8_1 with f32 instead of f16 scales, so one format serves every quantized weight type;
/// the k-quants read 8 of these per 256-element super-block, quantized with one shared `d`:
/// `crate::quantize::quantize_row_q8_k`).
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
        // ggml-quants.c dequantize_row_q5_0: bit j of qh is the 5th bit of element j.
        WeightType::Q5_0 => {
            for b in 0..k / QK {
                let blk = &row[b * 22..(b + 1) * 22];
                let d = f16_at(blk, 0);
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let q = blk[6 + j];
                    let h0 = (((qh >> j) << 4) & 0x10) as u8;
                    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                    out[b * QK + j] = (((q & 0xF) | h0) as i32 - 16) as f32 * d;
                    out[b * QK + j + 16] = (((q >> 4) | h1) as i32 - 16) as f32 * d;
                }
            }
        }
        // ggml-quants.c dequantize_row_q4_K: each 64 elements are 32 bytes of qs, low nibbles
        // (sub-block 2c) then high nibbles (sub-block 2c + 1); y = d·sc·q − dmin·m.
        WeightType::Q4_K => {
            for b in 0..k / QK_K {
                let blk = &row[b * 144..(b + 1) * 144];
                let d = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let scales = &blk[4..16];
                let y = &mut out[b * QK_K..(b + 1) * QK_K];
                for c in 0..4 {
                    let qs = &blk[16 + 32 * c..16 + 32 * (c + 1)];
                    let (sc, m) = scale_min_k4(2 * c, scales);
                    let (d1, m1) = (d * sc as f32, dmin * m as f32);
                    let (sc, m) = scale_min_k4(2 * c + 1, scales);
                    let (d2, m2) = (d * sc as f32, dmin * m as f32);
                    for (l, q) in qs.iter().enumerate() {
                        y[64 * c + l] = d1 * (q & 0xF) as f32 - m1;
                        y[64 * c + 32 + l] = d2 * (q >> 4) as f32 - m2;
                    }
                }
            }
        }
        // ggml-quants.c dequantize_row_q6_K: per 128 elements, 64 bytes of ql, 32 of qh and 8
        // scales; element 16·g + l of the super-block uses scales[g]; y = d·sc·(q − 32).
        WeightType::Q6_K => {
            for b in 0..k / QK_K {
                let blk = &row[b * 210..(b + 1) * 210];
                let d = f16_at(blk, 208);
                let y = &mut out[b * QK_K..(b + 1) * QK_K];
                for h in 0..2 {
                    let ql = &blk[64 * h..64 * (h + 1)];
                    let qh = &blk[128 + 32 * h..128 + 32 * (h + 1)];
                    let sc = &blk[192 + 8 * h..192 + 8 * (h + 1)];
                    let y = &mut y[128 * h..128 * (h + 1)];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                        y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                        y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                        y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                        y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    /// Our scalar dequantization must reproduce candle's (a port of ggml's dequantize_row_*)
    /// bit for bit on blocks that candle's quantizer produced.
    #[test]
    fn dequantize_row_matches_candle() -> Result<(), Box<dyn std::error::Error>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(41);
        for (ty, dtype) in [
            (WeightType::Q4_0, GgmlDType::Q4_0),
            (WeightType::Q4_1, GgmlDType::Q4_1),
            (WeightType::Q5_0, GgmlDType::Q5_0),
            (WeightType::Q8_0, GgmlDType::Q8_0),
            (WeightType::Q4_K, GgmlDType::Q4K),
            (WeightType::Q6_K, GgmlDType::Q6K),
        ] {
            for (n, k) in [(1usize, 256usize), (3, 512), (5, 2048)] {
                let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let t = Tensor::from_vec(x, (n, k), &Device::Cpu)?;
                let q = QTensor::quantize(&t, dtype)?;
                let bytes = q.data()?;
                assert_eq!(bytes.len(), n * ty.row_bytes(k), "{ty:?} size");
                let want = q
                    .dequantize(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let mut got = vec![0f32; n * k];
                for (j, out) in got.chunks_exact_mut(k).enumerate() {
                    let rb = ty.row_bytes(k);
                    dequantize_row(ty, &bytes[j * rb..(j + 1) * rb], out);
                }
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{ty:?} n={n} k={k} element {e}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn scale_min_k4_unpacks_all_six_bits() {
        // Sub-blocks 4..8: low 4 bits from bytes 8..12, high two bits from the top of bytes 0..8
        // (scale from byte j - 4, min from byte j).
        let mut q = [0u8; 12];
        q[0] = 0b1100_0000 | 5;
        q[4] = 0b0100_0000 | 9;
        q[8] = 0x7A;
        assert_eq!(scale_min_k4(0, &q), (5, 9));
        assert_eq!(scale_min_k4(4, &q), (0xA | (3 << 4), 0x7 | (1 << 4)));
    }
}

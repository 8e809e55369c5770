//! Threaded quantized matrix multiplication: y (m, n) = x (m, k) · Wᵀ with W (n, k) stored in a
//! ggml format. Activations are quantized once per call; work is split over weight rows so each
//! weight row is read once per call and reused for every activation row (L1-resident).
//!
//! Invariant: y[i, j] depends only on x row i and W row j, computed by the same dot function for
//! any m, so results do not depend on what else is in the batch.

use crate::dispatch::{isa, Isa};
use crate::formats::{BlockQ8, WeightType, QK};
use crate::quantize::quantize_row_q8;
use crate::scalar;
use rayon::prelude::*;

/// A borrowed weight matrix of `n` rows of `k` elements in format `ty` (row-major, ggml layout).
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub ty: WeightType,
    pub n: usize,
    pub k: usize,
    pub data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Bytes of row `j`.
    pub fn row(&self, j: usize) -> &'a [u8] {
        let rb = self.ty.row_bytes(self.k);
        &self.data[j * rb..(j + 1) * rb]
    }
}

type QDot = fn(&[u8], &[BlockQ8]) -> f32;
type FDot = fn(&[u8], &[f32]) -> f32;

fn qdot_for(ty: WeightType) -> QDot {
    match (isa(), ty) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY (all three): isa() returned Avx2 only after detecting avx2, fma and f16c.
        (Isa::Avx2, WeightType::Q4_0) => |w, a| unsafe { crate::x86::dot_q4_0(w, a) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, WeightType::Q4_1) => |w, a| unsafe { crate::x86::dot_q4_1(w, a) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, WeightType::Q8_0) => |w, a| unsafe { crate::x86::dot_q8_0(w, a) },
        (_, WeightType::Q4_0) => scalar::dot_q4_0,
        (_, WeightType::Q4_1) => scalar::dot_q4_1,
        (_, WeightType::Q8_0) => scalar::dot_q8_0,
        (_, WeightType::F32 | WeightType::F16) => unreachable!("float weights use fdot_for"),
    }
}

fn fdot_for(ty: WeightType) -> FDot {
    match (isa(), ty) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY (both): features detected by isa().
        (Isa::Avx2, WeightType::F32) => |w, x| unsafe { crate::x86::dot_f32(w, x) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, WeightType::F16) => |w, x| unsafe { crate::x86::dot_f16(w, x) },
        (_, WeightType::F32) => scalar::dot_f32,
        (_, WeightType::F16) => scalar::dot_f16,
        _ => unreachable!("quantized weights use qdot_for"),
    }
}

/// Pointer wrapper so disjoint output elements can be written from several threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each task writes a disjoint set of columns of y (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Pointer to element `i` (a method, so closures capture the whole Send wrapper).
    #[inline]
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// y (m × n, row-major) = x (m × k, row-major) · Wᵀ.
///
/// Panics if the slice lengths disagree with `w.n`, `w.k` (a caller bug, not bad input).
pub fn matmul(w: &WeightMatrix<'_>, x: &[f32], y: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "x length {} is not a multiple of k={k}",
        x.len()
    );
    let m = x.len() / k;
    assert_eq!(y.len(), m * n, "y must be m × n");
    assert!(
        w.data.len() >= w.ty.row_bytes(k) * n,
        "weight data too short"
    );
    let threads = rayon::current_num_threads().max(1);
    // Enough chunks to balance load, each at least 8 rows so per-task overhead stays small.
    let chunk = n.div_ceil(threads * 4).max(8);
    let out = OutPtr(y.as_mut_ptr());
    if w.ty.quantizes_activations() {
        assert!(k % QK == 0, "k={k} is not a multiple of {QK}");
        let nb = k / QK;
        let mut a = vec![BlockQ8::default(); m * nb];
        if m >= 4 {
            a.par_chunks_mut(nb)
                .zip(x.par_chunks(k))
                .for_each(|(blk, row)| quantize_row_q8(row, blk));
        } else {
            for (blk, row) in a.chunks_mut(nb).zip(x.chunks(k)) {
                quantize_row_q8(row, blk);
            }
        }
        let dot = qdot_for(w.ty);
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
            for j in c * chunk..((c + 1) * chunk).min(n) {
                let wr = w.row(j);
                for i in 0..m {
                    let v = dot(wr, &a[i * nb..(i + 1) * nb]);
                    // SAFETY: (i, j) is within m × n and column j belongs to this task only.
                    unsafe { *out.at(i * n + j) = v };
                }
            }
        });
    } else {
        let dot = fdot_for(w.ty);
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
            for j in c * chunk..((c + 1) * chunk).min(n) {
                let wr = w.row(j);
                for i in 0..m {
                    let v = dot(wr, &x[i * k..(i + 1) * k]);
                    // SAFETY: as above.
                    unsafe { *out.at(i * n + j) = v };
                }
            }
        });
    }
}

/// Plain f32 dot product on the fastest path.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: features detected by isa().
        return unsafe { crate::x86::dot(a, b) };
    }
    scalar::dot(a, b)
}

/// y += a · x on the fastest path.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: features detected by isa().
        return unsafe { crate::x86::axpy(a, x, y) };
    }
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::dequantize_row;
    use rand::{Rng, SeedableRng};

    fn random_matrix(rng: &mut rand::rngs::StdRng, ty: WeightType, n: usize, k: usize) -> Vec<u8> {
        let rb = ty.row_bytes(k);
        let mut data: Vec<u8> = (0..rb * n).map(|_| rng.gen()).collect();
        let bs = ty.type_size();
        let scales: &[usize] = match ty {
            WeightType::Q4_1 => &[0, 2],
            WeightType::Q4_0 | WeightType::Q8_0 => &[0],
            WeightType::F16 => &[],
            WeightType::F32 => &[],
        };
        match ty {
            WeightType::F32 => {
                for c in data.chunks_mut(4) {
                    c.copy_from_slice(&rng.gen_range(-1.0f32..1.0).to_le_bytes());
                }
            }
            WeightType::F16 => {
                for c in data.chunks_mut(2) {
                    c.copy_from_slice(
                        &half::f16::from_f32(rng.gen_range(-1.0f32..1.0))
                            .to_bits()
                            .to_le_bytes(),
                    );
                }
            }
            _ => {
                for blk in data.chunks_mut(bs) {
                    for &o in scales {
                        let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05))
                            .to_bits()
                            .to_le_bytes();
                        blk[o..o + 2].copy_from_slice(&v);
                    }
                }
            }
        }
        data
    }

    /// matmul against dequantize-then-f64-dot: the difference is activation quantization
    /// (≤ 1/254 of each block's absmax per element) plus rounding, so the bound is relative to
    /// Σ|w|·|x|: 2% is loose enough for int8 activations and tight enough to catch layout bugs.
    #[test]
    fn matmul_matches_dequantized_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for ty in [
            WeightType::Q4_0,
            WeightType::Q4_1,
            WeightType::Q8_0,
            WeightType::F16,
            WeightType::F32,
        ] {
            for (m, n, k) in [
                (1usize, 1usize, 32usize),
                (3, 17, 64),
                (5, 33, 576),
                (1, 70, 1536),
            ] {
                let data = random_matrix(&mut rng, ty, n, k);
                let w = WeightMatrix {
                    ty,
                    n,
                    k,
                    data: &data,
                };
                let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let mut y = vec![0f32; m * n];
                matmul(&w, &x, &mut y);
                let mut row = vec![0f32; k];
                for j in 0..n {
                    dequantize_row(ty, w.row(j), &mut row);
                    for i in 0..m {
                        let xr = &x[i * k..(i + 1) * k];
                        let exact: f64 =
                            row.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f64 = row
                            .iter()
                            .zip(xr)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - exact).abs() <= 0.02 * mag + 1e-5,
                            "{ty:?} m={m} n={n} k={k} ({i},{j}): {got} vs {exact} (mag {mag})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_rows_do_not_depend_on_batch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (n, k) = (40, 96);
        let data = random_matrix(&mut rng, WeightType::Q4_1, n, k);
        let w = WeightMatrix {
            ty: WeightType::Q4_1,
            n,
            k,
            data: &data,
        };
        let x: Vec<f32> = (0..7 * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let mut all = vec![0f32; 7 * n];
        matmul(&w, &x, &mut all);
        for i in 0..7 {
            let mut one = vec![0f32; n];
            matmul(&w, &x[i * k..(i + 1) * k], &mut one);
            assert_eq!(&all[i * n..(i + 1) * n], &one[..], "row {i}");
        }
    }
}

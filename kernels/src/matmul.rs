//! Threaded quantized matrix multiplication: y (m, n) = x (m, k) · Wᵀ with W (n, k) stored in a
//! ggml format. Activations are quantized once per call (in parallel); the work is split over
//! chunks of weight rows on the warm pool, and inside a chunk a tile of 4 weight rows × 3
//! activation rows is computed per step, over activation-row panels that stay in L1/L2.
//!
//! Invariant: y[i, j] depends only on x row i and W row j, and the tiled kernels compute every
//! (i, j) with the same arithmetic whatever the tile shape, so results do not depend on what else
//! is in the batch.

use crate::dispatch::{isa, Isa};
use crate::formats::{BlockQ8, WeightType, QK};
use crate::pool::parallel_for;
use crate::quantize::quantize_row_q8;
use crate::scalar;

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

/// Weight rows per tile and activation rows per tile.
const TW: usize = 4;
const TA: usize = 3;
/// Activation rows per panel (kept hot while a chunk of weight rows streams past).
const PANEL: usize = 48;

/// y (m × n, row-major) = x (m × k, row-major) · Wᵀ.
///
/// Panics if the slice lengths disagree with `w.n`, `w.k` (a caller bug, not bad input).
pub fn matmul(w: &WeightMatrix<'_>, x: &[f32], y: &mut [f32]) {
    matmul_many(&[*w], x, &mut [y]);
}

/// Several products of the same input in one parallel region: ys[i] = x · ws[i]ᵀ (Q, K and V of
/// a layer; gate and up). The input is quantized once and all weight rows are split into chunks
/// together, which halves the synchronisation points of a decode step.
pub fn matmul_many(ws: &[WeightMatrix<'_>], x: &[f32], ys: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), ys.len(), "one output per weight");
    let Some(k) = ws.first().map(|w| w.k) else {
        return;
    };
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "x length {} is not a multiple of k={k}",
        x.len()
    );
    let m = x.len() / k;
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(w.k, k, "all weights of matmul_many share k");
        assert_eq!(y.len(), m * w.n, "y must be m × n");
        assert!(
            w.data.len() >= w.ty.row_bytes(k) * w.n,
            "weight data too short"
        );
    }
    let threads = crate::pool::pool().n_threads();
    let total_rows: usize = ws.iter().map(|w| w.n).sum();
    // Enough chunks to balance load, each a multiple of the tile height.
    let chunk = (total_rows.div_ceil(threads * 4))
        .max(8)
        .next_multiple_of(TW);
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    for (wi, w) in ws.iter().enumerate() {
        let mut j = 0;
        while j < w.n {
            let e = (j + chunk).min(w.n);
            chunks.push((wi, j, e));
            j = e;
        }
    }
    let outs: Vec<OutPtr> = ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect();
    let nb = k / QK;
    let mut a = Vec::new();
    if ws.iter().any(|w| w.ty.quantizes_activations()) {
        assert!(k.is_multiple_of(QK), "k={k} is not a multiple of {QK}");
        a = vec![BlockQ8::default(); m * nb];
        let ap = ActPtr(a.as_mut_ptr());
        let rows_per_task = m.div_ceil(threads * 2).max(1);
        parallel_for(m.div_ceil(rows_per_task), |t| {
            for i in t * rows_per_task..((t + 1) * rows_per_task).min(m) {
                // SAFETY: row i's blocks are written by this task only.
                let blk = unsafe { std::slice::from_raw_parts_mut(ap.at(i * nb), nb) };
                quantize_row_q8(&x[i * k..(i + 1) * k], blk);
            }
        });
    }
    let a = &a;
    let use_avx2 = isa() == Isa::Avx2;
    parallel_for(chunks.len(), |c| {
        let (wi, j0, j1) = chunks[c];
        let w = &ws[wi];
        let (n, out) = (w.n, outs[wi]);
        if !w.ty.quantizes_activations() {
            let dot = fdot_for(w.ty);
            for j in j0..j1 {
                let wr = w.row(j);
                for i in 0..m {
                    let v = dot(wr, &x[i * k..(i + 1) * k]);
                    // SAFETY: (i, j) is within m × n and column j belongs to this chunk only.
                    unsafe { *out.at(i * n + j) = v };
                }
            }
            return;
        }
        let rb = w.ty.row_bytes(k);
        for p0 in (0..m).step_by(PANEL) {
            let p1 = (p0 + PANEL).min(m);
            let mut j = j0;
            while j < j1 {
                let rw = TW.min(j1 - j);
                let mut i = p0;
                while i < p1 {
                    let ra = TA.min(p1 - i);
                    let mut tile = [[0f32; TA]; TW];
                    if use_avx2 {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: the avx2 tier was detected; rows j..j+rw and i..i+ra exist.
                        unsafe {
                            tile_avx2(
                                w.ty,
                                &w.data[j * rb..],
                                rb,
                                rw,
                                &a[i * nb..],
                                nb,
                                ra,
                                &mut tile,
                            )
                        };
                    } else {
                        let dot = scalar_qdot(w.ty);
                        for (r, trow) in tile.iter_mut().enumerate().take(rw) {
                            for (cc, t) in trow.iter_mut().enumerate().take(ra) {
                                *t = dot(w.row(j + r), &a[(i + cc) * nb..(i + cc + 1) * nb]);
                            }
                        }
                    }
                    for (r, trow) in tile.iter().enumerate().take(rw) {
                        for (cc, t) in trow.iter().enumerate().take(ra) {
                            // SAFETY: (i+cc, j+r) is within m × n; column j+r belongs to this chunk.
                            unsafe { *out.at((i + cc) * n + j + r) = *t };
                        }
                    }
                    i += ra;
                }
                j += rw;
            }
        }
    });
}

#[derive(Clone, Copy)]
struct ActPtr(*mut BlockQ8);
// SAFETY: tasks write disjoint activation rows.
unsafe impl Send for ActPtr {}
unsafe impl Sync for ActPtr {}

impl ActPtr {
    #[inline]
    fn at(self, i: usize) -> *mut BlockQ8 {
        self.0.wrapping_add(i)
    }
}

/// Dispatch one tile of `rw` weight rows (row stride `rb` bytes from `w`) × `ra` activation rows
/// (stride `nb` blocks from `a`) to the matching const instantiation.
///
/// # Safety
/// avx2, fma and f16c present; the rows exist.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    ty: WeightType,
    w: &[u8],
    rb: usize,
    rw: usize,
    a: &[BlockQ8],
    nb: usize,
    ra: usize,
    out: &mut [[f32; TA]; TW],
) {
    use crate::x86::{tile, Q4_0, Q4_1, Q8_0};
    macro_rules! go {
        ($t:expr, $rw:literal, $ra:literal) => {{
            let wp: [*const u8; $rw] = std::array::from_fn(|r| w.as_ptr().add(r * rb));
            let ap: [*const BlockQ8; $ra] = std::array::from_fn(|c| a.as_ptr().add(c * nb));
            let mut o = [[0f32; $ra]; $rw];
            tile::<$t, $rw, $ra>(&wp, &ap, nb, &mut o);
            for r in 0..$rw {
                out[r][..$ra].copy_from_slice(&o[r]);
            }
        }};
    }
    macro_rules! shapes {
        ($t:expr) => {
            match (rw, ra) {
                (4, 3) => go!($t, 4, 3),
                (4, 2) => go!($t, 4, 2),
                (4, 1) => go!($t, 4, 1),
                (3, 3) => go!($t, 3, 3),
                (3, 2) => go!($t, 3, 2),
                (3, 1) => go!($t, 3, 1),
                (2, 3) => go!($t, 2, 3),
                (2, 2) => go!($t, 2, 2),
                (2, 1) => go!($t, 2, 1),
                (1, 3) => go!($t, 1, 3),
                (1, 2) => go!($t, 1, 2),
                _ => go!($t, 1, 1),
            }
        };
    }
    match ty {
        WeightType::Q4_0 => shapes!(Q4_0),
        WeightType::Q4_1 => shapes!(Q4_1),
        WeightType::Q8_0 => shapes!(Q8_0),
        WeightType::F32 | WeightType::F16 => unreachable!("float weights take the f32 path"),
    }
}

type QDot = fn(&[u8], &[BlockQ8]) -> f32;
type FDot = fn(&[u8], &[f32]) -> f32;

fn scalar_qdot(ty: WeightType) -> QDot {
    match ty {
        WeightType::Q4_0 => scalar::dot_q4_0,
        WeightType::Q4_1 => scalar::dot_q4_1,
        WeightType::Q8_0 => scalar::dot_q8_0,
        WeightType::F32 | WeightType::F16 => unreachable!("float weights use fdot_for"),
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
        _ => unreachable!("quantized weights use the tiled path"),
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
    fn matmul_many_equals_separate_matmuls() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let k = 96;
        let d1 = random_matrix(&mut rng, WeightType::Q4_1, 40, k);
        let d2 = random_matrix(&mut rng, WeightType::Q8_0, 13, k);
        let d3 = random_matrix(&mut rng, WeightType::F16, 9, k);
        let ws = [
            WeightMatrix {
                ty: WeightType::Q4_1,
                n: 40,
                k,
                data: &d1,
            },
            WeightMatrix {
                ty: WeightType::Q8_0,
                n: 13,
                k,
                data: &d2,
            },
            WeightMatrix {
                ty: WeightType::F16,
                n: 9,
                k,
                data: &d3,
            },
        ];
        let x: Vec<f32> = (0..5 * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let (mut y1, mut y2, mut y3) = (vec![0f32; 5 * 40], vec![0f32; 5 * 13], vec![0f32; 5 * 9]);
        matmul_many(&ws, &x, &mut [&mut y1, &mut y2, &mut y3]);
        for (w, y) in ws.iter().zip([&y1, &y2, &y3]) {
            let mut one = vec![0f32; 5 * w.n];
            matmul(w, &x, &mut one);
            assert_eq!(&one, y);
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

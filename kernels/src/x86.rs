//! AVX2 + FMA + F16C paths (x86_64). Same contracts as `scalar`; callers must have checked the
//! features (see `dispatch`), which is the safety condition of every function here.

use crate::formats::BlockQ8;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    // SAFETY: caller guarantees two readable bytes at p.
    let h = _mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const u16) as i32);
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// 16 packed bytes -> 32 unsigned nibbles in element order (low nibbles are elements 0..16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 16 readable bytes at p.
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Σ over 32 lanes of u8 × i8 as 8 i32 lanes converted to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_us8(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(dot, _mm256_set1_epi16(1)))
}

/// Σ over 32 lanes of i8 × i8 (sign trick: |x| · sign(y, x)).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_us8(ax, sy)
}

/// Weight formats the tiled kernel handles (const parameter of [`tile`]).
pub const Q4_0: u8 = 0;
pub const Q4_1: u8 = 1;
pub const Q8_0: u8 = 2;

/// Dot products of RW weight rows (ggml blocks of format `T`, `nb` blocks each) with RA quantized
/// activation rows: `out[r][c] = Σ w_r · a_c`. Each weight block is unpacked once and used for all
/// RA activation rows. The arithmetic of one (r, c) pair is the same for every RW and RA (per block:
/// an integer dot, one fma into 8 f32 lanes; a final horizontal sum), so a result never depends on
/// the tile it was computed in: batched results equal single-row results bit for bit.
///
/// # Safety
/// The CPU must support avx2, fma and f16c; every `w[r]` points to `nb` blocks of format `T` and
/// every `a[c]` to `nb` activation blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile<const T: u8, const RW: usize, const RA: usize>(
    w: &[*const u8; RW],
    a: &[*const BlockQ8; RA],
    nb: usize,
    out: &mut [[f32; RA]; RW],
) {
    let bsz = match T {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    };
    let mut acc = [[_mm256_setzero_ps(); RA]; RW];
    let mut accm = [[0f32; RA]; RW];
    for b in 0..nb {
        for r in 0..RW {
            // SAFETY: block b of row r is within the row (caller contract).
            let blk = w[r].add(b * bsz);
            let dw = f16(blk);
            let (q, mw) = match T {
                Q4_0 => (
                    _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8)),
                    0.0,
                ),
                Q4_1 => (nibbles(blk.add(4)), f16(blk.add(2))),
                _ => (_mm256_loadu_si256(blk.add(2) as *const __m256i), 0.0),
            };
            for c in 0..RA {
                let ab = &*a[c].add(b);
                let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                let p = if T == Q4_1 {
                    mul_sum_us8(q, y)
                } else {
                    mul_sum_i8(q, y)
                };
                acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * ab.d), p, acc[r][c]);
                if T == Q4_1 {
                    accm[r][c] += mw * ab.s;
                }
            }
        }
    }
    for r in 0..RW {
        for c in 0..RA {
            out[r][c] = if T == Q4_1 {
                hsum(acc[r][c]) + accm[r][c]
            } else {
                hsum(acc[r][c])
            };
        }
    }
}

/// One row pair through [`tile`].
///
/// # Safety
/// As [`tile`], with `w` holding `a.len()` blocks of format `T`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_blocks<const T: u8>(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut out = [[0f32; 1]; 1];
    tile::<T, 1, 1>(&[w.as_ptr()], &[a.as_ptr()], a.len(), &mut out);
    out[0][0]
}

/// AVX2 version of [`crate::scalar::dot_q4_0`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q4_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    dot_blocks::<Q4_0>(w, a)
}

/// AVX2 version of [`crate::scalar::dot_q4_1`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q4_1 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(w: &[u8], a: &[BlockQ8]) -> f32 {
    dot_blocks::<Q4_1>(w, a)
}

/// AVX2 version of [`crate::scalar::dot_q8_0`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    dot_blocks::<Q8_0>(w, a)
}

/// AVX2 version of [`crate::scalar::dot`] (any length).
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc0,
        );
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i + 8)),
            _mm256_loadu_ps(b.as_ptr().add(i + 8)),
            acc1,
        );
        i += 16;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc0,
        );
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// AVX2 version of [`crate::scalar::dot_f32`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `x.len()` f32 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= x.len() * 4);
    // SAFETY: w holds x.len() little-endian f32 (x86 is little-endian); unaligned loads are used.
    let ws = std::slice::from_raw_parts(w.as_ptr() as *const f32, x.len());
    let n = x.len();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        acc = _mm256_fmadd_ps(
            _mm256_loadu_ps(ws.as_ptr().add(i)),
            _mm256_loadu_ps(x.as_ptr().add(i)),
            acc,
        );
        i += 8;
    }
    let mut s = hsum(acc);
    while i < n {
        s += std::ptr::read_unaligned(ws.as_ptr().add(i)) * x[i];
        i += 1;
    }
    s
}

/// AVX2 version of [`crate::scalar::dot_f16`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `x.len()` f16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= x.len() * 2);
    let n = x.len();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 f16 values (16 bytes) at element i are within w.
        let h = _mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i);
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(x.as_ptr().add(i)), acc);
        i += 8;
    }
    let mut s = hsum(acc);
    while i < n {
        s += f16(w.as_ptr().add(2 * i)) * x[i];
        i += 1;
    }
    s
}

/// y += a · x (attention value accumulation).
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `y.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n for both slices.
        let r = _mm256_fmadd_ps(
            va,
            _mm256_loadu_ps(x.as_ptr().add(i)),
            _mm256_loadu_ps(y.as_ptr().add(i)),
        );
        _mm256_storeu_ps(y.as_mut_ptr().add(i), r);
        i += 8;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// exp for softmax arguments (x <= 0), 8 lanes at a time; same algorithm as
/// [`crate::scalar::exp_neg`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_in_place(xs: &mut [f32]) {
    let n = xs.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let x = _mm256_loadu_ps(xs.as_ptr().add(i));
        _mm256_storeu_ps(xs.as_mut_ptr().add(i), exp8(x));
        i += 8;
    }
    if i < n {
        let mut tmp = [0f32; 8];
        tmp[..n - i].copy_from_slice(&xs[i..]);
        let r = exp8(_mm256_loadu_ps(tmp.as_ptr()));
        _mm256_storeu_ps(tmp.as_mut_ptr(), r);
        xs[i..].copy_from_slice(&tmp[..n - i]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp8(x: __m256) -> __m256 {
    use crate::scalar::EXP_C;
    let tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3), _CMP_LT_OQ);
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_setzero_ps());
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693_145_75), x);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(EXP_C[5]);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[4]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[3]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[2]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[1]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[0]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    let bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    let y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    _mm256_andnot_ps(tiny, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::QK;
    use crate::quantize::quantize_row_q8;
    use crate::scalar;
    use rand::{Rng, SeedableRng};

    fn avx2() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    fn random_blocks(
        rng: &mut rand::rngs::StdRng,
        n_blocks: usize,
        size: usize,
        scale_at: &[usize],
    ) -> Vec<u8> {
        let mut w: Vec<u8> = (0..n_blocks * size).map(|_| rng.gen()).collect();
        for b in 0..n_blocks {
            for &o in scale_at {
                let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05))
                    .to_bits()
                    .to_le_bytes();
                w[b * size + o] = v[0];
                w[b * size + o + 1] = v[1];
            }
        }
        w
    }

    /// Tolerance: the SIMD path sums the same integer products in another order of f32 additions,
    /// so the difference is rounding only: relative 1e-4 of Σ|terms| is generous.
    fn close(a: f32, b: f32, mag: f32) -> bool {
        (a - b).abs() <= 1e-4 * mag.max(1e-3)
    }

    #[test]
    fn quantized_dots_match_scalar_on_awkward_sizes() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n_blocks in [1usize, 2, 3, 7, 18, 33, 48] {
            let x: Vec<f32> = (0..n_blocks * QK)
                .map(|_| rng.gen_range(-3.0f32..3.0))
                .collect();
            let mut a = vec![BlockQ8::default(); n_blocks];
            quantize_row_q8(&x, &mut a);
            let mag: f32 = x.iter().map(|v| v.abs()).sum::<f32>() * 0.6;
            let w40 = random_blocks(&mut rng, n_blocks, 18, &[0]);
            let w41 = random_blocks(&mut rng, n_blocks, 20, &[0, 2]);
            let w80 = random_blocks(&mut rng, n_blocks, 34, &[0]);
            // SAFETY: features checked above.
            unsafe {
                let (s, v) = (scalar::dot_q4_0(&w40, &a), dot_q4_0(&w40, &a));
                assert!(close(s, v, mag), "q4_0 n_blocks={n_blocks}: {s} vs {v}");
                let (s, v) = (scalar::dot_q4_1(&w41, &a), dot_q4_1(&w41, &a));
                assert!(close(s, v, mag), "q4_1 n_blocks={n_blocks}: {s} vs {v}");
                let (s, v) = (scalar::dot_q8_0(&w80, &a), dot_q8_0(&w80, &a));
                assert!(
                    close(s, v, mag * 10.0),
                    "q8_0 n_blocks={n_blocks}: {s} vs {v}"
                );
            }
        }
    }

    #[test]
    fn vector_exp_matches_scalar_reference() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for n in [1usize, 7, 8, 9, 31, 100] {
            let xs: Vec<f32> = (0..n).map(|_| rng.gen_range(-90.0f32..0.0)).collect();
            let mut v = xs.clone();
            // SAFETY: features checked above.
            unsafe { exp_in_place(&mut v) };
            for (x, g) in xs.iter().zip(&v) {
                let s = scalar::exp_neg(*x);
                assert!((g - s).abs() <= 2e-7 * s + 1e-38, "exp({x}): {g} vs {s}");
            }
        }
    }

    #[test]
    fn float_dots_and_axpy_match_scalar_on_awkward_sizes() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for n in [1usize, 5, 8, 15, 16, 17, 63, 64, 65, 577] {
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let y: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let wf32: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            let wf16: Vec<u8> = y
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
                .collect();
            let mag = n as f32;
            // SAFETY: features checked above.
            unsafe {
                assert!(close(scalar::dot(&x, &y), dot(&x, &y), mag), "dot n={n}");
                assert!(
                    close(scalar::dot_f32(&wf32, &x), dot_f32(&wf32, &x), mag),
                    "dot_f32 n={n}"
                );
                assert!(
                    close(scalar::dot_f16(&wf16, &x), dot_f16(&wf16, &x), mag),
                    "dot_f16 n={n}"
                );
                let mut y1 = y.clone();
                let mut y2 = y.clone();
                for (o, v) in y1.iter_mut().zip(&x) {
                    *o += 0.37 * v;
                }
                axpy(0.37, &x, &mut y2);
                for (p, q) in y1.iter().zip(&y2) {
                    assert!((p - q).abs() <= 1e-6, "axpy n={n}");
                }
            }
        }
    }
}

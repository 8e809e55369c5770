//! Activation quantization: f32 rows -> [`BlockQ8`], rounded exactly as llama.cpp's x86 path
//! (`quantize_row_q8_1` in ggml-cpu/arch/x86/quants.c): scale 127/absmax, round half to even, and the
//! stored scales rounded through f16. Matching its rounding keeps our logits as close to
//! llama.cpp's as two engines can be; the f16 scale costs nothing measurable in accuracy.
//!
//! Two groupings of the same blocks: [`quantize_row_q8`] takes each 32-value block's own absmax
//! (the 32-element formats), [`quantize_row_q8_k`] one absmax per 256 values, shared by the 8
//! blocks of a super-block (llama.cpp's Q8_K grouping for the k-quants). Invariant of the
//! second: the 8 blocks of a super-block carry the same `d`, so a k-quant kernel may sum a
//! super-block's integer dots before it applies `d` once. Each block keeps its own `s = d·Σq`.
//! [`quantize_for`] picks the grouping a weight type's kernels expect.

use crate::formats::{BlockQ8, WeightType, QK, QK_K};

#[inline]
fn via_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Whether `ty`'s kernels take [`quantize_row_q8_k`]'s activations (else [`quantize_row_q8`]'s).
pub fn super_block_acts(ty: WeightType) -> bool {
    matches!(ty, WeightType::Q4_K | WeightType::Q6_K)
}

/// Quantize `x` the way `ty`'s kernels expect (see [`super_block_acts`]).
pub fn quantize_for(ty: WeightType, x: &[f32], out: &mut [BlockQ8]) {
    if super_block_acts(ty) {
        quantize_row_q8_k(x, out)
    } else {
        quantize_row_q8(x, out)
    }
}

/// Quantize `x` (length a multiple of 32) into `out` (`x.len() / 32` blocks).
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::isa() == crate::dispatch::Isa::Avx2 {
        // SAFETY: avx2, fma and f16c were detected.
        return unsafe { quantize_row_q8_avx2(x, out, QK) };
    }
    quantize_row_q8_scalar(x, out);
}

/// Quantize `x` (length a multiple of 256) into `out` (`x.len() / 32` blocks) with one absmax
/// per 256 values (see the module header).
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8]) {
    assert!(
        x.len().is_multiple_of(QK_K) && x.len() == out.len() * QK,
        "k-quant activations: length {} is not a multiple of {QK_K}",
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::isa() == crate::dispatch::Isa::Avx2 {
        // SAFETY: avx2, fma and f16c were detected.
        return unsafe { quantize_row_q8_avx2(x, out, QK_K) };
    }
    quantize_row_q8_k_scalar(x, out);
}

/// Scalar reference of [`quantize_row_q8`].
pub fn quantize_row_q8_scalar(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        quantize_block(xs, absmax(xs), blk);
    }
}

/// Scalar reference of [`quantize_row_q8_k`].
pub fn quantize_row_q8_k_scalar(x: &[f32], out: &mut [BlockQ8]) {
    for (blks, xs) in out.chunks_exact_mut(QK_K / QK).zip(x.chunks_exact(QK_K)) {
        let amax = absmax(xs);
        for (blk, xs) in blks.iter_mut().zip(xs.chunks_exact(QK)) {
            quantize_block(xs, amax, blk);
        }
    }
}

fn absmax(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |a, v| a.max(v.abs()))
}

/// One block of 32 values at the scale of `amax` (the block's own or its super-block's).
fn quantize_block(xs: &[f32], amax: f32, blk: &mut BlockQ8) {
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in blk.qs.iter_mut().zip(xs) {
        let r = (v * id).round_ties_even() as i32;
        *q = r as i8;
        sum += r;
    }
    blk.d = via_f16(d);
    blk.s = via_f16(d * sum as f32);
}

/// AVX2 version of [`quantize_row_q8_scalar`] (`group` = 32) and [`quantize_row_q8_k_scalar`]
/// (`group` = 256), bit-identical to them: the same absmax, the same f32 products, the same
/// round-half-even, the same scalar scale arithmetic.
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `x.len() == out.len() * 32` and a multiple of `group`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_avx2(x: &[f32], out: &mut [BlockQ8], group: usize) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (blks, xg) in out.chunks_exact_mut(group / QK).zip(x.chunks_exact(group)) {
        let mut m = _mm256_setzero_ps();
        for v in xg.chunks_exact(8) {
            // SAFETY: a chunk holds 8 floats.
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v.as_ptr())));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = _mm256_set1_ps(id);
        for (blk, xs) in blks.iter_mut().zip(xg.chunks_exact(QK)) {
            let p = xs.as_ptr();
            let q: [__m256i; 4] = [0, 1, 2, 3].map(|i| {
                // SAFETY: a block holds 32 floats.
                _mm256_cvtps_epi32(_mm256_round_ps(
                    _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), mul),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                ))
            });
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
            let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01)));
            // i32 -> i8 in element order: packs interleave 128-bit lanes, the permute undoes it.
            let w01 = _mm256_packs_epi32(q[0], q[1]);
            let w23 = _mm256_packs_epi32(q[2], q[3]);
            let b = _mm256_packs_epi16(w01, w23);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(blk.qs.as_mut_ptr() as *mut __m256i, b);
            blk.d = via_f16(d);
            blk.s = via_f16(d * sum as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn simd_quantization_is_bit_identical_to_scalar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for nb in [1usize, 3, 18, 48] {
            let mut x: Vec<f32> = (0..nb * QK).map(|_| rng.gen_range(-5.0f32..5.0)).collect();
            x[..QK].fill(0.0); // an all-zero block
            let tie = QK.min(x.len() - 1);
            x[tie] = 2.5; // a block whose absmax is one value
            let (mut a, mut b) = (vec![BlockQ8::default(); nb], vec![BlockQ8::default(); nb]);
            quantize_row_q8(&x, &mut a);
            quantize_row_q8_scalar(&x, &mut b);
            same(&a, &b);
            if nb % 8 == 0 {
                quantize_row_q8_k(&x, &mut a);
                quantize_row_q8_k_scalar(&x, &mut b);
                same(&a, &b);
            }
        }
    }

    fn same(a: &[BlockQ8], b: &[BlockQ8]) {
        for (p, q) in a.iter().zip(b) {
            assert_eq!(p.qs, q.qs);
            assert_eq!(p.d.to_bits(), q.d.to_bits());
            assert_eq!(p.s.to_bits(), q.s.to_bits());
        }
    }

    /// The super-block grouping: the 8 blocks of 256 values share one d (that of the 256's
    /// absmax), each block's s is its own d·Σq, and a super-block whose absmax sits in its last
    /// block scales its first block by that absmax, not its own.
    #[test]
    fn super_block_activations_share_one_scale_per_256_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut x: Vec<f32> = (0..2 * QK_K).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        x[QK_K - 1] = 9.0;
        let mut a = vec![BlockQ8::default(); 2 * QK_K / QK];
        quantize_row_q8_k(&x, &mut a);
        assert!(a[..8].iter().all(|b| b.d == via_f16(9.0 / 127.0)));
        assert!(a[8..].iter().all(|b| b.d == a[8].d) && a[8].d < a[0].d);
        assert_eq!(a[7].qs[31], 127);
        assert!(
            a[0].qs.iter().all(|q| q.abs() <= 15),
            "block 0 at 9/127 per step"
        );
        for (sb, blks) in a.chunks_exact(8).enumerate() {
            let d = absmax(&x[sb * QK_K..(sb + 1) * QK_K]) / 127.0;
            for b in blks {
                let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
                assert_eq!(b.s.to_bits(), via_f16(d * sum as f32).to_bits());
            }
        }
    }
}

//! Activation quantization: f32 rows -> [`BlockQ8`], rounded exactly as llama.cpp's x86 path
//! (`quantize_row_q8_1` in ggml-cpu/arch/x86/quants.c): scale 127/absmax, round half to even, and the
//! stored scales rounded through f16. Matching its rounding keeps our logits as close to
//! llama.cpp's as two engines can be; the f16 scale costs nothing measurable in accuracy.

use crate::formats::{BlockQ8, QK};

#[inline]
fn via_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Quantize `x` (length a multiple of 32) into `out` (`x.len() / 32` blocks).
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::isa() == crate::dispatch::Isa::Avx2 {
        // SAFETY: avx2, fma and f16c were detected.
        return unsafe { quantize_row_q8_avx2(x, out) };
    }
    quantize_row_q8_scalar(x, out);
}

/// Scalar reference of [`quantize_row_q8`].
pub fn quantize_row_q8_scalar(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
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
}

/// AVX2 version of [`quantize_row_q8_scalar`], bit-identical to it: the same f32 products, the
/// same round-half-even, the same scalar scale arithmetic.
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `x.len() == out.len() * 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_avx2(x: &[f32], out: &mut [BlockQ8]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let p = xs.as_ptr();
        // SAFETY: a chunk holds 32 floats.
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = _mm256_set1_ps(id);
        let q: [__m256i; 4] = [0, 1, 2, 3].map(|i| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v[i], mul),
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
            for (p, q) in a.iter().zip(&b) {
                assert_eq!(p.qs, q.qs);
                assert_eq!(p.d.to_bits(), q.d.to_bits());
                assert_eq!(p.s.to_bits(), q.s.to_bits());
            }
        }
    }
}

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

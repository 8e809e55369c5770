//! Activation quantization: f32 rows -> [`BlockQ8`] (round-to-nearest, per-block absmax scale,
//! as ggml's `quantize_row_q8_1_ref`).

use crate::formats::{BlockQ8, QK};

/// Quantize `x` (length a multiple of 32) into `out` (`x.len() / 32` blocks).
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in blk.qs.iter_mut().zip(xs) {
            let r = (v * id).round() as i32;
            *q = r as i8;
            sum += r;
        }
        blk.d = d;
        blk.s = d * sum as f32;
    }
}

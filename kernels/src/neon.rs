//! NEON paths (aarch64, where NEON is always present): the quantized dots of the formats the default
//! models use (Q4_0, Q4_1, Q8_0, and Gemma's Q4_K, Q6_K) and the float dot / axpy. Same contracts as `scalar`, with the same
//! float operations in the same order around exact integer block sums, so results are
//! bit-identical to the scalar reference (tested where the target runs; on x86 hosts this file is
//! only type-checked with `cargo check --target aarch64-unknown-linux-gnu -p ares-kernels`).
//!
//! Integer products: `vmull_s8` widens i8×i8 to i16 (|q·a| ≤ 128·127 fits) and `vpadalq_s16` adds
//! pairs into i32 lanes, so no intermediate sum can overflow.

use crate::formats::{f16_at, BlockQ8, QK};
use std::arch::aarch64::*;

/// Exact Σ w[i]·a[i] over 16 lanes, accumulated into i32 lanes.
#[inline]
unsafe fn dot16(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
    let hi = vmull_high_s8(w, a);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// Block `b`'s 32 weights of a 4-bit format (nibbles at `qs`), minus `offset`, and Σ with `a`.
#[inline]
unsafe fn nibble_block_sum(qs: *const u8, offset: i8, a: &BlockQ8) -> i32 {
    let raw = vld1q_u8(qs);
    let lo = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw));
    let off = vdupq_n_s8(offset);
    let (lo, hi) = (vsubq_s8(lo, off), vsubq_s8(hi, off));
    let a0 = vld1q_s8(a.qs.as_ptr());
    let a1 = vld1q_s8(a.qs.as_ptr().add(16));
    let acc = dot16(dot16(vdupq_n_s32(0), lo, a0), hi, a1);
    vaddvq_s32(acc)
}

/// [`crate::scalar::dot_q4_0`] on NEON.
pub fn dot_q4_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(w.len() >= a.len() * 18, "Q4_0 row too short");
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 18..(b + 1) * 18];
        let d = f16_at(blk, 0);
        // SAFETY: the block holds 16 bytes of nibbles at offset 2 (length asserted above).
        let s = unsafe { nibble_block_sum(blk.as_ptr().add(2), 8, ab) };
        acc += d * ab.d * s as f32;
    }
    acc
}

/// [`crate::scalar::dot_q4_1`] on NEON.
pub fn dot_q4_1(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(w.len() >= a.len() * 20, "Q4_1 row too short");
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 20..(b + 1) * 20];
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        // SAFETY: the block holds 16 bytes of nibbles at offset 4.
        let s = unsafe { nibble_block_sum(blk.as_ptr().add(4), 0, ab) };
        acc += d * ab.d * s as f32 + m * ab.s;
    }
    acc
}

/// [`crate::scalar::dot_q8_0`] on NEON.
pub fn dot_q8_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(w.len() >= a.len() * 34, "Q8_0 row too short");
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 34..(b + 1) * 34];
        let d = f16_at(blk, 0);
        // SAFETY: the block holds 32 int8 at offset 2; the activation block holds 32.
        let s = unsafe {
            let q = blk.as_ptr().add(2) as *const i8;
            let (w0, w1) = (vld1q_s8(q), vld1q_s8(q.add(16)));
            let a0 = vld1q_s8(ab.qs.as_ptr());
            let a1 = vld1q_s8(ab.qs.as_ptr().add(16));
            vaddvq_s32(dot16(dot16(vdupq_n_s32(0), w0, a0), w1, a1))
        };
        acc += d * ab.d * s as f32;
    }
    debug_assert_eq!(QK, 32);
    acc
}

/// [`crate::scalar::dot_q4_k`] on NEON.
pub fn dot_q4_k(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(
        a.len().is_multiple_of(8) && w.len() >= a.len() / 8 * 144,
        "Q4_K row too short"
    );
    let mut acc = 0f32;
    for (sb, acts) in a.chunks_exact(8).enumerate() {
        let blk = &w[sb * 144..(sb + 1) * 144];
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let mut u = 0f32;
        for (j, ab) in acts.iter().enumerate() {
            let (sc, m) = crate::formats::scale_min_k4(j, &blk[4..16]);
            let qs = &blk[16 + 32 * (j / 2)..16 + 32 * (j / 2 + 1)];
            // SAFETY: qs holds 32 bytes, the activation block 32 values.
            let s = unsafe {
                let (r0, r1) = (vld1q_u8(qs.as_ptr()), vld1q_u8(qs.as_ptr().add(16)));
                let (q0, q1) = if j % 2 == 0 {
                    let mask = vdupq_n_u8(0x0F);
                    (vandq_u8(r0, mask), vandq_u8(r1, mask))
                } else {
                    (vshrq_n_u8::<4>(r0), vshrq_n_u8::<4>(r1))
                };
                let a0 = vld1q_s8(ab.qs.as_ptr());
                let a1 = vld1q_s8(ab.qs.as_ptr().add(16));
                let acc = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(q0), a0);
                vaddvq_s32(dot16(acc, vreinterpretq_s8_u8(q1), a1))
            };
            u = (d * sc as f32).mul_add(s as f32, u);
            acc = (-(dmin * m as f32)).mul_add(ab.s, acc);
        }
        acc = acts[0].d.mul_add(u, acc);
    }
    acc
}

/// [`crate::scalar::dot_q6_k`] on NEON: activation block b of a super-block reads 32 contiguous
/// `ql` bytes (low or high nibbles) and 32 `qh` bytes (2 bits each); two 16-element groups with
/// their own i8 scales.
pub fn dot_q6_k(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(
        a.len().is_multiple_of(8) && w.len() >= a.len() / 8 * 210,
        "Q6_K row too short"
    );
    let mut acc = 0f32;
    for (sb, acts) in a.chunks_exact(8).enumerate() {
        let blk = &w[sb * 210..(sb + 1) * 210];
        let d = f16_at(blk, 208);
        let mut isum = 0i32;
        for (b, ab) in acts.iter().enumerate() {
            let (h, p) = (b / 4, b % 4);
            let ql = &blk[64 * h + 32 * (p % 2)..64 * h + 32 * (p % 2) + 32];
            let qh = &blk[128 + 32 * h..128 + 32 * h + 32];
            let mut s = 0i32;
            for g in 0..2 {
                let sc = blk[192 + 2 * b + g] as i8 as i32;
                // SAFETY: ql and qh hold 32 bytes each; the activation block 32 values.
                let sg = unsafe {
                    let l = vld1q_u8(ql.as_ptr().add(16 * g));
                    let lo = if p < 2 {
                        vandq_u8(l, vdupq_n_u8(0x0F))
                    } else {
                        vshrq_n_u8::<4>(l)
                    };
                    let hb = vld1q_u8(qh.as_ptr().add(16 * g));
                    let hi = vandq_u8(vshlq_u8(hb, vdupq_n_s8(-2 * p as i8)), vdupq_n_u8(3));
                    let q = vorrq_u8(lo, vshlq_n_u8::<4>(hi));
                    let q = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32));
                    let y = vld1q_s8(ab.qs.as_ptr().add(16 * g));
                    vaddvq_s32(dot16(vdupq_n_s32(0), q, y))
                };
                s += sc * sg;
            }
            isum += s;
        }
        acc = (d * acts[0].d).mul_add(isum as f32, acc);
    }
    acc
}

/// Σ a·b (f32), four FMA chains; the order differs from the scalar loop, so equal within rounding.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // SAFETY: both hold n floats.
    unsafe { dot_ptr(a.as_ptr(), b.as_ptr(), n) }
}

/// # Safety
/// `a` and `b` hold `n` floats (`a` may be unaligned).
unsafe fn dot_ptr(a: *const f32, b: *const f32, n: usize) -> f32 {
    let mut i = 0;
    let mut acc = [vdupq_n_f32(0.0); 4];
    while i + 16 <= n {
        for (u, r) in acc.iter_mut().enumerate() {
            let x = vld1q_f32(a.add(i + 4 * u));
            let y = vld1q_f32(b.add(i + 4 * u));
            *r = vfmaq_f32(*r, x, y);
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], vld1q_f32(a.add(i)), vld1q_f32(b.add(i)));
        i += 4;
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut total = vaddvq_f32(s);
    for j in i..n {
        total += a.add(j).read_unaligned() * *b.add(j);
    }
    total
}

/// Σ w·x for an f32 weight row stored as little-endian bytes.
pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    assert!(w.len() >= x.len() * 4, "f32 row too short");
    // SAFETY: the row holds x.len() floats; LD1 accepts unaligned addresses.
    unsafe { dot_ptr(w.as_ptr() as *const f32, x.as_ptr(), x.len()) }
}

/// y += a·x.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let mut i = 0;
    // SAFETY: every load and store touches 4 floats below n.
    unsafe {
        let av = vdupq_n_f32(a);
        while i + 4 <= n {
            let yv = vld1q_f32(y.as_ptr().add(i));
            let r = vfmaq_f32(yv, av, vld1q_f32(x.as_ptr().add(i)));
            vst1q_f32(y.as_mut_ptr().add(i), r);
            i += 4;
        }
    }
    for j in i..n {
        y[j] += a * x[j];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::quantize_row_q8;
    use crate::scalar;
    use rand::{Rng, SeedableRng};

    fn blocks(rng: &mut rand::rngs::StdRng, bsz: usize, scales: &[usize], nb: usize) -> Vec<u8> {
        let mut w: Vec<u8> = (0..nb * bsz).map(|_| rng.gen()).collect();
        for blk in w.chunks_mut(bsz) {
            for &o in scales {
                let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05)).to_bits();
                blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        w
    }

    #[test]
    fn quantized_dots_are_bit_identical_to_scalar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for nb in [1usize, 2, 7, 18, 48] {
            let x: Vec<f32> = (0..nb * QK).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            let mut a = vec![BlockQ8::default(); nb];
            quantize_row_q8(&x, &mut a);
            let w = blocks(&mut rng, 18, &[0], nb);
            assert_eq!(
                dot_q4_0(&w, &a).to_bits(),
                scalar::dot_q4_0(&w, &a).to_bits()
            );
            let w = blocks(&mut rng, 20, &[0, 2], nb);
            assert_eq!(
                dot_q4_1(&w, &a).to_bits(),
                scalar::dot_q4_1(&w, &a).to_bits()
            );
            let w = blocks(&mut rng, 34, &[0], nb);
            assert_eq!(
                dot_q8_0(&w, &a).to_bits(),
                scalar::dot_q8_0(&w, &a).to_bits()
            );
        }
    }

    #[test]
    fn float_dot_and_axpy_match_scalar_on_awkward_sizes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        for n in [1usize, 3, 4, 15, 16, 17, 63, 576] {
            let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            assert!((dot(&a, &b) - scalar::dot(&a, &b)).abs() <= 1e-5 * mag + 1e-6);
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert!((dot_f32(&bytes, &b) - scalar::dot(&a, &b)).abs() <= 1e-5 * mag + 1e-6);
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            axpy(0.37, &a, &mut y1);
            for (o, v) in y2.iter_mut().zip(&a) {
                *o += 0.37 * v;
            }
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6, "{p} vs {q}");
            }
        }
    }
}

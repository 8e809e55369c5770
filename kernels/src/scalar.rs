//! Scalar reference dot products: one weight row against one activation row.
//! These define what the SIMD paths must compute.

use crate::formats::{f16_at, BlockQ8, QK};

/// Σ w·x for a Q4_0 row (`w` holds `a.len()` blocks of 18 bytes).
pub fn dot_q4_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 18..(b + 1) * 18];
        let d = f16_at(blk, 0);
        let mut s = 0i32;
        for j in 0..16 {
            let q = blk[2 + j];
            s += ((q & 0xF) as i32 - 8) * ab.qs[j] as i32;
            s += ((q >> 4) as i32 - 8) * ab.qs[j + 16] as i32;
        }
        acc += d * ab.d * s as f32;
    }
    acc
}

/// Σ w·x for a Q4_1 row: d·d_a·Σq·q_a + m·s_a per block.
pub fn dot_q4_1(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 20..(b + 1) * 20];
        let d = f16_at(blk, 0);
        let m = f16_at(blk, 2);
        let mut s = 0i32;
        for j in 0..16 {
            let q = blk[4 + j];
            s += (q & 0xF) as i32 * ab.qs[j] as i32;
            s += (q >> 4) as i32 * ab.qs[j + 16] as i32;
        }
        acc += d * ab.d * s as f32 + m * ab.s;
    }
    acc
}

/// Σ w·x for a Q8_0 row.
pub fn dot_q8_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 34..(b + 1) * 34];
        let d = f16_at(blk, 0);
        let mut s = 0i32;
        for j in 0..QK {
            s += blk[2 + j] as i8 as i32 * ab.qs[j] as i32;
        }
        acc += d * ab.d * s as f32;
    }
    acc
}

/// Σ w·x for an f32 row.
pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (i, v) in x.iter().enumerate() {
        acc += f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]) * v;
    }
    acc
}

/// Σ w·x for an f16 row.
pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (i, v) in x.iter().enumerate() {
        acc += f16_at(w, 2 * i) * v;
    }
    acc
}

/// Plain f32 dot product (attention scores).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// exp(x) for the softmax range (x <= 0): Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2, a
/// degree-6 polynomial for e^r, and 2^n through the exponent bits. The SIMD paths use the same
/// constants and operation order (with fused multiply-adds), so results agree to the last bit or two.
pub fn exp_neg(x: f32) -> f32 {
    if x < -87.3 {
        return 0.0;
    }
    let x = x.min(0.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-0.693_145_75, x);
    let r = n.mul_add(-1.428_606_8e-6, r);
    let p = EXP_C[5]
        .mul_add(r, EXP_C[4])
        .mul_add(r, EXP_C[3])
        .mul_add(r, EXP_C[2])
        .mul_add(r, EXP_C[1])
        .mul_add(r, EXP_C[0])
        .mul_add(r, 1.0);
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// Taylor-like minimax coefficients of e^r on [-ln2/2, ln2/2] (1, 1/2, 1/6, 1/24, 1/120, 1/720).
pub(crate) const EXP_C: [f32; 6] = [
    1.0,
    0.5,
    0.166_666_67,
    0.041_666_668,
    0.008_333_334,
    0.001_388_889,
];

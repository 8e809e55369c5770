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

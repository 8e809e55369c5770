//! Scalar reference dot products: one weight row against one activation row.
//! These define what the SIMD paths must compute.

use crate::formats::{f16_at, scale_min_k4, BlockQ8, QK};

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

/// Σ w·x for a Q5_0 row: per block d·d_a·Σ(q5 − 16)·q_a (bit j of qh is bit 4 of element j).
pub fn dot_q5_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (b, ab) in a.iter().enumerate() {
        let blk = &w[b * 22..(b + 1) * 22];
        let d = f16_at(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let mut s = 0i32;
        for j in 0..16 {
            let q = blk[6 + j] as u32;
            let q0 = ((q & 0xF) | (((qh >> j) & 1) << 4)) as i32 - 16;
            let q1 = ((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
            s += q0 * ab.qs[j] as i32 + q1 * ab.qs[j + 16] as i32;
        }
        acc += d * ab.d * s as f32;
    }
    acc
}

/// Σ w·x for a Q4_K row (`w` holds `a.len() / 8` super-blocks of 144 bytes) over super-block
/// activations (`crate::quantize::quantize_row_q8_k`: the 8 blocks share d_a). Per super-block,
/// in the VNNI kernel's exact steps: for each 32-element sub-block j with scale sc_j and min m_j,
/// u = fma(d·sc_j, Σq·q_a, u) and acc = fma(−(dmin·m_j), s_a, acc); then acc = fma(d_a, u, acc).
pub fn dot_q4_k(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (sb, acts) in a.chunks_exact(8).enumerate() {
        let blk = &w[sb * 144..(sb + 1) * 144];
        let d = f16_at(blk, 0);
        let dmin = f16_at(blk, 2);
        debug_assert!(
            acts.iter().all(|b| b.d == acts[0].d),
            "super-block activations"
        );
        let mut u = 0f32;
        for (j, ab) in acts.iter().enumerate() {
            let (sc, m) = scale_min_k4(j, &blk[4..16]);
            let qs = &blk[16 + 32 * (j / 2)..16 + 32 * (j / 2 + 1)];
            let shift = 4 * (j % 2);
            let mut s = 0i32;
            for (q, y) in qs.iter().zip(&ab.qs) {
                s += ((q >> shift) & 0xF) as i32 * *y as i32;
            }
            u = (d * sc as f32).mul_add(s as f32, u);
            acc = (-(dmin * m as f32)).mul_add(ab.s, acc);
        }
        acc = acts[0].d.mul_add(u, acc);
    }
    acc
}

/// The 6-bit value (0..64) of element `e` (0..256) of a Q6_K super-block (ggml's layout: per
/// 128 elements, quarter p takes ql's low or high nibbles and bits 2p..2p+2 of qh).
#[inline]
pub(crate) fn q6_k_value(blk: &[u8], e: usize) -> i32 {
    let (h, r) = (e / 128, e % 128);
    let (p, l) = (r / 32, r % 32);
    let ql = blk[64 * h + l + 32 * (p % 2)];
    let lo = if p < 2 { ql & 0xF } else { ql >> 4 };
    let hi = (blk[128 + 32 * h + l] >> (2 * p)) & 3;
    (lo | (hi << 4)) as i32
}

/// Σ w·x for a Q6_K row (`w` holds `a.len() / 8` super-blocks of 210 bytes) over super-block
/// activations (the 8 blocks share d_a): per super-block the exact integer
/// I = Σ_b Σ_g sc_g·Σ(q − 32)·q_a over its 16-element groups (|I| < 2^28), then
/// acc = fma(d·d_a, I, acc).
pub fn dot_q6_k(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = 0f32;
    for (sb, acts) in a.chunks_exact(8).enumerate() {
        let blk = &w[sb * 210..(sb + 1) * 210];
        let d = f16_at(blk, 208);
        debug_assert!(
            acts.iter().all(|b| b.d == acts[0].d),
            "super-block activations"
        );
        let mut isum = 0i32;
        for (b, ab) in acts.iter().enumerate() {
            let mut s = 0i32;
            for g in 0..2 {
                let sc = blk[192 + 2 * b + g] as i8 as i32;
                let mut sg = 0i32;
                for l in 0..16 {
                    let e = 32 * b + 16 * g + l;
                    sg += (q6_k_value(blk, e) - 32) * ab.qs[16 * g + l] as i32;
                }
                s += sc * sg;
            }
            isum += s;
        }
        acc = (d * acts[0].d).mul_add(isum as f32, acc);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{dequantize_row, WeightType};
    use crate::quantize::quantize_for;
    use rand::{Rng, SeedableRng};

    /// The new reference dots against dequantize-then-f64-dot with the *quantized* activations,
    /// so the only difference is f32 rounding: relative 1e-4 of Σ|w|·|x| (the dot and the
    /// dequantization are written independently, so a layout slip in either shows up here).
    #[test]
    fn q5_0_and_k_quant_dots_match_dequantized_rows() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        for (ty, dot, scales) in [
            (
                WeightType::Q5_0,
                dot_q5_0 as fn(&[u8], &[BlockQ8]) -> f32,
                &[0usize][..],
            ),
            (WeightType::Q4_K, dot_q4_k, &[0, 2][..]),
            (WeightType::Q6_K, dot_q6_k, &[208][..]),
        ] {
            for k in [256usize, 768, 2048] {
                let mut w: Vec<u8> = (0..ty.row_bytes(k)).map(|_| rng.gen()).collect();
                for blk in w.chunks_mut(ty.type_size()) {
                    for &o in scales {
                        let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05)).to_bits();
                        blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let mut a = vec![BlockQ8::default(); k / QK];
                quantize_for(ty, &x, &mut a);
                let mut row = vec![0f32; k];
                dequantize_row(ty, &w, &mut row);
                let (mut exact, mut mag) = (0f64, 0f64);
                for (e, r) in row.iter().enumerate() {
                    let ab = &a[e / QK];
                    let xq = ab.d as f64 * ab.qs[e % QK] as f64;
                    exact += *r as f64 * xq;
                    mag += (*r as f64 * xq).abs();
                }
                // Q4_K's mins use s_a = d_a·Σq_a rounded through f16: allow that rounding too.
                let mins_slack = if ty == WeightType::Q4_K { 2e-3 } else { 1e-4 };
                let got = dot(&w, &a) as f64;
                assert!(
                    (got - exact).abs() <= mins_slack * mag + 1e-4,
                    "{ty:?} k={k}: {got} vs {exact} (mag {mag})"
                );
            }
        }
    }
}

//! The packed weight layout the AVX2 kernels stream: rows in groups of 8, and for each block index
//! the 8 rows' scales side by side followed by their quantized values (llama.cpp repacks Q4_0 the
//! same way for its fast x86 paths). One group block is 144 (Q4_0), 160 (Q4_1) or 272 (Q8_0) bytes:
//! `[d × 8 f16][m × 8 f16 (Q4_1 only)][qs of row 0]...[qs of row 7]`. A matrix whose row count is
//! not a multiple of 8 is padded with zero rows. The matmul then reads one sequential stream per
//! group and loads 8 scales with one instruction.

use crate::formats::{WeightType, QK};

/// Whether `ty` has a packed layout.
pub fn packable(ty: WeightType) -> bool {
    matches!(ty, WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q8_0)
}

/// (group block bytes, header bytes, qs bytes per row, scale fields per row)
fn geometry(ty: WeightType) -> (usize, usize, usize, usize) {
    match ty {
        WeightType::Q4_0 => (144, 16, 16, 1),
        WeightType::Q4_1 => (160, 32, 16, 2),
        WeightType::Q8_0 => (272, 16, 32, 1),
        WeightType::F32
        | WeightType::F16
        | WeightType::Q5_0
        | WeightType::Q4_K
        | WeightType::Q6_K => unreachable!("only Q4_0, Q4_1 and Q8_0 are packable"),
    }
}

/// Bytes of the packed form of an (n, k) matrix.
pub fn packed_len(ty: WeightType, n: usize, k: usize) -> usize {
    n.div_ceil(8) * (k / QK) * geometry(ty).0
}

/// Repack `n` rows of `k` elements in ggml row layout (`rows`) into the packed layout.
pub fn pack(ty: WeightType, n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    let (gb, hdr, qsz, n_scales) = geometry(ty);
    let nb = k / QK;
    let bsz = ty.type_size();
    let rb = ty.row_bytes(k);
    let mut out = vec![0u8; packed_len(ty, n, k)];
    for j in 0..n {
        let (g, l) = (j / 8, j % 8);
        for b in 0..nb {
            let src = &rows[j * rb + b * bsz..j * rb + (b + 1) * bsz];
            let dst = &mut out[(g * nb + b) * gb..(g * nb + b + 1) * gb];
            // scales: d (and m) of each row, f16, side by side
            for f in 0..n_scales {
                dst[f * 16 + 2 * l..f * 16 + 2 * l + 2].copy_from_slice(&src[2 * f..2 * f + 2]);
            }
            let qs = &src[2 * n_scales..];
            dst[hdr + l * qsz..hdr + (l + 1) * qsz].copy_from_slice(&qs[..qsz]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_rows_land_in_their_lanes() {
        let (n, k) = (9, 64);
        let rb = WeightType::Q4_1.row_bytes(k);
        let rows: Vec<u8> = (0..n * rb).map(|i| (i % 251) as u8).collect();
        let p = pack(WeightType::Q4_1, n, k, &rows);
        assert_eq!(p.len(), 2 * 2 * 160);
        // row 9th (j=8) is lane 0 of group 1; its block 1 starts at rows[8*rb + 20].
        let g1b1 = &p[(2 + 1) * 160..(2 + 2) * 160];
        assert_eq!(&g1b1[0..2], &rows[8 * rb + 20..8 * rb + 22]);
        assert_eq!(&g1b1[16..18], &rows[8 * rb + 22..8 * rb + 24]);
        assert_eq!(&g1b1[32..48], &rows[8 * rb + 24..8 * rb + 40]);
        // padded lanes are zero
        assert!(g1b1[2..16].iter().all(|&b| b == 0));
    }
}

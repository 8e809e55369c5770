//! The packed weight layouts the SIMD kernels stream.
//!
//! AVX2 (`Layout::Rows8`): rows in groups of 8, and for each block index
//! the 8 rows' scales side by side followed by their quantized values (llama.cpp repacks Q4_0 the
//! same way for its fast x86 paths). One group block is 144 (Q4_0), 160 (Q4_1) or 272 (Q8_0) bytes:
//! `[d × 8 f16][m × 8 f16 (Q4_1 only)][qs of row 0]...[qs of row 7]`. A matrix whose row count is
//! not a multiple of 8 is padded with zero rows. The matmul then reads one sequential stream per
//! group and loads 8 scales with one instruction.
//!
//! AVX-512 VNNI (`Layout::Vnni16`, see `crate::avx512`): rows in groups of 16, one 32-bit lane per
//! row. For each block index: `[d × 16 f16][m × 16 f16 (Q4_1 only)][qs]` where `qs` is a sequence of
//! 64-byte vectors, vector c holding bytes 4c..4c+4 of each of the 16 rows' quantized values (lane
//! r = row r). Q4_0/Q4_1 store the ggml nibble bytes as they are (4 vectors: low nibbles are
//! elements 4c..4c+4, high nibbles elements 16+4c..); Q8_0 stores its int8 values offset by 128 as
//! unsigned bytes (8 vectors), because `vpdpbusd` multiplies unsigned by signed bytes; Q5_0 keeps
//! its nibbles the same way plus each row's 32 high bits as one lane-sized word after the scales.
//! One group block is 288 (Q4_0), 320 (Q4_1), 352 (Q5_0) or 544 (Q8_0) bytes. A broadcast 4-byte activation chunk times
//! one vector gives 16 rows' partial dot products with no horizontal reduction.

use crate::formats::{WeightType, QK};

/// Which packed layout a machine's kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Rows8,
    Vnni16,
}

/// The layout [`pack`] produces on this machine.
pub fn layout() -> Layout {
    if crate::dispatch::vnni() {
        Layout::Vnni16
    } else {
        Layout::Rows8
    }
}

/// Rows per group of `layout`.
pub fn group_rows(layout: Layout) -> usize {
    match layout {
        Layout::Rows8 => 8,
        Layout::Vnni16 => 16,
    }
}

/// Bytes of one group block of `ty` in the VNNI layout, and its header bytes.
pub const fn vnni_geometry(ty: WeightType) -> (usize, usize) {
    match ty {
        WeightType::Q4_0 => (32 + 256, 32),
        WeightType::Q4_1 => (64 + 256, 64),
        // d, then the 16 rows' 32-bit high-bit words (bit j = bit 4 of element j), then nibbles.
        WeightType::Q5_0 => (32 + 64 + 256, 96),
        // Per 32-element sub-block: d·sc and −dmin·m as f32, then nibbles in Q4_1's order.
        WeightType::Q4_K => (64 + 64 + 256, 128),
        _ => (32 + 512, 32),
    }
}

/// Whether `ty` has a packed layout.
pub fn packable(ty: WeightType) -> bool {
    packable_in(layout(), ty)
}

/// Whether `ty` has a packed form in `layout`.
pub fn packable_in(layout: Layout, ty: WeightType) -> bool {
    match layout {
        Layout::Rows8 => matches!(ty, WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q8_0),
        Layout::Vnni16 => matches!(
            ty,
            WeightType::Q4_0
                | WeightType::Q4_1
                | WeightType::Q5_0
                | WeightType::Q8_0
                | WeightType::Q4_K
        ),
    }
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

/// Bytes of the packed form of an (n, k) matrix (in this machine's layout).
pub fn packed_len(ty: WeightType, n: usize, k: usize) -> usize {
    packed_len_in(layout(), ty, n, k)
}

/// Bytes of the packed form of an (n, k) matrix in `layout`.
pub fn packed_len_in(layout: Layout, ty: WeightType, n: usize, k: usize) -> usize {
    match layout {
        Layout::Rows8 => n.div_ceil(8) * (k / QK) * geometry(ty).0,
        Layout::Vnni16 => n.div_ceil(16) * (k / QK) * vnni_geometry(ty).0,
    }
}

/// Repack `n` rows of `k` elements in ggml row layout (`rows`) into this machine's packed layout.
pub fn pack(ty: WeightType, n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    pack_in(layout(), ty, n, k, rows)
}

/// Repack into `layout`.
pub fn pack_in(layout: Layout, ty: WeightType, n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    match layout {
        Layout::Rows8 => pack_rows8(ty, n, k, rows),
        Layout::Vnni16 => pack_vnni16(ty, n, k, rows),
    }
}

/// Q4_K into the VNNI layout: each 32-element sub-block becomes a Q4_1-like block with f32 scale
/// `d·sc_j` and offset `−dmin·m_j` (so the kernel is Q4_1's), nibbles reordered to Q4_1's order
/// (byte t holds elements t and t + 16).
fn pack_vnni16_q4_k(n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    use crate::formats::{f16_at, scale_min_k4};
    let (gb, hdr) = vnni_geometry(WeightType::Q4_K);
    let nb = k / QK;
    let rb = WeightType::Q4_K.row_bytes(k);
    let mut out = vec![0u8; packed_len_in(Layout::Vnni16, WeightType::Q4_K, n, k)];
    for j in 0..n {
        let (g, l) = (j / 16, j % 16);
        for b in 0..nb {
            let (sb, sub) = (b / 8, b % 8);
            let blk = &rows[j * rb + sb * 144..j * rb + (sb + 1) * 144];
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let (sc, m) = scale_min_k4(sub, &blk[4..16]);
            let dst = &mut out[(g * nb + b) * gb..(g * nb + b + 1) * gb];
            dst[4 * l..4 * l + 4].copy_from_slice(&(d * sc as f32).to_le_bytes());
            dst[64 + 4 * l..64 + 4 * l + 4].copy_from_slice(&(-(dmin * m as f32)).to_le_bytes());
            let qs = &blk[16 + 32 * (sub / 2)..16 + 32 * (sub / 2 + 1)];
            let shift = 4 * (sub % 2);
            let q = |e: usize| (qs[e] >> shift) & 0xF;
            for c in 0..4 {
                for t in 0..4 {
                    let e = 4 * c + t;
                    dst[hdr + c * 64 + 4 * l + t] = q(e) | (q(e + 16) << 4);
                }
            }
        }
    }
    out
}

fn pack_vnni16(ty: WeightType, n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    assert!(
        packable_in(Layout::Vnni16, ty),
        "{ty:?} has no packed layout"
    );
    if ty == WeightType::Q4_K {
        return pack_vnni16_q4_k(n, k, rows);
    }
    let (gb, hdr) = vnni_geometry(ty);
    let n_scales = if ty == WeightType::Q4_1 { 2 } else { 1 };
    let nb = k / QK;
    let bsz = ty.type_size();
    let rb = ty.row_bytes(k);
    let mut out = vec![0u8; packed_len_in(Layout::Vnni16, ty, n, k)];
    if ty == WeightType::Q8_0 {
        // Zero rows of padding are 0 + 128 in the offset encoding.
        for g in out.chunks_mut(gb) {
            g[hdr..].fill(0x80);
        }
    }
    for j in 0..n {
        let (g, l) = (j / 16, j % 16);
        for b in 0..nb {
            let src = &rows[j * rb + b * bsz..j * rb + (b + 1) * bsz];
            let dst = &mut out[(g * nb + b) * gb..(g * nb + b + 1) * gb];
            for f in 0..n_scales {
                dst[f * 32 + 2 * l..f * 32 + 2 * l + 2].copy_from_slice(&src[2 * f..2 * f + 2]);
            }
            let mut qs = &src[2 * n_scales..];
            if ty == WeightType::Q5_0 {
                dst[32 + 4 * l..32 + 4 * l + 4].copy_from_slice(&qs[..4]);
                qs = &qs[4..];
            }
            let chunks = if ty == WeightType::Q8_0 { 8 } else { 4 };
            for c in 0..chunks {
                let at = hdr + c * 64 + 4 * l;
                for t in 0..4 {
                    dst[at + t] = if ty == WeightType::Q8_0 {
                        qs[4 * c + t] ^ 0x80
                    } else {
                        qs[4 * c + t]
                    };
                }
            }
        }
    }
    out
}

fn pack_rows8(ty: WeightType, n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    let (gb, hdr, qsz, n_scales) = geometry(ty);
    let nb = k / QK;
    let bsz = ty.type_size();
    let rb = ty.row_bytes(k);
    let mut out = vec![0u8; packed_len_in(Layout::Rows8, ty, n, k)];
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
        let p = pack_in(Layout::Rows8, WeightType::Q4_1, n, k, &rows);
        assert_eq!(p.len(), 2 * 2 * 160);
        // row 9th (j=8) is lane 0 of group 1; its block 1 starts at rows[8*rb + 20].
        let g1b1 = &p[(2 + 1) * 160..(2 + 2) * 160];
        assert_eq!(&g1b1[0..2], &rows[8 * rb + 20..8 * rb + 22]);
        assert_eq!(&g1b1[16..18], &rows[8 * rb + 22..8 * rb + 24]);
        assert_eq!(&g1b1[32..48], &rows[8 * rb + 24..8 * rb + 40]);
        // padded lanes are zero
        assert!(g1b1[2..16].iter().all(|&b| b == 0));
    }

    #[test]
    fn vnni_layout_puts_four_bytes_per_row_lane() {
        let (n, k) = (17, 64);
        for ty in [WeightType::Q4_1, WeightType::Q8_0] {
            let rb = ty.row_bytes(k);
            let bsz = ty.type_size();
            let rows: Vec<u8> = (0..n * rb).map(|i| (i % 251) as u8).collect();
            let p = pack_in(Layout::Vnni16, ty, n, k, &rows);
            let (gb, hdr) = vnni_geometry(ty);
            assert_eq!(p.len(), 2 * 2 * gb);
            // row 16 is lane 0 of group 1; block 1 of it starts at rows[16*rb + bsz].
            let src = &rows[16 * rb + bsz..16 * rb + 2 * bsz];
            let blk = &p[(2 + 1) * gb..(2 + 2) * gb];
            assert_eq!(&blk[0..2], &src[0..2]);
            let qs0 = if ty == WeightType::Q4_1 { 4 } else { 2 };
            // vector 1, lane 0 = qs bytes 4..8 of the row
            for t in 0..4 {
                let want = if ty == WeightType::Q8_0 {
                    src[qs0 + 4 + t] ^ 0x80
                } else {
                    src[qs0 + 4 + t]
                };
                assert_eq!(blk[hdr + 64 + t], want);
            }
            // lane 1 of group 1 is padding: zero weights
            let pad = if ty == WeightType::Q8_0 { 0x80 } else { 0 };
            assert_eq!(blk[hdr + 4], pad);
        }
    }
}

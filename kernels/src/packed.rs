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
//! row; a group block holds one ggml block of each of the 16 rows. Quantized values are stored as
//! a sequence of 64-byte vectors whose lane r (4 bytes) belongs to row r, so a broadcast 4-byte
//! activation chunk times one vector gives 16 rows' partial dot products with no horizontal
//! reduction. For the 32-element formats: `[d × 16 f16][m × 16 f16 (Q4_1 only)][qs]`, vector c
//! holding bytes 4c..4c+4 of each row's quantized values. Q4_0/Q4_1 store the ggml nibble bytes
//! as they are (4 vectors: low nibbles are elements 4c..4c+4, high nibbles elements 16+4c..); Q8_0
//! stores its int8 values offset by 128 as unsigned bytes (8 vectors), because `vpdpbusd`
//! multiplies unsigned by signed bytes; Q5_0 keeps its nibbles the same way plus each row's 32 high
//! bits as one lane-sized word after the scales. One group block is 288 (Q4_0), 320 (Q4_1), 352
//! (Q5_0) or 544 (Q8_0) bytes.
//!
//! The k-quants keep ggml's compact scales (no f32 expansion), so a packed matrix is exactly as
//! large as the GGUF tensor (plus zero rows up to a multiple of 16):
//! - Q4_K, 2304 bytes per super-block group (16 × 144): `[d × 16 f16][dmin × 16 f16]`, then the 12
//!   packed 6-bit scale/min bytes of each row as 3 vectors (vector v, lane r = bytes 4v..4v+4 of
//!   row r's 12), then per sub-block pair p (0..4) 8 vectors of ggml's `qs` bytes as they are
//!   (vector c, lane r = bytes 32p+4c..32p+4c+4: low nibbles are elements 4c.. of sub-block 2p,
//!   high nibbles of sub-block 2p+1).
//! - Q6_K, 3360 bytes per super-block group (16 × 210): `[d × 16 f16]`, the 16 i8 scales of each
//!   row as 4 vectors (vector v, lane r = scales 4v..4v+4), then per 32-element block 6 vectors:
//!   4 nibble vectors N0..N3 (lane byte t of N_c: low nibble = low 4 bits of element 4c+t, high
//!   nibble = of element 16+4c+t) and 2 high-bit vectors H0, H1 (lane byte t of H_h: bits 2i..2i+2
//!   = bits 4 and 5 of element 16h+4i+t). The 6-bit values are stored unsigned (ggml's q, not q − 32);
//!   the kernel subtracts 32·Σa per 16 elements.
//!
//! Padding rows of both layouts are zero weights (Q8_0: 0 + 128; every other format: d = 0), so
//! they contribute nothing and the matmul clips them from the output.

use crate::formats::{WeightType, QK, QK_K};

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

/// Bytes of one group block of `ty` in the VNNI layout (one ggml block of each of 16 rows: 32
/// elements, 256 for the k-quants), and its header bytes (scales before the quantized values).
pub const fn vnni_geometry(ty: WeightType) -> (usize, usize) {
    match ty {
        WeightType::Q4_0 => (32 + 256, 32),
        WeightType::Q4_1 => (64 + 256, 64),
        // d, then the 16 rows' 32-bit high-bit words (bit j = bit 4 of element j), then nibbles.
        WeightType::Q5_0 => (32 + 64 + 256, 96),
        // d, dmin, 3 vectors of packed 6-bit scales and mins, 4 × 8 nibble vectors.
        WeightType::Q4_K => (Q4K_HDR + 2048, Q4K_HDR),
        // d, 4 vectors of i8 scales, 8 × 6 vectors of 6-bit values.
        WeightType::Q6_K => (Q6K_HDR + 8 * Q6K_BLOCK, Q6K_HDR),
        _ => (32 + 512, 32),
    }
}

/// Header bytes of a Q4_K group block: d and dmin (16 f16 each), then 3 scale vectors.
pub const Q4K_HDR: usize = 64 + 3 * 64;
/// Header bytes of a Q6_K group block: d (16 f16), then 4 scale vectors.
pub const Q6K_HDR: usize = 32 + 4 * 64;
/// Bytes of one 32-element block of a Q6_K group block: 4 nibble and 2 high-bit vectors.
pub const Q6K_BLOCK: usize = 6 * 64;

/// Bytes of one 16-row group of `k`-element rows of `ty` in the VNNI layout.
pub fn vnni_group_bytes(ty: WeightType, k: usize) -> usize {
    k / ty.block_size() * vnni_geometry(ty).0
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
                | WeightType::Q6_K
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
        Layout::Vnni16 => n.div_ceil(16) * vnni_group_bytes(ty, k),
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

/// Q4_K into the VNNI layout (see the module header): every byte is copied from the GGUF block,
/// only its place changes.
fn pack_vnni16_q4_k(n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    let (gb, hdr) = vnni_geometry(WeightType::Q4_K);
    let nsb = k / QK_K;
    let rb = WeightType::Q4_K.row_bytes(k);
    let mut out = vec![0u8; packed_len_in(Layout::Vnni16, WeightType::Q4_K, n, k)];
    for j in 0..n {
        let (g, l) = (j / 16, j % 16);
        for sb in 0..nsb {
            let blk = &rows[j * rb + sb * 144..j * rb + (sb + 1) * 144];
            let dst = &mut out[(g * nsb + sb) * gb..(g * nsb + sb + 1) * gb];
            dst[2 * l..2 * l + 2].copy_from_slice(&blk[0..2]);
            dst[32 + 2 * l..32 + 2 * l + 2].copy_from_slice(&blk[2..4]);
            for v in 0..3 {
                dst[64 + 64 * v + 4 * l..64 + 64 * v + 4 * l + 4]
                    .copy_from_slice(&blk[4 + 4 * v..8 + 4 * v]);
            }
            for p in 0..4 {
                for c in 0..8 {
                    let at = hdr + 512 * p + 64 * c + 4 * l;
                    let from = 16 + 32 * p + 4 * c;
                    dst[at..at + 4].copy_from_slice(&blk[from..from + 4]);
                }
            }
        }
    }
    out
}

/// Q6_K into the VNNI layout (see the module header): d and the scales copied, the 6-bit values
/// regrouped into nibble and high-bit vectors.
fn pack_vnni16_q6_k(n: usize, k: usize, rows: &[u8]) -> Vec<u8> {
    use crate::scalar::q6_k_value;
    let (gb, hdr) = vnni_geometry(WeightType::Q6_K);
    let nsb = k / QK_K;
    let rb = WeightType::Q6_K.row_bytes(k);
    let mut out = vec![0u8; packed_len_in(Layout::Vnni16, WeightType::Q6_K, n, k)];
    for j in 0..n {
        let (g, l) = (j / 16, j % 16);
        for sb in 0..nsb {
            let blk = &rows[j * rb + sb * 210..j * rb + (sb + 1) * 210];
            let dst = &mut out[(g * nsb + sb) * gb..(g * nsb + sb + 1) * gb];
            dst[2 * l..2 * l + 2].copy_from_slice(&blk[208..210]);
            for v in 0..4 {
                dst[32 + 64 * v + 4 * l..32 + 64 * v + 4 * l + 4]
                    .copy_from_slice(&blk[192 + 4 * v..196 + 4 * v]);
            }
            for b in 0..8 {
                let q = |e: usize| q6_k_value(blk, 32 * b + e) as u8;
                let base = hdr + Q6K_BLOCK * b + 4 * l;
                for t in 0..4 {
                    for c in 0..4 {
                        let (lo, hi) = (q(4 * c + t), q(16 + 4 * c + t));
                        dst[base + 64 * c + t] = (lo & 0xF) | ((hi & 0xF) << 4);
                    }
                    for h in 0..2 {
                        let mut bits = 0u8;
                        for i in 0..4 {
                            bits |= (q(16 * h + 4 * i + t) >> 4) << (2 * i);
                        }
                        dst[base + 256 + 64 * h + t] = bits;
                    }
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
    match ty {
        WeightType::Q4_K => return pack_vnni16_q4_k(n, k, rows),
        WeightType::Q6_K => return pack_vnni16_q6_k(n, k, rows),
        _ => {}
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

    /// The k-quants' packed form is exactly the GGUF bytes (16-row multiples), and Q4_K keeps
    /// every byte: a row's scales and quantized values sit in its lane unchanged.
    #[test]
    fn k_quants_pack_to_gguf_size_with_bytes_in_their_lanes() {
        let (n, k) = (17, 512);
        for ty in [WeightType::Q4_K, WeightType::Q6_K] {
            assert_eq!(
                packed_len_in(Layout::Vnni16, ty, 32, k),
                32 * ty.row_bytes(k)
            );
        }
        let rb = WeightType::Q4_K.row_bytes(k);
        let rows: Vec<u8> = (0..n * rb).map(|i| (i % 253) as u8).collect();
        let p = pack_in(Layout::Vnni16, WeightType::Q4_K, n, k, &rows);
        let (gb, hdr) = vnni_geometry(WeightType::Q4_K);
        // Row 16 = lane 0 of group 1; its super-block 1 is group block 3.
        let src = &rows[16 * rb + 144..16 * rb + 288];
        let blk = &p[3 * gb..4 * gb];
        assert_eq!(&blk[0..2], &src[0..2]);
        assert_eq!(&blk[32..34], &src[2..4]);
        assert_eq!(&blk[128..132], &src[8..12]);
        // sub-block pair 2, vector 5: qs bytes 64 + 20..
        assert_eq!(
            &blk[hdr + 2 * 512 + 5 * 64..][..4],
            &src[16 + 64 + 20..][..4]
        );
        // lane 1 of group 1 is padding: zero
        assert!(blk[hdr + 4..hdr + 8].iter().all(|&b| b == 0));
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

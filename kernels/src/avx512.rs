//! The AVX-512 tier (avx512f/bw/vl/vnni, see `dispatch::vnni`): the quantized matmul over the
//! packed `Vnni16` layout and the attention run over transposed K.
//!
//! Matmul ([`gemm16`]): 16 weight rows (see `crate::packed`), one per 32-bit lane, times up to
//! [`MAX_TILE`] activation rows per call.
//!
//! Per block and activation row, eight `vpdpbusd` (unsigned weight bytes × signed activation
//! bytes, four products summed into each lane) give the exact integer dot of the block for all 16
//! rows; Q4_0 and Q8_0 store their weights offset by 8 / 128 and subtract offset × Σa exactly.
//! The float part is the AVX2 kernels' (`crate::x86`), operation for operation:
//! `acc = fma(isum, d_w · d_a, acc)`, for Q4_1 `accm = fma(m_w, s_a, accm)`, result `acc + accm`,
//! so a (row, activation) pair gets bit-identical results on either tier and in any tile.
//!
//! The k-quants ([`gemm16_q4_k`], [`gemm16_q6_k`]) stream ggml's compact scales and expand them in
//! registers, once per group block for all activation rows of the tile. Their integer block sums
//! are exact and their float steps are the scalar reference's (`crate::scalar::dot_q4_k`,
//! `dot_q6_k`) operation for operation (Q4_K's two fused multiply-adds are `mul_add` there), so
//! every (row, activation) pair is bit-identical to the scalar reference, whatever the tile.

use crate::formats::BlockQ8;
use crate::formats::WeightType;
use crate::packed::vnni_geometry;
use crate::x86::{Q4_0, Q4_1, Q8_0};
use std::arch::x86_64::*;

static HIGH_BITS: [i32; 16] = high_bit_table();

/// Activation rows per kernel call at most (2 accumulators each, 8 weight vectors, scales: fits
/// the 32 vector registers).
pub const MAX_TILE: usize = 6;

/// [`MAX_TILE`] of the k-quant kernels: each weight vector they unpack serves more activation
/// rows, and their per-row state fits 8 rows (measured: 6 -> 8 rows took Q4_K from 300 to
/// 315-320 GOPS on one thread at m = 128; 10 rows spill and fall to 266).
pub const MAX_TILE_K: usize = 8;

/// Where block `b` of activation row `i` (of `m` rows of `nb` blocks) sits in the k-quant
/// kernels' interleaved layout: rows go in tiles of [`MAX_TILE_K`] starting at multiples of it
/// (the last one shorter), each tile occupying its rows' usual span (`i0·nb .. (i0 + R)·nb`) with
/// its blocks ordered (block, row). A tile of R rows starting at row i0 is then `nb · R`
/// contiguous blocks at `i0 · nb`.
#[inline]
pub fn tiled_index(i: usize, b: usize, m: usize, nb: usize) -> usize {
    let i0 = i / MAX_TILE_K * MAX_TILE_K;
    let r = (m - i0).min(MAX_TILE_K);
    i0 * nb + b * r + (i - i0)
}

/// Q5_0's tag for [`gemm16`] (the other tags are `crate::x86`'s).
pub const Q5_0: u8 = 3;

const fn weight_type(t: u8) -> WeightType {
    match t {
        Q4_0 => WeightType::Q4_0,
        Q4_1 => WeightType::Q4_1,
        Q5_0 => WeightType::Q5_0,
        _ => WeightType::Q8_0,
    }
}

/// Dword p (0..16) has byte t = 0x10 when bit t of p is set: 4 high bits -> bit 4 of 4 bytes.
const fn high_bit_table() -> [i32; 16] {
    let mut t = [0i32; 16];
    let mut p = 0;
    while p < 16 {
        let mut v = 0u32;
        let mut b = 0;
        while b < 4 {
            if p & (1 << b) != 0 {
                v |= 0x10 << (8 * b);
            }
            b += 1;
        }
        t[p] = v as i32;
        p += 1;
    }
    t
}

/// Integer sum of each activation block's 32 values (needed for Q4_0 and Q8_0's offsets).
pub fn block_sums(a: &[BlockQ8], out: &mut [i32]) {
    for (o, b) in out.iter_mut().zip(a) {
        *o = b.qs.iter().map(|&q| q as i32).sum();
    }
}

/// Sums of an activation block's two 16-value halves as one i16 pair (low half first; each
/// |sum| <= 16·128 fits), the operand of Q6_K's `vpdpwssd` offset step.
pub fn half_sum(b: &BlockQ8) -> i32 {
    let lo: i32 = b.qs[..16].iter().map(|&q| q as i32).sum();
    let hi: i32 = b.qs[16..].iter().map(|&q| q as i32).sum();
    (lo & 0xFFFF) | (hi << 16)
}

/// 16 weight rows (one `Vnni16` group, `g` = its first block) × `R` activation rows.
/// `a[r]` points to activation row r's `nb` blocks, `asum[r]` to their block sums (read for Q4_0
/// and Q8_0 only). `out[r][l]` receives y for activation row r and group row l.
///
/// # Safety
/// avx512f, avx512bw, avx512vl, avx512vnni, avx2, fma and f16c present; `g` holds `nb` group
/// blocks of format `T`; every `a[r]` (and `asum[r]` for Q4_0/Q8_0) holds `nb` entries.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm16<const T: u8, const R: usize>(
    g: *const u8,
    nb: usize,
    a: [*const BlockQ8; R],
    asum: [*const i32; R],
    out: &mut [[f32; 16]; R],
) {
    let (gb, hdr) = vnni_geometry(weight_type(T));
    let mut acc = [_mm512_setzero_ps(); R];
    let mut accm = [_mm512_setzero_ps(); R];
    let nib = _mm512_set1_epi8(0x0F);
    for b in 0..nb {
        let base = g.add(b * gb);
        _mm_prefetch::<_MM_HINT_T0>(base.add(2 * gb) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(2 * gb + 64) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(2 * gb + 128) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(2 * gb + 192) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(2 * gb + 256) as *const i8);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(base as *const __m256i));
        let qs = base.add(hdr);
        // w[c]: 16 rows' elements 4c..4c+4 as unsigned bytes.
        let mut w = [_mm512_setzero_si512(); 8];
        if T == Q8_0 {
            for (c, wc) in w.iter_mut().enumerate() {
                *wc = _mm512_loadu_si512(qs.add(64 * c) as *const _);
            }
        } else {
            for c in 0..4 {
                let raw = _mm512_loadu_si512(qs.add(64 * c) as *const _);
                w[c] = _mm512_and_si512(raw, nib);
                w[c + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nib);
            }
            if T == Q5_0 {
                // Bit 4 of element j is bit j of the row's high word: 4 bits per chunk vector,
                // expanded to bytes through a 16-entry dword table.
                let qh = _mm512_loadu_si512(base.add(32) as *const _);
                let table = _mm512_loadu_si512(HIGH_BITS.as_ptr() as *const _);
                let four = _mm512_set1_epi32(0xF);
                for c in 0..4 {
                    let lo = _mm512_and_si512(
                        _mm512_srlv_epi32(qh, _mm512_set1_epi32(4 * c as i32)),
                        four,
                    );
                    let hi = _mm512_and_si512(
                        _mm512_srlv_epi32(qh, _mm512_set1_epi32(16 + 4 * c as i32)),
                        four,
                    );
                    w[c] = _mm512_or_si512(w[c], _mm512_permutexvar_epi32(lo, table));
                    w[c + 4] = _mm512_or_si512(w[c + 4], _mm512_permutexvar_epi32(hi, table));
                }
            }
        }
        let mw = if T == Q4_1 {
            _mm512_cvtph_ps(_mm256_loadu_si256(base.add(32) as *const __m256i))
        } else {
            _mm512_setzero_ps()
        };
        for r in 0..R {
            let ab = &*a[r].add(b);
            let q = ab.qs.as_ptr() as *const i32;
            // Two independent chains halve the dependency on vpdpbusd's latency.
            let mut s0 = _mm512_setzero_si512();
            let mut s1 = _mm512_setzero_si512();
            for c in 0..4 {
                let x0 = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(c)));
                let x1 = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(c + 4)));
                s0 = _mm512_dpbusd_epi32(s0, w[c], x0);
                s1 = _mm512_dpbusd_epi32(s1, w[c + 4], x1);
            }
            let mut isum = _mm512_add_epi32(s0, s1);
            if T != Q4_1 {
                let off = match T {
                    Q4_0 => 8,
                    Q5_0 => 16,
                    _ => 128,
                };
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(off * *asum[r].add(b)));
            }
            let f = _mm512_cvtepi32_ps(isum);
            acc[r] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw, _mm512_set1_ps(ab.d)), acc[r]);
            if T == Q4_1 {
                accm[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ab.s), accm[r]);
            }
        }
    }
    for r in 0..R {
        let v = if T == Q4_1 {
            _mm512_add_ps(acc[r], accm[r])
        } else {
            acc[r]
        };
        _mm512_storeu_ps(out[r].as_mut_ptr(), v);
    }
}

/// Byte `i` (0..4) of every 32-bit lane of `v`, as 16 f32 (one `vpshufb` picks and
/// zero-extends it).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn byte_f32(v: __m512i, i: u32) -> __m512 {
    // Dword p of each 128-bit lane takes byte 4p + i; 0x80 zeroes the other three.
    let c = |p: u32| (0x8080_8000 | (4 * p + i)) as i32;
    let ctrl = _mm512_set4_epi32(c(3), c(2), c(1), c(0));
    _mm512_cvtepi32_ps(_mm512_shuffle_epi8(v, ctrl))
}

/// Signed byte `i` (0..4) of every 32-bit lane of `v`, sign-extended to i32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn byte_i32(v: __m512i, i: u32) -> __m512i {
    _mm512_srai_epi32::<24>(_mm512_sllv_epi32(v, _mm512_set1_epi32(24 - 8 * i as i32)))
}

/// Bits 2i, 2i + 1 of each byte of `h` moved to bits 4, 5 (16-bit shifts; the caller's 0x30
/// mask drops what crosses a byte).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn high_pair(h: __m512i, i: usize) -> __m512i {
    match i {
        0 => _mm512_slli_epi16::<4>(h),
        1 => _mm512_slli_epi16::<2>(h),
        2 => h,
        _ => _mm512_srli_epi16::<2>(h),
    }
}

/// How many group blocks ahead the k-quant kernels prefetch.
const PF_AHEAD: usize = 4;

/// Prefetch `lines` cache lines from `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn prefetch_lines(p: *const u8, lines: usize) {
    for i in 0..lines {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * i) as *const i8);
    }
}

/// [`gemm16`] for Q4_K (`crate::packed` layout): 16 weight rows × `R` activation rows over `nb`
/// activation blocks (`nb / 8` super-blocks). Per 32-element sub-block j and pair: the exact
/// integer dot Σq·q_a, then `u = fma(d·sc_j, isum, u)` and `acc = fma(−(dmin·m_j), s_a, acc)`;
/// per super-block `acc = fma(d_a, u, acc)`, as the scalar reference (the activations share d_a
/// per super-block; `d·sc_j` and `dmin·m_j` are exact in f32: 11 × 6 bits; for odd j the kernel
/// multiplies 16·q by d·sc_j / 16, which gives the same products).
///
/// The tile's activations are interleaved ([`tiled_index`]): block b of row r at `a[b·R + r]`, so
/// every activation operand is one pointer plus a constant (no index register, no per-row
/// pointers in registers). Each sub-block runs weight vector outer, rows inner, into R
/// independent accumulators (measured against rows outer with one 8-long `vpdpbusd` chain per
/// row: +5-17% by shape on one thread); the min terms of a super-block go first, which leaves
/// each acc's sequence of operations as the reference's.
///
/// # Safety
/// As [`gemm16`]; `nb` is a multiple of 8, `g` holds `nb / 8` Q4_K group blocks and `a` holds
/// `nb · R` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm16_q4_k<const R: usize>(
    g: *const u8,
    nb: usize,
    a: *const BlockQ8,
    out: &mut [[f32; 16]; R],
) {
    let (gb, hdr) = vnni_geometry(WeightType::Q4_K);
    let mut acc = [_mm512_setzero_ps(); R];
    let nib = _mm512_set1_epi8(0x0F);
    let high = _mm512_set1_epi8(0xF0u8 as i8);
    let six = _mm512_set1_epi8(0x3F);
    let top = _mm512_set1_epi8(0x30);
    for sb in 0..nb / 8 {
        let base = g.add(sb * gb);
        let at = a.add(8 * sb * R);
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(base as *const __m256i));
        let d16 = _mm512_mul_ps(d, _mm512_set1_ps(1.0 / 16.0));
        let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(base.add(32) as *const __m256i));
        let s0 = _mm512_loadu_si512(base.add(64) as *const _);
        let s1 = _mm512_loadu_si512(base.add(128) as *const _);
        let s2 = _mm512_loadu_si512(base.add(192) as *const _);
        // formats::scale_min_k4 on 16 rows at once: bytes j of sc[0] / m[0] are sub-block j's
        // scale / min for j < 4, bytes j - 4 of sc[1] / m[1] those of sub-blocks 4..8.
        let sc = [
            _mm512_and_si512(s0, six),
            _mm512_or_si512(
                _mm512_and_si512(s2, nib),
                _mm512_and_si512(_mm512_srli_epi32::<2>(s0), top),
            ),
        ];
        let mn = [
            _mm512_and_si512(s1, six),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi32::<4>(s2), nib),
                _mm512_and_si512(_mm512_srli_epi32::<2>(s1), top),
            ),
        ];
        // The min terms first: the scalar reference's acc takes them in j order and then d_a·u,
        // and nothing else, so doing them ahead of the dots gives the same acc.
        for j in 0..8 {
            let dmm = _mm512_mul_ps(dmin, byte_f32(mn[j / 4], (j % 4) as u32));
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fnmadd_ps(dmm, _mm512_set1_ps((*at.add(j * R + r)).s), *acc);
            }
        }
        let mut u = [_mm512_setzero_ps(); R];
        for p in 0..4 {
            let qs = base.add(hdr + 512 * p);
            prefetch_lines(base.add(PF_AHEAD * gb + 576 * p), 9);
            for h in 0..2 {
                let j = 2 * p + h;
                // The high nibbles are used in place (16·q, one `and` per vector) and their
                // scale divided by 16 instead: both exact, so the products are unchanged.
                let dsc = _mm512_mul_ps(
                    if h == 0 { d } else { d16 },
                    byte_f32(sc[j / 4], (j % 4) as u32),
                );
                let mask = if h == 0 { nib } else { high };
                // Weight vector outer, rows inner: R independent accumulators, so consecutive
                // `vpdpbusd` of one row are R instructions apart and never wait on each other.
                let mut s = [_mm512_setzero_si512(); R];
                for c in 0..8 {
                    let wc = _mm512_and_si512(_mm512_loadu_si512(qs.add(64 * c) as *const _), mask);
                    for (r, s) in s.iter_mut().enumerate() {
                        let q = (*at.add(j * R + r)).qs.as_ptr() as *const i32;
                        let x = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(c)));
                        *s = _mm512_dpbusd_epi32(*s, wc, x);
                    }
                }
                for (u, s) in u.iter_mut().zip(&s) {
                    *u = _mm512_fmadd_ps(dsc, _mm512_cvtepi32_ps(*s), *u);
                }
            }
        }
        for r in 0..R {
            let da = _mm512_set1_ps((*at.add(r)).d);
            acc[r] = _mm512_fmadd_ps(da, u[r], acc[r]);
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}

/// [`gemm16`] for Q6_K (`crate::packed` layout): 16 weight rows × `R` activation rows over `nb`
/// activation blocks (`nb / 8` super-blocks). Per activation block b and pair, the exact integer
/// `sc_lo·Σ(q − 32)·q_a + sc_hi·Σ(q − 32)·q_a` over its two 16-element halves: `vpdpbusd` on the
/// unsigned q, `vpmulld` by the scales, and `vpdpwssd` of (−32·sc_lo, −32·sc_hi) with the halves'
/// activation sums `hsum` (see [`half_sums`]), summed over the super-block in integers; then per
/// super-block `acc = fma(d·d_a, isum, acc)` as the scalar reference (the activations share d_a
/// per super-block).
///
/// The activations and their half sums are interleaved as in [`gemm16_q4_k`].
///
/// # Safety
/// As [`gemm16`]; `nb` is a multiple of 8, `g` holds `nb / 8` Q6_K group blocks, `a` holds
/// `nb · R` blocks and `hsum` their `nb · R` half-sum pairs, in [`tiled_index`] order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn gemm16_q6_k<const R: usize>(
    g: *const u8,
    nb: usize,
    a: *const BlockQ8,
    hsum: *const i32,
    out: &mut [[f32; 16]; R],
) {
    use crate::packed::Q6K_BLOCK;
    let (gb, hdr) = vnni_geometry(WeightType::Q6_K);
    let mut acc = [_mm512_setzero_ps(); R];
    let nib = _mm512_set1_epi8(0x0F);
    let top = _mm512_set1_epi8(0x30);
    for sb in 0..nb / 8 {
        let base = g.add(sb * gb);
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(base as *const __m256i));
        let (at, hs) = (a.add(8 * sb * R), hsum.add(8 * sb * R));
        let mut isum = [_mm512_setzero_si512(); R];
        for b in 0..8 {
            prefetch_lines(base.add(PF_AHEAD * gb + 420 * b), 7);
            let scv = _mm512_loadu_si512(base.add(32 + 64 * (b / 2)) as *const _);
            let sc_lo = byte_i32(scv, 2 * (b % 2) as u32);
            let sc_hi = byte_i32(scv, 2 * (b % 2) as u32 + 1);
            // (−32·sc_lo, −32·sc_hi) as an i16 pair per lane (|−32·sc| <= 4096).
            let off = _mm512_or_si512(
                _mm512_and_si512(
                    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<5>(sc_lo)),
                    _mm512_set1_epi32(0xFFFF),
                ),
                _mm512_slli_epi32::<16>(_mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_slli_epi32::<5>(sc_hi),
                )),
            );
            let qs = base.add(hdr + Q6K_BLOCK * b);
            let h = [
                _mm512_loadu_si512(qs.add(256) as *const _),
                _mm512_loadu_si512(qs.add(320) as *const _),
            ];
            let mut w = [_mm512_setzero_si512(); 8];
            for c in 0..4 {
                let raw = _mm512_loadu_si512(qs.add(64 * c) as *const _);
                // a | (b & c): imm 0xF8.
                w[c] = _mm512_ternarylogic_epi32::<0xF8>(
                    _mm512_and_si512(raw, nib),
                    high_pair(h[0], c),
                    top,
                );
                w[c + 4] = _mm512_ternarylogic_epi32::<0xF8>(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nib),
                    high_pair(h[1], c),
                    top,
                );
            }
            for (r, isum) in isum.iter_mut().enumerate() {
                let ab = &*at.add(b * R + r);
                let q = ab.qs.as_ptr() as *const i32;
                let mut s0 = _mm512_setzero_si512();
                let mut s1 = _mm512_setzero_si512();
                for c in 0..4 {
                    let x0 = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(c)));
                    let x1 = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(c + 4)));
                    s0 = _mm512_dpbusd_epi32(s0, w[c], x0);
                    s1 = _mm512_dpbusd_epi32(s1, w[c + 4], x1);
                }
                let t = _mm512_add_epi32(*isum, _mm512_mullo_epi32(s0, sc_lo));
                let t = _mm512_add_epi32(t, _mm512_mullo_epi32(s1, sc_hi));
                *isum = _mm512_dpwssd_epi32(t, off, _mm512_set1_epi32(*hs.add(b * R + r)));
            }
        }
        for r in 0..R {
            let dd = _mm512_mul_ps(d, _mm512_set1_ps((*at.add(r)).d));
            acc[r] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum[r]), acc[r]);
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}

/// One run of the online softmax (see `crate::attention`) for `G` query heads of one KV group
/// (one head is `G` = 1), each of `NV * 16` dims, over K stored transposed: 16 positions per
/// vector, so a score needs no horizontal sum. Element d of position j is at
/// `kt[d * kt_stride + j]`; V row j at `v[j * v_stride..]`. Each K vector and V row is loaded
/// once for all `G` heads; every head's arithmetic is the same, operation for operation and in
/// the same order, whatever `G`, so a head's state does not depend on which heads share the call.
///
/// # Safety
/// The AVX-512 tier is present; for every head `q[h]` and `acc[h]` hold NV·16 floats and `m[h]`,
/// `l[h]` are valid, no two heads sharing any pointer; `kt` holds NV·16 rows of `n_pos` floats
/// `kt_stride` apart; `v` holds `n_pos` rows of NV·16 floats; `n_pos <= 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub unsafe fn attend_run_heads<const NV: usize, const G: usize>(
    q: [*const f32; G],
    kt: *const f32,
    kt_stride: usize,
    v: *const f32,
    v_stride: usize,
    n_pos: usize,
    scale: f32,
    m: [*mut f32; G],
    l: [*mut f32; G],
    acc: [*mut f32; G],
) {
    let hd = NV * 16;
    let nc = n_pos.div_ceil(16);
    let mask = |c: usize| -> __mmask16 {
        let left = n_pos - 16 * c;
        if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as __mmask16
        }
    };
    let sc = _mm512_set1_ps(scale);
    // Scores: per head and chunk of 16 positions, four partial sums over d (d mod 4).
    let mut s = [[_mm512_setzero_ps(); 4]; G];
    for c in 0..nc {
        let mk = mask(c);
        let base = kt.add(16 * c);
        let mut a = [[_mm512_setzero_ps(); 4]; G];
        let mut d = 0;
        while d < hd {
            for u in 0..4 {
                let kv = _mm512_maskz_loadu_ps(mk, base.add((d + u) * kt_stride));
                for h in 0..G {
                    a[h][u] = _mm512_fmadd_ps(_mm512_set1_ps(*q[h].add(d + u)), kv, a[h][u]);
                }
            }
            d += 4;
        }
        for h in 0..G {
            s[h][c] = _mm512_mul_ps(
                _mm512_add_ps(
                    _mm512_add_ps(a[h][0], a[h][1]),
                    _mm512_add_ps(a[h][2], a[h][3]),
                ),
                sc,
            );
        }
    }
    // Softmax weights and corrections, per head.
    let mut w = [[0f32; 64]; G];
    let mut corr = [0f32; G];
    for h in 0..G {
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in 0..nc {
            mx = _mm512_mask_max_ps(mx, mask(c), mx, s[h][c]);
        }
        let run_max = _mm512_reduce_max_ps(mx);
        let first = *m[h] == f32::NEG_INFINITY;
        let m_new = (*m[h]).max(run_max);
        let mv = _mm512_set1_ps(m_new);
        let mut sum = _mm512_setzero_ps();
        for c in 0..nc {
            let e = _mm512_maskz_mov_ps(mask(c), exp16(_mm512_sub_ps(s[h][c], mv)));
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(w[h].as_mut_ptr().add(16 * c), e);
        }
        corr[h] = if first {
            0.0
        } else {
            _mm512_cvtss_f32(exp16(_mm512_set1_ps(*m[h] - m_new)))
        };
        *l[h] = *l[h] * corr[h] + _mm512_reduce_add_ps(sum);
        *m[h] = m_new;
    }
    // V: per 16 dims, each V vector loaded once for all heads; per head one fma per position j,
    // in order.
    for i in 0..NV {
        let mut av = [_mm512_setzero_ps(); G];
        for h in 0..G {
            av[h] = _mm512_mul_ps(_mm512_loadu_ps(acc[h].add(16 * i)), _mm512_set1_ps(corr[h]));
        }
        for j in 0..n_pos {
            let vj = _mm512_loadu_ps(v.add(j * v_stride + 16 * i));
            for h in 0..G {
                av[h] = _mm512_fmadd_ps(_mm512_set1_ps(w[h][j]), vj, av[h]);
            }
        }
        for h in 0..G {
            _mm512_storeu_ps(acc[h].add(16 * i), av[h]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn exp16(x: __m512) -> __m512 {
    use crate::scalar::EXP_C;
    // The lane arithmetic of `crate::x86::exp8`, 16 lanes wide.
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.3));
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3)), _mm512_setzero_ps());
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693_145_75), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(EXP_C[5]);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C[4]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C[3]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C[2]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C[1]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C[0]));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    let y = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    _mm512_maskz_mov_ps(!tiny, y)
}

//! AVX-512 VNNI kernels for the packed `Vnni16` layout (see `crate::packed`): 16 weight rows, one
//! per 32-bit lane, times up to [`MAX_TILE`] activation rows per call.
//!
//! Per block and activation row, eight `vpdpbusd` (unsigned weight bytes × signed activation
//! bytes, four products summed into each lane) give the exact integer dot of the block for all 16
//! rows; Q4_0 and Q8_0 store their weights offset by 8 / 128 and subtract offset × Σa exactly.
//! The float part is the AVX2 kernels' (`crate::x86`), operation for operation:
//! `acc = fma(isum, d_w · d_a, acc)`, for Q4_1 `accm = fma(m_w, s_a, accm)`, result `acc + accm`,
//! so a (row, activation) pair gets bit-identical results on either tier and in any tile.

use crate::formats::BlockQ8;
use crate::formats::WeightType;
use crate::packed::vnni_geometry;
use crate::x86::{Q4_0, Q4_1, Q8_0};
use std::arch::x86_64::*;

/// Activation rows per kernel call at most (2 accumulators each, 8 weight vectors, scales: fits
/// the 32 vector registers).
pub const MAX_TILE: usize = 6;

const fn weight_type(t: u8) -> WeightType {
    match t {
        Q4_0 => WeightType::Q4_0,
        Q4_1 => WeightType::Q4_1,
        _ => WeightType::Q8_0,
    }
}

/// Integer sum of each activation block's 32 values (needed for Q4_0 and Q8_0's offsets).
pub fn block_sums(a: &[BlockQ8], out: &mut [i32]) {
    for (o, b) in out.iter_mut().zip(a) {
        *o = b.qs.iter().map(|&q| q as i32).sum();
    }
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
                let off = if T == Q4_0 { 8 } else { 128 };
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

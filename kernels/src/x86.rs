//! AVX2 + FMA + F16C paths (x86_64). Same contracts as `scalar`; callers must have checked the
//! features (see `dispatch`), which is the safety condition of every function here.

use crate::formats::BlockQ8;
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    // SAFETY: caller guarantees two readable bytes at p.
    let h = _mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const u16) as i32);
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// 16 packed bytes -> 32 unsigned nibbles in element order (low nibbles are elements 0..16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 16 readable bytes at p.
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Weight formats the tiled kernels handle (const parameter).
pub const Q4_0: u8 = 0;
pub const Q4_1: u8 = 1;
pub const Q8_0: u8 = 2;

#[inline(always)]
const fn block_bytes(t: u8) -> usize {
    match t {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    }
}

/// Weight block `blk` as 32 quantized values: unsigned nibbles for Q4_1, signed for Q4_0/Q8_0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight_q<const T: u8>(blk: *const u8) -> __m256i {
    match T {
        Q4_0 => _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8)),
        Q4_1 => nibbles(blk.add(4)),
        _ => _mm256_loadu_si256(blk.add(2) as *const __m256i),
    }
}

/// Integer dot of one weight block with one activation block, as 8 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int_dot<const T: u8>(q: __m256i, y: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    if T == Q4_1 {
        _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones)
    } else {
        _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q)),
            ones,
        )
    }
}

/// Eight 8-lane i32 vectors -> one vector whose lane p is the (exact) sum of vector p.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(v: [__m256i; 8]) -> __m256i {
    let s01 = _mm256_hadd_epi32(v[0], v[1]);
    let s23 = _mm256_hadd_epi32(v[2], v[3]);
    let s45 = _mm256_hadd_epi32(v[4], v[5]);
    let s67 = _mm256_hadd_epi32(v[6], v[7]);
    let s0123 = _mm256_hadd_epi32(s01, s23);
    let s4567 = _mm256_hadd_epi32(s45, s67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(s0123, s4567, 0x20),
        _mm256_permute2x128_si256(s0123, s4567, 0x31),
    )
}

// The two kernels below compute 8 (weight row, activation row) pairs at once, one pair per lane,
// with the same per-lane arithmetic: per block, the exact integer dot of the pair; then
// acc = fma(isum, d_w * d_a, acc) and, for Q4_1, accm = fma(m_w, s_a, accm); the result is
// acc + accm. A pair's result therefore never depends on which kernel, lane or batch computed it.

/// How far ahead (bytes) the 8-row kernel prefetches each weight row.
const PREFETCH: usize = 256;

/// Low (or high) f16 halves of the 8 dwords of `v` packed into 8 f16 in 128 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn halves(v: __m256i, sh: __m256i) -> __m128i {
    let p = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, sh), 0b1000);
    _mm256_castsi256_si128(p)
}

/// 8 weight rows × 1 activation row (decode). `w` points to row 0; rows are `rb` bytes apart;
/// `rows[p]` is the row of lane p (repeat a row to pad). `out[p]` receives lane p.
///
/// # Safety
/// avx2, fma, f16c present; all rows hold `nb` blocks of format `T`; `a` holds `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn k8x1<const T: u8>(
    w: *const u8,
    rb: usize,
    rows: [usize; 8],
    a: *const BlockQ8,
    nb: usize,
    out: &mut [f32; 8],
) {
    let bsz = block_bytes(T);
    let offs = _mm256_setr_epi32(
        (rows[0] * rb) as i32,
        (rows[1] * rb) as i32,
        (rows[2] * rb) as i32,
        (rows[3] * rb) as i32,
        (rows[4] * rb) as i32,
        (rows[5] * rb) as i32,
        (rows[6] * rb) as i32,
        (rows[7] * rb) as i32,
    );
    // Low and high f16 of each gathered dword, packed to 8 f16 in 128 bits.
    let lo16 = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1,
        -1, -1, -1, -1, -1, -1,
    );
    let hi16 = _mm256_setr_epi8(
        2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10, 11, 14, 15, -1,
        -1, -1, -1, -1, -1, -1, -1,
    );
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for b in 0..nb {
        let base = w.add(b * bsz);
        let g = _mm256_i32gather_epi32::<1>(base as *const i32, offs);
        let dw = _mm256_cvtph_ps(halves(g, lo16));
        let ab = &*a.add(b);
        let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
        let mut v = [_mm256_setzero_si256(); 8];
        for p in 0..8 {
            _mm_prefetch::<_MM_HINT_T0>(base.add(rows[p] * rb + PREFETCH) as *const i8);
            v[p] = int_dot::<T>(weight_q::<T>(base.add(rows[p] * rb)), y);
        }
        let isum = _mm256_cvtepi32_ps(reduce8(v));
        acc = _mm256_fmadd_ps(isum, _mm256_mul_ps(dw, _mm256_set1_ps(ab.d)), acc);
        if T == Q4_1 {
            let mw = _mm256_cvtph_ps(halves(g, hi16));
            accm = _mm256_fmadd_ps(mw, _mm256_set1_ps(ab.s), accm);
        }
    }
    let r = if T == Q4_1 {
        _mm256_add_ps(acc, accm)
    } else {
        acc
    };
    _mm256_storeu_ps(out.as_mut_ptr(), r);
}

/// 2 weight rows × 4 activation rows (prefill, batched decode): lane p = 2·c + r for weight row r
/// (`w0`, `w1`) and activation row c (`a[c]`). `out[p]` receives lane p.
///
/// # Safety
/// avx2, fma, f16c present; both rows hold `nb` blocks of format `T`; every `a[c]` holds `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn k2x4<const T: u8>(
    w0: *const u8,
    w1: *const u8,
    a: [*const BlockQ8; 4],
    nb: usize,
    out: &mut [f32; 8],
) {
    let bsz = block_bytes(T);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for b in 0..nb {
        let (b0, b1) = (w0.add(b * bsz), w1.add(b * bsz));
        let (q0, q1) = (weight_q::<T>(b0), weight_q::<T>(b1));
        let ab = [&*a[0].add(b), &*a[1].add(b), &*a[2].add(b), &*a[3].add(b)];
        let mut v = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let y = _mm256_loadu_si256(ab[c].qs.as_ptr() as *const __m256i);
            v[2 * c] = int_dot::<T>(q0, y);
            v[2 * c + 1] = int_dot::<T>(q1, y);
        }
        let isum = _mm256_cvtepi32_ps(reduce8(v));
        let (d0, d1) = (f16(b0), f16(b1));
        let dw = _mm256_setr_ps(d0, d1, d0, d1, d0, d1, d0, d1);
        let da = _mm256_setr_ps(
            ab[0].d, ab[0].d, ab[1].d, ab[1].d, ab[2].d, ab[2].d, ab[3].d, ab[3].d,
        );
        acc = _mm256_fmadd_ps(isum, _mm256_mul_ps(dw, da), acc);
        if T == Q4_1 {
            let (m0, m1) = (f16(b0.add(2)), f16(b1.add(2)));
            let mw = _mm256_setr_ps(m0, m1, m0, m1, m0, m1, m0, m1);
            let s = _mm256_setr_ps(
                ab[0].s, ab[0].s, ab[1].s, ab[1].s, ab[2].s, ab[2].s, ab[3].s, ab[3].s,
            );
            accm = _mm256_fmadd_ps(mw, s, accm);
        }
    }
    let r = if T == Q4_1 {
        _mm256_add_ps(acc, accm)
    } else {
        acc
    };
    _mm256_storeu_ps(out.as_mut_ptr(), r);
}

/// Quantized values of a block from a pointer to its `qs` bytes (packed layout).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qs_vec<const T: u8>(qs: *const u8) -> __m256i {
    match T {
        Q4_0 => _mm256_sub_epi8(nibbles(qs), _mm256_set1_epi8(8)),
        Q4_1 => nibbles(qs),
        _ => _mm256_loadu_si256(qs as *const __m256i),
    }
}

/// Bytes of one 8-row group block in the packed layout, and the offset of its `qs` part
/// (see `crate::packed`).
#[inline(always)]
pub const fn packed_group_bytes(t: u8) -> (usize, usize, usize) {
    // (group block bytes, header bytes, qs bytes per row)
    match t {
        Q4_0 => (144, 16, 16),
        Q4_1 => (160, 32, 16),
        _ => (272, 16, 32),
    }
}

/// [`k8x1`] over one 8-row group of the packed layout: `g` points to the group's first block;
/// the 8 lanes are the group's rows. Reads one sequential stream.
///
/// # Safety
/// avx2, fma, f16c present; `g` holds `nb` packed group blocks of format `T`; `a` holds `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn k8x1_packed<const T: u8>(
    g: *const u8,
    a: *const BlockQ8,
    nb: usize,
    out: &mut [f32; 8],
) {
    let (gb, hdr, qsz) = packed_group_bytes(T);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for b in 0..nb {
        let base = g.add(b * gb);
        _mm_prefetch::<_MM_HINT_T0>(base.add(4 * gb) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(4 * gb + 64) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(4 * gb + 128) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(base.add(4 * gb + 192) as *const i8);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(base as *const __m128i));
        let ab = &*a.add(b);
        let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
        let mut v = [_mm256_setzero_si256(); 8];
        for (p, vp) in v.iter_mut().enumerate() {
            *vp = int_dot::<T>(qs_vec::<T>(base.add(hdr + p * qsz)), y);
        }
        let isum = _mm256_cvtepi32_ps(reduce8(v));
        acc = _mm256_fmadd_ps(isum, _mm256_mul_ps(dw, _mm256_set1_ps(ab.d)), acc);
        if T == Q4_1 {
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(base.add(16) as *const __m128i));
            accm = _mm256_fmadd_ps(mw, _mm256_set1_ps(ab.s), accm);
        }
    }
    let r = if T == Q4_1 {
        _mm256_add_ps(acc, accm)
    } else {
        acc
    };
    _mm256_storeu_ps(out.as_mut_ptr(), r);
}

/// Per-block activation scales of 4 activation rows in the lane order of [`k2x4_packed`]
/// (lane 2·c + r): `[d_a × 8][s_a × 8]`, computed once per activation group and reused for every
/// weight row pair.
pub fn act_scales4(a: [&[BlockQ8]; 4], out: &mut Vec<[f32; 16]>) {
    out.clear();
    for b in 0..a[0].len() {
        let mut v = [0f32; 16];
        for (c, row) in a.iter().enumerate() {
            v[2 * c] = row[b].d;
            v[2 * c + 1] = row[b].d;
            v[8 + 2 * c] = row[b].s;
            v[8 + 2 * c + 1] = row[b].s;
        }
        out.push(v);
    }
}

/// Two f16 at `p` as the f32 pattern [x0, x1, x0, x1, ...] over 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_f16(p: *const u8) -> __m256 {
    let h = _mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32));
    let f = _mm_cvtph_ps(h);
    _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(f)))
}

/// [`k2x4`] over rows `l` and `l + 1` of one packed 8-row group (`g` as in [`k8x1_packed`]);
/// `sc` holds the activation rows' scales from [`act_scales4`].
///
/// # Safety
/// As [`k8x1_packed`], `l + 1 < 8`, every `a[c]` and `sc` hold `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn k2x4_packed<const T: u8>(
    g: *const u8,
    l: usize,
    a: [*const BlockQ8; 4],
    sc: *const [f32; 16],
    nb: usize,
    out: &mut [f32; 8],
) {
    let (gb, hdr, qsz) = packed_group_bytes(T);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for b in 0..nb {
        let base = g.add(b * gb);
        let q0 = qs_vec::<T>(base.add(hdr + l * qsz));
        let q1 = qs_vec::<T>(base.add(hdr + (l + 1) * qsz));
        let mut v = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let y = _mm256_loadu_si256((*a[c].add(b)).qs.as_ptr() as *const __m256i);
            v[2 * c] = int_dot::<T>(q0, y);
            v[2 * c + 1] = int_dot::<T>(q1, y);
        }
        let isum = _mm256_cvtepi32_ps(reduce8(v));
        let scb = (*sc.add(b)).as_ptr();
        let dw = pair_f16(base.add(2 * l));
        acc = _mm256_fmadd_ps(isum, _mm256_mul_ps(dw, _mm256_loadu_ps(scb)), acc);
        if T == Q4_1 {
            let mw = pair_f16(base.add(16 + 2 * l));
            accm = _mm256_fmadd_ps(mw, _mm256_loadu_ps(scb.add(8)), accm);
        }
    }
    let r = if T == Q4_1 {
        _mm256_add_ps(acc, accm)
    } else {
        acc
    };
    _mm256_storeu_ps(out.as_mut_ptr(), r);
}

/// One row pair through [`k8x1`] (lane 0).
///
/// # Safety
/// avx2, fma, f16c present; `w` holds `a.len()` blocks of format `T`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_blocks<const T: u8>(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut out = [0f32; 8];
    k8x1::<T>(w.as_ptr(), 0, [0; 8], a.as_ptr(), a.len(), &mut out);
    out[0]
}

/// AVX2 version of [`crate::scalar::dot_q4_0`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q4_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    dot_blocks::<Q4_0>(w, a)
}

/// AVX2 version of [`crate::scalar::dot_q4_1`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q4_1 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1(w: &[u8], a: &[BlockQ8]) -> f32 {
    dot_blocks::<Q4_1>(w, a)
}

/// AVX2 version of [`crate::scalar::dot_q8_0`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    dot_blocks::<Q8_0>(w, a)
}

/// Exact i32 partial sums of Σ q·y for signed weights `q` (|q| < 128) and activations `y`:
/// maddubs needs an unsigned operand, so it takes |q| and moves q's sign onto y.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_dot(q: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q)),
        _mm256_set1_epi16(1),
    )
}

/// Bit e of the 4 bytes at `p` as byte e of the result: 0xFF where set, 0 where clear
/// (ggml's `bytes_from_bits_32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 4 readable bytes at p.
    let x = std::ptr::read_unaligned(p as *const i32);
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
    let bit_mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi64x(-1))
}

/// AVX2 version of [`crate::scalar::dot_q5_0`]: per block the exact integer dot as 8 lanes,
/// accumulated with one fma by d·d_a.
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `a.len()` Q5_0 blocks (22 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(w.len() >= a.len() * 22, "Q5_0 row too short");
    let mut acc = _mm256_setzero_ps();
    for (b, ab) in a.iter().enumerate() {
        // SAFETY: block b (22 bytes) is within w (asserted above).
        let blk = w.as_ptr().add(b * 22);
        let hb = _mm256_and_si256(bytes_from_bits_32(blk.add(2)), _mm256_set1_epi8(0x10));
        let q = _mm256_sub_epi8(
            _mm256_or_si256(nibbles(blk.add(6)), hb),
            _mm256_set1_epi8(16),
        );
        let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
        let p = _mm256_cvtepi32_ps(signed_dot(q, y));
        acc = _mm256_fmadd_ps(p, _mm256_set1_ps(f16(blk) * ab.d), acc);
    }
    hsum(acc)
}

/// AVX2 version of [`crate::scalar::dot_q4_k`]: per 32-element sub-block j the exact integer
/// dot of its unsigned nibbles with activation block j, accumulated with one fma by
/// d·sc_j·d_a; the mins term Σ_j (dmin·m_j)·s_a,j is summed in scalar.
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `a.len()` is a multiple of 8 and `w` holds
/// `a.len() / 8` Q4_K super-blocks (144 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(
        a.len().is_multiple_of(8) && w.len() >= a.len() / 8 * 144,
        "Q4_K row too short"
    );
    let ones = _mm256_set1_epi16(1);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (sb, acts) in a.chunks_exact(8).enumerate() {
        let bytes = &w[sb * 144..(sb + 1) * 144];
        let blk = bytes.as_ptr();
        let (d, dmin) = (f16(blk), f16(blk.add(2)));
        for c in 0..4 {
            // SAFETY: bytes 16 + 32c .. 48 + 32c are within the 144-byte super-block.
            let raw = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
            let halves = [
                _mm256_and_si256(raw, low),
                _mm256_and_si256(_mm256_srli_epi16(raw, 4), low),
            ];
            for (h, q) in halves.into_iter().enumerate() {
                let j = 2 * c + h;
                let ab = &acts[j];
                let (sc, m) = crate::formats::scale_min_k4(j, &bytes[4..16]);
                let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones));
                acc = _mm256_fmadd_ps(p, _mm256_set1_ps(d * sc as f32 * ab.d), acc);
                mins += dmin * m as f32 * ab.s;
            }
        }
    }
    hsum(acc) - mins
}

/// AVX2 version of [`crate::scalar::dot_q6_k`]: per activation block the signed 6-bit values
/// (q − 32) are multiplied exactly, the 16-bit pair sums of each half weighted by that half's
/// i8 scale in the same madd, then accumulated with one fma by d·d_a.
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `a.len()` is a multiple of 8 and `w` holds
/// `a.len() / 8` Q6_K super-blocks (210 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k(w: &[u8], a: &[BlockQ8]) -> f32 {
    assert!(
        a.len().is_multiple_of(8) && w.len() >= a.len() / 8 * 210,
        "Q6_K row too short"
    );
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for (sb, acts) in a.chunks_exact(8).enumerate() {
        let bytes = &w[sb * 210..(sb + 1) * 210];
        let blk = bytes.as_ptr();
        let d = f16(blk.add(208));
        for h in 0..2 {
            // SAFETY: ql (0..128), qh (128..192) and the scales (192..208) are in the block.
            let ql0 = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
            // Quarter p: low nibbles of ql0, ql1, then high nibbles; bits 2p..2p+2 of qh.
            let lo = [
                _mm256_and_si256(ql0, low),
                _mm256_and_si256(ql1, low),
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
            ];
            let hi = [
                qh,
                _mm256_srli_epi16(qh, 2),
                _mm256_srli_epi16(qh, 4),
                _mm256_srli_epi16(qh, 6),
            ];
            for p in 0..4 {
                let b = 4 * h + p;
                let ab = &acts[b];
                let hb = _mm256_slli_epi16(_mm256_and_si256(hi[p], two), 4);
                let q = _mm256_sub_epi8(_mm256_or_si256(lo[p], hb), _mm256_set1_epi8(32));
                let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
                let sc = _mm256_set_m128i(
                    _mm_set1_epi16(bytes[192 + 2 * b + 1] as i8 as i16),
                    _mm_set1_epi16(bytes[192 + 2 * b] as i8 as i16),
                );
                let p32 = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, sc));
                acc = _mm256_fmadd_ps(p32, _mm256_set1_ps(d * ab.d), acc);
            }
        }
    }
    hsum(acc)
}

/// AVX2 version of [`crate::scalar::dot`] (any length).
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc0,
        );
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i + 8)),
            _mm256_loadu_ps(b.as_ptr().add(i + 8)),
            acc1,
        );
        i += 16;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc0,
        );
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// AVX2 version of [`crate::scalar::dot_f32`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `x.len()` f32 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= x.len() * 4);
    // SAFETY: w holds x.len() little-endian f32 (x86 is little-endian); unaligned loads are used.
    let ws = std::slice::from_raw_parts(w.as_ptr() as *const f32, x.len());
    let n = x.len();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        acc = _mm256_fmadd_ps(
            _mm256_loadu_ps(ws.as_ptr().add(i)),
            _mm256_loadu_ps(x.as_ptr().add(i)),
            acc,
        );
        i += 8;
    }
    let mut s = hsum(acc);
    while i < n {
        s += std::ptr::read_unaligned(ws.as_ptr().add(i)) * x[i];
        i += 1;
    }
    s
}

/// AVX2 version of [`crate::scalar::dot_f16`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `w` holds `x.len()` f16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    debug_assert!(w.len() >= x.len() * 2);
    let n = x.len();
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 f16 values (16 bytes) at element i are within w.
        let h = _mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i);
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(x.as_ptr().add(i)), acc);
        i += 8;
    }
    let mut s = hsum(acc);
    while i < n {
        s += f16(w.as_ptr().add(2 * i)) * x[i];
        i += 1;
    }
    s
}

/// y += a · x (attention value accumulation).
///
/// # Safety
/// The CPU must support avx2, fma and f16c; `y.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n for both slices.
        let r = _mm256_fmadd_ps(
            va,
            _mm256_loadu_ps(x.as_ptr().add(i)),
            _mm256_loadu_ps(y.as_ptr().add(i)),
        );
        _mm256_storeu_ps(y.as_mut_ptr().add(i), r);
        i += 8;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// exp for softmax arguments (x <= 0), 8 lanes at a time; same algorithm as
/// [`crate::scalar::exp_neg`].
///
/// # Safety
/// The CPU must support avx2, fma and f16c.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_in_place(xs: &mut [f32]) {
    let n = xs.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let x = _mm256_loadu_ps(xs.as_ptr().add(i));
        _mm256_storeu_ps(xs.as_mut_ptr().add(i), exp8(x));
        i += 8;
    }
    if i < n {
        let mut tmp = [0f32; 8];
        tmp[..n - i].copy_from_slice(&xs[i..]);
        let r = exp8(_mm256_loadu_ps(tmp.as_ptr()));
        _mm256_storeu_ps(tmp.as_mut_ptr(), r);
        xs[i..].copy_from_slice(&tmp[..n - i]);
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp8(x: __m256) -> __m256 {
    use crate::scalar::EXP_C;
    let tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3), _CMP_LT_OQ);
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_setzero_ps());
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693_145_75), x);
    let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(EXP_C[5]);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[4]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[3]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[2]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[1]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C[0]));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    let bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    let y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    _mm256_andnot_ps(tiny, y)
}

/// One run of the online softmax for a query of `NV * 8` dims (see `crate::attention`) over K
/// stored transposed (element d of position j at `kt[d * kt_stride + j]`): 8 positions' scores per
/// vector, no horizontal sums. The query's output accumulator lives in registers for the V pass;
/// the exp of the scores (the correction factor rides in a spare lane) is computed in place.
///
/// # Safety
/// avx2, fma, f16c present; `q` and `acc` hold NV·8 floats; `kt` holds NV·8 rows of `n_pos`
/// floats `kt_stride` apart; `v` holds `n_pos` rows of NV·8 floats `v_stride` apart; `n_pos <= 64`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_run<const NV: usize>(
    q: *const f32,
    kt: *const f32,
    kt_stride: usize,
    v: *const f32,
    v_stride: usize,
    n_pos: usize,
    scale: f32,
    m: &mut f32,
    l: &mut f32,
    acc: *mut f32,
) {
    let hd = NV * 8;
    let mut s = [0f32; 72];
    let sc = _mm256_set1_ps(scale);
    for c in 0..n_pos.div_ceil(8) {
        let left = (n_pos - 8 * c).min(8) as i32;
        let mk = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(left),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let base = kt.add(8 * c);
        let mut a = [_mm256_setzero_ps(); 4];
        let mut d = 0;
        while d < hd {
            for (u, au) in a.iter_mut().enumerate() {
                let kv = _mm256_maskload_ps(base.add((d + u) * kt_stride), mk);
                *au = _mm256_fmadd_ps(_mm256_set1_ps(*q.add(d + u)), kv, *au);
            }
            d += 4;
        }
        let sv = _mm256_mul_ps(
            _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
            sc,
        );
        _mm256_storeu_ps(s.as_mut_ptr().add(8 * c), sv);
    }
    let mut run_max = f32::NEG_INFINITY;
    for sj in s.iter().take(n_pos) {
        run_max = run_max.max(*sj);
    }
    let first = *m == f32::NEG_INFINITY;
    let m_new = m.max(run_max);
    for sj in s.iter_mut().take(n_pos) {
        *sj -= m_new;
    }
    s[n_pos] = if first { 0.0 } else { *m - m_new };
    exp_in_place(&mut s[..n_pos + 1]);
    let corr = if first { 0.0 } else { s[n_pos] };
    let mut sum = 0f32;
    for sj in s.iter().take(n_pos) {
        sum += sj;
    }
    *l = *l * corr + sum;
    let c = _mm256_set1_ps(corr);
    let mut av = [_mm256_setzero_ps(); NV];
    for (i, r) in av.iter_mut().enumerate() {
        *r = _mm256_mul_ps(_mm256_loadu_ps(acc.add(8 * i)), c);
    }
    for (j, sj) in s.iter().enumerate().take(n_pos) {
        let w = _mm256_set1_ps(*sj);
        let vj = v.add(j * v_stride);
        for (i, r) in av.iter_mut().enumerate() {
            *r = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj.add(8 * i)), *r);
        }
    }
    for (i, r) in av.iter().enumerate() {
        _mm256_storeu_ps(acc.add(8 * i), *r);
    }
    *m = m_new;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::QK;
    use crate::quantize::quantize_row_q8;
    use crate::scalar;
    use rand::{Rng, SeedableRng};

    fn avx2() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    fn random_blocks(
        rng: &mut rand::rngs::StdRng,
        n_blocks: usize,
        size: usize,
        scale_at: &[usize],
    ) -> Vec<u8> {
        let mut w: Vec<u8> = (0..n_blocks * size).map(|_| rng.gen()).collect();
        for b in 0..n_blocks {
            for &o in scale_at {
                let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05))
                    .to_bits()
                    .to_le_bytes();
                w[b * size + o] = v[0];
                w[b * size + o + 1] = v[1];
            }
        }
        w
    }

    /// Tolerance: the SIMD path sums the same integer products in another order of f32 additions,
    /// so the difference is rounding only: relative 1e-4 of Σ|terms| is generous.
    fn close(a: f32, b: f32, mag: f32) -> bool {
        (a - b).abs() <= 1e-4 * mag.max(1e-3)
    }

    #[test]
    fn quantized_dots_match_scalar_on_awkward_sizes() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n_blocks in [1usize, 2, 3, 7, 18, 33, 48] {
            let x: Vec<f32> = (0..n_blocks * QK)
                .map(|_| rng.gen_range(-3.0f32..3.0))
                .collect();
            let mut a = vec![BlockQ8::default(); n_blocks];
            quantize_row_q8(&x, &mut a);
            let mag: f32 = x.iter().map(|v| v.abs()).sum::<f32>() * 0.6;
            let w40 = random_blocks(&mut rng, n_blocks, 18, &[0]);
            let w41 = random_blocks(&mut rng, n_blocks, 20, &[0, 2]);
            let w80 = random_blocks(&mut rng, n_blocks, 34, &[0]);
            // SAFETY: features checked above.
            unsafe {
                let (s, v) = (scalar::dot_q4_0(&w40, &a), dot_q4_0(&w40, &a));
                assert!(close(s, v, mag), "q4_0 n_blocks={n_blocks}: {s} vs {v}");
                let (s, v) = (scalar::dot_q4_1(&w41, &a), dot_q4_1(&w41, &a));
                assert!(close(s, v, mag), "q4_1 n_blocks={n_blocks}: {s} vs {v}");
                let (s, v) = (scalar::dot_q8_0(&w80, &a), dot_q8_0(&w80, &a));
                assert!(
                    close(s, v, mag * 10.0),
                    "q8_0 n_blocks={n_blocks}: {s} vs {v}"
                );
            }
        }
    }

    #[test]
    fn k_quant_and_q5_0_dots_match_scalar_on_awkward_sizes() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        // Super-blocks for the k-quants (8 activation blocks each), plain blocks for Q5_0.
        for n_sb in [1usize, 2, 3, 5, 8, 11] {
            let n_blocks = 8 * n_sb;
            let x: Vec<f32> = (0..n_blocks * QK)
                .map(|_| rng.gen_range(-3.0f32..3.0))
                .collect();
            let mut a = vec![BlockQ8::default(); n_blocks];
            quantize_row_q8(&x, &mut a);
            let mut ak = vec![BlockQ8::default(); n_blocks];
            crate::quantize::quantize_row_q8_k(&x, &mut ak);
            let mag: f32 = x.iter().map(|v| v.abs()).sum::<f32>();
            let w50 = random_blocks(&mut rng, n_blocks, 22, &[0]);
            let w4k = random_blocks(&mut rng, n_sb, 144, &[0, 2]);
            let w6k = random_blocks(&mut rng, n_sb, 210, &[208]);
            // SAFETY: features checked above; each row holds the blocks of `a`.
            unsafe {
                let (s, v) = (scalar::dot_q5_0(&w50, &a), dot_q5_0(&w50, &a));
                assert!(close(s, v, mag), "q5_0 n_blocks={n_blocks}: {s} vs {v}");
                // Scales up to 63 (Q4_K: sc and m) and 128 (Q6_K) multiply the magnitude.
                let (s, v) = (scalar::dot_q4_k(&w4k, &ak), dot_q4_k(&w4k, &ak));
                assert!(close(s, v, mag * 63.0), "q4_k n_sb={n_sb}: {s} vs {v}");
                let (s, v) = (scalar::dot_q6_k(&w6k, &ak), dot_q6_k(&w6k, &ak));
                assert!(close(s, v, mag * 128.0), "q6_k n_sb={n_sb}: {s} vs {v}");
            }
            // Q5_0 on an odd number of blocks too.
            let odd = n_blocks - 3;
            // SAFETY: as above.
            unsafe {
                let (s, v) = (scalar::dot_q5_0(&w50, &a[..odd]), dot_q5_0(&w50, &a[..odd]));
                assert!(close(s, v, mag), "q5_0 n_blocks={odd}: {s} vs {v}");
            }
        }
    }

    #[test]
    fn vector_exp_matches_scalar_reference() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for n in [1usize, 7, 8, 9, 31, 100] {
            let xs: Vec<f32> = (0..n).map(|_| rng.gen_range(-90.0f32..0.0)).collect();
            let mut v = xs.clone();
            // SAFETY: features checked above.
            unsafe { exp_in_place(&mut v) };
            for (x, g) in xs.iter().zip(&v) {
                let s = scalar::exp_neg(*x);
                assert!((g - s).abs() <= 2e-7 * s + 1e-38, "exp({x}): {g} vs {s}");
            }
        }
    }

    #[test]
    fn float_dots_and_axpy_match_scalar_on_awkward_sizes() {
        if !avx2() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for n in [1usize, 5, 8, 15, 16, 17, 63, 64, 65, 577] {
            let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let y: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let wf32: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            let wf16: Vec<u8> = y
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
                .collect();
            let mag = n as f32;
            // SAFETY: features checked above.
            unsafe {
                assert!(close(scalar::dot(&x, &y), dot(&x, &y), mag), "dot n={n}");
                assert!(
                    close(scalar::dot_f32(&wf32, &x), dot_f32(&wf32, &x), mag),
                    "dot_f32 n={n}"
                );
                assert!(
                    close(scalar::dot_f16(&wf16, &x), dot_f16(&wf16, &x), mag),
                    "dot_f16 n={n}"
                );
                let mut y1 = y.clone();
                let mut y2 = y.clone();
                for (o, v) in y1.iter_mut().zip(&x) {
                    *o += 0.37 * v;
                }
                axpy(0.37, &x, &mut y2);
                for (p, q) in y1.iter().zip(&y2) {
                    assert!((p - q).abs() <= 1e-6, "axpy n={n}");
                }
            }
        }
    }
}

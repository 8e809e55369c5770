//! Threaded quantized matrix multiplication: y (m, n) = x (m, k) · Wᵀ with W (n, k) stored in a
//! ggml format. Activations are quantized once per call (in parallel); the work is split over
//! chunks of weight rows on the warm pool, and inside a chunk a tile of 4 weight rows × 3
//! activation rows is computed per step, over activation-row panels that stay in L1/L2.
//!
//! Invariant: y[i, j] depends only on x row i and W row j, and the tiled kernels compute every
//! (i, j) with the same arithmetic whatever the tile shape, so results do not depend on what else
//! is in the batch.

// The x86 tiers are compiled out elsewhere, which leaves some of their plumbing unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_imports))]

use crate::dispatch::{isa, Isa};
use crate::formats::{BlockQ8, WeightType, QK};
use crate::pool::parallel_for;
use crate::quantize::{quantize_row_q8, quantize_row_q8_k, super_block_acts};
use crate::scalar;

/// A borrowed weight matrix of `n` rows of `k` elements in format `ty` (row-major, ggml layout).
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub ty: WeightType,
    pub n: usize,
    pub k: usize,
    pub data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Bytes of row `j`.
    pub fn row(&self, j: usize) -> &'a [u8] {
        let rb = self.ty.row_bytes(self.k);
        &self.data[j * rb..(j + 1) * rb]
    }
}

/// A borrowed matrix in the packed 8-row layout (see `crate::packed`), `n` logical rows.
#[derive(Clone, Copy, Debug)]
pub struct PackedMatrix<'a> {
    pub ty: WeightType,
    pub n: usize,
    pub k: usize,
    pub data: &'a [u8],
}

/// A weight in either layout.
#[derive(Clone, Copy, Debug)]
pub enum Mat<'a> {
    Rows(WeightMatrix<'a>),
    Packed(PackedMatrix<'a>),
}

impl Mat<'_> {
    pub fn ty(&self) -> WeightType {
        match self {
            Mat::Rows(w) => w.ty,
            Mat::Packed(p) => p.ty,
        }
    }
    pub fn n(&self) -> usize {
        match self {
            Mat::Rows(w) => w.n,
            Mat::Packed(p) => p.n,
        }
    }
    pub fn k(&self) -> usize {
        match self {
            Mat::Rows(w) => w.k,
            Mat::Packed(p) => p.k,
        }
    }
}

/// Pointer wrapper so disjoint output elements can be written from several threads.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each task writes a disjoint set of columns of y (see `matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Pointer to element `i` (a method, so closures capture the whole Send wrapper).
    #[inline]
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Weight rows per chunk are a multiple of this (the VNNI kernel's height; twice the 8×1 kernel's).
const TW: usize = 16;
/// Activation rows per panel (kept hot while a chunk of weight rows streams past).
const PANEL: usize = 48;
// The k-quant tiles of `panel_vnni` start at multiples of MAX_TILE_K, as `tiled_index` assumes.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(PANEL.is_multiple_of(crate::avx512::MAX_TILE_K));

/// y (m × n, row-major) = x (m × k, row-major) · Wᵀ.
///
/// Panics if the slice lengths disagree with `w.n`, `w.k` (a caller bug, not bad input).
pub fn matmul(w: &WeightMatrix<'_>, x: &[f32], y: &mut [f32]) {
    matmul_many(&[Mat::Rows(*w)], x, &mut [y]);
}

/// Several products of the same input in one parallel region: ys[i] = x · ws[i]ᵀ (Q, K and V of
/// a layer; gate and up). The input is quantized once and all weight rows are split into chunks
/// together, which halves the synchronisation points of a decode step.
pub fn matmul_many(ws: &[Mat<'_>], x: &[f32], ys: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), ys.len(), "one output per weight");
    let Some(k) = ws.first().map(|w| w.k()) else {
        return;
    };
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "x length {} is not a multiple of k={k}",
        x.len()
    );
    let m = x.len() / k;
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(w.k(), k, "all weights of matmul_many share k");
        assert!(
            k.is_multiple_of(w.ty().block_size()),
            "k={k} is not a multiple of {:?}'s block size",
            w.ty()
        );
        assert_eq!(y.len(), m * w.n(), "y must be m × n");
        match w {
            Mat::Rows(w) => assert!(
                w.data.len() >= w.ty.row_bytes(k) * w.n,
                "weight data too short"
            ),
            Mat::Packed(p) => {
                assert!(
                    isa() == Isa::Avx2,
                    "the packed layout needs the avx2 kernels"
                );
                assert!(
                    p.data.len() >= crate::packed::packed_len(p.ty, p.n, k),
                    "packed data too short"
                );
            }
        }
    }
    let threads = crate::pool::pool().n_threads();
    let total_rows: usize = ws.iter().map(|w| w.n()).sum();
    // Enough chunks to balance load, each a multiple of the tile height.
    // Decode-sized calls are bound by memory bandwidth: one long contiguous stream per thread
    // reads fastest. Larger calls are compute-bound: more chunks balance the load.
    let per_thread = if m < 4 { 1 } else { 4 };
    let chunk = (total_rows.div_ceil(threads * per_thread))
        .max(8)
        .next_multiple_of(TW);
    let mut chunks: Vec<(usize, usize, usize)> = Vec::new();
    for (wi, w) in ws.iter().enumerate() {
        let mut j = 0;
        while j < w.n() {
            let e = (j + chunk).min(w.n());
            chunks.push((wi, j, e));
            j = e;
        }
    }
    let outs: Vec<OutPtr> = ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect();
    let nb = k / QK;
    // Two groupings of the quantized activations (`crate::quantize`): per 32 values for the
    // 32-element formats (`a`), per 256 for the k-quants (`ak`), each made only when a weight of
    // its family is in the call. They live in per-thread scratch buffers that only grow: a fresh
    // allocation per call costs page faults and a memset as large as the work on big batches.
    let mut a = ACT_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let mut ak = ACT_SCRATCH_K.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let mut akt = ACT_SCRATCH_KT.with(|s| std::mem::take(&mut *s.borrow_mut()));
    // Sums the VNNI kernels need besides the blocks: Σ of each block for the offset formats,
    // Q6_K's per-16 sums as i16 pairs. Computed with the quantization, in the same parallel tasks.
    let vnni = crate::dispatch::vnni();
    let vnni_packed = |w: &Mat<'_>| vnni && matches!(w, Mat::Packed(_));
    let packed_as = |tys: &[WeightType]| {
        vnni && ws
            .iter()
            .any(|w| matches!(w, Mat::Packed(p) if tys.contains(&p.ty)))
    };
    // The k-quants' activations go row by row to every kernel but the VNNI ones, which read them
    // interleaved per tile (`crate::avx512::tiled_index`); each layout is made only when used.
    let need_a = ws
        .iter()
        .any(|w| w.ty().quantizes_activations() && !super_block_acts(w.ty()));
    let need_ak = ws
        .iter()
        .any(|w| w.ty().quantizes_activations() && super_block_acts(w.ty()) && !vnni_packed(w));
    let need_akt = ws
        .iter()
        .any(|w| super_block_acts(w.ty()) && vnni_packed(w));
    let need_asum = packed_as(&[WeightType::Q4_0, WeightType::Q5_0, WeightType::Q8_0]);
    let need_hsum = packed_as(&[WeightType::Q6_K]);
    let mut asum = vec![0i32; if need_asum { m * nb } else { 0 }];
    let mut hsum = vec![0i32; if need_hsum { m * nb } else { 0 }];
    if need_a || need_ak || need_akt {
        assert!(k.is_multiple_of(QK), "k={k} is not a multiple of {QK}");
        if need_a {
            a.resize(m * nb, BlockQ8::default());
        }
        if need_ak {
            ak.resize(m * nb, BlockQ8::default());
        }
        if need_akt {
            akt.resize(m * nb, BlockQ8::default());
        }
        let (ap, akp, aktp) = (
            ActPtr(a.as_mut_ptr()),
            ActPtr(ak.as_mut_ptr()),
            ActPtr(akt.as_mut_ptr()),
        );
        let (sp, hp) = (SumPtr(asum.as_mut_ptr()), SumPtr(hsum.as_mut_ptr()));
        let rows_per_task = m.div_ceil(threads * 2).max(1);
        parallel_for(m.div_ceil(rows_per_task), |t| {
            let mut row = Vec::new();
            for i in t * rows_per_task..((t + 1) * rows_per_task).min(m) {
                let xi = &x[i * k..(i + 1) * k];
                if need_a {
                    // SAFETY: row i's blocks (and its sums) are written by this task only.
                    let blk = unsafe { std::slice::from_raw_parts_mut(ap.at(i * nb), nb) };
                    quantize_row_q8(xi, blk);
                    #[cfg(target_arch = "x86_64")]
                    if need_asum {
                        // SAFETY: as above; the buffer holds m × nb entries when needed.
                        let s = unsafe { std::slice::from_raw_parts_mut(sp.at(i * nb), nb) };
                        crate::avx512::block_sums(blk, s);
                    }
                }
                if need_ak || need_akt {
                    let blk: &mut [BlockQ8] = if need_ak {
                        // SAFETY: as above.
                        unsafe { std::slice::from_raw_parts_mut(akp.at(i * nb), nb) }
                    } else {
                        row.resize(nb, BlockQ8::default());
                        &mut row
                    };
                    quantize_row_q8_k(xi, blk);
                    #[cfg(target_arch = "x86_64")]
                    if need_akt {
                        for (b, blk) in blk.iter().enumerate() {
                            let at = crate::avx512::tiled_index(i, b, m, nb);
                            // SAFETY: tiled_index maps row i's blocks to slots of its own
                            // (distinct rows, distinct slots), within m × nb.
                            unsafe {
                                *aktp.at(at) = *blk;
                                if need_hsum {
                                    *hp.at(at) = crate::avx512::half_sum(blk);
                                }
                            }
                        }
                    }
                }
            }
        });
    }
    let (act, act_k, act_kt) = (&mut a, &mut ak, &mut akt);
    let (a32, a256, a256t, asum, hsum) = (&act[..], &act_k[..], &act_kt[..], &asum, &hsum);
    let acts_for = |w: &Mat<'_>| match () {
        _ if !super_block_acts(w.ty()) => a32,
        _ if vnni_packed(w) => a256t,
        _ => a256,
    };
    let use_avx2 = isa() == Isa::Avx2;
    parallel_for(chunks.len(), |c| {
        let (wi, j0, j1) = chunks[c];
        let (n, out) = (ws[wi].n(), outs[wi]);
        let a = acts_for(&ws[wi]);
        let w = match ws[wi] {
            Mat::Rows(w) => w,
            Mat::Packed(p) if vnni => {
                for p0 in (0..m).step_by(PANEL) {
                    let p1 = (p0 + PANEL).min(m);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: vnni checked; groups j0/16.. exist (padded); rows p0..p1 of a exist;
                    // each (i, j) written is in this chunk's columns and within m × n.
                    unsafe {
                        let sums = if p.ty == WeightType::Q6_K { hsum } else { asum };
                        panel_vnni(p.ty, p.data, nb, j0, j1, a, sums, p0, p1, &mut |i, j, v| {
                            let len = v.len().min(n - j);
                            std::ptr::copy_nonoverlapping(v.as_ptr(), out.at(i * n + j), len)
                        })
                    };
                }
                return;
            }
            Mat::Packed(p) => {
                for p0 in (0..m).step_by(PANEL) {
                    let p1 = (p0 + PANEL).min(m);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: avx2 checked above; groups j0/8.. exist (padded); rows p0..p1 of a exist.
                    unsafe {
                        panel_avx2_packed(p.ty, p.data, nb, j0, j1, a, p0, p1, &mut |i, j, v| {
                            *out.at(i * n + j) = v
                        })
                    };
                }
                return;
            }
        };
        if !w.ty.quantizes_activations() {
            let dot = fdot_for(w.ty);
            for j in j0..j1 {
                let wr = w.row(j);
                for i in 0..m {
                    let v = dot(wr, &x[i * k..(i + 1) * k]);
                    // SAFETY: (i, j) is within m × n and column j belongs to this chunk only.
                    unsafe { *out.at(i * n + j) = v };
                }
            }
            return;
        }
        let rb = w.ty.row_bytes(k);
        for p0 in (0..m).step_by(PANEL) {
            let p1 = (p0 + PANEL).min(m);
            if use_avx2 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the avx2 tier was detected; rows j0..j1 of w and p0..p1 of a exist.
                unsafe {
                    panel_avx2(w.ty, w.data, rb, j0, j1, a, nb, p0, p1, &mut |i, j, v| {
                        *out.at(i * n + j) = v
                    })
                };
            } else {
                let dot = pair_qdot(w.ty);
                for j in j0..j1 {
                    for i in p0..p1 {
                        let v = dot(w.row(j), &a[i * nb..(i + 1) * nb]);
                        // SAFETY: (i, j) is within m × n; column j belongs to this chunk.
                        unsafe { *out.at(i * n + j) = v };
                    }
                }
            }
        }
    });
    ACT_SCRATCH.with(|s| *s.borrow_mut() = std::mem::take(act));
    ACT_SCRATCH_K.with(|s| *s.borrow_mut() = std::mem::take(act_k));
    ACT_SCRATCH_KT.with(|s| *s.borrow_mut() = std::mem::take(act_kt));
}

thread_local! {
    static ACT_SCRATCH: std::cell::RefCell<Vec<BlockQ8>> = const { std::cell::RefCell::new(Vec::new()) };
    static ACT_SCRATCH_K: std::cell::RefCell<Vec<BlockQ8>> = const { std::cell::RefCell::new(Vec::new()) };
    static ACT_SCRATCH_KT: std::cell::RefCell<Vec<BlockQ8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Clone, Copy)]
struct ActPtr(*mut BlockQ8);
// SAFETY: tasks write disjoint activation rows.
unsafe impl Send for ActPtr {}
unsafe impl Sync for ActPtr {}

impl ActPtr {
    #[inline]
    fn at(self, i: usize) -> *mut BlockQ8 {
        self.0.wrapping_add(i)
    }
}

// The sums are only read by the x86 kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
struct SumPtr(*mut i32);
// SAFETY: tasks write the sums of disjoint activation rows.
unsafe impl Send for SumPtr {}
unsafe impl Sync for SumPtr {}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl SumPtr {
    #[inline]
    fn at(self, i: usize) -> *mut i32 {
        self.0.wrapping_add(i)
    }
}

/// Weight rows j0..j1 × activation rows p0..p1 through the AVX2 kernels: groups of 4 activation
/// rows take the 2×4 kernel (each weight block unpacked once for 4 rows), the remaining rows the
/// 8×1 kernel. Both compute a pair with the same arithmetic, so the split is invisible in results.
/// `put(i, j, v)` stores y[i, j].
///
/// # Safety
/// avx2, fma and f16c present; the rows exist; `put` writes only this chunk's columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_avx2(
    ty: WeightType,
    w: &[u8],
    rb: usize,
    j0: usize,
    j1: usize,
    a: &[BlockQ8],
    nb: usize,
    p0: usize,
    p1: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) {
    use crate::x86::{k2x4, k8x1, Q4_0, Q4_1, Q8_0};
    if let Some(dot) = avx2_pair_dot(ty) {
        // Formats without a tiled kernel: one per-pair dot for every (i, j), whatever the batch.
        for j in j0..j1 {
            let wr = &w[j * rb..(j + 1) * rb];
            for i in p0..p1 {
                put(i, j, dot(wr, &a[i * nb..(i + 1) * nb]));
            }
        }
        return;
    }
    let row = |j: usize| w.as_ptr().add(j * rb);
    let act = |i: usize| a.as_ptr().add(i * nb);
    let full = p0 + (p1 - p0) / 4 * 4;
    let mut out = [0f32; 8];
    // 2 weight rows × 4 activation rows.
    for i in (p0..full).step_by(4) {
        let acts = [act(i), act(i + 1), act(i + 2), act(i + 3)];
        let mut j = j0;
        while j < j1 {
            let j_second = if j + 1 < j1 { j + 1 } else { j };
            match ty {
                WeightType::Q4_0 => k2x4::<Q4_0>(row(j), row(j_second), acts, nb, &mut out),
                WeightType::Q4_1 => k2x4::<Q4_1>(row(j), row(j_second), acts, nb, &mut out),
                WeightType::Q8_0 => k2x4::<Q8_0>(row(j), row(j_second), acts, nb, &mut out),
                WeightType::F32 | WeightType::F16 => {
                    unreachable!("float weights take the f32 path")
                }
                WeightType::Q5_0 | WeightType::Q4_K | WeightType::Q6_K => {
                    unreachable!("formats without a tiled kernel take avx2_pair_dot")
                }
            }
            for c in 0..4 {
                put(i + c, j, out[2 * c]);
                if j_second != j {
                    put(i + c, j_second, out[2 * c + 1]);
                }
            }
            j += 2;
        }
    }
    // Remaining activation rows: 8 weight rows at a time (lanes past j1 repeat the last row).
    for i in full..p1 {
        let mut j = j0;
        while j < j1 {
            let rows: [usize; 8] = std::array::from_fn(|r| (r).min(j1 - 1 - j));
            match ty {
                WeightType::Q4_0 => k8x1::<Q4_0>(row(j), rb, rows, act(i), nb, &mut out),
                WeightType::Q4_1 => k8x1::<Q4_1>(row(j), rb, rows, act(i), nb, &mut out),
                WeightType::Q8_0 => k8x1::<Q8_0>(row(j), rb, rows, act(i), nb, &mut out),
                WeightType::F32 | WeightType::F16 => {
                    unreachable!("float weights take the f32 path")
                }
                WeightType::Q5_0 | WeightType::Q4_K | WeightType::Q6_K => {
                    unreachable!("formats without a tiled kernel take avx2_pair_dot")
                }
            }
            for (r, v) in out.iter().enumerate().take((j1 - j).min(8)) {
                put(i, j + r, *v);
            }
            j += 8;
        }
    }
}

/// [`panel_avx2`] for the packed layout (`j0` is a multiple of 8).
///
/// # Safety
/// avx2, fma and f16c present; the packed groups covering j0..j1 exist; `put` writes only this
/// chunk's columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_avx2_packed(
    ty: WeightType,
    w: &[u8],
    nb: usize,
    j0: usize,
    j1: usize,
    a: &[BlockQ8],
    p0: usize,
    p1: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) {
    use crate::x86::{act_scales4, k2x4_packed, k8x1_packed, Q4_0, Q4_1, Q8_0};
    debug_assert!(j0.is_multiple_of(8));
    let gb = crate::packed::packed_len(ty, 8, nb * QK);
    let group = |j: usize| w.as_ptr().add(j / 8 * gb);
    let act = |i: usize| a.as_ptr().add(i * nb);
    let full = p0 + (p1 - p0) / 4 * 4;
    let mut out = [0f32; 8];
    let mut sc = Vec::with_capacity(nb);
    for i in (p0..full).step_by(4) {
        let acts = [act(i), act(i + 1), act(i + 2), act(i + 3)];
        let rows = |c: usize| &a[(i + c) * nb..(i + c + 1) * nb];
        act_scales4([rows(0), rows(1), rows(2), rows(3)], &mut sc);
        let scp = sc.as_ptr();
        for j in (j0..j1).step_by(2) {
            let (g, l) = (group(j), j % 8);
            match ty {
                WeightType::Q4_0 => k2x4_packed::<Q4_0>(g, l, acts, scp, nb, &mut out),
                WeightType::Q4_1 => k2x4_packed::<Q4_1>(g, l, acts, scp, nb, &mut out),
                WeightType::Q8_0 => k2x4_packed::<Q8_0>(g, l, acts, scp, nb, &mut out),
                WeightType::F32
                | WeightType::F16
                | WeightType::Q5_0
                | WeightType::Q4_K
                | WeightType::Q6_K => unreachable!("only Q4_0, Q4_1 and Q8_0 are packable"),
            }
            for c in 0..4 {
                put(i + c, j, out[2 * c]);
                if j + 1 < j1 {
                    put(i + c, j + 1, out[2 * c + 1]);
                }
            }
        }
    }
    for i in full..p1 {
        for j in (j0..j1).step_by(8) {
            match ty {
                WeightType::Q4_0 => k8x1_packed::<Q4_0>(group(j), act(i), nb, &mut out),
                WeightType::Q4_1 => k8x1_packed::<Q4_1>(group(j), act(i), nb, &mut out),
                WeightType::Q8_0 => k8x1_packed::<Q8_0>(group(j), act(i), nb, &mut out),
                WeightType::F32
                | WeightType::F16
                | WeightType::Q5_0
                | WeightType::Q4_K
                | WeightType::Q6_K => unreachable!("only Q4_0, Q4_1 and Q8_0 are packable"),
            }
            for (r, v) in out.iter().enumerate().take((j1 - j).min(8)) {
                put(i, j + r, *v);
            }
        }
    }
}

/// Weight rows j0..j1 (`j0` a multiple of 16) × activation rows p0..p1 through the VNNI kernel,
/// [`crate::avx512::MAX_TILE`] ([`crate::avx512::MAX_TILE_K`] for the k-quants) activation rows
/// per call. `put(i, j, v)` stores y[i, j..j + 16]
/// (the caller clips past n).
///
/// # Safety
/// The VNNI tier was detected; the packed groups covering j0..j1 exist; `asum` holds the block
/// sums of `a` for Q4_0/Q5_0/Q8_0 and the half sums (`crate::avx512::half_sum`) for Q6_K; for the
/// k-quants both are in the interleaved order of `crate::avx512::tiled_index`; `put`
/// writes only this chunk's columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_vnni(
    ty: WeightType,
    w: &[u8],
    nb: usize,
    j0: usize,
    j1: usize,
    a: &[BlockQ8],
    asum: &[i32],
    p0: usize,
    p1: usize,
    put: &mut dyn FnMut(usize, usize, &[f32; 16]),
) {
    use crate::avx512::{gemm16, gemm16_q4_k, gemm16_q6_k, MAX_TILE, MAX_TILE_K, Q5_0};
    use crate::x86::{Q4_0, Q4_1, Q8_0};
    debug_assert!(j0.is_multiple_of(16));
    let gb = crate::packed::vnni_group_bytes(ty, nb * QK);
    let act = |i: usize| a.as_ptr().add(i * nb);
    let sums = |i: usize| {
        if asum.is_empty() {
            std::ptr::null()
        } else {
            asum.as_ptr().add(i * nb)
        }
    };
    macro_rules! tile {
        ($r:literal, $g:expr, $i:expr) => {{
            let mut out = [[0f32; 16]; $r];
            let acts: [*const BlockQ8; $r] = std::array::from_fn(|r| act($i + r));
            let ss: [*const i32; $r] = std::array::from_fn(|r| sums($i + r));
            // The k-quants' tile: its nb · R interleaved blocks (and half sums) at row $i's place.
            let (tile, tile_sums) = (act($i), sums($i));
            match ty {
                WeightType::Q4_0 => gemm16::<Q4_0, $r>($g, nb, acts, ss, &mut out),
                WeightType::Q4_1 => gemm16::<Q4_1, $r>($g, nb, acts, ss, &mut out),
                WeightType::Q8_0 => gemm16::<Q8_0, $r>($g, nb, acts, ss, &mut out),
                WeightType::Q5_0 => gemm16::<Q5_0, $r>($g, nb, acts, ss, &mut out),
                WeightType::Q4_K => gemm16_q4_k::<$r>($g, nb, tile, &mut out),
                WeightType::Q6_K => gemm16_q6_k::<$r>($g, nb, tile, tile_sums, &mut out),
                WeightType::F32 | WeightType::F16 => {
                    unreachable!("float weights have no packed layout")
                }
            }
            out
        }};
    }
    let max_tile = if super_block_acts(ty) {
        MAX_TILE_K
    } else {
        MAX_TILE
    };
    for j in (j0..j1).step_by(16) {
        let g = w.as_ptr().add(j / 16 * gb);
        let mut i = p0;
        while i < p1 {
            let r = (p1 - i).min(max_tile);
            match r {
                8 => tile!(8, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                7 => tile!(7, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                6 => tile!(6, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                5 => tile!(5, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                4 => tile!(4, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                3 => tile!(3, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                2 => tile!(2, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
                _ => tile!(1, g, i)
                    .iter()
                    .enumerate()
                    .for_each(|(t, v)| put(i + t, j, v)),
            }
            i += r;
        }
    }
}

type QDot = fn(&[u8], &[BlockQ8]) -> f32;
type FDot = fn(&[u8], &[f32]) -> f32;

/// The AVX2 per-pair dot of the formats that have no tiled kernel (`None` for those that do).
#[cfg(target_arch = "x86_64")]
fn avx2_pair_dot(ty: WeightType) -> Option<QDot> {
    match ty {
        // SAFETY (all three): only called from panel_avx2, whose caller detected the features;
        // the row holds the blocks of `a` (checked by the functions' asserts).
        WeightType::Q5_0 => Some(|w, a| unsafe { crate::x86::dot_q5_0(w, a) }),
        WeightType::Q4_K => Some(|w, a| unsafe { crate::x86::dot_q4_k(w, a) }),
        WeightType::Q6_K => Some(|w, a| unsafe { crate::x86::dot_q6_k(w, a) }),
        _ => None,
    }
}

/// The per-pair dot of the non-x86 paths: NEON for the formats it has, else the scalar reference.
fn pair_qdot(ty: WeightType) -> QDot {
    #[cfg(target_arch = "aarch64")]
    if isa() == Isa::Neon {
        match ty {
            WeightType::Q4_0 => return crate::neon::dot_q4_0,
            WeightType::Q4_1 => return crate::neon::dot_q4_1,
            WeightType::Q8_0 => return crate::neon::dot_q8_0,
            WeightType::Q4_K => return crate::neon::dot_q4_k,
            WeightType::Q6_K => return crate::neon::dot_q6_k,
            _ => {}
        }
    }
    scalar_qdot(ty)
}

fn scalar_qdot(ty: WeightType) -> QDot {
    match ty {
        WeightType::Q4_0 => scalar::dot_q4_0,
        WeightType::Q4_1 => scalar::dot_q4_1,
        WeightType::Q5_0 => scalar::dot_q5_0,
        WeightType::Q8_0 => scalar::dot_q8_0,
        WeightType::Q4_K => scalar::dot_q4_k,
        WeightType::Q6_K => scalar::dot_q6_k,
        WeightType::F32 | WeightType::F16 => unreachable!("float weights use fdot_for"),
    }
}

fn fdot_for(ty: WeightType) -> FDot {
    match (isa(), ty) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY (both): features detected by isa().
        (Isa::Avx2, WeightType::F32) => |w, x| unsafe { crate::x86::dot_f32(w, x) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, WeightType::F16) => |w, x| unsafe { crate::x86::dot_f16(w, x) },
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, WeightType::F32) => crate::neon::dot_f32,
        (_, WeightType::F32) => scalar::dot_f32,
        (_, WeightType::F16) => scalar::dot_f16,
        _ => unreachable!("quantized weights use the tiled path"),
    }
}

/// Plain f32 dot product on the fastest path.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: features detected by isa().
        return unsafe { crate::x86::dot(a, b) };
    }
    #[cfg(target_arch = "aarch64")]
    if isa() == Isa::Neon {
        return crate::neon::dot(a, b);
    }
    scalar::dot(a, b)
}

/// y += a · x on the fastest path.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: features detected by isa().
        return unsafe { crate::x86::axpy(a, x, y) };
    }
    #[cfg(target_arch = "aarch64")]
    if isa() == Isa::Neon {
        return crate::neon::axpy(a, x, y);
    }
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{dequantize_row, QK_K};
    use rand::{Rng, SeedableRng};

    fn random_matrix(rng: &mut rand::rngs::StdRng, ty: WeightType, n: usize, k: usize) -> Vec<u8> {
        let rb = ty.row_bytes(k);
        let mut data: Vec<u8> = (0..rb * n).map(|_| rng.gen()).collect();
        let bs = ty.type_size();
        let scales: &[usize] = match ty {
            WeightType::Q4_1 => &[0, 2],
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => &[0],
            WeightType::Q4_K => &[0, 2],
            WeightType::Q6_K => &[208],
            WeightType::F16 => &[],
            WeightType::F32 => &[],
        };
        match ty {
            WeightType::F32 => {
                for c in data.chunks_mut(4) {
                    c.copy_from_slice(&rng.gen_range(-1.0f32..1.0).to_le_bytes());
                }
            }
            WeightType::F16 => {
                for c in data.chunks_mut(2) {
                    c.copy_from_slice(
                        &half::f16::from_f32(rng.gen_range(-1.0f32..1.0))
                            .to_bits()
                            .to_le_bytes(),
                    );
                }
            }
            _ => {
                for blk in data.chunks_mut(bs) {
                    for &o in scales {
                        let v = half::f16::from_f32(rng.gen_range(-0.05f32..0.05))
                            .to_bits()
                            .to_le_bytes();
                        blk[o..o + 2].copy_from_slice(&v);
                    }
                }
            }
        }
        data
    }

    /// matmul against dequantize-then-f64-dot: the difference is activation quantization
    /// (≤ 1/254 of each block's absmax per element) plus rounding, so the bound is relative to
    /// Σ|w|·|x|: 2% is loose enough for int8 activations and tight enough to catch layout bugs.
    #[test]
    fn matmul_matches_dequantized_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for ty in [
            WeightType::Q4_0,
            WeightType::Q4_1,
            WeightType::Q8_0,
            WeightType::Q5_0,
            WeightType::Q4_K,
            WeightType::Q6_K,
            WeightType::F16,
            WeightType::F32,
        ] {
            let shapes: &[(usize, usize, usize)] = if ty.block_size() == QK_K {
                &[(1, 1, 256), (3, 17, 512), (5, 33, 768), (1, 70, 2048)]
            } else {
                &[(1, 1, 32), (3, 17, 64), (5, 33, 576), (1, 70, 1536)]
            };
            for &(m, n, k) in shapes {
                let data = random_matrix(&mut rng, ty, n, k);
                let w = WeightMatrix {
                    ty,
                    n,
                    k,
                    data: &data,
                };
                let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let mut y = vec![0f32; m * n];
                matmul(&w, &x, &mut y);
                let mut row = vec![0f32; k];
                for j in 0..n {
                    dequantize_row(ty, w.row(j), &mut row);
                    for i in 0..m {
                        let xr = &x[i * k..(i + 1) * k];
                        let exact: f64 =
                            row.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f64 = row
                            .iter()
                            .zip(xr)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - exact).abs() <= 0.02 * mag + 1e-5,
                            "{ty:?} m={m} n={n} k={k} ({i},{j}): {got} vs {exact} (mag {mag})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_layout_gives_bit_identical_results() {
        if isa() != Isa::Avx2 {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for ty in [WeightType::Q4_0, WeightType::Q4_1, WeightType::Q8_0] {
            for (m, n, k) in [
                (1usize, 13usize, 64usize),
                (6, 40, 96),
                (9, 19, 576),
                (13, 33, 64),
                (53, 16, 96),
            ] {
                let data = random_matrix(&mut rng, ty, n, k);
                let w = WeightMatrix {
                    ty,
                    n,
                    k,
                    data: &data,
                };
                let packed = crate::packed::pack(ty, n, k, &data);
                let p = PackedMatrix {
                    ty,
                    n,
                    k,
                    data: &packed,
                };
                let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let (mut y1, mut y2) = (vec![0f32; m * n], vec![0f32; m * n]);
                matmul(&w, &x, &mut y1);
                matmul_many(&[Mat::Packed(p)], &x, &mut [&mut y2]);
                assert_eq!(y1, y2, "{ty:?} m={m} n={n} k={k}");
            }
        }
    }

    /// Q5_0 and the k-quants are packed only for the VNNI kernels, whose float steps differ from
    /// the AVX2 per-pair dots: equal within rounding, and batch-invariant on their own.
    #[test]
    fn q5_0_and_k_quants_packed_match_rows_and_are_batch_invariant() {
        if !crate::dispatch::vnni() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        for (ty, m, n, k) in [
            (WeightType::Q5_0, 1usize, 13usize, 64usize),
            (WeightType::Q5_0, 9, 40, 640),
            (WeightType::Q5_0, 14, 17, 96),
            (WeightType::Q4_K, 1, 13, 256),
            (WeightType::Q4_K, 9, 40, 512),
            (WeightType::Q4_K, 14, 17, 768),
            (WeightType::Q6_K, 1, 13, 256),
            (WeightType::Q6_K, 9, 40, 512),
            (WeightType::Q6_K, 14, 17, 768),
        ] {
            let data = random_matrix(&mut rng, ty, n, k);
            let w = WeightMatrix {
                ty,
                n,
                k,
                data: &data,
            };
            let packed = crate::packed::pack(ty, n, k, &data);
            let p = PackedMatrix {
                ty,
                n,
                k,
                data: &packed,
            };
            let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            let (mut y1, mut y2) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul(&w, &x, &mut y1);
            matmul_many(&[Mat::Packed(p)], &x, &mut [&mut y2]);
            for (a, b) in y1.iter().zip(&y2) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{ty:?} m={m} n={n} k={k}: {a} vs {b}"
                );
            }
            for i in 0..m {
                let mut one = vec![0f32; n];
                matmul_many(&[Mat::Packed(p)], &x[i * k..(i + 1) * k], &mut [&mut one]);
                assert_eq!(&y2[i * n..(i + 1) * n], &one[..], "row {i}");
            }
        }
    }

    /// The VNNI k-quant kernels do the scalar reference's arithmetic (exact integer block sums,
    /// the same f32 operations in the same order), so every element equals `scalar::dot_*` of
    /// the same quantized activations bit for bit, at tile and panel remainders (m = 7, 13, 50
    /// with tiles of 8 and panels of 48), row counts not a multiple of 16 and several super-blocks;
    /// and a row computed alone equals the same row in a batch.
    #[test]
    fn k_quants_packed_equal_scalar_bit_for_bit_at_any_batch() {
        if !crate::dispatch::vnni() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(23);
        for ty in [WeightType::Q4_K, WeightType::Q6_K] {
            for (m, n, k) in [
                (1usize, 13usize, 256usize),
                (7, 40, 512),
                (13, 17, 768),
                (50, 33, 256),
                (3, 1, 2304),
            ] {
                let data = random_matrix(&mut rng, ty, n, k);
                let packed = crate::packed::pack(ty, n, k, &data);
                assert_eq!(packed.len(), n.div_ceil(16) * 16 * ty.row_bytes(k));
                let p = Mat::Packed(PackedMatrix {
                    ty,
                    n,
                    k,
                    data: &packed,
                });
                let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let mut y = vec![0f32; m * n];
                matmul_many(&[p], &x, &mut [&mut y]);
                let dot = scalar_qdot(ty);
                let rb = ty.row_bytes(k);
                for i in 0..m {
                    let mut a = vec![BlockQ8::default(); k / QK];
                    crate::quantize::quantize_for(ty, &x[i * k..(i + 1) * k], &mut a);
                    for j in 0..n {
                        let want = dot(&data[j * rb..(j + 1) * rb], &a);
                        assert_eq!(
                            y[i * n + j].to_bits(),
                            want.to_bits(),
                            "{ty:?} m={m} n={n} k={k} ({i},{j}): {} vs {want}",
                            y[i * n + j]
                        );
                    }
                    let mut one = vec![0f32; n];
                    matmul_many(&[p], &x[i * k..(i + 1) * k], &mut [&mut one]);
                    assert_eq!(&y[i * n..(i + 1) * n], &one[..], "{ty:?} row {i} alone");
                }
            }
        }
    }

    #[test]
    fn matmul_many_equals_separate_matmuls() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let k = 96;
        let d1 = random_matrix(&mut rng, WeightType::Q4_1, 40, k);
        let d2 = random_matrix(&mut rng, WeightType::Q8_0, 13, k);
        let d3 = random_matrix(&mut rng, WeightType::F16, 9, k);
        let ws = [
            WeightMatrix {
                ty: WeightType::Q4_1,
                n: 40,
                k,
                data: &d1,
            },
            WeightMatrix {
                ty: WeightType::Q8_0,
                n: 13,
                k,
                data: &d2,
            },
            WeightMatrix {
                ty: WeightType::F16,
                n: 9,
                k,
                data: &d3,
            },
        ];
        let x: Vec<f32> = (0..5 * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let (mut y1, mut y2, mut y3) = (vec![0f32; 5 * 40], vec![0f32; 5 * 13], vec![0f32; 5 * 9]);
        let mats: Vec<Mat> = ws.iter().map(|w| Mat::Rows(*w)).collect();
        matmul_many(&mats, &x, &mut [&mut y1, &mut y2, &mut y3]);
        for (w, y) in ws.iter().zip([&y1, &y2, &y3]) {
            let mut one = vec![0f32; 5 * w.n];
            matmul(w, &x, &mut one);
            assert_eq!(&one, y);
        }
    }

    #[test]
    fn matmul_rows_do_not_depend_on_batch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (ty, n, k) in [
            (WeightType::Q4_1, 40, 96),
            (WeightType::Q5_0, 40, 96),
            (WeightType::Q4_K, 37, 512),
            (WeightType::Q6_K, 37, 512),
        ] {
            let data = random_matrix(&mut rng, ty, n, k);
            let w = WeightMatrix {
                ty,
                n,
                k,
                data: &data,
            };
            let x: Vec<f32> = (0..7 * k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            let mut all = vec![0f32; 7 * n];
            matmul(&w, &x, &mut all);
            for i in 0..7 {
                let mut one = vec![0f32; n];
                matmul(&w, &x[i * k..(i + 1) * k], &mut one);
                assert_eq!(&all[i * n..(i + 1) * n], &one[..], "{ty:?} row {i}");
            }
        }
    }
}

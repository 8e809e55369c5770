//! Attention over runs of cached positions with an online (blockwise) softmax, FlashAttention
//! style: a query keeps a running max `m`, normaliser `l` and unnormalised output `acc`; each run of
//! up to [`MAX_RUN`] positions (one KV block, contiguous in memory) updates them once, with a
//! vectorised exp. The caller decides which runs a query sees (its own blocks up to its position;
//! blocks shared by many sequences can be visited once for all of their queries: the per-query
//! arithmetic is the same either way, so results do not depend on how queries were grouped).
//!
//! Layout: K is transposed: element d of a run's position j is at `kt[d * kt_stride + j]` (the KV
//! cache stores each block's K that way, so a vector holds 8 or 16 positions of one dimension and
//! scores need no horizontal sums); V rows are `n_pos` rows of `head_dim` floats, `v_stride` apart.

// The x86 tiers are compiled out elsewhere, which leaves some of their plumbing unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_imports))]

use crate::dispatch::{isa, Isa};
use crate::scalar;

/// Longest run a call may process (the largest KV block size supported).
pub const MAX_RUN: usize = 64;

/// Running state of one query head.
#[derive(Clone, Debug)]
pub struct OnlineSoftmax {
    pub m: f32,
    pub l: f32,
    /// (head_dim,) Σ exp(s - m) v
    pub acc: Vec<f32>,
}

impl OnlineSoftmax {
    pub fn new(head_dim: usize) -> Self {
        OnlineSoftmax {
            m: f32::NEG_INFINITY,
            l: 0.0,
            acc: vec![0.0; head_dim],
        }
    }

    pub fn reset(&mut self) {
        self.m = f32::NEG_INFINITY;
        self.l = 0.0;
        self.acc.fill(0.0);
    }

    /// The attention output acc / l into `out` (zeros if nothing was attended).
    pub fn finish(&self, out: &mut [f32]) {
        let inv = if self.l > 0.0 { 1.0 / self.l } else { 0.0 };
        for (o, a) in out.iter_mut().zip(&self.acc) {
            *o = a * inv;
        }
    }
}

/// Update `st` with the run's `n_pos` positions (K transposed in `kt`, V rows in `v`, see the
/// module docs) for query `q` (hd,), scores scaled by `scale`.
#[allow(clippy::too_many_arguments)]
pub fn attend_run(
    q: &[f32],
    kt: &[f32],
    kt_stride: usize,
    v: &[f32],
    v_stride: usize,
    n_pos: usize,
    scale: f32,
    st: &mut OnlineSoftmax,
) {
    debug_assert!(n_pos <= MAX_RUN);
    if n_pos == 0 {
        return;
    }
    let hd = q.len();
    check_run(hd, kt, kt_stride, v, v_stride, n_pos);
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_heads(hd) {
            // SAFETY: the AVX-512 tier was detected; bounds checked above; one head.
            return unsafe {
                heads_avx512(
                    hd / 16,
                    1,
                    &[q],
                    kt,
                    kt_stride,
                    v,
                    v_stride,
                    n_pos,
                    scale,
                    std::slice::from_mut(st),
                )
            };
        }
        let (qp, kp, vp, ap) = (q.as_ptr(), kt.as_ptr(), v.as_ptr(), st.acc.as_mut_ptr());
        let (m, l) = (&mut st.m, &mut st.l);
        macro_rules! run {
            ($f:path) => {
                return $f(qp, kp, kt_stride, vp, v_stride, n_pos, scale, m, l, ap)
            };
        }
        if isa() == Isa::Avx2 && hd.is_multiple_of(8) {
            // SAFETY: avx2 detected; bounds checked above.
            unsafe {
                match hd / 8 {
                    4 => run!(crate::x86::attend_run::<4>),
                    8 => run!(crate::x86::attend_run::<8>),
                    16 => run!(crate::x86::attend_run::<16>),
                    32 => run!(crate::x86::attend_run::<32>),
                    _ => {}
                }
            }
        }
    }
    let mut s = [0f32; MAX_RUN];
    let s = &mut s[..(n_pos + 1).min(MAX_RUN)];
    let mut run_max = f32::NEG_INFINITY;
    for (j, sj) in s.iter_mut().enumerate().take(n_pos) {
        let mut acc = 0f32;
        for (d, qd) in q.iter().enumerate() {
            acc += qd * kt[d * kt_stride + j];
        }
        *sj = acc * scale;
        run_max = run_max.max(*sj);
    }
    let m_new = st.m.max(run_max);
    // exp(-inf) = 0 on the first run.
    let corr = if st.m == f32::NEG_INFINITY {
        0.0
    } else {
        exp_scalar_like(st.m - m_new)
    };
    for sj in s.iter_mut().take(n_pos) {
        *sj -= m_new;
    }
    exp_in_place(&mut s[..n_pos]);
    let mut sum = 0f32;
    for sj in s.iter().take(n_pos) {
        sum += sj;
    }
    st.l = st.l * corr + sum;
    if corr != 1.0 {
        for a in st.acc.iter_mut() {
            *a *= corr;
        }
    }
    for (j, w) in s.iter().enumerate().take(n_pos) {
        crate::matmul::axpy(*w, &v[j * v_stride..j * v_stride + hd], &mut st.acc);
    }
    st.m = m_new;
}

/// Most query heads one [`attend_heads`] kernel call takes (its score accumulators, four per
/// head, must fit the vector registers).
#[cfg(target_arch = "x86_64")]
const MAX_HEADS: usize = 6;

/// [`attend_run`] for several query heads over the same run (the heads of one KV group): `qs[h]`
/// updates `st[h]`. On the AVX-512 tier the heads go through one kernel that loads each K and V
/// vector once for up to [`MAX_HEADS`] heads; every head's result is bit-identical to
/// [`attend_run`] on it alone (same operations, same order), so how heads are grouped never shows.
#[allow(clippy::too_many_arguments)]
pub fn attend_heads(
    qs: &[&[f32]],
    kt: &[f32],
    kt_stride: usize,
    v: &[f32],
    v_stride: usize,
    n_pos: usize,
    scale: f32,
    st: &mut [OnlineSoftmax],
) {
    assert_eq!(qs.len(), st.len(), "one state per head");
    debug_assert!(n_pos <= MAX_RUN);
    let Some(hd) = qs.first().map(|q| q.len()) else {
        return;
    };
    #[cfg(target_arch = "x86_64")]
    if n_pos > 0 && avx512_heads(hd) {
        check_run(hd, kt, kt_stride, v, v_stride, n_pos);
        assert!(
            qs.iter().all(|q| q.len() == hd) && st.iter().all(|s| s.acc.len() == hd),
            "every head has head_dim values"
        );
        let mut h0 = 0;
        while h0 < qs.len() {
            let g = (qs.len() - h0).min(MAX_HEADS);
            // SAFETY: the AVX-512 tier was detected; bounds checked above; the heads' states are
            // distinct elements of `st`.
            unsafe {
                heads_avx512(
                    hd / 16,
                    g,
                    &qs[h0..h0 + g],
                    kt,
                    kt_stride,
                    v,
                    v_stride,
                    n_pos,
                    scale,
                    &mut st[h0..h0 + g],
                )
            };
            h0 += g;
        }
        return;
    }
    for (q, s) in qs.iter().zip(st.iter_mut()) {
        attend_run(q, kt, kt_stride, v, v_stride, n_pos, scale, s);
    }
}

/// Panics unless a run of `n_pos` (> 0) positions of `hd` dims lies within `kt` and `v`.
fn check_run(hd: usize, kt: &[f32], kt_stride: usize, v: &[f32], v_stride: usize, n_pos: usize) {
    assert!(
        kt.len() >= (hd - 1) * kt_stride + n_pos && v.len() >= (n_pos - 1) * v_stride + hd,
        "attention run out of bounds"
    );
}

/// Whether heads of `hd` dims run on the AVX-512 kernel (`crate::avx512::attend_run_heads`).
#[cfg(target_arch = "x86_64")]
fn avx512_heads(hd: usize) -> bool {
    crate::dispatch::vnni() && matches!(hd, 32 | 64 | 128 | 256)
}

/// `g` (1..=[`MAX_HEADS`]) heads of `nv` × 16 dims through `crate::avx512::attend_run_heads`.
///
/// # Safety
/// As `attend_run_heads`: the AVX-512 tier is present and the bounds were checked.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn heads_avx512(
    nv: usize,
    g: usize,
    qs: &[&[f32]],
    kt: &[f32],
    kt_stride: usize,
    v: &[f32],
    v_stride: usize,
    n_pos: usize,
    scale: f32,
    st: &mut [OnlineSoftmax],
) {
    macro_rules! call {
        ($nv:literal, $g:literal) => {{
            let q: [*const f32; $g] = std::array::from_fn(|h| qs[h].as_ptr());
            let m: [*mut f32; $g] = std::array::from_fn(|h| &mut st[h].m as *mut f32);
            let l: [*mut f32; $g] = std::array::from_fn(|h| &mut st[h].l as *mut f32);
            let a: [*mut f32; $g] = std::array::from_fn(|h| st[h].acc.as_mut_ptr());
            let (kp, vp) = (kt.as_ptr(), v.as_ptr());
            crate::avx512::attend_run_heads::<$nv, $g>(
                q, kp, kt_stride, vp, v_stride, n_pos, scale, m, l, a,
            )
        }};
    }
    macro_rules! by_heads {
        ($nv:literal) => {
            match g {
                1 => call!($nv, 1),
                2 => call!($nv, 2),
                3 => call!($nv, 3),
                4 => call!($nv, 4),
                5 => call!($nv, 5),
                _ => call!($nv, 6),
            }
        };
    }
    match nv {
        2 => by_heads!(2),
        4 => by_heads!(4),
        8 => by_heads!(8),
        _ => by_heads!(16),
    }
}

/// gate[i] = SiLU(gate[i]) · up[i] (SwiGLU), with the vector exp: x·σ(x) where σ uses e^{-|x|},
/// always a softmax-range argument.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 64;
    let mut e = [0f32; CHUNK];
    for (g, u) in gate.chunks_mut(CHUNK).zip(up.chunks(CHUNK)) {
        let n = g.len();
        for (ei, x) in e.iter_mut().zip(g.iter()) {
            *ei = -x.abs();
        }
        exp_in_place(&mut e[..n]);
        for ((x, ei), ui) in g.iter_mut().zip(&e[..n]).zip(u) {
            let sig = if *x >= 0.0 {
                1.0 / (1.0 + ei)
            } else {
                ei / (1.0 + ei)
            };
            *x = *x * sig * ui;
        }
    }
}

/// exp of one value with the same polynomial as the vector path (so a value's exp never depends on
/// which path or lane computed it).
#[inline]
fn exp_scalar_like(x: f32) -> f32 {
    let mut one = [x];
    exp_in_place(&mut one);
    one[0]
}

/// xs[i] = exp(xs[i]) for xs[i] <= 0 (softmax arguments), ~2 ulp.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx2 {
        // SAFETY: features detected by isa().
        return unsafe { crate::x86::exp_in_place(xs) };
    }
    for x in xs.iter_mut() {
        *x = scalar::exp_neg(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Several heads through `attend_heads` end in exactly the states `attend_run` gives each head
    /// alone: over two consecutive runs (the first and a rescaling one), head dims 32..256,
    /// 1..9 heads (more than one kernel call past 6), runs of 1 to 64 positions.
    #[test]
    fn heads_together_equal_each_head_alone_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(31);
        for hd in [32usize, 64, 128, 256] {
            for n_heads in [1usize, 2, 5, 6, 7, 9] {
                for n_pos in [1usize, 5, 16, 37, 64] {
                    let stride = hd + 3;
                    let mut gen = |n: usize| -> Vec<f32> {
                        (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
                    };
                    let q: Vec<Vec<f32>> = (0..n_heads).map(|_| gen(hd)).collect();
                    let runs: Vec<(Vec<f32>, Vec<f32>)> = (0..2)
                        .map(|_| (gen(hd * n_pos), gen(n_pos * stride)))
                        .collect();
                    let qs: Vec<&[f32]> = q.iter().map(|x| &x[..]).collect();
                    let mut together: Vec<OnlineSoftmax> =
                        (0..n_heads).map(|_| OnlineSoftmax::new(hd)).collect();
                    let mut alone = together.clone();
                    for (kt, v) in &runs {
                        attend_heads(&qs, kt, n_pos, v, stride, n_pos, 0.3, &mut together);
                        for (qh, st) in qs.iter().zip(alone.iter_mut()) {
                            attend_run(qh, kt, n_pos, v, stride, n_pos, 0.3, st);
                        }
                    }
                    for (a, b) in together.iter().zip(&alone) {
                        assert_eq!(a.m.to_bits(), b.m.to_bits(), "hd {hd} heads {n_heads}");
                        assert_eq!(a.l.to_bits(), b.l.to_bits(), "hd {hd} heads {n_heads}");
                        let (x, y): (Vec<u32>, Vec<u32>) = (
                            a.acc.iter().map(|f| f.to_bits()).collect(),
                            b.acc.iter().map(|f| f.to_bits()).collect(),
                        );
                        assert_eq!(x, y, "hd {hd} heads {n_heads} n_pos {n_pos}");
                    }
                }
            }
        }
    }

    #[test]
    fn exp_matches_libm_on_softmax_arguments() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut xs: Vec<f32> = (0..1000).map(|_| rng.gen_range(-100.0f32..0.0)).collect();
        xs.extend([
            0.0,
            -1e-8,
            -0.5,
            -87.0,
            -88.0,
            -103.0,
            -200.0,
            f32::NEG_INFINITY,
        ]);
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        exp_in_place(&mut xs);
        for (g, w) in xs.iter().zip(&want) {
            assert!((g - w).abs() <= 4e-7 * w + 1.5e-38, "{g} vs {w}");
        }
    }

    /// Online softmax over runs of any size equals softmax(qK)V computed in f64 in one go.
    #[test]
    fn runs_equal_full_softmax() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for (hd, n) in [
            (64usize, 1usize),
            (64, 7),
            (64, 16),
            (64, 33),
            (64, 100),
            (32, 21),
            (128, 40),
            (256, 70),
            (24, 9),
        ] {
            let stride = hd * 3;
            let q: Vec<f32> = (0..hd).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let k: Vec<f32> = (0..n * stride)
                .map(|_| rng.gen_range(-2.0f32..2.0))
                .collect();
            // The kernels read K transposed: element d of position j at kt[d * n + j].
            let mut kt = vec![0f32; hd * n];
            for j in 0..n {
                for d in 0..hd {
                    kt[d * n + j] = k[j * stride + d];
                }
            }
            let v: Vec<f32> = (0..n * stride)
                .map(|_| rng.gen_range(-1.0f32..1.0))
                .collect();
            let scale = 0.125;
            let scores: Vec<f64> = (0..n)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[d] as f64 * k[j * stride + d] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let z: f64 = w.iter().sum();
            for run in [1usize, 5, 16, 64] {
                let mut st = OnlineSoftmax::new(hd);
                let mut j = 0;
                while j < n {
                    let len = run.min(n - j);
                    attend_run(
                        &q,
                        &kt[j..],
                        n,
                        &v[j * stride..],
                        stride,
                        len,
                        scale as f32,
                        &mut st,
                    );
                    j += len;
                }
                let mut out = vec![0f32; hd];
                st.finish(&mut out);
                for d in 0..hd {
                    let exact: f64 =
                        (0..n).map(|j| w[j] * v[j * stride + d] as f64).sum::<f64>() / z;
                    assert!(
                        (out[d] as f64 - exact).abs() < 1e-5,
                        "n={n} run={run} d={d}: {} vs {exact}",
                        out[d]
                    );
                }
            }
        }
    }
}

//! Timing of the quantized matmul at Qwen2.5-Coder-1.5B's shapes (hidden 1536, FFN 8960, vocab
//! 151936; Q4_K_M puts Q4_K and Q6_K in the blocks and Q6_K in the head), plus this CPU's int8
//! peak: a tight `vpdpbusd` loop over independent accumulators.
//!
//! Owns nothing the library uses; it goes through the public API only (`packed::pack`,
//! `matmul_many`, `Mat`), the way the model calls the kernels: weights are packed when the type
//! has a packed layout on this machine, else multiplied from ggml rows. Weights are random blocks
//! with small f16 scales (values do not change the speed).
//!
//! Run: `ARES_THREADS=1 cargo bench -p ares-kernels --bench kquant` (and `ARES_THREADS=2`;
//! `ARES_ISA=avx2` keeps a VNNI machine on the AVX2 kernels). A filter argument keeps the cases
//! whose name contains it, e.g. `-- q6_k`. Each case reports the best of several timed runs:
//! GOPS = 2·m·n·k / time, and for m = 1 the weight bytes streamed per second.

use ares_kernels::formats::{WeightType, QK_K};
use ares_kernels::{matmul_many, packed, Mat, PackedMatrix, WeightMatrix};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

fn random_weights(rng: &mut rand::rngs::StdRng, ty: WeightType, n: usize, k: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..ty.row_bytes(k) * n).map(|_| rng.gen()).collect();
    let scales: &[usize] = match ty {
        WeightType::Q4_K => &[0, 2],
        WeightType::Q6_K => &[208],
        _ => &[0],
    };
    for blk in data.chunks_mut(ty.type_size()) {
        for &o in scales {
            let v = half::f16::from_f32(rng.gen_range(-0.01f32..0.01)).to_bits();
            blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    data
}

/// Best time of `f` over runs lasting at least `budget` in total (and at least 3 runs).
fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn bench_matmul(filter: &str) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // (name, type, n, k, rows)
    let cases: &[(&str, WeightType, usize, usize, &[usize])] = &[
        ("ffn_up", WeightType::Q4_K, 8960, 1536, &[1, 16, 128, 512]),
        ("ffn_down", WeightType::Q4_K, 1536, 8960, &[1, 16, 128, 512]),
        ("ffn_down", WeightType::Q6_K, 1536, 8960, &[1, 16, 128, 512]),
        ("attn_q", WeightType::Q4_K, 1536, 1536, &[1, 16, 128]),
        ("output", WeightType::Q6_K, 151_936, 1536, &[1, 16]),
        ("ffn_up", WeightType::Q8_0, 8960, 1536, &[1, 16, 128]),
    ];
    let threads = ares_kernels::pool::pool().n_threads();
    println!(
        "kernels: {}, threads {threads}",
        ares_kernels::cpu_features()
    );
    println!(
        "{:<22} {:>4} {:>10} {:>9} {:>9}",
        "case", "m", "time", "GOPS", "GB/s"
    );
    for &(name, ty, n, k, rows) in cases {
        let label = format!("{name} {ty:?} n{n} k{k}").to_lowercase();
        if !label.contains(filter) {
            continue;
        }
        assert!(k.is_multiple_of(QK_K));
        let data = random_weights(&mut rng, ty, n, k);
        let pk = packed::packable(ty).then(|| packed::pack(ty, n, k, &data));
        let mat = match &pk {
            Some(p) => Mat::Packed(PackedMatrix { ty, n, k, data: p }),
            None => Mat::Rows(WeightMatrix {
                ty,
                n,
                k,
                data: &data,
            }),
        };
        let wbytes = pk.as_ref().map_or(data.len(), |p| p.len());
        // Copies enough to stream 256 MiB (8 × this L3) per round, for decode from DRAM.
        let copies = (256usize << 20).div_ceil(wbytes);
        let cold: Vec<Vec<u8>> = (1..copies)
            .map(|_| pk.clone().unwrap_or_else(|| data.clone()))
            .collect();
        let mats: Vec<Mat> = std::iter::once(mat)
            .chain(cold.iter().map(|c| match mat {
                Mat::Packed(p) => Mat::Packed(PackedMatrix { data: c, ..p }),
                Mat::Rows(w) => Mat::Rows(WeightMatrix { data: c, ..w }),
            }))
            .collect();
        for &m in rows {
            let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let mut y = vec![0f32; m * n];
            let budget = Duration::from_millis(if m * n * k > 1 << 31 { 2500 } else { 1200 });
            if m == 1 && mats.len() > 1 {
                let t = best_of(budget, || {
                    for w in &mats {
                        matmul_many(&[*w], &x, &mut [&mut y]);
                    }
                });
                let s = t.as_secs_f64() / mats.len() as f64;
                println!(
                    "{label:<22} {m:>4} {:>8.3}ms {:>9.1} {:9.1}  cold (from DRAM)",
                    s * 1e3,
                    2.0 * (n * k) as f64 / s / 1e9,
                    wbytes as f64 / s / 1e9
                );
            }
            let t = best_of(budget, || matmul_many(&[mat], &x, &mut [&mut y]));
            let s = t.as_secs_f64();
            let gops = 2.0 * (m * n * k) as f64 / s / 1e9;
            let gbs = if m == 1 {
                format!("{:9.1}", wbytes as f64 / s / 1e9)
            } else {
                String::new()
            };
            println!(
                "{label:<22} {m:>4} {:>8.3}ms {gops:>9.1} {gbs}{}",
                s * 1e3,
                if pk.is_some() { "" } else { "  (rows)" }
            );
        }
    }
}

/// int8 multiply-accumulate peak: `iters` rounds of 24 independent `vpdpbusd` (16 lanes × 4
/// products each; enough chains to cover latency × throughput), returned as a checksum so the
/// loop is not optimised away.
///
/// # Safety
/// avx512f and avx512vnni present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vpdpbusd_loop(iters: usize) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi8(3);
    let b = _mm512_set1_epi8(-1);
    let mut acc = [_mm512_setzero_si512(); 24];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}

fn bench_peak() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
        let iters = 1_000_000;
        for threads in [1usize, 2] {
            let t = best_of(Duration::from_millis(1500), || {
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        // SAFETY: features detected above.
                        s.spawn(|| std::hint::black_box(unsafe { vpdpbusd_loop(iters) }));
                    }
                })
            });
            // 24 instructions × 64 multiply-adds × 2 ops per round and thread.
            let gops = (threads * iters * 24 * 64 * 2) as f64 / t.as_secs_f64() / 1e9;
            println!("vpdpbusd zmm peak, {threads} thread(s): {gops:.0} GOPS (int8)");
        }
    }
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if filter.is_empty() || filter == "peak" {
        bench_peak();
    }
    if filter != "peak" {
        bench_matmul(&filter);
    }
}

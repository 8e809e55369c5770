use ares_kernels::formats::BlockQ8;
use ares_kernels::{quantize_row_q8, x86};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let k = 2048;
    let rows = 64;
    let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let mut a = vec![BlockQ8::default(); k / 32];
    quantize_row_q8(&x, &mut a);
    type D = unsafe fn(&[u8], &[BlockQ8]) -> f32;
    type S = fn(&[u8], &[BlockQ8]) -> f32;
    let cases: [(&str, usize, usize, D, S); 4] = [
        ("q4_0", 18, 32, x86::dot_q4_0, ares_kernels::scalar::dot_q4_0),
        ("q5_0", 22, 32, x86::dot_q5_0, ares_kernels::scalar::dot_q5_0),
        ("q4_k", 144, 256, x86::dot_q4_k, ares_kernels::scalar::dot_q4_k),
        ("q6_k", 210, 256, x86::dot_q6_k, ares_kernels::scalar::dot_q6_k),
    ];
    for (name, bs, be, f, s) in cases {
        let rb = k / be * bs;
        let mut w: Vec<u8> = (0..rows * rb).map(|_| rng.gen()).collect();
        for blk in w.chunks_mut(bs) {
            let off = if bs == 210 { 208 } else { 0 };
            blk[off..off + 2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
            if bs == 144 {
                blk[2..4].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
            }
        }
        for (label, simd) in [("avx2", true), ("scalar", false)] {
            let iters = if simd { 2000 } else { 100 };
            let mut sink = 0f32;
            let t = Instant::now();
            for _ in 0..iters {
                for r in 0..rows {
                    let wr = &w[r * rb..(r + 1) * rb];
                    sink += if simd { unsafe { f(wr, &a) } } else { s(wr, &a) };
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let gmac = (iters * rows * k) as f64 / secs / 1e9;
            println!("{name} {label}: {gmac:.2} GMAC/s (k={k}, {rows} rows in cache) [{sink:.1}]");
        }
    }
}

//! Micro-benchmarks of `ares_kernels::matmul` against candle's stock `QMatMul` on the same weights.
//!
//! Shapes are the default model's (SmolLM2-135M: hidden 576, KV 192, FFN 1536, vocab 49152):
//! k=576 -> n=576 (q, o), 192 (k, v), 1536 (gate, up); k=1536 -> n=576 (down); and the Q8_0 output
//! projection k=576 -> n=49152. Rows m=1 (decode), 32 and 128 (batched decode, prefill chunks).
//! Each case quantizes one seeded random f32 matrix with candle's `QTensor::quantize` and hands our
//! kernel the raw bytes of the same ggml blocks, so both multiply identical weights; setup checks
//! once that the two results agree (otherwise the comparison would be meaningless), and the timed
//! loops do nothing else. The counter is multiply-accumulates (m·n·k), shown as items/s.
//!
//! Threads: ares' kernel pool reads `ARES_THREADS`, candle's pool `RAYON_NUM_THREADS`; both default
//! to every core. Pin both to compare like with like, e.g.
//! `ARES_THREADS=2 RAYON_NUM_THREADS=2 cargo bench --bench kernels`. Filter with divan's arguments:
//! `cargo bench --bench kernels -- q4_1`.
//!
//! Uses only the stable public kernel API (`matmul`, `WeightMatrix`, `WeightType`).

use ares_kernels::{matmul, WeightMatrix, WeightType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;

fn main() {
    divan::main();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Ares,
    Candle,
}

/// One measurement: weight type, shape, rows, implementation.
#[derive(Clone, Copy, Debug)]
struct Case {
    ty: WeightType,
    n: usize,
    k: usize,
    m: usize,
    imp: Impl,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = match self.ty {
            WeightType::Q4_0 => "q4_0",
            WeightType::Q4_1 => "q4_1",
            WeightType::Q5_0 => "q5_0",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_K => "q4_k",
            WeightType::Q6_K => "q6_k",
            WeightType::F16 => "f16",
            WeightType::F32 => "f32",
        };
        let imp = match self.imp {
            Impl::Ares => "ares",
            Impl::Candle => "candle",
        };
        // Zero-padded so divan's name order is numeric order, each ares row next to candle's.
        write!(f, "{ty} k{:05} n{:05} m{:03} {imp}", self.k, self.n, self.m)
    }
}

/// (n, k) of the transformer blocks' matrices.
const BLOCK_SHAPES: [(usize, usize); 4] = [(576, 576), (192, 576), (1536, 576), (576, 1536)];
const ROWS: [usize; 3] = [1, 32, 128];

fn cases() -> Vec<Case> {
    let mut shapes = Vec::new();
    for ty in [WeightType::Q4_1, WeightType::Q8_0, WeightType::Q4_0] {
        for (n, k) in BLOCK_SHAPES {
            shapes.push((ty, n, k));
        }
    }
    shapes.push((WeightType::Q8_0, 49_152, 576));
    let mut out = Vec::new();
    for (ty, n, k) in shapes {
        for m in ROWS {
            for imp in [Impl::Ares, Impl::Candle] {
                out.push(Case { ty, n, k, m, imp });
            }
        }
    }
    out
}

fn ggml_dtype(ty: WeightType) -> GgmlDType {
    match ty {
        WeightType::Q4_0 => GgmlDType::Q4_0,
        WeightType::Q4_1 => GgmlDType::Q4_1,
        WeightType::Q5_0 => GgmlDType::Q5_0,
        WeightType::Q8_0 => GgmlDType::Q8_0,
        WeightType::Q4_K => GgmlDType::Q4K,
        WeightType::Q6_K => GgmlDType::Q6K,
        WeightType::F16 => GgmlDType::F16,
        WeightType::F32 => GgmlDType::F32,
    }
}

/// Quantized weights (candle's and the same bytes for ares) and random activations.
struct Setup {
    bytes: Vec<u8>,
    qmm: QMatMul,
    x: Vec<f32>,
    xt: Tensor,
}

fn setup(c: &Case) -> Setup {
    let mut rng = StdRng::seed_from_u64((c.n * 31 + c.k) as u64);
    let w: Vec<f32> = (0..c.n * c.k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x: Vec<f32> = (0..c.m * c.k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let wt = Tensor::from_vec(w, (c.n, c.k), &Device::Cpu).expect("shape matches length");
    let qt = QTensor::quantize(&wt, ggml_dtype(c.ty)).expect("k is a multiple of 32");
    let bytes = qt.data().expect("CPU tensor has bytes").into_owned();
    assert_eq!(bytes.len(), c.ty.row_bytes(c.k) * c.n, "{c}: ggml layout");
    let qmm = QMatMul::from_qtensor(qt).expect("quantized CPU tensor");
    let xt = Tensor::from_vec(x.clone(), (c.m, c.k), &Device::Cpu).expect("shape matches length");
    let s = Setup { bytes, qmm, x, xt };
    check_same(c, &s);
    s
}

/// Both implementations must compute the same product (up to activation-quantization rounding).
fn check_same(c: &Case, s: &Setup) {
    let ours = run_ares(c, s);
    let theirs: Vec<f32> = s
        .qmm
        .forward(&s.xt)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("candle matmul");
    let scale = theirs.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
    let err = ours
        .iter()
        .zip(&theirs)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(
        err / scale < 2e-2,
        "{c}: ares and candle disagree (max abs diff {err}, max |y| {scale})"
    );
}

fn run_ares(c: &Case, s: &Setup) -> Vec<f32> {
    let mut y = vec![0f32; c.m * c.n];
    let w = WeightMatrix {
        ty: c.ty,
        n: c.n,
        k: c.k,
        data: &s.bytes,
    };
    matmul(&w, &s.x, &mut y);
    y
}

#[divan::bench(args = cases(), max_time = 1)]
fn qmatmul(bencher: Bencher, c: &Case) {
    let s = setup(c);
    let bencher = bencher.counter(ItemsCount::new(c.m * c.n * c.k));
    match c.imp {
        Impl::Ares => {
            let w = WeightMatrix {
                ty: c.ty,
                n: c.n,
                k: c.k,
                data: &s.bytes,
            };
            let mut y = vec![0f32; c.m * c.n];
            bencher.bench_local(|| matmul(black_box(&w), black_box(&s.x), black_box(&mut y)));
        }
        Impl::Candle => {
            bencher.bench_local(|| s.qmm.forward(black_box(&s.xt)).expect("candle matmul"));
        }
    }
}

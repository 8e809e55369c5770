//! Runtime selection of the SIMD path. Chosen once per process; `ARES_FORCE_SCALAR=1` forces the
//! scalar reference (useful to compare whole-model outputs across paths) and `ARES_ISA=avx2`
//! keeps an AVX-512 VNNI machine on the AVX2 kernels (to measure what VNNI buys).

use std::sync::OnceLock;

/// The instruction-set tier the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// x86_64 with AVX2, FMA and F16C.
    Avx2,
    /// aarch64 (NEON is part of the base architecture).
    Neon,
}

static ISA: OnceLock<Isa> = OnceLock::new();
static VNNI: OnceLock<bool> = OnceLock::new();

/// The tier used by [`crate::matmul`] on this machine.
pub fn isa() -> Isa {
    *ISA.get_or_init(detect)
}

/// Whether the packed quantized matmul runs on the AVX-512 VNNI kernels (`crate::avx512`): the
/// AVX2 tier plus avx512f/bw/vl/vnni, unless `ARES_ISA=avx2`. For Q4_0, Q4_1 and Q8_0 results are
/// bit-identical to the AVX2 kernels' (same exact integer block sums, same float operations); Q4_K
/// and Q6_K are bit-identical to the scalar reference instead, Q5_0 equal within rounding, so this
/// changes speed, not results beyond the last bits.
pub fn vnni() -> bool {
    *VNNI.get_or_init(|| {
        if isa() != Isa::Avx2 || std::env::var("ARES_ISA").is_ok_and(|v| v == "avx2") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

fn detect() -> Isa {
    if std::env::var("ARES_FORCE_SCALAR").is_ok_and(|v| v == "1")
        || std::env::var("ARES_ISA").is_ok_and(|v| v == "scalar")
    {
        return Isa::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    return Isa::Neon;
    #[allow(unreachable_code)]
    Isa::Scalar
}

/// Human-readable list of the CPU features that matter to these kernels (for bench headers and -v).
pub fn cpu_features() -> String {
    let mut out: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            out.push("avx2");
        }
        if is_x86_feature_detected!("fma") {
            out.push("fma");
        }
        if is_x86_feature_detected!("f16c") {
            out.push("f16c");
        }
        if is_x86_feature_detected!("avx512f") {
            out.push("avx512f");
        }
        if is_x86_feature_detected!("avx512vnni") {
            out.push("avx512vnni");
        }
    }
    #[cfg(target_arch = "aarch64")]
    out.extend(["neon"]);
    let tier = match (isa(), vnni()) {
        (Isa::Avx2, true) => "Avx2+Avx512Vnni".to_string(),
        (t, _) => format!("{t:?}"),
    };
    format!("{} (kernels: {tier})", out.join(","))
}

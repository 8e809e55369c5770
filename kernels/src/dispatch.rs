//! Runtime selection of the SIMD path. Chosen once per process; `ARES_FORCE_SCALAR=1` forces the
//! scalar reference (useful to compare whole-model outputs across paths).

use std::sync::OnceLock;

/// The instruction-set tier the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// x86_64 with AVX2, FMA and F16C.
    Avx2,
}

static ISA: OnceLock<Isa> = OnceLock::new();

/// The tier used by [`crate::matmul`] on this machine.
pub fn isa() -> Isa {
    *ISA.get_or_init(detect)
}

fn detect() -> Isa {
    if std::env::var("ARES_FORCE_SCALAR").is_ok_and(|v| v == "1") {
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
    out.push("neon");
    format!("{} (kernels: {:?})", out.join(","), isa())
}

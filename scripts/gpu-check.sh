#!/usr/bin/env bash
# The GPU check, run on the GPU machine inside the unpacked bundle of scripts/gpu-pack.sh; builds
# nothing. About 10 minutes. Writes everything under OUT (default ./gpu-results):
#   1. the CUDA build's ignored `cuda_*` tests: candle on cuda:0 against candle on the CPU and the
#      hand-written engine, on tiny seeded models of every architecture and format;
#   2. `ares bench --device cuda:0` on synthetic random-weight models of real dimensions (Qwen2.5
#      0.5B / 1.5B / 7B shapes in Q4_K and Q8_0; 896-wide rows of 0.5B fall back to Q8_0 in Q4_K):
#      prefill and decode tokens/s at batch 1, 16, 64 and 256, as JSON, and the same on the
#      hand-written CPU engine for scale (batch 1 and 16 only: 16 cores);
#   3. the judge workload (../shared/bench/judge_workload.jsonl as Qwen2.5 token ids, packed in the
#      bundle: 8 rounds of 32 criteria sharing a ~350-token prefix) on the synthetic Qwen2.5 1.5B
#      and 7B shapes on cuda:0, and 1.5B on the CPU engine for scale: criteria/s, cold and steady.
# Usage: tar xJf gpu-bundle.tar.xz && ares-gpu/scripts/gpu-check.sh [OUT]
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-gpu-results}
mkdir -p "$out"
bin="$here/bin"
status=0
# The binaries load libcublas.so.13, libcurand.so.10 and libcudart.so.13 (and the driver's
# libcuda.so.1). Where the system linker does not know them, take them from the CUDA 13 wheels
# PyTorch installed (site-packages/nvidia/...).
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so.13'; then
    nv=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    if [ -n "$nv" ]; then
        libs=$(find "$nv" \( -name 'libcublas.so.13' -o -name 'libcurand.so.10' \
            -o -name 'libcudart.so.13' -o -name 'libcublasLt.so.13' \) -printf '%h\n' | sort -u | tr '\n' ':')
        export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
    fi
fi
ldd "$bin/ares" > "$out/ldd.txt" 2>&1
{ nvidia-smi; cat "$here/REVISION"; } > "$out/machine.txt" 2>&1

echo "== cuda tests"
if timeout 240 "$bin/ares-tests" --ignored cuda_ --test-threads 1 --nocapture \
    > "$out/cuda-tests.txt" 2>&1; then
    echo "cuda tests: ok"
else
    echo "cuda tests: FAILED (see $out/cuda-tests.txt)"
    status=1
fi

bench() { # DEVICE SPEC NPL TIMEOUT
    local name="bench-${1//:/}-${2//:/-}"
    if timeout "$4" "$bin/ares" bench --device "$1" --synthetic "$2" --npp 128 --ntg 32 \
        --npl "$3" --json > "$out/$name.json" 2> "$out/$name.log"; then
        echo "$name: ok"
    else
        echo "$name: FAILED or timed out (see $out/$name.log)"
        status=1
    fi
}
echo "== bench"
for spec in qwen2:0.5b:q4_k qwen2:0.5b:q8_0 qwen2:1.5b:q4_k qwen2:1.5b:q8_0 qwen2:7b:q4_k; do
    bench cuda:0 "$spec" 1,16,64,256 90
done
bench cpu qwen2:0.5b:q4_k 1,16 60

judge() { # DEVICE SPEC TIMEOUT [EXTRA...]
    local name="judge-${1//:/}-${2//:/-}"
    if timeout "$3" "$bin/ares" bench --device "$1" --synthetic "$2" \
        --judge "$here/judge_workload.qwen2-tokens.jsonl" "${@:4}" --json \
        > "$out/$name.json" 2> "$out/$name.log"; then
        echo "$name: ok"
    else
        echo "$name: FAILED or timed out (see $out/$name.log)"
        status=1
    fi
}
echo "== judge workload"
judge cuda:0 qwen2:1.5b:q4_k 120
judge cuda:0 qwen2:7b:q4_k 150
judge cpu qwen2:1.5b:q4_k 120 --rounds 3
exit $status

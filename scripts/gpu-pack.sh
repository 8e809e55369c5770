#!/usr/bin/env bash
# Build the CUDA binaries here (no GPU needed) and pack them for a GPU machine (no network, at most
# 64 MiB of files): `ares` and the integration-test binary built with `--features cuda`, stripped,
# with scripts/gpu-check.sh and the judge workload tokenized by Qwen2.5's tokenizer (for the
# synthetic Qwen2.5 shapes, which have no real vocabulary), in one xz tarball.
#   scripts/gpu-pack.sh [OUT.tar.xz]        (default: target/gpu-bundle.tar.xz)
# Needs ../shared/gpu/cuda_env.sh (CUDA 13.0 from PyPI wheels, cached under ~/.cache/cu13; with
# --link it adds cuBLAS, cuRAND, NVRTC and a stub libcuda.so to link against; the stub never ships).
# The GPU machine must have a CUDA 13.0 driver (580): the PTX is built by nvcc 13.0 for sm_90.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-bundle.tar.xz}
cargo fetch
# The token workload comes from the CPU build (the CUDA one needs libcuda.so.1 to start) and the
# real Qwen2.5-Coder-1.5B tokenizer (fetched into $ARES_HOME when missing).
workload=$(mktemp --suffix=.jsonl)
cargo build --release --bin ares
"${CARGO_TARGET_DIR:-target}/release/ares" bench -m qwen2.5-coder-1.5b-instruct \
    --judge ../shared/bench/judge_workload.jsonl --write-token-workload "$workload"
source ../shared/gpu/cuda_env.sh "$HOME/.cache/cu13" --link >/dev/null
set -euo pipefail
export LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L $CUDA_ROOT/lib -L $CUDA_ROOT/lib/stubs"
target=${CARGO_TARGET_DIR:-target}
cargo build --release --features cuda --bin ares
tests=$(cargo test --release --features cuda --test main --no-run --message-format=json \
    | grep -o '"executable":"[^"]*main-[^"]*"' | tail -1 | cut -d'"' -f4)
stage=$(mktemp -d)
trap 'rm -rf "$stage" "$workload"' EXIT
mkdir -p "$stage/ares-gpu/bin" "$stage/ares-gpu/scripts"
cp "$target/release/ares" "$stage/ares-gpu/bin/ares"
cp "$tests" "$stage/ares-gpu/bin/ares-tests"
strip "$stage/ares-gpu/bin/ares" "$stage/ares-gpu/bin/ares-tests"
cp scripts/gpu-check.sh "$stage/ares-gpu/scripts/"
cp "$workload" "$stage/ares-gpu/judge_workload.qwen2-tokens.jsonl"
git rev-parse --short HEAD > "$stage/ares-gpu/REVISION" 2>/dev/null || echo unknown > "$stage/ares-gpu/REVISION"
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - ares-gpu | xz -9 -T2 > "$out"
size=$(stat -c %s "$out")
echo "$out: $((size / 1024 / 1024)) MiB ($size bytes)"
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
    echo "bundle exceeds 64 MiB" >&2
    exit 1
fi

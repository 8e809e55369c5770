#!/usr/bin/env bash
# ares vs llama.cpp on one model, same machine, same thread count, back to back; prints one ratio
# table (ares / llama.cpp) and keeps every raw output.
#
#   benches/compare-llama.sh MODEL [THREADS]        # from the repository root
#
# MODEL is a registry name (`ares models`: smollm2-135m-instruct, gemma-3-270m,
# qwen2.5-coder-1.5b-instruct, ...) or a GGUF path; THREADS defaults to 2.
#
# Environment:
#   OUT=DIR            results folder (default bench-results/<model>-<UTC date-time>, gitignored)
#   LLAMA_BASELINE=F   llama.cpp side (default ../shared/bench/llama-cpp-baseline, which builds
#                      llama.cpp once and caches it under ~/.cache/llama-cpp-baseline)
#   LLAMA_JUDGE_NP=".." llama-server slot counts for the judge workload. Unset: the baseline script
#                      runs in full (llama-bench, batched-bench B=1,4,16,32, shared prompts, judge
#                      with -np 1 and -np 32). Set (e.g. "1"): the same llama-bench and judge
#                      commands run here with only those slot counts; -np 32 recomputes every prompt
#                      in full and takes ~40 min per run on a 1.5B model at 2 threads.
#   JUDGE=FILE         judge workload (default ../shared/bench/judge_workload.jsonl)
#   ROUNDS=N           judge rounds, round 0 cold (default 5, as the baseline)
#   ARES=BIN           ares binary (default: cargo build --release, then target/release/ares)
#
# Definitions (the same for both sides):
#   pp512   llama-bench -p 512 (t/s)              | ares bench --npp 512 --ntg 128 --npl 1, S_PP
#   tg128   llama-bench -n 128 (t/s)              | ares bench --npp 16 --ntg 128 --npl 1, S_TG
#   S_TG16  llama-batched-bench -npp 128 -ntg 32 -npl 16, S_TG | ares bench --npp 128 --ntg 32 --npl 16, S_TG
#   RSS16   /usr/bin/time -v of those two B=16 runs, maximum resident set size
#   judge   steady criteria/s (median of rounds 1..ROUNDS-1): the better llama-server -np setup
#           (prompt cache on) | ares bench --judge FILE (prefix sharing on)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_ARG=${1:?usage: benches/compare-llama.sh MODEL [THREADS]}
T=${2:-2}
LLAMA_BASELINE=${LLAMA_BASELINE:-../shared/bench/llama-cpp-baseline}
JUDGE=${JUDGE:-../shared/bench/judge_workload.jsonl}
ROUNDS=${ROUNDS:-5}
if [ -z "${ARES:-}" ]; then
  cargo build --release -q
  ARES=${CARGO_TARGET_DIR:-target}/release/ares
fi
case "$MODEL_ARG" in
  *.gguf) MODEL=$MODEL_ARG ;;
  *) MODEL=$("$ARES" fetch "$MODEL_ARG" | tail -1) ;;
esac
[ -f "$MODEL" ] || { echo "no model file: $MODEL" >&2; exit 1; }
NAME=$(basename "$MODEL_ARG" .gguf)
if [ -z "${OUT:-}" ]; then
  OUT=bench-results/$NAME-$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p bench-results && echo '*' > bench-results/.gitignore   # results stay out of git
fi
mkdir -p "$OUT"
case "$NAME" in   # issue #11's targets (ratios ares / llama.cpp)
  qwen2.5-coder-1.5b-instruct) TARGET_PP="≥ 1.5" TARGET_TG="≥ 1.1" TARGET_B16="≥ 2.0" TARGET_JUDGE="≥ 3.0" TARGET_RSS="≤ 1.0" ;;
  smollm2-135m-instruct) TARGET_PP="~4.3 (no regression)" TARGET_TG="~2.2" TARGET_B16="~2.9" TARGET_JUDGE="~4.2" TARGET_RSS="≤ 1.0" ;;
  gemma-3-270m) TARGET_PP="≥ 1.2" ;;
esac
LLAMA_BIN=${LLAMA_BASELINE_DIR:-$HOME/.cache/llama-cpp-baseline}/build/bin
export LD_LIBRARY_PATH=$LLAMA_BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
load() { cut -d' ' -f1-3 /proc/loadavg; }

{
  echo "# compare-llama $NAME, threads $T, $(date -u +%FT%TZ)"
  echo "ares rev $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src kernels Cargo.toml Cargo.lock || echo -dirty)"
  echo "cpu $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cpus;" \
    "flags $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|avx512_bf16|amx_int8)$' | tr '\n' ' ')"
  echo "load average before: $(load)"
} | tee "$OUT/info.txt"

# ---- llama.cpp ----
if [ -z "${LLAMA_JUDGE_NP:-}" ]; then
  "$LLAMA_BASELINE" "$MODEL" "$T" | tee "$OUT/llama.txt"
else
  LLAMA_BASELINE_ONLY=build "$LLAMA_BASELINE" >/dev/null
  BASE_DIR=$(cd "$(dirname "$LLAMA_BASELINE")" && pwd)
  {
    echo "# llama.cpp via $LLAMA_BASELINE's build and flags, model $(basename "$MODEL"), threads $T, judge -np $LLAMA_JUDGE_NP, $(date -u +%FT%TZ)"
    echo "## llama-bench"
    "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "$T" -p 512 -n 128 -r 3 -o md 2>/dev/null
    echo "## judge workload (llama-server, prompt cache on)"
    PORT=${LLAMA_BASELINE_PORT:-18089}
    for NP in $LLAMA_JUDGE_NP; do
      "$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t "$T" -c 32768 -np "$NP" \
        --cont-batching --swa-full --no-webui >"$OUT/llama-server-np$NP.log" 2>&1 &
      SERVER=$!
      trap 'kill $SERVER 2>/dev/null || true' EXIT
      for _ in $(seq 1 120); do curl -sf "127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 1; done
      python3 "$BASE_DIR/judge_workload.py" --base "http://127.0.0.1:$PORT" --rounds "$ROUNDS" \
        --label "llama-server -np $NP" | grep -E 'SUMMARY'
      kill $SERVER; wait $SERVER 2>/dev/null || true
    done
  } | tee "$OUT/llama.txt"
fi
echo "## llama-batched-bench B=16 under /usr/bin/time -v" | tee "$OUT/llama-b16.txt"
/usr/bin/time -v "$LLAMA_BIN/llama-batched-bench" -m "$MODEL" -t "$T" -c 8192 -b 2048 -ub 512 \
  -npp 128 -ntg 32 -npl 16 2>"$OUT/llama-b16.time" | grep '^|' | tee -a "$OUT/llama-b16.txt"
grep 'Maximum resident' "$OUT/llama-b16.time" | tee -a "$OUT/llama-b16.txt"

# ---- ares ----
echo "load average between: $(load)" | tee -a "$OUT/info.txt"
"$ARES" bench -m "$MODEL" -t "$T" --npp 512 --ntg 128 --npl 1 2>"$OUT/ares-pp512.err" | tee "$OUT/ares-pp512.txt"
"$ARES" bench -m "$MODEL" -t "$T" --npp 16 --ntg 128 --npl 1 2>"$OUT/ares-tg128.err" | tee "$OUT/ares-tg128.txt"
/usr/bin/time -v "$ARES" bench -m "$MODEL" -t "$T" --npp 128 --ntg 32 --npl 16 2>"$OUT/ares-b16.time" \
  | tee "$OUT/ares-b16.txt"
grep 'Maximum resident' "$OUT/ares-b16.time" | tee -a "$OUT/ares-b16.txt"
"$ARES" bench -m "$MODEL" -t "$T" --judge "$JUDGE" --rounds "$ROUNDS" 2>&1 | tee "$OUT/ares-judge.txt"
echo "load average after: $(load)" | tee -a "$OUT/info.txt"

# ---- ratio table ----
col() { # FILE PATTERN COLUMN: the first number in column COLUMN of the first table row matching PATTERN
  grep -E "$2" "$1" | head -1 | awk -F'|' -v c="$3" '{ split($c, a, " "); print a[1] }'
}
# llama-bench md: | model | size | params | backend | threads | test | t/s |
L_PP=$(grep -E '\|\s+pp512\s+\|' "$OUT/llama.txt" | head -1 | awk -F'|' '{ split($(NF-1), a, " "); print a[1] }')
L_TG=$(grep -E '\|\s+tg128\s+\|' "$OUT/llama.txt" | head -1 | awk -F'|' '{ split($(NF-1), a, " "); print a[1] }')
# batched tables: | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
L_B16=$(col "$OUT/llama-b16.txt" '^\|\s+128\s+\|\s+32\s+\|\s+16\s+\|' 9)
A_PP=$(col "$OUT/ares-pp512.txt" '^\|\s+512\s+\|\s+128\s+\|\s+1\s+\|' 7)
A_TG=$(col "$OUT/ares-tg128.txt" '^\|\s+16\s+\|\s+128\s+\|\s+1\s+\|' 9)
A_B16=$(col "$OUT/ares-b16.txt" '^\|\s+128\s+\|\s+32\s+\|\s+16\s+\|' 9)
L_RSS=$(grep -o '[0-9]*$' <(grep 'Maximum resident' "$OUT/llama-b16.time"))
A_RSS=$(grep -o '[0-9]*$' <(grep 'Maximum resident' "$OUT/ares-b16.time"))
# the better llama-server setup: "NP VALUE" of the SUMMARY line with the highest steady req/s
L_JUDGE_BEST=$(grep 'SUMMARY \[llama-server' "$OUT/llama.txt" | sed -E 's/.*-np ([0-9]+)\].*median rounds[^=]*= *([0-9.]+) req\/s.*/\1 \2/' \
  | sort -k2,2 -g | tail -1)
L_JUDGE_NP=${L_JUDGE_BEST%% *}
L_JUDGE=${L_JUDGE_BEST##* }
A_JUDGE=$(grep 'SUMMARY \[ares' "$OUT/ares-judge.txt" | head -1 | grep -o 'median rounds[^:]*: *[0-9.]*' | awk '{ print $NF }')

row() { awk -v n="$1" -v l="$2" -v a="$3" -v t="$4" 'BEGIN {
  r = (l + 0 > 0) ? sprintf("%.2f", a / l) : "n/a"; printf "| %s | %s | %s | %s | %s |\n", n, l, a, r, t }'; }
{
  echo
  echo "## $NAME, $T threads: ares / llama.cpp ($(grep '^ares rev' "$OUT/info.txt"))"
  echo "| measure | llama.cpp | ares | ratio | issue #11 target |"
  echo "|---|---:|---:|---:|---:|"
  row "pp512 (t/s)" "$L_PP" "$A_PP" "${TARGET_PP:-}"
  row "tg128 (t/s)" "$L_TG" "$A_TG" "${TARGET_TG:-}"
  row "batched decode S_TG, B=16, PP 128, TG 32 (t/s)" "$L_B16" "$A_B16" "${TARGET_B16:-}"
  row "judge workload, steady criteria/s (llama-server -np $L_JUDGE_NP)" "$L_JUDGE" "$A_JUDGE" "${TARGET_JUDGE:-}"
  row "peak RSS, B=16 (MB)" "$(awk -v k="$L_RSS" 'BEGIN { printf "%.1f", k / 1000 }')" \
    "$(awk -v k="$A_RSS" 'BEGIN { printf "%.1f", k / 1000 }')" "${TARGET_RSS:-}"
  grep '^load average' "$OUT/info.txt" | sed 's/^/- /'
  echo "- raw outputs: $OUT"
} | tee "$OUT/ratios.md"

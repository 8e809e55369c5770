#!/usr/bin/env bash
# On-demand conformance of `--backend` with llama.cpp's llama-server (issue #16): starts
# llama-server from ../shared/bench/llama-cpp-baseline's build on 127.0.0.1, runs `ares synth`
# through `--backend` (must finish without engine errors), makes rubric items and responses with
# the local engine (the README's synth example), judges them through `--backend` and locally in
# logprob and generate modes, and compares:
#   - logprob mode: |reward_remote - reward_local| <= 0.05 for every response,
#   - generate mode: the per-criterion verdicts agree on >= 90% of criteria,
# and prints criteria/s through each path. Exit 0 when both hold, 1 otherwise.
#
#   scripts/remote-conformance.sh [MODEL.gguf] [THREADS]
#
# Env: ARES (binary, default target/release/ares, built when missing), LLAMA_BASELINE_DIR (as the
# baseline script), PORT (default 18091), NP (llama-server slots, default 4), SYNTH_DOCS (documents
# for the remote synth, default 2), KEEP=1 keeps the work directory. Nothing binds other than 127.0.0.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MODEL=${1:-$HOME/.cache/ares/models/SmolLM2-135M-Instruct.Q4_1.gguf}
T=${2:-$(nproc)}
PORT=${PORT:-18091}
NP=${NP:-4}
BASELINE=$ROOT/../shared/bench/llama-cpp-baseline
BIN=${LLAMA_BASELINE_DIR:-$HOME/.cache/llama-cpp-baseline}/build/bin
ARES=${ARES:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ares}
URL=http://127.0.0.1:$PORT

[ -f "$MODEL" ] || { echo "model $MODEL missing (run: ares fetch)" >&2; exit 2; }
[ -x "$BIN/llama-server" ] || LLAMA_BASELINE_ONLY=build "$BASELINE"
[ -x "$ARES" ] || (cd "$ROOT" && cargo build --release)
W=$(mktemp -d)
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
"$BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t "$T" -c $((4096 * NP)) \
  -np "$NP" --cont-batching --no-webui >"$W/llama-server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "work directory: $W" >&2 || rm -rf "$W"; }
trap cleanup EXIT
for _ in $(seq 1 120); do curl -sf "$URL/health" >/dev/null 2>&1 && break; sleep 1; done
curl -sf "$URL/health" >/dev/null || { echo "llama-server did not start:" >&2; tail "$W/llama-server.log" >&2; exit 2; }
echo "# remote conformance: ares $(git -C "$ROOT" rev-parse --short HEAD) vs llama-server build $(curl -s "$URL/props" | python3 -c "import json,sys; print(json.load(sys.stdin).get(\"build_info\", \"?\"))"), model $(basename "$MODEL"), threads $T, -np $NP, $(date -u +%FT%TZ)"

# 1. synth through the backend (the README's example on SYNTH_DOCS documents): must run without
#    engine errors; its accepted items depend on the server's sampling and grammar support.
SYNTH="--id-field doc_id --personas 2 --max-chunks-per-doc 1 --max-tokens 384 --min-reference-reward 0.3 --min-margin=0"
t0=$(date +%s.%N)
"$ARES" synth -m "$MODEL" --backend "$URL" -i "$ROOT/samples" --max-docs "${SYNTH_DOCS:-2}" $SYNTH \
  --out "$W/synth-remote" --responses-out "$W/responses-remote.jsonl" >"$W/synth-remote.out" 2>"$W/synth-remote.err" \
  || { echo "synth through --backend failed:" >&2; tail "$W/synth-remote.err" >&2; exit 1; }
echo "synth --backend: $(grep -c . "$W/synth-remote/dataset.jsonl" || true) items accepted in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s; $(grep 'model requests' "$W/synth-remote.out")"
grep -q '(0 engine errors)' "$W/synth-remote.out" || { echo "synth --backend had engine errors" >&2; exit 1; }
# The items and responses both judges score: the README's example with the local engine.
"$ARES" synth -m "$MODEL" -i "$ROOT/samples" $SYNTH --out "$W/synth" \
  --responses-out "$W/responses.jsonl" >"$W/synth.out" 2>"$W/synth.err" \
  || { echo "local synth failed:" >&2; tail "$W/synth.err" >&2; exit 1; }
ITEMS=$(grep -c . "$W/synth/dataset.jsonl" || true)
echo "judged set (local synth): $ITEMS items, $(grep -c . "$W/responses.jsonl" || true) responses"
[ "$ITEMS" -gt 0 ] || { echo "no items accepted: nothing to judge" >&2; exit 1; }

# 2. judge the same items and responses through the backend and locally, in both modes.
judge() { # name mode [--backend URL]
  local name=$1 mode=$2; shift 2
  "$ARES" judge -m "$MODEL" --rubrics "$W/synth/dataset.jsonl" --responses "$W/responses.jsonl" \
    --mode "$mode" --out "$W/$name.jsonl" "$@" 2>"$W/$name.err" >/dev/null || true
  grep '^judge:' "$W/$name.err" | sed "s/^/$name: /"
}
judge remote-logprob logprob --backend "$URL"
judge local-logprob logprob
judge remote-generate generate --backend "$URL"
judge local-generate generate

python3 - "$W" <<'EOF'
import json, re, sys
w = sys.argv[1]
def load(n):
    return {(r["item_id"], r["response_id"]): r for r in map(json.loads, open(f"{w}/{n}.jsonl"))}
def rate(n):
    m = re.search(r"= ([0-9.]+) criteria/s", open(f"{w}/{n}.err").read())
    return float(m.group(1)) if m else float("nan")
ok = True
lr, ll = load("remote-logprob"), load("local-logprob")
diffs, bad = [], []
for k, l in ll.items():
    r = lr.get(k)
    if r is None or r["reward"] is None or l["reward"] is None:
        bad.append((k, r and r["status"], l["status"]))
        continue
    diffs.append(abs(r["reward"] - l["reward"]))
worst = max(diffs, default=float("nan"))
within = sum(d <= 0.05 for d in diffs)
print(f"logprob: {len(diffs)} responses compared, max |reward diff| {worst:.4f}, "
      f"mean {sum(diffs)/max(len(diffs),1):.4f}, within 0.05: {within}/{len(diffs)}, unscored {len(bad)}")
ok &= bool(diffs) and within == len(diffs) and not bad
gr, gl = load("remote-generate"), load("local-generate")
agree = total = 0
for k, l in gl.items():
    r = gr.get(k)
    for i, c in enumerate(l["criteria"]):
        total += 1
        rc = r["criteria"][i] if r and i < len(r["criteria"]) else None
        if rc is not None and c["verdict"] is not None and rc["verdict"] == c["verdict"]:
            agree += 1
share = agree / max(total, 1)
print(f"generate: verdicts agree on {agree}/{total} criteria ({100*share:.1f}%)")
ok &= total > 0 and share >= 0.9
for mode in ("logprob", "generate"):
    print(f"criteria/s {mode}: remote {rate('remote-' + mode):.1f}, local {rate('local-' + mode):.1f}")
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF

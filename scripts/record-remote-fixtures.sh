#!/usr/bin/env bash
# Records the llama-server response bodies in tests/fixtures/remote/llamacpp_* from a running
# llama-server (built by ../shared/bench/llama-cpp-baseline) serving the default model, with the
# request bodies ares' remote backend sends (engine/remote/server_kind.rs). Review the diff after
# re-recording: tests/remote.rs reads these files.
#
#   llama-server -m SmolLM2-135M-Instruct.Q4_1.gguf --host 127.0.0.1 --port 18095 -c 16384 -np 4 &
#   scripts/record-remote-fixtures.sh http://127.0.0.1:18095
set -euo pipefail
URL=${1:?usage: record-remote-fixtures.sh http://127.0.0.1:PORT}
OUT=$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/remote
PROMPT='<|im_start|>system
You grade a response against one criterion. Answer Yes or No.<|im_end|>
<|im_start|>user
Question: Why is the sky blue?
Response: Because of Rayleigh scattering of sunlight by air molecules.
Criterion: The response names Rayleigh scattering as the cause.
Does the response meet the criterion?<|im_end|>
<|im_start|>assistant
'
MODEL=$(curl -sf "$URL/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
post() { curl -s -H 'Content-Type: application/json' "$URL/v1/completions" -d "$1"; }
body() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1]) | {"model": sys.argv[2], "prompt": sys.argv[3]}))' "$1" "$MODEL" "$PROMPT"; }

curl -sf "$URL/v1/models" >"$OUT/llamacpp_models.json"
curl -sf "$URL/props" >"$OUT/llamacpp_props.json"
# The judge's logprob request (one token, the top 20 alternatives), sent twice so the second
# answer reports the cached prompt.
LP='{"max_tokens":1,"temperature":0.0,"top_p":1.0,"seed":0,"n":1,"stream":false,"top_k":0,"min_p":0.0,"repeat_penalty":1.0,"repeat_last_n":64,"cache_prompt":true,"n_probs":20,"post_sampling_probs":false}'
post "$(body "$LP")" >/dev/null
post "$(body "$LP")" >"$OUT/llamacpp_completion_logprobs.json"
# Generate mode: streamed, under the judge's verdict schema.
GEN='{"max_tokens":96,"temperature":0.0,"top_p":1.0,"seed":0,"n":1,"stream":true,"stream_options":{"include_usage":true},"top_k":0,"min_p":0.0,"repeat_penalty":1.0,"repeat_last_n":64,"cache_prompt":true,"json_schema":{"type":"object","properties":{"reason":{"type":"string","maxLength":200},"verdict":{"enum":["yes","no"]}},"required":["reason","verdict"],"additionalProperties":false}}'
post "$(body "$GEN")" >"$OUT/llamacpp_completion_stream.sse"
# A client error: a prompt longer than a slot's context (llama-server: 400, not retried).
LONG=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "prompt": "word " * 6000, "max_tokens": 1}))' "$MODEL")
post "$LONG" >"$OUT/llamacpp_error_400.json"
ls -l "$OUT"/llamacpp_*

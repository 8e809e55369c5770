"""TRL reward function backed by `ares serve` (Python standard library only).

    from trl import GRPOConfig, GRPOTrainer
    from trl_ares_reward import ares_reward

    # The dataset has a column `rubric` (an inline ares rubric as a JSON string, as
    # `ares export --format trl` writes it) or `item_id` (an item of the server's --rubrics file)
    # naming each prompt's rubric; TRL passes dataset columns to reward functions as keyword
    # arguments.
    dataset = load_dataset("json", data_files="run/trl/train.jsonl", split="train")
    trainer = GRPOTrainer(model=..., reward_funcs=ares_reward, args=GRPOConfig(...),
                          train_dataset=dataset)

Completions may be plain strings or conversations (lists of {"role", "content"}); the last
assistant message is judged. A response the judge could not score gets None, which TRL ignores
for that sample (set ARES_FAILED_REWARD to a number to use it instead).

Environment: ARES_URL (default http://127.0.0.1:8080), ARES_API_KEY, ARES_TIMEOUT (seconds,
default 600), ARES_FAILED_REWARD, ARES_LABEL_COLUMN (default: `rubric` if the dataset has it,
else `item_id`).
"""

import json
import os
import urllib.error
import urllib.request

URL = os.environ.get("ARES_URL", "http://127.0.0.1:8080").rstrip("/")
API_KEY = os.environ.get("ARES_API_KEY")
TIMEOUT = float(os.environ.get("ARES_TIMEOUT", "600"))
FAILED = os.environ.get("ARES_FAILED_REWARD")
LABEL_COLUMN = os.environ.get("ARES_LABEL_COLUMN")


def _post(path, body):
    req = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    if API_KEY:
        req.add_header("Authorization", "Bearer " + API_KEY)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        raise RuntimeError("ares serve %s: HTTP %d: %s" % (path, e.code, e.read().decode("utf-8", "replace"))) from None


def _text(completion):
    if isinstance(completion, str):
        return completion
    # Conversational: the last assistant turn.
    for message in reversed(completion):
        if message.get("role") == "assistant":
            return message.get("content") or ""
    return ""


def ares_reward(prompts, completions, **kwargs):
    """One float (or None) per completion, from one /get_reward call."""
    columns = [LABEL_COLUMN] if LABEL_COLUMN else ["rubric", "item_id"]
    labels = next((kwargs[c] for c in columns if kwargs.get(c) is not None), None)
    if labels is None:
        raise ValueError("the dataset needs a column %s naming each prompt's rubric" % " or ".join(map(repr, columns)))
    out = _post(
        "/get_reward",
        {"query": [_text(c) for c in completions], "labels": [l if isinstance(l, dict) else str(l) for l in labels]},
    )
    failed = float(FAILED) if FAILED is not None else None
    return [failed if r is None else float(r) for r in out["rewards"]]


if __name__ == "__main__":
    import sys

    # Smoke test: python3 examples/trl_ares_reward.py ITEM_ID "a response"
    print(ares_reward([""], [sys.argv[2]], item_id=[sys.argv[1]]))

"""verl reward function backed by `ares serve` (Python standard library only).

Wire it into verl with the custom reward function settings:

    custom_reward_function.path=examples/verl_ares_reward.py
    custom_reward_function.name=compute_score          # one call per sample
    # or, with reward_model.reward_manager=batch:
    custom_reward_function.name=compute_score_batch    # one HTTP call per batch

Each sample's `ground_truth` (`reward_model.ground_truth` in the verl parquet) names the rubric:
an inline ares rubric (its id and criteria) as a JSON string, which is what
`ares export --format verl` (or `ares synth --format verl`) writes, or an item id of the
server's `--rubrics` file. The server needs no `--rubrics` file for the former:

    ares synth -i docs/ --out run --format verl          # run/verl/train.parquet
    ares serve &
    python3 -m verl.trainer.main_ppo algorithm.adv_estimator=grpo \
        data.train_files=run/verl/train.parquet data.prompt_key=prompt \
        custom_reward_function.path=examples/verl_ares_reward.py ...

Environment: ARES_URL (default http://127.0.0.1:8080), ARES_API_KEY (bearer token, optional),
ARES_TIMEOUT (seconds, default 600), ARES_FAILED_REWARD (a number used when the judge could not
score a response, e.g. it was longer than the judge's context; unset: raise, so a failure is never
a silent 0).
"""

import json
import os
import urllib.error
import urllib.request

URL = os.environ.get("ARES_URL", "http://127.0.0.1:8080").rstrip("/")
API_KEY = os.environ.get("ARES_API_KEY")
TIMEOUT = float(os.environ.get("ARES_TIMEOUT", "600"))
FAILED = os.environ.get("ARES_FAILED_REWARD")


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


def _label(ground_truth):
    if isinstance(ground_truth, dict):
        return ground_truth
    return str(ground_truth)


def _reward(value, status, error):
    if value is not None:
        return float(value)
    if FAILED is not None:
        return float(FAILED)
    raise RuntimeError("ares could not score a response (%s): %s" % (status, error))


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs):
    """One /get_reward call for the whole batch; returns one float per sample."""
    out = _post(
        "/get_reward",
        {"query": list(solution_strs), "labels": [_label(g) for g in ground_truths]},
    )
    return [_reward(r, s, e) for r, s, e in zip(out["rewards"], out["statuses"], out["errors"])]


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's per-sample signature: the reward of one response."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


if __name__ == "__main__":
    import sys

    # Smoke test: python3 examples/verl_ares_reward.py ITEM_ID "a response"
    print(compute_score("ares", sys.argv[2], sys.argv[1]))

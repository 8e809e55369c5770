#!/usr/bin/env python3
"""Domain labels of ares synth's label prompt on fixed passages of ../shared/corpus.

Renders templates/synth/label.txt (or the file given with --template) as the label stage does,
sends it to a running `ares serve` (OpenAI API, JSON-schema constrained, greedy) and counts the
labels whose domain is one of the expected ones (expected.json, written by hand per source before
any run). Two passage sets: `dev` (the first paragraph of each of the 48 Wikipedia articles,
medquad/pubmed/tatqa lines 1-8, the 12 python docs and 3 Debian texts: 87) and `held-out` (the
third paragraph of each article, lines 21-30 of medquad/pubmed/tatqa, 5 cuts of the GNU coding
standards: 83). Only the first 1,500 characters of each passage are sent.

  ares serve -m qwen2.5-coder-1.5b-instruct -t 2 --kv-mem 3072 --port 8931 &
  python3 benches/labels/probe.py --set dev
  python3 benches/labels/probe.py --set held-out
  # the prompt before 2026-12-07:
  git show de926d4~1:templates/synth/label.txt > /tmp/label-old.txt
  python3 benches/labels/probe.py --set dev --template /tmp/label-old.txt --list-format inline
"""
import argparse, concurrent.futures as cf, glob, json, os, re, sys, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")

def domains():
    """DEFAULT_DOMAINS with DOMAIN_DESCRIPTIONS, read from src/synth/prompts.rs."""
    src = open(os.path.join(ROOT, "src/synth/prompts.rs")).read()
    block = src.split("pub const DOMAIN_DESCRIPTIONS")[1].split("];")[0]
    pairs = re.findall(r'\(\s*"([^"]+)",\s*"([^"]+)",?\s*\)', block)
    assert len(pairs) == 10, pairs
    return pairs

def template(path):
    body = "\n".join(l for l in open(path).read().split("\n") if not l.startswith("#"))
    system = body.split("[system]\n")[1].split("[user]\n")[0].strip("\n")
    user = body.split("[user]\n")[1].strip("\n")
    return system, user

def passages(which, expected):
    wiki_ok = expected["wikipedia_xquad_en_paragraphs.jsonl (by title)"]
    out, seen = [], {}
    want = 1 if which == "dev" else 3
    for line in open(os.path.join(CORPUS, "wikipedia_xquad_en_paragraphs.jsonl")):
        r = json.loads(line)
        seen[r["title"]] = seen.get(r["title"], 0) + 1
        if seen[r["title"]] == want:
            out.append(("wiki/" + r["title"], r["text"], wiki_ok[r["title"]]))
    lo, hi = (0, 8) if which == "dev" else (20, 30)
    for f in ["medquad_nih_pages.sample.jsonl", "pubmed_abstracts.sample.jsonl",
              "tatqa_report_excerpts.sample.jsonl"]:
        for i, line in enumerate(open(os.path.join(CORPUS, f))):
            if lo <= i < hi:
                out.append((f"{f}:{i + 1}", json.loads(line)["text"], expected[f]))
    if which == "dev":
        for f in sorted(glob.glob(os.path.join(CORPUS, "python-docs/*.txt"))):
            out.append(("python-docs/" + os.path.basename(f), open(f).read(), expected["python-docs/*"]))
        for f in sorted(glob.glob(os.path.join(CORPUS, "legal/*.txt"))):
            out.append(("legal/" + os.path.basename(f), open(f).read(), expected["legal/*"]))
    else:
        g = open(os.path.join(CORPUS, "gnu-coding-standards.txt")).read()
        for k in range(5):
            out.append((f"gnu-coding-standards.txt@{20000 + k * 30000}",
                        g[20000 + k * 30000:], expected["gnu-coding-standards.txt"]))
    return [(n, t[:1500], ok) for n, t, ok in out]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=["dev", "held-out"], default="dev")
    ap.add_argument("--template", default=os.path.join(ROOT, "templates/synth/label.txt"))
    ap.add_argument("--url", default="http://127.0.0.1:8931")
    ap.add_argument("--personas", type=int, default=2)
    ap.add_argument("--list-format", choices=["lines", "inline"], default="lines",
                    help="inline: the format before 2026-12-07, 'Math (mathematics, ...); ...'")
    a = ap.parse_args()
    expected = json.load(open(os.path.join(HERE, "expected.json")))
    system, user = template(a.template)
    D = domains()
    listing = ("\n".join(f"- {n}: {w}" for n, w in D) if a.list_format == "lines"
               else "; ".join(f"{n} ({w})" for n, w in D))
    per = {"type": "array", "minItems": 1, "maxItems": a.personas,
           "items": {"type": "string", "minLength": 2, "maxLength": 60}}
    props = {"subject": {"type": "string", "minLength": 2, "maxLength": 60},
             "domain": {"type": "string", "enum": [n for n, _ in D]}, "personas": per}
    if '"subject"' not in user:
        props.pop("subject")
    schema = {"type": "object", "properties": props, "required": list(props),
              "additionalProperties": False}

    def one(p):
        name, text, ok = p
        fill = lambda s: (s.replace("{{chunk}}", text).replace("{{domains}}", listing)
                          .replace("{{personas}}", str(a.personas)))
        body = {"model": "m", "max_tokens": 104, "temperature": 0,
                "messages": [{"role": "system", "content": fill(system)},
                             {"role": "user", "content": fill(user)}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "label", "schema": schema}}}
        req = urllib.request.Request(a.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req, timeout=1800).read())
        return json.loads(out["choices"][0]["message"]["content"])

    ps = passages(a.set, expected)
    with cf.ThreadPoolExecutor(16) as ex:
        labels = list(ex.map(one, ps))
    fits, by = 0, {}
    for (name, _, ok), l in zip(ps, labels):
        good = l["domain"] in ok
        fits += good
        src = re.split(r"[/:@]", name)[0]
        by.setdefault(src, [0, 0])
        by[src][0] += good
        by[src][1] += 1
        print("fits " if good else "WRONG", name[:44].ljust(44), l["domain"], l["personas"],
              l.get("subject", ""))
    print("per source:", ", ".join(f"{s} {g}/{n}" for s, (g, n) in by.items()))
    print(f"labels that fit: {fits} of {len(ps)}")

if __name__ == "__main__":
    sys.exit(main())

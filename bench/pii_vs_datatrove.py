"""The PII pass against datatrove's PIIFormatter on the same text, per core (issue #24 item 5).

    python3.11 -m venv /tmp/dtvenv && /tmp/dtvenv/bin/pip install datatrove regex
    python bench/pii_vs_datatrove.py [--dt-python /tmp/dtvenv/bin/python] [--rounds 3] [--copies 10]

datatrove is never a dependency of this project: it runs from its own (scratch) venv as a
subprocess, on the texts this process wrote to a temporary file. Each side replaces what it finds:
ours `pii.scrub` with tags, all five types, `ip_policy=all` (the stage's defaults); datatrove's
`PIIFormatter().format` (e-mail and IPv4, public addresses only: its defaults). Each timing is the
CPU seconds of one pass over the texts after a warm-up pass, inside the process that does the work
(start-up and imports excluded); the sides alternate `--rounds` times and the medians are compared:
ratio = datatrove's CPU seconds / ours (> 1: ours is faster per core).

Texts (bench/pii_realtext.py): `real` is the 1,129 real DDT sentences in documents of 5 (x20,
2.2 MB; 1980s-90s prose, few numbers); `dense` is the real-text benchmark's documents, the same
sentences with ~2.8 planted items per KB and look-alikes (far denser than web text); `mixed` is
`real` with every 10th document swapped for a `dense` one. On `dense` both sides are also scored
(exact spans) for the types datatrove covers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pii_realtext as realtext  # noqa: E402

from dfm_hpc.text import pii  # noqa: E402

# run in datatrove's venv: times one pass per text set after a warm-up; spans of its two regexes
_DT = r"""
import json, sys, time
from datatrove.pipeline.formatters.pii import PIIFormatter
texts = json.load(open(sys.argv[1]))
f = PIIFormatter()
out = {"cpu": {}, "spans": []}
for name, docs in texts.items():
    for t in docs[:200]:
        f.format(t)
    c = time.process_time()
    for t in docs:
        f.format(t)
    out["cpu"][name] = time.process_time() - c
for t in texts["dense"]:
    sp = [(m.start(), m.end(), "email") for m in f.emails_replacer.regex.finditer(t)]
    sp += [(m.start(), m.end(), "ip") for m in f.ip_replacer.regex.finditer(t) if f.ip_replacer.validator(m[0])]
    out["spans"].append(sp)
print(json.dumps(out))
"""


def ours(texts):
    out = {}
    for name, docs in texts.items():
        for t in docs[:200]:
            pii.scrub(t)
        c = time.process_time()
        for t in docs:
            pii.scrub(t)
        out[name] = time.process_time() - c
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dt-python", default="/tmp/dtvenv/bin/python", help="a python with datatrove installed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=10)
    a = ap.parse_args()
    raw = realtext.load_sentences()
    dense_docs = realtext.build(a.copies, 0)
    real = [" ".join(raw[i : i + 5]) for i in range(0, len(raw), 5)] * 20
    # every 10th real document swapped for a dense one: PII at about a tenth of the dense rate
    mixed = [dense_docs[i // 10 % len(dense_docs)] if i % 10 == 9 else (t, [], "") for i, t in enumerate(real)]
    texts = {"real": real, "mixed": [t for t, *_ in mixed], "dense": [t for t, *_ in dense_docs]}
    items = {"real": 0, "mixed": sum(len(g) for _, g, _ in mixed), "dense": sum(len(g) for _, g, _ in dense_docs)}
    mb = {k: sum(len(t.encode()) for t in v) / 1e6 for k, v in texts.items()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    mine, theirs, spans = [], [], None
    try:
        for _ in range(a.rounds):  # interleaved: a load spike hits both sides alike
            mine.append(ours(texts))
            p = subprocess.run([a.dt_python, "-c", _DT, f.name], capture_output=True, text=True, check=True)
            res = json.loads(p.stdout)
            theirs.append(res["cpu"])
            spans = res["spans"]
    finally:
        os.unlink(f.name)
    load = os.getloadavg()[0]
    print(f"Python {platform.python_version()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load:.1f} at the end; {a.rounds} interleaved rounds, medians of CPU seconds\n")
    print("| text | MB | planted per KB | ours: CPU s | MB/s | datatrove: CPU s | MB/s | ratio (datatrove / ours) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in texts:
        o = statistics.median(r[name] for r in mine)
        d = statistics.median(r[name] for r in theirs)
        ratios = ", ".join(f"{t[name] / m[name]:.2f}" for m, t in zip(mine, theirs))
        print(f"| {name} | {mb[name]:.2f} | {items[name] / mb[name] / 1000:.2f} | {o:.3f} | {mb[name] / o:.2f} | "
              f"{d:.3f} | {mb[name] / d:.2f} | "
              f"**{statistics.median(t[name] / m[name] for m, t in zip(mine, theirs)):.2f}** ({ratios}) |")
    print("\nOn `dense`, exact spans (ip_policy=public for both, datatrove's only mode by default):\n")
    print("| type | planted | ours: precision | recall | datatrove: precision | recall |\n|---|---|---|---|---|---|")
    res_ours, _ = realtext.score(dense_docs, "public")
    by_doc = iter([[tuple(s) for s in sp] for sp in spans])
    res_dt, _ = realtext.score(dense_docs, "public", finder=lambda _t: next(by_doc))
    for t in ("email", "ip"):
        po, ro, g, _f = res_ours[t]
        pd, rd, _g, _f2 = res_dt[t]
        print(f"| {t} | {g} | {po:.4f} | {ro:.4f} | {pd:.4f} | {rd:.4f} |")


if __name__ == "__main__":
    main()

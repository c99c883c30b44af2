"""Translation throughput (issue #3), each comparison measured in one run on the same segments.

    python bench/translate_throughput.py [--segments 1500] [--budget 4096] [--naive-batch 16]

1. sorted, token-budgeted batching (what the translate stage does) vs a naive HF loop (input
   order, fixed batch size), hf backend, tiny T5 (random weights) on this machine's CPU;
2. the ctranslate2 backend vs the hf backend on the same model, segments and batches;
3. shard balance (max/mean source tokens) of the translate stage's planner on an OASST-like
   length mix.
Segments: the project's OASST2 fixture cut by the real segmenter, topped up with sentences drawn
from it until --segments, so lengths follow the fixture's long-tailed mix. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path


def segments(n: int, seed: int = 0) -> list[str]:
    from dfm_hpc.text import oasst, oasst_filter, segment
    from dfm_hpc.tiny import data as tiny_data

    with tempfile.TemporaryDirectory() as d:
        msgs, _ = oasst_filter.filter_messages(oasst.load_messages(str(tiny_data.write_fixture(d)["messages"])))
    pieces = [p.text for m in msgs for p in segment.segment(m["text"]) if p.translate]
    rng = random.Random(seed)
    out = list(pieces)
    while len(out) < n:  # glue 1-4 fixture segments: keeps the mix long-tailed, like OASST
        out.append(" ".join(rng.choice(pieces) for _ in range(rng.choice([1, 1, 1, 2, 3, 4]))))
    rng.shuffle(out)
    return out[:n]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=1500)
    ap.add_argument("--budget", type=int, default=4096, help="max padded source tokens per batch")
    ap.add_argument("--naive-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from dfm_hpc import tiny
    from dfm_hpc.job.shards import balance
    from dfm_hpc.text import translators

    work = Path(tempfile.mkdtemp())
    model = tiny.resolve("tiny:t5", work)
    texts = segments(args.segments)
    hf = translators.make_translator("hf", model, dtype="float32", max_batch_tokens=args.budget)
    lengths = hf.count_tokens(texts)
    src_tokens = sum(lengths)
    sorted_batches = translators.make_batches(lengths, args.budget)
    naive_batches = translators.fixed_batches(len(texts), args.naive_batch)
    eff_sorted = translators.padding_efficiency(lengths, sorted_batches)
    eff_naive = translators.padding_efficiency(lengths, naive_batches)

    ids_sorted, t_sorted = timed(lambda: hf.translate_ids(texts, sort=True))
    ids_naive, t_naive = timed(lambda: hf.translate_ids(texts, sort=False, batch_size=args.naive_batch))
    ct2 = translators.make_translator("ctranslate2", model, dtype="float32", max_batch_tokens=args.budget,
                                      cache_dir=work)
    ids_ct2, t_ct2 = timed(lambda: ct2.translate_ids(texts, sort=True))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    print(f"segments: {len(texts)}, source tokens: {src_tokens}, budget {args.budget} tokens/batch\n")
    print("| run | batches | padding efficiency | seconds | segments/s | source tokens/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    rows = [("hf, naive loop (input order, batch %d)" % args.naive_batch, len(naive_batches), eff_naive, t_naive),
            ("hf, sorted + token budget", len(sorted_batches), eff_sorted, t_sorted),
            ("ctranslate2, sorted + token budget", len(sorted_batches), eff_sorted, t_ct2)]
    for name, nb, eff, t in rows:
        print(f"| {name} | {nb} | {eff:.3f} | {t:.1f} | {len(texts) / t:.1f} | {src_tokens / t:,.0f} | "
              f"{t_naive / t:.2f}x |")
    same = sum(a == b for a, b in zip(ids_sorted, ids_naive))
    same_ct2 = sum(a == b for a, b in zip(ids_sorted, ids_ct2))
    print(f"\nidentical outputs: sorted vs naive {same}/{len(texts)}, ctranslate2 vs hf {same_ct2}/{len(texts)}")

    rng = random.Random(1)
    costs = [max(1, int(rng.lognormvariate(4.3, 1.0))) for _ in range(135_000)]  # ~OASST2's 135k messages
    print("\n| shards | messages | max/mean source tokens |\n|---|---|---|")
    for n in (8, 64, 256):
        loads = [sum(costs[i] for i in s) for s in balance(costs, n)]
        print(f"| {n} | {len(costs):,} | {max(loads) / (sum(loads) / n):.4f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

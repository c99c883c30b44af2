"""PII filter throughput and accuracy (issue #5), one process, one core.

    python bench/pii_throughput.py [--mb 20] [--repeat 3]

Text: tests/helpers/pii_text.py's generator (Danish sentences with planted CPR numbers, e-mails, phone
numbers, IPs, IBANs/bank accounts among hard negatives: dates, prices, years, order numbers, postal
codes, times, versions, invalid-date numbers, IBANs with a wrong checksum, and filler), ~--mb MB in
documents of 8 sentences. Measures MB/s (UTF-8 bytes of input text per second) of find() and of
scrub() with tags and with fakes, all types, best of --repeat; then precision/recall per type (exact
spans) on the same text. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dfm_hpc.text import pii  # noqa: E402

from helpers.pii_text import planted_docs, score  # noqa: E402


def corpus(mb: float):
    docs, size, seed = [], 0, 0
    while size < mb * 1e6:
        batch = planted_docs(500, seed=seed)
        seed += 1
        docs += batch
        size += sum(len(t.encode()) for t, _ in batch)
    return docs, size


def best_of(fn, repeat: int) -> float:
    """CPU seconds of this process, best of `repeat` (on a shared machine wall time includes waiting)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    docs, size = corpus(a.mb)
    texts = [t for t, _ in docs]
    planted = sum(len(s) for _, s in docs)
    print(f"{len(texts)} documents, {size / 1e6:.1f} MB, {planted} planted items; Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; one process\n")
    runs = [("find (all types)", lambda: [pii.find(t) for t in texts]),
            ("scrub, tags", lambda: [pii.scrub(t, replacement="tags") for t in texts]),
            ("scrub, fake", lambda: [pii.scrub(t, replacement="fake") for t in texts])]
    print("| operation | CPU seconds (best of %d) | MB/s per core |" % a.repeat)
    print("|---|---|---|")
    for name, fn in runs:
        s = best_of(fn, a.repeat)
        print(f"| {name} | {s:.2f} | {size / 1e6 / s:.2f} |")
    print("\n| type | planted | found | precision | recall |")
    print("|---|---|---|---|---|")
    for t, (prec, rec, gold, found) in score(docs).items():
        print(f"| {t} | {gold} | {found} | {prec:.4f} | {rec:.4f} |")


if __name__ == "__main__":
    main()

"""The tokenize stage against `tokenizers`' own batch encode of the same corpus on the same cores (issue #24).

    python bench/tokenize_throughput.py [--mb 11.7] [--threads 1 2] [--rounds 3] [--before 544274c] [--process]

Corpus: the 1,129 real Danish sentences of bench/data/pii/ddt_sentences.txt (UD Danish DDT) in documents of
5-60 consecutive sentences (seeded), to --mb MB of JSON lines. Tokenizer: Mistral-7B's real one
(mistral-common's tokenizer.model.v1, loaded as transformers loads Mistral-7B's: 32,000 entries, BPE with
byte fallback; tests/job/test_chat_template.py), saved to a directory the stage loads.

For each --threads (a subprocess each: one tokenizer thread pool per process, RAYON_NUM_THREADS) the sides
alternate --rounds times after a warm-up, and the medians are compared:
- `encode_batch`: the tokenizer's batch encode and its ids, `[e.ids for e in tok.encode_batch(b)]`, over
  batches of tokenize.batch_docs documents already in memory (what transformers' call runs);
- `encode_batch_fast`: the same without offsets (the fastest batch encode `tokenizers` has);
- `stage`: `store.write_shard` as the stage runs it on that many threads: rows read from the Dataset,
  encoded, ids converted, written atomically with the .idx and .done (one shard of the whole corpus);
- `before` (with --before COMMIT): write_shard of store.py at that commit, as it ran then (its tokenizer
  call, on that many threads); its shard must be byte-identical to `stage`'s (checked, each round).
ratio = the baseline's seconds / the stage's (>= 1: the stage is as fast), of wall seconds and of the
process's CPU seconds (on a shared machine the CPU ratio of one thread is the steadier one). With
--process, one run of the whole stage as a process (`python -m dfm_hpc stages=[tokenize]`, local
launcher) is timed too.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
SENTENCES = ROOT / "bench" / "data" / "pii" / "ddt_sentences.txt"


def corpus(path: Path, mb: float, seed: int = 0) -> int:
    sents = SENTENCES.read_text().splitlines()
    rng, size = random.Random(seed), 0
    with open(path, "w") as f:
        while size < mb * 1e6:
            i, k = rng.randrange(len(sents)), rng.randint(5, 60)
            doc = " ".join(sents[(i + j) % len(sents)] for j in range(k))
            size += len(doc.encode())
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    return size


def mistral_7b(out: Path) -> Path:
    from helpers.mistral import mistral_7b_tokenizer

    mistral_7b_tokenizer().save_pretrained(out)
    return out


def old_store(commit: str, where: Path):
    src = subprocess.run(["git", "show", f"{commit}:dfm_hpc/job/store.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    path = where / "store_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("store_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(args) -> dict:
    """One process, one thread count: the sides alternate; wall seconds per round."""
    from transformers import AutoTokenizer

    from dfm_hpc.job import store

    threads = int(os.environ["RAYON_NUM_THREADS"])
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"  # as the stage sets it
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    rows = store.load_rows(args.corpus)
    texts = [t for t in rows["text"] if t and t.strip()]
    batches = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]
    backend, dtype = tok.backend_tokenizer, store.dtype_for(len(tok))
    work = Path(args.corpus).parent / f"work-{threads}"  # removed with the rest by main()
    work.mkdir()
    before = old_store(args.before, work) if args.before else None

    def encode_batch():
        return sum(len(e.ids) for b in batches for e in backend.encode_batch(b, add_special_tokens=False))

    def encode_batch_fast():
        return sum(len(e.ids) for b in batches for e in backend.encode_batch_fast(b, add_special_tokens=False))

    def stage():
        return store.write_shard(work / "after", 0, rows, tok, dtype, args.batch, lambda: False, threads)["tokens"]

    def old():
        return before.write_shard(work / "before", 0, rows, tok, dtype, args.batch, lambda: False)["tokens"]

    sides = {"encode_batch": encode_batch, "encode_batch_fast": encode_batch_fast, "stage": stage}
    if before:
        sides["before"] = old
    (work / "after").mkdir()
    (work / "before").mkdir()
    for f in sides.values():  # warm-up
        f()
    secs, cpu, tokens = {k: [] for k in sides}, {k: [] for k in sides}, {}
    for _ in range(args.rounds):
        for name, f in sides.items():
            t0, c0 = time.perf_counter(), time.process_time()
            tokens[name] = f()
            secs[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        for name in ("shard-00000.bin", "shard-00000.idx.npy") if before else ():
            assert (work / "after" / name).read_bytes() == (work / "before" / name).read_bytes(), name
    return {"threads": threads, "docs": len(texts), "tokens": tokens, "secs": secs, "cpu": cpu}


def whole_process(args, threads: int) -> dict:
    """The stage as a process (imports, config, tokenizer and data load, fingerprint, store) on a fresh store."""
    runs = Path(args.corpus).parent / f"runs-{threads}"
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dfm_hpc", "stages=[tokenize]", f"data.corpus={args.corpus}",
           f"model.name_or_path={args.tokenizer}", f"runs_root={runs}", f"tokenize.batch_docs={args.batch}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    log = "\n".join(f.read_text() for f in runs.rglob("stages/tokenize/logs/*.log"))
    line = next(ln for ln in log.splitlines() if "tokens/s" in ln)
    return {"threads": threads, "wall": wall, "stage_line": line.split("] ", 1)[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=11.7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000, help="documents per encode (tokenize.batch_docs)")
    ap.add_argument("--before", help="also time store.py's write_shard at this commit (and compare its bytes)")
    ap.add_argument("--process", action="store_true", help="also time the whole stage as a process")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # a subprocess: one thread count
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    tmp = Path(tempfile.mkdtemp())
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path) -> None:
    args.corpus = str(tmp / "ddt_docs.jsonl")
    size = corpus(Path(args.corpus), args.mb)
    args.tokenizer = str(mistral_7b(tmp / "mistral-7b"))
    print(f"corpus: {size / 1e6:.1f} MB ({args.corpus}); Mistral-7B tokenizer; batch {args.batch}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| threads | side | tokens | wall s: median (rounds) | CPU s: median (rounds) | tokens/s (wall) "
          "| baseline / stage: wall | CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.threads:
        cmd = [sys.executable, __file__, "--measure", "--corpus", args.corpus, "--tokenizer", args.tokenizer,
               "--rounds", str(args.rounds), "--batch", str(args.batch)]
        cmd += ["--before", args.before] if args.before else []
        out = subprocess.run(cmd, env={**os.environ, "RAYON_NUM_THREADS": str(n)}, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        wall = {k: statistics.median(v) for k, v in r["secs"].items()}
        cpu = {k: statistics.median(v) for k, v in r["cpu"].items()}
        for name in wall:
            ratios = "| |" if name == "stage" else \
                f"| {wall[name] / wall['stage']:.3f} | {cpu[name] / cpu['stage']:.3f} |"
            ws, cs = (", ".join(f"{x:.2f}" for x in r[k][name]) for k in ("secs", "cpu"))
            print(f"| {n} | {name} | {r['tokens'][name]:,} | {wall[name]:.2f} ({ws}) | {cpu[name]:.2f} ({cs}) "
                  f"| {r['tokens'][name] / wall[name]:,.0f} {ratios}")
    if args.process:
        for n in args.threads:
            w = whole_process(args, n)
            print(f"\nwhole process, {n} threads: {w['wall']:.1f} s wall; the stage's own line: {w['stage_line']}")


if __name__ == "__main__":
    main()

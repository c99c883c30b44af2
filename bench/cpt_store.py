"""Per-rank memory and step time of the cpt data path: the memory-mapped token store against the
in-memory loader it replaced (every rank torch.load-ed all packed blocks as one int64 tensor).

    python bench/cpt_store.py [--sizes 1e6,1e7,1e8] [--steps 100] [--repeat 3]

For each corpus size a store of random tokens (uint16, vocabulary 512, ~500-token documents) is
written; then one fresh process per (size, loader) trains the tiny Llama as the cpt stage does
(train.training_args: DeepSpeed ZeRO-2, one rank) for --steps steps and reports its peak RSS
(ru_maxrss: model, DeepSpeed, and the data) and the Trainer's train_runtime. "in-memory" loads
the blocks as today's loader did (a train.pt of int64 blocks, torch.load); "store" is
store.Blocks over the memory-mapped shards. The loaders alternate, --repeat times: the median step
time, the largest memory figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SEQ = 64


def make_store(path: Path, n_tokens: int) -> None:
    import numpy as np

    from dfm_hpc.job import store

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per_shard, shards, left = 20_000_000, 0, n_tokens
    while left > 0:
        n = min(per_shard, left)
        tokens = rng.integers(3, 512, size=n, dtype=np.uint16)
        ends = np.arange(500, n + 1, 500, dtype=np.int64)
        if not len(ends) or ends[-1] != n:
            ends = np.append(ends, n)
        tokens[ends - 1] = 2  # EOS
        tokens.astype("<u2").tofile(path / f"shard-{shards:05d}.bin")
        np.save(path / f"shard-{shards:05d}.idx.npy", ends)
        info = {"documents": len(ends), "tokens": n, "sha256": store.file_sha256(path / f"shard-{shards:05d}.bin")}
        (path / f"shard-{shards:05d}.done").write_text(json.dumps(info))
        shards, left = shards + 1, left - n
    store.finish(path, {"dtype": "<u2", "source": "random"}, shards)


def child(loader: str, path: Path, steps: int) -> None:
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT="29741", OMP_NUM_THREADS="1")
    import torch
    from omegaconf import OmegaConf
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging

    logging.set_verbosity_error()
    from dfm_hpc import dist, schema, tiny
    from dfm_hpc.job import store, train
    from dfm_hpc.job.rank import StageContext

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config),
                          {"cpt": {"seq_len": SEQ, "global_batch_size": 8, "micro_batch_size": 8, "max_steps": steps,
                                   "save_every_steps": 10 ** 9, "log_every_steps": 10 ** 9, "lr": 1e-3,
                                   "gradient_checkpointing": False}})
    s = store.Store(path)
    if loader == "store":
        ds = store.Blocks([(s, 0, s.n_tokens)], SEQ)
    else:  # what the in-memory loader did on every rank: torch.load the packed int64 blocks
        from dfm_hpc.job import data

        pt = path / "train.pt"
        if not pt.exists():
            torch.save(data.to_blocks(torch.from_numpy(s.tokens(0, s.n_tokens)), SEQ), pt)
            print(json.dumps({"note": "wrote train.pt; run again"}))
            return
        blocks = torch.load(pt)

        class InMemory:
            def __len__(self):
                return len(blocks)

            def __getitem__(self, i):
                return {"input_ids": blocks[i], "labels": blocks[i]}

        ds = InMemory()
    ctx = StageContext(work, work / "cpt", dist.setup_env())
    ctx.stage_dir.mkdir()
    kw = train.training_args(cfg, ctx, cfg.cpt)
    kw["report_to"] = []
    train.accelerate_deepspeed_cpu_compat()
    path_model = tiny.resolve("tiny:llama", work / "cache")
    t = Trainer(model=train.load_model(path_model, cfg.cpt), args=TrainingArguments(**kw), train_dataset=ds)
    runtime = t.train().metrics["train_runtime"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB -> MB
    status = dict(ln.split(":", 1) for ln in Path("/proc/self/status").read_text().splitlines() if ":" in ln)
    anon = int(status.get("RssAnon", "0 kB").split()[0]) / 1024  # private memory now (not page cache)
    print(json.dumps({"rss_mb": round(rss), "anon_mb": round(anon), "step_ms": round(1000 * runtime / steps, 1)}))
    train.teardown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("LOADER", "STORE"))
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.steps)
    work = Path(tempfile.mkdtemp())
    rows = []
    for size in (int(float(x)) for x in args.sizes.split(",")):
        path = work / f"store-{size}"
        make_store(path, size)
        runs = {"in-memory": [], "store": []}
        for _ in range(args.repeat):
            for loader in runs:
                cmd = [sys.executable, __file__, "--child", loader, str(path), "--steps", str(args.steps)]
                for _ in range(2):  # the in-memory loader's first call only writes train.pt
                    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    out = p.stdout.strip().splitlines()[-1]
                    if "note" not in out:
                        break
                runs[loader].append(json.loads(out))
        res = {k: {"rss_mb": max(r["rss_mb"] for r in v), "anon_mb": max(r["anon_mb"] for r in v),
                   "step_ms": statistics.median(r["step_ms"] for r in v)} for k, v in runs.items()}
        rows.append((size, res))
        print(size, res, flush=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; one rank, DeepSpeed ZeRO-2 on CPU, tiny Llama, "
          f"seq {SEQ}, batch 8, {args.steps} steps, {args.repeat} runs each\n")
    print("| corpus tokens | peak RSS MB: in-memory | store | private (RssAnon) MB at the end: in-memory | store "
          "| ms/step: in-memory | store |")
    print("|---|---|---|---|---|---|---|")
    for size, r in rows:
        a, b = r["in-memory"], r["store"]
        print(f"| {size:,} | {a['rss_mb']:,} | {b['rss_mb']:,} | {a['anon_mb']:,} | {b['anon_mb']:,} | "
              f"{a['step_ms']} | {b['step_ms']} |")


if __name__ == "__main__":
    main()

"""Tokenize stage: the run's corpora (data.mixture, or data.corpus) -> token stores for cpt; with
`tokenize.chats`, also its sft/dpo chats -> chat stores (ids + assistant mask; dfm_hpc/job/chat_store.py).

A CPU job ahead of training (on LUMI a Slurm array of one-GCD small-g slices), so GPU nodes never wait
for tokenization. Work items are (source, shard) pairs dealt over every worker (array copies x ranks);
each finished shard leaves a .done marker, so a requeued or rerun job continues with the shards that
are missing; whoever finishes a store's last shard writes its manifest. Stores are content-addressed
(tokenizer hash + source fingerprint) under tokenize.store_root: a store another run made is reused
as it is (a chat store's key also has the chat template, sft.train_reasoning and sft.split_turns). A run
with chats and no cpt tokenizes no corpus. Format: dfm_hpc/job/store.py, chat_store.py and docs/training.md.

Each worker tokenizes on every core it owns (`cores`: on LUMI-C small, the 16 of `-c 16`): the tokenizer's
thread pool is sized to them, whatever the cluster's TOKENIZERS_PARALLELISM says (lumi.yaml turns it off
for the training stages, whose data loaders fork).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def cores(env: Optional[Mapping[str, str]] = None, mask: Optional[int] = None) -> int:
    """The cores this rank owns: its CPU affinity (`mask` cores), at most srun's `-c` when the rank is a
    Slurm task of its own, else shared with the node's other ranks (torchrun, the local launcher)."""
    e = os.environ if env is None else env
    mask = len(os.sched_getaffinity(0)) if mask is None else mask
    if "SLURM_PROCID" in e and e.get("SLURM_NTASKS") == e.get("WORLD_SIZE", "1"):  # srun: one task per rank
        return max(1, min(mask, int(e.get("SLURM_CPUS_PER_TASK") or mask)))
    return max(1, mask // int(e.get("LOCAL_WORLD_SIZE") or 1))


def use_cores(ctx: StageContext) -> int:
    """Size the tokenizer's thread pool (RAYON_NUM_THREADS, read at its first use: before any encoding in this
    process) to `cores()`, unless the environment already sets it; returns the threads."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(cores()))
    threads = max(1, int(os.environ["RAYON_NUM_THREADS"]))
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"  # read at each encode
    ctx.log(f"tokenizer threads: {threads} (cores this rank owns: {cores()})")
    return threads


def run(cfg: Config, ctx: StageContext) -> None:
    threads = use_cores(ctx)
    from transformers import AutoTokenizer

    from dfm_hpc import tiny
    from dfm_hpc.job import chat_store, store

    chats = chat_store.build(cfg, ctx, ctx.worker, ctx.num_workers)
    for p in chats:
        ctx.log(f"{p['kind']} chats: store {p['store']}" + ("" if "shards" in p else " (already tokenized; reused)"))
    if ctx.is_main and chats:
        chat_store.write_list(ctx, chats)
    if chats and "cpt" not in cfg.stages:
        return
    tokenizer = AutoTokenizer.from_pretrained(tiny.resolve(cfg.model.name_or_path, ctx.run_dir / "cache"))
    plans = store.build(cfg, ctx, tokenizer, ctx.worker, ctx.num_workers, threads)
    for p in plans:
        ctx.log(f"{p['name']}: store {p['store']}"
                + ("" if "shards" in p else " (already tokenized; reused)"))
    if ctx.is_main:  # which stores this run uses (cpt reads it; the manifests have the counts)
        rows = [{k: p[k] for k in ("name", "source", "resolved", "fingerprint", "store")} for p in plans]
        (ctx.stage_dir / "stores.json").write_text(json.dumps(rows, indent=2) + "\n")

"""Tokenize stage: the run's corpora (data.mixture, or data.corpus) -> token stores for cpt; with
`tokenize.chats`, also its sft/dpo chats -> chat stores (ids + assistant mask; dfm_hpc/job/chat_store.py).

A CPU job ahead of training (on LUMI a Slurm array of one-GCD small-g slices), so GPU nodes never wait
for tokenization. Work items are (source, shard) pairs dealt over every worker (array copies x ranks);
each finished shard leaves a .done marker, so a requeued or rerun job continues with the shards that
are missing; whoever finishes a store's last shard writes its manifest. Stores are content-addressed
(tokenizer hash + source fingerprint) under tokenize.store_root: a store another run made is reused
as it is (a chat store's key also has the chat template, sft.train_reasoning and sft.split_turns). A run
with chats and no cpt tokenizes no corpus. Format: dfm_hpc/job/store.py, chat_store.py and docs/training.md.
"""

from __future__ import annotations

import json

from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def run(cfg: Config, ctx: StageContext) -> None:
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
    plans = store.build(cfg, ctx, tokenizer, ctx.worker, ctx.num_workers)
    for p in plans:
        ctx.log(f"{p['name']}: store {p['store']}"
                + ("" if "shards" in p else " (already tokenized; reused)"))
    if ctx.is_main:  # which stores this run uses (cpt reads it; the manifests have the counts)
        rows = [{k: p[k] for k in ("name", "source", "resolved", "fingerprint", "store")} for p in plans]
        (ctx.stage_dir / "stores.json").write_text(json.dumps(rows, indent=2) + "\n")

"""CPT stage: continual pretraining of a causal LM on token stores with DeepSpeed ZeRO.

Data: the run's token stores (dfm_hpc/job/store.py), made by the tokenize stage, or here, split
over the ranks, when the run has none. Each source's token stream (EOS after each document) is cut
into blocks of `cpt.seq_len` (a tail that fills no block is dropped); the last `cpt.eval_fraction`
of each source's documents are held out. Blocks are read from the memory-mapped store when the
sampler hands them to a rank, so a rank's memory does not grow with the corpus. One source: its
blocks in stream order (the Trainer's seeded sampler shuffles them, as it did the in-memory blocks);
a data.mixture: the seeded order of dfm_hpc/job/mixture.py, saved once as data/order.npy, its
realised proportions in data/mixture.json. Training: the HF Trainer with the run's DeepSpeed config,
resumed from the latest checkpoint (or cpt.resume_from), converted to a universal checkpoint when it
was written by another number of ranks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from dfm_hpc import tokens
from dfm_hpc.files import atomic_open
from dfm_hpc.job import checkpoint_snapshot, data, reshard, train
from dfm_hpc.job.rank import StageContext
from dfm_hpc.schema import Config


def prepare(cfg, ctx, tokenizer, seen=None):
    """(train Blocks, eval Blocks) over the run's stores; rank 0 writes data/READY (and the mixture)."""
    import numpy as np

    from dfm_hpc.job import mixture, store

    st = cfg.cpt
    plans = store.build(cfg, ctx, tokenizer, ctx.rank, ctx.world_size)
    data.wait_for([Path(p["store"]) / "manifest.json" for p in plans], "the token stores", ctx)
    train_parts, eval_parts, docs = [], [], []
    for p in plans:
        s = store.Store(p["store"])
        (a, b), (c, d), n_eval = s.split(st.eval_fraction, min_tokens=st.seq_len)
        train_parts.append((s, a, b))
        eval_parts.append((s, c, d))
        docs.append((s.n_docs, n_eval))
        ctx.log(f"corpus: {p['resolved']} (store {p['store']}: {s.n_docs:,} documents, {s.n_tokens:,} tokens)")
    out = ctx.stage_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    ready, order = out / "READY", None
    if cfg.data.mixture:
        available = [(b - a) // st.seq_len for _, a, b in train_parts]
        total = tokens.sequences(st)  # blocks
        mixture.allocate(plans, available, total, st.seq_len)  # every rank: a bad mixture fails them all
        if ctx.is_main and not ready.exists():
            o, counts = mixture.order(plans, available, total, st.seq_len, cfg.seed)
            with atomic_open(out / "order.npy", "wb") as f:
                np.save(f, o)
            rows = mixture.realised(plans, counts, available, st.seq_len)
            (out / "mixture.json").write_text(json.dumps({"seed": cfg.seed, "seq_len": st.seq_len,
                                                          "blocks": int(len(o)), "sources": rows}, indent=2) + "\n")
            for r in rows:
                ctx.log(f"mixture: {r['name']}: {r['tokens']:,} tokens, share {r['share']:.4f} "
                        f"(target {r['target_share']:.4f}), {r['epochs']:.2f} epochs")
    what = {"stores": [p["store"] for p in plans], "seq_len": st.seq_len, "seed": cfg.seed,
            "mixture": [{k: p.get(k) for k in ("weight", "tokens", "epochs")} for p in plans]}
    if ctx.is_main and not ready.exists():
        ready.write_text(json.dumps({**what, "documents": sum(d for d, _ in docs),
                                     "eval_documents": sum(e for _, e in docs)}) + "\n")
    data.wait_for([ready], "rank 0 to write the data plan", ctx)
    old = json.loads(ready.read_text())
    if {k: old.get(k) for k in what} != what:  # a rerun in place with other data: the order would not fit
        raise RuntimeError(f"{ready} was made for other data (stores, mixture, seq_len or seed changed); "
                           "resuming would mix them: rerun with --fresh")
    if cfg.data.mixture:
        order = np.load(out / "order.npy", mmap_mode="r")
    train_ds = store.Blocks(train_parts, st.seq_len, order=order, seen=seen)
    eval_ds = store.Blocks(eval_parts, st.seq_len)
    ctx.log(f"{len(train_ds):,} train and {len(eval_ds):,} eval blocks of {st.seq_len} tokens")
    return train_ds, eval_ds


def run(cfg: Config, ctx: StageContext) -> None:
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    st = cfg.cpt
    train.accelerate_deepspeed_cpu_compat()
    path = train.model_path(cfg, ctx)
    tokenizer = AutoTokenizer.from_pretrained(path)
    seen: List[int] = []
    train_ds, eval_ds = prepare(cfg, ctx, tokenizer, seen)
    kwargs = train.training_args(cfg, ctx, st)
    if reshard.prepare_resume(cfg, ctx):  # the checkpoint was written by another number of ranks
        kwargs["deepspeed"]["checkpoint"] = {"load_universal": True}
    args = TrainingArguments(**kwargs)
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=tokens.step_tokens(st, "cpt"))
    trainer = Trainer(model=train.load_model(path, st), args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      callbacks=[callback, *checkpoint_snapshot.callbacks(cfg, ctx, st, "cpt")])

    def record_samples():  # which blocks this rank trained on (tests check that ranks see disjoint data)
        with open(ctx.stage_dir / f"samples-rank-{ctx.rank}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in seen))

    train.fit(trainer, ctx, callback, tokenizer, f"CPT of {cfg.model.name} (ZeRO-{cfg.deepspeed.stage})",
              after_train=record_samples, no_eval=f"the corpus holds no held-out block of cpt.seq_len={st.seq_len} "
              "tokens beside its training documents")

"""CPT stage: continual pretraining of a causal LM on a Danish corpus with DeepSpeed ZeRO.

Data: documents -> tokens -> one stream with EOS between documents -> fixed blocks of `cpt.seq_len`
(the tail that does not fill a block is dropped); the last `cpt.eval_fraction` of documents are held
out for eval loss and perplexity. Prepared once into stages/cpt/data/ (reused on resume): every rank
tokenizes a share of the documents, rank 0 packs; the order is deterministic. Training: the HF Trainer with the run's DeepSpeed config, resumed from
the latest checkpoint when there is one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List

from dfm_hpc.job import data, train


def prepare(cfg, ctx, tokenizer) -> Path:
    """Tokenized, packed train/eval blocks in stages/cpt/data/.

    Tokenizing a big corpus is the slow part, so it is split over every rank: the train documents
    are cut into `prep_shards` contiguous ranges, rank r tokenizes ranges r, r + W, ... into
    tokens-NNNNN.npy (+ .done; kept across restarts). Rank 0 then joins the streams in order (the
    same stream as unsharded), cuts the blocks and writes READY; the others wait for it."""
    import numpy as np
    import torch

    out = ctx.stage_dir / "data"
    ready = out / "READY"
    if not ready.exists():
        out.mkdir(parents=True, exist_ok=True)
        source = data.corpus_source(cfg, ctx)
        ctx.log(f"corpus: {source}")
        texts = data.load_texts(source, ctx.run_dir / "cache")
        n_eval = max(1, int(len(texts) * cfg.cpt.eval_fraction))
        train_texts = texts[:-n_eval]
        shards = data.shard_ranges(len(train_texts), cfg.cpt.prep_shards or ctx.world_size)
        mine = list(range(ctx.rank, len(shards), ctx.world_size))
        t0, n_tok = time.time(), 0
        for s in mine:
            done = out / f"tokens-{s:05d}.done"
            if done.exists():
                continue
            stream = np.asarray(data.token_stream([train_texts[i] for i in shards[s]], tokenizer), dtype=np.int32)
            tmp = out / f"tokens-{s:05d}.tmp.npy"
            np.save(tmp, stream)
            tmp.replace(out / f"tokens-{s:05d}.npy")
            done.write_text(f"{len(shards[s])} documents, {len(stream)} tokens\n")
            n_tok += len(stream)
        if mine:
            el = max(time.time() - t0, 1e-9)
            ctx.log(f"tokenized prep shards {mine} of {len(shards)}: {n_tok:,} tokens, {n_tok / el:,.0f} tokens/s")
        if ctx.is_main:
            data.wait_for([out / f"tokens-{s:05d}.done" for s in range(len(shards))], "the other ranks' prep shards", ctx)
            stream = np.concatenate([np.load(out / f"tokens-{s:05d}.npy") for s in range(len(shards))])
            train_blocks = data.to_blocks(torch.from_numpy(stream.astype(np.int64)), cfg.cpt.seq_len)
            eval_blocks = data.pack(texts[-n_eval:], tokenizer, cfg.cpt.seq_len)
            torch.save(train_blocks, out / "train.pt")
            torch.save(eval_blocks, out / "eval.pt")
            ready.write_text(json.dumps({"documents": len(texts), "eval_documents": n_eval, "prep_shards": len(shards),
                                         "train_blocks": len(train_blocks), "eval_blocks": len(eval_blocks),
                                         "seq_len": cfg.cpt.seq_len}) + "\n")
            ctx.log(f"packed {len(texts)} documents into {len(train_blocks)} train and {len(eval_blocks)} eval blocks "
                    f"of {cfg.cpt.seq_len} tokens")
    data.wait_for([ready], "rank 0 to pack the blocks", ctx)
    return out


def run(cfg, ctx) -> None:
    import torch
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    st = cfg.cpt
    train.accelerate_deepspeed_cpu_compat()
    path = train.model_path(cfg, ctx)
    tokenizer = AutoTokenizer.from_pretrained(path)
    blocks = prepare(cfg, ctx, tokenizer)
    seen: List[int] = []
    train_ds = data.Blocks(torch.load(blocks / "train.pt"), seen)
    eval_ds = data.Blocks(torch.load(blocks / "eval.pt"))
    args = TrainingArguments(**train.training_args(cfg, ctx, st))
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=st.global_batch_size * st.seq_len)
    trainer = Trainer(model=train.load_model(path, st), args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      callbacks=[callback])

    def record_samples():  # which blocks this rank trained on (tests check that ranks see disjoint data)
        with open(ctx.stage_dir / f"samples-rank-{ctx.rank}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in seen))

    train.fit(trainer, ctx, callback, tokenizer, f"CPT of {cfg.model.name} (ZeRO-{cfg.deepspeed.stage})",
              after_train=record_samples)

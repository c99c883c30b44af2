"""CPT stage: continual pretraining of a causal LM on a Danish corpus with DeepSpeed ZeRO.

Data: documents -> tokens -> one stream with EOS between documents -> fixed blocks of `cpt.seq_len`
(the tail that does not fill a block is dropped); the last `cpt.eval_fraction` of documents are held
out for eval loss and perplexity. Prepared once into stages/cpt/data/ (reused on resume): every rank
tokenizes a share of the documents, rank 0 packs; the order is deterministic. Training: the HF Trainer with the run's DeepSpeed config, resumed from
the latest checkpoint when there is one.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import List

from dfm_hpc import train

# A learnable toy corpus for tests and the local demo: patterned Danish sentences.
_WORDS = ["en", "to", "tre", "fire", "fem", "seks", "syv", "otte", "ni", "ti"]
_TEMPLATES = ["Efter {a} kommer {b}, og efter {b} kommer {c}.", "Vi tæller: {a}, {b}, {c}.",
              "Tallet {b} står mellem {a} og {c}.", "Først {a}, så {b} og til sidst {c}."]


def tiny_corpus(path: Path, n_docs: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks may write it at the same time
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            sents = []
            for _ in range(rng.randint(2, 6)):
                k = rng.randrange(len(_WORDS) - 2)
                sents.append(rng.choice(_TEMPLATES).format(a=_WORDS[k], b=_WORDS[k + 1], c=_WORDS[k + 2]))
            f.write(json.dumps({"id": f"doc-{i}", "text": " ".join(sents), "source": "tiny"}, ensure_ascii=False) + "\n")
    tmp.replace(path)  # ranks may race to write it
    return path


def load_texts(source: str, cache: Path) -> List[str]:
    """Documents from tiny:corpus, a local JSONL/Parquet file (a `text` column), or a hub dataset id."""
    import datasets

    if source.startswith("tiny:"):
        source = str(tiny_corpus(cache / "danish_tiny.jsonl"))
    if Path(source).exists():
        kind = "parquet" if source.endswith(".parquet") else "json"
        ds = datasets.load_dataset(kind, data_files=source, split="train")
    else:
        ds = datasets.load_dataset(source, split="train")
    return [t for t in ds["text"] if t and t.strip()]


def token_stream(texts: List[str], tokenizer) -> List[int]:
    """Documents as one token stream, EOS after each."""
    eos = tokenizer.eos_token_id
    stream: List[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []:
        stream.extend(ids)
        stream.append(eos)
    return stream


def to_blocks(stream, seq_len: int):
    import torch

    n = len(stream) // seq_len
    return torch.as_tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def pack(texts: List[str], tokenizer, seq_len: int):
    return to_blocks(token_stream(texts, tokenizer), seq_len)


def corpus_source(cfg, ctx) -> str:
    """This run's PII-filtered corpus when its pii stage made one, else data.corpus."""
    filtered = ctx.run_dir / "stages" / "pii" / "corpus.parquet"
    return str(filtered) if "pii" in cfg.stages and filtered.exists() else cfg.data.corpus


def shard_ranges(n_docs: int, n_shards: int) -> List[range]:
    """Contiguous document ranges: concatenating the shards' streams gives the unsharded stream."""
    bounds = [n_docs * s // n_shards for s in range(n_shards + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(n_shards)]


def _wait(paths, what: str, ctx, every: float = 0.5) -> None:
    t0 = time.time()
    while not all(p.exists() for p in paths):
        if ctx.should_stop():
            from dfm_hpc.rank import Preempted

            raise Preempted(f"stopped while waiting for {what}")
        if time.time() - t0 > 60 and int(time.time() - t0) % 60 == 0:
            ctx.log(f"waiting for {what}: {sum(p.exists() for p in paths)}/{len(paths)}")
        time.sleep(every)


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
        source = corpus_source(cfg, ctx)
        ctx.log(f"corpus: {source}")
        texts = load_texts(source, ctx.run_dir / "cache")
        n_eval = max(1, int(len(texts) * cfg.cpt.eval_fraction))
        train_texts = texts[:-n_eval]
        shards = shard_ranges(len(train_texts), cfg.cpt.prep_shards or ctx.world_size)
        mine = list(range(ctx.rank, len(shards), ctx.world_size))
        t0, n_tok = time.time(), 0
        for s in mine:
            done = out / f"tokens-{s:05d}.done"
            if done.exists():
                continue
            stream = np.asarray(token_stream([train_texts[i] for i in shards[s]], tokenizer), dtype=np.int32)
            tmp = out / f"tokens-{s:05d}.tmp.npy"
            np.save(tmp, stream)
            tmp.replace(out / f"tokens-{s:05d}.npy")
            done.write_text(f"{len(shards[s])} documents, {len(stream)} tokens\n")
            n_tok += len(stream)
        if mine:
            el = max(time.time() - t0, 1e-9)
            ctx.log(f"tokenized prep shards {mine} of {len(shards)}: {n_tok:,} tokens, {n_tok / el:,.0f} tokens/s")
        if ctx.is_main:
            _wait([out / f"tokens-{s:05d}.done" for s in range(len(shards))], "the other ranks' prep shards", ctx)
            stream = np.concatenate([np.load(out / f"tokens-{s:05d}.npy") for s in range(len(shards))])
            train_blocks = to_blocks(torch.from_numpy(stream.astype(np.int64)), cfg.cpt.seq_len)
            eval_blocks = pack(texts[-n_eval:], tokenizer, cfg.cpt.seq_len)
            torch.save(train_blocks, out / "train.pt")
            torch.save(eval_blocks, out / "eval.pt")
            ready.write_text(json.dumps({"documents": len(texts), "eval_documents": n_eval, "prep_shards": len(shards),
                                         "train_blocks": len(train_blocks), "eval_blocks": len(eval_blocks),
                                         "seq_len": cfg.cpt.seq_len}) + "\n")
            ctx.log(f"packed {len(texts)} documents into {len(train_blocks)} train and {len(eval_blocks)} eval blocks "
                    f"of {cfg.cpt.seq_len} tokens")
    _wait([ready], "rank 0 to pack the blocks", ctx)
    return out


class Blocks:
    """Packed blocks as a map-style dataset; remembers which block indices this rank was served."""

    def __init__(self, blocks, seen: List[int] = None):
        self.blocks, self.seen = blocks, seen

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        if self.seen is not None:
            self.seen.append(int(i))
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def run(cfg, ctx) -> None:
    import torch
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    st = cfg.cpt
    train.accelerate_deepspeed_cpu_compat()
    path = train.model_path(cfg, ctx)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = prepare(cfg, ctx, tokenizer)
    seen: List[int] = []
    train_ds = Blocks(torch.load(data / "train.pt"), seen)
    eval_ds = Blocks(torch.load(data / "eval.pt"))
    args = TrainingArguments(**train.training_args(cfg, ctx, st))
    callback = train.metrics_callback(cfg, ctx, st, tokens_per_step=st.global_batch_size * st.seq_len)
    trainer = Trainer(model=train.load_model(path, st), args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      callbacks=[callback])

    def record_samples():  # which blocks this rank trained on (tests check that ranks see disjoint data)
        with open(ctx.stage_dir / f"samples-rank-{ctx.rank}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in seen))

    train.fit(trainer, ctx, callback, tokenizer, f"CPT of {cfg.model.name} (ZeRO-{cfg.deepspeed.stage})",
              after_train=record_samples)

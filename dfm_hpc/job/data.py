"""Training data on a rank: corpora (load, tokenize, pack into blocks) and chats (load, split).

Shared by cpt, sft, dpo and evaluate; sources are `tiny:*` (dfm_hpc.tiny), a local JSONL/Parquet file,
a run dir (its PII-filtered, else merged, views) or a hub dataset id (offline from the HF cache).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

from dfm_hpc import tiny
from dfm_hpc.rundir import stage_dir


def load_texts(source: str, cache: Path) -> List[str]:
    """Documents from tiny:corpus, a local JSONL/Parquet file (a `text` column), or a hub dataset id."""
    import datasets

    source = tiny.resolve_data(source, cache)
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
    """This run's PII-filtered corpus when its pii stage made one, else data.corpus; with a
    data.mixture, its first source (the one evaluate's held-out documents come from)."""
    filtered = stage_dir(ctx.run_dir, "pii") / "corpus.parquet"
    if "pii" in cfg.stages and filtered.exists():
        return str(filtered)
    return cfg.data.corpus if not cfg.data.mixture else str(cfg.data.mixture[0].source)


def shard_ranges(n_docs: int, n_shards: int) -> List[range]:
    """Contiguous document ranges: concatenating the shards' streams gives the unsharded stream."""
    bounds = [n_docs * s // n_shards for s in range(n_shards + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(n_shards)]


def wait_for(paths, what: str, ctx, every: float = 0.5) -> None:
    t0 = time.time()
    while not all(p.exists() for p in paths):
        if ctx.should_stop():
            from dfm_hpc.job.rank import Preempted

            raise Preempted(f"stopped while waiting for {what}")
        if time.time() - t0 > 60 and int(time.time() - t0) % 60 == 0:
            ctx.log(f"waiting for {what}: {sum(p.exists() for p in paths)}/{len(paths)}")
        time.sleep(every)


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


def load_chats(source, ctx, kind: str):
    """The `sft` or `dpo` view (see the module docstring for what `source` may be)."""
    import datasets

    if source is None:
        source = str(ctx.run_dir)
    source = tiny.resolve_data(source, ctx.run_dir / "cache", kind)
    p = Path(source)
    for stage in ("pii", "merge"):  # a run dir: its PII-filtered view when it has one
        if p.is_dir() and (stage_dir(p, stage) / f"{kind}.parquet").exists():
            p = stage_dir(p, stage) / f"{kind}.parquet"
            break
    ctx.log(f"{kind} data: {p}")
    if p.is_file():
        ds = datasets.load_dataset("parquet" if p.suffix == ".parquet" else "json", data_files=str(p), split="train")
    else:
        ds = datasets.load_dataset(source, split="train")
    keep = ["messages"] if kind == "sft" else ["prompt", "chosen", "rejected"]
    return ds.select_columns(keep)


def split(ds, fraction: float = 0.05, seed: int = 0, trained=None):
    """(train, held out): a seeded shuffle, `fraction` of the rows (at least one) held out. `trained(i)`:
    whether row i has anything to score (sft: a chat with an assistant token within seq_len). When no
    held-out row has, the first train row that has (in shuffled order) swaps places with the first
    held-out row, if the train part keeps another: a held-out loss over nothing would read 0.0."""
    import datasets

    n_eval = max(1, int(len(ds) * fraction))
    order = datasets.Dataset.from_dict({"i": list(range(len(ds)))})  # the same shuffle as ds.train_test_split
    parts = order.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    train, held = list(parts["train"]["i"]), list(parts["test"]["i"])
    if trained is not None and held and not any(trained(i) for i in held):
        found = []
        for k, i in enumerate(train):
            if trained(i):
                found.append(k)
                if len(found) == 2:
                    break
        if len(found) == 2:
            k = found[0]
            train[k], held[0] = held[0], train[k]
    return ds.select(train), ds.select(held)


def chats_path(source, ctx, kind: str) -> str:
    """The file (or hub id) load_chats reads for `source`: what the chat store is keyed by."""
    if source is None:
        source = str(ctx.run_dir)
    source = tiny.resolve_data(source, ctx.run_dir / "cache", kind)
    p = Path(source)
    for stage in ("pii", "merge"):
        if p.is_dir() and (stage_dir(p, stage) / f"{kind}.parquet").exists():
            return str(stage_dir(p, stage) / f"{kind}.parquet")
    return source

"""Pretokenized chats in the token store (`tokenize.chats`): written by the tokenize stage, read by sft and dpo.

Format (docs/training.md#pretokenized-chats), one directory per (tokenizer, chat template, train_reasoning,
split_turns, kind, source), beside the corpus stores:

    <store_root>/chats-<key>/      key = sha256(format, tokenizer key, template hash, train_reasoning,
                                   split_turns, kind, source fingerprint)[:16]
      shard-NNNNN.arrow            the shard's rows in source order (an Arrow stream, memory-mapped when read):
                                   chat (int64: the source chat it came from), then sft: input_ids (int32),
                                   assistant_masks (int8, 1 = trained); dpo: prompt_ids, chosen_ids,
                                   rejected_ids (int32; TRL 1.16's columns)
      shard-NNNNN.done             JSON: chats, documents (rows), tokens, trained (sft), sha256 of the .arrow
      layout.json, manifest.json   as the corpus stores (store.py)

Each chat's rows are what chat_template.chat_rows / pair_rows give for it (the same per-chat calls:
chat_samples, pair_sample): one, or with sft.split_turns one per assistant turn. On the fly, data.split
splits the chats and then renders each part; `split` does the same seeded split over the chat indices
and takes each chat's rows, so both paths train and evaluate on the same rows in the same order.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

from dfm_hpc.files import atomic_open, write_atomic
from dfm_hpc.job import data, store

FORMAT = "dfm_hpc-chat-store/2"
CHAT = "chat"  # the source chat a row came from: the train/eval split is by chat
COLUMNS = {"sft": ("input_ids", "assistant_masks"), "dpo": ("prompt_ids", "chosen_ids", "rejected_ids")}


def kinds(cfg) -> List[str]:
    """The chat kinds this run pretokenizes: its sft and dpo stages', when tokenize.chats is on."""
    return [k for k in ("sft", "dpo") if k in cfg.stages] if cfg.tokenize.chats else []


def options(cfg, kind: str) -> dict:
    """How `kind` renders (chat_template.options of its stage): sft's train_reasoning and split_turns."""
    from dfm_hpc.job import chat_template

    return chat_template.options(cfg[kind])


def tokenizer_for(cfg, ctx, kind: str):
    """The tokenizer `kind` will train with, as train.load_base gives it: init_from's model when that is
    a run dir with one (this run's own models do not exist yet: they carry the base's tokenizer), else
    model.name_or_path; with model.chat_template applied."""
    from transformers import AutoTokenizer

    from dfm_hpc.job import chat_template, train
    from dfm_hpc.rundir import stage_dir

    path = train.model_path(cfg, ctx)
    init = cfg[kind].init_from
    for prev in ("sft", "cpt") if init else ():
        if (stage_dir(Path(init), prev) / "model").is_dir():
            path = str(stage_dir(Path(init), prev) / "model")
            break
    tokenizer = AutoTokenizer.from_pretrained(path)
    chat_template.ensure(tokenizer, cfg.model.chat_template, log=lambda _: None,
                         date=chat_template.run_date(ctx.run_dir))  # the day templates print, as sft's
    return tokenizer


def template_hash(tokenizer) -> str:
    return hashlib.sha256(str(getattr(tokenizer, "chat_template", None) or "").encode()).hexdigest()


def tokenizer_key(tokenizer) -> str:
    """What rendering depends on, hashed: the tokenizer's definition (vocabulary, merges, normalizer,
    added/special tokens) and the special tokens the renderer reads. Not its class name, path, or the
    truncation/padding settings, which a save_pretrained + reload may change: dpo after sft loads the sft
    model's saved copy of the tokenizer the tokenize stage rendered with, and must find the same store."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow tokenizer: the corpus stores' hash
        return store.tokenizer_hash(tokenizer)
    spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    special = [tokenizer.bos_token, tokenizer.eos_token, tokenizer.eos_token_id, len(tokenizer)]
    return hashlib.sha256(json.dumps([spec, special], sort_keys=True).encode()).hexdigest()


def store_key(tok_hash: str, tpl_hash: str, opts: dict, kind: str, fp: str) -> str:
    body = f"{FORMAT}\n{tok_hash}\n{tpl_hash}\n{int(opts['train_reasoning'])}\n{int(opts['split_turns'])}\n{kind}\n{fp}"
    return "chats-" + hashlib.sha256(body.encode()).hexdigest()[:16]


def locate(cfg, ctx, tokenizer, kind: str) -> Dict:
    """`kind`'s chat store: its source as sft/dpo read it (sft.dataset / dpo.dataset, this run's pii or
    merge view) and its content-addressed path."""
    where = store.root(cfg, ctx)
    resolved = data.chats_path(cfg[kind].dataset, ctx, kind)
    fp = store.cached_fingerprint(resolved, {}, where)
    th, tpl, opts = tokenizer_key(tokenizer), template_hash(tokenizer), options(cfg, kind)
    return {"kind": kind, "source": str(cfg[kind].dataset or ctx.run_dir), "resolved": resolved, "fingerprint": fp,
            "tokenizer_hash": th, "template_hash": tpl, **opts,
            "store": str(where / store_key(th, tpl, opts, kind, fp))}


def render_rows(kind: str, rows, first: int, tokenizer, opts: dict) -> Dict[str, list]:
    """Source rows (a Dataset slice starting at chat `first`) -> the store's columns, rendered by the per-chat
    calls chat_rows / pair_rows make on the fly (chat_template.chat_samples, pair_sample)."""
    from dfm_hpc.job import chat_template

    out: Dict[str, list] = {c: [] for c in (CHAT, *COLUMNS[kind])}
    for j, row in enumerate(rows):
        if kind == "sft":
            samples = [{"input_ids": r.ids, "assistant_masks": r.mask} for r in chat_template.chat_samples(
                tokenizer, row["messages"], tools=chat_template._tools(row), index=first + j, **opts)]
        else:
            samples = [chat_template.pair_sample(tokenizer, row, index=first + j, **opts)]
        for sample in samples:
            out[CHAT].append(first + j)
            for c in COLUMNS[kind]:
                out[c].append(list(sample[c]))
    return out


def _schema(kind: str):
    import pyarrow as pa

    return pa.schema([(CHAT, pa.int64())] + [(c, pa.list_(pa.int8() if c == "assistant_masks" else pa.int32()))
                                             for c in COLUMNS[kind]])


def write_shard(d: Path, shard: int, kind: str, rows, first: int, tokenizer, opts: dict, batch: int,
                should_stop) -> Dict:
    """Render `rows` (a Dataset slice) into shard-NNNNN.arrow, then its .done. The .arrow is written to a
    temporary file and renamed when complete, so an interrupted shard is redone from its start."""
    import pyarrow as pa

    base = d / f"shard-{shard:05d}"
    info = {"chats": len(rows), "documents": 0, "tokens": 0, "trained": 0}
    schema = _schema(kind)
    with atomic_open(f"{base}.arrow", "wb") as f, pa.ipc.new_stream(f, schema) as w:
        for i in range(0, len(rows), batch):
            if should_stop():
                from dfm_hpc.job.rank import Preempted

                raise Preempted(f"stopped in chat shard {shard}")
            cols = render_rows(kind, rows.select(range(i, min(i + batch, len(rows)))), first + i, tokenizer, opts)
            w.write_batch(pa.record_batch([pa.array(cols[c], type=schema.field(c).type) for c in schema.names],
                                          schema=schema))
            info["documents"] += len(cols[COLUMNS[kind][0]])
            info["tokens"] += sum(len(x) for c in COLUMNS[kind] if c != "assistant_masks" for x in cols[c])
            info["trained"] += sum(sum(m) for m in cols.get("assistant_masks", ()))
    info["sha256"] = store.file_sha256(Path(f"{base}.arrow"))
    Path(f"{base}.done").write_text(json.dumps(info) + "\n")
    return info


def build(cfg, ctx, worker: int, num_workers: int) -> List[Dict]:
    """Render the chat stores this run needs that are not finished: (kind, shard) items dealt to the
    workers (item i to worker i mod W), done shards skipped, as store.build does for corpora."""
    plans = []
    for kind in kinds(cfg):
        tokenizer = tokenizer_for(cfg, ctx, kind)
        plans.append({**locate(cfg, ctx, tokenizer, kind), "tokenizer": tokenizer})
    mine, items = store.deal(plans, cfg, worker, num_workers)
    rows_of: Dict[str, object] = {}
    t0, n_tok = time.time(), 0
    for p, s in mine:
        d = Path(p["store"])
        if not (d / f"shard-{s:05d}.done").exists():
            if p["store"] not in rows_of:
                ctx.log(f"tokenizing {p['kind']} chats {p['resolved']} into {d}")
                rows_of[p["store"]] = data.load_chats(p["resolved"], ctx, p["kind"])
            rows = rows_of[p["store"]]
            rng = store.shard_ranges(len(rows), p["shards"])[s]
            opts = {k: p[k] for k in ("train_reasoning", "split_turns")}
            info = write_shard(d, s, p["kind"], rows.select(rng), rng.start, p["tokenizer"], opts,
                               cfg.tokenize.batch_docs, ctx.should_stop)
            n_tok += info["tokens"]
        meta = {"tokenizer": cfg.model.name_or_path, "chat_template": cfg.model.chat_template,
                **{k: p[k] for k in ("kind", "tokenizer_hash", "template_hash", "train_reasoning", "split_turns",
                                     "source", "resolved", "fingerprint")}, "columns": [CHAT, *COLUMNS[p["kind"]]]}
        store.finish(d, meta, p["shards"], FORMAT)
    if mine:
        el = max(time.time() - t0, 1e-9)
        ctx.log(f"tokenized {len(mine)} of {len(items)} chat shards: {n_tok:,} tokens, {n_tok / el:,.0f} tokens/s")
    for p in plans:
        p.pop("tokenizer")
    return plans


def open_store(path) -> "datasets.Dataset":  # noqa: F821
    """A finished chat store as one datasets.Dataset (its shards memory-mapped, in order)."""
    import datasets

    path = Path(path)
    m = json.loads((path / "manifest.json").read_text())
    parts = [datasets.Dataset.from_file(str(path / f"shard-{i:05d}.arrow")) for i in range(len(m["shards"]))]
    return datasets.concatenate_datasets(parts)


def split(ds, chats: int, seq_len: Optional[int] = None):
    """(train, eval) rows of a store `ds` of `chats` source chats: data.split's seeded split of the chats (as
    on the fly, where chat_rows then renders each part), each chat's rows in that order; the chat column
    dropped. `seq_len`: a held-out chat has something to score within it, as on the fly (data.split's
    `trained`; sft: an assistant token, dpo: a prompt shorter than it)."""
    import datasets
    import numpy as np

    col = ds.data.column(CHAT).to_numpy()  # non-decreasing: the store is in source order
    ids = np.arange(chats)
    starts, ends = np.searchsorted(col, ids, "left"), np.searchsorted(col, ids, "right")

    def trained(c: int) -> bool:
        rows = ds[int(starts[c]):int(ends[c])]
        if "assistant_masks" in rows:
            return any(any(m[:seq_len]) for m in rows["assistant_masks"])
        return any(len(p) < seq_len for p in rows["prompt_ids"])

    out = []
    for part in data.split(datasets.Dataset.from_dict({CHAT: ids}), trained=trained if seq_len else None):
        c = np.asarray(part[CHAT], dtype=np.int64)
        n = ends[c] - starts[c]
        rows = np.repeat(starts[c] - (np.cumsum(n) - n), n) + np.arange(n.sum())
        out.append(ds.select(rows).remove_columns(CHAT))
    return tuple(out)


def load(cfg, ctx, kind: str, tokenizer):
    """`kind`'s (train, eval) rows from the store (`split`), for the stage's own tokenizer (after its chat
    template is set); None when tokenize.chats is off or no finished store matches (then the stage
    tokenizes on the fly)."""
    if kind not in kinds(cfg):
        return None
    p = locate(cfg, ctx, tokenizer, kind)
    d = Path(p["store"])
    if not (d / "manifest.json").exists():
        ctx.log(f"{kind} data: no finished chat store {d} for this tokenizer, template and data "
                "(tokenize.chats: run the tokenize stage first); tokenizing on the fly")
        return None
    m = json.loads((d / "manifest.json").read_text())
    chats = sum(s["chats"] for s in m["shards"])
    ctx.log(f"{kind} data: chat store {d} ({chats:,} chats, {m['documents']:,} rows, {m['tokens']:,} tokens; "
            f"{p['resolved']})")
    return split(open_store(d), chats, cfg[kind].seq_len)


def stage_rows(cfg, ctx, kind: str, tokenizer):
    """sft's or dpo's (train, eval) rows: from the chat store (tokenize.chats) when it has them, else the stage's
    chats split (held out: ones that train within seq_len, if any) and rendered on the fly, split by chat alike."""
    from dfm_hpc.job import chat_template

    stored = load(cfg, ctx, kind, tokenizer)
    if stored is not None:
        return stored
    st = cfg[kind]
    trains, rows = (chat_template.trains, chat_template.chat_rows) if kind == "sft" else \
        (chat_template.pair_trains, chat_template.pair_rows)
    ds = data.load_chats(st.dataset, ctx, kind)
    parts = data.split(ds, trained=lambda i: trains(tokenizer, ds[i], st, index=i))
    return tuple(None if d is None else rows(d, tokenizer, st) for d in parts)


def write_list(ctx, plans: List[Dict]) -> None:
    """stages/tokenize/chat_stores.json: the run's chat stores (cpt's stores.json lists the corpora)."""
    keep = ("kind", "source", "resolved", "fingerprint", "train_reasoning", "split_turns", "store")
    write_atomic(ctx.stage_dir / "chat_stores.json", json.dumps([{k: p[k] for k in keep} for p in plans],
                                                                 indent=2) + "\n")

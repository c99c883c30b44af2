"""The token store: a tokenized corpus on disk, written once by shards and read by memory map.

Format (docs/training.md#the-token-store), one directory per (tokenizer, source):

    <store_root>/tokens-<key>/       key = sha256(tokenizer hash, source fingerprint)[:16]
      shard-NNNNN.bin                the shard's documents' tokens, each followed by EOS; uint16 when the
                                     vocabulary has < 65,536 entries, else uint32; little endian, no header
      shard-NNNNN.idx.npy            int64: the end offset of each document in the shard's .bin
      shard-NNNNN.done               JSON: documents, tokens, sha256 of the .bin (written last)
      manifest.json                  when every shard is done (see `manifest`)

A shard is a contiguous range of the source's rows (empty documents skipped), so the shards'
concatenation is the token stream of the whole corpus in order. The key is content-addressed: a run
with the same tokenizer and source finds the store and tokenizes nothing.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path
from typing import Dict, List, Optional

from dfm_hpc.files import atomic_open, write_atomic
from dfm_hpc.rundir import SWEEP, stage_dir

FORMAT = "dfm_hpc-token-store/1"


def dtype_for(vocab_size: int):
    import numpy as np

    return np.dtype("<u2") if vocab_size < 2 ** 16 else np.dtype("<u4")


def tokenizer_hash(tokenizer) -> str:
    """What the tokenizer does, hashed: its full definition (tokenizer.json) and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, len(tokenizer)])
    return hashlib.sha256((body + extra).encode()).hexdigest()


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def resolve(source: str, cache: Path) -> str:
    """tiny:* -> its file; a run dir -> its PII-filtered corpus; anything else unchanged."""
    from dfm_hpc import tiny

    source = tiny.resolve_data(source, cache)
    p = Path(source)
    if p.is_dir() and (stage_dir(p, "pii") / "corpus.parquet").exists():
        return str(stage_dir(p, "pii") / "corpus.parquet")
    return source


def fingerprint(resolved: str, subset: Optional[str] = None, revision: Optional[str] = None) -> str:
    """A local file by its content (so a rewritten tiny:corpus still matches); a hub dataset by id,
    subset and revision (pin the revision for exact reuse)."""
    p = Path(resolved)
    if p.is_file():
        return f"file:sha256:{file_sha256(p)}"
    return f"hub:{resolved}:{subset or ''}:{revision or ''}"


def store_key(tok_hash: str, fp: str) -> str:
    return "tokens-" + hashlib.sha256(f"{FORMAT}\n{tok_hash}\n{fp}".encode()).hexdigest()[:16]


def load_rows(resolved: str, subset: Optional[str] = None, revision: Optional[str] = None):
    """The source as a datasets.Dataset (Arrow, memory-mapped: rows are read when asked for)."""
    import datasets

    p = Path(resolved)
    if p.exists():
        kind = "parquet" if p.suffix == ".parquet" else "json"
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    return datasets.load_dataset(resolved, subset, split="train", revision=revision)


def shard_ranges(n_rows: int, n_shards: int) -> List[range]:
    bounds = [n_rows * s // n_shards for s in range(n_shards + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(n_shards)]


def encoder(tokenizer, sample: List[str]):
    """(encode, ids): encode(texts) tokenizes a batch (no special tokens), ids(result) iterates over each
    text's ids (lists). Straight from the Rust backend's encode_batch_fast where that gives the ids of
    `tokenizer(texts, add_special_tokens=False)` (checked on `sample`): no offsets, attention masks or
    BatchEncoding, ~25 % of the stage's time (issue #24), and the GIL is released while it runs."""
    def call(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return call, iter
    # what transformers' call sets on its backend before each encode (no truncation, no padding)
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))

    def encode(texts):
        return backend.encode_batch_fast(texts, add_special_tokens=False)

    def ids(encodings):
        return (e.ids for e in encodings)  # one at a time: see write_shard

    if sample and list(ids(encode(sample))) != call(sample):  # a tokenizer class with its own call: use that
        return call, iter
    return encode, ids


def _batches(rows, batch: int):
    for i in range(0, len(rows), batch):
        yield [t for t in rows[i:i + batch]["text"] if t and t.strip()]


def _ahead(batches, encode, threads: int):
    """encode(batch) for each batch, in order; with threads > 1 the next batch is encoded in a thread while
    the caller writes this one (the encoder releases the GIL), so the writing hides behind the encoding."""
    if threads <= 1:
        for texts in batches:
            yield texts, encode(texts)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pending = None
        for texts in batches:
            nxt = (texts, pool.submit(encode, texts))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = nxt
        if pending is not None:
            yield pending[0], pending[1].result()


def write_shard(store: Path, shard: int, rows, tokenizer, dtype, batch: int, should_stop, threads: int = 1) -> Dict:
    """Tokenize `rows` (a Dataset slice) into shard-NNNNN.bin/.idx.npy/.done. Written to .tmp files
    and renamed when complete, so an interrupted shard is redone from its start (the same bytes)."""
    from itertools import chain

    import numpy as np

    base = store / f"shard-{shard:05d}"
    eos = tokenizer.eos_token_id
    ends: List[int] = []
    n = 0
    digest = hashlib.sha256()  # of the bytes as they are written: no second read of the .bin
    code = {2: "H", 4: "I"}[np.dtype(dtype).itemsize]  # struct's code for the store's dtype
    batches, head = _batches(rows, batch), []
    for texts in batches:  # up to the first batch with text: the encoder is checked on it
        head.append(texts)
        if texts:
            break
    encode, ids_of = encoder(tokenizer, head[-1][:4] if head else [])
    with atomic_open(f"{base}.bin", "wb") as f:  # a stop inside leaves no .bin behind
        for texts, encoded in _ahead(chain(head, batches), encode, threads):
            if should_stop():
                from dfm_hpc.job.rank import Preempted

                raise Preempted(f"stopped in shard {shard}")
            if not texts:
                continue
            parts = []
            for doc in ids_of(encoded):  # each list packed while in cache: 2x cheaper than after the batch
                doc.append(eos)
                n += len(doc)
                ends.append(n)
                parts.append(struct.pack(f"<{len(doc)}{code}", *doc))  # ~2x faster than np.fromiter
            data = b"".join(parts)
            digest.update(data)
            f.write(data)
    with atomic_open(f"{base}.idx.npy", "wb") as f:
        np.save(f, np.asarray(ends, dtype=np.int64))
    info = {"documents": len(ends), "tokens": n, "sha256": digest.hexdigest()}
    Path(f"{base}.done").write_text(json.dumps(info) + "\n")
    return info


def finish(store: Path, meta: Dict, n_shards: int, fmt: str = FORMAT) -> Optional[Dict]:
    """The manifest, once every shard is done (whoever sees that writes it; the content is the same).
    Also the chat store's (chat_store.py: its shards' `documents` are rows)."""
    dones = [store / f"shard-{s:05d}.done" for s in range(n_shards)]
    if not all(d.exists() for d in dones):
        return None
    shards = [json.loads(d.read_text()) for d in dones]
    checksum = hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()
    totals = {k: sum(s[k] for s in shards) for k in ("documents", "tokens", "trained") if k in shards[0]}
    manifest = {**meta, "format": fmt, "shards": shards, **totals, "checksum": checksum}
    write_atomic(store / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(store: Path) -> bool:
    """Every shard's .bin matches its recorded sha256 (slow: reads everything)."""
    m = json.loads((Path(store) / "manifest.json").read_text())
    return all(file_sha256(Path(store) / f"shard-{i:05d}.bin") == s["sha256"] for i, s in enumerate(m["shards"]))


def _random_access(mm) -> None:
    """Blocks are read in random order: without this, each page fault reads ahead ~128 KB around
    a block of a few KB, and a rank's resident pages grow with the corpus it samples from."""
    import mmap

    raw = getattr(mm, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        raw.madvise(mmap.MADV_RANDOM)


class Store:
    """A finished store, read by memory map: opening it reads only the manifest and document index."""

    def __init__(self, path):
        import numpy as np

        self.path = Path(path)
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        dtype = np.dtype(self.manifest["dtype"])
        self.shards = []
        ends, offset = [], 0
        for i, s in enumerate(self.manifest["shards"]):
            if s["tokens"]:
                mm = np.memmap(self.path / f"shard-{i:05d}.bin", dtype=dtype, mode="r")
                _random_access(mm)
                self.shards.append((offset, mm))
            ends.append(np.load(self.path / f"shard-{i:05d}.idx.npy", mmap_mode="r") + offset)
            offset += s["tokens"]
        self.starts = np.asarray([o for o, _ in self.shards], dtype=np.int64)
        self.doc_ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
        self.n_tokens = offset

    @property
    def n_docs(self) -> int:
        return len(self.doc_ends)

    def tokens(self, start: int, stop: int):
        """Tokens [start, stop) of the stream as int64 (a block may span two shard files)."""
        import numpy as np

        out, pos = [], start
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        while pos < stop:
            offset, mm = self.shards[k]
            end = min(stop, offset + len(mm))
            out.append(np.asarray(mm[pos - offset:end - offset], dtype=np.int64))
            pos, k = end, k + 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def split(self, eval_fraction: float, min_tokens: int = 0):
        """(train tokens, eval token range): the last `eval_fraction` of documents (at least one) held out,
        and more of the last ones while they hold fewer than `min_tokens` (cpt: one block, else the held-out
        loss is over nothing) and the train part keeps a document."""
        n_eval = max(1, int(self.n_docs * eval_fraction))

        def cut(n: int) -> int:
            return int(self.doc_ends[self.n_docs - n - 1]) if self.n_docs > n else 0

        while self.n_tokens - cut(n_eval) < min_tokens and n_eval < self.n_docs - 1:
            n_eval += 1
        return (0, cut(n_eval)), (cut(n_eval), self.n_tokens), n_eval


class Blocks:
    """Fixed blocks of `seq_len` tokens cut from token ranges of stores, as a map-style dataset.

    `parts` is a list of (store, start, stop); part p contributes (stop - start) // seq_len blocks
    (its tail is dropped, as packing always did). `order`, when given, maps item i to a block
    (a mixture's sampled sequence). A block is read from the memory map when it is asked for, so a
    rank reads only the blocks the sampler gives it. `seen` records which items this rank served."""

    def __init__(self, parts, seq_len: int, order=None, seen: Optional[List[int]] = None):
        import numpy as np

        self.parts, self.seq_len, self.order, self.seen = parts, seq_len, order, seen
        counts = [(b - a) // seq_len for _, a, b in parts]
        self.first = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n_blocks = int(self.first[-1])

    def __len__(self):
        return self.n_blocks if self.order is None else len(self.order)

    def block(self, j: int):
        import numpy as np
        import torch

        p = int(np.searchsorted(self.first, j, side="right")) - 1
        store, a, _ = self.parts[p]
        start = a + (j - int(self.first[p])) * self.seq_len
        return torch.from_numpy(store.tokens(start, start + self.seq_len))

    def __getitem__(self, i):
        if self.seen is not None:
            self.seen.append(int(i))
        ids = self.block(int(i) if self.order is None else int(self.order[i]))
        return {"input_ids": ids, "labels": ids}


def root(cfg, ctx) -> Path:
    """tokenize.store_root, else runs_root itself: stores are shared by every run under that root
    (files one level down, tokens-<key>/*, so nothing there looks like a run dir)."""
    if cfg.tokenize.store_root:
        return Path(cfg.tokenize.store_root).expanduser()
    top = ctx.run_dir.parent
    if (top / SWEEP).exists():  # a sweep point: runs_root/<name>/<sweep>/<i>
        top = top.parent
    return top.parent


def sources(cfg, ctx) -> List[Dict]:
    """What the run trains on: data.mixture's sources, else data.corpus (this run's PII-filtered
    corpus when its pii stage made one) as a single source of weight 1."""
    from omegaconf import OmegaConf

    from dfm_hpc.job import data

    if cfg.data.mixture:
        out = [OmegaConf.to_container(m, resolve=True) for m in cfg.data.mixture]
    else:
        out = [{"source": data.corpus_source(cfg, ctx), "weight": 1.0, "tokens": None, "epochs": 1.0,
                "subset": None, "revision": None, "name": None}]
    for m in out:
        m["name"] = m.get("name") or str(m["source"])
    return out


def cached_fingerprint(resolved: str, spec: Dict, where: Path) -> str:
    """fingerprint(), remembered per (path, size, mtime): a big file is hashed once, not by every worker."""
    p = Path(resolved)
    if not p.is_file():
        return fingerprint(resolved, spec.get("subset"), spec.get("revision"))
    st = p.stat()
    stamp = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = where / "tokens-fingerprints" / hashlib.sha256(stamp.encode()).hexdigest()
    if memo.exists():
        return memo.read_text().strip()
    fp = fingerprint(resolved)
    write_atomic(memo, fp + "\n")
    return fp


def locate(cfg, ctx, tokenizer) -> List[Dict]:
    """Each source with its store's path (content-addressed: tokenizer hash + source fingerprint)."""
    where, cache = root(cfg, ctx), ctx.run_dir / "cache"
    th = tokenizer_hash(tokenizer)
    out = []
    for spec in sources(cfg, ctx):
        resolved = resolve(str(spec["source"]), cache)
        fp = cached_fingerprint(resolved, spec, where)
        out.append({**spec, "resolved": resolved, "fingerprint": fp, "tokenizer_hash": th,
                    "store": str(where / store_key(th, fp))})
    return out


def shard_count(store_dir: Path, cfg, num_workers: int) -> int:
    """The store's shard count: fixed by the first attempt in layout.json (a resume keeps it)."""
    layout = store_dir / "layout.json"
    if not layout.exists():
        store_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(layout, json.dumps({"shards": cfg.tokenize.shards or num_workers}) + "\n")
    return json.loads(layout.read_text())["shards"]


def deal(plans: List[Dict], cfg, worker: int, num_workers: int):
    """The (plan, shard) work items of the stores not yet finished, each plan given its shard count, dealt to
    the workers (item i to worker i mod W): (this worker's items, all items). Corpora and chat stores alike."""
    items = []
    for p in plans:
        if not (Path(p["store"]) / "manifest.json").exists():
            p["shards"] = shard_count(Path(p["store"]), cfg, num_workers)
            items += [(p, s) for s in range(p["shards"])]
    return items[worker::num_workers], items


def build(cfg, ctx, tokenizer, worker: int, num_workers: int, threads: int = 1) -> List[Dict]:
    """Tokenize the stores this run needs that are not finished: (source, shard) work items dealt
    to the workers (item i to worker i mod W). Done shards are skipped, so a restart resumes.
    `threads`: the tokenizer's threads (set by the stage, see stages/tokenize.py); > 1 also encodes
    the next batch while this one is written."""
    plans = locate(cfg, ctx, tokenizer)
    mine, items = deal(plans, cfg, worker, num_workers)
    dtype = dtype_for(len(tokenizer))
    rows_of: Dict[str, object] = {}
    t0, n_tok = time.time(), 0
    for p, s in mine:
        d = Path(p["store"])
        if not (d / f"shard-{s:05d}.done").exists():
            if p["store"] not in rows_of:
                ctx.log(f"tokenizing {p['resolved']} into {d}")
                rows_of[p["store"]] = load_rows(p["resolved"], p.get("subset"), p.get("revision"))
            rows = rows_of[p["store"]]
            rng = shard_ranges(len(rows), p["shards"])[s]
            info = write_shard(d, s, rows.select(rng), tokenizer, dtype, cfg.tokenize.batch_docs, ctx.should_stop,
                               threads)
            n_tok += info["tokens"]
        meta = {"tokenizer": cfg.model.name_or_path, "tokenizer_hash": p["tokenizer_hash"],
                "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "dtype": dtype.str,
                "source": str(p["source"]), "resolved": p["resolved"], "subset": p.get("subset"),
                "revision": p.get("revision"), "fingerprint": p["fingerprint"]}
        finish(d, meta, p["shards"])
    if mine:
        el = max(time.time() - t0, 1e-9)
        ctx.log(f"tokenized {len(mine)} of {len(items)} shards: {n_tok:,} tokens, {n_tok / el:,.0f} tokens/s")
    return plans

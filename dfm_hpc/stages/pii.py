"""PII stage: find and replace personal information (dfm_hpc.text.pii) in training data, sharded and resumable.

Input (`pii.input`): unset = this run's merge outputs (views `sft` and `dpo`: every message's
`content`), or a JSONL/Parquet file with a `text` column, or `tiny:corpus` (view `corpus`).

Each view is cut into `pii.shards` contiguous shards (JSONL: byte ranges aligned to line starts, so a
worker reads only its own part of the file; Parquet: row ranges). Shards are numbered over all views
and workers take shards w, w + W, ... like translate. A shard is filtered in chunks of
`pii.chunk_size` rows, each appended to `shards/shard-NNNNN.jsonl` durably; on restart the torn tail
is cut and the shard resumes after its last complete chunk (translate's `recover`). Because the
filter is deterministic (fakes are seeded by the matched text), a resumed run writes the same bytes
as an uninterrupted one. `shard-NNNNN.done` marks a finished shard; the worker that finds every
shard done assembles `<view>.jsonl`, `<view>.parquet` and `report.json` (one worker, by an O_EXCL
lock file).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dfm_hpc.files import atomic_open, write_atomic
from dfm_hpc.job.progress import Progress
from dfm_hpc.job.rank import Preempted, StageContext
from dfm_hpc.job.shards import append_durable, resume_point
from dfm_hpc.rundir import stage_dir
from dfm_hpc.schema import Config
from dfm_hpc.text import pii, pii_audit

MERGE_VIEWS = ("sft", "dpo")
DPO_FIELDS = ("prompt", "chosen", "rejected")


# --- what a view filters --------------------------------------------------------------------------
def filter_row(view: str, row: dict, types, replacement, ip: str = "all", ner_spans=None,
               budget: Optional[Counter] = None) -> Tuple[dict, Counter, int, List[dict]]:
    """The row with its text fields scrubbed, counts of what was replaced, UTF-8 bytes scanned, and
    masked samples of the replaced spans (while `budget` has room for their type).
    `ner_spans(text)` gives the NER pass's name/address spans of a text (None: no NER pass)."""
    counts: Counter = Counter()
    scanned = 0
    samples: List[dict] = []

    def clean(text):
        nonlocal scanned
        if not isinstance(text, str):
            return text
        scanned += len(text.encode("utf-8"))
        spans = pii.find(text, types, ip, ner_spans(text) if ner_spans else ())
        for j, (_, _, t) in enumerate(spans):
            if budget is not None and budget[t] > 0:
                budget[t] -= 1
                samples.append({"type": t, "context": pii_audit.context(text, spans, j, pii.TAGS)})
        new, c = pii.replace(text, spans, replacement)
        counts.update(c)
        return new

    def clean_chat(messages):
        if not isinstance(messages, list):
            return messages
        return [{**m, "content": clean(m.get("content"))} if isinstance(m, dict) else m for m in messages]

    if view == "sft":
        if "messages" in row:
            row = {**row, "messages": clean_chat(row["messages"])}
    elif view == "dpo":
        row = {**row, **{k: clean_chat(row.get(k)) for k in DPO_FIELDS if k in row}}
    else:
        row = {**row, "text": clean(row.get("text"))}
    return row, counts, scanned, samples


def texts_of(view: str, row: dict) -> List[str]:
    """The text fields filter_row scrubs, in its order (the NER pass batches them per chunk)."""
    if view == "sft":
        chats = [row.get("messages")]
    elif view == "dpo":
        chats = [row.get(k) for k in DPO_FIELDS]
    else:
        return [row["text"]] if isinstance(row.get("text"), str) else []
    return [m["content"] for c in chats if isinstance(c, list) for m in c
            if isinstance(m, dict) and isinstance(m.get("content"), str)]


# --- sources and the shard plan -------------------------------------------------------------------
def sources(cfg, ctx) -> List[Dict]:
    """[{view, path, kind}] in output order."""
    src = cfg.pii.input
    if src is None:
        merge = stage_dir(ctx.run_dir, "merge")
        out = [{"view": v, "path": str(merge / f"{v}.jsonl"), "kind": "jsonl"} for v in MERGE_VIEWS]
        missing = [s["path"] for s in out if not Path(s["path"]).exists()]
        if missing:
            raise FileNotFoundError(f"pii.input is unset but the merge outputs {missing} are missing: "
                                    "run the merge stage first, or set pii.input")
        return out
    if src.startswith("tiny:"):
        from dfm_hpc import tiny

        src = tiny.resolve_data(src, ctx.run_dir / "cache")
    if not Path(src).exists():
        raise FileNotFoundError(f"pii.input {src} does not exist")
    return [{"view": "corpus", "path": src, "kind": "parquet" if src.endswith(".parquet") else "jsonl"}]


def _jsonl_ranges(path: str, n: int) -> List[Tuple[int, int]]:
    """n contiguous byte ranges of a JSONL file, each starting at a line start (some may be empty)."""
    size = os.path.getsize(path)
    starts = [0]
    with open(path, "rb") as f:
        for k in range(1, n):
            target = k * size // n
            if target <= starts[-1]:
                starts.append(starts[-1])
                continue
            f.seek(target - 1)
            f.readline()  # to the end of the line holding byte target-1: the next line starts at target or later
            starts.append(min(max(f.tell(), starts[-1]), size))
    return list(zip(starts, starts[1:] + [size]))


def plan(cfg, ctx) -> Dict:
    """The deterministic shard layout every worker computes: [{view, path, kind, lo, hi}]."""
    n = cfg.pii.shards
    if n < 1 or cfg.pii.chunk_size < 1:
        raise ValueError("pii.shards and pii.chunk_size must be >= 1")
    shards = []
    srcs = sources(cfg, ctx)
    for s in srcs:
        if s["kind"] == "jsonl":
            ranges = _jsonl_ranges(s["path"], n)
        else:
            import pyarrow.parquet as pq

            rows = pq.ParquetFile(s["path"]).metadata.num_rows
            ranges = [(k * rows // n, (k + 1) * rows // n) for k in range(n)]
        shards += [{**s, "lo": lo, "hi": hi} for lo, hi in ranges]
    return {"sources": srcs, "shards": shards, "replacement": cfg.pii.replacement,
            "types": [str(t) for t in pii.check_types(list(cfg.pii.types))], "chunk_size": cfg.pii.chunk_size,
            "ip_policy": pii.check_ip(str(cfg.pii.ip_policy)), "ner": cfg.pii.ner, "ner_revision": cfg.pii.ner_revision,
            "audit_samples": cfg.pii.audit_samples}


def read_shard(sh: Dict) -> Tuple[List[dict], List[int]]:
    """The shard's rows and each row's share of the shard's work (JSONL: line bytes; Parquet: 1)."""
    if sh["kind"] == "jsonl":
        rows, work = [], []
        with open(sh["path"], "rb") as f:
            f.seek(sh["lo"])
            pos = sh["lo"]
            while pos < sh["hi"]:
                line = f.readline()
                if not line:
                    break
                pos += len(line)
                if line.strip():
                    rows.append(json.loads(line))
                    work.append(len(line))
        return rows, work
    import pyarrow.parquet as pq

    # only the `text` column travels through the shard files: assembly puts it back into the
    # original table, so every other column keeps its Arrow type
    pf = pq.ParquetFile(sh["path"])
    cols = ["text"] + (["source"] if "source" in pf.schema_arrow.names else [])  # report.json counts by source
    table = _read_rows(pf, sh["lo"], sh["hi"], cols)
    return table.to_pylist(), [1] * table.num_rows


def _read_rows(pf, lo: int, hi: int, columns=None):
    """Rows [lo, hi) of a Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa

    groups, first, start = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if start < hi and start + n > lo:
            groups.append(g)
            first = start if first is None else first
        start += n
    if not groups:
        return pa.table({c: pa.array([], pa.string()) for c in (columns or ["text"])})
    return pf.read_row_groups(groups, columns=columns).slice(lo - first, hi - lo)


# --- the stage ------------------------------------------------------------------------------------
def run(cfg: Config, ctx: StageContext) -> None:
    p = plan(cfg, ctx)
    shard_dir = ctx.stage_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    _check_plan(ctx.stage_dir / "plan.json", p)
    mine = list(range(ctx.worker, len(p["shards"]), ctx.num_workers))
    if ctx.num_workers > 1:  # the stage's header line already names the views, types and replacement
        ctx.log(f"pii: {', '.join(s['view'] for s in p['sources'])} in {len(p['shards'])} shards; "
                f"this worker: shards {mine}")
    work = {s: _shard_work(p["shards"][s]) for s in mine}
    progress = Progress(sum(work.values()))  # in bytes (JSONL) or rows (Parquet); the lines say rows and MB
    ner = None
    if p["ner"] and not all((shard_dir / f"shard-{s:05d}.done").exists() for s in mine):
        from dfm_hpc.text.pii_ner import NerPass

        ner = NerPass(p["ner"], p["ner_revision"], cfg.pii.ner_batch_size)
        ctx.log(f"pii: NER pass with {p['ner']} (labels {', '.join(ner.labels)})")
    for s in mine:
        _filter_shard(s, p, shard_dir, ctx, progress, ner)
    if all((shard_dir / f"shard-{s:05d}.done").exists() for s in range(len(p["shards"]))):
        assemble(p, ctx)


def _shard_work(sh: Dict) -> int:
    return sh["hi"] - sh["lo"]  # bytes (JSONL) or rows (Parquet): the ETA's unit


def _check_plan(path: Path, p: Dict) -> None:
    """Resuming under another layout, input or filter setting would mix outputs: refuse."""
    text = json.dumps(p, indent=2) + "\n"
    if path.exists():
        # paths aside: a rerun links this stage dir into a new run dir, so the merge outputs'
        # absolute paths change while the files (and their byte ranges) do not
        if _layout(json.loads(path.read_text())) != _layout(p):
            raise RuntimeError(f"{path} holds another plan (the input, pii.shards, pii.chunk_size, pii.types or "
                               "pii.replacement, pii.ip_policy or pii.ner changed); resuming would mix them: "
                               "rerun with --fresh")
        return
    write_atomic(path, text)  # workers may write it at once: same content


def _layout(p: Dict) -> Dict:
    strip = lambda d: {k: v for k, v in d.items() if k != "path"}  # noqa: E731
    return {**p, "sources": [strip(s) for s in p["sources"]], "shards": [strip(s) for s in p["shards"]]}


SAMPLES_PER_CHUNK = 2  # masked samples kept per type and chunk; assembly picks audit_samples of them


def _filter_shard(s: int, p: Dict, shard_dir: Path, ctx, progress, ner=None) -> None:
    sh = p["shards"][s]
    path, marker = shard_dir / f"shard-{s:05d}.jsonl", shard_dir / f"shard-{s:05d}.done"
    if marker.exists():
        progress.resumed(_shard_work(sh))
        return
    t0 = time.time()
    rows, work = read_shard(sh)
    size = p["chunk_size"]
    groups = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    start = resume_point(path, [len(g) for g in groups], s, ctx)
    progress.resumed(sum(work[i] for g in groups[:start] for i in g))
    for k in range(start, len(groups)):
        if ctx.should_stop():
            raise Preempted(f"stopped before chunk {k} of shard {s}")
        lines = []
        found = {}
        if ner is not None:  # one batched model pass over the chunk's texts
            texts = list(dict.fromkeys(t for i in groups[k] for t in texts_of(sh["view"], rows[i])))
            found = dict(zip(texts, ner.spans(texts)))
        budget = Counter({t: SAMPLES_PER_CHUNK for t in (*pii.TYPES, *pii.NER_TYPES)})
        for i in groups[k]:
            row, counts, scanned, samples = filter_row(sh["view"], rows[i], p["types"], p["replacement"],
                                                       p.get("ip_policy", "all"), found.get if ner else None, budget)
            # the wrapper keeps the row's own keys apart from ours (a row may have a "chunk" column)
            w = {"chunk": k, "n": dict(counts), "b": scanned, "row": row}
            if samples:
                w["a"] = samples
            lines.append(json.dumps(w, ensure_ascii=False))
            progress.counts["bytes"] += scanned
            progress.add(work[i])
        append_durable(path, lines)
        progress.counts["rows"] += len(groups[k])
        if progress.due():
            el, n = progress.elapsed, progress.counts
            ctx.log(f"shard {s} chunk {k + 1}/{len(groups)}: {n['rows']} rows, {n['rows'] / el:.0f} rows/s, "
                    f"{n['bytes'] / el / 1e6:.2f} MB/s text, ETA {progress.eta}")
    if not groups:
        path.touch()
    marker.write_text(json.dumps({"view": sh["view"], "rows": len(rows), "seconds": round(time.time() - t0, 3)}) + "\n")


# --- assembly -------------------------------------------------------------------------------------
def _take_lock(lock: Path) -> bool:
    """One assembler: O_EXCL create. A lock left by a dead process on this host is taken over."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
            except (OSError, ValueError):
                return False
            if host != socket.gethostname() or _alive(int(pid)):
                return False  # another worker is assembling (or did, on another host)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def assemble(p: Dict, ctx) -> None:
    out = ctx.stage_dir
    if (out / "report.json").exists() or not _take_lock(out / "assemble.lock"):
        return
    ctx.log("all shards done: assembling the outputs")
    types = p["types"] + (list(pii.NER_TYPES) if p.get("ner") else [])
    report = {"replacement": p["replacement"], "types": types, "ip_policy": p.get("ip_policy", "all"),
              "ner": p.get("ner"), "views": {}, "counts": {t: 0 for t in types}, "files": {}, "by_source": {},
              "samples": [], "bytes": 0, "seconds": 0.0}
    samples, by_source = [], {}
    for src in p["sources"]:
        view = src["view"]
        ids = [i for i, sh in enumerate(p["shards"]) if sh["view"] == view]
        rows, counts, changed = [], Counter(), 0
        for s in ids:
            done = json.loads((out / "shards" / f"shard-{s:05d}.done").read_text())
            report["seconds"] += done["seconds"]
            with open(out / "shards" / f"shard-{s:05d}.jsonl", encoding="utf-8") as f:
                for line in f:
                    w = json.loads(line)
                    samples += [{**a, "view": view, "row": len(rows)} for a in w.get("a", ())]
                    rows.append(w["row"])
                    counts.update(w["n"])
                    changed += bool(w["n"])
                    report["bytes"] += w["b"]
                    source = w["row"].get("source")
                    if isinstance(source, str) and w["n"]:
                        by_source.setdefault(source, Counter()).update(w["n"])
        _write_view(rows, src, out / view)
        report["views"][view] = {"rows": len(rows), "changed_rows": changed,
                                 "counts": {t: counts.get(t, 0) for t in types}}
        report["files"][Path(src["path"]).name] = {t: counts.get(t, 0) for t in types}
        for t in types:
            report["counts"][t] += counts.get(t, 0)
    report["seconds"] = round(report["seconds"], 3)
    report["by_source"] = {k: {t: c.get(t, 0) for t in types} for k, c in sorted(by_source.items())}
    report["samples"] = pii_audit.pick(samples, p.get("audit_samples", 10))
    write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")  # last: the outputs are complete
    ctx.log(f"pii: {report['counts']} replaced in {sum(v['changed_rows'] for v in report['views'].values())} rows "
            f"({report['bytes'] / 1e6:.1f} MB of text)")


def _write_view(rows: List[dict], src: Dict, stem: Path) -> None:
    """<view>.jsonl always; <view>.parquet when pyarrow is importable. Written to .tmp, then renamed."""
    if src["kind"] == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(src["path"])
        col = table.schema.get_field_index("text")
        table = table.set_column(col, table.schema.field(col), pa.array([r["text"] for r in rows],
                                                                         table.schema.field(col).type))
        _atomic(stem.with_suffix(".jsonl"), lambda f: [f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
                                                       for r in table.to_pylist()])
        _atomic(stem.with_suffix(".parquet"), lambda f: pq.write_table(table, f), binary=True)
        return
    _atomic(stem.with_suffix(".jsonl"), lambda f: [f.write(json.dumps(r, ensure_ascii=False) + "\n") for r in rows])
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    if rows:
        _atomic(stem.with_suffix(".parquet"), lambda f: pq.write_table(pa.Table.from_pylist(rows), f), binary=True)


def _atomic(path: Path, write, binary: bool = False) -> None:
    with atomic_open(path, "wb" if binary else "w") as f:
        write(f)

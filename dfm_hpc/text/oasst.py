"""OpenAssistant OASST2: read it in its published forms and filter it (the tiny fixture: dfm_hpc.tiny.data).

Published forms (https://huggingface.co/datasets/OpenAssistant/oasst2):

- the hub dataset (`datasets.load_dataset("OpenAssistant/oasst2")`, splits train/validation, flat rows);
- `*.messages.jsonl[.gz]`: one flat message per line;
- `*.trees.jsonl[.gz]`: one tree per line, `{"message_tree_id", "tree_state", "prompt": {...message,
  "replies": [{...message, "replies": [...]}, ...]}}`; nested messages need not carry
  `message_tree_id` / `tree_state` (the outer tree has them) and may lack `parent_id`.

Everything here is standard library; `datasets` is imported only when a hub id (or a local dataset
directory that only `datasets` can read) is loaded, so the login node and the tests need nothing heavy.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from dfm_hpc import sources

FIELDS = ("message_id", "parent_id", "message_tree_id", "role", "lang", "rank", "text",
          "review_result", "deleted", "synthetic")

_MESSAGES_SUFFIXES = (".messages.jsonl", ".messages.jsonl.gz")
_TREES_SUFFIXES = (".trees.jsonl", ".trees.jsonl.gz")


# ----------------------------------------------------------------------------------------------------
# Loading


def load_messages(source: str, revision: Optional[str] = None) -> List[dict]:
    """Flat message dicts (FIELDS, plus any other columns kept as they are) from:

    - a hub id like "OpenAssistant/oasst2": `datasets.load_dataset(source, revision=revision)`, all splits
      concatenated in the dataset's split order (works offline from the HF cache);
    - a local `*.messages.jsonl` / `*.messages.jsonl.gz` file (one message per line, flat);
    - a local `*.trees.jsonl` / `*.trees.jsonl.gz` file, flattened depth-first in reply order, with
      parent_id, message_tree_id and tree_state filled in from the structure where absent;
    - a directory holding one such file (a messages file is preferred over a trees file); failing that,
      a directory written by `Dataset.save_to_disk` or a local copy of a hub dataset repo (parquet
      files), read with `datasets`.

    A local path wins over a hub id of the same spelling; `revision` only applies to hub ids.
    FIELDS missing from a record are added as None; `rank` is normalised to int or None (parquet
    copies store it as a float). Order is stable: file order / depth-first order.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_dir(path)
    if path.is_file():
        return _load_file(path)
    if sources.looks_local(source):
        raise FileNotFoundError(f"OASST source {source!r} not found (no such file or directory)")
    return _load_with_datasets(source, revision=revision)


def _kind(path: Path) -> Optional[str]:
    name = path.name
    if name.endswith(_MESSAGES_SUFFIXES):
        return "messages"
    if name.endswith(_TREES_SUFFIXES):
        return "trees"
    return None


def _load_file(path: Path) -> List[dict]:
    kind = _kind(path)
    if kind is None:
        if not path.name.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(f"{path}: expected *.messages.jsonl[.gz] or *.trees.jsonl[.gz]")
        kind = _sniff(path)
    records = _read_jsonl(path)
    if kind == "messages":
        return [_normalise(r) for r in records]
    return [m for tree in records for m in _flatten_tree(tree, path)]


def _sniff(path: Path) -> str:
    """A plain *.jsonl of unknown kind: a tree line has "prompt", a message line has "message_id"."""
    for rec in _read_jsonl(path):
        if "prompt" in rec and "message_tree_id" in rec:
            return "trees"
        if "message_id" in rec:
            return "messages"
        break
    raise ValueError(f"{path}: neither OASST messages nor trees (first line has neither message_id nor prompt)")


def _load_dir(path: Path) -> List[dict]:
    files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p))
    for kind in ("messages", "trees"):
        found = [p for p in files if _kind(p) == kind]
        if len(found) > 1:
            raise ValueError(f"{path}: several OASST {kind} files, name one of them: "
                             + ", ".join(p.name for p in found))
        if found:
            return _load_file(found[0])
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        import datasets  # a Dataset(Dict).save_to_disk directory

        return _rows_from_hf(datasets.load_from_disk(str(path)))
    if any(path.rglob("*.parquet")):
        return _load_with_datasets(str(path))  # a local copy of the hub repo: data/train-*.parquet ...
    raise FileNotFoundError(f"{path}: no *.messages.jsonl[.gz], *.trees.jsonl[.gz], saved dataset or parquet files")


def _load_with_datasets(source: str, revision: Optional[str] = None) -> List[dict]:
    """The hub branch: `datasets.load_dataset`, every split, in the dataset's split order."""
    import datasets

    return _rows_from_hf(datasets.load_dataset(source, revision=revision))


def _rows_from_hf(ds) -> List[dict]:
    parts = [ds[split] for split in ds] if hasattr(ds, "keys") else [ds]  # DatasetDict or Dataset
    return [_normalise(row) for part in parts for row in part.to_list()]


def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e})") from None


def _normalise(rec: dict) -> dict:
    """Every FIELD present (None where missing); rank as int or None. Other keys kept as they are."""
    out = dict(rec)
    for k in FIELDS:
        out.setdefault(k, None)
    r = out["rank"]
    if isinstance(r, float):
        out["rank"] = None if math.isnan(r) else int(r)
    return out


def _flatten_tree(tree: dict, path: Path) -> Iterator[dict]:
    """Depth-first, replies in order; parent_id / message_tree_id / tree_state from the structure."""
    root = tree.get("prompt")
    if root is None:
        return
    tree_id = tree.get("message_tree_id") or root.get("message_id")
    state = tree.get("tree_state")
    stack: List[Tuple[dict, Optional[str]]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        msg = {k: v for k, v in node.items() if k != "replies"}
        if msg.get("parent_id") is None:
            msg["parent_id"] = parent
        elif msg["parent_id"] != parent:
            raise ValueError(f"{path}: message {msg.get('message_id')} says parent {msg['parent_id']} "
                             f"but sits under {parent} in tree {tree_id}")
        if msg.get("message_tree_id") is None:
            msg["message_tree_id"] = tree_id
        if msg.get("tree_state") is None and state is not None:
            msg["tree_state"] = state
        yield _normalise(msg)
        stack.extend((child, msg["message_id"]) for child in reversed(node.get("replies") or []))


# ----------------------------------------------------------------------------------------------------
# Filtering and structure


def filter_messages(messages: List[dict], langs: Sequence[str] = ("en",)) -> Tuple[List[dict], dict]:
    """Keep messages whose lang is in `langs`, not deleted, review_result not False; a message whose
    parent was dropped (or is not in `messages` at all) is dropped too, so kept trees stay connected.

    Returns (kept, counts), counts = {"input", "kept", "deleted", "review_failed", "other_language",
    "orphaned"}; each dropped message is counted once, under the first reason in that order. Kept
    messages are the input dicts themselves, in input order, ids unchanged. The input order need not be
    parents-first.
    """
    langs = set(langs)
    by_id = {m["message_id"]: m for m in messages}
    reason: Dict[str, Optional[str]] = {}
    for m in messages:
        if m.get("deleted"):
            reason[m["message_id"]] = "deleted"
        elif m.get("review_result") is False:
            reason[m["message_id"]] = "review_failed"
        elif m.get("lang") not in langs:
            reason[m["message_id"]] = "other_language"
        else:
            reason[m["message_id"]] = None

    memo: Dict[str, bool] = {}

    def kept(mid: str) -> bool:
        """Walk up to the root (iteratively); every message on the way shares the answer."""
        path: List[str] = []
        on_path = set()
        cur: Optional[str] = mid
        while True:
            if cur in memo:
                ok = memo[cur]
                break
            if cur not in by_id or reason[cur] is not None or cur in on_path:  # missing parent, dropped, cycle
                ok = False
                break
            path.append(cur)
            on_path.add(cur)
            cur = by_id[cur].get("parent_id")
            if cur is None:
                ok = True
                break
        for p in path:
            memo[p] = ok
        return ok

    counts = {"input": len(messages), "kept": 0, "deleted": 0, "review_failed": 0, "other_language": 0,
              "orphaned": 0}
    out = []
    for m in messages:
        mid = m["message_id"]
        if reason[mid] is not None:
            counts[reason[mid]] += 1
        elif kept(mid):
            out.append(m)
        else:
            counts["orphaned"] += 1
    counts["kept"] = len(out)
    return out, counts


def children(messages: Iterable[dict]) -> Dict[Optional[str], List[dict]]:
    """parent_id -> replies, in input order (roots under None)."""
    out: Dict[Optional[str], List[dict]] = {}
    for m in messages:
        out.setdefault(m.get("parent_id"), []).append(m)
    return out

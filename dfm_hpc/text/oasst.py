"""OpenAssistant OASST2: read it completely in every published layout, refuse what cannot be read, filter it.

What is translated (filters, the plan-time summary) is oasst_filter.py.

Layouts (https://huggingface.co/datasets/OpenAssistant/oasst2 and LAION-AI/Open-Assistant's tools):

- `trees`: one export tree per line, `{"message_tree_id", "tree_state", "prompt": {...message, "replies":
  [{...message, "replies": [...]}, ...]}}`; nested messages need not carry `message_tree_id` /
  `tree_state` (the tree has them) or `parent_id` (the nesting says);
- `nested`: one root message per line with nested `replies`, no tree wrapper;
- `messages`: one flat message per line (`*.messages.jsonl[.gz]`);
- `parquet` / `arrow`: the hub's splits (flat rows), a local file, a directory of them, a
  `save_to_disk` directory, or a hub id (read with `datasets`).

The layout comes from the content (gzip and Parquet/Arrow magic bytes, then the keys of each line),
never from the file name; `layout=` forces one. Every line must fit it, or `OasstFormatError` names the
file, the line and what was expected. Duplicate message ids are found here: identical copies are
dropped and counted, conflicting ones refused.

Standard library only; pyarrow / `datasets` are imported only for Parquet, Arrow and hub sources.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from dfm_hpc import sources
from dfm_hpc.schema import OasstLayout

FIELDS = ("message_id", "parent_id", "message_tree_id", "role", "lang", "rank", "text",
          "review_result", "deleted", "synthetic")
LAYOUTS = tuple(OasstLayout.values())  # data.oasst2_layout
ROLES = ("prompter", "assistant")


class OasstFormatError(ValueError):
    """A source that cannot be read completely; the message names the file, the line and what was expected."""


@dataclass
class Loaded:
    messages: List[dict]
    layout: str  # the layout read (detected or forced)
    duplicates: int = 0  # identical duplicate messages dropped
    files: List[str] = field(default_factory=list)


Where = Tuple[str, int, str]  # (file, number, "line" | "row")


def _at(w: Where) -> str:
    return f"{w[0]}:{w[1]}" if w[2] == "line" else f"{w[0]} row {w[1]}"


# ----------------------------------------------------------------------------------------------------
# Loading


def load(source: str, revision: Optional[str] = None, layout: str = "auto") -> Loaded:
    """Every message of `source` (a hub id, a local file or a directory), flat, in file order (trees
    depth-first, replies in order), each with every FIELD (None where absent; `rank` int or None) and
    its other columns as they are; parent_id, message_tree_id and tree_state filled in from the structure.
    A local path wins over a hub id of the same spelling; `revision` only applies to hub ids."""
    layout = str(layout)  # a config Choice is a str Enum
    if layout not in LAYOUTS:
        raise ValueError(f"OASST layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    path = Path(source).expanduser()
    if path.is_dir():
        files = dir_files(path)
        if files is None:
            return _finish(_read_datasets(str(path), load_from_disk=_is_saved(path)), "parquet", [str(path)])
    elif path.is_file():
        files = [path]
    elif sources.looks_local(source):
        raise FileNotFoundError(f"OASST source {source!r} not found (no such file or directory)")
    else:
        return _finish(_read_datasets(source, revision=revision), "parquet", [source])
    records: List[Tuple[dict, Where]] = []
    found = set()
    for f in files:
        kind = _table_kind(f)
        if layout != "auto" and (kind or "jsonl") != (layout if layout in ("parquet", "arrow") else "jsonl"):
            raise OasstFormatError(f"{f}: a {kind or 'JSON lines'} file, but the layout was forced to {layout}")
        if kind:
            found.add(kind)
            records += _read_table(f, kind)
        else:
            got, recs = _read_jsonl(f, layout)
            found.add(got)
            records += recs
    return _finish(records, "+".join(sorted(found)) or layout, [str(f) for f in files])


def load_messages(source: str, revision: Optional[str] = None, layout: str = "auto") -> List[dict]:
    return load(source, revision, layout).messages


def dir_files(path: Path) -> Optional[List[Path]]:
    """A directory: its one messages/trees file (messages preferred), else its Parquet/Arrow splits
    (train before validation), else None (a save_to_disk directory or a hub repo copy: `datasets`)."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file())
    for kind in ("messages", "trees"):
        found = [p for p in files if p.name.endswith((f".{kind}.jsonl", f".{kind}.jsonl.gz"))]
        if len(found) > 1:
            raise ValueError(f"{path}: several OASST {kind} files, name one of them: "
                             + ", ".join(p.name for p in found))
        if found:
            return found
    if any(path.rglob("*.parquet")):
        return None  # a local copy of the hub repo (data/train-*.parquet ...): datasets orders the splits
    raise FileNotFoundError(f"{path}: no *.messages.jsonl[.gz], *.trees.jsonl[.gz], saved dataset or parquet files")


def _is_saved(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _table_kind(path: Path) -> Optional[str]:
    head = _magic(path)
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff" or path.suffix == ".arrow":
        return "arrow"
    return None


def _lines(path: Path) -> Iterator[Tuple[int, str]]:
    opener = gzip.open if _magic(path)[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except (UnicodeDecodeError, OSError, EOFError) as e:  # binary, truncated gzip
        raise OasstFormatError(f"{path}: not readable as UTF-8 JSON lines ({e})") from None


def _line_kind(rec) -> Optional[str]:
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get("prompt"), dict):
        return "trees"
    if "message_id" in rec:
        return "nested" if rec.get("replies") else "messages"
    return None


_EXPECT = {"trees": 'an export tree ({"message_tree_id", "tree_state", "prompt": {...}})',
           "nested": 'a root message with "message_id" and nested "replies"',
           "messages": 'a flat message with "message_id" and no nested "replies"'}


def _read_jsonl(path: Path, layout: str) -> Tuple[str, List[Tuple[dict, Where]]]:
    """(the layout read, [(message, where)]); `auto` takes trees or messages from the first line, and a
    message line with nested replies anywhere makes it `nested` (flat messages are nested ones without)."""
    out: List[Tuple[dict, Where]] = []
    seen = layout if layout != "auto" else None
    for n, line in _lines(path):
        if not line.strip():
            continue
        w: Where = (str(path), n, "line")
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise OasstFormatError(f"{_at(w)}: not JSON ({e}); expected one OASST record per line") from None
        kind = _line_kind(rec)
        if kind is None:
            want = _EXPECT.get(seen or "", "an OASST export tree or message")
            keys = sorted(rec)[:8] if isinstance(rec, dict) else type(rec).__name__
            raise OasstFormatError(f"{_at(w)}: expected {want}; got {keys}")
        if seen is None or (seen == "messages" and kind == "nested" and layout == "auto"):
            seen = kind
        elif (seen == "trees") != (kind == "trees") or (seen == "messages" and kind == "nested"):
            hint = "" if layout != "auto" else " (every line must have the first line's layout)"
            raise OasstFormatError(f"{_at(w)}: expected {_EXPECT[seen]}, got {_EXPECT[kind].split(' (')[0]}{hint}")
        if kind == "trees":
            out += _flatten(rec["prompt"], w, rec.get("message_tree_id"), rec.get("tree_state"))
        else:
            out += _flatten(rec, w, None, None)
    return seen or layout, out


def _flatten(root: dict, w: Where, tree_id, state) -> List[Tuple[dict, Where]]:
    """Depth-first, replies in order; parent_id / message_tree_id / tree_state from the structure."""
    tree_id = tree_id or root.get("message_tree_id") or root.get("message_id")
    out = []
    stack: List[Tuple[dict, Optional[str], bool]] = [(root, root.get("parent_id"), True)]
    while stack:
        node, parent, top = stack.pop()
        if not isinstance(node, dict):
            raise OasstFormatError(f"{_at(w)}: a reply in tree {tree_id} is {type(node).__name__}, expected a message")
        msg = {k: v for k, v in node.items() if k != "replies"}
        if msg.get("parent_id") is None:
            msg["parent_id"] = parent
        elif msg["parent_id"] != parent and not top:
            raise OasstFormatError(f"{_at(w)}: message {msg.get('message_id')} says parent {msg['parent_id']} "
                                   f"but sits under {parent} in tree {tree_id}")
        if msg.get("message_tree_id") is None:
            msg["message_tree_id"] = tree_id
        if msg.get("tree_state") is None and state is not None:
            msg["tree_state"] = state
        out.append((_normalise(msg, w), w))
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise OasstFormatError(f"{_at(w)}: message {msg.get('message_id')}: replies must be a list")
        stack.extend((child, msg["message_id"], False) for child in reversed(replies))
    return out


def _normalise(rec: dict, w: Where) -> dict:
    """Every FIELD present (None where missing); rank as int or None; id, role and text checked."""
    out = dict(rec)
    for k in FIELDS:
        out.setdefault(k, None)
    r = out["rank"]
    if isinstance(r, float):
        out["rank"] = None if math.isnan(r) else int(r)
    mid = out["message_id"]
    if not isinstance(mid, str) or not mid:
        raise OasstFormatError(f"{_at(w)}: message_id {mid!r}: expected a non-empty string")
    if out["role"] not in ROLES:
        raise OasstFormatError(f"{_at(w)}: message {mid} has role {out['role']!r}: expected prompter or assistant")
    if not isinstance(out["text"], str):
        raise OasstFormatError(f"{_at(w)}: message {mid} has text {type(out['text']).__name__}: expected a string")
    return out


def _read_table(path: Path, kind: str) -> List[Tuple[dict, Where]]:
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            with pa.memory_map(str(path)) as src:  # datasets writes Arrow streams; Arrow files too
                try:
                    table = pa.ipc.open_stream(src).read_all()
                except pa.ArrowInvalid:
                    table = pa.ipc.open_file(src).read_all()
    except (pa.ArrowException, OSError) as e:
        raise OasstFormatError(f"{path}: not a readable {kind} file ({e})") from None
    return _rows(table.to_pylist(), str(path))


def _rows(rows: List[dict], name: str) -> List[Tuple[dict, Where]]:
    out = []
    for i, row in enumerate(rows, 1):
        w: Where = (name, i, "row")
        if row.get("replies"):
            raise OasstFormatError(f"{_at(w)}: expected a flat message row; this one has nested replies")
        row.pop("replies", None)
        out.append((_normalise(row, w), w))
    return out


def _read_datasets(source: str, revision: Optional[str] = None, load_from_disk: bool = False):
    """Hub ids, hub repo copies and save_to_disk directories: every split, in the dataset's split order."""
    import datasets

    ds = datasets.load_from_disk(source) if load_from_disk else datasets.load_dataset(source, revision=revision)
    parts = [(f"{source} [{s}]", ds[s]) for s in ds] if hasattr(ds, "keys") else [(source, ds)]
    return [r for name, part in parts for r in _rows(part.to_list(), name)]


def _finish(records: List[Tuple[dict, Where]], layout: str, files: List[str]) -> Loaded:
    """Duplicates (identical: dropped and counted; conflicting: refused), parents present, tree ids."""
    first: Dict[str, Tuple[dict, Where]] = {}
    messages, dups, conflicts = [], 0, []
    for m, w in records:
        mid = m["message_id"]
        if mid not in first:
            first[mid] = (m, w)
            messages.append(m)
        elif first[mid][0] == m:
            dups += 1
        else:
            diff = sorted(k for k in m.keys() | first[mid][0].keys() if m.get(k) != first[mid][0].get(k))
            conflicts.append(f"{mid} at {_at(first[mid][1])} and {_at(w)} (differ in {', '.join(diff)})")
    if conflicts:
        raise OasstFormatError(f"{len(conflicts)} message id(s) appear twice with different content: "
                               + "; ".join(conflicts[:5]) + ("; ..." if len(conflicts) > 5 else ""))
    for m in messages:
        p = m["parent_id"]
        if p is not None and p not in first:
            raise OasstFormatError(f"{_at(first[m['message_id']][1])}: message {m['message_id']} replies to "
                                   f"{p}, which is not in the source (expected every parent to be there)")
    roots: Dict[str, str] = {}
    for m in messages:  # message_tree_id is the root's id where absent; a cycle has no root
        if m["message_tree_id"] is None:
            m["message_tree_id"] = _root(m["message_id"], first, roots)
    return Loaded(messages, layout, dups, files)


def _root(mid: str, first: dict, memo: Dict[str, str]) -> str:
    path, cur = [], mid
    while cur not in memo:
        if cur in path:
            raise OasstFormatError(f"{_at(first[mid][1])}: message {mid}: its parent links form a cycle")
        path.append(cur)
        parent = first[cur][0]["parent_id"]
        if parent is None:
            memo[cur] = cur
            break
        cur = parent
    for p in path:
        memo[p] = memo[cur]
    return memo[mid]


# ----------------------------------------------------------------------------------------------------
# Structure


def children(messages: Iterable[dict]) -> Dict[Optional[str], List[dict]]:
    """parent_id -> replies, in input order (roots under None)."""
    out: Dict[Optional[str], List[dict]] = {}
    for m in messages:
        out.setdefault(m.get("parent_id"), []).append(m)
    return out

"""What of an OASST export is translated: the filters (tree state, deleted, review, synthetic, language, orphans)
and the summary the plan prints and the translate stage logs. Reading the export is oasst.py's."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dfm_hpc.schema import Review
from dfm_hpc.text.oasst import dir_files, load

REVIEW = tuple(Review.values())  # translate.review
# filter reasons, in the order a dropped message is counted (first that applies)
REASONS = ("tree_state", "deleted", "review_failed", "unreviewed", "synthetic", "empty_text",
           "other_language", "orphaned")


@dataclass
class Filters:
    """What is translated; defaults as OASST2's own "ready" exports: ready_for_export trees, no
    deleted, review-failed or synthetic messages, English. A message whose tree_state is unknown
    (None) passes the tree-state filter."""

    langs: Sequence[str] = ("en",)
    tree_states: Sequence[str] = ("ready_for_export",)  # empty: every state
    drop_deleted: bool = True
    review: str = "not_failed"  # any | not_failed (unreviewed kept) | passed
    drop_synthetic: bool = True

    def __post_init__(self):
        if self.review not in REVIEW:
            raise ValueError(f"review={self.review!r}: use one of {', '.join(REVIEW)}")

    @classmethod
    def from_config(cls, cfg) -> "Filters":
        t = cfg.translate
        return cls(langs=list(t.source_langs), tree_states=list(t.tree_states), drop_deleted=t.drop_deleted,
                   review=str(t.review), drop_synthetic=t.drop_synthetic)


def _reason(m: dict, f: Filters, langs: set, states: set) -> Optional[str]:
    if states and m.get("tree_state") is not None and m["tree_state"] not in states:
        return "tree_state"
    if f.drop_deleted and m.get("deleted"):
        return "deleted"
    if f.review != "any" and m.get("review_result") is False:
        return "review_failed"
    if f.review == "passed" and m.get("review_result") is None:
        return "unreviewed"
    if f.drop_synthetic and m.get("synthetic"):
        return "synthetic"
    if isinstance(m.get("text"), str) and not m["text"].strip():
        return "empty_text"
    if m.get("lang") not in langs:
        return "other_language"
    return None


def filter_messages(messages: List[dict], langs: Sequence[str] = ("en",),
                    filters: Optional[Filters] = None) -> Tuple[List[dict], dict]:
    """Keep what `filters` (default: Filters(langs=langs)) lets through; a message whose parent was
    dropped (or is not in `messages` at all) is dropped too, so kept trees stay connected.

    Returns (kept, counts): counts has "input", "kept" and one count per REASONS entry; each dropped
    message is counted once, under the first reason in that order. Kept messages are the input dicts
    themselves, in input order. The input order need not be parents-first.
    """
    f = filters or Filters(langs=tuple(langs))
    langs_, states = set(f.langs), set(f.tree_states)
    by_id = {m["message_id"]: m for m in messages}
    reason = {m["message_id"]: _reason(m, f, langs_, states) for m in messages}
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

    counts = {"input": len(messages), "kept": 0, **{r: 0 for r in REASONS}}
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


def prepare(source: str, revision: Optional[str] = None, layout: str = "auto",
            filters: Optional[Filters] = None) -> Tuple[List[dict], dict]:
    """Load and filter: (kept messages, summary) with the summary as `summarize` gives it."""
    loaded = load(source, revision, layout)
    kept, counts = filter_messages(loaded.messages, filters=filters or Filters())
    ms = loaded.messages
    summary = {"source": source, "layout": loaded.layout, "messages": len(ms), "duplicates": loaded.duplicates,
               "trees": len({m["message_tree_id"] for m in ms}),
               "languages": dict(Counter(m["lang"] for m in ms).most_common()),
               "tree_states": dict(Counter(m.get("tree_state") for m in ms).most_common()),
               "filter_counts": counts, "kept_trees": len({m["message_tree_id"] for m in kept})}
    return kept, summary


def summarize(source: str, layout: str = "auto", filters: Optional[Filters] = None) -> Optional[dict]:
    """The plan-time summary of a local source (trees, messages, languages, what each filter drops);
    None for a hub id or tiny: source, which are not loaded on the login node. Raises OasstFormatError."""
    path = Path(source).expanduser()
    if not path.exists() or (path.is_dir() and dir_files(path) is None):  # those need `datasets`
        return None
    return prepare(source, layout=layout, filters=filters)[1]


def format_summary(s: dict) -> str:
    langs = ", ".join(f"{k} {v}" for k, v in list(s["languages"].items())[:8])
    drops = ", ".join(f"{k} {v}" for k, v in s["filter_counts"].items() if k not in ("input", "kept") and v)
    dup = f", {s['duplicates']} identical duplicates dropped" if s["duplicates"] else ""
    return (f"OASST source {s['source']} ({s['layout']}): {s['trees']} trees, {s['messages']} messages{dup}; "
            f"languages: {langs or '-'}; filters drop: {drops or 'nothing'}; "
            f"to translate: {s['filter_counts']['kept']} messages in {s['kept_trees']} trees")

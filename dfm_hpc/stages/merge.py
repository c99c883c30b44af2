"""Merge stage: translated shards -> one dataset (every message, tree unchanged), SFT chats, DPO pairs,
quality report and a dataset card.

Outputs in stages/merge/: messages.{jsonl,parquet}, sft.{jsonl,parquet}, dpo.{jsonl,parquet},
report.json, README.md (dataset card with YAML metadata).
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from dfm_hpc import templates
from dfm_hpc.job.rank import StageContext
from dfm_hpc.rundir import stage_dir
from dfm_hpc.schema import Config, QualityFlag, SftPath

ROLES = {"prompter": "user", "assistant": "assistant"}
# a stretch of 3-64 characters repeated 5+ times in a row (unbounded, the search is quadratic: a minute
# on 1,167 real messages); longer repeats are caught by the compression ratio
_REPEAT = re.compile(r"(.{3,64}?)\1{4,}", re.S)


def load_shards(translate_dir: Path) -> List[dict]:
    """Every shard's rows, in the plan's message order (so nothing below depends on the shard layout)."""
    plan = json.loads((translate_dir / "plan.json").read_text())
    missing = [s for s in range(len(plan["shards"]))
               if not (translate_dir / "shards" / f"shard-{s:05d}.done").exists()]
    if missing:
        raise RuntimeError(f"translation incomplete: shards {missing} have no .done marker; rerun the translate stage")
    rows: List[dict] = []
    where: Dict[str, List[str]] = {}
    for s in range(len(plan["shards"])):
        path = translate_dir / "shards" / f"shard-{s:05d}.jsonl"
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                rows.append(json.loads(line))
                where.setdefault(rows[-1]["message_id"], []).append(f"{path.name}:{n}")
    dup = {i: w for i, w in where.items() if len(w) > 1}
    if dup or len(rows) != plan["messages"]:
        shown = "; ".join(f"{i} at {', '.join(w)}" for i, w in list(dup.items())[:5])
        raise RuntimeError(f"{translate_dir / 'shards'} holds {len(rows)} rows for the {plan['messages']} messages "
                           f"planned from {plan['source']}" + (f"; duplicated: {shown}" if dup else "")
                           + "; rerun the translate stage with --fresh")
    if all("order" in r for r in rows):  # runs before the field existed keep shard order
        rows.sort(key=lambda r: r["order"])
    return rows


def quality_flags(row: dict, detect, cfg) -> List[str]:
    """Why a translation should not be trained on (empty list: keep it)."""
    src, out = row["text"], row["text_da"]
    flags = []
    if not out.strip():
        return [QualityFlag.empty.value]
    if row["segments"] and len(out) >= 20 and detect(out) == row.get("lang", "en"):
        flags.append(QualityFlag.untranslated.value)
    if _REPEAT.search(out) or (len(out) > 200 and len(zlib.compress(out.encode())) / len(out.encode()) < 0.15):
        flags.append(QualityFlag.repetition.value)
    ratio = len(out) / max(1, len(src))
    if len(src) >= 20 and not cfg.min_length_ratio <= ratio <= cfg.max_length_ratio:
        flags.append(QualityFlag.length_ratio.value)
    return flags


def _language_detector(target: str, source_langs):
    """py3langid (ships its model) restricted to the languages in play."""
    from py3langid import langid

    ident = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)
    ident.set_languages(sorted({target, *source_langs, "en", "da", "sv", "no", "de"}))
    return lambda text: ident.classify(text)[0]


def _options(node: dict, kids: Dict[str, List[dict]]) -> List[dict]:
    """A message's usable replies, best first: ranked ones by rank, then unranked ones (OASST never ranks
    follow-up prompts) by created_date, then message_id: nothing depends on row or shard order."""
    return sorted((c for c in kids.get(node["message_id"], []) if c["ok"]),
                  key=lambda c: (c["rank"] is None, c["rank"] if c["rank"] is not None else 0,
                                 c.get("created_date") or "", c["message_id"]))


def sft_paths(root: dict, kids: Dict[str, List[dict]], limit: Optional[int] = 1) -> List[List[dict]]:
    """Root-to-assistant-leaf paths of a tree in best-first order (depth first, replies as `_options`
    orders them), at most `limit` (None: all). A path ends on an assistant message none of whose
    usable follow-ups reaches another assistant turn; the first path is the greedy best path."""
    out: List[List[dict]] = []
    stack = [[root]]
    while stack and (limit is None or len(out) < limit):
        path = stack.pop()
        options = _options(path[-1], kids)
        if path[-1]["role"] == "prompter":
            options = [c for c in options if c["role"] == "assistant"]
        else:  # a follow-up prompt counts only when an assistant answers it
            options = [c for c in options if any(g["ok"] and g["role"] == "assistant"
                                                 for g in kids.get(c["message_id"], []))]
        if not options:
            if path[-1]["role"] == "assistant":
                out.append(path)
            continue
        stack.extend(path + [c] for c in reversed(options))
    return out


def best_path(root: dict, kids: Dict[str, List[dict]]) -> List[dict]:
    paths = sft_paths(root, kids, 1)
    return paths[0] if paths else [root]


def _chat(path: List[dict]) -> List[dict]:
    return [{"role": ROLES[m["role"]], "content": m["text_da"]} for m in path]


def build_views(rows: List[dict], sft_path: str = "best", top_k: Optional[int] = None):
    """(sft, dpo) from merged rows; `sft_path`: best (one path per tree) or all (every
    root-to-assistant-leaf path, at most `top_k` per tree when set)."""
    if sft_path not in SftPath.values():  # the config's value is checked when composed; this is for callers
        raise ValueError(f"merge.sft_path={sft_path!r}: use one of {', '.join(SftPath.values())}")
    limit = 1 if sft_path == "best" else top_k
    by_id = {r["message_id"]: r for r in rows}
    kids: Dict[Optional[str], List[dict]] = {}
    for r in rows:
        kids.setdefault(r["parent_id"], []).append(r)
    roots = [r for r in rows if r["parent_id"] is None]

    def usable_path(m):  # m and all its ancestors usable, root first
        path = []
        while m is not None:
            if not m["ok"]:
                return None
            path.append(m)
            m = by_id.get(m["parent_id"])
        return path[::-1]

    sft = []
    for root in roots:
        if root["ok"] and root["role"] == "prompter":
            for path in sft_paths(root, kids, limit):
                sft.append({"messages": _chat(path), "message_tree_id": root["message_tree_id"],
                            "message_ids": [m["message_id"] for m in path]})
    dpo = []
    for parent_id, replies in kids.items():
        ranked = sorted((r for r in replies if r["ok"] and r["role"] == "assistant" and r["rank"] is not None),
                        key=lambda r: (r["rank"], r["message_id"]))
        if parent_id is None or len(ranked) < 2 or ranked[0]["rank"] == ranked[-1]["rank"]:
            continue
        prompt = usable_path(by_id[parent_id])
        if not prompt:
            continue
        chosen, rejected = ranked[0], ranked[-1]
        dpo.append({"prompt": _chat(prompt), "chosen": _chat([chosen]), "rejected": _chat([rejected]),
                    "message_tree_id": chosen["message_tree_id"], "chosen_id": chosen["message_id"],
                    "rejected_id": rejected["message_id"]})
    return sft, dpo


def _features(name: str):
    """Fixed column types, so every file has its schema even with zero rows."""
    from datasets import Features, Value

    text, chat = Value("string"), [{"role": Value("string"), "content": Value("string")}]
    if name == "sft":
        return Features({"messages": chat, "message_tree_id": text, "message_ids": [text]})
    if name == "dpo":
        return Features({"prompt": chat, "chosen": chat, "rejected": chat, "message_tree_id": text,
                         "chosen_id": text, "rejected_id": text})
    types = {"rank": Value("int64"), "segments": Value("int64"), "quality_flags": [text],
             **{k: Value("bool") for k in ("review_result", "deleted", "synthetic")}}
    return Features({k: types.get(k, text) for k in MESSAGE_COLUMNS})


MESSAGE_COLUMNS = ("message_id", "parent_id", "message_tree_id", "role", "lang", "rank", "text", "text_da",
                   "segments", "quality_flags", "tree_state", "deleted", "review_result", "synthetic",
                   "model_name", "created_date")


def _save(rows: List[dict], out: Path, name: str) -> None:
    import datasets

    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    feats = _features(name)
    ds = datasets.Dataset.from_list(rows, features=feats) if rows else \
        datasets.Dataset.from_dict({k: [] for k in feats}, features=feats)
    ds.to_parquet(str(out / f"{name}.parquet"))


def run(cfg: Config, ctx: StageContext) -> None:
    if not ctx.is_main:
        return
    tdir = stage_dir(ctx.run_dir, "translate")
    plan = json.loads((tdir / "plan.json").read_text())
    rows = load_shards(tdir)
    detect = _language_detector(plan["target_lang"], cfg.translate.source_langs)
    flag_counts: Counter = Counter()
    for r in rows:
        r.pop("chunk", None)
        r.pop("order", None)
        r["quality_flags"] = quality_flags(r, detect, cfg.merge)
        r["ok"] = not set(r["quality_flags"]) & set(cfg.merge.drop)
        flag_counts.update(r["quality_flags"])
    sft_path = str(cfg.merge.sft_path)
    sft, dpo = build_views(rows, sft_path, cfg.merge.sft_top_k)
    out = ctx.stage_dir
    _save([{k: r.get(k) for k in MESSAGE_COLUMNS} for r in rows], out, "messages")
    _save(sft, out, "sft")
    _save(dpo, out, "dpo")
    src = plan.get("summary", {})
    report = {"messages": len(rows), "usable": sum(r["ok"] for r in rows), "flags": dict(flag_counts),
              "trees": len({r["message_tree_id"] for r in rows}), "sft_conversations": len(sft),
              "dpo_pairs": len(dpo), "sft_path": sft_path, "sft_top_k": cfg.merge.sft_top_k,
              "source_messages": src.get("messages"), "source_trees": src.get("trees"),
              "source_layout": src.get("layout"), "duplicates_dropped": src.get("duplicates", 0),
              "filters": plan.get("filters", {}), "filter_counts": plan["filter_counts"],
              "translator": plan["translator"], "translator_revision": plan["translator_revision"],
              "backend": plan["backend"], "source": plan["source"], "source_revision": cfg.data.oasst2_revision}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "README.md").write_text(dataset_card(report, cfg))
    ctx.log(f"merged {len(rows)} messages: {report['usable']} usable, flags {dict(flag_counts)}; "
            f"{len(sft)} SFT conversations, {len(dpo)} DPO pairs")


def dataset_card(report: dict, cfg) -> str:
    """The datasheet (README.md beside the data): templates/datasheet.md filled from report.json."""
    n = report["messages"]
    top_k = report.get("sft_top_k")
    return templates.render("datasheet.md", {
        "source": report["source"], "source_revision": report["source_revision"],
        "translator": report["translator"], "translator_revision": report["translator_revision"],
        "backend": report["backend"],
        "size": "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M",
        "messages": n, "sft_conversations": report["sft_conversations"], "dpo_pairs": report["dpo_pairs"],
        "sft_paths": "the best path of each tree" if report.get("sft_path", "best") == "best" else
                     f"every root-to-assistant-leaf path of each tree{f' (at most {top_k})' if top_k else ''}",
        "trees": report["trees"], "usable": report["usable"],
        "source_layout": report.get("source_layout") or "?", "source_messages": report.get("source_messages", "?"),
        "source_trees": report.get("source_trees", "?"), "duplicates_dropped": report.get("duplicates_dropped", 0),
        "settings": ", ".join(f"{k}={v}" for k, v in report.get("filters", {}).items()) or "defaults",
        "filter_rows": "\n".join(f"| {k} | {v} |" for k, v in report["filter_counts"].items()),
        "dropped": ", ".join(f"`{d}`" for d in cfg.merge.drop) or "nothing",
        "flag_rows": "\n".join(f"| {k} | {v} |" for k, v in sorted(report["flags"].items())) or "| (none) | 0 |",
        "min_length_ratio": cfg.merge.min_length_ratio, "max_length_ratio": cfg.merge.max_length_ratio})

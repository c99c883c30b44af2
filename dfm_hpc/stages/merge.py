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

from dfm_hpc.job.rank import StageContext
from dfm_hpc.rundir import stage_dir
from dfm_hpc.schema import Config

ROLES = {"prompter": "user", "assistant": "assistant"}
_REPEAT = re.compile(r"(.{3,}?)\1{4,}", re.S)  # a stretch repeated 5+ times in a row


def load_shards(translate_dir: Path) -> List[dict]:
    plan = json.loads((translate_dir / "plan.json").read_text())
    missing = [s for s in range(len(plan["shards"]))
               if not (translate_dir / "shards" / f"shard-{s:05d}.done").exists()]
    if missing:
        raise RuntimeError(f"translation incomplete: shards {missing} have no .done marker; rerun the translate stage")
    rows: List[dict] = []
    for s in range(len(plan["shards"])):
        with open(translate_dir / "shards" / f"shard-{s:05d}.jsonl", encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    ids = Counter(r["message_id"] for r in rows)
    dup = [i for i, n in ids.items() if n > 1]
    if dup or len(rows) != plan["messages"]:
        raise RuntimeError(f"shards hold {len(rows)} rows for {plan['messages']} messages; duplicated: {dup[:5]}")
    return rows


def quality_flags(row: dict, detect, cfg) -> List[str]:
    """Why a translation should not be trained on (empty list: keep it)."""
    src, out = row["text"], row["text_da"]
    flags = []
    if not out.strip():
        return ["empty"]
    if row["segments"] and len(out) >= 20 and detect(out) == row.get("lang", "en"):
        flags.append("untranslated")
    if _REPEAT.search(out) or (len(out) > 200 and len(zlib.compress(out.encode())) / len(out.encode()) < 0.15):
        flags.append("repetition")
    ratio = len(out) / max(1, len(src))
    if len(src) >= 20 and not cfg.min_length_ratio <= ratio <= cfg.max_length_ratio:
        flags.append("length_ratio")
    return flags


def _language_detector(target: str, source_langs):
    """py3langid (ships its model) restricted to the languages in play."""
    from py3langid import langid

    ident = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)
    ident.set_languages(sorted({target, *source_langs, "en", "da", "sv", "no", "de"}))
    return lambda text: ident.classify(text)[0]


def best_path(root: dict, kids: Dict[str, List[dict]]) -> List[dict]:
    """Root prompt, then at each turn the best-ranked usable reply (rank 0 best; unranked last)."""
    path, node = [root], root
    while True:
        options = [c for c in kids.get(node["message_id"], []) if c["ok"]]
        if not options:
            break
        node = min(options, key=lambda c: (c["rank"] is None, c["rank"] if c["rank"] is not None else 0))
        path.append(node)
    while path and path[-1]["role"] != "assistant":
        path.pop()
    return path


def _chat(path: List[dict]) -> List[dict]:
    return [{"role": ROLES[m["role"]], "content": m["text_da"]} for m in path]


def build_views(rows: List[dict]):
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
        if root["ok"]:
            path = best_path(root, kids)
            if len(path) >= 2:
                sft.append({"messages": _chat(path), "message_tree_id": root["message_tree_id"],
                            "message_ids": [m["message_id"] for m in path]})
    dpo = []
    for parent_id, replies in kids.items():
        ranked = sorted((r for r in replies if r["ok"] and r["role"] == "assistant" and r["rank"] is not None),
                        key=lambda r: r["rank"])
        if parent_id is None or len(ranked) < 2:
            continue
        prompt = usable_path(by_id[parent_id])
        if not prompt:
            continue
        chosen, rejected = ranked[0], ranked[-1]
        dpo.append({"prompt": _chat(prompt), "chosen": _chat([chosen]), "rejected": _chat([rejected]),
                    "message_tree_id": chosen["message_tree_id"], "chosen_id": chosen["message_id"],
                    "rejected_id": rejected["message_id"]})
    return sft, dpo


def _save(rows: List[dict], out: Path, name: str) -> None:
    import datasets

    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    if rows:
        datasets.Dataset.from_list(rows).to_parquet(str(out / f"{name}.parquet"))


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
        r["quality_flags"] = quality_flags(r, detect, cfg.merge)
        r["ok"] = not set(r["quality_flags"]) & set(cfg.merge.drop)
        flag_counts.update(r["quality_flags"])
    sft, dpo = build_views(rows)
    out = ctx.stage_dir
    _save([{k: v for k, v in r.items() if k != "ok"} for r in rows], out, "messages")
    _save(sft, out, "sft")
    _save(dpo, out, "dpo")
    report = {"messages": len(rows), "usable": sum(r["ok"] for r in rows), "flags": dict(flag_counts),
              "trees": len({r["message_tree_id"] for r in rows}), "sft_conversations": len(sft),
              "dpo_pairs": len(dpo), "filter_counts": plan["filter_counts"], "translator": plan["translator"],
              "translator_revision": plan["translator_revision"], "backend": plan["backend"],
              "source": plan["source"], "source_revision": cfg.data.oasst2_revision}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "README.md").write_text(dataset_card(report, cfg))
    ctx.log(f"merged {len(rows)} messages: {report['usable']} usable, flags {dict(flag_counts)}; "
            f"{len(sft)} SFT conversations, {len(dpo)} DPO pairs")


def dataset_card(report: dict, cfg) -> str:
    n = report["messages"]
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    flags = "\n".join(f"| {k} | {v} |" for k, v in sorted(report["flags"].items())) or "| (none) | 0 |"
    filt = "\n".join(f"| {k} | {v} |" for k, v in report["filter_counts"].items())
    return f"""---
language:
- da
license: apache-2.0
source_datasets:
- {report['source']}
task_categories:
- text-generation
size_categories:
- {size}
tags:
- oasst2
- machine-translated
- danish-foundation-models
configs:
- config_name: sft
  data_files: sft.parquet
- config_name: dpo
  data_files: dpo.parquet
- config_name: messages
  data_files: messages.parquet
---

# OASST2, machine-translated to Danish

The OpenAssistant OASST2 conversation trees translated from English to Danish, message by message,
with the conversation structure unchanged (every `message_id`, `parent_id` and `message_tree_id` is
the original's). Made by the `oasst2_translate` recipe of dfm_hpc (Danish Foundation Models).

## Source and translation

| | |
|---|---|
| source dataset | `{report['source']}` (revision `{report['source_revision']}`) |
| source license | Apache-2.0 |
| translator | `{report['translator']}` (revision `{report['translator_revision']}`), backend `{report['backend']}` |
| translation unit | sentences/paragraphs; code blocks, inline code and URLs are never translated and are kept byte for byte |

## Contents

| file | rows |
|---|---|
| `messages` (every message: original `text`, Danish `text_da`, ids, role, rank, `quality_flags`) | {n} |
| `sft` (chat `messages`: the best-ranked path of each tree) | {report['sft_conversations']} |
| `dpo` (`prompt`, `chosen` = better-ranked reply, `rejected` = worse-ranked sibling) | {report['dpo_pairs']} |

Trees: {report['trees']}. Messages usable for training: {report['usable']} of {n}.

## Filters

Before translation (from the source):

| reason | count |
|---|---|
{filt}

After translation, every message keeps its flags in `messages`; those flagged with
{", ".join(f"`{d}`" for d in cfg.merge.drop) or "nothing"} are left out of `sft` and `dpo` (a conversation stops before such a message):

| flag | count |
|---|---|
{flags}

- `empty`: the translation is empty.
- `untranslated`: language identification (py3langid) still says the source language.
- `repetition`: degenerate repetition (a stretch repeated 5+ times, or a very compressible long text).
- `length_ratio`: Danish/English length ratio outside [{cfg.merge.min_length_ratio}, {cfg.merge.max_length_ratio}].

## Limitations

Machine translation: errors, anglicisms and lost nuance are to be expected; names, code and URLs are
kept as in the source. The conversations reflect OASST2's volunteers and their topics.

## License

Apache-2.0, as the source dataset.
"""

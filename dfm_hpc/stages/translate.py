"""Translate stage: OASST2 messages -> Danish with MADLAD-400, sharded over every rank, resumable.

Every worker (rank, or array copy x rank) computes the same plan (messages -> segments -> shards
balanced by source tokens) and takes shards w, w + W, ... A shard is translated in fixed chunks of
messages; each chunk is appended to `shards/shard-NNNNN.jsonl` in one write, flushed and fsynced. On restart a shard
resumes after its last complete chunk (a torn last line from a kill is cut off), so every message
lands exactly once, and because chunks are fixed by the plan the batches (and so the outputs) are
the same as in an uninterrupted run. `shard-NNNNN.done` marks a finished shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from dfm_hpc.files import write_atomic
from dfm_hpc.job.progress import Progress
from dfm_hpc.job.rank import Preempted, StageContext
from dfm_hpc.job.shards import append_durable, balance, chunks, resume_point
from dfm_hpc.schema import Config

# what merge and later filters need (the merged `messages` view keeps all of them)
KEEP = ("message_id", "parent_id", "message_tree_id", "role", "lang", "rank", "tree_state", "deleted",
        "review_result", "synthetic", "model_name", "created_date")


def plan_messages(cfg, ctx, count_tokens) -> Dict:
    """The deterministic plan every rank computes: messages, their segments and the shards."""
    from dfm_hpc.text import oasst_filter, segment

    source = resolve_source(cfg.data.oasst2, ctx.run_dir / "cache")
    filters = oasst_filter.Filters.from_config(cfg)
    messages, summary = oasst_filter.prepare(source, cfg.data.oasst2_revision, cfg.data.oasst2_layout, filters)
    ctx.log(oasst_filter.format_summary(summary))
    counts = summary["filter_counts"]
    if cfg.translate.max_messages:
        messages = messages[: cfg.translate.max_messages]
    pieces = [segment.segment(m["text"]) for m in messages]
    texts = [p.text for ps in pieces for p in ps if p.translate]
    lengths = count_tokens(texts) if texts else []
    costs, k = [], 0
    for ps in pieces:
        n = sum(p.translate for p in ps)
        costs.append(sum(lengths[k:k + n]) + 1)  # +1: even a code-only message costs a little
        k += n
    shards = balance(costs, cfg.translate.shards)
    loads = [sum(costs[i] for i in s) for s in shards]
    return {"messages": messages, "pieces": pieces, "shards": shards, "filter_counts": counts, "summary": summary,
            "filters": {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in vars(filters).items()},
            "source": source, "loads": loads, "segments": len(texts), "source_tokens": sum(lengths)}


def resolve_source(source: str, cache: Path) -> str:
    """tiny:oasst2 -> the project's own fixture, written into the run's cache."""
    from dfm_hpc import tiny

    return tiny.resolve_data(source, cache)


def run(cfg: Config, ctx: StageContext) -> None:
    from dfm_hpc import tiny
    from dfm_hpc.text import segment, translators

    tr = cfg.translator
    model = tiny.resolve(tr.name_or_path, ctx.run_dir / "cache")
    translator = translators.make_translator(tr.backend, model, target_lang=tr.target_lang, num_beams=tr.num_beams,
                                             dtype=tr.dtype, max_batch_tokens=tr.max_batch_tokens,
                                             revision=tr.revision, cache_dir=ctx.run_dir / "cache")
    plan = plan_messages(cfg, ctx, translator.count_tokens)
    shard_dir = ctx.stage_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    loads = plan["loads"]
    old_plan = ctx.stage_dir / "plan.json"
    if old_plan.exists() and json.loads(old_plan.read_text())["shards"] != [len(s) for s in plan["shards"]]:
        raise RuntimeError(f"{old_plan} has another shard layout (the data or translate.shards changed); "
                           "resuming would mix them: rerun with --fresh")
    if ctx.is_main:
        mean = sum(loads) / max(1, len(loads))
        write_atomic(ctx.stage_dir / "plan.json", json.dumps({  # other workers read it as they start
            "source": plan["source"], "translator": tr.name_or_path, "translator_revision": tr.revision,
            "backend": tr.backend, "target_lang": tr.target_lang, "filter_counts": plan["filter_counts"],
            "summary": plan["summary"], "filters": plan["filters"], "max_messages": cfg.translate.max_messages,
            "messages": len(plan["messages"]), "segments": plan["segments"], "source_tokens": plan["source_tokens"],
            "shards": [len(s) for s in plan["shards"]], "shard_tokens": loads,
            "balance_max_over_mean": max(loads) / mean if mean else 1.0}, indent=2) + "\n")
    mine = list(range(ctx.worker, len(plan["shards"]), ctx.num_workers))
    ctx.log(f"{len(plan['messages'])} messages, {plan['segments']} segments, {plan['source_tokens']} source tokens "
            f"in {len(plan['shards'])} shards; this rank: shards {mine}")
    total = sum(sum(1 for i in plan["shards"][s] for p in plan["pieces"][i] if p.translate) for s in mine)
    progress = Progress(total)
    for s in mine:
        _translate_shard(s, plan, translator, shard_dir, cfg.translate.chunk_size, ctx, progress, segment)


def _translate_shard(s, plan, translator, shard_dir: Path, chunk_size: int, ctx, progress, segment) -> None:
    path, marker = shard_dir / f"shard-{s:05d}.jsonl", shard_dir / f"shard-{s:05d}.done"
    idx = plan["shards"][s]
    n_segments = [sum(p.translate for p in plan["pieces"][i]) for i in idx]
    if marker.exists():
        progress.resumed(sum(n_segments))
        return
    groups = chunks(n_segments, chunk_size)
    start = resume_point(path, [len(g) for g in groups], s, ctx)
    progress.resumed(sum(n_segments[j] for g in groups[:start] for j in g))
    for k in range(start, len(groups)):
        if ctx.should_stop():
            raise Preempted(f"stopped before chunk {k} of shard {s}")
        members = [idx[j] for j in groups[k]]
        texts = [p.text for i in members for p in plan["pieces"][i] if p.translate]
        outs = iter(translator.translate(texts)) if texts else iter(())
        lines = []
        for i in members:
            m, ps = plan["messages"][i], plan["pieces"][i]
            mine = [next(outs) for p in ps if p.translate]
            row = {"chunk": k, "order": i, **{f: m.get(f) for f in KEEP}, "text": m["text"],
                   "text_da": segment.reassemble(ps, mine), "segments": len(mine)}
            lines.append(json.dumps(row, ensure_ascii=False))
        append_durable(path, lines)
        progress.add(len(texts))
        if progress.due():
            ctx.log(f"shard {s} chunk {k + 1}/{len(groups)}: {progress.done:.0f}/{progress.total} segments, "
                    f"{progress.rate:.1f} segments/s, ETA {progress.eta}")
    marker.write_text(json.dumps({"messages": len(idx), "segments": sum(n_segments)}) + "\n")

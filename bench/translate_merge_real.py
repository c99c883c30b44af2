"""Translate + merge on real OASST data (tests/data/en_100_tree.jsonl.gz: 100 English trees, 1,167 messages)
with the tiny T5, in one process, through the stages' own code (translate.run, merge.run).

Prints segments/s, source tokens/s, padding efficiency, translate and merge seconds, and with
--compare-shards checks that messages/SFT/DPO are byte-identical for each shard count.

    .venv/bin/python bench/translate_merge_real.py                       # hf backend, 1 shard
    .venv/bin/python bench/translate_merge_real.py --backend ctranslate2 --compare-shards 1,3,4

A random-weight model never emits end-of-sequence, so every batch decodes to its length cap:
these are framework figures (batching, sharding, merge), not MADLAD's speed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "tests" / "data" / "en_100_tree.jsonl.gz"


def run_once(source: str, shards: int, backend: str, max_messages, root: Path) -> dict:
    from dfm_hpc.login.compose import compose_config
    from dfm_hpc.stages import merge, translate
    from dfm_hpc.text import translators

    overrides = ["+experiment=oasst2_translate_tiny", f"data.oasst2={source}", f"translate.shards={shards}",
                 f"translator.backend={backend}"]
    if max_messages:
        overrides.append(f"translate.max_messages={max_messages}")
    cfg = compose_config(overrides)
    run = root / f"{backend}-{shards}"
    made = []
    real_make = translators.make_translator

    def capture(*a, **kw):  # keep the translator to read its counters
        made.append(real_make(*a, **kw))
        return made[-1]

    translators.make_translator = capture
    log = []

    def ctx(stage):
        d = run / "stages" / stage
        d.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(is_main=True, run_dir=run, stage_dir=d, worker=0, num_workers=1, rank=0,
                               world_size=1, should_stop=lambda: False, log=log.append)

    try:
        t0 = time.perf_counter()
        translate.run(cfg, ctx("translate"))
        t_translate = time.perf_counter() - t0
    finally:
        translators.make_translator = real_make
    t0 = time.perf_counter()
    merge.run(cfg, ctx("merge"))
    t_merge = time.perf_counter() - t0
    stats = made[0].stats.as_dict()
    report = json.loads((run / "stages" / "merge" / "report.json").read_text())
    return {"shards": shards, "backend": backend, "translate_s": t_translate, "merge_s": t_merge,
            "translator_s": stats["seconds"], "segments": stats["segments"], "source_tokens": stats["source_tokens"],
            "segments_per_s": stats["segments_per_s"], "source_tokens_per_s": stats["source_tokens_per_s"],
            "padding_efficiency": stats["padding_efficiency"], "batches": stats["batches"], "report": report,
            "outputs": {n: (run / "stages" / "merge" / n).read_bytes() for n in ("messages.jsonl", "sft.jsonl",
                                                                                  "dpo.jsonl")},
            "summary": next((x for x in log if x.startswith("OASST source")), "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=str(REAL))
    ap.add_argument("--backend", default="hf", choices=["hf", "ctranslate2"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--compare-shards", default="", help="e.g. 1,3,4: run each, check identical outputs")
    ap.add_argument("--max-messages", type=int, default=None)
    args = ap.parse_args()
    counts = [int(x) for x in args.compare_shards.split(",") if x] or [args.shards]
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_once(args.source, n, args.backend, args.max_messages, Path(tmp)) for n in counts]
    r0 = results[0]
    print(r0["summary"])
    rep = r0["report"]
    print(f"merged: {rep['messages']} messages ({rep['usable']} usable), {rep['trees']} trees, "
          f"{rep['sft_conversations']} SFT conversations, {rep['dpo_pairs']} DPO pairs; filters {rep['filter_counts']}")
    print("\n| backend | shards | segments | source tokens | batches | padding efficiency | translator s | "
          "segments/s | source tokens/s | translate stage s | merge s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['shards']} | {r['segments']:,} | {r['source_tokens']:,} | {r['batches']} | "
              f"{r['padding_efficiency']:.3f} | {r['translator_s']:.1f} | {r['segments_per_s']:.1f} | "
              f"{r['source_tokens_per_s']:,.0f} | {r['translate_s']:.1f} | {r['merge_s']:.2f} |")
    if len(results) > 1:
        same = all(r["outputs"] == r0["outputs"] for r in results)
        print(f"\nmessages/SFT/DPO byte-identical for shards {counts}: {same}")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

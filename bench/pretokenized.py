"""SFT data loading from the chat store (tokenize.chats) against on-the-fly rendering, CPU, the same chats.

    python bench/pretokenized.py [--copies 4] [--repeat 3] [--model tiny:llama]

The chats are the real OASST conversations in /work/shared/data/oasst (every root-to-assistant path of its
100 English trees), repeated --copies times. On the fly is what the sft stage does in every rank:
data.load_chats + data.split + chat_template.chat_rows for both splits. From the store is chat_store.load
(the same seeded split, by chat). Both then read every row's input_ids once (what TRL's preparation reads
next). The store is written once beforehand (the tokenize stage's cost, reported too). Prints seconds,
tokens/s, the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
OASST = Path("/work/shared/data/oasst/en_100_tree.jsonl.gz")


def conversations(path: Path):
    def walk(node, above):
        msgs = above + [{"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]}]
        if msgs[-1]["role"] == "assistant":
            yield msgs
        for child in node.get("replies", []):
            yield from walk(child, msgs)

    with gzip.open(path, "rt") as f:
        for line in f:
            yield from walk(json.loads(line)["prompt"], [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default="tiny:llama")
    a = ap.parse_args()

    import datasets

    from dfm_hpc import config_io, dist, rundir
    from dfm_hpc.job import chat_store, chat_template, data
    from dfm_hpc.job.rank import StageContext

    datasets.disable_caching()  # the on-the-fly map must not be served from the HF cache
    datasets.disable_progress_bars()
    root = Path(tempfile.mkdtemp(prefix="bench_pretok_"))
    chats = [c for c in conversations(OASST)] * a.copies
    src = root / "chats.jsonl"
    src.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats))
    run = root / "runs" / "bench" / "run"
    run.mkdir(parents=True)
    cfg = config_io.typed({"model": {"name_or_path": a.model}, "stages": ["tokenize", "sft"],
                           "sft": {"dataset": str(src)}, "tokenize": {"chats": True, "shards": 1}})
    env = dist.DistEnv(0, 0, 1, 1, 0, "127.0.0.1", 29500)

    def ctx(stage):
        c = StageContext(run, rundir.stage_dir(run, stage), env, array_index=0, array_size=1)
        c.log = lambda _: None
        return c

    t0 = time.perf_counter()
    chat_store.build(cfg, ctx("tokenize"), 0, 1)
    build_s = time.perf_counter() - t0
    tok = chat_store.tokenizer_for(cfg, ctx("sft"), "sft")

    def fly():
        parts = data.split(data.load_chats(str(src), ctx("sft"), "sft"))
        return [chat_template.chat_rows(d, tok, cfg.sft) for d in parts]

    def stored():
        return list(chat_store.load(cfg, ctx("sft"), "sft", tok))  # (train, eval), the same split by chat

    res = {}
    for name, fn in (("on the fly", fly), ("chat store", stored)):
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            n_tok = sum(len(ids) for d in fn() for ids in d["input_ids"])
            times.append(time.perf_counter() - t)
        res[name] = (min(times), n_tok)
    print(f"{len(chats):,} chats ({a.copies} x {len(chats) // a.copies} OASST paths), {a.model}, "
          f"{res['on the fly'][1]:,} tokens; store written once in {build_s:.2f} s")
    for name, (s, n) in res.items():
        print(f"{name:>10}: {s:7.3f} s  {n / s:12,.0f} tokens/s")
    print(f"ratio (on the fly / store): {res['on the fly'][0] / res['chat store'][0]:.1f}x")


if __name__ == "__main__":
    main()

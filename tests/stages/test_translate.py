"""Translation stage: sharding, chunked resumable output, and the recipe end to end on this machine."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import pytest

from dfm_hpc.job.shards import append_durable, balance, chunks, recover

from helpers import DATA, dfm, run_dirs

CODE = re.compile(r"```.*?```", re.S)
URL = re.compile(r"https?://[^\s)>\]]+")


def test_shards_are_balanced_by_tokens():
    rng = random.Random(0)
    costs = [int(rng.lognormvariate(4, 1)) + 1 for _ in range(5000)]  # OASST-like long tail
    shards = balance(costs, 32)
    assert sorted(i for s in shards for i in s) == list(range(5000))  # every message exactly once
    loads = [sum(costs[i] for i in s) for s in shards]
    assert max(loads) / (sum(loads) / len(loads)) <= 1.05
    assert all(s == sorted(s) for s in shards)


def test_chunks_never_split_a_message():
    groups = chunks([3, 0, 5, 1, 1, 9, 2], chunk_size=4)
    assert [i for g in groups for i in g] == list(range(7))
    assert groups == [[0, 1, 2], [3, 4, 5], [6]]


def test_recover_keeps_only_complete_chunks(tmp_path):
    path = tmp_path / "shard.jsonl"
    sizes = [2, 2, 1]
    append_durable(path, [json.dumps({"chunk": 0, "i": i}) for i in range(2)])
    append_durable(path, [json.dumps({"chunk": 1, "i": 2})])  # a chunk cut short by a kill...
    with open(path, "a") as f:
        f.write('{"chunk": 1, "i": 3')  # ...mid-line
    assert recover(path, sizes) == 1
    assert path.read_text().count("\n") == 2 and path.read_text().endswith("\n")
    append_durable(path, [json.dumps({"chunk": 1, "i": i}) for i in (2, 3)])
    append_durable(path, [json.dumps({"chunk": 2, "i": 4})])
    assert recover(path, sizes) == 3
    assert recover(tmp_path / "absent.jsonl", sizes) == 0


@pytest.fixture(scope="module")
def translated(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("translate")
    p = dfm("+experiment=oasst2_translate_tiny", cwd=cwd, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(cwd)
    return run


@pytest.mark.e2e
def test_translation_keeps_code_urls_and_trees(translated):
    from dfm_hpc.text import oasst, oasst_filter

    t = translated / "stages" / "translate"
    plan = json.loads((t / "plan.json").read_text())
    assert plan["balance_max_over_mean"] <= 1.05 or plan["messages"] < 200
    source = oasst_filter.filter_messages(oasst.load_messages(plan["source"]), ["en"])[0]
    rows = [json.loads(x) for f in sorted((t / "shards").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(rows) == len(source) == len({r["message_id"] for r in rows})  # every message exactly once
    by_id = {r["message_id"]: r for r in rows}
    with_code = with_url = 0
    for m in source:
        r = by_id[m["message_id"]]
        assert r["parent_id"] == m["parent_id"] and r["message_tree_id"] == m["message_tree_id"]
        for block in CODE.findall(m["text"]):
            assert block in r["text_da"], block
            with_code += 1
        for url in URL.findall(m["text"]):
            assert url in r["text_da"], url
            with_url += 1
    assert with_code >= 2 and with_url >= 2  # the fixture really has them


def test_merge_outputs_and_card(translated):
    m = translated / "stages" / "merge"
    for name in ("messages", "sft", "dpo"):
        assert (m / f"{name}.jsonl").exists() and (m / f"{name}.parquet").exists()
    report = json.loads((m / "report.json").read_text())
    assert report["sft_conversations"] > 0 and report["dpo_pairs"] > 0
    sft = [json.loads(x) for x in (m / "sft.jsonl").read_text().splitlines()]
    for conv in sft:
        roles = [t["role"] for t in conv["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:]))
    dpo = [json.loads(x) for x in (m / "dpo.jsonl").read_text().splitlines()]
    assert all(d["chosen_id"] != d["rejected_id"] and d["prompt"][-1]["role"] == "user" for d in dpo)
    card = (m / "README.md").read_text()
    assert card.startswith("---\nlanguage:\n- da\nlicense: apache-2.0")
    assert "tiny" in card and "Apache-2.0" in card and str(report["messages"]) in card


@pytest.mark.e2e
def test_trl_accepts_the_merged_datasets(translated, tmp_path):
    """One SFTTrainer and one DPOTrainer step on the merged Danish data with a tiny local model."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dfm_hpc import tiny

    path = tiny.resolve("tiny:llama", tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained(path)
    m = translated / "stages" / "merge"
    sft = datasets.load_dataset("parquet", data_files=str(m / "sft.parquet"), split="train")
    sft = sft.select_columns(["messages"])
    common = dict(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                  bf16=False, use_cpu=True, logging_steps=1, save_strategy="no")
    t = trl.SFTTrainer(model=AutoModelForCausalLM.from_pretrained(path), processing_class=tok, train_dataset=sft,
                       args=trl.SFTConfig(max_length=256, **common))
    assert t.train().global_step == 1
    dpo = datasets.load_dataset("parquet", data_files=str(m / "dpo.parquet"), split="train")
    dpo = dpo.select_columns(["prompt", "chosen", "rejected"])
    t = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path), processing_class=tok, train_dataset=dpo,
                       args=trl.DPOConfig(max_length=256, **common))
    assert t.train().global_step == 1


# ------------------------------------------------------------------------- real OASST data (tests/data)

REAL = DATA / "en_100_tree.jsonl.gz"
INLINE = re.compile(r"(?<!`)`[^`\n]+`(?!`)")
REAL_URL = re.compile(r"https?://[^\s)>\]\"'`]+")  # a quote ends a URL in code ("https://...",)


def test_code_and_urls_survive_on_every_real_message():
    """Segmenting and reassembling all 1,167 real messages with every prose piece changed: fenced code,
    inline code and URLs come back byte for byte, so no translation can touch them."""
    from dfm_hpc.text import oasst, segment

    n_code = n_inline = n_url = 0
    for m in oasst.load_messages(str(REAL)):
        pieces = segment.segment(m["text"])
        out = segment.reassemble(pieces, [f"<{p.text[::-1]}>" for p in pieces if p.translate])
        for block in CODE.findall(m["text"]):
            assert block in out, block
            n_code += 1
        for code in INLINE.findall(CODE.sub("", m["text"])):
            assert code in out, code
            n_inline += 1
        for url in REAL_URL.findall(m["text"]):
            url = url.rstrip(".,;:!?")
            assert url in out, url
            n_url += 1
    assert n_code >= 40 and n_inline >= 40 and n_url >= 40  # 46 fenced blocks, 51 URLs (shared/data/oasst)


@pytest.fixture(scope="module")
def real_subset(tmp_path_factory) -> Path:
    """Real trees small enough for the tiny T5 on 2 cores: the four with the least text (two have tied
    unranked follow-up prompts, which made SFT depend on the shard layout) and one synthetic tree."""
    lines = gzip.decompress(REAL.read_bytes()).decode().splitlines()

    def size(node):
        return len(node["text"]) + sum(size(r) for r in node.get("replies", []))

    def synthetic(node):
        return node.get("synthetic") or any(synthetic(r) for r in node.get("replies", []))

    trees = sorted((json.loads(x) for x in lines), key=lambda t: size(t["prompt"]))
    pick = [t for t in trees if not synthetic(t["prompt"])][:4] + [next(t for t in trees if synthetic(t["prompt"]))]
    path = tmp_path_factory.mktemp("real") / "real5.trees.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in pick))
    return path


@pytest.mark.e2e
def test_real_trees_give_the_same_outputs_on_1_3_and_4_shards(real_subset, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = dfm("-m", "+experiment=oasst2_translate_tiny", f"data.oasst2={real_subset}", "translate.shards=1,3,4",
            "translate.tasks_per_node=1", cwd=cwd, timeout=900, env={"PWD": str(cwd)})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    points = sorted(p for p in cwd.glob("runs/oasst2_translate_tiny/*/*") if p.is_dir() and p.name.isdigit())
    assert len(points) == 3
    shards = [json.loads((d / "stages" / "translate" / "plan.json").read_text())["shards"] for d in points]
    assert [len(s) for s in shards] == [1, 3, 4]
    out = [{n: (d / "stages" / "merge" / n).read_bytes() for n in ("messages.jsonl", "sft.jsonl", "dpo.jsonl")}
           for d in points]
    assert out[0] == out[1] == out[2]
    report = json.loads((points[0] / "stages" / "merge" / "report.json").read_text())
    assert report["filter_counts"]["synthetic"] > 0 and report["source_trees"] == 5
    assert report["sft_conversations"] == 4 and report["dpo_pairs"] > 0
    card = (points[0] / "stages" / "merge" / "README.md").read_text()
    assert f"| synthetic | {report['filter_counts']['synthetic']} |" in card
    log = (points[0] / "stages" / "translate" / "logs" / "rank-0.log").read_text()
    assert f"(trees): 5 trees, {report['source_messages']} messages" in log  # the summary, in the translate log
    assert "OASST source" in p.stdout and "5 trees" in p.stdout  # and in the plan

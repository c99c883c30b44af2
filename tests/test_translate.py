"""Translation stage: sharding, chunked resumable output, and the recipe end to end on this machine."""

from __future__ import annotations

import json
import random
import re

import pytest

from conftest import dfm, run_dirs
from dfm_hpc.job.shards import append_durable, balance, chunks, recover

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


def test_translation_keeps_code_urls_and_trees(translated):
    from dfm_hpc.text import oasst

    t = translated / "stages" / "translate"
    plan = json.loads((t / "plan.json").read_text())
    assert plan["balance_max_over_mean"] <= 1.05 or plan["messages"] < 200
    source = oasst.filter_messages(oasst.load_messages(plan["source"]), ["en"])[0]
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

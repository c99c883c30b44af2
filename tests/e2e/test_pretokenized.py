"""The pretokenized path (tokenize.chats) trains on what the on-the-fly path trains on: stages
[tokenize, sft, dpo] and [sft] give the same first sft step loss (same seed, 1 rank, tiny:llama, packed), and
dpo after sft, loading the tokenizer sft saved, reads the store the tokenize stage made with the base's."""

from __future__ import annotations

import json

import pytest

from helpers import dfm, run_dirs

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

SFT = ("+experiment=sft_tiny", "sft.tasks_per_node=1", "sft.max_steps=1", "sft.global_batch_size=2",
       "sft.micro_batch_size=2", "sft.packing=true", "sft.save_every_steps=1")
DPO = ("dpo.tasks_per_node=1", "dpo.max_steps=1", "dpo.global_batch_size=2", "dpo.micro_batch_size=2",
       "dpo.save_every_steps=1")


def _first_loss(run):
    rows = [json.loads(x) for x in (run / "stages" / "sft" / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if "loss" in r)


def test_sft_from_the_chat_store_has_the_on_the_fly_first_step_loss(tmp_path):
    (tmp_path / "fly").mkdir(), (tmp_path / "pre").mkdir()
    fly = dfm(*SFT, "stages=[sft]", cwd=tmp_path / "fly", timeout=600)
    assert fly.returncode == 0, fly.stdout[-3000:] + fly.stderr[-3000:]
    pre = dfm(*SFT, *DPO, "stages=[tokenize,sft,dpo]", "tokenize.chats=true", cwd=tmp_path / "pre", timeout=600)
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    (a,), (b,) = run_dirs(tmp_path / "fly"), run_dirs(tmp_path / "pre")
    log = (b / "stages" / "sft" / "logs" / "rank-0.log").read_text()
    assert "sft data: chat store " in log and "rendering chats" not in log, log[-2000:]
    stores = json.loads((b / "stages" / "tokenize" / "chat_stores.json").read_text())
    assert [s["kind"] for s in stores] == ["sft", "dpo"]
    log = (b / "stages" / "dpo" / "logs" / "rank-0.log").read_text()
    assert "dpo data: chat store " in log and "rendering pairs" not in log, log[-2000:]
    assert _first_loss(b) == pytest.approx(_first_loss(a), rel=1e-6)

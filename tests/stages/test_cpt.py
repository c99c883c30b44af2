"""CPT stage on this machine: DeepSpeed ZeRO on 2 CPU ranks, loss goes down, ranks see disjoint data."""

from __future__ import annotations

import json

import pytest

from helpers import GOLDEN, dfm, run_dirs
from helpers.outputs import check_cpt, check_resharded, samples

pytest.importorskip("deepspeed")


def check_store_blocks(run, shards):
    """Tokenized by both ranks in `shards` pieces into the token store, the training blocks equal
    packing the corpus in one go (what the in-memory loader trained on), in the same order."""
    import torch
    from transformers import AutoTokenizer

    from dfm_hpc.job import store
    from dfm_hpc.job.data import load_texts, pack

    (path,) = [p.parent for p in run.parent.parent.glob("tokens-*/manifest.json")]
    assert sorted(p.name for p in path.glob("shard-*.done")) == [f"shard-{s:05d}.done" for s in range(shards)]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["dtype"] == "<u2" and manifest["vocab_size"] < 2 ** 16 and store.verify(path)
    texts = load_texts("tiny:corpus", run / "cache")
    assert manifest["documents"] == len(texts)
    n_eval = max(1, int(len(texts) * 0.05))
    tok = AutoTokenizer.from_pretrained(str(run / "cache" / "tiny-llama"))
    s = store.Store(path)
    (a, b), (c, d), _ = s.split(0.05)
    blocks = store.Blocks([(s, a, b)], 64)
    expected = pack(texts[:-n_eval], tok, 64)
    assert len(blocks) == len(expected)
    assert torch.equal(torch.stack([blocks.block(i) for i in range(len(blocks))]), expected)
    ev = store.Blocks([(s, c, d)], 64)
    assert torch.equal(torch.stack([ev.block(i) for i in range(len(ev))]), pack(texts[-n_eval:], tok, 64))


@pytest.mark.e2e
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_cpt_locally_with_zero(zero, tmp_path):
    extra = ["tokenize.shards=3"] if zero == "zero3" else []  # default: one shard per rank
    p = dfm("+experiment=cpt_tiny", f"deepspeed={zero}", *extra, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    rows = check_cpt(run)
    check_store_blocks(run, 3 if extra else 2)
    assert "step 30/30" in p.stdout and "eval: eval_loss" in p.stdout
    if zero == "zero2":
        # the store path trains exactly as the in-memory loader did (train.pt, before the store):
        # the same blocks in the same order per rank, so the same losses
        golden = json.loads((GOLDEN / "cpt_tiny_in_memory_loader.json").read_text())
        assert [r["loss"] for r in rows] == pytest.approx(golden["loss"], rel=1e-5)
        assert {str(r): samples(run / "stages" / "cpt", r) for r in range(2)} == golden["samples"]
        summary = json.loads((run / "stages" / "cpt" / "summary.json").read_text())
        assert summary["eval_loss"] == pytest.approx(golden["eval_loss"], rel=1e-5)


@pytest.mark.e2e
def test_a_second_run_reuses_the_store(tmp_path):
    """Same tokenizer and source under the same runs_root: the store is found, nothing is tokenized."""
    for _ in range(2):
        p = dfm("+experiment=cpt_tiny", "cpt.max_steps=2", cwd=tmp_path, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    first, second = run_dirs(tmp_path)
    logs = [(r / "stages" / "cpt" / "logs" / "rank-0.log").read_text() for r in (first, second)]
    assert "tokenizing " in logs[0] and "tokenizing " not in logs[1]
    assert len(list((tmp_path / "runs").glob("tokens-*/manifest.json"))) == 1


@pytest.mark.e2e
def test_wandb_logs_offline_into_the_run_dir(tmp_path):
    """report_to=[wandb]: W&B runs offline (compute nodes have no internet) and writes its run,
    one per stage (rank 0), into the stage dir, ready for `wandb sync` from the login node."""
    pytest.importorskip("wandb")
    p = dfm("+experiment=cpt_tiny", "cpt.max_steps=3", "cpt.report_to=[wandb]", cwd=tmp_path, timeout=600,
            env={"WANDB_MODE": "", "WANDB_API_KEY": ""})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    runs = list((run / "stages" / "cpt" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    (log,) = runs[0].glob("run-*.wandb")
    assert log.stat().st_size > 1000
    assert not (run / "stages" / "cpt" / "tensorboard").exists()


@pytest.mark.e2e
def test_checkpoints_by_minutes(tmp_path):
    """save_every_minutes: a checkpoint when that much time passed, whatever save_every_steps says
    (here every step, since a step takes longer than 0.006 s); the last keep_checkpoints stay."""
    p = dfm("+experiment=cpt_tiny", "cpt.max_steps=4", "cpt.save_every_steps=1000", "cpt.save_every_minutes=0.0001",
            "cpt.keep_checkpoints=2", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    kept = sorted(d.name for d in (run / "stages" / "cpt" / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-3", "checkpoint-4"]


@pytest.mark.e2e
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_resume_on_another_world_size(zero, tmp_path):
    """A checkpoint from 2 ranks, continued on 4 through DeepSpeed's universal checkpoint. ZeRO-2
    continues with the uninterrupted run's losses; ZeRO-3's drift apart slowly (0.2 % by step 20,
    while a fresh 4-rank ZeRO-3 run equals the 2-rank one: docs/training.md#re-sharding)."""
    args = ["+experiment=cpt_tiny", f"deepspeed={zero}", "cpt.max_steps=20", "cpt.save_every_steps=10"]
    p = dfm(*args, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (first,) = run_dirs(tmp_path)
    ckpt = first / "stages" / "cpt" / "checkpoints" / "checkpoint-10"
    p = dfm(*args, "cpt.tasks_per_node=4", f"cpt.resume_from={ckpt}", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (second,) = [r for r in run_dirs(tmp_path) if r != first]
    check_resharded(first, second, 2, 4, rel=1e-4 if zero == "zero2" else 1e-2)
    assert not (ckpt / "latest_universal").exists()  # the other run's checkpoint is only read

"""CPT stage on this machine: DeepSpeed ZeRO on 2 CPU ranks, loss goes down, ranks see disjoint data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import dfm, run_dirs

pytest.importorskip("deepspeed")


def _samples(stage_dir, rank):
    return [int(x) for x in (stage_dir / f"samples-rank-{rank}.txt").read_text().split()]


def check_cpt(run, world_size=2):
    s = run / "stages" / "cpt"
    assert (s / "DONE").exists()
    summary = json.loads((s / "summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary  # a learnable corpus is learned
    assert summary["eval_perplexity"] < 60
    rows = [json.loads(x) for x in (s / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all(r["tokens_per_s_per_device"] > 0 and r["grad_norm"] is not None for r in rows)
    seen = [set(_samples(s, r)) for r in range(world_size)]
    assert all(seen) and all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:]), "ranks shared data"
    assert (s / "model" / "model.safetensors").exists() and (s / "model" / "tokenizer.json").exists()
    assert (s / "loss.png").stat().st_size > 1000
    return rows


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
        golden = json.loads((Path(__file__).parent / "golden" / "cpt_tiny_in_memory_loader.json").read_text())
        assert [r["loss"] for r in rows] == pytest.approx(golden["loss"], rel=1e-5)
        assert {str(r): _samples(run / "stages" / "cpt", r) for r in range(2)} == golden["samples"]
        summary = json.loads((run / "stages" / "cpt" / "summary.json").read_text())
        assert summary["eval_loss"] == pytest.approx(golden["eval_loss"], rel=1e-5)


def test_a_second_run_reuses_the_store(tmp_path):
    """Same tokenizer and source under the same runs_root: the store is found, nothing is tokenized."""
    for _ in range(2):
        p = dfm("+experiment=cpt_tiny", "cpt.max_steps=2", cwd=tmp_path, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    first, second = run_dirs(tmp_path)
    logs = [(r / "stages" / "cpt" / "logs" / "rank-0.log").read_text() for r in (first, second)]
    assert "tokenizing " in logs[0] and "tokenizing " not in logs[1]
    assert len(list((tmp_path / "runs").glob("tokens-*/manifest.json"))) == 1


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


def test_checkpoints_by_minutes(tmp_path):
    """save_every_minutes: a checkpoint when that much time passed, whatever save_every_steps says
    (here every step, since a step takes longer than 0.006 s); the last keep_checkpoints stay."""
    p = dfm("+experiment=cpt_tiny", "cpt.max_steps=4", "cpt.save_every_steps=1000", "cpt.save_every_minutes=0.0001",
            "cpt.keep_checkpoints=2", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    kept = sorted(d.name for d in (run / "stages" / "cpt" / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-3", "checkpoint-4"]


def _losses(run):
    return {r["step"]: r["loss"] for r in (json.loads(x) for x in
                                           (run / "stages" / "cpt" / "metrics.jsonl").read_text().splitlines())}


def check_resharded(first, second, n_from, n_to, rel=1e-4):
    """`second` continued `first`'s checkpoint-10 on another number of ranks: steps 11-20 only, with
    the losses of `first`'s own steps 11-20 (same global batches, summed in another order)."""
    log = (second / "stages" / "cpt" / "logs" / "rank-0.log").read_text()
    assert f"checkpoint-10 was written by {n_from} ranks; this job has {n_to}" in log, log[-3000:]
    assert "resuming from" in log and (second / "stages" / "cpt" / "checkpoints" / "checkpoint-10" /
                                       "latest_universal").exists()
    a, b = _losses(first), _losses(second)
    assert sorted(b) == list(range(11, 21)), sorted(b)  # no restart from step 0
    for step in range(11, 21):
        assert b[step] == pytest.approx(a[step], rel=rel), (step, a[step], b[step])
    assert a[20] < a[11]  # and it is still learning


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

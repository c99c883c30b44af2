"""CPT stage on this machine: DeepSpeed ZeRO on 2 CPU ranks, loss goes down, ranks see disjoint data."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_cpt_locally_with_zero(zero, tmp_path):
    p = dfm("+experiment=cpt_tiny", f"deepspeed={zero}", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    check_cpt(run)
    assert "step 30/30" in p.stdout and "eval: eval_loss" in p.stdout

"""Checkpoint evaluations on the two-node Slurm cluster (issue #23 item 5): a tiny LoRA SFT saves 2 checkpoints;
its batch script, host side, queues one evaluate job per checkpoint while the step runs on; each job scores its
checkpoint (held-out perplexity, weight hashes) and redraws the curve."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from helpers import dfm, run_dirs, wait_for
from helpers.slurm_jobs import history

pytestmark = pytest.mark.slurm


def _sacct(job: str, field: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", field], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_the_training_job_queues_an_evaluation_per_checkpoint_and_the_curve_is_written(slurm_cluster, tmp_path):
    p = dfm("+experiment=sft_tiny", "stages=[sft]", "cluster=slurm", "sft.max_steps=4", "sft.save_every_steps=2",
            "sft.eval_checkpoints=1", "sft.eval_checkpoints_time=00:10:00", "evaluate.max_eval_texts=8", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    sdir = run / "stages" / "sft"
    d = sdir / "checkpoint_evals"
    train_job = (sdir / "job_id").read_text().strip()
    results = [d / "step-2.json", d / "step-4.json"]
    wait_for(lambda: all(f.exists() for f in results) or (sdir / "FAILED").exists(), timeout=300,
             what="both checkpoints scored")
    assert not (sdir / "FAILED").exists(), (sdir / "FAILED").read_text()
    jobs = [(d / f"step-{s}.job_id").read_text().strip() for s in (2, 4)]
    assert len(set(jobs + [train_job])) == 3  # a job each, not steps of the training job
    for job in jobs:
        wait_for(lambda j=job: history(j) and history(j)[-1] == "COMPLETED", timeout=60, what=f"job {job} to end")
        assert _sacct(job, "JobName") == "dfm-sft_tiny-sft-ckpt-eval"
    wait_for(lambda: (sdir / "DONE").exists() and history(train_job)[-1] == "COMPLETED", timeout=60,
             what="the training job")
    # training never waited: the training job ended before the last checkpoint's evaluation did (a script that
    # waited for it would end after it)
    assert _sacct(train_job, "End") < _sacct(jobs[1], "End"), (_sacct(train_job, "End"), _sacct(jobs[1], "End"))
    rows = [json.loads(f.read_text()) for f in results]
    assert [r["step"] for r in rows] == [2, 4]
    hashes = [r["bound_to"]["weights"]["sha256"] for r in rows]
    assert all(h and len(h) == 64 for h in hashes) and hashes[0] != hashes[1]  # two trained adapters
    assert all(r["bound_to"]["weights"]["base"]["sha256"] for r in rows)  # the base they sit on, hashed too
    assert all(math.isfinite(r["eval_loss"]) and r["eval_texts"] == 8 for r in rows)
    assert not (d / "step-2").exists() and not (d / "step-4").exists()  # scored: the kept weights removed
    md = (d / "curve.md").read_text()
    assert "| 2 | " in md and "| 4 | " in md and "not scored yet" not in md
    assert (d / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "evaluation queued as job" in "".join(f.read_text() for f in (sdir / "submitit").glob("*_log.err"))

"""cluster=node (issue #25 item 1): the whole tiny recipe on one machine's GPUs, one rank per GPU, without Slurm.
Two fake GPUs (CUDA_VISIBLE_DEVICES=0,1 with no driver, as the test cluster's GRES), so the ranks compute on the
CPU; Ctrl-C in the middle of sft stops the ranks, and `rerun` resumes sft from its checkpoint and finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import dfm, run_dirs, wait_for

pytest.importorskip("deepspeed")
pytest.importorskip("trl")

STAGES = ["translate", "merge", "pii", "sft", "dpo", "evaluate", "card"]


def test_pipeline_on_two_fake_gpus_interrupted_and_resumed(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("VISIBLE_DEVICES")},
           "CUDA_VISIBLE_DEVICES": "0,1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "dfm_hpc", "+experiment=pipeline_tiny", "cluster=node"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # sft's first checkpoint (step 10 of 20), complete: then Ctrl-C
        wait_for(lambda: next(tmp_path.glob("runs/*/*/stages/sft/checkpoints/checkpoint-10/trainer_state.json"),
                              None), timeout=900, every=0.5, what="sft's first checkpoint")
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert "GPUs: 2 x unknown GPU (CUDA_VISIBLE_DEVICES=0,1); all used, one rank per GPU" in out
    assert "stopped the ranks of stage sft" in out
    (run,) = run_dirs(tmp_path)
    s = run / "stages"
    assert (s / "sft" / "CANCELLED").exists() and not (s / "sft" / "pids").exists()
    assert not (s / "dpo").exists() or not (s / "dpo" / "logs").exists()  # the stages after it never started

    r = dfm("rerun", str(run), cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "reusing finished stages: translate, merge, pii" in r.stderr + r.stdout
    new = next(d for d in run_dirs(tmp_path) if d != run)
    s = new / "stages"
    assert all((s / st / "DONE").exists() for st in STAGES)
    sft = [(s / "sft" / "logs" / f"rank-{r}.log").read_text() for r in (0, 1)]
    assert "resuming from" in sft[0] and "checkpoint-10" in sft[0]
    # one rank per GPU: every rank sees the stage's GPUs, local rank r takes GPU r (no driver: it computes on CPU)
    for rank, log in enumerate(sft):
        assert f"GPU {rank} of 2 (CUDA_VISIBLE_DEVICES=0,1)" in log
    assert "GPU 0 of 1 (CUDA_VISIBLE_DEVICES=0)" in (s / "evaluate" / "logs" / "rank-0.log").read_text()
    assert "no GPU" in (s / "card" / "logs" / "rank-0.log").read_text()  # needs none: gets none
    assert (s / "card" / "README.md").exists()

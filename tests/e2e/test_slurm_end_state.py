"""The end-state rule and agreed stops on the two-node Slurm cluster (issue #22): every rank's stop
counts, a failing requeue fails the job, and training ranks stop together when only one is signalled."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from helpers import dfm, run_dirs, wait_for

pytestmark = pytest.mark.slurm
SLURM = ["cluster=slurm"]


def _history(job: str) -> list:
    """The job's states, oldest first (REQUEUED for each earlier start)."""
    out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State"], capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]  # "CANCELLED by 0"


def _ended(job: str):
    h = _history(job)
    return h if "REQUEUED" in h or (h and h[-1] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")) else None


def _pid(log):
    return wait_for(lambda: log.exists() and (m := re.search(r"pid (\d+)", log.read_text())) and int(m.group(1)),
                    timeout=300, what=f"{log.name} to start")


def _translate(cwd, env=None):
    p = dfm("+experiment=oasst2_translate_tiny", *SLURM, "translate.nodes=2", "translate.chunk_size=3",
            "translate.max_messages=48", "stages=[translate]", cwd=cwd, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(cwd)
    t = run / "stages" / "translate"
    return t, (t / "job_id").read_text().strip()


def _first_chunk(t, shard=1):
    f = t / "shards" / f"shard-{shard:05d}.jsonl"
    wait_for(lambda: f.exists() and f.stat().st_size > 0, every=0.02, timeout=300, what=f"shard {shard}'s first chunk")


def test_rank_0_finished_and_rank_1_preempted_is_requeued_not_completed(slurm_cluster, tmp_path):
    """Rank 1 alone gets the pre-timeout signal; rank 0 finishes its shards. The job must be requeued
    (old main: only rank 0 asked, so the job ended COMPLETED on an unfinished translation)."""
    t, job = _translate(tmp_path)
    pid = _pid(t / "logs" / "rank-1.log")
    _first_chunk(t)  # rank 1 owns shards 1 and 3
    os.kill(pid, signal.SIGUSR2)
    first = wait_for(lambda: _ended(job), timeout=300, what="the first start to end")
    assert "REQUEUED" in first, first  # old main: ["COMPLETED"] with no DONE
    wait_for(lambda: (t / "DONE").exists() or (t / "FAILED").exists(), timeout=300, what="the requeued translation")
    assert (t / "DONE").exists(), (t / "FAILED").read_text()
    wait_for(lambda: _history(job)[-1:] == ["COMPLETED"], what="the requeued job to complete")
    log0, log1 = ((t / "logs" / f"rank-{r}.log").read_text() for r in (0, 1))
    assert log0.count("stage translate finished") == 2, log0[-2000:]  # rank 0 had finished in the first start
    assert "stopping for the time limit" in log1 and "requeue of job" in log1 and "resuming after" in log1
    ids = [json.loads(x)["message_id"] for f in sorted((t / "shards").glob("*.jsonl"))
           for x in f.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == json.loads((t / "plan.json").read_text())["messages"]


def test_a_failing_scontrol_requeue_fails_the_job(slurm_cluster, tmp_path):
    """SBATCH_NO_REQUEUE (which LUMI's guide suggests) makes `scontrol requeue` fail: the job must end
    FAILED, not COMPLETED on an unfinished stage (old main exited 0)."""
    t, job = _translate(tmp_path, env={"SBATCH_NO_REQUEUE": "1"})
    _pid(t / "logs" / "rank-1.log")
    _first_chunk(t)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    states = wait_for(lambda: _ended(job), timeout=300, what="the job to end")
    assert states == ["FAILED"], states
    assert not (t / "DONE").exists()
    err = "".join(f.read_text() for f in (t / "submitit").glob(f"{job}_*log.err"))
    assert "scontrol requeue failed" in err, err[-2000:]


def test_usr2_to_one_training_rank_stops_both_at_the_same_checkpoint(slurm_cluster, tmp_path):
    """2 ranks train (DeepSpeed ZeRO-2, one per node); only rank 1 is signalled. Both save the same
    checkpoint step and stop together, the job requeues and the resumed run finishes (old main: rank 1
    entered the save alone and the ranks hung)."""
    p = dfm("+experiment=cpt_tiny", *SLURM, "cpt.nodes=2", "cpt.max_steps=60", "cpt.save_every_steps=1000",
            cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(tmp_path)
    s = run / "stages" / "cpt"
    job = (s / "job_id").read_text().strip()
    pid = _pid(s / "logs" / "rank-1.log")
    wait_for(lambda: (s / "metrics.jsonl").exists() and len((s / "metrics.jsonl").read_text().splitlines()) >= 5,
             every=0.05, timeout=300, what="5 logged steps")
    os.kill(pid, signal.SIGUSR2)
    first = wait_for(lambda: _ended(job), timeout=240, what="both ranks to stop and the job to requeue")
    assert "REQUEUED" in first, first
    logs = [(s / "logs" / f"rank-{r}.log").read_text() for r in (0, 1)]
    steps = [re.findall(r"stopping for the time limit: checkpoint saved at step (\d+)", lg) for lg in logs]
    assert len(steps[0]) == 1 and steps[0] == steps[1], steps
    assert (s / "checkpoints" / f"checkpoint-{steps[0][0]}").is_dir()
    wait_for(lambda: (s / "DONE").exists() or (s / "FAILED").exists(), timeout=400, what="the resumed CPT")
    assert (s / "DONE").exists(), (s / "FAILED").read_text()
    assert "resuming from" in (s / "logs" / "rank-0.log").read_text()
    done = {json.loads(x)["step"] for x in (s / "metrics.jsonl").read_text().splitlines() if "loss" in x}
    assert set(range(1, 61)) <= done

"""The end-state rule of a rendered batch script (login/slurm.host_side), run with stubbed srun and
scontrol: requeued when a rank asked for it, failed when that requeue fails or when the stage is
neither finished nor requeued; COMPLETED (exit 0) only on a finished stage (docs/lumi.md)."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import LUMI, dfm, run_dirs, slurm_stubs

REQUEUE = 'touch "$DFM_HPC_REQUEUE_MARKER"'  # what a rank that stopped early leaves
DONE = 'touch "$DFM_HPC_DONE_MARKER"'  # what the rank that finishes the job's part leaves


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("render")
    p = dfm("+experiment=munin_sft", *LUMI, "dry_run=true", cwd=cwd)
    assert p.returncode == 0, p.stderr
    (run,) = run_dirs(cwd)
    (run / "stages" / "sft" / "submitit").mkdir(exist_ok=True)  # submitit makes it when it submits
    return run / "stages" / "sft" / "sbatch.sh"


def _run(script, tmp_path, srun: str, scontrol: str = "exit 0", **extra):
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir, bodies={"srun": srun, "scontrol": scontrol})
    env = {**os.environ, **slurm_stubs.env(bin_dir), "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "nid001", **extra}
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    requeues = [c for c in slurm_stubs.calls(bin_dir, "scontrol") if c.startswith("scontrol [requeue]")]
    markers = sorted(f.name for f in (script.parent / "submitit").glob("*.7") if f.is_file())  # not the eval queue
    return r, requeues, markers


def test_a_failing_requeue_fails_the_job(script, tmp_path):
    r, requeues, markers = _run(script, tmp_path, REQUEUE, scontrol='[ "$1" = requeue ] && exit 1; exit 0')
    assert r.returncode != 0 and "scontrol requeue failed" in r.stderr, r.stderr
    assert requeues == ["scontrol [requeue] [7]"] and markers == []


def test_a_requested_requeue_is_done_and_the_job_ends_well(script, tmp_path):
    r, requeues, markers = _run(script, tmp_path, REQUEUE)
    assert r.returncode == 0, r.stderr
    assert requeues == ["scontrol [requeue] [7]"] and markers == []


def test_an_array_task_requeues_itself_not_the_array(script, tmp_path):
    """The task that holds the array's own job id (here 7, task 1 of array 7) must requeue 7_1: `scontrol requeue
    7` would requeue every task of the array, killing the others mid-write (seen in CI: a torn plan.json)."""
    r, requeues, _ = _run(script, tmp_path, REQUEUE, SLURM_ARRAY_JOB_ID="7", SLURM_ARRAY_TASK_ID="1")
    assert r.returncode == 0, r.stderr
    assert requeues == ["scontrol [requeue] [7_1]"]


def test_a_finished_stage_completes_without_a_requeue(script, tmp_path):
    r, requeues, markers = _run(script, tmp_path, DONE)
    assert r.returncode == 0, r.stderr
    assert requeues == [] and markers == []


def test_an_unfinished_stage_with_no_requeue_pending_fails(script, tmp_path):
    r, requeues, _ = _run(script, tmp_path, "exit 0")
    assert r.returncode == 1 and "stage unfinished and no requeue pending" in r.stderr, r.stderr
    assert requeues == []


def test_a_failed_step_is_not_requeued_and_keeps_its_status(script, tmp_path):
    r, requeues, markers = _run(script, tmp_path, REQUEUE + "; exit 3")
    assert r.returncode == 3 and requeues == [] and markers == []


def test_stale_markers_of_an_earlier_start_of_the_job_are_ignored(script, tmp_path):
    (script.parent / "submitit" / "done.7").touch()  # left by the start before a node failure requeued the job
    r, requeues, _ = _run(script, tmp_path, "exit 0")
    assert r.returncode == 1 and requeues == []

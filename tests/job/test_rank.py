"""rank.agree: the ranks' step-end decisions reduced with MAX over a real two-process gloo group, so
a stop or a save one rank wants is what every rank does (train.metrics_callback)."""

from __future__ import annotations

import socket

import pytest
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, port, wants, out):
    import torch.distributed as dist

    from dfm_hpc.job.rank import agree

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = [agree(w, "cpu") for w in wants[rank]]
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e  # two processes importing torch: ~6 s
def test_every_rank_gets_the_largest_decision():
    from dfm_hpc.job.train import SAVE, STOP

    wants = {0: [0, 0, SAVE, 0, 0], 1: [0, STOP, 0, SAVE, 0]}  # rank 1 alone saw USR2 at step 2
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), wants, out), nprocs=2)
    assert out[0] == out[1] == [0, STOP, SAVE, SAVE, 0]


def test_one_process_decides_alone():
    from dfm_hpc.job.rank import agree

    assert agree(2) == 2


def _stopped(tmp_path, monkeypatch, stage, restarts="0", rank=1, **cluster):
    """A rank of Slurm job 7 whose stage stopped early (rank.Preempted) asks for its requeue."""
    from dfm_hpc.job import rank as rank_mod

    from helpers import make_cfg, stage_ctx

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)
    monkeypatch.setenv("DFM_HPC_REQUEUE_MARKER", str(tmp_path / "requeue.7"))
    ctx = stage_ctx(tmp_path, stage, rank=rank, world_size=2)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    rank_mod._requeue(ctx, stage, make_cfg(cluster=cluster), "stopped before chunk 2 of shard 1")
    return ctx


def test_any_rank_of_a_resumable_stage_asks_for_the_requeue(tmp_path, monkeypatch):
    _stopped(tmp_path, monkeypatch, "translate", rank=1)  # rank 0 may have finished its shards
    assert (tmp_path / "requeue.7").read_text() == "7 worker 1\n"


def test_a_stage_that_cannot_resume_fails_with_the_reason_instead(tmp_path, monkeypatch):
    from dfm_hpc import rundir
    from dfm_hpc.job.rank import CannotResume

    with pytest.raises(CannotResume, match="cannot resume"):
        _stopped(tmp_path, monkeypatch, "merge")
    assert not (tmp_path / "requeue.7").exists()
    assert "rerun" in (rundir.stage_dir(tmp_path, "merge") / rundir.FAILED).read_text()


def test_restarts_past_the_cap_fail_with_the_reason(tmp_path, monkeypatch):
    from dfm_hpc import rundir
    from dfm_hpc.job.rank import CannotResume

    _stopped(tmp_path, monkeypatch, "cpt", restarts="1", max_restarts=2)
    assert (tmp_path / "requeue.7").exists()
    (tmp_path / "requeue.7").unlink()
    with pytest.raises(CannotResume, match="after 2 restart.*max_restarts=2"):
        _stopped(tmp_path, monkeypatch, "cpt", restarts="2", max_restarts=2)
    assert not (tmp_path / "requeue.7").exists()
    assert "max_restarts=2" in (rundir.stage_dir(tmp_path, "cpt") / rundir.FAILED).read_text()

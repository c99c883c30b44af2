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

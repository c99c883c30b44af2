"""The first-run check (`+experiment=lumi_check`): its verdict logic on LUMI-like inputs. The run
itself is on the 2-node cluster in test_slurm.py (gloo, fake GPUs)."""

from __future__ import annotations

import pytest

from dfm_hpc import lumi

pytest.importorskip("torch")
from dfm_hpc.stages.lumi_check import bus_gbps, verdict  # noqa: E402

RCCL_LOG = "nid005001:1234:1300 [0] NCCL INFO NET/OFI Selected Provider is cxi, fabric is cxi (found 4 nics)\n"


def _ranks(cores=lambda g: list(lumi.GCD_CORES[g]), gpu=lambda local: local):
    return [{"rank": n * 8 + i, "host": f"nid00500{n}", "local_rank": i, "gpu": gpu(i), "visible": 8,
             "cores": cores(gpu(i))} for n in range(2) for i in range(8)]


def test_bus_bandwidth_is_nccl_tests_convention():
    assert bus_gbps(10**9, 1.0, 2) == pytest.approx(1.0)  # 2(n-1)/n = 1 for two ranks
    assert bus_gbps(10**9, 0.5, 16) == pytest.approx(2 * 2 * 15 / 16)


def test_a_good_lumi_run_passes_every_check():
    checks = verdict(_ranks(), "nccl", RCCL_LOG, lumi_node=True)
    assert [c[0] for c in checks] == ["own GPU", "bound to its GCD's cores", "RCCL on Slingshot (cxi)"]
    assert all(ok for _, ok, _ in checks), checks


@pytest.mark.parametrize("ranks,log,failing", [
    (_ranks(gpu=lambda local: 0), RCCL_LOG, "own GPU"),  # every process on GCD 0
    (_ranks(cores=lambda g: list(range(1, 57))), RCCL_LOG, "bound to its GCD's cores"),  # floating over 56 cores
    (_ranks(), "NCCL INFO NET/Socket : Using [0]hsn0\n", "RCCL on Slingshot (cxi)"),  # TCP sockets
])
def test_each_problem_is_named(ranks, log, failing):
    checks = {name: ok for name, ok, _ in verdict(ranks, "nccl", log, lumi_node=True)}
    assert checks.pop(failing) is False and all(checks.values()), checks


def test_off_lumi_what_cannot_be_checked_says_so():
    ranks = [{"rank": i, "host": "node1", "local_rank": i, "gpu": None, "visible": 0, "cores": [0, 1]}
             for i in range(2)]
    checks = verdict(ranks, "gloo", "", lumi_node=False)
    assert [ok for _, ok, _ in checks] == [None, None, None]

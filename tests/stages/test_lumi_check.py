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


LUMI_BIND = ("mask_cpu:0x00fe000000000000,0xfe00000000000000,0x0000000000fe0000,0x00000000fe000000,"
             "0x00000000000000fe,0x000000000000fe00,0x000000fe00000000,0x0000fe0000000000")


def test_the_verdict_reports_each_ranks_cores_against_the_mask_it_was_meant_to_get():
    """LUMI's course: `mask_cpu` "will not always work together with `--cpus-per-task`"; the verdict reads the
    outcome per rank (allowed cores vs the mask for its local rank, and -c) instead of assuming it."""
    from dfm_hpc.stages.lumi_check import binding, binding_lines, mask_cores

    masks = mask_cores(LUMI_BIND)
    assert masks == [list(lumi.GCD_CORES[g]) for g in range(8)]
    good = binding(_ranks(), masks, 7)
    assert all(b["ok"] for b in good) and good[0]["mask"] == list(range(49, 56))
    assert binding_lines(good)[0] == "    rank 0 (nid005000, local 0): cores 49-55 (7), mask 49-55, -c 7: [ok] as meant"
    # -c 7 won and the mask was dropped: rank 3 floats over all 56 cores
    floating = _ranks(cores=lambda g: list(range(1, 57)) if g == 3 else list(lumi.GCD_CORES[g]))
    rows = binding(floating, masks, 7)
    assert [b["rank"] for b in rows if b["ok"] is False] == [3, 11]
    assert "the mask was not applied" in rows[3]["note"] and "[FAIL]" in binding_lines(rows)[3]
    checks = {name: (ok, detail) for name, ok, detail in verdict(floating, "nccl", RCCL_LOG, True, rows)}
    assert checks["bound to its GCD's cores"][0] is False and "[3, 11]" in checks["bound to its GCD's cores"][1]


def test_without_a_mask_a_rank_short_of_its_cores_fails_and_the_rest_is_reported():
    from dfm_hpc.stages.lumi_check import binding, mask_cores

    assert mask_cores(None) is None and mask_cores("cores") is None
    ranks = [{"rank": i, "host": "node1", "local_rank": i, "gpu": None, "visible": 0, "cores": c}
             for i, c in enumerate([[0], [0, 1, 2, 3, 4, 5, 6]])]
    rows = binding(ranks, None, 7)
    assert [b["ok"] for b in rows] == [False, None] and "fewer cores than -c 7" in rows[0]["note"]
    # off LUMI with a mask: the check holds the ranks to it
    masked = binding([{**ranks[1], "cores": [0, 1]}], mask_cores("mask_cpu:0x3"), 2)
    checks = {name: ok for name, ok, _ in verdict([ranks[1]], "gloo", "", False, masked)}
    assert checks["bound to its GCD's cores"] is True

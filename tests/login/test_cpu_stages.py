"""Stages that need no GPU on CPU partitions (issue #24 item 1): on LUMI, merge, pii (without NER), tokenize and
card go to LUMI-C `small`, billed in core-hours from the CPU allocation, and the plan shows both pools."""

from __future__ import annotations

import pytest

from dfm_hpc import lumi, rundir
from dfm_hpc.plan import billing, billing_pool, plan

from helpers import LUMI, dfm, make_cfg, run_dirs


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cpu")
    p = dfm("+experiment=munin_pipeline", *LUMI, "dry_run=true", cwd=cwd)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = run_dirs(cwd)
    return p.stdout, run


def _script(run, stage):
    return (run / "stages" / stage / "sbatch.sh").read_text()


def test_cpu_stages_render_on_lumi_c_without_gpus(pipeline):
    _, run = pipeline
    for stage in ("merge", "pii", "card"):
        s = _script(run, stage)
        assert "#SBATCH --partition=small\n" in s and "--gpus-per-node" not in s and "--exclusive" not in s, stage
        assert "#SBATCH --mem=32G" in s and "mask_cpu" not in s and "#SBATCH --cpus-per-task=16" in s, stage
    for stage in ("translate", "sft", "dpo"):
        assert "#SBATCH --partition=standard-g" in _script(run, stage)
    assert "#SBATCH --partition=small-g" in _script(run, "evaluate")  # scoring serves a model: a GCD
    pools = {r["stage"]: r["prediction"]["pool"] for r in rundir.read_plan(run)}
    assert pools == {"translate": "GPU", "merge": "CPU", "pii": "CPU", "sft": "GPU", "dpo": "GPU",
                     "evaluate": "GPU", "card": "CPU"}


def test_the_plan_bills_each_pool_apart(pipeline):
    out, _ = pipeline
    assert "CPU core-h pred/max" in out
    cost = next(line for line in out.splitlines() if line.startswith("cost predicted"))
    assert "LUMI billing units and" in cost and "LUMI-C core-hours (the CPU allocation)" in cost, cost


def test_tokenize_goes_to_lumi_c_and_pii_with_ner_keeps_its_gcd():
    jobs = {j.stage: j for j in plan(make_cfg("+experiment=munin_cpt", *LUMI))}
    assert (jobs["tokenize"].partition, jobs["tokenize"].gpus_per_node) == ("small", 0)
    jobs = {j.stage: j for j in plan(make_cfg("+experiment=munin_pipeline", *LUMI, "pii.ner=some-org/danish-ner"))}
    assert (jobs["pii"].partition, jobs["pii"].gpus_per_node) == ("small-g", 1)  # its NER model runs on a GCD


def test_a_stage_that_names_its_place_keeps_it():
    jobs = {j.stage: j for j in plan(make_cfg("+experiment=munin_pipeline", *LUMI, "merge.partition=small-g"))}
    assert jobs["merge"].partition == "small-g"


def test_lumi_c_billing():
    assert lumi.billing_units("small", 1, 2.0, 0, 16, 32.0) == 32.0  # 16 cores, 2 GB each: the cores
    assert lumi.billing_units("small", 1, 1.0, 0, 4, 16.0) == 8.0  # 4 GB per core: the 2 GB slices
    assert lumi.billing_units("standard", 2, 1.0, 0, 16, None) == 256.0  # whole 128-core nodes
    cfg = make_cfg("+experiment=munin_pipeline", *LUMI)
    merge = next(j for j in plan(cfg) if j.stage == "merge")
    assert billing_pool(merge, merge.cluster) == "CPU" and billing(merge, merge.cluster, hours=1.0) == 16.0


def test_a_gpu_on_lumi_c_is_refused(tmp_path):
    p = dfm("+experiment=munin_pipeline", *LUMI, "dry_run=true", "merge.partition=small", "merge.gpus_per_node=1",
            cwd=tmp_path)
    assert p.returncode == 2 and "LUMI-C partition without GPUs" in p.stderr + p.stdout
    assert not run_dirs(tmp_path)

"""plan.py: each stage's job with the cluster settings it gets; plan.json holds what was planned, not the cluster."""

from __future__ import annotations

import json
from dataclasses import fields

from helpers import LUMI, dfm, make_cfg, run_dirs


def _frozen(*overrides):
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(make_cfg(*overrides), resolve=True, enum_to_str=True)
    return OmegaConf.create(plain, flags={"readonly": True})


def test_each_job_carries_its_cluster_merged_once():
    """A single-process stage gets the profile's single_device place (LUMI: one GCD of small-g), merged once
    by plan() and read-only like the config it came from; the others get the run's profile itself."""
    from omegaconf import OmegaConf

    from dfm_hpc.plan import plan

    cfg = _frozen("+experiment=munin_sft", *LUMI)
    sft, evaluate = plan(cfg)
    assert sft.cluster is cfg.cluster and sft.partition == "standard-g"
    assert evaluate.cluster.partition == "small-g" == evaluate.partition and evaluate.cluster.gpus_per_node == 1
    assert evaluate.cluster.account == cfg.cluster.account and not evaluate.cluster.single_device
    assert OmegaConf.is_readonly(evaluate.cluster)
    assert "cluster" not in repr(evaluate)  # a job prints as what was planned


def test_plan_json_holds_the_planned_fields_and_status_gets_the_cluster_back(tmp_path):
    from dfm_hpc import config_io, predict
    from dfm_hpc.plan import StageJob, job_record, plan, run_jobs

    cfg = _frozen("+experiment=munin_sft", *LUMI)
    planned = {f.name for f in fields(StageJob)} - {"cluster"}
    records = predict.records(cfg, plan(cfg))
    assert [set(r) for r in records] == [planned | {"prediction"}] * 2
    assert dfm("+experiment=munin_sft", *LUMI, "dry_run=true", cwd=tmp_path).returncode == 0
    (run,) = run_dirs(tmp_path)
    stages = json.loads((run / "plan.json").read_text())["stages"]
    assert [set(s) for s in stages] == [planned | {"prediction"}] * 2
    jobs = [j for j, _ in run_jobs(config_io.load_config(run), run)]
    assert [job_record(j) for j in jobs] == [{k: s[k] for k in planned} for s in stages]
    assert jobs[1].cluster.partition == "small-g" and jobs[0].cluster.partition == "standard-g"

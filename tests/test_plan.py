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


# ---------------------------------------------------------------- time=auto (issue #24 item 3)

def _jobs(*overrides):
    from dfm_hpc import predict
    from dfm_hpc.plan import plan

    cfg = make_cfg(*overrides)
    jobs = plan(cfg)
    return {j.stage: j for j in jobs}, {r["stage"]: r["prediction"] for r in predict.records(cfg, jobs)}


def test_auto_walltime_is_the_prediction_times_the_factor_plus_start_up_within_two_times():
    jobs, pred = _jobs("+experiment=munin_pipeline", *LUMI)
    # translate: 4.5 M tokens / (750 tok/s x 32 GCDs) = 187.5 s x 1.5 + 300 s start-up + 300 s stop signal
    # (it resumes, so it stops at the signal) = 14.7 min -> 15; merge (cannot resume): 10 min guessed on LUMI-C
    # x 1.5 + 120 s = 17 min -> 20; card: 5 x 1.5 + 2 = 9.5 -> the 10-minute floor
    assert (jobs["translate"].minutes, jobs["merge"].minutes, jobs["card"].minutes) == (15, 20, 10)
    for stage in ("translate", "merge", "pii", "card", "evaluate", "sft", "dpo"):
        assert jobs[stage].time_auto, stage
        assert 1 < jobs[stage].minutes / (pred[stage]["hours"] * 60) <= 2, stage  # the acceptance's bound
        assert pred[stage]["starts"] == 1, stage
    assert pred["merge"]["device"] == "lumi_c" and jobs["merge"].partition == "small"
    tight, _ = _jobs("+experiment=munin_pipeline", *LUMI, "cluster.time_factor=1")
    assert tight["merge"].minutes == 15  # 10 + 2 min -> 15


def test_auto_walltime_takes_the_partitions_limit_and_a_resumable_stage_requeues(tmp_path):
    jobs, pred = _jobs("+experiment=munin_cpt", "cpt.max_steps=20000", *LUMI)
    assert jobs["cpt"].minutes == 48 * 60 and pred["cpt"]["requeues"] == 3  # standard-g's 48 h, 4 starts
    # tokenize on LUMI-C small (16 array tasks): 30 min guessed x 1.5 + 2 + 5 (it resumes) -> 0:55 for 0:32
    assert jobs["tokenize"].partition == "small" and jobs["tokenize"].minutes == 55
    assert 1 < 55 / (pred["tokenize"]["hours"] * 60) <= 2
    # merge cannot resume: 5,000 min guessed + 2 min start-up (83.4 h) is past LUMI-C small's 72 h: refused
    p = dfm("+experiment=oasst2_translate", *LUMI, "throughput.devices.lumi_c.stage_minutes.merge=5000",
            "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2 and not (tmp_path / "runs").exists()
    assert "merge: predicted 83.37 h" in p.stderr and "past small's longest walltime (72:00)" in p.stderr
    assert "merge.time=" not in p.stderr  # no walltime would do: more workers or less work


def test_an_explicit_walltime_is_kept_and_a_stage_without_a_prediction_gets_its_fallback():
    jobs, _ = _jobs("+experiment=munin_sft", *LUMI, "sft.time=02:00:00")
    assert jobs["sft"].minutes == 120 and not jobs["sft"].time_auto and jobs["evaluate"].time_auto
    jobs, pred = _jobs("+experiment=munin_sft", *LUMI, "throughput.device=tpu")  # no such entry: no prediction
    assert pred["sft"]["hours"] is None and jobs["sft"].minutes == 60 and jobs["evaluate"].minutes == 120
    jobs, _ = _jobs("+experiment=lumi_check", *LUMI)
    assert jobs["lumi_check"].minutes == 15 and not jobs["lumi_check"].time_auto  # nothing to predict from


def test_the_plan_shows_requested_against_predicted_and_the_script_asks_for_it(tmp_path):
    p = dfm("+experiment=munin_pipeline", *LUMI, "sft.time=20:00:00", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    row = next(ln for ln in p.stdout.splitlines() if ln.startswith("translate "))
    assert "requested" in p.stdout and row.split()[5:7] == ["0:15", "0:08"]  # requested, predicted
    assert "(time=auto) for translate, merge, pii, dpo, evaluate, card; as given (sft.time)" in p.stdout
    (run,) = run_dirs(tmp_path)
    assert "\n#SBATCH --time=15\n" in (run / "stages" / "translate" / "sbatch.sh").read_text()  # minutes
    assert "\n#SBATCH --time=1200\n" in (run / "stages" / "sft" / "sbatch.sh").read_text()


def test_cluster_max_time_and_max_nodes_off_lumi(tmp_path):
    slurm = ["cluster=slurm", "cluster.max_time=00:30:00"]
    jobs, pred = _jobs("+experiment=sft_tiny", *slurm, "sft.time=auto", "sft.max_steps=200000", "throughput.device=cpu")
    assert jobs["sft"].minutes == 30 and pred["sft"]["requeues"] == 3  # resumable: 1.6 h capped at 0:30, requeued
    p = dfm("+experiment=demo", *slurm, "demo.time=01:00:00", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2 and "demo.time=1:00:00: over cluster.max_time=00:30:00" in p.stderr
    p = dfm("+experiment=demo", *slurm, "demo.sleep_s=3600", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2 and "past the partition's longest walltime (0:30)" in p.stderr  # the demo cannot resume
    p = dfm("+experiment=pipeline_tiny", "cluster=slurm", "pii.nodes=3", "dry_run=true", cwd=tmp_path)
    # the test cluster's CPU partition has 2 nodes (its cpu_only place says so): a 3-node job would pend forever
    assert p.returncode == 2 and "pii.nodes=3: cpu has 2 nodes (cluster.max_nodes)" in p.stderr
    for bad, why in (("cluster.max_time=soon", "cluster.max_time: cannot read walltime"),
                     ("demo.fallback_time=later", "demo.fallback_time: cannot read walltime"),
                     ("demo.time=never", "(or auto: sized to the prediction)")):
        p = dfm("+experiment=demo", bad, "dry_run=true", cwd=tmp_path)
        assert p.returncode == 2 and why in p.stderr, (bad, p.stderr)
    assert not (tmp_path / "runs").exists()

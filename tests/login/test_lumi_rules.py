"""LUMI's rules as plan-time checks (login/checks/lumi_rules.py, facts in lumi.py): dev-g runs no stage that
needs requeues; runs_root off /scratch and /flash is warned about with the checkpoints' size against the
quota; user text (paths, names) prints as text, and a dry run that fails leaves no run dir."""

from __future__ import annotations

import pytest

from dfm_hpc import lumi
from dfm_hpc.login.checks import lumi_rules

from helpers import LUMI_ACCOUNT, dfm, lumi_args, make_cfg


def test_dev_g_refuses_a_stage_that_needs_requeues(tmp_path):
    """The issue's command: an 11-hour SFT as 6 starts of 2 hours on dev-g exits 2, naming the starts and
    LUMI's rule; nothing written. On standard-g the same stage is a warning (it resumes)."""
    p = dfm("+experiment=munin_sft", *lumi_args(cluster="lumi_dev"), "sft.time=02:00:00", "dry_run=true",
            cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "sft: predicted 11.0 h, 6 starts of its 2:00 walltime (5 requeues) on dev-g" in p.stderr
    assert "not production runs" in p.stderr and "cluster=lumi (standard-g)" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "runs").exists()
    p = dfm("+experiment=munin_sft", *lumi_args(cluster="lumi_dev"), "sft.time=02:00:00", "sft.max_steps=100",
            "dry_run=true", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_the_rule_reads_the_partition():
    cfg = make_cfg("+experiment=munin_sft", *lumi_args(cluster="lumi_dev"))
    rec = {"stage": "sft", "partition": "dev-g", "minutes": 120,
           "prediction": {"starts": 2, "requeues": 1, "hours": 3.5}}
    assert lumi_rules.check_predictions(cfg, [rec])
    assert not lumi_rules.check_predictions(cfg, [{**rec, "partition": "standard-g"}])
    assert not lumi_rules.check_predictions(cfg, [{**rec, "prediction": {"starts": 1, "requeues": 0, "hours": 1}}])
    assert not lumi_rules.check_predictions(cfg, [{**rec, "prediction": {"starts": None, "requeues": None}}])
    assert [p.name for p in lumi.PARTITIONS.values() if p.dev] == ["dev-g", "debug"]  # LUMI-G's and LUMI-C's


@pytest.mark.parametrize("root, fs, quota", [("/users/someone/runs", "home (/users)", "20 GB"),
                                             ("/project/project_465000670/runs", "/project", "50 GB"),
                                             ("runs", None, None)])
def test_runs_root_off_scratch_warns_with_the_checkpoint_size(root, fs, quota):
    """Munin 7B full SFT: 2 checkpoints of 7.24 B x 14 bytes (~101 GB each) + the 14.5 GB model: over
    home's and /project's quota. A relative root is resolved (here: not a LUMI path)."""
    cfg = make_cfg("+experiment=munin_sft", *lumi_args(), "peft=none", f"runs_root={root}")
    assert lumi_rules.checkpoint_gb(cfg, "sft") == pytest.approx(7.24 * (2 * 14 + 2), rel=0.01)
    (w,) = lumi_rules.storage_warnings(cfg)
    assert "training files take ~217" in w and "sft: 217" in w and "2 checkpoints + the model" in w
    assert f"runs_root=/scratch/{LUMI_ACCOUNT}/runs" in w
    if fs:
        assert f"is on {fs}, whose quota is {quota}" in w and "would fill it and fail mid-run" in w
    else:
        assert "not on a LUMI file system" in w


def test_scratch_and_flash_and_other_clusters_are_quiet():
    for root in (f"/scratch/{LUMI_ACCOUNT}/runs", f"/flash/{LUMI_ACCOUNT}/runs", "/pfs/lustref1/flash/p/runs"):
        assert not lumi_rules.storage_warnings(make_cfg("+experiment=munin_sft", *lumi_args(), f"runs_root={root}"))
    assert not lumi_rules.storage_warnings(make_cfg("+experiment=munin_sft", "cluster=slurm", "runs_root=/users/x"))
    lora = make_cfg("+experiment=munin_sft", *lumi_args(), "runs_root=/users/me/runs")
    (w,) = lumi_rules.storage_warnings(lora)  # a LoRA adapter's checkpoints are small, but still said
    assert "home (/users)" in w and "would fill" not in w


def test_markup_in_paths_and_names_prints_as_text(tmp_path):
    """runs_root='x[/]' crashed the dry run with rich's MarkupError and left a half-written run dir; now
    brackets in runs_root, the cluster's name and a dataset print as they are."""
    p = dfm("+experiment=munin_sft", *lumi_args(), "sft.time=02:00:00", "dry_run=true", "runs_root='x[/]'",
            "cluster.name='[bold]lumi[/]'", "sft.dataset='[red]d[/].jsonl'", "cluster.check_paths=false",
            cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "on cluster=[bold]lumi[/], in order" in p.stdout and "data: [red]d[/].jsonl" in p.stdout
    (run,) = list((tmp_path / "x[/]" / "munin_sft").iterdir())  # x[/] is the dir "]" in the dir "x["
    assert f"run dir: {run}" in p.stdout and f"sft: {run}/stages/sft/sbatch.sh" in p.stdout
    assert "warning: runs_root=x[/] (" in p.stdout
    assert (run / "stages" / "evaluate" / "sbatch.sh").exists() and not (run / "INCOMPLETE").exists()


def test_a_dry_run_that_fails_leaves_no_run_dir(tmp_path, monkeypatch):
    """A failure after the run dir is written but before the dry run's scripts are all there removes it."""
    from dfm_hpc.login import console, launch

    def broken(*a, **k):
        raise RuntimeError("printing failed")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(console, "script", broken)
    with pytest.raises(RuntimeError, match="printing failed"):
        launch.main(["+experiment=demo", "stages=[demo]", "dry_run=true", "runs_root=r"])
    assert not list((tmp_path / "r").rglob("config.yaml"))

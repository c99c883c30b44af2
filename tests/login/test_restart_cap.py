"""cluster.max_restarts against the plan (login/checks/restarts.py): a stage predicted to need more requeues
than the cap would fail unfinished at it, so the launch exits 2 first, naming the stage, its starts and
the keys to raise; the default cap fits munin_cpt on LUMI at 20,000 steps (159 h: 4 starts of 48 h)."""

from __future__ import annotations

from dfm_hpc.login.checks import restarts

from helpers import dfm, lumi_args, make_cfg

LONG_CPT = ["+experiment=munin_cpt", *lumi_args(), "cpt.max_steps=20000"]  # the 3 stops


def test_a_cap_below_the_predicted_requeues_exits_2(tmp_path):
    p = dfm(*LONG_CPT, "cluster.max_restarts=2", "dry_run=true",
            f"runs_root={tmp_path / 'runs'}", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    out = " ".join((p.stdout + p.stderr).split())  # rich wraps long lines
    assert "cpt: predicted" in out and "4 starts of its 48:00 walltime (3 requeues)" in out
    assert "more than cluster.max_restarts=2 allows" in out and "cluster.max_restarts=5" in out
    assert "cpt.time=" not in out  # 58 h would be past standard-g's 48 h
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_the_default_cap_passes_munin_cpt_on_lumi(tmp_path):
    """What the launch checks after the plan (launch.py): no problem with the default cap of 10."""
    from dfm_hpc import predict
    from dfm_hpc.login import checks
    from dfm_hpc.plan import plan

    cfg = make_cfg(*LONG_CPT)
    records = predict.records(cfg, plan(cfg))
    assert {r["stage"]: r["prediction"]["requeues"] for r in records} == {"tokenize": 0, "cpt": 3, "evaluate": 0}
    assert predict.problems(records) + checks.check_predictions(cfg, records) == []
    p = dfm(*LONG_CPT, "dry_run=true", f"runs_root={tmp_path / 'runs'}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_the_check_reads_the_predictions():
    cfg = make_cfg("+experiment=munin_cpt", *lumi_args(), "cluster.max_restarts=1")
    rec = {"stage": "cpt", "minutes": 120, "prediction": {"starts": 3, "requeues": 2, "hours": 5.5,
                                                          "device": "mi250x_gcd", "resumable": True}}
    (problem,) = restarts.check_restarts(cfg, [rec])  # 5.5 h - 3 x 300 s start-up, over 2 starts, + 10 %
    assert problem.startswith("cpt: predicted 5.5 h, 3 starts of its 2:00 walltime (2 requeues), more than "
                              "cluster.max_restarts=1 allows")
    assert problem.endswith("Set cluster.max_restarts=4 or more (room for node failures), or cpt.time=02:59:00 or "
                            "longer (fewer starts)")
    assert not restarts.check_restarts(cfg, [{**rec, "prediction": {**rec["prediction"], "requeues": 1}}])
    assert not restarts.check_restarts(cfg, [{**rec, "prediction": {**rec["prediction"], "resumable": False}}])
    assert not restarts.check_restarts(cfg, [{**rec, "prediction": {"starts": None, "requeues": None}}])
    local = make_cfg("+experiment=cpt_tiny", "cluster=local", "cluster.max_restarts=0")
    assert not restarts.check_restarts(local, [rec])  # the local launcher never requeues

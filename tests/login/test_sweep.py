"""login/sweep.py: a sweep's points share the launch's work only where it cannot tell them apart, and what the
point count decides is decided before the points are made (issue #24)."""

from __future__ import annotations

import re

import pytest

from helpers import LUMI, dfm

SWEEP = ["-m", "+experiment=demo", *LUMI, "dry_run=true", "demo.value=1,2,3", "demo.nodes=1,2"]


def _launch(root, monkeypatch, args, share=True):
    from dfm_hpc.login import compose, launch, sweep

    root.mkdir()
    monkeypatch.chdir(root)
    if not share:
        monkeypatch.setattr(sweep, "_shareable", lambda p: False)
    composed = compose.command_line(args)
    return launch.launch(composed.points, composed.command, sweep=True), composed.points


def _files(points) -> dict:
    """Every file of the sweep's dirs but the timestamps (provenance) and the tree's diff (it can change between
    two launches), with the sweep dir's own path taken out."""
    top = points[0].run_dir.parent
    return {str(f.relative_to(top)): f.read_text().replace(str(top), "<sweep>")
            for f in sorted(top.rglob("*")) if f.is_file() and f.name not in ("provenance.json", "git.diff")}


def test_shared_work_writes_what_each_point_alone_would(tmp_path, monkeypatch, capsys):
    rc, shared = _launch(tmp_path / "shared", monkeypatch, SWEEP)
    assert rc == 0, capsys.readouterr().err
    rc, alone = _launch(tmp_path / "alone", monkeypatch, SWEEP, share=False)
    assert rc == 0, capsys.readouterr().err
    # plan() reads demo.nodes, nothing the launch does reads demo.value: one representative per node count
    assert len({id(p.cfg) for p in shared}) == 2 and len({id(p.cfg) for p in alone}) == 6
    assert [[j.nodes for j in p.jobs] for p in shared] == [[j.nodes for j in p.jobs] for p in alone]
    assert [p.records for p in shared] == [p.records for p in alone]
    files = _files(shared)
    assert files == _files(alone) and sum(name.endswith("sbatch.sh") for name in files) == 12
    assert [p.config["demo"]["value"] for p in shared] == [1, 1, 2, 2, 3, 3]  # each point's own config.yaml


def test_a_shared_point_still_has_its_own_values_checked(tmp_path, monkeypatch, capsys):
    """ranges and text run on each point's own config: a bad value is found on the point that has it."""
    args = [*SWEEP[:-1], "demo.sleep_s=0,-1", "description='a','b\x1bc'"]
    assert _launch(tmp_path / "shared", monkeypatch, args)[0] == 2
    shared = capsys.readouterr().err
    assert _launch(tmp_path / "alone", monkeypatch, args, share=False)[0] == 2
    assert capsys.readouterr().err == shared
    assert shared.count("demo.sleep_s=-1.0: 0 or more seconds") == 6
    assert shared.count("description: contains control characters (\\x1b)") == 6


def test_the_point_count_decides_before_the_points_are_made(tmp_path, monkeypatch):
    """4,096 points on LUMI: refused from one point's plan (it reads no swept key), not after making them all;
    the hint never sends the user to the cluster already in use."""
    from dfm_hpc.login import compose, sweep_family

    made = []
    real = sweep_family.with_values
    monkeypatch.setattr(sweep_family, "with_values", lambda *a: made.append(a) or real(*a))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(compose.Problems) as e:
        compose.command_line(["-m", "+experiment=demo", *LUMI, "dry_run=true", "demo.value=range(0,64)",
                              "description=range(0,64)", compose.LARGE_SWEEP])
    text = str(e.value)
    assert len(made) == 1 and not (tmp_path / "runs").exists()
    assert "standard-g accepts at most 210 submitted jobs per user, array tasks included" in text
    assert "this sweep queues 4096 jobs there (4096 points x 1 job(s))" in text
    assert "Sweep at most 210 point(s) per launch" in text and "cluster=lumi" not in text
    assert "at most 1000 tasks per array" in text


def test_the_route_the_hint_names_exists(tmp_path):
    """dev-g takes 2 jobs: a 3-point sweep is sent to small-g, which then takes it (exit 0)."""
    args = ["-m", "+experiment=demo", *LUMI[1:], "cluster=lumi_dev", "stages=[demo]", "demo.value=1,2,3",
            "dry_run=true"]
    p = dfm(*args, cwd=tmp_path)
    assert p.returncode == 2 and "cluster=lumi_dev" not in p.stderr.split("1. ", 1)[1]
    route = re.search(r"\((demo\.partition=[\w-]+);", p.stderr).group(1)
    assert route == "demo.partition=small-g"
    assert dfm(*args, route, cwd=tmp_path).returncode == 0


def test_a_slurm_sweep_over_the_array_limit_is_refused_before_its_points(tmp_path, monkeypatch):
    from dfm_hpc.login import compose

    monkeypatch.chdir(tmp_path)
    with pytest.raises(compose.Problems) as e:
        compose.command_line(["-m", "+experiment=demo", "cluster=slurm", "demo.value=range(0,1001)",
                              compose.LARGE_SWEEP])
    assert "Slurm takes at most 1000 tasks per array (MaxArraySize); sweep at most 1000 points" in str(e.value)


def test_a_single_run_over_a_job_limit_is_not_sent_to_its_own_cluster(tmp_path):
    p = dfm("+experiment=demo", *LUMI, "stages=[demo]", "demo.array=300", "dry_run=true", cwd=tmp_path)
    assert p.returncode == 2 and "standard-g accepts at most 210 submitted jobs" in p.stderr
    assert "cluster=lumi" not in p.stderr.split("1. ", 1)[1] and "<stage>.array" in p.stderr

"""login/sweep_family.py: a point made from its family's dict is the point Hydra itself composes."""

from __future__ import annotations

from helpers import LUMI

# types the schema holds (an int given to a float, a bool, an optional str, a str with a space)
SWEEP = ["-m", "+experiment=demo", *LUMI, "dry_run=true", "demo.value=1,2.5", "demo.fail=true,false",
         "demo.partition=null,small-g", "description=x,'y z'"]


def _points(monkeypatch, args, fast=True):
    from dfm_hpc.login import compose, sweep_family

    if not fast:
        monkeypatch.setattr(sweep_family.Families, "_plain_assignment", lambda self, fam, o: False)
    try:
        return compose.command_line(args).points, []
    except compose.Problems as e:
        return [], e.problems


def test_fast_points_equal_hydras_own(monkeypatch):
    fast, _ = _points(monkeypatch, SWEEP)
    assert len(fast) == 16 and all(p.family is not None for p in fast)
    assert fast[1].swept == {"demo.value": 1.0, "demo.fail": True, "demo.partition": None, "description": "y z"}
    slow, _ = _points(monkeypatch, SWEEP, fast=False)
    assert [p.config for p in fast] == [p.config for p in slow] and [p.overrides for p in fast] == \
        [p.overrides for p in slow]
    assert all(p.family is None for p in slow)


def test_a_key_an_interpolation_names_is_set_by_hydra(monkeypatch):
    """cluster.account is in LUMI's paths (${cluster.account}): its points are made the old way, and right."""
    args = ["-m", "+experiment=demo", *LUMI[:1], "dry_run=true", "demo.value=1,2",
            "cluster.account=project_465000670,project_465000671"]
    points, _ = _points(monkeypatch, args)
    assert all(p.family is None for p in points)
    assert "/project/project_465000671/" in points[1].config["cluster"]["container"]["overlay"]


def test_the_points_share_what_they_do_not_change(monkeypatch):
    fast, _ = _points(monkeypatch, ["-m", "+experiment=demo", "dry_run=true", "demo.value=1,2"])
    a, b = (p.config for p in fast)
    assert a["cluster"] is b["cluster"] and a["demo"] is not b["demo"] and a["demo"]["nodes"] == b["demo"]["nodes"]


def test_a_bad_value_gives_hydras_error(monkeypatch):
    args = ["-m", "+experiment=demo", "dry_run=true", "demo.nodes=1,two", "demo.value=1,2"]
    fast, problems = _points(monkeypatch, args)
    _, slow = _points(monkeypatch, args, fast=False)
    assert not fast and problems == slow and len(problems) == 2 and "demo.nodes" in problems[0]

"""One LaunchPoint per run of a launch: composed (config, overrides), then frozen, planned, predicted and
given its run dir as the launch proceeds."""

from __future__ import annotations


def test_a_sweep_composes_one_point_each_and_the_launch_fills_them_in(tmp_path, monkeypatch, capsys):
    from dfm_hpc.login import compose, launch

    monkeypatch.chdir(tmp_path)
    composed = compose.command_line(["-m", "+experiment=demo", "demo.value=1,2", "dry_run=true", compose.LARGE_SWEEP])
    assert composed.sweep and composed.command[-1] == "dry_run=true"  # --large-sweep is not recorded
    assert [p.overrides[:2] for p in composed.points] == [["+experiment=demo", f"demo.value={v}"] for v in (1, 2)]
    assert all(p.cfg is None and p.jobs is None and p.run_dir is None for p in composed.points)
    assert launch.launch(composed.points, composed.command, sweep=composed.sweep) == 0
    for i, p in enumerate(composed.points):
        assert p.config["demo"]["value"] == i + 1 and [j.stage for j in p.jobs] == ["demo", "demo_check"]
        assert p.cfg is composed.points[0].cfg  # nothing the launch does reads demo.value: shared (login/sweep.py)
        assert [r["stage"] for r in p.records] == ["demo", "demo_check"] and p.todo == p.jobs
        assert p.run_dir == composed.points[0].run_dir.parent / str(i) and (p.run_dir / "plan.json").is_file()
    assert f"run dir: {composed.points[0].run_dir.parent}" in capsys.readouterr().out


def test_composition_problems_come_back_all_at_once():
    import pytest

    from dfm_hpc.login import compose

    with pytest.raises(compose.Problems) as e:
        compose.command_line(["+experiment=demo", "demo.valu=1", "cluster.acount=x"])
    assert len(e.value.problems) == 2 and "demo.valu" in str(e.value)
    with pytest.raises(ValueError):  # subcommands catch a ValueError
        compose.compose_config(["+experiment=nope"])

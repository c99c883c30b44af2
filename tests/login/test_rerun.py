"""Issue #22 item 6, sweeps that heal: each point's outcome in status and compare, and `rerun --failed`, on a
sweep made by the CLI (a dry run) whose stage dirs are then given the markers the ranks leave."""

from __future__ import annotations

import pytest
import yaml

from dfm_hpc.login import status

from helpers import dfm, run_dirs, slurm_stubs

TRACEBACK = """worker 0
Traceback (most recent call last):
  File "/x/dfm_hpc/job/rank.py", line 189, in run_stage
    module.run(cfg, ctx)
RuntimeError: demo_check.fail=true: failing on purpose
  (a second line of the message)
"""


def _mark(point, stage, marker, text="2026-01-01T00:00:00\n"):
    sdir = point / "stages" / stage
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / marker).write_text(text)


@pytest.fixture
def sweep(tmp_path):
    """3 points on cluster=slurm, as if submitted: 0 done, 1 failed in demo_check, 2 cancelled in demo_check."""
    p = dfm("-m", "+experiment=demo", "cluster=slurm", "dry_run=true", "demo.value=1,2,3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (top,) = run_dirs(tmp_path)
    points = [top / str(i) for i in range(3)]
    for pt in points:
        cfg = pt / "config.yaml"
        cfg.write_text(cfg.read_text().replace("dry_run: true", "dry_run: false"))
        for sdir in (pt / "stages").iterdir():  # the dry run's scripts: a submitted job's would be there too
            (sdir / "sbatch.sh").unlink()
        _mark(pt, "demo", "DONE")
    _mark(points[0], "demo_check", "DONE")
    _mark(points[1], "demo_check", "FAILED", TRACEBACK)
    _mark(points[2], "demo_check", "CANCELLED")
    return top


def test_error_line_is_the_exception_line():
    assert status.error_line(TRACEBACK) == "RuntimeError: demo_check.fail=true: failing on purpose"
    assert status.error_line("a rank exited with 1\n") == "a rank exited with 1"


def test_status_and_compare_show_each_points_outcome(sweep, tmp_path):
    st = dfm("status", str(sweep), cwd=tmp_path)
    assert st.returncode == 0, st.stderr
    out = " ".join(st.stdout.split())  # rich may wrap long lines
    assert "points: 1 done, 1 failed, 1 cancelled" in out, st.stdout
    assert "1 demo.value=2 failed at demo_check: RuntimeError: demo_check.fail=true: failing on purpose" in out
    assert "2 demo.value=3 cancelled at demo_check" in out and "0 demo.value=1 done" in out
    assert f"python -m dfm_hpc rerun {sweep} --failed" in out
    c = dfm("compare", str(sweep), cwd=tmp_path)
    assert c.returncode == 1  # no evaluate results anywhere: no table
    assert f"{sweep.name}/1: no evaluate results ({sweep / '1' / 'stages/evaluate/results.json'} is missing); " \
        "failed at demo_check: RuntimeError: demo_check.fail=true: failing on purpose" in c.stdout, c.stdout
    assert "is missing); done" in c.stdout and "is missing); cancelled at demo_check" in c.stdout


def test_rerun_failed_dry_run_says_what_would_run_and_writes_nothing(sweep, tmp_path):
    p = dfm("rerun", str(sweep), "--failed", "--dry-run", "demo_check.fail=false", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "would rerun 2 of 3 points" in p.stdout
    assert "0 [demo.value=1]: done -> kept as it is" in p.stdout
    assert "1 [demo.value=2]: failed at demo_check: RuntimeError: demo_check.fail=true: failing on purpose -> " \
        "rerun: reusing demo; continuing demo_check where it stopped" in p.stdout
    assert "2 [demo.value=3]: cancelled at demo_check -> rerun" in p.stdout
    assert run_dirs(tmp_path) == [sweep]
    assert (sweep / "1" / "stages" / "demo_check" / "FAILED").exists()  # nothing cleared either


def test_rerun_failed_queues_only_those_points_as_one_array(sweep, tmp_path):
    bin_dir = tmp_path / "bin"
    slurm_stubs.install(bin_dir)
    p = dfm("rerun", str(sweep), "--failed", "demo_check.fail=false", cwd=tmp_path, env=slurm_stubs.env(bin_dir))
    assert p.returncode == 0, p.stdout + p.stderr
    sbatch = slurm_stubs.calls(bin_dir, "sbatch")
    assert len(sbatch) == 1, sbatch  # demo_check of points 1 and 2, one array; demo is reused, point 0 kept
    new = next(d for d in run_dirs(tmp_path) if d != sweep)
    assert [pt["overrides"][-1] for pt in yaml.safe_load((new / "sweep.yaml").read_text())["points"]] == \
        ["demo.value=1", "demo_check.fail=false", "demo_check.fail=false"]
    for i in range(3):
        for stage in ("demo", "demo_check"):
            link = new / str(i) / "stages" / stage
            assert link.is_symlink() and link.resolve() == (sweep / str(i) / "stages" / stage).resolve()
    assert "--array=0-1" in (sweep / "1" / "stages" / "demo_check" / "sbatch.sh").read_text()
    assert not (sweep / "1" / "stages" / "demo_check" / "FAILED").exists()  # the new attempt's, in place
    assert (sweep / "0" / "stages" / "demo_check" / "DONE").exists()
    assert not (sweep / "0" / "stages" / "demo_check" / "job_id").exists()  # the kept point: untouched
    assert yaml.safe_load((new / "0" / "config.yaml").read_text())["demo_check"]["fail"] is False
    assert yaml.safe_load((new / "1" / "config.yaml").read_text())["demo_check"]["fail"] is False


def test_rerun_failed_refuses_when_nothing_failed(sweep, tmp_path):
    for i in (1, 2):
        for m in ("FAILED", "CANCELLED"):
            (sweep / str(i) / "stages" / "demo_check" / m).unlink(missing_ok=True)
        _mark(sweep / str(i), "demo_check", "DONE")
    p = dfm("rerun", str(sweep), "--failed", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    err = " ".join(p.stderr.split())
    assert "nothing to rerun" in err and "0 [demo.value=1]: done; 1 [demo.value=2]: done" in err, err
    assert run_dirs(tmp_path) == [sweep]


def test_outcome_from_slurm_states(sweep):
    point = sweep / "1"

    def rows(*states):
        return [{"stage": s, "state": st, "last": ""} for s, st in zip(("demo", "demo_check"), states)]

    assert str(status.outcome(point, rows("COMPLETED", "RUNNING"))) == "running (demo_check)"
    assert str(status.outcome(point, rows("RUNNING", "PENDING"))) == "running (demo)"
    assert str(status.outcome(point, rows("PENDING", "PENDING"))) == "queued (demo)"
    assert str(status.outcome(point, rows("COMPLETED (in 0)", "COMPLETED"))) == "done"
    # Slurm's word first; the marker's error line beside it
    assert str(status.outcome(point, rows("COMPLETED", "TIMEOUT"))) == \
        "failed at demo_check: TIMEOUT (RuntimeError: demo_check.fail=true: failing on purpose)"
    # demo failed, so Slurm cancelled demo_check: the point failed at demo
    (point / "stages" / "demo" / "DONE").unlink()
    assert str(status.outcome(point, rows("FAILED", "CANCELLED"))).startswith("failed at demo: the job failed")
    assert str(status.outcome(point, rows("COMPLETED", "UNKNOWN"))) == \
        "unfinished at demo_check: UNKNOWN: no job and no ending marker"

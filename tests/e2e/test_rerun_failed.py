"""Issue #22 item 6 on the two-node Slurm cluster: a sweep with one failing point heals with `rerun --failed`."""

from __future__ import annotations

import json

import pytest

from helpers import dfm, run_dirs, wait_for

pytestmark = pytest.mark.slurm


def _status(run, cwd) -> str:
    p = dfm("status", str(run), cwd=cwd)
    assert p.returncode == 0, p.stderr
    return " ".join(p.stdout.split())  # rich may wrap the outcome lines


def _until(run, cwd, text, what):
    return wait_for(lambda: (lambda s: s if text in s else None)(_status(run, cwd)), timeout=300, what=what)


def test_a_sweep_with_one_failing_point_is_healed_by_rerun_failed(slurm_cluster, tmp_path):
    # point 1 has a value that passes every plan-time check and fails in the rank
    p = dfm("-m", "+experiment=demo", "cluster=slurm", "demo_check.fail=false,true", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (sweep,) = run_dirs(tmp_path)
    out = _until(sweep, tmp_path, "points: 1 done, 1 failed", "point 0 done, point 1 failed")
    assert "1 demo_check.fail=True failed at demo_check: RuntimeError: demo_check.fail=true: failing on purpose" \
        in out, out
    assert f"rerun {sweep} --failed" in out
    kept_job = (sweep / "0" / "stages" / "demo_check" / "job_id").read_text()
    # the cause fixed by an override: only point 1 runs again, and only its demo_check
    r = dfm("rerun", str(sweep), "--failed", "demo_check.fail=false", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "rerunning 1 of 2 points" in said and "0 [demo_check.fail=False]: done -> kept as it is" in said
    assert "reusing demo; continuing demo_check where it stopped" in r.stderr, r.stderr
    new = next(d for d in run_dirs(tmp_path) if d != sweep)
    healed = _until(new, tmp_path, "points: 2 done", "the rerun's point 1 to finish")
    assert "(in " in healed  # every stage is the original's dir, linked
    assert (sweep / "0" / "stages" / "demo_check" / "job_id").read_text() == kept_job  # point 0 never ran again
    assert json.loads((sweep / "1" / "stages" / "demo_check" / "check.json").read_text())["ok"] is True
    assert (new / "1" / "stages" / "demo_check" / "DONE").exists()
    assert "--dependency" not in (new / "1" / "stages" / "demo_check" / "sbatch.sh").read_text()  # demo reused
    # the original sweep is healed too: its point 1 is the dir the rerun ran in
    assert "points: 2 done" in _status(sweep, tmp_path)
    again = dfm("rerun", str(new), "--failed", cwd=tmp_path)
    assert again.returncode == 2 and "nothing to rerun" in again.stderr, again.stderr
